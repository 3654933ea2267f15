"""Data access for aggregation: memberships, stale markers, member vectors and jobs."""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import numpy as np
from sqlalchemy import String, and_, bindparam, cast, delete, func, literal, or_, select, text, union, update
from sqlalchemy.engine import Connection

from fingerprints.domain import VECTOR_DTYPE, EntityType
from fingerprints.store import dialect
from fingerprints.store.feature_maps import CHUNK
from fingerprints.store.tables import (
    albums,
    artists,
    feature_maps,
    jobs,
    playlist_feature_maps,
    stale,
    track_artists,
    tracks,
    user_playlist,
    user_playlist_tracks,
)
from fingerprints.store.tables import (
    changes as changes_log,
)

MAIN_ROLE = 0
# A main artist's link (a link without a role counts as main): the restriction of
# FINGERPRINTS_AGGREGATION_MAIN_ARTISTS_ONLY, one expression for every reader.
_MAIN_ARTIST = func.coalesce(track_artists.c.role, MAIN_ROLE) == MAIN_ROLE
READ_BATCH = 8192  # rows per fetch of a bulk read of vectors


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]


# ------------------------------------------------------------------ memberships


def owners_of_tracks(
    conn: Connection, *, entity_type: EntityType, track_ids: Sequence[str], main_only: bool = False
) -> set[str]:
    """Albums, artists (catalog.db) or playlists (user.db) containing any of the tracks (one
    statement, compiled once: it runs on every ingest batch)."""
    if not track_ids:
        return set()

    def build() -> Any:
        if entity_type is EntityType.PLAYLIST:
            t = user_playlist_tracks.c
            return select(t.playlist_id).where(dialect.in_param(conn, t.track_id, "ids")).distinct()
        if entity_type is EntityType.ALBUM:
            join: Any = tracks.join(albums, albums.c.rowid == tracks.c.album_rowid)
            owner = albums.c.id
        else:
            join = tracks.join(track_artists, track_artists.c.track_rowid == tracks.c.rowid).join(
                artists, artists.c.rowid == track_artists.c.artist_rowid
            )
            owner = artists.c.id
        stmt = select(owner).select_from(join).where(dialect.in_param(conn, tracks.c.id, "ids"))
        if main_only and entity_type is not EntityType.ALBUM:
            stmt = stmt.where(_MAIN_ARTIST)
        return stmt.distinct()

    rows = dialect.cached_rows(
        conn,
        ("owners_of_tracks", entity_type, main_only),
        build,
        {"ids": dialect.list_param(conn, track_ids)},
    )
    return {row[0] for row in rows}


def memberships(
    conn: Connection,
    *,
    entity_type: EntityType,
    owner_ids: Sequence[str] | None,
    main_only: bool = False,
) -> list[tuple[str, str]]:
    """(owner id, track id) pairs of the given owners (None: of every owner, in one scan);
    a playlist's duplicates counted once."""
    rows: list[tuple[str, str]] = []
    for chunk in _chunks(owner_ids) if owner_ids is not None else [None]:
        if entity_type is EntityType.ALBUM:
            stmt: Any = select(albums.c.id, tracks.c.id).select_from(
                tracks.join(albums, albums.c.rowid == tracks.c.album_rowid)
            )
            owner_col: Any = albums.c.id
        elif entity_type is EntityType.ARTIST:
            join = track_artists.join(artists, artists.c.rowid == track_artists.c.artist_rowid).join(
                tracks, tracks.c.rowid == track_artists.c.track_rowid
            )
            stmt = select(artists.c.id, tracks.c.id).select_from(join)
            if main_only:
                stmt = stmt.where(_MAIN_ARTIST)
            stmt = stmt.distinct()
            owner_col = artists.c.id
        else:
            t = user_playlist_tracks
            stmt = select(t.c.playlist_id, t.c.track_id).distinct()
            owner_col = t.c.playlist_id
        if chunk is not None:
            stmt = stmt.where(owner_col.in_(chunk))
        rows.extend(dialect.raw_rows(conn, stmt))
    return rows


def _members_stmt(entity_type: EntityType, main_only: bool) -> Any:
    if entity_type is EntityType.ALBUM:
        return select(albums.c.id).where(albums.c.rowid.in_(select(tracks.c.album_rowid).distinct()))
    if entity_type is EntityType.ARTIST:
        linked = select(track_artists.c.artist_rowid)
        if main_only:
            linked = linked.where(_MAIN_ARTIST)
        return select(artists.c.id).where(artists.c.rowid.in_(linked.distinct()))
    return select(user_playlist_tracks.c.playlist_id).distinct()


def _aggregates_stmt(entity_type: EntityType, type_id: str) -> Any:
    if entity_type is EntityType.PLAYLIST:
        t = playlist_feature_maps
        return select(t.c.playlist_id).where(t.c.feature_type_id == type_id)
    t = feature_maps
    return select(t.c.entity_id).where(t.c.feature_type_id == type_id, t.c.entity_type == entity_type.value)


def _stale_stmt(entity_type: EntityType, type_id: str) -> Any:
    return select(stale.c.entity_id).where(
        stale.c.feature_type_id == type_id, stale.c.entity_type == entity_type.value
    )


def owners_with_members(conn: Connection, *, entity_type: EntityType, main_only: bool = False) -> list[str]:
    """Every album / artist / playlist that has at least one track."""
    return sorted(row[0] for row in dialect.raw_rows(conn, _members_stmt(entity_type, main_only)))


def count_owners(conn: Connection, *, entity_type: EntityType) -> int:
    """How many albums, artists or playlists there are."""
    table = {EntityType.ALBUM: albums, EntityType.ARTIST: artists}.get(entity_type, user_playlist)
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _targets(entity_type: EntityType, type_id: str, force: bool, main_only: bool) -> Any:
    if not force:
        return _stale_stmt(entity_type, type_id)
    return union(
        _members_stmt(entity_type, main_only),
        _aggregates_stmt(entity_type, type_id),
        _stale_stmt(entity_type, type_id),
    )


def targets(
    conn: Connection, *, entity_type: EntityType, type_id: str, force: bool, main_only: bool = False
) -> list[str]:
    """What a job recomputes of one (feature type, entity type), sorted: the stale aggregates,
    or (``force``) also every owner with members and every existing aggregate, in one statement."""
    return sorted(row[0] for row in dialect.raw_rows(conn, _targets(entity_type, type_id, force, main_only)))


def count_targets(
    conn: Connection, *, entity_type: EntityType, type_id: str, force: bool, main_only: bool = False
) -> int:
    """How many ``targets`` there are, counted by the database (no ids travel)."""
    counted = select(func.count()).select_from(_targets(entity_type, type_id, force, main_only).subquery())
    return int(conn.execute(counted).scalar_one())


def member_rowids(
    conn: Connection, *, entity_type: EntityType, owner_ids: Sequence[str] | None, main_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(owner rowid, track rowid) of every membership of some albums or artists (None: of all),
    as two int64 arrays, from one statement on the plain cursor."""
    filtered = owner_ids is not None

    def build() -> Any:
        if entity_type is EntityType.ALBUM:
            # In album order: read from the (album_rowid, rowid) index, not the wide track rows.
            stmt: Any = select(tracks.c.album_rowid, tracks.c.rowid).order_by(tracks.c.album_rowid)
        else:
            stmt = select(track_artists.c.artist_rowid, track_artists.c.track_rowid)
        return _restricted(conn, stmt, entity_type, main_only=main_only, filtered=filtered)

    params = {"ids": dialect.list_param(conn, owner_ids)} if owner_ids is not None else {}
    rows = dialect.cached_rows(conn, ("member_rowids", entity_type, main_only, filtered), build, params)
    owners, members = _int_columns(rows, 2)
    return owners, members


def _restricted(
    conn: Connection, stmt: Any, entity_type: EntityType, *, main_only: bool, filtered: bool
) -> Any:
    """A membership statement limited to main artists (artists, ``main_only``) and to the owners
    bound as ``:ids`` (``filtered``)."""
    if main_only and entity_type is not EntityType.ALBUM:
        stmt = stmt.where(_MAIN_ARTIST)
    if filtered:
        stmt = stmt.where(_owner_rowid_column(entity_type).in_(_rowids_of_owners(conn, entity_type)))
    return stmt


def member_track_keys(
    conn: Connection,
    *,
    entity_type: EntityType,
    owner_ids: Sequence[str] | None,
    main_only: bool = False,
    weight: str | None = None,
) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """(owner rowid, track id) of every membership of some albums or artists (None: of all),
    with the track's ``weight`` column (``duration_ms`` / ``popularity``) if asked: no vectors,
    for a reader that takes them from the similarity index."""
    filtered = owner_ids is not None

    def build() -> Any:
        extra = [tracks.c[weight]] if weight is not None else []
        if entity_type is EntityType.ALBUM:
            stmt: Any = select(tracks.c.album_rowid, tracks.c.id, *extra)
        else:
            stmt = select(track_artists.c.artist_rowid, tracks.c.id, *extra).select_from(
                track_artists.join(tracks, tracks.c.rowid == track_artists.c.track_rowid)
            )
        stmt = _restricted(conn, stmt, entity_type, main_only=main_only, filtered=filtered)
        return dialect.columns_as_json(conn, stmt)  # a million (owner, id) pairs as two arrays

    params = {"ids": dialect.list_param(conn, owner_ids)} if owner_ids is not None else {}
    key = ("member_track_keys", entity_type, main_only, filtered, weight)
    columns = dialect.json_columns(dialect.cached_rows(conn, key, build, params)[0])
    owners = np.array(columns[0], dtype=np.int64)
    weights = np.array(columns[2], dtype=np.int64) if weight is not None else None
    return owners, columns[1], weights


def version_bounds(conn: Connection, *, type_id: str) -> tuple[int | None, int | None]:
    """Smallest and largest version among all maps of a feature type: two probes of
    ``idx_feature_maps_version`` (a lone ``min``/``max`` is answered from the index's ends)."""
    fm = feature_maps.c
    low = select(func.min(fm.version)).where(fm.feature_type_id == type_id).scalar_subquery()
    high = select(func.max(fm.version)).where(fm.feature_type_id == type_id).scalar_subquery()
    row = conn.execute(select(low, high)).one()
    return row[0], row[1]


def track_versions_below(conn: Connection, *, type_id: str, below: int) -> dict[str, int]:
    """Track id -> version of the track maps of a type older than ``below``."""
    fm = feature_maps.c
    stmt = select(fm.entity_id, fm.version).where(
        fm.feature_type_id == type_id, fm.version < below, fm.entity_type == EntityType.TRACK.value
    )
    return dict(dialect.raw_rows(conn, stmt))  # type: ignore[arg-type]


def foreign_changes_after(conn: Connection, *, seq: int, origin: str) -> bool:
    """Whether the change log holds a write of another process after ``seq``."""
    stmt = select(changes_log.c.seq).where(changes_log.c.seq > seq, changes_log.c.origin != origin).limit(1)
    return conn.execute(stmt).first() is not None


def owner_rowids(
    conn: Connection, *, entity_type: EntityType, owner_ids: Sequence[str] | None
) -> dict[str, int]:
    """id -> rowid of those of these albums or artists that exist (None: of all of them, read
    as two JSON arrays: a scan's hundred thousand owners in a third of the time)."""
    table = albums if entity_type is EntityType.ALBUM else artists
    if owner_ids is None:
        row = dialect.cached_rows(
            conn,
            ("all_owner_rowids", entity_type),
            lambda: dialect.columns_as_json(conn, select(table.c.id, table.c.rowid)),
            {},
        )[0]
        ids, rowids = dialect.json_columns(row)
        return dict(zip(ids, rowids, strict=True))
    rows = dialect.cached_rows(
        conn,
        ("owner_rowids", entity_type),
        lambda: select(table.c.id, table.c.rowid).where(dialect.in_param(conn, table.c.id, "ids")),
        {"ids": dialect.list_param(conn, owner_ids)},
    )
    return dict(rows)  # type: ignore[arg-type]


def track_rowids(conn: Connection, *, track_ids: Sequence[str]) -> dict[str, int]:
    """id -> rowid of those of these tracks that exist."""
    rows = dialect.cached_rows(
        conn,
        ("track_rowids",),
        lambda: select(tracks.c.id, tracks.c.rowid).where(dialect.in_param(conn, tracks.c.id, "ids")),
        {"ids": dialect.list_param(conn, track_ids)},
    )
    return dict(rows)  # type: ignore[arg-type]


def member_track_ids(
    conn: Connection, *, entity_type: EntityType, owner_ids: Sequence[str], main_only: bool = False
) -> list[str]:
    """Ids of the tracks of some albums or artists (driven by the owners' indexed memberships)."""

    def build() -> Any:
        if entity_type is EntityType.ALBUM:
            return select(tracks.c.id).where(tracks.c.album_rowid.in_(_rowids_of_owners(conn, entity_type)))
        stmt = select(tracks.c.id).select_from(
            track_artists.join(tracks, tracks.c.rowid == track_artists.c.track_rowid)
        )
        return _restricted(conn, stmt, entity_type, main_only=main_only, filtered=True).distinct()

    rows = dialect.cached_rows(
        conn,
        ("member_track_ids", entity_type, main_only),
        build,
        {"ids": dialect.list_param(conn, owner_ids)},
    )
    return [row[0] for row in rows]


def track_maps(
    conn: Connection, *, type_id: str, dimension: int, track_ids: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Track maps of one feature type by track rowid: rowids, (n, dimension) matrix, versions;
    of some tracks, or (None) all of them in one scan."""
    fm = feature_maps.c
    filtered = track_ids is not None

    def build() -> Any:
        stmt = (
            select(tracks.c.rowid, fm.vector, fm.version)
            .select_from(feature_maps.join(tracks, tracks.c.id == fm.entity_id))
            .where(fm.feature_type_id == bindparam("type_id"), fm.entity_type == EntityType.TRACK.value)
        )
        return stmt.where(dialect.in_param(conn, fm.entity_id, "ids")) if filtered else stmt

    params: dict[str, Any] = {"type_id": type_id}
    if track_ids is not None:
        params["ids"] = dialect.list_param(conn, track_ids)
    # Each track has at most one map of a type: the track count bounds the rows.
    capacity = len(track_ids) if track_ids is not None else _track_count(conn)
    (rowids, versions), matrix = _vector_rows(
        conn, ("track_maps", filtered), build, params, capacity=capacity, dimension=dimension, ints=2
    )
    return rowids, matrix, versions


def album_member_maps(
    conn: Connection, *, type_id: str, dimension: int, weight: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Every album membership with its track's map of one feature type, in one scan of the maps:
    album rowids, (n, dimension) matrix, versions, and the track's ``weight`` column if asked.
    A track is on one album at most, so each map is read once, and the members need no join
    to the vectors afterwards (every track has an album). Tracks without a map are not listed."""
    fm, t = feature_maps.c, tracks.c

    def build() -> Any:
        extra = [t[weight]] if weight is not None else []
        return (
            select(t.album_rowid, fm.vector, fm.version, *extra)
            .select_from(feature_maps.join(tracks, t.id == fm.entity_id))
            .where(fm.feature_type_id == bindparam("type_id"), fm.entity_type == EntityType.TRACK.value)
        )

    columns, matrix = _vector_rows(
        conn,
        ("album_member_maps", weight),
        build,
        {"type_id": type_id},
        capacity=_track_count(conn),
        dimension=dimension,
        ints=2 if weight is None else 3,
    )
    return columns[0], matrix, columns[1], columns[2] if weight is not None else None


def _track_count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(tracks)).scalar_one())


def _vector_rows(
    conn: Connection,
    key: Any,
    build: Any,
    params: dict[str, Any],
    *,
    capacity: int,
    dimension: int,
    ints: int,
) -> tuple[list[np.ndarray], np.ndarray]:
    """A bulk read of rows ``(int, vector BLOB, int, ...)``: ``ints`` int64 columns and the
    (n, dimension) float32 matrix. The arrays are allocated once for ``capacity`` rows (an
    untouched tail costs nothing) and filled batch by batch, each batch's BLOBs joined and
    decoded straight into the matrix."""
    matrix = np.empty((capacity, dimension), dtype=VECTOR_DTYPE)
    columns = [np.empty(capacity, dtype=np.int64) for _ in range(ints)]
    getters = [itemgetter(0), *(itemgetter(i) for i in range(2, ints + 1))]
    n = 0
    for batch in dialect.cached_batches(conn, key, build, params, size=READ_BATCH):
        k = len(batch)
        if n + k > capacity:  # rows added since the count: grow (rare)
            capacity = max(2 * capacity, n + k)
            matrix = np.resize(matrix, (capacity, dimension))
            columns = [np.resize(column, capacity) for column in columns]
        for column, get in zip(columns, getters, strict=True):
            column[n : n + k] = np.fromiter(map(get, batch), np.int64, k)
        packed = b"".join(map(itemgetter(1), batch))
        matrix[n : n + k] = np.frombuffer(packed, dtype=VECTOR_DTYPE).reshape(k, dimension)
        n += k
    return [column[:n] for column in columns], matrix[:n].astype(np.float32, copy=False)


def track_weights(
    conn: Connection, *, column: str, track_ids: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(rowid, weight) of some tracks or (None) all; ``column`` is ``duration_ms`` or ``popularity``."""
    filtered = track_ids is not None

    def build() -> Any:
        stmt = select(tracks.c.rowid, tracks.c[column])
        return stmt.where(dialect.in_param(conn, tracks.c.id, "ids")) if filtered else stmt

    params = {"ids": dialect.list_param(conn, track_ids)} if track_ids is not None else {}
    rows = dialect.cached_rows(conn, ("track_weights", column, filtered), build, params)
    rowids, weights = _int_columns(rows, 2)
    return rowids, weights


def _owner_rowid_column(entity_type: EntityType) -> Any:
    return tracks.c.album_rowid if entity_type is EntityType.ALBUM else track_artists.c.artist_rowid


def _rowids_of_owners(conn: Connection, entity_type: EntityType) -> Any:
    """The rowids of the albums or artists bound to ``:ids``."""
    table = albums if entity_type is EntityType.ALBUM else artists
    return select(table.c.rowid).where(dialect.in_param(conn, table.c.id, "ids"))


def _int_columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[np.ndarray]:
    """Integer rows as ``width`` int64 column arrays (one pass, no per-value Python objects kept)."""
    row_type = np.dtype([(f"c{i}", np.int64) for i in range(width)])
    table = np.fromiter(rows, dtype=row_type, count=len(rows))
    return [np.ascontiguousarray(table[f"c{i}"]) for i in range(width)]


# ------------------------------------------------------------------ stale markers


def mark_stale(
    conn: Connection, *, type_ids: Sequence[str], entity_type: EntityType, entity_ids: Sequence[str], now: int
) -> None:
    """Mark aggregates stale (idempotent; the mark time moves forward)."""
    rows = [
        {"feature_type_id": t, "entity_type": entity_type.value, "entity_id": e, "marked_at": now}
        for t in type_ids
        for e in entity_ids
    ]
    if rows:
        stmt = dialect.upsert(
            conn, stale, keys=["feature_type_id", "entity_type", "entity_id"], update=["marked_at"]
        )
        conn.execute(stmt, rows)


def mark_owners_stale(
    conn: Connection,
    *,
    type_ids: Sequence[str],
    entity_type: EntityType,
    track_ids: Sequence[str],
    now: int,
    main_only: bool = False,
) -> None:
    """Mark the albums or artists of these tracks stale: one ``INSERT .. SELECT`` per type (no
    owner ids travel through Python; tracks without owners mark nothing). The statement is
    compiled once: it runs on every ingest batch."""
    if not track_ids or not type_ids or entity_type is EntityType.PLAYLIST:
        return

    def build() -> Any:
        if entity_type is EntityType.ALBUM:
            join: Any = tracks.join(albums, albums.c.rowid == tracks.c.album_rowid)
            owner = albums.c.id
        else:
            join = tracks.join(track_artists, track_artists.c.track_rowid == tracks.c.rowid).join(
                artists, artists.c.rowid == track_artists.c.artist_rowid
            )
            owner = artists.c.id
        owners = (
            select(
                cast(bindparam("type_id"), String),
                literal(entity_type.value),
                owner,
                cast(bindparam("now"), stale.c.marked_at.type),
            )
            .select_from(join)
            .where(dialect.in_param(conn, tracks.c.id, "ids"))
        )
        if main_only and entity_type is not EntityType.ALBUM:
            owners = owners.where(_MAIN_ARTIST)
        stmt: Any = dialect.upsert(
            conn, stale, keys=["feature_type_id", "entity_type", "entity_id"], update=["marked_at"]
        )
        return stmt.from_select(
            ["feature_type_id", "entity_type", "entity_id", "marked_at"], owners.distinct()
        )

    ids = dialect.list_param(conn, track_ids)
    for type_id in type_ids:
        dialect.cached_rows(
            conn,
            ("mark_owners_stale", entity_type, main_only),
            build,
            {"type_id": type_id, "now": now, "ids": ids},
            fetch=False,
        )


def stale_ids(conn: Connection, *, type_id: str, entity_type: EntityType) -> list[str]:
    stmt = (
        select(stale.c.entity_id)
        .where(stale.c.feature_type_id == type_id, stale.c.entity_type == entity_type.value)
        .order_by(stale.c.entity_id)
    )
    return [row[0] for row in dialect.raw_rows(conn, stmt)]


def count_stale(
    conn: Connection, *, type_id: str | None = None, entity_type: EntityType | None = None
) -> int:
    stmt = select(func.count()).select_from(stale)
    if type_id is not None:
        stmt = stmt.where(stale.c.feature_type_id == type_id)
    if entity_type is not None:
        stmt = stmt.where(stale.c.entity_type == entity_type.value)
    return int(conn.execute(stmt).scalar_one())


def clear_stale(
    conn: Connection, *, type_id: str, entity_type: EntityType, entity_ids: Sequence[str]
) -> None:
    """Drop the markers of these aggregates: one statement, one bound list."""
    if not entity_ids:
        return
    conn.execute(
        delete(stale).where(
            stale.c.feature_type_id == type_id,
            stale.c.entity_type == entity_type.value,
            dialect.in_param(conn, stale.c.entity_id, "ids"),
        ),
        {"ids": dialect.list_param(conn, entity_ids)},
    )


def forget_stale(conn: Connection, *, type_id: str | None = None, entity_type: EntityType | None = None,
                 entity_ids: Sequence[str] | None = None) -> None:  # fmt: skip
    """Drop markers (a deleted type, a deleted playlist)."""
    stmt = delete(stale)
    if type_id is not None:
        stmt = stmt.where(stale.c.feature_type_id == type_id)
    if entity_type is not None:
        stmt = stmt.where(stale.c.entity_type == entity_type.value)
    if entity_ids is not None:
        stmt = stmt.where(stale.c.entity_id.in_(list(entity_ids)))
    conn.execute(stmt)


# ------------------------------------------------------------------ jobs


def insert_job(conn: Connection, **values: Any) -> None:
    conn.execute(jobs.insert().values(**values))


def get_job(conn: Connection, *, job_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
    return dict(row) if row else None


def update_job(conn: Connection, *, job_id: str, **values: Any) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))


def next_queued(conn: Connection) -> dict[str, Any] | None:
    stmt = select(jobs).where(jobs.c.status == "queued").order_by(jobs.c.created_at, jobs.c.id).limit(1)
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def _claimable(at: float) -> Any:
    """Queued jobs, and running ones whose replica stopped renewing its lease."""
    expired = or_(jobs.c.lease_expires_at.is_(None), jobs.c.lease_expires_at < at)
    return or_(jobs.c.status == "queued", and_(jobs.c.status == "running", expired))


def has_claimable(conn: Connection, *, at: float) -> bool:
    return conn.execute(select(jobs.c.id).where(_claimable(at)).limit(1)).first() is not None


def claim_job(conn: Connection, *, owner: str, at: float, lease: float) -> dict[str, Any] | None:
    """Take the oldest claimable job for ``owner`` until ``at + lease``. On PostgreSQL the row
    is locked ``FOR UPDATE SKIP LOCKED``, so replicas claiming at once take different jobs (or
    none); on SQLite the writer's exclusive turn does the same."""
    stmt = (
        select(jobs)
        .where(_claimable(at))
        .order_by(jobs.c.created_at, jobs.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    row = conn.execute(stmt).mappings().first()
    if row is None:
        return None
    conn.execute(
        update(jobs)
        .where(jobs.c.id == row["id"])
        .values(
            status="running", lease_owner=owner, lease_expires_at=at + lease, started_at=int(at), processed=0
        )
    )
    return dict(row)


def renew_lease(conn: Connection, *, job_id: str, owner: str, until: float) -> bool:
    """Extend ``owner``'s lease; False when the job is no longer running under it."""
    stmt = (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.lease_owner == owner, jobs.c.status == "running")
        .values(lease_expires_at=until)
    )
    return bool(conn.execute(stmt).rowcount)


def release_lease(conn: Connection, *, job_id: str, owner: str) -> None:
    """Leave a still-running job to whoever claims next (a graceful stop between chunks)."""
    stmt = (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.lease_owner == owner, jobs.c.status == "running")
        .values(lease_expires_at=0.0)
    )
    conn.execute(stmt)


def pending_sweep(conn: Connection) -> bool:
    """Whether a scheduled sweep is already queued or running (by any replica)."""
    stmt = select(jobs.c.id).where(jobs.c.trigger == "schedule", jobs.c.status.in_(["queued", "running"]))
    return conn.execute(stmt.limit(1)).first() is not None


SWEEP_LOCK = 0x46505F5357454550  # "FP_SWEEP": the advisory lock of the periodic sweep


def try_sweep_lock(conn: Connection) -> bool:
    """Take the sweep lock for this connection's session (PostgreSQL: one replica at a time;
    elsewhere there is one process per database file: always granted)."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": SWEEP_LOCK}).scalar())


def release_sweep_lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SWEEP_LOCK})


def last_finished(conn: Connection) -> int | None:
    stmt = select(func.max(jobs.c.finished_at)).where(jobs.c.status == "succeeded")
    value = conn.execute(stmt).scalar_one_or_none()
    return int(value) if value is not None else None
