"""Aggregation (spec §5.3, design Q3/Q10/Q11): stale marking, jobs and their execution.

A job walks the (feature type, entity type) pairs it covers and recomputes their targets
(the stale aggregates, or all of them with ``force``) in chunks. Each chunk is read,
computed, written and un-marked while the writer's turn is held, so a write that marks an
aggregate stale meanwhile is never lost, and each chunk commits on its own so progress is
real. Re-running a job gives the same aggregates, which makes crash recovery a simple re-queue.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from fingerprints.aggregation.methods import aggregate
from fingerprints.domain import VECTOR_DTYPE, AggregationMethod, EntityType, FeatureType, parse_enum
from fingerprints.errors import NotFound, ValidationError
from fingerprints.service import indexing
from fingerprints.service.base import Services, now
from fingerprints.service.inputs import as_bool, as_id, as_list
from fingerprints.store import aggregation as agg_store
from fingerprints.store import feature_maps as maps_store
from fingerprints.store import feature_types as types_store
from fingerprints.store.feature_maps import NewFeatureMap

log = logging.getLogger(__name__)

AGGREGATES = (EntityType.ALBUM, EntityType.ARTIST, EntityType.PLAYLIST)
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
CHUNK_OWNERS = 2000
WEIGHT_COLUMN = {
    AggregationMethod.WEIGHTED_BY_DURATION: 0,
    AggregationMethod.WEIGHTED_BY_POPULARITY: 1,
}


@dataclass(slots=True)
class Job:
    id: str
    status: str
    feature_type_id: str | None
    entity_types: list[EntityType]
    force: bool
    trigger: str
    processed: int
    total: int
    created_at: int
    started_at: int | None
    finished_at: int | None
    errors: list[str] = field(default_factory=list)

    @property
    def percent(self) -> float:
        return round(100.0 * self.processed / self.total, 1) if self.total else (100.0 if self.done else 0.0)

    @property
    def done(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def of(cls, row: dict[str, Any]) -> Job:
        return cls(
            id=row["id"],
            status=row["status"],
            feature_type_id=row["feature_type_id"],
            entity_types=[EntityType(e) for e in orjson.loads(row["entity_types"])],
            force=bool(row["force"]),
            trigger=row["trigger"],
            processed=row["processed"],
            total=row["total"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            errors=orjson.loads(row["errors"]),
        )


# ------------------------------------------------------------------ stale marking


def aggregating_types(conn: Any, entity_type: EntityType | None = None) -> list[FeatureType]:
    """Active feature types that aggregate (optionally: into this entity type)."""
    return [
        ft
        for ft in types_store.list_feature_types(conn)
        if ft.is_active
        and ft.aggregation_method is not AggregationMethod.NONE
        and (entity_type is None or ft.applies(entity_type))
    ]


def mark_tracks_changed(
    svc: Services,
    catalog_conn: Any,
    *,
    track_ids: Sequence[str],
    type_ids: Sequence[str] | None = None,
) -> None:
    """The albums and artists of these tracks (in the caller's catalog transaction) and the
    playlists holding them (user.db) are stale for the given or every aggregating type."""
    if not track_ids:
        return
    timestamp = now()
    main_only = svc.settings.aggregation_main_artists_only
    for entity_type in (EntityType.ALBUM, EntityType.ARTIST):
        types = [
            ft.id
            for ft in aggregating_types(catalog_conn, entity_type)
            if type_ids is None or ft.id in type_ids
        ]
        if types:
            owners = agg_store.owners_of_tracks(
                catalog_conn, entity_type=entity_type, track_ids=track_ids, main_only=main_only
            )
            agg_store.mark_stale(
                catalog_conn,
                type_ids=types,
                entity_type=entity_type,
                entity_ids=sorted(owners),
                now=timestamp,
            )
    types = [
        ft.id
        for ft in aggregating_types(catalog_conn, EntityType.PLAYLIST)
        if type_ids is None or ft.id in type_ids
    ]
    if types:
        with svc.dbs.user.write() as conn:
            owners = agg_store.owners_of_tracks(conn, entity_type=EntityType.PLAYLIST, track_ids=track_ids)
            agg_store.mark_stale(
                conn,
                type_ids=types,
                entity_type=EntityType.PLAYLIST,
                entity_ids=sorted(owners),
                now=timestamp,
            )


def mark_type_changed(svc: Services, feature_type: FeatureType) -> None:
    """A new aggregation method (or a re-activated type): every aggregate of it is stale."""
    if not feature_type.is_active or feature_type.aggregation_method is AggregationMethod.NONE:
        return
    timestamp = now()
    main_only = svc.settings.aggregation_main_artists_only
    for entity_type in AGGREGATES:
        if not feature_type.applies(entity_type):
            continue
        with svc.dbs.for_entity(entity_type).write() as conn:
            owners = agg_store.owners_with_members(conn, entity_type=entity_type, main_only=main_only)
            agg_store.mark_stale(
                conn, type_ids=[feature_type.id], entity_type=entity_type, entity_ids=owners, now=timestamp
            )


def mark_playlist_changed(svc: Services, user_conn: Any, *, playlist_id: str) -> None:
    with svc.dbs.catalog.read() as conn:
        types = [ft.id for ft in aggregating_types(conn, EntityType.PLAYLIST)]
    agg_store.mark_stale(
        user_conn, type_ids=types, entity_type=EntityType.PLAYLIST, entity_ids=[playlist_id], now=now()
    )


# ------------------------------------------------------------------ jobs


def _plan(svc: Services, job: Job) -> list[tuple[FeatureType, EntityType, list[str]]]:
    """What a job recomputes: per (type, entity type), the stale aggregates or, forced, all."""
    with svc.dbs.catalog.read() as conn:
        types = aggregating_types(conn)
    if job.feature_type_id is not None:
        types = [ft for ft in types if ft.id == job.feature_type_id]
    main_only = svc.settings.aggregation_main_artists_only
    plan = []
    for feature_type in types:
        for entity_type in job.entity_types:
            if not feature_type.applies(entity_type):
                continue
            with svc.dbs.for_entity(entity_type).read() as conn:
                if job.force:
                    targets = set(
                        agg_store.owners_with_members(conn, entity_type=entity_type, main_only=main_only)
                    )
                    targets.update(
                        agg_store.owners_with_aggregates(
                            conn, entity_type=entity_type, type_id=feature_type.id
                        )
                    )
                    targets.update(
                        agg_store.stale_ids(conn, type_id=feature_type.id, entity_type=entity_type)
                    )
                    ids = sorted(targets)
                else:
                    ids = agg_store.stale_ids(conn, type_id=feature_type.id, entity_type=entity_type)
            if ids:
                plan.append((feature_type, entity_type, ids))
    return plan


def trigger_aggregation(
    svc: Services,
    *,
    feature_type_id: object = None,
    entity_types: object = None,
    force: object = None,
    trigger: str = "api",
) -> Job:
    """Queue a job; the scheduler runs queued jobs one at a time."""
    type_id = as_id(feature_type_id, field="feature_type_id") if feature_type_id is not None else None
    kinds = (
        list(AGGREGATES)
        if entity_types is None
        else [
            parse_enum(EntityType, e, field="entity_types")
            for e in as_list(entity_types, field="entity_types")
        ]
    )
    if not kinds or EntityType.TRACK in kinds:
        raise ValidationError("entity_types must list album, artist and/or playlist", field="entity_types")
    forced = as_bool(force, field="force") if force is not None else False
    if type_id is not None:
        with svc.dbs.catalog.read() as conn:
            feature_type = types_store.get_feature_type(conn, type_id=type_id)
        if feature_type is None:
            raise NotFound(f"unknown feature type {type_id!r}", field="feature_type_id")
        if feature_type.aggregation_method is AggregationMethod.NONE:
            raise ValidationError(
                f"feature type {type_id!r} does not aggregate (method none)", field="feature_type_id"
            )
    job = Job(
        # Time-ordered ids: jobs queued within one second still run in the order they came.
        id=f"agg_{time.time_ns():x}{secrets.token_hex(3)}",
        status="queued",
        feature_type_id=type_id,
        entity_types=list(dict.fromkeys(kinds)),
        force=forced,
        trigger=trigger,
        processed=0,
        total=0,
        created_at=now(),
        started_at=None,
        finished_at=None,
    )
    job.total = sum(len(ids) for _, _, ids in _plan(svc, job))
    with svc.dbs.catalog.write() as conn:
        agg_store.insert_job(
            conn,
            id=job.id,
            feature_type_id=type_id,
            entity_types=orjson.dumps([e.value for e in job.entity_types]).decode(),
            force=int(forced),
            trigger=trigger,
            status="queued",
            total=job.total,
            created_at=job.created_at,
        )
    if svc.scheduler is not None:
        svc.scheduler.wake()
    return job


def get_job(svc: Services, *, job_id: object) -> Job:
    jid = as_id(job_id, field="job_id")
    with svc.dbs.catalog.read() as conn:
        row = agg_store.get_job(conn, job_id=jid)
    if row is None:
        raise NotFound(f"aggregation job {jid!r} not found", field="job_id")
    return Job.of(row)


def claim_next_job(svc: Services) -> str | None:
    """Mark the oldest queued job running and return its id."""
    with svc.dbs.catalog.write() as conn:
        row = agg_store.next_queued(conn)
        if row is None:
            return None
        agg_store.update_job(conn, job_id=row["id"], status="running", started_at=now(), processed=0)
    return str(row["id"])


def requeue_interrupted(svc: Services) -> int:
    with svc.dbs.catalog.write() as conn:
        count = agg_store.requeue_running(conn)
    if count:
        log.warning("re-queued %d aggregation job(s) interrupted by a restart", count)
    return count


def run_job(svc: Services, job_id: str, *, stopping: threading.Event | None = None) -> Job:
    """Run a claimed job to the end, recording progress after every chunk. When ``stopping``
    is set (shutdown) it returns between chunks, leaving the job running: the next start
    queues it again."""
    job = get_job(svc, job_id=job_id)
    plan = _plan(svc, job)
    total = sum(len(ids) for _, _, ids in plan)
    processed = 0
    errors: list[str] = []
    with svc.dbs.catalog.write() as conn:
        agg_store.update_job(conn, job_id=job_id, total=total, processed=0)
    for feature_type, entity_type, ids in plan:
        for start in range(0, len(ids), CHUNK_OWNERS):
            if stopping is not None and stopping.is_set():
                return get_job(svc, job_id=job_id)
            chunk = ids[start : start + CHUNK_OWNERS]
            try:
                recompute(svc, feature_type, entity_type, chunk)
            except Exception as exc:  # noqa: BLE001 - recorded on the job, the rest still runs
                log.exception("aggregation of %s/%s failed", feature_type.id, entity_type.value)
                errors.append(f"{feature_type.id}/{entity_type.value}: {type(exc).__name__}: {exc}")
            processed += len(chunk)
            with svc.dbs.catalog.write() as conn:
                agg_store.update_job(conn, job_id=job_id, processed=processed)
    with svc.dbs.catalog.write() as conn:
        agg_store.update_job(
            conn,
            job_id=job_id,
            status="failed" if errors else "succeeded",
            finished_at=now(),
            errors=orjson.dumps(errors).decode(),
        )
    return get_job(svc, job_id=job_id)


def recompute(
    svc: Services, feature_type: FeatureType, entity_type: EntityType, owner_ids: Sequence[str]
) -> None:
    """Recompute, write and un-mark the aggregates of some owners; those without member
    vectors lose their aggregate."""
    with ExitStack() as turn:
        turn.enter_context(svc.dbs.catalog.serialized())  # always catalog before user
        if entity_type is EntityType.PLAYLIST:
            turn.enter_context(svc.dbs.user.serialized())
        db = svc.dbs.for_entity(entity_type)
        with db.read() as conn:
            pairs = agg_store.memberships(
                conn,
                entity_type=entity_type,
                owner_ids=owner_ids,
                main_only=svc.settings.aggregation_main_artists_only,
            )
        member_ids = sorted({t for _, t in pairs})
        with svc.dbs.catalog.read() as conn:
            track_ids, matrix, versions = agg_store.track_vectors(
                conn, type_id=feature_type.id, track_ids=member_ids, dimension=feature_type.dimension
            )
            column = WEIGHT_COLUMN.get(feature_type.aggregation_method)
            weights_by_id = agg_store.track_weights(conn, track_ids=track_ids) if column is not None else {}
        row_of = {t: i for i, t in enumerate(track_ids)}
        owner_pos = {o: i for i, o in enumerate(owner_ids)}
        kept = [(owner_pos[o], row_of[t]) for o, t in pairs if t in row_of]
        owners = np.array([o for o, _ in kept], dtype=np.int64)
        rows = np.array([r for _, r in kept], dtype=np.int64)
        weights = None
        if column is not None:
            weights = np.array([weights_by_id[track_ids[r]][column] for r in rows], dtype=np.float64)
        vectors, counts = aggregate(
            feature_type.aggregation_method,
            np.ascontiguousarray(matrix[rows])
            if len(rows)
            else np.empty((0, feature_type.dimension), np.float32),
            owners,
            len(owner_ids),
            weights=weights,
            distance=feature_type.distance,
        )
        # An aggregate built from any outdated track map keeps that older version (Q10).
        version = np.full(len(owner_ids), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(version, owners, versions[rows] if len(rows) else np.empty(0, np.int64))
        present = np.flatnonzero(counts > 0).tolist()
        empty = [owner_ids[i] for i in np.flatnonzero(counts == 0).tolist()]
        timestamp = now()
        method = feature_type.aggregation_method.value
        blob = np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE)
        written = [
            NewFeatureMap(
                entity_type.value,
                owner_ids[i],
                feature_type.id,
                int(version[i]),
                blob[i].tobytes(),
                timestamp,
                orjson.dumps({"track_count": int(counts[i]), "method": method}).decode(),
            )
            for i in present
        ]
        with db.write() as conn:
            maps_store.upsert_feature_maps(conn, rows=written, playlists=entity_type is EntityType.PLAYLIST)
            if empty:
                maps_store.delete_entity_maps(
                    conn, entity_type=entity_type, entity_ids=empty, type_id=feature_type.id
                )
            agg_store.clear_stale(
                conn, type_id=feature_type.id, entity_type=entity_type, entity_ids=owner_ids
            )
        indexing.maps_written(
            svc, feature_type.id, entity_type, [owner_ids[i] for i in present], vectors[present]
        )
        if empty:
            indexing.maps_deleted(svc, feature_type.id, entity_type, empty)


def sweep_stale(svc: Services) -> Job | None:
    """Queue a job for whatever is stale (the scheduler's periodic pass); None if nothing is."""
    with svc.dbs.catalog.read() as conn:
        stale = agg_store.count_stale(conn)
    with svc.dbs.user.read() as conn:
        stale += agg_store.count_stale(conn)
    if not stale:
        return None
    return trigger_aggregation(svc, trigger="schedule")
