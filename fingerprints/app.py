"""The Starlette application: GraphQL at /graphql, REST under /v1, health and metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from fingerprints.config import Settings
from fingerprints.errors import DomainError
from fingerprints.middleware import BodyLimitMiddleware, MetricsMiddleware
from fingerprints.rest import aggregation as rest_aggregation
from fingerprints.rest import routes as rest_routes
from fingerprints.rest import similarity as rest_similarity
from fingerprints.rest.responses import ORJSONResponse, error_body
from fingerprints.schema import build_schema
from fingerprints.schema.view import GraphQLApp
from fingerprints.service import indexing
from fingerprints.service.base import Services, call, open_services
from fingerprints.service.scheduler import Scheduler

log = logging.getLogger(__name__)


def _is_graphql(request: Request) -> bool:
    return request.url.path.rstrip("/") == "/graphql"


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    if _is_graphql(request):
        body: dict[str, Any] = {"errors": [{"message": exc.message, "extensions": {"code": exc.code}}]}
        return ORJSONResponse(body, status_code=exc.status)
    return ORJSONResponse(error_body(exc), status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
    return ORJSONResponse(
        {"error": {"code": code, "message": exc.detail, "field": None}},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return ORJSONResponse(
        {"error": {"code": "INTERNAL_SERVER_ERROR", "message": "Unexpected error.", "field": None}},
        status_code=500,
    )


async def healthz(request: Request) -> Response:
    return ORJSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return ORJSONResponse({"status": "starting"}, status_code=503)

    def ping() -> None:
        for db in (services.dbs.catalog, services.dbs.user):
            with db.read() as conn:
                conn.execute(text("SELECT 1"))

    try:
        await call(ping)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return ORJSONResponse({"status": "unavailable", "database": str(exc)}, status_code=503)
    return ORJSONResponse({"status": "ready", "database": "ok", "index": indexing.index_status(services)})


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the application; databases open in the lifespan, never at import or here."""
    settings = settings or Settings()
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = await call(open_services, settings)
        await call(indexing.start, services)
        services.scheduler = Scheduler(services)
        services.scheduler.start()
        app.state.services = services
        try:
            yield
        finally:
            del app.state.services
            await services.scheduler.stop()
            await call(indexing.stop, services)
            services.dbs.dispose()

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    graphql = GraphQLApp(build_schema(settings), graphql_ide="graphiql" if settings.graphiql else None)
    routes = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        *rest_routes.routes,
        *rest_similarity.routes,
        *rest_aggregation.routes,
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            DomainError: _domain_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.user_middleware = [
        Middleware(MetricsMiddleware, router=app.router, registry=registry),
        Middleware(BodyLimitMiddleware, limit=settings.max_body_bytes),
    ]
    return app
