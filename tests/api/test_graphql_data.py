"""GraphQL data mutations (catalog, playlists, feature maps) and the fingerprint query,
including per-item ingest errors, playlist privacy, the batch limit and the body limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from fingerprints.config import Settings
from tests.api.conftest import CustomClient
from tests.helpers import ADMIN, dump_databases, seed

INGEST = """
mutation Ingest($input: IngestInput!) {
  ingestFeatureMaps(input: $input) {
    ingested
    errors { index entityType entityId code message }
  }
}
"""
DELETE_MAPS = """
mutation Delete($input: DeleteFeatureMapsInput!) {
  deleteFeatureMaps(input: $input) { deleted byEntityType { entityType count } }
}
"""
UPSERT_CATALOG = """
mutation Catalog($input: CatalogInput!) {
  upsertCatalog(input: $input) {
    artists albums tracks
    errors { index entityType entityId code message }
  }
}
"""
UPSERT_PLAYLIST = """
mutation Playlist($input: PlaylistInput!) {
  upsertPlaylist(input: $input) {
    id userId trackCount
    errors { index entityType entityId code message }
  }
}
"""
DELETE_PLAYLIST = "mutation DeletePlaylist($id: ID!) { deletePlaylist(id: $id) }"
FINGERPRINT = """
query Fingerprint($entityType: EntityType!, $entityId: ID!, $types: [ID!]) {
  fingerprint(entityType: $entityType, entityId: $entityId, types: $types) {
    entityType entityId lastUpdated
    featureMaps { featureType version vector computedAt metadata outdated }
  }
}
"""


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """POST one GraphQL operation; GraphQL answers (data or errors) come with HTTP 200."""
    r = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers or {}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    return r.json()


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("data") is None, body
    assert len(body["errors"]) == 1, body
    return body["errors"][0]


def error_code(body: dict[str, Any]) -> str:
    return only_error(body)["extensions"]["code"]


def ok(body: dict[str, Any], field: str) -> Any:
    assert "errors" not in body, body
    return body["data"][field]


def feature(kind: str, entity_id: str, vector: Any, metadata: Any = None) -> dict[str, Any]:
    item: dict[str, Any] = {"entityType": kind.upper(), "entityId": entity_id, "vector": vector}
    if metadata is not None:
        item["metadata"] = metadata
    return item


async def ingest(
    client: httpx.AsyncClient,
    features: list[dict[str, Any]],
    *,
    type_id: str = "audio",
    version: int | None = None,
    headers: dict[str, str] | None = ADMIN,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"featureTypeId": type_id, "features": features}
    if version is not None:
        payload["version"] = version
    return await gql(client, INGEST, {"input": payload}, headers)


async def fingerprint(
    client: httpx.AsyncClient,
    kind: str,
    entity_id: str,
    *,
    types: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    return await gql(
        client, FINGERPRINT, {"entityType": kind.upper(), "entityId": entity_id, "types": types}, headers
    )


def f32(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).astype(np.float32)


def assert_same_f32(got: list[float], sent: list[float]) -> None:
    assert len(got) == len(sent)
    np.testing.assert_array_equal(f32(got), f32(sent))


async def register_rest(client: httpx.AsyncClient, type_id: str, dimension: int, **fields: Any) -> None:
    body = {"id": type_id, "name": type_id.title(), "dimension": dimension, **fields}
    r = await client.post("/v1/admin/fingerprints/types", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text


# ------------------------------------------------------------------ catalog and playlists


async def test_upsert_catalog_then_ingest_for_new_entities(client: httpx.AsyncClient) -> None:
    await seed(client)
    catalog = {
        "artists": [{"id": "ar9", "name": "Nine", "genres": ["pop"], "popularity": 30}],
        "albums": [{"id": "al9", "name": "Album Nine", "artistIds": ["ar9"], "releaseDate": "2021-05-01"}],
        "tracks": [
            {"id": "t9", "name": "Nine", "albumId": "al9", "artistIds": ["ar9"], "durationMs": 1000},
            {
                "id": "t10",
                "name": "Ten",
                "albumId": "al9",
                "artistIds": ["ar9"],
                "featuredArtistIds": ["ar1"],
            },
            {"id": "t11", "name": "Orphan", "albumId": "no_album", "artistIds": ["ar9"]},
            {"id": "t12", "name": "Stranger", "albumId": "al9", "artistIds": ["nobody"]},
        ],
    }
    result = ok(await gql(client, UPSERT_CATALOG, {"input": catalog}, ADMIN), "upsertCatalog")
    assert (result["artists"], result["albums"], result["tracks"]) == (1, 1, 2)
    assert [(e["index"], e["entityType"], e["entityId"], e["code"]) for e in result["errors"]] == [
        (2, "track", "t11", "UNKNOWN_ALBUM"),
        (3, "track", "t12", "UNKNOWN_ARTIST"),
    ]
    assert all(e["message"] for e in result["errors"])

    body = await ingest(
        client,
        [
            feature("track", "t9", [1, 0, 0, 0]),
            feature("track", "t10", [0, 1, 0, 0]),
            feature("album", "al9", [0, 0, 1, 0]),
            feature("artist", "ar9", [0, 0, 0, 1]),
            feature("track", "t11", [1, 1, 0, 0]),
        ],
    )
    result = ok(body, "ingestFeatureMaps")
    assert result["ingested"] == 4
    assert [(e["index"], e["entityId"], e["code"]) for e in result["errors"]] == [
        (4, "t11", "UNKNOWN_ENTITY")
    ]

    # Upsert updates in place: same ids, new names; still one artist.
    again = {"artists": [{"id": "ar9", "name": "Nine Renamed"}]}
    result = ok(await gql(client, UPSERT_CATALOG, {"input": again}, ADMIN), "upsertCatalog")
    assert (result["artists"], result["albums"], result["tracks"], result["errors"]) == (1, 0, 0, [])
    fp = ok(await fingerprint(client, "artist", "ar9"), "fingerprint")
    assert len(fp["featureMaps"]) == 1


async def test_upsert_catalog_empty_input(client: httpx.AsyncClient) -> None:
    result = ok(await gql(client, UPSERT_CATALOG, {"input": {}}, ADMIN), "upsertCatalog")
    assert result == {"artists": 0, "albums": 0, "tracks": 0, "errors": []}


async def test_upsert_playlist_lists_unknown_tracks(client: httpx.AsyncClient) -> None:
    await seed(client)
    body = await gql(
        client,
        UPSERT_PLAYLIST,
        {"input": {"id": "p2", "userId": 9, "name": "Theirs", "trackIds": ["t1", "ghost", "t2"]}},
        ADMIN,
    )
    result = ok(body, "upsertPlaylist")
    assert result["id"] == "p2"
    assert result["userId"] == 9
    assert result["trackCount"] == 2
    assert [(e["index"], e["entityType"], e["entityId"], e["code"]) for e in result["errors"]] == [
        (1, "track", "ghost", "UNKNOWN_TRACK")
    ]

    ingested = ok(await ingest(client, [feature("playlist", "p2", [1, 2, 3, 4])]), "ingestFeatureMaps")
    assert ingested == {"ingested": 1, "errors": []}
    assert ok(await fingerprint(client, "playlist", "p2", headers={"X-User-Id": "9"}), "fingerprint")
    assert error_code(await fingerprint(client, "playlist", "p2", headers={"X-User-Id": "7"})) == "NOT_FOUND"

    # Replacing the playlist with a new owner moves visibility with it.
    body = await gql(client, UPSERT_PLAYLIST, {"input": {"id": "p2", "userId": 7, "trackIds": []}}, ADMIN)
    assert ok(body, "upsertPlaylist")["trackCount"] == 0
    assert ok(await fingerprint(client, "playlist", "p2", headers={"X-User-Id": "7"}), "fingerprint")
    assert error_code(await fingerprint(client, "playlist", "p2", headers={"X-User-Id": "9"})) == "NOT_FOUND"


async def test_delete_playlist_removes_it_and_its_maps(client: httpx.AsyncClient, settings: Settings) -> None:
    await seed(client)
    assert (
        ok(await ingest(client, [feature("playlist", "p1", [1, 1, 0, 0])]), "ingestFeatureMaps")["ingested"]
        == 1
    )
    assert ok(await fingerprint(client, "playlist", "p1", headers=ADMIN), "fingerprint")

    assert ok(await gql(client, DELETE_PLAYLIST, {"id": "p1"}, ADMIN), "deletePlaylist") is True
    assert error_code(await fingerprint(client, "playlist", "p1", headers=ADMIN)) == "NOT_FOUND"
    state = dump_databases(settings)
    assert state["user.db:user_playlist"] == []
    assert state["user.db:user_playlist_tracks"] == []
    assert state["user.db:playlist_feature_maps"] == []

    # Deleting again: NOT_FOUND, nothing changes.
    assert error_code(await gql(client, DELETE_PLAYLIST, {"id": "p1"}, ADMIN)) == "NOT_FOUND"
    assert dump_databases(settings) == state

    # Re-creating the same id does not bring the old maps back.
    await gql(client, UPSERT_PLAYLIST, {"input": {"id": "p1", "userId": 7, "trackIds": ["t1"]}}, ADMIN)
    assert error_code(await fingerprint(client, "playlist", "p1", headers=ADMIN)) == "NOT_FOUND"


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (UPSERT_CATALOG, {"input": {"artists": [{"id": "arx", "name": "X"}]}}),
        (UPSERT_PLAYLIST, {"input": {"id": "p1", "userId": 8, "trackIds": ["t2"]}}),
        (DELETE_PLAYLIST, {"id": "p1"}),
        (INGEST, {"input": {"featureTypeId": "audio", "features": [feature("track", "t1", [1, 2, 3, 4])]}}),
        (DELETE_MAPS, {"input": {"featureTypeId": "audio"}}),
    ],
    ids=["upsertCatalog", "upsertPlaylist", "deletePlaylist", "ingestFeatureMaps", "deleteFeatureMaps"],
)
@pytest.mark.parametrize(
    ("headers", "code"),
    [
        (None, "UNAUTHENTICATED"),
        ({"X-User-Id": "7"}, "UNAUTHENTICATED"),
        ({"Authorization": "Bearer wrong"}, "FORBIDDEN"),
    ],
    ids=["none", "user", "wrong-token"],
)
async def test_data_mutations_need_admin(
    client: httpx.AsyncClient,
    settings: Settings,
    query: str,
    variables: dict[str, Any],
    headers: dict[str, str] | None,
    code: str,
) -> None:
    await seed(client)
    r = await client.post(
        "/v1/admin/fingerprints/ingest",
        json={
            "feature_type_id": "audio",
            "features": [{"entity_type": "track", "entity_id": "t2", "vector": [1, 0, 0, 0]}],
        },
        headers=ADMIN,
    )
    assert r.json()["ingested"] == 1
    before = dump_databases(settings)
    assert error_code(await gql(client, query, variables, headers)) == code
    assert dump_databases(settings) == before


# ------------------------------------------------------------------ ingest


async def test_ingest_and_read_back_as_float32(client: httpx.AsyncClient) -> None:
    await seed(client)
    vectors = {
        "t1": [0.1, 0.2, 0.3, 0.4],
        "t2": [1 / 3, -2.5, 1e-7, 123456.789],
        "t3": [1, 2, 3, 4],  # ints are floats too
        "t4": [3.4e38, -3.4e38, 1.17549435e-38, 0.5],  # float32 range edges are finite
    }
    metadata = {"confidence": 0.95, "source": "model-a", "tags": ["x", "y"], "nested": {"k": None}}
    features = [feature("track", tid, vec) for tid, vec in vectors.items()]
    features[0]["metadata"] = metadata
    result = ok(await ingest(client, features), "ingestFeatureMaps")
    assert result == {"ingested": 4, "errors": []}

    for tid, vec in vectors.items():
        fp = ok(await fingerprint(client, "track", tid), "fingerprint")
        assert fp["entityType"] == "TRACK"
        assert fp["entityId"] == tid
        [fmap] = fp["featureMaps"]
        assert fmap["featureType"] == "audio"
        assert fmap["version"] == 1
        assert fmap["outdated"] is False
        assert isinstance(fmap["computedAt"], int) and fmap["computedAt"] > 1_600_000_000
        assert fp["lastUpdated"] == fmap["computedAt"]
        assert_same_f32(fmap["vector"], vec)
        assert fmap["metadata"] == (metadata if tid == "t1" else None)

    # The REST view of the same map holds the same float32 values.
    r = await client.get("/v1/content/fingerprint/track/t2")
    assert_same_f32(r.json()["fingerprint"]["audio"]["vector"], vectors["t2"])


async def test_ingest_replaces_previous_vector(client: httpx.AsyncClient) -> None:
    await seed(client)
    await ingest(client, [feature("track", "t1", [1, 0, 0, 0], {"run": 1})])
    result = ok(await ingest(client, [feature("track", "t1", [0, 0, 0, 2], {"run": 2})]), "ingestFeatureMaps")
    assert result == {"ingested": 1, "errors": []}
    [fmap] = ok(await fingerprint(client, "track", "t1"), "fingerprint")["featureMaps"]
    assert_same_f32(fmap["vector"], [0, 0, 0, 2])
    assert fmap["metadata"] == {"run": 2}


async def test_ingest_per_item_errors_keep_good_items(client: httpx.AsyncClient, settings: Settings) -> None:
    await seed(client)
    features = [
        feature("track", "t1", [0.5, 0.25, -1, 2]),  # 0 good
        feature("track", "t2", [1, 2, 3]),  # 1 wrong dimension
        feature("track", "t3", [1, "a", 3, 4]),  # 2 non-numeric element
        feature("track", "t4", []),  # 3 empty
        feature("track", "t5", [0, 0, 0, 0]),  # 4 zero under cosine
        feature("track", "t6", [4e38, 1, 1, 1]),  # 5 overflows float32
        feature("track", "ghost", [1, 1, 1, 1]),  # 6 not in the catalog
        feature("album", "al1", [0, 1, 0, 0], {"confidence": 0.9}),  # 7 good
        feature("playlist", "p1", [0, 0, 1, 0]),  # 8 good
        feature("playlist", "p_ghost", [0, 0, 1, 0]),  # 9 not in the catalog
        feature("artist", "ar1", [[1, 2], [3, 4]]),  # 10 nested: not a flat list of numbers
        feature("artist", "ar2", "1,2,3,4"),  # 11 not a list
    ]
    result = ok(await ingest(client, features), "ingestFeatureMaps")
    assert result["ingested"] == 3
    got = [(e["index"], e["entityType"], e["entityId"], e["code"]) for e in result["errors"]]
    assert got == [
        (1, "track", "t2", "DIMENSION_MISMATCH"),
        (2, "track", "t3", "NON_NUMERIC"),
        (3, "track", "t4", "EMPTY_VECTOR"),
        (4, "track", "t5", "ZERO_VECTOR"),
        (5, "track", "t6", "NON_FINITE"),
        (6, "track", "ghost", "UNKNOWN_ENTITY"),
        (9, "playlist", "p_ghost", "UNKNOWN_ENTITY"),
        (10, "artist", "ar1", "NON_NUMERIC"),
        (11, "artist", "ar2", "NOT_A_LIST"),
    ]
    messages = {e["index"]: e["message"] for e in result["errors"]}
    assert all(messages.values())
    assert "3" in messages[1] and "4" in messages[1]  # got 3 values, needs 4

    good = {
        ("track", "t1"): [0.5, 0.25, -1, 2],
        ("album", "al1"): [0, 1, 0, 0],
        ("playlist", "p1"): [0, 0, 1, 0],
    }
    for (kind, eid), vec in good.items():
        fp = ok(await fingerprint(client, kind, eid, headers=ADMIN), "fingerprint")
        assert_same_f32(fp["featureMaps"][0]["vector"], vec)
    album = ok(await fingerprint(client, "album", "al1"), "fingerprint")
    assert album["featureMaps"][0]["metadata"] == {"confidence": 0.9}
    for tid in ("t2", "t3", "t4", "t5", "t6"):
        assert error_code(await fingerprint(client, "track", tid)) == "NOT_FOUND"
    state = dump_databases(settings)
    assert len(state["catalog.db:feature_maps"]) == 2
    assert len(state["user.db:playlist_feature_maps"]) == 1


@pytest.mark.parametrize(
    ("vector", "code"),
    [
        ([4e38, 0, 0, 1], "NON_FINITE"),
        ([-4e38, 0, 0, 1], "NON_FINITE"),
        ([1e300, 1, 1, 1], "NON_FINITE"),
        ([1, 2, 3, 4, 5], "DIMENSION_MISMATCH"),
        ([0.0, -0.0, 0, 0], "ZERO_VECTOR"),
        ([1, None, 3, 4], "NON_NUMERIC"),
        ([True, False, True, True], "NON_NUMERIC"),
    ],
)
async def test_ingest_bad_vector_in_uniform_batch(
    client: httpx.AsyncClient, vector: list[Any], code: str
) -> None:
    """A bad vector among same-length good ones (the batch fast path) is still caught per item."""
    await seed(client)
    features = [
        feature("track", "t1", [0.1, 0.2, 0.3, 0.4]),
        feature("track", "t2", vector),
        feature("track", "t3", [0.4, 0.3, 0.2, 0.1]),
    ]
    result = ok(await ingest(client, features), "ingestFeatureMaps")
    assert result["ingested"] == 2
    assert [(e["index"], e["entityId"], e["code"]) for e in result["errors"]] == [(1, "t2", code)]
    assert error_code(await fingerprint(client, "track", "t2")) == "NOT_FOUND"
    for tid in ("t1", "t3"):
        assert ok(await fingerprint(client, "track", tid), "fingerprint")


async def test_ingest_boolean_vector_alone_is_non_numeric(client: httpx.AsyncClient) -> None:
    """JSON booleans are not numbers: the same vector must be refused alone and in a batch."""
    await seed(client)
    result = ok(
        await ingest(client, [feature("track", "t2", [True, False, True, True])]), "ingestFeatureMaps"
    )
    assert result["ingested"] == 0
    assert [(e["index"], e["entityId"], e["code"]) for e in result["errors"]] == [(0, "t2", "NON_NUMERIC")]


async def test_ingest_zero_vector_allowed_under_euclidean(client: httpx.AsyncClient) -> None:
    await seed(client)
    await register_rest(client, "euc", 2, distance="euclidean")
    result = ok(await ingest(client, [feature("track", "t1", [0, 0])], type_id="euc"), "ingestFeatureMaps")
    assert result == {"ingested": 1, "errors": []}


async def test_ingest_version_rules(client: httpx.AsyncClient, settings: Settings) -> None:
    await seed(client)
    before = dump_databases(settings)
    result = ok(await ingest(client, [feature("track", "t1", [1, 0, 0, 0])], version=2), "ingestFeatureMaps")
    assert result["ingested"] == 0
    assert [(e["index"], e["entityId"], e["code"]) for e in result["errors"]] == [
        (0, "t1", "VERSION_TOO_HIGH")
    ]
    assert dump_databases(settings) == before

    r = await client.post("/v1/admin/fingerprints/types/audio/bump-version", headers=ADMIN)
    assert r.json()["new_version"] == 2
    result = ok(
        await ingest(
            client, [feature("track", "t1", [1, 0, 0, 0]), feature("track", "t2", [0, 1, 0, 0])], version=1
        ),
        "ingestFeatureMaps",
    )
    assert result == {"ingested": 2, "errors": []}
    await ingest(client, [feature("track", "t2", [0, 2, 0, 0])])  # current version by default
    maps = {
        tid: ok(await fingerprint(client, "track", tid), "fingerprint")["featureMaps"][0]
        for tid in ("t1", "t2")
    }
    assert (maps["t1"]["version"], maps["t1"]["outdated"]) == (1, True)
    assert (maps["t2"]["version"], maps["t2"]["outdated"]) == (2, False)


async def test_ingest_unknown_or_inactive_type_stores_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await seed(client)
    before = dump_databases(settings)
    result = ok(
        await ingest(client, [feature("track", "t1", [1, 0, 0, 0])], type_id="nope"), "ingestFeatureMaps"
    )
    assert result["ingested"] == 0
    assert [(e["index"], e["code"]) for e in result["errors"]] == [(0, "UNKNOWN_FEATURE_TYPE")]
    assert dump_databases(settings) == before

    r = await client.put("/v1/admin/fingerprints/types/audio", json={"is_active": False}, headers=ADMIN)
    assert r.status_code == 200, r.text
    before = dump_databases(settings)
    result = ok(await ingest(client, [feature("track", "t1", [1, 0, 0, 0])]), "ingestFeatureMaps")
    assert [(e["index"], e["code"]) for e in result["errors"]] == [(0, "FEATURE_TYPE_INACTIVE")]
    assert dump_databases(settings) == before


async def test_ingest_entity_type_not_applicable(client: httpx.AsyncClient) -> None:
    await seed(client)
    await register_rest(client, "tracks_only", 2, applies_to=["track"])
    features = [feature("track", "t1", [1, 2]), feature("album", "al1", [1, 2])]
    result = ok(await ingest(client, features, type_id="tracks_only"), "ingestFeatureMaps")
    assert result["ingested"] == 1
    assert [(e["index"], e["entityType"], e["entityId"], e["code"]) for e in result["errors"]] == [
        (1, "album", "al1", "ENTITY_TYPE_NOT_APPLICABLE")
    ]


# ------------------------------------------------------------------ delete feature maps


async def test_delete_feature_maps_by_entity_and_by_type(client: httpx.AsyncClient) -> None:
    await seed(client)
    await register_rest(client, "mood", 2)
    await ingest(
        client,
        [
            feature("track", "t1", [1, 0, 0, 0]),
            feature("track", "t2", [0, 1, 0, 0]),
            feature("album", "al1", [0, 0, 1, 0]),
            feature("playlist", "p1", [0, 0, 0, 1]),
        ],
    )
    await ingest(client, [feature("track", "t1", [1, 1]), feature("track", "t2", [1, 2])], type_id="mood")

    # Entities, restricted to one type.
    body = await gql(
        client,
        DELETE_MAPS,
        {"input": {"featureTypeId": "mood", "entities": [{"entityType": "TRACK", "entityId": "t1"}]}},
        ADMIN,
    )
    assert ok(body, "deleteFeatureMaps") == {
        "deleted": 1,
        "byEntityType": [{"entityType": "TRACK", "count": 1}],
    }
    fp = ok(await fingerprint(client, "track", "t1"), "fingerprint")
    assert [m["featureType"] for m in fp["featureMaps"]] == ["audio"]

    # Entities of every type, including a playlist (stored in the user database).
    body = await gql(
        client,
        DELETE_MAPS,
        {
            "input": {
                "entities": [
                    {"entityType": "TRACK", "entityId": "t1"},
                    {"entityType": "PLAYLIST", "entityId": "p1"},
                    {"entityType": "ARTIST", "entityId": "ar3"},
                ]
            }
        },
        ADMIN,
    )
    result = ok(body, "deleteFeatureMaps")
    assert result["deleted"] == 2
    assert sorted((d["entityType"], d["count"]) for d in result["byEntityType"]) == [
        ("PLAYLIST", 1),
        ("TRACK", 1),
    ]
    assert error_code(await fingerprint(client, "track", "t1")) == "NOT_FOUND"
    assert error_code(await fingerprint(client, "playlist", "p1", headers=ADMIN)) == "NOT_FOUND"

    # Every map of a type.
    result = ok(
        await gql(client, DELETE_MAPS, {"input": {"featureTypeId": "audio"}}, ADMIN), "deleteFeatureMaps"
    )
    assert result["deleted"] == 2
    assert sorted((d["entityType"], d["count"]) for d in result["byEntityType"]) == [
        ("ALBUM", 1),
        ("TRACK", 1),
    ]
    fp = ok(await fingerprint(client, "track", "t2"), "fingerprint")
    assert [m["featureType"] for m in fp["featureMaps"]] == ["mood"]
    r = await client.get("/v1/admin/fingerprints/types/audio", headers=ADMIN)
    assert r.json()["stats"]["track_count"] == 0


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"featureTypeId": "nope"}, "NOT_FOUND"),
        ({"featureTypeId": "nope", "entities": [{"entityType": "TRACK", "entityId": "t1"}]}, "NOT_FOUND"),
        ({}, "BAD_USER_INPUT"),
        ({"entities": []}, "BAD_USER_INPUT"),
    ],
    ids=["unknown-type", "unknown-type-with-entities", "nothing", "no-entities"],
)
async def test_delete_feature_maps_refused(
    client: httpx.AsyncClient, settings: Settings, payload: dict[str, Any], code: str
) -> None:
    await seed(client)
    await ingest(client, [feature("track", "t1", [1, 0, 0, 0]), feature("playlist", "p1", [0, 1, 0, 0])])
    before = dump_databases(settings)
    assert error_code(await gql(client, DELETE_MAPS, {"input": payload}, ADMIN)) == code
    assert dump_databases(settings) == before


# ------------------------------------------------------------------ fingerprint query


async def test_fingerprint_types_filter(client: httpx.AsyncClient) -> None:
    await seed(client)
    await register_rest(client, "mood", 2)
    await ingest(client, [feature("track", "t1", [1, 2, 3, 4])])
    await ingest(client, [feature("track", "t1", [5, 6])], type_id="mood")

    everything = ok(await fingerprint(client, "track", "t1"), "fingerprint")
    assert sorted(m["featureType"] for m in everything["featureMaps"]) == ["audio", "mood"]
    only = ok(await fingerprint(client, "track", "t1", types=["mood"]), "fingerprint")
    [fmap] = only["featureMaps"]
    assert fmap["featureType"] == "mood"
    assert_same_f32(fmap["vector"], [5, 6])

    assert error_code(await fingerprint(client, "track", "t1", types=["nope"])) == "NOT_FOUND"
    # An entity without maps of the asked type is NOT_FOUND too.
    await ingest(client, [feature("track", "t2", [1, 2, 3, 4])])
    assert error_code(await fingerprint(client, "track", "t2", types=["mood"])) == "NOT_FOUND"


@pytest.mark.parametrize(
    ("kind", "entity_id"),
    [("track", "ghost"), ("album", "ghost"), ("artist", "ghost"), ("playlist", "ghost"), ("artist", "ar1")],
    ids=["track", "album", "artist", "playlist", "known-without-maps"],
)
async def test_fingerprint_not_found(client: httpx.AsyncClient, kind: str, entity_id: str) -> None:
    await seed(client)
    await ingest(client, [feature("track", "t1", [1, 2, 3, 4])])
    body = await fingerprint(client, kind, entity_id, headers=ADMIN)
    error = only_error(body)
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert entity_id in error["message"]


@pytest.mark.parametrize(
    ("headers", "visible"),
    [
        ({"X-User-Id": "7"}, True),
        (ADMIN, True),
        ({**ADMIN, "X-User-Id": "8"}, True),
        ({"X-User-Id": "8"}, False),
        ({}, False),
        ({"X-User-Id": "abc"}, False),
        ({"Authorization": "Bearer wrong", "X-User-Id": "8"}, False),
    ],
    ids=["owner", "admin", "admin-and-other-user", "other-user", "anonymous", "bad-user-id", "wrong-token"],
)
async def test_playlist_fingerprint_visibility(
    client: httpx.AsyncClient, headers: dict[str, str], visible: bool
) -> None:
    await seed(client)
    assert (
        ok(await ingest(client, [feature("playlist", "p1", [0.3, 0.1, 0.2, 0.9])]), "ingestFeatureMaps")[
            "ingested"
        ]
        == 1
    )
    body = await fingerprint(client, "playlist", "p1", headers=headers)
    if visible:
        fp = ok(body, "fingerprint")
        assert (fp["entityType"], fp["entityId"]) == ("PLAYLIST", "p1")
        assert_same_f32(fp["featureMaps"][0]["vector"], [0.3, 0.1, 0.2, 0.9])
    else:
        error = only_error(body)
        assert error["extensions"]["code"] == "NOT_FOUND"
        # Same answer as for a playlist that does not exist: nothing leaks.
        ghost = only_error(await fingerprint(client, "playlist", "p_ghost", headers=headers))
        assert ghost["extensions"]["code"] == "NOT_FOUND"


# ------------------------------------------------------------------ limits


async def test_batch_limit(custom_client: CustomClient) -> None:
    async with custom_client(max_batch_items=3) as (c, settings):
        await register_rest(c, "audio", 4)
        first = {
            "artists": [{"id": "ar1", "name": "A"}],
            "albums": [{"id": "al1", "name": "B", "artistIds": ["ar1"]}],
            "tracks": [{"id": "t1", "name": "T1", "albumId": "al1", "artistIds": ["ar1"]}],
        }
        assert ok(await gql(c, UPSERT_CATALOG, {"input": first}, ADMIN), "upsertCatalog")["tracks"] == 1
        more = {"tracks": [{"id": f"t{i}", "name": f"T{i}", "albumId": "al1"} for i in (2, 3, 4)]}
        assert ok(await gql(c, UPSERT_CATALOG, {"input": more}, ADMIN), "upsertCatalog")["tracks"] == 3

        # At the limit: accepted.
        three = [feature("track", f"t{i}", [1, i, 0, 0]) for i in (1, 2, 3)]
        assert ok(await ingest(c, three), "ingestFeatureMaps") == {"ingested": 3, "errors": []}

        before = dump_databases(settings)
        four = [feature("track", f"t{i}", [0, 0, i, 1]) for i in (1, 2, 3, 4)]
        error = only_error(await ingest(c, four))
        assert error["extensions"]["code"] == "PAYLOAD_TOO_LARGE", error
        assert dump_databases(settings) == before

        too_many = {"artists": [{"id": f"arx{i}", "name": "X"} for i in range(4)]}
        assert error_code(await gql(c, UPSERT_CATALOG, {"input": too_many}, ADMIN)) == "PAYLOAD_TOO_LARGE"
        mixed = {"artists": [{"id": "arx", "name": "X"}], "tracks": more["tracks"]}
        assert error_code(await gql(c, UPSERT_CATALOG, {"input": mixed}, ADMIN)) == "PAYLOAD_TOO_LARGE"
        playlist = {"id": "p9", "userId": 1, "trackIds": ["t1", "t2", "t3", "t4"]}
        assert error_code(await gql(c, UPSERT_PLAYLIST, {"input": playlist}, ADMIN)) == "PAYLOAD_TOO_LARGE"
        assert dump_databases(settings) == before


async def test_body_over_limit_is_413_with_graphql_body(custom_client: CustomClient) -> None:
    async with custom_client(max_body_bytes=2048) as (c, settings):
        await register_rest(c, "audio", 4)
        r = await c.post(
            "/v1/admin/catalog",
            json={
                "artists": [{"id": "ar1", "name": "A"}],
                "albums": [{"id": "al1", "name": "B", "artist_ids": ["ar1"]}],
                "tracks": [{"id": "t1", "name": "T", "album_id": "al1", "artist_ids": ["ar1"]}],
            },
            headers=ADMIN,
        )
        assert r.status_code == 200, r.text
        before = dump_databases(settings)

        features = [feature("track", "t1", [0.123456789] * 4, {"pad": "x" * 2100})]
        payload = {"query": INGEST, "variables": {"input": {"featureTypeId": "audio", "features": features}}}
        raw = orjson.dumps(payload)
        assert len(raw) > 2048
        r = await c.post("/graphql", content=raw, headers={**ADMIN, "Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert body["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE", body
        assert body["errors"][0]["message"]
        assert dump_databases(settings) == before

        # Without Content-Length (chunked): refused while streaming, same answer.
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(raw), 512):
                yield raw[i : i + 512]

        r = await c.post("/graphql", content=chunks(), headers={**ADMIN, "Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
        assert dump_databases(settings) == before

        # Just under the limit: served.
        small = [feature("track", "t1", [0.5, 0.5, 0.5, 0.5])]
        result = ok(await ingest(c, small), "ingestFeatureMaps")
        assert result == {"ingested": 1, "errors": []}
