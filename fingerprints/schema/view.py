"""The GraphQL endpoint: Strawberry's ASGI view with our context, an orjson encoder, and a
short path for the request nearly every client sends.

That request is a POST with an ``application/json`` body holding a query or mutation whose
text the schema has seen (and validated) before. Strawberry's view takes it through a request
adapter, content-type parsing with ``email.message``, ``json.loads``, and ``Schema.execute``
with its extension runner: about a quarter of a millisecond before and after the resolvers
run. The short path decodes the body with orjson, checks its members as the view does, takes
the document from the schema's cache (``Schema.prepare``) and executes it without the runner
(``Schema.execute_prepared``, same graphql-core call, same error codes). Anything else, an odd
body, a new or invalid document, a subscription, GET, the IDE, websockets, goes the way it
always went, through Strawberry, with the body already read.
"""

from __future__ import annotations

from typing import Any

import orjson
from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.types.graphql import OperationType

from fingerprints.schema import Schema
from fingerprints.schema.context import Context
from fingerprints.service.base import Services

POST_OPERATIONS = frozenset(OperationType.from_http("POST"))


def _is_json(content_type: str | None) -> bool:
    """``application/json``, with parameters or not: the media types Strawberry reads as JSON
    that are not worth its ``email.message`` parsing."""
    if content_type is None:
        return False
    return content_type.partition(";")[0].strip().lower() == "application/json"


class GraphQLApp(GraphQL):
    """Strawberry's ASGI view with our context and an orjson encoder that writes numpy arrays."""

    def __init__(self, schema: Schema, **kwargs: Any) -> None:
        super().__init__(schema, **kwargs)
        self.cached_schema = schema

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or self._stream_transport_map:
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        response = await self._post_json(request) if _is_json(request.headers.get("content-type")) else None
        if response is None:  # Strawberry's way (GraphQL.__call__), with this request: its body is read
            try:
                response = await self.run(request)
            except HTTPException as e:
                response = PlainTextResponse(e.reason, status_code=e.status_code)
        await response(scope, receive, send)

    async def _post_json(self, request: Request) -> Response | None:
        """The response to a JSON POST of a prepared query or mutation; None for any request
        the general path must answer (nothing has run then)."""
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return None  # json.loads may still read it (NaN...), or answers 400 as it always did
        if not isinstance(data, dict):
            return None  # a batch, or a body Strawberry refuses with its own message
        query, variables = data.get("query"), data.get("variables")
        operation_name, extensions = data.get("operationName"), data.get("extensions")
        if (
            not isinstance(query, str)
            or not isinstance(variables, dict | None)
            or not isinstance(operation_name, str | None)
            or not isinstance(extensions, dict | None)
        ):
            return None
        prepared = self.cached_schema.prepare(query, operation_name, POST_OPERATIONS)
        if prepared is None:
            return None
        root_value = await self.get_root_value(request)  # type: ignore[func-returns-value]
        sub_response = await self.get_sub_response(request)
        context = await self.get_context(request, response=sub_response)
        result = await self.cached_schema.execute_prepared(
            prepared,
            variable_values=variables,
            context_value=context,
            root_value=root_value,
            operation_extensions=extensions,
        )
        response_data = await self.process_result(request, result)
        if result.errors:
            self._handle_errors(result.errors, response_data)
        return self.create_response(response_data=response_data, sub_response=sub_response)

    async def get_context(self, request: Any, response: Any) -> Context:  # type: ignore[override]
        services: Services = request.app.state.services
        principal = services.authenticator.authenticate(request.headers)
        return Context(services=services, principal=principal, request=request, response=response)

    def encode_json(self, data: object) -> bytes:  # type: ignore[override]
        return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
