"""Test helpers: run the app as a client would, seed a small catalog, snapshot stored state."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from fingerprints.config import Settings

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@asynccontextmanager
async def running_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, behind an httpx client on an in-process transport."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def small_catalog() -> dict[str, Any]:
    """3 artists, 2 albums, 6 tracks: t1..t4 on al1 (by ar1, t2 featuring ar2), t5..t6 on al2 (ar3)."""
    return {
        "artists": [
            {"id": "ar1", "name": "Artist One", "genres": ["rock", "indie"], "popularity": 70},
            {"id": "ar2", "name": "Artist Two", "genres": ["jazz"], "popularity": 40},
            {"id": "ar3", "name": "Artist Three", "genres": ["electronic"], "popularity": 55},
        ],
        "albums": [
            {"id": "al1", "name": "Album One", "artist_ids": ["ar1"], "release_date": "2020-01-01"},
            {"id": "al2", "name": "Album Two", "artist_ids": ["ar3"], "album_type": "single"},
        ],
        "tracks": [
            {
                "id": "t1",
                "name": "One",
                "album_id": "al1",
                "artist_ids": ["ar1"],
                "duration_ms": 200_000,
                "popularity": 50,
                "track_number": 1,
            },
            {
                "id": "t2",
                "name": "Two",
                "album_id": "al1",
                "artist_ids": ["ar1"],
                "featured_artist_ids": ["ar2"],
                "duration_ms": 180_000,
                "popularity": 60,
                "track_number": 2,
            },
            {
                "id": "t3",
                "name": "Three",
                "album_id": "al1",
                "artist_ids": ["ar1"],
                "duration_ms": 240_000,
                "popularity": 10,
                "track_number": 3,
            },
            {
                "id": "t4",
                "name": "Four",
                "album_id": "al1",
                "artist_ids": ["ar1"],
                "duration_ms": 210_000,
                "popularity": 0,
                "track_number": 4,
            },
            {
                "id": "t5",
                "name": "Five",
                "album_id": "al2",
                "artist_ids": ["ar3"],
                "duration_ms": 300_000,
                "popularity": 90,
                "track_number": 1,
            },
            {
                "id": "t6",
                "name": "Six",
                "album_id": "al2",
                "artist_ids": ["ar3"],
                "duration_ms": 150_000,
                "popularity": 20,
                "track_number": 2,
                "explicit": True,
            },
        ],
    }


async def seed(client: httpx.AsyncClient, *, dimension: int = 4, **type_fields: Any) -> None:
    """The small catalog, playlist p1 (owner 7: t1, t5, t6) and feature type ``audio``."""
    r = await client.post("/v1/admin/catalog", json=small_catalog(), headers=ADMIN)
    assert r.status_code == 200 and r.json()["errors"] == [], r.text
    r = await client.post(
        "/v1/admin/playlists",
        json={"id": "p1", "user_id": 7, "name": "Mine", "track_ids": ["t1", "t5", "t6"]},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    body = {"id": "audio", "name": "Audio", "dimension": dimension, **type_fields}
    r = await client.post("/v1/admin/fingerprints/types", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text


def dump_databases(where: Path | Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table in catalog.db and user.db, sorted: compare before/after.

    ``where`` is a data directory of SQLite files, or the settings of a test on either backend.
    Leaves out the service's bookkeeping tables (``fingerprints_*``: schema version, change
    counters, stale markers, jobs), which legitimate writes elsewhere also touch."""
    if isinstance(where, Settings):
        from tests.backends import dump_databases as dump_backend

        return dump_backend(where)
    state: dict[str, list[tuple[Any, ...]]] = {}
    for name in ("catalog.db", "user.db"):
        conn = sqlite3.connect(where / name)
        try:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                if table.startswith("fingerprints_"):
                    continue
                rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
                state[f"{name}:{table}"] = sorted(rows, key=repr)
        finally:
            conn.close()
    return state
