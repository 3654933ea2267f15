"""Use cases of the feature-type registry: register, list with stats, update, bump version."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from fingerprints.domain import (
    AggregationMethod,
    Distance,
    EntityType,
    FeatureType,
    FeatureTypeStats,
    parse_applies_to,
    parse_enum,
    validate_dimension,
    validate_feature_type_id,
)
from fingerprints.errors import Conflict, NotFound, ValidationError
from fingerprints.service import aggregation, indexing
from fingerprints.service.base import Services, now
from fingerprints.service.inputs import as_bool, as_str, check_keys
from fingerprints.store import catalog as catalog_store
from fingerprints.store import changes as change_log
from fingerprints.store import feature_maps as maps_store
from fingerprints.store import feature_types as types_store

UPDATABLE = ("name", "description", "aggregation_method", "is_active", "applies_to")
IMMUTABLE = ("id", "dimension", "distance", "current_version", "created_at", "updated_at")


def register_feature_type(
    svc: Services,
    *,
    id: object = None,
    name: object = None,
    dimension: object = None,
    description: object = None,
    applies_to: object = None,
    aggregation_method: object = None,
    distance: object = None,
) -> FeatureType:
    """Validate and store a new feature type at version 1; 409 when the id is taken."""
    timestamp = now()
    feature_type = FeatureType(
        id=validate_feature_type_id(id),
        name=as_str(name, field="name", max_length=200),
        description=as_str(description, field="description", optional=True),
        dimension=validate_dimension(dimension),
        current_version=1,
        applies_to=parse_applies_to(applies_to),
        aggregation_method=parse_enum(
            AggregationMethod,
            "average" if aggregation_method is None else aggregation_method,
            field="aggregation_method",
        ),
        distance=parse_enum(Distance, "cosine" if distance is None else distance, field="distance"),
        is_active=True,
        created_at=timestamp,
        updated_at=timestamp,
    )
    with svc.dbs.catalog.write() as conn:
        if types_store.get_feature_type(conn, type_id=feature_type.id) is not None:
            raise Conflict(f"feature type {feature_type.id!r} already exists", field="id")
        types_store.insert_feature_type(conn, feature_type=feature_type)
        change_log.record(conn, "type", type_id=feature_type.id)
    svc.type_cache.clear()
    return feature_type


def get_feature_type(svc: Services, *, type_id: str) -> FeatureType:
    with svc.dbs.catalog.read() as conn:
        return _require(conn, type_id)


def _require(conn: Any, type_id: str, *, field: str = "type_id") -> FeatureType:
    feature_type = types_store.get_feature_type(conn, type_id=type_id)
    if feature_type is None:
        raise NotFound(f"unknown feature type {type_id!r}", field=field)
    return feature_type


def count_all_maps(
    svc: Services, catalog_conn: Any, *, type_id: str | None = None, below_version: int | None = None
) -> dict[tuple[str, EntityType], int]:
    """Map counts per (feature type, entity type) over both databases."""
    counts = maps_store.count_maps(
        catalog_conn, playlists=False, type_id=type_id, below_version=below_version
    )
    with svc.dbs.user.read() as conn:
        counts.update(
            maps_store.count_maps(conn, playlists=True, type_id=type_id, below_version=below_version)
        )
    return counts


def list_feature_types(svc: Services) -> list[tuple[FeatureType, FeatureTypeStats]]:
    """Every feature type with its coverage stats, computed in a few grouped queries."""
    with svc.dbs.catalog.read() as conn:
        types = types_store.list_feature_types(conn)
        counts = count_all_maps(svc, conn)
        total_tracks = catalog_store.count_entities(conn, entity_type=EntityType.TRACK)
    return [(ft, _stats(ft.id, counts, total_tracks)) for ft in types]


def feature_type_with_stats(svc: Services, *, type_id: str) -> tuple[FeatureType, FeatureTypeStats]:
    with svc.dbs.catalog.read() as conn:
        feature_type = _require(conn, type_id)
        counts = count_all_maps(svc, conn, type_id=type_id)
        total_tracks = catalog_store.count_entities(conn, entity_type=EntityType.TRACK)
    return feature_type, _stats(type_id, counts, total_tracks)


def _stats(type_id: str, counts: Mapping[tuple[str, EntityType], int], total_tracks: int) -> FeatureTypeStats:
    tracks = counts.get((type_id, EntityType.TRACK), 0)
    return FeatureTypeStats(
        track_count=tracks,
        album_count=counts.get((type_id, EntityType.ALBUM), 0),
        artist_count=counts.get((type_id, EntityType.ARTIST), 0),
        playlist_count=counts.get((type_id, EntityType.PLAYLIST), 0),
        coverage_percent=round(100.0 * tracks / total_tracks, 2) if total_tracks else 0.0,
    )


def update_feature_type(svc: Services, *, type_id: str, changes: Mapping[str, Any]) -> FeatureType:
    """Change name, description, aggregation method, active flag or applies_to; the rest is fixed."""
    for key in changes:
        if key in IMMUTABLE:
            raise ValidationError(
                f"{key} cannot be changed after registration"
                + (" (register a new feature type instead)" if key in ("dimension", "distance") else "")
                + (" (use bump-version)" if key == "current_version" else ""),
                field=key,
            )
    check_keys(changes, UPDATABLE)
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = as_str(changes["name"], field="name", max_length=200)
    if "description" in changes:
        values["description"] = as_str(changes["description"], field="description", optional=True)
    if "aggregation_method" in changes:
        values["aggregation_method"] = parse_enum(
            AggregationMethod, changes["aggregation_method"], field="aggregation_method"
        )
    if "is_active" in changes:
        values["is_active"] = as_bool(changes["is_active"], field="is_active")
    if "applies_to" in changes:
        values["applies_to"] = parse_applies_to(changes["applies_to"])

    with svc.dbs.catalog.write() as conn:
        current = _require(conn, type_id)
        updated = dataclasses.replace(current, **values, updated_at=now())
        dropped = [e for e in EntityType if current.applies(e) and not updated.applies(e)]
        if dropped:
            counts = count_all_maps(svc, conn, type_id=type_id)
            stored = [e.value for e in dropped if counts.get((type_id, e), 0)]
            if stored:
                raise ValidationError(
                    f"applies_to cannot drop {', '.join(stored)}: feature maps of that entity "
                    "type are stored (delete them first)",
                    field="applies_to",
                )
        types_store.update_feature_type(conn, feature_type=updated)
        change_log.record(conn, "type", type_id=type_id)
    svc.type_cache.clear()
    indexing.feature_type_changed(svc, updated)
    if updated.aggregation_method is not current.aggregation_method or (
        updated.is_active and not current.is_active
    ):
        aggregation.mark_type_changed(svc, updated)
    return updated


@dataclasses.dataclass(frozen=True, slots=True)
class VersionBump:
    type_id: str
    previous_version: int
    new_version: int
    outdated_count: int


def bump_feature_type_version(svc: Services, *, type_id: str) -> VersionBump:
    """Raise the current version by one; every stored map is then outdated until replaced."""
    with svc.dbs.catalog.write() as conn:
        current = _require(conn, type_id)
        bumped = dataclasses.replace(current, current_version=current.current_version + 1, updated_at=now())
        types_store.update_feature_type(conn, feature_type=bumped)
        change_log.record(conn, "type", type_id=type_id)
    svc.type_cache.clear()
    with svc.dbs.catalog.read() as conn:
        outdated = count_all_maps(svc, conn, type_id=type_id, below_version=bumped.current_version)
    return VersionBump(
        type_id=type_id,
        previous_version=current.current_version,
        new_version=bumped.current_version,
        outdated_count=sum(outdated.values()),
    )
