"""JSON in and out of the REST shims: orjson responses, bounded body reads, error bodies."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fingerprints.domain import FeatureType, FeatureTypeStats, ItemError
from fingerprints.errors import DomainError, ValidationError


class ORJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_body(exc: DomainError) -> dict[str, Any]:
    return {"error": {"code": exc.code, "message": exc.message, "field": exc.field}}


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (its size is bounded by ``BodyLimitMiddleware``)."""
    return parse_json_object(await request.body())


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object, or a ``ValidationError`` naming the body."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"request body is not valid JSON: {exc}", field="body") from None
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object", field="body")
    return body


def feature_type_json(ft: FeatureType, stats: FeatureTypeStats | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": ft.id,
        "name": ft.name,
        "description": ft.description,
        "dimension": ft.dimension,
        "current_version": ft.current_version,
        "applies_to": [e.value for e in ft.applies_to],
        "aggregation_method": ft.aggregation_method.value,
        "distance": ft.distance.value,
        "is_active": ft.is_active,
        "created_at": ft.created_at,
        "updated_at": ft.updated_at,
    }
    if stats is not None:
        body["stats"] = {
            "track_count": stats.track_count,
            "album_count": stats.album_count,
            "artist_count": stats.artist_count,
            "playlist_count": stats.playlist_count,
            "coverage_percent": stats.coverage_percent,
        }
    return body


def item_error_json(error: ItemError) -> dict[str, Any]:
    return {
        "index": error.index,
        "entity_type": error.entity_type,
        "entity_id": error.entity_id,
        "code": error.code,
        "message": error.message,
        **error.extra,
    }
