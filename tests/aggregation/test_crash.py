"""Crash safety of aggregation jobs (service/aggregation.py, service/scheduler.py): a server
killed with SIGKILL in the middle of a job re-queues it at the next start, and the job then
ends with exactly the aggregates of a clean, uninterrupted run on the same data."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from fingerprints.app import create_app
from fingerprints.service import aggregation
from fingerprints.service.base import open_services
from tests.aggregation.test_jobs import seed_in_process, serve, settings_for
from tests.helpers import ADMIN, running_client

# Sized so that a forced centroid job over every album, artist and playlist runs for a few
# seconds (measured on 2 cores: 3.5 s in process, 6-7 s in the server): long enough to kill it half-way.
CATALOG = {"n_tracks": 60_000, "n_albums": 20_000, "n_artists": 2_000, "playlists": 30}
AGGREGATES = CATALOG["n_albums"] + CATALOG["n_artists"] + CATALOG["playlists"]
# The track index of 60,000 vectors would be an HNSW graph built in the background at every
# start, competing with the job for the CPU; the exact index keeps the timing about the job.
# A short job lease: the killed server's claim runs out quickly, so the restart resumes soon.
SERVER = {"hnsw_threshold": "1000000", "job_lease_seconds": "3"}


def aggregates(data_dir: Path) -> dict[tuple[str, str, str], tuple[int, Any, bytes]]:
    """(entity type, entity id, feature type) -> (version, metadata, vector blob) of every
    album, artist and playlist feature map."""
    found: dict[tuple[str, str, str], tuple[int, Any, bytes]] = {}
    with closing(sqlite3.connect(data_dir / "catalog.db")) as conn:
        for kind, entity_id, type_id, version, metadata, vector in conn.execute(
            "SELECT entity_type, entity_id, feature_type_id, version, metadata, vector FROM feature_maps "
            "WHERE entity_type != 'track'"
        ):
            found[(kind, entity_id, type_id)] = (version, orjson.loads(metadata), vector)
    with closing(sqlite3.connect(data_dir / "user.db")) as conn:
        for entity_id, type_id, version, metadata, vector in conn.execute(
            "SELECT playlist_id, feature_type_id, version, metadata, vector FROM playlist_feature_maps"
        ):
            found[("playlist", entity_id, type_id)] = (version, orjson.loads(metadata), vector)
    return found


def stale_count(data_dir: Path) -> int:
    total = 0
    for name in ("catalog.db", "user.db"):
        with closing(sqlite3.connect(data_dir / name)) as conn:
            total += conn.execute("SELECT count(*) FROM fingerprints_stale").fetchone()[0]
    return int(total)


def job_row(data_dir: Path, job_id: str) -> tuple[str, int, int]:
    with closing(sqlite3.connect(data_dir / "catalog.db")) as conn:
        row = conn.execute(
            "SELECT status, processed, total FROM fingerprints_jobs WHERE id = ?", (job_id,)
        ).fetchone()
    assert row is not None, job_id
    return row  # type: ignore[no-any-return]


def test_a_job_killed_mid_way_is_requeued_and_ends_like_a_clean_run(tmp_path: Path) -> None:
    data, clean = tmp_path / "data", tmp_path / "clean"
    seed_in_process(data, dimension=64, method="centroid", **CATALOG)
    shutil.copytree(data, clean)
    assert stale_count(data) == AGGREGATES  # the ingest marked every album, artist and playlist

    # The reference: the same forced job, run in process without interruption.
    services = open_services(settings_for(clean))
    try:
        queued = aggregation.trigger_aggregation(services, force=True)
        assert queued.total == AGGREGATES
        assert aggregation.claim_next_job(services) == queued.id
        finished = aggregation.run_job(services, queued.id)
    finally:
        services.dbs.dispose()
    assert finished.status == "succeeded", finished
    assert (finished.processed, finished.total) == (AGGREGATES, AGGREGATES)
    expected = aggregates(clean)
    assert len(expected) == AGGREGATES

    # Start a forced job on the server and kill the server in the middle of it.
    url = "/v1/admin/fingerprints/aggregate"
    with serve(data, **SERVER) as (proc, base):
        r = httpx.post(f"{base}{url}", json={"force": True}, headers=ADMIN, timeout=30)
        assert r.status_code in (200, 202), r.text
        job_id = r.json()["job_id"]
        assert r.json()["estimated_entities"] == AGGREGATES
        deadline = time.monotonic() + 60
        while True:
            job = httpx.get(f"{base}{url}/{job_id}", headers=ADMIN, timeout=30).json()
            assert job["status"] in ("queued", "running"), f"the job ended before the kill: {job}"
            if 0 < job["progress"]["processed"] < AGGREGATES:
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    status, processed, total = job_row(data, job_id)
    assert status == "running" and 0 < processed < total == AGGREGATES, (status, processed, total)
    partial = aggregates(data)
    assert 0 < len(partial) < AGGREGATES, len(partial)  # some aggregates were written, not all
    assert 0 < stale_count(data) < AGGREGATES

    # Restart: the interrupted job is queued again and runs to the end.
    with serve(data, **SERVER) as (proc, base):
        deadline = time.monotonic() + 120
        while True:
            job = httpx.get(f"{base}{url}/{job_id}", headers=ADMIN, timeout=30).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            assert job["status"] in ("queued", "running"), job
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["status"] == "succeeded", job
        assert job["progress"] == {"processed": AGGREGATES, "total": AGGREGATES, "percent": 100.0}
        assert job["errors"] == []
        assert job["force"] is True
        assert job["started_at"] <= job["finished_at"]
        stats = httpx.get(f"{base}/v1/admin/fingerprints/stats", headers=ADMIN, timeout=30).json()
        assert stats["last_aggregation"] == job["finished_at"]
        # No second job was made: the same one ran again.
        with closing(sqlite3.connect(data / "catalog.db")) as conn:
            assert conn.execute("SELECT id FROM fingerprints_jobs").fetchall() == [(job_id,)]

    assert stale_count(data) == 0
    got = aggregates(data)
    assert got.keys() == expected.keys()
    keys = sorted(expected)
    assert [got[k][:2] for k in keys] == [expected[k][:2] for k in keys]  # versions and metadata
    got_vectors = np.stack([np.frombuffer(got[k][2], "<f4") for k in keys])
    want_vectors = np.stack([np.frombuffer(expected[k][2], "<f4") for k in keys])
    assert np.allclose(got_vectors, want_vectors, atol=1e-6)


async def test_a_job_stopped_by_a_shutdown_resumes_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A graceful stop leaves the running job between two chunks; the next start queues it again."""
    monkeypatch.setattr(aggregation, "CHUNK_OWNERS", 50)
    data = tmp_path / "data"
    seed_in_process(data, n_tracks=6000, n_albums=3000, n_artists=300, dimension=16, method="centroid")
    total = 3000 + 300
    url = "/v1/admin/fingerprints/aggregate"
    async with running_client(create_app(settings_for(data))) as client:
        r = await client.post(url, json={"force": True}, headers=ADMIN)
        job_id = r.json()["job_id"]
        deadline = time.monotonic() + 30
        while True:
            job = (await client.get(f"{url}/{job_id}", headers=ADMIN)).json()
            assert job["status"] in ("queued", "running"), job
            if job["progress"]["processed"] > 0:
                break
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.005)
    status, processed, _ = job_row(data, job_id)
    assert status == "running" and 0 < processed < total, (status, processed)

    async with running_client(create_app(settings_for(data))) as client:
        deadline = time.monotonic() + 60
        while True:
            job = (await client.get(f"{url}/{job_id}", headers=ADMIN)).json()
            if job["status"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.02)
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"processed": total, "total": total, "percent": 100.0}
    assert len(aggregates(data)) == total
    assert stale_count(data) == 0
