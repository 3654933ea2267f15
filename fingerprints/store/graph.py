"""Bulk reads of the catalog graph for GraphQL DataLoaders: one statement per batch of keys.

Each statement has one shape whatever the number of keys (the keys travel as one list
parameter, ``dialect.in_param``), so it is compiled once per process (``dialect.cached_rows``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ClauseElement

from fingerprints.domain import EntityType
from fingerprints.store import dialect
from fingerprints.store.tables import (
    album_artists,
    albums,
    artist_genres,
    artists,
    feature_map_types,
    track_artists,
    tracks,
    user_playlist,
    user_playlist_tracks,
)

# Records are named tuples, made from the row tuples as they come (``_make``): a page reads a
# hundred of them, and a tuple costs a third of what a frozen dataclass does to build.


class AlbumRecord(NamedTuple):
    id: str
    name: str
    album_type: str
    label: str
    popularity: int
    release_date: str
    release_date_precision: str


class TrackRecord(NamedTuple):
    id: str
    name: str
    album_id: str
    track_number: int
    disc_number: int
    popularity: int
    duration_ms: int
    explicit: bool
    language: str | None
    album: AlbumRecord  # read with the track (the join is there anyway): a page asks for it


class ArtistRecord(NamedTuple):
    id: str
    name: str
    popularity: int
    followers_total: int


class PlaylistRecord(NamedTuple):
    id: str
    user_id: int
    name: str | None
    created: int | None


IdsIn = Callable[[Any], Any]  # column -> the filter "column IN (the keys)"


def _by_ids(
    conn: Connection, name: str, build: Callable[[IdsIn], ClauseElement], ids: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Rows of the statement ``build(ids_in)`` makes, where ``ids_in(column)`` is the filter
    ``column IN (the ids)``; compiled once per ``name``."""
    return dialect.cached_rows(
        conn,
        ("graph", name),
        lambda: build(lambda column: dialect.in_param(conn, column, "ids")),
        {"ids": dialect.list_param(conn, ids)},
    )


def _grouped(rows: Sequence[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """(key, value) rows, in order, as key -> [values]."""
    out: dict[str, list[Any]] = defaultdict(list)
    for key, value in rows:
        out[key].append(value)
    return out


def _album_columns() -> tuple[Any, ...]:
    c = albums.c
    return (c.id, c.name, c.album_type, c.label, c.popularity, c.release_date, c.release_date_precision)


def _tracks_stmt(ids_in: IdsIn) -> ClauseElement:
    t = tracks.c
    return (
        select(
            t.id,
            t.name,
            t.track_number,
            t.disc_number,
            t.popularity,
            t.duration_ms,
            t.explicit,
            t.language,
            *_album_columns(),
        )
        .select_from(tracks.join(albums, albums.c.rowid == tracks.c.album_rowid))
        .where(ids_in(t.id))
    )


def tracks_by_id(conn: Connection, ids: Sequence[str]) -> dict[str, TrackRecord]:
    """Tracks by id, each with its album."""
    album = AlbumRecord._make
    return {
        r[0]: TrackRecord(r[0], r[1], r[8], r[2], r[3], r[4], r[5], bool(r[6]), r[7], album(r[8:]))
        for r in _by_ids(conn, "tracks", _tracks_stmt, ids)
    }


def albums_by_id(conn: Connection, ids: Sequence[str]) -> dict[str, AlbumRecord]:
    rows = _by_ids(conn, "albums", lambda ids_in: select(*_album_columns()).where(ids_in(albums.c.id)), ids)
    return {r[0]: AlbumRecord._make(r) for r in rows}


def artists_by_id(conn: Connection, ids: Sequence[str]) -> dict[str, ArtistRecord]:
    c = artists.c
    columns = (c.id, c.name, c.popularity, c.followers_total)
    rows = _by_ids(conn, "artists", lambda ids_in: select(*columns).where(ids_in(c.id)), ids)
    return {r[0]: ArtistRecord._make(r) for r in rows}


def playlists_by_id(conn: Connection, ids: Sequence[str]) -> dict[str, PlaylistRecord]:
    c = user_playlist.c
    columns = (c.id, c.user_id, c.name, c.created)
    rows = _by_ids(conn, "playlists", lambda ids_in: select(*columns).where(ids_in(c.id)), ids)
    return {r[0]: PlaylistRecord._make(r) for r in rows}


def _credits_stmt(ids_in: IdsIn) -> ClauseElement:
    join = track_artists.join(tracks, tracks.c.rowid == track_artists.c.track_rowid).join(
        artists, artists.c.rowid == track_artists.c.artist_rowid
    )
    role = func.coalesce(track_artists.c.role, 0)
    a = artists.c
    return (
        select(tracks.c.id, a.id, a.name, a.popularity, a.followers_total, role)
        .select_from(join)
        .where(ids_in(tracks.c.id))
        .order_by(tracks.c.id, role, a.id)
    )


def track_credits(conn: Connection, track_ids: Sequence[str]) -> dict[str, list[tuple[ArtistRecord, int]]]:
    """track id -> [(artist, role)], main artists first (the artists read in the same statement)."""
    out: dict[str, list[tuple[ArtistRecord, int]]] = defaultdict(list)
    artist = ArtistRecord._make
    for row in _by_ids(conn, "track_credits", _credits_stmt, track_ids):
        out[row[0]].append((artist(row[1:5]), row[5]))
    return out


def _album_artists_stmt(ids_in: IdsIn) -> ClauseElement:
    join = album_artists.join(albums, albums.c.rowid == album_artists.c.album_rowid).join(
        artists, artists.c.rowid == album_artists.c.artist_rowid
    )
    return (
        select(albums.c.id, artists.c.id)
        .select_from(join)
        .where(ids_in(albums.c.id))
        .order_by(albums.c.id, album_artists.c.position)
    )


def album_artist_ids(conn: Connection, album_ids: Sequence[str]) -> dict[str, list[str]]:
    return _grouped(_by_ids(conn, "album_artists", _album_artists_stmt, album_ids))


def _album_tracks_stmt(ids_in: IdsIn) -> ClauseElement:
    return (
        select(albums.c.id, tracks.c.id)
        .select_from(tracks.join(albums, albums.c.rowid == tracks.c.album_rowid))
        .where(ids_in(albums.c.id))
        .order_by(albums.c.id, tracks.c.disc_number, tracks.c.track_number, tracks.c.id)
    )


def album_track_ids(conn: Connection, album_ids: Sequence[str]) -> dict[str, list[str]]:
    """album id -> its track ids in disc and track order."""
    return _grouped(_by_ids(conn, "album_tracks", _album_tracks_stmt, album_ids))


def _genres_stmt(ids_in: IdsIn) -> ClauseElement:
    return (
        select(artists.c.id, artist_genres.c.genre)
        .select_from(artist_genres.join(artists, artists.c.rowid == artist_genres.c.artist_rowid))
        .where(ids_in(artists.c.id))
        .order_by(artists.c.id, artist_genres.c.genre)
    )


def genres(conn: Connection, artist_ids: Sequence[str]) -> dict[str, list[str]]:
    return _grouped(_by_ids(conn, "genres", _genres_stmt, artist_ids))


def current_versions(conn: Connection) -> dict[str, int]:
    """Feature type id -> its current version."""
    t = feature_map_types.c
    return dict(dialect.cached_rows(conn, ("graph", "versions"), lambda: select(t.id, t.current_version), {}))


def playlist_track_ids(conn: Connection, playlist_ids: Sequence[str]) -> dict[str, list[str]]:
    t = user_playlist_tracks.c
    return _grouped(
        _by_ids(
            conn,
            "playlist_tracks",
            lambda ids_in: (
                select(t.playlist_id, t.track_id)
                .where(ids_in(t.playlist_id))
                .order_by(t.playlist_id, t.position, t.id)
            ),
            playlist_ids,
        )
    )


def artist_page(
    conn: Connection, *, artist_id: str, kind: EntityType, first: int, after: str | None
) -> tuple[list[str], bool]:
    """One page of an artist's albums or tracks (keyset pagination on id): ids, has_next."""
    if kind is EntityType.ALBUM:
        join = album_artists.join(albums, albums.c.rowid == album_artists.c.album_rowid).join(
            artists, artists.c.rowid == album_artists.c.artist_rowid
        )
        id_col = albums.c.id
    else:
        join = track_artists.join(tracks, tracks.c.rowid == track_artists.c.track_rowid).join(
            artists, artists.c.rowid == track_artists.c.artist_rowid
        )
        id_col = tracks.c.id
    stmt = select(id_col).select_from(join).where(artists.c.id == artist_id)
    if after is not None:
        stmt = stmt.where(id_col > after)
    stmt = stmt.distinct().order_by(id_col).limit(first + 1)
    ids = [r[0] for r in dialect.raw_rows(conn, stmt)]
    return ids[:first], len(ids) > first
