"""Ingestion of feature maps (spec §6.2, design §4): per-item validation, one transaction per database."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from fingerprints.domain import (
    EntityType,
    FeatureType,
    ItemError,
    check_vector_for_type,
    coerce_vector,
    encode_vector,
)
from fingerprints.errors import PayloadTooLarge, Rejected, ValidationError, VectorError
from fingerprints.service.base import Services, now
from fingerprints.service.inputs import as_int, as_list
from fingerprints.store import catalog as catalog_store
from fingerprints.store import feature_maps as maps_store
from fingerprints.store import feature_types as types_store
from fingerprints.store.feature_maps import NewFeatureMap

ITEM_KEYS = frozenset({"entity_type", "entity_id", "vector", "metadata"})


@dataclass(slots=True)
class IngestResult:
    ingested: int = 0
    errors: list[ItemError] = field(default_factory=list)


@dataclass(slots=True)
class _Candidate:
    index: int
    entity_type: EntityType
    entity_id: str
    vector: np.ndarray
    metadata: str | None


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
    with svc.dbs.catalog.read() as conn:
        feature_type = types_store.get_feature_type(conn, type_id=feature_type_id)
    refusal = _refuse_batch(feature_type, feature_type_id, version)
    if refusal is not None:
        code, message = refusal
        result.errors = [_error(i, item, code, message) for i, item in enumerate(items)]
        return result
    assert feature_type is not None
    stored_version = version if version is not None else feature_type.current_version

    candidates = _validate_items(items, feature_type, result.errors)
    by_type: dict[EntityType, list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_type[candidate.entity_type].append(candidate)

    computed_at = now()
    catalog_rows = [c for e, cs in by_type.items() if e is not EntityType.PLAYLIST for c in cs]
    if catalog_rows:
        with svc.dbs.catalog.write() as conn:
            kept = _keep_known(conn, catalog_rows, result.errors)
            maps_store.upsert_feature_maps(
                conn, rows=_rows(kept, feature_type.id, stored_version, computed_at)
            )
            result.ingested += len(kept)
    if by_type.get(EntityType.PLAYLIST):
        with svc.dbs.user.write() as conn:
            kept = _keep_known(conn, by_type[EntityType.PLAYLIST], result.errors)
            maps_store.upsert_feature_maps(
                conn, rows=_rows(kept, feature_type.id, stored_version, computed_at)
            )
            result.ingested += len(kept)
    result.errors.sort(key=lambda e: e.index)
    return result


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


def _validate_items(
    items: Sequence[Any], feature_type: FeatureType, errors: list[ItemError]
) -> list[_Candidate]:
    candidates = []
    for index, item in enumerate(items):
        try:
            candidates.append(_validate_item(index, item, feature_type))
        except Rejected as exc:
            errors.append(_error(index, item, exc.reason, exc.message))
    return candidates


def _validate_item(index: int, item: object, feature_type: FeatureType) -> _Candidate:
    if not isinstance(item, Mapping):
        raise Rejected("INVALID_ITEM", "each feature must be an object")
    unknown = sorted(set(item) - ITEM_KEYS)
    if unknown:
        raise Rejected("INVALID_ITEM", f"unknown field {unknown[0]!r}", field=unknown[0])
    raw_type, entity_id = item.get("entity_type"), item.get("entity_id")
    try:
        entity_type = EntityType(str(raw_type))
    except ValueError:
        raise Rejected(
            "INVALID_ENTITY_TYPE",
            f"entity_type must be one of track, album, artist, playlist (got {raw_type!r})",
            field="entity_type",
        ) from None
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
        raise VectorError("MISSING_VECTOR", "vector is required")
    # One numpy conversion per vector (not per float); as fast as one np.array over the whole
    # batch, and it sees the type of every vector, so a list of booleans is refused.
    vector = coerce_vector(item["vector"])
    check_vector_for_type(vector, feature_type)
    metadata = item.get("metadata")
    return _Candidate(
        index=index,
        entity_type=entity_type,
        entity_id=entity_id,
        vector=vector,
        metadata=orjson.dumps(metadata).decode() if metadata is not None else None,
    )


def _keep_known(conn: Any, candidates: list[_Candidate], errors: list[ItemError]) -> list[_Candidate]:
    """Drop candidates whose entity is not in the catalog, recording an error for each."""
    ids_by_type: dict[EntityType, list[str]] = defaultdict(list)
    for c in candidates:
        ids_by_type[c.entity_type].append(c.entity_id)
    known = {
        entity_type: catalog_store.existing_ids(conn, entity_type=entity_type, ids=ids)
        for entity_type, ids in ids_by_type.items()
    }
    kept = []
    for c in candidates:
        if c.entity_id in known[c.entity_type]:
            kept.append(c)
        else:
            errors.append(
                ItemError(
                    index=c.index,
                    code="UNKNOWN_ENTITY",
                    message=f"{c.entity_type.value} {c.entity_id!r} is not in the catalog",
                    entity_type=c.entity_type.value,
                    entity_id=c.entity_id,
                )
            )
    return kept


def _rows(
    candidates: Sequence[_Candidate], type_id: str, version: int, computed_at: int
) -> list[NewFeatureMap]:
    return [
        NewFeatureMap(
            entity_type=c.entity_type,
            entity_id=c.entity_id,
            feature_type_id=type_id,
            version=version,
            vector=encode_vector(c.vector),
            computed_at=computed_at,
            metadata=c.metadata,
        )
        for c in candidates
    ]
