"""Ingestion of feature maps (spec §6.2, design §4): per-item validation, one transaction per database.

The hot path works on the whole batch, column by column: field checks as C-level ``map``s,
one matrix of all vectors (straight from the request body when the REST decoder could build
it: ``FeatureColumns``), finiteness, dimension and zero checks as array operations, one packed
buffer sliced into BLOBs, one ``executemany``. Only items that fail a check go through the
per-item path, which says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import orjson

from fingerprints.domain import (
    VECTOR_DTYPE,
    Distance,
    EntityType,
    FeatureType,
    ItemError,
    check_vector_for_type,
    coerce_vector,
)
from fingerprints.errors import PayloadTooLarge, Rejected, ValidationError
from fingerprints.service import aggregation, indexing
from fingerprints.service.base import Services, cached_feature_type, now
from fingerprints.service.inputs import MAX_ID_LENGTH, as_int, as_list
from fingerprints.store import catalog as catalog_store
from fingerprints.store import feature_maps as maps_store

ITEM_KEYS = frozenset({"entity_type", "entity_id", "vector", "metadata"})
COLUMN_KEYS = ("entity_type", "entity_id", "metadata", "vector")
ENTITY_TYPES = {e.value: e for e in EntityType} | {e: e for e in EntityType}
# The column values, without an enum attribute lookup per row.
_ENTITY_TYPE_VALUES = {e: e.value for e in EntityType}


@dataclass(frozen=True, slots=True)
class FeatureColumns:
    """A batch split by field, as a request decoder hands it over: item i is ``entity_types[i]``,
    ``entity_ids[i]``, ``metadata[i]`` (None: absent) and row i of ``vectors``, one numeric
    (n, length) matrix. No item has another field."""

    entity_types: list[Any]
    entity_ids: list[Any]
    metadata: list[Any]
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.entity_ids)

    def items(self) -> list[dict[str, Any]]:
        """The same batch as plain items (what the per-item checks read)."""
        items = []
        for entity_type, entity_id, metadata, vector in zip(
            self.entity_types, self.entity_ids, self.metadata, self.vectors, strict=True
        ):
            item = {"entity_type": entity_type, "entity_id": entity_id, "vector": vector}
            if metadata is not None:
                item["metadata"] = metadata
            items.append(item)
        return items


Batch = FeatureColumns | list[Any]


@dataclass(slots=True)
class IngestResult:
    ingested: int = 0
    errors: list[ItemError] = field(default_factory=list)


@dataclass(slots=True)
class _Accepted:
    """Items that passed validation, in batch order, with their vectors as one matrix."""

    index: list[int] = field(default_factory=list)
    entity_type: list[EntityType] = field(default_factory=list)
    entity_id: list[str] = field(default_factory=list)
    metadata: list[str | None] = field(default_factory=list)
    vectors: np.ndarray | None = None


def ingest_feature_maps(
    svc: Services, *, feature_type_id: object, features: object, version: object = None
) -> IngestResult:
    """Store every valid item; list every invalid one with its index, entity and reason
    (``features``: a list of items, or the same as ``FeatureColumns``)."""
    batch: Batch = features if isinstance(features, FeatureColumns) else as_list(features, field="features")
    if len(batch) > svc.settings.max_batch_items:
        raise PayloadTooLarge(
            f"a batch holds at most {svc.settings.max_batch_items} items (got {len(batch)})",
            field="features",
        )
    if version is not None:
        version = as_int(version, field="version", minimum=1)
    if not isinstance(feature_type_id, str) or not feature_type_id:
        raise ValidationError("feature_type_id must be a non-empty string", field="feature_type_id")

    result = IngestResult()
    feature_type = cached_feature_type(svc, feature_type_id)
    refusal = _refuse_batch(feature_type, feature_type_id, version)
    if refusal is not None:
        code, message = refusal
        result.errors = [_error(i, item, code, message) for i, item in enumerate(_items(batch))]
        return result
    assert feature_type is not None
    stored_version = version if version is not None else feature_type.current_version

    accepted = _validate(batch, feature_type, result.errors)
    blobs = _blobs(accepted.vectors)
    computed_at = now()
    kinds = set(accepted.entity_type)
    for playlists, db in ((False, svc.dbs.catalog), (True, svc.dbs.user)):
        rows = _rows_of(accepted, kinds, playlists=playlists)
        if not rows:
            continue
        with db.serialized():  # the index applies writes in commit order
            with db.write() as conn:
                kept = _keep_known(conn, accepted, rows, result.errors)
                if len(kept) == len(accepted.index):  # the usual batch: every row, as it came
                    kept_kinds, ids, kept_blobs, metadata = (
                        accepted.entity_type,
                        accepted.entity_id,
                        blobs,
                        accepted.metadata,
                    )
                else:
                    kept_kinds = [accepted.entity_type[i] for i in kept]
                    ids = [accepted.entity_id[i] for i in kept]
                    kept_blobs = [blobs[i] for i in kept]
                    metadata = [accepted.metadata[i] for i in kept]
                maps_store.upsert_feature_maps(
                    conn,
                    playlists=playlists,
                    rows=list(
                        zip(
                            map(_ENTITY_TYPE_VALUES.__getitem__, kept_kinds),
                            ids,
                            repeat(feature_type.id),
                            repeat(stored_version),
                            kept_blobs,
                            repeat(computed_at),
                            metadata,
                        )
                    ),
                )
                if not playlists:
                    if kinds == {EntityType.TRACK}:
                        tracks = ids
                    else:
                        tracks = [e for e, k in zip(ids, kept_kinds, strict=True) if k is EntityType.TRACK]
                    aggregation.mark_tracks_changed(svc, conn, track_ids=tracks, type_ids=[feature_type.id])
            _written_to_index(svc, feature_type.id, accepted, kept)
        result.ingested += len(kept)
    result.errors.sort(key=lambda e: e.index)
    return result


def _items(batch: Batch) -> list[Any]:
    return batch.items() if isinstance(batch, FeatureColumns) else batch


def _rows_of(accepted: _Accepted, kinds: set[EntityType], *, playlists: bool) -> list[int]:
    """Positions of the accepted rows stored in one database (playlists: user.db)."""
    stored_here = {EntityType.PLAYLIST} if playlists else kinds - {EntityType.PLAYLIST}
    if not stored_here & kinds:
        return []
    if len(kinds) == 1:
        return list(range(len(accepted.index)))
    return [i for i, e in enumerate(accepted.entity_type) if (e is EntityType.PLAYLIST) == playlists]


def _written_to_index(svc: Services, type_id: str, accepted: _Accepted, kept: list[int]) -> None:
    """Committed rows go to the similarity index (under the writer's turn), one call per
    entity type; a batch of one type with nothing refused passes its matrix as it is."""
    assert accepted.vectors is not None
    kinds = {accepted.entity_type[i] for i in kept}
    if len(kinds) == 1 and len(kept) == len(accepted.entity_id):
        indexing.maps_written(svc, type_id, kinds.pop(), accepted.entity_id, accepted.vectors)
        return
    for entity_type in kinds:
        same = [i for i in kept if accepted.entity_type[i] is entity_type]
        indexing.maps_written(
            svc, type_id, entity_type, [accepted.entity_id[i] for i in same], accepted.vectors[same]
        )


def _refuse_batch(
    feature_type: FeatureType | None, type_id: str, version: int | None
) -> tuple[str, str] | None:
    """A reason that applies to every item of the batch, or None."""
    if feature_type is None:
        return "UNKNOWN_FEATURE_TYPE", f"unknown feature type {type_id!r}"
    if not feature_type.is_active:
        return "FEATURE_TYPE_INACTIVE", f"feature type {type_id!r} is inactive"
    if version is not None and version > feature_type.current_version:
        return (
            "VERSION_TOO_HIGH",
            f"version {version} is above the current version {feature_type.current_version} "
            f"of {type_id!r} (bump the version first)",
        )
    return None


def _error(index: int, item: object, code: str, message: str) -> ItemError:
    entity_type = entity_id = None
    if isinstance(item, Mapping):
        raw_type, raw_id = item.get("entity_type"), item.get("entity_id")
        entity_type = raw_type if isinstance(raw_type, str) else None
        entity_id = raw_id if isinstance(raw_id, str) else None
    return ItemError(index=index, code=code, message=message, entity_type=entity_type, entity_id=entity_id)


def _validate(batch: Batch, feature_type: FeatureType, errors: list[ItemError]) -> _Accepted:
    """Check every item; accepted ones come back with their vectors stacked in one matrix."""
    accepted = _Accepted()
    raw_vectors: Any = []
    columns = _columns(batch)
    fields = _checked_fields(*columns[:3], feature_type) if columns is not None else None
    if columns is not None and fields is not None:  # every item well-formed: no per-item calls
        accepted.index = list(range(len(batch)))
        accepted.entity_type, accepted.entity_id, accepted.metadata = fields
        raw_vectors = columns[3]
        items_to_check: Sequence[Any] = ()
    else:
        items_to_check = _items(batch)
    for index, item in enumerate(items_to_check):
        try:
            entity_type, entity_id, metadata = _check_fields(item, feature_type)
        except Rejected as exc:
            errors.append(_error(index, item, exc.reason, exc.message))
            continue
        accepted.index.append(index)
        accepted.entity_type.append(entity_type)
        accepted.entity_id.append(entity_id)
        accepted.metadata.append(metadata)
        raw_vectors.append(item["vector"])

    matrix, good = _vectors(raw_vectors, feature_type)
    if not good.all():
        for row in np.flatnonzero(~good).tolist():
            reason = _vector_problem(raw_vectors[row], feature_type)
            errors.append(
                ItemError(
                    index=accepted.index[row],
                    code=reason.reason,
                    message=reason.message,
                    entity_type=accepted.entity_type[row].value,
                    entity_id=accepted.entity_id[row],
                )
            )
        keep = np.flatnonzero(good).tolist()
        accepted.index = [accepted.index[i] for i in keep]
        accepted.entity_type = [accepted.entity_type[i] for i in keep]
        accepted.entity_id = [accepted.entity_id[i] for i in keep]
        accepted.metadata = [accepted.metadata[i] for i in keep]
        matrix = matrix[good]
    accepted.vectors = matrix
    return accepted


def _columns(batch: Batch) -> tuple[list[Any], list[Any], list[Any], Any] | None:
    """Entity types, ids, metadata and vectors (a matrix, or each item's value) of a batch
    whose items are all objects with known fields and a vector, else None."""
    if isinstance(batch, FeatureColumns):
        return batch.entity_types, batch.entity_ids, batch.metadata, batch.vectors
    items, n = batch, len(batch)
    if not {dict}.issuperset(map(type, items)) or not all(map(ITEM_KEYS.issuperset, items)):
        return None
    if not all(map(dict.__contains__, items, repeat("vector", n))):
        return None
    return tuple(list(map(dict.get, items, repeat(key, n))) for key in COLUMN_KEYS)  # type: ignore[return-value]


def _checked_fields(
    entity_types: list[Any], entity_ids: list[Any], metadata: list[Any], feature_type: FeatureType
) -> tuple[list[EntityType], list[str], list[str | None]] | None:
    """The fields of a batch whose every item passes ``_check_fields`` (checked column by
    column, at C speed), else None: the per-item path then says what is wrong with which item."""
    if not {str}.issuperset(map(type, entity_types)) or not {str}.issuperset(map(type, entity_ids)):
        return None
    kinds = list(map(ENTITY_TYPES.get, entity_types))
    if not all(kind is not None and feature_type.applies(kind) for kind in set(kinds)):
        return None
    if entity_ids and (min(map(len, entity_ids)) == 0 or max(map(len, entity_ids)) > MAX_ID_LENGTH):
        return None
    if not all(map(str.strip, entity_ids)):
        return None
    if metadata.count(None) == len(metadata):
        return kinds, entity_ids, list(metadata)  # type: ignore[return-value]
    dumped = [None if m is None else orjson.dumps(m).decode() for m in metadata]
    return kinds, entity_ids, dumped  # type: ignore[return-value]


def _check_fields(item: object, feature_type: FeatureType) -> tuple[EntityType, str, str | None]:
    if not isinstance(item, Mapping):
        raise Rejected("INVALID_ITEM", "each feature must be an object")
    if not ITEM_KEYS.issuperset(item):
        unknown = sorted(set(item) - ITEM_KEYS)[0]
        raise Rejected("INVALID_ITEM", f"unknown field {unknown!r}", field=unknown)
    raw_type, entity_id = item.get("entity_type"), item.get("entity_id")
    entity_type = ENTITY_TYPES.get(raw_type) if isinstance(raw_type, str) else None
    if entity_type is None:
        raise Rejected(
            "INVALID_ENTITY_TYPE",
            f"entity_type must be one of track, album, artist, playlist (got {raw_type!r})",
            field="entity_type",
        )
    if not isinstance(entity_id, str) or not entity_id.strip() or len(entity_id) > 255:
        raise Rejected(
            "INVALID_ENTITY_ID",
            "entity_id must be a non-empty string of at most 255 characters",
            field="entity_id",
        )
    if not feature_type.applies(entity_type):
        raise Rejected(
            "ENTITY_TYPE_NOT_APPLICABLE",
            f"feature type {feature_type.id!r} does not apply to {entity_type.value} "
            f"(applies_to: {', '.join(e.value for e in feature_type.applies_to)})",
            field="entity_type",
        )
    if "vector" not in item:
        raise Rejected("MISSING_VECTOR", "vector is required", field="vector")
    metadata = item.get("metadata")
    return entity_type, entity_id, orjson.dumps(metadata).decode() if metadata is not None else None


def _vectors(raw: list[Any] | np.ndarray, feature_type: FeatureType) -> tuple[np.ndarray, np.ndarray]:
    """All vectors as one (n, dimension) float32 matrix, and which rows are valid.

    The common case (a decoded matrix, or lists of numbers of the right length) is at most one
    ``np.array`` plus array-wide checks. A batch numpy cannot stack (ragged, strings, nulls)
    goes vector by vector.
    """
    dimension = feature_type.dimension
    matrix = None
    stacked: np.ndarray | None
    try:
        if isinstance(raw, np.ndarray):
            stacked = raw
        else:
            stacked = np.array(raw) if raw else np.empty((0, dimension))
    except (ValueError, TypeError):
        stacked = None
    if stacked is not None and stacked.ndim == 2 and stacked.shape[1] == dimension:
        if stacked.dtype.kind in "iuf":
            with np.errstate(over="ignore", invalid="ignore"):
                matrix = np.ascontiguousarray(stacked, dtype=np.float32)
    if matrix is None:
        matrix = np.zeros((len(raw), dimension), dtype=np.float32)
        good: np.ndarray = np.zeros(len(raw), dtype=bool)
        for row, value in enumerate(raw):
            try:
                vector = coerce_vector(value)
                check_vector_for_type(vector, feature_type)
            except Rejected:
                continue
            matrix[row], good[row] = vector, True
        return matrix, good
    good = np.asarray(np.isfinite(matrix).all(axis=1))
    # numpy reads true/false as 1/0: a row holding an exact 0 or 1 may have had a boolean, so
    # only those rows (rare in real features) get their element types scanned. A decoded
    # matrix never held one.
    suspects = [] if raw is stacked else np.flatnonzero(((matrix == 0) | (matrix == 1)).any(axis=1)).tolist()
    for suspect in suspects:
        value = raw[suspect]
        if isinstance(value, list) and bool in set(map(type, value)):
            good[suspect] = False
    if feature_type.distance is Distance.COSINE:
        good &= matrix.any(axis=1)
    return matrix, good


def _vector_problem(value: Any, feature_type: FeatureType) -> Rejected:
    """The exact reason one vector was refused (the per-item path, for rejected rows only)."""
    try:
        check_vector_for_type(coerce_vector(value), feature_type)
    except Rejected as exc:
        return exc
    raise AssertionError("vector refused in the batch path but valid on its own")  # pragma: no cover


def _blobs(vectors: np.ndarray | None) -> list[bytes]:
    """One little-endian float32 buffer for the whole batch, sliced into per-row BLOBs."""
    if vectors is None or not len(vectors):
        return []
    buffer = np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE).tobytes()
    step = vectors.shape[1] * VECTOR_DTYPE.itemsize
    return [buffer[i : i + step] for i in range(0, len(buffer), step)]


def _keep_known(conn: Any, accepted: _Accepted, rows: list[int], errors: list[ItemError]) -> list[int]:
    """The rows whose entity is in the catalog; an UNKNOWN_ENTITY error for each of the others."""
    known: dict[EntityType, set[str]] = {}
    kinds = {accepted.entity_type[i] for i in rows}
    for entity_type in kinds:
        if len(kinds) == 1 and len(rows) == len(accepted.entity_id):
            ids = accepted.entity_id
        else:
            ids = [accepted.entity_id[i] for i in rows if accepted.entity_type[i] is entity_type]
        known[entity_type] = catalog_store.existing_ids(conn, entity_type=entity_type, ids=ids)
        if len(kinds) == 1 and known[entity_type].issuperset(ids):
            return rows  # the usual batch: every entity known
    kept = []
    for i in rows:
        entity_type, entity_id = accepted.entity_type[i], accepted.entity_id[i]
        if entity_id in known[entity_type]:
            kept.append(i)
        else:
            errors.append(
                ItemError(
                    index=accepted.index[i],
                    code="UNKNOWN_ENTITY",
                    message=f"{entity_type.value} {entity_id!r} is not in the catalog",
                    entity_type=entity_type.value,
                    entity_id=entity_id,
                )
            )
    return kept
