"""Engines and transactions for the two databases (catalog and user)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine

from fingerprints.config import Settings
from fingerprints.domain import EntityType
from fingerprints.store import changes, dialect, migrations


class Database:
    """One engine plus the discipline around it: reads share, writes take turns and commit once."""

    def __init__(self, engine: Engine, name: str, *, origin: str = "") -> None:
        self.engine = engine
        self.name = name
        # Who writes: recorded with each change-log entry, so a replica skips its own.
        self.origin = origin or uuid.uuid4().hex
        # One writer at a time in this process; busy_timeout covers other processes. Reentrant,
        # so a use case can hold it across its commit and the in-memory updates that follow.
        self._write_lock = threading.RLock()
        # Thread id -> the connection that thread keeps for ``kept_read`` (see there).
        self._kept: dict[int, Connection] = {}
        self._kept_lock = threading.Lock()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def kept_read(self) -> Iterator[Connection]:
        """``read()`` on a connection the calling thread keeps between uses, for the small reads
        a GraphQL request makes on the event loop (``service.graph.inline``; SQLite only,
        elsewhere this is ``read()``).

        A pool checkout, SQLAlchemy's transaction around it and the check-in cost several times
        what those statements do; here a use is one plain ``BEGIN`` and ``ROLLBACK`` on the
        driver connection, and the pages the reads touch stay in that connection's own cache.
        Each use is still a read transaction of its own: it sees every commit made before it
        began. One connection per thread, and a thread never runs two of these blocks at once
        (nothing in them awaits), so two transactions never share it.

        The block must read through the driver connection (``dialect.cached_rows`` and the
        like): SQLAlchemy's own ``execute`` would begin a second transaction inside this one.
        A connection whose use failed, or that SQLAlchemy began a transaction on, is closed
        rather than kept."""
        if self.dialect != "sqlite":
            with self.read() as conn:
                yield conn
            return
        ident = threading.get_ident()
        kept = self._kept.get(ident)
        if kept is None or kept.closed or kept.invalidated:
            kept = self.engine.connect()
            with self._kept_lock:
                self._kept[ident] = kept
        raw: Any = kept.connection.dbapi_connection
        healthy = False
        try:
            raw.execute("BEGIN")
            try:
                yield kept
            finally:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")  # a read: ending it discards nothing
            healthy = not kept.in_transaction()
        finally:
            if not healthy:
                with self._kept_lock:
                    if self._kept.get(ident) is kept:
                        del self._kept[ident]
                kept.close()

    @contextmanager
    def serialized(self) -> Iterator[None]:
        """Hold the write turn: no other writer of this process commits until the block ends."""
        with self._write_lock:
            yield

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that commits when the block ends; the write is durable on return."""
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(**{dialect.WRITE_OPTION: True, changes.ORIGIN_OPTION: self.origin})
            with conn.begin():
                yield conn

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def files(self) -> list[str]:
        return dialect.file_paths(self.engine)

    def dispose(self) -> None:
        with self._kept_lock:
            kept, self._kept = list(self._kept.values()), {}
        for conn in kept:
            conn.close()
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.name!r}, {self.engine.url.render_as_string(hide_password=True)!r})"


@dataclass
class Databases:
    catalog: Database
    user: Database

    def for_entity(self, entity_type: EntityType) -> Database:
        """Where an entity type's feature maps live: playlists in user.db, the rest in catalog.db."""
        return self.user if entity_type is EntityType.PLAYLIST else self.catalog

    def dispose(self) -> None:
        self.catalog.dispose()
        self.user.dispose()


def _engine(url: str, settings: Settings) -> Engine:
    connect_args = {"check_same_thread": False} if url.startswith("sqlite") else {}
    engine = create_engine(url, connect_args=connect_args, pool_pre_ping=not url.startswith("sqlite"))
    dialect.configure_engine(engine, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    return engine


def open_databases(settings: Settings) -> Databases:
    """Build both engines and bring both schemas up to date."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    origin = uuid.uuid4().hex  # this process, as the change log names it
    dbs = Databases(
        catalog=Database(_engine(settings.resolved_catalog_url(), settings), "catalog", origin=origin),
        user=Database(_engine(settings.resolved_user_url(), settings), "user", origin=origin),
    )
    with dbs.catalog.write() as conn:
        migrations.migrate(conn, migrations.CATALOG_MIGRATIONS, database="catalog")
    with dbs.user.write() as conn:
        migrations.migrate(conn, migrations.USER_MIGRATIONS, database="user")
    return dbs
