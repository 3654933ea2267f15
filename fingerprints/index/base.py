"""What every vector index offers (spec §5.4) and the metric arithmetic they share.

Indexes rank by a *key* where larger is better: the inner product for cosine (on unit
vectors) and dot product, and ``-squared distance`` for euclidean. ``Hits`` turns keys into
the public scores of design §4: cosine in [-1, 1], dot product raw, euclidean ``1 / (1 + d)``
with the distance ``d`` alongside.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fingerprints.domain import Distance

FLOAT32 = np.dtype(np.float32)  # the native one, a singleton: compared with ``is``

try:  # ``np.einsum`` without its Python wrapper (which calls it when not optimising): same sums
    from numpy._core.multiarray import c_einsum as _einsum
except ImportError:  # pragma: no cover - numpy < 2
    _einsum = np.einsum


@dataclass(frozen=True, slots=True)
class Hits:
    """Results of one query, best first; ties broken by entity id."""

    ids: list[str]
    scores: np.ndarray  # float32, as in design §4
    distances: np.ndarray | None = None  # euclidean only

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def empty(distance: Distance) -> Hits:
        none = np.empty(0, dtype=np.float32)
        return Hits([], none, none if distance is Distance.EUCLIDEAN else None)


class VectorIndex(Protocol):
    """A mutable k-nearest-neighbour index over (entity id, vector) pairs of one dimension."""

    distance: Distance
    dimension: int

    def __len__(self) -> int: ...

    def __contains__(self, entity_id: object) -> bool: ...

    def upsert(self, entity_id: str, vector: np.ndarray) -> None:
        """Add or replace one vector."""

    def upsert_many(self, entity_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add or replace many vectors (an (n, dimension) matrix) at once."""

    def remove(self, entity_id: str) -> bool:
        """Remove one vector; False when it was not there."""

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        exclude: Collection[str] = (),
        min_score: float | None = None,
        prepared: bool = False,
    ) -> Hits:
        """The ``k`` best matches not in ``exclude`` with score >= ``min_score``; ``prepared``:
        the query is already as ``prepare_query`` makes it."""

    def search_batch(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Collection[str] = (),
        min_score: float | None = None,
        prepared: bool = False,
    ) -> list[Hits]:
        """``search`` for each row of ``queries`` (``prepared``: as ``prepare`` makes them)."""

    def items(self) -> tuple[list[str], np.ndarray]:
        """Every id with its stored (prepared) vector, as one (n, dimension) matrix."""


def prepare(vectors: np.ndarray, distance: Distance) -> np.ndarray:
    """Vectors as the index stores them: float32, C-contiguous, unit length under cosine."""
    matrix: np.ndarray = np.ascontiguousarray(vectors, dtype=np.float32)
    if distance is Distance.COSINE:
        rows = matrix.reshape(-1, matrix.shape[-1])
        # einsum, not linalg.norm: a tenth of the overhead for a single query vector, and the
        # same arithmetic for one row as for a batch (so single and batch searches agree).
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))  # einsum overflows to inf silently
        if 0 < norms.min() and norms.max() < np.inf:  # the usual case, kept short
            return np.ascontiguousarray((rows / norms[:, None]).reshape(matrix.shape))
        huge = ~np.isfinite(norms)
        if huge.any():  # float32 squares overflow near 1e19: those rows are normalised in float64
            wide = rows[huge].astype(np.float64)
            rows = rows.copy()
            rows[huge] = (wide / np.linalg.norm(wide, axis=-1, keepdims=True)).astype(np.float32)
            norms[huge] = 1
        matrix = (rows / np.where(norms == 0, 1, norms)[:, None]).reshape(matrix.shape)
    return np.ascontiguousarray(matrix, dtype=np.float32)


def prepare_query(query: np.ndarray, distance: Distance) -> np.ndarray:
    """One query vector as ``prepare`` makes it, bit for bit, in a few numpy calls.

    A single search pays per numpy call, not per float: this is the usual case of ``prepare``
    for one finite float32 vector (``einsum('i,i->')`` sums exactly as a batch row does), and
    anything unusual (another dtype or shape, a zero, huge or non-finite norm) goes the long way.
    """
    if query.dtype is FLOAT32 and query.ndim == 1 and query.flags.c_contiguous:
        if distance is not Distance.COSINE:
            return query
        squared = float(_einsum("i,i->", query, query))
        if 0 < squared < math.inf:
            # The norm is rounded to float32 before the division, as a batch's is (sqrt in
            # float64 then rounded is float32's sqrt). A Python float, not an np.float32: numpy
            # rounds it the same way, and a numpy scalar operand costs a detour through its
            # scalar machinery (about 4 us a query when the search has left the caches cold).
            return query / math.sqrt(squared)
    return prepare(query, distance).reshape(-1)


def prepare_valid_query(query: np.ndarray, distance: Distance) -> np.ndarray | None:
    """``prepare_query`` of a float32 vector that is plainly a valid query, else None.

    One sum of squares both checks and normalises: finite, so every value is finite, and
    positive, so not all zero (which cosine cannot rank by). None (the caller validates the
    long way) for a non-finite value, squares overflowing or underflowing float32, an all-zero
    cosine vector, or a layout ``prepare_query`` would not take as is.
    """
    if query.dtype is not FLOAT32 or query.ndim != 1 or not query.flags.c_contiguous:
        return None
    squared = float(_einsum("i,i->", query, query))
    if distance is not Distance.COSINE:
        return query if squared < math.inf else None
    if 0 < squared < math.inf:
        return query / math.sqrt(squared)  # as in prepare_query
    return None


def key_threshold(min_score: float | None, distance: Distance) -> float | None:
    """``min_score`` expressed on the ranking key (None: no filter; +inf: nothing passes)."""
    if min_score is None:
        return None
    if distance is not Distance.EUCLIDEAN:
        return float(min_score)
    if min_score <= 0:
        return None  # every euclidean score is positive
    if min_score > 1:
        return float("inf")
    radius = 1.0 / min_score - 1.0
    return -(radius * radius)


def hits_from_keys(ids: list[str], keys: np.ndarray, distance: Distance) -> Hits:
    """Public scores for ranking keys (already in order); euclidean keys are ``-d^2``."""
    keys = np.asarray(keys, dtype=np.float32)
    if distance is not Distance.EUCLIDEAN:
        return Hits(ids, keys)
    distances = np.sqrt(np.maximum(-keys, 0)).astype(np.float32)
    return Hits(ids, (1.0 / (1.0 + distances)).astype(np.float32), distances)


def order_by_key_then_id(ids: Sequence[str], keys: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best keys, ties broken by id (ascending).

    numpy ranks; Python only sorts when two of the leading keys are equal (rare with real
    vectors, common with duplicates), since only then does the id decide."""
    order = np.argsort(-keys, kind="stable")
    head = keys[order[: k + 1]]
    if len(head) < 2 or not (head[1:] == head[:-1]).any():
        return order[:k]
    return np.array(sorted(range(len(ids)), key=lambda i: (-float(keys[i]), ids[i]))[:k], dtype=np.int64)
