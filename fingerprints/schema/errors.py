"""One place that turns exceptions into GraphQL errors with ``extensions.code``.

Domain errors keep their message and get their code; validation and coercion failures get
``BAD_USER_INPUT`` / ``GRAPHQL_VALIDATION_FAILED``; anything unexpected is logged and masked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from fingerprints.errors import DomainError

log = logging.getLogger(__name__)


def _with_code(error: GraphQLError, message: str, extensions: dict[str, object]) -> GraphQLError:
    return GraphQLError(
        message=message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=extensions,
    )


def coded_error(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    if isinstance(original, DomainError):
        extensions: dict[str, object] = {"code": original.code}
        if original.field:
            extensions["field"] = original.field
        return _with_code(error, original.message, extensions)
    if not error.path:
        # Not raised by a resolver: the request itself is wrong (syntax, validation, limits,
        # variable coercion). Its message is meant for the client.
        if error.extensions and "code" in error.extensions:
            return error
        code = "BAD_USER_INPUT" if error.message.startswith("Variable") else "GRAPHQL_VALIDATION_FAILED"
        return _with_code(error, error.message, {"code": code})
    log.error("unexpected error in GraphQL resolver", exc_info=original)
    return _with_code(error, "Unexpected error.", {"code": "INTERNAL_SERVER_ERROR"})


class ErrorCodes(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is not None and errors:
            result.errors = [coded_error(e) for e in errors]
