"""Two real replicas (two ``fingerprints serve`` processes) over one PostgreSQL server.

- a write through one replica is served by the other within 2 seconds; a delete as well;
- a replica killed (SIGKILL) in the middle of an aggregation job: the other takes the job over
  once the lease runs out, and the aggregates equal those of a clean single-process run;
- jobs triggered at once through both replicas each run exactly once.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fingerprints.config import Settings
from fingerprints.service import aggregation
from fingerprints.service.base import open_services
from tests.aggregation.test_jobs import seed_in_process, serve
from tests.backends import make_settings, sql
from tests.helpers import ADMIN

pytestmark = [pytest.mark.postgresql, pytest.mark.replicas]

AGGREGATE = "/v1/admin/fingerprints/aggregate"
# Small enough to seed in seconds, big enough that a forced centroid job runs for a few.
CATALOG = {"n_tracks": 30_000, "n_albums": 8_000, "n_artists": 1_000, "playlists": 20}
AGGREGATES = CATALOG["n_albums"] + CATALOG["n_artists"] + CATALOG["playlists"]
REPLICA = {"hnsw_threshold": "1000000", "job_lease_seconds": "3", "sync_interval": "0.5"}


def database_env(settings: Settings) -> dict[str, str]:
    return {"catalog_url": settings.resolved_catalog_url(), "user_url": settings.resolved_user_url()}


@pytest.fixture
def shared(tmp_path: Path) -> Settings:
    """The PostgreSQL databases both replicas use."""
    return make_settings("postgresql", tmp_path / "db", aggregation_interval=0)


def replicas(stack: ExitStack, tmp_path: Path, shared: Settings, n: int = 2) -> list[tuple[Any, str, Path]]:
    """``n`` servers over ``shared``'s databases, each with its own data dir (snapshots, log)."""
    out = []
    for name in "ab"[:n]:
        data_dir = tmp_path / name / "data"
        data_dir.mkdir(parents=True)
        proc, base = stack.enter_context(serve(data_dir, **REPLICA, **database_env(shared)))
        out.append((proc, base, data_dir))
    return out


def log_text(data_dir: Path) -> str:
    return "".join(p.read_text() for p in data_dir.parent.glob("serve-*.log"))


def wait_for(check: Any, *, within: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"{what}: not within {within}s"
        time.sleep(0.02)
    return time.monotonic() - started


def similar(base: str, track: str) -> list[str] | None:
    r = httpx.get(f"{base}/v1/content/similar/track/{track}?feature_type=audio&limit=5", timeout=10)
    return [x["entity_id"] for x in r.json()["results"]] if r.status_code == 200 else None


def test_writes_and_deletes_cross_replicas_within_2_seconds(tmp_path: Path, shared: Settings) -> None:
    seed_in_process(
        tmp_path / "db",
        n_tracks=200,
        n_albums=20,
        n_artists=10,
        dimension=8,
        method="average",
        settings=shared,
    )
    with ExitStack() as stack:
        (_, a, _), (_, b, _) = replicas(stack, tmp_path, shared)
        vector = np.full(8, 0.5, np.float32)
        for writer, reader in ((a, b), (b, a)):
            # the same new neighbour for t000000 and t000001 through one replica ...
            twin = {"entity_type": "track", "vector": vector.tolist()}
            features = [{**twin, "entity_id": "t000000"}, {**twin, "entity_id": "t000001"}]
            body = {"feature_type_id": "audio", "features": features}
            r = httpx.post(f"{writer}/v1/admin/fingerprints/ingest", json=body, headers=ADMIN, timeout=10)
            assert r.status_code == 200 and r.json()["errors"] == [], r.text
            # ... is served by the other within 2 s
            took = wait_for(
                lambda r=reader: (similar(r, "t000000") or [None])[0] == "t000001", within=2, what="write"
            )
            print(f"write on one replica served by the other after {took:.3f}s")
            vector = -vector
        # a delete on B is gone on A
        body = {"feature_type_id": "audio", "entities": [{"entity_type": "track", "entity_id": "t000001"}]}
        r = httpx.request(
            "DELETE", f"{b}/v1/admin/fingerprints/features", json=body, headers=ADMIN, timeout=10
        )
        assert r.status_code == 200, r.text
        wait_for(lambda: "t000001" not in (similar(a, "t000000") or ["t000001"]), within=2, what="delete")
        assert similar(a, "t000001") is None


def aggregates(settings: Settings) -> dict[tuple[str, str], tuple[int, bytes]]:
    found = {
        (entity_type, entity_id): (version, bytes(blob))
        for entity_type, entity_id, version, blob in sql(
            settings,
            "catalog",
            "SELECT entity_type, entity_id, version, vector FROM feature_maps WHERE entity_type <> 'track'",
        )
    }
    for playlist_id, version, blob in sql(
        settings, "user", "SELECT playlist_id, version, vector FROM playlist_feature_maps"
    ):
        found[("playlist", playlist_id)] = (version, bytes(blob))
    return found


def job_status(base: str, job_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base}{AGGREGATE}/{job_id}", headers=ADMIN, timeout=10).json())


def claims(data_dirs: list[Path], job_id: str) -> list[int]:
    """How many times each replica's log says it claimed ``job_id``."""
    return [len(re.findall(rf"aggregation job {job_id} claimed", log_text(d))) for d in data_dirs]


def test_a_killed_replica_s_job_is_finished_by_the_other(tmp_path: Path, shared: Settings) -> None:
    clean = make_settings("postgresql", tmp_path / "clean", aggregation_interval=0)
    for settings in (shared, clean):
        seed_in_process(settings.data_dir, dimension=32, method="centroid", settings=settings, **CATALOG)
    services = open_services(clean)  # the reference: one uninterrupted run
    try:
        job = aggregation.trigger_aggregation(services, force=True)
        assert aggregation.claim_next_job(services) == job.id
        assert aggregation.run_job(services, job.id).status == "succeeded"
    finally:
        services.dbs.dispose()
    expected = aggregates(clean)
    assert len(expected) == AGGREGATES

    with ExitStack() as stack:
        servers = replicas(stack, tmp_path, shared)
        base = servers[0][1]
        r = httpx.post(f"{base}{AGGREGATE}", json={"force": True}, headers=ADMIN, timeout=30)
        assert r.status_code in (200, 202), r.text
        job_id = r.json()["job_id"]
        wait_for(
            lambda: 0 < job_status(base, job_id)["progress"]["processed"] < AGGREGATES,
            within=60,
            what="the job to be half-way",
        )
        data_dirs = [d for _, _, d in servers]
        runner = claims(data_dirs, job_id).index(1)
        victim, survivor = servers[runner], servers[1 - runner]
        os.kill(victim[0].pid, signal.SIGKILL)
        victim[0].wait(timeout=30)
        partial = job_status(survivor[1], job_id)
        assert partial["status"] == "running" and partial["progress"]["processed"] < AGGREGATES, partial

        wait_for(lambda: job_status(survivor[1], job_id)["status"] == "succeeded", within=120, what="resume")
        done = job_status(survivor[1], job_id)
        assert done["progress"] == {"processed": AGGREGATES, "total": AGGREGATES, "percent": 100.0}
        assert done["errors"] == []
        assert "lease expired; resuming it here" in log_text(survivor[2])
        assert claims(data_dirs, job_id) == [1, 1]
    assert aggregates(shared) == expected


def test_concurrent_triggers_run_each_job_once(tmp_path: Path, shared: Settings) -> None:
    seed_in_process(
        tmp_path / "db", n_tracks=3_000, n_albums=500, n_artists=100, dimension=16, method="average",
        settings=shared, playlists=5,
    )  # fmt: skip
    with ExitStack() as stack:
        servers = replicas(stack, tmp_path, shared)
        bases = [b for _, b, _ in servers]

        def trigger(i: int) -> str:
            r = httpx.post(f"{bases[i % 2]}{AGGREGATE}", json={"force": True}, headers=ADMIN, timeout=30)
            assert r.status_code in (200, 202), r.text
            return str(r.json()["job_id"])

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            job_ids = list(pool.map(trigger, range(8)))
        assert len(set(job_ids)) == 8

        def all_done() -> bool:
            return all(job_status(bases[0], j)["status"] == "succeeded" for j in job_ids)

        wait_for(all_done, within=120, what="every job")
        data_dirs = [d for _, _, d in servers]
        for job_id in job_ids:
            assert sum(claims(data_dirs, job_id)) == 1, (job_id, claims(data_dirs, job_id))
        rows = sql(shared, "catalog", "SELECT count(*) FROM fingerprints_jobs WHERE status = 'succeeded'")
        assert rows == [(8,)]


@pytest.fixture(autouse=True)
def _needs_postgresql() -> Iterator[None]:
    from tests.backends import require_pg

    require_pg()
    yield
