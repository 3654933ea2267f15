"""Value completion for the executor (schema/execution.py): graphql-core's, shortened.

graphql-core completes a value through ``complete_value`` (non-null, list, leaf, abstract,
object: a call for each level), then for a list ``complete_list_value``,
``complete_iterable_value`` (with iterable and stream checks) and per item
``complete_list_item_value``, and for an object ``complete_object_value``. ``Completion``
keeps the semantics (values, errors and their paths, null propagation) and shortens the way:

- ``complete_value`` handles a non-null type without a second call for its inner type, an
  object type without ``is_type_of`` straight through ``collect_and_execute_subfields``, a
  leaf of a built-in scalar whose value is what the scalar returns for it (a ``str`` for
  ``String``/``ID``, an ``int`` in range for ``Int``, a finite ``float``, a ``bool``) as it
  is, and a Strawberry union's member by the value's type when that is what Strawberry's type
  resolver would pick (``plans.union_member``); interfaces and anything unusual go
  graphql-core's way.
- ``complete_list_value`` completes a plain ``list`` that is not streamed in one loop, its
  object items without the per-item calls.

None of this applies under incremental delivery (a ``position_context``) or when the schema
has the ``@stream`` directive.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from graphql import (
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLUnionType,
    Undefined,
)
from graphql.pyutils import Path, gather_with_cancel
from graphql.type import is_leaf_type
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from fingerprints.schema.plans import identity_type, union_member


class Completion(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Without the @stream directive in the schema no list is streamed (a document using
        # it would not validate): lists complete without asking about streams.
        self._streams = self.schema.get_directive("stream") is not None

    async def _await_completed(
        self, completed: Awaitable[Any], return_type: GraphQLOutputType, field_details_list: Any, path: Path
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:  # noqa: BLE001 - a field error, as in execute_field
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None

    def complete_value(
        self,
        return_type: GraphQLOutputType,
        field_details_list: Any,
        info: GraphQLResolveInfo,
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        """graphql-core's ``complete_value`` with one level of recursion less per non-null
        type, and objects without ``is_type_of`` completed directly."""
        if position_context is not None:
            return super().complete_value(
                return_type, field_details_list, info, path, result, position_context
            )
        if isinstance(result, Exception):
            raise result
        non_null = isinstance(return_type, GraphQLNonNull)
        inner = return_type.of_type if non_null else return_type  # type: ignore[union-attr]
        if result is None or result is Undefined:
            if non_null:
                raise TypeError(
                    f"Cannot return null for non-nullable field {info.parent_type}.{info.field_name}."
                )
            return None
        if isinstance(inner, GraphQLObjectType) and inner.is_type_of is None:
            return self.collect_and_execute_subfields(inner, field_details_list, path, result, None)
        if is_leaf_type(inner):
            exact, check = identity_type(inner)
            if type(result) is exact and (check is None or check(result)):
                return result  # what the scalar returns for it
            return self.complete_leaf_value(inner, result)
        if isinstance(inner, GraphQLUnionType):
            member = union_member(self.schema, inner, result)
            if member is not None:  # what Strawberry's type resolver would pick
                return self.collect_and_execute_subfields(member, field_details_list, path, result, None)
        if isinstance(inner, GraphQLList):
            completed = self.complete_list_value(inner, field_details_list, info, path, result, None)
        else:
            completed = super().complete_value(inner, field_details_list, info, path, result, None)
        if non_null and completed is None:
            raise TypeError(
                f"Cannot return null for non-nullable field {info.parent_type}.{info.field_name}."
            )
        return completed

    def complete_list_value(
        self,
        return_type: GraphQLList[Any],
        field_details_list: Any,
        info: GraphQLResolveInfo,
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        """graphql-core's ``complete_list_value`` for a plain ``list`` that is not streamed
        (no iterable checks), items of an object type completed in the loop (graphql-core's
        ``complete_list_item_value`` and ``complete_value`` would only lead there)."""
        if position_context is not None or self._streams or type(result) is not list:
            return super().complete_list_value(
                return_type, field_details_list, info, path, result, position_context
            )
        item_type = return_type.of_type
        inner = item_type.of_type if isinstance(item_type, GraphQLNonNull) else item_type
        plain_object = isinstance(inner, GraphQLObjectType) and inner.is_type_of is None
        is_awaitable = self.is_awaitable
        completed: list[Any] = []
        awaitable_indices: list[int] = []
        index = -1
        try:
            for index, item in enumerate(result):
                item_path = path.add_key(index, None)
                if is_awaitable(item):
                    completed.append(
                        self.complete_awaitable_list_item_value(
                            item, item_type, field_details_list, info, item_path, None
                        )
                    )
                    awaitable_indices.append(index)
                elif not plain_object or item is None or isinstance(item, Exception):
                    if self.complete_list_item_value(
                        item, completed, item_type, field_details_list, info, item_path, None
                    ):
                        awaitable_indices.append(index)
                else:
                    try:
                        value = self.collect_and_execute_subfields(
                            inner, field_details_list, item_path, item, None
                        )
                        if is_awaitable(value):
                            value = self._await_completed(value, item_type, field_details_list, item_path)
                            awaitable_indices.append(index)
                    except Exception as raw_error:  # noqa: BLE001 - as complete_list_item_value
                        self.handle_field_error(raw_error, item_type, field_details_list, item_path)
                        value = None
                    completed.append(value)
        except Exception:
            # As graphql-core: settle what earlier items started and the awaitable items left.
            pending = [completed[i] for i in awaitable_indices]
            pending.extend(item for item in result[index + 1 :] if is_awaitable(item))
            if pending:
                self.settle_in_background(pending)
            raise

        if not awaitable_indices:
            return completed

        async def get_completed() -> list[Any]:
            if len(awaitable_indices) == 1:
                completed[awaitable_indices[0]] = await completed[awaitable_indices[0]]
            else:
                awaited = await gather_with_cancel(*(completed[i] for i in awaitable_indices))
                for i, value in zip(awaitable_indices, awaited, strict=True):
                    completed[i] = value
            return completed

        return get_completed()

    def get_stream_usage(self, field_details_list: Any, path: Path) -> Any:
        return super().get_stream_usage(field_details_list, path) if self._streams else None
