"""Stale marking through the real app (spec §5.2 step 5, §5.3; design Q3, §4).

Every assertion on markers reads the ``fingerprints_stale`` tables of catalog.db (albums,
artists) and user.db (playlists) directly with sqlite3. The periodic sweep is off
(``aggregation_interval=0``), so markers only go away when a job the test queues handles them.
"""

from __future__ import annotations

import asyncio
import copy
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fingerprints.app import create_app
from fingerprints.config import Settings
from tests.helpers import ADMIN, ADMIN_TOKEN, running_client, seed, small_catalog

Marker = tuple[str, str, str]  # (feature type, entity type, entity id)
TRACKS = ["t1", "t2", "t3", "t4", "t5", "t6"]


# ------------------------------------------------------------------ helpers


@asynccontextmanager
async def app_client(data_dir: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Settings(**{"data_dir": data_dir, "admin_token": ADMIN_TOKEN, "aggregation_interval": 0, **settings})
    )
    async with running_client(app) as client:
        yield client


def markers(data_dir: Path, db: str | None = None) -> set[Marker]:
    """The stale markers of catalog.db and user.db (or only of ``db``)."""
    found: set[Marker] = set()
    for name in ("catalog.db", "user.db") if db is None else (db,):
        with closing(sqlite3.connect(data_dir / name)) as conn:
            found |= set(
                conn.execute("SELECT feature_type_id, entity_type, entity_id FROM fingerprints_stale")
            )
    return found


def expect(type_ids: list[str], **ids: list[str]) -> set[Marker]:
    """Markers for every given type: expect(["audio"], album=["al1"], artist=["ar1"])."""
    return {(t, kind, i) for t in type_ids for kind, entity_ids in ids.items() for i in entity_ids}


def vectors(seed_: int, ids: list[str], dimension: int = 4) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed_)
    return {i: (rng.standard_normal(dimension) + 0.5).astype(np.float32).tolist() for i in ids}


async def register(client: httpx.AsyncClient, type_id: str, **fields: Any) -> None:
    body = {"id": type_id, "name": type_id.title(), "dimension": 4, **fields}
    r = await client.post("/v1/admin/fingerprints/types", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text


async def ingest(
    client: httpx.AsyncClient, type_id: str, by_track: dict[str, list[float]], version: int | None = None
) -> None:
    body: dict[str, Any] = {
        "feature_type_id": type_id,
        "features": [{"entity_type": "track", "entity_id": t, "vector": v} for t, v in by_track.items()],
    }
    if version is not None:
        body["version"] = version
    r = await client.post("/v1/admin/fingerprints/ingest", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {"ingested": len(by_track), "errors": []}, r.text


async def delete_tracks(client: httpx.AsyncClient, track_ids: list[str], type_id: str | None = None) -> None:
    body: dict[str, Any] = {"entities": [{"entity_type": "track", "entity_id": t} for t in track_ids]}
    if type_id is not None:
        body["feature_type_id"] = type_id
    r = await client.request("DELETE", "/v1/admin/fingerprints/features", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["deleted"] > 0, r.text


async def aggregate(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """Queue a job, wait for it to succeed and return its final status."""
    r = await client.post("/v1/admin/fingerprints/aggregate", json=body, headers=ADMIN)
    assert r.status_code in (200, 202), r.text
    started = r.json()
    deadline = time.monotonic() + 30
    while True:
        r = await client.get(f"/v1/admin/fingerprints/aggregate/{started['job_id']}", headers=ADMIN)
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, f"job did not finish: {job}"
        await asyncio.sleep(0.02)
    assert job["status"] == "succeeded", job
    assert job["progress"]["processed"] == job["progress"]["total"] == started["estimated_entities"], job
    return job


async def fingerprint(client: httpx.AsyncClient, kind: str, entity_id: str) -> httpx.Response:
    return await client.get(f"/v1/content/fingerprint/{kind}/{entity_id}", headers=ADMIN)


def unit_mean(by_track: dict[str, list[float]], ids: list[str]) -> np.ndarray:
    """The average aggregate under cosine: the mean of the members' unit vectors."""
    x = np.array([by_track[i] for i in ids], dtype=np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).mean(axis=0)


async def check_average(
    client: httpx.AsyncClient, kind: str, entity_id: str, by_track: dict[str, list[float]], ids: list[str]
) -> None:
    r = await fingerprint(client, kind, entity_id)
    assert r.status_code == 200, r.text
    stored = r.json()["fingerprint"]["audio"]
    assert stored["metadata"] == {"track_count": len(ids), "method": "average"}
    assert np.allclose(stored["vector"], unit_mean(by_track, ids), atol=1e-6)


def track(track_id: str, **changes: Any) -> dict[str, Any]:
    """A track of the small catalog as upserted by seed(), with some fields changed."""
    found = next(t for t in small_catalog()["tracks"] if t["id"] == track_id)
    return {**copy.deepcopy(found), **changes}


async def seeded_and_clean(client: httpx.AsyncClient, data_dir: Path) -> dict[str, list[float]]:
    """The small catalog, every track ingested for ``audio``, aggregated: no markers left."""
    await seed(client)
    by_track = vectors(1, TRACKS)
    await ingest(client, "audio", by_track)
    await aggregate(client)
    assert markers(data_dir) == set()
    return by_track


# ------------------------------------------------------------------ ingest


async def test_seeding_the_catalog_before_any_type_marks_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data) as client:
        await seed(client)
        assert markers(data) == set()


@pytest.mark.parametrize(
    ("track_id", "albums", "artists", "playlists"),
    [
        ("t1", ["al1"], ["ar1"], ["p1"]),  # on al1 by ar1, in playlist p1
        ("t2", ["al1"], ["ar1", "ar2"], []),  # ar2 is a featured artist
        ("t6", ["al2"], ["ar3"], ["p1"]),
        ("t4", ["al1"], ["ar1"], []),
    ],
)
async def test_ingesting_one_track_marks_its_album_artists_and_playlists_for_that_type_only(
    tmp_path: Path, track_id: str, albums: list[str], artists: list[str], playlists: list[str]
) -> None:
    data = tmp_path / "data"
    async with app_client(data) as client:
        await seed(client)  # type audio: average, applies to every entity type
        await register(client, "mood", aggregation_method="max")
        await register(client, "raw", aggregation_method="none")
        await register(client, "album_only", applies_to=["track", "album"])
        assert markers(data) == set()

        await ingest(client, "audio", vectors(1, [track_id]))
        wanted = expect(["audio"], album=albums, artist=artists, playlist=playlists)
        assert markers(data) == wanted
        # Albums and artists are marked in catalog.db, playlists in user.db (design Q1/Q3).
        assert markers(data, "catalog.db") == expect(["audio"], album=albums, artist=artists)
        assert markers(data, "user.db") == expect(["audio"], playlist=playlists)

        # A type with aggregation method "none" has no aggregates to mark.
        await ingest(client, "raw", vectors(2, [track_id]))
        assert markers(data) == wanted

        # A type aggregating into albums only marks albums.
        await ingest(client, "album_only", vectors(3, [track_id]))
        wanted |= expect(["album_only"], album=albums)
        assert markers(data) == wanted

        await ingest(client, "mood", vectors(4, [track_id]))
        wanted |= expect(["mood"], album=albums, artist=artists, playlist=playlists)
        assert markers(data) == wanted


async def test_main_artists_only_does_not_mark_featured_artists(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data, aggregation_main_artists_only=True) as client:
        await seed(client)
        await ingest(client, "audio", vectors(1, ["t2"]))  # t2: main ar1, featuring ar2
        assert markers(data) == expect(["audio"], album=["al1"], artist=["ar1"])

        # ... and an artist is then aggregated from the tracks where it is a main artist only.
        await ingest(client, "audio", vectors(1, TRACKS))
        await aggregate(client)
        assert (await fingerprint(client, "artist", "ar2")).status_code == 404
        r = await fingerprint(client, "artist", "ar1")
        assert r.json()["fingerprint"]["audio"]["metadata"]["track_count"] == 4


async def test_featured_artists_are_aggregated_by_default(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data) as client:
        by_track = await seeded_and_clean(client, data)
        await check_average(client, "artist", "ar2", by_track, ["t2"])
        await check_average(client, "artist", "ar1", by_track, ["t1", "t2", "t3", "t4"])


async def test_reingesting_a_track_marks_again_after_a_job(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data) as client:
        await seeded_and_clean(client, data)
        await ingest(client, "audio", vectors(9, ["t5"]))
        assert markers(data) == expect(["audio"], album=["al2"], artist=["ar3"], playlist=["p1"])


async def test_ingest_rejected_items_mark_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data) as client:
        await seed(client)
        body = {
            "feature_type_id": "audio",
            "features": [
                {"entity_type": "track", "entity_id": "t5", "vector": [1.0, 2.0]},  # wrong dimension
                {"entity_type": "track", "entity_id": "nope", "vector": [1.0, 2.0, 3.0, 4.0]},
            ],
        }
        r = await client.post("/v1/admin/fingerprints/ingest", json=body, headers=ADMIN)
        assert r.status_code == 200 and r.json()["ingested"] == 0, r.text
        assert markers(data) == set()


# ------------------------------------------------------------------ delete


async def test_deleting_a_track_feature_marks_the_same_aggregates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data) as client:
        await seed(client)
        await register(client, "mood", aggregation_method="max")
        await register(client, "raw", aggregation_method="none")
        for type_id in ("audio", "mood", "raw"):
            await ingest(client, type_id, vectors(5, TRACKS))
        await aggregate(client)
        assert markers(data) == set()

        # Of one type: only that type's aggregates.
        await delete_tracks(client, ["t2"], type_id="audio")
        assert markers(data) == expect(["audio"], album=["al1"], artist=["ar1", "ar2"])
        await aggregate(client)
        assert markers(data) == set()

        # Of every type: every aggregating type's (never "raw", whose method is none).
        await delete_tracks(client, ["t6"])
        assert markers(data) == expect(["audio", "mood"], album=["al2"], artist=["ar3"], playlist=["p1"])


async def test_a_job_clears_only_the_markers_it_handled(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data) as client:
        await seed(client)
        await register(client, "mood", aggregation_method="max")
        await ingest(client, "audio", vectors(1, ["t1", "t2"]))
        await ingest(client, "mood", vectors(2, ["t1", "t2"]))
        both = expect(["audio", "mood"], album=["al1"], artist=["ar1", "ar2"], playlist=["p1"])
        assert markers(data) == both

        job = await aggregate(client, feature_type_id="audio", entity_types=["album"])
        assert job["progress"]["total"] == 1
        left = both - expect(["audio"], album=["al1"])
        assert markers(data) == left

        job = await aggregate(client, entity_types=["playlist"])
        assert job["progress"]["total"] == 2  # p1 for audio and for mood
        left -= expect(["audio", "mood"], playlist=["p1"])
        assert markers(data) == left
        assert markers(data, "user.db") == set()

        job = await aggregate(client)
        assert job["progress"]["total"] == len(left) == 5  # mood/al1, ar1, ar2 for both types
        assert markers(data) == set()

        # Everything it recomputed is there.
        for kind, entity_id in (("album", "al1"), ("artist", "ar1"), ("artist", "ar2"), ("playlist", "p1")):
            r = await fingerprint(client, kind, entity_id)
            assert r.status_code == 200, r.text
            assert set(r.json()["fingerprint"]) == {"audio", "mood"}


# ------------------------------------------------------------------ catalog and playlist changes


async def test_moving_a_track_marks_its_old_and_new_album_and_artists(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data) as client:
        by_track = await seeded_and_clean(client, data)
        await register(client, "raw", aggregation_method="none")

        moved = track("t4", album_id="al2", artist_ids=["ar3"])
        r = await client.post("/v1/admin/catalog", json={"tracks": [moved]}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["errors"] == [], r.text
        assert markers(data) == expect(["audio"], album=["al1", "al2"], artist=["ar1", "ar3"])

        await aggregate(client)
        assert markers(data) == set()
        await check_average(client, "album", "al1", by_track, ["t1", "t2", "t3"])
        await check_average(client, "album", "al2", by_track, ["t4", "t5", "t6"])
        await check_average(client, "artist", "ar1", by_track, ["t1", "t2", "t3"])
        await check_average(client, "artist", "ar3", by_track, ["t4", "t5", "t6"])


async def test_an_album_whose_tracks_all_move_away_loses_its_aggregate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data) as client:
        by_track = await seeded_and_clean(client, data)
        assert (await fingerprint(client, "album", "al2")).status_code == 200

        moved = [track("t5", album_id="al1"), track("t6", album_id="al1")]
        r = await client.post("/v1/admin/catalog", json={"tracks": moved}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["errors"] == [], r.text
        assert expect(["audio"], album=["al1", "al2"]) <= markers(data)

        await aggregate(client)
        assert (await fingerprint(client, "album", "al2")).status_code == 404
        await check_average(client, "album", "al1", by_track, TRACKS)


async def test_changing_a_playlist_marks_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data) as client:
        by_track = await seeded_and_clean(client, data)
        await register(client, "raw", aggregation_method="none")
        await register(client, "album_only", applies_to=["track", "album"])

        # A track twice in a playlist counts once.
        body = {"id": "p1", "user_id": 7, "name": "Mine", "track_ids": ["t2", "t3", "t2"]}
        r = await client.post("/v1/admin/playlists", json=body, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert markers(data) == markers(data, "user.db") == expect(["audio"], playlist=["p1"])

        await aggregate(client)
        assert markers(data) == set()
        await check_average(client, "playlist", "p1", by_track, ["t2", "t3"])

        # A new playlist is marked too; deleting it drops its marker.
        body = {"id": "p2", "user_id": 8, "name": "Theirs", "track_ids": ["t4"]}
        r = await client.post("/v1/admin/playlists", json=body, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert markers(data) == expect(["audio"], playlist=["p2"])
        r = await client.delete("/v1/admin/playlists/p2", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert markers(data) == set()


async def test_emptying_a_playlist_removes_its_aggregate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data) as client:
        await seeded_and_clean(client, data)
        body = {"id": "p1", "user_id": 7, "name": "Mine", "track_ids": []}
        r = await client.post("/v1/admin/playlists", json=body, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert markers(data) == expect(["audio"], playlist=["p1"])
        await aggregate(client)
        assert (await fingerprint(client, "playlist", "p1")).status_code == 404


# ------------------------------------------------------------------ losing every member vector


async def test_an_album_that_loses_all_its_track_features_loses_its_aggregate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data) as client:
        by_track = await seeded_and_clean(client, data)
        for kind, entity_id in (("album", "al2"), ("artist", "ar3"), ("playlist", "p1")):
            assert (await fingerprint(client, kind, entity_id)).status_code == 200

        await delete_tracks(client, ["t5", "t6"])
        assert markers(data) == expect(["audio"], album=["al2"], artist=["ar3"], playlist=["p1"])
        # Until the next job the old aggregate stays queryable.
        assert (await fingerprint(client, "album", "al2")).status_code == 200

        await aggregate(client)
        assert markers(data) == set()
        assert (await fingerprint(client, "album", "al2")).status_code == 404
        assert (await fingerprint(client, "artist", "ar3")).status_code == 404
        await check_average(client, "playlist", "p1", by_track, ["t1"])  # t5, t6 have no vector now
        with closing(sqlite3.connect(data / "catalog.db")) as conn:
            left = conn.execute(
                "SELECT entity_type, entity_id FROM feature_maps WHERE entity_type != 'track' ORDER BY 1, 2"
            ).fetchall()
        assert left == [("album", "al1"), ("artist", "ar1"), ("artist", "ar2")]


# ------------------------------------------------------------------ the periodic sweep


async def test_the_periodic_sweep_recomputes_what_is_stale(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data, aggregation_interval=0.2) as client:
        await seed(client)
        by_track = vectors(1, TRACKS)
        await ingest(client, "audio", by_track)
        deadline = time.monotonic() + 15
        while markers(data):
            assert time.monotonic() < deadline, markers(data)
            await asyncio.sleep(0.05)
        await check_average(client, "album", "al1", by_track, ["t1", "t2", "t3", "t4"])
        await check_average(client, "playlist", "p1", by_track, ["t1", "t5", "t6"])

        def jobs() -> list[tuple[str, str, int]]:
            with closing(sqlite3.connect(data / "catalog.db")) as conn:
                return conn.execute('SELECT "trigger", status, total FROM fingerprints_jobs').fetchall()

        deadline = time.monotonic() + 15
        while jobs()[-1][1] != "succeeded":
            assert time.monotonic() < deadline, jobs()
            await asyncio.sleep(0.05)
        assert jobs() == [("schedule", "succeeded", 6)]
        # Nothing stale: the sweeps that follow queue no job.
        await asyncio.sleep(1.5)
        assert jobs() == [("schedule", "succeeded", 6)]
