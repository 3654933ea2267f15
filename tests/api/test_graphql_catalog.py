"""The GraphQL catalog graph (design §5, §6): the "track page" query end to end, albums,
artists with paginated albums and tracks, playlists, batched roots, NOT_FOUND, ``similar`` on
an entity (weighted features, cross-entity targets) and the ``outdated`` flag of ``fingerprint``.

Every catalog field is compared with the rows of ``catalog.db`` / ``user.db`` read directly (either backend);
every similar list with the brute-force numpy reference of tests/api/similar_helpers.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from fingerprints.app import create_app
from fingerprints.config import Settings
from tests.api.similar_helpers import (
    FeatureQuery,
    Vectors,
    assert_matches,
    gql,
    ingest,
    load_catalog,
    multi_reference,
    reference,
    register_type,
    upsert_playlist,
)
from tests.backends import Backend, DbName, connect, make_settings, playlist_rows
from tests.helpers import ADMIN, running_client, seed

pytestmark = pytest.mark.asyncio(loop_scope="module")

N_ARTISTS, N_ALBUMS, N_TRACKS = 14, 30, 240
PER_ALBUM = N_TRACKS // N_ALBUMS  # 8: track i is on album i % N_ALBUMS
BUSY = "ar00"  # credited on many albums and tracks: several pages each
ROOT = "tr060"  # the track of the track page: two main artists, a featured one, metadata
OWNER = {"X-User-Id": "7"}
PLAYLIST_TRACKS = ["tr100", "tr003", "tr077", "tr239", "tr003", "tr000"]  # not sorted, one repeat
NO_MOOD = {f"tr{i:03d}" for i in range(0, N_TRACKS, 9)}  # tracks without a "mood" map (Q5)


def ar(a: int) -> str:
    return f"ar{a:02d}"


def al(j: int) -> str:
    return f"al{j:02d}"


def tr(i: int) -> str:
    return f"tr{i:03d}"


def catalog() -> dict[str, Any]:
    """Varied rows: several album artists in a credit order that is not the id order, discs and
    track numbers whose order is not the id order, featured artists, NULL languages, genres
    given unsorted, empty labels and release dates of every precision."""
    artists = []
    for a in range(N_ARTISTS):
        genres = [["rock", "indie", "alt"], [], ["jazz"], ["zouk", "ambient"]][a % 4]
        artists.append(
            {
                "id": ar(a),
                "name": f"Artist {a}",
                "popularity": (a * 7) % 101,
                "followers_total": 1000 * a + 3,
                "genres": genres,
            }
        )
    albums = []
    album_artists: dict[int, list[str]] = {}
    for j in range(N_ALBUMS):
        credits = [ar(1 + j % (N_ARTISTS - 1))]
        if j % 3 == 0 and j % 2:
            credits.insert(0, BUSY)
        elif j % 3 == 0:
            credits.append(BUSY)
        if j % 4 == 1:
            credits.insert(0, ar(1 + (j + 5) % (N_ARTISTS - 1)))
        credits = list(dict.fromkeys(credits))
        album_artists[j] = credits
        precision, date = [("day", f"20{j:02d}-05-17"), ("month", f"19{j + 50}-03"), ("year", f"19{j + 60}")][
            j % 3
        ]
        albums.append(
            {
                "id": al(j),
                "name": f"Album {j}",
                "artist_ids": credits,
                "album_type": ["album", "single", "compilation"][j % 3],
                "label": None if j % 5 == 4 else f"Label {j % 5}",
                "popularity": (j * 13) % 101,
                "release_date": date,
                "release_date_precision": precision,
            }
        )
    tracks = []
    for i in range(N_TRACKS):
        j, k = i % N_ALBUMS, i // N_ALBUMS  # k: 0..7, the k-th track of its album by id
        main = [album_artists[j][-1]]
        if i % 5 == 0:
            main.append(ar(1 + (i + 2) % (N_ARTISTS - 1)))
        featured = []
        if i % 3 == 0:
            featured.append(ar(1 + (i + 7) % (N_ARTISTS - 1)))
        if i % 4 == 1:
            featured.append(BUSY)
        main = list(dict.fromkeys(main))
        featured = [f for f in dict.fromkeys(featured) if f not in main]
        tracks.append(
            {
                "id": tr(i),
                "name": f"Track {i}",
                "album_id": al(j),
                "artist_ids": main,
                "featured_artist_ids": featured,
                "duration_ms": 150_000 + 1234 * i,
                "popularity": i % 101,
                "track_number": 4 - k // 2,  # disc 1: k = 6, 4, 2, 0; disc 2: k = 7, 5, 3, 1
                "disc_number": 1 + k % 2,
                "explicit": i % 6 == 0,
                "language": ["en", "es", None, "fr"][i % 4],
            }
        )
    return {"artists": artists, "albums": albums, "tracks": tracks}


@dataclass
class Env:
    client: httpx.AsyncClient
    settings: Settings
    audio: dict[str, Vectors]  # entity type -> id -> vector (cosine, 8-d, tracks and albums)
    mood: Vectors  # track id -> vector (cosine, 5-d, tracks only, NO_MOOD missing)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> AsyncIterator[Env]:
    data_dir = tmp_path_factory.mktemp("graphql-catalog") / "data"
    # no sweeps: the album vectors ingested below are what albums are compared by
    settings = make_settings(backend, data_dir, aggregation_interval=0)
    async with running_client(create_app(settings)) as client:
        await load_catalog(client, catalog())
        await upsert_playlist(client, "pl7", 7, PLAYLIST_TRACKS)
        await register_type(client, "audio", 8, applies_to=["track", "album"])
        await register_type(client, "mood", 5, applies_to=["track"])
        rng = np.random.default_rng(5)
        audio = {
            "track": {tr(i): rng.normal(size=8).astype(np.float32) for i in range(N_TRACKS)},
            "album": {al(j): rng.normal(size=8).astype(np.float32) for j in range(N_ALBUMS)},
        }
        mood = {tr(i): rng.normal(size=5).astype(np.float32) for i in range(N_TRACKS) if tr(i) not in NO_MOOD}
        await ingest(client, "audio", "track", {k: v for k, v in audio["track"].items() if k != ROOT})
        await ingest(client, "audio", "album", audio["album"])
        await ingest(client, "mood", "track", mood)
        # the root track's map carries metadata
        body = {
            "feature_type_id": "audio",
            "features": [
                {
                    "entity_type": "track",
                    "entity_id": ROOT,
                    "vector": audio["track"][ROOT].tolist(),
                    "metadata": {"model": "v1", "window": [0, 30]},
                }
            ],
        }
        r = await client.post("/v1/admin/fingerprints/ingest", json=body, headers=ADMIN)
        assert r.status_code == 200 and r.json()["errors"] == [], r.text
        yield Env(client, settings, audio, mood)


# ------------------------------------------------------------------ the stored rows


@contextmanager
def db(env: Env, name: DbName = "catalog") -> Iterator[Any]:
    with connect(env.settings, name) as conn:
        yield conn


def track_row(env: Env, track_id: str) -> dict[str, Any]:
    with db(env) as conn:
        row = conn.execute(
            "SELECT t.id, t.name, t.duration_ms, t.popularity, t.explicit, t.track_number, t.disc_number,"
            " t.language, a.id FROM tracks t JOIN albums a ON a.rowid = t.album_rowid WHERE t.id = ?",
            (track_id,),
        ).fetchone()
    assert row is not None, track_id
    return {
        "id": row[0],
        "name": row[1],
        "durationMs": row[2],
        "popularity": row[3],
        "explicit": bool(row[4]),
        "trackNumber": row[5],
        "discNumber": row[6],
        "language": row[7],
        "album_id": row[8],
    }


def album_row(env: Env, album_id: str) -> dict[str, Any]:
    with db(env) as conn:
        row = conn.execute(
            "SELECT id, name, album_type, label, popularity, release_date, release_date_precision"
            " FROM albums WHERE id = ?",
            (album_id,),
        ).fetchone()
    assert row is not None, album_id
    keys = ("id", "name", "albumType", "label", "popularity", "releaseDate", "releaseDatePrecision")
    return dict(zip(keys, row, strict=True))


def album_artist_names(env: Env, album_id: str) -> list[str]:
    with db(env) as conn:
        rows = conn.execute(
            "SELECT ar.name FROM album_artists aa JOIN albums al ON al.rowid = aa.album_rowid"
            " JOIN artists ar ON ar.rowid = aa.artist_rowid WHERE al.id = ? ORDER BY aa.position",
            (album_id,),
        ).fetchall()
    return [r[0] for r in rows]


def album_track_ids(env: Env, album_id: str) -> list[str]:
    with db(env) as conn:
        rows = conn.execute(
            "SELECT t.id FROM tracks t JOIN albums al ON al.rowid = t.album_rowid WHERE al.id = ?"
            " ORDER BY t.disc_number, t.track_number, t.id",
            (album_id,),
        ).fetchall()
    return [r[0] for r in rows]


def artist_row(env: Env, artist_id: str) -> dict[str, Any]:
    with db(env) as conn:
        row = conn.execute(
            "SELECT id, name, popularity, followers_total, rowid FROM artists WHERE id = ?", (artist_id,)
        ).fetchone()
        assert row is not None, artist_id
        genres = conn.execute(
            "SELECT genre FROM artist_genres WHERE artist_rowid = ? ORDER BY genre", (row[4],)
        ).fetchall()
    return {
        "id": row[0],
        "name": row[1],
        "popularity": row[2],
        "followersTotal": row[3],
        "genres": [g[0] for g in genres],
    }


def track_credits(env: Env, track_id: str) -> list[tuple[str, str]]:
    """(artist id, "main"/"featured") of a track, as stored (role 0 or NULL: main, 1: featured)."""
    with db(env) as conn:
        rows = conn.execute(
            "SELECT ar.id, COALESCE(ta.role, 0) FROM track_artists ta"
            " JOIN tracks t ON t.rowid = ta.track_rowid JOIN artists ar ON ar.rowid = ta.artist_rowid"
            " WHERE t.id = ?",
            (track_id,),
        ).fetchall()
    return [(r[0], "main" if r[1] == 0 else "featured") for r in rows]


def feature_rows(env: Env, entity_type: str, entity_id: str) -> list[tuple[Any, ...]]:
    with db(env) as conn:
        return conn.execute(
            "SELECT feature_type_id, version, vector, computed_at, metadata FROM feature_maps"
            " WHERE entity_type = ? AND entity_id = ? ORDER BY feature_type_id",
            (entity_type, entity_id),
        ).fetchall()


def artist_album_ids(env: Env, artist_id: str) -> list[str]:
    with db(env) as conn:
        rows = conn.execute(
            "SELECT DISTINCT al.id FROM album_artists aa JOIN albums al ON al.rowid = aa.album_rowid"
            " JOIN artists ar ON ar.rowid = aa.artist_rowid WHERE ar.id = ? ORDER BY al.id",
            (artist_id,),
        ).fetchall()
    return [r[0] for r in rows]


def artist_track_ids(env: Env, artist_id: str) -> list[str]:
    with db(env) as conn:
        rows = conn.execute(
            "SELECT DISTINCT t.id FROM track_artists ta JOIN tracks t ON t.rowid = ta.track_rowid"
            " JOIN artists ar ON ar.rowid = ta.artist_rowid WHERE ar.id = ? ORDER BY t.id",
            (artist_id,),
        ).fetchall()
    return [r[0] for r in rows]


# ------------------------------------------------------------------ comparisons


def ok(answer: dict[str, Any], field: str) -> Any:
    assert "errors" not in answer, answer
    return answer["data"][field]


def error_code(answer: dict[str, Any]) -> str:
    assert answer.get("errors"), answer
    return str(answer["errors"][0]["extensions"]["code"])


def assert_track_fields(env: Env, got: dict[str, Any]) -> None:
    want = track_row(env, got["id"])
    for key in ("name", "durationMs", "popularity", "explicit", "trackNumber", "discNumber", "language"):
        if key in got:
            assert got[key] == want[key], (got["id"], key, got[key], want[key])


def assert_credits(env: Env, track_id: str, credits: list[dict[str, Any]]) -> None:
    """Same (artist, role) pairs as track_artists; main artists before featured ones (the role,
    when not selected, is the stored one)."""
    stored = dict(track_credits(env, track_id))
    got = [(c["artist"]["id"], c.get("role", stored.get(c["artist"]["id"]))) for c in credits]
    assert sorted(got) == sorted(stored.items()), (track_id, got)
    roles = [role for _, role in got]
    assert roles == sorted(roles, key=lambda r: r != "main"), f"{track_id}: main artists first: {got}"
    for c in credits:
        want = artist_row(env, c["artist"]["id"])
        for key, value in c["artist"].items():
            assert value == want[key], (track_id, key, value, want[key])


def assert_same_f32(got: list[float], want: np.ndarray) -> None:
    assert np.array_equal(np.asarray(got, dtype=np.float32), np.asarray(want, dtype=np.float32)), (got, want)


# ------------------------------------------------------------------ the track page

TRACK_PAGE = """
query TrackPage($id: ID!, $types: [ID!], $feature: ID!, $limit: Int!) {
  track(id: $id) {
    id name durationMs popularity explicit trackNumber discNumber language
    album { id name albumType label releaseDate artists { name } tracks { id } }
    artists { role artist { id name genres popularity } }
    fingerprint(types: $types) { featureType version vector computedAt metadata outdated }
    similar(featureType: $feature, limit: $limit) {
      entityType entityId score
      entity { __typename ... on Track { id name album { id name } artists { artist { id name } } } }
    }
  }
}
"""


async def test_track_page(env: Env) -> None:
    variables = {"id": ROOT, "types": ["audio", "mood"], "feature": "audio", "limit": 20}
    track = ok(await gql(env.client, TRACK_PAGE, variables), "track")

    # the track's own columns
    want = track_row(env, ROOT)
    assert track["id"] == ROOT
    assert_track_fields(env, track)
    assert want["language"] is not None and want["explicit"] is True  # the fixture picked a rich row

    # its album, the album's artists in credit order and its tracks in disc/track order
    album = track["album"]
    row = album_row(env, want["album_id"])
    assert album["id"] == row["id"]
    assert (album["name"], album["albumType"], album["label"], album["releaseDate"]) == (
        row["name"],
        row["albumType"],
        row["label"],
        row["releaseDate"],
    )
    assert [a["name"] for a in album["artists"]] == album_artist_names(env, row["id"])
    assert len(album["artists"]) >= 2
    assert [t["id"] for t in album["tracks"]] == album_track_ids(env, row["id"])
    assert len(album["tracks"]) == PER_ALBUM

    # its artists with roles, names, genres (alphabetical) and popularity
    assert {c["role"] for c in track["artists"]} == {"main", "featured"}
    assert_credits(env, ROOT, track["artists"])
    assert any(len(c["artist"]["genres"]) > 1 for c in track["artists"]), track["artists"]

    # its feature maps exactly as stored
    rows = feature_rows(env, "track", ROOT)
    assert [m["featureType"] for m in track["fingerprint"]] == [r[0] for r in rows] == ["audio", "mood"]
    for fmap, (_, version, blob, computed_at, metadata) in zip(track["fingerprint"], rows, strict=True):
        assert fmap["version"] == version == 1
        assert_same_f32(fmap["vector"], np.frombuffer(blob, dtype="<f4"))
        assert fmap["computedAt"] == computed_at
        assert fmap["outdated"] is False
        assert fmap["metadata"] == (json.loads(metadata) if metadata is not None else None)
    assert track["fingerprint"][0]["metadata"] == {"model": "v1", "window": [0, 30]}
    assert track["fingerprint"][1]["metadata"] is None

    # its similar tracks: the numpy reference, each with its details
    similar = track["similar"]
    ranking = reference(env.audio["track"], env.audio["track"][ROOT], "cosine", exclude=[ROOT])
    assert_matches(similar, ranking, 20, id_key="entityId", what="track page similar")
    assert {s["entityType"] for s in similar} == {"TRACK"}
    assert len({track_row(env, s["entityId"])["album_id"] for s in similar}) > 5  # many albums
    for item in similar:
        entity = item["entity"]
        assert entity["__typename"] == "Track" and entity["id"] == item["entityId"]
        stored = track_row(env, entity["id"])
        assert entity["name"] == stored["name"]
        assert entity["album"] == {
            "id": stored["album_id"],
            "name": album_row(env, stored["album_id"])["name"],
        }
        assert_credits(env, entity["id"], entity["artists"])

    # the same list as REST GET /v1/content/similar/track/{id}
    r = await env.client.get(
        f"/v1/content/similar/track/{ROOT}", params={"feature_type": "audio", "limit": 20}
    )
    assert r.status_code == 200, r.text
    assert [(i["entity_id"], i["score"]) for i in r.json()["results"]] == [
        (s["entityId"], s["score"]) for s in similar
    ]


async def test_track_fingerprint_all_types_by_default(env: Env) -> None:
    query = "query($id: ID!) { track(id: $id) { fingerprint { featureType } } }"
    with_mood = ok(await gql(env.client, query, {"id": tr(1)}), "track")
    assert [m["featureType"] for m in with_mood["fingerprint"]] == ["audio", "mood"]
    without = ok(await gql(env.client, query, {"id": tr(9)}), "track")  # in NO_MOOD
    assert [m["featureType"] for m in without["fingerprint"]] == ["audio"]
    only = 'query($id: ID!) { track(id: $id) { fingerprint(types: ["mood"]) { featureType } } }'
    assert ok(await gql(env.client, only, {"id": tr(9)}), "track")["fingerprint"] == []


async def test_track_fingerprint_empty_types_list_selects_nothing(env: Env) -> None:
    """``types`` is "only these feature types; null: all": an empty list asks for none."""
    query = """query($id: ID!) { track(id: $id) { all: fingerprint(types: null) { featureType }
      none: fingerprint(types: []) { featureType } } }"""
    track = ok(await gql(env.client, query, {"id": tr(1)}), "track")
    assert [m["featureType"] for m in track["all"]] == ["audio", "mood"]
    assert track["none"] == [], track


async def test_every_track_matches_its_row(env: Env) -> None:
    """All tracks through ``tracks(ids)``: every column, album and credits, as stored."""
    query = """
    query($ids: [ID!]!) {
      tracks(ids: $ids) {
        id name durationMs popularity explicit trackNumber discNumber language
        album { id } artists { role artist { id name popularity } }
      }
    }"""
    ids = [tr(i) for i in range(N_TRACKS)]
    tracks = ok(await gql(env.client, query, {"ids": ids}), "tracks")
    assert [t["id"] for t in tracks] == ids
    for t in tracks:
        assert_track_fields(env, t)
        assert t["album"]["id"] == track_row(env, t["id"])["album_id"]
        assert_credits(env, t["id"], t["artists"])


# ------------------------------------------------------------------ albums, artists, playlists

ALBUM = """
query($id: ID!) {
  album(id: $id) {
    id name albumType label popularity releaseDate releaseDatePrecision
    artists { id name popularity followersTotal genres }
    tracks { id name trackNumber discNumber }
  }
}"""


@pytest.mark.parametrize("j", [0, 1, 4, 9, 29])
async def test_album_with_tracks_in_disc_and_track_order(env: Env, j: int) -> None:
    album = ok(await gql(env.client, ALBUM, {"id": al(j)}), "album")
    row = album_row(env, al(j))
    assert {k: album[k] for k in row} == row
    assert [a["name"] for a in album["artists"]] == album_artist_names(env, al(j))
    for a in album["artists"]:
        assert a == artist_row(env, a["id"])
    ids = [t["id"] for t in album["tracks"]]
    assert ids == album_track_ids(env, al(j))
    assert ids != sorted(ids)  # the catalog makes disc/track order differ from id order
    positions = [(t["discNumber"], t["trackNumber"]) for t in album["tracks"]]
    assert positions == sorted(positions)
    for t in album["tracks"]:
        assert_track_fields(env, t)


ARTIST_ALBUMS = """
query($id: ID!, $first: Int!, $after: String) {
  artist(id: $id) {
    id name popularity followersTotal genres
    albums(first: $first, after: $after) {
      items { id name albumType label releaseDate } endCursor hasNextPage
    }
  }
}"""
ARTIST_TRACKS = """
query($id: ID!, $first: Int!, $after: String) {
  artist(id: $id) {
    tracks(first: $first, after: $after) { items { id name durationMs language } endCursor hasNextPage }
  }
}"""


async def _walk(env: Env, query: str, artist_id: str, field: str, first: int) -> tuple[list[Any], int]:
    """Follow endCursor until hasNextPage is false; every page but the last is full."""
    items: list[Any] = []
    after: str | None = None
    pages = 0
    while True:
        artist = ok(await gql(env.client, query, {"id": artist_id, "first": first, "after": after}), "artist")
        page = artist[field]
        pages += 1
        assert len(page["items"]) <= first
        if page["items"]:
            assert page["endCursor"] == page["items"][-1]["id"]
        items.extend(page["items"])
        if not page["hasNextPage"]:
            break
        assert len(page["items"]) == first, page
        after = page["endCursor"]
        assert pages < 100
    return items, pages


@pytest.mark.parametrize(("artist_id", "first"), [(BUSY, 3), (BUSY, 1), (BUSY, 100), (ar(5), 2)])
async def test_artist_albums_pagination(env: Env, artist_id: str, first: int) -> None:
    want = artist_album_ids(env, artist_id)
    assert want
    items, pages = await _walk(env, ARTIST_ALBUMS, artist_id, "albums", first)
    assert [a["id"] for a in items] == want
    assert pages == -(-len(want) // first)  # the last page is the first with hasNextPage false
    for a in items:
        row = album_row(env, a["id"])
        assert (a["name"], a["albumType"], a["label"], a["releaseDate"]) == (
            row["name"],
            row["albumType"],
            row["label"],
            row["releaseDate"],
        )
    artist = ok(await gql(env.client, ARTIST_ALBUMS, {"id": artist_id, "first": 1}), "artist")
    assert {k: artist[k] for k in ("id", "name", "popularity", "followersTotal", "genres")} == artist_row(
        env, artist_id
    )


@pytest.mark.parametrize(("artist_id", "first"), [(BUSY, 7), (BUSY, 100), (ar(3), 5), (ar(12), 1)])
async def test_artist_tracks_pagination(env: Env, artist_id: str, first: int) -> None:
    want = artist_track_ids(env, artist_id)
    assert want
    items, _ = await _walk(env, ARTIST_TRACKS, artist_id, "tracks", first)
    assert [t["id"] for t in items] == want  # every role counts (design §6)
    for t in items:
        assert_track_fields(env, t)
    if artist_id == BUSY:
        roles = {role for t in want for a, role in track_credits(env, t) if a == BUSY}
        assert roles == {"main", "featured"}


async def test_artist_pages_edges(env: Env) -> None:
    want = artist_track_ids(env, BUSY)
    # after the last id: an empty last page
    last = ok(await gql(env.client, ARTIST_TRACKS, {"id": BUSY, "first": 5, "after": want[-1]}), "artist")
    assert last["tracks"] == {"items": [], "endCursor": None, "hasNextPage": False}
    # an exact fit: no next page
    fit = ok(await gql(env.client, ARTIST_TRACKS, {"id": BUSY, "first": 2, "after": want[-3]}), "artist")
    assert [t["id"] for t in fit["tracks"]["items"]] == want[-2:]
    assert fit["tracks"]["hasNextPage"] is False and fit["tracks"]["endCursor"] == want[-1]
    # a cursor that is not one of the artist's ids still seeks by id
    mid = ok(await gql(env.client, ARTIST_TRACKS, {"id": BUSY, "first": 3, "after": "tr050x"}), "artist")
    assert [t["id"] for t in mid["tracks"]["items"]] == [t for t in want if t > "tr050x"][:3]
    # bad page sizes
    for first in (0, 101, -1):
        answer = await gql(env.client, ARTIST_TRACKS, {"id": BUSY, "first": first})
        assert error_code(answer) == "BAD_USER_INPUT", answer
        answer = await gql(env.client, ARTIST_ALBUMS, {"id": BUSY, "first": first})
        assert error_code(answer) == "BAD_USER_INPUT", answer
    # an artist without genres
    artist = ok(await gql(env.client, ARTIST_ALBUMS, {"id": ar(1), "first": 1}), "artist")
    assert artist["genres"] == [] == artist_row(env, ar(1))["genres"]


PLAYLIST = """
query($id: ID!) { playlist(id: $id) { id name ownerId created tracks { id name album { id } } } }
"""


@pytest.mark.parametrize("headers", [OWNER, ADMIN], ids=["owner", "admin"])
async def test_playlist_tracks_in_playlist_order(env: Env, headers: dict[str, str]) -> None:
    playlist = ok(await gql(env.client, PLAYLIST, {"id": "pl7"}, headers), "playlist")
    head, track_ids = playlist_rows(env.settings, "pl7")
    assert (playlist["id"], playlist["name"], playlist["ownerId"], playlist["created"]) == head
    assert [t["id"] for t in playlist["tracks"]] == track_ids == PLAYLIST_TRACKS
    for t in playlist["tracks"]:
        assert_track_fields(env, t)
        assert t["album"]["id"] == track_row(env, t["id"])["album_id"]


# ------------------------------------------------------------------ batched roots and NOT_FOUND


async def test_tracks_batch_keeps_order_with_null_for_unknown(env: Env) -> None:
    ids = [tr(5), "ghost", tr(1), tr(5), "", tr(239)]
    query = "query($ids: [ID!]!) { tracks(ids: $ids) { id name album { name } } }"
    tracks = ok(await gql(env.client, query, {"ids": ids}), "tracks")
    assert [t["id"] if t else None for t in tracks] == [tr(5), None, tr(1), tr(5), None, tr(239)]
    for t in tracks:
        if t is not None:
            stored = track_row(env, t["id"])
            assert t["name"] == stored["name"]
            assert t["album"]["name"] == album_row(env, stored["album_id"])["name"]
    assert ok(await gql(env.client, query, {"ids": []}), "tracks") == []


async def test_albums_artists_batch_with_null_for_unknown(env: Env) -> None:
    query = """
    query($albums: [ID!]!, $artists: [ID!]!) {
      albums(ids: $albums) { id name }
      artists(ids: $artists) { id name genres }
    }"""
    answer = ok_all(await gql(env.client, query, {"albums": [al(3), "x", al(0)], "artists": ["x", ar(0)]}))
    assert [a and a["id"] for a in answer["albums"]] == [al(3), None, al(0)]
    assert answer["albums"][0]["name"] == album_row(env, al(3))["name"]
    assert answer["artists"][0] is None
    assert answer["artists"][1] == {k: artist_row(env, ar(0))[k] for k in ("id", "name", "genres")}


def ok_all(answer: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in answer, answer
    return answer["data"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("root", "entity_id", "headers"),
    [
        ("track", "ghost", {}),
        ("album", "ghost", {}),
        ("artist", "ghost", {}),
        ("playlist", "ghost", ADMIN),
        ("track", al(0), {}),  # an album's id is not a track's
        ("album", tr(0), {}),
    ],
)
async def test_single_roots_not_found(env: Env, root: str, entity_id: str, headers: dict[str, str]) -> None:
    answer = await gql(
        env.client, f"query($id: ID!) {{ {root}(id: $id) {{ id }} }}", {"id": entity_id}, headers
    )
    assert answer["data"] is None, answer
    [error] = answer["errors"]
    assert error["extensions"]["code"] == "NOT_FOUND", answer
    assert error["path"] == [root]
    assert entity_id in error["message"]


# ------------------------------------------------------------------ similar on an entity

SIMILAR_ON_TRACK = """
query($id: ID!, $feature: ID, $features: [FeatureWeightInput!], $target: EntityType, $limit: Int!,
      $minScore: Float, $exclude: [ID!]) {
  track(id: $id) {
    similar(featureType: $feature, features: $features, targetEntityType: $target, limit: $limit,
            minScore: $minScore, excludeIds: $exclude) {
      entityType entityId score distance
      entity { __typename ... on Track { id name } ... on Album { id name label } }
    }
  }
}"""


async def _similar_on_track(env: Env, **variables: Any) -> list[dict[str, Any]]:
    answer = await gql(env.client, SIMILAR_ON_TRACK, variables)
    return ok(answer, "track")["similar"]  # type: ignore[no-any-return]


async def test_similar_weighted_features(env: Env) -> None:
    query_id = tr(31)
    features = [{"featureType": "audio", "weight": 2.0}, {"featureType": "mood", "weight": 0.5}]
    got = await _similar_on_track(env, id=query_id, features=features, limit=25)
    ranking = multi_reference(
        [
            FeatureQuery(env.audio["track"], env.audio["track"][query_id], "cosine", 2.0),
            FeatureQuery(env.mood, env.mood[query_id], "cosine", 0.5),
        ],
        exclude=[query_id],
    )
    assert_matches(got, ranking, 25, id_key="entityId", what="weighted audio+mood")
    # NO_MOOD tracks are still candidates, scored on audio alone (design §4)
    full = await _similar_on_track(env, id=query_id, features=features, limit=N_TRACKS)
    assert NO_MOOD <= {s["entityId"] for s in full}
    assert_matches(full, ranking, N_TRACKS, id_key="entityId", what="weighted, whole ranking")
    for item in got:
        name = track_row(env, item["entityId"])["name"]
        assert item["entity"] == {"__typename": "Track", "id": item["entityId"], "name": name}


async def test_similar_albums_to_a_track(env: Env) -> None:
    query_id = tr(77)
    got = await _similar_on_track(env, id=query_id, feature="audio", target="ALBUM", limit=10)
    ranking = reference(env.audio["album"], env.audio["track"][query_id], "cosine")
    assert_matches(got, ranking, 10, id_key="entityId", what="albums similar to a track")
    for item in got:
        assert item["entityType"] == "ALBUM" and item["distance"] is None
        row = album_row(env, item["entityId"])
        assert item["entity"] == {
            "__typename": "Album",
            "id": row["id"],
            "name": row["name"],
            "label": row["label"],
        }


async def test_similar_tracks_to_an_album_with_filters(env: Env) -> None:
    query = """
    query($id: ID!, $minScore: Float, $exclude: [ID!]) {
      album(id: $id) {
        similar(featureType: "audio", targetEntityType: TRACK, limit: 30, minScore: $minScore,
                excludeIds: $exclude) {
          entityType entityId score entity { ... on Track { id album { id } } }
        }
        same: similar(featureType: "audio", limit: 5) { entityType entityId score }
      }
    }"""
    exclude = [tr(0), tr(1)]
    album = ok(await gql(env.client, query, {"id": al(4), "minScore": 0.3, "exclude": exclude}), "album")
    q = env.audio["album"][al(4)]
    ranking = reference(env.audio["track"], q, "cosine", exclude=exclude, min_score=0.3)
    assert_matches(album["similar"], ranking, 30, id_key="entityId", what="tracks similar to an album")
    for item in album["similar"]:
        assert item["entity"]["id"] == item["entityId"]
        assert item["entity"]["album"]["id"] == track_row(env, item["entityId"])["album_id"]
    # default target: the entity's own type, itself excluded
    same = reference(env.audio["album"], q, "cosine", exclude=[al(4)])
    assert_matches(album["same"], same, 5, id_key="entityId", what="albums similar to an album")
    assert {s["entityType"] for s in album["same"]} == {"ALBUM"}


@pytest.mark.parametrize(
    ("variables", "code"),
    [
        ({"feature": "nope"}, "NOT_FOUND"),
        ({"feature": "mood", "target": "ALBUM"}, "BAD_USER_INPUT"),  # mood applies to tracks only
        ({}, "BAD_USER_INPUT"),  # neither featureType nor features
        ({"feature": "audio", "features": [{"featureType": "mood"}]}, "BAD_USER_INPUT"),
        ({"feature": "audio", "limit": 0}, "BAD_USER_INPUT"),
    ],
    ids=["unknown-type", "target-not-applicable", "no-feature", "both-feature-forms", "limit-0"],
)
async def test_similar_on_entity_errors(env: Env, variables: dict[str, Any], code: str) -> None:
    answer = await gql(env.client, SIMILAR_ON_TRACK, {"id": tr(2), "limit": 5, **variables})
    assert error_code(answer) == code, answer


async def test_similar_on_entity_without_the_feature(env: Env) -> None:
    answer = await gql(env.client, SIMILAR_ON_TRACK, {"id": tr(9), "feature": "mood", "limit": 5})
    assert error_code(answer) == "NOT_FOUND", answer
    assert "mood" in answer["errors"][0]["message"]


# ------------------------------------------------------------------ the search runs once

SEARCH_VARIANTS = [
    {"feature": "audio", "limit": 7},
    {
        "features": [{"featureType": "audio", "weight": 2.0}, {"featureType": "mood", "weight": 0.5}],
        "limit": 4,
    },
    {"feature": "audio", "target": "ALBUM", "limit": 3, "minScore": -1.0},
    {"feature": "audio", "limit": 5, "exclude": [tr(1), tr(2)]},
]


@contextmanager
def counted_searches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """The parameters of every ``find_similar`` call made meanwhile."""
    from fingerprints.service import similarity

    calls: list[dict[str, Any]] = []
    find_similar = similarity.find_similar

    def counted(svc: Any, **params: Any) -> Any:
        calls.append(params)
        return find_similar(svc, **params)

    with monkeypatch.context() as patch:
        patch.setattr(similarity, "find_similar", counted)
        yield calls


@pytest.mark.parametrize("variables", SEARCH_VARIANTS, ids=["feature", "features", "target", "exclude"])
async def test_similar_with_entities_searches_once(
    env: Env, monkeypatch: pytest.MonkeyPatch, variables: dict[str, Any]
) -> None:
    """track(id) runs the search of its `similar { entity }` before its round, and the field
    gets that very outcome: one search per request, whatever the arguments."""
    with counted_searches(monkeypatch) as calls:
        got = await _similar_on_track(env, id=tr(12), **variables)
    assert len(calls) == 1, calls
    with counted_searches(monkeypatch) as calls:
        # the same search without `entity`: the field searches itself, and finds the same
        answer = await gql(
            env.client,
            SIMILAR_ON_TRACK.replace(
                "entity { __typename ... on Track { id name } ... on Album { id name label } }", ""
            ),
            {"id": tr(12), **variables},
        )
    assert len(calls) == 1, calls
    plain = ok(answer, "track")["similar"]
    assert [(s["entityId"], s["score"]) for s in got] == [(s["entityId"], s["score"]) for s in plain]
    assert all(s["entity"]["id"] == s["entityId"] for s in got)


async def test_similar_searched_first_keeps_errors_where_they_were(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a failing search fails the field, once, with its code
    query = SIMILAR_ON_TRACK
    with counted_searches(monkeypatch) as calls:
        answer = await gql(env.client, query, {"id": tr(2), "feature": "nope", "limit": 5})
    assert len(calls) == 1, calls
    assert [(e["path"], e["extensions"]["code"]) for e in answer["errors"]] == [
        (["track", "similar"], "NOT_FOUND")
    ]
    assert answer["data"] is None  # similar and track are non-null: the error nulls the data
    # an unknown track: NOT_FOUND for the track, nothing about the search run for it
    answer = await gql(env.client, query, {"id": "no-such-track", "feature": "audio", "limit": 5})
    assert [(e["path"], e["extensions"]["code"]) for e in answer["errors"]] == [(["track"], "NOT_FOUND")]


async def test_two_similar_fields_each_get_their_own_search(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = """
    query($id: ID!) {
      track(id: $id) {
        near: similar(featureType: "audio", limit: 3) { entityId entity { ... on Track { id } } }
        far: similar(featureType: "mood", limit: 4) { entityId entity { ... on Track { id } } }
      }
    }"""
    with counted_searches(monkeypatch) as calls:
        data = ok_all(await gql(env.client, query, {"id": tr(20)}))
    assert sorted(c["feature_type"] for c in calls) == ["audio", "mood"]
    near = await _similar_on_track(env, id=tr(20), feature="audio", limit=3)
    far = await _similar_on_track(env, id=tr(20), feature="mood", limit=4)
    assert [s["entityId"] for s in data["track"]["near"]] == [s["entityId"] for s in near]
    assert [s["entityId"] for s in data["track"]["far"]] == [s["entityId"] for s in far]


# ------------------------------------------------------------------ outdated after a version bump

FINGERPRINTS = """
query($ids: [ID!]!) { tracks(ids: $ids) { id fingerprint { featureType version outdated vector } } }
"""


async def test_fingerprint_outdated_after_version_bump(client: httpx.AsyncClient) -> None:
    await seed(client)  # feature type "audio", 4-d, version 1
    vectors = {"t1": np.array([1, 2, 3, 4], np.float32), "t2": np.array([4, 3, 2, 1], np.float32)}
    await ingest(client, "audio", "track", vectors)

    async def maps() -> dict[str, tuple[int, bool]]:
        tracks = ok(await gql(client, FINGERPRINTS, {"ids": ["t1", "t2"]}), "tracks")
        out = {}
        for t in tracks:
            [m] = t["fingerprint"]
            assert m["featureType"] == "audio"
            out[t["id"]] = (m["version"], m["outdated"])
        return out

    assert await maps() == {"t1": (1, False), "t2": (1, False)}
    r = await client.post("/v1/admin/fingerprints/types/audio/bump-version", headers=ADMIN)
    assert r.status_code == 200 and r.json()["new_version"] == 2, r.text
    assert await maps() == {"t1": (1, True), "t2": (1, True)}

    body = {
        "feature_type_id": "audio",
        "version": 2,
        "features": [{"entity_type": "track", "entity_id": "t1", "vector": [0.5, 0.5, 0.5, 0.5]}],
    }
    r = await client.post("/v1/admin/fingerprints/ingest", json=body, headers=ADMIN)
    assert r.status_code == 200 and r.json()["errors"] == [], r.text
    assert await maps() == {"t1": (2, False), "t2": (1, True)}

    # the track page reads the same flag; the root fingerprint agrees
    page = """{ track(id: "t2") { fingerprint(types: ["audio"]) { version outdated } } }"""
    assert ok(await gql(client, page), "track")["fingerprint"] == [{"version": 1, "outdated": True}]
    root = """{ fingerprint(entityType: TRACK, entityId: "t2") { featureMaps { version outdated } } }"""
    assert ok(await gql(client, root), "fingerprint")["featureMaps"] == [{"version": 1, "outdated": True}]
