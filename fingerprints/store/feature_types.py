"""Data access for the feature-type registry (``feature_map_types``)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from fingerprints.domain import AggregationMethod, Distance, EntityType, FeatureType
from fingerprints.store.tables import feature_map_types as t


def _from_row(row: Any) -> FeatureType:
    applies = orjson.loads(row.applies_to) if row.applies_to else []
    return FeatureType(
        id=row.id,
        name=row.name,
        description=row.description,
        dimension=row.dimension,
        current_version=row.current_version,
        applies_to=tuple(EntityType(v) for v in applies),
        aggregation_method=AggregationMethod(row.aggregation_method),
        distance=Distance(row.distance),
        is_active=bool(row.is_active),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _applies_json(applies_to: tuple[EntityType, ...]) -> str | None:
    return orjson.dumps([e.value for e in applies_to]).decode() if applies_to else None


def get_feature_type(conn: Connection, *, type_id: str) -> FeatureType | None:
    row = conn.execute(select(t).where(t.c.id == type_id)).first()
    return _from_row(row) if row else None


def list_feature_types(conn: Connection) -> list[FeatureType]:
    return [_from_row(row) for row in conn.execute(select(t).order_by(t.c.id))]


def insert_feature_type(conn: Connection, *, feature_type: FeatureType) -> None:
    ft = feature_type
    conn.execute(
        t.insert().values(
            id=ft.id,
            name=ft.name,
            description=ft.description,
            dimension=ft.dimension,
            current_version=ft.current_version,
            applies_to=_applies_json(ft.applies_to),
            aggregation_method=ft.aggregation_method.value,
            distance=ft.distance.value,
            is_active=int(ft.is_active),
            created_at=ft.created_at,
            updated_at=ft.updated_at,
        )
    )


def update_feature_type(conn: Connection, *, feature_type: FeatureType) -> None:
    """Write the mutable fields of ``feature_type`` back to its row."""
    ft = feature_type
    conn.execute(
        update(t)
        .where(t.c.id == ft.id)
        .values(
            name=ft.name,
            description=ft.description,
            current_version=ft.current_version,
            applies_to=_applies_json(ft.applies_to),
            aggregation_method=ft.aggregation_method.value,
            is_active=int(ft.is_active),
            updated_at=ft.updated_at,
        )
    )
