"""Enums, value objects, the vector codec and vector validation. No I/O here."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from fingerprints.errors import ValidationError, VectorError

FEATURE_TYPE_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_DIMENSION = 4096
VECTOR_DTYPE = np.dtype("<f4")  # spec §4.4: packed little-endian f32

E = TypeVar("E", bound=enum.StrEnum)


class EntityType(enum.StrEnum):
    TRACK = "track"
    ALBUM = "album"
    ARTIST = "artist"
    PLAYLIST = "playlist"


class AggregationMethod(enum.StrEnum):
    AVERAGE = "average"
    WEIGHTED_BY_DURATION = "weighted_by_duration"
    WEIGHTED_BY_POPULARITY = "weighted_by_popularity"
    CENTROID = "centroid"
    MAX = "max"
    MIN = "min"
    NONE = "none"


class Distance(enum.StrEnum):
    COSINE = "cosine"
    EUCLIDEAN = "euclidean"
    DOT_PRODUCT = "dot_product"


def parse_enum(kind: type[E], value: object, *, field: str) -> E:
    """Parse one enum value from user input, naming the allowed values on failure."""
    try:
        return kind(value)  # type: ignore[arg-type]  # any input; ValueError when not a member
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ValidationError(f"{field} must be one of: {allowed} (got {value!r})", field=field) from None


@dataclass(frozen=True, slots=True)
class FeatureType:
    id: str
    name: str
    description: str | None
    dimension: int
    current_version: int
    applies_to: tuple[EntityType, ...]  # empty = all entity types
    aggregation_method: AggregationMethod
    distance: Distance
    is_active: bool
    created_at: int
    updated_at: int

    def applies(self, entity_type: EntityType) -> bool:
        return not self.applies_to or entity_type in self.applies_to


@dataclass(frozen=True, slots=True)
class FeatureMap:
    feature_type_id: str
    version: int
    vector: np.ndarray
    computed_at: int
    metadata: Any = None


@dataclass(slots=True)
class FeatureTypeStats:
    track_count: int = 0
    album_count: int = 0
    artist_count: int = 0
    playlist_count: int = 0
    coverage_percent: float = 0.0


@dataclass(slots=True)
class ItemError:
    """One rejected item of a batch: where it was, what it named, and why."""

    index: int
    code: str
    message: str
    entity_type: str | None = None
    entity_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def validate_feature_type_id(value: object, *, field: str = "id") -> str:
    if not isinstance(value, str) or not FEATURE_TYPE_ID.match(value):
        raise ValidationError(f"{field} must match ^[a-z][a-z0-9_]{{0,63}}$ (got {value!r})", field=field)
    return value


def validate_dimension(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIMENSION:
        raise ValidationError(
            f"dimension must be an integer in 1..{MAX_DIMENSION} (got {value!r})", field="dimension"
        )
    return value


def parse_applies_to(value: object) -> tuple[EntityType, ...]:
    """``None`` or ``[]`` means every entity type; duplicates are dropped, order kept."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ValidationError("applies_to must be a list of entity types", field="applies_to")
    parsed = [parse_enum(EntityType, v, field="applies_to") for v in value]
    return tuple(dict.fromkeys(parsed))


def encode_vector(vector: np.ndarray) -> bytes:
    """Pack a vector as little-endian float32 bytes (spec §4.4)."""
    return np.ascontiguousarray(vector, dtype=VECTOR_DTYPE).tobytes()


def decode_vector(blob: bytes) -> np.ndarray:
    """Unpack a little-endian float32 BLOB into a native float32 array."""
    if len(blob) % 4:
        raise ValueError(f"vector blob of {len(blob)} bytes is not a multiple of 4")
    return np.frombuffer(blob, dtype=VECTOR_DTYPE).astype(np.float32, copy=False)


def decode_vectors(blobs: Sequence[bytes], dimension: int) -> np.ndarray:
    """Decode many equal-length BLOBs into one C-contiguous (n, dimension) float32 matrix."""
    buffer = b"".join(blobs)
    matrix = np.frombuffer(buffer, dtype=VECTOR_DTYPE).reshape(len(blobs), dimension)
    return np.ascontiguousarray(matrix, dtype=np.float32)


def coerce_vector(value: object) -> np.ndarray:
    """Turn user input (list, array) into a 1-d float32 array in one numpy step.

    Raises ``VectorError`` with reason ``NON_NUMERIC`` / ``NOT_A_LIST`` / ``EMPTY_VECTOR`` /
    ``NON_FINITE``. Finiteness is checked after the float32 cast, so 4e38 is rejected.
    """
    if isinstance(value, np.ndarray):
        raw = value
    elif isinstance(value, list | tuple):
        # numpy would quietly read true/false as 1/0; a C-speed scan of the element types is
        # cheaper than the conversion itself.
        if bool in set(map(type, value)):
            raise VectorError("NON_NUMERIC", "vector must contain only numbers (not true/false)")
        try:
            raw = np.asarray(value)
        except (ValueError, TypeError):
            raise VectorError("NON_NUMERIC", "vector must be a flat list of numbers") from None
    else:
        raise VectorError("NOT_A_LIST", f"vector must be a list of numbers, got {type(value).__name__}")
    if raw.ndim != 1:
        raise VectorError("NON_NUMERIC", "vector must be a flat list of numbers")
    if raw.size == 0:
        raise VectorError("EMPTY_VECTOR", "vector is empty")
    if raw.dtype.kind not in "iuf":
        raise VectorError("NON_NUMERIC", "vector must contain only numbers")
    with np.errstate(over="ignore", invalid="ignore"):
        vector = raw.astype(np.float32)
    check_finite(vector)
    return vector


def check_finite(vector: np.ndarray) -> None:
    if not np.isfinite(vector).all():
        raise VectorError("NON_FINITE", "vector contains NaN or infinity (or a value beyond float32 range)")


def check_vector_for_type(vector: np.ndarray, feature_type: FeatureType) -> None:
    """Dimension and metric checks of an already-coerced vector against its feature type."""
    if vector.shape[0] != feature_type.dimension:
        raise VectorError(
            "DIMENSION_MISMATCH",
            f"vector has {vector.shape[0]} values, feature type {feature_type.id!r} "
            f"needs {feature_type.dimension}",
        )
    if feature_type.distance is Distance.COSINE and not vector.any():
        raise VectorError("ZERO_VECTOR", "an all-zero vector has no direction under cosine distance")
