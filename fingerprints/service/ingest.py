"""Ingestion of feature maps (spec §6.2, design §4): per-item validation, one transaction per database.

The hot path works on the whole batch: one ``np.array`` over all vectors, finiteness,
dimension and zero checks as array operations, one packed buffer sliced into BLOBs, one
``executemany``. Only items that fail a check go through the per-item path, which says why.
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
from fingerprints.service.inputs import as_int, as_list
from fingerprints.store import catalog as catalog_store
from fingerprints.store import feature_maps as maps_store

ITEM_KEYS = frozenset({"entity_type", "entity_id", "vector", "metadata"})
ENTITY_TYPES = {e.value: e for e in EntityType} | {e: e for e in EntityType}


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
    """Store every valid item; list every invalid one with its index, entity and reason."""
    items = as_list(features, field="features")
    if len(items) > svc.settings.max_batch_items:
        raise PayloadTooLarge(
            f"a batch holds at most {svc.settings.max_batch_items} items (got {len(items)})",
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
        result.errors = [_error(i, item, code, message) for i, item in enumerate(items)]
        return result
    assert feature_type is not None
    stored_version = version if version is not None else feature_type.current_version

    accepted = _validate(items, feature_type, result.errors)
    blobs = _blobs(accepted.vectors)
    computed_at = now()
    for playlists, db in ((False, svc.dbs.catalog), (True, svc.dbs.user)):
        rows = [i for i, e in enumerate(accepted.entity_type) if (e is EntityType.PLAYLIST) == playlists]
        if not rows:
            continue
        with db.serialized():  # the index applies writes in commit order
            with db.write() as conn:
                kept = _keep_known(conn, accepted, rows, result.errors)
                kinds = [accepted.entity_type[i] for i in kept]
                ids = [accepted.entity_id[i] for i in kept]
                maps_store.upsert_feature_maps(
                    conn,
                    playlists=playlists,
                    rows=list(
                        zip(
                            [kind.value for kind in kinds],
                            ids,
                            repeat(feature_type.id),
                            repeat(stored_version),
                            [blobs[i] for i in kept],
                            repeat(computed_at),
                            [accepted.metadata[i] for i in kept],
                        )
                    ),
                )
                if not playlists:
                    tracks = [e for e, kind in zip(ids, kinds, strict=True) if kind is EntityType.TRACK]
                    aggregation.mark_tracks_changed(svc, conn, track_ids=tracks, type_ids=[feature_type.id])
            _written_to_index(svc, feature_type.id, accepted, kept)
        result.ingested += len(kept)
    result.errors.sort(key=lambda e: e.index)
    return result


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


def _validate(items: Sequence[Any], feature_type: FeatureType, errors: list[ItemError]) -> _Accepted:
    """Check every item; accepted ones come back with their vectors stacked in one matrix."""
    accepted = _Accepted()
    raw_vectors: list[Any] = []
    fast = _fields_of_clean_batch(items, feature_type)
    if fast is not None:  # every item well-formed: no per-item function calls
        accepted.index = list(range(len(items)))
        accepted.entity_type, accepted.entity_id, accepted.metadata, raw_vectors = fast
        items_to_check: Sequence[Any] = ()
    else:
        items_to_check = items
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
        for row in np.flatnonzero(~good):
            index = accepted.index[row]
            reason = _vector_problem(raw_vectors[row], feature_type)
            errors.append(_error(index, items[index], reason.reason, reason.message))
        keep = np.flatnonzero(good).tolist()
        accepted.index = [accepted.index[i] for i in keep]
        accepted.entity_type = [accepted.entity_type[i] for i in keep]
        accepted.entity_id = [accepted.entity_id[i] for i in keep]
        accepted.metadata = [accepted.metadata[i] for i in keep]
        matrix = matrix[good]
    accepted.vectors = matrix
    return accepted


def _fields_of_clean_batch(
    items: Sequence[Any], feature_type: FeatureType
) -> tuple[list[EntityType], list[str], list[str | None], list[Any]] | None:
    """The fields of every item when all of them pass ``_check_fields`` (checked column by
    column), else None: the per-item path then says what is wrong with which item."""
    if not all(type(item) is dict and ITEM_KEYS.issuperset(item) and "vector" in item for item in items):
        return None
    types = [ENTITY_TYPES.get(t) if type(t) is str else None for t in (i.get("entity_type") for i in items)]
    if not all(t is not None and feature_type.applies(t) for t in set(types)):
        return None
    ids = [i.get("entity_id") for i in items]
    if not all(type(e) is str and 0 < len(e) <= 255 and e.strip() for e in ids):
        return None
    metadata = [None if (m := i.get("metadata")) is None else orjson.dumps(m).decode() for i in items]
    return types, ids, metadata, [i["vector"] for i in items]  # type: ignore[return-value]


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


def _vectors(raw: list[Any], feature_type: FeatureType) -> tuple[np.ndarray, np.ndarray]:
    """All vectors as one (n, dimension) float32 matrix, and which rows are valid.

    The common case (lists of numbers of the right length) is one ``np.array`` plus array-wide
    checks. A batch numpy cannot stack (ragged, strings, nulls) goes vector by vector.
    """
    dimension = feature_type.dimension
    matrix = None
    try:
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
    # only those rows (rare in real features) get their element types scanned.
    for suspect in np.flatnonzero(((matrix == 0) | (matrix == 1)).any(axis=1)).tolist():
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
    for entity_type in {accepted.entity_type[i] for i in rows}:
        ids = [accepted.entity_id[i] for i in rows if accepted.entity_type[i] is entity_type]
        known[entity_type] = catalog_store.existing_ids(conn, entity_type=entity_type, ids=ids)
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
