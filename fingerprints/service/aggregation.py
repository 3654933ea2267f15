"""Aggregation (spec §5.3, design Q3/Q10/Q11): stale marking, jobs and their execution.

A job walks the (feature type, entity type) pairs it covers and recomputes their targets
(the stale aggregates, or all of them with ``force``) in chunks. Each chunk is read,
computed, written and un-marked while the writer's turn is held, so a write that marks an
aggregate stale meanwhile is never lost, and each chunk commits on its own so progress is
real. Re-running a job gives the same aggregates, which makes crash recovery a simple re-queue.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from fingerprints.aggregation.members import positions
from fingerprints.aggregation.methods import aggregate
from fingerprints.domain import VECTOR_DTYPE, AggregationMethod, Distance, EntityType, FeatureType, parse_enum
from fingerprints.errors import NotFound, ValidationError
from fingerprints.index.registry import IndexKey
from fingerprints.service import indexing
from fingerprints.service.base import Services, cached_feature_type, now
from fingerprints.service.inputs import as_bool, as_id, as_list
from fingerprints.store import aggregation as agg_store
from fingerprints.store import feature_maps as maps_store
from fingerprints.store import feature_types as types_store
from fingerprints.store.feature_maps import NewFeatureMap

log = logging.getLogger(__name__)

AGGREGATES = (EntityType.ALBUM, EntityType.ARTIST, EntityType.PLAYLIST)
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
CHUNK_OWNERS = 2000
# From this many targets (or half the owners of their kind) a job reads every member and vector
# in one scan (about 10x faster than key lookups at 1M tracks) and holds the writer's turn for
# the whole pass.
SCAN_MIN_TARGETS = 20_000
# Most member vectors in an HNSW graph: hnswlib copies one out in ~10 us, slower than reading
# its BLOB from SQL (1.5 us), so beyond this many the job reads them from SQL.
GRAPH_GATHER_MAX = 20_000
WEIGHT_COLUMN = {
    AggregationMethod.WEIGHTED_BY_DURATION: "duration_ms",
    AggregationMethod.WEIGHTED_BY_POPULARITY: "popularity",
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
    if type_ids is None:
        candidates = aggregating_types(catalog_conn)
    else:  # an ingest: its own type, from memory (this runs once per batch)
        found = [cached_feature_type(svc, t) for t in type_ids]
        candidates = [ft for ft in found if ft is not None and ft.is_active]
    candidates = [ft for ft in candidates if ft.aggregation_method is not AggregationMethod.NONE]
    timestamp = now()
    main_only = svc.settings.aggregation_main_artists_only
    for entity_type in AGGREGATES:
        types = [ft.id for ft in candidates if ft.applies(entity_type)]
        if not types:
            continue
        if entity_type is EntityType.PLAYLIST:
            with svc.dbs.user.read() as conn:
                owners = agg_store.owners_of_tracks(conn, entity_type=entity_type, track_ids=track_ids)
            if owners:  # most tracks are in no playlist: no second commit for them
                with svc.dbs.user.write() as conn:
                    agg_store.mark_stale(
                        conn,
                        type_ids=types,
                        entity_type=entity_type,
                        entity_ids=sorted(owners),
                        now=timestamp,
                    )
            continue
        agg_store.mark_owners_stale(
            catalog_conn,
            type_ids=types,
            entity_type=entity_type,
            track_ids=track_ids,
            now=timestamp,
            main_only=main_only,
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


def _parts(svc: Services, job: Job) -> list[tuple[FeatureType, EntityType]]:
    """The (feature type, entity type) pairs a job covers."""
    with svc.dbs.catalog.read() as conn:
        types = aggregating_types(conn)
    if job.feature_type_id is not None:
        types = [ft for ft in types if ft.id == job.feature_type_id]
    return [(ft, e) for ft in types for e in job.entity_types if ft.applies(e)]


def _plan(svc: Services, job: Job) -> list[tuple[FeatureType, EntityType, list[str]]]:
    """What a job recomputes: per (type, entity type), the stale aggregates or, forced, all."""
    main_only = svc.settings.aggregation_main_artists_only
    plan = []
    for feature_type, entity_type in _parts(svc, job):
        with svc.dbs.for_entity(entity_type).read() as conn:
            ids = agg_store.targets(
                conn, entity_type=entity_type, type_id=feature_type.id, force=job.force, main_only=main_only
            )
        if ids:
            plan.append((feature_type, entity_type, ids))
    return plan


def _estimate(svc: Services, job: Job) -> int:
    """How many aggregates ``_plan`` would give now (counted in SQL: a queued job's total)."""
    main_only = svc.settings.aggregation_main_artists_only
    total = 0
    for feature_type, entity_type in _parts(svc, job):
        with svc.dbs.for_entity(entity_type).read() as conn:
            total += agg_store.count_targets(
                conn, entity_type=entity_type, type_id=feature_type.id, force=job.force, main_only=main_only
            )
    return total


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
    job.total = _estimate(svc, job)
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
    """Claim the oldest queued job (or a running one whose replica's lease ran out) for this
    process, and return its id; the caller renews the lease while it runs (``renew_lease``)."""
    with svc.dbs.catalog.read() as conn:  # the idle scheduler asks every second: no write then
        if not agg_store.has_claimable(conn, at=time.time()):
            return None
    with svc.dbs.catalog.write() as conn:
        row = agg_store.claim_job(
            conn, owner=svc.dbs.catalog.origin, at=time.time(), lease=svc.settings.job_lease_seconds
        )
    if row is None:
        return None
    if row["status"] == "running":
        log.warning("aggregation job %s: its replica's lease expired; resuming it here", row["id"])
    log.info("aggregation job %s claimed by %s", row["id"], svc.dbs.catalog.origin)
    return str(row["id"])


def renew_lease(svc: Services, job_id: str) -> bool:
    """Extend this process's lease on a job it runs; False: another replica has taken it."""
    with svc.dbs.catalog.write() as conn:
        return agg_store.renew_lease(
            conn,
            job_id=job_id,
            owner=svc.dbs.catalog.origin,
            until=time.time() + svc.settings.job_lease_seconds,
        )


def release_lease(svc: Services, job_id: str) -> None:
    """A graceful stop left the job between two chunks: the next replica (or start) takes it
    at once instead of waiting for the lease to run out."""
    with svc.dbs.catalog.write() as conn:
        agg_store.release_lease(conn, job_id=job_id, owner=svc.dbs.catalog.origin)


def run_job(svc: Services, job_id: str, *, stopping: threading.Event | None = None) -> Job:
    """Run a claimed job to the end, recording progress after every chunk. When ``stopping``
    is set (shutdown) it returns between chunks, leaving the job running: the next start
    queues it again."""
    job = get_job(svc, job_id=job_id)
    plan = _plan(svc, job)
    total = sum(len(ids) for _, _, ids in plan)
    progress = _Progress(svc, job_id, stopping)
    with svc.dbs.catalog.write() as conn:
        agg_store.update_job(conn, job_id=job_id, total=total, processed=0)
    for feature_type, entity_type, ids in plan:
        try:
            finished = _recompute_targets(svc, feature_type, entity_type, ids, progress)
        except Exception as exc:  # noqa: BLE001 - recorded on the job, the rest still runs
            log.exception("aggregation of %s/%s failed", feature_type.id, entity_type.value)
            progress.errors.append(f"{feature_type.id}/{entity_type.value}: {type(exc).__name__}: {exc}")
            progress.advance(len(ids) - progress.done_in_pass)
            finished = True
        if not finished:
            return get_job(svc, job_id=job_id)
    with svc.dbs.catalog.write() as conn:
        agg_store.update_job(
            conn,
            job_id=job_id,
            status="failed" if progress.errors else "succeeded",
            finished_at=now(),
            errors=orjson.dumps(progress.errors).decode(),
        )
    return get_job(svc, job_id=job_id)


class _Progress:
    """A job's progress counter, written to its row after every chunk."""

    def __init__(self, svc: Services, job_id: str, stopping: threading.Event | None) -> None:
        self.svc, self.job_id, self.stopping = svc, job_id, stopping
        self.processed = 0
        self.done_in_pass = 0
        self.errors: list[str] = []

    def advance(self, n: int, catalog_conn: Any = None) -> None:
        """Count n more; in the caller's catalog.db transaction when given (one commit for a
        chunk and its progress), else in a transaction of its own."""
        self.processed += n
        self.done_in_pass += n
        if catalog_conn is not None:
            agg_store.update_job(catalog_conn, job_id=self.job_id, processed=self.processed)
            return
        with self.svc.dbs.catalog.write() as conn:
            agg_store.update_job(conn, job_id=self.job_id, processed=self.processed)

    def stop_requested(self) -> bool:
        return self.stopping is not None and self.stopping.is_set()


@dataclass(slots=True)
class _Members:
    """Memberships of some owners: member i is owner ``owners[i]``'s row ``rows[i]`` of
    ``matrix`` (the member vectors, read once), with that row's version and weight."""

    owners: np.ndarray
    rows: np.ndarray
    matrix: np.ndarray
    versions: np.ndarray
    weights: np.ndarray | None


def _recompute_targets(
    svc: Services, feature_type: FeatureType, entity_type: EntityType, ids: list[str], progress: _Progress
) -> bool:
    """Recompute the aggregates of ``ids``; False when stopped early. Each read-compute-write
    happens under the writer's turn (catalog before user), so no stale mark made meanwhile is
    lost. Many targets: one scan of every member and vector, then chunked writes; few: chunked
    key lookups."""
    progress.done_in_pass = 0
    scan = len(ids) >= SCAN_MIN_TARGETS
    if not scan and len(ids) > CHUNK_OWNERS:
        # Most owners of the kind (a forced job, a type changed): every member is read anyway,
        # and one scan reads it faster than key lookups chunk by chunk.
        with svc.dbs.for_entity(entity_type).read() as conn:
            scan = 2 * len(ids) >= agg_store.count_owners(conn, entity_type=entity_type)
    steps = [ids] if scan else [ids[i : i + CHUNK_OWNERS] for i in range(0, len(ids), CHUNK_OWNERS)]
    for step in steps:
        if progress.stop_requested():
            return False
        with ExitStack() as turn:
            turn.enter_context(svc.dbs.catalog.serialized())
            if entity_type is EntityType.PLAYLIST:
                turn.enter_context(svc.dbs.user.serialized())
            with _gather(svc, feature_type, entity_type, step, scan=scan) as members:
                vectors, counts = aggregate(
                    feature_type.aggregation_method,
                    members.matrix,
                    members.owners,
                    len(step),
                    weights=members.weights,
                    distance=feature_type.distance,
                    rows=members.rows,
                )
                version = _oldest_versions(members, len(step))
            for start in range(0, len(step), CHUNK_OWNERS):
                if start and progress.stop_requested():
                    return False
                part = slice(start, start + CHUNK_OWNERS)
                _write(
                    svc,
                    feature_type,
                    entity_type,
                    step[part],
                    vectors[part],
                    counts[part],
                    version[part],
                    progress,
                )
    return True


def _oldest_versions(members: _Members, n_owners: int) -> np.ndarray:
    """Each owner's smallest member version: an aggregate built from any outdated track map
    keeps that older version (Q10). Owners without members get the int64 maximum."""
    versions = members.versions[members.rows]
    out = np.full(n_owners, np.iinfo(np.int64).max, dtype=np.int64)
    if versions.size and versions.min() == versions.max():  # the usual case: one version
        out[members.owners] = versions[0]
    else:
        np.minimum.at(out, members.owners, versions)
    return out


@contextmanager
def _gather(
    svc: Services, feature_type: FeatureType, entity_type: EntityType, owner_ids: list[str], *, scan: bool
) -> Iterator[_Members]:
    """Memberships and member vectors of the owners, for the ``with`` block: one scan of
    everything, or the members of these owners only. Albums and artists are joined to their
    tracks by integer rowids."""
    if entity_type is not EntityType.PLAYLIST:
        with _gather_from_index(svc, feature_type, entity_type, owner_ids, scan=scan) as from_index:
            if from_index is not None:
                yield from_index
                return
    main_only = svc.settings.aggregation_main_artists_only
    column = WEIGHT_COLUMN.get(feature_type.aggregation_method)
    type_id, dimension = feature_type.id, feature_type.dimension
    if entity_type is EntityType.ALBUM and scan:
        # Every album's members with their vectors in one scan: no membership read, no join.
        with svc.dbs.catalog.read() as conn:
            rowid_of = agg_store.owner_rowids(conn, entity_type=entity_type, owner_ids=None)
            album_rowids, matrix, versions, weight_values = agg_store.album_member_maps(
                conn, type_id=type_id, dimension=dimension, weight=column
            )
        owners = _owner_positions(owner_ids, rowid_of, album_rowids)
        rows = np.flatnonzero(owners >= 0)
        weights = weight_values[rows].astype(np.float64) if weight_values is not None else None
        yield _Members(owners[rows], rows, matrix, versions, weights)
        return
    if entity_type is EntityType.PLAYLIST:
        with svc.dbs.user.read() as conn:
            pairs = agg_store.memberships(
                conn, entity_type=entity_type, owner_ids=None if scan else owner_ids
            )
        track_ids = sorted({t for _, t in pairs})
        with svc.dbs.catalog.read() as conn:
            rowid_of = agg_store.track_rowids(conn, track_ids=track_ids)
            keys, matrix, versions = agg_store.track_maps(
                conn, type_id=type_id, dimension=dimension, track_ids=None if scan else track_ids
            )
            weighted = (
                agg_store.track_weights(conn, column=column, track_ids=None if scan else track_ids)
                if column is not None
                else None
            )
        owner_of = dict(zip(owner_ids, range(len(owner_ids)), strict=True))
        owners = np.fromiter((owner_of.get(o, -1) for o, _ in pairs), dtype=np.int64, count=len(pairs))
        members = np.fromiter((rowid_of.get(t, -1) for _, t in pairs), dtype=np.int64, count=len(pairs))
    else:
        with svc.dbs.catalog.read() as conn:
            rowid_of = agg_store.owner_rowids(
                conn, entity_type=entity_type, owner_ids=None if scan else owner_ids
            )
            owner_rowids, members = agg_store.member_rowids(
                conn, entity_type=entity_type, owner_ids=None if scan else owner_ids, main_only=main_only
            )
            wanted = (
                None
                if scan
                else agg_store.member_track_ids(
                    conn, entity_type=entity_type, owner_ids=owner_ids, main_only=main_only
                )
            )
            keys, matrix, versions = agg_store.track_maps(
                conn, type_id=type_id, dimension=dimension, track_ids=wanted
            )
            weighted = (
                agg_store.track_weights(conn, column=column, track_ids=wanted) if column is not None else None
            )
        owners = _owner_positions(owner_ids, rowid_of, owner_rowids)
    rows = positions(keys, members)
    keep = (owners >= 0) & (rows >= 0)  # members of other owners, or without this feature
    owners, rows = owners[keep], rows[keep]
    weights = None
    if weighted is not None:
        weight_rowids, weight_values = weighted
        weights = weight_values[positions(weight_rowids, keys)][rows].astype(np.float64)
    yield _Members(owners, rows, matrix, versions, weights)


@contextmanager
def _gather_from_index(
    svc: Services, feature_type: FeatureType, entity_type: EntityType, owner_ids: list[str], *, scan: bool
) -> Iterator[_Members | None]:
    """``_gather`` with the member vectors taken from the similarity index, which holds every
    track vector of the type in memory: SQL then reads memberships and track ids, no BLOBs.
    None (read them from SQL instead) unless the index provably equals the database. The
    members' matrix may be the index's own, under its read lock until the block ends.

    The caller holds catalog.db's write turn, and this process's writes reach the index before
    they give up that turn, so only another process's writes can be missing: those are in the
    change log, and the index has applied every one up to the feed's position. Looking for one
    after it *after* reading means nothing read here predates a write the index lacks.

    Cosine types always read SQL: their index holds unit vectors, which ``aggregate`` would
    normalise a second time, a float32 rounding away from the SQL path. A job must store the
    same bits whichever replica runs it (or resumes it) and whether its index is loaded; the
    raw vectors of the other distances are bit for bit the database's.
    """
    index = svc.index.get(IndexKey(feature_type.id, EntityType.TRACK))
    catalog = svc.dbs.catalog
    if (
        feature_type.distance is Distance.COSINE
        or index is None
        or svc.feed is None  # no feed: other processes' writes would go unnoticed
        or catalog.name not in svc.feed.positions
        or index.dimension != feature_type.dimension
        or index.distance is not feature_type.distance
    ):
        yield None
        return
    position = svc.feed.positions[catalog.name]
    column = WEIGHT_COLUMN.get(feature_type.aggregation_method)
    with catalog.read() as conn:
        rowid_of = agg_store.owner_rowids(
            conn, entity_type=entity_type, owner_ids=None if scan else owner_ids
        )
        owner_rowids, track_ids, weighted = agg_store.member_track_keys(
            conn,
            entity_type=entity_type,
            owner_ids=None if scan else owner_ids,
            main_only=svc.settings.aggregation_main_artists_only,
            weight=column,
        )
        low, high = agg_store.version_bounds(conn, type_id=feature_type.id)
        older = (
            agg_store.track_versions_below(conn, type_id=feature_type.id, below=high)
            if high is not None and low != high
            else {}
        )
    owners = _owner_positions(owner_ids, rowid_of, owner_rowids)
    # The index's lock is held while the caller aggregates from its matrix: fine for one pass
    # over the members, not for the median's iterations (a copy of the members, then no lock).
    lend = feature_type.aggregation_method is not AggregationMethod.CENTROID
    with index.gather(track_ids, graph_limit=GRAPH_GATHER_MAX, lend=lend) as gathered:
        if gathered is None:
            yield None
            return
        rows, matrix = gathered
        with catalog.read() as conn:
            if agg_store.foreign_changes_after(conn, seq=position, origin=catalog.origin):
                log.info("aggregation of %s/%s: index behind other writers, reading SQL", feature_type.id,
                         entity_type.value)  # fmt: skip
                yield None
                return
        # Every map of the type has a version <= high: a track map not among the older ones has it.
        versions = np.full(len(matrix), high if high is not None else 0, dtype=np.int64)
        if older:
            found = rows >= 0
            member_versions = np.fromiter(
                map(older.get, track_ids, itertools.repeat(high)), np.int64, len(rows)
            )
            versions[rows[found]] = member_versions[found]
        keep = (owners >= 0) & (rows >= 0)
        weights = weighted[keep].astype(np.float64) if weighted is not None else None
        yield _Members(owners[keep], rows[keep], matrix, versions, weights)


def _owner_positions(owner_ids: list[str], rowid_of: dict[str, int], owner_rowids: np.ndarray) -> np.ndarray:
    """Position in ``owner_ids`` of each membership's owner rowid; -1: an owner not covered."""
    known = [i for i, owner in enumerate(owner_ids) if owner in rowid_of]
    target_rowids = np.fromiter((rowid_of[owner_ids[i]] for i in known), np.int64, len(known))
    # A trailing -1 turns "not found" (-1) into "no owner" in the same lookup.
    return np.append(np.asarray(known, dtype=np.int64), -1)[positions(target_rowids, owner_rowids)]


def _write(
    svc: Services,
    feature_type: FeatureType,
    entity_type: EntityType,
    owner_ids: list[str],
    vectors: np.ndarray,
    counts: np.ndarray,
    version: np.ndarray,
    progress: _Progress,
) -> None:
    """Store the aggregates of owners with members, delete those of owners without, un-mark
    all of them and count them done (one transaction where the job lives in the same
    database), then update the index."""
    sizes = counts.tolist()
    present = [i for i, size in enumerate(sizes) if size]
    empty = [owner_ids[i] for i, size in enumerate(sizes) if not size]
    timestamp = now()
    method = orjson.dumps(feature_type.aggregation_method.value).decode()
    # One encode of the chunk; each row's BLOB is a slice of it.
    packed = np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE).tobytes()
    width = feature_type.dimension * VECTOR_DTYPE.itemsize
    versions = version.tolist()
    kind, type_id = entity_type.value, feature_type.id
    # The rows built column by column and zipped in C (a chunk has thousands); one metadata
    # string per distinct member count.
    metadata = {size: f'{{"track_count":{size},"method":{method}}}' for size in set(sizes)}
    n = len(present)
    columns = (
        itertools.repeat(kind, n),
        [owner_ids[i] for i in present],
        itertools.repeat(type_id, n),
        [versions[i] for i in present],
        [packed[i * width : (i + 1) * width] for i in present],
        itertools.repeat(timestamp, n),
        [metadata[sizes[i]] for i in present],
    )
    written: list[NewFeatureMap] = list(
        map(tuple.__new__, itertools.repeat(NewFeatureMap, n), zip(*columns, strict=True))
    )
    playlists = entity_type is EntityType.PLAYLIST
    with svc.dbs.for_entity(entity_type).write() as conn:
        maps_store.upsert_feature_maps(conn, rows=written, playlists=playlists)
        if empty:
            maps_store.delete_entity_maps(conn, entity_type=entity_type, entity_ids=empty, type_id=type_id)
        agg_store.clear_stale(conn, type_id=type_id, entity_type=entity_type, entity_ids=owner_ids)
        if not playlists:
            progress.advance(len(owner_ids), conn)
    if playlists:
        progress.advance(len(owner_ids))
    if present:
        indexing.maps_written(svc, type_id, entity_type, [owner_ids[i] for i in present], vectors[present])
    if empty:
        indexing.maps_deleted(svc, type_id, entity_type, empty)


def sweep_stale(svc: Services) -> Job | None:
    """Queue a job for whatever is stale (the scheduler's periodic pass); None if nothing is,
    or if a sweep is already pending. Replicas over one PostgreSQL take turns through an
    advisory lock, so one sweep is queued however many replicas look at once."""
    with svc.dbs.catalog.engine.connect() as lock_conn:
        if not agg_store.try_sweep_lock(lock_conn):
            return None
        try:
            with svc.dbs.catalog.read() as conn:
                if agg_store.pending_sweep(conn):
                    return None
                stale = agg_store.count_stale(conn)
            with svc.dbs.user.read() as conn:
                stale += agg_store.count_stale(conn)
            if not stale:
                return None
            return trigger_aggregation(svc, trigger="schedule")
        finally:
            agg_store.release_sweep_lock(lock_conn)
            lock_conn.commit()
