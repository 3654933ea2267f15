"""Exact search: one C-contiguous float32 matrix, matrix-vector products and partial selection."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from fingerprints.domain import Distance
from fingerprints.index.base import (
    Hits,
    hits_from_keys,
    key_threshold,
    order_by_key_then_id,
    prepare,
    prepare_query,
)

MIN_CAPACITY = 1024
# Batch selection samples every SAMPLE_STRIDE-th column to find, per query, a key that at
# least k entries reach; only entries above it are then ranked (see ``_batch_candidates``).
SAMPLE_STRIDE = 16


class ExactIndex:
    """Brute force over every stored vector; results identical to a numpy reference."""

    def __init__(self, dimension: int, distance: Distance, *, capacity: int = MIN_CAPACITY) -> None:
        self.dimension = dimension
        self.distance = distance
        capacity = max(capacity, MIN_CAPACITY)
        self._matrix = np.empty((capacity, dimension), dtype=np.float32)
        self._sqnorms = np.empty(capacity, dtype=np.float32)  # |x|^2, euclidean ranking
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self._rows

    def __repr__(self) -> str:
        return f"ExactIndex(n={len(self)}, dimension={self.dimension}, distance={self.distance.value})"

    # ------------------------------------------------------------------ writes

    def _reserve(self, n: int) -> None:
        if n <= len(self._matrix):
            return
        capacity = max(n, 2 * len(self._matrix))  # amortized growth
        matrix = np.empty((capacity, self.dimension), dtype=np.float32)
        matrix[: len(self)] = self._matrix[: len(self)]
        sqnorms = np.empty(capacity, dtype=np.float32)
        sqnorms[: len(self)] = self._sqnorms[: len(self)]
        self._matrix, self._sqnorms = matrix, sqnorms

    def upsert(self, entity_id: str, vector: np.ndarray) -> None:
        self.upsert_many([entity_id], np.asarray(vector).reshape(1, -1))

    def upsert_many(self, entity_ids: Sequence[str], vectors: np.ndarray, *, prepared: bool = False) -> None:
        """``prepared``: the vectors come from an index of the same metric (e.g. a snapshot)
        and are stored bit for bit, not normalised again."""
        if len(entity_ids) != len(vectors):
            raise ValueError("one vector per id")
        matrix = (
            np.ascontiguousarray(vectors, dtype=np.float32) if prepared else prepare(vectors, self.distance)
        )
        matrix = matrix.reshape(len(entity_ids), self.dimension)
        self._reserve(len(self) + len(entity_ids))
        rows = np.empty(len(entity_ids), dtype=np.int64)
        for i, entity_id in enumerate(entity_ids):
            row = self._rows.get(entity_id)
            if row is None:
                row = self._rows[entity_id] = len(self._ids)
                self._ids.append(entity_id)
            rows[i] = row
        # Fancy assignment writes in order, so for an id given twice the last vector wins.
        self._matrix[rows] = matrix
        self._sqnorms[rows] = np.einsum("ij,ij->i", matrix, matrix)

    def remove(self, entity_id: str) -> bool:
        row = self._rows.pop(entity_id, None)
        if row is None:
            return False
        last = len(self._ids) - 1
        if row != last:  # swap-remove: the last row fills the hole
            moved = self._ids[last]
            self._matrix[row] = self._matrix[last]
            self._sqnorms[row] = self._sqnorms[last]
            self._ids[row] = moved
            self._rows[moved] = row
        self._ids.pop()
        return True

    def remove_many(self, entity_ids: Collection[str]) -> int:
        return sum(self.remove(entity_id) for entity_id in entity_ids)

    # ------------------------------------------------------------------ reads

    def get(self, entity_id: str) -> np.ndarray | None:
        row = self._rows.get(entity_id)
        return None if row is None else self._matrix[row].copy()

    def items(self) -> tuple[list[str], np.ndarray]:
        return list(self._ids), self._matrix[: len(self)].copy()

    def head(self, n: int) -> tuple[list[str], np.ndarray]:
        """The first ``n`` ids with their vectors (a copy)."""
        return self._ids[:n], self._matrix[: min(n, len(self))].copy()

    def keys(self, queries: np.ndarray) -> np.ndarray:
        """Ranking keys of every stored vector for each query: (m, n) for (m, dimension)."""
        return self._keys(prepare(queries, self.distance).reshape(-1, self.dimension))

    def _keys(self, q: np.ndarray) -> np.ndarray:
        keys = q @ self._matrix[: len(self)].T
        if self.distance is Distance.EUCLIDEAN:
            # -|q - x|^2 = 2 q.x - |x|^2 - |q|^2
            keys *= 2
            keys -= self._sqnorms[: len(self)]
            keys -= np.einsum("ij,ij->i", q, q)[:, None]
        return keys

    def _mask(self, keys: np.ndarray, exclude: Collection[str]) -> None:
        rows = [self._rows[e] for e in exclude if e in self._rows]
        if rows:
            keys[..., rows] = -np.inf

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
        if k <= 0 or not len(self):
            return Hits.empty(self.distance)
        q = np.asarray(query) if prepared else prepare_query(np.asarray(query), self.distance)
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(self.dimension)
        keys = self._keys(q[None, :])[0]
        self._mask(keys, exclude)
        return self._select(q, keys, _candidates(keys, k, self._slack(q[None, :])[0]), k, min_score)

    def search_batch(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Collection[str] = (),
        min_score: float | None = None,
        prepared: bool = False,
    ) -> list[Hits]:
        queries = np.asarray(queries).reshape(-1, self.dimension)
        if k <= 0 or not len(self):
            return [Hits.empty(self.distance) for _ in range(len(queries))]
        q = np.ascontiguousarray(queries, dtype=np.float32) if prepared else prepare(queries, self.distance)
        q = q.reshape(-1, self.dimension)
        keys = self._keys(q)
        self._mask(keys, exclude)
        rows, cols = _batch_candidates(keys, k, self._slack(q))
        bounds = np.searchsorted(rows, np.arange(len(queries) + 1))
        return [
            self._select(q[i], keys[i], cols[bounds[i] : bounds[i + 1]], k, min_score)
            for i in range(len(queries))
        ]

    def _slack(self, queries: np.ndarray) -> np.ndarray:
        """How far float32 rounding can move a euclidean key (0 for the inner-product metrics).

        ``2 q.x - |x|^2 - |q|^2`` cancels badly when q is close to x, so candidates are taken
        this much below the k-th key and then ranked by the exact ``-|q - x|^2``.
        """
        if self.distance is not Distance.EUCLIDEAN or not len(self):
            return np.zeros(len(queries), dtype=np.float32)
        scale = float(self._sqnorms[: len(self)].max()) + np.einsum("ij,ij->i", queries, queries)
        return (8 * np.finfo(np.float32).eps * (scale + 1)).astype(np.float32)

    def _select(
        self, query: np.ndarray, keys: np.ndarray, candidates: np.ndarray, k: int, min_score: float | None
    ) -> Hits:
        """Order candidate rows by key then id; drop masked rows and those under ``min_score``."""
        threshold = key_threshold(min_score, self.distance)
        picked = keys[candidates]
        if self.distance is Distance.EUCLIDEAN and len(candidates):
            diff = self._matrix[candidates] - query
            exact = -np.einsum("ij,ij->i", diff, diff)
            picked = np.where(picked > -np.inf, exact, picked)
        keep = picked > -np.inf
        if threshold is not None:
            keep &= picked >= threshold
        candidates, picked = candidates[keep], picked[keep]
        ids = [self._ids[c] for c in candidates.tolist()]
        order = order_by_key_then_id(ids, picked, k)
        return hits_from_keys([ids[i] for i in order.tolist()], picked[order], self.distance)


def _candidates(keys: np.ndarray, k: int, slack: float = 0.0) -> np.ndarray:
    """Rows holding the k largest keys, plus every row tied with the k-th (so ties sort by id)
    or within ``slack`` of it."""
    n = len(keys)
    if k >= n:
        return np.arange(n)
    kth = keys[np.argpartition(keys, n - k)[n - k :]].min()
    return np.flatnonzero(keys >= kth - slack)


def _batch_candidates(keys: np.ndarray, k: int, slack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) pairs, sorted by row, that include each row's k best keys and their ties.

    Selecting over the full (m, n) key matrix costs more than computing it. Instead: the k-th
    best key of a strided sample of the columns is a lower bound of the row's true k-th best
    (the sample is a subset), so only keys at or above it can qualify — about k x stride per
    row. One pass of comparisons replaces m full partial sorts.
    """
    m, n = keys.shape
    if k >= n:
        rows, cols = np.divmod(np.arange(m * n), n)
        return rows, cols
    sample = keys[:, ::SAMPLE_STRIDE]
    if sample.shape[1] <= k:
        part = np.argpartition(keys, n - k, axis=1)[:, n - k :]
        bound = np.take_along_axis(keys, part, axis=1).min(axis=1)
    else:
        s = sample.shape[1]
        # Partitioned as a contiguous copy: faster than in the strided view, copy included.
        bound = np.partition(np.ascontiguousarray(sample), s - k, axis=1)[:, s - k]
    # flatnonzero + divmod, not a 2-d nonzero: same pairs in the same (row-major) order, and
    # several times faster over a mask of 100 million entries.
    return np.divmod(np.flatnonzero(keys >= (bound - slack)[:, None]), n)  # type: ignore[no-any-return]
