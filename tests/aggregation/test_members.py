"""Integer keys to row positions (aggregation/members.py) and aggregates of gathered rows."""

from __future__ import annotations

import numpy as np
import pytest

from fingerprints.aggregation.members import positions
from fingerprints.aggregation.methods import aggregate
from fingerprints.domain import AggregationMethod, Distance


@pytest.mark.parametrize("spread", [1, 10**12], ids=["dense", "sparse"])
def test_positions_find_each_key_or_minus_one(spread: int) -> None:
    rng = np.random.default_rng(7)
    keys = rng.permutation(np.arange(1, 2001) * spread)
    values = np.concatenate([keys[rng.integers(0, len(keys), 5000)], np.array([0, 2001 * spread])])
    found = positions(keys, values)
    assert np.array_equal(keys[found[:-2]], values[:-2])
    assert found[-2:].tolist() == [-1, -1]
    assert positions(keys, np.empty(0, np.int64)).shape == (0,)
    assert positions(np.empty(0, np.int64), values).tolist() == [-1] * len(values)


@pytest.mark.parametrize("method", [m for m in AggregationMethod if m is not AggregationMethod.NONE])
def test_gathered_rows_aggregate_like_repeated_vectors(method: AggregationMethod) -> None:
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    rows = rng.integers(0, 50, 300)  # vectors shared by several members
    owners = rng.integers(0, 40, 300)
    weights = rng.integers(0, 100, 300).astype(np.float64)
    kwargs = {"weights": weights, "distance": Distance.EUCLIDEAN}
    got, got_counts = aggregate(method, vectors, owners, 42, rows=rows, **kwargs)  # type: ignore[arg-type]
    want, want_counts = aggregate(method, vectors[rows], owners, 42, **kwargs)  # type: ignore[arg-type]
    assert np.array_equal(got_counts, want_counts)
    np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        aggregate(method, vectors, owners, 42, rows=rows + 50, **kwargs)  # type: ignore[arg-type]
