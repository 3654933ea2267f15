"""The scale-out benchmark runs end to end at a small size (on the PostgreSQL server of
``FINGERPRINTS_TEST_PG_URL``; skipped without one). The replicas part starts two real
``fingerprints serve`` processes, so it is marked ``replicas`` as well (``-m "not replicas"``
leaves it out)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bench.scaleout import run
from tests.backends import require_pg

pytestmark = pytest.mark.postgresql


def test_scaleout_pg_vs_sqlite_smoke(tmp_path: Path) -> None:
    out = io.StringIO()
    result = run(
        n=1500,
        dim=16,
        batch=500,
        queries=30,
        query_rounds=2,
        replicas=False,
        pg_url=require_pg(),
        json_path=tmp_path / "scaleout.json",
        out=out,
    )
    assert result.ingest is not None and result.queries is not None and result.replicas is None
    assert all(s > 0 for s in result.ingest.seconds.values())
    assert result.ingest.ratio > 0 and result.queries.ratio > 0
    text = out.getvalue()
    assert "verified: 1,500 vectors stored in each database, byte-identical" in text
    assert "ratio (PostgreSQL / SQLite)" in text
    data = json.loads((tmp_path / "scaleout.json").read_text())
    assert set(data) >= {"ingest", "similar_in_process", "machine"}


@pytest.mark.replicas
def test_scaleout_replicas_smoke() -> None:
    out = io.StringIO()
    result = run(
        n=1000,
        dim=16,
        batch=500,
        queries=20,
        query_rounds=1,
        replicas=True,
        concurrency=4,
        duration=1.0,
        rounds=1,
        pg_url=require_pg(),
        out=out,
    )
    assert result.replicas is not None
    assert sorted(r.replicas for r in result.replicas.runs) == [1, 2]
    assert all(r.requests > 0 for r in result.replicas.runs)
    assert "ratio (two / one), QPS" in out.getvalue()
