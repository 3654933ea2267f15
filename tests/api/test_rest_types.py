"""REST feature-type registry (spec §6.1): register, list with stats, get, update, bump-version."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from fingerprints.config import Settings
from tests.backends import sql
from tests.helpers import ADMIN, dump_databases, seed

TYPES = "/v1/admin/fingerprints/types"
INGEST = "/v1/admin/fingerprints/ingest"
WRONG = {"Authorization": "Bearer not-the-admin-token"}
AGGREGATIONS = [
    "average",
    "weighted_by_duration",
    "weighted_by_popularity",
    "centroid",
    "max",
    "min",
    "none",
]
DISTANCES = ["cosine", "euclidean", "dot_product"]
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


async def register(client: httpx.AsyncClient, headers: dict[str, str] = ADMIN, **body: Any) -> httpx.Response:
    return await client.post(TYPES, json=body, headers=headers)


async def register_ok(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("name", body["id"].title())
    r = await register(client, **body)
    assert r.status_code == 201, r.text
    return r.json()


async def update(
    client: httpx.AsyncClient, type_id: str, body: Any, headers: dict[str, str] = ADMIN
) -> httpx.Response:
    return await client.put(f"{TYPES}/{type_id}", json=body, headers=headers)


async def bump(client: httpx.AsyncClient, type_id: str, headers: dict[str, str] = ADMIN) -> httpx.Response:
    return await client.post(f"{TYPES}/{type_id}/bump-version", headers=headers)


async def ingest(
    client: httpx.AsyncClient,
    type_id: str,
    items: list[tuple[str, str]],
    dimension: int,
    version: int | None = None,
) -> None:
    """Ingest one simple vector for each (entity_type, entity_id); all must succeed."""
    body: dict[str, Any] = {
        "feature_type_id": type_id,
        "features": [
            {"entity_type": et, "entity_id": eid, "vector": [float(i + 1) for i in range(dimension)]}
            for et, eid in items
        ],
    }
    if version is not None:
        body["version"] = version
    r = await client.post(INGEST, json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {"ingested": len(items), "errors": []}, r.text


async def types_by_id(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    r = await client.get(TYPES, headers=ADMIN)
    assert r.status_code == 200, r.text
    return {t["id"]: t for t in r.json()["types"]}


def expected_stats(settings: Settings, type_id: str) -> dict[str, Any]:
    """The stats of one feature type, counted straight from the databases."""
    per_type = dict(
        sql(
            settings,
            "catalog",
            "SELECT entity_type, COUNT(*) FROM feature_maps WHERE feature_type_id = ? GROUP BY entity_type",
            type_id,
        )
    )
    (playlists,) = sql(
        settings, "user", "SELECT COUNT(*) FROM playlist_feature_maps WHERE feature_type_id = ?", type_id
    )[0]
    ((total_tracks,),) = sql(settings, "catalog", "SELECT COUNT(*) FROM tracks")
    tracks = per_type.get("track", 0)
    return {
        "track_count": tracks,
        "album_count": per_type.get("album", 0),
        "artist_count": per_type.get("artist", 0),
        "playlist_count": playlists,
        "coverage_percent": pytest.approx(100.0 * tracks / total_tracks, abs=0.01),
    }


# ------------------------------------------------------------------ register


async def test_register_returns_201_with_every_field(client: httpx.AsyncClient, settings: Settings) -> None:
    before = int(time.time())
    r = await register(
        client,
        id="audio_spectrum",
        name="Audio Spectrum Analysis",
        description="128-dimensional representation of audio frequency characteristics",
        dimension=128,
        applies_to=["track"],
        aggregation_method="weighted_by_duration",
    )
    assert r.status_code == 201, r.text
    body = r.json()
    created = body.pop("created_at")
    assert before <= created <= int(time.time()) + 1
    assert body.pop("updated_at") == created
    assert body == {
        "id": "audio_spectrum",
        "name": "Audio Spectrum Analysis",
        "description": "128-dimensional representation of audio frequency characteristics",
        "dimension": 128,
        "current_version": 1,
        "applies_to": ["track"],
        "aggregation_method": "weighted_by_duration",
        "distance": "cosine",
        "is_active": True,
    }
    rows = sql(
        settings,
        "catalog",
        "SELECT id, name, dimension, current_version, applies_to, aggregation_method, is_active "
        "FROM feature_map_types",
    )
    assert rows == [
        ("audio_spectrum", "Audio Spectrum Analysis", 128, 1, '["track"]', "weighted_by_duration", 1)
    ]


async def test_register_minimal_body_uses_defaults(client: httpx.AsyncClient) -> None:
    body = await register_ok(client, id="genre", name="Genre", dimension=8)
    assert body["description"] is None
    assert body["applies_to"] == []
    assert body["aggregation_method"] == "average"
    assert body["distance"] == "cosine"
    assert body["is_active"] is True
    assert body["current_version"] == 1


@pytest.mark.parametrize("method", AGGREGATIONS)
async def test_register_accepts_every_aggregation_method(client: httpx.AsyncClient, method: str) -> None:
    body = await register_ok(client, id="f", dimension=2, aggregation_method=method)
    assert body["aggregation_method"] == method


@pytest.mark.parametrize("distance", DISTANCES)
async def test_register_accepts_every_distance(client: httpx.AsyncClient, distance: str) -> None:
    body = await register_ok(client, id="f", dimension=2, distance=distance)
    assert body["distance"] == distance


@pytest.mark.parametrize("type_id", ["a", "a" * 64, "a1_b2", "x_"])
async def test_register_accepts_valid_ids(client: httpx.AsyncClient, type_id: str) -> None:
    assert (await register_ok(client, id=type_id, name="X", dimension=2))["id"] == type_id


@pytest.mark.parametrize("dimension", [1, 4096])
async def test_register_accepts_dimension_bounds(client: httpx.AsyncClient, dimension: int) -> None:
    assert (await register_ok(client, id="f", dimension=dimension))["dimension"] == dimension


@pytest.mark.parametrize(
    "applies_to, expected",
    [
        (["track", "album", "artist", "playlist"], ["track", "album", "artist", "playlist"]),
        (["playlist", "track"], ["playlist", "track"]),
        ([], []),
        (None, []),
    ],
)
async def test_register_applies_to(
    client: httpx.AsyncClient, applies_to: list[str] | None, expected: list[str]
) -> None:
    assert (await register_ok(client, id="f", dimension=2, applies_to=applies_to))["applies_to"] == expected


async def _rejected_register(
    client: httpx.AsyncClient, settings: Settings, body: dict[str, Any], status: int, code: str, field: Any
) -> None:
    """Register ``body`` and expect an error; nothing may be stored."""
    await seed(client)
    before = dump_databases(settings)
    r = await client.post(TYPES, json=body, headers=ADMIN)
    assert_error(r, status, code, field)
    assert dump_databases(settings) == before


@pytest.mark.parametrize(
    "type_id",
    ["Audio", "audioSpectrum", "1audio", "_audio", "a" * 65, "", "audio-spectrum", "audio spectrum", 5, None],
)
async def test_register_rejects_invalid_id(
    client: httpx.AsyncClient, settings: Settings, type_id: Any
) -> None:
    body = {"id": type_id, "name": "X", "dimension": 4}
    await _rejected_register(client, settings, body, 400, "BAD_USER_INPUT", "id")


@pytest.mark.parametrize("dimension", [0, -1, 4097, "8", True, False, 1.5, None, [4]])
async def test_register_rejects_invalid_dimension(
    client: httpx.AsyncClient, settings: Settings, dimension: Any
) -> None:
    body = {"id": "f", "name": "F", "dimension": dimension}
    await _rejected_register(client, settings, body, 400, "BAD_USER_INPUT", "dimension")


@pytest.mark.parametrize("applies_to", [["song"], ["Track"], ["track", "tracks"], "track", {"track": 1}, [1]])
async def test_register_rejects_invalid_applies_to(
    client: httpx.AsyncClient, settings: Settings, applies_to: Any
) -> None:
    body = {"id": "f", "name": "F", "dimension": 4, "applies_to": applies_to}
    await _rejected_register(client, settings, body, 400, "BAD_USER_INPUT", "applies_to")


@pytest.mark.parametrize("method", ["mean", "AVERAGE", "weighted", "median", 1, ["average"]])
async def test_register_rejects_invalid_aggregation_method(
    client: httpx.AsyncClient, settings: Settings, method: Any
) -> None:
    body = {"id": "f", "name": "F", "dimension": 4, "aggregation_method": method}
    await _rejected_register(client, settings, body, 400, "BAD_USER_INPUT", "aggregation_method")


@pytest.mark.parametrize("field", ["aggregation_method", "distance"])
async def test_register_rejects_empty_string_enum(
    client: httpx.AsyncClient, settings: Settings, field: str
) -> None:
    """An empty string is not one of the allowed values (omitting the field is the way to default)."""
    body = {"id": "f", "name": "F", "dimension": 4, field: ""}
    await _rejected_register(client, settings, body, 400, "BAD_USER_INPUT", field)


@pytest.mark.parametrize("distance", ["manhattan", "COSINE", "dot", "l2", 0])
async def test_register_rejects_invalid_distance(
    client: httpx.AsyncClient, settings: Settings, distance: Any
) -> None:
    body = {"id": "f", "name": "F", "dimension": 4, "distance": distance}
    await _rejected_register(client, settings, body, 400, "BAD_USER_INPUT", "distance")


@pytest.mark.parametrize("name", ["", "   ", None, 3, "x" * 201])
async def test_register_rejects_invalid_name(
    client: httpx.AsyncClient, settings: Settings, name: Any
) -> None:
    body = {"id": "f", "name": name, "dimension": 4}
    await _rejected_register(client, settings, body, 400, "BAD_USER_INPUT", "name")


@pytest.mark.parametrize("description", [5, ["a"], {"a": 1}])
async def test_register_rejects_invalid_description(
    client: httpx.AsyncClient, settings: Settings, description: Any
) -> None:
    body = {"id": "f", "name": "F", "dimension": 4, "description": description}
    await _rejected_register(client, settings, body, 400, "BAD_USER_INPUT", "description")


async def test_register_rejects_unknown_field(client: httpx.AsyncClient, settings: Settings) -> None:
    body = {"id": "f", "name": "F", "dimension": 4, "current_version": 3}
    await _rejected_register(client, settings, body, 400, "BAD_USER_INPUT", "current_version")


@pytest.mark.parametrize("missing", ["id", "name", "dimension"])
async def test_register_rejects_missing_required_field(
    client: httpx.AsyncClient, settings: Settings, missing: str
) -> None:
    body = {"id": "f", "name": "F", "dimension": 4}
    del body[missing]
    await _rejected_register(client, settings, body, 400, "BAD_USER_INPUT", missing)


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"null", b'"audio"', b""])
async def test_register_rejects_malformed_body(
    client: httpx.AsyncClient, settings: Settings, raw: bytes
) -> None:
    await seed(client)
    before = dump_databases(settings)
    r = await client.post(TYPES, content=raw, headers={**ADMIN, "Content-Type": "application/json"})
    assert_error(r, 400, "BAD_USER_INPUT", "body")
    assert dump_databases(settings) == before


async def test_register_duplicate_id_is_409_and_keeps_the_original(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await seed(client)  # registers "audio" (dimension 4)
    before = dump_databases(settings)
    r = await register(client, id="audio", name="Other", dimension=16, distance="euclidean")
    assert_error(r, 409, "CONFLICT", "id")
    assert dump_databases(settings) == before
    r = await client.get(f"{TYPES}/audio", headers=ADMIN)
    assert r.json()["name"] == "Audio" and r.json()["dimension"] == 4


# ------------------------------------------------------------------ list and get, with stats


async def test_list_reports_stats_matching_stored_counts(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await seed(client)  # 6 tracks, 2 albums, 3 artists, playlist p1; type "audio" (dim 4, all entities)
    await register_ok(client, id="mood", dimension=3, applies_to=["track", "playlist"])
    await register_ok(client, id="unused", dimension=2)
    await ingest(
        client,
        "audio",
        [
            ("track", "t1"),
            ("track", "t2"),
            ("track", "t3"),
            ("album", "al1"),
            ("artist", "ar1"),
            ("playlist", "p1"),
        ],
        4,
    )
    await ingest(client, "mood", [("track", "t5"), ("playlist", "p1")], 3)

    types = await types_by_id(client)
    assert set(types) == {"audio", "mood", "unused"}
    for type_id, body in types.items():
        assert body["stats"] == expected_stats(settings, type_id), type_id
    assert types["audio"]["stats"] == {
        "track_count": 3,
        "album_count": 1,
        "artist_count": 1,
        "playlist_count": 1,
        "coverage_percent": pytest.approx(50.0, abs=0.01),
    }
    assert types["mood"]["stats"]["track_count"] == 1
    assert types["mood"]["stats"]["playlist_count"] == 1
    assert types["mood"]["stats"]["coverage_percent"] == pytest.approx(100.0 / 6, abs=0.01)
    assert types["unused"]["stats"] == {
        "track_count": 0,
        "album_count": 0,
        "artist_count": 0,
        "playlist_count": 0,
        "coverage_percent": 0.0,
    }
    # Every listed type carries the spec fields.
    for body in types.values():
        assert {
            "id",
            "name",
            "dimension",
            "current_version",
            "applies_to",
            "aggregation_method",
            "is_active",
        } <= set(body)


async def test_list_stats_follow_ingest_and_full_coverage(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await seed(client)
    assert (await types_by_id(client))["audio"]["stats"]["coverage_percent"] == 0.0
    await ingest(client, "audio", [("track", f"t{i}") for i in range(1, 7)], 4)
    stats = (await types_by_id(client))["audio"]["stats"]
    assert stats["track_count"] == 6
    assert stats["coverage_percent"] == pytest.approx(100.0)
    assert stats == expected_stats(settings, "audio")


async def test_list_with_no_types_is_empty(client: httpx.AsyncClient) -> None:
    r = await client.get(TYPES, headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"types": []}


async def test_get_one_type_with_stats(client: httpx.AsyncClient, settings: Settings) -> None:
    await seed(client)
    await ingest(client, "audio", [("track", "t1"), ("track", "t4"), ("playlist", "p1")], 4)
    r = await client.get(f"{TYPES}/audio", headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "audio" and body["name"] == "Audio" and body["dimension"] == 4
    assert body["stats"] == expected_stats(settings, "audio")
    assert body["stats"]["track_count"] == 2 and body["stats"]["playlist_count"] == 1
    assert body["stats"]["coverage_percent"] == pytest.approx(100.0 * 2 / 6, abs=0.01)
    assert body == (await types_by_id(client))["audio"]


async def test_get_unknown_type_is_404(client: httpx.AsyncClient) -> None:
    await seed(client)
    assert_error(await client.get(f"{TYPES}/nope", headers=ADMIN), 404, "NOT_FOUND", "type_id")


# ------------------------------------------------------------------ update


async def test_update_changes_every_updatable_field(client: httpx.AsyncClient, settings: Settings) -> None:
    await seed(client)
    original = (await types_by_id(client))["audio"]
    changes = {
        "name": "Updated Name",
        "description": "Updated description",
        "aggregation_method": "max",
        "is_active": False,
        "applies_to": ["track", "album"],
    }
    r = await update(client, "audio", changes)
    assert r.status_code == 200, r.text
    body = r.json()
    for key, value in changes.items():
        assert body[key] == value, key
    for key in ("id", "dimension", "distance", "current_version", "created_at"):
        assert body[key] == original[key], key
    assert body["updated_at"] >= original["updated_at"]
    stored = (await types_by_id(client))["audio"]
    for key, value in changes.items():
        assert stored[key] == value, key
    rows = sql(
        settings,
        "catalog",
        "SELECT name, description, aggregation_method, is_active, applies_to FROM feature_map_types",
    )
    assert rows == [("Updated Name", "Updated description", "max", 0, '["track","album"]')]


async def test_update_partial_keeps_other_fields(client: httpx.AsyncClient) -> None:
    await seed(client, description="first", aggregation_method="centroid")
    r = await update(client, "audio", {"is_active": False})
    assert r.status_code == 200, r.text
    assert r.json()["is_active"] is False
    r = await update(client, "audio", {"is_active": True, "description": None})
    assert r.status_code == 200, r.text
    body = (await types_by_id(client))["audio"]
    assert body["is_active"] is True
    assert body["description"] is None
    assert body["name"] == "Audio"
    assert body["aggregation_method"] == "centroid"


@pytest.mark.parametrize("method", AGGREGATIONS)
async def test_update_accepts_every_aggregation_method(client: httpx.AsyncClient, method: str) -> None:
    await seed(client)
    r = await update(client, "audio", {"aggregation_method": method})
    assert r.status_code == 200, r.text
    assert (await types_by_id(client))["audio"]["aggregation_method"] == method


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"dimension": 8}, "dimension"),
        ({"dimension": 4}, "dimension"),
        ({"distance": "euclidean"}, "distance"),
        ({"name": "ok", "distance": "cosine"}, "distance"),
        ({"id": "other"}, "id"),
        ({"current_version": 5}, "current_version"),
        ({"created_at": 1}, "created_at"),
        ({"colour": "blue"}, "colour"),
        ({"name": "ok", "zzz": 1}, "zzz"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"aggregation_method": "mean"}, "aggregation_method"),
        ({"is_active": "false"}, "is_active"),
        ({"is_active": 0}, "is_active"),
        ({"applies_to": ["song"]}, "applies_to"),
        ({"applies_to": "track"}, "applies_to"),
    ],
)
async def test_update_rejects_bad_changes(
    client: httpx.AsyncClient, settings: Settings, changes: dict[str, Any], field: str
) -> None:
    await seed(client)
    before = dump_databases(settings)
    assert_error(await update(client, "audio", changes), 400, "BAD_USER_INPUT", field)
    assert dump_databases(settings) == before


@pytest.mark.parametrize("raw", [b"{oops", b"[]", b"null"])
async def test_update_rejects_malformed_body(
    client: httpx.AsyncClient, settings: Settings, raw: bytes
) -> None:
    await seed(client)
    before = dump_databases(settings)
    r = await client.put(f"{TYPES}/audio", content=raw, headers={**ADMIN, "Content-Type": "application/json"})
    assert_error(r, 400, "BAD_USER_INPUT", "body")
    assert dump_databases(settings) == before


async def test_update_unknown_type_is_404(client: httpx.AsyncClient, settings: Settings) -> None:
    await seed(client)
    before = dump_databases(settings)
    assert_error(await update(client, "nope", {"name": "X"}), 404, "NOT_FOUND", "type_id")
    assert dump_databases(settings) == before


async def test_update_applies_to_cannot_drop_entity_types_with_stored_maps(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await seed(client)
    await ingest(client, "audio", [("track", "t1"), ("playlist", "p1")], 4)
    before = dump_databases(settings)
    assert_error(
        await update(client, "audio", {"applies_to": ["track"]}), 400, "BAD_USER_INPUT", "applies_to"
    )
    assert dump_databases(settings) == before
    # Narrowing to types that keep every stored map is fine.
    r = await update(client, "audio", {"applies_to": ["track", "playlist"]})
    assert r.status_code == 200, r.text
    assert r.json()["applies_to"] == ["track", "playlist"]


# ------------------------------------------------------------------ bump version


async def test_bump_version_counts_outdated_maps(client: httpx.AsyncClient, settings: Settings) -> None:
    await seed(client)
    await register_ok(client, id="mood", dimension=3)
    await ingest(client, "audio", [("track", "t1"), ("track", "t2"), ("album", "al1"), ("playlist", "p1")], 4)
    await ingest(client, "mood", [("track", "t1"), ("track", "t3")], 3)  # another type: never counted

    r = await bump(client, "audio")
    assert r.status_code == 200, r.text
    assert r.json() == {"type_id": "audio", "previous_version": 1, "new_version": 2, "outdated_count": 4}
    assert (await types_by_id(client))["audio"]["current_version"] == 2
    assert (await types_by_id(client))["mood"]["current_version"] == 1

    # Re-ingest two maps at the new version: only the other two are outdated against version 2 ...
    await ingest(client, "audio", [("track", "t1"), ("playlist", "p1")], 4)
    versions = sql(
        settings,
        "catalog",
        "SELECT entity_id, version FROM feature_maps WHERE feature_type_id = 'audio' ORDER BY entity_id",
    )
    assert versions == [("al1", 1), ("t1", 2), ("t2", 1)]
    # ... and every map is outdated against version 3.
    r = await bump(client, "audio")
    assert r.status_code == 200, r.text
    assert r.json() == {"type_id": "audio", "previous_version": 2, "new_version": 3, "outdated_count": 4}

    await ingest(client, "audio", [("track", "t1"), ("track", "t2"), ("album", "al1")], 4)
    r = await bump(client, "audio")
    assert r.json() == {"type_id": "audio", "previous_version": 3, "new_version": 4, "outdated_count": 4}

    r = await bump(client, "mood")
    assert r.json() == {"type_id": "mood", "previous_version": 1, "new_version": 2, "outdated_count": 2}


async def test_bump_version_of_type_without_maps(client: httpx.AsyncClient, settings: Settings) -> None:
    await seed(client)
    r = await bump(client, "audio")
    assert r.status_code == 200, r.text
    assert r.json() == {"type_id": "audio", "previous_version": 1, "new_version": 2, "outdated_count": 0}
    rows = sql(settings, "catalog", "SELECT current_version FROM feature_map_types")
    assert rows == [(2,)]


async def test_bump_version_unknown_type_is_404(client: httpx.AsyncClient, settings: Settings) -> None:
    await seed(client)
    before = dump_databases(settings)
    assert_error(await bump(client, "nope"), 404, "NOT_FOUND", "type_id")
    assert dump_databases(settings) == before


# ------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    "headers, status, code",
    [
        ({}, 401, "UNAUTHENTICATED"),
        ({"Authorization": "Basic dGVzdDp0ZXN0"}, 401, "UNAUTHENTICATED"),
        (WRONG, 403, "FORBIDDEN"),
    ],
)
async def test_registry_endpoints_need_the_admin_token(
    client: httpx.AsyncClient, settings: Settings, headers: dict[str, str], status: int, code: str
) -> None:
    await seed(client)
    before = dump_databases(settings)
    calls = [
        ("POST", TYPES, {"id": "other", "name": "Other", "dimension": 2}),
        ("GET", TYPES, None),
        ("GET", f"{TYPES}/audio", None),
        ("PUT", f"{TYPES}/audio", {"name": "Hacked"}),
        ("POST", f"{TYPES}/audio/bump-version", None),
    ]
    for method, url, body in calls:
        assert_error(await client.request(method, url, json=body, headers=headers), status, code)
    assert dump_databases(settings) == before
