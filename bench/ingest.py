"""Ingest throughput: the REST endpoint (in-process ASGI) next to raw ``sqlite3.executemany``.

Ingests N vectors of dimension D in batches through ``POST /v1/admin/fingerprints/ingest`` on
the real app (lifespan running, httpx ``ASGITransport``), then writes the same rows into a
fresh copy of the same schema with plain ``sqlite3`` ``executemany`` (same pragmas: WAL,
``synchronous=FULL``, ``foreign_keys=ON``; same ``INSERT .. ON CONFLICT DO UPDATE``; one
``BEGIN IMMEDIATE`` .. ``COMMIT`` per batch, like the service). The baseline runs first, right
before the service, so that nothing the service leaves running in the background can slow it
down. Prints both rates, their ratio and whether the ratio meets the goal.

The feature type applies to every entity type and aggregates (``average``), as a catalog's
usually does, so every batch also marks its tracks' albums and artists stale (and looks for
playlists holding them); the run checks those markers afterwards. A type restricted to tracks
would skip that bookkeeping.

Crossing ``FINGERPRINTS_HNSW_THRESHOLD`` (50,000 by default) starts an HNSW graph build in the
service's background worker while the ingest goes on: that overlap is part of the timed run.
A build still running when the last request is answered cannot be interrupted; the report says
so, and ``main`` ends the process without waiting for it.

Not timed: catalog creation, feature-type registration, vector generation, encoding the
request bodies (client-side JSON) and packing the baseline's BLOBs. Timed for the service:
every request end to end (server-side JSON decoding, validation, SQLAlchemy, commit).

    .venv/bin/python -m bench.ingest                 # 100,000 x 128 in batches of 1,000
    .venv/bin/python bench/ingest.py --n 5000        # quick mode (smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: ``python bench/ingest.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
from starlette.applications import Starlette  # noqa: E402

from fingerprints.app import create_app  # noqa: E402
from fingerprints.config import Settings  # noqa: E402
from fingerprints.rest.ingest_body import decode_ingest_body  # noqa: E402

GOAL = 0.25
SEED = 20240601
ADMIN_TOKEN = "bench-admin-token"
HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
TYPE_ID = "bench"
TRACKS_PER_ALBUM = 100
INGEST_URL = "/v1/admin/fingerprints/ingest"

# The statement the service's store issues (``dialect.upsert`` on ``feature_maps``), by hand.
UPSERT_SQL = (
    "INSERT INTO feature_maps "
    "(entity_type, entity_id, feature_type_id, version, vector, computed_at, metadata) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (entity_type, entity_id, feature_type_id) DO UPDATE SET "
    "version = excluded.version, vector = excluded.vector, "
    "computed_at = excluded.computed_at, metadata = excluded.metadata"
)


@dataclass(frozen=True)
class Result:
    n: int
    dim: int
    batch: int
    service_seconds: float
    raw_seconds: float
    building_at_end: bool  # an HNSW graph build was still running after the last answer
    breakdown: dict[str, float]
    request_seconds: tuple[float, ...] = ()  # each request's round trip, in order

    @property
    def service_rate(self) -> float:
        return self.n / self.service_seconds

    @property
    def raw_rate(self) -> float:
        return self.n / self.raw_seconds

    @property
    def ratio(self) -> float:
        return self.service_rate / self.raw_rate

    @property
    def passed(self) -> bool:
        return self.ratio >= GOAL


# ---------------------------------------------------------------------------------- helpers


@asynccontextmanager
async def running_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, behind an httpx client on an in-process transport
    (the same arrangement as ``tests/helpers.running_client``)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            yield client


def _settings(data_dir: Path) -> Settings:
    # No periodic aggregation sweep: it would turn the markers this run checks into aggregates.
    return Settings(data_dir=data_dir, admin_token=ADMIN_TOKEN, graphiql=False, aggregation_interval=0)


def _track_ids(n: int) -> list[str]:
    return [f"t{i:07d}" for i in range(n)]


def _batches(n: int, size: int) -> list[range]:
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


async def _post_ok(client: httpx.AsyncClient, url: str, body: Any, status: int = 200) -> dict[str, Any]:
    r = await client.post(url, content=orjson.dumps(body), headers=HEADERS)
    if r.status_code != status:
        raise RuntimeError(f"POST {url}: {r.status_code} {r.text[:500]}")
    data: dict[str, Any] = r.json()
    if data.get("errors"):
        raise RuntimeError(f"POST {url}: errors {data['errors'][:3]}")
    return data


async def _register_type(client: httpx.AsyncClient, dim: int) -> None:
    body = {"id": TYPE_ID, "name": "Bench", "dimension": dim, "aggregation_method": "average"}
    await _post_ok(client, "/v1/admin/fingerprints/types", body, status=201)


async def _create_catalog(client: httpx.AsyncClient, track_ids: Sequence[str], max_items: int) -> None:
    """1 artist, one album per ``TRACKS_PER_ALBUM`` tracks, then the tracks; each request holds at
    most ``max_items`` items, in order, so every reference resolves to an earlier request."""
    n_albums = max(1, -(-len(track_ids) // TRACKS_PER_ALBUM))
    items: list[tuple[str, dict[str, Any]]] = [("artists", {"id": "ar0", "name": "Bench Artist"})]
    items += [
        ("albums", {"id": f"al{a:05d}", "name": f"Album {a}", "artist_ids": ["ar0"]}) for a in range(n_albums)
    ]
    items += [
        (
            "tracks",
            {
                "id": tid,
                "name": f"Track {i}",
                "album_id": f"al{i // TRACKS_PER_ALBUM:05d}",
                "artist_ids": ["ar0"],
                "track_number": i % TRACKS_PER_ALBUM + 1,
            },
        )
        for i, tid in enumerate(track_ids)
    ]
    for chunk in _batches(len(items), max_items):
        body: dict[str, list[dict[str, Any]]] = {}
        for kind, item in (items[i] for i in chunk):
            body.setdefault(kind, []).append(item)
        await _post_ok(client, "/v1/admin/catalog", body)


def _encode_bodies(track_ids: Sequence[str], vectors: np.ndarray, batches: Sequence[range]) -> list[bytes]:
    """Every ingest request body, JSON-encoded up front (float32 values, shortest repr)."""
    return [
        orjson.dumps(
            {
                "feature_type_id": TYPE_ID,
                "features": [
                    {"entity_type": "track", "entity_id": track_ids[i], "vector": vectors[i]} for i in rows
                ],
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        for rows in batches
    ]


# ---------------------------------------------------------------------------------- the runs


async def _prepare(data_dir: Path, dim: int, track_ids: Sequence[str] | None) -> None:
    """Schema by the app's own lifespan (migrations, pragmas), the feature type, maybe a catalog."""
    settings = _settings(data_dir)
    async with running_client(create_app(settings)) as client:
        await _register_type(client, dim)
        if track_ids is not None:
            await _create_catalog(client, track_ids, settings.max_batch_items)


async def _service_run(
    data_dir: Path, bodies: Sequence[bytes], sizes: Sequence[int]
) -> tuple[float, bool, list[float]]:
    """Seconds to POST every body, one after the other, each answered 200 with no errors;
    whether a graph build was still running then; and each request's seconds."""
    app = create_app(_settings(data_dir))
    requests: list[float] = []
    async with running_client(app) as client:
        start = time.perf_counter()
        for body, size in zip(bodies, sizes, strict=True):
            sent = time.perf_counter()
            r = await client.post(INGEST_URL, content=body, headers=HEADERS)
            requests.append(time.perf_counter() - sent)
            if r.status_code != 200:
                raise RuntimeError(f"ingest: {r.status_code} {r.text[:500]}")
            data = r.json()
            if data["errors"] != [] or data["ingested"] != size:
                raise RuntimeError(
                    f"ingest: ingested {data['ingested']} of {size}, errors {data['errors'][:3]}"
                )
        elapsed = time.perf_counter() - start
        index = app.state.services.index
        keys = [k for k in (index.get(key) for key in index.keys()) if k is not None]
        return elapsed, any(k.building for k in keys), requests


def _raw_run(db_path: Path, row_batches: Sequence[list[tuple[Any, ...]]]) -> float:
    """Seconds for plain sqlite3 executemany of the same rows, one transaction per batch."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        # The pragmas of ``store.dialect.configure_engine``.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        start = time.perf_counter()
        for rows in row_batches:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(UPSERT_SQL, rows)
            conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def _quiesce() -> None:
    """Flush the OS's dirty pages and collect garbage, outside any timed section."""
    if hasattr(os, "sync"):
        os.sync()
    gc.collect()


def _stale_markers(db_path: Path) -> dict[str, int]:
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute(
            "SELECT entity_type, count(*) FROM fingerprints_stale WHERE feature_type_id = ? "
            "GROUP BY entity_type",
            (TYPE_ID,),
        ).fetchall()
        return dict(rows)
    finally:
        conn.close()


def _stored(db_path: Path) -> list[tuple[str, bytes]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(
            "SELECT entity_id, vector FROM feature_maps WHERE feature_type_id = ? AND entity_type = 'track' "
            "ORDER BY entity_id",
            (TYPE_ID,),
        ).fetchall()
    finally:
        conn.close()


def _breakdown(bodies: Sequence[bytes], vectors: np.ndarray, batches: Sequence[range]) -> dict[str, float]:
    """Steps an ingest has to take, each timed on its own, one batch at a time like the server."""
    t_decode = t_loads = t_batch = t_items = 0.0
    for body in bodies:
        t = time.perf_counter()
        decode_ingest_body(body)
        t_decode += time.perf_counter() - t
        t0 = time.perf_counter()
        doc = orjson.loads(body)
        t1 = time.perf_counter()
        lists = [item["vector"] for item in doc["features"]]
        t2 = time.perf_counter()
        np.array(lists, dtype=np.float32)
        t3 = time.perf_counter()
        for values in lists:
            np.asarray(values).astype(np.float32)
        t4 = time.perf_counter()
        t_loads += t1 - t0
        t_batch += t3 - t2
        t_items += t4 - t3
    t0 = time.perf_counter()
    for rows in batches:
        block = vectors[rows.start : rows.stop]
        [block[j].astype("<f4").tobytes() for j in range(len(rows))]
    t_blobs = time.perf_counter() - t0
    return {
        "decode_ingest_body (the service's decoder)": t_decode,
        "orjson.loads (all bodies)": t_loads,
        "np.array(lists, dtype=float32), once per batch": t_batch,
        "np.asarray(list).astype(float32), once per item": t_items,
        "per-row blob packing (.tobytes)": t_blobs,
    }


def run(*, n: int, dim: int, batch: int, data_dir: Path | None = None, out: Any = sys.stdout) -> Result:
    """Set up, time both sides, verify the stored rows agree, print the report; the figures."""
    if n < 1 or dim < 1 or batch < 1:
        raise ValueError("--n, --dim and --batch must be positive")
    cleanup = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="fingerprints-bench-")) if data_dir is None else data_dir
    service_dir, raw_dir = root / "service", root / "raw"
    for d in (service_dir, raw_dir):
        if d.exists() and any(d.iterdir()):
            raise SystemExit(f"{d} is not empty: give a fresh --data-dir")

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    try:
        batches = _batches(n, batch)
        sizes = [len(b) for b in batches]
        say(
            f"ingest benchmark: n={n:,} dim={dim} batch={batch:,} ({len(batches)} requests); "
            f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, numpy {np.__version__}, "
            f"orjson {orjson.__version__}"
        )
        say(f"data dir: {root}{' (temporary)' if cleanup else ''}")

        # ---- setup, not timed
        t0 = time.perf_counter()
        track_ids = _track_ids(n)
        vectors = np.random.default_rng(SEED).standard_normal((n, dim), dtype=np.float32)
        asyncio.run(_prepare(service_dir, dim, track_ids))
        asyncio.run(_prepare(raw_dir, dim, None))
        t1 = time.perf_counter()
        bodies = _encode_bodies(track_ids, vectors, batches)
        computed_at = int(time.time())
        row_batches = [
            [
                ("track", track_ids[i], TYPE_ID, 1, vectors[i].astype("<f4").tobytes(), computed_at, None)
                for i in rows
            ]
            for rows in batches
        ]
        t2 = time.perf_counter()
        body_mb = sum(map(len, bodies)) / 1e6
        say(
            f"setup (untimed): schema + type + {n:,} tracks {t1 - t0:.2f}s; "
            f"{len(bodies)} bodies ({body_mb:.1f} MB JSON) + raw rows {t2 - t1:.2f}s"
        )

        # ---- timed; each side starts with no dirty pages pending (so one side's writeback does
        # not land in the other's fsyncs) and no garbage left over from setup
        _quiesce()
        raw_s = _raw_run(raw_dir / "catalog.db", row_batches)
        _quiesce()
        service_s, building, request_s = asyncio.run(_service_run(service_dir, bodies, sizes))

        # ---- check: both databases hold the same n vectors, byte for byte
        got, want = _stored(service_dir / "catalog.db"), _stored(raw_dir / "catalog.db")
        if len(got) != n or got != want:
            raise RuntimeError(f"stored rows differ: service {len(got)}, raw {len(want)} (want {n})")
        n_albums = -(-n // TRACKS_PER_ALBUM)
        if (marked := _stale_markers(service_dir / "catalog.db")) != {"album": n_albums, "artist": 1}:
            raise RuntimeError(f"stale markers: {marked}, want {n_albums} albums and 1 artist")

        breakdown = _breakdown(bodies, vectors, batches)
        result = Result(
            n=n,
            dim=dim,
            batch=batch,
            service_seconds=service_s,
            raw_seconds=raw_s,
            building_at_end=building,
            breakdown=breakdown,
            request_seconds=tuple(request_s),
        )
        _report(result, say)
        return result
    finally:
        if cleanup:
            shutil.rmtree(root, ignore_errors=True)


def _report(r: Result, say: Any) -> None:
    say()
    say(f"{'':32}{'seconds':>10}{'vectors/s':>14}")
    say(f"{'service (REST, in-process ASGI)':32}{r.service_seconds:>10.3f}{r.service_rate:>14,.0f}")
    say(f"{'raw sqlite3 executemany':32}{r.raw_seconds:>10.3f}{r.raw_rate:>14,.0f}")
    say(f"{'ratio (service / raw)':32}{'':>10}{r.ratio:>14.3f}")
    say(f"ratio >= {GOAL}: {'PASS' if r.passed else 'FAIL'}")
    say(f"verified: {r.n:,} rows in each database, vectors byte-identical; albums and artist marked stale")
    if r.request_seconds:
        p50, p90 = np.percentile(r.request_seconds, [50, 90]) * 1000
        slowest = max(range(len(r.request_seconds)), key=r.request_seconds.__getitem__)
        say(
            f"requests of {r.batch:,}: p50 {p50:.1f} ms, p90 {p90:.1f} ms, "
            f"slowest {1000 * r.request_seconds[slowest]:.1f} ms (request {slowest + 1})"
        )
    if r.building_at_end:
        say("an HNSW graph build (lower CPU priority) was still running after the last answer")
    say()
    say("breakdown (each step timed on its own over all batches, outside the figures above):")
    say(f"  {'step':48}{'seconds':>9}{'% of service':>14}")
    for name, seconds in r.breakdown.items():
        say(f"  {name:48}{seconds:>9.3f}{100 * seconds / r.service_seconds:>13.1f}%")
    raw_share = 100 * r.raw_seconds / r.service_seconds
    say(f"  {'raw sqlite3 executemany (from above)':48}{r.raw_seconds:>9.3f}{raw_share:>13.1f}%")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="Ingest throughput: REST endpoint vs raw sqlite3 executemany.",
    )
    parser.add_argument("--n", type=int, default=100_000, help="vectors to ingest (default 100000)")
    parser.add_argument("--dim", type=int, default=128, help="vector dimension (default 128)")
    parser.add_argument("--batch", type=int, default=1_000, help="vectors per request (default 1000)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the two databases go (subdirs service/ and raw/, kept); default a temp dir, removed",
    )
    args = parser.parse_args(argv)
    result = run(n=args.n, dim=args.dim, batch=args.batch, data_dir=args.data_dir)
    if result.building_at_end:
        # hnswlib's native build threads cannot be joined or interrupted; leaving through the
        # interpreter's shutdown while they run aborts the process.
        sys.stdout.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
