"""Table definitions: the spec's fingerprint tables (§4.2, §4.3) and pezzottify's catalog (design §6).

The catalog tables mirror pezzottify's columns so the service can run on an existing
``catalog.db`` / ``user.db``; there they already exist and are never altered.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, ForeignKey, Index, Integer, LargeBinary, Table, Text, text
from sqlmodel import Field, SQLModel

# ---------------------------------------------------------------- catalog.db: fingerprints


class FeatureMapTypeRow(SQLModel, table=True):
    __tablename__ = "feature_map_types"

    id: str = Field(sa_column=Column(Text, primary_key=True))
    name: str = Field(sa_column=Column(Text, nullable=False))
    description: str | None = Field(default=None, sa_column=Column(Text))
    dimension: int = Field(sa_column=Column(Integer, nullable=False))
    current_version: int = Field(
        default=1, sa_column=Column(Integer, nullable=False, server_default=text("1"))
    )
    applies_to: str | None = Field(default=None, sa_column=Column(Text))  # JSON array or NULL
    aggregation_method: str = Field(
        default="average", sa_column=Column(Text, nullable=False, server_default="average")
    )
    is_active: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default=text("1")))
    created_at: int = Field(sa_column=Column(Integer, nullable=False))
    updated_at: int = Field(sa_column=Column(Integer, nullable=False))
    # Beyond the spec: the metric similarity uses for this type.
    distance: str = Field(default="cosine", sa_column=Column(Text, nullable=False, server_default="cosine"))


class FeatureMapRow(SQLModel, table=True):
    __tablename__ = "feature_maps"
    __table_args__ = (
        Index("idx_feature_maps_entity", "entity_type", "entity_id"),
        Index("idx_feature_maps_type", "feature_type_id"),
        Index("idx_feature_maps_version", "feature_type_id", "version"),
    )

    entity_type: str = Field(sa_column=Column(Text, primary_key=True, nullable=False))
    entity_id: str = Field(sa_column=Column(Text, primary_key=True, nullable=False))
    feature_type_id: str = Field(
        sa_column=Column(Text, ForeignKey("feature_map_types.id"), primary_key=True, nullable=False)
    )
    version: int = Field(sa_column=Column(Integer, nullable=False))
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    computed_at: int = Field(sa_column=Column(Integer, nullable=False))
    metadata_: str | None = Field(default=None, sa_column=Column("metadata", Text))


# ---------------------------------------------------------------- catalog.db: pezzottify


class ArtistRow(SQLModel, table=True):
    __tablename__ = "artists"

    rowid: int | None = Field(default=None, primary_key=True)
    id: str = Field(sa_column=Column(Text, unique=True, nullable=False))
    name: str = Field(sa_column=Column(Text, nullable=False))
    followers_total: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    popularity: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))


class AlbumRow(SQLModel, table=True):
    __tablename__ = "albums"

    rowid: int | None = Field(default=None, primary_key=True)
    id: str = Field(sa_column=Column(Text, unique=True, nullable=False))
    name: str = Field(sa_column=Column(Text, nullable=False))
    album_type: str = Field(default="album", sa_column=Column(Text, nullable=False, default="album"))
    label: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    popularity: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    release_date: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    release_date_precision: str = Field(default="day", sa_column=Column(Text, nullable=False, default="day"))


class TrackRow(SQLModel, table=True):
    __tablename__ = "tracks"

    rowid: int | None = Field(default=None, primary_key=True)
    id: str = Field(sa_column=Column(Text, unique=True, nullable=False))
    name: str = Field(sa_column=Column(Text, nullable=False))
    album_rowid: int = Field(sa_column=Column(Integer, nullable=False, index=True))
    track_number: int = Field(default=1, sa_column=Column(Integer, nullable=False, default=1))
    disc_number: int = Field(default=1, sa_column=Column(Integer, nullable=False, default=1))
    popularity: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    duration_ms: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    explicit: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    language: str | None = Field(default=None, sa_column=Column(Text))


class TrackArtistRow(SQLModel, table=True):
    __tablename__ = "track_artists"

    track_rowid: int = Field(sa_column=Column(Integer, primary_key=True, nullable=False))
    artist_rowid: int = Field(sa_column=Column(Integer, primary_key=True, nullable=False, index=True))
    role: int | None = Field(default=0, sa_column=Column(Integer))  # 0 main, 1 featured


class AlbumArtistRow(SQLModel, table=True):
    __tablename__ = "album_artists"

    album_rowid: int = Field(sa_column=Column(Integer, primary_key=True, nullable=False))
    artist_rowid: int = Field(sa_column=Column(Integer, primary_key=True, nullable=False, index=True))
    position: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))


class ArtistGenreRow(SQLModel, table=True):
    __tablename__ = "artist_genres"

    artist_rowid: int = Field(sa_column=Column(Integer, primary_key=True, nullable=False))
    genre: str = Field(sa_column=Column(Text, primary_key=True, nullable=False))


# ---------------------------------------------------------------- user.db


class UserPlaylistRow(SQLModel, table=True):
    __tablename__ = "user_playlist"

    id: str = Field(sa_column=Column(Text, primary_key=True))
    user_id: int = Field(sa_column=Column(Integer, nullable=False, index=True))
    name: str | None = Field(default=None, sa_column=Column(Text))
    creator_id: int = Field(sa_column=Column(Integer, nullable=False))
    created: int | None = Field(default=None, sa_column=Column(Integer))


class UserPlaylistTrackRow(SQLModel, table=True):
    __tablename__ = "user_playlist_tracks"

    id: int | None = Field(default=None, primary_key=True)
    track_id: str = Field(sa_column=Column(Text, nullable=False))
    playlist_id: str = Field(sa_column=Column(Text, nullable=False, index=True))
    position: int = Field(sa_column=Column(Integer, nullable=False))


class PlaylistFeatureMapRow(SQLModel, table=True):
    __tablename__ = "playlist_feature_maps"

    playlist_id: str = Field(
        sa_column=Column(
            Text,
            ForeignKey("user_playlist.id", ondelete="CASCADE"),
            primary_key=True,
            nullable=False,
        )
    )
    feature_type_id: str = Field(sa_column=Column(Text, primary_key=True, nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    computed_at: int = Field(sa_column=Column(Integer, nullable=False))
    metadata_: str | None = Field(default=None, sa_column=Column("metadata", Text))


# ---------------------------------------------------------------- both databases


class IndexGenerationRow(SQLModel, table=True):
    """Bumped in the same transaction as every write to a key's feature maps, so an index
    snapshot can prove it matches the database (schema version 2)."""

    __tablename__ = "fingerprints_index_generation"

    feature_type_id: str = Field(sa_column=Column(Text, primary_key=True, nullable=False))
    entity_type: str = Field(sa_column=Column(Text, primary_key=True, nullable=False))
    generation: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))


class StaleRow(SQLModel, table=True):
    """An aggregate (album, artist, playlist) whose inputs changed since it was computed."""

    __tablename__ = "fingerprints_stale"

    feature_type_id: str = Field(sa_column=Column(Text, primary_key=True, nullable=False))
    entity_type: str = Field(sa_column=Column(Text, primary_key=True, nullable=False))
    entity_id: str = Field(sa_column=Column(Text, primary_key=True, nullable=False))
    marked_at: int = Field(sa_column=Column(Integer, nullable=False))


class JobRow(SQLModel, table=True):
    """An aggregation job (catalog.db); survives restarts."""

    __tablename__ = "fingerprints_jobs"

    id: str = Field(sa_column=Column(Text, primary_key=True))
    feature_type_id: str | None = Field(default=None, sa_column=Column(Text))
    entity_types: str = Field(sa_column=Column(Text, nullable=False))  # JSON array
    force: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    trigger: str = Field(default="api", sa_column=Column(Text, nullable=False, default="api"))
    status: str = Field(sa_column=Column(Text, nullable=False, index=True))
    processed: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    total: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    created_at: int = Field(sa_column=Column(Integer, nullable=False))
    started_at: int | None = Field(default=None, sa_column=Column(Integer))
    finished_at: int | None = Field(default=None, sa_column=Column(Integer))
    errors: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    # Which replica runs the job and until when its lease holds (schema version 4): another
    # replica may take over a running job whose lease has expired.
    lease_owner: str | None = Field(default=None, sa_column=Column(Text))
    lease_expires_at: float | None = Field(default=None, sa_column=Column(Float))


class ChangeRow(SQLModel, table=True):
    """The change log (both databases, schema version 4): one row per committed write to
    feature maps or feature types, in commit order, so every replica can apply the writes of
    the others to its in-memory index. ``kind``: ``maps`` (these entities' maps changed: read
    them again), ``key`` (every map of the key changed: reload it; no entity type = every
    key of the feature type in this database), ``type`` (the feature type's row changed)."""

    __tablename__ = "fingerprints_changes"

    seq: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    )
    origin: str = Field(sa_column=Column(Text, nullable=False))
    kind: str = Field(sa_column=Column(Text, nullable=False))
    feature_type_id: str = Field(sa_column=Column(Text, nullable=False))
    entity_type: str | None = Field(default=None, sa_column=Column(Text))
    entity_ids: str | None = Field(default=None, sa_column=Column(Text))  # JSON array
    created_at: float = Field(sa_column=Column(Float, nullable=False))


def _table(model: type[SQLModel]) -> Table:
    return model.__table__  # type: ignore[attr-defined,no-any-return]


feature_map_types = _table(FeatureMapTypeRow)
feature_maps = _table(FeatureMapRow)
artists = _table(ArtistRow)
albums = _table(AlbumRow)
tracks = _table(TrackRow)
track_artists = _table(TrackArtistRow)
album_artists = _table(AlbumArtistRow)
artist_genres = _table(ArtistGenreRow)
user_playlist = _table(UserPlaylistRow)
user_playlist_tracks = _table(UserPlaylistTrackRow)
playlist_feature_maps = _table(PlaylistFeatureMapRow)

index_generation = _table(IndexGenerationRow)
stale = _table(StaleRow)
jobs = _table(JobRow)
changes = _table(ChangeRow)

CATALOG_TABLES = [artists, albums, tracks, track_artists, album_artists, artist_genres]
USER_TABLES = [user_playlist, user_playlist_tracks]
