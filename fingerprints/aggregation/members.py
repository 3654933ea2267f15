"""Integer keys to row positions, vectorized: how memberships find their owners and vectors."""

from __future__ import annotations

import numpy as np

# A lookup table is used while it stays within this many times the keys and values it serves.
_DENSE_FACTOR = 4


def positions(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The index in ``keys`` (distinct integers) of each of ``values``; -1 where absent."""
    keys = np.asarray(keys, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    if keys.size == 0 or values.size == 0:
        return np.full(values.shape, -1, dtype=np.int64)
    low = min(int(keys.min()), int(values.min()))
    high = max(int(keys.max()), int(values.max()))
    if low >= 0 and high < _DENSE_FACTOR * (keys.size + values.size) + 1024:
        # Rowids are small and dense: one table indexed by the key is the fastest map.
        table = np.full(high + 1, -1, dtype=np.int64)
        table[keys] = np.arange(keys.size)
        return table[values]  # type: ignore[no-any-return]
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    at = np.minimum(np.searchsorted(ordered, values), keys.size - 1)
    return np.where(ordered[at] == values, order[at], -1)
