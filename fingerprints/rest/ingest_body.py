"""Decoding an ingest body: its vectors go from JSON text into one matrix, never Python floats.

A batch of 1,000 vectors of 128 values holds 128,000 JSON numbers. Decoding those into Python
floats (orjson) and stacking them (numpy) was most of an ingest request. simdjson parses the
body into its own tape, and copies each vector array into a buffer of doubles in C.

That path takes only bodies it can prove decode to what orjson reads: no byte-order mark,
distinct keys, items with known keys only, vectors that are flat arrays of numbers, all of one
length. Anything else, an invalid body included, goes through orjson and the checks it always
had, so answers and error messages never depend on which path ran.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
import simdjson

from fingerprints.rest.responses import parse_json_object
from fingerprints.service.ingest import FeatureColumns
from fingerprints.service.inputs import check_keys

BODY_KEYS = ("feature_type_id", "version", "features")
_BODY_KEYS = frozenset(BODY_KEYS)
_PROXIES = frozenset({simdjson.Object, simdjson.Array})
# What simdjson accepts and orjson does not: a leading byte-order mark.
_BOM = b"\xef\xbb\xbf"


def decode_ingest_body(body: bytes) -> tuple[object, object, object]:
    """``feature_type_id``, ``version`` and ``features`` of an ingest body (``features`` as a
    ``FeatureColumns`` when the body allows it, else the decoded list)."""
    fast = _decode_columns(body)
    if fast is not None:
        return fast
    doc = parse_json_object(body)
    check_keys(doc, BODY_KEYS)
    return doc.get("feature_type_id"), doc.get("version"), doc.get("features")


def _decode_columns(body: bytes) -> tuple[object, object, FeatureColumns] | None:
    if body.startswith(_BOM) or _escaped_bracket(body):
        return None
    parser = simdjson.Parser()
    try:
        return _columns(parser.parse(body), body)
    except (ValueError, TypeError, KeyError, RuntimeError):
        # Invalid JSON, a missing key, a vector holding something else than numbers, ...
        return None


def _columns(doc: Any, body: bytes) -> tuple[object, object, FeatureColumns] | None:
    if type(doc) is not simdjson.Object:
        return None
    keys = list(doc)
    # simdjson reads the first of two equal keys, orjson the last: such bodies go to orjson.
    if len(set(keys)) != len(keys) or not _BODY_KEYS.issuperset(keys) or "features" not in keys:
        return None
    features = doc["features"]
    feature_type_id = doc["feature_type_id"] if "feature_type_id" in keys else None
    version = doc["version"] if "version" in keys else None
    if type(features) is not simdjson.Array or not len(features):
        return None
    if type(feature_type_id) in _PROXIES or type(version) in _PROXIES:
        return None
    entity_types: list[Any] = []
    entity_ids: list[Any] = []
    metadata: list[Any] = []
    buffers: list[bytes] = []
    width = -1
    for item in features:
        if type(item) is not simdjson.Object:
            return None
        # n fields and n distinct known keys found: no other key and no key twice.
        size = len(item)
        vector = item["vector"]
        entity_types.append(item["entity_type"])
        entity_ids.append(item["entity_id"])
        if size == 3:
            metadata.append(None)
        elif size == 4:
            metadata.append(_unboxed(item["metadata"]))
        else:
            return None
        if type(vector) is not simdjson.Array:
            return None
        if width != len(vector):
            if width >= 0:
                return None
            width = len(vector)
        buffers.append(vector.as_buffer(of_type="d"))  # TypeError for anything but numbers
    if not _PROXIES.isdisjoint(map(type, entity_types)) or not _PROXIES.isdisjoint(map(type, entity_ids)):
        return None
    # ``as_buffer`` flattens nested arrays. Every "[" of the body opens an array or sits in a
    # string (none is escaped, checked above): as many as the features array, one per vector
    # and those of the strings and metadata mean no vector holds an array.
    brackets = 1 + len(buffers) + _brackets([feature_type_id, version, *entity_types, *entity_ids])
    brackets += sum(orjson.dumps(m).count(b"[") for m in metadata if m is not None)
    if body.count(b"[") != brackets:
        return None
    vectors = np.frombuffer(b"".join(buffers), dtype=np.float64).reshape(len(buffers), width)
    columns = FeatureColumns(
        entity_types=entity_types, entity_ids=entity_ids, metadata=metadata, vectors=vectors
    )
    return feature_type_id, version, columns


def _escaped_bracket(body: bytes) -> bool:
    """Whether a string may hold a "[" written as an escape (hidden from the count in _columns).
    Most bodies hold no backslash at all: one memchr-speed scan says so."""
    return b"\\" in body and (b"\\u005b" in body or b"\\u005B" in body)


def _unboxed(value: Any) -> Any:
    if type(value) is simdjson.Object:
        return value.as_dict()
    if type(value) is simdjson.Array:
        return value.as_list()
    return value


def _brackets(values: Iterable[object]) -> int:
    return sum(v.count("[") for v in values if type(v) is str)
