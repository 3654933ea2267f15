"""Vector codec and validation: pure functions, no I/O."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest

from fingerprints.domain import (
    AggregationMethod,
    Distance,
    EntityType,
    FeatureType,
    check_vector_for_type,
    coerce_vector,
    decode_vector,
    decode_vectors,
    encode_vector,
    parse_applies_to,
    validate_dimension,
    validate_feature_type_id,
)
from fingerprints.errors import ValidationError, VectorError


def _type(dimension: int = 3, distance: Distance = Distance.COSINE) -> FeatureType:
    return FeatureType(
        id="t", name="T", description=None, dimension=dimension, current_version=1, applies_to=(),
        aggregation_method=AggregationMethod.AVERAGE, distance=distance, is_active=True,
        created_at=0, updated_at=0,
    )  # fmt: skip


def test_encode_is_packed_little_endian_f32_as_in_the_spec() -> None:
    values = [0.1, -2.5, 3.0e38, 1e-40]
    expected = b"".join(struct.pack("<f", v) for v in values)
    assert encode_vector(np.array(values)) == expected


def test_decode_round_trips_bit_exact_and_native() -> None:
    vector = np.random.default_rng(0).normal(size=257).astype(np.float32)
    decoded = decode_vector(encode_vector(vector))
    assert decoded.dtype == np.float32 and decoded.dtype.isnative
    assert decoded.tobytes() == vector.tobytes()


def test_encode_big_endian_input_is_written_little_endian() -> None:
    big = np.array([1.0, 2.0], dtype=">f4")
    assert encode_vector(big) == struct.pack("<2f", 1.0, 2.0)
    if sys.byteorder == "little":
        assert encode_vector(big) != big.tobytes()


def test_decode_rejects_truncated_blob() -> None:
    with pytest.raises(ValueError):
        decode_vector(b"\x00\x00\x80")


def test_decode_vectors_stacks_into_one_contiguous_matrix() -> None:
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    matrix = decode_vectors([encode_vector(r) for r in rows], 4)
    assert matrix.flags.c_contiguous and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, rows)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([], "EMPTY_VECTOR"),
        ([1.0, "a"], "NON_NUMERIC"),
        ([1.0, None], "NON_NUMERIC"),
        ([[1.0], [2.0]], "NON_NUMERIC"),
        ([1.0, [2.0, 3.0]], "NON_NUMERIC"),
        ("1,2,3", "NOT_A_LIST"),
        ({"a": 1}, "NOT_A_LIST"),
        ([1.0, float("nan")], "NON_FINITE"),
        ([float("inf"), 1.0], "NON_FINITE"),
        ([4e38, 1.0], "NON_FINITE"),  # finite as float64, infinite after the float32 cast
    ],
)
def test_coerce_rejects_with_a_reason(value: object, reason: str) -> None:
    with pytest.raises(VectorError) as caught:
        coerce_vector(value)
    assert caught.value.reason == reason


def test_coerce_accepts_ints_and_floats_as_float32() -> None:
    vector = coerce_vector([1, 2.5, -3])
    assert vector.dtype == np.float32
    np.testing.assert_array_equal(vector, [1.0, 2.5, -3.0])


def test_dimension_and_zero_checks_follow_the_type() -> None:
    with pytest.raises(VectorError) as caught:
        check_vector_for_type(np.ones(4, np.float32), _type(3))
    assert caught.value.reason == "DIMENSION_MISMATCH"
    with pytest.raises(VectorError) as caught:
        check_vector_for_type(np.zeros(3, np.float32), _type(3))
    assert caught.value.reason == "ZERO_VECTOR"
    check_vector_for_type(np.zeros(3, np.float32), _type(3, Distance.EUCLIDEAN))


@pytest.mark.parametrize("bad", ["Audio", "1audio", "a" * 65, "", "au-dio", 5, None])
def test_feature_type_id_pattern(bad: object) -> None:
    with pytest.raises(ValidationError):
        validate_feature_type_id(bad)
    assert validate_feature_type_id("a" * 64) == "a" * 64


@pytest.mark.parametrize("bad", [0, 4097, -1, "8", 2.0, True])
def test_dimension_range(bad: object) -> None:
    with pytest.raises(ValidationError):
        validate_dimension(bad)
    assert validate_dimension(4096) == 4096


def test_applies_to_dedupes_and_empty_means_all() -> None:
    assert parse_applies_to(None) == ()
    assert parse_applies_to([]) == ()
    assert parse_applies_to(["track", "album", "track"]) == (EntityType.TRACK, EntityType.ALBUM)
    with pytest.raises(ValidationError):
        parse_applies_to(["song"])
    assert _type().applies(EntityType.PLAYLIST)
