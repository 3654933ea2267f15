"""Each distinct GraphQL document is parsed and validated once (schema/documents.py): later
requests with the same text reuse the document and its validation outcome, limits included."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from graphql import GraphQLError, build_schema, specified_rules

from fingerprints.schema import documents
from fingerprints.schema.documents import DocumentCache
from tests.api.conftest import CustomClient
from tests.api.test_graphql_security import STATS, gql, refused


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many times the cache parses and validates."""
    counts = {"parse": 0, "validate": 0}
    parse, validate = documents.parse, documents.validate_document

    def counted_parse(*args: Any, **kwargs: Any) -> Any:
        counts["parse"] += 1
        return parse(*args, **kwargs)

    def counted_validate(*args: Any, **kwargs: Any) -> Any:
        counts["validate"] += 1
        return validate(*args, **kwargs)

    monkeypatch.setattr(documents, "parse", counted_parse)
    monkeypatch.setattr(documents, "validate_document", counted_validate)
    return counts


async def test_same_text_is_parsed_and_validated_once(
    client: httpx.AsyncClient, counted: dict[str, int]
) -> None:
    query = "query($id: ID!) { featureType(id: $id) { id } }"
    for type_id in ("a", "b", "c"):
        body = await gql(client, query, {"id": type_id})
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND", body  # executed each time
    assert counted == {"parse": 1, "validate": 1}
    await gql(client, "{ featureTypes { id } }")
    assert counted == {"parse": 2, "validate": 2}


async def test_a_refused_document_stays_refused(custom_client: CustomClient, counted: dict[str, int]) -> None:
    async with custom_client(graphql_max_depth=1) as (c, _):
        for _ in range(2):
            error = refused(await gql(c, STATS), "depth")
            assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED", error
    assert counted == {"parse": 1, "validate": 1}


async def test_syntax_errors_are_reported_and_not_kept(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        error = refused(await gql(client, "{ featureTypes { id "), "syntax")
        assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED", error


async def test_token_limit_applies_to_cached_parsing(custom_client: CustomClient) -> None:
    async with custom_client(graphql_max_tokens=10) as (c, _):
        assert "errors" not in await gql(c, "{ featureTypes { id } }")  # 5 tokens
        long = "{ featureTypes { id name dimension currentVersion isActive createdAt } }"  # 11
        for _ in range(2):
            refused(await gql(c, long), "token")


def test_cache_is_bounded() -> None:
    schema = build_schema("type Query { a: Int, b: Int }")
    cache = DocumentCache([], max_tokens=100, maxsize=2)
    first, errors = cache.get(schema, "{ a }")
    assert errors == []
    assert cache.get(schema, "{ a }")[0] is first
    cache.get(schema, "{ b }")
    cache.get(schema, "{ a b }")  # evicts "{ a }", the least recently used
    assert cache.get(schema, "{ a }")[0] is not first
    assert cache.rules == (*specified_rules,)
    with pytest.raises(GraphQLError):
        cache.get(schema, "{ a ")
