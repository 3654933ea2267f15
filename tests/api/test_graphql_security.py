"""GraphQL hardening: depth / alias / token limits, no mutations over GET, introspection and
GraphiQL switches, and masking of unexpected resolver errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import fingerprints.service.feature_types
from fingerprints.config import Settings
from tests.api.conftest import CustomClient
from tests.helpers import ADMIN, dump_databases, seed

INTROSPECT_DEEP = "{ __schema { types { fields { type { name } } } } }"
INTROSPECT_SMALL = "{ __schema { queryType { name } } }"
STATS = "{ featureTypes { id stats { trackCount } } }"  # featureTypes > stats > trackCount
REGISTER_LITERAL = (
    'mutation { registerFeatureType(input: {id: "viaget", name: "Via GET", dimension: 2}) { id } }'
)


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


def refused(body: dict[str, Any], fragment: str) -> dict[str, Any]:
    """A request refused before execution: errors, no data."""
    assert body.get("data") is None, body
    assert body["errors"], body
    assert any(fragment.lower() in e["message"].lower() for e in body["errors"]), body
    return body["errors"][0]


# ------------------------------------------------------------------ query limits


async def test_depth_limit_rejects_deeper_query(custom_client: CustomClient) -> None:
    async with custom_client(graphql_max_depth=1) as (c, _):
        refused(await gql(c, STATS), "depth")
        # Within the limit: served.
        assert (await gql(c, "{ featureTypes { id name } }")) == {"data": {"featureTypes": []}}


async def test_depth_limit_default_allows_real_queries(client: httpx.AsyncClient) -> None:
    await seed(client)
    body = await gql(client, STATS)
    assert body == {"data": {"featureTypes": [{"id": "audio", "stats": {"trackCount": 0}}]}}


async def test_deep_introspection_is_bounded_by_tokens_not_depth(custom_client: CustomClient) -> None:
    """The depth limit skips introspection fields (as Strawberry's does, so GraphiQL's own
    introspection query works); a deep introspection query is bounded by the token limit,
    and introspection can be switched off altogether."""
    async with custom_client(graphql_max_depth=2) as (c, _):
        assert "__schema" in (await gql(c, INTROSPECT_DEEP))["data"]
    async with custom_client(graphql_max_depth=2, graphql_max_tokens=12) as (c, _):
        refused(await gql(c, INTROSPECT_DEEP), "token")


async def test_alias_limit(custom_client: CustomClient) -> None:
    async with custom_client(graphql_max_aliases=2) as (c, _):
        three = "{ a: featureTypes { id } b: featureTypes { id } c: featureTypes { id } }"
        refused(await gql(c, three), "alias")
        two = "{ a: featureTypes { id } b: featureTypes { id } }"
        assert await gql(c, two) == {"data": {"a": [], "b": []}}


async def test_alias_limit_applies_to_mutations(custom_client: CustomClient) -> None:
    async with custom_client(graphql_max_aliases=2) as (c, settings):
        before = dump_databases(settings)
        mutation = (
            "mutation {"
            + "".join(
                f' m{i}: registerFeatureType(input: {{id: "t{i}", name: "T", dimension: 2}}) {{ id }}'
                for i in range(3)
            )
            + " }"
        )
        refused(await gql(c, mutation, headers=ADMIN), "alias")
        assert dump_databases(settings) == before


async def test_token_limit(custom_client: CustomClient) -> None:
    async with custom_client(graphql_max_tokens=10) as (c, _):
        # 5 tokens: { featureTypes { id } }
        assert await gql(c, "{ featureTypes { id } }") == {"data": {"featureTypes": []}}
        long = "{ featureTypes { id name description dimension currentVersion isActive createdAt } }"
        refused(await gql(c, long), "token")


# ------------------------------------------------------------------ transport rules


@pytest.mark.parametrize(
    "query",
    [REGISTER_LITERAL, 'mutation Bump { bumpFeatureTypeVersion(id: "audio") { newVersion } }'],
    ids=["register", "bump"],
)
async def test_mutation_over_get_refused(client: httpx.AsyncClient, settings: Settings, query: str) -> None:
    await seed(client)
    before = dump_databases(settings)
    r = await client.get("/graphql", params={"query": query}, headers=ADMIN)
    assert r.status_code != 200, r.text
    assert 400 <= r.status_code < 500, r.text
    assert dump_databases(settings) == before
    r = await client.get("/v1/admin/fingerprints/types/audio", headers=ADMIN)
    assert r.json()["current_version"] == 1
    r = await client.get("/v1/admin/fingerprints/types/viaget", headers=ADMIN)
    assert r.status_code == 404


async def test_query_over_get_allowed(client: httpx.AsyncClient) -> None:
    await seed(client)
    r = await client.get("/graphql", params={"query": "{ featureTypes { id } }"})
    assert r.status_code == 200, r.text
    assert r.json() == {"data": {"featureTypes": [{"id": "audio"}]}}


# ------------------------------------------------------------------ introspection and GraphiQL


async def test_introspection_enabled_by_default(client: httpx.AsyncClient) -> None:
    body = await gql(client, INTROSPECT_SMALL)
    assert body == {"data": {"__schema": {"queryType": {"name": "Query"}}}}
    body = await gql(client, '{ __type(name: "FeatureType") { name } }')
    assert body == {"data": {"__type": {"name": "FeatureType"}}}


async def test_introspection_disabled(custom_client: CustomClient) -> None:
    async with custom_client(introspection=False) as (c, _):
        error = refused(await gql(c, INTROSPECT_SMALL), "introspection")
        assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        refused(await gql(c, '{ __type(name: "FeatureType") { name } }'), "introspection")
        # Ordinary queries still work.
        assert await gql(c, "{ featureTypes { id } }") == {"data": {"featureTypes": []}}


async def test_graphiql_served_by_default(client: httpx.AsyncClient) -> None:
    r = await client.get("/graphql", headers={"Accept": "text/html"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "graphiql" in r.text.lower()


async def test_graphiql_not_served_when_disabled(custom_client: CustomClient) -> None:
    async with custom_client(graphiql=False) as (c, _):
        r = await c.get("/graphql", headers={"Accept": "text/html"})
        assert r.status_code != 200
        assert "graphiql" not in r.text.lower()
        # The API itself still answers.
        assert await gql(c, "{ featureTypes { id } }") == {"data": {"featureTypes": []}}


# ------------------------------------------------------------------ error masking


async def test_unexpected_resolver_error_is_masked(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail")

    # The resolver calls through the module attribute (queries.feature_types.list_feature_types).
    monkeypatch.setattr(fingerprints.service.feature_types, "list_feature_types", boom)
    r = await client.post("/graphql", json={"query": "{ featureTypes { id } }", "variables": {}})
    assert r.status_code == 200, r.text
    assert "secret detail" not in r.text
    assert "RuntimeError" not in r.text
    body = r.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
    assert "secret detail" not in error["message"]
    assert error["path"] == ["featureTypes"]
    # The detail is logged server-side instead.
    assert any("secret detail" in repr(rec.exc_info) for rec in caplog.records if rec.exc_info)
