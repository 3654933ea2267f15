"""Index sync through the change log: two service instances over one database (two apps in
this process: each has its own index and its own origin, exactly like two replicas), on both
backends. What one writes, the other serves within 2 seconds; snapshots catch up by replay."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fingerprints.app import create_app
from fingerprints.config import Settings
from tests.api.similar_helpers import delete_maps, ingest, set_active
from tests.backends import sql
from tests.helpers import ADMIN, running_client, seed

SIMILAR = "/v1/content/similar/track/{}?feature_type=audio&limit=10"


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 2.0) -> float:
    """Seconds until ``check`` holds; fails when it does not within ``within`` seconds."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"not true within {within}s")
        await asyncio.sleep(0.02)


async def similar_ids(client: httpx.AsyncClient, track: str) -> list[str] | None:
    r = await client.get(SIMILAR.format(track))
    if r.status_code != 200:
        return None
    body: dict[str, Any] = r.json()
    return [item["entity_id"] for item in body["results"]]


def replica_pair(settings_for: Callable[..., Settings], tmp_path: Path) -> tuple[Settings, Settings]:
    """Two instances' settings: one database, separate data dirs (their own snapshots)."""
    first = settings_for(tmp_path / "a", aggregation_interval=0, sync_interval=0.05)
    second = first.model_copy(
        update={
            "data_dir": tmp_path / "b",
            "catalog_url": first.resolved_catalog_url(),
            "user_url": first.resolved_user_url(),
        }
    )
    return first, second


VECTORS = {
    "t1": np.array([1, 0, 0, 0], np.float32),
    "t2": np.array([0.9, 0.1, 0, 0], np.float32),
    "t3": np.array([0, 1, 0, 0], np.float32),
    "t4": np.array([0.2, 0.9, 0.1, 0], np.float32),
}


async def test_writes_on_one_instance_are_served_by_the_other(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    first, second = replica_pair(settings_for, tmp_path)
    async with running_client(create_app(first)) as a, running_client(create_app(second)) as b:
        # a feature type registered on A after B started: B learns it from the log
        await seed(a)
        await ingest(a, "audio", "track", VECTORS)

        async def b_sees_all() -> bool:
            return await similar_ids(b, "t1") == ["t2", "t4", "t3"]

        await eventually(b_sees_all)

        # an update on A moves t3 next to t1 on B as well
        await ingest(a, "audio", "track", {"t3": np.array([1, 0.05, 0, 0], np.float32)})

        async def b_sees_update() -> bool:
            return (await similar_ids(b, "t1") or [None])[0] == "t3"

        await eventually(b_sees_update)

        # a delete on B is gone on A
        await delete_maps(b, "audio", [("track", "t3")])

        async def a_lost_t3() -> bool:
            ids = await similar_ids(a, "t1")
            return ids is not None and "t3" not in ids

        await eventually(a_lost_t3)

        # deactivating the type on A: B stops serving it
        await set_active(a, "audio", False)

        async def b_refuses() -> bool:
            r = await b.get(SIMILAR.format("t1"))
            return r.status_code == 404

        await eventually(b_refuses)


async def test_aggregate_and_playlist_writes_reach_the_other_instance(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    first, second = replica_pair(settings_for, tmp_path)
    async with running_client(create_app(first)) as a, running_client(create_app(second)) as b:
        await seed(a)
        more = {"t5": np.array([0, 0, 1, 0], np.float32), "t6": np.array([0, 0, 1, 1], np.float32)}
        await ingest(a, "audio", "track", {**VECTORS, **more})
        r = await a.post("/v1/admin/fingerprints/aggregate", json={"force": True}, headers=ADMIN)
        assert r.status_code in (200, 202), r.text
        job = r.json()["job_id"]

        async def job_done() -> bool:
            status = (await a.get(f"/v1/admin/fingerprints/aggregate/{job}", headers=ADMIN)).json()
            return bool(status["status"] == "succeeded")

        # the job runs on whichever instance claims it first
        await eventually(job_done, within=10)

        async def both_serve_albums() -> bool:
            for client in (a, b):
                r = await client.get("/v1/content/similar/album/al1?feature_type=audio&limit=5")
                if r.status_code != 200 or [x["entity_id"] for x in r.json()["results"]] != ["al2"]:
                    return False
            return True

        await eventually(both_serve_albums)

        # the playlist p1 (owner 7) is deleted on B: its fingerprint is gone on A's index too
        r = await b.delete("/v1/admin/playlists/p1", headers=ADMIN)
        assert r.status_code in (200, 204), r.text

        async def playlist_gone() -> bool:
            r = await a.get("/v1/content/similar/playlist/p1?feature_type=audio", headers=ADMIN)
            return r.status_code == 404

        await eventually(playlist_gone)


async def test_stale_snapshot_catches_up_from_the_log_or_is_rebuilt(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    """A snapshot older than the database replays the log's changes since it was saved; once
    the log no longer reaches back that far, the key is rebuilt from the database."""
    first, _ = replica_pair(settings_for, tmp_path)
    snapshot_dir = tmp_path / "a" / "index" / "audio" / "track"
    old = tmp_path / "old-snapshot"
    async with running_client(create_app(first)) as a:
        await seed(a)
        await ingest(a, "audio", "track", VECTORS)
        assert await similar_ids(a, "t1") == ["t2", "t4", "t3"]  # loads the key: snapshot at exit
    shutil.copytree(snapshot_dir, old)
    async with running_client(create_app(first)) as a:
        await ingest(a, "audio", "track", {"t5": np.array([0, 0, 1, 0], np.float32)})

    for log_kept, source in ((True, "snapshot"), (False, "database")):
        shutil.rmtree(snapshot_dir)
        shutil.copytree(old, snapshot_dir)
        if not log_kept:
            sql(first, "catalog", "DELETE FROM fingerprints_changes")
        async with running_client(create_app(first)) as a:
            key = (await a.get("/readyz")).json()["index"]["keys"]["audio/track"]
            assert (key["source"], key["size"]) == (source, 5), key
            assert await similar_ids(a, "t1") == ["t2", "t4", "t3", "t5"]
