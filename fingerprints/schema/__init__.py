"""The GraphQL schema: Query and Mutation roots, built with the limits from settings."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import strawberry
from graphql import ASTValidationRule, GraphQLError, NoSchemaIntrospectionCustomRule
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter, SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from fingerprints.config import Settings
from fingerprints.resolvers import mutations, queries, subscriptions
from fingerprints.schema.catalog import Album, Artist, Playlist, Track
from fingerprints.schema.direct import Prepared, execute_prepared, prepare
from fingerprints.schema.documents import CachedDocuments, DocumentCache
from fingerprints.schema.errors import ErrorCodes
from fingerprints.schema.execution import Executor
from fingerprints.schema.scalars import SCALARS
from fingerprints.schema.types import (
    AggregationJob,
    FeatureType,
    Fingerprint,
    FingerprintStats,
    SimilarBatchResult,
    SimilarResult,
)


@strawberry.type(description="Read the registry and fingerprints.")
class Query:
    feature_types: list[FeatureType] = strawberry.field(
        resolver=queries.feature_types_, description="Every registered feature type with coverage stats."
    )
    feature_type: FeatureType = strawberry.field(
        resolver=queries.feature_type, description="One feature type; NOT_FOUND when unknown."
    )
    fingerprint: Fingerprint = strawberry.field(
        resolver=queries.fingerprint,
        description="An entity's feature maps, optionally only some types; NOT_FOUND when the "
        "entity is unknown or has none. Playlists are visible to their owner and admin only.",
    )
    similar: SimilarResult = strawberry.field(
        resolver=queries.similar,
        description="Entities similar to one entity, a raw vector or several entities (their centroid); "
        "one feature type or several weighted ones; any target entity type.",
    )
    track: Track = strawberry.field(resolver=queries.track, description="A track; NOT_FOUND when unknown.")
    album: Album = strawberry.field(resolver=queries.album, description="An album; NOT_FOUND when unknown.")
    artist: Artist = strawberry.field(
        resolver=queries.artist, description="An artist; NOT_FOUND when unknown."
    )
    playlist: Playlist = strawberry.field(
        resolver=queries.playlist,
        description="A playlist; NOT_FOUND when unknown or not yours (X-User-Id) unless admin.",
    )
    tracks: list[Track | None] = strawberry.field(
        resolver=queries.tracks, description="Tracks by id, in order; null for unknown ids."
    )
    albums: list[Album | None] = strawberry.field(
        resolver=queries.albums, description="Albums by id, in order; null for unknown ids."
    )
    artists: list[Artist | None] = strawberry.field(
        resolver=queries.artists, description="Artists by id, in order; null for unknown ids."
    )
    playlists: list[Playlist | None] = strawberry.field(
        resolver=queries.playlists, description="Playlists by id, in order; null for unknown or not yours."
    )
    aggregation_job: AggregationJob = strawberry.field(
        resolver=queries.aggregation_job, description="An aggregation job's status and progress."
    )
    fingerprint_stats: FingerprintStats = strawberry.field(
        resolver=queries.fingerprint_stats,
        description="Coverage per feature type and entity type, storage, index status, last aggregation.",
    )
    similar_batch: SimilarBatchResult = strawberry.field(
        resolver=queries.similar_batch,
        description="Similar entities for several query entities at once, optionally de-duplicated.",
    )


@strawberry.type(description="Admin operations; each needs 'Authorization: Bearer <admin token>'.")
class Mutation:
    register_feature_type = strawberry.mutation(
        resolver=mutations.register_feature_type, description="Register a feature type (CONFLICT if taken)."
    )
    update_feature_type = strawberry.mutation(
        resolver=mutations.update_feature_type,
        description="Change name, description, aggregation method, active flag or applies_to.",
    )
    bump_feature_type_version = strawberry.mutation(
        resolver=mutations.bump_feature_type_version,
        description="Raise the current version; older maps count as outdated.",
    )
    ingest_feature_maps = strawberry.mutation(
        resolver=mutations.ingest_feature_maps,
        description="Store a batch of feature maps; bad items are listed in errors, good ones stored.",
    )
    delete_feature_maps = strawberry.mutation(
        resolver=mutations.delete_feature_maps,
        description="Delete every map of a type, or the maps of listed entities.",
    )
    upsert_catalog = strawberry.mutation(
        resolver=mutations.upsert_catalog, description="Create or update artists, albums and tracks."
    )
    upsert_playlist = strawberry.mutation(
        resolver=mutations.upsert_playlist, description="Create or replace a playlist and its tracks."
    )
    delete_playlist = strawberry.mutation(
        resolver=mutations.delete_playlist, description="Delete a playlist and its feature maps."
    )
    trigger_aggregation = strawberry.mutation(
        resolver=mutations.trigger_aggregation,
        description="Queue a job recomputing stale (or, with force, all) album/artist/playlist fingerprints.",
    )


@strawberry.type(description="Live updates over graphql-transport-ws.")
class Subscription:
    aggregation_job = strawberry.subscription(
        resolver=subscriptions.aggregation_job,
        description="An aggregation job's progress, streamed until it has finished.",
    )


class Schema(strawberry.Schema):
    """Strawberry's schema with this service's extensions: documents parsed and validated once
    per text (``documents``) and errors with ``extensions.code``."""

    def __init__(self, *, documents: DocumentCache, **kwargs: Any) -> None:
        self.documents = documents
        # Factories, not instances: Strawberry builds fresh extensions for every request. Neither
        # hooks field resolution (a `resolve` hook would wrap every field of every request).
        extensions: list[Callable[[], SchemaExtension]] = [ErrorCodes, lambda: CachedDocuments(documents)]
        super().__init__(extensions=extensions, execution_context_class=Executor, **kwargs)

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        # Expected errors are answers, not incidents; ErrorCodes logs the unexpected ones.
        return None

    def prepare(
        self, query: str, operation_name: str | None, allowed_operation_types: Collection[OperationType]
    ) -> Prepared | None:
        """A cached valid query or mutation, ready for ``execute_prepared``; None when the
        request needs ``execute`` (see schema/direct.py)."""
        if self.directives:  # a DirectivesExtension would hook field resolution
            return None
        return prepare(self, query, operation_name, allowed_operation_types)

    async def execute_prepared(
        self,
        prepared: Prepared,
        *,
        variable_values: dict[str, Any] | None = None,
        context_value: Any = None,
        root_value: Any = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """``execute``'s result for a prepared operation, without the extension runner."""
        return await execute_prepared(
            self,
            prepared,
            variable_values=variable_values,
            context_value=context_value,
            root_value=root_value,
            operation_extensions=operation_extensions,
        )


def build_schema(settings: Settings) -> Schema:
    # The limits are validation rules, built once here (not per request) so that a document is
    # validated once, with all of them, the first time its text is seen (schema/documents.py).
    rules: list[type[ASTValidationRule]] = [
        *QueryDepthLimiter(max_depth=settings.graphql_max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases).validation_rules,
    ]
    if not settings.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    return Schema(
        documents=DocumentCache(rules, max_tokens=settings.graphql_max_tokens),
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(scalar_map=SCALARS),
    )
