"""REST catalog admin (design §5, §6): catalog upsert into pezzottify's tables, playlists."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fingerprints.config import Settings
from tests.backends import sql
from tests.helpers import ADMIN, dump_databases, small_catalog

CATALOG = "/v1/admin/catalog"
PLAYLISTS = "/v1/admin/playlists"
INGEST = "/v1/admin/fingerprints/ingest"
WRONG = {"Authorization": "Bearer not-the-admin-token"}
MAIN, FEATURED = 0, 1
_ANY = object()


# ------------------------------------------------------------------ helpers


def assert_error(r: httpx.Response, status: int, code: str, field: Any = _ANY) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, r.text
    assert isinstance(error["message"], str) and error["message"]
    if field is not _ANY:
        assert error["field"] == field, r.text
    return error


def catalog_rows(settings: Settings, query: str, *params: Any) -> list[tuple[Any, ...]]:
    return sql(settings, "catalog", query, *params)


def user_rows(settings: Settings, query: str, *params: Any) -> list[tuple[Any, ...]]:
    return sql(settings, "user", query, *params)


def rowids(settings: Settings, table: str) -> dict[str, int]:
    return dict(catalog_rows(settings, f"SELECT id, rowid FROM {table}"))


def track_links(settings: Settings) -> set[tuple[str, str, int]]:
    """(track id, artist id, role) of every track_artists row."""
    return set(
        catalog_rows(
            settings,
            "SELECT t.id, a.id, ta.role FROM track_artists ta "
            "JOIN tracks t ON t.rowid = ta.track_rowid JOIN artists a ON a.rowid = ta.artist_rowid",
        )
    )


def album_links(settings: Settings) -> list[tuple[str, str, int]]:
    return catalog_rows(
        settings,
        "SELECT al.id, a.id, aa.position FROM album_artists aa "
        "JOIN albums al ON al.rowid = aa.album_rowid JOIN artists a ON a.rowid = aa.artist_rowid "
        "ORDER BY al.id, aa.position",
    )


def genres(settings: Settings) -> set[tuple[str, str]]:
    return set(
        catalog_rows(
            settings, "SELECT a.id, g.genre FROM artist_genres g JOIN artists a ON a.rowid = g.artist_rowid"
        )
    )


def playlist_tracks(settings: Settings, playlist_id: str) -> list[tuple[int, str]]:
    return user_rows(
        settings,
        "SELECT position, track_id FROM user_playlist_tracks WHERE playlist_id = ? ORDER BY position",
        playlist_id,
    )


async def upsert(client: httpx.AsyncClient, body: Any, headers: dict[str, str] = ADMIN) -> httpx.Response:
    return await client.post(CATALOG, json=body, headers=headers)


async def upsert_ok(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await upsert(client, body)
    assert r.status_code == 200, r.text
    assert r.json()["errors"] == [], r.text
    return r.json()


async def put_playlist(
    client: httpx.AsyncClient, body: Any, headers: dict[str, str] = ADMIN
) -> httpx.Response:
    return await client.post(PLAYLISTS, json=body, headers=headers)


async def delete_playlist(
    client: httpx.AsyncClient, playlist_id: str, headers: dict[str, str] = ADMIN
) -> httpx.Response:
    return await client.delete(f"{PLAYLISTS}/{playlist_id}", headers=headers)


def assert_item_errors(
    errors: list[dict[str, Any]], expected: list[tuple[str, int, str | None, str]]
) -> None:
    """``expected``: (entity_type, index, entity_id, code) per error, in order."""
    for error in errors:
        assert isinstance(error.get("message"), str) and error["message"], error
    got = [(e.get("entity_type"), e.get("index"), e.get("entity_id"), e.get("code")) for e in errors]
    assert got == expected


@pytest.fixture
async def cataloged(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The small catalog of tests.helpers (3 artists, 2 albums, 6 tracks), nothing else."""
    await upsert_ok(client, small_catalog())
    return client


# ------------------------------------------------------------------ catalog upsert


async def test_upsert_writes_pezzottify_tables(client: httpx.AsyncClient, settings: Settings) -> None:
    body = await upsert_ok(client, small_catalog())
    assert body == {"upserted": {"artists": 3, "albums": 2, "tracks": 6}, "errors": []}
    d = settings

    assert catalog_rows(d, "SELECT id, name, popularity, followers_total FROM artists ORDER BY id") == [
        ("ar1", "Artist One", 70, 0),
        ("ar2", "Artist Two", 40, 0),
        ("ar3", "Artist Three", 55, 0),
    ]
    assert genres(d) == {("ar1", "rock"), ("ar1", "indie"), ("ar2", "jazz"), ("ar3", "electronic")}
    assert catalog_rows(d, "SELECT id, name, album_type, release_date FROM albums ORDER BY id") == [
        ("al1", "Album One", "album", "2020-01-01"),
        ("al2", "Album Two", "single", ""),
    ]
    assert album_links(d) == [("al1", "ar1", 0), ("al2", "ar3", 0)]

    albums = rowids(d, "albums")
    tracks = catalog_rows(
        d,
        "SELECT id, name, album_rowid, track_number, duration_ms, popularity, explicit "
        "FROM tracks ORDER BY id",
    )
    assert tracks == [
        ("t1", "One", albums["al1"], 1, 200_000, 50, 0),
        ("t2", "Two", albums["al1"], 2, 180_000, 60, 0),
        ("t3", "Three", albums["al1"], 3, 240_000, 10, 0),
        ("t4", "Four", albums["al1"], 4, 210_000, 0, 0),
        ("t5", "Five", albums["al2"], 1, 300_000, 90, 0),
        ("t6", "Six", albums["al2"], 2, 150_000, 20, 1),
    ]
    assert track_links(d) == {
        ("t1", "ar1", MAIN),
        ("t2", "ar1", MAIN),
        ("t2", "ar2", FEATURED),
        ("t3", "ar1", MAIN),
        ("t4", "ar1", MAIN),
        ("t5", "ar3", MAIN),
        ("t6", "ar3", MAIN),
    }


async def test_upsert_again_updates_in_place(cataloged: httpx.AsyncClient, settings: Settings) -> None:
    d = settings
    ids_before = {t: rowids(d, t) for t in ("artists", "albums", "tracks")}
    catalog = small_catalog()
    for kind in ("artists", "albums", "tracks"):
        for item in catalog[kind]:
            item["name"] = item["name"] + " (remastered)"
    catalog["artists"][0]["genres"] = ["rock", "shoegaze"]
    catalog["albums"][1]["artist_ids"] = ["ar3", "ar2"]
    catalog["tracks"][1]["featured_artist_ids"] = ["ar3"]  # t2: ar1 main, now ar3 featured
    catalog["tracks"][4]["album_id"] = "al1"  # t5 moves album
    catalog["tracks"][4]["popularity"] = 91
    body = await upsert_ok(cataloged, catalog)
    assert body["upserted"] == {"artists": 3, "albums": 2, "tracks": 6}

    assert {t: rowids(d, t) for t in ("artists", "albums", "tracks")} == ids_before
    for table in ("artists", "albums", "tracks"):
        names = [n for (n,) in catalog_rows(d, f"SELECT name FROM {table}")]
        assert len(names) == len(ids_before[table])
        assert all(n.endswith(" (remastered)") for n in names), names
    assert genres(d) == {("ar1", "rock"), ("ar1", "shoegaze"), ("ar2", "jazz"), ("ar3", "electronic")}
    assert album_links(d) == [("al1", "ar1", 0), ("al2", "ar3", 0), ("al2", "ar2", 1)]
    links = track_links(d)
    assert ("t2", "ar2", FEATURED) not in links
    assert {("t2", "ar1", MAIN), ("t2", "ar3", FEATURED)} <= links
    assert catalog_rows(d, "SELECT album_rowid, popularity FROM tracks WHERE id = 't5'") == [
        (ids_before["albums"]["al1"], 91)
    ]
    assert len(links) == 7


async def test_upsert_keeps_feature_maps_of_updated_tracks(
    cataloged: httpx.AsyncClient, settings: Settings
) -> None:
    r = await cataloged.post(
        "/v1/admin/fingerprints/types", json={"id": "audio", "name": "Audio", "dimension": 2}, headers=ADMIN
    )
    assert r.status_code == 201, r.text
    r = await cataloged.post(
        INGEST,
        json={
            "feature_type_id": "audio",
            "features": [{"entity_type": "track", "entity_id": "t1", "vector": [1, 2]}],
        },
        headers=ADMIN,
    )
    assert r.json()["ingested"] == 1, r.text
    before = dump_databases(settings)["catalog.db:feature_maps"]
    await upsert_ok(
        cataloged, {"tracks": [{"id": "t1", "name": "Renamed", "album_id": "al2", "artist_ids": ["ar3"]}]}
    )
    assert dump_databases(settings)["catalog.db:feature_maps"] == before


async def test_featured_and_main_artist_on_one_track(client: httpx.AsyncClient, settings: Settings) -> None:
    catalog = {
        "artists": [{"id": "a", "name": "A"}, {"id": "b", "name": "B"}],
        "albums": [{"id": "x", "name": "X", "artist_ids": ["a", "b"]}],
        "tracks": [
            {"id": "t", "name": "T", "album_id": "x", "artist_ids": ["a"], "featured_artist_ids": ["a", "b"]},
            {"id": "u", "name": "U", "album_id": "x", "featured_artist_ids": ["b"]},
        ],
    }
    await upsert_ok(client, catalog)
    assert track_links(settings) == {("t", "a", MAIN), ("t", "b", FEATURED), ("u", "b", FEATURED)}
    assert album_links(settings) == [("x", "a", 0), ("x", "b", 1)]


async def test_upsert_resolves_references_to_existing_rows(
    cataloged: httpx.AsyncClient, settings: Settings
) -> None:
    """Items may refer to artists and albums stored by an earlier request."""
    body = await upsert_ok(
        cataloged,
        {
            "albums": [{"id": "al3", "name": "Three", "artist_ids": ["ar2"]}],
            "tracks": [
                {"id": "t7", "name": "Seven", "album_id": "al3", "artist_ids": ["ar2"], "duration_ms": 1000},
                {
                    "id": "t8",
                    "name": "Eight",
                    "album_id": "al1",
                    "artist_ids": ["ar1"],
                    "featured_artist_ids": ["ar3"],
                },
            ],
        },
    )
    assert body["upserted"] == {"artists": 0, "albums": 1, "tracks": 2}
    albums = rowids(settings, "albums")
    assert catalog_rows(
        settings, "SELECT id, album_rowid FROM tracks WHERE id IN ('t7','t8') ORDER BY id"
    ) == [
        ("t7", albums["al3"]),
        ("t8", albums["al1"]),
    ]
    assert {("t8", "ar1", MAIN), ("t8", "ar3", FEATURED), ("t7", "ar2", MAIN)} <= track_links(settings)


async def test_upsert_reports_bad_items_and_stores_good_ones(
    cataloged: httpx.AsyncClient, settings: Settings
) -> None:
    d = settings
    before = dump_databases(d)
    r = await upsert(
        cataloged,
        {
            "artists": [
                {"id": "ar4", "name": "Four", "genres": ["folk"]},
                {"id": "ar5"},  # no name
                {"id": "ar6", "name": "Six", "popularity": 101},
                {"id": "ar7", "name": "Seven", "colour": "red"},
                "ar8",  # not an object
            ],
            "albums": [
                {"id": "al3", "name": "Three", "artist_ids": ["ar4"]},
                {"id": "al4", "name": "Four", "artist_ids": ["ar4", "ar404"]},
                {"id": "al5", "name": "Five", "artist_ids": ["ar5"]},  # ar5 was rejected above
            ],
            "tracks": [
                {"id": "t7", "name": "Seven", "album_id": "al3", "artist_ids": ["ar4"], "duration_ms": 1},
                {"id": "t8", "name": "Eight", "album_id": "al404", "artist_ids": ["ar4"]},
                {"id": "t9", "name": "Nine", "album_id": "al3", "artist_ids": ["ar404"]},
                {
                    "id": "t10",
                    "name": "Ten",
                    "album_id": "al3",
                    "artist_ids": ["ar4"],
                    "featured_artist_ids": ["x"],
                },
                {"id": "t11", "name": "Eleven", "album_id": "al4", "artist_ids": ["ar4"]},  # al4 rejected
                {"id": "t12", "name": "Twelve", "album_id": "al3", "duration_ms": -1},
                {"id": "t13", "name": "Thirteen", "album_id": "al3", "popularity": "high"},
                {"id": "t14", "name": "Fourteen"},  # no album_id
                {"id": "t15", "name": "Fifteen", "album_id": "al1", "artist_ids": ["ar1"], "explicit": True},
                {"id": "t16", "name": "Sixteen", "album_id": "al1", "artist_ids": ["ar1", 7]},
                {"id": "t17", "name": "Seventeen", "album_id": "al1", "explicit": "yes"},
            ],
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["upserted"] == {"artists": 1, "albums": 1, "tracks": 2}
    assert_item_errors(
        body["errors"],
        [
            ("artist", 1, "ar5", "INVALID_ITEM"),
            ("artist", 2, "ar6", "INVALID_ITEM"),
            ("artist", 3, "ar7", "INVALID_ITEM"),
            ("artist", 4, None, "INVALID_ITEM"),
            ("album", 1, "al4", "UNKNOWN_ARTIST"),
            ("album", 2, "al5", "UNKNOWN_ARTIST"),
            ("track", 1, "t8", "UNKNOWN_ALBUM"),
            ("track", 2, "t9", "UNKNOWN_ARTIST"),
            ("track", 3, "t10", "UNKNOWN_ARTIST"),
            ("track", 4, "t11", "UNKNOWN_ALBUM"),
            ("track", 5, "t12", "INVALID_ITEM"),
            ("track", 6, "t13", "INVALID_ITEM"),
            ("track", 7, "t14", "INVALID_ITEM"),
            ("track", 9, "t16", "INVALID_ITEM"),
            ("track", 10, "t17", "INVALID_ITEM"),
        ],
    )
    fields = {(e["entity_type"], e["index"]): e.get("field") for e in body["errors"]}
    assert fields[("artist", 1)] == "name"
    assert fields[("artist", 2)] == "popularity"
    assert fields[("artist", 3)] == "colour"
    assert fields[("track", 5)] == "duration_ms"
    assert fields[("track", 6)] == "popularity"
    assert fields[("track", 7)] == "album_id"
    assert fields[("track", 9)] == "artist_ids"
    assert fields[("track", 10)] == "explicit"

    assert [i for (i,) in catalog_rows(d, "SELECT id FROM artists ORDER BY id")] == [
        "ar1",
        "ar2",
        "ar3",
        "ar4",
    ]
    assert [i for (i,) in catalog_rows(d, "SELECT id FROM albums ORDER BY id")] == ["al1", "al2", "al3"]
    track_ids = {i for (i,) in catalog_rows(d, "SELECT id FROM tracks")}
    assert track_ids == {"t1", "t2", "t3", "t4", "t5", "t6", "t7", "t15"}
    assert ("ar4", "folk") in genres(d)
    assert {("t7", "ar4", MAIN), ("t15", "ar1", MAIN)} <= track_links(d)
    # Earlier rows are untouched.
    after = dump_databases(d)
    for table in ("catalog.db:artists", "catalog.db:albums", "catalog.db:tracks", "catalog.db:track_artists"):
        assert set(before[table]) <= set(after[table]), table


@pytest.mark.parametrize(
    "body, field",
    [
        ({"artists": {"id": "a", "name": "A"}}, "artists"),
        ({"tracks": "t1"}, "tracks"),
        ({"artists": [], "playlists": []}, "playlists"),
    ],
)
async def test_upsert_rejects_bad_top_level(
    cataloged: httpx.AsyncClient, settings: Settings, body: Any, field: str
) -> None:
    before = dump_databases(settings)
    assert_error(await upsert(cataloged, body), 400, "BAD_USER_INPUT", field)
    assert dump_databases(settings) == before


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null"])
async def test_upsert_rejects_malformed_body(
    cataloged: httpx.AsyncClient, settings: Settings, raw: bytes
) -> None:
    before = dump_databases(settings)
    r = await cataloged.post(CATALOG, content=raw, headers={**ADMIN, "Content-Type": "application/json"})
    assert_error(r, 400, "BAD_USER_INPUT", "body")
    assert dump_databases(settings) == before


async def test_upsert_empty_body_is_a_no_op(cataloged: httpx.AsyncClient, settings: Settings) -> None:
    before = dump_databases(settings)
    r = await upsert(cataloged, {})
    assert r.status_code == 200, r.text
    assert r.json() == {"upserted": {"artists": 0, "albums": 0, "tracks": 0}, "errors": []}
    assert dump_databases(settings) == before


# ------------------------------------------------------------------ playlists


async def test_playlist_upsert_keeps_order_and_reports_unknown_tracks(
    cataloged: httpx.AsyncClient, settings: Settings
) -> None:
    r = await put_playlist(
        cataloged,
        {"id": "p1", "user_id": 7, "name": "Mine", "track_ids": ["t3", "t1", "t404", "t5", "t1", "nope"]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("id", "user_id", "track_count")} == {
        "id": "p1",
        "user_id": 7,
        "track_count": 4,
    }
    for error in body["errors"]:
        assert error["message"]
    assert [(e["index"], e["entity_type"], e["entity_id"], e["code"]) for e in body["errors"]] == [
        (2, "track", "t404", "UNKNOWN_TRACK"),
        (5, "track", "nope", "UNKNOWN_TRACK"),
    ]
    d = settings
    assert user_rows(d, "SELECT id, user_id, name, creator_id FROM user_playlist") == [("p1", 7, "Mine", 7)]
    assert playlist_tracks(d, "p1") == [(0, "t3"), (1, "t1"), (2, "t5"), (3, "t1")]


async def test_playlist_replacement(cataloged: httpx.AsyncClient, settings: Settings) -> None:
    d = settings
    r = await put_playlist(
        cataloged, {"id": "p1", "user_id": 7, "name": "Mine", "track_ids": ["t1", "t2", "t3"]}
    )
    assert r.status_code == 200, r.text
    r = await put_playlist(cataloged, {"id": "p2", "user_id": 9, "name": "Other", "track_ids": ["t4"]})
    assert r.status_code == 200, r.text
    (created,) = user_rows(d, "SELECT created FROM user_playlist WHERE id = 'p1'")[0]

    r = await put_playlist(
        cataloged, {"id": "p1", "user_id": 7, "name": "Renamed", "track_ids": ["t6", "t2"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["track_count"] == 2 and r.json()["errors"] == []
    assert user_rows(d, "SELECT id, user_id, name, created FROM user_playlist ORDER BY id") == [
        ("p1", 7, "Renamed", created),
        ("p2", 9, "Other", user_rows(d, "SELECT created FROM user_playlist WHERE id = 'p2'")[0][0]),
    ]
    assert playlist_tracks(d, "p1") == [(0, "t6"), (1, "t2")]
    assert playlist_tracks(d, "p2") == [(0, "t4")]

    r = await put_playlist(cataloged, {"id": "p1", "user_id": 7, "track_ids": []})
    assert r.status_code == 200 and r.json()["track_count"] == 0, r.text
    assert playlist_tracks(d, "p1") == []
    assert playlist_tracks(d, "p2") == [(0, "t4")]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"id": "p1", "user_id": "7", "track_ids": []}, "user_id"),
        ({"id": "p1", "user_id": True, "track_ids": []}, "user_id"),
        ({"id": "", "user_id": 7, "track_ids": []}, "id"),
        ({"id": "p1", "user_id": 7, "track_ids": "t1"}, "track_ids"),
        ({"id": "p1", "user_id": 7, "track_ids": ["t1", 5]}, "track_ids"),
        ({"id": "p1", "user_id": 7, "track_ids": [], "owner": 3}, "owner"),
        ({"user_id": 7, "track_ids": ["t1"]}, "id"),
        ({"id": "p1", "track_ids": ["t1"]}, "user_id"),
    ],
    ids=[
        "user_id_string",
        "user_id_bool",
        "empty_id",
        "track_ids_string",
        "track_id_number",
        "unknown_field",
        "missing_id",
        "missing_user_id",
    ],
)
async def test_playlist_rejects_bad_input(
    cataloged: httpx.AsyncClient, settings: Settings, body: Any, field: str
) -> None:
    before = dump_databases(settings)
    assert_error(await put_playlist(cataloged, body), 400, "BAD_USER_INPUT", field)
    assert dump_databases(settings) == before


async def test_delete_playlist_removes_it_with_its_feature_maps(
    cataloged: httpx.AsyncClient, settings: Settings
) -> None:
    d = settings
    for pid, owner, tracks in (("p1", 7, ["t1", "t2"]), ("p2", 8, ["t3"])):
        r = await put_playlist(cataloged, {"id": pid, "user_id": owner, "track_ids": tracks})
        assert r.status_code == 200, r.text
    r = await cataloged.post(
        "/v1/admin/fingerprints/types", json={"id": "audio", "name": "Audio", "dimension": 2}, headers=ADMIN
    )
    assert r.status_code == 201, r.text
    r = await cataloged.post(
        INGEST,
        json={
            "feature_type_id": "audio",
            "features": [
                {"entity_type": et, "entity_id": eid, "vector": [1.0, 0.5]}
                for et, eid in (("playlist", "p1"), ("playlist", "p2"), ("track", "t1"))
            ],
        },
        headers=ADMIN,
    )
    assert r.json() == {"ingested": 3, "errors": []}, r.text
    before = dump_databases(d)

    r = await delete_playlist(cataloged, "p1")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": "p1", "deleted": True}
    after = dump_databases(d)
    assert user_rows(d, "SELECT id FROM user_playlist") == [("p2",)]
    assert user_rows(d, "SELECT playlist_id FROM user_playlist_tracks") == [("p2",)]
    assert user_rows(d, "SELECT playlist_id FROM playlist_feature_maps") == [("p2",)]
    for table, rows in before.items():  # nothing else changed
        if table.startswith("catalog.db:"):
            assert after[table] == rows, table
    assert (await cataloged.get("/v1/content/fingerprint/playlist/p1", headers=ADMIN)).status_code == 404

    assert_error(await delete_playlist(cataloged, "p1"), 404, "NOT_FOUND", "id")
    assert dump_databases(d) == after


async def test_delete_unknown_playlist_is_404(cataloged: httpx.AsyncClient, settings: Settings) -> None:
    before = dump_databases(settings)
    assert_error(await delete_playlist(cataloged, "p404"), 404, "NOT_FOUND", "id")
    assert dump_databases(settings) == before


# ------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    "headers, status, code",
    [
        ({}, 401, "UNAUTHENTICATED"),
        ({"X-User-Id": "7"}, 401, "UNAUTHENTICATED"),
        (WRONG, 403, "FORBIDDEN"),
    ],
)
async def test_catalog_admin_needs_the_admin_token(
    cataloged: httpx.AsyncClient, settings: Settings, headers: dict[str, str], status: int, code: str
) -> None:
    r = await put_playlist(cataloged, {"id": "p1", "user_id": 7, "track_ids": ["t1"]})
    assert r.status_code == 200, r.text
    before = dump_databases(settings)
    catalog = {"artists": [{"id": "ar1", "name": "Hijacked"}, {"id": "ar9", "name": "New"}]}
    assert_error(await upsert(cataloged, catalog, headers=headers), status, code)
    playlist = {"id": "p1", "user_id": 99, "name": "Stolen", "track_ids": []}
    assert_error(await put_playlist(cataloged, playlist, headers=headers), status, code)
    assert_error(await put_playlist(cataloged, {**playlist, "id": "p9"}, headers=headers), status, code)
    assert_error(await delete_playlist(cataloged, "p1", headers=headers), status, code)
    assert_error(await delete_playlist(cataloged, "p404", headers=headers), status, code)
    assert dump_databases(settings) == before
