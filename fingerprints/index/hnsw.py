"""Approximate search: an hnswlib HNSW graph behind the same protocol as ``ExactIndex``.

hnswlib ranks by a distance where smaller is better: ``1 - <q, x>`` in space ``ip`` (cosine on
unit vectors, dot product) and the *squared* distance in space ``l2``. The ranking key of
base.py is ``1 - dist`` and ``-dist`` respectively.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, cast

import hnswlib
import numpy as np
import orjson

from fingerprints.domain import Distance
from fingerprints.index.base import (
    Hits,
    hits_from_keys,
    key_threshold,
    order_by_key_then_id,
    prepare,
    prepare_query,
)
from fingerprints.index.exact import ExactIndex

GRAPH_FILE = "hnsw.bin"
META_FILE = "hnsw.json"
FORMAT = 1


class HnswIndex:
    """HNSW over (entity id, vector) pairs; results match ``ExactIndex`` up to recall.

    Not thread-safe by design: the caller holds a readers-writer lock. Searches only read
    (they never touch ``ef``) and may share the read lock; ``upsert*``, ``remove*``, the
    ``ef_search`` setter and ``save`` need it exclusively.

    Labels are dense integers; a label freed by ``remove`` is given to the next new id and
    written with a plain ``add_items``, which revives its own slot in place. hnswlib's
    ``replace_deleted=True`` is not used: it fills an arbitrary vacant slot, and when the label
    passed is itself a deleted one, hnswlib later forgets the live label (``Label not found``).
    """

    def __init__(
        self,
        dimension: int,
        distance: Distance,
        *,
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 64,
        capacity: int = 1024,
        seed: int = 100,
        num_threads: int = 1,
    ) -> None:
        self.dimension = dimension
        self.distance = distance
        self.M = M
        self.ef_construction = ef_construction
        self.seed = seed
        self.num_threads = num_threads
        capacity = max(capacity, 1)
        self._index = hnswlib.Index(space=_space(distance), dim=dimension)
        self._index.init_index(max_elements=capacity, M=M, ef_construction=ef_construction, random_seed=seed)
        self._index.set_num_threads(num_threads)
        self.ef_search = ef_search
        self._labels: dict[str, int] = {}
        # label -> id (None: free). A list, not an object array: a search maps its k labels
        # with list indexing, without a numpy call per step.
        self._ids: list[str | None] = [None] * capacity
        self._free: list[int] = []  # removed labels, reused before new ones
        self._used = 0  # labels ever handed out (= hnswlib's element count)

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self._labels

    def __repr__(self) -> str:
        return (
            f"HnswIndex(n={len(self)}, dimension={self.dimension}, distance={self.distance.value}, "
            f"M={self.M}, ef_search={self.ef_search})"
        )

    @property
    def ef_search(self) -> int:
        return self._ef_search

    @ef_search.setter
    def ef_search(self, ef: int) -> None:
        self._ef_search = int(ef)
        self._index.set_ef(self._ef_search)

    # ------------------------------------------------------------------ writes

    def _reserve(self, labels: int) -> None:
        capacity = len(self._ids)
        if labels <= capacity:
            return
        capacity = max(labels, 2 * capacity)  # amortized growth
        self._index.resize_index(capacity)
        self._ids.extend([None] * (capacity - len(self._ids)))

    def upsert(self, entity_id: str, vector: np.ndarray) -> None:
        self.upsert_many([entity_id], np.asarray(vector).reshape(1, -1))

    def upsert_many(self, entity_ids: Sequence[str], vectors: np.ndarray) -> None:
        if len(entity_ids) != len(vectors):
            raise ValueError("one vector per id")
        if not len(entity_ids):
            return
        prepared = prepare(vectors, self.distance).reshape(len(entity_ids), -1)
        if prepared.shape[1] != self.dimension:
            raise ValueError(f"vectors have {prepared.shape[1]} values, the index needs {self.dimension}")
        last = {entity_id: i for i, entity_id in enumerate(entity_ids)}  # last vector wins
        new = sum(entity_id not in self._labels for entity_id in last)
        self._reserve(self._used + max(0, new - len(self._free)))
        labels = np.empty(len(last), dtype=np.int64)
        for i, entity_id in enumerate(last):
            label = self._labels.get(entity_id)
            if label is None:
                if self._free:
                    label = self._free.pop()
                else:
                    label, self._used = self._used, self._used + 1
                self._labels[entity_id] = label
                self._ids[label] = entity_id
            labels[i] = label
        rows = np.fromiter(last.values(), dtype=np.int64, count=len(last))
        # An existing label (live or freed) is updated in place: hnswlib re-links its slot.
        self._index.add_items(prepared[rows], labels, num_threads=self.num_threads)

    def remove(self, entity_id: str) -> bool:
        label = self._labels.pop(entity_id, None)
        if label is None:
            return False
        self._index.mark_deleted(label)
        self._ids[label] = None
        self._free.append(label)
        return True

    def remove_many(self, entity_ids: Collection[str]) -> int:
        return sum(self.remove(entity_id) for entity_id in entity_ids)

    # ------------------------------------------------------------------ reads

    def get(self, entity_id: str) -> np.ndarray | None:
        label = self._labels.get(entity_id)
        return None if label is None else self._index.get_items([label])[0].astype(np.float32)

    def items(self) -> tuple[list[str], np.ndarray]:
        if not self._labels:
            return [], np.empty((0, self.dimension), dtype=np.float32)
        labels = np.fromiter(self._labels.values(), dtype=np.int64, count=len(self._labels))
        matrix = np.asarray(self._index.get_items(labels), dtype=np.float32)
        return list(self._labels), np.ascontiguousarray(matrix)

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        exclude: Collection[str] = (),
        min_score: float | None = None,
        prepared: bool = False,
    ) -> Hits:
        """``prepared``: the query is already as ``prepare_query`` makes it (not normalised again)."""
        if exclude or min_score is not None or not 0 < k <= len(self._labels):
            return self.search_batch(
                np.asarray(query).reshape(1, -1), k, exclude=exclude, min_score=min_score, prepared=prepared
            )[0]
        # The common case, kept lean (a single search pays per numpy call, not per float): one
        # row, one thread (hnswlib answers a single row in the calling thread), no filtering.
        q = query if prepared else prepare_query(np.asarray(query), self.distance)
        try:
            labels, dist = self._index.knn_query(q, k, 1)
        except RuntimeError:
            return self.search_batch(np.asarray(query).reshape(1, -1), k, prepared=prepared)[0]
        keys = -dist[0] if self.distance is Distance.EUCLIDEAN else 1 - dist[0]
        ids: list[str] = list(map(self._ids.__getitem__, labels.tolist()[0]))  # type: ignore[arg-type]  # live labels
        if len(set(keys.tolist())) < k:  # hnswlib's order is right unless two keys tie
            order = order_by_key_then_id(ids, keys, k)
            ids, keys = [ids[i] for i in order.tolist()], keys[order]
        if self.distance is Distance.EUCLIDEAN:
            return hits_from_keys(ids, keys, self.distance)
        return Hits(ids, keys)  # float32 already: the keys are the scores

    def search_batch(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Collection[str] = (),
        min_score: float | None = None,
        prepared: bool = False,
    ) -> list[Hits]:
        if prepared:
            queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dimension)
        else:
            queries = prepare(queries, self.distance).reshape(-1, self.dimension)
        n = len(self)
        if k <= 0 or not n:
            return [Hits.empty(self.distance) for _ in range(len(queries))]
        k = min(k, n)
        excluded = np.array(sorted({self._labels[e] for e in exclude if e in self._labels}), dtype=np.int64)
        threshold = key_threshold(min_score, self.distance)
        # Of the k + |excluded| nearest at most |excluded| are dropped, and past a fetched key
        # under the threshold nothing passes: one fetch settles every row, no widening needed.
        # Excluded ids would crowd the candidate list, so they get room on top of the tuned ef.
        # Rows hnswlib cannot answer (too few reachable live nodes) fall back to brute force.
        fetch = min(max(k, self.ef_search) + len(excluded), n) if len(excluded) else k
        labels, keys, answered = self._knn(queries, fetch)
        results = [
            self._filter(row_labels, row_keys, k, excluded, threshold, fetch >= n) if ok else None
            for row_labels, row_keys, ok in zip(labels, keys, answered, strict=True)
        ]
        missing = [row for row, hits in enumerate(results) if hits is None]
        if missing:
            for row, hits in zip(missing, self._exact(queries[missing], k, exclude, min_score), strict=True):
                results[row] = hits
        return cast(list[Hits], results)  # every row was answered above

    def _knn(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Labels and ranking keys of the ``fetch`` nearest per row, and which rows got an answer.

        hnswlib searches with ``max(ef, fetch)``, so a fetch above ``ef_search`` needs no
        ``set_ef``. It raises when it cannot find ``fetch`` live elements (possible after many
        deletions); such rows are answered one by one, and the failures reported.
        """
        answered = np.ones(len(queries), dtype=bool)
        try:
            labels, dist = self._index.knn_query(queries, k=fetch, num_threads=self.num_threads)
        except RuntimeError:
            labels = np.zeros((len(queries), fetch), dtype=np.uint64)
            dist = np.zeros((len(queries), fetch), dtype=np.float32)
            for i, query in enumerate(queries):
                try:
                    labels[i], dist[i] = self._index.knn_query(query, k=fetch, num_threads=1)
                except RuntimeError:
                    answered[i] = False
        keys = -dist if self.distance is Distance.EUCLIDEAN else 1 - dist
        return labels.astype(np.int64), keys, answered

    def _filter(
        self,
        labels: np.ndarray,
        keys: np.ndarray,
        k: int,
        excluded: np.ndarray,
        threshold: float | None,
        complete: bool,
    ) -> Hits | None:
        """The k best fetched hits that pass the filters; None if more may lie beyond the fetch."""
        keep = np.ones(len(labels), dtype=bool)
        if len(excluded):
            keep &= ~np.isin(labels, excluded, assume_unique=True)
        if threshold is not None:
            keep &= keys >= threshold
        # Past a fetched key under the threshold nothing further qualifies.
        exhausted = complete or (threshold is not None and bool(keys.min() < threshold))
        if keep.sum() < k and not exhausted:
            return None
        labels, keys = labels[keep], keys[keep]
        if len(keys) > k:  # the k best and any tied with the k-th, so that ties sort by id
            keep = keys >= np.partition(keys, len(keys) - k)[len(keys) - k]
            labels, keys = labels[keep], keys[keep]
        ids: list[str] = list(map(self._ids.__getitem__, labels.tolist()))  # type: ignore[arg-type]  # live labels
        order = order_by_key_then_id(ids, keys, k)
        return hits_from_keys([ids[i] for i in order.tolist()], keys[order], self.distance)

    def _exact(
        self, queries: np.ndarray, k: int, exclude: Collection[str], min_score: float | None
    ) -> list[Hits]:
        """Brute force over every stored vector, for rows hnswlib could not answer."""
        ids, matrix = self.items()
        exact = ExactIndex(self.dimension, self.distance, capacity=len(ids))
        exact.upsert_many(ids, matrix)
        return exact.search_batch(queries, k, exclude=exclude, min_score=min_score)

    # ------------------------------------------------------------------ persistence

    def _params(self) -> dict[str, int]:
        return {
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "seed": self.seed,
            "num_threads": self.num_threads,
        }

    def save(self, directory: Path) -> None:
        """Write the graph and the id/label mapping into ``directory`` (created if needed)."""
        directory.mkdir(parents=True, exist_ok=True)
        graph = directory / GRAPH_FILE
        self._index.save_index(str(graph))
        meta = {
            "format": FORMAT,
            "dimension": self.dimension,
            "distance": self.distance.value,
            "params": self._params(),
            "capacity": len(self._ids),
            "ids": self._ids[: self._used],
            "free": self._free,
            "graph_sha256": _sha256(graph),
        }
        tmp = directory / (META_FILE + ".tmp")
        tmp.write_bytes(orjson.dumps(meta))
        tmp.replace(directory / META_FILE)

    @classmethod
    def load(cls, directory: Path, *, verified: bool = False) -> HnswIndex:
        """The index ``save`` wrote; ValueError when files are missing, corrupt or inconsistent.
        ``verified``: the caller has already checked the graph file's bytes (a snapshot checks
        every file's checksum), so it is not hashed a second time."""
        try:
            return cls._load(directory, verified=verified)
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"cannot load HNSW index from {directory}: {e}") from e

    @classmethod
    def _load(cls, directory: Path, *, verified: bool) -> HnswIndex:
        graph = directory / GRAPH_FILE
        meta: dict[str, Any] = orjson.loads((directory / META_FILE).read_bytes())
        if meta["format"] != FORMAT:
            raise ValueError(f"unsupported format {meta['format']!r}")
        ids, free, capacity = meta["ids"], meta["free"], meta["capacity"]
        if not (isinstance(ids, list) and isinstance(free, list) and isinstance(capacity, int)):
            raise ValueError("malformed mapping")
        if not all(entity_id is None or isinstance(entity_id, str) for entity_id in ids):
            raise ValueError("malformed ids")
        if sorted(free) != [label for label, entity_id in enumerate(ids) if entity_id is None]:
            raise ValueError("free labels and mapping disagree")
        # hnswlib trusts the file: a damaged graph can crash the process, so check it first.
        if not verified and _sha256(graph) != meta["graph_sha256"]:
            raise ValueError(f"{graph.name} does not match its checksum")
        index = cls(int(meta["dimension"]), Distance(meta["distance"]), capacity=1, **meta["params"])
        capacity = max(capacity, len(ids), 1)
        index._index = hnswlib.Index(space=_space(index.distance), dim=index.dimension)
        index._index.load_index(str(graph), max_elements=capacity)
        if index._index.element_count != len(ids):
            raise ValueError("graph and mapping disagree")
        index._index.set_num_threads(index.num_threads)
        index.ef_search = index.ef_search  # a loaded graph starts at hnswlib's default ef
        index._ids = ids + [None] * (capacity - len(ids))
        index._labels = {entity_id: label for label, entity_id in enumerate(ids) if entity_id is not None}
        index._free = [int(label) for label in free]
        index._used = len(ids)
        return index


def _space(distance: Distance) -> str:
    return "l2" if distance is Distance.EUCLIDEAN else "ip"


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
