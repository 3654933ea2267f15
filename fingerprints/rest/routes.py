"""The /v1 REST endpoints of spec §6 and design §5. Each handler: parse -> one service call -> JSON."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from fingerprints.auth import Principal, require_admin
from fingerprints.rest.ingest_body import decode_ingest_body
from fingerprints.rest.responses import (
    ORJSONResponse,
    feature_type_json,
    item_error_json,
    read_json,
)
from fingerprints.service import catalog, feature_types, fingerprints, ingest
from fingerprints.service.base import Services, call
from fingerprints.service.inputs import check_keys


def services_of(request: Request) -> Services:
    return request.app.state.services


def principal_of(request: Request) -> Principal:
    return services_of(request).authenticator.authenticate(request.headers)


async def _admin_body(request: Request, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Authorise an admin call, then read its JSON body (after auth: no work for strangers)."""
    require_admin(principal_of(request))
    if allowed is None:
        return {}
    body = await read_json(request)
    check_keys(body, allowed)
    return body


# ------------------------------------------------------------------ feature types (spec §6.1)


async def register_type(request: Request) -> ORJSONResponse:
    body = await _admin_body(
        request,
        ("id", "name", "description", "dimension", "applies_to", "aggregation_method", "distance"),
    )
    ft = await call(feature_types.register_feature_type, services_of(request), **body)
    return ORJSONResponse(feature_type_json(ft), status_code=201)


async def list_types(request: Request) -> ORJSONResponse:
    await _admin_body(request)
    types = await call(feature_types.list_feature_types, services_of(request))
    return ORJSONResponse({"types": [feature_type_json(ft, stats) for ft, stats in types]})


async def get_type(request: Request) -> ORJSONResponse:
    await _admin_body(request)
    ft, stats = await call(
        feature_types.feature_type_with_stats, services_of(request), type_id=request.path_params["type_id"]
    )
    return ORJSONResponse(feature_type_json(ft, stats))


async def update_type(request: Request) -> ORJSONResponse:
    require_admin(principal_of(request))
    body = await read_json(request)
    ft = await call(
        feature_types.update_feature_type,
        services_of(request),
        type_id=request.path_params["type_id"],
        changes=body,
    )
    return ORJSONResponse(feature_type_json(ft))


async def bump_version(request: Request) -> ORJSONResponse:
    await _admin_body(request)
    bump = await call(
        feature_types.bump_feature_type_version, services_of(request), type_id=request.path_params["type_id"]
    )
    return ORJSONResponse(
        {
            "type_id": bump.type_id,
            "previous_version": bump.previous_version,
            "new_version": bump.new_version,
            "outdated_count": bump.outdated_count,
        }
    )


# ------------------------------------------------------------------ feature data (spec §6.2)


async def ingest_features(request: Request) -> ORJSONResponse:
    require_admin(principal_of(request))
    # Decoding a batch takes as long as storing it: done in the same worker thread, after auth.
    result = await call(_ingest_body, services_of(request), await request.body())
    return ORJSONResponse(
        {"ingested": result.ingested, "errors": [item_error_json(e) for e in result.errors]}
    )


def _ingest_body(svc: Services, body: bytes) -> ingest.IngestResult:
    feature_type_id, version, features = decode_ingest_body(body)
    return ingest.ingest_feature_maps(
        svc, feature_type_id=feature_type_id, version=version, features=features
    )


async def delete_features(request: Request) -> ORJSONResponse:
    body = await _admin_body(request, ("feature_type_id", "entities"))
    result = await call(fingerprints.delete_feature_maps, services_of(request), **body)
    return ORJSONResponse({"deleted": result.deleted, "by_entity_type": result.by_entity_type})


# ------------------------------------------------------------------ content (spec §6.3)


async def get_fingerprint(request: Request) -> ORJSONResponse:
    raw_types = request.query_params.get("types")
    types = [t.strip() for t in raw_types.split(",") if t.strip()] if raw_types else None
    fp = await call(
        fingerprints.get_fingerprint,
        services_of(request),
        entity_type=request.path_params["entity_type"],
        entity_id=request.path_params["entity_id"],
        types=types,
        viewer=principal_of(request),
    )
    return ORJSONResponse(
        {
            "entity_type": fp.entity_type.value,
            "entity_id": fp.entity_id,
            "fingerprint": {
                m.feature_type_id: {
                    "version": m.version,
                    "vector": m.vector,
                    "computed_at": m.computed_at,
                    "metadata": m.metadata,
                    "outdated": fp.outdated(m),
                }
                for m in fp.feature_maps
            },
            "last_updated": fp.last_updated,
        }
    )


# ------------------------------------------------------------------ catalog admin (design §5)


async def upsert_catalog(request: Request) -> ORJSONResponse:
    body = await _admin_body(request, ("artists", "albums", "tracks"))
    result = await call(catalog.upsert_catalog, services_of(request), **body)
    return ORJSONResponse(
        {
            "upserted": {"artists": result.artists, "albums": result.albums, "tracks": result.tracks},
            "errors": [item_error_json(e) for e in result.errors],
        }
    )


async def upsert_playlist(request: Request) -> ORJSONResponse:
    body = await _admin_body(request, ("id", "user_id", "name", "track_ids"))
    result = await call(catalog.upsert_playlist, services_of(request), **body)
    return ORJSONResponse(
        {
            "id": result.id,
            "user_id": result.user_id,
            "track_count": result.track_count,
            "errors": [item_error_json(e) for e in result.errors],
        }
    )


async def delete_playlist(request: Request) -> ORJSONResponse:
    await _admin_body(request)
    playlist_id = request.path_params["playlist_id"]
    await call(catalog.delete_playlist, services_of(request), playlist_id=playlist_id)
    return ORJSONResponse({"id": playlist_id, "deleted": True})


routes = [
    Route("/v1/admin/fingerprints/types", register_type, methods=["POST"]),
    Route("/v1/admin/fingerprints/types", list_types, methods=["GET"]),
    Route("/v1/admin/fingerprints/types/{type_id}", get_type, methods=["GET"]),
    Route("/v1/admin/fingerprints/types/{type_id}", update_type, methods=["PUT"]),
    Route("/v1/admin/fingerprints/types/{type_id}/bump-version", bump_version, methods=["POST"]),
    Route("/v1/admin/fingerprints/ingest", ingest_features, methods=["POST"]),
    Route("/v1/admin/fingerprints/features", delete_features, methods=["DELETE"]),
    Route("/v1/content/fingerprint/{entity_type}/{entity_id}", get_fingerprint, methods=["GET"]),
    Route("/v1/admin/catalog", upsert_catalog, methods=["POST"]),
    Route("/v1/admin/playlists", upsert_playlist, methods=["POST"]),
    Route("/v1/admin/playlists/{playlist_id}", delete_playlist, methods=["DELETE"]),
]
