"""Decoding ingest bodies: the simdjson column path decodes exactly what orjson decodes, and
every body it cannot vouch for goes through orjson (and its errors) instead."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from fingerprints.errors import ValidationError
from fingerprints.rest.ingest_body import decode_ingest_body
from fingerprints.service.ingest import FeatureColumns

V = [0.1, -2.5, 3e-7, 4]


def body(*items: Any, **top: Any) -> bytes:
    return orjson.dumps({"feature_type_id": "audio", "features": list(items), **top})


def item(entity_id: Any = "t1", vector: Any = V, entity_type: Any = "track", **extra: Any) -> dict[str, Any]:
    return {"entity_type": entity_type, "entity_id": entity_id, "vector": vector, **extra}


def plain(features: Any) -> list[dict[str, Any]]:
    """Items with their vectors as float lists and no null metadata (the service reads a null
    and an absent metadata alike), whichever form the decoder gave."""
    items = features.items() if isinstance(features, FeatureColumns) else features
    out = []
    for i in items:
        vector = np.asarray(i["vector"], dtype=np.float64).tolist()
        out.append({k: v for k, v in {**i, "vector": vector}.items() if k != "metadata" or v is not None})
    return out


def assert_same_as_orjson(raw: bytes, *, columns: bool) -> None:
    feature_type_id, version, features = decode_ingest_body(raw)
    doc = orjson.loads(raw)
    assert (feature_type_id, version) == (doc.get("feature_type_id"), doc.get("version"))
    assert isinstance(features, FeatureColumns) is columns
    assert plain(features) == plain(doc["features"])


@pytest.mark.parametrize(
    "raw",
    [
        body(item(), item("t2", [1, 2, 3, 4]), version=2),
        body(item(vector=[1e-45, -0.0, 1.7976931348623157e308, 18446744073709551615])),
        body(item(metadata={"tags": ["a", "b"], "nested": [[1], {"x": [2]}]}), item("t2")),
        body(item(metadata="a [string] with brackets"), item("t[2]"), item("t3", metadata=None)),
        body(item(metadata=[1, 2]), item("t2", metadata=0.5), item("t3", metadata=True)),
        body(item(entity_type=5), item(entity_type=None), item(entity_id=17), item(entity_id="")),
        body(item(vector=[1, 2])),  # the wrong length for the type: the service says so
        body(item(vector=[])),
        body(item(), feature_type_id="[audio]", version="[1]"),
        body(item(), feature_type_id=None),
        orjson.dumps({"features": [item()]}),
        b'{"feature_type_id": "audio",\n "features": [ {"entity_type" : "track", "entity_id": "t\\u00e9",'
        b' "vector" : [ 1 , 2.5e0 , -3E-2 , 4 ] } ] }',
    ],
    ids=[
        "plain",
        "number_edges",
        "metadata_arrays",
        "brackets_in_strings",
        "metadata_scalars",
        "odd_field_values",
        "short_vectors",
        "empty_vector",
        "brackets_in_top_fields",
        "null_type_id",
        "no_type_id",
        "whitespace_and_escapes",
    ],
)
def test_columns_hold_what_orjson_decodes(raw: bytes) -> None:
    assert_same_as_orjson(raw, columns=True)


def test_columns_carry_the_exact_doubles() -> None:
    vectors = np.random.default_rng(7).standard_normal((50, 16)).astype(np.float32)
    raw = orjson.dumps(
        {"feature_type_id": "audio", "features": [item(f"t{i}", v) for i, v in enumerate(vectors)]},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    _, _, features = decode_ingest_body(raw)
    assert isinstance(features, FeatureColumns)
    assert features.vectors.shape == (50, 16)
    np.testing.assert_array_equal(features.vectors.astype(np.float32), vectors)
    expected = np.array([i["vector"] for i in orjson.loads(raw)["features"]])
    np.testing.assert_array_equal(features.vectors, expected)


@pytest.mark.parametrize(
    "raw",
    [
        body(item(vector=[[1], 2, 3, 4])),  # simdjson would flatten it to four numbers
        body(item("t\\u005b", vector=[[1], 2, 3, 4])),
        b'{"feature_type_id": "audio", "features": [{"entity_type": "track", "entity_id": "\\u005b",'
        b' "vector": [[1], 2, 3, 4]}]}',
        body(item(vector=[[1, 2], [3, 4]])),
        body(item(vector=[1, True, 3, 4])),
        body(item(vector=[1, None, 3, 4])),
        body(item(vector=[1, "2", 3, 4])),
        body(item(vector=[1, {"x": 2}, 3, 4])),
        body(item(vector="1,2,3,4")),
        body(item(vector={"0": 1})),
        body(item(), item("t2", [1, 2, 3])),  # ragged
        body(item(colour="red")),
        body({"entity_type": "track", "entity_id": "t1"}),
        body(item(), "not an object", [1, 2]),
        body(item(entity_type={"x": 1})),
        body(item(entity_id=["t1"])),
        body(feature_type_id=["audio"]),
        body(version={"v": 1}),
        body(),
        b'{"feature_type_id": "audio", "features": [{"entity_type": "track", "entity_id": "t1",'
        b' "entity_id": "t2", "vector": [1, 2, 3, 4]}]}',
        b'{"feature_type_id": "audio", "features": [{"entity_type": "track", "entity_id": "t1",'
        b' "vector": [9, 9, 9, 9], "vector": [1, 2, 3, 4]}]}',
        b'{"feature_type_id": "gone", "feature_type_id": "audio", "features": []}',
        b'{"feature_type_id": "audio", "features": [{"entity_type": "track", "entity_id": "t1",'
        b' "vector": [1, 2, 3, 123456789012345678901234567890]}]}',
        orjson.dumps({"feature_type_id": "audio", "features": {"t1": V}}),
    ],
    ids=[
        "nested_vector",
        "nested_vector_backslash_u_text",
        "nested_vector_escaped_bracket",
        "matrix_vector",
        "bool",
        "null",
        "numeric_string",
        "object",
        "string_vector",
        "object_vector",
        "ragged",
        "unknown_item_key",
        "missing_vector",
        "not_objects",
        "object_entity_type",
        "list_entity_id",
        "list_type_id",
        "object_version",
        "no_items",
        "duplicate_item_key",
        "duplicate_vector_key",
        "duplicate_top_key",
        "bigint",
        "features_object",
    ],
)
def test_other_bodies_are_decoded_by_orjson(raw: bytes) -> None:
    feature_type_id, version, features = decode_ingest_body(raw)
    doc = orjson.loads(raw)
    assert not isinstance(features, FeatureColumns)
    assert (feature_type_id, version, features) == (
        doc.get("feature_type_id"),
        doc.get("version"),
        doc.get("features"),
    )


@pytest.mark.parametrize(
    "raw, field",
    [
        (b"\xef\xbb\xbf" + body(item()), "body"),  # simdjson would skip the byte-order mark
        (b'{"feature_type_id": "audio", "features": [' + orjson.dumps(item()), "body"),
        (
            b'{"feature_type_id": "audio", "features": [{"entity_type": "track", "entity_id": "\\ud800",'
            b' "vector": [1, 2, 3, 4]}]}',
            "body",
        ),  # fmt: skip
        (b'{"a": "\xff"}', "body"),
        (b"[1, 2]", "body"),
        (b"", "body"),
        (body(item(), force=True), "force"),
    ],
    ids=["bom", "truncated", "lone_surrogate", "bad_utf8", "list", "empty", "unknown_key"],
)
def test_bad_bodies_get_the_orjson_errors(raw: bytes, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_ingest_body(raw)
    assert caught.value.field == field
