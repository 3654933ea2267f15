"""Statistics (spec §6.2): coverage per feature type and entity type, storage, index, jobs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fingerprints.domain import EntityType
from fingerprints.service import indexing
from fingerprints.service.base import Services
from fingerprints.service.feature_types import count_all_maps
from fingerprints.store import aggregation as agg_store
from fingerprints.store import catalog as catalog_store
from fingerprints.store import feature_types as types_store


@dataclass(frozen=True, slots=True)
class Coverage:
    total: int
    with_feature: int
    outdated: int


@dataclass(frozen=True, slots=True)
class FingerprintStats:
    feature_types: dict[str, dict[EntityType, Coverage]]
    storage_bytes: int
    index_status: str
    index: dict[str, Any]
    last_aggregation: int | None


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        total += sum((Path(root) / f).stat().st_size for f in files)
    return total


def fingerprint_stats(svc: Services) -> FingerprintStats:
    """Counts computed in a few grouped queries per database."""
    with svc.dbs.catalog.read() as conn:
        types = types_store.list_feature_types(conn)
        totals = {
            e: catalog_store.count_entities(conn, entity_type=e)
            for e in (EntityType.TRACK, EntityType.ALBUM, EntityType.ARTIST)
        }
        with_feature = count_all_maps(svc, conn)
        outdated: dict[tuple[str, EntityType], int] = {}
        for ft in types:
            outdated.update(count_all_maps(svc, conn, type_id=ft.id, below_version=ft.current_version))
        last = agg_store.last_finished(conn)
    with svc.dbs.user.read() as conn:
        totals[EntityType.PLAYLIST] = catalog_store.count_entities(conn, entity_type=EntityType.PLAYLIST)
    files = [Path(p) for db in (svc.dbs.catalog, svc.dbs.user) for p in db.files()]
    storage = sum(_size(p) for p in files if p.exists())
    snapshots = indexing.snapshot_root(svc)
    if snapshots.exists():
        storage += _size(snapshots)
    index = indexing.index_status(svc)
    return FingerprintStats(
        feature_types={
            ft.id: {
                e: Coverage(totals[e], with_feature.get((ft.id, e), 0), outdated.get((ft.id, e), 0))
                for e in EntityType
                if ft.applies(e)
            }
            for ft in types
        },
        storage_bytes=storage,
        index_status=index["status"],
        index=index,
        last_aggregation=last,
    )
