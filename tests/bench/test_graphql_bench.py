"""The GraphQL benchmark runs end to end at a tiny size (seeding, a real server, both parts) and
prints its table."""

from __future__ import annotations

import io

from bench.graphql import FP_GRAPHQL, FP_ORJSON, REST_SIMILAR, TRACK_PAGE, run


def test_graphql_benchmark_smoke() -> None:
    out = io.StringIO()
    result = run(
        tracks=300, albums=30, artists=10, requests=8, warmup=2, repeats=1, entities=20, settle=0.5, out=out
    )
    text = out.getvalue()
    assert result.seed_seconds is not None and result.seed_seconds > 0
    assert result.index == {"audio_spectrum/track": "exact", "HNSW graphs": "0 of 12 keys"}
    assert all(s.p50 > 0 and s.p95 >= s.p50 for s in result.track_page.values())
    assert len(result.track_page) == 4  # (a), (b) and the two cheaper GraphQL queries
    assert result.ratio > 0 and len(result.round_ratios) == 1
    assert result.fingerprint[FP_GRAPHQL].p50 > 0 and result.fingerprint[FP_ORJSON].p50 > 0
    assert result.fingerprint_ratio > 0
    for line in (TRACK_PAGE, REST_SIMILAR, FP_GRAPHQL, FP_ORJSON, "ratio (a) / (b), p50", "ratio (i) / (ii)"):
        assert line in text
    assert ("PASS" if result.passed else "FAIL") in text
    assert "verified: GraphQL similar == REST similar" in text
    assert "byte-identical to the GraphQL body: float lists yes, float32 arrays yes" in text
