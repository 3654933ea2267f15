"""Index sync across replicas: apply the change log's entries written by other processes.

Each replica keeps, per database, the sequence of the last change it has applied. A worker
thread reads what came after it, skips its own writes (already applied by the write hooks),
and brings the in-memory index to the database's current state for everything the others
touched: a ``maps`` change re-reads those entities' vectors (present: upsert, gone: remove),
a ``key`` change reloads the key, a ``type`` change re-reads the feature type. Re-reading the
current state, rather than replaying values, makes every application idempotent and order-safe.

The worker wakes every ``sync_interval`` seconds; on PostgreSQL a ``LISTEN`` connection wakes
it as soon as another replica commits, so a write is served everywhere well within a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from fingerprints.domain import EntityType
from fingerprints.errors import NotFound
from fingerprints.index.registry import IndexKey, KeyIndex
from fingerprints.service import indexing
from fingerprints.service.base import Services, cached_feature_type
from fingerprints.store import changes
from fingerprints.store import feature_maps as maps_store
from fingerprints.store import feature_types as types_store
from fingerprints.store.database import Database

log = logging.getLogger(__name__)

PRUNE_EVERY = 60.0  # seconds between trims of the change log


class ChangeFeed:
    """Per-database positions in the change log, and the worker that advances them."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.positions: dict[str, int] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[_Listener] = []
        self._last_prune = 0.0

    def databases(self) -> list[Database]:
        return [self.svc.dbs.catalog, self.svc.dbs.user]

    def mark_start(self) -> None:
        """Remember where the log ends before the index is built: whatever commits during
        the build is applied afterwards (harmless twice: application re-reads the state)."""
        for db in self.databases():
            with db.read() as conn:
                self.positions[db.name] = changes.last_seq(conn)

    def start(self) -> None:
        for db in self.databases():
            if db.dialect == "postgresql":
                listener = _Listener(db, self._wake, self._stop)
                listener.start()
                self._listeners.append(listener)
        self._thread = threading.Thread(target=self._run, name="fingerprints-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for listener in self._listeners:
            listener.join()
        self._listeners.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.catch_up()
                self._maybe_prune()
            except Exception:  # noqa: BLE001 - the worker outlives one failed pass
                log.exception("index sync pass failed; retrying")
            self._wake.wait(timeout=self.svc.settings.sync_interval)
            self._wake.clear()

    def catch_up(self) -> int:
        """Apply every change the other replicas committed since the last pass; returns how
        many were applied."""
        applied = 0
        for db in self.databases():
            while True:
                with db.read() as conn:
                    batch = changes.since(conn, self.positions.get(db.name, 0))
                if not batch:
                    break
                foreign = [c for c in batch if c.origin != db.origin]
                if foreign:
                    # In the writers' turn: this process's own writes do not interleave.
                    with db.serialized():
                        apply_changes(self.svc, db, foreign)
                    applied += len(foreign)
                self.positions[db.name] = batch[-1].seq
        return applied

    def _maybe_prune(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = time.monotonic()
        for db in self.databases():
            with db.write() as conn:
                gone = changes.prune(conn, keep=self.svc.settings.change_log_keep)
            if gone:
                log.info("change log of %s: %d old entries pruned", db.name, gone)


def apply_changes(svc: Services, db: Database, entries: Iterable[changes.Change]) -> None:
    """Bring the index up to the database's state for everything ``entries`` touched."""
    types: set[str] = set()
    keys: set[tuple[str, EntityType | None]] = set()
    maps: dict[tuple[str, EntityType], set[str]] = {}
    for change in entries:
        if change.kind == "type":
            types.add(change.feature_type_id)
        elif change.kind == "key" or change.entity_ids is None:
            keys.add((change.feature_type_id, change.entity_type))
        elif change.entity_type is not None:
            maps.setdefault((change.feature_type_id, change.entity_type), set()).update(change.entity_ids)
    if types:
        svc.type_cache.clear()
        for type_id in sorted(types):
            with svc.dbs.catalog.read() as conn:
                feature_type = types_store.get_feature_type(conn, type_id=type_id)
            if feature_type is None:
                svc.index.drop_feature_type(type_id)
            else:
                indexing.feature_type_changed(svc, feature_type)
    reloaded: set[IndexKey] = set()
    for type_id, entity_type in sorted(keys, key=str):
        for key in svc.index.keys():
            if key.feature_type_id == type_id and (entity_type is None or key.entity_type is entity_type):
                if svc.dbs.for_entity(key.entity_type) is db and _reload(svc, key):
                    reloaded.add(key)
    for (type_id, entity_type), ids in sorted(maps.items(), key=str):
        key = IndexKey(type_id, entity_type)
        index = svc.index.get(key)
        if index is None or key in reloaded:
            continue  # not loaded here (a later load reads the database) or just reloaded
        refresh(db, index, sorted(ids))
    svc.index.notify()


def refresh(db: Database, index: KeyIndex, ids: list[str]) -> None:
    """Make some entities of one key equal to the database: upsert the stored, drop the gone."""
    with db.read() as conn:
        found, matrix = maps_store.vectors_of(
            conn,
            entity_type=index.key.entity_type,
            type_id=index.key.feature_type_id,
            entity_ids=ids,
            dimension=index.dimension,
        )
    if found:
        index.upsert_many(found, matrix)
    gone = set(ids).difference(found)
    if gone:
        index.remove_many(gone)


def _reload(svc: Services, key: IndexKey) -> bool:
    feature_type = cached_feature_type(svc, key.feature_type_id)
    if feature_type is None or not feature_type.is_active or not feature_type.applies(key.entity_type):
        svc.index.drop(key)
        return False
    try:
        indexing.load_key(svc, feature_type, key.entity_type)
    except NotFound:
        svc.index.drop(key)
        return False
    return True


class _Listener:
    """A PostgreSQL connection that ``LISTEN``s to the change channel and wakes the feed."""

    def __init__(self, db: Database, wake: threading.Event, stop: threading.Event) -> None:
        self.db, self.wake, self.stop = db, wake, stop
        self._conn: Any = None
        self._thread = threading.Thread(target=self._run, name=f"fingerprints-listen-{db.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        """Wait for the thread (it sees ``stop`` within a second) and its connection to end."""
        self._thread.join(timeout=5)

    def _connect(self) -> Any:
        import psycopg

        url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = psycopg.connect(url, autocommit=True)
        try:
            conn.execute(f"LISTEN {changes.NOTIFY_CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                if self._conn is None:
                    self._conn = self._connect()
                    self.wake.set()  # notifications may have been missed while away
                for _ in self._conn.notifies(timeout=1.0, stop_after=1):
                    self.wake.set()
            except Exception as exc:  # noqa: BLE001 - polling covers us until reconnected
                if self.stop.is_set():
                    break
                log.warning("LISTEN on %s lost (%s); polling until it reconnects", self.db.name, exc)
                self.close()
                self.stop.wait(timeout=1.0)
        self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
