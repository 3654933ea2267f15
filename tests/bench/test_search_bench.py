"""The search benchmark runs end to end at a small size; exact search agrees with numpy."""

from __future__ import annotations

import io

from bench.search import run


def test_search_benchmark_smoke() -> None:
    out = io.StringIO()
    result = run(
        n=1000,
        dim=16,
        queries=30,
        single=20,
        repeats=1,
        tune_m=False,
        cold_kinds=("exact",),
        cold_repeats=1,
        out=out,
    )
    assert result.min_exact_recall == 1.0, result.exact_recall
    assert [row.ef for row in result.hnsw] == [50, 100, 200]
    assert all(row.single_qps["service"] > 0 for row in result.hnsw)
    assert {name: c.source for name, c in result.cold.items()} == {
        "exact, snapshot": "snapshot",
        "exact, database": "database",
    }
    assert result.goals and "goals" in out.getvalue()
