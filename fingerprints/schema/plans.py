"""How the executor resolves each field of the schema, worked out once per field.

Strawberry gives every field a resolve function that serves every case: for a field with a
resolver it builds an ``Info``, converts the arguments, looks for field extensions and
exception handlers, then calls the resolver through two more layers; for a field without one
it calls the configured default resolver. A field of a track page goes through that chain for
a few microseconds of work, some 44 times per page. A ``FieldPlan`` is what the chain comes
down to for one field when nothing can hook into it (no field extension, so no permission
class; no exception handler in the schema; not a subscription):

- ``LEAF``: no resolver, no arguments, a scalar or enum type: read the attribute and coerce it;
- ``ATTRIBUTE``: no resolver, any other type: read the attribute (an object of a type without
  ``is_type_of``, the usual case, is completed without a resolve info);
- ``RESOLVER``: call the resolver with the source, ``info`` and converted arguments bound to
  its parameters exactly as Strawberry binds them (``get_arguments``).

Any other field has no plan (``None``) and goes through Strawberry's resolve function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from graphql import (
    GraphQLBoolean,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLLeafType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLString,
    GraphQLUnionType,
)
from graphql.type import is_leaf_type
from strawberry.relay.types import GlobalID
from strawberry.scalars import is_scalar
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.arguments import convert_argument
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryObjectDefinition,
    StrawberryOptional,
    StrawberryType,
)
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE
from strawberry.types.field import StrawberryField
from strawberry.types.union import StrawberryUnion

LEAF, ATTRIBUTE, RESOLVER = 1, 2, 3
MAX_INT, MIN_INT = 2_147_483_647, -2_147_483_648  # GraphQL's Int: 32 bits


class FieldPlan:
    """One field's shortest correct resolution (see the module docstring)."""

    __slots__ = ("call", "check", "exact", "getter", "kind", "leaf", "name", "non_null", "object_type")

    def __init__(
        self,
        kind: int,
        *,
        name: str = "",
        getter: Callable[[Any, str], Any] | None = None,
        leaf: GraphQLLeafType | None = None,
        non_null: bool = False,
        call: Callable[[Any, GraphQLResolveInfo, dict[str, Any]], Any] | None = None,
        object_type: GraphQLObjectType | None = None,
    ) -> None:
        self.kind = kind
        self.name = name  # the python attribute (LEAF, ATTRIBUTE)
        self.getter = getter  # Strawberry's default resolver (LEAF, ATTRIBUTE)
        self.leaf = leaf  # the scalar or enum (LEAF)
        self.non_null = non_null  # LEAF, ATTRIBUTE
        self.object_type = object_type  # ATTRIBUTE of an object type without is_type_of
        self.call = call  # (source, info, coerced arguments) -> the resolver's value (RESOLVER)
        self.exact, self.check = identity_type(leaf) if leaf is not None else (None, None)


def _is_int32(value: int) -> bool:
    return MIN_INT <= value <= MAX_INT


def identity_type(leaf: GraphQLLeafType) -> tuple[type | None, Callable[[Any], bool] | None]:
    """``(exact, check)``: a value of exactly the type ``exact`` that passes ``check`` is what
    the built-in scalar ``leaf`` returns for it unchanged (``serialize_string`` returns a
    ``str`` as it is, ``serialize_int`` an ``int`` in range...); ``(None, None)`` for any
    other scalar or enum, which must coerce every value."""
    if leaf is GraphQLString or leaf is GraphQLID:
        return str, None
    if leaf is GraphQLInt:
        return int, _is_int32
    if leaf is GraphQLFloat:
        return float, math.isfinite
    if leaf is GraphQLBoolean:
        return bool, None
    return None, None


# By the field's resolve function: Strawberry makes one per field and schema (GraphQLField is
# unhashable). A plain dict (a weak one costs more per lookup than the rest of the short path):
# it grows with the number of schemas built, one in a server.
_PLANS: dict[Callable[..., Any], FieldPlan | None] = {}


def plan_of(schema: GraphQLSchema, field: GraphQLField) -> FieldPlan | None:
    """The plan for ``field`` of ``schema``, worked out on first use."""
    resolve = field.resolve
    if resolve is None:
        return None
    try:
        return _PLANS[resolve]
    except KeyError:
        plan = _PLANS[resolve] = _make_plan(schema, field)
        return plan


def _make_plan(schema: GraphQLSchema, field: GraphQLField) -> FieldPlan | None:
    definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    strawberry_schema = getattr(schema, "_strawberry_schema", None)
    if (
        not isinstance(definition, StrawberryField)
        or strawberry_schema is None
        or definition.extensions  # field extensions (permission classes...) must run
        or definition.is_subscription
        or strawberry_schema.exception_handlers  # they wrap resolvers that can raise
    ):
        return None
    if definition.base_resolver is None:
        if not getattr(field.resolve, "_is_default", False):
            return None
        field_type = field.type
        non_null = isinstance(field_type, GraphQLNonNull)
        inner = field_type.of_type if isinstance(field_type, GraphQLNonNull) else field_type
        kind = LEAF if is_leaf_type(inner) and not field.args else ATTRIBUTE
        plain_object = isinstance(inner, GraphQLObjectType) and inner.is_type_of is None
        return FieldPlan(
            kind,
            name=definition.python_name,
            getter=definition.default_resolver,
            leaf=inner if kind == LEAF else None,  # type: ignore[arg-type]
            non_null=non_null,
            object_type=inner if kind == ATTRIBUTE and plain_object else None,  # type: ignore[arg-type]
        )
    call = _resolver_call(strawberry_schema, definition)
    return None if call is None else FieldPlan(RESOLVER, call=call)


def _resolver_call(
    strawberry_schema: Any, field: StrawberryField
) -> Callable[[Any, GraphQLResolveInfo, dict[str, Any]], Any] | None:
    """The resolver called as Strawberry calls it (``get_arguments``, ``field.get_result``):
    arguments converted to Python values, the source passed as ``self`` (positional) and as
    its ``root``/``parent`` parameter, the ``Info`` as its info parameter."""
    resolver = field.base_resolver
    assert resolver is not None
    func = resolver.wrapped_func
    if not callable(func):
        return None  # Strawberry raises UncallableResolverError at each call: let it
    info_class = strawberry_schema.config.info_class
    convert = _converter(strawberry_schema, field)
    pass_self = resolver.self_parameter is not None
    source_names = tuple(
        p.name for p in (resolver.parent_parameter, resolver.root_parameter) if p is not None
    )
    info_name = resolver.info_parameter.name if resolver.info_parameter is not None else None

    def call(source: Any, info: GraphQLResolveInfo, raw: dict[str, Any]) -> Any:
        strawberry_info = info_class(_raw_info=info, _field=field)
        kwargs = convert(raw, strawberry_info)
        for name in source_names:
            kwargs[name] = source
        if info_name is not None:
            kwargs[info_name] = strawberry_info
        return func(source, **kwargs) if pass_self else func(**kwargs)

    return call


# Strawberry union -> the object type of each member, by id of its Strawberry definition; None
# for a union this module does not resolve (see ``union_member``). Kept like ``_PLANS``.
_UNIONS: dict[GraphQLUnionType, dict[int, GraphQLObjectType] | None] = {}


def union_member(schema: GraphQLSchema, union: GraphQLUnionType, value: Any) -> GraphQLObjectType | None:
    """The member of ``union`` that Strawberry's type resolver picks for ``value`` when that
    choice is a matter of its class: a value of a (non-generic) Strawberry type that is a
    member, not cast with ``strawberry.cast``; None otherwise (then ask the resolver)."""
    try:
        members = _UNIONS[union]
    except KeyError:
        members = _UNIONS[union] = _union_members(schema, union)
    if not members:
        return None
    definition = getattr(value, "__strawberry_definition__", None)
    if definition is None or getattr(value, TYPE_CAST_ATTRIBUTE, None) is not None:
        return None
    return members.get(id(definition))


def _union_members(schema: GraphQLSchema, union: GraphQLUnionType) -> dict[int, GraphQLObjectType] | None:
    # Strawberry's resolver (StrawberryUnion.get_type_resolver) returns, for such a value, the
    # member whose definition *is* the value's (is_implemented_by: "exact type match").
    definition = (union.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    strawberry_schema = getattr(schema, "_strawberry_schema", None)
    if not isinstance(definition, StrawberryUnion) or strawberry_schema is None or union.resolve_type is None:
        return None
    type_map = strawberry_schema.schema_converter.type_map
    members: dict[int, GraphQLObjectType] = {}
    for member in union.types:
        member_definition = type_map[member.name].definition
        if (
            isinstance(member_definition, StrawberryObjectDefinition)
            and member_definition.concrete_of is None
            and not member_definition.is_graphql_generic
            and member.is_type_of is None
        ):
            members[id(member_definition)] = member
    return members


def python_arguments(schema: GraphQLSchema, field: GraphQLField, raw: dict[str, Any]) -> dict[str, Any]:
    """Arguments as graphql-core coerced them (``raw``), converted by Strawberry for the
    field's resolver (input objects, enums), by Python name."""
    strawberry_schema = schema._strawberry_schema  # type: ignore[attr-defined]
    definition = field.extensions[GraphQLCoreConverter.DEFINITION_BACKREF]
    return _converter(strawberry_schema, definition)(raw, None)


def _converter(
    strawberry_schema: Any, field: StrawberryField
) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """Strawberry's ``convert_arguments`` for ``field``, with each argument's GraphQL name and
    type looked up once (it converts every name with the schema's name converter per call)."""
    config = strawberry_schema.config
    registry = strawberry_schema.schema_converter.scalar_registry
    arguments = [
        (config.name_converter.from_argument(a), a.python_name, a.type, _plain_shape(a.type, registry))
        for a in field.arguments
    ]

    def convert(raw: dict[str, Any], info: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if raw:
            for name, python_name, type_, shape in arguments:
                if name in raw:
                    value = raw[name]
                    if shape == _CONVERT:
                        kwargs[python_name] = convert_argument(
                            value, type_, registry, config, info, path=(name,)
                        )
                    elif shape == _AS_IS or value is None:
                        kwargs[python_name] = value
                    else:
                        kwargs[python_name] = list(value)
        return kwargs

    return convert


_CONVERT, _AS_IS, _LIST_COPY = 0, 1, 2


def _plain_shape(type_: Any, registry: Any) -> int:
    """What ``convert_argument`` does to a value of ``type_`` when that is nothing much:
    ``_AS_IS`` for a scalar (not a ``GlobalID``) or an optional one, which it returns as it is
    (graphql-core parsed it already); ``_LIST_COPY`` for a list of those, optional or not,
    which it copies (None stays None for both); ``_CONVERT`` for anything else (input
    objects, enums, ``Maybe``, which wraps even a null...): ``convert_argument`` decides."""
    if isinstance(type_, StrawberryOptional) and not isinstance(type_, StrawberryMaybe):
        type_ = type_.of_type
    if _plain_scalar(type_, registry):
        return _AS_IS
    if isinstance(type_, StrawberryList):
        item = type_.of_type
        if isinstance(item, StrawberryOptional) and not isinstance(item, StrawberryMaybe):
            item = item.of_type
        if _plain_scalar(item, registry):
            return _LIST_COPY
    return _CONVERT


def _plain_scalar(type_: Any, registry: Any) -> bool:
    return type_ is not GlobalID and not isinstance(type_, StrawberryType) and is_scalar(type_, registry)
