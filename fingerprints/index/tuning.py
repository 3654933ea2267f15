"""Recall is a setting, not a knob hunt: measure recall@k against brute force and pick M and ef.

Two kinds of probe queries:

- the index's own vectors (the default), each excluding itself from truth and answer. This
  is a "similar to entity X" query. It is optimistic for any other query vector: the search
  reaches the query's own node, whose graph edges were built from its near neighbours.
- held-out ``queries`` that are not in the index: a new vector, or an entity of another
  entity type. On hard data these need a noticeably larger ef for the same recall, so a
  caller that can hold a few hundred vectors out of a build should tune with them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fingerprints.domain import Distance
from fingerprints.index.base import prepare
from fingerprints.index.hnsw import HnswIndex

log = logging.getLogger(__name__)

# Steps of about 1/8 above 64: ef is the search's cost, so a coarse grid (96 -> 128) would
# overspend up to a third where a step in between already meets the target.
EF_CANDIDATES: tuple[int, ...] = (10, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 112, 128, 144, 160)
EF_CANDIDATES += (176, 192, 224, 256, 288, 320, 384, 448, 512, 640, 768, 896, 1024)
M_CANDIDATES = (16, 32, 48, 64)  # high-dimensional data (embeddings) often wants 48-64
TRUTH_CHUNK = 50_000  # stored rows per matrix product: 200 queries x 50k keys = 40 MB
TIMING_REPEATS = 3


@dataclass(frozen=True, slots=True)
class _Probe:
    """Queries with their exact k nearest ids, computed once and reused for every ef."""

    queries: np.ndarray
    self_ids: list[str] | None  # own-vector probes: the id each query must not return
    truth: list[set[str]]
    k: int


def measure_recall(
    index: HnswIndex, *, k: int = 10, sample: int = 200, seed: int = 0, queries: np.ndarray | None = None
) -> float:
    """Recall@k at the index's current ef, over ``sample`` own vectors or the given held-out ``queries``."""
    return _recall(index, _probe(index, k=k, sample=sample, seed=seed, queries=queries))


def choose_ef(
    index: HnswIndex,
    target: float,
    *,
    k: int = 10,
    sample: int = 200,
    candidates: Sequence[int] = EF_CANDIDATES,
    seed: int = 0,
    queries: np.ndarray | None = None,
) -> tuple[int, float]:
    """Set and return the smallest ef (>= k) reaching ``target`` recall@k; else the largest tried."""
    probe = _probe(index, k=k, sample=sample, seed=seed, queries=queries)
    efs = sorted({int(ef) for ef in candidates if ef >= k}) or [k]
    recall = 0.0
    for ef in efs:
        index.ef_search = ef
        recall = _recall(index, probe)
        log.debug("ef=%d: recall@%d=%.4f", ef, k, recall)
        if recall >= target:
            return ef, recall
    return efs[-1], recall


def choose_m(
    vectors: np.ndarray,
    distance: Distance,
    target: float,
    *,
    k: int = 10,
    pilot_size: int = 20_000,
    candidates: Sequence[int] = M_CANDIDATES,
    ef_construction: int = 200,
    seed: int = 0,
    sample: int = 200,
    num_threads: int = 1,
) -> int:
    """The M whose pilot graph reaches ``target`` recall@k at the lowest measured query time.

    Each pilot is built on a random sample of ``vectors`` and tuned with ``choose_ef`` on
    held-out rows of the same sample (the honest probe: they are not in the graph). Cost is
    the best of a few wall-clock timings of one single-threaded batch search at the chosen ef;
    a larger M makes each hop dearer and the needed ef smaller, which a formula like ``ef * M``
    only guesses at. If no M reaches the target, the one with the highest recall wins.
    """
    rows = np.random.default_rng(seed).permutation(len(vectors))[: pilot_size + sample]
    held = min(sample, len(rows) // 10)
    picked = prepare(vectors[rows], distance)
    queries, pilot = picked[:held], picked[held:]
    ids = [str(i) for i in range(len(pilot))]
    results: list[tuple[bool, float, float, int]] = []  # (reached target, recall, cost, M)
    for m in candidates:
        graph = HnswIndex(
            pilot.shape[1], distance, M=m, ef_construction=ef_construction, capacity=len(pilot),
            num_threads=num_threads,
        )  # fmt: skip
        graph.upsert_many(ids, pilot)
        ef, recall = choose_ef(graph, target, k=k, seed=seed, queries=queries if held else None)
        graph.num_threads = 1  # no thread start-up in the timing; the same for every M
        cost = min(_time_search(graph, queries if held else pilot[:sample], k) for _ in range(TIMING_REPEATS))
        log.info("choose_m: M=%d ef=%d recall@%d=%.4f %.1f us/query", m, ef, k, recall, 1e6 * cost)
        results.append((recall >= target, recall, cost, m))
    reached = [r for r in results if r[0]]
    if reached:
        return min(reached, key=lambda r: r[2])[3]
    return max(results, key=lambda r: r[1])[3]


def _time_search(graph: HnswIndex, queries: np.ndarray, k: int) -> float:
    """Seconds per query of one batch search."""
    started = time.perf_counter()
    graph.search_batch(queries, k)
    return (time.perf_counter() - started) / max(len(queries), 1)


def _probe(index: HnswIndex, *, k: int, sample: int, seed: int, queries: np.ndarray | None) -> _Probe:
    ids, matrix = index.items()
    self_ids: list[str] | None = None
    if queries is None:
        rows = np.random.default_rng(seed).choice(len(ids), size=min(sample, len(ids)), replace=False)
        probes, self_rows = matrix[rows], rows
        self_ids = [ids[r] for r in rows]
    else:
        probes, self_rows = prepare(queries, index.distance).reshape(-1, index.dimension), None
    k = min(k, len(ids) - (self_ids is not None))
    best = _exact_top(matrix, probes, k, index.distance, self_rows)
    return _Probe(probes, self_ids, [{ids[r] for r in row} for row in best], k)


def _recall(index: HnswIndex, probe: _Probe) -> float:
    if probe.k <= 0 or not len(probe.queries):
        return 1.0
    if probe.self_ids is None:
        answers = [hits.ids for hits in index.search_batch(probe.queries, probe.k)]
    else:  # ask one more and drop the query itself (it may be missing: the search is approximate)
        batch = index.search_batch(probe.queries, probe.k + 1)
        pairs = zip(batch, probe.self_ids, strict=True)
        answers = [[i for i in hits.ids if i != own][: probe.k] for hits, own in pairs]
    found = sum(len(truth.intersection(answer)) for truth, answer in zip(probe.truth, answers, strict=True))
    return found / (probe.k * len(probe.queries))


def _exact_top(
    matrix: np.ndarray, queries: np.ndarray, k: int, distance: Distance, self_rows: np.ndarray | None
) -> np.ndarray:
    """Rows of the k best stored vectors per query, a chunk of rows at a time (bounded memory)."""
    best_keys = np.empty((len(queries), 0), dtype=np.float32)
    best_rows = np.empty((len(queries), 0), dtype=np.int64)
    if k <= 0:
        return best_rows
    for start in range(0, len(matrix), TRUTH_CHUNK):
        block = matrix[start : start + TRUTH_CHUNK]
        keys = queries @ block.T
        if distance is Distance.EUCLIDEAN:  # -|q - x|^2 up to the per-query constant |q|^2
            keys = 2 * keys - np.einsum("ij,ij->i", block, block)
        if self_rows is not None:
            inside = np.flatnonzero((self_rows >= start) & (self_rows < start + len(block)))
            keys[inside, self_rows[inside] - start] = -np.inf
        rows = np.broadcast_to(np.arange(start, start + len(block)), keys.shape)
        keys, rows = _top(keys, rows, k)
        keys, rows = _top(np.hstack([best_keys, keys]), np.hstack([best_rows, rows]), k)
        best_keys, best_rows = keys, rows
    return best_rows


def _top(keys: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if keys.shape[1] <= k:
        return keys, rows
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    return np.take_along_axis(keys, top, axis=1), np.take_along_axis(rows, top, axis=1)
