"""The executor's short path for plain leaf fields (schema/execution.py) answers exactly as
graphql-core's general path: same data, same errors (message, path), same hooks."""

from __future__ import annotations

import enum
from typing import Annotated, Any

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


# ------------------------------------------------------------------ plans, shared fields, arguments


@strawberry.type
class Label:
    name: str
    since: int


@strawberry.type
class Song:
    id: strawberry.ID
    title: str | None
    label: Label | None  # an attribute holding an object
    required_label: Label  # the same, non-null (None on purpose below)

    @strawberry.field
    def tags(self, prefix: str = "", upper: bool = False) -> list[str | None]:
        tags = [f"{prefix}{self.id}-a", None, f"{prefix}{self.id}-b"]
        return [t.upper() if t and upper else t for t in tags]

    @strawberry.field
    def fail(self) -> str | None:
        raise ValueError(f"no {self.id}")

    @strawberry.field
    async def later(self, root: strawberry.Parent[Any] = None) -> Label:
        return Label(name=f"later-{self.id}", since=1)


@strawberry.type
class Band:
    name: str


Media = Annotated[Song | Band, strawberry.union("Media")]


def _songs() -> list[Song | None]:
    label = Label(name="L", since=1999)
    return [
        Song(id=strawberry.ID("s1"), title="One", label=label, required_label=label),
        None,
        Song(id=strawberry.ID("s2"), title=None, label=None, required_label=None),  # type: ignore[arg-type]
    ]


@strawberry.type
class MediaQuery:
    @strawberry.field
    def songs(self, info: strawberry.Info, first: int = 10) -> list[Song | None]:
        return _songs()[:first]

    @strawberry.field
    def shelf(self) -> Shelf:
        return Shelf()

    @strawberry.field
    def media(self) -> list[Media]:
        songs = [s for s in _songs() if s is not None]
        disguised = _songs()[0]
        disguised.name = "as a band"  # type: ignore[union-attr]
        # strawberry.cast decides over the value's own type when resolving the union
        return [songs[0], Band(name="B"), songs[1], strawberry.cast(Band, disguised)]


async def _label_later(i: int) -> Label:
    return Label(name=f"later{i}", since=i)


@strawberry.type
class Shelf:
    @strawberry.field
    def labels(self) -> list[Label] | None:
        # the second item breaks a non-null field: the item, non-null too, nulls the list
        return [Label(name="ok", since=1), Label(name=None, since=2)]  # type: ignore[arg-type]

    @strawberry.field
    def later(self) -> list[Label]:
        return [_label_later(0), _label_later(1)]  # type: ignore[list-item]  # awaitable items


MEDIA_QUERY = """
query Media($first: Int!, $prefix: String!, $upper: Boolean = false) {
  songs(first: $first) {
    id title label { name since } requiredLabel { name }
    tags(prefix: $prefix, upper: $upper) shout: tags(prefix: "!", upper: true)
    fail later { name }
  }
  ...More
  shelf { labels { name since } later { name since } }
}
fragment More on MediaQuery {
  media { __typename ... on Song { id tags(prefix: $prefix) label { name } } ... on Band { name } }
}
"""
CONDITIONAL_QUERY = """
query Conditional($withTitle: Boolean!) { songs(first: 1) { id title @include(if: $withTitle) } }
"""


def _media_schema() -> Any:
    from fingerprints.schema import Schema
    from fingerprints.schema.documents import DocumentCache

    return Schema(documents=DocumentCache([], max_tokens=10_000), query=MediaQuery)


async def _three_ways(query: str, variables: dict[str, Any]) -> list[tuple[Any, list[Any]]]:
    """graphql-core's executor, ours through Strawberry's ``execute``, ours through the short
    path twice (the second run uses the document's shared fields): data and errors."""
    from strawberry.types.graphql import OperationType

    ours = _media_schema()
    outcomes = []
    for result in (
        await strawberry.Schema(query=MediaQuery).execute(query, variable_values=variables),
        await ours.execute(query, variable_values=variables),
    ):
        outcomes.append((result.data, _errors(result)))
    prepared = ours.prepare(query, None, {OperationType.QUERY})
    assert prepared is not None
    for _ in range(2):
        result = await ours.execute_prepared(prepared, variable_values=variables)
        outcomes.append((result.data, _errors(result)))
    return outcomes


async def test_every_plan_answers_as_graphql_core() -> None:
    variables = {"first": 3, "prefix": "#"}
    general, *others = await _three_ways(MEDIA_QUERY, variables)
    data, errors = general
    assert data is not None
    song = data["songs"][0]
    assert song["tags"] == ["#s1-a", None, "#s1-b"] and song["shout"] == ["!S1-A", None, "!S1-B"]
    assert song["label"] == {"name": "L", "since": 1999} and song["later"] == {"name": "later-s1"}
    assert data["songs"][1] is None and data["songs"][2] is None  # null for a non-null label
    assert [m["__typename"] for m in data["media"]] == ["Song", "Band", "Song", "Band"]
    assert data["media"][3] == {"__typename": "Band", "name": "as a band"}
    assert data["shelf"] == {
        "labels": None,
        "later": [{"name": "later0", "since": 0}, {"name": "later1", "since": 1}],
    }
    assert ("Cannot return null for non-nullable field Label.name.", ["shelf", "labels", 1, "name"]) in errors
    assert (
        "Cannot return null for non-nullable field Song.requiredLabel.",
        ["songs", 2, "requiredLabel"],
    ) in errors
    assert ("no s1", ["songs", 0, "fail"]) in errors
    for other in others:
        # ErrorCodes rewrites messages of unexpected errors: compare paths, and data exactly
        assert other[0] == data
        assert sorted(path for _, path in other[1]) == sorted(path for _, path in errors)


async def test_arguments_follow_the_variables_of_each_request() -> None:
    """Arguments are coerced once per selection and request: never carried to the next one."""
    from strawberry.types.graphql import OperationType

    schema = _media_schema()
    prepared = schema.prepare(MEDIA_QUERY, None, {OperationType.QUERY})
    assert prepared is not None
    for prefix, upper in (("x", False), ("y", True), ("x", True)):
        result = await schema.execute_prepared(
            prepared, variable_values={"first": 1, "prefix": prefix, "upper": upper}
        )
        assert result.data is not None
        tags = [f"{prefix}s1-a", None, f"{prefix}s1-b"]
        assert result.data["songs"][0]["tags"] == [t.upper() if t and upper else t for t in tags]
        assert result.data["media"][0]["tags"] == [f"{prefix}s1-a", None, f"{prefix}s1-b"]


async def test_conditional_selections_are_not_shared() -> None:
    """@include/@skip make the fields of an object depend on the variables: such a document
    keeps no shared fields, and each execution collects its own."""
    from strawberry.types.graphql import OperationType

    schema = _media_schema()
    prepared = schema.prepare(CONDITIONAL_QUERY, None, {OperationType.QUERY})
    assert prepared is not None and prepared.fields is None
    static = schema.prepare(MEDIA_QUERY, None, {OperationType.QUERY})
    assert static is not None and static.fields is not None
    for with_title, expected in ((True, {"id": "s1", "title": "One"}), (False, {"id": "s1"})):
        result = await schema.execute_prepared(prepared, variable_values={"withTitle": with_title})
        assert result.data == {"songs": [expected]}


# ------------------------------------------------------------------ argument conversion


@strawberry.input
class Range:
    low: int
    high: int | None = None


@strawberry.type
class ArgumentsQuery:
    @strawberry.field
    def echo(
        self,
        an_id: strawberry.ID | None = None,
        number: int = 1,
        maybe_text: str | None = None,
        ids: list[strawberry.ID] | None = None,
        holes: list[str | None] | None = None,
        color: Color | None = None,
        colors: list[Color] | None = None,
        within: Range | None = None,
        ranges: list[Range] | None = None,
        node: strawberry.relay.GlobalID | None = None,
        nodes: list[strawberry.relay.GlobalID] | None = None,
        kept: strawberry.Maybe[str] = None,
        maybe_null: strawberry.Maybe[str | None] = None,
        nested: list[list[int]] | None = None,
    ) -> str:
        return "ok"


def test_arguments_convert_as_strawberry_converts_them() -> None:
    """The resolver's converter hands plain scalars over as they are and copies lists of them,
    as ``convert_argument`` does; every other type goes through ``convert_argument``."""
    from strawberry.relay import GlobalID
    from strawberry.types.arguments import convert_argument
    from strawberry.types.maybe import Some

    from fingerprints.schema.plans import _converter

    strawberry_schema = strawberry.Schema(query=ArgumentsQuery)
    field = next(f for f in strawberry_schema.get_type_by_name("ArgumentsQuery").fields if f.name == "echo")  # type: ignore[union-attr]
    raw = {
        "anId": "x",
        "number": 7,
        "maybeText": None,
        "ids": ["a", "b"],
        "holes": ["a", None],
        "color": Color.BLUE,
        "colors": [Color.RED],
        "within": {"low": 1},
        "ranges": [{"low": 2, "high": 3}],
        "node": str(GlobalID("Item", "1")),  # graphql-core hands the encoded id over
        "nodes": [str(GlobalID("Item", "2"))],
        "kept": "k",
        "maybeNull": None,  # Some(None): a Maybe wraps even a null
        "nested": [[1, 2], [3]],
    }
    converted = _converter(strawberry_schema, field)(raw, None)
    config, registry = strawberry_schema.config, strawberry_schema.schema_converter.scalar_registry
    for argument in field.arguments:
        name = config.name_converter.from_argument(argument)
        expected = convert_argument(raw[name], argument.type, registry, config, None, path=(name,))
        assert converted[argument.python_name] == expected, name
        assert type(converted[argument.python_name]) is type(expected), name
        if isinstance(raw[name], list):  # a list is a copy: the resolver may change it
            assert converted[argument.python_name] is not raw[name], name
    assert converted["ids"] == ["a", "b"] and converted["within"] == Range(low=1)
    assert converted["node"] == GlobalID("Item", "1")  # decoded, not as it came
    assert converted["maybe_null"] == Some(None)
    nulls = {"anId": None, "ids": None, "holes": None, "within": None, "number": 0}
    assert _converter(strawberry_schema, field)(nulls, None) == {
        "an_id": None,
        "ids": None,
        "holes": None,
        "within": None,
        "number": 0,
    }
