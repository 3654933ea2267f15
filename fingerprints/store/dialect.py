"""Everything that differs between SQL dialects lives here: pragmas, upserts, raw cursors."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import orjson
from sqlalchemy import ARRAY, Table, Text, any_, bindparam, event, func, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import ClauseElement, Executable

WRITE_OPTION = "fingerprints_write"


def configure_engine(engine: Engine, *, busy_timeout_ms: int) -> None:
    """Install per-connection settings for the engine's dialect."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front, so it never fails half-way on an upgrade.
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def upsert(conn: Connection, table: Table, *, keys: Sequence[str], update: Sequence[str]) -> Executable:
    """``INSERT … ON CONFLICT (keys) DO UPDATE SET update…`` for the connection's dialect."""
    name = conn.dialect.name
    if name == "sqlite":
        stmt: Any = sqlite.insert(table)
    elif name == "postgresql":
        stmt = postgresql.insert(table)
    else:  # pragma: no cover - only the two supported dialects exist
        raise NotImplementedError(f"no upsert for dialect {name}")
    if not update:
        return stmt.on_conflict_do_nothing(index_elements=list(keys))
    return stmt.on_conflict_do_update(
        index_elements=list(keys), set_={col: stmt.excluded[col] for col in update}
    )


def increment(conn: Connection, table: Table, *, keys: dict[str, Any], column: str) -> None:
    """Insert the row with ``column`` = 1, or add 1 to it when the row exists (the statement
    is compiled once per shape: every write batch runs it)."""

    def build() -> Any:
        stmt: Any = (sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert)(table)
        return stmt.values(**{k: bindparam(k) for k in keys}, **{column: 1}).on_conflict_do_update(
            index_elements=list(keys), set_={column: table.c[column] + 1}
        )

    cached_rows(conn, ("increment", table.name, tuple(keys), column), build, keys, fetch=False)


def _run(
    conn: Connection, sql: str, args: Any, *, many: bool = False, fetch: bool = True
) -> list[tuple[Any, ...]]:
    """One statement on the connection's plain DB-API cursor (rows as tuples; none for a
    write, which has no result set to fetch on every driver)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if many:
            cursor.executemany(sql, args)
            return []
        cursor.execute(sql, args)
        return list(cursor.fetchall()) if fetch and cursor.description is not None else []
    finally:
        cursor.close()


def _bind(conn: Connection, positions: Sequence[str], values: dict[str, Any]) -> Any:
    return [values[name] for name in positions] if conn.dialect.positional else values


def raw_rows(conn: Connection, stmt: ClauseElement) -> list[tuple[Any, ...]]:
    """Run a Core statement on the plain DB-API cursor: tuples, no Row objects."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params: dict[str, Any] = dict(compiled.construct_params() or {})
    return _run(conn, str(compiled), _bind(conn, getattr(compiled, "positiontup", None) or [], params))


_QUERIES: dict[tuple[str, Any], tuple[str, list[str], dict[str, Any]]] = {}


def cached_rows(
    conn: Connection,
    key: Any,
    build: Callable[[], ClauseElement],
    params: dict[str, Any],
    *,
    fetch: bool = True,
) -> list[tuple[Any, ...]]:
    """``raw_rows`` for a statement of constant shape: ``build`` runs and compiles once per
    ``key``; each call only binds ``params`` (by name) and runs it on the plain cursor
    (``fetch=False``: a write, nothing to read back)."""
    sql, args = _cached(conn, key, build, params)
    return _run(conn, sql, args, fetch=fetch)


def cached_batches(
    conn: Connection, key: Any, build: Callable[[], ClauseElement], params: dict[str, Any], *, size: int
) -> Iterator[list[tuple[Any, ...]]]:
    """``cached_rows`` handed over ``size`` rows at a time from one cursor (server-side on
    PostgreSQL): a bulk read whose rows are consumed as they come never holds them all at once."""
    sql, args = _cached(conn, key, build, params)
    cursor = _stream_cursor(conn, size)
    try:
        cursor.execute(sql, args)
        while batch := cursor.fetchmany(size):
            yield cast(list[tuple[Any, ...]], batch)
    finally:
        cursor.close()


def _cached(
    conn: Connection, key: Any, build: Callable[[], ClauseElement], params: dict[str, Any]
) -> tuple[str, Any]:
    shape = (conn.dialect.name, key)
    cached = _QUERIES.get(shape)
    if cached is None:
        compiled = build().compile(dialect=conn.dialect)
        literals = dict(compiled.construct_params(_check=False) or {})  # type: ignore[call-arg]
        cached = _QUERIES[shape] = (
            str(compiled),
            list(getattr(compiled, "positiontup", None) or []),
            literals,
        )
    sql, positions, literals = cached
    return sql, _bind(conn, positions, {**literals, **params})


def in_param(conn: Connection, column: Any, name: str) -> Any:
    """``column IN (:name)`` where ``:name`` is bound to the whole list at run time (see
    ``list_param``): one placeholder whatever the number of values."""
    if conn.dialect.name == "sqlite":
        return column.in_(select(literal_column("value")).select_from(func.json_each(bindparam(name))))
    return column == any_(bindparam(name, type_=ARRAY(Text)))


def list_param(conn: Connection, values: Sequence[Any]) -> Any:
    return orjson.dumps(list(values)).decode() if conn.dialect.name == "sqlite" else list(values)


def columns_as_json(conn: Connection, stmt: Any) -> Any:
    """One row holding each column of ``stmt``'s rows as a JSON array, the arrays in the same
    row order (every aggregate of one pass sees the rows in the same order, and ``json_agg``
    is never split over parallel workers). Millions of rows then cross into Python as a few
    strings parsed in C, several times faster than a tuple and its objects per row."""
    rows = stmt.subquery()
    aggregate = func.json_group_array if conn.dialect.name == "sqlite" else func.json_agg
    return select(*(aggregate(column) for column in rows.c))


def json_columns(row: Sequence[Any]) -> list[list[Any]]:
    """The lists of a ``columns_as_json`` row (SQLite returns text, psycopg parsed JSON, and
    PostgreSQL NULL for no rows)."""
    return [
        [] if value is None else orjson.loads(value) if isinstance(value, str) else value for value in row
    ]


_UPSERT_SQL: dict[
    tuple[str, str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], tuple[str, list[str]]
] = {}


def upsert_many(
    conn: Connection,
    table: Table,
    *,
    keys: Sequence[str],
    update: Sequence[str],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    """Bulk upsert of plain tuples; the statement is compiled once per shape, not per batch."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _upsert_unnest(conn, table, keys=keys, update=update, columns=columns, rows=rows)
        return
    shape = (conn.dialect.name, table.name, tuple(keys), tuple(update), tuple(columns))
    cached = _UPSERT_SQL.get(shape)
    if cached is None:
        stmt: Any = upsert(conn, table, keys=keys, update=update)
        compiled = stmt.compile(dialect=conn.dialect, column_keys=list(columns))
        cached = _UPSERT_SQL[shape] = (str(compiled), list(getattr(compiled, "positiontup", None) or []))
    sql, positions = cached
    if conn.dialect.positional:
        if positions != list(columns):
            order = [list(columns).index(name) for name in positions]
            rows = [tuple(row[i] for i in order) for row in rows]
        args: Sequence[Any] = rows
    else:
        args = [dict(zip(columns, row, strict=True)) for row in rows]
    _run(conn, sql, args, many=True)


_UNNEST_SQL: dict[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], str] = {}


def _upsert_unnest(
    conn: Connection,
    table: Table,
    *,
    keys: Sequence[str],
    update: Sequence[str],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    """PostgreSQL: the whole batch as one ``INSERT … SELECT * FROM unnest(<one array per
    column>) ON CONFLICT …`` statement, not one statement per row. A key may occur once per
    statement there, so the batch keeps each key's last row (what row-by-row upserts leave)."""
    shape = (table.name, tuple(keys), tuple(update), tuple(columns))
    sql = _UNNEST_SQL.get(shape)
    if sql is None:
        quoted = ", ".join(f'"{c}"' for c in columns)
        arrays = ", ".join(f"%s::{table.c[c].type.compile(dialect=conn.dialect)}[]" for c in columns)
        conflict = ", ".join(f'"{k}"' for k in keys)
        action = (
            "DO UPDATE SET " + ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in update)
            if update
            else "DO NOTHING"
        )
        sql = _UNNEST_SQL[shape] = (
            f'INSERT INTO "{table.name}" ({quoted}) SELECT * FROM unnest({arrays}) '
            f"ON CONFLICT ({conflict}) {action}"
        )
    positions = [list(columns).index(k) for k in keys]
    last = {tuple(row[i] for i in positions): n for n, row in enumerate(rows)}
    if len(last) != len(rows):
        rows = [rows[n] for n in sorted(last.values())]
    _run(conn, sql, [list(column) for column in zip(*rows, strict=True)])


STREAM_BATCH = 20_000


def stream_rows(conn: Connection, stmt: ClauseElement, *, batch: int = STREAM_BATCH) -> Iterator[list[Any]]:
    """A large result in batches of plain tuples. PostgreSQL streams it through a server-side
    cursor (the client never holds more than a batch of raw rows); SQLite steps its cursor."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params: dict[str, Any] = dict(compiled.construct_params() or {})
    args = _bind(conn, getattr(compiled, "positiontup", None) or [], params)
    cursor = _stream_cursor(conn, batch)
    try:
        cursor.execute(str(compiled), args)
        while rows := cursor.fetchmany(batch):
            yield list(rows)
    finally:
        cursor.close()


_cursor_names = itertools.count()


def _stream_cursor(conn: Connection, batch: int) -> Any:
    """A DB-API cursor for a long read: named (server-side) on PostgreSQL, so the client holds
    one batch of raw rows at a time; SQLite steps a plain cursor anyway."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    if conn.dialect.name != "postgresql":
        return dbapi.cursor()
    cursor = dbapi.cursor(name=f"fp_stream_{next(_cursor_names)}")  # type: ignore[call-arg]
    cursor.itersize = batch  # type: ignore[attr-defined]
    return cursor


def existing_values(conn: Connection, column: Any, values: Sequence[str]) -> set[str]:
    """Which of ``values`` occur in ``column``: one statement however many values are asked."""
    if not values:
        return set()
    rows = cached_rows(
        conn,
        ("existing", column.table.name, column.name),
        lambda: select(column).where(in_param(conn, column, "ids")),
        {"ids": list_param(conn, values)},
    )
    return {row[0] for row in rows}


def file_paths(engine: Engine) -> list[str]:
    """Files an SQLite database occupies (main file, WAL, shared memory); empty elsewhere."""
    if engine.dialect.name != "sqlite" or not engine.url.database:
        return []
    main = engine.url.database
    return [main, f"{main}-wal", f"{main}-shm"]
