"""This service next to other vector stores on one synthetic clustered data set (issue 7).

N vectors of dimension 128 (``tests.index.data.clustered`` with 1,000 clusters, sigma 0.15:
hard data) plus 1,000 held-out queries, exact top-10 truth from numpy (float64 rescoring, ties
within 1e-6 count as hits). Each system runs in its own subprocess (so its peak RSS is its own),
then is opened again in fresh subprocesses for the cold start:

- ``service``: the in-process service layer (``open_services``, ``ingest_feature_maps`` in
  batches of 10,000 on a live index, ``find_similar``), default settings (HNSW above 50,000
  vectors, M and ef tuned to recall 0.95);
- ``service-http``: the same over HTTP, ``fingerprints serve`` (uvicorn) on loopback, ingest
  through ``POST /v1/admin/fingerprints/ingest`` (5,000 per request), search through
  ``POST /v1/content/similar``;
- peers: ``chromadb`` (persistent client, HNSW M=16), ``lancedb`` (IVF_PQ index, refine),
  ``qdrant`` (qdrant-client local on-disk mode), ``milvus-lite`` (pymilvus, HNSW M=16);
- floors: raw ``hnswlib`` (M=16, ef_construction=200) and raw ``numpy`` (exact).

Measured per system: persisted ingest (vectors/s until the writes are durable: the call that
commits them returned), index build (until the index answers at full size and is on disk),
single-query latency p50/p95 and QPS (one client thread, 1,000 held-out queries) and recall@10
over its search parameter, cold start (spawn of a fresh process until the first answer, median
of 3; page cache warm), peak RSS (VmHWM of the process and its children, summed). Not timed:
data generation, the service's catalog rows (its ingest needs the tracks to exist), and the
client-side JSON encoding of the HTTP bodies. A peer that is missing or fails is reported with
its error. Results: ``docs/bench/peers-n<N>.json``, a Markdown table next to it and PNG plots.

    .venv/bin/python -m bench.peers                   # N = 100,000 (about 15 minutes on 2 cores)
    .venv/bin/python -m bench.peers --big             # N = 1,000,000
    .venv/bin/python -m bench.peers --n 2000 --only numpy,hnswlib   # quick
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: ``python bench/peers.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.search import _recall, _truth  # noqa: E402
from tests.index.data import clustered  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEED = 20240607
DIM = 128
K = 10
CLUSTERS = 1_000
SIGMA = 0.15
HNSW_M = 16
EF_CONSTRUCTION = 200
EFS = (16, 32, 64, 128, 256, 400, 600)
LANCE_SETTINGS = ((10, 10), (20, 10), (40, 10), (80, 10), (80, 30), (160, 30), (320, 50))
TARGET_RECALL = 0.95
COLD_REPEATS = 3
CHILD_TIMEOUT_S = 3 * 3600
ADMIN_TOKEN = "bench-admin-token"
TYPE_ID = "bench"
TRACKS_PER_ALBUM = 100

GOAL_QPS_VS_PEERS = 2.0
GOAL_QPS_VS_HNSWLIB = 1.0
GOAL_INGEST_VS_INDEXING = 5.0
GOAL_INGEST_VS_APPEND = 0.5
GOAL_OVERHEAD = 0.20


@dataclass(frozen=True)
class Spec:
    """What the parent knows of a system: who runs it, whether it is a peer, how it writes."""

    name: str
    modules: tuple[str, ...]  # importable modules it needs
    dists: tuple[str, ...]  # distributions whose versions are reported
    role: str  # service, peer, floor
    write: str  # "indexes on write", "append-only", or "" (not a peer)
    index: str  # what answers queries
    param: str  # the search parameter of its curve


SPECS = (
    Spec("numpy", ("numpy",), ("numpy",), "floor", "", "exact scan (matrix @ q)", "-"),
    Spec(
        "hnswlib", ("hnswlib",), ("hnswlib",), "floor", "", f"HNSW M={HNSW_M}, ef_c={EF_CONSTRUCTION}", "ef"
    ),
    Spec("service", ("fingerprints",), ("fingerprints",), "service", "", "exact + HNSW (tuned M, ef)", "ef"),
    Spec(
        "service-http",
        ("fingerprints", "httpx", "uvicorn"),
        ("fingerprints", "uvicorn"),
        "service",
        "",
        "the same, over HTTP",
        "ef",
    ),
    Spec(
        "chromadb",
        ("chromadb",),
        ("chromadb",),
        "peer",
        "indexes on write",
        f"HNSW M={HNSW_M}, ef_c={EF_CONSTRUCTION}",
        "ef_search",
    ),
    Spec(
        "lancedb",
        ("lancedb", "pyarrow"),
        ("lancedb", "pyarrow"),
        "peer",
        "append-only",
        "IVF_PQ (sqrt N lists, 16 sub-vectors) + refine",
        "nprobes/refine",
    ),
    Spec(
        "qdrant",
        ("qdrant_client",),
        ("qdrant-client",),
        "peer",
        "append-only",
        "local mode: exact scan (no HNSW)",
        "-",
    ),
    Spec(
        "milvus-lite",
        ("pymilvus", "milvus_lite"),
        ("pymilvus", "milvus-lite"),
        "peer",
        "append-only",
        f"HNSW M={HNSW_M}, efConstruction={EF_CONSTRUCTION}",
        "ef",
    ),
)
SPEC_OF = {s.name: s for s in SPECS}


# ================================================================================== child side


def _fsync_tree(path: Path) -> None:
    """fsync every file under ``path`` (and the directories): durable whatever the store did."""
    paths = [path] if path.is_file() else [p for p in path.rglob("*")] + [path]
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _disk_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def _hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def peak_rss_mb() -> float:
    """VmHWM of this process plus its live descendants (servers the client started), in MiB.

    Not ``getrusage``: on Linux a child's ru_maxrss starts from its parent's RSS at the fork
    (the parent holds the data and the truth), VmHWM belongs to the process's own memory map.
    """
    return (_hwm_kb(os.getpid()) + sum(_hwm_kb(p) for p in _descendants(os.getpid()))) / 1024


class Adapter:
    """One system in a child process: ingest, build, search settings, reopen."""

    build_on_write = False

    def __init__(self, store: Path, n: int) -> None:
        self.store = store
        self.n = n
        self.extra: dict[str, Any] = {}

    def ingest(self, base: np.ndarray) -> None:
        raise NotImplementedError

    def build(self) -> None:
        """Until the index answers at full size and is on disk (nothing for on-write indexes)."""

    def settings(self) -> list[Any]:
        return ["exact"]

    def use(self, setting: Any) -> None:
        pass

    def query(self, q: np.ndarray) -> list[int]:
        raise NotImplementedError

    def open(self) -> None:
        """Open the persisted store in this (fresh) process."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class NumpyAdapter(Adapter):
    def ingest(self, base: np.ndarray) -> None:
        path = self.store / "vectors.npy"
        with open(path, "wb") as f:
            np.save(f, base)
            f.flush()
            os.fsync(f.fileno())
        self.matrix = base

    def query(self, q: np.ndarray) -> list[int]:
        keys = self.matrix @ q
        top = np.argpartition(keys, len(keys) - K)[len(keys) - K :]
        return top[np.argsort(-keys[top])].tolist()

    def open(self) -> None:
        self.matrix = np.load(self.store / "vectors.npy")


class HnswlibAdapter(Adapter):
    build_on_write = True

    def ingest(self, base: np.ndarray) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=base.shape[1])
        self.index.init_index(
            max_elements=len(base), M=HNSW_M, ef_construction=EF_CONSTRUCTION, random_seed=100
        )
        self.index.add_items(base, np.arange(len(base)), num_threads=_threads())
        self.index.save_index(str(self.store / "hnsw.bin"))
        _fsync_tree(self.store)

    def settings(self) -> list[Any]:
        return list(EFS)

    def use(self, setting: Any) -> None:
        self.index.set_ef(int(setting))

    def query(self, q: np.ndarray) -> list[int]:
        return self.index.knn_query(q, k=K, num_threads=1)[0][0].tolist()

    def open(self) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=DIM)
        self.index.load_index(str(self.store / "hnsw.bin"), max_elements=self.n)
        self.index.set_ef(max(EFS))


def _threads() -> int:
    return max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))


def _catalog_items(n: int) -> dict[str, list[dict[str, Any]]]:
    n_albums = max(1, -(-n // TRACKS_PER_ALBUM))
    return {
        "artists": [{"id": "ar0", "name": "Bench Artist"}],
        "albums": [
            {"id": f"al{a:05d}", "name": f"Album {a}", "artist_ids": ["ar0"]} for a in range(n_albums)
        ],
        "tracks": [
            {"id": f"t{i:07d}", "name": f"Track {i}", "album_id": f"al{i // TRACKS_PER_ALBUM:05d}",
             "artist_ids": ["ar0"], "track_number": i % TRACKS_PER_ALBUM + 1}
            for i in range(n)
        ],
    }  # fmt: skip


def _catalog_chunks(n: int, step: int) -> list[dict[str, list[dict[str, Any]]]]:
    items = _catalog_items(n)
    flat = [(kind, item) for kind in ("artists", "albums", "tracks") for item in items[kind]]
    chunks = []
    for start in range(0, len(flat), step):
        body: dict[str, list[dict[str, Any]]] = {}
        for kind, item in flat[start : start + step]:
            body.setdefault(kind, []).append(item)
        chunks.append(body)
    return chunks


def _service_settings(store: Path) -> Any:
    from fingerprints.config import Settings

    return Settings(
        data_dir=store,
        admin_token=ADMIN_TOKEN,
        index_threads=_threads(),
        index_snapshots=True,
        index_load="eager",
        aggregation_interval=0,
    )


def _row(entity_id: str) -> int:
    return int(entity_id[1:])


class ServiceAdapter(Adapter):
    """The service layer in process, as bench/search drives it; default index settings."""

    def _open(self) -> None:
        from fingerprints.auth import ADMIN
        from fingerprints.service import indexing
        from fingerprints.service.base import open_services

        self.viewer = ADMIN
        self.svc = open_services(_service_settings(self.store))
        indexing.start(self.svc)

    def ingest(self, base: np.ndarray) -> None:
        from fingerprints.service import catalog, feature_types, ingest

        self._open()
        feature_types.register_feature_type(
            self.svc, id=TYPE_ID, name="Bench", dimension=DIM, applies_to=["track"], aggregation_method="none"
        )
        for body in _catalog_chunks(len(base), self.svc.settings.max_batch_items):
            done = catalog.upsert_catalog(self.svc, **body)
            if done.errors:
                raise RuntimeError(f"catalog: {done.errors[:3]}")
        self.t_ingest = time.perf_counter()  # the catalog is setup: the clock starts here
        step = 10_000
        for start in range(0, len(base), step):
            features = [
                {"entity_type": "track", "entity_id": f"t{i:07d}", "vector": base[i]}
                for i in range(start, min(start + step, len(base)))
            ]
            stored = ingest.ingest_feature_maps(self.svc, feature_type_id=TYPE_ID, features=features)
            if stored.errors or stored.ingested != len(features):
                raise RuntimeError(f"ingest: {stored.ingested} of {len(features)}, {stored.errors[:3]}")

    def key(self) -> Any:
        from fingerprints.domain import EntityType
        from fingerprints.service import feature_types, indexing

        ft = feature_types.get_feature_type(self.svc, type_id=TYPE_ID)
        return indexing.key_index(self.svc, ft, EntityType.TRACK)

    def build(self) -> None:
        """Until the background graph is built, the fresh tier drained and the snapshot saved."""
        from fingerprints.service import indexing

        key = self.key()
        if len(key) > self.svc.settings.hnsw_threshold:
            deadline = time.monotonic() + CHILD_TIMEOUT_S
            while key.graph is None or key.building or key.has_fresh():
                if time.monotonic() > deadline:
                    raise RuntimeError("graph build timed out")
                time.sleep(0.02)
        indexing.save_snapshots(self.svc)
        status = key.status()
        self.extra["index"] = status
        self.tuned_ef = status["ef_search"]

    def settings(self) -> list[Any]:
        key = self.key()
        if key.graph is None:
            return ["exact"]
        return sorted(set(EFS) | {int(self.tuned_ef)})

    def use(self, setting: Any) -> None:
        key = self.key()
        if key.graph is not None and setting != "exact":
            with key.lock.write():
                key.graph.ef_search = int(setting)

    def query(self, q: np.ndarray) -> list[int]:
        from fingerprints.service import similarity

        found = similarity.find_similar(
            self.svc, query={"vector": q}, feature_type=TYPE_ID, limit=K, viewer=self.viewer
        )
        return [_row(item.entity_id) for item in found.results]

    def raw_same_graph(self) -> Callable[[np.ndarray], list[int]] | None:
        """raw hnswlib ``knn_query`` on the service's own graph: the wrapper's cost alone."""
        key = self.key()
        if key.graph is None:
            return None
        graph = key.graph
        labels = np.array([_row(e) if e is not None else -1 for e in graph._ids])
        index = graph._index
        return lambda q: labels[index.knn_query(q, k=K, num_threads=1)[0][0]].tolist()

    def open(self) -> None:
        self._open()

    def close(self) -> None:
        from fingerprints.service import indexing

        indexing.stop(self.svc)
        self.svc.dbs.dispose()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(store: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FINGERPRINTS_ADMIN_TOKEN": ADMIN_TOKEN,
        "FINGERPRINTS_AGGREGATION_INTERVAL": "0",
        "FINGERPRINTS_INDEX_THREADS": str(_threads()),
        "FINGERPRINTS_LOG_LEVEL": "warning",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "fingerprints", "serve", "--data-dir", str(store), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the service snapshots its indexes on the way out), then wait."""
    proc.terminate()
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class HttpAdapter(Adapter):
    """``fingerprints serve`` on loopback, driven with one keep-alive httpx client."""

    def _connect(self) -> None:
        import httpx

        self.port = _free_port()
        self.server = start_server(self.store, self.port)
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
            timeout=600,
        )
        deadline = time.monotonic() + 300
        while True:
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start (exit {self.server.poll()})")
            time.sleep(0.02)

    def _post(self, path: str, body: bytes) -> Any:
        resp = self.client.post(path, content=body)
        if resp.status_code >= 300:
            raise RuntimeError(f"{path}: {resp.status_code} {resp.text[:500]}")
        return resp.json()

    def ingest(self, base: np.ndarray) -> None:
        import orjson

        self.store.mkdir(parents=True, exist_ok=True)
        self._connect()
        type_body = {"id": TYPE_ID, "name": "Bench", "dimension": DIM, "applies_to": ["track"]}
        self._post("/v1/admin/fingerprints/types", orjson.dumps({**type_body, "aggregation_method": "none"}))
        for body in _catalog_chunks(len(base), 10_000):
            done = self._post("/v1/admin/catalog", orjson.dumps(body))
            if done.get("errors"):
                raise RuntimeError(f"catalog: {done['errors'][:3]}")
        step = 5_000
        bodies = [
            orjson.dumps(
                {
                    "feature_type_id": TYPE_ID,
                    "features": [
                        {"entity_type": "track", "entity_id": f"t{i:07d}", "vector": base[i]}
                        for i in range(start, min(start + step, len(base)))
                    ],
                },
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
            for start in range(0, len(base), step)
        ]
        self.t_ingest = time.perf_counter()  # catalog and client-side encoding are not timed
        for body in bodies:
            done = self._post("/v1/admin/fingerprints/ingest", body)
            if done["errors"]:
                raise RuntimeError(f"ingest: {done['errors'][:3]}")

    def _index_status(self) -> dict[str, Any]:
        keys = self.client.get("/readyz").json()["index"]["keys"]
        return dict(next(iter(keys.values()))) if keys else {}

    def build(self) -> None:
        """Until the graph is built and drained. A feature type registered while the server runs
        has no index key until its first query (ingest does not create one): that query loads
        the key from the database and queues the graph build, so it is part of the build."""
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        self.query(np.ones(DIM, dtype=np.float32))
        while True:
            s = self._index_status()
            if s.get("kind") == "exact" and s.get("size", 0) <= 50_000 and not s.get("building"):
                break  # stays exact (below the HNSW threshold)
            if s.get("kind") == "hnsw" and not s.get("building") and not s.get("fresh"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("graph build timed out")
            time.sleep(0.05)
        self.extra["index"] = s
        self.extra["note"] = "ef as tuned by the service (fixed for the server's life)"

    def settings(self) -> list[Any]:
        ef = self.extra.get("index", {}).get("ef_search")
        return [ef if ef is not None else "exact"]

    def query(self, q: np.ndarray) -> list[int]:
        import orjson

        body = orjson.dumps(
            {"feature_type": TYPE_ID, "query": {"vector": q}, "limit": K}, option=orjson.OPT_SERIALIZE_NUMPY
        )
        return [_row(item["entity_id"]) for item in self._post("/v1/content/similar", body)["results"]]

    def open(self) -> None:
        self._connect()

    def close(self) -> None:
        self.client.close()
        stop_server(self.server)


class ChromaAdapter(Adapter):
    build_on_write = True

    def _client(self) -> Any:
        import chromadb
        from chromadb.config import Settings

        return chromadb.PersistentClient(path=str(self.store), settings=Settings(anonymized_telemetry=False))

    def ingest(self, base: np.ndarray) -> None:
        self.client = self._client()
        self.col = self.client.create_collection(
            "vectors",
            embedding_function=None,
            configuration={
                "hnsw": {"space": "cosine", "ef_construction": EF_CONSTRUCTION, "max_neighbors": HNSW_M,
                         "ef_search": 100}
            },
        )  # fmt: skip
        step = min(5_000, self.client.get_max_batch_size())
        for start in range(0, len(base), step):
            stop = min(start + step, len(base))
            self.col.add(ids=[str(i) for i in range(start, stop)], embeddings=base[start:stop])

    def settings(self) -> list[Any]:
        return list(EFS)

    def use(self, setting: Any) -> None:
        # A loaded collection keeps the ef it was opened with: reopen it after the change.
        self.col.modify(configuration={"hnsw": {"ef_search": int(setting)}})
        self.client.clear_system_cache()
        self.client = self._client()
        self.col = self.client.get_collection("vectors")

    def query(self, q: np.ndarray) -> list[int]:
        found = self.col.query(query_embeddings=[q], n_results=K, include=[])
        return [int(i) for i in found["ids"][0]]

    def open(self) -> None:
        self.client = self._client()
        self.col = self.client.get_collection("vectors")


class LanceAdapter(Adapter):
    def ingest(self, base: np.ndarray) -> None:
        import lancedb
        import pyarrow as pa

        self.db = lancedb.connect(str(self.store))
        self.table = None
        step = 10_000
        for start in range(0, len(base), step):
            chunk = base[start : start + step]
            data = pa.table(
                {
                    "id": pa.array(np.arange(start, start + len(chunk), dtype=np.int64)),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(chunk.ravel()), DIM),
                }
            )
            if self.table is None:
                self.table = self.db.create_table("vectors", data=data)
            else:
                self.table.add(data)
        _fsync_tree(self.store)  # lance writes files without fsync: make them durable here

    def build(self) -> None:
        import warnings

        lists = max(1, int(np.sqrt(self.n)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.table.create_index(
                metric="cosine",
                vector_column_name="vector",
                index_type="IVF_PQ",
                num_partitions=lists,
                num_sub_vectors=16,
            )
        _fsync_tree(self.store)
        self.extra["index"] = {"num_partitions": lists, "num_sub_vectors": 16}

    def settings(self) -> list[Any]:
        lists = max(1, int(np.sqrt(self.n)))
        return [f"{min(p, lists)}/{r}" for p, r in LANCE_SETTINGS if p <= 2 * lists]

    def use(self, setting: Any) -> None:
        p, r = str(setting).split("/")
        self.nprobes, self.refine = int(p), int(r)

    def query(self, q: np.ndarray) -> list[int]:
        found = (
            self.table.search(q)
            .distance_type("cosine")
            .nprobes(self.nprobes)
            .refine_factor(self.refine)
            .limit(K)
            .select(["id"])
            .to_arrow()
        )
        return [int(i) for i in found["id"].to_pylist()]

    def open(self) -> None:
        import lancedb

        self.db = lancedb.connect(str(self.store))
        self.table = self.db.open_table("vectors")
        self.nprobes, self.refine = 20, 10


class QdrantAdapter(Adapter):
    """qdrant-client's local mode (no server): points pickled into SQLite, exact numpy search."""

    budget_s = 60.0

    def ingest(self, base: np.ndarray) -> None:
        from qdrant_client import QdrantClient, models

        self.client = QdrantClient(path=str(self.store))
        self.client.create_collection(
            "vectors", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        )
        started = time.perf_counter()
        step = 1_000
        for start in range(0, len(base), step):
            stop = min(start + step, len(base))
            self.client.upsert(
                "vectors",
                points=models.Batch(ids=list(range(start, stop)), vectors=base[start:stop].tolist()),
            )
            spent = time.perf_counter() - started
            if stop < len(base) and spent > self.budget_s:
                raise Partial(stop, spent)

    def query(self, q: np.ndarray) -> list[int]:
        found = self.client.query_points("vectors", query=q, limit=K)
        return [int(p.id) for p in found.points]

    def open(self) -> None:
        from qdrant_client import QdrantClient

        self.client = QdrantClient(path=str(self.store))

    def close(self) -> None:
        self.client.close()


class Partial(Exception):
    """An ingest stopped at its time budget: its rate is known, the rest is not measured."""

    def __init__(self, done: int, seconds: float) -> None:
        super().__init__(f"{done} vectors in {seconds:.0f}s")
        self.done, self.seconds = done, seconds


class MilvusAdapter(Adapter):
    def _client(self) -> Any:
        from pymilvus import MilvusClient

        return MilvusClient(str(self.store / "milvus.db"))

    def ingest(self, base: np.ndarray) -> None:
        from pymilvus import DataType

        self.store.mkdir(parents=True, exist_ok=True)
        self.client = self._client()
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
        self.client.create_collection("vectors", schema=schema)
        step = 10_000
        for start in range(0, len(base), step):
            rows = [{"id": i, "vector": base[i]} for i in range(start, min(start + step, len(base)))]
            self.client.insert("vectors", rows)
        self.client.flush("vectors")

    def build(self) -> None:
        params = self.client.prepare_index_params()
        params.add_index(
            "vector",
            index_type="HNSW",
            metric_type="COSINE",
            params={"M": HNSW_M, "efConstruction": EF_CONSTRUCTION},
        )
        from pymilvus.exceptions import MilvusException

        try:
            self.client.create_index("vectors", params)
        except MilvusException as exc:  # a retried call whose first attempt did create it
            if "already exists" not in str(exc):
                raise
            self.extra["note"] = "create_index retried by pymilvus: 'index already exists'"
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while True:
            info = self.client.describe_index("vectors", "vector")
            if info.get("state") == "Finished" and not info.get("pending_index_rows"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("index build timed out")
            time.sleep(0.05)
        self.client.load_collection("vectors")
        self.extra["index"] = {k: v for k, v in info.items() if k != "field_name"}
        self.ef = 64

    def settings(self) -> list[Any]:
        return list(EFS)

    def use(self, setting: Any) -> None:
        self.ef = int(setting)

    def query(self, q: np.ndarray) -> list[int]:
        found = self.client.search(
            "vectors",
            data=[q.tolist()],
            limit=K,
            search_params={"metric_type": "COSINE", "params": {"ef": self.ef}},
        )
        return [int(hit["id"]) for hit in found[0]]

    def open(self) -> None:
        self.client = self._client()
        self.client.load_collection("vectors")
        self.ef = 64

    def close(self) -> None:
        self.client.close()


ADAPTERS: dict[str, type[Adapter]] = {
    "numpy": NumpyAdapter,
    "hnswlib": HnswlibAdapter,
    "service": ServiceAdapter,
    "service-http": HttpAdapter,
    "chromadb": ChromaAdapter,
    "lancedb": LanceAdapter,
    "qdrant": QdrantAdapter,
    "milvus-lite": MilvusAdapter,
}


def _time_queries(
    fn: Callable[[np.ndarray], list[int]], held: np.ndarray
) -> tuple[np.ndarray, list[list[int]]]:
    for q in held[:10]:  # warm-up: first-call costs are not the subject
        fn(q)
    times = np.empty(len(held))
    answers = []
    clock = time.perf_counter
    for i, q in enumerate(held):
        t0 = clock()
        answers.append(fn(q))
        times[i] = clock() - t0
    return times, answers


def _point(setting: Any, times: np.ndarray, answers: list[list[int]]) -> dict[str, Any]:
    return {
        "setting": setting,
        "qps": float(len(times) / times.sum()),
        "p50_ms": float(1e3 * np.percentile(times, 50)),
        "p95_ms": float(1e3 * np.percentile(times, 95)),
        "answers": answers,
    }


def _same_graph(
    setting: Any,
    service: Callable[[np.ndarray], list[int]],
    raw: Callable[[np.ndarray], list[int]],
    held: np.ndarray,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The service and raw hnswlib on its very graph (same ef) take turns, 50 queries each, the
    order alternating, three passes: noise from neighbours hits both; the difference is the
    service layer alone."""
    fns = {"service": service, "raw": raw}
    for fn in fns.values():
        for q in held[:10]:
            fn(q)
    times = {name: np.empty((3, len(held))) for name in fns}
    answers: list[list[int]] = [[] for _ in held]
    clock = time.perf_counter
    for r in range(3):
        for b, start in enumerate(range(0, len(held), 50)):
            order = ("service", "raw") if (b + r) % 2 == 0 else ("raw", "service")
            for name in order:
                fn = fns[name]
                for i in range(start, min(start + 50, len(held))):
                    t0 = clock()
                    out = fn(held[i])
                    times[name][r, i] = clock() - t0
                    if r == 0 and name == "service":
                        answers[i] = out
    qps = {name: float(np.median(len(held) / t.sum(axis=1))) for name, t in times.items()}
    p50 = {name: float(np.median(t)) for name, t in times.items()}
    point = _point(setting, times["service"].ravel(), answers)
    point["qps"] = qps["service"]
    row = {
        "setting": setting,
        "service_qps": qps["service"],
        "raw_qps": qps["raw"],
        "service_p50_us": 1e6 * p50["service"],
        "raw_p50_us": 1e6 * p50["raw"],
    }
    return point, row


def child_run(system: str, work: Path, n: int) -> dict[str, Any]:
    """Ingest, build, search curve; in this process (the parent reads the result line)."""
    base = np.load(work / "base.npy", mmap_mode="r")
    held = np.load(work / "held.npy")
    store = work / "stores" / system
    store.mkdir(parents=True, exist_ok=True)
    adapter = ADAPTERS[system](store, n)
    out: dict[str, Any] = {"system": system}
    t0 = time.perf_counter()
    try:
        adapter.ingest(np.ascontiguousarray(base))
    except Partial as p:
        out["ingest_s"], out["ingest_n"] = p.seconds, p.done
        out["partial"] = (
            f"ingest stopped at its {p.seconds:.0f}s budget after {p.done:,} of {n:,} vectors "
            f"(projected {n / p.done * p.seconds / 60:.0f} min for all); search and cold start not measured"
        )
        out["peak_rss_mb"] = peak_rss_mb()
        adapter.close()
        return out
    started = getattr(adapter, "t_ingest", t0)
    out["ingest_s"], out["ingest_n"] = time.perf_counter() - started, n
    t1 = time.perf_counter()
    adapter.build()
    out["build_s"] = time.perf_counter() - t1
    out["build_on_write"] = adapter.build_on_write
    t1 = time.perf_counter()
    adapter.use(adapter.settings()[0])
    adapter.query(held[0])
    out["first_query_s"] = time.perf_counter() - t1
    curve = []
    same = adapter.raw_same_graph() if isinstance(adapter, ServiceAdapter) else None
    overhead = []
    for setting in adapter.settings():
        adapter.use(setting)
        if same is None:
            times, answers = _time_queries(adapter.query, held)
            curve.append(_point(setting, times, answers))
            continue
        point, row = _same_graph(setting, adapter.query, same, held)
        curve.append(point)
        overhead.append(row)
    out["curve"] = curve
    if overhead:
        out["same_graph"] = overhead
    if isinstance(adapter, ServiceAdapter):
        adapter.use(adapter.tuned_ef)
    out["extra"] = adapter.extra
    out["peak_rss_mb"] = peak_rss_mb()
    adapter.close()
    out["disk_mb"] = _disk_mb(store)
    return out


def child_cold(system: str, work: Path, n: int) -> None:
    """Open the persisted store and answer one query; say so at once (the parent's clock stops)."""
    held = np.load(work / "held.npy")
    adapter = ADAPTERS[system](work / "stores" / system, n)
    adapter.open()
    answer = adapter.query(held[0])
    print("ANSWER " + json.dumps(answer), flush=True)
    adapter.close()


# ================================================================================== parent side


def _versions(spec: Spec) -> dict[str, str]:
    out = {}
    for dist in spec.dists:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _missing(spec: Spec) -> str | None:
    gone = [m for m in spec.modules if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(gone)} (pip install -e '.[bench]')" if gone else None


def _child(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.peers", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _cold_once(system: str, work: Path, n: int) -> float:
    """Seconds from spawning a fresh process until its first answer arrives."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.peers", "--child", "cold", system, str(work), str(n)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seconds = None
    for line in proc.stdout:
        if line.startswith("ANSWER "):
            seconds = time.perf_counter() - t0
            if not json.loads(line[7:]):
                raise RuntimeError("empty first answer")
            break
    _, err = proc.communicate(timeout=600)
    if seconds is None or proc.returncode != 0:
        raise RuntimeError(f"cold start failed (exit {proc.returncode}): {err[-2000:]}")
    return seconds


def _error_tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-6:])


def run_system(
    spec: Spec, work: Path, n: int, truth: Any, base: np.ndarray, held: np.ndarray
) -> dict[str, Any]:
    out: dict[str, Any] = {"system": spec.name, "versions": _versions(spec)}
    why = _missing(spec)
    if why:
        out["error"] = why
        return out
    t0 = time.perf_counter()
    try:
        done = _child(["--child", "run", spec.name, str(work), str(n)], CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        out["error"] = f"timed out after {CHILD_TIMEOUT_S}s"
        return out
    out["wall_s"] = time.perf_counter() - t0
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        out["error"] = f"exit {done.returncode}: {_error_tail(done.stderr)}"
        return out
    out.update(json.loads(lines[-1][7:]))
    out["ingest_vps"] = out["ingest_n"] / out["ingest_s"]
    if "partial" in out:
        return out
    for point in out["curve"]:
        point["recall"] = _recall(point.pop("answers"), base, held, truth, K)
    cold = []
    try:
        for _ in range(COLD_REPEATS):
            cold.append(_cold_once(spec.name, work, n))
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        out["cold_error"] = str(exc)[-2000:]
    if cold:
        out["cold_runs_s"] = cold
        out["cold_s"] = float(np.median(cold))
    shutil.rmtree(work / "stores" / spec.name, ignore_errors=True)
    return out


def best_at(result: dict[str, Any], target: float = TARGET_RECALL) -> dict[str, Any] | None:
    """The fastest point of a curve whose recall@10 reaches ``target``."""
    points = [p for p in result.get("curve", []) if p["recall"] >= target]
    return max(points, key=lambda p: p["qps"]) if points else None


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def goals(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's four goals, PASS/FAIL (FAIL too when a needed figure is missing)."""
    out: list[dict[str, Any]] = []

    def goal(name: str, value: float | None, target: float, higher: bool, detail: str) -> None:
        ok = value is not None and (value >= target if higher else value <= target)
        out.append({"goal": name, "value": value, "target": target, "higher_is_better": higher,
                    "pass": ok, "detail": detail})  # fmt: skip

    ok = {name: r for name, r in results.items() if "error" not in r and "partial" not in r}
    svc = ok.get("service")
    peers = [name for name, r in ok.items() if SPEC_OF[name].role == "peer"]
    svc_best = best_at(svc) if svc else None
    peer_best = {name: best_at(ok[name]) for name in peers}
    reached = {name: p for name, p in peer_best.items() if p is not None}
    top = max(reached.items(), key=lambda kv: kv[1]["qps"]) if reached else None
    if svc_best and top:
        goal(
            "QPS at recall>=0.95: service / best peer",
            svc_best["qps"] / top[1]["qps"],
            GOAL_QPS_VS_PEERS,
            True,
            f"service {svc_best['qps']:,.0f} q/s (ef {svc_best['setting']}) vs {top[0]} {top[1]['qps']:,.0f} "
            f"({top[1]['setting']}); peers without a point at 0.95: "
            f"{', '.join(n for n in peers if n not in reached) or 'none'}",
        )
    else:
        goal(
            "QPS at recall>=0.95: service / best peer", None, GOAL_QPS_VS_PEERS, True, "no figure to compare"
        )
    raw = best_at(ok["hnswlib"]) if "hnswlib" in ok else None
    if svc_best and raw:
        goal(
            "QPS at recall>=0.95: service / raw hnswlib M=16",
            svc_best["qps"] / raw["qps"],
            GOAL_QPS_VS_HNSWLIB,
            True,
            f"service {svc_best['qps']:,.0f} q/s vs hnswlib {raw['qps']:,.0f} (ef {raw['setting']})",
        )
    else:
        goal("QPS at recall>=0.95: service / raw hnswlib M=16", None, GOAL_QPS_VS_HNSWLIB, True, "no figure")

    rates = {name: r["ingest_vps"] for name, r in results.items() if "ingest_vps" in r}
    on_write = [n for n in rates if SPEC_OF[n].role == "peer" and SPEC_OF[n].write == "indexes on write"]
    append = [n for n in rates if SPEC_OF[n].role == "peer" and SPEC_OF[n].write == "append-only"]
    if "service" in rates and on_write:
        worst = max(on_write, key=lambda n: rates[n])
        goal(
            "ingest: service / fastest peer that indexes on write",
            rates["service"] / rates[worst],
            GOAL_INGEST_VS_INDEXING,
            True,
            f"service {rates['service']:,.0f} v/s vs {worst} {rates[worst]:,.0f}",
        )
    else:
        goal(
            "ingest: service / fastest peer that indexes on write",
            None,
            GOAL_INGEST_VS_INDEXING,
            True,
            "none ran",
        )
    if "service" in rates and append:
        best = max(append, key=lambda n: rates[n])
        goal(
            "ingest: service / fastest append-only peer",
            rates["service"] / rates[best],
            GOAL_INGEST_VS_APPEND,
            True,
            f"service {rates['service']:,.0f} v/s vs {best} {rates[best]:,.0f}",
        )
    else:
        goal("ingest: service / fastest append-only peer", None, GOAL_INGEST_VS_APPEND, True, "none ran")

    colds = {name: r["cold_s"] for name, r in ok.items() if "cold_s" in r and SPEC_OF[name].role == "peer"}
    if svc and "cold_s" in svc and colds:
        best = min(colds, key=lambda n: colds[n])
        goal(
            "cold start: service / best peer",
            svc["cold_s"] / colds[best],
            1.0,
            False,
            f"service {svc['cold_s']:.2f}s vs {best} {colds[best]:.2f}s",
        )
    else:
        goal("cold start: service / best peer", None, 1.0, False, "no figure to compare")

    same = svc.get("same_graph") if svc else None
    tuned = (svc or {}).get("extra", {}).get("index", {}).get("ef_search")
    row = next((s for s in same or [] if s["setting"] == tuned), None)
    if row:
        goal(
            "service-layer overhead over raw hnswlib, same graph and ef",
            row["raw_qps"] / row["service_qps"] - 1,
            GOAL_OVERHEAD,
            False,
            f"ef {tuned}: service {row['service_qps']:,.0f} q/s, hnswlib knn_query on the same graph "
            f"{row['raw_qps']:,.0f} q/s; median latency {row.get('service_p50_us', 0):,.0f} vs "
            f"{row.get('raw_p50_us', 0):,.0f} us",
        )
    else:
        goal(
            "service-layer overhead over raw hnswlib, same graph and ef",
            None,
            GOAL_OVERHEAD,
            False,
            "no graph",
        )
    return out


def _fmt(value: float | None, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def table_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for spec in SPECS:
        r = results.get(spec.name)
        if r is None:
            continue
        if "error" in r:
            rows.append([spec.name, "FAILED: " + r["error"].splitlines()[-1][:90]] + [""] * 9)
            continue
        best = best_at(r)
        top = max(r.get("curve", []), key=lambda p: p["recall"], default=None)
        shown = best or top
        build = "on write" if r.get("build_on_write") else _fmt(r.get("build_s"), ".1f")
        rows.append(
            [
                spec.name,
                f"{r['ingest_vps']:,.0f}" + (" (partial)" if "partial" in r else ""),
                build,
                "-" if shown is None else str(shown["setting"]),
                "-" if shown is None else f"{shown['recall']:.3f}",
                "-" if shown is None else f"{shown['qps']:,.0f}",
                "-" if shown is None else f"{shown['p50_ms']:.2f}",
                "-" if shown is None else f"{shown['p95_ms']:.2f}",
                _fmt(r.get("cold_s"), ".2f"),
                _fmt(r.get("peak_rss_mb"), ",.0f"),
                _fmt(r.get("disk_mb"), ",.0f"),
            ]
        )
    return rows


HEADER = [
    "system",
    "ingest v/s",
    "build s",
    "setting",
    "recall@10",
    "QPS",
    "p50 ms",
    "p95 ms",
    "cold s",
    "peak RSS MiB",
    "disk MiB",
]


def markdown(report: dict[str, Any]) -> str:
    res = report["results"]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(res)]
    lines += ["", "Search-parameter curves (recall@10 / QPS):", ""]
    for spec in SPECS:
        r = res.get(spec.name, {})
        if r.get("curve"):
            pts = ", ".join(f"{p['setting']}: {p['recall']:.3f} / {p['qps']:,.0f}" for p in r["curve"])
            lines.append(f"- **{spec.name}** ({spec.param}): {pts}")
    lines += ["", "| goal | value | target | result |", "|---|---|---|---|"]
    for g in report["goals"]:
        op = ">=" if g["higher_is_better"] else "<="
        lines.append(
            f"| {g['goal']} ({g['detail']}) | {_fmt(g['value'], '.2f')} | {op} {g['target']} | "
            f"{'PASS' if g['pass'] else 'FAIL'} |"
        )
    return "\n".join(lines) + "\n"


def print_report(report: dict[str, Any], say: Callable[[str], None]) -> None:
    res = report["results"]
    m = report["machine"]
    say("")
    say(
        f"== peers: clustered data ({CLUSTERS} clusters, sigma {SIGMA}), n={report['n']:,}, dim={DIM}, "
        f"k={K}, {report['queries']:,} held-out queries, cosine"
    )
    say(
        f"machine: nproc {m['nproc']}, {m['cpu']}, {m['memory']}, python {m['python']}; "
        f"loadavg {m['loadavg']}"
    )
    rows = table_rows(res)
    fine = [r for r in rows if not r[1].startswith("FAILED")]
    widths = [max(len(HEADER[i]), *(len(r[i]) for r in fine)) for i in range(len(HEADER))]
    say(
        "  ".join(
            h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(HEADER, widths, strict=True))
        )
    )
    for row in rows:
        if row[1].startswith("FAILED"):
            say(f"{row[0].ljust(widths[0])}  {row[1]}")
            continue
        say(
            "  ".join(
                c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    say("(setting: the fastest point reaching recall@10 >= 0.95, else the best recall reached)")
    for spec in SPECS:
        r = res.get(spec.name, {})
        if r.get("curve") and len(r["curve"]) > 1:
            pts = "  ".join(f"{p['setting']}:{p['recall']:.3f}/{p['qps']:,.0f}" for p in r["curve"])
            say(f"  curve {spec.name} ({spec.param} recall/QPS): {pts}")
        if "partial" in r:
            say(f"  {spec.name}: {r['partial']}")
        if "cold_error" in r:
            say(f"  {spec.name}: cold start failed: {r['cold_error'].splitlines()[-1]}")
    say("")
    say("goals")
    for g in report["goals"]:
        op = ">=" if g["higher_is_better"] else "<="
        say(f"  {g['goal']:58}{_fmt(g['value'], '7.2f', '      -')}  {op} {g['target']:<5}"
            f"{'PASS' if g['pass'] else 'FAIL':>6}   {g['detail']}")  # fmt: skip
    say("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))


def plot(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """recall-vs-QPS curves, ingest bars, cold-start bars (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = report["results"]
    n = report["n"]
    paths = []
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for spec in SPECS:
        r = res.get(spec.name, {})
        pts = r.get("curve") or []
        if not pts:
            continue
        pts = sorted(pts, key=lambda p: p["recall"])
        ax.plot([p["recall"] for p in pts], [p["qps"] for p in pts], marker="o", label=spec.name)
    ax.axvline(TARGET_RECALL, color="grey", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("recall@10 (1,000 held-out queries)")
    ax.set_ylabel("queries per second (one client thread, log)")
    ax.set_title(f"Recall vs QPS, clustered data, n={n:,}, dim {DIM}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    paths.append(out_dir / f"peers-n{n}-recall-qps.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    for key, title, label, fname in (
        ("ingest_vps", "Persisted ingest throughput", "vectors per second (log)", "ingest"),
        ("cold_s", "Cold start: fresh process until the first answer", "seconds", "cold-start"),
        ("peak_rss_mb", "Peak RSS (process and children)", "MiB", "peak-rss"),
    ):
        names = [s.name for s in SPECS if key in res.get(s.name, {})]
        if not names:
            continue
        values = [res[name][key] for name in names]
        fig, ax = plt.subplots(figsize=(8, 4.5))
        colors = ["tab:blue" if SPEC_OF[x].role == "service" else
                  "tab:orange" if SPEC_OF[x].role == "peer" else "tab:grey" for x in names]  # fmt: skip
        bars = ax.bar(names, values, color=colors)
        ax.bar_label(bars, labels=[f"{v:,.0f}" if v >= 10 else f"{v:.2f}" for v in values], fontsize=8)
        if key == "ingest_vps":
            ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.set_title(f"{title}, n={n:,}")
        ax.tick_params(axis="x", rotation=20)
        paths.append(out_dir / f"peers-n{n}-{fname}.png")
        fig.tight_layout()
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def run(
    *,
    n: int = 100_000,
    queries: int = 1_000,
    only: Sequence[str] | None = None,
    out_dir: Path | None = ROOT / "docs" / "bench",
    plots: bool = True,
    qdrant_budget_s: float | None = None,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
) -> dict[str, Any]:
    """Data, truth, every system in its subprocesses, goals, report; the report dict."""
    names = list(only) if only else [s.name for s in SPECS]
    unknown = [x for x in names if x not in SPEC_OF]
    if unknown:
        raise ValueError(f"unknown systems {unknown}; known: {list(SPEC_OF)}")
    started = time.perf_counter()
    machine = _machine()  # the load average before the run
    work = Path(tempfile.mkdtemp(prefix="fingerprints-peers-"))
    try:
        data = clustered(n + queries, DIM, clusters=CLUSTERS, sigma=SIGMA, seed=SEED)
        base, held = np.ascontiguousarray(data[:n]), np.ascontiguousarray(data[n:])
        np.save(work / "base.npy", base)
        np.save(work / "held.npy", held)
        truth = _truth(base, held, K)
        if qdrant_budget_s is not None:
            os.environ["BENCH_PEERS_QDRANT_BUDGET_S"] = str(qdrant_budget_s)
        say(f"peers benchmark: n={n:,}, {queries:,} queries, systems {', '.join(names)}; work dir {work}")
        results: dict[str, dict[str, Any]] = {}
        for name in names:
            t0 = time.perf_counter()
            results[name] = run_system(SPEC_OF[name], work, n, truth, base, held)
            r = results[name]
            state = "FAILED: " + r["error"].splitlines()[-1] if "error" in r else "ok"
            say(f"  {name}: {state} ({time.perf_counter() - t0:.0f}s)")
        versions: dict[str, str] = {}
        for name in names:
            versions.update(_versions(SPEC_OF[name]))
        report = {
            "n": n,
            "dim": DIM,
            "queries": queries,
            "k": K,
            "data": {"clusters": CLUSTERS, "sigma": SIGMA, "seed": SEED, "metric": "cosine"},
            "machine": {**machine, "loadavg after": " ".join(f"{x:.2f}" for x in os.getloadavg())},
            "versions": versions,
            "indexes": {s.name: s.index for s in SPECS if s.name in names},
            "results": results,
            "seconds": time.perf_counter() - started,
        }
        report["goals"] = goals(results)
        print_report(report, say)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"peers-n{n}.json").write_text(json.dumps(report, indent=1) + "\n")
            (out_dir / f"peers-n{n}.md").write_text(markdown(report))
            written = [out_dir / f"peers-n{n}.json", out_dir / f"peers-n{n}.md"]
            if plots:
                written += plot(report, out_dir)
            say("wrote " + ", ".join(str(p) for p in written))
        say(f"total {time.perf_counter() - started:.0f}s")
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description="This service next to chromadb, lancedb, qdrant (local), milvus-lite, hnswlib and numpy.",
    )
    parser.add_argument("--n", type=int, default=100_000, help="indexed vectors (default 100000)")
    parser.add_argument("--big", action="store_true", help="N = 1,000,000 (long)")
    parser.add_argument("--queries", type=int, default=1_000, help="held-out queries (default 1000)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SPEC_OF)}")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "bench", help="JSON, table, plots")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    parser.add_argument(
        "--qdrant-budget", type=float, default=None, help="seconds of qdrant ingest before it is cut (60)"
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        phase, system, work, n = args.child
        if system == "qdrant" and os.environ.get("BENCH_PEERS_QDRANT_BUDGET_S"):
            QdrantAdapter.budget_s = float(os.environ["BENCH_PEERS_QDRANT_BUDGET_S"])
        if phase == "run":
            try:
                print("RESULT " + json.dumps(child_run(system, Path(work), int(n))), flush=True)
            except Exception:
                traceback.print_exc()
                for pid in _descendants(os.getpid()):  # a server this child started
                    os.kill(pid, signal.SIGTERM)
                return 1
        else:
            child_cold(system, Path(work), int(n))
        return 0
    run(
        n=1_000_000 if args.big else args.n,
        queries=args.queries,
        only=args.only.split(",") if args.only else None,
        out_dir=args.out_dir,
        plots=not args.no_plots,
        qdrant_budget_s=args.qdrant_budget,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
