"""The catalog graph (design §5, §6): tracks, albums, artists and playlists, each with its
fingerprint and its similar entities. Every lookup goes through the request's DataLoaders."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any

import strawberry
from graphql import FieldNode, SelectionNode

from fingerprints import domain
from fingerprints.errors import NotFound, ValidationError
from fingerprints.schema.context import Info
from fingerprints.schema.inputs import FeatureWeightInput
from fingerprints.schema.loaders import load_entity, pending
from fingerprints.schema.prefetch import prefetch, selected, similar_arguments, similar_node
from fingerprints.schema.searches import similar_params
from fingerprints.schema.types import EntityType, FeatureMap, SimilarItem
from fingerprints.service import graph
from fingerprints.service.base import call
from fingerprints.store.graph import AlbumRecord, ArtistRecord, PlaylistRecord, TrackRecord

MAX_PAGE = 100


def _fingerprint(
    root: Any,
    info: Info,
    types: Annotated[
        list[strawberry.ID] | None, strawberry.argument(description="Only these feature types; null: all.")
    ] = None,
) -> list[FeatureMap]:
    key = (
        root.ENTITY_TYPE,
        str(root.id),
        tuple(sorted(str(t) for t in types)) if types is not None else None,
    )
    return pending(info.context.loaders.feature_maps.load(key))


async def _similar(
    root: Any,
    info: Info,
    feature_type: strawberry.ID | None = None,
    features: list[FeatureWeightInput] | None = None,
    limit: Annotated[int, strawberry.argument(description="1..1000.")] = 20,
    min_score: float | None = None,
    target_entity_type: Annotated[
        EntityType | None,  # type: ignore[valid-type]
        strawberry.argument(description="Default: this entity's type."),
    ] = None,
    exclude_ids: list[strawberry.ID] | None = None,
) -> list[SimilarItem]:
    params = similar_params(
        root.ENTITY_TYPE,
        str(root.id),
        feature_type=feature_type,
        features=features,
        limit=limit,
        min_score=min_score,
        target_entity_type=target_entity_type,
        exclude_ids=exclude_ids,
    )
    result = await info.context.searches.run(params)
    items = [SimilarItem.of(item) for item in result.results]
    entity = selected(info, "entity")
    if entity is not None and items:
        await _prefetch_entities(info, result.target_entity_type, [str(i.entity_id) for i in items], entity)
    return items


async def _prefetch_entities(
    info: Info, entity_type: domain.EntityType, ids: list[str], selections: Any
) -> None:
    """The similar entities and what their selected fields ask for, loaded in one round before
    the items are returned (see schema/prefetch.py)."""
    entities = [load_entity(info, entity_type, i) for i in ids]
    prefetch(info, entity_type, ids, selections)
    if entity_type is domain.EntityType.PLAYLIST:  # coroutines: a visibility check after the load
        await asyncio.gather(*entities, return_exceptions=True)
    await info.context.loaders.rounds.idle()


async def prefetch_similar(
    info: Info, entity_type: domain.EntityType, entity_id: str, selected: Sequence[SelectionNode]
) -> None:
    """When the entity's selection asks for ``similar { entity { ... } }``, run that search
    now and ask the loaders for the similar entities and their selected fields' data: the
    caller's round then reads them with the entity itself, and ``similar`` finds all of it
    done (see schema/searches.py).
    Best effort: a search that fails, or arguments that do not convert here, are left to the
    field, which reports them."""
    node = similar_node(info, entity_type, selected)
    if node is None or node.selection_set is None:
        return
    entity = [
        s for s in node.selection_set.selections if isinstance(s, FieldNode) and s.name.value == "entity"
    ]
    if not entity:
        return  # no entities to read: nothing to gain from searching first
    params = similar_arguments(info, entity_type, entity_id, node)
    if params is None:
        return
    try:
        result = await info.context.searches.run(params)
    except Exception:  # noqa: BLE001 - raised again, the same, where the field asks for it
        return
    target = result.target_entity_type
    if not result.results or target is domain.EntityType.PLAYLIST:
        return  # a playlist's visibility is known only once it is read: left to the field
    ids = [str(item.entity_id) for item in result.results]
    for i in ids:
        load_entity(info, target, i)
    selections = [s for field in entity if field.selection_set for s in field.selection_set.selections]
    prefetch(info, target, ids, selections)


def fingerprint_field() -> Any:
    return strawberry.field(
        resolver=_fingerprint, description="Feature maps of this entity (resolved only when asked)."
    )


def similar_field() -> Any:
    return strawberry.field(
        resolver=_similar,
        description="Entities similar to this one by one feature type or several weighted ones; "
        "select `entity` on each item for its details.",
    )


@strawberry.type(description="An artist credited on a track.")
class ArtistCredit:
    artist: Artist = strawberry.field(description="The artist.")
    role: str = strawberry.field(description="main or featured.")

    @classmethod
    def of(cls, r: ArtistRecord, role: int) -> ArtistCredit:
        return cls(artist=Artist.of(r), role="main" if role == 0 else "featured")


@strawberry.type(description="A page of albums.")
class AlbumPage:
    items: list[Album] = strawberry.field(description="The albums, by id.")
    end_cursor: str | None = strawberry.field(description="Pass as `after` for the next page.")
    has_next_page: bool = strawberry.field(description="Whether more follow.")


@strawberry.type(description="A page of tracks.")
class TrackPage:
    items: list[Track] = strawberry.field(description="The tracks, by id.")
    end_cursor: str | None = strawberry.field(description="Pass as `after` for the next page.")
    has_next_page: bool = strawberry.field(description="Whether more follow.")


@strawberry.type(description="A track of the catalog.")
class Track:
    ENTITY_TYPE = domain.EntityType.TRACK
    id: strawberry.ID = strawberry.field(description="Track id.")
    name: str = strawberry.field(description="Title.")
    duration_ms: int = strawberry.field(description="Length in milliseconds.")
    popularity: int = strawberry.field(description="0-100.")
    explicit: bool = strawberry.field(description="Explicit lyrics.")
    track_number: int = strawberry.field(description="Position on its disc.")
    disc_number: int = strawberry.field(description="Disc of the album.")
    language: str | None = strawberry.field(description="Language code.")
    # Read with the track (one statement) and kept as a plain value: no resolver call per track.
    album: Album | None = strawberry.field(description="The album it is on.")
    fingerprint: list[FeatureMap] = fingerprint_field()
    similar: list[SimilarItem] = similar_field()

    @classmethod
    def of(cls, r: TrackRecord) -> Track:
        return cls(
            id=strawberry.ID(r.id),
            name=r.name,
            duration_ms=r.duration_ms,
            popularity=r.popularity,
            explicit=r.explicit,
            track_number=r.track_number,
            disc_number=r.disc_number,
            language=r.language,
            album=Album.of(r.album),
        )

    @strawberry.field(description="Its artists, main artists first, with their role.")
    def artists(self, info: Info) -> list[ArtistCredit]:
        return pending(info.context.loaders.track_credits.load(str(self.id)))


@strawberry.type(description="An album of the catalog.")
class Album:
    ENTITY_TYPE = domain.EntityType.ALBUM
    id: strawberry.ID = strawberry.field(description="Album id.")
    name: str = strawberry.field(description="Title.")
    album_type: str = strawberry.field(description="album, single, compilation...")
    label: str = strawberry.field(description="Record label.")
    popularity: int = strawberry.field(description="0-100.")
    release_date: str = strawberry.field(description="Release date (precision: releaseDatePrecision).")
    release_date_precision: str = strawberry.field(description="day, month or year.")
    fingerprint: list[FeatureMap] = fingerprint_field()
    similar: list[SimilarItem] = similar_field()

    @classmethod
    def of(cls, r: AlbumRecord) -> Album:
        return cls(
            id=strawberry.ID(r.id),
            name=r.name,
            album_type=r.album_type,
            label=r.label,
            popularity=r.popularity,
            release_date=r.release_date,
            release_date_precision=r.release_date_precision,
        )

    @strawberry.field(description="Its artists, in credit order.")
    def artists(self, info: Info) -> list[Artist]:
        return pending(info.context.loaders.album_artists.load(str(self.id)))

    @strawberry.field(description="Its tracks in disc and track order.")
    def tracks(self, info: Info) -> list[Track]:
        return pending(info.context.loaders.album_tracks.load(str(self.id)))


def _page_size(first: int) -> int:
    if not 1 <= first <= MAX_PAGE:
        raise ValidationError(f"first must be in 1..{MAX_PAGE}", field="first")
    return first


@strawberry.type(description="An artist of the catalog.")
class Artist:
    ENTITY_TYPE = domain.EntityType.ARTIST
    id: strawberry.ID = strawberry.field(description="Artist id.")
    name: str = strawberry.field(description="Name.")
    popularity: int = strawberry.field(description="0-100.")
    followers_total: int = strawberry.field(description="Followers.")
    fingerprint: list[FeatureMap] = fingerprint_field()
    similar: list[SimilarItem] = similar_field()

    @classmethod
    def of(cls, r: ArtistRecord) -> Artist:
        return cls(
            id=strawberry.ID(r.id), name=r.name, popularity=r.popularity, followers_total=r.followers_total
        )

    @strawberry.field(description="Genres, alphabetically.")
    def genres(self, info: Info) -> list[str]:
        return pending(info.context.loaders.genres.load(str(self.id)))

    @strawberry.field(description="Albums credited to the artist, by id, a page at a time.")
    async def albums(self, info: Info, first: int = 20, after: str | None = None) -> AlbumPage:
        ids, more = await call(
            _artist_page, info, str(self.id), domain.EntityType.ALBUM, _page_size(first), after
        )
        albums = await info.context.loaders.album.load_many(ids)
        return AlbumPage(
            items=[a for a in albums if a is not None],
            end_cursor=ids[-1] if ids else None,
            has_next_page=more,
        )

    @strawberry.field(description="Tracks the artist is credited on, by id, a page at a time.")
    async def tracks(self, info: Info, first: int = 20, after: str | None = None) -> TrackPage:
        ids, more = await call(
            _artist_page, info, str(self.id), domain.EntityType.TRACK, _page_size(first), after
        )
        tracks = await info.context.loaders.track.load_many(ids)
        return TrackPage(
            items=[t for t in tracks if t is not None],
            end_cursor=ids[-1] if ids else None,
            has_next_page=more,
        )


def _artist_page(
    info: Info, artist_id: str, kind: domain.EntityType, first: int, after: str | None
) -> tuple[list[str], bool]:
    return graph.artist_page(info.context.services, artist_id=artist_id, kind=kind, first=first, after=after)


@strawberry.type(description="A user's playlist: visible to its owner and to admin only.")
class Playlist:
    ENTITY_TYPE = domain.EntityType.PLAYLIST
    id: strawberry.ID = strawberry.field(description="Playlist id.")
    name: str | None = strawberry.field(description="Title.")
    owner_id: int = strawberry.field(description="The owning user's id.")
    created: int | None = strawberry.field(description="Creation time, Unix seconds.")
    fingerprint: list[FeatureMap] = fingerprint_field()
    similar: list[SimilarItem] = similar_field()

    @classmethod
    def of(cls, r: PlaylistRecord) -> Playlist:
        return cls(id=strawberry.ID(r.id), name=r.name, owner_id=r.user_id, created=r.created)

    @strawberry.field(description="Its tracks in playlist order.")
    def tracks(self, info: Info) -> list[Track]:
        return pending(info.context.loaders.playlist_tracks.load(str(self.id)))


CatalogEntity = Annotated[
    Track | Album | Artist | Playlist,
    strawberry.union("CatalogEntity", description="A track, album, artist or playlist."),
]


async def require_entity(info: Info, entity_type: domain.EntityType, entity_id: str) -> Any:
    entity = await load_entity(info, entity_type, entity_id)
    if entity is None:
        raise NotFound(f"{entity_type.value} {entity_id!r} not found", field="id")
    return entity
