"""Data access for feature maps: ``feature_maps`` (catalog.db) and ``playlist_feature_maps`` (user.db).

Callers pass the connection of the right database: playlists live in user.db, the rest in
catalog.db. Bulk writes go through one Core ``executemany``; bulk reads through a plain cursor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import orjson
from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from fingerprints.domain import EntityType, FeatureMap, decode_vector, decode_vectors
from fingerprints.store import changes, dialect
from fingerprints.store.tables import feature_maps, index_generation, playlist_feature_maps

CHUNK = 900  # keys per IN (...) list, well under every engine's parameter limit


class NewFeatureMap(NamedTuple):
    """One row to write, in ``feature_maps`` column order; ``vector`` is the packed BLOB."""

    entity_type: str
    entity_id: str
    feature_type_id: str
    version: int
    vector: bytes
    computed_at: int
    metadata: str | None


# A row as a plain tuple in the same column order (what a bulk writer builds with ``zip``).
MapRow = tuple[str, str, str, int, bytes, int, str | None]

MAP_COLUMNS = list(NewFeatureMap._fields)
PLAYLIST_MAP_COLUMNS = ["playlist_id", *MAP_COLUMNS[2:]]
UPDATED_COLUMNS = ["version", "vector", "computed_at", "metadata"]


_ENTITY_TABLES: dict[EntityType, tuple[Table, ColumnElement[Any], tuple[ColumnElement[bool], ...]]] = {
    entity_type: (playlist_feature_maps, playlist_feature_maps.c.playlist_id, ())
    if entity_type is EntityType.PLAYLIST
    else (feature_maps, feature_maps.c.entity_id, (feature_maps.c.entity_type == entity_type.value,))
    for entity_type in EntityType
}


def entity_table(
    entity_type: EntityType,
) -> tuple[Table, ColumnElement[Any], tuple[ColumnElement[bool], ...]]:
    """The table, its entity-id column and the row filter that holds one entity type (built
    once: every read of a query vector asks for them)."""
    return _ENTITY_TABLES[entity_type]


def upsert_feature_maps(conn: Connection, *, rows: Sequence[MapRow], playlists: bool) -> None:
    """Insert or replace the maps of one database (playlists: user.db) in one ``executemany``."""
    if playlists:
        dialect.upsert_many(
            conn,
            playlist_feature_maps,
            keys=["playlist_id", "feature_type_id"],
            update=UPDATED_COLUMNS,
            columns=PLAYLIST_MAP_COLUMNS,
            rows=[r[1:] for r in rows],
        )
    else:
        dialect.upsert_many(
            conn,
            feature_maps,
            keys=["entity_type", "entity_id", "feature_type_id"],
            update=UPDATED_COLUMNS,
            columns=MAP_COLUMNS,
            rows=rows,
        )
    keys = set(map(itemgetter(0, 2), rows))
    for entity_type, type_id in keys:
        if len(keys) == 1:
            ids = list(map(itemgetter(1), rows))
        else:
            ids = [r[1] for r in rows if (r[0], r[2]) == (entity_type, type_id)]
        bump_generation(conn, type_id=type_id, entity_type=EntityType(entity_type))
        changes.record(conn, "maps", type_id=type_id, entity_type=EntityType(entity_type), entity_ids=ids)


def bump_generation(conn: Connection, *, type_id: str | None, entity_type: EntityType | None) -> None:
    """Mark a key's maps as changed (``type_id``/``entity_type`` None: every matching key)."""
    if type_id is not None and entity_type is not None:
        keys = {"feature_type_id": type_id, "entity_type": entity_type.value}
        dialect.increment(conn, index_generation, keys=keys, column="generation")
        return
    stmt = update(index_generation).values(generation=index_generation.c.generation + 1)
    if type_id is not None:
        stmt = stmt.where(index_generation.c.feature_type_id == type_id)
    if entity_type is not None:
        stmt = stmt.where(index_generation.c.entity_type == entity_type.value)
    conn.execute(stmt)


def count_key(conn: Connection, *, type_id: str, entity_type: EntityType) -> int:
    """How many maps one (feature type, entity type) has."""
    table, _, where = entity_table(entity_type)
    stmt = select(func.count()).select_from(table).where(table.c.feature_type_id == type_id, *where)
    return int(conn.execute(stmt).scalar_one())


def generation(conn: Connection, *, type_id: str, entity_type: EntityType) -> int:
    """The key's change counter (0 before its first write)."""
    stmt = select(index_generation.c.generation).where(
        index_generation.c.feature_type_id == type_id, index_generation.c.entity_type == entity_type.value
    )
    return int(conn.execute(stmt).scalar_one_or_none() or 0)


def maps_of(
    conn: Connection, *, entity_type: EntityType, entity_ids: Sequence[str], type_ids: Sequence[str] | None
) -> dict[str, list[FeatureMap]]:
    """Feature maps of some entities of one type (optionally only some feature types), by
    entity id, each list ordered by feature type id; entities without maps are absent."""
    table, id_col, where = entity_table(entity_type)

    def build() -> Any:  # one shape per entity type and filter: compiled once (cached_rows)
        stmt = select(
            id_col,
            table.c.feature_type_id,
            table.c.version,
            table.c.vector,
            table.c.computed_at,
            table.c.metadata,
        ).where(dialect.in_param(conn, id_col, "ids"), *where)
        if type_ids is not None:
            stmt = stmt.where(dialect.in_param(conn, table.c.feature_type_id, "types"))
        return stmt.order_by(id_col, table.c.feature_type_id)

    params = {"ids": dialect.list_param(conn, entity_ids)}
    if type_ids is not None:
        params["types"] = dialect.list_param(conn, type_ids)
    rows = dialect.cached_rows(conn, ("maps_of", entity_type.value, type_ids is not None), build, params)
    out: dict[str, list[FeatureMap]] = {}
    for entity_id, type_id, version, blob, computed_at, meta in rows:
        out.setdefault(entity_id, []).append(
            FeatureMap(
                type_id,
                version,
                decode_vector(blob),
                computed_at,
                orjson.loads(meta) if meta is not None else None,
            )
        )
    return out


def load_vectors(
    conn: Connection, *, entity_type: EntityType, type_id: str, dimension: int
) -> tuple[list[str], np.ndarray]:
    """Every vector of one (feature type, entity type): ids and one (n, dimension) matrix."""
    table, id_col, where = entity_table(entity_type)
    stmt = select(id_col, table.c.vector).where(table.c.feature_type_id == type_id, *where).order_by(id_col)
    ids: list[str] = []
    parts: list[np.ndarray] = []
    for rows in dialect.stream_rows(conn, stmt):
        batch_ids, blobs = zip(*rows, strict=True)
        ids.extend(batch_ids)
        parts.append(decode_vectors(blobs, dimension))
    if not parts:
        return [], np.empty((0, dimension), dtype=np.float32)
    return ids, parts[0] if len(parts) == 1 else np.concatenate(parts)


def delete_feature_type_maps(conn: Connection, *, type_id: str, playlists: bool) -> dict[EntityType, int]:
    """Delete every map of one feature type from one database; counts per entity type."""
    counts = count_maps(conn, playlists=playlists, type_id=type_id)
    table = playlist_feature_maps if playlists else feature_maps
    conn.execute(delete(table).where(table.c.feature_type_id == type_id))
    bump_generation(conn, type_id=type_id, entity_type=None)
    changes.record(conn, "key", type_id=type_id)
    return {entity_type: n for (_, entity_type), n in counts.items()}


def delete_entity_maps(
    conn: Connection,
    *,
    entity_type: EntityType,
    entity_ids: Iterable[str],
    type_id: str | None = None,
) -> int:
    """Delete the maps of some entities of one type (optionally one feature type only)."""
    table, id_col, where = entity_table(entity_type)
    ids = list(dict.fromkeys(entity_ids))
    deleted = 0
    for start in range(0, len(ids), CHUNK):
        stmt = delete(table).where(id_col.in_(ids[start : start + CHUNK]), *where)
        if type_id is not None:
            stmt = stmt.where(table.c.feature_type_id == type_id)
        deleted += conn.execute(stmt).rowcount
    if deleted:
        bump_generation(conn, type_id=type_id, entity_type=entity_type)
        if type_id is not None:
            changes.record(conn, "maps", type_id=type_id, entity_type=entity_type, entity_ids=ids)
        else:
            for deleted_type in _types_of_key_rows(conn, entity_type=entity_type):
                changes.record(conn, "maps", type_id=deleted_type, entity_type=entity_type, entity_ids=ids)
    return deleted


def _types_of_key_rows(conn: Connection, *, entity_type: EntityType) -> list[str]:
    """Feature types that ever had maps of this entity type (their generation rows)."""
    stmt = select(index_generation.c.feature_type_id).where(
        index_generation.c.entity_type == entity_type.value
    )
    return [row[0] for row in conn.execute(stmt)]


def count_maps(
    conn: Connection,
    *,
    playlists: bool,
    type_id: str | None = None,
    below_version: int | None = None,
) -> dict[tuple[str, EntityType], int]:
    """Map counts per (feature type, entity type) of one database: playlists (user.db) or the
    catalog entities (catalog.db). ``below_version`` counts only maps older than that version."""
    table = playlist_feature_maps if playlists else feature_maps
    cols: list[Any] = [table.c.feature_type_id]
    if not playlists:
        cols.append(feature_maps.c.entity_type)
    stmt = select(*cols, func.count()).group_by(*cols)
    if type_id is not None:
        stmt = stmt.where(table.c.feature_type_id == type_id)
    if below_version is not None:
        stmt = stmt.where(table.c.version < below_version)
    return {
        (row[0], EntityType.PLAYLIST if playlists else EntityType(row[1])): row[-1]
        for row in conn.execute(stmt)
    }


def vectors_of(
    conn: Connection, *, entity_type: EntityType, type_id: str, entity_ids: Sequence[str], dimension: int
) -> tuple[list[str], np.ndarray]:
    """The stored vectors of some entities of one key: the ids found, in one matrix (absent ids
    have no map any more)."""
    if not entity_ids:
        return [], np.empty((0, dimension), dtype=np.float32)
    table, id_col, where = entity_table(entity_type)
    rows = dialect.cached_rows(
        conn,
        ("vectors_of", entity_type.value),
        lambda: select(id_col, table.c.vector).where(
            table.c.feature_type_id == bindparam("type_id"), dialect.in_param(conn, id_col, "ids"), *where
        ),
        {"type_id": type_id, "ids": dialect.list_param(conn, list(dict.fromkeys(entity_ids)))},
    )
    if not rows:
        return [], np.empty((0, dimension), dtype=np.float32)
    ids, blobs = zip(*rows, strict=True)
    return list(ids), decode_vectors(blobs, dimension)
