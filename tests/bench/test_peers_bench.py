"""The peers benchmark: goals and missing peers (fast), and a small end-to-end run (``-m bench``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.peers import SPECS, Spec, goals, run, run_system


def _installed(spec: Spec) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in spec.modules)


def _result(ingest_vps: float, curve: list[tuple[Any, float, float]], **extra: Any) -> dict[str, Any]:
    points = [{"setting": s, "recall": r, "qps": q, "p50_ms": 1.0, "p95_ms": 2.0} for s, r, q in curve]
    return {"ingest_vps": ingest_vps, "ingest_n": 10, "curve": points, **extra}


def test_a_missing_peer_is_reported_with_its_error(tmp_path: Path) -> None:
    ghost = Spec("ghost", ("no_such_module_for_peers",), ("no-such-dist",), "peer", "append-only", "-", "-")
    empty = np.zeros((1, 2), dtype=np.float32)
    out = run_system(ghost, tmp_path, 1, None, empty, empty)
    assert out["error"].startswith("not installed: no_such_module_for_peers")
    assert out["versions"] == {"no-such-dist": "not installed"}


def test_goals_compare_the_service_with_the_peers() -> None:
    results = {
        "hnswlib": _result(5_000, [(64, 0.90, 9_000), (400, 0.96, 2_000)]),
        "service": _result(
            60_000,
            [(32, 0.93, 9_000), (48, 0.97, 6_000)],
            cold_s=0.5,
            extra={"index": {"ef_search": 48}},
            same_graph=[{"setting": 48, "service_qps": 6_000, "raw_qps": 6_600}],
        ),
        "chromadb": _result(1_000, [(128, 0.96, 2_500)], cold_s=2.0),
        "lancedb": _result(100_000, [("40/10", 0.93, 300)], cold_s=0.4),
        "milvus-lite": {"error": "not installed: pymilvus"},
    }
    by_name = {g["goal"]: g for g in goals(results)}
    assert len(by_name) == 6
    assert by_name["QPS at recall>=0.95: service / best peer"]["value"] == pytest.approx(6_000 / 2_500)
    assert by_name["QPS at recall>=0.95: service / raw hnswlib M=16"]["pass"]
    assert by_name["ingest: service / fastest peer that indexes on write"]["value"] == pytest.approx(60)
    assert by_name["ingest: service / fastest append-only peer"]["value"] == pytest.approx(0.6)
    assert not by_name["cold start: service / best peer"]["pass"]  # lancedb opens faster
    overhead = by_name["service-layer overhead over raw hnswlib, same graph and ef"]
    assert overhead["value"] == pytest.approx(0.1) and overhead["pass"]


@pytest.mark.bench
def test_peers_benchmark_smoke(tmp_path: Path) -> None:
    installed = [s.name for s in SPECS if _installed(s)]
    report = run(
        n=2_000,
        queries=100,
        only=installed,
        out_dir=tmp_path,
        plots=importlib.util.find_spec("matplotlib") is not None,
        qdrant_budget_s=10,
        say=lambda line: None,
    )
    results = report["results"]
    assert set(results) == set(installed)
    for name in ("numpy", "hnswlib", "service"):
        assert "error" not in results[name], results[name]
    assert [p["recall"] for p in results["numpy"]["curve"]] == [1.0]
    assert results["service"]["curve"][0]["recall"] == 1.0  # exact below the HNSW threshold
    assert all(r.get("error") or r["ingest_vps"] > 0 for r in results.values())
    assert len(report["goals"]) == 6
    assert (tmp_path / "peers-n2000.json").exists() and (tmp_path / "peers-n2000.md").exists()
