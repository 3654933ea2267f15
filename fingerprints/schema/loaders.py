"""Per-request DataLoaders: every entity, membership and feature-map lookup of one GraphQL
request is batched into one read per kind and level. Built fresh in ``get_context``: a
module-level loader would share its cache across requests (and users)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from strawberry.dataloader import DataLoader

from fingerprints.domain import EntityType, FeatureMap
from fingerprints.service import graph
from fingerprints.service.base import Services, call
from fingerprints.store.graph import AlbumRecord, ArtistRecord, PlaylistRecord, TrackRecord

MapKey = tuple[EntityType, str, tuple[str, ...] | None]  # entity type, id, requested types (None: all)


def _loader(
    svc: Services, fetch: Callable[[Services, Sequence[Any]], Mapping[Any, Any]], default: Any = None
) -> DataLoader[Any, Any]:
    async def load(keys: list[Any]) -> list[Any]:
        found = await call(fetch, svc, keys)
        return [found.get(k, default) for k in keys]

    return DataLoader(load_fn=load)


def _maps_loader(svc: Services) -> DataLoader[MapKey, list[FeatureMap]]:
    async def load(keys: list[MapKey]) -> list[list[FeatureMap]]:
        groups: dict[tuple[EntityType, tuple[str, ...] | None], list[str]] = {}
        for entity_type, entity_id, types in keys:
            groups.setdefault((entity_type, types), []).append(entity_id)

        def fetch() -> dict[MapKey, list[FeatureMap]]:
            out: dict[MapKey, list[FeatureMap]] = {}
            for (entity_type, types), ids in groups.items():
                found = graph.feature_maps(svc, entity_type, ids, types)
                out.update({(entity_type, i, types): found.get(i, []) for i in ids})
            return out

        found = await call(fetch)
        return [found[k] for k in keys]

    return DataLoader(load_fn=load)


@dataclass
class Loaders:
    track: DataLoader[str, TrackRecord | None]
    album: DataLoader[str, AlbumRecord | None]
    artist: DataLoader[str, ArtistRecord | None]
    playlist: DataLoader[str, PlaylistRecord | None]
    track_credits: DataLoader[str, list[tuple[str, int]]]
    album_artists: DataLoader[str, list[str]]
    album_tracks: DataLoader[str, list[str]]
    genres: DataLoader[str, list[str]]
    playlist_tracks: DataLoader[str, list[str]]
    feature_maps: DataLoader[MapKey, list[FeatureMap]]
    _versions: Awaitable[dict[str, int]] | None = None

    async def current_versions(self, svc: Services) -> dict[str, int]:
        """Feature type versions, read once per request."""
        if self._versions is None:
            self._versions = _once(call(graph.current_versions, svc))
        return await self._versions


async def _value(awaitable: Awaitable[dict[str, int]]) -> dict[str, int]:
    return await awaitable


def _once(awaitable: Awaitable[dict[str, int]]) -> Awaitable[dict[str, int]]:
    """A future, so several resolvers can await the same single read."""
    return asyncio.ensure_future(_value(awaitable))


def make_loaders(svc: Services) -> Loaders:
    return Loaders(
        track=_loader(svc, graph.tracks),
        album=_loader(svc, graph.albums),
        artist=_loader(svc, graph.artists),
        playlist=_loader(svc, graph.playlists),
        track_credits=_loader(svc, graph.track_credits, []),
        album_artists=_loader(svc, graph.album_artists, []),
        album_tracks=_loader(svc, graph.album_tracks, []),
        genres=_loader(svc, graph.genres, []),
        playlist_tracks=_loader(svc, graph.playlist_tracks, []),
        feature_maps=_maps_loader(svc),
    )
