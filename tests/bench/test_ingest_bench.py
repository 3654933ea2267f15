"""The ingest benchmark runs end to end at a small size and checks what it stored."""

from __future__ import annotations

import io

from bench.ingest import run


def test_ingest_benchmark_smoke() -> None:
    out = io.StringIO()
    result = run(n=2000, dim=16, batch=500, out=out)
    assert result.service_seconds > 0 and result.raw_seconds > 0
    assert "verified: 2,000 rows" in out.getvalue()
