"""Query resolvers."""

from __future__ import annotations

import strawberry

from fingerprints import domain
from fingerprints.schema.context import Info
from fingerprints.schema.types import FeatureType, Fingerprint
from fingerprints.service import feature_types, fingerprints
from fingerprints.service.base import call


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
