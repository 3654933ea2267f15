"""Scale-out on PostgreSQL: the service on PostgreSQL next to SQLite, and two replicas next to one.

Three figures, each a ratio against a baseline measured in the same run:

1. Ingest throughput (vectors/s; dimension 128, batches of 1,000) through
   ``POST /v1/admin/fingerprints/ingest`` on the real app (lifespan running, httpx
   ``ASGITransport``, as ``bench.ingest`` does), PostgreSQL vs SQLite. Both apps are open at once
   and the batches alternate between them (the order flipping every batch), so noise on a shared
   machine hits both sides. Durability is the same on both: SQLite in WAL with
   ``synchronous=FULL`` (the service's pragmas), PostgreSQL with ``fsync=on`` and
   ``synchronous_commit=on`` (the bench starts its own server so; ``scripts/pg.sh`` runs with
   ``fsync=off``, which would flatter PostgreSQL). Every stored vector is read back from both
   databases and compared byte for byte.
2. Similar-query QPS, ``GET /v1/content/similar/track/{id}?feature_type=...&limit=10`` in-process,
   one request at a time, PostgreSQL vs SQLite over the data of (1). The index is in memory on
   both, so the ratio should be close to 1: what is left is the database work of a query (the
   feature type and the query entity's lookups). Rounds interleave the backends, the order
   rotating; medians of the rounds. The two backends' answers are checked to be the same.
3. Two replicas vs one: two real ``fingerprints serve`` processes (uvicorn) over the PostgreSQL
   data of (1), each with its own data directory (index snapshots); a fixed concurrent load
   (``--concurrency`` httpx clients in this process, each sending its next request when the
   previous one answers) runs for ``--duration`` seconds against one replica, then spread over
   both (client-side round robin). QPS, p50/p95 latency and the ratio, medians of ``--rounds``
   interleaved rounds (the single replica alternating between the two). Also the CPU each side
   used, in cores: on a 2-core machine two replicas can at best approach 2x, and the load
   generator competes with them for the same cores.

numpy's BLAS runs on one thread by default, in this process and in the replicas
(``--blas-threads``; 0 keeps OpenBLAS's default of one thread per core). A check at the start
shows why: with OpenBLAS's own threads, concurrent exact scans (the service runs each query on a
worker thread) are several times slower on a busy 2-core machine than with one thread, which
would swamp the figures below.

Not timed: starting PostgreSQL, schemas, the catalog, the feature type, vector generation,
encoding the request bodies, the replicas' start-up.

    .venv/bin/python -m bench.scaleout                        # N = 50,000 (about 5-10 minutes)
    .venv/bin/python -m bench.scaleout --quick                # N = 5,000, short load runs
    .venv/bin/python -m bench.scaleout --pg-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres
    .venv/bin/python -m bench.scaleout --json /tmp/scaleout.json

Without ``--pg-url`` the bench starts (and afterwards stops) its own throwaway server with
``fsync=on`` on port ``--pg-port`` (default 55433) under ``--pg-dir`` (default /tmp/fp-bench-pg),
with the logic of ``scripts/pg.sh`` (Debian's server binaries; as the ``postgres`` user when root).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: ``python bench/scaleout.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from bench.ingest import (  # noqa: E402
    ADMIN_TOKEN,
    HEADERS,
    INGEST_URL,
    SEED,
    TYPE_ID,
    _batches,
    _create_catalog,
    _encode_bodies,
    _register_type,
    _track_ids,
    running_client,
)
from fingerprints.app import create_app  # noqa: E402
from fingerprints.config import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 10
SIMILAR_URL = "/v1/content/similar/track/{}?feature_type=" + TYPE_ID + f"&limit={LIMIT}"
BACKENDS = ("sqlite", "postgresql")
REPLICA_START_TIMEOUT_S = 300.0
CPU_NOTE = (
    "note: {cores} CPU core(s), shared with other work (load average {load} at start). Two replicas "
    "on 2 cores can at best approach 2x one replica, and the load generator (this process) competes "
    "with them for the same cores."
)


# ---------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Ingest:
    n: int
    dim: int
    batch: int
    seconds: dict[str, float]  # backend -> seconds of all its requests

    def rate(self, backend: str) -> float:
        return self.n / self.seconds[backend]

    @property
    def ratio(self) -> float:  # PostgreSQL / SQLite, vectors per second
        return self.rate("postgresql") / self.rate("sqlite")


@dataclass(frozen=True)
class Queries:
    queries: int  # requests per round and backend
    rounds: int
    qps: dict[str, float]  # backend -> median over rounds
    p50_ms: dict[str, float]  # backend -> median over rounds of each round's percentile
    p95_ms: dict[str, float]

    @property
    def ratio(self) -> float:  # PostgreSQL / SQLite
        return self.qps["postgresql"] / self.qps["sqlite"]


@dataclass(frozen=True)
class LoadRun:
    replicas: int
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    client_cores: float  # CPU seconds of the load generator per wall second
    server_cores: float | None  # CPU seconds of the replicas (all of them) per wall second

    @property
    def qps(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class Replicas:
    concurrency: int
    duration: float
    rounds: int
    runs: list[LoadRun]

    def median(self, replicas: int, attr: str) -> float:
        values = [getattr(r, attr) for r in self.runs if r.replicas == replicas]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else float("nan")

    def per_core(self, replicas: int) -> float:
        """Median QPS per server core used, of the runs with ``replicas`` replicas."""
        values = [r.qps / r.server_cores for r in self.runs if r.replicas == replicas and r.server_cores]
        return statistics.median(values) if values else float("nan")

    @property
    def ratio(self) -> float:  # QPS two / one, medians
        return self.median(2, "qps") / self.median(1, "qps")


@dataclass
class Result:
    n: int
    machine: dict[str, Any]
    ingest: Ingest | None = None
    queries: Queries | None = None
    replicas: Replicas | None = None
    phases: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "machine": self.machine, "phases_s": self.phases}
        if self.ingest is not None:
            out["ingest"] = {
                **asdict(self.ingest),
                "vectors_per_s": {b: self.ingest.rate(b) for b in BACKENDS},
                "ratio_pg_over_sqlite": self.ingest.ratio,
            }
        if self.queries is not None:
            out["similar_in_process"] = {**asdict(self.queries), "ratio_pg_over_sqlite": self.queries.ratio}
        if self.replicas is not None:
            r = self.replicas
            out["replicas"] = {
                "concurrency": r.concurrency,
                "duration_s": r.duration,
                "rounds": r.rounds,
                "runs": [{**asdict(run), "qps": run.qps} for run in r.runs],
                "median": {
                    str(k): {
                        a: r.median(k, a) for a in ("qps", "p50_ms", "p95_ms", "client_cores", "server_cores")
                    }
                    for k in (1, 2)
                },
                "qps_per_server_core": {str(k): r.per_core(k) for k in (1, 2)},
                "ratio_two_over_one": r.ratio,
            }
        return out


# ---------------------------------------------------------------------------------- PostgreSQL


def _libpq(url: str) -> str:
    """The SQLAlchemy URL as a libpq one (drop the ``+psycopg`` driver part)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _with_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def _pg_bin() -> Path:
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name or 0))
    if dirs:
        return dirs[-1]
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit(
            "no PostgreSQL server binaries: install the distribution's postgresql package "
            "(scripts/pg.sh does so when run as root), or pass --pg-url"
        ) from None
    return Path(out.stdout.strip())


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def own_pg_server(port: int, root: Path) -> Iterator[str]:
    """A throwaway PostgreSQL server with ``fsync=on`` (scripts/pg.sh's steps, durability on);
    stopped on exit if this call started it. Yields its SQLAlchemy URL."""
    bin_dir = _pg_bin()
    data = root / "data"
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data)]
    running = (data / "postmaster.pid").exists() and (
        subprocess.run(_as_owner([*pg_ctl, "status"]), capture_output=True).returncode == 0
    )
    if not running:
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        if not (data / "PG_VERSION").exists():
            subprocess.run(
                _as_owner(
                    [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
                    + ["-E", "UTF8", "--no-locale"]
                ),
                check=True,
                capture_output=True,
            )
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 "
            "-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
        )
        subprocess.run(
            _as_owner([*pg_ctl, "-l", str(root / "server.log"), "-w", "-t", "60", "-o", options, "start"]),
            check=True,
            capture_output=True,
        )
    try:
        yield url
    finally:
        if not running:
            subprocess.run(_as_owner([*pg_ctl, "-m", "fast", "stop"]), capture_output=True)


def _pg_settings(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        out = {"server_version": str(conn.execute("SHOW server_version").fetchone()[0])}  # type: ignore[index]
        for name in ("fsync", "synchronous_commit", "full_page_writes", "wal_level"):
            out[name] = str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
    return out


@contextmanager
def pg_schemas(url: str) -> Iterator[tuple[str, str]]:
    """A fresh (catalog, user) pair of schemas, dropped on exit; yields their service URLs."""
    import psycopg

    tag = uuid.uuid4().hex[:10]
    pair = (f"fpbench_{tag}_catalog", f"fpbench_{tag}_user")
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        for schema in pair:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield _with_schema(url, pair[0]), _with_schema(url, pair[1])
    finally:
        with psycopg.connect(_libpq(url), autocommit=True) as conn:
            for schema in pair:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# ---------------------------------------------------------------------------------- helpers


def _stored_sqlite(data_dir: Path) -> list[tuple[str, bytes]]:
    conn = sqlite3.connect(data_dir / "catalog.db")
    try:
        rows = conn.execute(
            "SELECT entity_id, vector FROM feature_maps WHERE feature_type_id = ?", (TYPE_ID,)
        ).fetchall()
    finally:
        conn.close()
    return sorted((str(e), bytes(v)) for e, v in rows)


def _stored_pg(catalog_url: str) -> list[tuple[str, bytes]]:
    import psycopg

    with psycopg.connect(_libpq(catalog_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT entity_id, vector FROM feature_maps WHERE feature_type_id = %s", (TYPE_ID,)
        ).fetchall()
    return sorted((str(e), bytes(v)) for e, v in rows)


def _percentile_ms(latencies: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(latencies), q) * 1000.0) if latencies else float("nan")


def _quiesce() -> None:
    if hasattr(os, "sync"):
        os.sync()
    gc.collect()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine() -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "sqlite": sqlite3.sqlite_version,
        "cpu_count": os.cpu_count(),
        "loadavg_1m_at_start": load,
    }


# ---------------------------------------------------------------------------------- BLAS threads


def _openblas() -> Any | None:
    """numpy's OpenBLAS (ctypes), found among the loaded libraries; None if there is none."""
    import ctypes

    try:
        paths = {
            line.split()[-1]
            for line in Path("/proc/self/maps").read_text().splitlines()
            if "openblas" in line
        }
    except OSError:
        return None
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    put.argtypes = [ctypes.c_int]
                    return get, put
    return None


def _blas_threads() -> int | None:
    lib = _openblas()
    return None if lib is None else int(lib[0]())


def _set_blas_threads(threads: int) -> None:
    lib = _openblas()
    if lib is not None:
        lib[1](threads)


def _blas_check(n: int, dim: int, seconds: float = 0.5) -> dict[str, float]:
    """Top-10 scans (``m @ q`` + argpartition, what an exact query costs) per second, one caller
    and 8 concurrent callers, with numpy's BLAS threads as they are and with one thread: what
    the thread setting does to the similar queries below."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(SEED + 3)
    m = rng.standard_normal((n, dim), dtype=np.float32)
    q = rng.standard_normal(dim, dtype=np.float32)

    def scans(until: float) -> int:
        done = 0
        while time.perf_counter() < until:
            np.argpartition(-(m @ q), min(LIMIT, n - 1))[:LIMIT]
            done += 1
        return done

    before = _blas_threads()
    out: dict[str, float] = {}
    try:
        for label, threads in (("default", before), ("1 thread", 1)):
            if threads is None:
                continue
            _set_blas_threads(threads)
            for callers in (1, 8):
                with ThreadPoolExecutor(callers) as pool:
                    until = time.perf_counter() + seconds
                    total = sum(pool.map(scans, [until] * callers))
                out[f"{label} ({threads}), {callers} caller(s)"] = total / seconds
    finally:
        if before is not None:
            _set_blas_threads(before)
    return out


# ---------------------------------------------------------------------------------- parts 1 and 2


async def _in_process(
    settings: dict[str, Settings],
    *,
    n: int,
    dim: int,
    batch: int,
    queries: int,
    rounds: int,
    say: Callable[[str], None],
) -> tuple[Ingest, Queries]:
    track_ids = _track_ids(n)
    vectors = np.random.default_rng(SEED).standard_normal((n, dim), dtype=np.float32)
    batches = _batches(n, batch)
    async with AsyncExitStack() as stack:
        clients = {
            b: await stack.enter_async_context(running_client(create_app(settings[b]))) for b in BACKENDS
        }
        t0 = time.perf_counter()
        for b in BACKENDS:
            await _register_type(clients[b], dim)
            await _create_catalog(clients[b], track_ids, settings[b].max_batch_items)
        bodies = _encode_bodies(track_ids, vectors, batches)
        say(
            f"setup (untimed): feature type + {n:,} tracks on both backends, bodies: "
            f"{time.perf_counter() - t0:.1f}s"
        )

        # ---- 1. ingest, batches alternating between the backends
        _quiesce()
        seconds = dict.fromkeys(BACKENDS, 0.0)
        for i, (body, rows) in enumerate(zip(bodies, batches, strict=True)):
            for b in BACKENDS if i % 2 == 0 else BACKENDS[::-1]:
                start = time.perf_counter()
                r = await clients[b].post(INGEST_URL, content=body, headers=HEADERS)
                seconds[b] += time.perf_counter() - start
                data = r.json() if r.status_code == 200 else None
                if data is None or data["errors"] != [] or data["ingested"] != len(rows):
                    raise RuntimeError(f"ingest on {b}: {r.status_code} {r.text[:500]}")
        ingest = Ingest(n=n, dim=dim, batch=batch, seconds=seconds)
        got_sqlite = _stored_sqlite(settings["sqlite"].data_dir)
        got_pg = _stored_pg(settings["postgresql"].resolved_catalog_url())
        if len(got_sqlite) != n or got_sqlite != got_pg:
            raise RuntimeError(
                f"stored rows differ: sqlite {len(got_sqlite)}, postgresql {len(got_pg)} (want {n})"
            )
        say(f"verified: {n:,} vectors stored in each database, byte-identical")

        # ---- 2. similar queries, one at a time, rounds interleaved
        rng = np.random.default_rng(SEED + 1)
        ids = [track_ids[i] for i in rng.integers(0, n, size=queries)]
        urls = [SIMILAR_URL.format(tid) for tid in ids]
        for url in urls[:20]:  # same answers on both (and a warm-up)
            answers = []
            for b in BACKENDS:
                r = await clients[b].get(url)
                if r.status_code != 200:
                    raise RuntimeError(f"similar on {b}: {r.status_code} {r.text[:500]}")
                answers.append([item["entity_id"] for item in r.json()["results"]])
            if answers[0] != answers[1] or len(answers[0]) != min(LIMIT, n - 1):
                raise RuntimeError(f"similar answers differ for {url}: {answers}")
        per: dict[str, list[tuple[float, float, float]]] = {b: [] for b in BACKENDS}
        for k in range(rounds):
            for b in BACKENDS if k % 2 == 0 else BACKENDS[::-1]:
                client = clients[b]
                lat = []
                start = time.perf_counter()
                for url in urls:
                    t = time.perf_counter()
                    r = await client.get(url)
                    lat.append(time.perf_counter() - t)
                    if r.status_code != 200:
                        raise RuntimeError(f"similar on {b}: {r.status_code} {r.text[:500]}")
                wall = time.perf_counter() - start
                per[b].append((len(urls) / wall, _percentile_ms(lat, 50), _percentile_ms(lat, 95)))
        q = Queries(
            queries=queries,
            rounds=rounds,
            qps={b: statistics.median(x[0] for x in per[b]) for b in BACKENDS},
            p50_ms={b: statistics.median(x[1] for x in per[b]) for b in BACKENDS},
            p95_ms={b: statistics.median(x[2] for x in per[b]) for b in BACKENDS},
        )
    return ingest, q


# ---------------------------------------------------------------------------------- part 3


@dataclass
class Replica:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _start_replica(data_dir: Path, catalog_url: str, user_url: str, env_extra: dict[str, str]) -> Replica:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {
        **os.environ,
        "FINGERPRINTS_CATALOG_URL": catalog_url,
        "FINGERPRINTS_USER_URL": user_url,
        "FINGERPRINTS_ADMIN_TOKEN": ADMIN_TOKEN,
        "FINGERPRINTS_GRAPHIQL": "false",
        "FINGERPRINTS_AGGREGATION_INTERVAL": "0",
        "FINGERPRINTS_LOG_LEVEL": "warning",
        **env_extra,
    }
    log = data_dir / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fingerprints", "serve", "--data-dir", str(data_dir), "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    return Replica(port=port, proc=proc, log=log)


def _stop_replica(replica: Replica) -> None:
    if replica.proc.poll() is None:
        replica.proc.terminate()
        try:
            replica.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            replica.proc.kill()
            replica.proc.wait()


async def _wait_ready(replica: Replica, n: int) -> float:
    """Seconds until the replica answers /readyz with an index holding ``n`` vectors."""
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=replica.base, timeout=10) as client:
        while True:
            if replica.proc.poll() is not None:
                raise RuntimeError(f"replica on :{replica.port} exited: {replica.log.read_text()[-2000:]}")
            try:
                r = await client.get("/readyz")
                if r.status_code == 200:
                    body = r.json()
                    sizes = [k.get("size", 0) for k in body["index"]["keys"].values()]
                    if body["index"]["status"] == "ready" and sum(sizes) >= n:
                        return time.monotonic() - start
            except httpx.TransportError:
                pass
            if time.monotonic() - start > REPLICA_START_TIMEOUT_S:
                raise RuntimeError(
                    f"replica on :{replica.port} not ready after {REPLICA_START_TIMEOUT_S:.0f}s"
                )
            await asyncio.sleep(0.2)


async def _drive(
    targets: Sequence[Replica], paths: Sequence[str], *, concurrency: int, duration: float, warmup: float
) -> LoadRun:
    """``concurrency`` closed-loop clients for ``warmup`` + ``duration`` seconds, requests spread
    round robin over ``targets``; only what completes inside the measured window counts."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients = [httpx.AsyncClient(base_url=t.base, limits=limits, timeout=30) for t in targets]
    turn = itertools.cycle(range(len(targets)))
    next_path = itertools.cycle(paths)
    latencies: list[float] = []
    t_begin = time.perf_counter()
    t_start = t_begin + warmup
    t_end = t_start + duration
    cpu0: dict[str, float | None] = {}

    async def worker() -> None:
        while True:
            now = time.perf_counter()
            if now >= t_end:
                return
            client = clients[next(turn)]
            r = await client.get(next(next_path))
            done = time.perf_counter()
            if r.status_code != 200:
                raise RuntimeError(f"similar: {r.status_code} {r.text[:300]}")
            if now >= t_start and done <= t_end:
                latencies.append(done - now)

    async def mark() -> None:
        await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
        cpu0["client"] = time.process_time()
        cpu0["server"] = _servers_cpu(targets)

    try:
        await asyncio.gather(mark(), *(worker() for _ in range(concurrency)))
        client_cpu = time.process_time() - (cpu0["client"] or 0.0)
        server1, server0 = _servers_cpu(targets), cpu0["server"]
    finally:
        for c in clients:
            await c.aclose()
    # The tail (requests started before t_end, answered after) is not counted but its CPU is:
    # a slight overestimate of the cores used, the same for both sides.
    wall = time.perf_counter() - t_start
    return LoadRun(
        replicas=len(targets),
        requests=len(latencies),
        seconds=duration,
        p50_ms=_percentile_ms(latencies, 50),
        p95_ms=_percentile_ms(latencies, 95),
        client_cores=client_cpu / wall,
        server_cores=None if server0 is None or server1 is None else (server1 - server0) / wall,
    )


def _servers_cpu(targets: Sequence[Replica]) -> float | None:
    values = [_proc_cpu_seconds(t.proc.pid) for t in targets]
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


async def _replicas(
    root: Path,
    catalog_url: str,
    user_url: str,
    *,
    n: int,
    concurrency: int,
    duration: float,
    rounds: int,
    queries: int,
    env_extra: dict[str, str],
    say: Callable[[str], None],
) -> Replicas:
    replicas = [_start_replica(root / f"replica{i}", catalog_url, user_url, env_extra) for i in range(2)]
    try:
        ready = [await _wait_ready(r, n) for r in replicas]
        say(f"replicas ready (untimed): ports {[r.port for r in replicas]}, start-up {max(ready):.1f}s")
        rng = np.random.default_rng(SEED + 2)
        paths = [SIMILAR_URL.format(f"t{i:07d}") for i in rng.integers(0, n, size=queries)]
        # Same answers from both replicas, and a warm-up of each.
        async with httpx.AsyncClient(timeout=30) as client:
            for path in paths[:20]:
                answers = [(await client.get(r.base + path)).json()["results"] for r in replicas]
                if [a["entity_id"] for a in answers[0]] != [a["entity_id"] for a in answers[1]]:
                    raise RuntimeError(f"replicas answer {path} differently")
        warmup = min(2.0, duration / 4)
        runs: list[LoadRun] = []
        for k in range(rounds):
            one = [replicas[k % 2]]
            for targets in (one, replicas) if k % 2 == 0 else (replicas, one):
                gc.collect()
                run = await _drive(targets, paths, concurrency=concurrency, duration=duration, warmup=warmup)
                runs.append(run)
                say(
                    f"  round {k + 1}/{rounds}, {run.replicas} replica(s): {run.qps:,.0f} QPS, "
                    f"p50 {run.p50_ms:.1f} ms, p95 {run.p95_ms:.1f} ms"
                )
        return Replicas(concurrency=concurrency, duration=duration, rounds=rounds, runs=runs)
    finally:
        for r in replicas:
            _stop_replica(r)


# ---------------------------------------------------------------------------------- the run


def run(
    *,
    n: int = 50_000,
    dim: int = 128,
    batch: int = 1_000,
    queries: int = 300,
    query_rounds: int = 5,
    replicas: bool = True,
    concurrency: int = 16,
    duration: float = 15.0,
    rounds: int = 3,
    pg_url: str | None = None,
    pg_port: int = 55433,
    pg_dir: Path = Path("/tmp/fp-bench-pg"),
    blas_threads: int | None = 1,
    json_path: Path | None = None,
    out: Any = sys.stdout,
) -> Result:
    """Set up, measure the three parts, print the report (and write JSON); the figures."""
    if min(n, dim, batch, queries, query_rounds, concurrency, rounds) < 1 or duration <= 0 or n < 2:
        raise ValueError("sizes must be positive (and n >= 2)")

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    result = Result(n=n, machine=_machine())
    load = result.machine["loadavg_1m_at_start"]
    say(
        f"scale-out benchmark: n={n:,} dim={dim} batch={batch:,}; python {result.machine['python']}, "
        f"sqlite {result.machine['sqlite']}, numpy {result.machine['numpy']}"
    )
    say(CPU_NOTE.format(cores=result.machine["cpu_count"], load=f"{load:.1f}" if load is not None else "?"))
    default_blas = _blas_threads()
    result.machine["blas_threads_default"] = default_blas
    result.machine["blas_check_scans_per_s"] = check = _blas_check(min(n, 50_000), dim)
    say(
        f"BLAS check ({min(n, 50_000):,} x {dim} top-{LIMIT} scans/s, numpy's OpenBLAS at {default_blas} "
        f"thread(s) by default): " + ", ".join(f"{k} {v:,.0f}" for k, v in check.items())
    )
    replica_env: dict[str, str] = {}
    if blas_threads:
        _set_blas_threads(blas_threads)
        t = str(blas_threads)
        replica_env = {"OPENBLAS_NUM_THREADS": t, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t}
    result.machine["blas_threads_used"] = blas_threads or default_blas
    say(
        f"BLAS threads in this run: {blas_threads or default_blas} (this process and the replicas"
        f"{', OPENBLAS_NUM_THREADS' if blas_threads else ', inherited'}; --blas-threads 0 leaves the default)"
    )
    root = Path(tempfile.mkdtemp(prefix="fingerprints-scaleout-"))
    try:
        with contextlib_pg(pg_url, pg_port, pg_dir) as url:
            pg = _pg_settings(url)
            result.machine["postgresql"] = pg
            say(
                f"PostgreSQL {pg['server_version']} ({'given' if pg_url else 'own server'}): "
                f"fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}, "
                f"full_page_writes={pg['full_page_writes']}; "
                "SQLite: WAL, synchronous=FULL"
            )
            if pg["fsync"] != "on" or pg["synchronous_commit"] == "off":
                say("WARNING: PostgreSQL does not flush its commits: the ingest comparison flatters it")
            with pg_schemas(url) as (catalog_url, user_url):
                settings = {
                    "sqlite": Settings(data_dir=root / "sqlite", admin_token=ADMIN_TOKEN, graphiql=False),
                    "postgresql": Settings(
                        data_dir=root / "postgresql",
                        admin_token=ADMIN_TOKEN,
                        graphiql=False,
                        catalog_url=catalog_url,
                        user_url=user_url,
                    ),
                }
                t0 = time.perf_counter()
                result.ingest, result.queries = asyncio.run(
                    _in_process(
                        settings, n=n, dim=dim, batch=batch, queries=queries, rounds=query_rounds, say=say
                    )
                )
                result.phases["in-process (parts 1, 2)"] = time.perf_counter() - t0
                if replicas:
                    t0 = time.perf_counter()
                    say(f"replicas: {concurrency} concurrent clients, {rounds} rounds of {duration:g}s each")
                    result.replicas = asyncio.run(
                        _replicas(
                            root,
                            catalog_url,
                            user_url,
                            n=n,
                            concurrency=concurrency,
                            duration=duration,
                            rounds=rounds,
                            queries=queries,
                            env_extra=replica_env,
                            say=say,
                        )
                    )
                    result.phases["replicas (part 3)"] = time.perf_counter() - t0
        _report(result, say)
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
            say(f"JSON written to {json_path}")
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if blas_threads and default_blas is not None:
            _set_blas_threads(default_blas)


@contextmanager
def contextlib_pg(pg_url: str | None, port: int, pg_dir: Path) -> Iterator[str]:
    if pg_url is not None:
        yield pg_url
        return
    with own_pg_server(port, pg_dir) as url:
        yield url


def _report(r: Result, say: Callable[[str], None]) -> None:
    say()
    w = 44
    if r.ingest is not None:
        i = r.ingest
        say(f"1. ingest, REST in-process, {i.n:,} x {i.dim} in batches of {i.batch:,} (interleaved)")
        say(f"   {'':{w}}{'seconds':>10}{'vectors/s':>12}")
        for b in BACKENDS:
            say(f"   {b:{w}}{i.seconds[b]:>10.2f}{i.rate(b):>12,.0f}")
        say(f"   {'ratio (PostgreSQL / SQLite)':{w}}{'':>10}{i.ratio:>12.2f}")
    if r.queries is not None:
        q = r.queries
        say(
            f"2. similar (GET /v1/content/similar/track/{{id}}, limit {LIMIT}), in-process, one at a time; "
            f"median of {q.rounds} rounds x {q.queries:,} queries"
        )
        say(f"   {'':{w}}{'QPS':>10}{'p50 ms':>12}{'p95 ms':>10}")
        for b in BACKENDS:
            say(f"   {b:{w}}{q.qps[b]:>10,.0f}{q.p50_ms[b]:>12.2f}{q.p95_ms[b]:>10.2f}")
        say(f"   {'ratio (PostgreSQL / SQLite)':{w}}{q.ratio:>10.2f}")
    if r.replicas is not None:
        x = r.replicas
        say(
            f"3. replicas over one PostgreSQL: real `fingerprints serve` processes, "
            f"{x.concurrency} concurrent clients, {x.duration:g}s per run; "
            f"median of {x.rounds} interleaved rounds"
        )
        say(
            f"   {'':{w}}{'QPS':>10}{'p50 ms':>12}{'p95 ms':>10}{'server cores':>14}{'client cores':>14}"
            f"{'QPS/core':>10}"
        )
        for k in (1, 2):
            label = "one replica" if k == 1 else "two replicas (client-side round robin)"
            say(
                f"   {label:{w}}{x.median(k, 'qps'):>10,.0f}{x.median(k, 'p50_ms'):>12.2f}"
                f"{x.median(k, 'p95_ms'):>10.2f}{x.median(k, 'server_cores'):>14.2f}"
                f"{x.median(k, 'client_cores'):>14.2f}{x.per_core(k):>10,.0f}"
            )
        say(f"   {'ratio (two / one), QPS':{w}}{x.ratio:>10.2f}")
        say(f"   {'ratio (two / one), QPS per server core':{w}}{x.per_core(2) / x.per_core(1):>10.2f}")
        say(
            "   server cores: CPU seconds of the replicas (together) per wall second; client cores: the same "
            "for the load generator; QPS/core: QPS / server cores (what the replicas would give per core "
            "they actually get)"
        )
        cores = r.machine["cpu_count"]
        say(
            f"   on {cores} shared core(s) the ceiling is about {min(2, cores or 1)}x, less whatever "
            "the load generator (client cores) and other work on the machine take"
        )
    say(f"phases: {', '.join(f'{k} {v:.0f}s' for k, v in r.phases.items())}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaleout",
        description="Scale-out: PostgreSQL vs SQLite (ingest, similar QPS) and two replicas vs one.",
    )
    parser.add_argument("--quick", action="store_true", help="n=5000, short runs (about a minute)")
    parser.add_argument("--n", type=int, default=None, help="tracks / vectors (default 50000)")
    parser.add_argument("--dim", type=int, default=128, help="vector dimension (default 128)")
    parser.add_argument("--batch", type=int, default=1_000, help="vectors per ingest request (default 1000)")
    parser.add_argument("--queries", type=int, default=None, help="similar queries per round (default 300)")
    parser.add_argument("--query-rounds", type=int, default=None, help="in-process query rounds (default 5)")
    parser.add_argument("--no-replicas", action="store_true", help="skip part 3 (two replicas vs one)")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="concurrent clients in part 3 (default 16)"
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds per load run (default 15)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of one + two replicas (default 3)")
    parser.add_argument(
        "--pg-url", default=None, help="use this server (SQLAlchemy URL) instead of starting one"
    )
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("FINGERPRINTS_PG_PORT", 55433)))
    parser.add_argument(
        "--pg-dir", type=Path, default=Path(os.environ.get("FINGERPRINTS_PG_DIR", "/tmp/fp-bench-pg"))
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="numpy's BLAS threads, in this process and the replicas (default 1; 0: leave the default)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    quick = args.quick
    run(
        n=args.n if args.n is not None else (5_000 if quick else 50_000),
        dim=args.dim,
        batch=args.batch,
        queries=args.queries if args.queries is not None else (200 if quick else 300),
        query_rounds=args.query_rounds if args.query_rounds is not None else (3 if quick else 5),
        replicas=not args.no_replicas,
        concurrency=args.concurrency,
        duration=args.duration if args.duration is not None else (4.0 if quick else 15.0),
        rounds=args.rounds if args.rounds is not None else (2 if quick else 3),
        pg_url=args.pg_url,
        pg_port=args.pg_port,
        pg_dir=args.pg_dir,
        blas_threads=args.blas_threads,
        json_path=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
