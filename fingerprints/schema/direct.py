"""Executing a cached, valid document without Strawberry's per-request extension machinery.

``strawberry.Schema.execute`` builds, for every request, an execution context, fresh instances
of the schema's extensions, a runner that enters four async context managers (operation,
parsing, validation, executing) around their hooks, and a middleware manager. For this
schema those hooks do two things only: ``CachedDocuments`` takes the document and its
validation errors from the ``DocumentCache``, and ``ErrorCodes`` gives every error its
``extensions.code``. A track page pays some 0.2 ms for that wrapping.

``prepare`` and ``execute_prepared`` do the same two things directly for the common request:
a document the cache holds with no validation error, and a query or mutation to run in it.
``prepare`` answers ``None`` for anything else (a syntax error, validation errors, an unknown
operation name, a subscription, an operation type the transport does not allow), before
anything has run: the caller then takes ``Schema.execute``, which answers those exactly as
before. Both paths execute with the same graphql-core call, executor class and arguments.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphql import DocumentNode, GraphQLError, OperationDefinitionNode
from strawberry.execution import optimized_is_awaitable
from strawberry.schema._graphql_core import GraphQLExecutionResult, execute
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from fingerprints.schema.errors import coded_error

if TYPE_CHECKING:
    from fingerprints.schema import Schema


def _operation(definitions: Iterable[Any], operation_name: str | None) -> OperationDefinitionNode | None:
    """The operation Strawberry runs: the named one, else the first (see
    ``strawberry.utils.operation.get_operation_type``)."""
    for definition in definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        if operation_name is None:
            return definition
        if definition.name is not None and definition.name.value == operation_name:
            return definition
    return None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A cached, valid document and the name of the operation to run in it."""

    document: DocumentNode
    operation_name: str | None
    fields: dict[Any, Any] | None  # shared by its executions (DocumentCache.Entry.fields)


def prepare(
    schema: Schema, query: str, operation_name: str | None, allowed_operation_types: Collection[OperationType]
) -> Prepared | None:
    """The cached document for ``query`` when it is valid and names a query or mutation that
    ``allowed_operation_types`` holds; None when the request needs the general path."""
    try:
        entry = schema.documents.entry(schema._schema, query)
    except GraphQLError:
        return None  # a syntax error or too many tokens: reported by the general path
    if entry.errors:
        return None
    document = entry.document
    operation = _operation(document.definitions, operation_name)
    if operation is None:
        return None
    operation_type = OperationType(operation.operation.value)
    if operation_type is OperationType.SUBSCRIPTION or operation_type not in allowed_operation_types:
        return None
    if operation_name is None and operation.name is not None:
        operation_name = operation.name.value  # as Strawberry: the first operation, by its name
    return Prepared(document, operation_name, entry.fields)


async def execute_prepared(
    schema: Schema,
    prepared: Prepared,
    *,
    variable_values: dict[str, Any] | None,
    context_value: Any,
    root_value: Any,
    operation_extensions: dict[str, Any] | None,
) -> ExecutionResult:
    """What ``schema.execute`` answers for the prepared operation: the same graphql-core call,
    then the errors processed and coded as the schema's ``ErrorCodes`` extension does."""
    try:
        result = execute(
            schema._schema,
            prepared.document,
            root_value=root_value,
            middleware=None,  # no extension hooks field resolution (checked by the schema)
            variable_values=variable_values,
            operation_name=prepared.operation_name,
            context_value=context_value,
            is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]  # as Strawberry passes it
            executor_class=schema.execution_context_class,
            operation_extensions=operation_extensions,
            shared_fields=prepared.fields,
        )
        if not isinstance(result, GraphQLExecutionResult):
            result = await result
        data, raised = result.data, result.errors
    except Exception as exc:  # noqa: BLE001 - as Schema.execute: the request fails, not the server
        error = exc if isinstance(exc, GraphQLError) else GraphQLError(str(exc), original_error=exc)
        data, raised = None, [error]
    if not raised:
        return ExecutionResult(data=data, errors=None, extensions={})
    schema._process_errors(list(raised))
    return ExecutionResult(data=data, errors=[coded_error(e) for e in raised], extensions={})
