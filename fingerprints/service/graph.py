"""Batched catalog reads behind the GraphQL DataLoaders: one statement per batch of keys.

The loaders of one request hand over every batch that is due in the same event-loop turn as
one *round*; ``run_round`` reads them all in one read transaction per database (``Reads``),
so a level of the query costs one transaction however many kinds of things it loads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

from sqlalchemy.engine import Connection

from fingerprints.domain import EntityType, FeatureMap
from fingerprints.service.base import Services
from fingerprints.store import feature_maps as maps_store
from fingerprints.store import graph as graph_store
from fingerprints.store.database import Database

INLINE_KEYS = 256
"""A round with at most this many keys, on SQLite, is read on the event loop: a read of a
few rows by primary key (WAL: readers never wait for writers) costs less than the hop to a
worker thread and back. Bigger rounds, and other databases (a network round trip per
statement), go to a worker thread."""


class Reads:
    """The connections of one round: one read transaction per database, opened on first use
    (``kept``: on the connection the thread keeps, ``Database.kept_read``)."""

    def __init__(self, svc: Services, stack: ExitStack, *, kept: bool = False) -> None:
        self.svc = svc
        self._stack = stack
        self._kept = kept
        self._open: dict[str, Connection] = {}

    def _conn(self, db: Database) -> Connection:
        conn = self._open.get(db.name)
        if conn is None:
            conn = self._open[db.name] = self._stack.enter_context(
                db.kept_read() if self._kept else db.read()
            )
        return conn

    @property
    def catalog(self) -> Connection:
        return self._conn(self.svc.dbs.catalog)

    @property
    def user(self) -> Connection:
        return self._conn(self.svc.dbs.user)

    def for_entity(self, entity_type: EntityType) -> Connection:
        return self._conn(self.svc.dbs.for_entity(entity_type))


Fetch = Callable[[Reads, Sequence[Any]], Any]


def run_round(
    svc: Services, jobs: Sequence[tuple[Fetch, Sequence[Any]]], *, inline: bool = False
) -> list[Any]:
    """Run each ``fetch(reads, keys)`` of a round; each one's result or the exception it raised
    (one failing batch fails only the loads of that batch). ``inline``: a round read on the
    event loop (see ``inline()``), on the connections the loop's thread keeps."""
    out: list[Any] = []
    with ExitStack() as stack:
        reads = Reads(svc, stack, kept=inline)
        for fetch, keys in jobs:
            try:
                out.append(fetch(reads, keys))
            except Exception as exc:  # noqa: BLE001 - handed to that batch's loads
                out.append(exc)
    return out


def inline(svc: Services, keys: int) -> bool:
    """Whether a round of ``keys`` keys is read on the event loop (see ``INLINE_KEYS``)."""
    return keys <= INLINE_KEYS and svc.dbs.catalog.engine.dialect.name == "sqlite"


def tracks(reads: Reads, ids: Sequence[str]) -> dict[str, graph_store.TrackRecord]:
    return graph_store.tracks_by_id(reads.catalog, ids)


def albums(reads: Reads, ids: Sequence[str]) -> dict[str, graph_store.AlbumRecord]:
    return graph_store.albums_by_id(reads.catalog, ids)


def artists(reads: Reads, ids: Sequence[str]) -> dict[str, graph_store.ArtistRecord]:
    return graph_store.artists_by_id(reads.catalog, ids)


def track_credits(reads: Reads, ids: Sequence[str]) -> dict[str, list[tuple[graph_store.ArtistRecord, int]]]:
    return graph_store.track_credits(reads.catalog, ids)


def album_artists(reads: Reads, ids: Sequence[str]) -> dict[str, list[str]]:
    return graph_store.album_artist_ids(reads.catalog, ids)


def album_tracks(reads: Reads, ids: Sequence[str]) -> dict[str, list[str]]:
    return graph_store.album_track_ids(reads.catalog, ids)


def genres(reads: Reads, ids: Sequence[str]) -> dict[str, list[str]]:
    return graph_store.genres(reads.catalog, ids)


def playlists(reads: Reads, ids: Sequence[str]) -> dict[str, graph_store.PlaylistRecord]:
    return graph_store.playlists_by_id(reads.user, ids)


def playlist_tracks(reads: Reads, ids: Sequence[str]) -> dict[str, list[str]]:
    return graph_store.playlist_track_ids(reads.user, ids)


def feature_maps(
    reads: Reads, entity_type: EntityType, ids: Sequence[str], type_ids: Sequence[str] | None
) -> dict[str, list[FeatureMap]]:
    return maps_store.maps_of(
        reads.for_entity(entity_type), entity_type=entity_type, entity_ids=ids, type_ids=type_ids
    )


def current_versions(reads: Reads) -> dict[str, int]:
    """Feature type id -> current version (for the ``outdated`` flag)."""
    return graph_store.current_versions(reads.catalog)


def artist_page(
    svc: Services, *, artist_id: str, kind: EntityType, first: int, after: str | None
) -> tuple[list[str], bool]:
    with svc.dbs.catalog.read() as conn:
        return graph_store.artist_page(conn, artist_id=artist_id, kind=kind, first=first, after=after)
