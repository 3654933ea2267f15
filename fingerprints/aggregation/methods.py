"""The aggregation methods of spec §3.2, computed for every owner at once over owner-sorted rows."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from fingerprints.domain import AggregationMethod, Distance

_WEIGHTED = frozenset({AggregationMethod.WEIGHTED_BY_DURATION, AggregationMethod.WEIGHTED_BY_POPULARITY})
# reduceat over a whole (n, d) matrix walks it column by column; a few thousand rows at a time keep
# each block (and its float64 copy) in cache, which measured 2-3x faster and bounds the memory.
_BLOCK_ROWS = 4096
# The median iterates on float32 differences scaled to each owner's spread: finer steps are noise.
_MIN_TOL = float(np.finfo(np.float32).eps)

Blocks = list[tuple[int, int, int, int]]


def aggregate(
    method: AggregationMethod,
    vectors: np.ndarray,
    owners: np.ndarray,
    n_owners: int,
    *,
    weights: np.ndarray | None = None,
    distance: Distance = Distance.COSINE,
    tol: float = 1e-6,
    max_iter: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """(n_owners, d) float32 aggregates and (n_owners,) int64 member counts; memberless owners get zeros."""
    method, distance = AggregationMethod(method), Distance(distance)
    if method is AggregationMethod.NONE:
        raise ValueError("aggregation method 'none' applies to tracks only: there is nothing to aggregate")
    vectors = np.asarray(vectors, dtype=np.float32)
    owners = np.asarray(owners)
    if vectors.ndim != 2 or owners.shape != vectors.shape[:1]:
        raise ValueError(f"need (n, d) vectors and (n,) owners, got {vectors.shape} and {owners.shape}")
    if owners.dtype.kind not in "iu":
        raise ValueError(f"owners must be integers, got {owners.dtype}")
    if n_owners < 0 or (owners.size and (owners.min() < 0 or owners.max() >= n_owners)):
        raise ValueError(f"owners must lie in 0..{n_owners - 1}")
    if method in _WEIGHTED:
        weights = _check_weights(weights, owners.shape)

    counts = np.bincount(owners, minlength=n_owners).astype(np.int64)
    result = np.zeros((n_owners, vectors.shape[1]), dtype=np.float32)
    if owners.size == 0:
        return result, counts
    # Sort once so each owner's rows are one contiguous segment; reduceat cannot express an empty
    # segment (it returns the row at the index instead), so only owners with rows get one.
    order = np.argsort(owners, kind="stable")
    rows = vectors[order]
    present = np.flatnonzero(counts)
    sizes = counts[present]
    starts = np.cumsum(sizes) - sizes
    if distance is Distance.COSINE:
        _normalise(rows)

    if method is AggregationMethod.AVERAGE:
        values = _reduce_segments(np.add, rows, starts, np.float64) / sizes[:, None]
    elif method in _WEIGHTED:
        assert weights is not None
        shares = _weight_shares(weights[order], starts, sizes)
        values = _reduce_segments(np.add, rows, starts, np.float64, scale=shares)
    elif method is AggregationMethod.MAX:
        values = _reduce_segments(np.maximum, rows, starts, np.float32)
    elif method is AggregationMethod.MIN:
        values = _reduce_segments(np.minimum, rows, starts, np.float32)
    else:
        values = _geometric_medians(rows, starts, sizes, tol=max(tol, _MIN_TOL), max_iter=max_iter)
    result[present] = values
    return result, counts


def _check_weights(weights: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if weights is None:
        raise ValueError("weighted aggregation needs weights (duration_ms or popularity per row)")
    checked = np.asarray(weights, dtype=np.float64)
    if checked.shape != shape:
        raise ValueError(f"need {shape} weights, got {checked.shape}")
    if not np.isfinite(checked).all() or (checked < 0).any():
        raise ValueError("weights must be finite and non-negative")
    return checked


def _normalise(rows: np.ndarray) -> None:
    """Scale each row to unit L2 norm in place; zero rows stay zero."""
    # Squares in float64: a float32 sum of squares overflows for components beyond ~1e19;
    # and a float64 factor: 1/norm of a row of float32 subnormals exceeds the float32 range.
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))[:, None]
    np.multiply(rows, np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0), out=rows)


def _weight_shares(weights: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each row's weight over its owner's total; 1/size for owners whose weights are all zero."""
    totals = np.add.reduceat(weights, starts)
    # An owner with no weight at all prefers no member over another: the plain mean is the honest
    # aggregate, and it avoids 0/0.
    weighed = np.repeat(totals > 0, sizes)
    safe_totals = np.repeat(np.where(totals > 0, totals, 1.0), sizes)
    return np.where(weighed, weights / safe_totals, np.repeat(1.0 / sizes, sizes))


def _blocks(starts: np.ndarray, n_rows: int) -> Blocks:
    """(first segment, end segment, first row, end row) of blocks of about _BLOCK_ROWS rows, never
    splitting a segment."""
    cuts = np.searchsorted(starts, np.arange(0, n_rows, _BLOCK_ROWS))
    edges = np.unique(np.append(cuts, len(starts))).tolist()
    bounds = np.append(starts, n_rows).tolist()
    return [(a, b, bounds[a], bounds[b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _reduce_segments(
    ufunc: np.ufunc,
    rows: np.ndarray,
    starts: np.ndarray,
    dtype: DTypeLike,
    *,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """``ufunc.reduceat`` over the non-empty segments at ``starts``, optionally of rows times ``scale``."""
    out = np.empty((len(starts), rows.shape[1]), dtype=dtype)
    for a, b, lo, hi in _blocks(starts, len(rows)):
        block = rows[lo:hi].astype(dtype, copy=False)
        if scale is not None:
            block = block * scale[lo:hi, None]
        out[a:b] = ufunc.reduceat(block, starts[a:b] - lo, axis=0)
    return out


def _geometric_medians(
    rows: np.ndarray, starts: np.ndarray, sizes: np.ndarray, *, tol: float, max_iter: int
) -> np.ndarray:
    """Geometric median of every segment by batched Weiszfeld steps with the Vardi–Zhang correction.

    ``rows`` is overwritten. An owner stops at its first step shorter than ``tol`` times its spread
    (the largest distance of a member from the mean), or after ``max_iter`` steps.
    """
    # Work on members centred on their owner's mean (the starting point) and scaled to unit spread:
    # float32 differences then resolve the spread whatever the vectors' magnitude, their squares
    # cannot overflow, and one tolerance serves every owner.
    centres = _reduce_segments(np.add, rows, starts, np.float64) / sizes[:, None]
    squares = np.empty(len(rows))
    for a, b, lo, hi in _blocks(starts, len(rows)):
        centred = rows[lo:hi] - np.repeat(centres[a:b], sizes[a:b], axis=0)
        squares[lo:hi] = np.einsum("ij,ij->i", centred, centred)
        rows[lo:hi] = centred
    spread = np.sqrt(np.maximum.reduceat(squares, starts))
    shrink = 1.0 / np.where(spread > 0, spread, 1.0)  # all members equal: all rows are zero already
    for a, b, lo, hi in _blocks(starts, len(rows)):
        rows[lo:hi] *= np.repeat(shrink[a:b], sizes[a:b])[:, None]

    medians = np.zeros((len(starts), rows.shape[1]))
    live = np.arange(len(starts))  # the owners whose rows are still in the working set
    done = np.zeros(len(starts), dtype=bool)
    for _ in range(max_iter):
        move = _vardi_zhang_step(rows, starts, sizes, medians[live], tol)
        move[done] = 0.0
        medians[live] += move
        done |= np.linalg.norm(move, axis=1) <= tol
        if done.all():
            break
        # Drop converged owners once they hold half the working rows: later steps then pay only for
        # owners still moving, without copying every row each time a few converge.
        if 2 * sizes[~done].sum() < len(rows):
            rows = rows[np.repeat(~done, sizes)]
            live, sizes = live[~done], sizes[~done]
            starts = np.cumsum(sizes) - sizes
            done = np.zeros(len(live), dtype=bool)
    return centres + medians * spread[:, None]


def _vardi_zhang_step(
    rows: np.ndarray, starts: np.ndarray, sizes: np.ndarray, medians: np.ndarray, radius: float
) -> np.ndarray:
    """The move from each segment's current median estimate: a Weiszfeld step, damped at input points."""
    k, d = medians.shape
    pull = np.empty((k, d))  # R(y): sum of unit vectors from y towards the members not at y
    inverse_sum = np.empty(k)  # W(y): sum of 1/|x - y| over the same members
    at_estimate = np.empty(k)  # eta(y): members at y
    estimates = medians.astype(np.float32)
    for a, b, lo, hi in _blocks(starts, len(rows)):
        diff = rows[lo:hi] - np.repeat(estimates[a:b], sizes[a:b], axis=0)
        dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        # A member within the tolerance of y counts as being at y: Weiszfeld's plain step is
        # undefined at an input point, and 1/dist for a nearly coincident one only amplifies rounding.
        near = dist <= radius
        inverse = np.divide(1.0, dist, out=np.zeros_like(dist), where=~near)
        diff *= inverse[:, None]
        local = starts[a:b] - lo
        pull[a:b] = np.add.reduceat(diff, local, axis=0, dtype=np.float64)
        inverse_sum[a:b] = np.add.reduceat(inverse, local, dtype=np.float64)
        at_estimate[a:b] = np.add.reduceat(near, local, dtype=np.float64)
    # Weiszfeld's T(y) - y is R/W. Vardi-Zhang take y + max(0, 1 - eta/|R|) (T(y) - y): members at y
    # hold it back, and it stays put once they outweigh the pull of the rest, i.e. y is the median.
    strength = np.linalg.norm(pull, axis=1)
    damping = np.clip(1.0 - at_estimate / np.where(strength > 0, strength, 1.0), 0.0, None)
    # W = 0 only if every member is at y, and then R = 0 too: no move.
    return pull * (damping / np.where(inverse_sum > 0, inverse_sum, 1.0))[:, None]
