"""Store layer: migrations, pragmas, feature-map and catalog data access on real SQLite files."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import text

from fingerprints.config import Settings
from fingerprints.domain import EntityType, encode_vector
from fingerprints.store import catalog, feature_maps, migrations
from fingerprints.store.database import Databases, open_databases
from fingerprints.store.feature_maps import NewFeatureMap


@pytest.fixture
def dbs(settings: Settings) -> Iterator[Databases]:
    opened = open_databases(settings)
    with opened.catalog.write() as conn:
        conn.execute(
            text(
                "INSERT INTO feature_map_types (id, name, dimension, created_at, updated_at) "
                "VALUES ('audio', 'Audio', 8, 0, 0)"
            )
        )
    yield opened
    opened.dispose()


def _maps(n: int, *, entity_type: EntityType = EntityType.TRACK, seed: int = 0) -> list[NewFeatureMap]:
    vectors = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    return [
        NewFeatureMap(entity_type.value, f"e{i:05d}", "audio", 1, encode_vector(v), 100 + i, None)
        for i, v in enumerate(vectors)
    ]


def test_pragmas_are_set_on_every_connection(dbs: Databases) -> None:
    with dbs.catalog.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000


def test_migrations_run_once_and_record_versions(settings: Settings, dbs: Databases) -> None:
    again = open_databases(settings)  # a restart: nothing left to apply
    try:
        with again.catalog.read() as conn:
            assert migrations.current_version(conn) == len(migrations.CATALOG_MIGRATIONS)
            rows = conn.execute(text("SELECT count(*) FROM fingerprints_schema_version")).scalar()
            assert rows == len(migrations.CATALOG_MIGRATIONS)
        with again.user.read() as conn:
            assert migrations.current_version(conn) == len(migrations.USER_MIGRATIONS)
    finally:
        again.dispose()


def test_spec_indexes_exist(dbs: Databases) -> None:
    with dbs.catalog.read() as conn:
        names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"idx_feature_maps_entity", "idx_feature_maps_type", "idx_feature_maps_version"} <= names


def test_upsert_replaces_and_bulk_load_matches(dbs: Databases) -> None:
    rows = _maps(50)
    with dbs.catalog.write() as conn:
        feature_maps.upsert_feature_maps(conn, rows=rows, playlists=False)
        feature_maps.upsert_feature_maps(
            conn, rows=_maps(10, seed=1), playlists=False
        )  # replaces e00000..e00009
    expected = np.stack([np.frombuffer(r.vector, "<f4") for r in _maps(10, seed=1) + rows[10:]])
    with dbs.catalog.read() as conn:
        ids, matrix = feature_maps.load_vectors(
            conn, entity_type=EntityType.TRACK, type_id="audio", dimension=8
        )
    assert ids == [f"e{i:05d}" for i in range(50)]
    assert matrix.flags.c_contiguous and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, expected)


def test_maps_of_filters_by_type_and_entity(dbs: Databases) -> None:
    with dbs.catalog.write() as conn:
        feature_maps.upsert_feature_maps(conn, rows=_maps(3), playlists=False)
        got = feature_maps.maps_of(conn, entity_type=EntityType.TRACK, entity_ids=["e00001"], type_ids=None)
        none = feature_maps.maps_of(
            conn, entity_type=EntityType.ALBUM, entity_ids=["e00001"], type_ids=["audio"]
        )
    assert list(got) == ["e00001"]
    assert [m.feature_type_id for m in got["e00001"]] == ["audio"] and got["e00001"][0].computed_at == 101
    assert none == {}


def test_counts_and_deletes(dbs: Databases) -> None:
    with dbs.catalog.write() as conn:
        feature_maps.upsert_feature_maps(conn, rows=_maps(5), playlists=False)
        feature_maps.upsert_feature_maps(conn, rows=_maps(2, entity_type=EntityType.ALBUM), playlists=False)
        assert feature_maps.count_maps(conn, playlists=False) == {
            ("audio", EntityType.TRACK): 5,
            ("audio", EntityType.ALBUM): 2,
        }
        assert feature_maps.count_maps(conn, playlists=False, below_version=1) == {}
        ids = ["e00000", "e00001", "missing"]
        assert feature_maps.delete_entity_maps(conn, entity_type=EntityType.TRACK, entity_ids=ids) == 2
        deleted = feature_maps.delete_feature_type_maps(conn, type_id="audio", playlists=False)
        assert deleted == {EntityType.TRACK: 3, EntityType.ALBUM: 2}
        assert feature_maps.count_maps(conn, playlists=False) == {}


def test_existing_ids_beyond_one_chunk(dbs: Databases) -> None:
    n = feature_maps.CHUNK * 2 + 5
    with dbs.catalog.write() as conn:
        catalog.upsert_albums(conn, rows=[{"id": "al", "name": "Al"}], artist_rowids={})
        album_rowid = catalog.rowids(conn, table=catalog.ENTITY_TABLES[EntityType.ALBUM], ids=["al"])["al"]
        catalog.upsert_tracks(
            conn,
            rows=[{"id": f"t{i}", "name": "x", "album_rowid": album_rowid} for i in range(n)],
            artist_roles={},
        )
        wanted = [f"t{i}" for i in range(0, n + 50, 2)]
        found = catalog.existing_ids(conn, entity_type=EntityType.TRACK, ids=wanted)
    assert found == {f"t{i}" for i in range(0, n, 2)}


def test_catalog_upsert_keeps_rowids(dbs: Databases) -> None:
    with dbs.catalog.write() as conn:
        catalog.upsert_artists(conn, rows=[{"id": "a", "name": "A"}], genres={"a": ["rock", "rock", "pop"]})
        first = catalog.rowids(conn, table=catalog.ENTITY_TABLES[EntityType.ARTIST], ids=["a"])
        catalog.upsert_artists(conn, rows=[{"id": "a", "name": "A2"}], genres={"a": ["jazz"]})
        second = catalog.rowids(conn, table=catalog.ENTITY_TABLES[EntityType.ARTIST], ids=["a"])
        name = conn.exec_driver_sql("SELECT name FROM artists WHERE id='a'").scalar()
        genres = conn.exec_driver_sql("SELECT genre FROM artist_genres").scalars().all()
    assert first == second and name == "A2" and genres == ["jazz"]


def test_playlist_delete_cascades_to_its_maps(dbs: Databases) -> None:
    with dbs.user.write() as conn:
        catalog.upsert_playlist(conn, playlist_id="p", user_id=1, name="P", created=0, track_ids=["x", "y"])
        row = NewFeatureMap("playlist", "p", "audio", 1, encode_vector(np.ones(8)), 0, None)
        feature_maps.upsert_feature_maps(conn, rows=[row], playlists=True)
        assert catalog.playlist_owner(conn, playlist_id="p") == 1
        assert catalog.delete_playlist(conn, playlist_id="p") is True
        assert catalog.delete_playlist(conn, playlist_id="p") is False
        left = conn.exec_driver_sql("SELECT count(*) FROM playlist_feature_maps").scalar()
        tracks = conn.exec_driver_sql("SELECT count(*) FROM user_playlist_tracks").scalar()
    assert left == 0 and tracks == 0


def test_a_failed_write_rolls_back_everything(dbs: Databases) -> None:
    with pytest.raises(RuntimeError), dbs.catalog.write() as conn:
        feature_maps.upsert_feature_maps(conn, rows=_maps(3), playlists=False)
        raise RuntimeError("boom")
    with dbs.catalog.read() as conn:
        assert feature_maps.count_maps(conn, playlists=False) == {}
