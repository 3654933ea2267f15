"""SQL statements per GraphQL request (design §5: a track, its details and its similar tracks
with their details in one request): the per-request DataLoaders batch every lookup, so the
number of statements does not grow with the number of results, and no two requests share a
loader cache.

How statements are counted
--------------------------
SQLAlchemy's ``before_cursor_execute`` event only sees statements that go through SQLAlchemy's
execution path (``Connection.execute`` / ``exec_driver_sql``). The catalog-graph reads use
``fingerprints.store.dialect.cached_rows`` (and feature maps ``dialect.raw_rows``), which run
the compiled statement on the plain DB-API cursor (``conn.connection.dbapi_connection.cursor()``):
the engine never sees those. ``test_raw_rows_bypass_engine_events`` shows this. So the counter
is both:

- the engine events on ``dbs.catalog.engine`` and ``dbs.user.engine`` (the ``begin`` event of
  each read transaction, and the statements run through ``conn.execute``), and
- a wrapper around ``dialect.raw_rows``, ``dialect.cached_rows`` and ``dialect.existing_values``
  (the DB-API cursor readers), installed with monkeypatch; the stores look them up on the
  module at each call, so the wrapper sees every call.

Transactions are counted by the ``begin`` event, not by a ``BEGIN`` statement: on SQLite the
dialect issues one (``dialect.configure_engine``), but psycopg opens PostgreSQL transactions
implicitly, with no statement the engine would see. The SQLite ``BEGIN`` statement itself is
left out, so each transaction counts once on both backends. A round read on the event loop
(SQLite) begins on the driver connection the loop's thread keeps (``Database.kept_read``),
which no engine event sees: a wrapper around ``kept_read`` counts those transactions.

Only the statements of the request under test are counted: the test sets a context variable
around the POST; httpx's ASGI transport runs the app in the caller's task, asyncio tasks and
``call_soon`` callbacks (DataLoader dispatch) copy the context, and ``anyio.to_thread.run_sync``
runs the worker function in a copy of it. The aggregation scheduler, which polls the job
queue on the catalog engine from its own task, is therefore not counted.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from sqlalchemy import event

from fingerprints.app import create_app
from fingerprints.schema import context as context_module
from fingerprints.service import graph as graph_service
from fingerprints.store import dialect
from tests.api.similar_helpers import gql, ingest, load_catalog, register_type
from tests.backends import Backend, make_settings
from tests.helpers import running_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

N_TRACKS, N_ALBUMS, N_ARTISTS = 3000, 300, 150
ROOT = "tr00042"

REQUEST: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_under_test", default=None)


def track_id(i: int) -> str:
    return f"tr{i:05d}"


def catalog() -> dict[str, Any]:
    """3000 tracks on 300 albums (track i on album i % 300) by 150 artists; each track has its
    album's artist as main artist and another one featured; artists have genres."""
    return {
        "artists": [
            {"id": f"ar{a:03d}", "name": f"Artist {a}", "genres": ["pop", f"g{a % 7}"], "popularity": a % 101}
            for a in range(N_ARTISTS)
        ],
        "albums": [
            {"id": f"al{j:03d}", "name": f"Album {j}", "artist_ids": [f"ar{j % N_ARTISTS:03d}"]}
            for j in range(N_ALBUMS)
        ],
        "tracks": [
            {
                "id": track_id(i),
                "name": f"Track {i}",
                "album_id": f"al{i % N_ALBUMS:03d}",
                "artist_ids": [f"ar{(i % N_ALBUMS) % N_ARTISTS:03d}"],
                "featured_artist_ids": [f"ar{(i * 7 + 3) % N_ARTISTS:03d}"]
                if (i * 7 + 3) % N_ARTISTS != (i % N_ALBUMS) % N_ARTISTS
                else [],
                "track_number": 1 + i // N_ALBUMS,
                "language": "en",
            }
            for i in range(N_TRACKS)
        ],
    }


# ------------------------------------------------------------------ the statement counter

KINDS = [  # (kind, pattern on the SQL text); the first match wins
    ("begin", r"^BEGIN"),
    ("tracks", r"^SELECT tracks\.id, tracks\.name\b"),
    ("albums", r"^SELECT albums\.id, albums\.name\b"),
    ("artists", r"^SELECT artists\.id, artists\.name\b"),
    ("track_credits", r"^SELECT tracks\.id, artists\.id\b"),
    ("album_artists", r"^SELECT albums\.id, artists\.id\b"),
    ("album_tracks", r"^SELECT albums\.id, tracks\.id\b"),
    ("genres", r"^SELECT artists\.id, artist_genres\.genre\b"),
    ("feature_maps", r"\bFROM (feature_maps|playlist_feature_maps)\b"),
    ("feature_types", r"\bFROM feature_map_types\b"),
    ("playlists", r"\bFROM user_playlist\b"),
    ("playlist_tracks", r"\bFROM user_playlist_tracks\b"),
]


def kind_of(sql: str) -> str:
    text = " ".join(sql.split())
    for kind, pattern in KINDS:
        if re.search(pattern, text):
            return kind
    return f"other: {text[:80]}"


@dataclass
class Recorded:
    request: str
    source: str  # "engine:<db>" or "raw_rows" / "existing_values"
    kind: str
    nested: bool  # seen by an engine event while raw_rows / existing_values ran (would double count)


@dataclass
class StatementLog:
    entries: list[Recorded] = field(default_factory=list)
    _raw_depth: threading.local = field(default_factory=threading.local)

    def add(self, source: str, sql: str) -> None:
        tag = REQUEST.get()
        if tag is not None:
            nested = source.startswith("engine") and getattr(self._raw_depth, "n", 0) > 0
            self.entries.append(Recorded(tag, source, kind_of(sql), nested))

    def of(self, request: str) -> list[Recorded]:
        return [e for e in self.entries if e.request == request]

    def kinds(self, request: str, *, with_begin: bool = False) -> Counter[str]:
        """Statements of one request by kind, each counted once."""
        return Counter(e.kind for e in self.of(request) if not e.nested and (with_begin or e.kind != "begin"))


@dataclass
class Env:
    client: httpx.AsyncClient
    app: Any
    log: StatementLog
    vectors: dict[str, np.ndarray]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> AsyncIterator[Env]:
    settings = make_settings(
        backend, tmp_path_factory.mktemp("graphql-statements") / "data", aggregation_interval=0
    )
    app = create_app(settings)
    async with running_client(app) as client:
        await load_catalog(client, catalog())
        await register_type(client, "audio", 16, applies_to=["track"])
        rng = np.random.default_rng(11)
        # independent random vectors: the neighbours of a track lie on many albums of many artists
        vectors = {track_id(i): rng.normal(size=16).astype(np.float32) for i in range(N_TRACKS)}
        await ingest(client, "audio", "track", vectors)

        log = StatementLog()
        dbs = app.state.services.dbs
        listeners = []
        for name, database in (("catalog", dbs.catalog), ("user", dbs.user)):

            def on_execute(
                conn: Any, cursor: Any, statement: str, *args: Any, _source: str = f"engine:{name}"
            ) -> None:
                if kind_of(statement) != "begin":  # SQLite's BEGIN: on_begin counted it
                    log.add(_source, statement)

            def on_begin(conn: Any, _source: str = f"engine:{name}") -> None:
                log.add(_source, "BEGIN")

            event.listen(database.engine, "before_cursor_execute", on_execute)
            event.listen(database.engine, "begin", on_begin)
            listeners += [
                (database.engine, "before_cursor_execute", on_execute),
                (database.engine, "begin", on_begin),
            ]
            if database.dialect == "sqlite":
                # A round read on the event loop begins its transaction on the driver
                # connection (Database.kept_read): no engine event sees it.
                database.kept_read = _counted_kept_read(database.kept_read, log, f"engine:{name}")  # type: ignore[method-assign]
        try:
            yield Env(client, app, log, vectors)
        finally:
            for engine, name, fn in listeners:
                event.remove(engine, name, fn)
            for database in (dbs.catalog, dbs.user):
                database.__dict__.pop("kept_read", None)


def _counted_kept_read(kept_read: Any, log: StatementLog, source: str) -> Any:
    @contextmanager
    def counted() -> Iterator[Any]:
        log.add(source, "BEGIN")
        with kept_read() as conn:
            yield conn

    return counted


@pytest.fixture
def counting(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[StatementLog]:
    """Wrap the DB-API cursor readers of ``dialect`` for the duration of one test."""
    log = env.log
    raw_rows, cached_rows, existing_values = dialect.raw_rows, dialect.cached_rows, dialect.existing_values

    def counted_raw_rows(conn: Any, stmt: Any) -> Any:
        log.add("raw_rows", str(stmt.compile(dialect=conn.dialect)))
        log._raw_depth.n = getattr(log._raw_depth, "n", 0) + 1
        try:
            return raw_rows(conn, stmt)
        finally:
            log._raw_depth.n -= 1

    def counted_cached_rows(conn: Any, key: Any, build: Any, params: Any) -> Any:
        if getattr(log._raw_depth, "n", 0) == 0:  # not already counted as existing_values
            log.add("cached_rows", str(build().compile(dialect=conn.dialect)))
        log._raw_depth.n = getattr(log._raw_depth, "n", 0) + 1
        try:
            return cached_rows(conn, key, build, params)
        finally:
            log._raw_depth.n -= 1

    def counted_existing_values(conn: Any, column: Any, values: Any) -> Any:
        log.add("existing_values", f"SELECT {column.name} FROM {column.table.name}")
        log._raw_depth.n = getattr(log._raw_depth, "n", 0) + 1
        try:
            return existing_values(conn, column, values)
        finally:
            log._raw_depth.n -= 1

    monkeypatch.setattr(dialect, "raw_rows", counted_raw_rows)
    monkeypatch.setattr(dialect, "cached_rows", counted_cached_rows)
    monkeypatch.setattr(dialect, "existing_values", counted_existing_values)
    log.entries.clear()
    yield log
    log.entries.clear()


async def tagged(env: Env, tag: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST one GraphQL request whose statements are recorded under ``tag``."""
    token = REQUEST.set(tag)
    try:
        answer = await gql(env.client, query, variables)
    finally:
        REQUEST.reset(token)
    assert "errors" not in answer, answer
    return answer["data"]  # type: ignore[no-any-return]


# ------------------------------------------------------------------ the counting method


async def test_raw_rows_bypass_engine_events(env: Env, counting: StatementLog) -> None:
    """Why the counter wraps the cursor readers: the engine events see the read transaction's
    BEGIN but not the SELECT that ``cached_rows`` runs on the DB-API cursor."""
    await tagged(env, "one", '{ tracks(ids: ["tr00001", "tr00002"]) { id } }')
    entries = counting.of("one")
    assert [(e.source, e.kind) for e in entries] == [
        ("engine:catalog", "begin"),
        ("cached_rows", "tracks"),
    ], entries
    # the engine hook saw nothing while cached_rows ran: it alone would have counted no SELECT
    assert not [e for e in entries if e.nested]


# ------------------------------------------------------------------ the track page

TRACK_PAGE = """
query TrackPage($id: ID!, $limit: Int!) {
  track(id: $id) {
    id name durationMs popularity explicit trackNumber discNumber language
    album { id name albumType label releaseDate artists { name } tracks { id } }
    artists { role artist { id name genres popularity } }
    fingerprint(types: ["audio"]) { featureType version vector computedAt metadata outdated }
    similar(featureType: "audio", limit: $limit) {
      entityType entityId score
      entity { __typename ... on Track { id name album { id name } artists { artist { id name } } } }
    }
  }
}
"""

# What the track page reads, per kind: a fixed number of each, whatever the number of results.
# Albums are read with their tracks (the same statement joins them), so no album read of its
# own; `track(id)` runs the similarity search first, then reads the track and the similar
# tracks together, with their credits (prefetched for the fields the query selects on them).
EXACT = {
    "feature_types": 1,  # current versions, read once per request (the `outdated` flag)
    "feature_maps": 2,  # the fingerprint field; the query vector of `similar`
    "album_artists": 1,  # the album's artists
    "album_tracks": 1,  # the album's track ids
    "genres": 1,  # the track's artists' genres
    "tracks": 2,  # the track with the similar tracks; the album's tracks
    "track_credits": 1,  # the track's and the similar tracks' credits, together
    "artists": 1,  # the album's artists (credited artists come with their credits)
}
CEILING = sum(EXACT.values())  # 10 SELECTs
# Read transactions, one per round of loads: the track with the similar tracks, their credits
# and the track's fingerprint; the album's artists and tracks; the artists' genres; and the
# similarity search, which reads the query vector in a transaction of its own.
MAX_TRANSACTIONS = 7


def check_track_page_reads(counts: Counter[str], what: str) -> int:
    reads = sum(counts.values())
    assert set(counts) <= set(EXACT), f"{what}: unexpected statements {counts}"
    for kind, n in EXACT.items():
        assert counts[kind] == n, f"{what}: {kind} read {counts[kind]} times, want {n}: {counts}"
    assert reads <= CEILING, (what, counts)
    return reads


async def test_track_page_statements_do_not_grow_with_the_results(env: Env, counting: StatementLog) -> None:
    await tagged(env, "warm-up", TRACK_PAGE, {"id": ROOT, "limit": 5})  # may load the index
    measured: dict[int, list[tuple[int, int]]] = {5: [], 50: []}
    spread: dict[int, tuple[int, int]] = {}
    for run in range(4):
        for limit in (5, 50):
            tag = f"page-{limit}-{run}"
            data = await tagged(env, tag, TRACK_PAGE, {"id": ROOT, "limit": limit})
            similar = data["track"]["similar"]
            assert len(similar) == limit
            albums = {s["entity"]["album"]["id"] for s in similar}
            artists = {c["artist"]["id"] for s in similar for c in s["entity"]["artists"]}
            spread[limit] = (len(albums), len(artists))
            reads = check_track_page_reads(counting.kinds(tag), tag)
            begins = counting.kinds(tag, with_begin=True)["begin"]
            # the reads due at the same moment share one short transaction (a round per level
            # of the query, plus the similarity search's own): no more BEGINs than reads, and
            # a fixed number of them whatever the number of results
            assert begins <= min(reads, MAX_TRANSACTIONS), (tag, counting.kinds(tag, with_begin=True))
            measured[limit].append((reads, reads + begins))
    # the 50 similar tracks really span many albums and artists (one read each would show)
    assert spread[50][0] >= 40 and spread[50][1] >= 40, spread
    # one ceiling for both limits (checked per run above): no read per result
    assert all(r <= CEILING for r, _ in measured[5] + measured[50]), measured
    print(f"\nSELECTs (SELECT+BEGIN) per track page: limit 5 {measured[5]}, limit 50 {measured[50]}")


async def test_a_track_page_checks_out_what_its_search_does(env: Env, backend: Backend) -> None:
    """On SQLite the page's read round runs on the event loop, on the connection the loop's
    thread keeps (``Database.kept_read``): the page checks out of the pool exactly what the
    same search over REST does. On PostgreSQL the round takes a pooled connection too."""
    engine = env.app.state.services.dbs.catalog.engine
    checkouts: list[str | None] = []

    def on_checkout(*_: Any) -> None:
        checkouts.append(REQUEST.get())

    await tagged(env, "warm-up", TRACK_PAGE, {"id": ROOT, "limit": 5})
    event.listen(engine, "checkout", on_checkout)
    try:
        for run in range(3):
            await tagged(env, f"page-{run}", TRACK_PAGE, {"id": ROOT, "limit": 20})
            token = REQUEST.set(f"rest-{run}")
            try:
                response = await env.client.get(
                    f"/v1/content/similar/track/{ROOT}", params={"feature_type": "audio", "limit": 20}
                )
            finally:
                REQUEST.reset(token)
            assert response.status_code == 200, response.text
    finally:
        event.remove(engine, "checkout", on_checkout)
    pages = [checkouts.count(f"page-{run}") for run in range(3)]
    searches = [checkouts.count(f"rest-{run}") for run in range(3)]
    assert all(n >= 1 for n in searches), searches
    if backend == "sqlite":
        assert pages == searches, (pages, searches)
    else:
        assert all(p > s for p, s in zip(pages, searches, strict=True)), (pages, searches)


async def test_track_page_statements_at_a_higher_limit(env: Env, counting: StatementLog) -> None:
    """The same fixed count with 300 similar tracks (nearly every album and artist)."""
    await tagged(env, "warm-up", TRACK_PAGE, {"id": ROOT, "limit": 5})
    data = await tagged(env, "page-300", TRACK_PAGE, {"id": ROOT, "limit": 300})
    assert len(data["track"]["similar"]) == 300
    check_track_page_reads(counting.kinds("page-300"), "page-300")


# ------------------------------------------------------------------ batching of the list roots


async def test_tracks_by_ids_is_one_statement(env: Env, counting: StatementLog) -> None:
    ids = [track_id(i * 53 % N_TRACKS) for i in range(50)]
    data = await tagged(env, "ids", "query($ids: [ID!]!) { tracks(ids: $ids) { id name } }", {"ids": ids})
    assert [t["id"] for t in data["tracks"]] == ids
    assert counting.kinds("ids", with_begin=True) == Counter({"begin": 1, "tracks": 1})

    # one level deeper: still one read per kind, not one per track
    query = """
    query($ids: [ID!]!) {
      tracks(ids: $ids) { id album { id name } artists { role artist { id name genres } } }
    }"""
    data = await tagged(env, "ids-deep", query, {"ids": ids})
    assert len({t["album"]["id"] for t in data["tracks"]}) == 50
    assert counting.kinds("ids-deep") == Counter(
        {"tracks": 1, "track_credits": 1, "genres": 1}  # albums come with tracks, artists with credits
    )


# ------------------------------------------------------------------ no shared loader cache


async def test_concurrent_requests_do_not_share_loaders(
    env: Env, counting: StatementLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests in flight at once, asking for overlapping tracks: each loads all of its own
    keys (nothing served from the other's cache) in a batch of its own, through a Loaders
    object of its own."""
    fetched: list[tuple[str | None, list[str]]] = []
    both_in_flight = threading.Barrier(2, timeout=10)
    tracks = graph_service.tracks

    def recording_tracks(reads: Any, ids: Any) -> Any:
        fetched.append((REQUEST.get(), list(ids)))
        both_in_flight.wait()  # the two batches run at the same time (or the barrier breaks)
        return tracks(reads, ids)

    made: list[tuple[str | None, Any]] = []
    make_loaders = context_module.make_loaders

    def recording_make_loaders(svc: Any) -> Any:
        loaders = make_loaders(svc)
        made.append((REQUEST.get(), loaders))
        return loaders

    monkeypatch.setattr(graph_service, "tracks", recording_tracks)
    # Small rounds are read on the event loop, one after the other; send every round to a
    # worker thread so that the two batches can be in flight at once.
    monkeypatch.setattr(graph_service, "INLINE_KEYS", 0)
    monkeypatch.setattr(context_module, "make_loaders", recording_make_loaders)

    query = "query($ids: [ID!]!) { tracks(ids: $ids) { id name } }"
    a = [track_id(1), track_id(2), track_id(3)]
    b = [track_id(2), track_id(3), track_id(4)]
    first, second = await asyncio.gather(
        tagged(env, "A", query, {"ids": a}), tagged(env, "B", query, {"ids": b})
    )
    assert [t["id"] for t in first["tracks"]] == a
    assert [t["id"] for t in second["tracks"]] == b
    assert sorted(fetched, key=lambda f: str(f[0])) == [("A", a), ("B", b)]
    assert sorted(tag for tag, _ in made) == ["A", "B"]
    assert made[0][1] is not made[1][1]
    assert made[0][1].track is not made[1][1].track
    assert counting.kinds("A") == counting.kinds("B") == Counter({"tracks": 1})

    # the same request twice in a row: the second one reads again (no cache across requests)
    fetched.clear()
    both_in_flight = threading.Barrier(1)
    await tagged(env, "again", query, {"ids": a})
    assert fetched == [("again", a)]


# The same page through a named fragment, with the fingerprint's types as a variable: the
# prefetch reads the document's fragments and variables, so the reads are the same.
TRACK_PAGE_FRAGMENTS = """
query TrackPage($id: ID!, $limit: Int!, $types: [ID!]) {
  track(id: $id) {
    ...Details
    album { id name albumType label releaseDate artists { name } tracks { id } }
    artists { role artist { id name genres popularity } }
    fingerprint(types: $types) { featureType version vector computedAt metadata outdated }
    similar(featureType: "audio", limit: $limit) {
      entityType entityId score
      entity { __typename ...SimilarTrack }
    }
  }
}
fragment Details on Track { id name durationMs popularity explicit trackNumber discNumber language }
fragment SimilarTrack on Track { id name album { id name } artists { artist { id name } } }
"""


async def test_track_page_with_named_fragments_reads_the_same(env: Env, counting: StatementLog) -> None:
    await tagged(env, "warm-up", TRACK_PAGE, {"id": ROOT, "limit": 5})
    inline = await tagged(env, "inline", TRACK_PAGE, {"id": ROOT, "limit": 20})
    named = await tagged(env, "named", TRACK_PAGE_FRAGMENTS, {"id": ROOT, "limit": 20, "types": ["audio"]})
    for s in inline["track"]["similar"]:
        del s["entity"]["__typename"]
    for s in named["track"]["similar"]:
        del s["entity"]["__typename"]
    assert named == inline
    check_track_page_reads(counting.kinds("named"), "named")
    assert counting.kinds("named") == counting.kinds("inline")
    # the similar tracks' credits come in the round of the tracks (prefetched through the
    # fragment): no more transactions than the inline page
    named_begins = counting.kinds("named", with_begin=True)["begin"]
    assert named_begins <= counting.kinds("inline", with_begin=True)["begin"], counting.kinds(
        "named", with_begin=True
    )
