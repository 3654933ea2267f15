"""The change log (``fingerprints_changes``): every write to feature maps or feature types, in
commit order, so several service replicas over one database keep their in-memory indexes equal.

A writer appends in its own transaction (``record``); readers fetch what came after the last
sequence they applied (``since``). The sequence must never let a reader skip a row that
commits later with a smaller number: on SQLite one writer at a time holds the database, on
PostgreSQL a transaction-scoped advisory lock taken just before the append serializes the
appenders until they commit, so sequence order is commit order. PostgreSQL also announces each
commit with ``NOTIFY`` so replicas apply it at once instead of at their next poll.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from sqlalchemy import delete, func, select, text
from sqlalchemy.engine import Connection

from fingerprints.domain import EntityType
from fingerprints.store.tables import changes

ChangeKind = Literal["maps", "key", "type"]

ORIGIN_OPTION = "fingerprints_origin"
NOTIFY_CHANNEL = "fingerprints_changes"
# Any constant both sides agree on: the key of the advisory lock that orders appenders.
_APPEND_LOCK = 0x46505F43484E47  # "FP_CHNG"


_INSERT = changes.insert()


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    origin: str
    kind: ChangeKind
    feature_type_id: str
    entity_type: EntityType | None
    entity_ids: list[str] | None


def origin_of(conn: Connection) -> str:
    """Which replica writes on this connection (set by ``Database.write``)."""
    return str(conn.get_execution_options().get(ORIGIN_OPTION, ""))


def record(
    conn: Connection,
    kind: ChangeKind,
    *,
    type_id: str,
    entity_type: EntityType | None = None,
    entity_ids: Sequence[str] | None = None,
) -> None:
    """Append one change in the caller's transaction (visible when it commits)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK})
    row = {
        "origin": origin_of(conn),
        "kind": kind,
        "feature_type_id": type_id,
        "entity_type": entity_type.value if entity_type is not None else None,
        "entity_ids": orjson.dumps(list(entity_ids)).decode() if entity_ids is not None else None,
        "created_at": time.time(),
    }
    conn.execute(_INSERT, row)  # one statement object: compiled once, not per write
    if conn.dialect.name == "postgresql":
        # Delivered on commit, once per transaction and channel however many changes it holds.
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


def since(conn: Connection, seq: int, *, limit: int = 10_000) -> list[Change]:
    """Changes after ``seq``, oldest first (at most ``limit``)."""
    stmt = (
        select(
            changes.c.seq,
            changes.c.origin,
            changes.c.kind,
            changes.c.feature_type_id,
            changes.c.entity_type,
            changes.c.entity_ids,
        )
        .where(changes.c.seq > seq)
        .order_by(changes.c.seq)
        .limit(limit)
    )
    return [_change(row) for row in conn.execute(stmt)]


def _change(row: Any) -> Change:
    seq, origin, kind, type_id, entity_type, ids = row
    return Change(
        seq=int(seq),
        origin=origin,
        kind=kind,
        feature_type_id=type_id,
        entity_type=EntityType(entity_type) if entity_type is not None else None,
        entity_ids=orjson.loads(ids) if ids is not None else None,
    )


def last_seq(conn: Connection) -> int:
    """The newest sequence number (0 when the log is empty)."""
    return int(conn.execute(select(func.max(changes.c.seq))).scalar_one_or_none() or 0)


def replayable_after(conn: Connection) -> int:
    """The oldest position ``p`` from which every later change is still in the log: a reader
    at ``p`` or beyond can catch up by replaying; one behind it must reload."""
    oldest = conn.execute(select(func.min(changes.c.seq))).scalar_one_or_none()
    return int(oldest) - 1 if oldest is not None else last_seq(conn)


def prune(conn: Connection, *, keep: int) -> int:
    """Forget all but the newest ``keep`` changes; returns how many rows went."""
    newest = last_seq(conn)
    if newest <= keep:
        return 0
    return int(conn.execute(delete(changes).where(changes.c.seq <= newest - keep)).rowcount)
