"""The GraphQL executor: graphql-core's, with plain leaf fields resolved in one step.

Most fields of a response are plain leaves: an id, a name, a score, read straight off the
object (a Strawberry field without a resolver) and coerced by their scalar. graphql-core runs
each one through its general path: a resolve-info record of fifteen members, Strawberry's
resolver wrapper, an awaitable check and a recursive completion (non-null, list, leaf...),
which together cost several times the read itself; a 20-item track page has some 200 of them.

``Executor.execute_fields`` (graphql-core's, one object's fields) takes a shorter path for such
a field when the query passes it no arguments and no extension hooks field resolution: read
the attribute, refuse a null for a non-null field, coerce the value with the field's scalar or
enum, all in place (no path record, no resolve info, no resolver call). The value and the
errors are the ones the general path gives (same messages, same ``handle_field_error``);
anything else, an awaitable value included, goes the general way (``execute_field``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import GraphQLField, GraphQLLeafType, GraphQLObjectType, Undefined
from graphql.pyutils import Path, gather_with_cancel
from graphql.type import GraphQLNonNull, is_leaf_type
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

# (python attribute, getter, leaf type, non-null) of a plain leaf field; None: not one.
Plan = tuple[str, Callable[[Any, str], Any], GraphQLLeafType, bool]
# By the field's resolver: Strawberry makes one per field and schema (GraphQLField is unhashable).
# A plain dict (a weak one costs more per lookup than the rest of the short path): it grows
# with the number of schemas built, one in a server.
_PLANS: dict[Callable[..., Any], Plan | None] = {}


def plain_leaf(field: GraphQLField) -> Plan | None:
    """How to read ``field`` in one step, if it is a Strawberry field without a resolver, without
    arguments, of a scalar or enum type."""
    resolve = field.resolve
    if resolve is None:
        return None
    try:
        return _PLANS[resolve]
    except KeyError:
        pass
    plan: Plan | None = None
    definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    field_type = field.type
    non_null = isinstance(field_type, GraphQLNonNull)
    leaf = field_type.of_type if isinstance(field_type, GraphQLNonNull) else field_type
    if (
        getattr(resolve, "_is_default", False)  # Strawberry's resolver of a field without one
        and definition is not None
        and definition.is_basic_field  # no field extensions (permission classes...) to run
        and not field.args
        and is_leaf_type(leaf)
    ):
        plan = (definition.python_name, definition.default_resolver, leaf, non_null)
    _PLANS[resolve] = plan
    return plan


class Executor(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        # A schema extension with a ``resolve`` hook must see every field: no short path then.
        self._short = not (manager is not None and manager.middlewares)

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        """graphql-core's ``execute_fields`` (fields of one object, concurrently), with plain
        leaves read in place: no path record, no ``execute_field`` call for them."""
        if not self._short:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        fields = parent_type.fields
        try:
            for response_name, field_details_list in grouped_field_set.items():
                node = field_details_list[0].node
                field = fields.get(node.name.value)
                plan = plain_leaf(field) if field is not None and not node.arguments else None
                if plan is not None:
                    assert field is not None
                    value = self._leaf(plan, field, parent_type, source_value, field_details_list)
                    if value is not GENERAL:
                        if isinstance(value, _Failed):
                            self.handle_field_error(
                                value.error,
                                field.type,
                                field_details_list,
                                Path(path, response_name, parent_type.name),
                            )
                            value = None
                        results[response_name] = value
                        continue
                result = self.execute_field(
                    parent_type,
                    source_value,
                    field_details_list,
                    Path(path, response_name, parent_type.name),
                    position_context,
                )
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:
                # Settle the awaitables other fields created: they may fail too.
                self.settle_in_background([results[name] for name in awaitable_fields])
            raise

        if not awaitable_fields:
            return results

        async def get_results() -> dict[str, Any]:
            if len(awaitable_fields) == 1:
                name = awaitable_fields[0]
                results[name] = await results[name]
            else:
                awaited = await gather_with_cancel(*(results[name] for name in awaitable_fields))
                results.update(zip(awaitable_fields, awaited, strict=True))
            return results

        return get_results()

    def _leaf(
        self,
        plan: Plan,
        field: GraphQLField,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
    ) -> Any:
        """The completed value of a plain leaf field; ``GENERAL`` when the general path must
        take it (an awaitable value), a ``_Failed`` when it raised (a field error)."""
        name, getter, leaf, non_null = plan
        try:
            value = getter(source, name)
            if self.is_awaitable(value):
                return GENERAL
            if isinstance(value, Exception):
                raise value
            if value is None or value is Undefined:
                if non_null:
                    field_name = field_details_list[0].node.name.value
                    raise TypeError(
                        f"Cannot return null for non-nullable field {parent_type.name}.{field_name}."
                    )
                return None
            return self.complete_leaf_value(leaf, value)
        except Exception as raw_error:  # noqa: BLE001 - located and recorded by the caller
            return _Failed(raw_error)


GENERAL = object()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error
