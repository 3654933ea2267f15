"""Shared helpers for the similarity-search tests: a bigger catalog, feature types and vectors
loaded through the public REST API, and brute-force numpy references of design §4 scores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx
import numpy as np

from tests.helpers import ADMIN

TYPES = "/v1/admin/fingerprints/types"
INGEST = "/v1/admin/fingerprints/ingest"
FEATURES = "/v1/admin/fingerprints/features"
SIMILAR = "/v1/content/similar"
BATCH = "/v1/content/similar/batch"

SCORE_TOL = 1e-4  # service scores (float32) against the float64 reference
TIE_TOL = 1e-5  # two results may swap places only when their reference scores are this close

Vectors = dict[str, np.ndarray]


# ------------------------------------------------------------------ catalog and ids


def track_id(i: int) -> str:
    return f"tr{i:04d}"


def album_id(j: int) -> str:
    return f"al{j:02d}"


def artist_id(a: int) -> str:
    return f"ar{a:02d}"


def big_catalog(n_tracks: int = 600, n_albums: int = 30, n_artists: int = 10) -> dict[str, Any]:
    """``n_tracks`` tracks over ``n_albums`` albums (track i on album i // (n_tracks / n_albums)),
    album j by artist j % n_artists."""
    per_album = max(1, n_tracks // n_albums)
    return {
        "artists": [{"id": artist_id(a), "name": f"Artist {a}"} for a in range(n_artists)],
        "albums": [
            {"id": album_id(j), "name": f"Album {j}", "artist_ids": [artist_id(j % n_artists)]}
            for j in range(n_albums)
        ],
        "tracks": [
            {
                "id": track_id(i),
                "name": f"Track {i}",
                "album_id": album_id(min(i // per_album, n_albums - 1)),
                "artist_ids": [artist_id(min(i // per_album, n_albums - 1) % n_artists)],
                "duration_ms": 120_000 + 1000 * (i % 120),
                "popularity": i % 101,
            }
            for i in range(n_tracks)
        ],
    }


async def load_catalog(client: httpx.AsyncClient, catalog: Mapping[str, Any]) -> None:
    r = await client.post("/v1/admin/catalog", json=catalog, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["errors"] == [], r.text


async def upsert_playlist(client: httpx.AsyncClient, pid: str, user_id: int, track_ids: list[str]) -> None:
    body = {"id": pid, "user_id": user_id, "name": pid, "track_ids": track_ids}
    r = await client.post("/v1/admin/playlists", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["errors"] == [], r.text


async def register_type(
    client: httpx.AsyncClient,
    type_id: str,
    dimension: int,
    distance: str = "cosine",
    applies_to: list[str] | None = None,
) -> None:
    body: dict[str, Any] = {
        "id": type_id,
        "name": type_id.title(),
        "dimension": dimension,
        "distance": distance,
    }
    if applies_to is not None:
        body["applies_to"] = applies_to
    r = await client.post(TYPES, json=body, headers=ADMIN)
    assert r.status_code == 201, r.text


async def ingest(
    client: httpx.AsyncClient, type_id: str, entity_type: str, vectors: Mapping[str, np.ndarray]
) -> None:
    """Store vectors (float32, sent exactly) and check that every item was accepted."""
    features = [
        {"entity_type": entity_type, "entity_id": eid, "vector": np.asarray(v, np.float32).tolist()}
        for eid, v in vectors.items()
    ]
    r = await client.post(INGEST, json={"feature_type_id": type_id, "features": features}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {"ingested": len(features), "errors": []}, r.text


async def delete_maps(
    client: httpx.AsyncClient, type_id: str | None, entities: list[tuple[str, str]]
) -> dict[str, Any]:
    body: dict[str, Any] = {"entities": [{"entity_type": t, "entity_id": i} for t, i in entities]}
    if type_id is not None:
        body["feature_type_id"] = type_id
    r = await client.request("DELETE", FEATURES, json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


async def set_active(client: httpx.AsyncClient, type_id: str, active: bool) -> None:
    r = await client.put(f"{TYPES}/{type_id}", json={"is_active": active}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["is_active"] is active, r.text


# ------------------------------------------------------------------ synthetic vectors


def clustered(
    rng: np.random.Generator,
    ids: Sequence[str],
    centers: np.ndarray,
    assign: Sequence[int],
    noise: float,
    scale: np.ndarray | None = None,
) -> Vectors:
    """float32 vectors: ``centers[assign[i]] + noise``, optionally scaled per row."""
    rows = centers[np.asarray(assign)] + noise * rng.normal(size=(len(ids), centers.shape[1]))
    if scale is not None:
        rows = rows * scale[:, None]
    rows = rows.astype(np.float32)
    return {eid: rows[i] for i, eid in enumerate(ids)}


@dataclass
class World:
    """What was stored: ``vectors[feature_type][entity_type][entity_id]`` and each type's metric."""

    vectors: dict[str, dict[str, Vectors]] = field(default_factory=dict)
    distance: dict[str, str] = field(default_factory=dict)
    playlist_owner: dict[str, int] = field(default_factory=dict)

    def of(self, type_id: str, entity_type: str) -> Vectors:
        return self.vectors.get(type_id, {}).get(entity_type, {})


N_TRACKS, N_ALBUMS, N_ARTISTS = 600, 30, 10
# tracks without an "audio" map: they have the other features only (Q5: simply absent)
NO_AUDIO = [track_id(i) for i in range(590, 600)]
# tracks without a "mood" map
NO_MOOD = [track_id(i) for i in range(0, 600, 7)]
PLAYLISTS = {"pl7a": 7, "pl7b": 7, "pl7c": 7, "pl8a": 8, "pl8b": 8, "pl9a": 9}


async def build_world(client: httpx.AsyncClient, seed: int = 1) -> World:
    """The catalog of ``big_catalog()``, six playlists of users 7, 8, 9 and four feature types:

    - ``audio``  cosine, 16-d, applies to all: tracks (but NO_AUDIO), albums, artists, playlists
    - ``timbre`` euclidean, 8-d, tracks and albums
    - ``energy`` dot_product, 8-d, tracks only, vectors of varied norms
    - ``mood``   cosine, 6-d, tracks only (but NO_MOOD), correlated with the albums of ``audio``
    """
    rng = np.random.default_rng(seed)
    world = World()
    await load_catalog(client, big_catalog(N_TRACKS, N_ALBUMS, N_ARTISTS))
    per_album = N_TRACKS // N_ALBUMS
    tracks = [track_id(i) for i in range(N_TRACKS)]
    album_of = [i // per_album for i in range(N_TRACKS)]
    albums = [album_id(j) for j in range(N_ALBUMS)]
    artists = [artist_id(a) for a in range(N_ARTISTS)]
    for pid, owner in PLAYLISTS.items():
        picked = sorted(rng.choice(N_TRACKS, size=8, replace=False).tolist())
        await upsert_playlist(client, pid, owner, [track_id(i) for i in picked])
        world.playlist_owner[pid] = owner

    specs = [
        ("audio", 16, "cosine", None),
        ("timbre", 8, "euclidean", ["track", "album"]),
        ("energy", 8, "dot_product", ["track"]),
        ("mood", 6, "cosine", ["track"]),
    ]
    for type_id, dim, distance, applies_to in specs:
        await register_type(client, type_id, dim, distance, applies_to)
        world.distance[type_id] = distance
        world.vectors[type_id] = {}

    # audio: album clusters; albums near their centre; artists and playlists elsewhere
    centers = rng.normal(size=(N_ALBUMS, 16))
    audio_tracks = clustered(rng, tracks, centers, album_of, noise=0.6)
    for t in NO_AUDIO:
        del audio_tracks[t]
    world.vectors["audio"]["track"] = audio_tracks
    world.vectors["audio"]["album"] = clustered(rng, albums, centers, range(N_ALBUMS), noise=0.3)
    world.vectors["audio"]["artist"] = clustered(
        rng, artists, centers, [a * 3 for a in range(N_ARTISTS)], noise=0.5
    )
    world.vectors["audio"]["playlist"] = clustered(
        rng, list(PLAYLISTS), centers, rng.integers(0, N_ALBUMS, len(PLAYLISTS)), noise=0.5
    )
    # timbre: euclidean, moderate norms
    tcenters = rng.normal(size=(N_ALBUMS, 8))
    world.vectors["timbre"]["track"] = clustered(rng, tracks, tcenters, album_of, noise=0.4)
    world.vectors["timbre"]["album"] = clustered(rng, albums, tcenters, range(N_ALBUMS), noise=0.2)
    # energy: dot product, norms between 0.5 and 2 so that it differs from cosine
    ecenters = rng.normal(size=(N_ALBUMS, 8))
    world.vectors["energy"]["track"] = clustered(
        rng, tracks, ecenters, album_of, noise=0.5, scale=rng.uniform(0.5, 2.0, N_TRACKS)
    )
    # mood: 6-d projection of the audio centres (correlated with audio), some tracks without
    mcenters = centers[:, :6] * 1.0
    mood = clustered(rng, tracks, mcenters, album_of, noise=0.7)
    for t in NO_MOOD:
        del mood[t]
    world.vectors["mood"]["track"] = mood

    for type_id, by_entity in world.vectors.items():
        for entity_type, vectors in by_entity.items():
            await ingest(client, type_id, entity_type, vectors)
    return world


# ------------------------------------------------------------------ references (design §4)


class Ref(NamedTuple):
    entity_id: str
    score: float
    distance: float | None = None


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def scores(vectors_by_id: Mapping[str, np.ndarray], query: np.ndarray, distance: str) -> dict[str, Ref]:
    """Every stored vector's score (and euclidean distance) for one query, in float64."""
    ids = list(vectors_by_id)
    if not ids:
        return {}
    matrix = np.stack([np.asarray(vectors_by_id[i], dtype=np.float64) for i in ids])
    q = np.asarray(query, dtype=np.float64)
    if distance == "cosine":
        s = _unit(matrix) @ _unit(q)
        return {eid: Ref(eid, float(s[n])) for n, eid in enumerate(ids)}
    if distance == "dot_product":
        s = matrix @ q
        return {eid: Ref(eid, float(s[n])) for n, eid in enumerate(ids)}
    assert distance == "euclidean", distance
    d = np.linalg.norm(matrix - q, axis=1)
    return {eid: Ref(eid, float(1.0 / (1.0 + d[n])), float(d[n])) for n, eid in enumerate(ids)}


def rank(refs: Iterable[Ref], k: int | None = None, min_score: float | None = None) -> list[Ref]:
    ordered = sorted(refs, key=lambda r: (-r.score, r.entity_id))
    if min_score is not None:
        ordered = [r for r in ordered if r.score >= min_score]
    return ordered if k is None else ordered[:k]


def reference(
    vectors_by_id: Mapping[str, np.ndarray],
    query: np.ndarray,
    distance: str,
    k: int | None = None,
    exclude: Iterable[str] = (),
    min_score: float | None = None,
) -> list[Ref]:
    """Brute-force design §4 ranking: cosine on unit vectors, dot raw, euclidean 1/(1+d);
    by score, ties by id; ``k=None`` gives the whole ranking."""
    excluded = set(exclude)
    allowed = {i: v for i, v in vectors_by_id.items() if i not in excluded}
    return rank(scores(allowed, query, distance).values(), k, min_score)


@dataclass(frozen=True)
class FeatureQuery:
    """One feature of a multi-feature reference: its stored vectors, query, metric and weight."""

    vectors: Mapping[str, np.ndarray]
    query: np.ndarray
    distance: str
    weight: float


def multi_reference(
    features: Sequence[FeatureQuery],
    k: int | None = None,
    exclude: Iterable[str] = (),
    min_score: float | None = None,
) -> list[Ref]:
    """``sum(w_i s_i) / sum(w_i)`` over the features each candidate has (design §4)."""
    excluded = set(exclude)
    total: dict[str, float] = {}
    weights: dict[str, float] = {}
    for f in features:
        for eid, ref in scores(f.vectors, f.query, f.distance).items():
            if eid in excluded:
                continue
            total[eid] = total.get(eid, 0.0) + f.weight * ref.score
            weights[eid] = weights.get(eid, 0.0) + f.weight
    return rank((Ref(eid, total[eid] / weights[eid]) for eid in total), k, min_score)


def centroid(vectors: Sequence[np.ndarray], distance: str) -> np.ndarray:
    """The query of a several-entities query: the mean of the unit vectors under cosine, else of
    the raw vectors (service/similarity.py ``_centroid``)."""
    matrix = np.stack([np.asarray(v, dtype=np.float64) for v in vectors])
    if distance == "cosine":
        matrix = _unit(matrix)
    return matrix.mean(axis=0)


def dedup_reference(rankings: Sequence[Sequence[Ref]], k: int) -> list[list[Ref]]:
    """Batch de-duplication of service/similarity.py: (query, entity) pairs from the best score
    down; an entity goes to the first list that wants it and still has room."""
    pairs = sorted(
        ((r.score, q, r.entity_id, r) for q, refs in enumerate(rankings) for r in refs),
        key=lambda p: (-p[0], p[1], p[2]),
    )
    taken: set[str] = set()
    out: list[list[Ref]] = [[] for _ in rankings]
    for _, q, eid, ref in pairs:
        if eid not in taken and len(out[q]) < k:
            taken.add(eid)
            out[q].append(ref)
    return [rank(refs) for refs in out]


# ------------------------------------------------------------------ comparisons


def assert_sorted(results: Sequence[Mapping[str, Any]], *, id_key: str = "entity_id") -> None:
    """Best first; exactly equal scores in ascending id order; each id once."""
    ids = [r[id_key] for r in results]
    assert len(set(ids)) == len(ids), f"duplicate ids: {ids}"
    for a, b in zip(results, results[1:], strict=False):
        assert (-a["score"], a[id_key]) < (-b["score"], b[id_key]), f"out of order: {a} then {b}"


def assert_matches(
    results: Sequence[Mapping[str, Any]],
    ranking: Sequence[Ref],
    k: int,
    *,
    id_key: str = "entity_id",
    check_distance: bool = False,
    what: str = "",
) -> None:
    """``results`` are the first ``k`` of the reference ``ranking`` (the full filtered ranking):
    same ids in the same order, scores within SCORE_TOL; two results may trade places only
    where the reference scores at those places differ by less than TIE_TOL."""
    expected = list(ranking[:k])
    by_id = {r.entity_id: r for r in ranking}
    got_ids = [r[id_key] for r in results]
    context = f"{what}\n got: {got_ids}\nwant: {[r.entity_id for r in expected]}"
    assert len(results) == len(expected), context
    assert len(set(got_ids)) == len(got_ids), context
    for pos, (item, want) in enumerate(zip(results, expected, strict=True)):
        eid = item[id_key]
        assert eid in by_id, f"position {pos}: {eid!r} is not a valid result\n{context}"
        ref = by_id[eid]
        if eid != want.entity_id:
            assert abs(ref.score - want.score) < TIE_TOL, (
                f"position {pos}: {eid!r} (ref score {ref.score}) instead of {want.entity_id!r} "
                f"(ref score {want.score})\n{context}"
            )
        assert abs(item["score"] - ref.score) <= SCORE_TOL, (
            f"{eid}: {item['score']} vs {ref.score}\n{context}"
        )
        if check_distance:
            assert ref.distance is not None
            assert item.get("distance") is not None, f"{eid}: no distance\n{context}"
            assert abs(item["distance"] - ref.distance) <= SCORE_TOL * max(1.0, ref.distance), (
                f"{eid}: distance {item['distance']} vs {ref.distance}\n{context}"
            )


def gap_threshold(ranking: Sequence[Ref], position: int) -> float:
    """A min_score halfway between the reference scores at ``position - 1`` and ``position``
    (so float32 rounding cannot move the cut)."""
    return (ranking[position - 1].score + ranking[position].score) / 2


def assert_error(r: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, r.text
    assert isinstance(error["message"], str) and error["message"], r.text
    if field is not None:
        assert error.get("field") == field, r.text
    return error


# ------------------------------------------------------------------ GraphQL


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    r = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers or {}
    )
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------ index status


async def readyz(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    return r.json()


async def key_status(client: httpx.AsyncClient, key: str) -> dict[str, Any] | None:
    return (await readyz(client))["index"]["keys"].get(key)


async def wait_for_key(
    client: httpx.AsyncClient, key: str, *, kind: str, timeout: float = 60.0
) -> dict[str, Any]:
    """Poll /readyz until ``key`` reports ``kind`` and is not building (bounded)."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        status = await key_status(client, key)
        if status is not None and status["kind"] == kind and not status["building"]:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"index {key} did not become {kind} within {timeout}s: {status}")


# ------------------------------------------------------------------ a reference for a whole request


def expected_ranking(
    world: World, body: Mapping[str, Any], visible_playlists: Iterable[str] | None = None
) -> tuple[list[Ref], int]:
    """The reference ranking (whole, filtered) and the limit of a POST /v1/content/similar body.

    ``visible_playlists``: the playlists a non-admin viewer may see when the target is playlist.
    """
    if "feature_type" in body:
        weights = {body["feature_type"]: 1.0}
    else:
        weights = {f["feature_type"]: float(f.get("weight", 1.0)) for f in body["features"]}
    spec = body["query"]
    refs: list[tuple[str, str]] = []
    if "vector" in spec:
        queries = {t: np.asarray(spec["vector"], dtype=np.float32) for t in weights}
        default_target = "track"
    else:
        entities = spec.get("entities") or [spec]
        refs = [(e["entity_type"], e["entity_id"]) for e in entities]
        queries = {
            t: centroid([world.of(t, et)[eid] for et, eid in refs], world.distance[t]) for t in weights
        }
        default_target = refs[0][0]
    target = body.get("target_entity_type") or default_target
    exclude = set(body.get("exclude_ids") or [])
    if not body.get("include_query"):
        exclude |= {eid for et, eid in refs if et == target}
    features = []
    for t, w in weights.items():
        candidates = world.of(t, target)
        if target == "playlist" and visible_playlists is not None:
            allowed = set(visible_playlists)
            candidates = {p: v for p, v in candidates.items() if p in allowed}
        features.append(FeatureQuery(candidates, queries[t], world.distance[t], w))
    min_score = body.get("min_score")
    if len(features) == 1:
        f = features[0]
        ranking = reference(f.vectors, f.query, f.distance, exclude=exclude, min_score=min_score)
    else:
        ranking = multi_reference(features, exclude=exclude, min_score=min_score)
    return ranking, int(body.get("limit", 20))


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


ENUM_KEYS = {"entity_type", "target_entity_type"}


def to_graphql(value: Any, key: str = "") -> Any:
    """A REST body as GraphQL input: camelCase keys, entity types as enum names."""
    if isinstance(value, Mapping):
        return {camel(k): to_graphql(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [to_graphql(v, key) for v in value]
    if key in ENUM_KEYS and isinstance(value, str):
        return value.upper()
    return value


def rest_items_as_graphql(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """REST result items in the shape of GraphQL ``SimilarItem { entityType entityId score distance }``."""
    return [
        {
            "entityType": item["entity_type"].upper(),
            "entityId": item["entity_id"],
            "score": item["score"],
            "distance": item.get("distance"),
        }
        for item in items
    ]
