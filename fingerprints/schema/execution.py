"""The GraphQL executor: graphql-core's, with the fields of each object resolved by plan.

A 20-item track page has some 90 objects and 300 fields. graphql-core takes each field
through its general path: ``execute_field`` (a resolve-info record, Strawberry's resolver
chain, an awaitable check), then ``complete_value`` (non-null, list, leaf, abstract, object,
each a call), then per object ``complete_object_value``, ``collect_and_execute_subfields``
and the incremental executor's ``execute_collected_subfields`` before ``execute_fields``.

``Executor`` keeps that structure and its semantics (values, errors, paths, null
propagation) and shortens it where nothing can observe the difference:

- ``execute_fields`` resolves each field by its ``FieldPlan`` (schema/plans.py): a plain leaf
  is read and coerced in place (no path, no resolve info, no call); a plain attribute or a
  resolver without extensions is read or called directly, then completed as graphql-core
  completes it; any other field goes through ``execute_field``.
- ``complete_list_value`` completes a plain list's object items in its loop;
- ``complete_value`` handles non-null, leaf, list and object types without the extra level
  of recursion per non-null wrapper, and objects without ``is_type_of`` without
  ``complete_object_value``; a Strawberry union's member is picked by the value's type when
  that is what Strawberry's type resolver would do (``plans.union_member``); interfaces and
  anything unusual take graphql-core's way.
- Leaves of the built-in scalars whose value already is what the scalar would return (a
  ``str`` for ``String``/``ID``, an ``int`` in range for ``Int``, a finite ``float``) are
  returned as they are: that is what their ``serialize`` returns for them.

None of this applies when a schema extension hooks field resolution (a middleware must see
every field) or when incremental delivery (``@defer``/``@stream``) is in play.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from graphql import (
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLUnionType,
    Undefined,
)
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path, gather_with_cancel
from graphql.type import is_leaf_type
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from fingerprints.schema.plans import (
    ATTRIBUTE,
    LEAF,
    RESOLVER,
    FieldPlan,
    identity_type,
    plan_of,
    union_member,
)

_STEP_GENERAL, _STEP_LEAF, _STEP_PLANNED = 0, 1, 2
# (response name, its field details, the field, its plan, which step)
Step = tuple[str, Any, GraphQLField, FieldPlan, int]


class Executor(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, shared_fields: dict[Any, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Each object's collected fields and steps, shared by every execution of the document
        # (see documents.Entry.fields); None: collected per execution, as graphql-core does.
        self._shared = shared_fields
        manager = self.middleware_manager
        # A schema extension with a ``resolve`` hook must see every field: no short path then.
        self._short = not (manager is not None and manager.middlewares)
        # Without the @stream directive in the schema no list is streamed (a document using
        # it would not validate): lists complete without asking about streams.
        self._streams = self.schema.get_directive("stream") is not None
        self._argument_cache: dict[int, dict[str, Any]] = {}
        self._step_cache: dict[tuple[GraphQLObjectType, int], tuple[Any, list[Step]]] = {}

    # ------------------------------------------------------------------ fields of an object

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        """graphql-core's ``execute_fields`` (the fields of one object, concurrently), each
        field resolved by its plan."""
        if not self._short or position_context is not None:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        return self._execute_steps(
            parent_type, source_value, path, self._steps(parent_type, grouped_field_set)
        )

    def _execute_steps(
        self, parent_type: GraphQLObjectType, source_value: Any, path: Path | None, steps: list[Step]
    ) -> Any:
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        try:
            for response_name, field_details_list, field, plan, step in steps:
                if step == _STEP_LEAF:
                    try:
                        value = plan.getter(source_value, plan.name)  # type: ignore[misc]
                    except Exception as raw_error:  # noqa: BLE001 - a field error, recorded below
                        value = _Failed(raw_error)
                    if type(value) is plan.exact and (plan.check is None or plan.check(value)):
                        results[response_name] = value  # what the scalar returns for it
                        continue
                    result = self._leaf(plan, parent_type, value, field_details_list)
                    if isinstance(result, _Failed):
                        self.handle_field_error(
                            result.error,
                            field.type,
                            field_details_list,
                            Path(path, response_name, parent_type.name),
                        )
                        result = None
                    elif result is not _GENERAL:
                        results[response_name] = result
                        continue
                    else:
                        result = self.execute_field(
                            parent_type,
                            source_value,
                            field_details_list,
                            Path(path, response_name, parent_type.name),
                            None,
                        )
                elif step == _STEP_PLANNED:
                    result = self._execute_planned(
                        plan,
                        field,
                        parent_type,
                        source_value,
                        field_details_list,
                        Path(path, response_name, parent_type.name),
                    )
                else:
                    result = self.execute_field(
                        parent_type,
                        source_value,
                        field_details_list,
                        Path(path, response_name, parent_type.name),
                        None,
                    )
                    if result is Undefined:
                        continue
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

    def _steps(self, parent_type: GraphQLObjectType, grouped_field_set: Any) -> list[Step]:
        """How to resolve each field of a grouped field set, worked out once per request
        (the 20 items of a list share theirs)."""
        key = (parent_type, id(grouped_field_set))
        cached = self._step_cache.get(key)
        if cached is not None:
            return cached[1]
        steps = self._make_steps(parent_type, grouped_field_set)
        # The set is kept with its steps, so that its id cannot be reused during the request.
        self._step_cache[key] = (grouped_field_set, steps)
        return steps

    def _make_steps(self, parent_type: GraphQLObjectType, grouped_field_set: Any) -> list[Step]:
        steps: list[Step] = []
        fields = parent_type.fields
        for response_name, field_details_list in grouped_field_set.items():
            node = field_details_list[0].node
            field = fields.get(node.name.value)
            plan = plan_of(self.schema, field) if field is not None else None
            if plan is None or (plan.kind != RESOLVER and node.arguments):
                step = _STEP_GENERAL
            else:
                step = _STEP_LEAF if plan.kind == LEAF else _STEP_PLANNED
            steps.append((response_name, field_details_list, field, plan, step))  # type: ignore[arg-type]
        return steps

    def _leaf(
        self, plan: FieldPlan, parent_type: GraphQLObjectType, value: Any, field_details_list: Any
    ) -> Any:
        """The completed value of a plain leaf field whose attribute read gave ``value``;
        ``_GENERAL`` when the general path must take it (an awaitable), a ``_Failed`` when it
        is a field error."""
        if isinstance(value, _Failed):
            return value
        try:
            assert plan.leaf is not None
            if self.is_awaitable(value):
                return _GENERAL
            if isinstance(value, Exception):
                raise value
            if value is None or value is Undefined:
                if plan.non_null:
                    field_name = field_details_list[0].node.name.value
                    raise TypeError(
                        f"Cannot return null for non-nullable field {parent_type.name}.{field_name}."
                    )
                return None
            return self.complete_leaf_value(plan.leaf, value)
        except Exception as raw_error:  # noqa: BLE001 - located and recorded by the caller
            return _Failed(raw_error)

    def _execute_planned(
        self,
        plan: FieldPlan,
        field: Any,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Path,
    ) -> Any:
        """graphql-core's ``execute_field`` with the plan's read or call in place of the
        field's resolve function (no middleware: see ``_short``)."""
        return_type = field.type
        if plan.object_type is not None:  # an attribute holding an object: no resolve info needed
            try:
                result = plan.getter(source, plan.name)  # type: ignore[misc]
                if result is None or result is Undefined:
                    if plan.non_null:
                        raise TypeError(
                            f"Cannot return null for non-nullable field {parent_type.name}."
                            f"{field_details_list[0].node.name.value}."
                        )
                    return None
                if not self.is_awaitable(result) and not isinstance(result, Exception):
                    completed = self.collect_and_execute_subfields(
                        plan.object_type, field_details_list, path, result, None
                    )
                    if self.is_awaitable(completed):
                        return self._await_completed(completed, return_type, field_details_list, path)
                    return completed
            except Exception as raw_error:  # noqa: BLE001 - a field error, as in execute_field
                self.handle_field_error(raw_error, return_type, field_details_list, path)
                return None
            return self._complete_resolved(plan, field, parent_type, source, field_details_list, path, result)
        return self._complete_resolved(plan, field, parent_type, source, field_details_list, path, _UNREAD)

    def _complete_resolved(
        self,
        plan: FieldPlan,
        field: Any,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Path,
        result: Any,
    ) -> Any:
        """The rest of ``execute_field``: read or call (unless ``result`` was read already),
        then complete the value, field errors handled."""
        return_type = field.type
        nodes = [details.node for details in field_details_list]
        info = self.build_resolve_info(field, nodes, parent_type, path)
        try:
            if result is not _UNREAD:
                pass  # read by the caller
            elif plan.kind == ATTRIBUTE:
                result = plan.getter(source, plan.name)  # type: ignore[misc]
            else:
                assert plan.kind == RESOLVER and plan.call is not None
                result = plan.call(source, info, self._arguments(field, field_details_list[0]))
            if self.is_awaitable(result):
                return self.complete_awaitable_value(
                    return_type, field_details_list, info, path, result, None
                )
            completed = self.complete_value(return_type, field_details_list, info, path, result, None)
            if self.is_awaitable(completed):
                return self._await_completed(completed, return_type, field_details_list, path)
        except Exception as raw_error:  # noqa: BLE001 - a field error, as in execute_field
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None
        return completed

    def _arguments(self, field: GraphQLField, details: Any) -> dict[str, Any]:
        """The field's coerced arguments: the same for every object the selection ``details``
        applies to in this request (the variables are fixed), so coerced once per request.
        Like a variable's value, the same value then reaches each call of the resolver."""
        if not field.args and not details.node.arguments:
            return {}
        key = id(details)  # kept alive by its grouped field set for the whole request
        args = self._argument_cache.get(key)
        if args is None:
            args = get_argument_values(
                field,
                details.node,
                self.variable_values,
                details.fragment_variable_values,
                self.hide_suggestions,
            )
            self._argument_cache[key] = args
        return args

    async def _await_completed(
        self, completed: Awaitable[Any], return_type: GraphQLOutputType, field_details_list: Any, path: Path
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:  # noqa: BLE001 - a field error, as in execute_field
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None

    # ------------------------------------------------------------------ value completion

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

    def collect_and_execute_subfields(
        self,
        return_type: GraphQLObjectType,
        field_details_list: Any,
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        """The object's fields, straight to its steps when nothing is deferred: taken from
        the document's shared ones when it has them (worked out on first use)."""
        shared = self._shared
        if shared is not None and self._short and position_context is None:
            # The fields a selection collects depend on the object type and the selection's
            # nodes only (static_selections): nodes of the cached document, stable ids.
            key = (
                (return_type.name, id(field_details_list[0].node))
                if len(field_details_list) == 1
                else (return_type.name, *[id(details.node) for details in field_details_list])
            )
            steps = shared.get(key)
            if steps is None:
                collected = self.collect_subfields(return_type, field_details_list)
                if not collected.new_defer_usages:
                    steps = self._make_steps(return_type, collected.grouped_field_set)
                    shared[key] = steps
            if steps is not None:
                return self._execute_steps(return_type, result, path, steps)
        grouped_field_set, new_defer_usages, _ = self.collect_subfields(return_type, field_details_list)
        if new_defer_usages or position_context is not None:
            return self.execute_collected_subfields(
                return_type, result, path, grouped_field_set, new_defer_usages, position_context
            )
        return self.execute_fields(return_type, result, path, grouped_field_set, None)

    def get_stream_usage(self, field_details_list: Any, path: Path) -> Any:
        return super().get_stream_usage(field_details_list, path) if self._streams else None


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


_GENERAL = object()
_UNREAD = object()
