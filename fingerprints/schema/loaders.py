"""Per-request loaders: every entity, membership and feature-map lookup of one GraphQL request
is batched into one read per kind and level. Built fresh in ``get_context``: a module-level
loader would share its cache across requests (and users).

The loaders hand out the GraphQL objects themselves (``Track``, ``FeatureMap``...), so a field
resolver can return a loader's future as it is, without a coroutine of its own. The keys asked
for in one event-loop turn, by every loader, are read together as one round (``Rounds``): one
read transaction per database, on the event loop when small, else in one worker thread.

``Loader`` keeps DataLoader's contract (``load``/``load_many``, a per-request cache of futures,
batch functions that answer in key order) without its machinery per batch: no task, no
coroutine and no extra future per loader and round, only one future per key, settled directly
by the round that read it (a track page asks for a few hundred keys; that machinery, paid per
batch and per key, cost more than the reads themselves).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from fingerprints.domain import EntityType
from fingerprints.service import graph
from fingerprints.service.base import Services, call
from fingerprints.service.graph import Fetch, Reads

if TYPE_CHECKING:
    from fingerprints.schema.catalog import Album, Artist, ArtistCredit, Playlist, Track
    from fingerprints.schema.context import Info
    from fingerprints.schema.types import FeatureMap

K = TypeVar("K")
T = TypeVar("T")
MapKey = tuple[EntityType, str, tuple[str, ...] | None]  # entity type, id, requested types (None: all)


class Loader(Generic[K, T]):
    """Futures by key, cached for the request; the keys asked for in one turn are read in the
    request's next round. ``fetch(reads, keys)`` returns key -> raw value (misses left out);
    ``convert`` turns a raw value into what the loader hands out, ``default`` stands for a miss."""

    def __init__(
        self, rounds: Rounds, fetch: Fetch, convert: Callable[[Any], T] | None = None, default: Any = None
    ) -> None:
        self.rounds = rounds
        self.fetch = fetch
        self.convert = convert
        self.default = default
        self._cache: dict[K, asyncio.Future[T]] = {}
        self._due: dict[K, asyncio.Future[T]] = {}  # asked for this turn, not yet in a round

    def load(self, key: K) -> asyncio.Future[T]:
        future = self._cache.get(key)
        if future is not None and not future.cancelled():
            return future
        future = self.rounds.loop.create_future()
        self._cache[key] = future
        if not self._due:
            self.rounds.due(self)
        self._due[key] = future
        return future

    def load_many(self, keys: Iterable[K]) -> Awaitable[list[T]]:
        return asyncio.gather(*map(self.load, keys))

    def take(self) -> dict[K, asyncio.Future[T]]:
        """The keys due, handed to a round (and no longer due)."""
        due, self._due = self._due, {}
        return due

    def settle(self, due: Mapping[K, asyncio.Future[T]], found: Any) -> None:
        """Set the futures of a round's keys from ``found`` (key -> raw value, or the exception
        the batch raised: then every key of the batch fails with it)."""
        if isinstance(found, BaseException):
            for future in due.values():
                if not future.done():
                    future.set_exception(found)
                    # Retrieved here, so that a key nobody ends up asking for (an entity that
                    # is not visible, say) is not reported as a lost exception; a field that
                    # asks for it still gets it.
                    future.exception()
            return
        convert, default = self.convert, self.default
        for key, future in due.items():
            if future.done():
                continue
            if key in found:
                future.set_result(convert(found[key]) if convert is not None else found[key])
            else:
                future.set_result(default)


class Rounds:
    """Collects the keys the request's loaders are asked for in one event-loop turn and reads
    them together (``graph.run_round``): inline when ``graph.inline`` says so, else in one
    worker thread. ``idle()`` waits until every key asked for so far is settled."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due: list[Loader[Any, Any]] = []
        self._threads: set[asyncio.Future[list[Any]]] = set()  # rounds in flight in a worker
        self._idle: list[asyncio.Future[None]] = []
        self._versions: dict[str, int] | None = None
        self._versions_lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def due(self, loader: Loader[Any, Any]) -> None:
        """``loader`` has keys to read: in the round at the end of this turn."""
        if not self._due:
            self.loop.call_soon(self._flush)
        self._due.append(loader)

    def idle(self) -> Awaitable[None]:
        """Done once no key is due or being read (a failed read fails its keys, not this)."""
        future: asyncio.Future[None] = self.loop.create_future()
        if self._due or self._threads:
            self._idle.append(future)
        else:
            future.set_result(None)
        return future

    def versions(self, reads: Reads) -> dict[str, int]:
        """Feature type versions (the ``outdated`` flag), read once per request."""
        with self._versions_lock:
            if self._versions is None:
                self._versions = graph.current_versions(reads)
            return self._versions

    def _flush(self) -> None:
        loaders, self._due = self._due, []
        batches = [(loader, loader.take()) for loader in loaders]
        jobs = [(loader.fetch, list(due)) for loader, due in batches]
        if graph.inline(self.svc, sum(len(keys) for _, keys in jobs)):
            try:
                results = graph.run_round(self.svc, jobs, inline=True)
            except Exception as exc:  # noqa: BLE001 - e.g. the database is gone: every load fails
                results = [exc] * len(jobs)
            self._settle(batches, results)
            return
        thread = asyncio.ensure_future(call(graph.run_round, self.svc, jobs))
        self._threads.add(thread)

        def done(finished: asyncio.Future[list[Any]]) -> None:
            self._threads.discard(finished)
            if finished.cancelled():
                for _, due in batches:
                    for future in due.values():
                        future.cancel()
                self._wake()
                return
            exc = finished.exception()
            self._settle(batches, [exc] * len(batches) if exc is not None else finished.result())

        thread.add_done_callback(done)

    def _settle(self, batches: Sequence[tuple[Loader[Any, Any], Any]], results: Sequence[Any]) -> None:
        for (loader, due), found in zip(batches, results, strict=True):
            loader.settle(due, found)
        self._wake()

    def _wake(self) -> None:
        if self._idle and not self._due and not self._threads:
            waiters, self._idle = self._idle, []
            for future in waiters:
                if not future.done():
                    future.set_result(None)


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
    track: Loader[str, Track | None]
    album: Loader[str, Album | None]
    artist: Loader[str, Artist | None]
    playlist: Loader[str, Playlist | None]
    track_credits: Loader[str, list[ArtistCredit]]
    album_artists: Loader[str, list[Artist]]
    album_tracks: Loader[str, list[Track]]
    genres: Loader[str, list[str]]
    playlist_tracks: Loader[str, list[Track]]
    feature_maps: Loader[MapKey, list[FeatureMap]]


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
        track=Loader(rounds, graph.tracks, Track.of),
        album=Loader(rounds, graph.albums, Album.of),
        artist=Loader(rounds, graph.artists, Artist.of),
        playlist=Loader(rounds, graph.playlists, Playlist.of),
        track_credits=Loader(rounds, graph.track_credits, credits, []),
        album_artists=Loader(
            rounds, _members(graph.album_artists, graph.artists), lambda rs: [Artist.of(r) for r in rs], []
        ),
        album_tracks=Loader(rounds, _members(graph.album_tracks, graph.tracks), tracks, []),
        genres=Loader(rounds, graph.genres, None, []),
        playlist_tracks=Loader(rounds, _members(graph.playlist_tracks, graph.tracks), tracks, []),
        feature_maps=Loader(rounds, _maps_fetch(rounds), maps, []),
    )


def pending(awaitable: Awaitable[T]) -> T:
    """A loader's future as a field's value: graphql-core awaits it, so the field's resolver is
    a plain function (no coroutine of its own per object). A future that has already succeeded
    (``prefetch`` warmed the loader) gives its value at once: nothing left to await."""
    if isinstance(awaitable, asyncio.Future) and awaitable.done() and not awaitable.cancelled():
        if awaitable.exception() is None:
            return cast(T, awaitable.result())
    return cast(T, awaitable)


def load_entity(info: Info, entity_type: EntityType, entity_id: str) -> Awaitable[Any]:
    """One entity through the request's loaders; None when missing or not visible."""
    loaders = info.context.loaders
    if entity_type is EntityType.TRACK:
        return loaders.track.load(entity_id)
    if entity_type is EntityType.ALBUM:
        return loaders.album.load(entity_id)
    if entity_type is EntityType.ARTIST:
        return loaders.artist.load(entity_id)
    return _visible_playlist(info, entity_id)


async def _visible_playlist(info: Info, playlist_id: str) -> Playlist | None:
    playlist = await info.context.loaders.playlist.load(playlist_id)
    if playlist is None or not info.context.principal.can_see_playlist(playlist.owner_id):
        return None
    return playlist
