"""``Database.kept_read``: the read transactions of GraphQL rounds on the event loop, on a
connection the thread keeps between uses (SQLite)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from fingerprints.config import Settings
from fingerprints.store import dialect
from fingerprints.store.database import Database, Databases, open_databases


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    opened: Databases = open_databases(settings)
    with opened.catalog.write() as conn:
        conn.execute(text("CREATE TABLE kept_test (id INTEGER PRIMARY KEY, v TEXT)"))
    yield opened.catalog
    opened.dispose()


def _values(conn: Any) -> list[str]:
    return [
        v
        for (v,) in dialect.cached_rows(
            conn, ("kept_test",), lambda: text("SELECT v FROM kept_test ORDER BY id"), {}
        )
    ]


def _insert(db: Database, value: str) -> None:
    with db.write() as conn:
        conn.execute(text("INSERT INTO kept_test (v) VALUES (:v)"), {"v": value})


def test_one_connection_per_thread_each_use_a_fresh_snapshot(db: Database) -> None:
    with db.kept_read() as conn:
        first = conn
        assert _values(conn) == []
        raw = conn.connection.dbapi_connection
        assert raw.in_transaction  # one read transaction for the block
    assert not raw.in_transaction  # ended: no snapshot held between uses (checkpoints go on)
    _insert(db, "a")
    with db.kept_read() as conn:
        assert conn is first  # kept
        assert _values(conn) == ["a"]  # sees the commit made since its last use
    other: list[Any] = []

    def elsewhere() -> None:
        with db.kept_read() as conn:
            other.append(conn)
            other.append(_values(conn))

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert other[0] is not first and other[1] == ["a"]  # another thread: its own connection


def test_a_snapshot_holds_for_the_whole_block(db: Database) -> None:
    _insert(db, "a")
    with db.kept_read() as conn:
        assert _values(conn) == ["a"]
        _insert(db, "b")  # committed by a writer meanwhile (WAL: the reader does not block it)
        assert _values(conn) == ["a"]  # one snapshot per round
    with db.kept_read() as conn:
        assert _values(conn) == ["a", "b"]


def test_a_failed_block_ends_its_transaction_and_drops_the_connection(db: Database) -> None:
    with db.kept_read() as conn:
        first = conn
    with pytest.raises(RuntimeError, match="boom"):
        with db.kept_read() as conn:
            assert conn is first
            raise RuntimeError("boom")
    assert first.closed
    with db.kept_read() as conn:
        assert conn is not first and _values(conn) == []


def test_sqlalchemy_execute_inside_is_refused(db: Database) -> None:
    """The block reads through the driver connection; SQLAlchemy's own ``execute`` would begin
    a second transaction inside the open one: SQLite refuses. Escaping the block, the error
    drops the connection; caught inside it (as a round catches a batch's error), it leaves
    the connection usable."""
    with pytest.raises(Exception, match="within a transaction"):
        with db.kept_read() as conn:
            first = conn
            conn.execute(text("SELECT 1"))
    assert first.closed
    with db.kept_read() as conn:
        second = conn
        with pytest.raises(Exception, match="within a transaction"):  # caught, as a round does
            conn.execute(text("SELECT 1"))
        assert _values(conn) == []  # the round's other reads still work
    _insert(db, "a")
    with db.kept_read() as conn:  # and so do the next rounds, with a fresh snapshot
        assert not second.in_transaction() and _values(conn) == ["a"]


def test_dispose_closes_the_kept_connections(settings: Settings) -> None:
    opened = open_databases(settings)
    with opened.catalog.kept_read() as conn:
        kept = conn
    opened.dispose()
    assert kept.closed
