"""Running on an existing pezzottify catalog.db / user.db: only our tables are added, theirs never change.

SQLite only, by nature: pezzottify's databases are SQLite files, built here with sqlite3. The
module pins ``backend`` to SQLite instead of running on the API suite's two backends."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fingerprints.app import create_app
from fingerprints.config import Settings
from tests.backends import Backend
from tests.helpers import ADMIN, running_client

# pezzottify's tables carry more columns than the service reads (design §6).
PEZZOTTIFY_CATALOG = """
CREATE TABLE artists (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, name TEXT NOT NULL,
    followers_total INTEGER NOT NULL, popularity INTEGER NOT NULL, image_id TEXT,
    bio TEXT NOT NULL DEFAULT '');
CREATE TABLE albums (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, name TEXT NOT NULL,
    album_type TEXT NOT NULL, label TEXT NOT NULL, popularity INTEGER NOT NULL, release_date TEXT NOT NULL,
    release_date_precision TEXT NOT NULL, upc TEXT, cover BLOB);
CREATE TABLE tracks (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, name TEXT NOT NULL,
    album_rowid INTEGER NOT NULL, track_number INTEGER NOT NULL, disc_number INTEGER NOT NULL,
    popularity INTEGER NOT NULL, duration_ms INTEGER NOT NULL, explicit INTEGER NOT NULL, language TEXT,
    isrc TEXT, audio_uri TEXT NOT NULL DEFAULT '');
CREATE TABLE track_artists (track_rowid INTEGER NOT NULL, artist_rowid INTEGER NOT NULL, role INTEGER);
CREATE TABLE artist_genres (artist_rowid INTEGER NOT NULL, genre TEXT NOT NULL);
CREATE TABLE album_artists (album_rowid INTEGER NOT NULL, artist_rowid INTEGER NOT NULL,
    position INTEGER NOT NULL);
CREATE TABLE changelog (id INTEGER PRIMARY KEY, what TEXT);
"""
PEZZOTTIFY_USER = """
CREATE TABLE user (id INTEGER PRIMARY KEY, handle TEXT NOT NULL);
CREATE TABLE user_playlist (id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, name TEXT,
    creator_id INTEGER NOT NULL, created INTEGER, is_public INTEGER NOT NULL DEFAULT 0);
CREATE TABLE user_playlist_tracks (id INTEGER PRIMARY KEY, track_id TEXT NOT NULL,
    playlist_id TEXT NOT NULL, position INTEGER NOT NULL, added INTEGER);
"""


def _build(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    cat = sqlite3.connect(data_dir / "catalog.db")
    cat.executescript(PEZZOTTIFY_CATALOG)
    cat.execute("INSERT INTO artists VALUES (1, 'ar1', 'Band', 1200, 55, 'img1', 'a bio')")
    cat.execute(
        "INSERT INTO albums VALUES (1, 'al1', 'LP', 'album', 'Label', 40, '1999-01-01', 'day', '0123', ?)",
        (b"\x89PNG\x00\xff",),
    )
    for i in range(1, 4):
        cat.execute(
            "INSERT INTO tracks VALUES (?, ?, ?, 1, ?, 1, 30, 200000, 0, 'en', ?, ?)",
            (i, f"tr{i}", f"Song {i}", i, f"ISRC{i}", f"/media/{i}.flac"),
        )
        cat.execute("INSERT INTO track_artists VALUES (?, 1, 0)", (i,))
    cat.execute("INSERT INTO artist_genres VALUES (1, 'rock')")
    cat.execute("INSERT INTO changelog VALUES (1, 'import')")
    cat.commit()
    cat.close()
    user = sqlite3.connect(data_dir / "user.db")
    user.executescript(PEZZOTTIFY_USER)
    user.execute("INSERT INTO user VALUES (7, 'alice')")
    user.execute("INSERT INTO user_playlist VALUES ('pl1', 7, 'Road trip', 7, 1700000000, 1)")
    user.executemany(
        "INSERT INTO user_playlist_tracks VALUES (?, ?, 'pl1', ?, 1700000001)",
        [(1, "tr1", 0), (2, "tr3", 1)],
    )
    user.commit()
    user.close()


def _theirs(data_dir: Path) -> dict[str, Any]:
    """Schema text and every row (with its bytes) of pezzottify's own tables."""
    out: dict[str, Any] = {}
    for name, script in (("catalog.db", PEZZOTTIFY_CATALOG), ("user.db", PEZZOTTIFY_USER)):
        conn = sqlite3.connect(data_dir / name)
        tables = [
            line.split()[2] for line in script.split(";") if "CREATE TABLE" in line for line in [line.strip()]
        ]
        for table in tables:
            sql = conn.execute("SELECT sql FROM sqlite_master WHERE name=?", (table,)).fetchone()
            rows = conn.execute(f'SELECT rowid, * FROM "{table}" ORDER BY rowid').fetchall()
            out[f"{name}:{table}"] = (sql, rows)
        conn.close()
    return out


@pytest.fixture(scope="module")
def backend() -> Backend:
    """pezzottify keeps its catalog and users in SQLite files: no PostgreSQL variant."""
    return "sqlite"


@pytest.fixture
def pezzottify_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "pezzottify"
    _build(data_dir)
    return data_dir


async def test_service_adds_its_tables_and_leaves_theirs_untouched(
    pezzottify_dir: Path, settings_for: Callable[..., Settings]
) -> None:
    before = _theirs(pezzottify_dir)
    settings = settings_for(pezzottify_dir)
    vectors = np.random.default_rng(3).normal(size=(3, 8)).astype(np.float32)
    async with running_client(create_app(settings)) as client:
        r = await client.post(
            "/v1/admin/fingerprints/types",
            json={"id": "audio", "name": "Audio", "dimension": 8},
            headers=ADMIN,
        )
        assert r.status_code == 201
        features = [
            {"entity_type": "track", "entity_id": f"tr{i + 1}", "vector": vectors[i].tolist()}
            for i in range(3)
        ]
        features.append({"entity_type": "playlist", "entity_id": "pl1", "vector": vectors.mean(0).tolist()})
        features.append(
            {"entity_type": "track", "entity_id": "not-in-pezzottify", "vector": vectors[0].tolist()}
        )
        r = await client.post(
            "/v1/admin/fingerprints/ingest",
            json={"feature_type_id": "audio", "features": features},
            headers=ADMIN,
        )
        body = r.json()
        assert body["ingested"] == 4 and [e["code"] for e in body["errors"]] == ["UNKNOWN_ENTITY"]
        r = await client.get("/v1/content/fingerprint/track/tr2")
        assert r.status_code == 200
        assert np.array_equal(np.array(r.json()["fingerprint"]["audio"]["vector"], np.float32), vectors[1])
        r = await client.get("/v1/content/fingerprint/playlist/pl1", headers={"X-User-Id": "7"})
        assert r.status_code == 200
    assert _theirs(pezzottify_dir) == before
    conn = sqlite3.connect(pezzottify_dir / "catalog.db")
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {"feature_map_types", "feature_maps", "fingerprints_schema_version"} <= names


async def test_playlist_privacy_on_pezzottify_user_db(
    pezzottify_dir: Path, settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for(pezzottify_dir)
    async with running_client(create_app(settings)) as client:
        await client.post(
            "/v1/admin/fingerprints/types", json={"id": "audio", "name": "A", "dimension": 2}, headers=ADMIN
        )
        await client.post(
            "/v1/admin/fingerprints/ingest",
            json={
                "feature_type_id": "audio",
                "features": [{"entity_type": "playlist", "entity_id": "pl1", "vector": [1, 2]}],
            },
            headers=ADMIN,
        )
        assert (
            await client.get("/v1/content/fingerprint/playlist/pl1", headers={"X-User-Id": "8"})
        ).status_code == 404
        assert (await client.get("/v1/content/fingerprint/playlist/pl1", headers=ADMIN)).status_code == 200
