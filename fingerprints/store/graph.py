"""Bulk reads of the catalog graph for GraphQL DataLoaders: one statement per batch of keys."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from fingerprints.domain import EntityType
from fingerprints.store import dialect
from fingerprints.store.tables import (
    album_artists,
    albums,
    artist_genres,
    artists,
    track_artists,
    tracks,
    user_playlist,
    user_playlist_tracks,
)


@dataclass(frozen=True, slots=True)
class TrackRecord:
    id: str
    name: str
    album_id: str
    track_number: int
    disc_number: int
    popularity: int
    duration_ms: int
    explicit: bool
    language: str | None


@dataclass(frozen=True, slots=True)
class AlbumRecord:
    id: str
    name: str
    album_type: str
    label: str
    popularity: int
    release_date: str
    release_date_precision: str


@dataclass(frozen=True, slots=True)
class ArtistRecord:
    id: str
    name: str
    popularity: int
    followers_total: int


@dataclass(frozen=True, slots=True)
class PlaylistRecord:
    id: str
    user_id: int
    name: str | None
    created: int | None


def _grouped(rows: Sequence[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """(key, value) rows, in order, as key -> [values]."""
    out: dict[str, list[Any]] = defaultdict(list)
    for key, value in rows:
        out[key].append(value)
    return out


def tracks_by_id(conn: Connection, ids: Sequence[str]) -> dict[str, TrackRecord]:
    stmt = (
        select(
            tracks.c.id,
            tracks.c.name,
            albums.c.id,
            tracks.c.track_number,
            tracks.c.disc_number,
            tracks.c.popularity,
            tracks.c.duration_ms,
            tracks.c.explicit,
            tracks.c.language,
        )
        .select_from(tracks.join(albums, albums.c.rowid == tracks.c.album_rowid))
        .where(tracks.c.id.in_(list(ids)))
    )
    return {
        r[0]: TrackRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8])
        for r in dialect.raw_rows(conn, stmt)
    }


def albums_by_id(conn: Connection, ids: Sequence[str]) -> dict[str, AlbumRecord]:
    c = albums.c
    stmt = select(
        c.id, c.name, c.album_type, c.label, c.popularity, c.release_date, c.release_date_precision
    ).where(c.id.in_(list(ids)))
    return {r[0]: AlbumRecord(*r) for r in dialect.raw_rows(conn, stmt)}


def artists_by_id(conn: Connection, ids: Sequence[str]) -> dict[str, ArtistRecord]:
    c = artists.c
    stmt = select(c.id, c.name, c.popularity, c.followers_total).where(c.id.in_(list(ids)))
    return {r[0]: ArtistRecord(*r) for r in dialect.raw_rows(conn, stmt)}


def playlists_by_id(conn: Connection, ids: Sequence[str]) -> dict[str, PlaylistRecord]:
    c = user_playlist.c
    stmt = select(c.id, c.user_id, c.name, c.created).where(c.id.in_(list(ids)))
    return {r[0]: PlaylistRecord(*r) for r in dialect.raw_rows(conn, stmt)}


def track_credits(conn: Connection, track_ids: Sequence[str]) -> dict[str, list[tuple[str, int]]]:
    """track id -> [(artist id, role)], main artists first."""
    join = track_artists.join(tracks, tracks.c.rowid == track_artists.c.track_rowid).join(
        artists, artists.c.rowid == track_artists.c.artist_rowid
    )
    role = func.coalesce(track_artists.c.role, 0)
    stmt = (
        select(tracks.c.id, artists.c.id, role)
        .select_from(join)
        .where(tracks.c.id.in_(list(track_ids)))
        .order_by(tracks.c.id, role, artists.c.id)
    )
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for track_id, artist_id, artist_role in dialect.raw_rows(conn, stmt):
        out[track_id].append((artist_id, artist_role))
    return out


def album_artist_ids(conn: Connection, album_ids: Sequence[str]) -> dict[str, list[str]]:
    join = album_artists.join(albums, albums.c.rowid == album_artists.c.album_rowid).join(
        artists, artists.c.rowid == album_artists.c.artist_rowid
    )
    stmt = (
        select(albums.c.id, artists.c.id)
        .select_from(join)
        .where(albums.c.id.in_(list(album_ids)))
        .order_by(albums.c.id, album_artists.c.position)
    )
    return _grouped(dialect.raw_rows(conn, stmt))


def album_track_ids(conn: Connection, album_ids: Sequence[str]) -> dict[str, list[str]]:
    """album id -> its track ids in disc and track order."""
    join = tracks.join(albums, albums.c.rowid == tracks.c.album_rowid)
    stmt = (
        select(albums.c.id, tracks.c.id)
        .select_from(join)
        .where(albums.c.id.in_(list(album_ids)))
        .order_by(albums.c.id, tracks.c.disc_number, tracks.c.track_number, tracks.c.id)
    )
    return _grouped(dialect.raw_rows(conn, stmt))


def genres(conn: Connection, artist_ids: Sequence[str]) -> dict[str, list[str]]:
    join = artist_genres.join(artists, artists.c.rowid == artist_genres.c.artist_rowid)
    stmt = (
        select(artists.c.id, artist_genres.c.genre)
        .select_from(join)
        .where(artists.c.id.in_(list(artist_ids)))
        .order_by(artists.c.id, artist_genres.c.genre)
    )
    return _grouped(dialect.raw_rows(conn, stmt))


def playlist_track_ids(conn: Connection, playlist_ids: Sequence[str]) -> dict[str, list[str]]:
    t = user_playlist_tracks.c
    stmt = select(t.playlist_id, t.track_id).where(t.playlist_id.in_(list(playlist_ids)))
    stmt = stmt.order_by(t.playlist_id, t.position, t.id)
    return _grouped(dialect.raw_rows(conn, stmt))


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
