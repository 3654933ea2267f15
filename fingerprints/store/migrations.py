"""Versioned schema migrations, one list per database.

A small version table (``fingerprints_schema_version``) instead of alembic: the service shares
its databases with pezzottify's own tables, which it must never touch, and each migration
here is plain SQLAlchemy Core, so the same list runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, Integer, MetaData, Table, Text, inspect, select
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from fingerprints.store import tables

log = logging.getLogger(__name__)

_meta = MetaData()
schema_version = Table(
    "fingerprints_schema_version",
    _meta,
    Column("version", Integer, primary_key=True),
    Column("description", Text, nullable=False),
    Column("applied_at", Integer, nullable=False),
)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _create(*wanted: Table) -> Callable[[Connection], None]:
    def apply(conn: Connection) -> None:
        # checkfirst: tables pezzottify already has are left exactly as they are.
        SQLModel.metadata.create_all(conn, tables=list(wanted), checkfirst=True)

    return apply


def _add_columns(table: Table, *names: str) -> Callable[[Connection], None]:
    """``ALTER TABLE … ADD COLUMN`` for each named column of the model the table lacks (a
    table created by an earlier migration from today's model already has them)."""

    def apply(conn: Connection) -> None:
        present = {c["name"] for c in inspect(conn).get_columns(table.name)}
        for name in names:
            if name in present:
                continue
            column = table.c[name]
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{name}" {kind}')

    return apply


def _steps(*steps: Callable[[Connection], None]) -> Callable[[Connection], None]:
    def apply(conn: Connection) -> None:
        for step in steps:
            step(conn)

    return apply


CATALOG_MIGRATIONS = [
    Migration(
        1,
        "fingerprint tables; pezzottify catalog tables where absent",
        _create(tables.feature_map_types, tables.feature_maps, *tables.CATALOG_TABLES),
    ),
    Migration(2, "index generations (snapshot watermarks)", _create(tables.index_generation)),
    Migration(3, "stale aggregates and aggregation jobs", _create(tables.stale, tables.jobs)),
    Migration(
        4,
        "change log (index sync across replicas); job leases",
        _steps(_create(tables.changes), _add_columns(tables.jobs, "lease_owner", "lease_expires_at")),
    ),
]

USER_MIGRATIONS = [
    Migration(
        1,
        "playlist_feature_maps; pezzottify playlist tables where absent",
        _create(*tables.USER_TABLES, tables.playlist_feature_maps),
    ),
    Migration(2, "index generations (snapshot watermarks)", _create(tables.index_generation)),
    Migration(3, "stale playlist aggregates", _create(tables.stale)),
    Migration(4, "change log (index sync across replicas)", _create(tables.changes)),
]


def current_version(conn: Connection) -> int:
    schema_version.create(conn, checkfirst=True)
    versions = conn.execute(select(schema_version.c.version)).scalars().all()
    return max(versions, default=0)


def migrate(conn: Connection, migrations: list[Migration], *, database: str) -> int:
    """Apply every migration above the recorded version, each in the caller's transaction."""
    version = current_version(conn)
    for migration in migrations:
        if migration.version <= version:
            continue
        log.info("migrating %s to schema %d: %s", database, migration.version, migration.description)
        migration.apply(conn)
        conn.execute(
            schema_version.insert().values(
                version=migration.version,
                description=migration.description,
                applied_at=int(time.time()),
            )
        )
        version = migration.version
    return version
