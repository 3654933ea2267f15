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
from collections.abc import Iterator, Sequence

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse, specified_rules
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

MAXSIZE = 256  # distinct query texts kept; bounded, so unique texts cannot grow memory


class DocumentCache:
    """Query text -> (document, validation errors), least recently used dropped first."""

    def __init__(
        self, extra_rules: Sequence[type[ASTValidationRule]], *, max_tokens: int, maxsize: int = MAXSIZE
    ) -> None:
        self.extra_rules = tuple(extra_rules)  # ours, on top of graphql-core's specified rules
        self.rules = (*specified_rules, *self.extra_rules)
        self.max_tokens = max_tokens
        self.maxsize = maxsize
        self._entries: OrderedDict[str, tuple[DocumentNode, list[GraphQLError]]] = OrderedDict()

    def get(self, schema: GraphQLSchema, query: str) -> tuple[DocumentNode, list[GraphQLError]]:
        """The parsed document and its validation errors; raises GraphQLError on a syntax
        error or too many tokens (such texts are not kept)."""
        entry = self._entries.get(query)
        if entry is not None:
            self._entries.move_to_end(query)
            return entry
        document = parse(query, max_tokens=self.max_tokens)
        entry = (document, validate_document(schema, document, self.rules))
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
