"""Data access for pezzottify's catalog tables (catalog.db) and playlists (user.db)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, delete, func, select
from sqlalchemy.engine import Connection

from fingerprints.domain import EntityType
from fingerprints.store import dialect, feature_maps
from fingerprints.store.feature_maps import CHUNK
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

ENTITY_TABLES: dict[EntityType, Table] = {
    EntityType.TRACK: tracks,
    EntityType.ALBUM: albums,
    EntityType.ARTIST: artists,
    EntityType.PLAYLIST: user_playlist,
}


def existing_ids(conn: Connection, *, entity_type: EntityType, ids: Iterable[str]) -> set[str]:
    """The subset of ``ids`` that exist as entities of ``entity_type``."""
    return dialect.existing_values(conn, ENTITY_TABLES[entity_type].c.id, list(dict.fromkeys(ids)))


def rowids(conn: Connection, *, table: Table, ids: Iterable[str]) -> dict[str, int]:
    """Map pezzottify string ids to their integer rowids."""
    wanted = list(dict.fromkeys(ids))
    found: dict[str, int] = {}
    for start in range(0, len(wanted), CHUNK):
        stmt = select(table.c.id, table.c.rowid).where(table.c.id.in_(wanted[start : start + CHUNK]))
        found.update(dialect.raw_rows(conn, stmt))
    return found


def count_entities(conn: Connection, *, entity_type: EntityType) -> int:
    table = ENTITY_TABLES[entity_type]
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _upsert(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        update = [c for c in rows[0] if c != "id"]
        conn.execute(dialect.upsert(conn, table, keys=["id"], update=update), list(rows))


def _replace_links(
    conn: Connection, table: Table, owner_col: str, links: Mapping[int, Sequence[Mapping[str, Any]]]
) -> None:
    """Replace every link row of the given owners with the new ones."""
    owners = list(links)
    for start in range(0, len(owners), CHUNK):
        conn.execute(delete(table).where(table.c[owner_col].in_(owners[start : start + CHUNK])))
    rows = [row for owner_rows in links.values() for row in owner_rows]
    if rows:
        conn.execute(table.insert(), rows)


def upsert_artists(
    conn: Connection, *, rows: Sequence[Mapping[str, Any]], genres: Mapping[str, Sequence[str]]
) -> None:
    """Upsert artists by id; ``genres`` (artist id -> genres) replaces their genre lists."""
    _upsert(conn, artists, rows)
    ids = rowids(conn, table=artists, ids=genres)
    _replace_links(
        conn,
        artist_genres,
        "artist_rowid",
        {
            ids[a]: [{"artist_rowid": ids[a], "genre": g} for g in dict.fromkeys(gs)]
            for a, gs in genres.items()
        },
    )


def upsert_albums(
    conn: Connection,
    *,
    rows: Sequence[Mapping[str, Any]],
    artist_rowids: Mapping[str, Sequence[int]],
) -> None:
    """Upsert albums by id and replace their ordered artist lists."""
    _upsert(conn, albums, rows)
    ids = rowids(conn, table=albums, ids=artist_rowids)
    _replace_links(
        conn,
        album_artists,
        "album_rowid",
        {
            ids[a]: [
                {"album_rowid": ids[a], "artist_rowid": r, "position": p}
                for p, r in enumerate(dict.fromkeys(rs))
            ]
            for a, rs in artist_rowids.items()
        },
    )


def upsert_tracks(
    conn: Connection,
    *,
    rows: Sequence[Mapping[str, Any]],
    artist_roles: Mapping[str, Mapping[int, int]],
) -> None:
    """Upsert tracks by id; ``artist_roles`` (track id -> {artist rowid: role}) replaces links."""
    _upsert(conn, tracks, rows)
    ids = rowids(conn, table=tracks, ids=artist_roles)
    _replace_links(
        conn,
        track_artists,
        "track_rowid",
        {
            ids[t]: [{"track_rowid": ids[t], "artist_rowid": a, "role": r} for a, r in roles.items()]
            for t, roles in artist_roles.items()
        },
    )


def playlist_owner(conn: Connection, *, playlist_id: str) -> int | None:
    row = conn.execute(select(user_playlist.c.user_id).where(user_playlist.c.id == playlist_id))
    return row.scalar_one_or_none()


def playlists_of(conn: Connection, *, user_id: int) -> list[str]:
    """Ids of one user's playlists."""
    stmt = select(user_playlist.c.id).where(user_playlist.c.user_id == user_id).order_by(user_playlist.c.id)
    return [row[0] for row in conn.execute(stmt)]


def upsert_playlist(
    conn: Connection,
    *,
    playlist_id: str,
    user_id: int,
    name: str | None,
    created: int,
    track_ids: Sequence[str],
) -> None:
    """Create or replace a playlist and its ordered tracks (its creator and creation time stay)."""
    stmt: Any = dialect.upsert(conn, user_playlist, keys=["id"], update=["user_id", "name"])
    conn.execute(
        stmt,
        {"id": playlist_id, "user_id": user_id, "name": name, "creator_id": user_id, "created": created},
    )
    conn.execute(delete(user_playlist_tracks).where(user_playlist_tracks.c.playlist_id == playlist_id))
    if track_ids:
        conn.execute(
            user_playlist_tracks.insert(),
            [{"track_id": t, "playlist_id": playlist_id, "position": p} for p, t in enumerate(track_ids)],
        )


def delete_playlist(conn: Connection, *, playlist_id: str) -> bool:
    """Delete a playlist, its tracks and its feature maps; False when it did not exist."""
    conn.execute(delete(user_playlist_tracks).where(user_playlist_tracks.c.playlist_id == playlist_id))
    # Explicit, not only ON DELETE CASCADE: a pezzottify user.db may predate the foreign key.
    feature_maps.delete_entity_maps(conn, entity_type=EntityType.PLAYLIST, entity_ids=[playlist_id])
    return bool(conn.execute(delete(user_playlist).where(user_playlist.c.id == playlist_id)).rowcount)
