"""Parsed and validated GraphQL documents, cached by query text.

Clients send the same few documents again and again with different variables. Parsing one
and validating it against the schema (graphql-core's rules plus our depth, alias and
introspection rules) costs more than executing a track page, and both depend on the query
text alone: so each distinct text is parsed and validated once, and later requests reuse the
document and its validation errors.

Strawberry's own ``ValidationCache`` cannot do this here: it keys on the document and the
rule classes, and hashing a frozen-dataclass document walks the whole tree on every lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    ExecutableDefinitionNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionNode,
    parse,
    specified_rules,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

MAXSIZE = 256  # distinct query texts kept; bounded, so unique texts cannot grow memory


@dataclass
class Entry:
    """A parsed document, its validation errors, and what executions of it may share."""

    document: DocumentNode
    errors: list[GraphQLError]
    # For the executor (schema/execution.py): each object's collected fields, the same in every
    # execution of a document whose selections no directive makes depend on variables
    # (@skip/@include); None for any other document.
    fields: dict[Any, Any] | None = field(default=None)


def _has_directives(selections: Iterable[SelectionNode]) -> bool:
    for selection in selections:
        if selection.directives:
            return True
        if isinstance(selection, FieldNode | InlineFragmentNode) and selection.selection_set is not None:
            if _has_directives(selection.selection_set.selections):
                return True
    return False


def static_selections(document: DocumentNode) -> bool:
    """Whether the fields selected on each object are the same whatever the variables: no
    directive on any selection, no fragment with variables of its own."""
    for definition in document.definitions:
        if not isinstance(definition, ExecutableDefinitionNode):
            continue
        if isinstance(definition, FragmentDefinitionNode) and definition.variable_definitions:
            return False
        if _has_directives(definition.selection_set.selections):
            return False
    return True


class DocumentCache:
    """Query text -> (document, validation errors), least recently used dropped first."""

    def __init__(
        self, extra_rules: Sequence[type[ASTValidationRule]], *, max_tokens: int, maxsize: int = MAXSIZE
    ) -> None:
        self.extra_rules = tuple(extra_rules)  # ours, on top of graphql-core's specified rules
        self.rules = (*specified_rules, *self.extra_rules)
        self.max_tokens = max_tokens
        self.maxsize = maxsize
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def get(self, schema: GraphQLSchema, query: str) -> tuple[DocumentNode, list[GraphQLError]]:
        """The parsed document and its validation errors; raises GraphQLError on a syntax
        error or too many tokens (such texts are not kept)."""
        entry = self.entry(schema, query)
        return entry.document, entry.errors

    def entry(self, schema: GraphQLSchema, query: str) -> Entry:
        """``get``'s document and errors with what its executions may share."""
        entry = self._entries.get(query)
        if entry is not None:
            self._entries.move_to_end(query)
            return entry
        document = parse(query, max_tokens=self.max_tokens)
        errors = validate_document(schema, document, self.rules)
        entry = Entry(document, errors, {} if not errors and static_selections(document) else None)
        self._entries[query] = entry
        if len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return entry


class CachedDocuments(SchemaExtension):
    """Serves parsing and validation from a ``DocumentCache`` (one per schema, shared by its
    requests; this extension object itself is built per request)."""

    def __init__(self, cache: DocumentCache) -> None:
        self.cache = cache
        self._errors: list[GraphQLError] | None = None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = self.cache.max_tokens
        if context.query:
            try:
                context.graphql_document, self._errors = self.cache.get(context.schema._schema, context.query)
            except GraphQLError:
                # Left to Strawberry's own parse (same limit), which reports it the usual way.
                pass
        yield

    def on_validate(self) -> Iterator[None]:
        if self._errors is not None:
            self.execution_context.pre_execution_errors = list(self._errors)
        else:  # not from the cache: Strawberry validates, with our rules added
            context = self.execution_context
            context.validation_rules = (*context.validation_rules, *self.cache.extra_rules)
        yield
