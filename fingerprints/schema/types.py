"""GraphQL output types, each built from the domain/service value it describes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import strawberry

from fingerprints import domain
from fingerprints.schema.context import Info
from fingerprints.schema.loaders import load_entity, pending
from fingerprints.schema.scalars import JSON, Vector
from fingerprints.service.aggregation import Job as JobValue
from fingerprints.service.catalog import CatalogResult as CatalogResultValue
from fingerprints.service.catalog import PlaylistResult as PlaylistResultValue
from fingerprints.service.feature_types import VersionBump as VersionBumpValue
from fingerprints.service.fingerprints import DeleteResult as DeleteResultValue
from fingerprints.service.fingerprints import Fingerprint as FingerprintValue
from fingerprints.service.ingest import IngestResult as IngestResultValue
from fingerprints.service.similarity import BatchResult as BatchResultValue
from fingerprints.service.similarity import SimilarItem as SimilarItemValue
from fingerprints.service.similarity import SimilarResult as SimilarResultValue
from fingerprints.service.stats import FingerprintStats as StatsValue

if TYPE_CHECKING:
    from fingerprints.schema.catalog import CatalogEntity

EntityType = strawberry.enum(domain.EntityType, description="A catalog entity that can have a fingerprint.")
AggregationMethod = strawberry.enum(
    domain.AggregationMethod, description="How track feature maps are combined into aggregates."
)
Distance = strawberry.enum(domain.Distance, description="The metric similarity search uses for a type.")


@strawberry.type(description="Coverage of a feature type across the catalog.")
class FeatureTypeStats:
    track_count: int = strawberry.field(description="Tracks with a map of this type.")
    album_count: int = strawberry.field(description="Albums with a map of this type.")
    artist_count: int = strawberry.field(description="Artists with a map of this type.")
    playlist_count: int = strawberry.field(description="Playlists with a map of this type.")
    coverage_percent: float = strawberry.field(
        description="Tracks with the feature / tracks in the catalog x 100."
    )

    @classmethod
    def of(cls, stats: domain.FeatureTypeStats) -> FeatureTypeStats:
        return cls(
            track_count=stats.track_count,
            album_count=stats.album_count,
            artist_count=stats.artist_count,
            playlist_count=stats.playlist_count,
            coverage_percent=stats.coverage_percent,
        )


@strawberry.type(description="A registered category of feature maps, e.g. audio_spectrum.")
class FeatureType:
    id: strawberry.ID = strawberry.field(description="Identifier, ^[a-z][a-z0-9_]{0,63}$.")
    name: str = strawberry.field(description="Human-readable name.")
    description: str | None = strawberry.field(description="What this feature represents.")
    dimension: int = strawberry.field(description="Vector length (1..4096); fixed at registration.")
    current_version: int = strawberry.field(description="Current algorithm version.")
    applies_to: list[EntityType] = strawberry.field(  # type: ignore[valid-type]
        description="Entity types this feature applies to; empty means all."
    )
    aggregation_method: AggregationMethod = strawberry.field(  # type: ignore[valid-type]
        description="How albums, artists and playlists aggregate their tracks' maps."
    )
    distance: Distance = strawberry.field(  # type: ignore[valid-type]
        description="Similarity metric; fixed at registration."
    )
    is_active: bool = strawberry.field(description="Inactive types accept no new maps.")
    created_at: int = strawberry.field(description="Registration time, Unix seconds.")
    updated_at: int = strawberry.field(description="Last change, Unix seconds.")
    stats: FeatureTypeStats | None = strawberry.field(description="Coverage counts.")

    @classmethod
    def of(cls, ft: domain.FeatureType, stats: domain.FeatureTypeStats | None = None) -> FeatureType:
        return cls(
            id=strawberry.ID(ft.id),
            name=ft.name,
            description=ft.description,
            dimension=ft.dimension,
            current_version=ft.current_version,
            applies_to=list(ft.applies_to),
            aggregation_method=ft.aggregation_method,
            distance=ft.distance,
            is_active=ft.is_active,
            created_at=ft.created_at,
            updated_at=ft.updated_at,
            stats=FeatureTypeStats.of(stats) if stats is not None else None,
        )


@strawberry.type(description="Result of bumping a feature type's version.")
class VersionBump:
    type_id: strawberry.ID = strawberry.field(description="The feature type.")
    previous_version: int = strawberry.field(description="Version before the bump.")
    new_version: int = strawberry.field(description="Version after the bump.")
    outdated_count: int = strawberry.field(description="Stored maps now below the current version.")

    @classmethod
    def of(cls, bump: VersionBumpValue) -> VersionBump:
        return cls(
            type_id=strawberry.ID(bump.type_id),
            previous_version=bump.previous_version,
            new_version=bump.new_version,
            outdated_count=bump.outdated_count,
        )


@strawberry.type(description="One feature vector of an entity.")
class FeatureMap:
    feature_type: strawberry.ID = strawberry.field(description="Id of the feature type.")
    version: int = strawberry.field(description="Algorithm version the vector was computed with.")
    vector: Vector = strawberry.field(description="The feature vector.")  # type: ignore[valid-type]
    computed_at: int = strawberry.field(description="When it was stored, Unix seconds.")
    metadata: JSON | None = strawberry.field(description="Optional metadata.")  # type: ignore[valid-type]
    outdated: bool = strawberry.field(description="True when below the type's current version.")

    @classmethod
    def of(cls, m: domain.FeatureMap, versions: dict[str, int]) -> FeatureMap:
        """``versions``: each feature type's current version (for ``outdated``)."""
        return cls(
            feature_type=strawberry.ID(m.feature_type_id),
            version=m.version,
            vector=Vector(m.vector),
            computed_at=m.computed_at,
            metadata=m.metadata,
            outdated=m.version < versions.get(m.feature_type_id, m.version),
        )


@strawberry.type(description="All feature maps of one entity.")
class Fingerprint:
    entity_type: EntityType  # type: ignore[valid-type]
    entity_id: strawberry.ID
    last_updated: int = strawberry.field(description="Newest computed_at of its maps.")
    feature_maps: list[FeatureMap] = strawberry.field(description="Its maps, by feature type id.")

    @classmethod
    def of(cls, fp: FingerprintValue) -> Fingerprint:
        return cls(
            entity_type=fp.entity_type,
            entity_id=strawberry.ID(fp.entity_id),
            last_updated=fp.last_updated,
            feature_maps=[
                FeatureMap(
                    feature_type=strawberry.ID(m.feature_type_id),
                    version=m.version,
                    vector=Vector(m.vector),
                    computed_at=m.computed_at,
                    metadata=m.metadata,
                    outdated=fp.outdated(m),
                )
                for m in fp.feature_maps
            ],
        )


@strawberry.type(description="A rejected item of a batch; the other items were still applied.")
class ItemError:
    index: int = strawberry.field(description="Position of the item in its list.")
    entity_type: str | None = strawberry.field(description="Entity type the item named, if any.")
    entity_id: str | None = strawberry.field(description="Entity id the item named, if any.")
    code: str = strawberry.field(description="Machine-readable reason, e.g. DIMENSION_MISMATCH.")
    message: str = strawberry.field(description="Human-readable reason.")

    @classmethod
    def of(cls, e: domain.ItemError) -> ItemError:
        return cls(
            index=e.index, entity_type=e.entity_type, entity_id=e.entity_id, code=e.code, message=e.message
        )


@strawberry.type(description="Outcome of an ingest batch.")
class IngestResult:
    ingested: int = strawberry.field(description="Items stored.")
    errors: list[ItemError] = strawberry.field(description="Items rejected, with reasons.")

    @classmethod
    def of(cls, r: IngestResultValue) -> IngestResult:
        return cls(ingested=r.ingested, errors=[ItemError.of(e) for e in r.errors])


@strawberry.type(description="Count of one entity type's deleted maps.")
class DeletedCount:
    entity_type: EntityType  # type: ignore[valid-type]
    count: int


@strawberry.type(description="Outcome of deleteFeatureMaps.")
class DeleteResult:
    deleted: int = strawberry.field(description="Feature maps deleted.")
    by_entity_type: list[DeletedCount] = strawberry.field(description="Deleted maps per entity type.")

    @classmethod
    def of(cls, r: DeleteResultValue) -> DeleteResult:
        return cls(
            deleted=r.deleted,
            by_entity_type=[
                DeletedCount(entity_type=domain.EntityType(k), count=v) for k, v in r.by_entity_type.items()
            ],
        )


@strawberry.type(description="Outcome of upsertCatalog.")
class CatalogResult:
    artists: int = strawberry.field(description="Artists upserted.")
    albums: int = strawberry.field(description="Albums upserted.")
    tracks: int = strawberry.field(description="Tracks upserted.")
    errors: list[ItemError] = strawberry.field(
        description="Rejected items; entityType says which list (artist, album, track)."
    )

    @classmethod
    def of(cls, r: CatalogResultValue) -> CatalogResult:
        return cls(
            artists=r.artists, albums=r.albums, tracks=r.tracks, errors=[ItemError.of(e) for e in r.errors]
        )


@strawberry.type(description="Outcome of upsertPlaylist.")
class PlaylistResult:
    id: strawberry.ID
    user_id: int = strawberry.field(description="Owner of the playlist.")
    track_count: int = strawberry.field(description="Tracks stored in the playlist.")
    errors: list[ItemError] = strawberry.field(description="Track ids left out (not in the catalog).")

    @classmethod
    def of(cls, r: PlaylistResultValue) -> PlaylistResult:
        return cls(
            id=strawberry.ID(r.id),
            user_id=r.user_id,
            track_count=r.track_count,
            errors=[ItemError.of(e) for e in r.errors],
        )


@strawberry.type(description="One similar entity.")
class SimilarItem:
    entity_type: EntityType = strawberry.field(description="Type of the similar entity.")  # type: ignore[valid-type]
    entity_id: strawberry.ID = strawberry.field(description="Id of the similar entity.")
    score: float = strawberry.field(
        description="Similarity: cosine in [-1, 1], dot product raw, euclidean 1 / (1 + distance); "
        "a weighted mean over features for multi-feature queries."
    )
    distance: float | None = strawberry.field(description="Euclidean distance (euclidean types only).")

    @strawberry.field(description="The similar entity's details (null if it is not visible to you).")
    def entity(
        self, info: Info
    ) -> Annotated[CatalogEntity, strawberry.lazy("fingerprints.schema.catalog")] | None:  # noqa: F821
        return pending(load_entity(info, self.entity_type, self.entity_id))

    @classmethod
    def of(cls, item: SimilarItemValue) -> SimilarItem:
        return cls(
            entity_type=item.entity_type,
            entity_id=strawberry.ID(item.entity_id),
            score=item.score,
            distance=item.distance,
        )


@strawberry.type(description="Entities similar to a query, best first (ties by id).")
class SimilarResult:
    target_entity_type: EntityType = strawberry.field(description="Entity type searched.")  # type: ignore[valid-type]
    results: list[SimilarItem] = strawberry.field(description="The similar entities.")

    @classmethod
    def of(cls, result: SimilarResultValue) -> SimilarResult:
        return cls(
            target_entity_type=result.target_entity_type,
            results=[SimilarItem.of(i) for i in result.results],
        )


@strawberry.type(description="An entity reference.")
class EntityRef:
    entity_type: EntityType = strawberry.field(description="Entity type.")  # type: ignore[valid-type]
    entity_id: strawberry.ID = strawberry.field(description="Entity id.")


@strawberry.type(description="The results of one query of a batch.")
class SimilarBatchEntry:
    query: EntityRef = strawberry.field(description="The query entity.")
    results: list[SimilarItem] = strawberry.field(description="Its similar entities.")


@strawberry.type(description="Results of similarBatch, one entry per query in order.")
class SimilarBatchResult:
    target_entity_type: EntityType = strawberry.field(description="Entity type searched.")  # type: ignore[valid-type]
    results: list[SimilarBatchEntry] = strawberry.field(description="One entry per query.")

    @classmethod
    def of(cls, result: BatchResultValue) -> SimilarBatchResult:
        return cls(
            target_entity_type=result.target_entity_type,
            results=[
                SimilarBatchEntry(
                    query=EntityRef(entity_type=ref.entity_type, entity_id=strawberry.ID(ref.entity_id)),
                    results=[SimilarItem.of(i) for i in items],
                )
                for ref, items in zip(result.queries, result.results, strict=True)
            ],
        )


@strawberry.type(description="How far a job has come.")
class JobProgress:
    processed: int = strawberry.field(description="Aggregates recomputed so far.")
    total: int = strawberry.field(description="Aggregates the job recomputes.")
    percent: float = strawberry.field(description="processed / total x 100.")


@strawberry.type(description="An aggregation job: recomputes album, artist and playlist fingerprints.")
class AggregationJob:
    id: strawberry.ID = strawberry.field(description="Job id.")
    status: str = strawberry.field(description="queued, running, succeeded, failed or cancelled.")
    feature_type_id: strawberry.ID | None = strawberry.field(description="Only this type; null: all.")
    entity_types: list[EntityType] = strawberry.field(description="Aggregates it covers.")  # type: ignore[valid-type]
    force: bool = strawberry.field(description="Recompute everything, not only what is stale.")
    progress: JobProgress = strawberry.field(description="Progress.")
    created_at: int = strawberry.field(description="Queued at, Unix seconds.")
    started_at: int | None = strawberry.field(description="Started at, Unix seconds.")
    finished_at: int | None = strawberry.field(description="Finished at, Unix seconds.")
    errors: list[str] = strawberry.field(description="What failed, if anything.")

    @classmethod
    def of(cls, job: JobValue) -> AggregationJob:
        return cls(
            id=strawberry.ID(job.id),
            status=job.status,
            feature_type_id=strawberry.ID(job.feature_type_id) if job.feature_type_id else None,
            entity_types=list(job.entity_types),
            force=job.force,
            progress=JobProgress(processed=job.processed, total=job.total, percent=job.percent),
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            errors=list(job.errors),
        )


@strawberry.type(description="Coverage of one feature type for one entity type.")
class FeatureCoverage:
    feature_type: strawberry.ID = strawberry.field(description="Feature type id.")
    entity_type: EntityType = strawberry.field(description="Entity type.")  # type: ignore[valid-type]
    total: int = strawberry.field(description="Entities of this type in the catalog.")
    with_feature: int = strawberry.field(description="Entities with a map of this feature type.")
    outdated: int = strawberry.field(description="Maps below the type's current version.")


@strawberry.type(description="Service-wide statistics (GET /v1/admin/fingerprints/stats).")
class FingerprintStats:
    coverage: list[FeatureCoverage] = strawberry.field(description="Per feature type and entity type.")
    storage_bytes: int = strawberry.field(description="Database files plus index snapshots, in bytes.")
    index_status: str = strawberry.field(description="ready, building or lazy.")
    index: JSON = strawberry.field(  # type: ignore[valid-type]
        description="Each index key: kind (exact/hnsw), size, fresh tier, measured recall, source."
    )
    last_aggregation: int | None = strawberry.field(description="When the last job succeeded.")

    @classmethod
    def of(cls, s: StatsValue) -> FingerprintStats:
        return cls(
            coverage=[
                FeatureCoverage(
                    feature_type=strawberry.ID(type_id),
                    entity_type=entity_type,
                    total=c.total,
                    with_feature=c.with_feature,
                    outdated=c.outdated,
                )
                for type_id, per_type in s.feature_types.items()
                for entity_type, c in per_type.items()
            ],
            storage_bytes=s.storage_bytes,
            index_status=s.index_status,
            index=JSON(s.index),
            last_aggregation=s.last_aggregation,
        )
