"""The similarity index of spec §5.4: one ``KeyIndex`` per (feature type, entity type).

A key is exact (one numpy matrix) up to ``hnsw_threshold`` vectors. Above it, an HNSW graph is
built in the background while the exact index keeps serving; once built, writes land in a
small exact *fresh* tier that every query also scans, and the worker moves them into the graph
in short steps. So writes never wait for the graph, and a vector is searchable as soon as
its write returns.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from fingerprints.domain import Distance, EntityType
from fingerprints.index.base import Hits
from fingerprints.index.exact import ExactIndex
from fingerprints.index.hnsw import HnswIndex
from fingerprints.index.locks import RWLock
from fingerprints.index.tuning import choose_ef, choose_m, measure_recall

log = logging.getLogger(__name__)

DRAIN_STEP = 512  # fresh vectors moved into the graph per write-locked step
# Niceness of the worker thread (Linux; hnswlib's build threads inherit it): graph builds and
# drains are background work and yield the CPU to requests, so an ingest that crosses the
# HNSW threshold is still acknowledged at storage speed on a small machine.
WORKER_NICENESS = 10


class IndexKey(NamedTuple):
    """A tuple, not a dataclass: every search builds one and looks it up (hash and equality in C)."""

    feature_type_id: str
    entity_type: EntityType

    def __str__(self) -> str:
        return f"{self.feature_type_id}/{self.entity_type.value}"


@dataclass(frozen=True, slots=True)
class IndexParams:
    hnsw_threshold: int = 50_000
    m: int | None = None
    ef_construction: int = 200
    ef_search: int | None = None
    target_recall: float = 0.95
    threads: int = 2
    build_quiet_s: float = 1.0  # seconds without writes to a key before its first graph build


def merge_hits(parts: Sequence[Hits], k: int) -> Hits:
    """The k best of several result lists (by score, then id), each id once."""
    parts = [p for p in parts if len(p)]
    if len(parts) == 1:
        return parts[0] if len(parts[0]) <= k else take(parts[0], list(range(k)))
    if not parts:
        return Hits([], np.empty(0, np.float32))
    ids = [i for p in parts for i in p.ids]
    scores = np.concatenate([p.scores for p in parts])
    distances = None if parts[0].distances is None else np.concatenate([p.distances for p in parts])  # type: ignore[misc]
    merged = Hits(ids, scores, distances)
    seen: set[str] = set()
    order = []
    for i in sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i])):
        if ids[i] not in seen:
            seen.add(ids[i])
            order.append(i)
            if len(order) == k:
                break
    return take(merged, order)


def take(hits: Hits, order: list[int]) -> Hits:
    return Hits(
        [hits.ids[i] for i in order],
        hits.scores[order],
        None if hits.distances is None else hits.distances[order],
    )


class KeyIndex:
    """All vectors of one (feature type, entity type); safe for concurrent readers and writers."""

    def __init__(self, key: IndexKey, dimension: int, distance: Distance, params: IndexParams) -> None:
        self.key = key
        self.dimension = dimension
        self.distance = distance
        self.params = params
        self.lock = RWLock()
        self.exact = ExactIndex(dimension, distance)  # everything, or the fresh tier once a graph exists
        self.graph: HnswIndex | None = None
        self.recall: float | None = None
        self.building = False
        self.source = "database"  # or "snapshot": where this index was loaded from
        self.saved: Any = None  # the watermark of the last snapshot written from it
        self._changes: list[tuple[str, list[str], np.ndarray | None]] | None = None
        self.last_write = 0.0  # time.monotonic() of the last upsert or removal

    def __len__(self) -> int:
        with self.lock.read():
            return len(self.exact) + (len(self.graph) if self.graph is not None else 0)

    # ------------------------------------------------------------------ reads

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        exclude: Collection[str] = (),
        min_score: float | None = None,
        prepared: bool = False,
    ) -> Hits:
        """``prepared``: the query is already as ``prepare_query`` makes it (both tiers take it
        as is, so the results are those of the raw query, bit for bit)."""
        with self.lock.read():
            graph, exact = self.graph, self.exact
            if graph is None:
                return exact.search(query, k, exclude=exclude, min_score=min_score, prepared=prepared)
            main = graph.search(query, k, exclude=exclude, min_score=min_score, prepared=prepared)
            if not exact._ids:  # the fresh tier is empty most of the time (its list read as gather does)
                return main
            fresh = exact.search(query, k, exclude=exclude, min_score=min_score, prepared=prepared)
        return merge_hits([fresh, main], k)

    def search_batch(
        self, queries: np.ndarray, k: int, *, exclude: Collection[str] = (), min_score: float | None = None
    ) -> list[Hits]:
        with self.lock.read():
            if self.graph is None:
                return self.exact.search_batch(queries, k, exclude=exclude, min_score=min_score)
            main = self.graph.search_batch(queries, k, exclude=exclude, min_score=min_score)
            if not len(self.exact):
                return main
            fresh = self.exact.search_batch(queries, k, exclude=exclude, min_score=min_score)
        return [merge_hits([f, m], k) for f, m in zip(fresh, main, strict=True)]

    def get(self, entity_id: str) -> np.ndarray | None:
        with self.lock.read():
            vector = self.exact.get(entity_id)
            if vector is None and self.graph is not None:
                vector = self.graph.get(entity_id)
            return vector

    @contextmanager
    def gather(
        self, entity_ids: Sequence[str], *, graph_limit: int | None = None, lend: bool = True
    ) -> Iterator[tuple[np.ndarray, np.ndarray] | None]:
        """The stored vectors of some entities (unit length under cosine), for the ``with``
        block only: ``(rows, matrix)``, the vector of ``entity_ids[i]`` being
        ``matrix[rows[i]]``, -1 for none. None when more than ``graph_limit`` of the ids are not
        in the exact tier (hnswlib copies a vector out of its graph in about 10 us).

        ``lend``: when every found id is in the exact tier, ``matrix`` is that tier's own
        matrix (read-only) and the read lock is held until the block ends, so a reader that
        aggregates a million members reads each vector once, where a copy first would write
        and read them all again. Writers wait for the block: keep it to one pass over the
        members. Otherwise the found vectors are copied, each once, in slot order, and the
        block runs without the lock."""
        with self.lock.read():
            # Slots: exact rows first, graph labels after them. An id is in one tier at most (an
            # upsert takes it out of the graph). The tiers' own maps are read: this class owns them.
            exact, graph = self.exact, self.graph
            slots = np.fromiter(
                map(exact._rows.get, entity_ids, itertools.repeat(-1)), np.int64, len(entity_ids)
            )
            base = len(exact)
            missing = np.flatnonzero(slots < 0) if graph is not None and len(graph) else np.empty(0, np.int64)
            if lend and not len(missing):
                matrix = exact._matrix[:base]
                matrix.flags.writeable = False  # a view: the tier's own array stays writable
                yield slots, matrix
                return
            if graph_limit is not None and len(missing) > graph_limit:
                yield None
                return
            if len(missing):
                assert graph is not None
                labels = graph._labels.get
                slots[missing] = [
                    base + label if (label := labels(entity_ids[i])) is not None else -1
                    for i in missing.tolist()
                ]
            # Each slot once, in slot order (a pass over the stored matrix, not random reads).
            present = slots >= 0
            used = np.zeros(base + (graph._used if graph is not None else 0), dtype=bool)
            used[slots[present]] = True
            wanted = np.flatnonzero(used)
            in_exact = wanted[wanted < base]
            parts = [exact._matrix[in_exact]]
            if len(in_exact) < len(wanted):
                assert graph is not None
                from_graph = graph._index.get_items(wanted[len(in_exact) :] - base, return_type="numpy")
                parts.append(np.asarray(from_graph, dtype=np.float32))
        copied = np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts), np.float32)
        rows = np.full(len(slots), -1, dtype=np.int64)
        rows[present] = (np.cumsum(used) - 1)[slots[present]]
        yield rows, copied

    def items(self) -> tuple[list[str], np.ndarray]:
        with self.lock.read():
            ids, matrix = self.exact.items()
            if self.graph is None:
                return ids, matrix
            graph_ids, graph_matrix = self.graph.items()
            return graph_ids + ids, np.concatenate([graph_matrix, matrix])

    # ------------------------------------------------------------------ writes

    def upsert_many(self, entity_ids: Sequence[str], vectors: np.ndarray) -> None:
        ids = list(entity_ids)
        with self.lock.write():
            self.last_write = time.monotonic()
            if self.graph is not None:
                for entity_id in ids:
                    self.graph.remove(entity_id)  # mark_deleted: the fresh tier now holds it
            self.exact.upsert_many(ids, vectors)
            if self._changes is not None:
                self._changes.append(("upsert", ids, np.array(vectors, dtype=np.float32)))

    def remove_many(self, entity_ids: Collection[str]) -> int:
        ids = list(entity_ids)
        with self.lock.write():
            self.last_write = time.monotonic()
            removed = self.exact.remove_many(ids)
            if self.graph is not None:
                removed += sum(self.graph.remove(entity_id) for entity_id in ids)
            if self._changes is not None:
                self._changes.append(("remove", ids, None))
        return removed

    # ------------------------------------------------------------------ background work

    def wants_graph(self) -> bool:
        """Above the threshold, without a graph, and quiet: a key in the middle of a bulk ingest
        gets its graph once the burst ends (built once over everything, and not competing with
        the writes for the CPU), meanwhile the exact index answers."""
        with self.lock.read():
            return (
                self.graph is None
                and not self.building
                and len(self.exact) > self.params.hnsw_threshold
                and time.monotonic() - self.last_write >= self.params.build_quiet_s
            )

    def build_graph(self) -> None:
        """Build an HNSW graph from a copy of the vectors while the exact index keeps serving,
        then swap it in, replaying the writes that happened meanwhile into the fresh tier."""
        with self.lock.write():
            ids, vectors = self.exact.items()
            self._changes = []
            self.building = True
        try:
            started = time.perf_counter()
            graph, recall = build_tuned_graph(ids, vectors, self.distance, self.params)
            with self.lock.write():
                fresh = ExactIndex(self.dimension, self.distance)
                for op, changed, changed_vectors in self._changes:
                    for entity_id in changed:
                        graph.remove(entity_id)
                    if op == "upsert":
                        assert changed_vectors is not None
                        fresh.upsert_many(changed, changed_vectors)
                    else:
                        fresh.remove_many(changed)
                self.exact, self.graph, self.recall = fresh, graph, recall
            log.info(
                "index %s: HNSW graph of %d vectors (M=%d, ef=%d, recall@10=%.3f) built in %.1fs",
                self.key, len(ids), graph.M, graph.ef_search, recall, time.perf_counter() - started,
            )  # fmt: skip
        finally:
            with self.lock.write():
                self._changes = None
                self.building = False

    def drain(self, limit: int = DRAIN_STEP) -> int:
        """Move up to ``limit`` fresh vectors into the graph; how many were moved."""
        with self.lock.write():
            if self.graph is None or not len(self.exact):
                return 0
            ids, vectors = self.exact.head(limit)
            self.graph.upsert_many(ids, vectors)
            self.exact.remove_many(ids)
            return len(ids)

    def has_fresh(self) -> bool:
        with self.lock.read():
            return self.graph is not None and len(self.exact) > 0

    def status(self) -> dict[str, Any]:
        with self.lock.read():
            graph = self.graph
            return {
                "kind": "hnsw" if graph is not None else "exact",
                "size": len(self.exact) + (len(graph) if graph is not None else 0),
                "fresh": len(self.exact) if graph is not None else 0,
                "building": self.building,
                "source": self.source,
                "recall": self.recall,
                "m": graph.M if graph is not None else None,
                "ef_search": graph.ef_search if graph is not None else None,
            }


HELD_OUT = 200  # vectors kept out of the build to tune ef on queries the graph has not seen


def build_tuned_graph(
    ids: list[str], vectors: np.ndarray, distance: Distance, params: IndexParams
) -> tuple[HnswIndex, float]:
    """An HNSW graph whose M and ef meet ``target_recall`` unless the settings fix them.

    Recall is measured with held-out vectors as queries: a stored vector leads the search
    straight to its own node, so tuning on the graph's own vectors overstates the recall of
    new vectors and cross-entity queries (ef 16 instead of 48 on hard data, 0.93 instead of
    0.98 in practice). The held-out vectors are added once ef is chosen.
    """
    m = params.m or choose_m(
        vectors,
        distance,
        params.target_recall,
        ef_construction=params.ef_construction,
        num_threads=params.threads,
    )
    held = min(HELD_OUT, len(ids) // 10)
    order = np.random.default_rng(0).permutation(len(ids))
    build, probe = order[held:], order[:held]
    graph = HnswIndex(
        vectors.shape[1],
        distance,
        M=m,
        ef_construction=params.ef_construction,
        capacity=max(len(ids), 1),
        num_threads=params.threads,
    )
    graph.upsert_many([ids[i] for i in build], vectors[build])
    queries = vectors[probe] if held else None
    if params.ef_search is not None:
        graph.ef_search = params.ef_search
        recall = measure_recall(graph, queries=queries)
    else:
        _, recall = choose_ef(graph, params.target_recall, queries=queries)
    if held:
        graph.upsert_many([ids[i] for i in probe], vectors[probe])
    return graph, recall


class SimilarityIndex:
    """Every key's index plus the worker thread that builds graphs and drains fresh tiers."""

    def __init__(
        self, params: IndexParams, *, on_graph_built: Callable[[KeyIndex], None] | None = None
    ) -> None:
        self.params = params
        self.on_graph_built = on_graph_built
        self._keys: dict[IndexKey, KeyIndex] = {}
        self._keys_lock = threading.Lock()
        self._wake = threading.Condition()
        self._stopping = False
        self._worker: threading.Thread | None = None

    def get(self, key: IndexKey) -> KeyIndex | None:
        with self._keys_lock:
            return self._keys.get(key)

    def keys(self) -> list[IndexKey]:
        with self._keys_lock:
            return list(self._keys)

    def install(self, index: KeyIndex) -> None:
        with self._keys_lock:
            self._keys[index.key] = index
        self.notify()

    def create(
        self, key: IndexKey, dimension: int, distance: Distance, ids: Sequence[str], vectors: np.ndarray
    ) -> KeyIndex:
        """A new exact index over the given vectors, installed (replacing any previous one)."""
        index = KeyIndex(key, dimension, distance, self.params)
        if len(ids):
            index.exact.upsert_many(ids, vectors)
        self.install(index)
        return index

    def drop(self, key: IndexKey) -> None:
        with self._keys_lock:
            self._keys.pop(key, None)

    def drop_feature_type(self, feature_type_id: str) -> None:
        with self._keys_lock:
            for key in [k for k in self._keys if k.feature_type_id == feature_type_id]:
                del self._keys[key]

    def status(self) -> dict[str, dict[str, Any]]:
        return {str(key): index.status() for key, index in sorted(
            ((k, self.get(k)) for k in self.keys()), key=lambda kv: str(kv[0])
        ) if index is not None}  # fmt: skip

    # ------------------------------------------------------------------ worker

    def notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def start(self) -> None:
        if self._worker is None:
            self._stopping = False
            self._worker = threading.Thread(target=self._run, name="fingerprints-index", daemon=True)
            self._worker.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30)
            self._worker = None

    def work_once(self) -> bool:
        """One unit of background work (a graph build or a drain step); False when idle."""
        for key in self.keys():
            index = self.get(key)
            if index is not None and index.wants_graph():
                index.build_graph()
                if self.on_graph_built is not None and index.graph is not None:
                    self.on_graph_built(index)
                return True
        for key in self.keys():
            index = self.get(key)
            if index is not None and index.has_fresh() and index.drain():
                return True
        return False

    def _run(self) -> None:
        _lower_priority(WORKER_NICENESS)
        while not self._stopping:
            try:
                busy = self.work_once()
            except Exception:  # noqa: BLE001 - the worker must survive one bad key
                log.exception("similarity index worker failed; retrying")
                busy = False
            if not busy:
                with self._wake:
                    if not self._stopping:
                        self._wake.wait(timeout=1.0)


def _lower_priority(niceness: int) -> None:
    """Raise the calling thread's niceness by ``niceness`` (Linux only: per-thread there)."""
    if sys.platform != "linux" or niceness <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    except OSError:  # pragma: no cover - a sandbox may forbid it; the worker runs regardless
        log.debug("similarity index worker: cannot lower its priority", exc_info=True)
