"""The two storage backends the API suite runs on: SQLite files and a PostgreSQL server.

PostgreSQL tests need ``FINGERPRINTS_TEST_PG_URL`` (an admin URL of a throwaway server; ``make
test`` starts one with ``scripts/pg.sh``). Each data directory gets its own pair of databases
(catalog, user), so tests never see each other's rows and a "restart" that reuses a data
directory finds its data again. ``sql`` and ``dump_databases`` read either backend directly,
bypassing the service, so tests check what is really stored.

Creating and migrating two schemas per test is mostly DDL, and slow; so the service's
migrations run once per session into a pair of template databases, and each data directory's
databases are file copies of those (``CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY``).
The service still runs its migrations at every start (a no-op on a copy);
``make_settings(..., migrated=False)`` gives it empty databases to migrate from scratch.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from fingerprints.config import Settings

Backend = Literal["sqlite", "postgresql"]
DbName = Literal["catalog", "user"]

PG_URL_ENV = "FINGERPRINTS_TEST_PG_URL"
BACKENDS: list[Any] = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgresql, id="postgresql"),
]

_session = uuid.uuid4().hex[:8]  # one tag per test session: concurrent sessions never collide
_databases: dict[Path, tuple[str, str]] = {}
_templates: tuple[str, str] | None = None


def pg_admin_url() -> str | None:
    return os.environ.get(PG_URL_ENV) or None


def require_pg() -> str:
    url = pg_admin_url()
    if url is None:
        if os.environ.get("FINGERPRINTS_REQUIRE_PG"):
            pytest.fail(f"{PG_URL_ENV} is unset but FINGERPRINTS_REQUIRE_PG is set")
        pytest.skip(f"no PostgreSQL: set {PG_URL_ENV} (`make test` starts one with scripts/pg.sh)")
    return url


def _libpq(url: str) -> str:
    """The SQLAlchemy URL as a libpq one (drop the ``+psycopg`` driver part)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _url_of(database: str) -> str:
    """The admin URL pointed at another database of the same server."""
    return make_url(require_pg()).set(database=database).render_as_string(hide_password=False)


def _admin(*statements: str) -> None:
    import psycopg

    with psycopg.connect(_libpq(require_pg()), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def _migrate(catalog: str, user: str) -> None:
    """The service's own migrations, run on the two databases (closed afterwards)."""
    from fingerprints.store import migrations

    for name, steps, database in (
        ("catalog", migrations.CATALOG_MIGRATIONS, catalog),
        ("user", migrations.USER_MIGRATIONS, user),
    ):
        engine = create_engine(_url_of(database), poolclass=NullPool)
        try:
            with engine.begin() as conn:
                migrations.migrate(conn, steps, database=name)
        finally:
            engine.dispose()


def _template_pair() -> tuple[str, str]:
    """Template databases holding the migrated schema, made once per session."""
    global _templates
    if _templates is None:
        pair = (f"fp_{_session}_template_catalog", f"fp_{_session}_template_user")
        _admin(*(f'CREATE DATABASE "{name}"' for name in pair))
        _templates = pair  # dropped at session end even if migrating fails
        _migrate(*pair)
    return _templates


def pg_databases(data_dir: Path, *, migrated: bool = True) -> tuple[str, str]:
    """The (catalog, user) database pair of a data directory, created on first use.

    ``migrated``: copies of the migrated templates; otherwise empty databases."""
    key = data_dir.resolve()
    if key not in _databases:
        tag = uuid.uuid4().hex[:12]
        pair = (f"fp_{_session}_{tag}_catalog", f"fp_{_session}_{tag}_user")
        if migrated:
            templates = _template_pair()
            _admin(
                *(
                    f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY'
                    for name, template in zip(pair, templates, strict=True)
                )
            )
        else:
            _admin(*(f'CREATE DATABASE "{name}"' for name in pair))
        _databases[key] = pair
    return _databases[key]


def drop_pg_databases(workers: int = 8) -> None:
    """Drop every database this session made, templates included.

    From several connections at once: each DROP DATABASE waits for a checkpoint, and
    concurrent requests share one (8 connections: about 8x faster than one by one)."""
    global _templates
    names = [name for pair in _databases.values() for name in pair]
    _databases.clear()
    if _templates is not None:
        names += _templates  # nothing is copied from them any more
        _templates = None
    drops = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names]
    shares = [share for share in (drops[i::workers] for i in range(workers)) if share]
    if shares:  # none on a SQLite-only run (no server to ask)
        with ThreadPoolExecutor(len(shares)) as pool:
            list(pool.map(lambda share: _admin(*share), shares))


def make_settings(backend: Backend, data_dir: Path, *, migrated: bool = True, **overrides: Any) -> Settings:
    """Settings for ``data_dir`` on ``backend``; the same directory always means the same data.

    ``migrated=False``: on PostgreSQL, empty databases the service has to migrate itself (a new
    SQLite data directory is always empty)."""
    from tests.helpers import ADMIN_TOKEN

    overrides.setdefault("admin_token", ADMIN_TOKEN)
    if backend == "postgresql":
        catalog, user = pg_databases(data_dir, migrated=migrated)
        overrides.setdefault("catalog_url", _url_of(catalog))
        overrides.setdefault("user_url", _url_of(user))
    return Settings(data_dir=data_dir, **overrides)


def backend_of(settings: Settings) -> Backend:
    return "postgresql" if settings.resolved_catalog_url().startswith("postgresql") else "sqlite"


@contextmanager
def connect(settings: Settings, db: DbName) -> Iterator[Any]:
    """A DB-API connection to one of the two databases (``?`` placeholders on both)."""
    url = settings.resolved_catalog_url() if db == "catalog" else settings.resolved_user_url()
    if backend_of(settings) == "sqlite":
        with closing(sqlite3.connect(settings.data_dir / f"{db}.db")) as conn:
            yield conn
            conn.commit()  # like psycopg's autocommit: a statement run here stays done
        return
    import psycopg

    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        yield _QmarkConnection(conn)


class _QmarkConnection:
    """psycopg with sqlite3's ``?`` placeholders, so one query text serves both backends."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, query: str, params: Any = ()) -> Any:
        cursor = self._conn.cursor()
        cursor.execute(query.replace("%", "%%").replace("?", "%s"), tuple(params))
        return _Rows(cursor)

    def commit(self) -> None:
        pass


class _Rows:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [_plain(row) for row in self._cursor.fetchall()] if self._cursor.description else []

    def fetchone(self) -> tuple[Any, ...] | None:
        row = self._cursor.fetchone()
        return None if row is None else _plain(row)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


def _plain(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Values as sqlite3 returns them (``bytea`` arrives as bytes already; memoryview as bytes)."""
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)


def sql(settings: Settings, db: DbName, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``query`` run directly on the database, bypassing the service."""
    with connect(settings, db) as conn:
        return list(conn.execute(query, params).fetchall())


def playlist_rows(settings: Settings, playlist_id: str) -> tuple[tuple[Any, ...] | None, list[str]]:
    """A playlist's ``user_playlist`` row (id, name, user_id, created) and its track ids in order."""
    with connect(settings, "user") as conn:
        head = conn.execute(
            "SELECT id, name, user_id, created FROM user_playlist WHERE id = ?", (playlist_id,)
        ).fetchone()
        tracks = conn.execute(
            "SELECT track_id FROM user_playlist_tracks WHERE playlist_id = ? ORDER BY position, id",
            (playlist_id,),
        ).fetchall()
    return head, [t[0] for t in tracks]


def table_names(settings: Settings, db: DbName) -> list[str]:
    if backend_of(settings) == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type='table'"
    else:
        query = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    return sorted(row[0] for row in sql(settings, db, query))


def dump_databases(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table in both databases, sorted: compare before/after.

    Leaves out the service's bookkeeping tables (``fingerprints_*``: schema version, change
    counters, change log, stale markers, jobs), which legitimate writes elsewhere also touch."""
    state: dict[str, list[tuple[Any, ...]]] = {}
    for db in ("catalog", "user"):
        for table in table_names(settings, db):  # type: ignore[arg-type]
            if table.startswith("fingerprints_"):
                continue
            rows = sql(settings, db, f'SELECT * FROM "{table}"')  # type: ignore[arg-type]
            state[f"{db}.db:{table}"] = sorted(rows, key=repr)
    return state
