"""GraphQL ``similar(input)`` and ``similarBatch(input)`` (design §5): every query form gives
exactly the REST answer for the same request, which matches the brute-force reference; errors
carry ``extensions.code`` NOT_FOUND / BAD_USER_INPUT."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from fingerprints.app import create_app
from tests.api.similar_helpers import (
    BATCH,
    NO_AUDIO,
    SIMILAR,
    World,
    album_id,
    artist_id,
    assert_matches,
    assert_sorted,
    build_world,
    dedup_reference,
    expected_ranking,
    gql,
    rest_items_as_graphql,
    to_graphql,
    track_id,
)
from tests.backends import Backend, make_settings
from tests.helpers import ADMIN, running_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

SIMILAR_QUERY = """
query Similar($input: SimilarInput!) {
  similar(input: $input) {
    targetEntityType
    results { entityType entityId score distance }
  }
}
"""
BATCH_QUERY = """
query Batch($input: SimilarBatchInput!) {
  similarBatch(input: $input) {
    targetEntityType
    results {
      query { entityType entityId }
      results { entityType entityId score distance }
    }
  }
}
"""
USER7 = {"X-User-Id": "7"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend
) -> AsyncIterator[tuple[httpx.AsyncClient, World]]:
    settings = make_settings(backend, tmp_path_factory.mktemp("similar-gql") / "data")
    async with running_client(create_app(settings)) as client:
        world = await build_world(client, seed=2)
        yield client, world


def ref(entity_type: str, entity_id: str) -> dict[str, str]:
    return {"entity_type": entity_type, "entity_id": entity_id}


RNG = np.random.default_rng(21)
RAW16 = RNG.normal(size=16).astype(np.float32).tolist()
RAW8 = RNG.normal(size=8).astype(np.float32).tolist()

FORMS: dict[str, dict[str, Any]] = {
    "entity-cosine": {"feature_type": "audio", "query": ref("track", track_id(17)), "limit": 15},
    "entity-euclidean": {"feature_type": "timbre", "query": ref("track", track_id(230)), "limit": 15},
    "entity-dot": {"feature_type": "energy", "query": ref("track", track_id(480)), "limit": 15},
    "entity-include-query": {
        "feature_type": "audio",
        "query": ref("track", track_id(17)),
        "limit": 5,
        "include_query": True,
    },
    "entity-dot-include-query": {
        "feature_type": "energy",
        "query": ref("track", track_id(480)),
        "limit": 5,
        "include_query": True,
    },
    "default-limit": {"feature_type": "audio", "query": ref("track", track_id(18))},
    "max-limit": {"feature_type": "audio", "query": ref("track", track_id(19)), "limit": 1000},
    "min-score": {
        "feature_type": "audio",
        "query": ref("track", track_id(20)),
        "limit": 50,
        "min_score": 0.5,
    },
    "min-score-euclidean": {
        "feature_type": "timbre",
        "query": ref("track", track_id(21)),
        "limit": 50,
        "min_score": 0.4,
    },
    "exclude-ids": {
        "feature_type": "audio",
        "query": ref("track", track_id(22)),
        "limit": 10,
        "exclude_ids": [track_id(23), track_id(24), track_id(25)],
    },
    "raw-vector-cosine": {"feature_type": "audio", "query": {"vector": RAW16}, "limit": 12},
    "raw-vector-euclidean-album": {
        "feature_type": "timbre",
        "query": {"vector": RAW8},
        "target_entity_type": "album",
        "limit": 12,
    },
    "raw-vector-dot": {"feature_type": "energy", "query": {"vector": RAW8}, "limit": 12},
    "centroid-cosine": {
        "feature_type": "audio",
        "query": {"entities": [ref("track", track_id(i)) for i in (3, 140, 141)]},
        "limit": 20,
    },
    "centroid-dot": {
        "feature_type": "energy",
        "query": {"entities": [ref("track", track_id(i)) for i in (3, 140, 141)]},
        "limit": 20,
    },
    "centroid-euclidean-mixed": {
        "feature_type": "timbre",
        "query": {"entities": [ref("track", track_id(5)), ref("album", album_id(12))]},
        "limit": 20,
    },
    "cross-album-to-tracks": {
        "feature_type": "audio",
        "query": ref("album", album_id(9)),
        "target_entity_type": "track",
        "limit": 20,
    },
    "cross-track-to-albums": {
        "feature_type": "audio",
        "query": ref("track", track_id(9)),
        "target_entity_type": "album",
        "limit": 20,
    },
    "cross-artist-to-tracks": {
        "feature_type": "audio",
        "query": ref("artist", artist_id(6)),
        "target_entity_type": "track",
    },
    "album-to-albums-euclidean": {"feature_type": "timbre", "query": ref("album", album_id(0)), "limit": 8},
    "multi-feature": {
        "features": [{"feature_type": "audio", "weight": 0.7}, {"feature_type": "mood", "weight": 0.3}],
        "query": ref("track", track_id(44)),
        "limit": 25,
    },
    "multi-feature-three-metrics": {
        "features": [
            {"feature_type": "audio", "weight": 1.0},
            {"feature_type": "timbre", "weight": 2.0},
            {"feature_type": "energy", "weight": 0.25},
        ],
        "query": ref("track", track_id(275)),
        "limit": 25,
        "min_score": 0.2,
    },
    "multi-feature-centroid": {
        "features": [{"feature_type": "audio", "weight": 1}, {"feature_type": "mood", "weight": 3}],
        "query": {"entities": [ref("track", track_id(i)) for i in (50, 51, 260)]},
        "exclude_ids": [track_id(52)],
    },
}


async def both(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The REST answer and the GraphQL ``similar`` answer to the same request."""
    r = await client.post(SIMILAR, json=body, headers=headers or {})
    assert r.status_code == 200, r.text
    answer = await gql(client, SIMILAR_QUERY, {"input": to_graphql(body)}, headers)
    assert "errors" not in answer, answer
    return r.json(), answer["data"]["similar"]


@pytest.mark.parametrize("form", list(FORMS))
async def test_similar_equals_rest_and_reference(env: tuple[httpx.AsyncClient, World], form: str) -> None:
    client, world = env
    body = FORMS[form]
    rest, graphql = await both(client, body)
    assert graphql["results"] == rest_items_as_graphql(rest["results"]), form
    assert graphql["targetEntityType"] == rest["query"]["target_entity_type"].upper()
    assert_sorted([{"entity_id": i["entityId"], "score": i["score"]} for i in graphql["results"]])
    ranking, limit = expected_ranking(world, body)
    euclidean = body.get("feature_type") == "timbre"
    assert_matches(rest["results"], ranking, limit, check_distance=euclidean, what=form)
    if "feature_type" in body and not euclidean:
        assert all(i["distance"] is None for i in graphql["results"])


async def test_similar_batch_equals_rest_and_reference(env: tuple[httpx.AsyncClient, World]) -> None:
    client, world = env
    queries = [track_id(60), track_id(61), track_id(62), track_id(400)]
    bodies = [
        {"feature_type": "audio", "queries": [ref("track", q) for q in queries], "limit_per_query": 7},
        {
            "feature_type": "audio",
            "queries": [ref("track", q) for q in queries],
            "limit_per_query": 7,
            "deduplicate": True,
        },
        {
            "feature_type": "timbre",
            "queries": [ref("album", album_id(3)), ref("album", album_id(4))],
            "target_entity_type": "track",
            "deduplicate": True,
            "min_score": 0.3,
        },
        {
            "features": [{"feature_type": "audio", "weight": 0.7}, {"feature_type": "mood", "weight": 0.3}],
            "queries": [ref("track", q) for q in queries[:3]],
            "limit_per_query": 5,
            "deduplicate": True,
            "exclude_ids": [track_id(63)],
        },
    ]
    for body in bodies:
        r = await client.post(BATCH, json=body)
        assert r.status_code == 200, r.text
        rest = r.json()["results"]
        answer = await gql(client, BATCH_QUERY, {"input": to_graphql(body)})
        assert "errors" not in answer, answer
        graphql = answer["data"]["similarBatch"]
        target = body.get("target_entity_type", body["queries"][0]["entity_type"])
        assert graphql["targetEntityType"] == target.upper()
        assert len(graphql["results"]) == len(rest) == len(body["queries"])
        for g, r_entry, q in zip(graphql["results"], rest, body["queries"], strict=True):
            assert g["query"] == {"entityType": q["entity_type"].upper(), "entityId": q["entity_id"]}
            assert r_entry["query"] == q
            assert g["results"] == rest_items_as_graphql(r_entry["results"])

        # the reference: each query alone, all query entities excluded, then de-duplicated
        k = body.get("limit_per_query", 10)
        query_ids = [q["entity_id"] for q in body["queries"] if q["entity_type"] == target]
        rankings = []
        for q in body["queries"]:
            single = {
                key: body[key]
                for key in ("feature_type", "features", "target_entity_type", "min_score")
                if key in body
            }
            single["query"] = q
            single["exclude_ids"] = [*body.get("exclude_ids", []), *query_ids]
            rankings.append(expected_ranking(world, single)[0])
        if body.get("deduplicate"):
            for entry, want in zip(rest, dedup_reference(rankings, k), strict=True):
                assert [i["entity_id"] for i in entry["results"]] == [w.entity_id for w in want]
            ids = [i["entity_id"] for e in rest for i in e["results"]]
            assert len(ids) == len(set(ids))
        else:
            for entry, ranking in zip(rest, rankings, strict=True):
                assert_matches(entry["results"], ranking, k)


async def test_playlist_privacy(env: tuple[httpx.AsyncClient, World]) -> None:
    client, world = env
    body = {
        "feature_type": "audio",
        "query": ref("track", track_id(31)),
        "target_entity_type": "playlist",
        "limit": 50,
    }
    for headers, visible in (
        (USER7, ["pl7a", "pl7b", "pl7c"]),
        ({"X-User-Id": "8"}, ["pl8a", "pl8b"]),
        ({}, []),
        (ADMIN, list(world.playlist_owner)),
    ):
        rest, graphql = await both(client, body, headers)
        assert graphql["results"] == rest_items_as_graphql(rest["results"])
        assert {i["entityId"] for i in graphql["results"]} == set(visible)
        assert_matches(rest["results"], expected_ranking(world, body, visible)[0], 50)

    by_playlist = {"featureType": "audio", "query": {"entityType": "PLAYLIST", "entityId": "pl7a"}}
    answer = await gql(client, SIMILAR_QUERY, {"input": by_playlist}, {"X-User-Id": "8"})
    assert answer["data"] is None and answer["errors"][0]["extensions"]["code"] == "NOT_FOUND", answer
    answer = await gql(
        client,
        BATCH_QUERY,
        {"input": {"featureType": "audio", "queries": [{"entityType": "PLAYLIST", "entityId": "pl7a"}]}},
    )
    assert answer["errors"][0]["extensions"]["code"] == "NOT_FOUND", answer
    answer = await gql(client, SIMILAR_QUERY, {"input": by_playlist}, USER7)
    assert "errors" not in answer, answer
    assert {i["entityId"] for i in answer["data"]["similar"]["results"]} == {"pl7b", "pl7c"}


# ------------------------------------------------------------------ errors


def _input(**overrides: Any) -> dict[str, Any]:
    return {"featureType": "audio", "query": {"entityType": "TRACK", "entityId": track_id(1)}, **overrides}


def _vector(vector: Any) -> dict[str, Any]:
    return {"featureType": "audio", "query": {"vector": vector}}


ERRORS: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("unknown-entity", _input(query={"entityType": "TRACK", "entityId": "nope"}), "NOT_FOUND", None),
    ("unknown-album", _input(query={"entityType": "ALBUM", "entityId": "nope"}), "NOT_FOUND", None),
    ("unknown-feature-type", _input(featureType="no_such"), "NOT_FOUND", "feature_type"),
    (
        "unknown-feature-in-features",
        {"features": [{"featureType": "nope"}], "query": {"entityType": "TRACK", "entityId": track_id(1)}},
        "NOT_FOUND",
        None,
    ),
    ("wrong-dimension", _vector([0.5] * 15), "BAD_USER_INPUT", "query.vector"),
    ("beyond-float32", _vector([4e38] + [0.5] * 15), "BAD_USER_INPUT", "query.vector"),
    ("non-numeric", _vector(["a"] + [0.5] * 15), "BAD_USER_INPUT", "query.vector"),
    ("zero-vector", _vector([0] * 16), "BAD_USER_INPUT", "query.vector"),
    ("limit-0", _input(limit=0), "BAD_USER_INPUT", "limit"),
    ("limit-1001", _input(limit=1001), "BAD_USER_INPUT", "limit"),
    ("limit-abc", _input(limit="abc"), "BAD_USER_INPUT", None),  # variable coercion
    (
        "both-feature-forms",
        _input(features=[{"featureType": "mood", "weight": 1}]),
        "BAD_USER_INPUT",
        "feature_type",
    ),
    (
        "neither-feature-form",
        {"query": {"entityType": "TRACK", "entityId": track_id(1)}},
        "BAD_USER_INPUT",
        "feature_type",
    ),
    ("unknown-input-field", _input(bogus=1), "BAD_USER_INPUT", None),
    ("target-not-applicable", _input(featureType="energy", targetEntityType="ALBUM"), "BAD_USER_INPUT", None),
    ("two-query-forms", _input(query={"vector": [1.0] * 16, "entityId": "x"}), "BAD_USER_INPUT", "query"),
    ("no-query-form", _input(query={}), "BAD_USER_INPUT", "query"),
]


@pytest.mark.parametrize(("name", "payload", "code", "field"), ERRORS, ids=[e[0] for e in ERRORS])
async def test_similar_errors(
    env: tuple[httpx.AsyncClient, World], name: str, payload: dict[str, Any], code: str, field: str | None
) -> None:
    client, _ = env
    answer = await gql(client, SIMILAR_QUERY, {"input": payload})
    assert answer.get("data") is None, answer
    assert len(answer["errors"]) == 1, answer
    error = answer["errors"][0]
    assert error["extensions"]["code"] == code, answer
    if field is not None:
        assert error["extensions"].get("field") == field, answer
    if name == "target-not-applicable":
        assert error["extensions"].get("field") == "target_entity_type", answer


async def test_missing_feature_error_names_the_feature(env: tuple[httpx.AsyncClient, World]) -> None:
    client, _ = env
    answer = await gql(
        client, SIMILAR_QUERY, {"input": _input(query={"entityType": "TRACK", "entityId": NO_AUDIO[0]})}
    )
    error = answer["errors"][0]
    assert error["extensions"]["code"] == "NOT_FOUND", answer
    assert "audio" in error["message"], answer
    # the REST message is the same
    r = await client.get(f"{SIMILAR}/track/{NO_AUDIO[0]}", params={"feature_type": "audio"})
    assert r.status_code == 404 and r.json()["error"]["message"] == error["message"], r.text


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"featureType": "audio", "queries": []}, "BAD_USER_INPUT"),
        (
            {
                "featureType": "audio",
                "queries": [{"entityType": "TRACK", "entityId": "tr0001"}],
                "limitPerQuery": 0,
            },
            "BAD_USER_INPUT",
        ),
        (
            {
                "featureType": "audio",
                "queries": [{"entityType": "TRACK", "entityId": "tr0001"}],
                "limitPerQuery": 1001,
            },
            "BAD_USER_INPUT",
        ),
        ({"queries": [{"entityType": "TRACK", "entityId": "tr0001"}]}, "BAD_USER_INPUT"),
        ({"featureType": "audio", "queries": [{"entityType": "TRACK", "entityId": "missing"}]}, "NOT_FOUND"),
        ({"featureType": "nope", "queries": [{"entityType": "TRACK", "entityId": "tr0001"}]}, "NOT_FOUND"),
    ],
)
async def test_similar_batch_errors(
    env: tuple[httpx.AsyncClient, World], payload: dict[str, Any], code: str
) -> None:
    client, _ = env
    answer = await gql(client, BATCH_QUERY, {"input": payload})
    assert answer.get("data") is None, answer
    assert answer["errors"][0]["extensions"]["code"] == code, answer
