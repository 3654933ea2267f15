"""Per-request DataLoaders: every entity, membership and feature-map lookup of one GraphQL
request is batched into one read per kind and level. Built fresh in ``get_context``: a
module-level loader would share its cache across requests (and users).

The loaders hand out the GraphQL objects themselves (``Track``, ``FeatureMap``...), so a field
resolver can return a loader's future as it is, without a coroutine of its own. The batches
due in one event-loop turn are read together as one round (``Rounds``): one read transaction
per database, on the event loop when small, else in one worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from strawberry.dataloader import DataLoader

from fingerprints.domain import EntityType
from fingerprints.service import graph
from fingerprints.service.base import Services, call
from fingerprints.service.graph import Fetch, Reads

if TYPE_CHECKING:
    from fingerprints.schema.catalog import Album, Artist, ArtistCredit, Playlist, Track
    from fingerprints.schema.types import FeatureMap

MapKey = tuple[EntityType, str, tuple[str, ...] | None]  # entity type, id, requested types (None: all)


class Rounds:
    """Collects the loader batches that fall due in one event-loop turn and reads them together
    (``graph.run_round``): inline when ``graph.inline`` says so, else in one worker thread."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self._jobs: list[tuple[Fetch, Sequence[Any]]] = []
        self._futures: list[asyncio.Future[Any]] = []
        self._threads: set[asyncio.Future[list[Any]]] = set()  # rounds in flight in a worker
        self._versions: dict[str, int] | None = None
        self._versions_lock = threading.Lock()

    def read(self, fetch: Fetch, keys: Sequence[Any]) -> asyncio.Future[Any]:
        """``fetch(reads, keys)``'s result, read with the other batches of this turn."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._jobs:
            loop.call_soon(self._flush)
        self._jobs.append((fetch, keys))
        self._futures.append(future)
        return future

    def versions(self, reads: Reads) -> dict[str, int]:
        """Feature type versions (the ``outdated`` flag), read once per request."""
        with self._versions_lock:
            if self._versions is None:
                self._versions = graph.current_versions(reads)
            return self._versions

    def _flush(self) -> None:
        jobs, futures = self._jobs, self._futures
        self._jobs, self._futures = [], []
        if graph.inline(self.svc, sum(len(keys) for _, keys in jobs)):
            try:
                results = graph.run_round(self.svc, jobs)
            except Exception as exc:  # noqa: BLE001 - e.g. the database is gone: every load fails
                results = [exc] * len(futures)
            _settle(futures, results)
            return
        thread = asyncio.ensure_future(call(graph.run_round, self.svc, jobs))
        self._threads.add(thread)

        def done(finished: asyncio.Future[list[Any]]) -> None:
            self._threads.discard(finished)
            if finished.cancelled():
                for future in futures:
                    future.cancel()
                return
            exc = finished.exception()
            _settle(futures, [exc] * len(futures) if exc is not None else finished.result())

        thread.add_done_callback(done)


def _settle(futures: Sequence[asyncio.Future[Any]], results: Sequence[Any]) -> None:
    for future, result in zip(futures, results, strict=True):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def _loader(
    rounds: Rounds, fetch: Fetch, convert: Callable[[Any], Any] | None = None, default: Any = None
) -> DataLoader[Any, Any]:
    async def load(keys: list[Any]) -> list[Any]:
        found: Mapping[Any, Any] = await rounds.read(fetch, keys)
        if convert is None:
            return [found.get(k, default) for k in keys]
        return [convert(found[k]) if k in found else default for k in keys]

    return DataLoader(load_fn=load)


def _members(of: Fetch, records: Fetch) -> Fetch:
    """key -> its member records, in member order: the member ids and their records, read in
    one round (no second level of loads)."""

    def fetch(reads: Reads, keys: Sequence[Any]) -> dict[Any, list[Any]]:
        ids: Mapping[Any, list[str]] = of(reads, keys)
        wanted = list(dict.fromkeys(m for k in keys for m in ids.get(k, [])))
        found = records(reads, wanted) if wanted else {}
        return {k: [found[m] for m in ids.get(k, []) if m in found] for k in keys}

    return fetch


def _maps_fetch(rounds: Rounds) -> Fetch:
    def fetch(reads: Reads, keys: Sequence[MapKey]) -> dict[MapKey, tuple[list[Any], dict[str, int]]]:
        groups: dict[tuple[EntityType, tuple[str, ...] | None], list[str]] = {}
        for entity_type, entity_id, types in keys:
            groups.setdefault((entity_type, types), []).append(entity_id)
        versions = rounds.versions(reads)
        out: dict[MapKey, tuple[list[Any], dict[str, int]]] = {}
        for (entity_type, types), ids in groups.items():
            found = graph.feature_maps(reads, entity_type, ids, types)
            out.update({(entity_type, i, types): (found.get(i, []), versions) for i in ids})
        return out

    return fetch


@dataclass
class Loaders:
    rounds: Rounds
    track: DataLoader[str, Track | None]
    album: DataLoader[str, Album | None]
    artist: DataLoader[str, Artist | None]
    playlist: DataLoader[str, Playlist | None]
    track_credits: DataLoader[str, list[ArtistCredit]]
    album_artists: DataLoader[str, list[Artist]]
    album_tracks: DataLoader[str, list[Track]]
    genres: DataLoader[str, list[str]]
    playlist_tracks: DataLoader[str, list[Track]]
    feature_maps: DataLoader[MapKey, list[FeatureMap]]


def make_loaders(svc: Services) -> Loaders:
    # The GraphQL types build on the context, which builds on this module: imported here.
    from fingerprints.schema.catalog import Album, Artist, ArtistCredit, Playlist, Track
    from fingerprints.schema.types import FeatureMap

    def tracks(records: list[Any]) -> list[Track]:
        return [Track.of(r) for r in records]

    def credits(pairs: list[tuple[Any, int]]) -> list[ArtistCredit]:
        return [ArtistCredit.of(artist, role) for artist, role in pairs]

    def maps(found: tuple[list[Any], dict[str, int]]) -> list[FeatureMap]:
        records, versions = found
        return [FeatureMap.of(m, versions) for m in records]

    rounds = Rounds(svc)
    return Loaders(
        rounds=rounds,
        track=_loader(rounds, graph.tracks, Track.of),
        album=_loader(rounds, graph.albums, Album.of),
        artist=_loader(rounds, graph.artists, Artist.of),
        playlist=_loader(rounds, graph.playlists, Playlist.of),
        track_credits=_loader(rounds, graph.track_credits, credits, []),
        album_artists=_loader(
            rounds, _members(graph.album_artists, graph.artists), lambda rs: [Artist.of(r) for r in rs], []
        ),
        album_tracks=_loader(rounds, _members(graph.album_tracks, graph.tracks), tracks, []),
        genres=_loader(rounds, graph.genres, None, []),
        playlist_tracks=_loader(rounds, _members(graph.playlist_tracks, graph.tracks), tracks, []),
        feature_maps=_loader(rounds, _maps_fetch(rounds), maps, []),
    )
