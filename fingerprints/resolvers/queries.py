"""Query resolvers."""

from __future__ import annotations

import asyncio
from typing import Any

import strawberry

from fingerprints import domain
from fingerprints.auth import require_admin
from fingerprints.errors import ValidationError
from fingerprints.schema import catalog
from fingerprints.schema.context import Info
from fingerprints.schema.inputs import EntityRefInput, FeatureWeightInput, SimilarBatchInput, SimilarInput
from fingerprints.schema.prefetch import prefetch, selections
from fingerprints.schema.types import (
    AggregationJob,
    FeatureType,
    Fingerprint,
    FingerprintStats,
    SimilarBatchResult,
    SimilarResult,
)
from fingerprints.service import aggregation, feature_types, fingerprints, similarity, stats
from fingerprints.service.base import call

MAX_IDS = 1000


async def feature_types_(info: Info) -> list[FeatureType]:
    types = await call(feature_types.list_feature_types, info.context.services)
    return [FeatureType.of(ft, stats) for ft, stats in types]


async def feature_type(info: Info, id: strawberry.ID) -> FeatureType:
    ft, stats = await call(feature_types.feature_type_with_stats, info.context.services, type_id=str(id))
    return FeatureType.of(ft, stats)


async def fingerprint(
    info: Info,
    entity_type: domain.EntityType,
    entity_id: strawberry.ID,
    types: list[strawberry.ID] | None = None,
) -> Fingerprint:
    fp = await call(
        fingerprints.get_fingerprint,
        info.context.services,
        entity_type=entity_type,
        entity_id=str(entity_id),
        types=[str(t) for t in types] if types is not None else None,
        viewer=info.context.principal,
    )
    return Fingerprint.of(fp)


def _features(features: list[FeatureWeightInput] | None) -> list[dict[str, Any]] | None:
    if features is None:
        return None
    return [{"feature_type": str(f.feature_type), "weight": f.weight} for f in features]


def _ref(ref: EntityRefInput) -> dict[str, Any]:
    return {"entity_type": ref.entity_type, "entity_id": str(ref.entity_id)}


async def similar(info: Info, input: SimilarInput) -> SimilarResult:
    query: dict[str, Any] = {k: v for k, v in vars(input.query).items() if v is not strawberry.UNSET}
    if query.get("entities") is not None:
        query["entities"] = [_ref(r) for r in query["entities"]]
    result = await call(
        similarity.find_similar,
        info.context.services,
        query=query,
        feature_type=input.feature_type,
        features=_features(input.features),
        target_entity_type=input.target_entity_type,
        limit=input.limit,
        min_score=input.min_score,
        exclude_ids=[str(e) for e in input.exclude_ids] if input.exclude_ids is not None else None,
        include_query=input.include_query,
        viewer=info.context.principal,
    )
    return SimilarResult.of(result)


async def similar_batch(info: Info, input: SimilarBatchInput) -> SimilarBatchResult:
    result = await call(
        similarity.find_similar_batch,
        info.context.services,
        queries=[_ref(r) for r in input.queries],
        feature_type=input.feature_type,
        features=_features(input.features),
        target_entity_type=input.target_entity_type,
        limit_per_query=input.limit_per_query,
        min_score=input.min_score,
        exclude_ids=[str(e) for e in input.exclude_ids] if input.exclude_ids is not None else None,
        deduplicate=input.deduplicate,
        viewer=info.context.principal,
    )
    return SimilarBatchResult.of(result)


async def aggregation_job(info: Info, id: strawberry.ID) -> AggregationJob:
    require_admin(info.context.principal)  # as GET /v1/admin/fingerprints/aggregate/{id}
    return AggregationJob.of(await call(aggregation.get_job, info.context.services, job_id=str(id)))


async def fingerprint_stats(info: Info) -> FingerprintStats:
    require_admin(info.context.principal)  # as GET /v1/admin/fingerprints/stats
    return FingerprintStats.of(await call(stats.fingerprint_stats, info.context.services))


async def _one(info: Info, entity_type: domain.EntityType, id: strawberry.ID) -> Any:
    fields = selections(info)
    if entity_type is not domain.EntityType.PLAYLIST and fields:
        # Its similar search first, then one round: the entity, what its fields ask for, and
        # the similar entities with theirs (not for a playlist: its visibility is known only
        # once it is read).
        await catalog.prefetch_similar(info, entity_type, str(id), fields)
        catalog.load_entity(info, entity_type, str(id))
        prefetch(info, entity_type, [str(id)], fields)
        await info.context.loaders.rounds.idle()
    return await catalog.require_entity(info, entity_type, str(id))


async def _many(info: Info, entity_type: domain.EntityType, ids: list[strawberry.ID]) -> list[Any]:
    if len(ids) > MAX_IDS:
        raise ValidationError(f"at most {MAX_IDS} ids per request", field="ids")
    if entity_type is domain.EntityType.PLAYLIST:
        # Coroutines: a visibility check after each load; and no prefetch, so that nothing is
        # read for a playlist the caller may not see.
        return list(await asyncio.gather(*(catalog.load_entity(info, entity_type, str(i)) for i in ids)))
    loads: list[Any] = [catalog.load_entity(info, entity_type, str(i)) for i in ids]  # loader futures
    fields = selections(info)
    if fields:
        # What the entities' fields will ask for, in the same round as the entities themselves.
        prefetch(info, entity_type, [str(i) for i in ids], fields)
    await info.context.loaders.rounds.idle()
    return [load.result() for load in loads]  # a failed load raises, as awaiting it would


async def track(info: Info, id: strawberry.ID) -> catalog.Track:
    return await _one(info, domain.EntityType.TRACK, id)  # type: ignore[no-any-return]


async def album(info: Info, id: strawberry.ID) -> catalog.Album:
    return await _one(info, domain.EntityType.ALBUM, id)  # type: ignore[no-any-return]


async def artist(info: Info, id: strawberry.ID) -> catalog.Artist:
    return await _one(info, domain.EntityType.ARTIST, id)  # type: ignore[no-any-return]


async def playlist(info: Info, id: strawberry.ID) -> catalog.Playlist:
    return await _one(info, domain.EntityType.PLAYLIST, id)  # type: ignore[no-any-return]


async def tracks(info: Info, ids: list[strawberry.ID]) -> list[catalog.Track | None]:
    return await _many(info, domain.EntityType.TRACK, ids)


async def albums(info: Info, ids: list[strawberry.ID]) -> list[catalog.Album | None]:
    return await _many(info, domain.EntityType.ALBUM, ids)


async def artists(info: Info, ids: list[strawberry.ID]) -> list[catalog.Artist | None]:
    return await _many(info, domain.EntityType.ARTIST, ids)


async def playlists(info: Info, ids: list[strawberry.ID]) -> list[catalog.Playlist | None]:
    return await _many(info, domain.EntityType.PLAYLIST, ids)
