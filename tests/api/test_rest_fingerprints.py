"""REST fingerprint reads (spec §6.3) with playlist privacy, and feature-map deletes (spec §6.2)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from fingerprints.config import Settings
from tests.helpers import ADMIN, ADMIN_TOKEN, dump_databases, seed

INGEST = "/v1/admin/fingerprints/ingest"
TYPES = "/v1/admin/fingerprints/types"
FEATURES = "/v1/admin/fingerprints/features"
WRONG = {"Authorization": "Bearer not-the-admin-token"}
OWNER = {"X-User-Id": "7"}  # owner of p1 in the seeded catalog
State = dict[str, list[tuple[Any, ...]]]
_ANY = object()

# Stored by the ``stored`` fixture: (feature type, entity type, entity id) -> vector.
AUDIO = {
    ("track", "t1"): [0.1, 0.2, 0.3, 0.4],
    ("track", "t2"): [1.0, -1.0, 0.5, 0.25],
    ("album", "al1"): [0.7, 0.1, 0.1, 0.1],
    ("artist", "ar1"): [0.3, 0.3, 0.3, 0.1],
    ("playlist", "p1"): [0.9, 0.8, 0.7, 0.6],
}
MOOD = {
    ("track", "t1"): [0.5, 0.25, 0.125],
    ("track", "t5"): [1.0, 2.0, 3.0],
    ("playlist", "p1"): [3.0, 2.0, 1.0],
}


# ------------------------------------------------------------------ helpers


def assert_error(r: httpx.Response, status: int, code: str, field: Any = _ANY) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}, r.text
    error = r.json()["error"]
    assert set(error) == {"code", "message", "field"}, r.text
    assert error["code"] == code, r.text
    assert isinstance(error["message"], str) and error["message"]
    if field is not _ANY:
        assert error["field"] == field, r.text
    return error


async def get_fp(
    client: httpx.AsyncClient,
    entity_type: str,
    entity_id: str,
    types: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    params = {"types": types} if types is not None else None
    return await client.get(
        f"/v1/content/fingerprint/{entity_type}/{entity_id}", params=params, headers=headers or {}
    )


async def delete_features(
    client: httpx.AsyncClient,
    body: Any = None,
    *,
    content: bytes | None = None,
    headers: dict[str, str] = ADMIN,
) -> httpx.Response:
    if content is not None:
        return await client.request(
            "DELETE", FEATURES, content=content, headers={**headers, "Content-Type": "application/json"}
        )
    return await client.request("DELETE", FEATURES, json=body, headers=headers)


async def ingest_ok(
    client: httpx.AsyncClient, type_id: str, vectors: dict[tuple[str, str], list[float]], **extra: Any
) -> None:
    features = [{"entity_type": et, "entity_id": eid, "vector": v} for (et, eid), v in vectors.items()]
    r = await client.post(
        INGEST, json={"feature_type_id": type_id, "features": features, **extra}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"ingested": len(features), "errors": []}, r.text


def map_keys(state: State) -> set[tuple[str, str, str]]:
    """(entity_type, entity_id, feature_type_id) of every stored map, both databases."""
    keys = {(r[0], r[1], r[2]) for r in state["catalog.db:feature_maps"]}
    keys |= {("playlist", r[0], r[1]) for r in state["user.db:playlist_feature_maps"]}
    return keys


def without_maps(state: State) -> State:
    return {
        k: v
        for k, v in state.items()
        if k not in ("catalog.db:feature_maps", "user.db:playlist_feature_maps")
    }


def maps_of(state: State) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    rows = {(r[0], r[1], r[2]): r for r in state["catalog.db:feature_maps"]}
    rows |= {("playlist", r[0], r[1]): r for r in state["user.db:playlist_feature_maps"]}
    return rows


def assert_only_deleted(before: State, after: State, deleted: set[tuple[str, str, str]]) -> None:
    """``after`` is ``before`` minus exactly the ``deleted`` maps; every other row is unchanged."""
    assert without_maps(after) == without_maps(before)
    old, new = maps_of(before), maps_of(after)
    assert deleted <= set(old)
    assert set(new) == set(old) - deleted
    for key, row in new.items():
        assert row == old[key], key


@pytest.fixture
async def stored(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Seeded catalog; ``audio`` (dim 4) and ``mood`` (dim 3) maps as in AUDIO and MOOD."""
    await seed(client)
    r = await client.post(TYPES, json={"id": "mood", "name": "Mood", "dimension": 3}, headers=ADMIN)
    assert r.status_code == 201, r.text
    await ingest_ok(client, "audio", AUDIO)
    r = await client.post(
        INGEST,
        json={
            "feature_type_id": "mood",
            "features": [
                {"entity_type": et, "entity_id": eid, "vector": v, "metadata": {"src": eid}}
                for (et, eid), v in MOOD.items()
            ],
        },
        headers=ADMIN,
    )
    assert r.status_code == 200 and r.json()["ingested"] == len(MOOD), r.text
    return client


# ------------------------------------------------------------------ GET fingerprint


async def test_track_fingerprint_shape(stored: httpx.AsyncClient) -> None:
    r = await get_fp(stored, "track", "t1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["entity_type"] == "track" and body["entity_id"] == "t1"
    assert set(body["fingerprint"]) == {"audio", "mood"}
    for type_id, vectors in (("audio", AUDIO), ("mood", MOOD)):
        entry = body["fingerprint"][type_id]
        assert {"version", "vector", "computed_at"} <= set(entry)
        assert entry["version"] == 1
        assert isinstance(entry["computed_at"], int) and entry["computed_at"] > 0
        np.testing.assert_array_equal(
            np.asarray(entry["vector"], dtype=np.float32),
            np.asarray(vectors[("track", "t1")], dtype=np.float32),
        )
        assert entry["outdated"] is False
    assert body["fingerprint"]["mood"]["metadata"] == {"src": "t1"}
    assert body["fingerprint"]["audio"]["metadata"] is None
    assert body["last_updated"] == max(e["computed_at"] for e in body["fingerprint"].values())


@pytest.mark.parametrize(
    "entity_type, entity_id, types",
    [
        ("album", "al1", {"audio"}),
        ("artist", "ar1", {"audio"}),
        ("track", "t5", {"mood"}),
        ("track", "t2", {"audio"}),
    ],
)
async def test_fingerprint_of_each_entity_type(
    stored: httpx.AsyncClient, entity_type: str, entity_id: str, types: set[str]
) -> None:
    r = await get_fp(stored, entity_type, entity_id)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["entity_type"] == entity_type and body["entity_id"] == entity_id
    assert set(body["fingerprint"]) == types
    for type_id in types:
        expected = (AUDIO if type_id == "audio" else MOOD)[(entity_type, entity_id)]
        np.testing.assert_array_equal(
            np.asarray(body["fingerprint"][type_id]["vector"], dtype=np.float32),
            np.asarray(expected, dtype=np.float32),
        )


@pytest.mark.parametrize(
    "types, expected",
    [
        ("audio", {"audio"}),
        ("mood", {"mood"}),
        ("audio,mood", {"audio", "mood"}),
        (" mood , audio ", {"audio", "mood"}),
    ],
)
async def test_types_filter(stored: httpx.AsyncClient, types: str, expected: set[str]) -> None:
    r = await get_fp(stored, "track", "t1", types=types)
    assert r.status_code == 200, r.text
    assert set(r.json()["fingerprint"]) == expected


async def test_types_filter_keeps_types_the_entity_has(stored: httpx.AsyncClient) -> None:
    r = await get_fp(stored, "track", "t2", types="audio,mood")
    assert r.status_code == 200, r.text
    assert set(r.json()["fingerprint"]) == {"audio"}


async def test_outdated_flag_after_bump(stored: httpx.AsyncClient) -> None:
    assert (await stored.post(f"{TYPES}/audio/bump-version", headers=ADMIN)).status_code == 200
    await ingest_ok(stored, "audio", {("track", "t2"): [1.0, 1.0, 1.0, 1.0]})
    t1 = (await get_fp(stored, "track", "t1")).json()["fingerprint"]
    assert t1["audio"]["version"] == 1 and t1["audio"]["outdated"] is True
    assert t1["mood"]["outdated"] is False
    t2 = (await get_fp(stored, "track", "t2")).json()["fingerprint"]
    assert t2["audio"]["version"] == 2 and t2["audio"]["outdated"] is False


@pytest.mark.parametrize(
    "entity_type, entity_id, types, field",
    [
        ("track", "t999", None, "entity_id"),  # not in the catalog
        ("album", "t1", None, "entity_id"),  # a track id is no album
        ("artist", "nobody", None, "entity_id"),
        ("track", "t6", None, "entity_id"),  # in the catalog, no maps
        ("album", "al2", None, "entity_id"),
        ("track", "t1", "nope", "types"),  # unknown feature type
        ("track", "t1", "audio,nope", "types"),
        ("track", "t2", "mood", "entity_id"),  # known type, but t2 has none
        ("playlist", "p999", None, "entity_id"),
    ],
)
async def test_fingerprint_not_found(
    stored: httpx.AsyncClient, entity_type: str, entity_id: str, types: str | None, field: str
) -> None:
    assert_error(await get_fp(stored, entity_type, entity_id, types, ADMIN), 404, "NOT_FOUND", field)


@pytest.mark.parametrize("entity_type", ["song", "tracks", "Track", "TRACK", "user"])
async def test_invalid_entity_type_is_400(stored: httpx.AsyncClient, entity_type: str) -> None:
    assert_error(await get_fp(stored, entity_type, "t1"), 400, "BAD_USER_INPUT", "entity_type")


async def test_track_fingerprints_are_public(stored: httpx.AsyncClient) -> None:
    for headers in ({}, {"X-User-Id": "99"}, WRONG):
        r = await get_fp(stored, "track", "t1", headers=headers)
        assert r.status_code == 200, r.text


# ------------------------------------------------------------------ playlist privacy


@pytest.mark.parametrize(
    "headers",
    [OWNER, ADMIN, {**OWNER, **WRONG}, {"X-User-Id": " 7 "}],
    ids=["owner", "admin", "owner_with_bad_token", "owner_spaces"],
)
async def test_playlist_visible_to_owner_and_admin(
    stored: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    r = await get_fp(stored, "playlist", "p1", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["entity_type"] == "playlist" and body["entity_id"] == "p1"
    assert set(body["fingerprint"]) == {"audio", "mood"}
    np.testing.assert_array_equal(
        np.asarray(body["fingerprint"]["audio"]["vector"], dtype=np.float32),
        np.asarray(AUDIO[("playlist", "p1")], dtype=np.float32),
    )
    r = await get_fp(stored, "playlist", "p1", types="mood", headers=headers)
    assert r.status_code == 200 and set(r.json()["fingerprint"]) == {"mood"}, r.text


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-User-Id": "8"}, {"X-User-Id": "-7"}, {"X-User-Id": "abc"}, {"X-User-Id": ""}, WRONG],
    ids=["anonymous", "other_user", "negative", "garbage", "empty", "wrong_token"],
)
async def test_playlist_hidden_from_others(stored: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """Someone else's playlist answers exactly like a playlist that does not exist."""
    hidden = assert_error(
        await get_fp(stored, "playlist", "p1", headers=headers), 404, "NOT_FOUND", "entity_id"
    )
    missing = assert_error(
        await get_fp(stored, "playlist", "p404", headers=headers), 404, "NOT_FOUND", "entity_id"
    )
    assert hidden["message"].replace("p1", "ID") == missing["message"].replace("p404", "ID")
    assert_error(await get_fp(stored, "playlist", "p1", "mood", headers), 404, "NOT_FOUND")
    assert_error(await get_fp(stored, "playlist", "p1", "nope", headers), 404, "NOT_FOUND")


async def test_playlist_ownership_follows_replacement(stored: httpx.AsyncClient) -> None:
    r = await stored.post(
        "/v1/admin/playlists",
        json={"id": "p1", "user_id": 8, "name": "Moved", "track_ids": ["t1"]},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    assert_error(await get_fp(stored, "playlist", "p1", headers=OWNER), 404, "NOT_FOUND")
    assert (await get_fp(stored, "playlist", "p1", headers={"X-User-Id": "8"})).status_code == 200


# ------------------------------------------------------------------ DELETE features


async def test_delete_by_feature_type_covers_tracks_and_playlists(
    stored: httpx.AsyncClient, settings: Settings
) -> None:
    before = dump_databases(settings)
    r = await delete_features(stored, {"feature_type_id": "audio"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "deleted": 5,
        "by_entity_type": {"track": 2, "album": 1, "artist": 1, "playlist": 1},
    }
    after = dump_databases(settings)
    assert_only_deleted(before, after, {(et, eid, "audio") for et, eid in AUDIO})
    assert map_keys(after) == {(et, eid, "mood") for et, eid in MOOD}
    # The type itself stays registered, with no maps left.
    types = {t["id"]: t for t in (await stored.get(TYPES, headers=ADMIN)).json()["types"]}
    assert types["audio"]["stats"]["track_count"] == 0 and types["audio"]["stats"]["playlist_count"] == 0
    assert_error(await get_fp(stored, "album", "al1"), 404, "NOT_FOUND")
    assert set((await get_fp(stored, "playlist", "p1", headers=OWNER)).json()["fingerprint"]) == {"mood"}
    # Deleting again finds nothing.
    r = await delete_features(stored, {"feature_type_id": "audio"})
    assert r.status_code == 200 and r.json() == {"deleted": 0, "by_entity_type": {}}, r.text


async def test_delete_by_entities(stored: httpx.AsyncClient, settings: Settings) -> None:
    before = dump_databases(settings)
    r = await delete_features(
        stored,
        {
            "entities": [
                {"entity_type": "track", "entity_id": "t1"},
                {"entity_type": "playlist", "entity_id": "p1"},
                {"entity_type": "album", "entity_id": "al1"},
                {"entity_type": "track", "entity_id": "t6"},  # has no maps
                {"entity_type": "artist", "entity_id": "t2"},  # wrong type for t2: nothing
            ]
        },
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"deleted": 5, "by_entity_type": {"track": 2, "playlist": 2, "album": 1}}
    assert_only_deleted(
        before,
        dump_databases(settings),
        {
            ("track", "t1", "audio"),
            ("track", "t1", "mood"),
            ("playlist", "p1", "audio"),
            ("playlist", "p1", "mood"),
            ("album", "al1", "audio"),
        },
    )
    assert_error(await get_fp(stored, "track", "t1"), 404, "NOT_FOUND")
    assert (await get_fp(stored, "track", "t2")).status_code == 200


async def test_delete_by_type_and_entities(stored: httpx.AsyncClient, settings: Settings) -> None:
    before = dump_databases(settings)
    r = await delete_features(
        stored,
        {
            "feature_type_id": "mood",
            "entities": [
                {"entity_type": "track", "entity_id": "t1"},
                {"entity_type": "track", "entity_id": "t2"},  # no mood map
                {"entity_type": "playlist", "entity_id": "p1"},
            ],
        },
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"deleted": 2, "by_entity_type": {"track": 1, "playlist": 1}}
    assert_only_deleted(
        before, dump_databases(settings), {("track", "t1", "mood"), ("playlist", "p1", "mood")}
    )
    assert set((await get_fp(stored, "track", "t1")).json()["fingerprint"]) == {"audio"}


async def test_delete_entities_without_maps(stored: httpx.AsyncClient, settings: Settings) -> None:
    before = dump_databases(settings)
    r = await delete_features(stored, {"entities": [{"entity_type": "track", "entity_id": "t404"}]})
    assert r.status_code == 200 and r.json() == {"deleted": 0, "by_entity_type": {}}, r.text
    assert dump_databases(settings) == before


@pytest.mark.parametrize(
    "body",
    [
        {"feature_type_id": "nope"},
        {"feature_type_id": "nope", "entities": [{"entity_type": "track", "entity_id": "t1"}]},
    ],
)
async def test_delete_unknown_type_is_404(stored: httpx.AsyncClient, settings: Settings, body: Any) -> None:
    before = dump_databases(settings)
    assert_error(await delete_features(stored, body), 404, "NOT_FOUND", "feature_type_id")
    assert dump_databases(settings) == before


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, _ANY),
        ({"feature_type_id": None, "entities": None}, _ANY),
        ({"entities": []}, "entities"),
        ({"entities": {"entity_type": "track", "entity_id": "t1"}}, "entities"),
        ({"entities": ["t1"]}, "entities[0]"),
        ({"entities": [{"entity_type": "song", "entity_id": "t1"}]}, "entities[0].entity_type"),
        ({"entities": [{"entity_type": "track", "entity_id": ""}]}, "entities[0].entity_id"),
        ({"entities": [{"entity_type": "track"}]}, "entities[0].entity_id"),
        (
            {"entities": [{"entity_type": "track", "entity_id": "t1"}, {"entity_type": "track", "id": "t2"}]},
            "entities[1].id",
        ),
        ({"feature_type_id": ""}, "feature_type_id"),
        ({"feature_type_id": 3}, "feature_type_id"),
        ({"feature_type_id": "audio", "force": True}, "force"),
    ],
)
async def test_delete_rejects_bad_bodies(
    stored: httpx.AsyncClient, settings: Settings, body: Any, field: Any
) -> None:
    before = dump_databases(settings)
    assert_error(await delete_features(stored, body), 400, "BAD_USER_INPUT", field)
    assert dump_databases(settings) == before


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null"])
async def test_delete_rejects_malformed_body(
    stored: httpx.AsyncClient, settings: Settings, raw: bytes
) -> None:
    before = dump_databases(settings)
    assert_error(await delete_features(stored, content=raw), 400, "BAD_USER_INPUT", "body")
    assert dump_databases(settings) == before


@pytest.mark.parametrize(
    "headers, status, code",
    [
        ({}, 401, "UNAUTHENTICATED"),
        (OWNER, 401, "UNAUTHENTICATED"),
        (WRONG, 403, "FORBIDDEN"),
        ({"Authorization": f"Token {ADMIN_TOKEN}"}, 401, "UNAUTHENTICATED"),
    ],
)
async def test_delete_needs_the_admin_token(
    stored: httpx.AsyncClient, settings: Settings, headers: dict[str, str], status: int, code: str
) -> None:
    before = dump_databases(settings)
    assert_error(await delete_features(stored, {"feature_type_id": "audio"}, headers=headers), status, code)
    assert dump_databases(settings) == before
