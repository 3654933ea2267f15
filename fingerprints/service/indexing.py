"""Keeping the similarity index equal to the database: builds, lazy loads and write hooks.

Every hook runs while the writer still holds its database's write turn (``serialized``), so
the index applies writes in commit order and a lazy load can never miss one.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fingerprints.domain import EntityType, FeatureType
from fingerprints.errors import NotFound
from fingerprints.index import snapshot
from fingerprints.index.registry import IndexKey, KeyIndex
from fingerprints.service.base import Services
from fingerprints.store import changes
from fingerprints.store import feature_maps as maps_store
from fingerprints.store import feature_types as types_store

log = logging.getLogger(__name__)


def applicable(feature_type: FeatureType) -> list[EntityType]:
    return [e for e in EntityType if feature_type.applies(e)]


def watermark(svc: Services, key: IndexKey) -> snapshot.Watermark:
    """The database's side of a snapshot's proof (read under the writer's turn)."""
    with svc.dbs.for_entity(key.entity_type).read() as conn:
        return snapshot.Watermark(
            generation=maps_store.generation(conn, type_id=key.feature_type_id, entity_type=key.entity_type),
            count=maps_store.count_key(conn, type_id=key.feature_type_id, entity_type=key.entity_type),
        )


def snapshot_root(svc: Services) -> Path:
    return svc.settings.data_dir / "index"


def load_key(svc: Services, feature_type: FeatureType, entity_type: EntityType) -> KeyIndex:
    """(Re)build one key's index: from its snapshot when it matches the database (or the change
    log still holds every write since it was saved: those are replayed), else from the
    database (saying why)."""
    db = svc.dbs.for_entity(entity_type)
    key = IndexKey(feature_type.id, entity_type)
    with db.serialized():
        mark = watermark(svc, key)
        if svc.settings.index_snapshots and mark.count:
            try:
                index = _from_snapshot(svc, feature_type, key, mark)
            except snapshot.SnapshotUnusable as why:
                log.info("index %s: building from the database (%s)", key, why)
            else:
                index.source, index.saved = "snapshot", mark
                svc.index.install(index)
                log.info("index %s: %d vectors loaded from its snapshot", key, mark.count)
                return index
        with db.read() as conn:
            ids, matrix = maps_store.load_vectors(
                conn, entity_type=entity_type, type_id=feature_type.id, dimension=feature_type.dimension
            )
        return svc.index.create(key, feature_type.dimension, feature_type.distance, ids, matrix)


def _from_snapshot(
    svc: Services, feature_type: FeatureType, key: IndexKey, mark: snapshot.Watermark
) -> KeyIndex:
    root = snapshot_root(svc)
    load = functools.partial(
        snapshot.load,
        root,
        key,
        dimension=feature_type.dimension,
        distance=feature_type.distance,
        params=svc.index.params,
    )
    try:
        return load(watermark=mark)
    except snapshot.SnapshotUnusable as why:
        if not str(why).startswith("stale"):
            raise
        # Behind the database: usable when the change log still holds every write since.
        db = svc.dbs.for_entity(key.entity_type)
        seq = snapshot.saved_seq(root, key)
        with db.read() as conn:
            floor = changes.replayable_after(conn)
            entries = changes.since(conn, seq, limit=1_000_000) if seq is not None and seq >= floor else None
        if entries is None:
            raise
        touched: set[str] = set()
        for change in entries:
            if change.feature_type_id != key.feature_type_id or change.kind == "type":
                continue
            if change.entity_type not in (None, key.entity_type):
                continue
            if change.kind == "key" or change.entity_ids is None:
                raise snapshot.SnapshotUnusable("stale: every map of the key changed since") from None
            touched.update(change.entity_ids)
        index = load(watermark=None)
        from fingerprints.service.sync import refresh

        refresh(db, index, sorted(touched))
        if len(index) != mark.count:
            raise snapshot.SnapshotUnusable(
                f"stale: {len(index)} vectors after replaying the log, database {mark.count}"
            ) from None
        log.info("index %s: snapshot caught up by replaying %d changed entities", key, len(touched))
        return index


def save_snapshot(svc: Services, index: KeyIndex) -> None:
    """Snapshot one key if it changed since its last snapshot (writers wait meanwhile)."""
    if not svc.settings.index_snapshots:
        return
    db = svc.dbs.for_entity(index.key.entity_type)
    with db.serialized():
        mark = watermark(svc, index.key)
        if index.saved == mark or svc.index.get(index.key) is not index:
            return
        started = time.perf_counter()
        seq = svc.feed.positions.get(db.name, 0) if svc.feed is not None else 0
        snapshot.save(index, snapshot_root(svc), mark, seq=seq)
        index.saved = mark
    log.info("index %s: snapshot saved in %.2fs", index.key, time.perf_counter() - started)


def save_snapshots(svc: Services) -> None:
    for key in svc.index.keys():
        index = svc.index.get(key)
        if index is not None and not index.building:
            save_snapshot(svc, index)


def build_index(svc: Services) -> None:
    """Load every key of every active feature type (start-up in eager mode)."""
    started = time.perf_counter()
    with svc.dbs.catalog.read() as conn:
        types = [ft for ft in types_store.list_feature_types(conn) if ft.is_active]
    total = 0
    for feature_type in types:
        for entity_type in applicable(feature_type):
            total += len(load_key(svc, feature_type, entity_type))
    log.info("similarity index: %d vectors in %.2fs", total, time.perf_counter() - started)


def key_index(svc: Services, feature_type: FeatureType, entity_type: EntityType) -> KeyIndex:
    """The index of one key, loaded on first use when it is not there yet (lazy mode)."""
    if not feature_type.is_active:
        raise NotFound(f"feature type {feature_type.id!r} is inactive", field="feature_type")
    index = svc.index.get(IndexKey(feature_type.id, entity_type))
    if index is None:
        db = svc.dbs.for_entity(entity_type)
        with db.serialized():  # two first uses must not both load
            index = svc.index.get(IndexKey(feature_type.id, entity_type))
            if index is None:
                index = load_key(svc, feature_type, entity_type)
    return index


def maps_written(
    svc: Services, type_id: str, entity_type: EntityType, ids: Sequence[str], vectors: np.ndarray
) -> None:
    """Committed upserts: visible to the next query (keys not loaded yet will read them)."""
    index = svc.index.get(IndexKey(type_id, entity_type))
    if index is not None and len(ids):
        index.upsert_many(ids, vectors)
        svc.index.notify()


def maps_deleted(svc: Services, type_id: str | None, entity_type: EntityType, ids: Sequence[str]) -> None:
    """Committed deletes of some entities' maps (of one feature type, or of all)."""
    keys = [IndexKey(type_id, entity_type)] if type_id is not None else [
        k for k in svc.index.keys() if k.entity_type is entity_type
    ]  # fmt: skip
    for key in keys:
        index = svc.index.get(key)
        if index is not None:
            index.remove_many(ids)


def feature_type_cleared(svc: Services, type_id: str, entity_types: Sequence[EntityType]) -> None:
    """Every map of a type (of these entity types) was deleted: those keys become empty."""
    for entity_type in entity_types:
        key = IndexKey(type_id, entity_type)
        index = svc.index.get(key)
        if index is not None:
            svc.index.create(key, index.dimension, index.distance, [], np.empty((0, index.dimension)))


def feature_type_changed(svc: Services, feature_type: FeatureType) -> None:
    """Deactivated types leave the index; (re)activated or widened ones are loaded."""
    if not feature_type.is_active:
        svc.index.drop_feature_type(feature_type.id)
        return
    for entity_type in EntityType:
        key = IndexKey(feature_type.id, entity_type)
        if not feature_type.applies(entity_type):
            svc.index.drop(key)
        elif svc.index.get(key) is None and svc.settings.index_load == "eager":
            load_key(svc, feature_type, entity_type)


def index_status(svc: Services) -> dict[str, Any]:
    """For /readyz and stats: overall status and each key's kind, size, recall and tier sizes."""
    keys = svc.index.status()
    threshold = svc.settings.hnsw_threshold
    # "building" until every key that wants a graph has one, not only while one is in progress
    # (the worker builds them one after another).
    building = any(k["building"] or (k["kind"] == "exact" and k["size"] > threshold) for k in keys.values())
    status = (
        "building" if building else ("lazy" if svc.settings.index_load == "lazy" and not keys else "ready")
    )
    return {"status": status, "load": svc.settings.index_load, "keys": keys}


def start(svc: Services) -> None:
    """Start-up: build (eager) or defer (lazy) the index, then start its worker and the feed
    of other replicas' writes (from where the log ended before the build)."""
    from fingerprints.service.sync import ChangeFeed

    svc.feed = ChangeFeed(svc)
    svc.feed.mark_start()
    # A freshly built graph is worth keeping: snapshot it right away.
    svc.index.on_graph_built = lambda index: save_snapshot(svc, index)
    if svc.settings.index_load == "eager":
        build_index(svc)
    svc.index.start()
    svc.feed.start()


def stop(svc: Services) -> None:
    """Shutdown: stop the feed and the worker, then snapshot every key that changed."""
    if svc.feed is not None:
        svc.feed.stop()
    svc.index.stop()
    save_snapshots(svc)
