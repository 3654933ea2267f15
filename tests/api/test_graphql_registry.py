"""GraphQL feature-type registry: featureTypes / featureType queries and the three registry
mutations, checked against the REST view of the same data and against stored state."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from fingerprints.config import Settings
from tests.helpers import ADMIN, dump_databases, seed

FEATURE_TYPE_FIELDS = """
    id name description dimension currentVersion appliesTo aggregationMethod distance
    isActive createdAt updatedAt
"""
STATS_FIELDS = "stats { trackCount albumCount artistCount playlistCount coveragePercent }"

REGISTER = f"""
mutation Register($input: RegisterFeatureTypeInput!) {{
  registerFeatureType(input: $input) {{ {FEATURE_TYPE_FIELDS} }}
}}
"""
UPDATE = f"""
mutation Update($id: ID!, $input: UpdateFeatureTypeInput!) {{
  updateFeatureType(id: $id, input: $input) {{ {FEATURE_TYPE_FIELDS} }}
}}
"""
BUMP = """
mutation Bump($id: ID!) {
  bumpFeatureTypeVersion(id: $id) { typeId previousVersion newVersion outdatedCount }
}
"""
LIST = f"query {{ featureTypes {{ {FEATURE_TYPE_FIELDS} {STATS_FIELDS} }} }}"
ONE = f"query One($id: ID!) {{ featureType(id: $id) {{ {FEATURE_TYPE_FIELDS} {STATS_FIELDS} }} }}"


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
    """The single error of a failed root field (whose non-null result nulls ``data``)."""
    assert body.get("data") is None, body
    assert len(body["errors"]) == 1, body
    return body["errors"][0]


def error_code(body: dict[str, Any]) -> str:
    return only_error(body)["extensions"]["code"]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def as_rest(ft: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL FeatureType in the REST shape: snake_case keys, enum values in lower case."""
    out: dict[str, Any] = {}
    for key, value in ft.items():
        if key in ("aggregationMethod", "distance"):
            value = value.lower()
        elif key == "appliesTo":
            value = [v.lower() for v in value]
        elif key == "stats" and value is not None:
            value = {_snake(k): v for k, v in value.items()}
        out[_snake(key)] = value
    return out


async def rest_type(client: httpx.AsyncClient, type_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/admin/fingerprints/types/{type_id}", headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


async def rest_types(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get("/v1/admin/fingerprints/types", headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()["types"]


async def ingest_rest(
    client: httpx.AsyncClient, type_id: str, items: list[tuple[str, str]], dim: int
) -> None:
    features = [
        {"entity_type": kind, "entity_id": eid, "vector": [float(i + 1)] * dim}
        for i, (kind, eid) in enumerate(items)
    ]
    r = await client.post(
        "/v1/admin/fingerprints/ingest",
        json={"feature_type_id": type_id, "features": features},
        headers=ADMIN,
    )
    assert r.status_code == 200 and r.json() == {"ingested": len(items), "errors": []}, r.text


def full_input(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "mood",
        "name": "Mood",
        "dimension": 8,
        "description": "How it feels",
        "appliesTo": ["TRACK", "ALBUM"],
        "aggregationMethod": "WEIGHTED_BY_DURATION",
        "distance": "EUCLIDEAN",
        **overrides,
    }


# ------------------------------------------------------------------ happy paths


async def test_register_returns_what_rest_then_reads(client: httpx.AsyncClient) -> None:
    await seed(client)
    body = await gql(client, REGISTER, {"input": full_input()}, ADMIN)
    assert "errors" not in body, body
    created = body["data"]["registerFeatureType"]
    assert created["id"] == "mood"
    assert created["name"] == "Mood"
    assert created["description"] == "How it feels"
    assert created["dimension"] == 8
    assert created["currentVersion"] == 1
    assert created["appliesTo"] == ["TRACK", "ALBUM"]
    assert created["aggregationMethod"] == "WEIGHTED_BY_DURATION"
    assert created["distance"] == "EUCLIDEAN"
    assert created["isActive"] is True
    assert created["createdAt"] == created["updatedAt"] > 0
    stored = await rest_type(client, "mood")
    stored.pop("stats")
    assert as_rest(created) == stored


async def test_register_defaults(client: httpx.AsyncClient) -> None:
    body = await gql(client, REGISTER, {"input": {"id": "plain", "name": "Plain", "dimension": 3}}, ADMIN)
    created = body["data"]["registerFeatureType"]
    assert created["description"] is None
    assert created["appliesTo"] == []
    assert created["aggregationMethod"] == "AVERAGE"
    assert created["distance"] == "COSINE"
    stored = await rest_type(client, "plain")
    stored.pop("stats")
    assert as_rest(created) == stored


@pytest.mark.parametrize("dimension", [1, 4096])
async def test_register_dimension_bounds_accepted(client: httpx.AsyncClient, dimension: int) -> None:
    body = await gql(
        client, REGISTER, {"input": {"id": "edge", "name": "Edge", "dimension": dimension}}, ADMIN
    )
    assert body["data"]["registerFeatureType"]["dimension"] == dimension
    assert (await rest_type(client, "edge"))["dimension"] == dimension


async def test_feature_types_with_stats_match_rest(client: httpx.AsyncClient) -> None:
    await seed(client)
    await gql(client, REGISTER, {"input": full_input(appliesTo=None)}, ADMIN)
    await ingest_rest(client, "audio", [("track", "t1"), ("track", "t2"), ("track", "t3")], 4)
    await ingest_rest(client, "audio", [("album", "al1"), ("artist", "ar1"), ("playlist", "p1")], 4)
    await ingest_rest(client, "mood", [("track", "t5")], 8)

    # featureTypes is a read: no admin token needed.
    body = await gql(client, LIST)
    assert "errors" not in body, body
    listed = body["data"]["featureTypes"]
    assert sorted(ft["id"] for ft in listed) == ["audio", "mood"]
    by_id = {ft["id"]: ft for ft in listed}
    assert by_id["audio"]["stats"] == {
        "trackCount": 3,
        "albumCount": 1,
        "artistCount": 1,
        "playlistCount": 1,
        "coveragePercent": 50.0,
    }
    assert by_id["mood"]["stats"]["trackCount"] == 1
    assert by_id["mood"]["stats"]["coveragePercent"] == pytest.approx(16.67)

    rest = {ft["id"]: ft for ft in await rest_types(client)}
    assert {k: as_rest(v) for k, v in by_id.items()} == rest

    for type_id in ("audio", "mood"):
        one = await gql(client, ONE, {"id": type_id})
        assert "errors" not in one, one
        assert one["data"]["featureType"] == by_id[type_id]
        assert as_rest(one["data"]["featureType"]) == await rest_type(client, type_id)


async def test_feature_types_empty_registry(client: httpx.AsyncClient) -> None:
    body = await gql(client, LIST)
    assert body == {"data": {"featureTypes": []}}


async def test_update_feature_type_changes_only_given_fields(client: httpx.AsyncClient) -> None:
    await seed(client, description="Spectrum")
    before = await rest_type(client, "audio")
    body = await gql(
        client,
        UPDATE,
        {"id": "audio", "input": {"name": "Audio v2", "aggregationMethod": "MAX", "isActive": False}},
        ADMIN,
    )
    assert "errors" not in body, body
    updated = body["data"]["updateFeatureType"]
    assert updated["name"] == "Audio v2"
    assert updated["aggregationMethod"] == "MAX"
    assert updated["isActive"] is False
    assert updated["description"] == "Spectrum"  # left out: unchanged
    assert updated["dimension"] == before["dimension"]
    assert updated["distance"] == before["distance"].upper()
    assert updated["createdAt"] == before["created_at"]
    assert updated["updatedAt"] >= before["updated_at"]
    after = await rest_type(client, "audio")
    after.pop("stats")
    assert as_rest(updated) == after

    body = await gql(
        client,
        UPDATE,
        {"id": "audio", "input": {"description": None, "appliesTo": ["TRACK"], "isActive": True}},
        ADMIN,
    )
    assert "errors" not in body, body
    again = body["data"]["updateFeatureType"]
    assert again["description"] is None
    assert again["appliesTo"] == ["TRACK"]
    assert again["isActive"] is True
    assert again["name"] == "Audio v2"
    after = await rest_type(client, "audio")
    after.pop("stats")
    assert as_rest(again) == after


async def test_bump_version_counts_outdated_maps(client: httpx.AsyncClient) -> None:
    await seed(client)
    await ingest_rest(client, "audio", [("track", "t1"), ("track", "t2"), ("playlist", "p1")], 4)
    body = await gql(client, BUMP, {"id": "audio"}, ADMIN)
    assert "errors" not in body, body
    assert body["data"]["bumpFeatureTypeVersion"] == {
        "typeId": "audio",
        "previousVersion": 1,
        "newVersion": 2,
        "outdatedCount": 3,
    }
    assert (await rest_type(client, "audio"))["current_version"] == 2
    body = await gql(client, BUMP, {"id": "audio"}, ADMIN)
    assert body["data"]["bumpFeatureTypeVersion"]["newVersion"] == 3
    assert body["data"]["bumpFeatureTypeVersion"]["outdatedCount"] == 3
    one = await gql(client, ONE, {"id": "audio"})
    assert one["data"]["featureType"]["currentVersion"] == 3


# ------------------------------------------------------------------ errors leave state unchanged


async def expect_refused(
    client: httpx.AsyncClient,
    settings: Settings,
    query: str,
    variables: dict[str, Any],
    headers: dict[str, str] | None,
    code: str,
) -> dict[str, Any]:
    data_dir: Path = settings.data_dir
    before = dump_databases(data_dir)
    body = await gql(client, query, variables, headers)
    error = only_error(body)
    assert error["extensions"]["code"] == code, body
    assert error["message"], body
    assert dump_databases(data_dir) == before
    return error


@pytest.mark.parametrize("bad_id", ["Bad-Id", "1abc", "_x", "", "a" * 65, "has space", "ünïcode"])
async def test_register_invalid_id(client: httpx.AsyncClient, settings: Settings, bad_id: str) -> None:
    await seed(client)
    error = await expect_refused(
        client, settings, REGISTER, {"input": full_input(id=bad_id)}, ADMIN, "BAD_USER_INPUT"
    )
    assert error["extensions"].get("field") == "id"


@pytest.mark.parametrize("dimension", [0, -1, 4097, 1_000_000])
async def test_register_dimension_out_of_range(
    client: httpx.AsyncClient, settings: Settings, dimension: int
) -> None:
    await seed(client)
    error = await expect_refused(
        client, settings, REGISTER, {"input": full_input(dimension=dimension)}, ADMIN, "BAD_USER_INPUT"
    )
    assert error["extensions"].get("field") == "dimension"
    assert (await gql(client, ONE, {"id": "mood"}))["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_register_duplicate_id_conflict(client: httpx.AsyncClient, settings: Settings) -> None:
    await seed(client)
    before = await rest_type(client, "audio")
    await expect_refused(
        client,
        settings,
        REGISTER,
        {"input": full_input(id="audio", name="Other", dimension=16)},
        ADMIN,
        "CONFLICT",
    )
    assert await rest_type(client, "audio") == before


@pytest.mark.parametrize(
    "changes",
    [
        {"dimension": 8},
        {"dimension": 4},  # even the current value: dimension is not an updatable field
        {"distance": "EUCLIDEAN"},
        {"distance": "COSINE"},
        {"name": "Renamed", "dimension": 8},  # nothing of a refused update is applied
        {"name": "Renamed", "distance": "DOT_PRODUCT"},
    ],
)
async def test_update_immutable_fields_refused(
    client: httpx.AsyncClient, settings: Settings, changes: dict[str, Any]
) -> None:
    await seed(client)
    before = await rest_type(client, "audio")
    error = await expect_refused(
        client, settings, UPDATE, {"id": "audio", "input": changes}, ADMIN, "BAD_USER_INPUT"
    )
    assert error["extensions"].get("field") in ("dimension", "distance")
    assert await rest_type(client, "audio") == before


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (UPDATE, {"id": "nope", "input": {"name": "X"}}),
        (BUMP, {"id": "nope"}),
    ],
    ids=["update", "bump"],
)
async def test_unknown_type_not_found(
    client: httpx.AsyncClient, settings: Settings, query: str, variables: dict[str, Any]
) -> None:
    await seed(client)
    await expect_refused(client, settings, query, variables, ADMIN, "NOT_FOUND")


async def test_feature_type_query_unknown_not_found(client: httpx.AsyncClient) -> None:
    await seed(client)
    body = await gql(client, ONE, {"id": "nope"})
    assert error_code(body) == "NOT_FOUND"
    assert "nope" in only_error(body)["message"]


ADMIN_MUTATIONS = [
    (REGISTER, {"input": full_input()}),
    (UPDATE, {"id": "audio", "input": {"name": "Hijacked"}}),
    (BUMP, {"id": "audio"}),
]


@pytest.mark.parametrize(("query", "variables"), ADMIN_MUTATIONS, ids=["register", "update", "bump"])
@pytest.mark.parametrize(
    ("headers", "code"),
    [
        (None, "UNAUTHENTICATED"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "UNAUTHENTICATED"),
        ({"Authorization": "Bearer "}, "UNAUTHENTICATED"),
        ({"X-User-Id": "7"}, "UNAUTHENTICATED"),
        ({"Authorization": "Bearer wrong-token"}, "FORBIDDEN"),
        ({"Authorization": "Bearer test-admin-token-but-longer"}, "FORBIDDEN"),
    ],
    ids=["none", "basic", "empty-bearer", "user-only", "wrong", "prefix"],
)
async def test_mutations_need_admin_token(
    client: httpx.AsyncClient,
    settings: Settings,
    query: str,
    variables: dict[str, Any],
    headers: dict[str, str] | None,
    code: str,
) -> None:
    await seed(client)
    before = await rest_type(client, "audio")
    await expect_refused(client, settings, query, variables, headers, code)
    assert await rest_type(client, "audio") == before
    assert error_code(await gql(client, ONE, {"id": "mood"})) == "NOT_FOUND"


@pytest.mark.parametrize(
    "variables",
    [
        {"input": full_input(distance="MANHATTAN")},
        {"input": full_input(aggregationMethod="median")},
        {"input": full_input(dimension="abc")},
        {"input": full_input(dimension=2**40)},
        {"input": {"id": "mood", "name": "Mood"}},
        {},
    ],
    ids=[
        "bad-enum",
        "lowercase-enum",
        "dimension-string",
        "dimension-overflows-int",
        "no-dimension",
        "no-input",
    ],
)
async def test_variable_coercion_errors_are_bad_user_input(
    client: httpx.AsyncClient, settings: Settings, variables: dict[str, Any]
) -> None:
    """Invalid variables are the client's fault: BAD_USER_INPUT with the reason, not a masked 500."""
    await seed(client)
    error = await expect_refused(client, settings, REGISTER, variables, ADMIN, "BAD_USER_INPUT")
    assert error["message"].startswith("Variable '$input'"), error
