"""The GraphQL executor: graphql-core's, with plain leaf fields resolved in one step.

Most fields of a response are plain leaves: an id, a name, a score, read straight off the
object (a Strawberry field without a resolver) and coerced by their scalar. graphql-core runs
each one through its general path: a resolve-info record of fifteen members, Strawberry's
resolver wrapper, an awaitable check and a recursive completion (non-null, list, leaf...),
which together cost several times the read itself; a 20-item track page has some 200 of them.

``Executor.execute_field`` takes a shorter path for such a field when the query passes it no
arguments and no extension hooks field resolution: read the attribute, refuse a null for a
non-null field, coerce the value with the field's scalar or enum. The value and the errors are
the ones the general path gives (same messages, same ``handle_field_error``); anything else,
an awaitable value included, goes the general way.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from graphql import GraphQLField, GraphQLLeafType, GraphQLObjectType, Undefined
from graphql.type import GraphQLNonNull, is_leaf_type
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

# (python attribute, getter, leaf type, non-null) of a plain leaf field; None: not one.
Plan = tuple[str, Callable[[Any, str], Any], GraphQLLeafType, bool]
# By the field's resolver: Strawberry makes one per field and schema (GraphQLField is unhashable).
_PLANS: weakref.WeakKeyDictionary[Callable[..., Any], Plan | None] = weakref.WeakKeyDictionary()


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

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Any,
        position_context: Any,
    ) -> Any:
        node = field_details_list[0].node
        field = parent_type.fields.get(node.name.value) if self._short else None
        plan = plain_leaf(field) if field is not None and not node.arguments else None
        if plan is None:
            return super().execute_field(parent_type, source, field_details_list, path, position_context)
        assert field is not None
        name, getter, leaf, non_null = plan
        try:
            value = getter(source, name)
            if self.is_awaitable(value):
                return super().execute_field(parent_type, source, field_details_list, path, position_context)
            if isinstance(value, Exception):
                raise value
            if value is None or value is Undefined:
                if non_null:
                    raise TypeError(
                        f"Cannot return null for non-nullable field {parent_type.name}.{node.name.value}."
                    )
                return None
            return self.complete_leaf_value(leaf, value)
        except Exception as raw_error:  # noqa: BLE001 - located and recorded as the general path does
            self.handle_field_error(raw_error, field.type, field_details_list, path)
            return None
