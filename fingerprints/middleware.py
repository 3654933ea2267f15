"""Pure ASGI middleware: request-body size limit and Prometheus request metrics."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fingerprints.errors import PayloadTooLarge


class BodyLimitMiddleware:
    """Refuse bodies above ``limit`` bytes: by Content-Length up front, else while streaming."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"request body is larger than {self.limit} bytes", field="body")
        declared = dict(scope["headers"]).get(b"content-length", b"")
        # Raised from inside the app (where it reads the body), so the app's exception handlers
        # answer it: 413 with a REST or a GraphQL error body.
        received = int(declared) if declared.isdigit() and int(declared) > self.limit else 0

        async def limited_receive() -> Message:
            nonlocal received
            if received > self.limit:
                raise too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise too_large
            return message

        await self.app(scope, limited_receive, send)


class MetricsMiddleware:
    """Count requests and time them per route template (not per raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, *, router: Router, registry: CollectorRegistry) -> None:
        self.app = app
        self.router = router
        self.requests = Counter(
            "fingerprints_http_requests",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "fingerprints_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            registry=registry,
        )

    def _route(self, scope: Scope) -> str:
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return getattr(route, "path", "other")
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = self._route(scope)
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.latency.labels(route).observe(time.perf_counter() - start)
