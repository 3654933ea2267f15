"""aggregate() against plain numpy references written here, one Python loop per owner."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fingerprints.aggregation.methods import _owner_order, aggregate
from fingerprints.domain import AggregationMethod, Distance

WEIGHTED = [AggregationMethod.WEIGHTED_BY_DURATION, AggregationMethod.WEIGHTED_BY_POPULARITY]
ELEMENTWISE = [AggregationMethod.AVERAGE, *WEIGHTED, AggregationMethod.MAX, AggregationMethod.MIN]
ALL = [*ELEMENTWISE, AggregationMethod.CENTROID]


def memberships(
    rng: np.random.Generator, n_owners: int = 80, dim: int = 12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectors, shuffled owners and weights; owner sizes include 0 and 1, some owners weigh nothing."""
    sizes = rng.choice([0, 0, 1, 1, 2, 3, 5, 9, 17, 40], size=n_owners)
    owners = rng.permutation(np.repeat(np.arange(n_owners), sizes))
    # Off-centre vectors, so that normalising changes the result; one all-zero row.
    vectors = (rng.standard_normal((len(owners), dim)) + 2.0).astype(np.float32)
    vectors[3] = 0
    weights = rng.integers(0, 400_000, size=len(owners)).astype(np.float64)
    weights[np.isin(owners, np.arange(0, n_owners, 7))] = 0  # every 7th owner: all-zero weights
    return vectors, owners, weights


def as_members(vectors: np.ndarray, distance: Distance) -> np.ndarray:
    """The rows the methods work on: unit vectors under cosine (zero stays zero), raw otherwise."""
    x = vectors.astype(np.float64)
    if distance is Distance.COSINE:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return x


def reference(
    method: AggregationMethod,
    vectors: np.ndarray,
    owners: np.ndarray,
    n_owners: int,
    weights: np.ndarray,
    distance: Distance,
) -> tuple[np.ndarray, np.ndarray]:
    x = as_members(vectors, distance)
    out = np.zeros((n_owners, x.shape[1]))
    counts = np.zeros(n_owners, dtype=np.int64)
    for owner in range(n_owners):
        members = x[owners == owner]
        counts[owner] = len(members)
        if not len(members):
            continue
        w = weights[owners == owner]
        if method is AggregationMethod.AVERAGE or (method in WEIGHTED and w.sum() == 0):
            out[owner] = members.mean(axis=0)
        elif method in WEIGHTED:
            out[owner] = (members * w[:, None]).sum(axis=0) / w.sum()
        elif method is AggregationMethod.MAX:
            out[owner] = members.max(axis=0)
        else:
            out[owner] = members.min(axis=0)
    return out, counts


def distance_sum(members: np.ndarray, point: np.ndarray) -> float:
    return float(np.linalg.norm(members - point, axis=1).sum())


def assert_is_geometric_median(members: np.ndarray, median: np.ndarray) -> None:
    """No larger a distance sum (1e-5 relative) than at the mean or at any member."""
    got = distance_sum(members, median.astype(np.float64))
    candidates = [members.mean(axis=0), *members]
    best = min(distance_sum(members, c) for c in candidates)
    # Absolute slack for float32 rounding of the result: a lone member has a distance sum of zero.
    slack = 1e-6 * len(members) * max(1.0, float(np.abs(members).max()))
    assert got <= best * (1 + 1e-5) + slack, (got, best)


def gradient_norm(members: np.ndarray, point: np.ndarray) -> float:
    """|sum of unit vectors from point to the members| minus the members at point: <= 0 at the median."""
    diff = members - point
    dist = np.linalg.norm(diff, axis=1)
    away = dist > 1e-6
    pull = (diff[away] / dist[away, None]).sum(axis=0)
    return float(np.linalg.norm(pull)) - int((~away).sum())


@pytest.mark.parametrize("distance", list(Distance))
@pytest.mark.parametrize("method", ELEMENTWISE)
def test_elementwise_methods_match_reference(method: AggregationMethod, distance: Distance) -> None:
    rng = np.random.default_rng(7)
    vectors, owners, weights = memberships(rng)
    got, counts = aggregate(method, vectors, owners, 80, weights=weights, distance=distance)
    want, want_counts = reference(method, vectors, owners, 80, weights, distance)
    np.testing.assert_array_equal(counts, want_counts)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert (counts == 0).any() and (counts == 1).any()
    assert not got[counts == 0].any()


@pytest.mark.parametrize("method", ALL)
def test_owners_of_every_size_across_blocks(method: AggregationMethod) -> None:
    """Thousands of owners of one size (several blocks), sizes 1..60, one owner larger than a block."""
    rng = np.random.default_rng(19)
    sizes = rng.permutation(np.concatenate([np.full(3000, 2), np.arange(1, 61), [5000], [0, 0]]))
    n_owners = len(sizes)
    owners = rng.permutation(np.repeat(np.arange(n_owners), sizes))
    vectors = (rng.standard_normal((len(owners), 6)) + 1.0).astype(np.float32)
    weights = rng.random(len(owners))
    got, counts = aggregate(method, vectors, owners, n_owners, weights=weights)
    np.testing.assert_array_equal(counts, sizes)
    if method is not AggregationMethod.CENTROID:
        want, _ = reference(method, vectors, owners, n_owners, weights, Distance.COSINE)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        return
    members = as_members(vectors, Distance.COSINE)
    checked = [int(np.argmax(sizes)), *np.flatnonzero((sizes != 2) & (sizes > 0)), *range(0, n_owners, 97)]
    for owner in checked:
        if sizes[owner]:
            assert_is_geometric_median(members[owners == owner], got[owner])


@pytest.mark.parametrize("method", ALL)
def test_output_shapes_and_dtypes(method: AggregationMethod) -> None:
    rng = np.random.default_rng(3)
    vectors, owners, weights = memberships(rng, n_owners=30, dim=5)
    aggregates, counts = aggregate(method, vectors, owners, 33, weights=weights)
    assert aggregates.shape == (33, 5) and aggregates.dtype == np.float32
    assert aggregates.flags.c_contiguous
    assert counts.shape == (33,) and counts.dtype == np.int64
    assert counts.sum() == len(owners) and not counts[30:].any() and not aggregates[30:].any()


@pytest.mark.parametrize("method", ALL)
def test_no_rows_gives_zero_aggregates(method: AggregationMethod) -> None:
    empty = np.empty((0, 4), dtype=np.float32)
    aggregates, counts = aggregate(method, empty, np.empty(0, np.int64), 3, weights=np.empty(0))
    assert aggregates.shape == (3, 4) and not aggregates.any() and not counts.any()


@pytest.mark.parametrize("method", ALL)
def test_inputs_are_left_alone(method: AggregationMethod) -> None:
    rng = np.random.default_rng(4)
    vectors, owners, weights = memberships(rng, n_owners=20)
    before = vectors.copy(), owners.copy(), weights.copy()
    aggregate(method, vectors, owners, 20, weights=weights)
    for array, copy in zip((vectors, owners, weights), before, strict=True):
        np.testing.assert_array_equal(array, copy)


def test_cosine_normalises_members_and_the_others_do_not() -> None:
    v = np.array([3.0, 4.0], dtype=np.float32)
    vectors = np.stack([v, 100 * v, np.zeros(2, np.float32)])
    owners = np.array([0, 0, 1])
    cosine, _ = aggregate(AggregationMethod.AVERAGE, vectors, owners, 2, distance=Distance.COSINE)
    np.testing.assert_allclose(cosine, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    for distance in (Distance.DOT_PRODUCT, Distance.EUCLIDEAN):
        raw, _ = aggregate(AggregationMethod.AVERAGE, vectors, owners, 2, distance=distance)
        np.testing.assert_allclose(raw, [[151.5, 202.0], [0.0, 0.0]], rtol=1e-6)


def test_weighted_mean_uses_the_weights_and_falls_back_to_the_mean() -> None:
    vectors = np.array([[0.0, 0.0], [4.0, 8.0], [2.0, 2.0], [4.0, 4.0], [6.0, 6.0]], dtype=np.float32)
    owners = np.array([0, 0, 1, 1, 1])
    weights = np.array([1.0, 3.0, 0.0, 0.0, 0.0])
    got, _ = aggregate(
        AggregationMethod.WEIGHTED_BY_DURATION,
        vectors,
        owners,
        2,
        weights=weights,
        distance=Distance.EUCLIDEAN,
    )
    np.testing.assert_allclose(got, [[3.0, 6.0], [4.0, 4.0]])


def test_weighted_mean_keeps_precision_with_large_weights() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((5000, 8)).astype(np.float32)
    weights = rng.integers(1, 10**12, size=5000).astype(np.float64)
    got, _ = aggregate(
        AggregationMethod.WEIGHTED_BY_POPULARITY,
        vectors,
        np.zeros(5000, np.int64),
        1,
        weights=weights,
        distance=Distance.DOT_PRODUCT,
    )
    want = (vectors.astype(np.float64) * weights[:, None]).sum(axis=0) / weights.sum()
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("distance", list(Distance))
def test_centroid_is_the_geometric_median(distance: Distance) -> None:
    rng = np.random.default_rng(11)
    vectors, owners, _ = memberships(rng)
    medians, counts = aggregate(AggregationMethod.CENTROID, vectors, owners, 80, distance=distance)
    members = as_members(vectors, distance)
    for owner in range(80):
        if counts[owner]:
            assert_is_geometric_median(members[owners == owner], medians[owner])
        else:
            assert not medians[owner].any()


def test_centroid_stays_on_an_input_point_that_is_the_median() -> None:
    # The mean, where the iteration starts, is the middle point: a plain Weiszfeld step divides by 0.
    points = np.array([[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=np.float32)
    median, _ = aggregate(
        AggregationMethod.CENTROID, points, np.zeros(5, np.int64), 1, distance=Distance.EUCLIDEAN
    )
    assert np.array_equal(median[0], [0, 0, 0])


@pytest.mark.parametrize("max_iter", [1, 200])
def test_centroid_holds_a_median_input_point_against_a_pull(max_iter: int) -> None:
    # Two members at the mean, the origin; the unit vectors to the others sum to sqrt 2 <= 2, so
    # the origin is the median although the others pull. Vardi-Zhang's step stays put; a Weiszfeld
    # step that merely skips the members at y would leave towards the others.
    points = np.array([[0, 0], [0, 0], [3, 0], [-1, 1], [-1, -1], [-1, 0]], dtype=np.float32)
    median, _ = aggregate(
        AggregationMethod.CENTROID,
        points,
        np.zeros(6, np.int64),
        1,
        distance=Distance.EUCLIDEAN,
        max_iter=max_iter,
    )
    assert np.array_equal(median[0], [0, 0])


def test_centroid_leaves_an_input_point_that_is_not_the_median() -> None:
    # The mean is the origin, an input point, but the unit vectors to the others sum to sqrt 2 > 1.
    points = np.array([[0, 0], [3, 0], [-1, 1], [-1, -1], [-1, 0]], dtype=np.float32)
    median, _ = aggregate(
        AggregationMethod.CENTROID, points, np.zeros(5, np.int64), 1, distance=Distance.EUCLIDEAN
    )
    # Located to about tol x spread (the step size at which it stops), found by its distance sum.
    np.testing.assert_allclose(median[0], [1 / np.sqrt(3) - 1, 0], atol=5e-5)
    assert_is_geometric_median(points.astype(np.float64), median[0])
    assert distance_sum(points, median[0]) < distance_sum(points, np.zeros(2)) - 1e-3


def test_centroid_reaches_a_median_input_point_away_from_the_mean() -> None:
    # Members in four opposite directions at uneven distances: their unit vectors cancel, so the
    # origin is the median, while the mean is elsewhere.
    points = np.array([[0, 0], [3, 0], [-2, 0], [0, 1], [0, -7]], dtype=np.float32) + 5
    median, _ = aggregate(
        AggregationMethod.CENTROID, points, np.zeros(5, np.int64), 1, distance=Distance.EUCLIDEAN
    )
    np.testing.assert_allclose(median[0], [5, 5], atol=1e-5)


def test_centroid_of_collinear_points_is_the_middle_one() -> None:
    rng = np.random.default_rng(2)
    direction = rng.standard_normal(16)
    offset = rng.standard_normal(16)
    positions: list[list[float]] = [[0, 1, 2, 10, 11], [-5, 0.5, 3], [0, 0.1, 0.2, 0.3, 50, 60, 70], [7]]
    vectors, owners, middles = [], [], []
    for owner, ts in enumerate(positions):
        line = offset + np.outer(ts, direction)
        vectors.append(line)
        owners += [owner] * len(ts)
        middles.append(line[len(ts) // 2])
    median, _ = aggregate(
        AggregationMethod.CENTROID,
        np.concatenate(vectors).astype(np.float32),
        np.array(owners),
        4,
        distance=Distance.DOT_PRODUCT,
    )
    np.testing.assert_allclose(median, np.array(middles), atol=1e-5)


def test_centroid_with_duplicates() -> None:
    a, b, c = [1.0, 2.0, 3.0], [4.0, -1.0, 0.0], [0.0, 0.0, 9.0]
    # Owner 0: three copies of a outweigh any pull of two others. Owner 1: all the same point.
    # Owner 2: two copies each of two points, the median lies anywhere between them.
    vectors = np.array([a, b, a, c, a, b, b, b, a, a, b, b], dtype=np.float32)
    owners = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    median, _ = aggregate(AggregationMethod.CENTROID, vectors, owners, 3, distance=Distance.EUCLIDEAN)
    np.testing.assert_allclose(median[0], a, atol=5e-5)
    assert_is_geometric_median(vectors[owners == 0].astype(np.float64), median[0])
    np.testing.assert_array_equal(median[1], b)
    assert_is_geometric_median(vectors[owners == 2].astype(np.float64), median[2])


def test_centroid_converges_within_the_cap() -> None:
    rng = np.random.default_rng(13)
    vectors, owners, _ = memberships(rng, n_owners=200, dim=32)
    members = as_members(vectors, Distance.EUCLIDEAN)
    medians, counts = aggregate(AggregationMethod.CENTROID, vectors, owners, 200, distance=Distance.EUCLIDEAN)
    tight, _ = aggregate(
        AggregationMethod.CENTROID,
        vectors,
        owners,
        200,
        distance=Distance.EUCLIDEAN,
        tol=1e-9,
        max_iter=100_000,
    )
    np.testing.assert_allclose(medians, tight, atol=1e-4)
    for owner in np.flatnonzero(counts > 1):
        # At the median the pull of the members balances: a tiny fraction of its largest possible size.
        assert gradient_norm(members[owners == owner], medians[owner]) <= 1e-3 * counts[owner]
    # And the iterations do the work: one step from the mean is not yet there.
    one_step, _ = aggregate(
        AggregationMethod.CENTROID, vectors, owners, 200, distance=Distance.EUCLIDEAN, max_iter=1
    )
    assert not np.allclose(one_step, medians, atol=1e-4)


def test_none_raises() -> None:
    with pytest.raises(ValueError, match="tracks only"):
        aggregate(AggregationMethod.NONE, np.ones((2, 3), np.float32), np.array([0, 0]), 1)


@pytest.mark.parametrize("method", WEIGHTED)
def test_bad_weights_raise(method: AggregationMethod) -> None:
    vectors, owners = np.ones((3, 2), np.float32), np.array([0, 1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        aggregate(method, vectors, owners, 2, weights=np.array([1.0, -1.0, 2.0]))
    with pytest.raises(ValueError, match="non-negative"):
        aggregate(method, vectors, owners, 2, weights=np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="needs weights"):
        aggregate(method, vectors, owners, 2)
    with pytest.raises(ValueError, match="weights"):
        aggregate(method, vectors, owners, 2, weights=np.ones(2))


def test_bad_owners_raise() -> None:
    vectors = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match="0..1"):
        aggregate(AggregationMethod.AVERAGE, vectors, np.array([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="0..1"):
        aggregate(AggregationMethod.AVERAGE, vectors, np.array([0, -1, 1]), 2)
    with pytest.raises(ValueError, match="owners"):
        aggregate(AggregationMethod.AVERAGE, vectors, np.array([0, 1]), 2)


@pytest.mark.parametrize(
    "method", [AggregationMethod.AVERAGE, AggregationMethod.MAX, AggregationMethod.CENTROID]
)
def test_many_owners_at_once(method: AggregationMethod) -> None:
    """200,000 rows x 64 into 20,000 owners: only practical without a Python loop per owner."""
    rng = np.random.default_rng(17)
    vectors = rng.standard_normal((200_000, 64), dtype=np.float32)
    owners = rng.integers(0, 20_000, size=200_000)
    started = time.perf_counter()
    aggregates, counts = aggregate(method, vectors, owners, 20_000)
    print(f"{method}: 200,000 x 64 into 20,000 owners in {time.perf_counter() - started:.2f}s")
    assert aggregates.shape == (20_000, 64) and counts.sum() == 200_000
    assert np.isfinite(aggregates).all()


@pytest.mark.parametrize("split", [False, True], ids=["one-run-each", "an-owner-in-two-runs"])
def test_owner_order_is_the_stable_sort_by_rank(split: bool) -> None:
    """Rows in one run per owner (an ORDER BY owner read) are placed run by run; the order is
    the stable sort's either way, so the aggregates are the same bits."""
    rng = np.random.default_rng(11)
    _, owners, _ = memberships(rng)
    n_owners = int(owners.max()) + 1
    runs = rng.permutation(n_owners)[np.sort(owners)]  # grouped, the runs in no particular order
    if split:
        runs = np.concatenate([runs[1:], runs[:1]])
    counts = np.bincount(runs, minlength=n_owners)
    by_count = np.argsort(counts, kind="stable")
    present = by_count[counts[by_count] > 0]
    rank = np.empty(n_owners, dtype=np.int64)
    rank[by_count] = np.arange(n_owners)
    want = np.argsort(rank[runs], kind="stable")
    np.testing.assert_array_equal(_owner_order(runs, by_count, present, counts[present]), want)
