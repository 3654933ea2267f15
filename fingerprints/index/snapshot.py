"""Index snapshots under ``<data-dir>/index/``: a restart loads them instead of rebuilding.

Each key is one directory: ``meta.json`` (the watermark, the parameters and a checksum of
every file), the exact tier (``ids.json`` + ``vectors.npy``) and, for HNSW keys, the graph.
A snapshot is used only when its watermark equals the database's (the key's generation,
bumped in the same transaction as every write, and its row count) and every checksum
matches; otherwise the caller rebuilds and logs why. Writes go to a temporary directory that
replaces the old one in one rename, so a crash mid-save leaves the previous snapshot intact.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fingerprints.domain import Distance
from fingerprints.index.exact import ExactIndex
from fingerprints.index.hnsw import HnswIndex
from fingerprints.index.registry import IndexKey, IndexParams, KeyIndex

FORMAT = 1


@dataclass(frozen=True, slots=True)
class Watermark:
    """What the database says about a key: proof that an index holds exactly its rows."""

    generation: int
    count: int


class SnapshotUnusable(Exception):
    """Why a snapshot cannot be used (missing, stale, corrupt); the caller rebuilds."""


def key_dir(root: Path, key: IndexKey) -> Path:
    return root / key.feature_type_id / key.entity_type.value


# Checksums guard against torn or damaged files, not against an attacker. SHA-1 runs on the
# CPU's SHA extensions where present: ~1.5 GB/s here against ~0.45 for BLAKE2b, and hashing a
# 100,000-vector graph is on the path of every cold start. Older snapshots name no algorithm
# (BLAKE2b, 20 bytes); they still verify.
DIGEST = "sha1"
DIGESTS: dict[str, Callable[[], Any]] = {
    "sha1": lambda: hashlib.sha1(usedforsecurity=False),
    "blake2b": lambda: hashlib.blake2b(digest_size=20),
}


def _digest(path: Path, algorithm: str) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, DIGESTS[algorithm]).hexdigest()


def _files(directory: Path, algorithm: str = DIGEST) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): _digest(p, algorithm)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != "meta.json"
    }


def _save_exact(index: ExactIndex, directory: Path, name: str) -> None:
    ids, matrix = index.items()
    (directory / f"{name}.ids.json").write_bytes(orjson.dumps(ids))
    np.save(directory / f"{name}.npy", matrix, allow_pickle=False)


def _load_exact(directory: Path, name: str, dimension: int, distance: Distance) -> ExactIndex:
    ids = orjson.loads((directory / f"{name}.ids.json").read_bytes())
    matrix = np.load(directory / f"{name}.npy", allow_pickle=False)
    if matrix.shape != (len(ids), dimension):
        raise SnapshotUnusable(f"{name} tier has shape {matrix.shape}, expected ({len(ids)}, {dimension})")
    index = ExactIndex(dimension, distance, capacity=len(ids))
    if ids:
        index.upsert_many(ids, matrix, prepared=True)
    return index


def save(index: KeyIndex, root: Path, watermark: Watermark, *, seq: int = 0) -> Path:
    """Write the key's snapshot; the caller guarantees no write happens meanwhile. ``seq`` is
    the change-log position the index reflects: a later start replays the log from there."""
    target = key_dir(root, index.key)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{index.key.entity_type.value}-", dir=target.parent))
    try:
        with index.lock.read():
            _save_exact(index.exact, tmp, "exact")
            if index.graph is not None:
                index.graph.save(tmp / "graph")
            meta: dict[str, Any] = {
                "format": FORMAT,
                "feature_type_id": index.key.feature_type_id,
                "entity_type": index.key.entity_type.value,
                "dimension": index.dimension,
                "distance": index.distance.value,
                "kind": "hnsw" if index.graph is not None else "exact",
                "recall": index.recall,
                "watermark": asdict(watermark),
                "seq": seq,
            }
        meta["digest"] = DIGEST
        meta["files"] = _files(tmp)
        (tmp / "meta.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load(
    root: Path,
    key: IndexKey,
    *,
    dimension: int,
    distance: Distance,
    watermark: Watermark | None,
    params: IndexParams,
) -> KeyIndex:
    """The key's index from its snapshot, or ``SnapshotUnusable`` saying why not. With no
    ``watermark`` the snapshot may be behind the database: the caller replays the change
    log from ``saved_seq`` and checks the count itself."""
    directory = key_dir(root, key)
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise SnapshotUnusable("no snapshot")
    try:
        meta = orjson.loads(meta_path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise SnapshotUnusable(f"corrupt meta.json: {exc}") from None
    if meta.get("format") != FORMAT:
        raise SnapshotUnusable(f"snapshot format {meta.get('format')!r}, expected {FORMAT}")
    if (meta.get("dimension"), meta.get("distance")) != (dimension, distance.value):
        raise SnapshotUnusable("snapshot was made for another dimension or distance")
    if watermark is not None and meta.get("watermark") != asdict(watermark):
        raise SnapshotUnusable(f"stale: snapshot at {meta.get('watermark')}, database at {asdict(watermark)}")
    algorithm = meta.get("digest", "blake2b")
    if algorithm not in DIGESTS:
        raise SnapshotUnusable(f"unknown checksum algorithm {algorithm!r}")
    if meta.get("files") != _files(directory, algorithm):
        raise SnapshotUnusable("corrupt: a file's checksum does not match")
    index = KeyIndex(key, dimension, distance, params)
    try:
        index.exact = _load_exact(directory, "exact", dimension, distance)
        if meta["kind"] == "hnsw":
            index.graph = HnswIndex.load(directory / "graph", verified=True)  # checksums checked above
            index.recall = meta.get("recall")
    except (OSError, ValueError) as exc:
        raise SnapshotUnusable(f"corrupt: {exc}") from None
    size = len(index.exact) + (len(index.graph) if index.graph is not None else 0)
    if watermark is not None and size != watermark.count:
        raise SnapshotUnusable(f"stale: snapshot holds {size} vectors, database {watermark.count}")
    return index


def saved_seq(root: Path, key: IndexKey) -> int | None:
    """The change-log position a key's snapshot reflects (None: no usable snapshot meta)."""
    try:
        meta = orjson.loads((key_dir(root, key) / "meta.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    seq = meta.get("seq") if isinstance(meta, dict) else None
    return seq if isinstance(seq, int) and seq >= 0 else None
