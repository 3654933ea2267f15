"""Mutation resolvers; every mutation is an admin operation (design §4)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import strawberry

from fingerprints.auth import require_admin
from fingerprints.schema.context import Info
from fingerprints.schema.inputs import (
    CatalogInput,
    DeleteFeatureMapsInput,
    IngestInput,
    PlaylistInput,
    RegisterFeatureTypeInput,
    TriggerAggregationInput,
    UpdateFeatureTypeInput,
)
from fingerprints.schema.types import (
    AggregationJob,
    CatalogResult,
    DeleteResult,
    FeatureType,
    IngestResult,
    PlaylistResult,
    VersionBump,
)
from fingerprints.service import aggregation, catalog, feature_types, fingerprints, ingest
from fingerprints.service.base import Services, call


def _admin(info: Info) -> Services:
    require_admin(info.context.principal)
    return info.context.services


def _given(obj: Any) -> dict[str, Any]:
    """An input's fields as a dict, without the ones the client left out."""
    return {k: v for k, v in vars(obj).items() if v is not strawberry.UNSET}


async def register_feature_type(info: Info, input: RegisterFeatureTypeInput) -> FeatureType:
    ft = await call(feature_types.register_feature_type, _admin(info), **_given(input))
    return FeatureType.of(ft)


async def update_feature_type(info: Info, id: strawberry.ID, input: UpdateFeatureTypeInput) -> FeatureType:
    ft = await call(feature_types.update_feature_type, _admin(info), type_id=str(id), changes=_given(input))
    return FeatureType.of(ft)


async def bump_feature_type_version(info: Info, id: strawberry.ID) -> VersionBump:
    bump = await call(feature_types.bump_feature_type_version, _admin(info), type_id=str(id))
    return VersionBump.of(bump)


async def ingest_feature_maps(info: Info, input: IngestInput) -> IngestResult:
    svc = _admin(info)
    features = [_given(f) for f in input.features]
    result = await call(
        ingest.ingest_feature_maps,
        svc,
        feature_type_id=str(input.feature_type_id),
        version=input.version,
        features=features,
    )
    return IngestResult.of(result)


async def delete_feature_maps(info: Info, input: DeleteFeatureMapsInput) -> DeleteResult:
    svc = _admin(info)
    entities = [_given(e) for e in input.entities] if input.entities is not None else None
    result = await call(
        fingerprints.delete_feature_maps, svc, feature_type_id=input.feature_type_id, entities=entities
    )
    return DeleteResult.of(result)


async def upsert_catalog(info: Info, input: CatalogInput) -> CatalogResult:
    svc = _admin(info)
    lists = {k: [asdict(item) for item in v] if v is not None else None for k, v in _given(input).items()}
    return CatalogResult.of(await call(catalog.upsert_catalog, svc, **lists))


async def upsert_playlist(info: Info, input: PlaylistInput) -> PlaylistResult:
    svc = _admin(info)
    return PlaylistResult.of(await call(catalog.upsert_playlist, svc, **_given(input)))


async def delete_playlist(info: Info, id: strawberry.ID) -> bool:
    await call(catalog.delete_playlist, _admin(info), playlist_id=str(id))
    return True


async def trigger_aggregation(info: Info, input: TriggerAggregationInput | None = None) -> AggregationJob:
    svc = _admin(info)
    given = input or TriggerAggregationInput()
    job = await call(
        aggregation.trigger_aggregation,
        svc,
        feature_type_id=str(given.feature_type_id) if given.feature_type_id is not None else None,
        entity_types=given.entity_types,
        force=given.force,
    )
    return AggregationJob.of(job)
