"""Aggregation: forced jobs through the service next to bare numpy + raw sqlite3, on one catalog.

N tracks (dimension D) on A albums and R artists (each track on one album, with its album's
artist as main artist and, for about half the tracks, a second, featured artist), with durations
and popularity, go into a real ``Services`` through ``catalog.upsert_catalog`` and
``ingest.ingest_feature_maps`` (not timed). One feature type (track, album, artist) switches its
``aggregation_method`` with ``feature_types.update_feature_type`` between runs. ``--layout
shuffled`` (default) spreads an album's tracks over the track ids and the insertion order, the
hard case for reading an album's members; ``grouped`` makes them consecutive.

Timed for every method, album and artist as separate rows: a forced job run synchronously,
``trigger_aggregation`` + ``claim_next_job`` + ``run_job``, end to end: it plans, reads the
memberships and member vectors, computes, writes the aggregates, clears the stale markers, in
chunks of ``CHUNK_OWNERS`` owners. Next to it, the pure ``aggregate()`` compute on the in-memory
arrays (same owner chunks, member gather included), so the share of everything else shows.

Baseline, same run, same arrays, nothing read: the album means in bare numpy (``argsort`` by
album + gather, then ``np.add.reduceat`` / counts; the faster of one ``reduceat`` over the whole
matrix and one per block of rows) plus a raw ``sqlite3`` ``executemany`` of the resulting album
rows (packed little-endian float32 BLOBs and the same metadata) into a copy of the same
``feature_maps`` schema (the service's migrations; same pragmas: WAL, ``synchronous=FULL``,
``foreign_keys=ON``; the same ``INSERT .. ON CONFLICT DO UPDATE``), one ``BEGIN IMMEDIATE`` ..
``COMMIT`` per ``CHUNK_OWNERS`` rows like the service. The raw write is timed twice: into an
empty table and over the existing rows; the ratio uses the case the service's ``average`` album
job met. Goal: service ``average`` (album) / (numpy + raw write) <= 2.0.

The feature type's distance defaults to euclidean, so ``average`` is the plain mean on both
sides; with ``--distance cosine`` both sides first scale every track vector to unit length.
The similarity index is lazy; the track key alone is loaded (as after a track search, or at an
eager start), with the change feed's positions, so the jobs take the member vectors from it
(``--no-index``: nothing loaded, they read them from SQLite). Its worker does not run: the key
stays exact. The album and artist keys are not loaded: the jobs' index hooks are no-ops.
Timings are best of ``--repeats``; each timed section starts with the WAL checkpointed, dirty
pages flushed and garbage collected.

    .venv/bin/python -m bench.aggregate                  # 1,000,000 x 128, 100,000 albums, 20,000 artists
    .venv/bin/python -m bench.aggregate --tracks 100000 --albums 10000 --artists 2000
    .venv/bin/python -m bench.aggregate --methods average --profile 25   # + cProfile of the job
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: ``python bench/aggregate.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from bench.ingest import UPSERT_SQL  # noqa: E402  (the service's upsert, by hand)
from fingerprints.aggregation.methods import aggregate  # noqa: E402
from fingerprints.config import Settings  # noqa: E402
from fingerprints.domain import VECTOR_DTYPE, AggregationMethod, Distance, EntityType  # noqa: E402
from fingerprints.service import catalog, feature_types, indexing, ingest  # noqa: E402
from fingerprints.service.aggregation import (  # noqa: E402
    CHUNK_OWNERS,
    claim_next_job,
    run_job,
    trigger_aggregation,
)
from fingerprints.service.base import Services, cached_feature_type, open_services  # noqa: E402
from fingerprints.service.sync import ChangeFeed  # noqa: E402

GOAL = 2.0
SEED = 20240601
ADMIN_TOKEN = "bench-admin-token"
TYPE_ID = "bench"
BLOCK_ROWS = 4096  # rows per block of the blocked numpy reduceat (as in aggregation.methods)
LAYOUTS = ("shuffled", "grouped")
METHODS = tuple(m for m in AggregationMethod if m is not AggregationMethod.NONE)
METHOD_NAMES = tuple(m.value for m in METHODS)
ENTITIES = ("album", "artist")
WEIGHT = {
    AggregationMethod.WEIGHTED_BY_DURATION: "durations",
    AggregationMethod.WEIGHTED_BY_POPULARITY: "popularity",
}
# Largest |service - expected| accepted per method: average against the float32 numpy mean;
# the others against ``aggregate()`` on the same members (the median iterates to a tolerance).
TOLERANCE = {AggregationMethod.CENTROID: 1e-3}
DEFAULT_TOLERANCE = 1e-5


# ---------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Data:
    """The synthetic catalog, as arrays; row i of everything per track is track i."""

    vectors: np.ndarray  # (tracks, dim) float32
    album_of: np.ndarray  # (tracks,) album index
    album_artist: np.ndarray  # (albums,) artist index: the album's and its tracks' main artist
    featured: np.ndarray  # (tracks,) featured artist index, -1 for none
    durations: np.ndarray  # (tracks,) duration_ms
    popularity: np.ndarray  # (tracks,) 0..100
    track_ids: list[str]
    album_ids: list[str]
    artist_ids: list[str]

    @property
    def main_artist(self) -> np.ndarray:
        return self.album_artist[self.album_of]

    def memberships(self, entity: str) -> tuple[np.ndarray, np.ndarray]:
        """(owner index, track index) of every membership, sorted by owner, then track."""
        tracks = np.arange(len(self.album_of))
        if entity == "album":
            owners = self.album_of
        else:
            has = self.featured >= 0
            owners = np.concatenate([self.main_artist, self.featured[has]])
            tracks = np.concatenate([tracks, tracks[has]])
        order = np.lexsort((tracks, owners))
        return owners[order], tracks[order]

    def owner_ids(self, entity: str) -> list[str]:
        return self.album_ids if entity == "album" else self.artist_ids


def _ids(prefix: str, n: int) -> list[str]:
    width = max(5, len(str(max(n - 1, 0))))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def _covering(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n draws from 0..k-1, every value at least once when n >= k, in random order."""
    values = np.concatenate([np.arange(min(n, k)), rng.integers(0, k, max(0, n - k))])
    return rng.permutation(values)


def make_data(
    tracks: int, albums: int, artists: int, dim: int, seed: int = SEED, *, layout: str = "shuffled"
) -> Data:
    """Every album gets a track and every artist an album when the counts allow it. ``shuffled``:
    an album's tracks are spread over the track ids (and the insertion order); ``grouped``: they
    are consecutive, as when a catalog is imported album by album."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
    rng = np.random.default_rng(seed)
    album_of = _covering(rng, tracks, albums)
    if layout == "grouped":
        album_of = np.sort(album_of)
    album_artist = _covering(rng, albums, artists)
    featured = np.full(tracks, -1, dtype=np.int64)
    if artists > 1:
        pick = rng.random(tracks) < 0.5
        other = (album_artist[album_of] + rng.integers(1, artists, tracks)) % artists
        featured[pick] = other[pick]
    return Data(
        vectors=rng.standard_normal((tracks, dim), dtype=np.float32),
        album_of=album_of,
        album_artist=album_artist,
        featured=featured,
        durations=rng.integers(30_000, 600_000, tracks),
        popularity=rng.integers(0, 101, tracks),
        track_ids=_ids("t", tracks),
        album_ids=_ids("al", albums),
        artist_ids=_ids("ar", artists),
    )


def numpy_album_means(data: Data, distance: Distance) -> tuple[np.ndarray, np.ndarray]:
    """Bare numpy: (albums, dim) float32 means of each album's tracks, and the counts."""
    rows, starts, counts = _grouped(data, distance)
    return _reduce_whole(rows, starts, counts), counts


# ---------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MethodRow:
    method: str
    entity: str
    owners: int
    service_s: float  # trigger + claim + run_job
    run_s: float  # run_job alone
    compute_s: float  # aggregate() on in-memory arrays, same chunks
    max_diff: float  # stored aggregates vs the expected ones

    @property
    def compute_share(self) -> float:
        return self.compute_s / self.service_s


@dataclass
class Result:
    tracks: int
    albums: int
    artists: int
    dim: int
    distance: str
    layout: str
    repeats: int
    memberships: dict[str, int] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    rows: list[MethodRow] = field(default_factory=list)
    baseline: dict[str, float] = field(default_factory=dict)
    raw_case: str = "fresh"  # which raw write the service's average album job compares with
    average_max_diff: float | None = None  # service average album vs the numpy means
    profile: str = ""

    def row(self, method: str, entity: str) -> MethodRow | None:
        return next((r for r in self.rows if r.method == method and r.entity == entity), None)

    @property
    def baseline_s(self) -> float:
        b = self.baseline
        return b["numpy group"] + b["numpy reduce"] + b[f"raw write, {self.raw_case}"]

    @property
    def ratio(self) -> float | None:
        row = self.row(AggregationMethod.AVERAGE.value, "album")
        return row.service_s / self.baseline_s if row and self.baseline else None

    @property
    def passed(self) -> bool | None:
        return None if self.ratio is None else self.ratio <= GOAL


# ---------------------------------------------------------------------------------- setup


def _settings(data_dir: Path, max_batch: int) -> Settings:
    return Settings(
        data_dir=data_dir,
        admin_token=ADMIN_TOKEN,
        max_batch_items=max_batch,
        index_load="lazy",
        index_snapshots=False,
        aggregation_interval=0,
        graphiql=False,
    )


def _register(svc: Services, dim: int, method: AggregationMethod, distance: Distance) -> None:
    feature_types.register_feature_type(
        svc,
        id=TYPE_ID,
        name="Bench",
        dimension=dim,
        applies_to=["track", "album", "artist"],
        aggregation_method=method.value,
        distance=distance.value,
    )


def _populate_catalog(svc: Services, data: Data) -> None:
    """Artists, then albums, then tracks, at most max_batch_items per call, in that order."""
    artist_ids, album_ids = data.artist_ids, data.album_ids
    items: list[tuple[str, dict[str, Any]]] = [
        ("artists", {"id": a, "name": f"Artist {i}", "popularity": i % 101}) for i, a in enumerate(artist_ids)
    ]
    items += [
        ("albums", {"id": a, "name": f"Album {i}", "artist_ids": [artist_ids[r]]})
        for i, (a, r) in enumerate(zip(album_ids, data.album_artist.tolist(), strict=True))
    ]
    main, featured = data.main_artist.tolist(), data.featured.tolist()
    durations, popularity = data.durations.tolist(), data.popularity.tolist()
    for i, (tid, album) in enumerate(zip(data.track_ids, data.album_of.tolist(), strict=True)):
        track: dict[str, Any] = {
            "id": tid,
            "name": f"Track {i}",
            "album_id": album_ids[album],
            "artist_ids": [artist_ids[main[i]]],
            "duration_ms": durations[i],
            "popularity": popularity[i],
        }
        if featured[i] >= 0:
            track["featured_artist_ids"] = [artist_ids[featured[i]]]
        items.append(("tracks", track))
    step = svc.settings.max_batch_items
    for start in range(0, len(items), step):
        body: dict[str, list[dict[str, Any]]] = {}
        for kind, item in items[start : start + step]:
            body.setdefault(kind, []).append(item)
        done = catalog.upsert_catalog(svc, **body)
        if done.errors:
            raise RuntimeError(f"catalog: {done.errors[:3]}")


def _ingest(svc: Services, data: Data) -> None:
    step = svc.settings.max_batch_items
    for start in range(0, len(data.track_ids), step):
        rows = range(start, min(start + step, len(data.track_ids)))
        features = [
            {"entity_type": "track", "entity_id": data.track_ids[i], "vector": data.vectors[i]} for i in rows
        ]
        stored = ingest.ingest_feature_maps(svc, feature_type_id=TYPE_ID, features=features)
        if stored.errors or stored.ingested != len(rows):
            raise RuntimeError(f"ingest: {stored.ingested} of {len(rows)}, errors {stored.errors[:3]}")


def _load_track_index(svc: Services) -> None:
    """What a running service has: the change feed's positions, and the track key of the similarity
    index loaded (eagerly, or by a track search); its worker is not started, so it stays exact."""
    svc.feed = ChangeFeed(svc)
    svc.feed.mark_start()
    feature_type = cached_feature_type(svc, TYPE_ID)
    assert feature_type is not None
    indexing.key_index(svc, feature_type, EntityType.TRACK)


# ---------------------------------------------------------------------------------- timed parts


def _connect(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, isolation_level=None)
    # The pragmas of ``store.dialect.configure_engine``.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _quiesce(*db_paths: Path) -> None:
    """Checkpoint the WALs, flush the OS's dirty pages, collect garbage: outside any timed section."""
    for path in db_paths:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    if hasattr(os, "sync"):
        os.sync()
    gc.collect()


def _service_job(svc: Services, entity: str) -> tuple[float, float, int]:
    """A forced job for one entity type of the bench type, run here: (total s, run_job s, owners)."""
    t0 = time.perf_counter()
    job = trigger_aggregation(
        svc, feature_type_id=TYPE_ID, entity_types=[entity], force=True, trigger="bench"
    )
    claimed = claim_next_job(svc)
    t1 = time.perf_counter()
    done = run_job(svc, job.id)
    t2 = time.perf_counter()
    if claimed != job.id:
        raise RuntimeError(f"claimed {claimed!r}, expected the bench job {job.id!r}")
    if done.status != "succeeded" or done.processed != done.total:
        raise RuntimeError(f"job {job.id}: {done.status}, {done.processed}/{done.total}, {done.errors[:3]}")
    return t2 - t0, t2 - t1, done.total


def _pure_compute(
    data: Data, entity: str, method: AggregationMethod, distance: Distance
) -> tuple[float, np.ndarray, np.ndarray]:
    """aggregate() over the same owner chunks as the service (member gather included): seconds,
    (owners, dim) aggregates, counts."""
    owners, tracks = data.memberships(entity)
    n_owners = len(data.owner_ids(entity))
    counts = np.bincount(owners, minlength=n_owners)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    present = np.flatnonzero(counts)
    weights_of = getattr(data, WEIGHT[method]) if method in WEIGHT else None
    out = np.zeros((n_owners, data.vectors.shape[1]), dtype=np.float32)
    gc.collect()
    start = time.perf_counter()
    for c in range(0, len(present), CHUNK_OWNERS):
        chunk = present[c : c + CHUNK_OWNERS]
        lo, hi = bounds[chunk[0]], bounds[chunk[-1] + 1]
        local = np.repeat(np.arange(len(chunk)), counts[chunk])
        members = tracks[lo:hi]
        weights = weights_of[members].astype(np.float64) if weights_of is not None else None
        values, _ = aggregate(
            method, data.vectors[members], local, len(chunk), weights=weights, distance=distance
        )
        out[chunk] = values
    return time.perf_counter() - start, out, counts


def _grouped(data: Data, distance: Distance) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The track vectors sorted by album (unit length for cosine), segment starts, counts."""
    order = np.argsort(data.album_of, kind="stable")
    rows = data.vectors[order]
    if distance is Distance.COSINE:
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    counts = np.bincount(data.album_of, minlength=len(data.album_ids))
    return rows, np.cumsum(counts) - counts, counts


def _reduce_whole(rows: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """One reduceat over the whole sorted matrix (albums without tracks: none, see make_data)."""
    return np.add.reduceat(rows, starts, axis=0) / counts[:, None]  # type: ignore[no-any-return]


def _reduce_blocked(rows: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The same, one reduceat per block of about BLOCK_ROWS rows (never splitting an album)."""
    out = np.empty((len(starts), rows.shape[1]), dtype=np.float32)
    edges = np.unique(np.append(np.searchsorted(starts, np.arange(0, len(rows), BLOCK_ROWS)), len(starts)))
    bounds = np.append(starts, len(rows))
    for a, b in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        lo, hi = int(bounds[a]), int(bounds[b])
        out[a:b] = np.add.reduceat(rows[lo:hi], starts[a:b] - lo, axis=0)
    out /= counts[:, None]
    return out


def _numpy_baseline(data: Data, distance: Distance) -> dict[str, Any]:
    """One timed pass of the numpy side: group, reduce (both ways); plus the means."""
    gc.collect()
    t0 = time.perf_counter()
    rows, starts, counts = _grouped(data, distance)
    t1 = time.perf_counter()
    whole = _reduce_whole(rows, starts, counts)
    t2 = time.perf_counter()
    blocked = _reduce_blocked(rows, starts, counts)
    t3 = time.perf_counter()
    if not np.allclose(whole, blocked, rtol=1e-5, atol=1e-6):
        raise RuntimeError("numpy baseline: whole and blocked reduceat disagree")
    return {"group": t1 - t0, "whole": t2 - t1, "blocked": t3 - t2, "means": blocked, "counts": counts}


def _raw_write(
    db_path: Path, ids: Sequence[str], values: np.ndarray, counts: np.ndarray, method: str
) -> float:
    """Seconds to pack and upsert the album rows with plain sqlite3, one commit per chunk."""
    conn = _connect(db_path)
    try:
        start = time.perf_counter()
        buffer = np.ascontiguousarray(values, dtype=VECTOR_DTYPE).tobytes()
        step = values.shape[1] * VECTOR_DTYPE.itemsize
        sizes = counts.tolist()
        computed_at = int(time.time())
        for c in range(0, len(ids), CHUNK_OWNERS):
            rows = [
                (
                    "album",
                    ids[i],
                    TYPE_ID,
                    1,
                    buffer[i * step : (i + 1) * step],
                    computed_at,
                    orjson.dumps({"track_count": sizes[i], "method": method}).decode(),
                )
                for i in range(c, min(c + CHUNK_OWNERS, len(ids)))
            ]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(UPSERT_SQL, rows)
            conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def _clear_raw(db_path: Path) -> None:
    conn = _connect(db_path)
    try:
        conn.execute("DELETE FROM feature_maps WHERE entity_type = 'album'")
    finally:
        conn.close()


def _stored(db_path: Path, entity: str, ids: Sequence[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The stored aggregates of one entity type in owner order (zeros where none) and a mask."""
    conn = sqlite3.connect(db_path)
    try:
        found = conn.execute(
            "SELECT entity_id, vector FROM feature_maps WHERE feature_type_id = ? AND entity_type = ?",
            (TYPE_ID, entity),
        ).fetchall()
    finally:
        conn.close()
    position = {owner: i for i, owner in enumerate(ids)}
    values = np.zeros((len(ids), dim), dtype=np.float32)
    mask = np.zeros(len(ids), dtype=bool)
    for owner, blob in found:
        values[position[owner]] = np.frombuffer(blob, dtype=VECTOR_DTYPE)
        mask[position[owner]] = True
    return values, mask


def _max_diff(got: np.ndarray, mask: np.ndarray, want: np.ndarray, counts: np.ndarray) -> float:
    if not np.array_equal(mask, counts > 0):
        raise RuntimeError(
            f"stored aggregates for {int(mask.sum())} owners, {int((counts > 0).sum())} expected"
        )
    return float(np.abs(got[mask] - want[mask]).max()) if mask.any() else 0.0


def _profile_job(svc: Services, entity: str, top: int) -> str:
    """cProfile of one forced job: the listed functions' cumulative time, then the top by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        _service_job(svc, entity)
    finally:
        profiler.disable()
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = max(ct for _, _, _, ct, _ in raw.values())
    root = str(Path(__file__).resolve().parent.parent) + os.sep

    def name(key: tuple[str, int, str]) -> str:
        filename, line, func = key
        if filename == "~":
            return func
        short = filename.removeprefix(root)
        if "site-packages" in short:
            short = short.split("site-packages" + os.sep, 1)[1]
        return f"{short}:{line}:{func}"

    lines = [f"cProfile of one forced {entity} job ({total:.2f}s under the profiler):"]
    lines.append(f"  {'cumulative, selected':76}{'s':>8}{'share':>8}")
    for key, (_, calls, _, ct, _) in sorted(raw.items(), key=lambda kv: -kv[1][3]):
        label = name(key)
        if label.startswith("fingerprints/") or "sqlite3" in label or "orjson" in label:
            if ct >= 0.01 * total:
                lines.append(f"  {label[:76]:76}{ct:>8.2f}{100 * ct / total:>7.1f}%  ({calls} calls)")
    lines.append(f"  {'own time, top ' + str(top):76}{'s':>8}{'share':>8}")
    for key, (_, calls, tt, _, _) in sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]:
        lines.append(f"  {name(key)[:76]:76}{tt:>8.2f}{100 * tt / total:>7.1f}%  ({calls} calls)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- run


def run(
    *,
    tracks: int = 1_000_000,
    albums: int = 100_000,
    artists: int = 20_000,
    dim: int = 128,
    methods: Sequence[str] = METHOD_NAMES,
    distance: str = "euclidean",
    layout: str = "shuffled",
    repeats: int = 1,
    max_batch: int = 100_000,
    profile: int = 0,
    index: bool = True,
    data_dir: Path | None = None,
    out: Any = sys.stdout,
) -> Result:
    """Set up, time every method and the baseline, verify the stored aggregates, print the report."""
    if min(tracks, albums, artists, dim, repeats, max_batch) < 1:
        raise ValueError("--tracks, --albums, --artists, --dim, --repeats, --max-batch must be positive")
    chosen = [AggregationMethod(m) for m in methods]
    if not chosen or AggregationMethod.NONE in chosen:
        raise ValueError(f"--methods: one or more of {', '.join(METHOD_NAMES)}")
    metric = Distance(distance)
    cleanup = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="fingerprints-bench-")) if data_dir is None else data_dir
    service_dir, raw_dir = root / "service", root / "raw"
    for d in (service_dir, raw_dir):
        if d.exists() and any(d.iterdir()):
            raise SystemExit(f"{d} is not empty: give a fresh --data-dir")
    service_db, raw_db = service_dir / "catalog.db", raw_dir / "catalog.db"

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    def phase(label: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = fn()
        result.phases[label] = time.perf_counter() - t0
        say(f"  {label:58}{result.phases[label]:>9.2f}s")
        return value

    result = Result(
        tracks=tracks,
        albums=albums,
        artists=artists,
        dim=dim,
        distance=metric.value,
        layout=layout,
        repeats=repeats,
    )
    svc: Services | None = None
    try:
        say(
            f"aggregation benchmark: {tracks:,} tracks x {dim} on {albums:,} albums, {artists:,} artists; "
            f"distance {metric.value}; {layout} layout; best of {repeats}; chunks of {CHUNK_OWNERS:,} owners"
        )
        say(
            f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, numpy {np.__version__}, "
            f"{os.cpu_count()} cpus; data dir {root}{' (temporary)' if cleanup else ''}"
        )
        say("setup (untimed):")
        data: Data = phase("generate data", lambda: make_data(tracks, albums, artists, dim, layout=layout))
        for entity in ENTITIES:
            result.memberships[entity] = len(data.memberships(entity)[0])
        svc = open_services(_settings(service_dir, max_batch))
        service = svc
        phase(
            f"catalog: {artists + albums + tracks:,} items via upsert_catalog",
            lambda: _populate_catalog(service, data),
        )
        phase("feature type", lambda: _register(service, dim, chosen[0], metric))
        phase(f"ingest: {tracks:,} vectors via ingest_feature_maps", lambda: _ingest(service, data))

        def raw_schema() -> None:
            raw_svc = open_services(_settings(raw_dir, max_batch))
            try:
                _register(raw_svc, dim, chosen[0], metric)
            finally:
                raw_svc.dbs.dispose()

        phase("raw copy: schema (service migrations) + feature type", raw_schema)
        if index:
            phase(f"track index: {tracks:,} vectors loaded (exact)", lambda: _load_track_index(service))
        phase("checkpoint + sync", lambda: _quiesce(service_db, raw_db))

        say("timed:")
        average_seen_albums = False
        for method in chosen:
            feature_types.update_feature_type(
                svc, type_id=TYPE_ID, changes={"aggregation_method": method.value}
            )
            for entity in ENTITIES:
                if method is AggregationMethod.AVERAGE and entity == "album":
                    # The first album job writes into an empty table; later ones (and repeats)
                    # overwrite the rows the previous job left.
                    result.raw_case = "fresh" if not average_seen_albums and repeats == 1 else "overwrite"
                # The baseline runs right after each average/album job (and at least 3 times), so
                # both sides meet the same moments of a noisy machine.
                with_baseline = method is AggregationMethod.AVERAGE and entity == "album"
                best_total = best_run = best_compute = float("inf")
                owners = 0
                means: np.ndarray | None = None
                for _ in range(repeats):
                    _quiesce(service_db)
                    total_s, run_s, owners = _service_job(svc, entity)
                    best_total, best_run = min(best_total, total_s), min(best_run, run_s)
                    if with_baseline:
                        means = _baseline_round(result, data, metric, raw_db)
                for _ in range(max(0, 3 - repeats) if with_baseline else 0):
                    means = _baseline_round(result, data, metric, raw_db)
                for _ in range(repeats):
                    compute_s, expected, counts = _pure_compute(data, entity, method, metric)
                    best_compute = min(best_compute, compute_s)
                ids = data.owner_ids(entity)
                got, mask = _stored(service_db, entity, ids, dim)
                diff = _max_diff(got, mask, expected, counts)
                if diff > TOLERANCE.get(method, DEFAULT_TOLERANCE):
                    raise RuntimeError(f"{method.value}/{entity}: stored aggregates differ by {diff:.3g}")
                row = MethodRow(method.value, entity, owners, best_total, best_run, best_compute, diff)
                result.rows.append(row)
                say(
                    f"  {method.value:24}{entity:8}service {best_total:8.2f}s  run_job {best_run:8.2f}s  "
                    f"aggregate() {best_compute:7.2f}s"
                )
                if entity == "album":
                    average_seen_albums = True
                if means is not None:
                    b = result.baseline
                    say(
                        f"  baseline: numpy group {b['numpy group']:.2f}s + reduce {b['numpy reduce']:.2f}s; "
                        f"raw write fresh {b['raw write, fresh']:.2f}s, "
                        f"overwrite {b['raw write, overwrite']:.2f}s"
                    )
                    result.average_max_diff = _max_diff(got, mask, means, counts)
                    if result.average_max_diff > DEFAULT_TOLERANCE:
                        raise RuntimeError(
                            f"average/album: service and numpy differ by {result.average_max_diff:.3g}"
                        )
        if profile:
            feature_types.update_feature_type(svc, type_id=TYPE_ID, changes={"aggregation_method": "average"})
            _quiesce(service_db)
            result.profile = _profile_job(svc, "album", profile)
        _report(result, say)
        return result
    finally:
        if svc is not None:
            svc.dbs.dispose()
        if cleanup:
            shutil.rmtree(root, ignore_errors=True)


def _baseline_round(result: Result, data: Data, metric: Distance, raw_db: Path) -> np.ndarray:
    """One pass of the numpy + raw sqlite3 side, each figure kept at its best: the means."""
    numpy_pass = _numpy_baseline(data, metric)
    means, counts = numpy_pass["means"], numpy_pass["counts"]
    _clear_raw(raw_db)
    _quiesce(raw_db)
    fresh = _raw_write(raw_db, data.album_ids, means, counts, "average")
    _quiesce(raw_db)
    overwrite = _raw_write(raw_db, data.album_ids, means, counts, "average")
    b, inf = result.baseline, float("inf")
    for label, seconds in (
        ("numpy group", numpy_pass["group"]),
        ("numpy reduceat, whole matrix", numpy_pass["whole"]),
        ("numpy reduceat, blocks", numpy_pass["blocked"]),
        ("raw write, fresh", fresh),
        ("raw write, overwrite", overwrite),
    ):
        b[label] = min(b.get(label, inf), seconds)
    b["numpy reduce"] = min(b["numpy reduceat, whole matrix"], b["numpy reduceat, blocks"])
    return means  # type: ignore[no-any-return]


def _report(r: Result, say: Any) -> None:
    say()
    say(
        f"memberships: {r.memberships.get('album', 0):,} album, {r.memberships.get('artist', 0):,} artist "
        f"(tracks with a featured artist count for both artists)"
    )
    say()
    say(
        f"{'method':24}{'entity':8}{'owners':>9}{'service s':>11}{'run_job s':>11}"
        f"{'aggregate() s':>15}{'compute %':>11}{'max |diff|':>12}"
    )
    for row in r.rows:
        say(
            f"{row.method:24}{row.entity:8}{row.owners:>9,}{row.service_s:>11.2f}{row.run_s:>11.2f}"
            f"{row.compute_s:>15.2f}{100 * row.compute_share:>10.1f}%{row.max_diff:>12.2g}"
        )
    say("  service s: trigger_aggregation + claim_next_job + run_job; compute %: aggregate() / service")
    ratio = r.ratio
    if ratio is None:
        say()
        say("no average/album row: baseline and goal not measured (add average to --methods)")
    else:
        b = r.baseline
        average = r.row(AggregationMethod.AVERAGE.value, "album")
        assert average is not None
        say()
        say(f"{'baseline: album means of the same arrays, nothing read':62}{'seconds':>10}")
        for label in (
            "numpy group",
            "numpy reduceat, whole matrix",
            "numpy reduceat, blocks",
            "raw write, fresh",
            "raw write, overwrite",
        ):
            say(f"  {label:60}{b[label]:>10.3f}")
        say(f"  {'= numpy (group + faster reduce) + raw write, ' + r.raw_case:60}{r.baseline_s:>10.3f}")
        say(f"  {'service average, album (end to end)':60}{average.service_s:>10.3f}")
        say(f"  {'ratio (service / baseline)':60}{ratio:>10.2f}")
        say(f"ratio <= {GOAL}: {'PASS' if r.passed else 'FAIL'}")
        say(
            f"verified: service average album aggregates = numpy means "
            f"(max |diff| {r.average_max_diff:.2g}); every row above vs aggregate() on the same members"
        )
    say()
    say("phases (untimed setup):")
    for label, seconds in r.phases.items():
        say(f"  {label:58}{seconds:>9.2f}s")
    if r.profile:
        say()
        say(r.profile)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.aggregate",
        description="Aggregation jobs through the service vs bare numpy + raw sqlite3.",
    )
    parser.add_argument("--tracks", type=int, default=1_000_000, help="tracks (default 1000000)")
    parser.add_argument("--albums", type=int, default=100_000, help="albums (default 100000)")
    parser.add_argument("--artists", type=int, default=20_000, help="artists (default 20000)")
    parser.add_argument("--dim", type=int, default=128, help="vector dimension (default 128)")
    parser.add_argument(
        "--methods",
        default=",".join(METHOD_NAMES),
        help="comma-separated aggregation methods (default: all that aggregate)",
    )
    parser.add_argument(
        "--distance", choices=[d.value for d in Distance], default="euclidean", help="(default euclidean)"
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="shuffled",
        help="an album's tracks spread over the ids (shuffled, default) or consecutive (grouped)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per figure, best kept (default 1)")
    parser.add_argument(
        "--max-batch", type=int, default=100_000, help="max_batch_items for the setup (default 100000)"
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="also cProfile an average album job, top N"
    )
    parser.add_argument(
        "--no-index",
        action="store_true",
        help="leave the similarity index unloaded: the jobs read the track vectors from SQLite",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the databases go (subdirs service/ and raw/, kept); default a temp dir, removed",
    )
    args = parser.parse_args(argv)
    run(
        tracks=args.tracks,
        albums=args.albums,
        artists=args.artists,
        dim=args.dim,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        distance=args.distance,
        layout=args.layout,
        repeats=args.repeats,
        max_batch=args.max_batch,
        profile=args.profile,
        index=not args.no_index,
        data_dir=args.data_dir,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
