"""Similarity search: the service layer next to raw numpy and raw hnswlib, on clustered data.

N vectors of dimension D from ``tests.index.data.clustered`` (the hard synthetic set) go into a
real ``Services`` (catalog, feature type and ``ingest_feature_maps`` in batches of 10,000; not
timed), plus ``--queries`` held-out points of the same generator that are not in the index.
Every figure is a ratio against a baseline measured in the same run, interleaved with it (the
order rotating) so that noise on a shared machine hits both sides; the raw baselines read the
very matrix the index searches, and medians of repeats are reported:

- exact, single query: ``find_similar`` (validation, feature-type lookup, result objects) and
  ``KeyIndex.search`` vs ``m @ q`` + ``np.argpartition`` + sorting the top k, on the very
  matrix the index holds. Latency p50/p95; goal service <= 1.3x raw.
- exact, a batch of 1,000: ``KeyIndex.search_batch`` vs ``Q @ M.T`` + ``np.argpartition(axis=1)``
  + a per-row sort of the k; and ``find_similar_batch`` (1,000 stored entities, every one
  excluded from every list) vs the same in numpy. Goal: service >= 1.5x faster than raw.
- HNSW (M=16 unless ``--m``, the same M for both graphs; ef_construction=200): the service key
  after its background graph build vs raw ``hnswlib`` built on the same vectors, at ef
  50/100/200: QPS of a single-query loop and of one batch, recall@10 of held-out queries
  against exact truth. Also raw hnswlib on the *service's*
  graph (same graph, so the difference is the wrapper alone). Goal: >= 0.8x raw QPS wherever
  recall@10 >= 0.98. Plus what the auto-tuner picks (``choose_ef``, ``choose_m``). Single-query
  loops run whole passes per turn (see ``_interleaved`` for why).
- cold start, in a fresh subprocess: ``open_services`` + ``indexing.start`` until the first
  ``find_similar`` answers, loading snapshots vs rebuilding from the database (for the HNSW
  key also until its graph is back). Files are in the page cache: a process restart, not a
  cold disk.

Truth is exact in float64 (top k + 16 candidates of a float32 pass, rescored); an answer counts
as a hit when it is in the true top k or ties with the k-th within 1e-6.

    .venv/bin/python -m bench.search                 # N = 100,000, D = 128
    .venv/bin/python -m bench.search --big           # also N = 1,000,000 (long)
    .venv/bin/python -m bench.search --n 20000 --skip-hnsw   # quick
    .venv/bin/python -m bench.search --n 1000000 --m 32 --queries 500 --skip-exact --skip-cold --skip-choose-m

At N = 1,000,000 and M = 16 neither side reaches recall@10 0.98 at ef <= 200, so the HNSW goal
cannot be judged there; a larger ``--m`` (the service's own tuner picks M for the target
recall) can. ``--skip-exact`` leaves out the exact section (at 1M its batches hold a
queries x N key matrix: 4 GB at 1,000 queries).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: ``python bench/search.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hnswlib  # noqa: E402
import numpy as np  # noqa: E402

from fingerprints.auth import ADMIN  # noqa: E402
from fingerprints.config import Settings  # noqa: E402
from fingerprints.domain import Distance, EntityType  # noqa: E402
from fingerprints.index.registry import KeyIndex  # noqa: E402
from fingerprints.index.tuning import choose_ef, choose_m  # noqa: E402
from fingerprints.service import catalog, feature_types, indexing, ingest, similarity  # noqa: E402
from fingerprints.service.base import Services, open_services  # noqa: E402
from tests.index.data import clustered  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEED = 20240601
ADMIN_TOKEN = "bench-admin-token"
TYPE_ID = "bench"
K = 10
EFS = (50, 100, 200)
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_BUILD = 64  # the service key's ef right after its build (fixed: no tuning in the build)
INGEST_BATCH = 10_000
TRACKS_PER_ALBUM = 100
MAX_BATCH_QUERIES = 1_000  # find_similar_batch takes at most this many
TIE_TOLERANCE = 1e-6
GRAPH_TIMEOUT_S = 4 * 3600

GOAL_EXACT_SINGLE = 1.3  # service latency / raw latency, at most
GOAL_BATCH = 1.5  # raw time / service time, at least
GOAL_HNSW_QPS = 0.8  # service QPS / raw QPS, at least ...
GOAL_HNSW_RECALL = 0.98  # ... wherever the service's recall@10 reaches this


# ---------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Latency:
    p50: float  # seconds; median over repeats of each repeat's percentile
    p95: float


@dataclass(frozen=True)
class HnswRow:
    ef: int
    single_qps: dict[str, float]  # variant -> queries per second, single-query loop
    batch_qps: dict[str, float]  # variant -> queries per second, one batch
    recall: dict[str, float]  # variant -> recall@10 of the held-out queries


@dataclass(frozen=True)
class ColdStart:
    open_s: float  # open_services (engines, migrations check)
    start_s: float  # indexing.start: the index loaded (snapshot) or built (database)
    first_query_s: float  # open_services + indexing.start + first find_similar, in the child
    process_s: float  # the whole subprocess, interpreter start and imports included
    graph_s: float | None  # rebuild of an HNSW key: until its graph is in place
    source: str  # where the key came from: snapshot or database
    kind: str  # exact or hnsw, when the first query answered


@dataclass(frozen=True)
class Goal:
    name: str
    value: float
    target: float
    higher_is_better: bool

    @property
    def passed(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value <= self.target


@dataclass
class Result:
    n: int
    dim: int
    queries: int
    machine: dict[str, str]
    m: int = HNSW_M  # HNSW M of both graphs, the service's and raw hnswlib's
    exact_single: dict[str, Latency] = field(default_factory=dict)
    exact_batch: dict[str, float] = field(default_factory=dict)  # variant -> median seconds
    exact_batch_entities: dict[str, float] = field(default_factory=dict)
    exact_recall: dict[str, float] = field(default_factory=dict)
    build: dict[str, float] = field(default_factory=dict)
    hnsw: list[HnswRow] = field(default_factory=list)
    tuner: dict[str, Any] = field(default_factory=dict)
    cold: dict[str, ColdStart] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)

    @property
    def min_exact_recall(self) -> float:
        return min(self.exact_recall.values())

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.goals)


# ---------------------------------------------------------------------------------- setup


def _settings(data_dir: Path, n: int, *, hnsw: bool, m: int = HNSW_M, snapshots: bool = True) -> Settings:
    """Exact keys stay exact (threshold above N); HNSW keys switch at once, with fixed M/ef."""
    return Settings(
        data_dir=data_dir,
        admin_token=ADMIN_TOKEN,
        hnsw_threshold=max(1, n // 10) if hnsw else 10 * n + 1_000,
        hnsw_m=m,
        hnsw_ef_construction=HNSW_EF_CONSTRUCTION,
        hnsw_ef_search=HNSW_EF_BUILD,
        target_recall=GOAL_HNSW_RECALL,
        index_threads=_threads(),
        index_snapshots=snapshots,
        index_load="eager",
    )


def _threads() -> int:
    return max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))


def _track_ids(n: int) -> list[str]:
    return [f"t{i:07d}" for i in range(n)]


def _populate(svc: Services, track_ids: Sequence[str], vectors: np.ndarray) -> None:
    """Feature type, catalog (1 artist, an album per 100 tracks) and vectors, via the services."""
    feature_types.register_feature_type(
        svc, id=TYPE_ID, name="Bench", dimension=vectors.shape[1], applies_to=["track"]
    )
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
    step = svc.settings.max_batch_items
    for start in range(0, len(items), step):
        body: dict[str, list[dict[str, Any]]] = {}
        for kind, item in items[start : start + step]:
            body.setdefault(kind, []).append(item)
        done = catalog.upsert_catalog(svc, **body)
        if done.errors:
            raise RuntimeError(f"catalog: {done.errors[:3]}")
    for start in range(0, len(track_ids), INGEST_BATCH):
        rows = range(start, min(start + INGEST_BATCH, len(track_ids)))
        features = [{"entity_type": "track", "entity_id": track_ids[i], "vector": vectors[i]} for i in rows]
        stored = ingest.ingest_feature_maps(svc, feature_type_id=TYPE_ID, features=features)
        if stored.errors or stored.ingested != len(rows):
            raise RuntimeError(f"ingest: {stored.ingested} of {len(rows)}, errors {stored.errors[:3]}")


def _key(svc: Services) -> KeyIndex:
    feature_type = feature_types.get_feature_type(svc, type_id=TYPE_ID)
    return indexing.key_index(svc, feature_type, EntityType.TRACK)


def _close(svc: Services) -> None:
    indexing.stop(svc)  # stops the worker, snapshots what changed
    svc.dbs.dispose()


def _machine() -> dict[str, str]:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]  # type: ignore[func-returns-value]
        blas_line = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 - informational only
        blas_line = "unknown"
    return {
        "nproc": str(os.cpu_count()),
        "threads": str(_threads()),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "hnswlib": importlib.metadata.version("hnswlib"),
        "blas": blas_line,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# ---------------------------------------------------------------------------------- truth


def _truth(
    matrix: np.ndarray, queries: np.ndarray, k: int, exclude_rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the exact k best per query and the k-th best key, in float64."""
    n = len(matrix)
    margin = min(k + 16, n)
    rows = np.empty((len(queries), k), dtype=np.int64)
    kth = np.empty(len(queries), dtype=np.float64)
    chunk = max(1, 50_000_000 // max(n, 1))
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        keys = q @ matrix.T
        if exclude_rows is not None:
            keys[:, exclude_rows] = -np.inf
        cand = np.argpartition(keys, n - margin, axis=1)[:, n - margin :]
        exact = np.einsum("ij,ikj->ik", q.astype(np.float64), matrix[cand].astype(np.float64))
        if exclude_rows is not None:
            exact[np.isin(cand, exclude_rows)] = -np.inf
        order = np.argsort(-exact, axis=1)[:, :k]
        rows[start : start + len(q)] = np.take_along_axis(cand, order, axis=1)
        kth[start : start + len(q)] = np.take_along_axis(exact, order[:, k - 1 : k], axis=1)[:, 0]
    return rows, kth


def _recall(
    answers: Sequence[Sequence[int]] | np.ndarray,
    matrix: np.ndarray,
    queries: np.ndarray,
    truth: tuple[np.ndarray, np.ndarray],
    k: int,
    exclude_rows: np.ndarray | None = None,
) -> float:
    """Recall@k; an answer tying with the true k-th (within TIE_TOLERANCE) counts as a hit."""
    rows, kth = truth
    excluded = set() if exclude_rows is None else set(exclude_rows.tolist())
    hits = 0
    for i, answer in enumerate(answers):
        want = set(rows[i].tolist())
        for r in list(dict.fromkeys(int(a) for a in answer))[:k]:
            if r in want:
                hits += 1
            elif r not in excluded:
                score = float(queries[i].astype(np.float64) @ matrix[r].astype(np.float64))
                hits += score >= kth[i] - TIE_TOLERANCE
    return hits / (k * len(answers))


# ---------------------------------------------------------------------------------- timing


def _interleaved(
    fns: dict[str, Callable[[int], Any]], count: int, repeats: int, block: int = 1
) -> tuple[dict[str, np.ndarray], dict[str, list[Any]]]:
    """Seconds per call, (repeats, count) per variant, and the first repeat's outputs by query.

    The variants take turns, ``block`` queries each (the order rotating), so a noisy neighbour
    slows every variant alike. At each turn they answer *different* queries (variant j is
    count / len(fns) queries ahead of variant j - 1): the same query twice in a row would find
    its whole search path hot in cache for the second variant. Longer turns let a variant whose
    data no other variant touches (raw hnswlib's own graph) warm its cache as well as the
    others, which share one graph, keep theirs.
    """
    names = list(fns)
    times = {name: np.empty((repeats, count)) for name in names}
    outputs: dict[str, list[Any]] = {name: [None] * count for name in names}
    offsets = [j * count // len(names) for j in range(len(names))]
    clock = time.perf_counter
    gc.collect()
    for r in range(repeats):
        for b, start in enumerate(range(0, count, block)):
            for j in range(len(names)):
                v = (b + j + r) % len(names)
                name, fn = names[v], fns[names[v]]
                for i in range(start, min(start + block, count)):
                    q = (i + offsets[v]) % count
                    t0 = clock()
                    out = fn(q)
                    times[name][r, q] = clock() - t0
                    if r == 0:
                        outputs[name][q] = out
    return times, outputs


def _repeated(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds per variant over ``repeats`` rounds (order rotating); first outputs."""
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, Any] = {}
    for r in range(repeats):
        for j in range(len(names)):
            name = names[(r + j) % len(names)]
            gc.collect()
            t0 = time.perf_counter()
            out = fns[name]()
            times[name].append(time.perf_counter() - t0)
            outputs.setdefault(name, out)
            del out
    return {name: float(np.median(t)) for name, t in times.items()}, outputs


def _latency(times: np.ndarray) -> Latency:
    return Latency(
        float(np.median(np.percentile(times, 50, axis=1))), float(np.median(np.percentile(times, 95, axis=1)))
    )


def _qps(times: np.ndarray) -> float:
    """Median over repeats of queries / total seconds."""
    return float(np.median(times.shape[1] / times.sum(axis=1)))


# ---------------------------------------------------------------------------------- raw baselines


def _raw_top(matrix: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    keys = matrix @ q
    top = np.argpartition(keys, len(keys) - k)[len(keys) - k :]
    return top[np.argsort(-keys[top])]


def _raw_top_batch(
    matrix: np.ndarray, queries: np.ndarray, k: int, exclude_rows: np.ndarray | None = None
) -> np.ndarray:
    keys = queries @ matrix.T
    if exclude_rows is not None:
        keys[:, exclude_rows] = -np.inf
    n = keys.shape[1]
    top = np.argpartition(keys, n - k, axis=1)[:, n - k :]
    picked = np.take_along_axis(keys, top, axis=1)
    return np.take_along_axis(top, np.argsort(-picked, axis=1), axis=1)


# ---------------------------------------------------------------------------------- sections


class _Bench:
    def __init__(self, result: Result, say: Callable[..., None], repeats: int) -> None:
        self.result = result
        self.say = say
        self.repeats = repeats
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}

    def rows(self, entity_ids: Sequence[str]) -> list[int]:
        return [self.row_of[e] for e in entity_ids]

    # ---- exact

    def exact(self, svc: Services, key: KeyIndex, matrix: np.ndarray, held: np.ndarray, single: int) -> None:
        r, k = self.result, K
        truth = _truth(matrix, held, k)
        queries = held[:single]
        as_lists = [q.tolist() for q in queries]

        def service(i: int) -> list[str]:
            found = similarity.find_similar(
                svc, query={"vector": queries[i]}, feature_type=TYPE_ID, limit=k, viewer=ADMIN
            )
            return [item.entity_id for item in found.results]

        def service_list(i: int) -> list[str]:
            found = similarity.find_similar(
                svc, query={"vector": as_lists[i]}, feature_type=TYPE_ID, limit=k, viewer=ADMIN
            )
            return [item.entity_id for item in found.results]

        fns: dict[str, Callable[[int], Any]] = {
            "raw": lambda i: _raw_top(matrix, queries[i], k),
            "index": lambda i: key.search(queries[i], k).ids,
            "service": service,
            "service_list": service_list,
        }
        for name in fns:  # warm-up: first-call costs (imports, allocations) are not the subject
            fns[name](0)
        times, outputs = _interleaved(fns, len(queries), self.repeats)
        r.exact_single = {name: _latency(t) for name, t in times.items()}
        sub = (truth[0][:single], truth[1][:single])
        r.exact_recall["single raw"] = _recall(outputs["raw"], matrix, queries, sub, k)
        for name in ("index", "service", "service_list"):
            answers = [self.rows(ids) for ids in outputs[name]]
            r.exact_recall[f"single {name}"] = _recall(answers, matrix, queries, sub, k)

        # ---- a batch of held-out queries: index level only (find_similar_batch takes entities)
        batch, outs = _repeated(
            {
                "raw": lambda: _raw_top_batch(matrix, held, k),
                "index": lambda: [h.ids for h in key.search_batch(held, k)],
            },
            self.repeats,
        )
        r.exact_batch = batch
        r.exact_recall["batch raw"] = _recall(outs["raw"], matrix, held, truth, k)
        r.exact_recall["batch index"] = _recall(
            [self.rows(ids) for ids in outs["index"]], matrix, held, truth, k
        )

        # ---- a batch of stored entities through find_similar_batch: all of them excluded
        m = min(len(held), MAX_BATCH_QUERIES, len(matrix) // 2)
        picked = np.sort(np.random.default_rng(SEED + 1).choice(len(matrix), size=m, replace=False))
        entity_ids = [self.ids[i] for i in picked]
        refs = [{"entity_type": "track", "entity_id": e} for e in entity_ids]
        stored = matrix[picked]
        excluded = set(entity_ids)

        def service_batch() -> list[list[str]]:
            found = similarity.find_similar_batch(
                svc, queries=refs, feature_type=TYPE_ID, limit_per_query=k, viewer=ADMIN
            )
            return [[item.entity_id for item in items] for items in found.results]

        batch, outs = _repeated(
            {
                "raw": lambda: _raw_top_batch(matrix, stored, k, picked),
                "index": lambda: [h.ids for h in key.search_batch(stored, k, exclude=excluded)],
                "service": service_batch,
            },
            self.repeats,
        )
        r.exact_batch_entities = batch
        etruth = _truth(matrix, stored, k, picked)
        r.exact_recall["entities raw"] = _recall(outs["raw"], matrix, stored, etruth, k, picked)
        for name in ("index", "service"):
            answers = [self.rows(ids) for ids in outs[name]]
            r.exact_recall[f"entities {name}"] = _recall(answers, matrix, stored, etruth, k, picked)

    # ---- HNSW

    def hnsw(
        self, svc: Services, key: KeyIndex, matrix: np.ndarray, held: np.ndarray, *, tune_m: bool
    ) -> None:
        r, k = self.result, K
        graph = key.graph
        assert graph is not None
        threads = _threads()
        gc.collect()
        t0 = time.perf_counter()
        raw = hnswlib.Index(space="ip", dim=matrix.shape[1])
        raw.init_index(max_elements=len(matrix), M=r.m, ef_construction=HNSW_EF_CONSTRUCTION, random_seed=100)
        raw.set_num_threads(threads)
        raw.add_items(matrix, np.arange(len(matrix)), num_threads=threads)
        r.build["raw hnswlib add_items"] = time.perf_counter() - t0
        self.say(f"  raw hnswlib graph built in {r.build['raw hnswlib add_items']:.1f}s")

        same = graph._index  # the service's own hnswlib graph: the wrapper's overhead alone
        label_rows = np.array([self.row_of.get(e, -1) if e is not None else -1 for e in graph._ids])
        truth = _truth(matrix, held, k)

        def service(i: int) -> list[str]:
            found = similarity.find_similar(
                svc, query={"vector": held[i]}, feature_type=TYPE_ID, limit=k, viewer=ADMIN
            )
            return [item.entity_id for item in found.results]

        for ef in EFS:
            with key.lock.write():
                graph.ef_search = ef
            raw.set_ef(ef)  # ``same`` is ``graph._index``: the setter set its ef already
            fns: dict[str, Callable[[int], Any]] = {
                "raw": lambda i: raw.knn_query(held[i], k=k)[0][0],
                "raw same graph": lambda i: same.knn_query(held[i], k=k)[0][0],
                "index": lambda i: key.search(held[i], k).ids,
                "service": service,
            }
            for fn in fns.values():
                fn(0)
            # Whole passes per turn: with shorter turns the three variants that share the service's
            # graph keep it warm in cache for one another while raw hnswlib's own graph goes cold
            # (measured: 1.16x in favour of the shared graph at 50-query turns, 1.00x at 1,000).
            times, outputs = _interleaved(fns, len(held), 2 * self.repeats, block=len(held))
            recall = {
                "raw": _recall(outputs["raw"], matrix, held, truth, k),
                "raw same graph": _recall(
                    [label_rows[a] for a in outputs["raw same graph"]], matrix, held, truth, k
                ),
                "index": _recall([self.rows(ids) for ids in outputs["index"]], matrix, held, truth, k),
                "service": _recall([self.rows(ids) for ids in outputs["service"]], matrix, held, truth, k),
            }
            batch, bouts = _repeated(
                {
                    "raw": lambda: raw.knn_query(held, k=k, num_threads=threads)[0],
                    "raw same graph": lambda: same.knn_query(held, k=k, num_threads=threads)[0],
                    "index": lambda: key.search_batch(held, k),
                },
                3 * self.repeats,  # one batch takes ~0.1 s: cheap to repeat more
            )
            recall["batch index"] = _recall(
                [self.rows(h.ids) for h in bouts["index"]], matrix, held, truth, k
            )
            row = HnswRow(
                ef=ef,
                single_qps={name: _qps(t) for name, t in times.items()},
                batch_qps={name: len(held) / s for name, s in batch.items()},
                recall=recall,
            )
            r.hnsw.append(row)
            self.say(
                f"  ef={ef}: service recall {recall['service']:.4f}, "
                f"single QPS service {row.single_qps['service']:,.0f} / raw {row.single_qps['raw']:,.0f}"
            )

        # ---- the auto-tuner, on the service's graph
        probe = held[: min(200, len(held))]
        with key.lock.write():
            before = graph.ef_search
            t0 = time.perf_counter()
            r.tuner["choose_ef held-out"] = choose_ef(graph, GOAL_HNSW_RECALL, k=k, queries=probe)
            r.tuner["choose_ef own"] = choose_ef(graph, GOAL_HNSW_RECALL, k=k)
            r.tuner["choose_ef seconds"] = time.perf_counter() - t0
            graph.ef_search = before
        if tune_m:
            t0 = time.perf_counter()
            r.tuner["choose_m"] = choose_m(
                matrix,
                Distance.COSINE,
                GOAL_HNSW_RECALL,
                k=k,
                pilot_size=min(20_000, max(100, len(matrix) - 200)),
                ef_construction=HNSW_EF_CONSTRUCTION,
                num_threads=threads,
            )
            r.tuner["choose_m seconds"] = time.perf_counter() - t0


# ---------------------------------------------------------------------------------- cold start


def _cold_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: open the services, start the index, answer one query; timings."""
    t0 = time.perf_counter()
    settings = _settings(
        Path(spec["data_dir"]), spec["n"], hnsw=spec["hnsw"], m=spec["m"], snapshots=spec["snapshots"]
    )
    svc = open_services(settings)
    opened = time.perf_counter() - t0
    try:
        indexing.start(svc)
        started = time.perf_counter() - t0
        q = np.random.default_rng(SEED + 2).standard_normal(spec["dim"]).astype(np.float32)
        found = similarity.find_similar(svc, query={"vector": q}, feature_type=TYPE_ID, limit=K, viewer=ADMIN)
        first = time.perf_counter() - t0
        if len(found.results) != min(K, spec["n"]):
            raise RuntimeError(f"first query returned {len(found.results)} results")
        key = _key(svc)
        status = key.status()
        graph_s = None
        if spec["wait_graph"]:
            deadline = time.monotonic() + GRAPH_TIMEOUT_S
            while key.graph is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("graph build timed out")
                time.sleep(0.02)
            graph_s = time.perf_counter() - t0
        return {
            "open_s": opened,
            "start_s": started - opened,
            "first_query_s": first,
            "graph_s": graph_s,
            "source": status["source"],
            "kind": status["kind"],
        }
    finally:
        svc.index.stop()
        svc.dbs.dispose()


def _cold_start(
    data_dir: Path, n: int, dim: int, *, hnsw: bool, m: int, snapshots: bool, wait_graph: bool, repeats: int
) -> ColdStart:
    spec = {
        "data_dir": str(data_dir),
        "n": n,
        "dim": dim,
        "m": m,
        "hnsw": hnsw,
        "snapshots": snapshots,
        "wait_graph": wait_graph,
    }
    runs = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "bench.search", "--cold-child", json.dumps(spec)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"cold-start child failed ({done.returncode}):\n{done.stderr[-3000:]}")
        runs.append((json.loads(done.stdout.strip().splitlines()[-1]), wall))
    graph = [o["graph_s"] for o, _ in runs if o["graph_s"] is not None]
    return ColdStart(
        open_s=float(np.median([o["open_s"] for o, _ in runs])),
        start_s=float(np.median([o["start_s"] for o, _ in runs])),
        first_query_s=float(np.median([o["first_query_s"] for o, _ in runs])),
        process_s=float(np.median([w for _, w in runs])),
        graph_s=float(np.median(graph)) if graph else None,
        source=runs[0][0]["source"],
        kind=runs[0][0]["kind"],
    )


# ---------------------------------------------------------------------------------- run


def _wait_for_graph(key: KeyIndex) -> None:
    """Until the worker has swapped the graph in and saved its snapshot (so nothing runs behind
    the timed sections)."""
    deadline = time.monotonic() + GRAPH_TIMEOUT_S
    while key.graph is None or key.building or key.saved is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the service's graph build timed out")
        time.sleep(0.05)


def run(
    *,
    n: int = 100_000,
    dim: int = 128,
    queries: int = 1_000,
    single: int = 300,
    repeats: int = 3,
    m: int = HNSW_M,
    skip_exact: bool = False,
    skip_hnsw: bool = False,
    tune_m: bool = True,
    cold: bool = True,
    cold_kinds: Sequence[str] = ("exact", "hnsw"),
    cold_repeats: int = 3,
    data_dir: Path | None = None,
    out: Any = sys.stdout,
) -> Result:
    """Set up, time every comparison, print the report; the figures."""
    if n < 2 * K + 2 or dim < 2 or queries < 1 or single < 1 or repeats < 1 or cold_repeats < 1 or m < 2:
        raise ValueError("need n >= 22, dim >= 2, m >= 2 and positive counts")
    started = time.perf_counter()
    cleanup = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="fingerprints-search-")) if data_dir is None else data_dir / f"n{n}"
    exact_dir, hnsw_dir = root / "exact", root / "hnsw"
    for d in (exact_dir, hnsw_dir):
        if d.exists() and any(d.iterdir()):
            raise SystemExit(f"{d} is not empty: give a fresh --data-dir")

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    result = Result(n=n, dim=dim, queries=queries, machine=_machine(), m=m)
    bench = _Bench(result, say, repeats)
    try:
        say(
            f"search benchmark: n={n:,} dim={dim} M={m} queries={queries:,} "
            f"(exact single-query latency over {min(single, queries)}), repeats={repeats}; "
            f"data dir {root}{' (temporary)' if cleanup else ''}"
        )
        # ---- setup, not timed
        t0 = time.perf_counter()
        data = clustered(n + queries, dim, seed=SEED)
        base, held = data[:n], np.ascontiguousarray(data[n:])
        track_ids = _track_ids(n)
        svc = open_services(_settings(exact_dir, n, hnsw=False))
        try:
            _populate(svc, track_ids, base)
            result.phases["setup: catalog + ingest"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            indexing.start(svc)
            key = _key(svc)
            result.phases["setup: exact index from database"] = time.perf_counter() - t1
            ids, _ = key.items()
            # The raw baselines read the very matrix the index searches (same memory, same cache).
            matrix = key.exact._matrix[: len(ids)]
            if ids != track_ids:
                raise RuntimeError("the index holds other ids than were ingested")
            bench.ids = ids
            bench.row_of = {e: i for i, e in enumerate(ids)}
            say(
                f"  setup: {n:,} tracks ingested in {result.phases['setup: catalog + ingest']:.1f}s (untimed)"
            )

            if not skip_exact:
                t1 = time.perf_counter()
                bench.exact(svc, key, matrix, held, min(single, queries))
                result.phases["exact section"] = time.perf_counter() - t1
                say(f"  exact section done in {result.phases['exact section']:.1f}s")
            indexing.save_snapshots(svc)
        finally:
            _close(svc)

        if not skip_hnsw:
            shutil.copytree(exact_dir, hnsw_dir, ignore=shutil.ignore_patterns("index"))
            svc = open_services(_settings(hnsw_dir, n, hnsw=True, m=m))
            try:
                t1 = time.perf_counter()
                indexing.start(svc)
                loaded = time.perf_counter() - t1
                key = _key(svc)
                deadline = time.monotonic() + GRAPH_TIMEOUT_S
                while key.graph is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the service's graph build timed out")
                    time.sleep(0.01)
                result.build["service graph (build_tuned_graph)"] = time.perf_counter() - t1 - loaded
                if key.graph.M != m:  # the comparison holds M equal on both sides
                    raise RuntimeError(f"the service built its graph with M={key.graph.M}, not {m}")
                _wait_for_graph(key)
                say(f"  service graph built in {result.build['service graph (build_tuned_graph)']:.1f}s")
                t1 = time.perf_counter()
                bench.hnsw(svc, key, matrix, held, tune_m=tune_m)
                result.phases["hnsw section"] = time.perf_counter() - t1
            finally:
                _close(svc)

        if cold:
            t1 = time.perf_counter()
            cases = [("exact", exact_dir, False)] + ([] if skip_hnsw else [("hnsw", hnsw_dir, True)])
            cases = [case for case in cases if case[0] in cold_kinds]
            for kind, directory, hnsw in cases:
                for snapshots in (True, False):
                    name = f"{kind}, {'snapshot' if snapshots else 'database'}"
                    result.cold[name] = _cold_start(
                        directory,
                        n,
                        dim,
                        hnsw=hnsw,
                        m=m,
                        snapshots=snapshots,
                        wait_graph=hnsw and not snapshots,
                        repeats=cold_repeats,
                    )
            result.phases["cold-start section"] = time.perf_counter() - t1

        result.machine["loadavg after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        result.phases["total"] = time.perf_counter() - started
        _goals(result)
        _report(result, say)
        return result
    finally:
        if cleanup:
            shutil.rmtree(root, ignore_errors=True)


def _goals(r: Result) -> None:
    if r.exact_single:
        _exact_goals(r)
    if r.hnsw:
        _hnsw_goals(r)


def _exact_goals(r: Result) -> None:
    s = r.exact_single
    r.goals.append(
        Goal(
            "exact single p50: service / raw numpy", s["service"].p50 / s["raw"].p50, GOAL_EXACT_SINGLE, False
        )
    )
    r.goals.append(
        Goal("exact single p50: index / raw numpy", s["index"].p50 / s["raw"].p50, GOAL_EXACT_SINGLE, False)
    )
    b, e = r.exact_batch, r.exact_batch_entities
    r.goals.append(Goal("exact batch speed-up: index vs raw numpy", b["raw"] / b["index"], GOAL_BATCH, True))
    r.goals.append(
        Goal(
            "exact batch speed-up: service (entities) vs raw numpy", e["raw"] / e["service"], GOAL_BATCH, True
        )
    )


def _hnsw_goals(r: Result) -> None:
    qualifying = [row for row in r.hnsw if row.recall["service"] >= GOAL_HNSW_RECALL]
    if not qualifying:
        best = max(row.recall["service"] for row in r.hnsw)
        r.goals.append(
            Goal(f"HNSW recall@10 >= {GOAL_HNSW_RECALL} at some ef in {EFS}", best, GOAL_HNSW_RECALL, True)
        )
    for row in qualifying:
        for name in ("service", "index"):
            ratio = row.single_qps[name] / row.single_qps["raw"]
            r.goals.append(
                Goal(f"HNSW ef={row.ef} single QPS: {name} / raw hnswlib", ratio, GOAL_HNSW_QPS, True)
            )
        ratio = row.batch_qps["index"] / row.batch_qps["raw"]
        r.goals.append(Goal(f"HNSW ef={row.ef} batch QPS: index / raw hnswlib", ratio, GOAL_HNSW_QPS, True))


def _us(seconds: float) -> str:
    return f"{1e6 * seconds:,.0f}"


def _report_exact(r: Result, say: Callable[..., None]) -> None:
    say()
    raw = r.exact_single["raw"]
    say("exact, single query (latency, us; p50/p95 = median over repeats)")
    say(f"  {'variant':44}{'p50':>9}{'p95':>9}{'p50 / raw':>11}{'recall@10':>11}")
    labels = {
        "raw": "raw numpy  m @ q + argpartition + sort",
        "index": "KeyIndex.search",
        "service": "find_similar (vector as ndarray)",
        "service_list": "find_similar (vector as list, as REST)",
    }
    for name, label in labels.items():
        lat = r.exact_single[name]
        say(
            f"  {label:44}{_us(lat.p50):>9}{_us(lat.p95):>9}{lat.p50 / raw.p50:>10.2f}x"
            f"{r.exact_recall[f'single {name}']:>11.4f}"
        )
    say()
    say(f"exact, batch of {r.queries:,} held-out queries (median seconds)")
    say(f"  {'variant':44}{'seconds':>9}{'q/s':>10}{'speed-up':>11}{'recall@10':>11}")
    b = r.exact_batch
    for name, label in (
        ("raw", "raw numpy  Q @ M.T + argpartition(axis=1)"),
        ("index", "KeyIndex.search_batch"),
    ):
        say(
            f"  {label:44}{b[name]:>9.3f}{r.queries / b[name]:>10,.0f}{b['raw'] / b[name]:>10.2f}x"
            f"{r.exact_recall[f'batch {name}']:>11.4f}"
        )
    e = r.exact_batch_entities
    m_entities = min(r.queries, MAX_BATCH_QUERIES, r.n // 2)
    say(f"exact, batch of {m_entities:,} stored entities, all of them excluded from every list")
    for name, label in (
        ("raw", "raw numpy  (columns of the queries masked)"),
        ("index", "KeyIndex.search_batch(exclude=...)"),
        ("service", "find_similar_batch"),
    ):
        say(
            f"  {label:44}{e[name]:>9.3f}{'':>10}{e['raw'] / e[name]:>10.2f}x"
            f"{r.exact_recall[f'entities {name}']:>11.4f}"
        )


def _report(r: Result, say: Callable[..., None]) -> None:
    m = r.machine
    say()
    say(f"== search benchmark: clustered data, n={r.n:,}, dim={r.dim}, k={K}, {r.queries:,} held-out queries")
    say(
        f"machine: nproc {m['nproc']} (threads used {m['threads']}), python {m['python']}, "
        f"numpy {m['numpy']}, hnswlib {m['hnswlib']}"
    )
    say(
        f"BLAS: {m['blas']}; OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE']}; "
        f"loadavg before {m['loadavg']}, after {m.get('loadavg after', '?')}"
    )
    if r.exact_single:
        _report_exact(r, say)
    if r.hnsw:
        say()
        builds = ", ".join(f"{k} {v:.1f}" for k, v in r.build.items())
        say(
            f"HNSW (M={r.m} for both graphs, ef_construction={HNSW_EF_CONSTRUCTION}, "
            f"{m['threads']} threads); "
            f"build s: {builds}"
        )
        say(
            f"  {'ef':>4}  {'variant':30}{'single q/s':>11}{'/ raw':>8}{'batch q/s':>11}{'/ raw':>8}"
            f"{'recall@10':>16}"
        )
        for row in r.hnsw:
            for name, label in (
                ("raw", "raw hnswlib (own graph)"),
                ("raw same graph", "raw hnswlib (service's graph)"),
                ("index", "KeyIndex.search[_batch]"),
                ("service", "find_similar"),
            ):
                single = row.single_qps[name]
                batch = row.batch_qps.get(name)
                batch_cols = (
                    f"{batch:>11,.0f}{batch / row.batch_qps['raw']:>7.2f}x" if batch else f"{'':>11}{'':>8}"
                )
                rec = row.recall[name]
                if name == "index":
                    rec_s = f"{rec:.4f}/{row.recall['batch index']:.4f}"
                else:
                    rec_s = f"{rec:.4f}"
                say(
                    f"  {row.ef:>4}  {label:30}{single:>11,.0f}{single / row.single_qps['raw']:>7.2f}x"
                    f"{batch_cols}{rec_s:>16}"
                )
        t = r.tuner
        held_ef, held_recall = t["choose_ef held-out"]
        own_ef, own_recall = t["choose_ef own"]
        say(
            f"  auto-tuner, target {GOAL_HNSW_RECALL}: choose_ef = {held_ef} (recall {held_recall:.4f}) "
            f"with 200 held-out probes, {own_ef} (recall {own_recall:.4f}) with own-vector probes "
            f"({t['choose_ef seconds']:.1f}s)"
        )
        if "choose_m" in t:
            say(
                f"  choose_m (pilot 20,000, candidates 16/32/48) = {t['choose_m']} "
                f"({t['choose_m seconds']:.1f}s)"
            )

    if r.cold:
        say()
        say(
            "cold start, fresh process (median of runs; page cache warm): "
            "open_services + indexing.start + first find_similar"
        )
        say(
            f"  {'key, loaded from':20}{'open s':>8}{'start s':>9}{'first query s':>15}{'graph s':>9}"
            f"{'process s':>11}  source/kind"
        )
        for name, c in r.cold.items():
            graph = f"{c.graph_s:>9.2f}" if c.graph_s is not None else f"{'':>9}"
            say(
                f"  {name:20}{c.open_s:>8.2f}{c.start_s:>9.2f}{c.first_query_s:>15.2f}{graph}"
                f"{c.process_s:>11.2f}  {c.source}/{c.kind}"
            )
        for kind in ("exact", "hnsw"):
            snap, db = r.cold.get(f"{kind}, snapshot"), r.cold.get(f"{kind}, database")
            if snap and db:
                line = (
                    f"  {kind}: rebuild / snapshot, first query {db.first_query_s / snap.first_query_s:.2f}x"
                )
                if db.graph_s is not None:
                    line += f"; until the graph serves again {db.graph_s / snap.first_query_s:.2f}x"
                say(line)

    say()
    say("goals")
    for g in r.goals:
        op = ">=" if g.higher_is_better else "<="
        say(f"  {g.name:58}{g.value:>7.2f}  {op} {g.target:<5}{'PASS' if g.passed else 'FAIL':>6}")
    say()
    say("phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in r.phases.items()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.search",
        description="Similarity search: service layer vs raw numpy and raw hnswlib, on clustered data.",
    )
    parser.add_argument("--n", type=int, default=100_000, help="indexed vectors (default 100000)")
    parser.add_argument("--dim", type=int, default=128, help="vector dimension (default 128)")
    parser.add_argument("--queries", type=int, default=1_000, help="held-out queries (default 1000)")
    parser.add_argument(
        "--single", type=int, default=300, help="queries for exact single latency (default 300)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; medians reported (default 3)")
    parser.add_argument("--big", action="store_true", help="also run N = 1,000,000 (takes long)")
    parser.add_argument(
        "--m",
        type=int,
        default=HNSW_M,
        help=f"HNSW M of the service's graph and raw hnswlib's (default {HNSW_M})",
    )
    parser.add_argument(
        "--skip-exact", action="store_true", help="no exact section (HNSW and cold start only)"
    )
    parser.add_argument("--skip-hnsw", action="store_true", help="exact and cold start only (quick)")
    parser.add_argument("--skip-choose-m", action="store_true", help="do not run choose_m (3 pilot builds)")
    parser.add_argument("--skip-cold", action="store_true", help="no cold-start subprocesses")
    parser.add_argument(
        "--cold-repeats", type=int, default=3, help="subprocess runs per cold start (default 3)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the data goes (kept; subdir n<N>); default a temp dir",
    )
    parser.add_argument("--cold-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold_child:
        print(json.dumps(_cold_child(json.loads(args.cold_child))), flush=True)
        return 0
    for n in [args.n] + ([1_000_000] if args.big and args.n != 1_000_000 else []):
        run(
            n=n,
            dim=args.dim,
            queries=args.queries,
            single=args.single,
            repeats=args.repeats,
            m=args.m,
            skip_exact=args.skip_exact,
            skip_hnsw=args.skip_hnsw,
            tune_m=not args.skip_choose_m,
            cold=not args.skip_cold,
            cold_repeats=args.cold_repeats,
            data_dir=args.data_dir,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
