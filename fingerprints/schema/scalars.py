"""Custom scalars: ``Vector`` (a JSON list of floats, coerced in one numpy step) and ``JSON``."""

from __future__ import annotations

from typing import Any, NewType

import numpy as np
import strawberry
from strawberry.types.scalar import ScalarDefinition

from fingerprints.domain import coerce_vector
from fingerprints.errors import VectorError


def _parse_vector(value: Any) -> Any:
    # A vector that fails here is passed on raw, so ingestion reports it as a per-item error
    # (with its index) instead of failing the whole request; every use case validates it again.
    try:
        return coerce_vector(value)
    except VectorError:
        return value


def _serialize_vector(value: Any) -> Any:
    # Kept as an array: the response encoder (orjson) writes float32 arrays natively.
    return value if isinstance(value, np.ndarray) else list(value)


Vector = NewType("Vector", object)
JSON = NewType("JSON", object)

SCALARS: dict[object, ScalarDefinition] = {
    Vector: strawberry.scalar(
        name="Vector",
        description="A feature vector: a JSON list of floats (stored as little-endian float32).",
        serialize=_serialize_vector,
        parse_value=_parse_vector,
    ),
    JSON: strawberry.scalar(
        name="JSON",
        description="Any JSON value (used for feature-map metadata).",
        serialize=lambda v: v,
        parse_value=lambda v: v,
    ),
}
