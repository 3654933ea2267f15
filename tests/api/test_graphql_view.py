"""The GraphQL view's short path for JSON POSTs (schema/view.py, schema/direct.py) answers
exactly as Strawberry's own path: every request below is sent twice, once as it comes and
once with the short path switched off, and the two responses must be the same (status,
content type, body). Requests the short path leaves alone are among them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import strawberry.schema.schema

from fingerprints.app import create_app
from fingerprints.config import Settings
from fingerprints.schema.view import GraphQLApp
from tests.helpers import ADMIN, running_client, seed

TRACK = """
query Track($id: ID!) {
  track(id: $id) { id name durationMs album { id name } artists { role artist { id } } }
}
"""
TWO_OPERATIONS = """
query First { featureTypes { id } }
query Second($id: ID!) { track(id: $id) { id name } }
"""
REGISTER = """
mutation Register($id: ID!) {
  registerFeatureType(input: {id: $id, name: "R", dimension: 2}) { id dimension }
}
"""
PLAYLIST = 'query { playlist(id: "p1") { id name } }'
JSON_UTF8 = {"Content-Type": "application/json; charset=utf-8"}

Body = dict[str, Any] | list[Any] | bytes

# (description, body, extra headers): a dict or list is sent as JSON, bytes as they are.
CASES: list[tuple[str, Body, dict[str, str]]] = [
    ("query with variables", {"query": TRACK, "variables": {"id": "t2"}}, {}),
    ("unknown entity: NOT_FOUND", {"query": TRACK, "variables": {"id": "nope"}}, {}),
    ("null variables", {"query": "{ featureTypes { id name } }", "variables": None}, {}),
    (
        "operationName: second",
        {"query": TWO_OPERATIONS, "operationName": "Second", "variables": {"id": "t1"}},
        {},
    ),
    ("operationName: first", {"query": TWO_OPERATIONS, "operationName": "First"}, {}),
    ("unknown operationName", {"query": TWO_OPERATIONS, "operationName": "Third"}, {}),
    ("no operationName, two operations", {"query": TWO_OPERATIONS, "variables": {"id": "t1"}}, {}),
    ("missing variable: BAD_USER_INPUT", {"query": TRACK, "variables": {}}, {}),
    ("wrong variable type", {"query": TRACK, "variables": {"id": {"x": 1}}}, {}),
    ("validation error", {"query": "{ track(id: 1) { nope } }"}, {}),
    ("syntax error", {"query": "{ track(id: 1) { id "}, {}),
    ("empty query", {"query": ""}, {}),
    ("no query", {"variables": {}}, {}),
    ("query not a string", {"query": 5}, {}),
    ("variables not an object", {"query": TRACK, "variables": [1]}, {}),
    ("extensions not an object", {"query": TRACK, "variables": {"id": "t1"}, "extensions": 3}, {}),
    ("operationName not a string", {"query": TRACK, "variables": {"id": "t1"}, "operationName": 3}, {}),
    ("a batch", [{"query": "{ featureTypes { id } }"}], {}),
    ("not JSON", b"{not json", {}),
    ("NaN, which json.loads reads", b'{"query": "{ featureTypes { id } }", "variables": {"x": NaN}}', {}),
    ("charset in the content type", {"query": TRACK, "variables": {"id": "t3"}}, JSON_UTF8),
    ("other content type", {"query": TRACK, "variables": {"id": "t3"}}, {"Content-Type": "text/plain"}),
    ("mutation without the admin token", {"query": REGISTER, "variables": {"id": "anon"}}, {}),
    ("subscription over POST", {"query": 'subscription { aggregationJob(id: "x") { id } }'}, {}),
    ("introspection", {"query": "{ __schema { queryType { name } } }"}, {}),
    ("private playlist, owner", {"query": PLAYLIST}, {"X-User-Id": "7"}),
    ("private playlist, someone else", {"query": PLAYLIST}, {"X-User-Id": "8"}),
]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_client(create_app(settings)) as c:
        await seed(c)
        yield c


async def _post(client: httpx.AsyncClient, body: Body, headers: dict[str, str]) -> httpx.Response:
    if isinstance(body, dict | list):
        return await client.post("/graphql", json=body, headers=headers)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()  # bytes as they are
    return await client.post(
        "/graphql", content=content, headers={"Content-Type": "application/json", **headers}
    )


def _same(fast: httpx.Response, general: httpx.Response) -> None:
    assert fast.status_code == general.status_code, (fast.text, general.text)
    assert fast.headers.get("content-type") == general.headers.get("content-type")
    assert fast.content == general.content


@pytest.mark.parametrize(("case", "body", "headers"), CASES, ids=[c[0] for c in CASES])
async def test_short_path_answers_as_strawberry(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, case: str, body: Body, headers: dict[str, str]
) -> None:
    fast = await _post(client, body, headers)
    with monkeypatch.context() as patch:

        async def general_only(self: GraphQLApp, request: Any) -> None:
            return None

        patch.setattr(GraphQLApp, "_post_json", general_only)
        general = await _post(client, body, headers)
    _same(fast, general)


async def test_mutation_answers_as_strawberry(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"query": REGISTER, "variables": {"id": "viafast"}}
    fast = await client.post("/graphql", json=body, headers=ADMIN)
    assert fast.json() == {"data": {"registerFeatureType": {"id": "viafast", "dimension": 2}}}
    again = await client.post("/graphql", json=body, headers=ADMIN)  # a CONFLICT now
    with monkeypatch.context() as patch:

        async def general_only(self: GraphQLApp, request: Any) -> None:
            return None

        patch.setattr(GraphQLApp, "_post_json", general_only)
        general = await client.post("/graphql", json=body, headers=ADMIN)
    _same(again, general)
    assert again.json()["errors"][0]["extensions"]["code"] == "CONFLICT"


async def test_common_requests_skip_strawberry_execute(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The short path is taken: a valid query never reaches ``Schema.execute``, while GET and
    a document that does not validate still do."""
    calls: list[str | None] = []
    execute = strawberry.schema.schema.Schema.execute

    async def counted(self: Any, query: str | None, *args: Any, **kwargs: Any) -> Any:
        calls.append(query)
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(strawberry.schema.schema.Schema, "execute", counted)
    for track_id in ("t1", "t2", "t3"):
        r = await client.post("/graphql", json={"query": TRACK, "variables": {"id": track_id}})
        assert r.json()["data"]["track"]["id"] == track_id
    assert calls == []
    r = await client.get("/graphql", params={"query": "{ featureTypes { id } }"})
    assert r.json() == {"data": {"featureTypes": [{"id": "audio"}]}}
    r = await client.post("/graphql", json={"query": "{ nope }"})
    assert r.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert calls == ["{ featureTypes { id } }", "{ nope }"]


async def test_fresh_context_per_request(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each request on the short path gets its own context (loaders) and its own principal."""
    contexts: list[Any] = []
    get_context = GraphQLApp.get_context

    async def recorded(self: GraphQLApp, request: Any, response: Any) -> Any:
        context = await get_context(self, request, response)
        contexts.append(context)
        return context

    monkeypatch.setattr(GraphQLApp, "get_context", recorded)
    query = 'query { playlist(id: "p1") { id } }'
    mine = await client.post("/graphql", json={"query": query}, headers={"X-User-Id": "7"})
    theirs = await client.post("/graphql", json={"query": query}, headers={"X-User-Id": "8"})
    assert mine.json() == {"data": {"playlist": {"id": "p1"}}}
    assert theirs.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert len(contexts) == 2
    assert contexts[0].loaders is not contexts[1].loaders
    assert (contexts[0].principal.user_id, contexts[1].principal.user_id) == (7, 8)
