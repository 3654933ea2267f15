"""GraphQL inputs; they mirror the REST bodies of spec §6 and design §5."""

from __future__ import annotations

import strawberry

from fingerprints.schema.scalars import JSON, Vector
from fingerprints.schema.types import AggregationMethod, Distance, EntityType


@strawberry.input(description="A new feature type (POST /v1/admin/fingerprints/types).")
class RegisterFeatureTypeInput:
    id: strawberry.ID = strawberry.field(description="Identifier, ^[a-z][a-z0-9_]{0,63}$.")
    name: str
    dimension: int = strawberry.field(description="Vector length, 1..4096.")
    description: str | None = None
    applies_to: list[EntityType] | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="Entity types it applies to; null or empty means all."
    )
    aggregation_method: AggregationMethod = strawberry.field(  # type: ignore[valid-type]
        default=AggregationMethod.AVERAGE  # type: ignore[attr-defined]
    )
    distance: Distance = strawberry.field(  # type: ignore[valid-type]
        default=Distance.COSINE,  # type: ignore[attr-defined]
        description="Similarity metric (cosine, euclidean, dot_product).",
    )


@strawberry.input(description="Fields to change; omitted fields stay as they are.")
class UpdateFeatureTypeInput:
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    aggregation_method: AggregationMethod | None = strawberry.UNSET  # type: ignore[valid-type]
    is_active: bool | None = strawberry.UNSET
    applies_to: list[EntityType] | None = strawberry.UNSET  # type: ignore[valid-type]
    dimension: int | None = strawberry.field(
        default=strawberry.UNSET, description="Immutable: giving it is an error."
    )
    distance: Distance | None = strawberry.field(  # type: ignore[valid-type]
        default=strawberry.UNSET, description="Immutable: giving it is an error."
    )


@strawberry.input(description="One feature vector to store.")
class FeatureMapInput:
    entity_type: EntityType  # type: ignore[valid-type]
    entity_id: strawberry.ID
    vector: Vector  # type: ignore[valid-type]
    metadata: JSON | None = None  # type: ignore[valid-type]


@strawberry.input(description="A batch of feature maps of one type (POST /v1/admin/fingerprints/ingest).")
class IngestInput:
    feature_type_id: strawberry.ID
    features: list[FeatureMapInput]
    version: int | None = strawberry.field(
        default=None, description="Algorithm version; defaults to the type's current version."
    )


@strawberry.input(description="An entity reference.")
class EntityRefInput:
    entity_type: EntityType  # type: ignore[valid-type]
    entity_id: strawberry.ID


@strawberry.input(description="What to delete: every map of a type, the maps of entities, or both.")
class DeleteFeatureMapsInput:
    feature_type_id: strawberry.ID | None = None
    entities: list[EntityRefInput] | None = None


@strawberry.input(description="An artist to create or update.")
class ArtistInput:
    id: strawberry.ID
    name: str
    popularity: int = 0
    followers_total: int = 0
    genres: list[str] | None = None


@strawberry.input(description="An album to create or update.")
class AlbumInput:
    id: strawberry.ID
    name: str
    artist_ids: list[strawberry.ID] | None = None
    album_type: str = "album"
    label: str | None = None
    popularity: int = 0
    release_date: str | None = None
    release_date_precision: str = "day"


@strawberry.input(description="A track to create or update.")
class TrackInput:
    id: strawberry.ID
    name: str
    album_id: strawberry.ID
    artist_ids: list[strawberry.ID] | None = None
    featured_artist_ids: list[strawberry.ID] | None = None
    duration_ms: int = 0
    popularity: int = 0
    track_number: int = 1
    disc_number: int = 1
    explicit: bool = False
    language: str | None = None


@strawberry.input(description="Catalog entities to upsert (POST /v1/admin/catalog).")
class CatalogInput:
    artists: list[ArtistInput] | None = None
    albums: list[AlbumInput] | None = None
    tracks: list[TrackInput] | None = None


@strawberry.input(description="A playlist and its ordered tracks (POST /v1/admin/playlists).")
class PlaylistInput:
    id: strawberry.ID
    user_id: int
    name: str | None = None
    track_ids: list[strawberry.ID] | None = None


@strawberry.input(description="One feature of a multi-feature query and its weight (spec §7.2).")
class FeatureWeightInput:
    feature_type: strawberry.ID
    weight: float = 1.0


@strawberry.input(
    description="What to search with: one entity, a raw vector, or several entities (centroid)."
)
class SimilarQueryInput:
    entity_type: EntityType | None = strawberry.UNSET  # type: ignore[valid-type]
    entity_id: strawberry.ID | None = strawberry.UNSET
    vector: Vector | None = strawberry.UNSET  # type: ignore[valid-type]
    entities: list[EntityRefInput] | None = strawberry.UNSET


@strawberry.input(description="A similarity query (POST /v1/content/similar).")
class SimilarInput:
    query: SimilarQueryInput
    feature_type: strawberry.ID | None = strawberry.field(
        default=None, description="The feature to compare; or give features."
    )
    features: list[FeatureWeightInput] | None = strawberry.field(
        default=None, description="Several weighted features; combined score sum(w*s)/sum(w)."
    )
    target_entity_type: EntityType | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="Entity type to return (default: the query's); cross-entity allowed."
    )
    limit: int = strawberry.field(default=20, description="How many results, 1..1000.")
    min_score: float | None = strawberry.field(default=None, description="Drop results scoring below this.")
    exclude_ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="Ids never returned."
    )
    include_query: bool = strawberry.field(
        default=False, description="Return the query entity itself when it matches."
    )


@strawberry.input(description="Several entity queries at once (POST /v1/content/similar/batch).")
class SimilarBatchInput:
    queries: list[EntityRefInput]
    feature_type: strawberry.ID | None = None
    features: list[FeatureWeightInput] | None = None
    target_entity_type: EntityType | None = None  # type: ignore[valid-type]
    limit_per_query: int = strawberry.field(default=10, description="Results per query, 1..1000.")
    min_score: float | None = None
    exclude_ids: list[strawberry.ID] | None = None
    deduplicate: bool = strawberry.field(
        default=False, description="Each entity at most once across all lists, where it scores best."
    )


@strawberry.input(description="Which aggregates to recompute (POST /v1/admin/fingerprints/aggregate).")
class TriggerAggregationInput:
    feature_type_id: strawberry.ID | None = strawberry.field(default=None, description="Null: every type.")
    entity_types: list[EntityType] | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="album, artist and/or playlist; null: all three."
    )
    force: bool = strawberry.field(default=False, description="Recompute even what is not stale.")
