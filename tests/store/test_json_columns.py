"""``dialect.columns_as_json``: a bulk read of columns as JSON arrays, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from fingerprints.store import dialect
from fingerprints.store.database import Databases, open_databases
from fingerprints.store.tables import albums, tracks
from tests.backends import BACKENDS, make_settings

# Ids a separator-joined read would get wrong: quotes, backslashes, commas, brackets, non-ASCII.
AWKWARD = ['t"1', "t\\2", "t,3", "t]4", "tràck 5", "t\t6", "😀7"]


@pytest.fixture(params=BACKENDS)
def dbs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Databases]:
    opened = open_databases(make_settings(request.param, tmp_path))
    yield opened
    opened.dispose()


def _read(dbs: Databases, *, where_name: str | None = None) -> list[list[object]]:
    stmt = select(tracks.c.album_rowid, tracks.c.id, tracks.c.duration_ms).order_by(tracks.c.rowid)
    if where_name is not None:
        stmt = stmt.where(tracks.c.name == where_name)
    with dbs.catalog.read() as conn:
        rows = dialect.raw_rows(conn, dialect.columns_as_json(conn, stmt))
    assert len(rows) == 1
    return dialect.json_columns(rows[0])


def test_columns_come_back_aligned_row_for_row(dbs: Databases) -> None:
    with dbs.catalog.write() as conn:
        album_rowids = [
            conn.execute(
                insert(albums).values(id=f"al{i}", name=f"A{i}").returning(albums.c.rowid)
            ).scalar_one()
            for i in range(3)
        ]
        conn.execute(
            insert(tracks),
            [
                {"id": track_id, "name": "x", "album_rowid": album_rowids[i % 3], "duration_ms": 1000 + i}
                for i, track_id in enumerate(AWKWARD)
            ],
        )
    owners, ids, durations = _read(dbs)
    assert ids == AWKWARD
    assert owners == [album_rowids[i % 3] for i in range(len(AWKWARD))]
    assert durations == [1000 + i for i in range(len(AWKWARD))]


def test_no_rows_gives_empty_lists(dbs: Databases) -> None:
    assert _read(dbs, where_name="nothing") == [[], [], []]
