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


def test_search_benchmark_m_and_skip_exact() -> None:
    """``--m`` sets M of both graphs (the service's and raw hnswlib's) and is printed;
    ``--skip-exact`` leaves out the exact section and its goals."""
    out = io.StringIO()
    result = run(
        n=1000, dim=16, queries=30, repeats=1, m=8, skip_exact=True, tune_m=False, cold=False, out=out
    )
    report = out.getvalue()
    assert result.m == 8 and "HNSW (M=8 for both graphs" in report
    assert not result.exact_single and "exact, single query" not in report
    assert [row.ef for row in result.hnsw] == [50, 100, 200]
    assert result.goals and all(g.name.startswith("HNSW") for g in result.goals)
