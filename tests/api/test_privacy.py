"""Playlist privacy (design §4): a playlist is visible to its owner (``X-User-Id`` equal to its
``user_id``) and to admin (``Authorization: Bearer <admin token>``) only. Everyone else is told
it does not exist: NOT_FOUND (HTTP 404), exactly the answer for a playlist that does not
exist, never FORBIDDEN. Checked on every way in: the GraphQL roots, the ``fingerprint`` and
``similar`` fields of ``Playlist``, ``similar(input)`` / ``similarBatch`` by a playlist or with
PLAYLIST targets, and the REST routes of spec §6.3."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from fingerprints.app import create_app
from fingerprints.config import Settings
from tests.api.similar_helpers import (
    BATCH,
    PLAYLISTS,
    SIMILAR,
    FeatureQuery,
    World,
    assert_matches,
    build_world,
    expected_ranking,
    gql,
    ingest,
    multi_reference,
    reference,
    register_type,
    track_id,
)
from tests.backends import Backend, make_settings, playlist_rows
from tests.helpers import ADMIN, running_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

PLAYLIST = "pl7a"  # owned by user 7
OTHERS_OF_7 = ["pl7b", "pl7c"]
GHOST = "pl_ghost"  # no such playlist

VIEWERS: dict[str, dict[str, str]] = {
    "owner": {"X-User-Id": "7"},
    "other-user": {"X-User-Id": "8"},
    "anonymous": {},
    "admin": ADMIN,
    "admin-as-other-user": {**ADMIN, "X-User-Id": "8"},
    "wrong-token": {"Authorization": "Bearer not-the-token", "X-User-Id": "8"},
}
CAN_SEE = {"owner": True, "other-user": False, "anonymous": False, "admin": True, "admin-as-other-user": True}
CAN_SEE["wrong-token"] = False


def visible_playlists(viewer: str) -> list[str]:
    """The playlists a viewer may see: its own, or all for admin."""
    if viewer.startswith("admin"):
        return sorted(PLAYLISTS)
    user = VIEWERS[viewer].get("X-User-Id")
    return sorted(p for p, owner in PLAYLISTS.items() if user is not None and str(owner) == user)


by_viewer = pytest.mark.parametrize("viewer", list(VIEWERS))


@dataclass
class Env:
    client: httpx.AsyncClient
    settings: Settings
    world: World


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> AsyncIterator[Env]:
    data_dir = tmp_path_factory.mktemp("privacy") / "data"
    # no sweeps: playlist vectors stay the ones ingested (the references use them)
    settings = make_settings(backend, data_dir, aggregation_interval=0)
    async with running_client(create_app(settings)) as client:
        world = await build_world(client, seed=4)
        # a second playlist feature, for multi-feature searches over playlists
        await register_type(client, "vibe", 6, "cosine", ["track", "playlist"])
        rng = np.random.default_rng(40)
        world.distance["vibe"] = "cosine"
        world.vectors["vibe"] = {
            "track": {track_id(i): rng.normal(size=6).astype(np.float32) for i in range(600)},
            "playlist": {p: rng.normal(size=6).astype(np.float32) for p in PLAYLISTS},
        }
        for entity_type, vectors in world.vectors["vibe"].items():
            await ingest(client, "vibe", entity_type, vectors)
        yield Env(client, settings, world)


# ------------------------------------------------------------------ helpers


def data_of(answer: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in answer, answer
    return answer["data"]  # type: ignore[no-any-return]


def hidden(answer: dict[str, Any], playlist_id: str = PLAYLIST) -> dict[str, Any]:
    """The answer is NOT_FOUND naming the playlist and nothing else leaks."""
    assert answer.get("errors"), answer
    [error] = answer["errors"]
    assert error["extensions"]["code"] == "NOT_FOUND", answer
    assert "forbidden" not in error["message"].lower() and "owner" not in error["message"].lower(), answer
    assert playlist_id in error["message"], answer
    return error  # type: ignore[no-any-return]


def same_error(a: dict[str, Any], a_id: str, b: dict[str, Any], b_id: str) -> None:
    """Two errors that differ only by the id they name (a hidden and a missing playlist)."""

    def norm(error: dict[str, Any], eid: str) -> dict[str, Any]:
        return {k: v.replace(eid, "<id>") if isinstance(v, str) else v for k, v in error.items()}

    assert norm(a, a_id) == norm(b, b_id), (a, b)


def playlist_vector(env: Env, playlist_id: str, type_id: str = "audio") -> np.ndarray:
    return env.world.of(type_id, "playlist")[playlist_id]


def assert_same_f32(got: list[float], want: np.ndarray) -> None:
    assert np.array_equal(np.asarray(got, dtype=np.float32), np.asarray(want, dtype=np.float32))


# ------------------------------------------------------------------ GraphQL: the playlist roots

PLAYLIST_ROOT = "query($id: ID!) { playlist(id: $id) { id name ownerId created tracks { id } } }"


@by_viewer
async def test_playlist_root(env: Env, viewer: str) -> None:
    headers = VIEWERS[viewer]
    answer = await gql(env.client, PLAYLIST_ROOT, {"id": PLAYLIST}, headers)
    if CAN_SEE[viewer]:
        playlist = data_of(answer)["playlist"]
        head, tracks = playlist_rows(env.settings, PLAYLIST)
        assert (playlist["id"], playlist["name"], playlist["ownerId"], playlist["created"]) == head
        assert [t["id"] for t in playlist["tracks"]] == tracks
    else:
        assert answer["data"] is None, answer
        error = hidden(answer)
        ghost = await gql(env.client, PLAYLIST_ROOT, {"id": GHOST}, headers)
        same_error(error, PLAYLIST, hidden(ghost, GHOST), GHOST)
    # another user's playlist is hidden from the owner of pl7a too, visible to admin
    answer = await gql(env.client, PLAYLIST_ROOT, {"id": "pl9a"}, headers)
    if viewer.startswith("admin"):
        assert data_of(answer)["playlist"]["ownerId"] == 9
    else:
        hidden(answer, "pl9a")


@by_viewer
async def test_playlists_batch_null_for_others(env: Env, viewer: str) -> None:
    ids = [PLAYLIST, "pl8a", "pl9a", GHOST, "pl7b"]
    query = "query($ids: [ID!]!) { playlists(ids: $ids) { id ownerId tracks { id } } }"
    playlists = data_of(await gql(env.client, query, {"ids": ids}, VIEWERS[viewer]))["playlists"]
    visible = set(visible_playlists(viewer))
    assert [p and p["id"] for p in playlists] == [i if i in visible else None for i in ids]
    for p in playlists:
        if p is not None:
            head, tracks = playlist_rows(env.settings, p["id"])
            assert p["ownerId"] == head[2] and [t["id"] for t in p["tracks"]] == tracks


@by_viewer
async def test_root_fingerprint_of_a_playlist(env: Env, viewer: str) -> None:
    query = """query($id: ID!) { fingerprint(entityType: PLAYLIST, entityId: $id, types: ["audio"]) {
      entityId featureMaps { featureType vector } } }"""
    answer = await gql(env.client, query, {"id": PLAYLIST}, VIEWERS[viewer])
    if CAN_SEE[viewer]:
        [fmap] = data_of(answer)["fingerprint"]["featureMaps"]
        assert_same_f32(fmap["vector"], playlist_vector(env, PLAYLIST))
    else:
        same_error(
            hidden(answer),
            PLAYLIST,
            hidden(await gql(env.client, query, {"id": GHOST}, VIEWERS[viewer]), GHOST),
            GHOST,
        )


# ------------------------------------------------------------------ GraphQL: fields of Playlist


@by_viewer
async def test_playlist_fingerprint_field(env: Env, viewer: str) -> None:
    query = """query($id: ID!) { playlist(id: $id) {
      fingerprint(types: ["audio", "vibe"]) { featureType vector outdated } } }"""
    answer = await gql(env.client, query, {"id": PLAYLIST}, VIEWERS[viewer])
    if not CAN_SEE[viewer]:
        assert answer["data"] is None
        hidden(answer)
        return
    maps = data_of(answer)["playlist"]["fingerprint"]
    assert [m["featureType"] for m in maps] == ["audio", "vibe"]
    for m in maps:
        assert_same_f32(m["vector"], playlist_vector(env, PLAYLIST, m["featureType"]))
        assert m["outdated"] is False


PLAYLIST_SIMILAR = """
query($id: ID!) {
  playlist(id: $id) {
    similar(featureType: "audio", limit: 10) {
      entityType entityId score entity { __typename ... on Playlist { id ownerId } }
    }
    tracks: similar(featureType: "audio", targetEntityType: TRACK, limit: 10) { entityId score }
  }
}"""


@by_viewer
async def test_playlist_similar_field(env: Env, viewer: str) -> None:
    answer = await gql(env.client, PLAYLIST_SIMILAR, {"id": PLAYLIST}, VIEWERS[viewer])
    if not CAN_SEE[viewer]:
        assert answer["data"] is None
        hidden(answer)
        return
    playlist = data_of(answer)["playlist"]
    visible = visible_playlists(viewer)
    body = {"feature_type": "audio", "query": {"entity_type": "playlist", "entity_id": PLAYLIST}, "limit": 10}
    ranking, _ = expected_ranking(env.world, body, visible)
    assert_matches(playlist["similar"], ranking, 10, id_key="entityId", what=viewer)
    ids = {s["entityId"] for s in playlist["similar"]}
    assert ids == set(visible) - {PLAYLIST}
    if viewer == "owner":
        assert ids == set(OTHERS_OF_7)
    for item in playlist["similar"]:
        assert item["entity"] == {
            "__typename": "Playlist",
            "id": item["entityId"],
            "ownerId": PLAYLISTS[item["entityId"]],
        }
    tracks, _ = expected_ranking(env.world, {**body, "target_entity_type": "track"})
    assert_matches(playlist["tracks"], tracks, 10, id_key="entityId", what=f"{viewer}: tracks")


# ------------------------------------------------------------------ GraphQL: similar(input) by a playlist

SIMILAR_QUERY = """
query($input: SimilarInput!) {
  similar(input: $input) {
    targetEntityType
    results { entityType entityId score entity { __typename ... on Playlist { id ownerId } } }
  }
}"""
BATCH_QUERY = """
query($input: SimilarBatchInput!) {
  similarBatch(input: $input) {
    results {
      query { entityId }
      results { entityId score entity { __typename ... on Playlist { id ownerId } } }
    }
  }
}"""


@by_viewer
@pytest.mark.parametrize("target", [None, "TRACK"])
async def test_similar_by_playlist(env: Env, viewer: str, target: str | None) -> None:
    headers = VIEWERS[viewer]
    query = {"entityType": "PLAYLIST", "entityId": PLAYLIST}
    graphql_input: dict[str, Any] = {"featureType": "audio", "query": query, "limit": 10}
    if target is not None:
        graphql_input["targetEntityType"] = target
    answer = await gql(env.client, SIMILAR_QUERY, {"input": graphql_input}, headers)
    if not CAN_SEE[viewer]:
        assert answer["data"] is None
        ghost = {**graphql_input, "query": {**query, "entityId": GHOST}}
        same_error(
            hidden(answer),
            PLAYLIST,
            hidden(await gql(env.client, SIMILAR_QUERY, {"input": ghost}, headers), GHOST),
            GHOST,
        )
        return
    result = data_of(answer)["similar"]
    body: dict[str, Any] = {
        "feature_type": "audio",
        "query": {"entity_type": "playlist", "entity_id": PLAYLIST},
        "limit": 10,
    }
    if target is not None:
        body["target_entity_type"] = target.lower()
    ranking, _ = expected_ranking(env.world, body, visible_playlists(viewer))
    assert_matches(result["results"], ranking, 10, id_key="entityId", what=viewer)
    if target is None:
        assert result["targetEntityType"] == "PLAYLIST"
        assert {r["entityId"] for r in result["results"]} == set(visible_playlists(viewer)) - {PLAYLIST}


@by_viewer
async def test_similar_by_entities_and_batch_with_a_playlist(env: Env, viewer: str) -> None:
    """A hidden playlist among several query entities, or as one query of a batch: NOT_FOUND."""
    headers = VIEWERS[viewer]
    entities = [
        {"entityType": "TRACK", "entityId": track_id(3)},
        {"entityType": "PLAYLIST", "entityId": PLAYLIST},
    ]
    centroid = {
        "featureType": "audio",
        "query": {"entities": entities},
        "targetEntityType": "TRACK",
        "limit": 5,
    }
    batch = {
        "featureType": "audio",
        "queries": [
            {"entityType": "PLAYLIST", "entityId": PLAYLIST},
            {"entityType": "PLAYLIST", "entityId": "pl7b"},
        ],
        "targetEntityType": "TRACK",
        "limitPerQuery": 3,
    }
    answers = [
        await gql(env.client, SIMILAR_QUERY, {"input": centroid}, headers),
        await gql(env.client, BATCH_QUERY, {"input": batch}, headers),
    ]
    for answer in answers:
        if CAN_SEE[viewer]:
            data_of(answer)
        else:
            assert answer["data"] is None
            hidden(answer)


# ------------------------------------------------------------------ GraphQL: PLAYLIST targets

ON_TRACK = """
query($id: ID!) {
  track(id: $id) {
    similar(featureType: "audio", targetEntityType: PLAYLIST, limit: 50) {
      entityType entityId score entity { __typename ... on Playlist { id ownerId name } }
    }
    multi: similar(features: [{featureType: "audio", weight: 1}, {featureType: "vibe", weight: 2}],
                   targetEntityType: PLAYLIST, limit: 50) { entityId score }
  }
}"""


def check_playlist_items(items: list[dict[str, Any]], viewer: str) -> None:
    """Only the viewer's playlists, each resolved (never a null entity)."""
    assert {i["entityId"] for i in items} == set(visible_playlists(viewer)), (viewer, items)
    for item in items:
        if "entity" in item:
            assert item["entity"]["__typename"] == "Playlist" and item["entity"]["id"] == item["entityId"]
            assert item["entity"]["ownerId"] == PLAYLISTS[item["entityId"]]


@by_viewer
async def test_playlist_targets_on_an_entity(env: Env, viewer: str) -> None:
    query_track = track_id(31)
    track = data_of(await gql(env.client, ON_TRACK, {"id": query_track}, VIEWERS[viewer]))["track"]
    visible = visible_playlists(viewer)
    body = {
        "feature_type": "audio",
        "query": {"entity_type": "track", "entity_id": query_track},
        "target_entity_type": "playlist",
        "limit": 50,
    }
    ranking, _ = expected_ranking(env.world, body, visible)
    assert_matches(track["similar"], ranking, 50, id_key="entityId", what=viewer)
    check_playlist_items(track["similar"], viewer)
    # several features: the exact rescoring path is limited to the viewer's playlists as well
    multi = multi_reference(
        [
            FeatureQuery(
                {p: v for p, v in env.world.of(t, "playlist").items() if p in visible},
                env.world.of(t, "track")[query_track],
                "cosine",
                w,
            )
            for t, w in (("audio", 1.0), ("vibe", 2.0))
        ]
    )
    assert_matches(track["multi"], multi, 50, id_key="entityId", what=f"{viewer}: multi")
    check_playlist_items(track["multi"], viewer)


@by_viewer
async def test_playlist_targets_in_similar_and_batch(env: Env, viewer: str) -> None:
    headers = VIEWERS[viewer]
    visible = visible_playlists(viewer)
    vector = np.random.default_rng(3).normal(size=16).astype(np.float32)
    inputs = {
        "by-track": {"query": {"entityType": "TRACK", "entityId": track_id(77)}},
        "by-vector": {"query": {"vector": vector.tolist()}},
        "by-album": {"query": {"entityType": "ALBUM", "entityId": "al03"}},
    }
    for name, extra in inputs.items():
        graphql_input = {"featureType": "audio", "targetEntityType": "PLAYLIST", "limit": 50, **extra}
        result = data_of(await gql(env.client, SIMILAR_QUERY, {"input": graphql_input}, headers))["similar"]
        assert result["targetEntityType"] == "PLAYLIST"
        check_playlist_items(result["results"], viewer)
        if name == "by-vector":
            ranking = reference({p: playlist_vector(env, p) for p in visible}, vector, "cosine")
            assert_matches(result["results"], ranking, 50, id_key="entityId", what=f"{viewer}: {name}")

    batch = {
        "featureType": "audio",
        "queries": [{"entityType": "TRACK", "entityId": track_id(i)} for i in (5, 305)],
        "targetEntityType": "PLAYLIST",
        "limitPerQuery": 10,
    }
    for deduplicate in (False, True):
        answer = await gql(env.client, BATCH_QUERY, {"input": {**batch, "deduplicate": deduplicate}}, headers)
        for entry in data_of(answer)["similarBatch"]["results"]:
            ids = {r["entityId"] for r in entry["results"]}
            assert ids <= set(visible), (viewer, entry)
            if not deduplicate:
                check_playlist_items(entry["results"], viewer)


# ------------------------------------------------------------------ REST


def rest_hidden(r: httpx.Response, playlist_id: str = PLAYLIST) -> dict[str, Any]:
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["code"] == "NOT_FOUND", r.text
    assert playlist_id in error["message"], r.text
    return error  # type: ignore[no-any-return]


@by_viewer
async def test_rest_fingerprint(env: Env, viewer: str) -> None:
    headers = VIEWERS[viewer]
    r = await env.client.get(f"/v1/content/fingerprint/playlist/{PLAYLIST}", headers=headers)
    if CAN_SEE[viewer]:
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["entity_type"], body["entity_id"]) == ("playlist", PLAYLIST)
        assert_same_f32(body["fingerprint"]["audio"]["vector"], playlist_vector(env, PLAYLIST))
    else:
        ghost = await env.client.get(f"/v1/content/fingerprint/playlist/{GHOST}", headers=headers)
        same_error(rest_hidden(r), PLAYLIST, rest_hidden(ghost, GHOST), GHOST)


@by_viewer
async def test_rest_similar_get(env: Env, viewer: str) -> None:
    headers = VIEWERS[viewer]
    params = {"feature_type": "audio", "limit": 10}
    r = await env.client.get(f"/v1/content/similar/playlist/{PLAYLIST}", params=params, headers=headers)
    if not CAN_SEE[viewer]:
        ghost = await env.client.get(f"/v1/content/similar/playlist/{GHOST}", params=params, headers=headers)
        same_error(rest_hidden(r), PLAYLIST, rest_hidden(ghost, GHOST), GHOST)
        return
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    body = {"feature_type": "audio", "query": {"entity_type": "playlist", "entity_id": PLAYLIST}, "limit": 10}
    ranking, _ = expected_ranking(env.world, body, visible_playlists(viewer))
    assert_matches(results, ranking, 10, what=viewer)
    assert {i["entity_id"] for i in results} == set(visible_playlists(viewer)) - {PLAYLIST}


@by_viewer
@pytest.mark.parametrize("target", [None, "track", "playlist"])
async def test_rest_similar_post_by_playlist(env: Env, viewer: str, target: str | None) -> None:
    headers = VIEWERS[viewer]
    body: dict[str, Any] = {
        "feature_type": "audio",
        "query": {"entity_type": "playlist", "entity_id": PLAYLIST},
        "limit": 10,
    }
    if target is not None:
        body["target_entity_type"] = target
    r = await env.client.post(SIMILAR, json=body, headers=headers)
    if not CAN_SEE[viewer]:
        ghost = {**body, "query": {"entity_type": "playlist", "entity_id": GHOST}}
        missing = await env.client.post(SIMILAR, json=ghost, headers=headers)
        same_error(rest_hidden(r), PLAYLIST, rest_hidden(missing, GHOST), GHOST)
        return
    assert r.status_code == 200, r.text
    ranking, _ = expected_ranking(env.world, body, visible_playlists(viewer))
    assert_matches(r.json()["results"], ranking, 10, what=f"{viewer} -> {target}")
    if target != "track":
        assert {i["entity_id"] for i in r.json()["results"]} == set(visible_playlists(viewer)) - {PLAYLIST}


@by_viewer
async def test_rest_similar_post_playlist_target(env: Env, viewer: str) -> None:
    headers = VIEWERS[viewer]
    visible = visible_playlists(viewer)
    bodies: list[dict[str, Any]] = [
        {"feature_type": "audio", "query": {"entity_type": "track", "entity_id": track_id(200)}},
        {"feature_type": "audio", "query": {"entity_type": "artist", "entity_id": "ar04"}},
        {
            "features": [{"feature_type": "audio", "weight": 1}, {"feature_type": "vibe", "weight": 0.5}],
            "query": {"entity_type": "track", "entity_id": track_id(201)},
        },
    ]
    for body in bodies:
        body = {**body, "target_entity_type": "playlist", "limit": 50}
        r = await env.client.post(SIMILAR, json=body, headers=headers)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert {i["entity_id"] for i in results} == set(visible), (viewer, body, results)
        if "feature_type" in body:
            ranking, _ = expected_ranking(env.world, body, visible)
            assert_matches(results, ranking, 50, what=f"{viewer}: {body['query']}")
    # the batch route too
    batch = {
        "feature_type": "audio",
        "queries": [{"entity_type": "track", "entity_id": track_id(i)} for i in (8, 408)],
        "target_entity_type": "playlist",
        "limit_per_query": 10,
    }
    r = await env.client.post(BATCH, json=batch, headers=headers)
    assert r.status_code == 200, r.text
    for entry in r.json()["results"]:
        assert {i["entity_id"] for i in entry["results"]} == set(visible), (viewer, entry)
