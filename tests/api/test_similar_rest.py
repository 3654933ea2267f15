"""REST similarity search (spec §6.3, §7; design §3 Q8, §4) against a brute-force reference:
by entity (GET and POST), raw vector, centroid of several entities, cross-entity, limits,
min_score, exclude_ids, include_query, the three metrics, batches with de-duplication,
multi-feature queries, input errors and playlist privacy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from fingerprints.app import create_app
from fingerprints.config import Settings
from tests.api.similar_helpers import (
    BATCH,
    NO_AUDIO,
    NO_MOOD,
    SCORE_TOL,
    SIMILAR,
    FeatureQuery,
    World,
    album_id,
    artist_id,
    assert_error,
    assert_matches,
    assert_sorted,
    big_catalog,
    build_world,
    centroid,
    dedup_reference,
    gap_threshold,
    ingest,
    load_catalog,
    multi_reference,
    reference,
    register_type,
    track_id,
)
from tests.backends import Backend, make_settings
from tests.helpers import ADMIN, running_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

METRICS = [("audio", "cosine"), ("timbre", "euclidean"), ("energy", "dot_product")]
USER7 = {"X-User-Id": "7"}
USER8 = {"X-User-Id": "8"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend
) -> AsyncIterator[tuple[httpx.AsyncClient, World]]:
    """One app over the world of ``build_world`` shared by the read-only tests of this module."""
    settings = make_settings(backend, tmp_path_factory.mktemp("similar-rest") / "data")
    async with running_client(create_app(settings)) as client:
        world = await build_world(client)
        yield client, world


async def post(client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    r = await client.post(SIMILAR, json=body, headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()


def by_entity(entity_type: str, entity_id: str) -> dict[str, str]:
    return {"entity_type": entity_type, "entity_id": entity_id}


# ------------------------------------------------------------------ GET by entity


@pytest.mark.parametrize(("type_id", "distance"), METRICS)
async def test_get_similar_matches_reference_for_each_metric(
    env: tuple[httpx.AsyncClient, World], type_id: str, distance: str
) -> None:
    client, world = env
    tracks = world.of(type_id, "track")
    assert world.distance[type_id] == distance
    for query_id in (track_id(0), track_id(123), track_id(457)):
        r = await client.get(f"{SIMILAR}/track/{query_id}", params={"feature_type": type_id, "limit": 15})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == {"entity_type": "track", "entity_id": query_id, "feature_type": type_id}
        results = body["results"]
        assert all(item["entity_type"] == "track" for item in results)
        assert query_id not in [item["entity_id"] for item in results]  # the query is excluded
        assert_sorted(results)
        ranking = reference(tracks, tracks[query_id], distance, exclude=[query_id])
        assert_matches(results, ranking, 15, check_distance=distance == "euclidean", what=query_id)
        if distance == "euclidean":
            for item in results:
                assert item["score"] == pytest.approx(1 / (1 + item["distance"]), abs=1e-6)
        else:
            assert all("distance" not in item for item in results)
        if distance == "cosine":
            assert all(-1 - 1e-6 <= item["score"] <= 1 + 1e-6 for item in results)


async def test_get_similar_defaults_to_20_and_filters_by_min_score(
    env: tuple[httpx.AsyncClient, World],
) -> None:
    client, world = env
    tracks = world.of("audio", "track")
    query_id = track_id(42)
    ranking = reference(tracks, tracks[query_id], "cosine", exclude=[query_id])

    r = await client.get(f"{SIMILAR}/track/{query_id}", params={"feature_type": "audio"})
    assert r.status_code == 200, r.text
    assert_matches(r.json()["results"], ranking, 20)

    threshold = gap_threshold(ranking, 7)
    r = await client.get(
        f"{SIMILAR}/track/{query_id}", params={"feature_type": "audio", "min_score": str(threshold)}
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert_matches(results, ranking, 7)
    assert all(item["score"] >= threshold for item in results)


async def test_get_similar_for_albums_artists_and_own_playlists(env: tuple[httpx.AsyncClient, World]) -> None:
    """Same-type neighbours of non-track entities (the default target is the query's type)."""
    client, world = env
    for entity_type, entity_id, headers in (
        ("album", album_id(3), {}),
        ("artist", artist_id(4), {}),
        ("playlist", "pl7a", USER7),
    ):
        vectors = world.of("audio", entity_type)
        if entity_type == "playlist":
            vectors = {p: v for p, v in vectors.items() if world.playlist_owner[p] == 7}
        r = await client.get(
            f"{SIMILAR}/{entity_type}/{entity_id}",
            params={"feature_type": "audio", "limit": 50},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert all(item["entity_type"] == entity_type for item in results)
        ranking = reference(vectors, vectors[entity_id], "cosine", exclude=[entity_id])
        assert_matches(results, ranking, 50, what=entity_id)


# ------------------------------------------------------------------ POST: by entity, vector, centroid


@pytest.mark.parametrize(("type_id", "distance"), METRICS)
async def test_post_by_entity_with_and_without_the_query(
    env: tuple[httpx.AsyncClient, World], type_id: str, distance: str
) -> None:
    client, world = env
    tracks = world.of(type_id, "track")
    query_id = track_id(77)
    body = {"feature_type": type_id, "query": by_entity("track", query_id), "limit": 12}
    out = await post(client, body)
    assert out["query"]["entity_id"] == query_id and out["query"]["target_entity_type"] == "track"
    euclid = distance == "euclidean"
    ranking = reference(tracks, tracks[query_id], distance, exclude=[query_id])
    assert_matches(out["results"], ranking, 12, check_distance=euclid)

    out = await post(client, {**body, "include_query": True})
    ranking = reference(tracks, tracks[query_id], distance)
    assert_matches(out["results"], ranking, 12, check_distance=euclid)
    assert query_id in [item["entity_id"] for item in out["results"]]
    if distance != "dot_product":  # the query itself is the best match under cosine and euclidean
        first = out["results"][0]
        assert first["entity_id"] == query_id
        assert first["score"] == pytest.approx(1.0, abs=1e-5)
        if euclid:
            assert first["distance"] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize(("type_id", "distance"), METRICS)
async def test_post_by_raw_vector(env: tuple[httpx.AsyncClient, World], type_id: str, distance: str) -> None:
    client, world = env
    rng = np.random.default_rng(11)
    for target in ("track", "album"):
        vectors = world.of(type_id, target)
        if not vectors:
            continue
        dim = next(iter(vectors.values())).shape[0]
        query = rng.normal(size=dim).astype(np.float32)
        body: dict[str, Any] = {"feature_type": type_id, "query": {"vector": query.tolist()}, "limit": 25}
        if target != "track":
            body["target_entity_type"] = target
        out = await post(client, body)  # a raw vector query searches tracks by default
        assert out["query"]["target_entity_type"] == target
        assert all(item["entity_type"] == target for item in out["results"])
        ranking = reference(vectors, query, distance)
        assert_matches(out["results"], ranking, 25, check_distance=distance == "euclidean", what=target)

    # a stored vector sent raw finds its entity first (nothing is excluded)
    tracks = world.of(type_id, "track")
    stored = tracks[track_id(300)]
    out = await post(client, {"feature_type": type_id, "query": {"vector": stored.tolist()}, "limit": 5})
    assert_matches(out["results"], reference(tracks, stored, distance), 5)
    if distance != "dot_product":
        assert out["results"][0]["entity_id"] == track_id(300)


@pytest.mark.parametrize(("type_id", "distance"), METRICS)
async def test_post_by_several_entities_uses_their_centroid(
    env: tuple[httpx.AsyncClient, World], type_id: str, distance: str
) -> None:
    client, world = env
    tracks = world.of(type_id, "track")
    members = [track_id(3), track_id(250), track_id(251), track_id(404)]
    body = {
        "feature_type": type_id,
        "query": {"entities": [by_entity("track", t) for t in members]},
        "limit": 30,
    }
    out = await post(client, body)
    query = centroid([tracks[t] for t in members], distance)
    ranking = reference(tracks, query, distance, exclude=members)  # query entities are excluded
    assert_matches(out["results"], ranking, 30, check_distance=distance == "euclidean")

    # the test can tell the centroids apart: the other definition ranks differently
    other = centroid([tracks[t] for t in members], "dot_product" if distance == "cosine" else "cosine")
    alternative = reference(tracks, other, distance, k=30, exclude=members)
    assert [r.entity_id for r in alternative] != [r.entity_id for r in ranking[:30]]

    out = await post(client, {**body, "include_query": True})
    assert_matches(out["results"], reference(tracks, query, distance), 30)


async def test_post_centroid_of_mixed_entity_types(env: tuple[httpx.AsyncClient, World]) -> None:
    """A track and an album together: the target defaults to the first entity's type and only
    query entities of the target type are excluded."""
    client, world = env
    tracks, albums = world.of("audio", "track"), world.of("audio", "album")
    members = [("track", track_id(10)), ("album", album_id(20))]
    out = await post(
        client,
        {"feature_type": "audio", "query": {"entities": [by_entity(*m) for m in members]}, "limit": 20},
    )
    assert out["query"]["target_entity_type"] == "track"
    query = centroid([tracks[track_id(10)], albums[album_id(20)]], "cosine")
    assert_matches(out["results"], reference(tracks, query, "cosine", exclude=[track_id(10)]), 20)


# ------------------------------------------------------------------ cross-entity (design Q8)


async def test_cross_entity_queries(env: tuple[httpx.AsyncClient, World]) -> None:
    client, world = env
    cases = [
        ("audio", "cosine", "album", album_id(5), "track"),  # tracks similar to an album
        ("audio", "cosine", "track", track_id(99), "album"),  # albums similar to a track
        ("audio", "cosine", "artist", artist_id(2), "track"),  # tracks similar to an artist
        ("audio", "cosine", "track", track_id(5), "artist"),
        ("timbre", "euclidean", "album", album_id(7), "track"),
    ]
    for type_id, distance, source, source_id, target in cases:
        out = await post(
            client,
            {
                "feature_type": type_id,
                "query": by_entity(source, source_id),
                "target_entity_type": target,
                "limit": 20,
            },
        )
        assert out["query"]["target_entity_type"] == target
        assert all(item["entity_type"] == target for item in out["results"])
        query = world.of(type_id, source)[source_id]
        ranking = reference(world.of(type_id, target), query, distance)
        assert_matches(
            out["results"], ranking, 20, check_distance=distance == "euclidean", what=f"{source_id}->{target}"
        )


# ------------------------------------------------------------------ limit, min_score, exclude_ids


async def test_limit_default_and_maximum(env: tuple[httpx.AsyncClient, World]) -> None:
    client, world = env
    tracks = world.of("audio", "track")
    query_id = track_id(1)
    ranking = reference(tracks, tracks[query_id], "cosine", exclude=[query_id])
    out = await post(client, {"feature_type": "audio", "query": by_entity("track", query_id)})
    assert_matches(out["results"], ranking, 20)
    out = await post(client, {"feature_type": "audio", "query": by_entity("track", query_id), "limit": 1000})
    assert len(ranking) == 589  # every track with an audio map but the query
    assert_matches(out["results"], ranking, 1000)
    assert not set(NO_AUDIO) & {item["entity_id"] for item in out["results"]}
    out = await post(client, {"feature_type": "audio", "query": by_entity("track", query_id), "limit": 1})
    assert_matches(out["results"], ranking, 1)


@pytest.mark.parametrize(("type_id", "distance"), METRICS)
async def test_min_score(env: tuple[httpx.AsyncClient, World], type_id: str, distance: str) -> None:
    client, world = env
    tracks = world.of(type_id, "track")
    query_id = track_id(222)
    ranking = reference(tracks, tracks[query_id], distance, exclude=[query_id])
    base = {"feature_type": type_id, "query": by_entity("track", query_id), "limit": 100}
    for cut in (1, 9, 40):
        threshold = gap_threshold(ranking, cut)
        out = await post(client, {**base, "min_score": threshold})
        assert_matches(out["results"], ranking, cut, what=f"cut {cut}")
        assert all(item["score"] >= threshold for item in out["results"])
    out = await post(client, {**base, "min_score": ranking[0].score + 0.01})
    assert out["results"] == []
    low = ranking[-1].score - 0.01  # everything passes: the limit decides
    out = await post(client, {**base, "min_score": low})
    assert_matches(out["results"], ranking, 100)
    if distance == "euclidean":
        out = await post(client, {**base, "min_score": 1.5})  # euclidean scores are at most 1
        assert out["results"] == []


async def test_exclude_ids(env: tuple[httpx.AsyncClient, World]) -> None:
    client, world = env
    tracks = world.of("audio", "track")
    query_id = track_id(150)
    full = reference(tracks, tracks[query_id], "cosine", exclude=[query_id])
    excluded = [full[0].entity_id, full[2].entity_id, full[5].entity_id, "not-a-track"]
    out = await post(
        client,
        {
            "feature_type": "audio",
            "query": by_entity("track", query_id),
            "limit": 10,
            "exclude_ids": excluded,
        },
    )
    ranking = reference(tracks, tracks[query_id], "cosine", exclude=[query_id, *excluded])
    assert_matches(out["results"], ranking, 10)
    # exclude_ids also applies with include_query and to raw vector queries
    out = await post(
        client,
        {
            "feature_type": "audio",
            "query": {"vector": tracks[query_id].tolist()},
            "limit": 10,
            "exclude_ids": [query_id, full[0].entity_id],
        },
    )
    assert_matches(
        out["results"],
        reference(tracks, tracks[query_id], "cosine", exclude=[query_id, full[0].entity_id]),
        10,
    )


# ------------------------------------------------------------------ batch


async def test_batch_without_and_with_deduplication(env: tuple[httpx.AsyncClient, World]) -> None:
    client, world = env
    tracks = world.of("audio", "track")
    queries = [track_id(40), track_id(41), track_id(45), track_id(300)]  # three from one album
    body: dict[str, Any] = {
        "feature_type": "audio",
        "queries": [by_entity("track", q) for q in queries],
        "limit_per_query": 8,
    }
    rankings = [reference(tracks, tracks[q], "cosine", exclude=queries) for q in queries]

    r = await client.post(BATCH, json=body)
    assert r.status_code == 200, r.text
    entries = r.json()["results"]
    assert [e["query"] for e in entries] == [by_entity("track", q) for q in queries]
    for entry, ranking in zip(entries, rankings, strict=True):
        assert_sorted(entry["results"])
        assert_matches(entry["results"], ranking, 8, what=entry["query"]["entity_id"])
    plain_ids = [i["entity_id"] for e in entries for i in e["results"]]
    assert len(set(plain_ids)) < len(plain_ids)  # without de-duplication the lists overlap

    r = await client.post(BATCH, json={**body, "deduplicate": True})
    assert r.status_code == 200, r.text
    entries = r.json()["results"]
    expected = dedup_reference(rankings, 8)
    seen: list[str] = []
    for entry, want in zip(entries, expected, strict=True):
        got_ids = [i["entity_id"] for i in entry["results"]]
        assert got_ids == [w.entity_id for w in want], entry["query"]
        assert len(got_ids) == 8
        for item, ref in zip(entry["results"], want, strict=True):
            assert item["score"] == pytest.approx(ref.score, abs=1e-4)
        assert_sorted(entry["results"])
        seen += got_ids
    assert len(seen) == len(set(seen)), "an entity appears in two lists"
    assert not set(seen) & set(queries), "a query entity appears in the results"


async def test_batch_default_limit_cross_entity_and_euclidean(env: tuple[httpx.AsyncClient, World]) -> None:
    client, world = env
    albums, tracks = world.of("timbre", "album"), world.of("timbre", "track")
    queries = [album_id(1), album_id(2), album_id(29)]
    r = await client.post(
        BATCH,
        json={
            "feature_type": "timbre",
            "queries": [by_entity("album", q) for q in queries],
            "target_entity_type": "track",
        },
    )
    assert r.status_code == 200, r.text
    for entry, q in zip(r.json()["results"], queries, strict=True):
        assert entry["query"] == by_entity("album", q)
        ranking = reference(tracks, albums[q], "euclidean")
        assert_matches(entry["results"], ranking, 10, check_distance=True)  # limit_per_query defaults to 10

    r = await client.post(
        BATCH,
        json={
            "feature_type": "timbre",
            "queries": [by_entity("album", q) for q in queries],
            "target_entity_type": "track",
            "limit_per_query": 5,
            "deduplicate": True,
            "min_score": 0.3,
            "exclude_ids": [track_id(20)],
        },
    )
    assert r.status_code == 200, r.text
    rankings = [
        reference(tracks, albums[q], "euclidean", exclude=[track_id(20)], min_score=0.3) for q in queries
    ]
    for entry, want in zip(r.json()["results"], dedup_reference(rankings, 5), strict=True):
        assert [i["entity_id"] for i in entry["results"]] == [w.entity_id for w in want]


# ------------------------------------------------------------------ multi-feature (spec §7.2)


def multi(
    world: World, weights: dict[str, float], query_id: str, target: str = "track"
) -> list[FeatureQuery]:
    return [
        FeatureQuery(world.of(t, target), world.of(t, "track")[query_id], world.distance[t], w)
        for t, w in weights.items()
    ]


async def test_multi_feature_by_entity(env: tuple[httpx.AsyncClient, World]) -> None:
    client, world = env
    cases = [
        ({"audio": 0.7, "mood": 0.3}, track_id(8)),
        ({"audio": 1.0, "mood": 1.0}, track_id(333)),
        ({"audio": 2.0, "timbre": 1.0, "energy": 0.5}, track_id(510)),
    ]
    for weights, query_id in cases:
        features = [{"feature_type": t, "weight": w} for t, w in weights.items()]
        out = await post(client, {"features": features, "query": by_entity("track", query_id), "limit": 25})
        assert out["query"]["features"] == features
        ranking = multi_reference(multi(world, weights, query_id), exclude=[query_id])
        assert_matches(out["results"], ranking, 25, what=str(weights))
        assert_sorted(out["results"])


async def test_multi_feature_candidates_missing_a_feature_score_on_the_others(
    env: tuple[httpx.AsyncClient, World],
) -> None:
    """Design §4 / Q5: the combined score averages over the features a candidate has."""
    client, world = env
    weights = {"audio": 0.5, "mood": 0.5}
    query_id = track_id(595)  # no audio map: the query itself cannot be used ...
    r = await client.post(
        SIMILAR,
        json={
            "features": [{"feature_type": t, "weight": w} for t, w in weights.items()],
            "query": by_entity("track", query_id),
        },
    )
    assert_error(r, 404, "NOT_FOUND")
    # ... but tracks without audio (NO_AUDIO) or without mood (NO_MOOD) are still candidates
    query = world.of("audio", "track")[track_id(589)]
    mood_query = world.of("mood", "track")[track_id(589)]
    features = [
        FeatureQuery(world.of("audio", "track"), query, "cosine", 0.5),
        FeatureQuery(world.of("mood", "track"), mood_query, "cosine", 0.5),
    ]
    out = await post(
        client,
        {
            "features": [{"feature_type": t, "weight": w} for t, w in weights.items()],
            "query": by_entity("track", track_id(589)),
            "limit": 40,
        },
    )
    ranking = multi_reference(features, exclude=[track_id(589)])
    assert_matches(out["results"], ranking, 40)
    ids = {item["entity_id"] for item in out["results"]}
    assert ids & set(NO_AUDIO), "tracks with only the mood feature are missing"
    assert ids & set(NO_MOOD), "tracks with only the audio feature are missing"


async def test_multi_feature_with_min_score_exclude_and_centroid(
    env: tuple[httpx.AsyncClient, World],
) -> None:
    client, world = env
    weights = {"audio": 0.6, "mood": 0.4}
    features = [{"feature_type": t, "weight": w} for t, w in weights.items()]
    query_id = track_id(61)
    ranking = multi_reference(multi(world, weights, query_id), exclude=[query_id, track_id(62)])
    threshold = gap_threshold(ranking, 6)
    out = await post(
        client,
        {
            "features": features,
            "query": by_entity("track", query_id),
            "min_score": threshold,
            "exclude_ids": [track_id(62)],
        },
    )
    assert_matches(out["results"], ranking, 6)

    members = [track_id(61), track_id(64), track_id(500)]
    out = await post(
        client,
        {"features": features, "query": {"entities": [by_entity("track", t) for t in members]}, "limit": 15},
    )
    fqs = [
        FeatureQuery(
            world.of(t, "track"), centroid([world.of(t, "track")[m] for m in members], "cosine"), "cosine", w
        )
        for t, w in weights.items()
    ]
    assert_matches(out["results"], multi_reference(fqs, exclude=members), 15)


async def test_multi_feature_batch(env: tuple[httpx.AsyncClient, World]) -> None:
    client, world = env
    weights = {"audio": 0.7, "mood": 0.3}
    queries = [track_id(100), track_id(101), track_id(421)]
    body = {
        "features": [{"feature_type": t, "weight": w} for t, w in weights.items()],
        "queries": [by_entity("track", q) for q in queries],
        "limit_per_query": 6,
    }
    rankings = [multi_reference(multi(world, weights, q), exclude=queries) for q in queries]
    r = await client.post(BATCH, json=body)
    assert r.status_code == 200, r.text
    for entry, ranking in zip(r.json()["results"], rankings, strict=True):
        assert_matches(entry["results"], ranking, 6)
    r = await client.post(BATCH, json={**body, "deduplicate": True})
    assert r.status_code == 200, r.text
    for entry, want in zip(r.json()["results"], dedup_reference(rankings, 6), strict=True):
        assert [i["entity_id"] for i in entry["results"]] == [w.entity_id for w in want]


# ------------------------------------------------------------------ errors


async def test_not_found_errors(env: tuple[httpx.AsyncClient, World]) -> None:
    client, _ = env
    r = await client.get(f"{SIMILAR}/track/no-such-track", params={"feature_type": "audio"})
    assert_error(r, 404, "NOT_FOUND")
    r = await client.post(SIMILAR, json={"feature_type": "audio", "query": by_entity("album", "no-such")})
    assert_error(r, 404, "NOT_FOUND")
    r = await client.get(f"{SIMILAR}/track/{track_id(1)}", params={"feature_type": "no_such_type"})
    assert_error(r, 404, "NOT_FOUND", "feature_type")
    r = await client.post(
        SIMILAR,
        json={"features": [{"feature_type": "nope", "weight": 1}], "query": by_entity("track", "tr0001")},
    )
    assert_error(r, 404, "NOT_FOUND")
    # an entity that exists but lacks the feature: the message names the feature
    r = await client.get(f"{SIMILAR}/track/{NO_AUDIO[0]}", params={"feature_type": "audio"})
    error = assert_error(r, 404, "NOT_FOUND")
    assert "audio" in error["message"], error
    r = await client.post(
        SIMILAR,
        json={
            "feature_type": "mood",
            "query": {"entities": [by_entity("track", "tr0001"), by_entity("track", NO_MOOD[3])]},
        },
    )
    error = assert_error(r, 404, "NOT_FOUND")
    assert "mood" in error["message"] and NO_MOOD[3] in error["message"], error
    r = await client.post(
        BATCH,
        json={"feature_type": "audio", "queries": [by_entity("track", "tr0001"), by_entity("track", "zzz")]},
    )
    assert_error(r, 404, "NOT_FOUND")


def _vector_body(vector: Any) -> dict[str, Any]:
    return {"feature_type": "audio", "query": {"vector": vector}}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_vector_body([0.5] * 15), "query.vector"),  # wrong dimension
        (_vector_body([0.5] * 17), "query.vector"),
        (_vector_body([4e38] + [0.5] * 15), "query.vector"),  # beyond float32
        (_vector_body(["a"] + [0.5] * 15), "query.vector"),  # non-numeric
        (_vector_body([True] + [0.5] * 15), "query.vector"),
        (_vector_body("0.5, 0.5"), "query.vector"),
        (_vector_body([]), "query.vector"),
        (_vector_body([0.0] * 16), "query.vector"),  # all-zero under cosine
        ({"feature_type": "audio", "query": by_entity("track", "tr0001"), "limit": 0}, "limit"),
        ({"feature_type": "audio", "query": by_entity("track", "tr0001"), "limit": 1001}, "limit"),
        ({"feature_type": "audio", "query": by_entity("track", "tr0001"), "limit": "abc"}, "limit"),
        ({"feature_type": "audio", "query": by_entity("track", "tr0001"), "limit": 2.5}, "limit"),
        ({"feature_type": "audio", "query": by_entity("track", "tr0001"), "min_score": "high"}, "min_score"),
        (
            {
                "feature_type": "audio",
                "features": [{"feature_type": "mood", "weight": 1}],
                "query": by_entity("track", "tr0001"),
            },
            "feature_type",
        ),  # both
        ({"query": by_entity("track", "tr0001")}, "feature_type"),  # neither
        ({"feature_type": "audio", "query": by_entity("track", "tr0001"), "bogus": 1}, "bogus"),
        ({"feature_type": "audio", "query": {**by_entity("track", "tr0001"), "extra": 1}}, "query.extra"),
        (
            {"feature_type": "timbre", "query": by_entity("track", "tr0001"), "target_entity_type": "artist"},
            "target_entity_type",
        ),  # timbre applies to tracks and albums only
        (
            {"feature_type": "energy", "query": by_entity("track", "tr0001"), "target_entity_type": "album"},
            "target_entity_type",
        ),
        (
            {"feature_type": "audio", "query": by_entity("track", "tr0001"), "target_entity_type": "song"},
            "target_entity_type",
        ),
        (
            {"features": [{"feature_type": "audio", "weight": 0}], "query": by_entity("track", "tr0001")},
            "features[0].weight",
        ),
        (
            {
                "features": [{"feature_type": "audio", "weight": 1}, {"feature_type": "audio", "weight": 2}],
                "query": by_entity("track", "tr0001"),
            },
            "features",
        ),  # a feature type listed twice
        (
            {
                "features": [{"feature_type": "audio", "weight": 1}, {"feature_type": "mood", "weight": 1}],
                "query": by_entity("track", "tr0001"),
                "target_entity_type": "album",
            },
            "target_entity_type",
        ),  # mood does not apply to albums
        (
            {"feature_type": "audio", "query": by_entity("track", "tr0001"), "exclude_ids": "tr0002"},
            "exclude_ids",
        ),
        (
            {"feature_type": "audio", "query": by_entity("track", "tr0001"), "include_query": "yes"},
            "include_query",
        ),
        ({"feature_type": "audio", "query": {}}, "query"),
        ({"feature_type": "audio", "query": {"vector": [1.0] * 16, "entity_id": "tr0001"}}, "query"),
        ({"feature_type": "audio", "query": {"entities": []}}, "query.entities"),
    ],
)
async def test_bad_requests(env: tuple[httpx.AsyncClient, World], body: dict[str, Any], field: str) -> None:
    client, _ = env
    r = await client.post(SIMILAR, json=body)
    assert_error(r, 400, "BAD_USER_INPUT", field)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"feature_type": "audio", "limit": "0"}, "limit"),
        ({"feature_type": "audio", "limit": "1001"}, "limit"),
        ({"feature_type": "audio", "limit": "abc"}, "limit"),
        ({"feature_type": "audio", "min_score": "abc"}, "min_score"),
        ({"feature_type": "audio", "min_score": "nan"}, "min_score"),
        ({"feature_type": "audio", "min_score": "inf"}, "min_score"),
        ({}, "feature_type"),
    ],
)
async def test_bad_get_requests(
    env: tuple[httpx.AsyncClient, World], params: dict[str, str], field: str
) -> None:
    client, _ = env
    r = await client.get(f"{SIMILAR}/track/tr0001", params=params)
    assert_error(r, 400, "BAD_USER_INPUT", field)


async def test_bad_entity_type_in_path(env: tuple[httpx.AsyncClient, World]) -> None:
    client, _ = env
    r = await client.get(f"{SIMILAR}/song/tr0001", params={"feature_type": "audio"})
    assert_error(r, 400, "BAD_USER_INPUT")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"feature_type": "audio", "queries": []}, "queries"),
        (
            {"feature_type": "audio", "queries": [by_entity("track", "tr0001")], "limit_per_query": 0},
            "limit_per_query",
        ),
        (
            {"feature_type": "audio", "queries": [by_entity("track", "tr0001")], "limit_per_query": 1001},
            "limit_per_query",
        ),
        (
            {"feature_type": "audio", "queries": [by_entity("track", "tr0001")], "deduplicate": "yes"},
            "deduplicate",
        ),
        ({"feature_type": "audio", "queries": [by_entity("track", "tr0001")], "limit": 5}, "limit"),
        ({"queries": [by_entity("track", "tr0001")]}, "feature_type"),
    ],
)
async def test_bad_batch_requests(
    env: tuple[httpx.AsyncClient, World], body: dict[str, Any], field: str
) -> None:
    client, _ = env
    r = await client.post(BATCH, json=body)
    assert_error(r, 400, "BAD_USER_INPUT", field)


async def test_raw_vector_with_several_features_is_refused(env: tuple[httpx.AsyncClient, World]) -> None:
    client, _ = env
    r = await client.post(
        SIMILAR,
        json={
            "features": [{"feature_type": "audio", "weight": 1}, {"feature_type": "mood", "weight": 1}],
            "query": {"vector": [1.0] * 16},
        },
    )
    assert_error(r, 400, "BAD_USER_INPUT", "query.vector")


# ------------------------------------------------------------------ playlist privacy


async def test_playlist_results_only_show_the_viewers_playlists(env: tuple[httpx.AsyncClient, World]) -> None:
    client, world = env
    playlists = world.of("audio", "playlist")
    query = world.of("audio", "track")[track_id(12)]
    body = {
        "feature_type": "audio",
        "query": by_entity("track", track_id(12)),
        "target_entity_type": "playlist",
        "limit": 50,
    }
    for headers, owner in ((USER7, 7), (USER8, 8), ({"X-User-Id": "9"}, 9)):
        mine = {p: v for p, v in playlists.items() if world.playlist_owner[p] == owner}
        out = await post(client, body, headers)
        assert_matches(out["results"], reference(mine, query, "cosine"), 50, what=f"user {owner}")
    out = await post(client, body, ADMIN)  # admin sees every playlist
    assert_matches(out["results"], reference(playlists, query, "cosine"), 50)
    assert len(out["results"]) == len(playlists)
    out = await post(client, body)  # anonymous: no playlist is visible
    assert out["results"] == []
    out = await post(client, body, {"X-User-Id": "12345"})  # a user without playlists
    assert out["results"] == []

    # the same in a batch and by raw vector
    r = await client.post(
        BATCH,
        json={
            "feature_type": "audio",
            "queries": [by_entity("track", track_id(12)), by_entity("track", track_id(13))],
            "target_entity_type": "playlist",
            "limit_per_query": 10,
        },
        headers=USER8,
    )
    assert r.status_code == 200, r.text
    for entry in r.json()["results"]:
        assert {i["entity_id"] for i in entry["results"]} == {"pl8a", "pl8b"}
    out = await post(
        client,
        {"feature_type": "audio", "query": {"vector": query.tolist()}, "target_entity_type": "playlist"},
        USER7,
    )
    assert {i["entity_id"] for i in out["results"]} == {"pl7a", "pl7b", "pl7c"}


async def test_query_by_another_users_playlist_is_not_found(env: tuple[httpx.AsyncClient, World]) -> None:
    client, world = env
    for headers in (USER8, {}, {"X-User-Id": "not-a-number"}):
        r = await client.get(f"{SIMILAR}/playlist/pl7a", params={"feature_type": "audio"}, headers=headers)
        assert_error(r, 404, "NOT_FOUND")
        r = await client.post(
            SIMILAR,
            json={
                "feature_type": "audio",
                "query": by_entity("playlist", "pl7a"),
                "target_entity_type": "track",
            },
            headers=headers,
        )
        assert_error(r, 404, "NOT_FOUND")
        r = await client.post(
            SIMILAR,
            json={
                "feature_type": "audio",
                "query": {"entities": [by_entity("track", "tr0001"), by_entity("playlist", "pl7a")]},
            },
            headers=headers,
        )
        assert_error(r, 404, "NOT_FOUND")
        r = await client.post(
            BATCH, json={"feature_type": "audio", "queries": [by_entity("playlist", "pl7a")]}, headers=headers
        )
        assert_error(r, 404, "NOT_FOUND")
    # the owner and admin may: tracks similar to the playlist
    tracks = world.of("audio", "track")
    query = world.of("audio", "playlist")["pl7a"]
    for headers in (USER7, ADMIN):
        out = await post(
            client,
            {"feature_type": "audio", "query": by_entity("playlist", "pl7a"), "target_entity_type": "track"},
            headers,
        )
        assert_matches(out["results"], reference(tracks, query, "cosine"), 20)
    r = await client.get(f"{SIMILAR}/playlist/pl7a", params={"feature_type": "audio"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    others = {p: v for p, v in world.of("audio", "playlist").items() if p != "pl7a"}
    assert_matches(r.json()["results"], reference(others, query, "cosine"), 20)


# ------------------------------------------------------------------ ties


async def test_equal_scores_are_ordered_by_id(settings_for: Callable[..., Settings], tmp_path: Path) -> None:
    """Identical vectors score exactly alike; they come back in ascending id order whatever the
    ingest order, and the limit cuts the tie by id."""
    settings = settings_for(tmp_path / "data")
    async with running_client(create_app(settings)) as client:
        ids = [track_id(i) for i in range(40)]
        await load_catalog(
            client,
            {
                "artists": [{"id": "a", "name": "A"}],
                "albums": [{"id": "b", "name": "B", "artist_ids": ["a"]}],
                "tracks": [{"id": t, "name": t, "album_id": "b", "artist_ids": ["a"]} for t in ids],
            },
        )
        shuffled = list(np.random.default_rng(3).permutation(ids))
        for distance in ("cosine", "dot_product", "euclidean"):
            type_id = f"tie_{distance}"
            await register_type(client, type_id, 8, distance)
            vectors = {}
            for n, t in enumerate(shuffled):  # four groups of ten identical vectors
                vectors[t] = np.full(8, 0.25 * (1 + n % 4), dtype=np.float32)
                vectors[t][n % 4] += 1
            await ingest(client, type_id, "track", vectors)  # in shuffled order
            query = vectors[shuffled[0]]
            out = await post(
                client, {"feature_type": type_id, "query": {"vector": query.tolist()}, "limit": 15}
            )
            ranking = reference(vectors, query, distance)
            got = [i["entity_id"] for i in out["results"]]
            assert got == [r.entity_id for r in ranking[:15]], distance
            assert_sorted(out["results"])


async def test_euclidean_distance_of_a_vector_to_itself_is_zero(env: tuple[httpx.AsyncClient, World]) -> None:
    """Design §4: euclidean score = 1 / (1 + d); a stored vector sent back as the query is at
    distance 0, score 1 (up to SCORE_TOL), whichever track it is."""
    client, world = env
    tracks = world.of("timbre", "track")
    off = {}
    for i in range(0, 600, 30):
        tid = track_id(i)
        out = await post(
            client, {"feature_type": "timbre", "query": {"vector": tracks[tid].tolist()}, "limit": 1}
        )
        first = out["results"][0]
        assert first["entity_id"] == tid
        if first["distance"] > SCORE_TOL or first["score"] < 1 - SCORE_TOL:
            off[tid] = (first["distance"], first["score"])
    assert not off, f"non-zero self distances (distance, score): {off}"


async def test_multi_feature_with_independent_features_is_the_exact_top_k(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    """Spec §7.2 / design §4: results are the best by the combined score, whatever the features'
    correlation; in particular the first 5 of ``limit=10`` are the answer to ``limit=5``."""
    settings = settings_for(tmp_path / "data")
    rng = np.random.default_rng(0)
    async with running_client(create_app(settings)) as client:
        await load_catalog(client, big_catalog(600, 30, 10))
        ids = [track_id(i) for i in range(600)]
        spectrum = {t: rng.normal(size=16).astype(np.float32) for t in ids}
        genre = {t: rng.normal(size=16).astype(np.float32) for t in ids}
        for type_id, vectors in (("spectrum", spectrum), ("genre", genre)):
            await register_type(client, type_id, 16)
            await ingest(client, type_id, "track", vectors)
        features = [{"feature_type": "spectrum", "weight": 1.0}, {"feature_type": "genre", "weight": 1.0}]
        wrong = {}
        for q in ids[:10]:
            ranking = multi_reference(
                [
                    FeatureQuery(spectrum, spectrum[q], "cosine", 1.0),
                    FeatureQuery(genre, genre[q], "cosine", 1.0),
                ],
                exclude=[q],
            )
            answers = {}
            for limit in (5, 10):
                out = await post(
                    client, {"features": features, "query": by_entity("track", q), "limit": limit}
                )
                answers[limit] = [i["entity_id"] for i in out["results"]]
                try:
                    assert_matches(out["results"], ranking, limit)
                except AssertionError:
                    wrong[f"{q} limit={limit}"] = (answers[limit], [r.entity_id for r in ranking[:limit]])
            if answers[5] != answers[10][:5]:
                wrong[f"{q} limit 5 vs 10"] = (answers[5], answers[10][:5])
        assert not wrong, "\n".join(f"{k}: got {g} want {w}" for k, (g, w) in wrong.items())
