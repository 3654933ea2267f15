"""The aggregation benchmark runs end to end at a tiny size; the service's album averages are the
bare-numpy means of the same data."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np

from bench.aggregate import TYPE_ID, make_data, run


def test_aggregate_benchmark_smoke(tmp_path: Path) -> None:
    out = io.StringIO()
    # max first: the average job then overwrites existing album rows, as after any earlier job
    result = run(
        tracks=1500, albums=150, artists=40, dim=16, methods=["max", "average"], data_dir=tmp_path, out=out
    )
    assert [(r.method, r.entity) for r in result.rows] == [
        ("max", "album"),
        ("max", "artist"),
        ("average", "album"),
        ("average", "artist"),
    ]
    assert all(r.service_s > 0 and r.owners > 0 for r in result.rows)
    assert result.raw_case == "overwrite"
    assert result.ratio is not None and result.ratio > 0
    assert "verified: service average album aggregates = numpy means" in out.getvalue()

    # Independently of the benchmark's own check: what the last (average) job stored is the mean
    # of each album's track vectors, computed here with bare numpy.
    data = make_data(1500, 150, 40, 16)
    order = np.argsort(data.album_of, kind="stable")
    counts = np.bincount(data.album_of, minlength=150)
    want = (
        np.add.reduceat(data.vectors[order].astype(np.float64), np.cumsum(counts) - counts) / counts[:, None]
    )
    conn = sqlite3.connect(tmp_path / "service" / "catalog.db")
    try:
        stored = dict(
            conn.execute(
                "SELECT entity_id, vector FROM feature_maps "
                "WHERE feature_type_id = ? AND entity_type = 'album'",
                (TYPE_ID,),
            ).fetchall()
        )
    finally:
        conn.close()
    assert sorted(stored) == data.album_ids
    got = np.stack([np.frombuffer(stored[a], dtype="<f4") for a in data.album_ids])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
