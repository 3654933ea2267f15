"""The executor's short path for plain leaf fields (schema/execution.py) answers exactly as
graphql-core's general path: same data, same errors (message, path), same hooks."""

from __future__ import annotations

import enum
from typing import Any

import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.permission import BasePermission

from fingerprints.schema.execution import Executor
from fingerprints.schema.plans import LEAF, RESOLVER, plan_of


@strawberry.enum
class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Item:
    id: strawberry.ID
    name: str
    score: float
    color: Color
    note: str | None
    count: int  # set to a bad value on purpose below

    @strawberry.field
    def shout(self, suffix: str = "!") -> str:
        return self.name.upper() + suffix


def _items() -> list[Item]:
    return [
        Item(id=strawberry.ID("a"), name="one", score=0.5, color=Color.RED, note=None, count=1),
        # a null where the schema says non-null, and a value the Int scalar refuses
        Item(id=strawberry.ID("b"), name=None, score=1.5, color=Color.BLUE, note="x", count="many"),  # type: ignore[arg-type]
    ]


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item | None]:
        return list(_items())

    @strawberry.field
    async def later(self) -> Item:
        return _items()[0]


QUERY = """
{
  items { id name score color note count shout alias: shout(suffix: "?") __typename }
  later { id name color }
}
"""


def schema(**kwargs: Any) -> strawberry.Schema:
    return strawberry.Schema(query=Query, **kwargs)


def _errors(result: Any) -> list[tuple[str, list[Any]]]:
    return sorted((e.message, e.path) for e in result.errors or [])


async def test_same_data_and_errors_as_the_general_path() -> None:
    short = await schema(execution_context_class=Executor).execute(QUERY)
    general = await schema().execute(QUERY)
    assert short.data == general.data
    assert _errors(short) == _errors(general)
    # the second item failed as a whole (null for a non-null name), the first one is complete
    assert short.data is not None
    assert short.data["items"][0] == {
        "id": "a",
        "name": "one",
        "score": 0.5,
        "color": "RED",
        "note": None,
        "count": 1,
        "shout": "ONE!",
        "alias": "ONE?",
        "__typename": "Item",
    }
    assert short.data["items"][1] is None
    assert short.data["later"] == {"id": "a", "name": "one", "color": "RED"}
    messages = [m for m, _ in _errors(short)]
    assert "Cannot return null for non-nullable field Item.name." in messages


def test_fields_get_the_plan_of_their_kind() -> None:
    graphql_schema = schema()._schema
    item = graphql_schema.type_map["Item"]
    query = graphql_schema.query_type
    assert query is not None
    fields = item.fields  # type: ignore[attr-defined]
    for name in ("id", "name", "score", "color", "note"):
        plan = plan_of(graphql_schema, fields[name])
        assert plan is not None and plan.kind == LEAF, name
    shout = plan_of(graphql_schema, fields["shout"])  # a resolver with an argument
    assert shout is not None and shout.kind == RESOLVER
    items = plan_of(graphql_schema, query.fields["items"])  # a resolver returning a list of objects
    assert items is not None and items.kind == RESOLVER
    name_plan = plan_of(graphql_schema, fields["name"])
    assert name_plan is not None and name_plan.name == "name" and name_plan.non_null is True
    note_plan = plan_of(graphql_schema, fields["note"])
    assert note_plan is not None and note_plan.non_null is False


async def test_an_extension_that_hooks_resolution_sees_every_field() -> None:
    seen: list[str] = []

    class Recorder(SchemaExtension):
        def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(info.field_name)
            return _next(root, info, *args, **kwargs)

    result = await schema(execution_context_class=Executor, extensions=[Recorder]).execute(
        "{ later { id name } }"
    )
    assert result.errors is None
    assert seen == ["later", "id", "name"]


class _Never(BasePermission):
    message = "not for you"

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return False


@strawberry.type
class Guarded:
    public: str
    secret: str = strawberry.field(permission_classes=[_Never])


@strawberry.type
class GuardedQuery:
    @strawberry.field
    def guarded(self) -> Guarded:
        return Guarded(public="p", secret="s")


async def test_a_field_with_extensions_takes_the_general_path() -> None:
    """A resolver-less field with a permission class (a field extension) is not a plain leaf:
    reading the attribute in place would skip the check."""
    guarded = strawberry.Schema(query=GuardedQuery, execution_context_class=Executor)
    fields = guarded._schema.type_map["Guarded"].fields  # type: ignore[attr-defined]
    assert plan_of(guarded._schema, fields["public"]) is not None
    assert plan_of(guarded._schema, fields["secret"]) is None
    result = await guarded.execute("{ guarded { public secret } }")
    assert result.data is None or result.data["guarded"] is None
    assert [e.message for e in result.errors or []] == ["not for you"]
