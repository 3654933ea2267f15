"""The similarity endpoints of spec §6.3."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from fingerprints.errors import ValidationError
from fingerprints.rest.responses import ORJSONResponse, read_json
from fingerprints.rest.routes import principal_of, services_of
from fingerprints.service import similarity
from fingerprints.service.base import call
from fingerprints.service.inputs import check_keys
from fingerprints.service.similarity import SimilarItem


def items_json(items: list[SimilarItem]) -> list[dict[str, Any]]:
    """Result items as in spec §6.3, plus ``entity_type`` and, under euclidean, ``distance``."""
    out = []
    for item in items:
        row: dict[str, Any] = {
            "entity_id": item.entity_id,
            "entity_type": item.entity_type.value,
            "score": item.score,
        }
        if item.distance is not None:
            row["distance"] = item.distance
        out.append(row)
    return out


def _number(raw: str | None, field: str, kind: type) -> Any:
    if raw is None:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise ValidationError(f"{field} must be a number (got {raw!r})", field=field) from None


async def similar_get(request: Request) -> ORJSONResponse:
    params = request.query_params
    entity_type, entity_id = request.path_params["entity_type"], request.path_params["entity_id"]
    result = await call(
        similarity.similar_to_entity,
        services_of(request),
        entity_type=entity_type,
        entity_id=entity_id,
        feature_type=params.get("feature_type"),
        limit=_number(params.get("limit"), "limit", int),
        min_score=_number(params.get("min_score"), "min_score", float),
        viewer=principal_of(request),
    )
    return ORJSONResponse(
        {
            "query": {
                "entity_type": entity_type,
                "entity_id": entity_id,
                "feature_type": params.get("feature_type"),
            },
            "results": items_json(result.results),
        }
    )


POST_KEYS = (
    "feature_type",
    "features",
    "target_entity_type",
    "query",
    "limit",
    "min_score",
    "exclude_ids",
    "include_query",
)


async def similar_post(request: Request) -> ORJSONResponse:
    body = await read_json(request)
    check_keys(body, POST_KEYS)
    result = await call(similarity.find_similar, services_of(request), **body, viewer=principal_of(request))
    echo = {k: body[k] for k in ("feature_type", "features") if k in body}
    return ORJSONResponse(
        {
            "query": {**echo, "target_entity_type": result.target_entity_type.value, **body.get("query", {})},
            "results": items_json(result.results),
        }
    )


BATCH_KEYS = (
    "feature_type",
    "features",
    "queries",
    "target_entity_type",
    "limit_per_query",
    "min_score",
    "exclude_ids",
    "deduplicate",
)


async def similar_batch(request: Request) -> ORJSONResponse:
    body = await read_json(request)
    check_keys(body, BATCH_KEYS)
    result = await call(
        similarity.find_similar_batch, services_of(request), **body, viewer=principal_of(request)
    )
    return ORJSONResponse(
        {
            "results": [
                {
                    "query": {"entity_type": ref.entity_type.value, "entity_id": ref.entity_id},
                    "results": items_json(items),
                }
                for ref, items in zip(result.queries, result.results, strict=True)
            ]
        }
    )


routes = [
    Route("/v1/content/similar/batch", similar_batch, methods=["POST"]),
    Route("/v1/content/similar/{entity_type}/{entity_id}", similar_get, methods=["GET"]),
    Route("/v1/content/similar", similar_post, methods=["POST"]),
]
