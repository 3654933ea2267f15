"""Batched catalog reads behind the GraphQL DataLoaders: one read (one statement) per batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fingerprints.domain import EntityType, FeatureMap
from fingerprints.service.base import Services
from fingerprints.store import feature_maps as maps_store
from fingerprints.store import feature_types as types_store
from fingerprints.store import graph as graph_store

T = TypeVar("T")


def _catalog(svc: Services, read: Callable[..., T], keys: Sequence[Any]) -> T:
    with svc.dbs.catalog.read() as conn:
        return read(conn, keys)


def tracks(svc: Services, ids: Sequence[str]) -> dict[str, graph_store.TrackRecord]:
    return _catalog(svc, graph_store.tracks_by_id, ids)


def albums(svc: Services, ids: Sequence[str]) -> dict[str, graph_store.AlbumRecord]:
    return _catalog(svc, graph_store.albums_by_id, ids)


def artists(svc: Services, ids: Sequence[str]) -> dict[str, graph_store.ArtistRecord]:
    return _catalog(svc, graph_store.artists_by_id, ids)


def track_credits(svc: Services, ids: Sequence[str]) -> dict[str, list[tuple[str, int]]]:
    return _catalog(svc, graph_store.track_credits, ids)


def album_artists(svc: Services, ids: Sequence[str]) -> dict[str, list[str]]:
    return _catalog(svc, graph_store.album_artist_ids, ids)


def album_tracks(svc: Services, ids: Sequence[str]) -> dict[str, list[str]]:
    return _catalog(svc, graph_store.album_track_ids, ids)


def genres(svc: Services, ids: Sequence[str]) -> dict[str, list[str]]:
    return _catalog(svc, graph_store.genres, ids)


def playlists(svc: Services, ids: Sequence[str]) -> dict[str, graph_store.PlaylistRecord]:
    with svc.dbs.user.read() as conn:
        return graph_store.playlists_by_id(conn, ids)


def playlist_tracks(svc: Services, ids: Sequence[str]) -> dict[str, list[str]]:
    with svc.dbs.user.read() as conn:
        return graph_store.playlist_track_ids(conn, ids)


def artist_page(
    svc: Services, *, artist_id: str, kind: EntityType, first: int, after: str | None
) -> tuple[list[str], bool]:
    with svc.dbs.catalog.read() as conn:
        return graph_store.artist_page(conn, artist_id=artist_id, kind=kind, first=first, after=after)


def feature_maps(
    svc: Services, entity_type: EntityType, ids: Sequence[str], type_ids: Sequence[str] | None
) -> dict[str, list[FeatureMap]]:
    with svc.dbs.for_entity(entity_type).read() as conn:
        return maps_store.maps_of(conn, entity_type=entity_type, entity_ids=ids, type_ids=type_ids)


def current_versions(svc: Services) -> dict[str, int]:
    """Feature type id -> current version (for the ``outdated`` flag)."""
    with svc.dbs.catalog.read() as conn:
        return {ft.id: ft.current_version for ft in types_store.list_feature_types(conn)}
