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
- ``collect_and_execute_subfields`` takes an object's steps straight from the document's
  shared ones when it has them (documents.Entry.fields): no field collection per request;
- values are completed as ``Completion`` (schema/completion.py) completes them.

None of this applies when a schema extension hooks field resolution (a middleware must see
every field) or when incremental delivery (``@defer``/``@stream``) is in play.
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLField, GraphQLObjectType, Undefined
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path, gather_with_cancel

from fingerprints.schema.completion import Completion
from fingerprints.schema.plans import ATTRIBUTE, LEAF, RESOLVER, FieldPlan, plan_of

_STEP_GENERAL, _STEP_LEAF, _STEP_PLANNED = 0, 1, 2
# (response name, its field details, the field, its plan, which step)
Step = tuple[str, Any, GraphQLField, FieldPlan, int]


class Executor(Completion):
    def __init__(self, *args: Any, shared_fields: dict[Any, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Each object's collected fields and steps, shared by every execution of the document
        # (see documents.Entry.fields); None: collected per execution, as graphql-core does.
        self._shared = shared_fields
        manager = self.middleware_manager
        # A schema extension with a ``resolve`` hook must see every field: no short path then.
        self._short = not (manager is not None and manager.middlewares)
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
                        results[response_name] = None
                        continue
                    if result is not _GENERAL:
                        results[response_name] = result
                        continue
                if step == _STEP_PLANNED:
                    result = self._execute_planned(
                        plan,
                        field,
                        parent_type,
                        source_value,
                        field_details_list,
                        Path(path, response_name, parent_type.name),
                    )
                else:  # a general field, or a leaf its plan leaves to graphql-core
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


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


_GENERAL = object()
_UNREAD = object()
