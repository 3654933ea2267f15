"""REST ingest (spec §6.2, design §4): per-item validation, stored state, limits, auth."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fingerprints.app import create_app
from fingerprints.config import Settings
from tests.backends import sql
from tests.helpers import ADMIN, ADMIN_TOKEN, dump_databases, running_client, seed

INGEST = "/v1/admin/fingerprints/ingest"
TYPES = "/v1/admin/fingerprints/types"
WRONG = {"Authorization": "Bearer not-the-admin-token"}
State = dict[str, list[tuple[Any, ...]]]
_ANY = object()

V1 = [0.1, 0.2, 0.3, 0.4]
V2 = [-1.5, 2.25, 1e-7, 3.3333333]
V3 = [7, 0, -2, 1]  # integers are numbers too


# ------------------------------------------------------------------ helpers


def assert_error(r: httpx.Response, status: int, code: str, field: Any = _ANY) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, r.text
    assert isinstance(error["message"], str) and error["message"]
    if field is not _ANY:
        assert error["field"] == field, r.text
    return error


def feature(entity_id: str, vector: Any, entity_type: Any = "track", **extra: Any) -> dict[str, Any]:
    return {"entity_type": entity_type, "entity_id": entity_id, "vector": vector, **extra}


async def ingest(
    client: httpx.AsyncClient,
    features: list[Any],
    *,
    type_id: str = "audio",
    version: int | None = None,
    headers: dict[str, str] = ADMIN,
) -> httpx.Response:
    body: dict[str, Any] = {"feature_type_id": type_id, "features": features}
    if version is not None:
        body["version"] = version
    return await client.post(INGEST, json=body, headers=headers)


async def ingest_ok(client: httpx.AsyncClient, features: list[Any], **kwargs: Any) -> None:
    r = await ingest(client, features, **kwargs)
    assert r.status_code == 200, r.text
    assert r.json() == {"ingested": len(features), "errors": []}, r.text


async def register(client: httpx.AsyncClient, type_id: str, dimension: int = 4, **fields: Any) -> None:
    body = {"id": type_id, "name": type_id.title(), "dimension": dimension, **fields}
    r = await client.post(TYPES, json=body, headers=ADMIN)
    assert r.status_code == 201, r.text


async def fingerprint(
    client: httpx.AsyncClient, entity_type: str, entity_id: str, headers: dict[str, str] = ADMIN
) -> dict[str, Any]:
    r = await client.get(f"/v1/content/fingerprint/{entity_type}/{entity_id}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def f32(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def assert_vector(actual: Any, expected: Any) -> None:
    np.testing.assert_array_equal(f32(actual), f32(expected))


def stored_maps(settings: Settings) -> dict[tuple[str, str, str], tuple[int, np.ndarray, Any]]:
    """Every stored map, keyed (entity_type, entity_id, feature_type_id): (version, vector, metadata)."""
    maps: dict[tuple[str, str, str], tuple[int, np.ndarray, Any]] = {}
    for et, eid, tid, version, blob, meta in sql(
        settings,
        "catalog",
        "SELECT entity_type, entity_id, feature_type_id, version, vector, metadata FROM feature_maps",
    ):
        maps[(et, eid, tid)] = (version, np.frombuffer(blob, "<f4"), json.loads(meta) if meta else None)
    for pid, tid, version, blob, meta in sql(
        settings,
        "user",
        "SELECT playlist_id, feature_type_id, version, vector, metadata FROM playlist_feature_maps",
    ):
        maps[("playlist", pid, tid)] = (
            version,
            np.frombuffer(blob, "<f4"),
            json.loads(meta) if meta else None,
        )
    return maps


def changed_tables(before: State, after: State) -> dict[str, tuple[list[Any], list[Any]]]:
    """Per changed table: (rows removed, rows added)."""
    changes = {}
    for table in sorted(set(before) | set(after)):
        old, new = before.get(table, []), after.get(table, [])
        if old != new:
            changes[table] = ([r for r in old if r not in new], [r for r in new if r not in old])
    return changes


def item_error(index: int, entity_type: Any, entity_id: Any, code: str) -> dict[str, Any]:
    return {"index": index, "entity_type": entity_type, "entity_id": entity_id, "code": code}


def assert_item_errors(errors: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Each error carries index, entity_type, entity_id, code and a non-empty message."""
    for error in errors:
        assert isinstance(error.get("message"), str) and error["message"], error
    got = [{k: e.get(k, "<missing>") for k in ("index", "entity_type", "entity_id", "code")} for e in errors]
    assert got == expected


@pytest.fixture
async def seeded(client: httpx.AsyncClient, settings: Settings) -> httpx.AsyncClient:
    """The small catalog, playlist p1 (owner 7) and type ``audio`` (dimension 4, cosine, all entities)."""
    await seed(client)
    return client


# ------------------------------------------------------------------ good batches


async def test_good_batch_is_stored_and_read_back(seeded: httpx.AsyncClient, settings: Settings) -> None:
    items = [
        feature("t1", V1),
        feature("t2", V2, metadata={"confidence": 0.95}),
        feature("al1", V3, "album"),
        feature("ar2", V1, "artist"),
        feature("p1", V2, "playlist"),
    ]
    r = await ingest(seeded, items)
    assert r.status_code == 200, r.text
    assert r.json() == {"ingested": 5, "errors": []}

    for item in items:
        fp = await fingerprint(seeded, item["entity_type"], item["entity_id"])
        assert fp["entity_type"] == item["entity_type"] and fp["entity_id"] == item["entity_id"]
        assert list(fp["fingerprint"]) == ["audio"]
        stored = fp["fingerprint"]["audio"]
        assert stored["version"] == 1
        assert_vector(stored["vector"], item["vector"])
        assert isinstance(stored["computed_at"], int) and stored["computed_at"] > 0

    maps = stored_maps(settings)
    assert set(maps) == {
        ("track", "t1", "audio"),
        ("track", "t2", "audio"),
        ("album", "al1", "audio"),
        ("artist", "ar2", "audio"),
        ("playlist", "p1", "audio"),
    }
    for item in items:
        version, vector, _ = maps[(item["entity_type"], item["entity_id"], "audio")]
        assert version == 1
        assert vector.dtype == np.dtype("<f4") and vector.shape == (4,)
        assert_vector(vector, item["vector"])
    # Playlist maps live in user.db only (spec §4.3).
    dump = dump_databases(settings)
    assert [r[:3] for r in dump["catalog.db:feature_maps"]] == sorted(
        [
            ("album", "al1", "audio"),
            ("artist", "ar2", "audio"),
            ("track", "t1", "audio"),
            ("track", "t2", "audio"),
        ],
        key=repr,
    )
    assert [r[:2] for r in dump["user.db:playlist_feature_maps"]] == [("p1", "audio")]


async def test_reingest_replaces_the_stored_map(seeded: httpx.AsyncClient, settings: Settings) -> None:
    await ingest_ok(seeded, [feature("t1", V1, metadata={"run": 1}), feature("t2", V1)])
    await ingest_ok(seeded, [feature("t1", V2)])
    maps = stored_maps(settings)
    assert len(maps) == 2
    assert_vector(maps[("track", "t1", "audio")][1], V2)
    assert maps[("track", "t1", "audio")][2] is None
    assert_vector(maps[("track", "t2", "audio")][1], V1)


async def test_empty_feature_list_stores_nothing(seeded: httpx.AsyncClient, settings: Settings) -> None:
    before = dump_databases(settings)
    r = await ingest(seeded, [])
    assert r.status_code == 200 and r.json() == {"ingested": 0, "errors": []}
    assert dump_databases(settings) == before


async def test_metadata_is_stored_as_json_and_read_back(
    seeded: httpx.AsyncClient, settings: Settings
) -> None:
    meta = {"confidence": 0.95, "source": {"model": "clap-v2", "tags": ["a", "b"]}, "ok": True, "n": None}
    await ingest_ok(
        seeded,
        [
            feature("t1", V1, metadata=meta),
            feature("p1", V1, "playlist", metadata=[1, "two"]),
            feature("t2", V1),
            feature("t3", V1, metadata=None),
        ],
    )
    raw = dict(sql(settings, "catalog", "SELECT entity_id, metadata FROM feature_maps"))
    assert json.loads(raw["t1"]) == meta
    assert raw["t2"] is None and raw["t3"] is None
    (playlist_meta,) = sql(settings, "user", "SELECT metadata FROM playlist_feature_maps")
    assert json.loads(playlist_meta[0]) == [1, "two"]

    assert (await fingerprint(seeded, "track", "t1"))["fingerprint"]["audio"]["metadata"] == meta
    assert (await fingerprint(seeded, "playlist", "p1"))["fingerprint"]["audio"]["metadata"] == [1, "two"]
    assert (await fingerprint(seeded, "track", "t2"))["fingerprint"]["audio"].get("metadata") is None


async def test_version_below_current_is_stored_and_outdated(
    seeded: httpx.AsyncClient, settings: Settings
) -> None:
    r = await seeded.post(f"{TYPES}/audio/bump-version", headers=ADMIN)
    assert r.status_code == 200 and r.json()["new_version"] == 2, r.text
    await ingest_ok(seeded, [feature("t1", V1)], version=1)
    await ingest_ok(seeded, [feature("t2", V2)])  # no version: the current one
    await ingest_ok(seeded, [feature("t3", V3)], version=2)

    maps = stored_maps(settings)
    assert {k[1]: v[0] for k, v in maps.items()} == {"t1": 1, "t2": 2, "t3": 2}
    t1 = (await fingerprint(seeded, "track", "t1"))["fingerprint"]["audio"]
    assert t1["version"] == 1 and t1["outdated"] is True
    for track in ("t2", "t3"):
        fp = (await fingerprint(seeded, "track", track))["fingerprint"]["audio"]
        assert fp["version"] == 2 and fp["outdated"] is False
    types = (await seeded.get(TYPES, headers=ADMIN)).json()["types"]
    assert types[0]["stats"]["track_count"] == 3  # outdated maps still count


async def test_zero_vector_is_allowed_under_non_cosine_distances(
    seeded: httpx.AsyncClient, settings: Settings
) -> None:
    await register(seeded, "euc", distance="euclidean")
    await register(seeded, "dot", distance="dot_product")
    await ingest_ok(
        seeded, [feature("t1", [0, 0, 0, 0]), feature("t2", [0.0, -0.0, 0.0, 0.0])], type_id="euc"
    )
    await ingest_ok(seeded, [feature("t1", [0, 0, 0, 0])], type_id="dot")
    maps = stored_maps(settings)
    assert_vector(maps[("track", "t1", "euc")][1], [0, 0, 0, 0])
    assert_vector(maps[("track", "t2", "euc")][1], [0, 0, 0, 0])
    assert_vector(maps[("track", "t1", "dot")][1], [0, 0, 0, 0])


async def test_applies_to_allows_listed_entity_types(seeded: httpx.AsyncClient, settings: Settings) -> None:
    await register(seeded, "pl", applies_to=["track", "playlist"])
    await ingest_ok(seeded, [feature("t1", V1), feature("p1", V1, "playlist")], type_id="pl")
    assert set(stored_maps(settings)) == {("track", "t1", "pl"), ("playlist", "p1", "pl")}


# ------------------------------------------------------------------ per-item errors, one at a time

# (id, features, expected error code); every item refers to the seeded catalog.
BAD_ITEMS = [
    ("dim_short", [feature("t1", [1.0, 2.0, 3.0])], "DIMENSION_MISMATCH"),
    ("dim_long", [feature("t1", [1, 2, 3, 4, 5])], "DIMENSION_MISMATCH"),
    ("overflow", [feature("t1", [4e38, 0.0, 0.0, 1.0])], "NON_FINITE"),
    ("neg_overflow", [feature("t1", [0.5, -4e38, 0.0, 1.0])], "NON_FINITE"),
    ("huge", [feature("t1", [1e300, 1.0, 1.0, 1.0])], "NON_FINITE"),
    ("strings", [feature("t1", ["a", "b", "c", "d"])], "NON_NUMERIC"),
    ("numeric_string", [feature("t1", [1, "2", 3, 4])], "NON_NUMERIC"),
    ("null", [feature("t1", [1.0, None, 2.0, 3.0])], "NON_NUMERIC"),
    ("nested", [feature("t1", [[1.0], [2.0], [3.0], [4.0]])], "NON_NUMERIC"),
    ("object", [feature("t1", [{"x": 1}, 2, 3, 4])], "NON_NUMERIC"),
    ("bool_mixed", [feature("t1", [0.5, True, 0.25, 0.125])], "NON_NUMERIC"),
    ("bools", [feature("t1", [True, False, True, True])], "NON_NUMERIC"),
    ("empty", [feature("t1", [])], "EMPTY_VECTOR"),
    ("zero_cosine", [feature("t1", [0, 0, 0, 0])], "ZERO_VECTOR"),
    ("zero_float_cosine", [feature("t1", [0.0, 0.0, -0.0, 0.0])], "ZERO_VECTOR"),
    ("unknown_track", [feature("t999", V1)], "UNKNOWN_ENTITY"),
    ("unknown_album", [feature("al9", V1, "album")], "UNKNOWN_ENTITY"),
    ("unknown_artist", [feature("ar9", V1, "artist")], "UNKNOWN_ENTITY"),
    ("unknown_playlist", [feature("p9", V1, "playlist")], "UNKNOWN_ENTITY"),
    ("track_id_as_album", [feature("t1", V1, "album")], "UNKNOWN_ENTITY"),
    ("bad_entity_type", [feature("t1", V1, "song")], "INVALID_ENTITY_TYPE"),
    ("capital_entity_type", [feature("t1", V1, "Track")], "INVALID_ENTITY_TYPE"),
    ("plural_entity_type", [feature("t1", V1, "tracks")], "INVALID_ENTITY_TYPE"),
    ("null_entity_type", [feature("t1", V1, None)], "INVALID_ENTITY_TYPE"),
]


@pytest.mark.parametrize("features, code", [c[1:] for c in BAD_ITEMS], ids=[c[0] for c in BAD_ITEMS])
async def test_bad_item_is_reported_and_nothing_changes(
    seeded: httpx.AsyncClient, settings: Settings, features: list[dict[str, Any]], code: str
) -> None:
    await ingest_ok(seeded, [feature("t1", V2), feature("p1", V2, "playlist")])  # previously stored
    before = dump_databases(settings)
    r = await ingest(seeded, features)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ingested"] == 0
    item = features[0]
    etype = item["entity_type"] if isinstance(item["entity_type"], str) else None
    assert_item_errors(body["errors"], [item_error(0, etype, item["entity_id"], code)])
    assert dump_databases(settings) == before


async def test_unknown_feature_type_rejects_every_item(seeded: httpx.AsyncClient, settings: Settings) -> None:
    before = dump_databases(settings)
    r = await ingest(seeded, [feature("t1", V1), feature("al1", V1, "album")], type_id="nope")
    assert r.status_code == 200, r.text
    assert r.json()["ingested"] == 0
    assert_item_errors(
        r.json()["errors"],
        [
            item_error(0, "track", "t1", "UNKNOWN_FEATURE_TYPE"),
            item_error(1, "album", "al1", "UNKNOWN_FEATURE_TYPE"),
        ],
    )
    assert dump_databases(settings) == before


async def test_inactive_feature_type_rejects_every_item(
    seeded: httpx.AsyncClient, settings: Settings
) -> None:
    await ingest_ok(seeded, [feature("t2", V2)])
    r = await seeded.put(f"{TYPES}/audio", json={"is_active": False}, headers=ADMIN)
    assert r.status_code == 200, r.text
    before = dump_databases(settings)
    r = await ingest(seeded, [feature("t1", V1), feature("t2", V1)])
    assert r.status_code == 200, r.text
    assert r.json()["ingested"] == 0
    assert_item_errors(
        r.json()["errors"],
        [
            item_error(0, "track", "t1", "FEATURE_TYPE_INACTIVE"),
            item_error(1, "track", "t2", "FEATURE_TYPE_INACTIVE"),
        ],
    )
    assert dump_databases(settings) == before
    # Reactivated, it accepts maps again.
    r = await seeded.put(f"{TYPES}/audio", json={"is_active": True}, headers=ADMIN)
    assert r.status_code == 200, r.text
    await ingest_ok(seeded, [feature("t1", V1)])


async def test_entity_type_not_in_applies_to(seeded: httpx.AsyncClient, settings: Settings) -> None:
    await register(seeded, "trk", applies_to=["track"])
    before = dump_databases(settings)
    r = await ingest(
        seeded,
        [feature("al1", V1, "album"), feature("ar1", V1, "artist"), feature("p1", V1, "playlist")],
        type_id="trk",
    )
    assert r.status_code == 200, r.text
    assert r.json()["ingested"] == 0
    assert_item_errors(
        r.json()["errors"],
        [
            item_error(0, "album", "al1", "ENTITY_TYPE_NOT_APPLICABLE"),
            item_error(1, "artist", "ar1", "ENTITY_TYPE_NOT_APPLICABLE"),
            item_error(2, "playlist", "p1", "ENTITY_TYPE_NOT_APPLICABLE"),
        ],
    )
    assert dump_databases(settings) == before


async def test_version_above_current_rejects_every_item(
    seeded: httpx.AsyncClient, settings: Settings
) -> None:
    await ingest_ok(seeded, [feature("t1", V2)])
    before = dump_databases(settings)
    r = await ingest(seeded, [feature("t1", V1), feature("t2", V1)], version=2)
    assert r.status_code == 200, r.text
    assert r.json()["ingested"] == 0
    assert_item_errors(
        r.json()["errors"],
        [item_error(0, "track", "t1", "VERSION_TOO_HIGH"), item_error(1, "track", "t2", "VERSION_TOO_HIGH")],
    )
    assert dump_databases(settings) == before
    # After a bump, version 2 is the current one and accepted.
    assert (await seeded.post(f"{TYPES}/audio/bump-version", headers=ADMIN)).status_code == 200
    await ingest_ok(seeded, [feature("t1", V1)], version=2)


@pytest.mark.parametrize(
    "item, code",
    [
        ("not an object", "INVALID_ITEM"),
        ([1, 2, 3], "INVALID_ITEM"),
        (feature("t1", V1, colour="red"), "INVALID_ITEM"),
        ({"entity_type": "track", "entity_id": "t1"}, "MISSING_VECTOR"),
        (feature("", V1), "INVALID_ENTITY_ID"),
        (feature(None, V1), "INVALID_ENTITY_ID"),  # type: ignore[arg-type]
        (feature(17, V1), "INVALID_ENTITY_ID"),  # type: ignore[arg-type]
        (feature("   ", V1), "INVALID_ENTITY_ID"),
        (feature("t" * 256, V1), "INVALID_ENTITY_ID"),
        (feature("t1", "0.1,0.2,0.3,0.4"), "NOT_A_LIST"),
        (feature("t1", {"0": 0.1}), "NOT_A_LIST"),
        (feature("t1", 0.5), "NOT_A_LIST"),
    ],
)
async def test_malformed_item_is_reported_and_nothing_changes(
    seeded: httpx.AsyncClient, settings: Settings, item: Any, code: str
) -> None:
    before = dump_databases(settings)
    r = await ingest(seeded, [item])
    assert r.status_code == 200, r.text
    assert r.json()["ingested"] == 0
    errors = r.json()["errors"]
    assert len(errors) == 1 and errors[0]["index"] == 0 and errors[0]["code"] == code, errors
    assert {"index", "entity_type", "entity_id", "code", "message"} <= set(errors[0])
    assert dump_databases(settings) == before


# ------------------------------------------------------------------ mixed batches


async def test_mixed_uniform_batch_stores_good_items_only(
    seeded: httpx.AsyncClient, settings: Settings
) -> None:
    """Every vector has the right length and is numeric: the whole-batch coercion path."""
    items = [
        (feature("t1", V1), None),
        (feature("t3", [4e38, 1.0, 1.0, 1.0]), "NON_FINITE"),
        (feature("al2", V2, "album"), None),
        (feature("t2", [0, 0, 0, 0]), "ZERO_VECTOR"),
        (feature("t404", V1), "UNKNOWN_ENTITY"),
        (feature("t5", V1, "song"), "INVALID_ENTITY_TYPE"),
        (feature("p1", V3, "playlist"), None),
        (feature("p404", V3, "playlist"), "UNKNOWN_ENTITY"),
    ]
    await _run_mixed(seeded, settings, items)


async def test_mixed_ragged_batch_stores_good_items_only(
    seeded: httpx.AsyncClient, settings: Settings
) -> None:
    """Odd vectors (ragged, non-numeric, empty): the per-item coercion path."""
    items = [
        (feature("t3", [1.0, 2.0]), "DIMENSION_MISMATCH"),
        (feature("t1", V1), None),
        (feature("t2", ["x", 1, 2, 3]), "NON_NUMERIC"),
        (feature("t5", []), "EMPTY_VECTOR"),
        (feature("al2", V2, "album"), None),
        (feature("t6", [1.0, None, 1.0, 1.0]), "NON_NUMERIC"),
        (feature("t3", [-4e38, 1, 1, 1]), "NON_FINITE"),
        (feature("p1", V3, "playlist"), None),
        (feature("t6", [0.0, 0.0, 0.0, 0.0]), "ZERO_VECTOR"),
    ]
    await _run_mixed(seeded, settings, items)


async def _run_mixed(
    seeded: httpx.AsyncClient, settings: Settings, items: list[tuple[dict[str, Any], str | None]]
) -> None:
    """Send ``items`` (each with the error code expected, or None) over earlier maps of t3 and t4."""
    await ingest_ok(seeded, [feature("t3", V3, metadata={"keep": True}), feature("t4", V3)])
    before = dump_databases(settings)
    stored_before = stored_maps(settings)

    r = await ingest(seeded, [item for item, _ in items])
    assert r.status_code == 200, r.text
    body = r.json()
    good = [item for item, code in items if code is None]
    assert body["ingested"] == len(good)
    assert_item_errors(
        body["errors"],
        [
            item_error(i, item["entity_type"], item["entity_id"], code)
            for i, (item, code) in enumerate(items)
            if code is not None
        ],
    )

    maps = stored_maps(settings)
    assert set(maps) == set(stored_before) | {(i["entity_type"], i["entity_id"], "audio") for i in good}
    for item in good:
        version, vector, _ = maps[(item["entity_type"], item["entity_id"], "audio")]
        assert version == 1
        assert_vector(vector, item["vector"])
    for key, (version, vector, meta) in stored_before.items():  # earlier rows untouched
        assert maps[key][0] == version and maps[key][2] == meta
        assert_vector(maps[key][1], vector)
    changes = changed_tables(before, dump_databases(settings))
    assert set(changes) == {"catalog.db:feature_maps", "user.db:playlist_feature_maps"}
    for removed, _added in changes.values():
        assert removed == []


# ------------------------------------------------------------------ whole-request errors


@pytest.mark.parametrize(
    "raw",
    [
        b'{"feature_type_id": "audio", "features": [',
        b"[]",
        b"null",
        b"42",
        b"",
        b'{"feature_type_id": "audio", "features": [{"entity_type": "track", "entity_id": "t1", '
        b'"vector": [NaN, 1, 1, 1]}]}',
        b'{"feature_type_id": "audio", "features": [{"entity_type": "track", "entity_id": "t1", '
        b'"vector": [Infinity, 1, 1, 1]}]}',
        b'{"feature_type_id": "audio", "features": [{"entity_type": "track", "entity_id": "t1", '
        b'"vector": [1e400, 1, 1, 1]}]}',
        b'\xef\xbb\xbf{"feature_type_id": "audio", "features": []}',
    ],
    ids=[
        "truncated",
        "list",
        "null",
        "number",
        "empty",
        "nan_literal",
        "infinity_literal",
        "double_overflow",
        "byte_order_mark",
    ],
)
async def test_malformed_body_is_400(seeded: httpx.AsyncClient, settings: Settings, raw: bytes) -> None:
    """JSON cannot carry NaN/Infinity: orjson refuses those literals, so the whole body is invalid."""
    before = dump_databases(settings)
    r = await seeded.post(INGEST, content=raw, headers={**ADMIN, "Content-Type": "application/json"})
    assert_error(r, 400, "BAD_USER_INPUT", "body")
    assert dump_databases(settings) == before


async def test_raw_bodies_read_as_orjson_reads_them(seeded: httpx.AsyncClient, settings: Settings) -> None:
    """Bodies the fast decoder leaves to orjson: a repeated key (the last one counts) and a
    vector holding an array behind an escaped bracket (refused, the rest stored)."""
    raw = (
        b'{"feature_type_id": "audio", "features": ['
        b'{"entity_type": "track", "entity_id": "t1", "vector": [9, 9, 9, 9], "vector": [1, 2, 3, 4]},'
        b'{"entity_type": "track", "entity_id": "t2", "vector": [[1], 2, 3, 4], "metadata": "\\u005b"},'
        b'{"entity_type": "album", "entity_id": "al1", "vector": [4, 3, 2, 1]}]}'
    )
    r = await seeded.post(INGEST, content=raw, headers={**ADMIN, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["ingested"] == 2
    assert_item_errors(r.json()["errors"], [item_error(1, "track", "t2", "NON_NUMERIC")])
    maps = stored_maps(settings)
    assert set(maps) == {("track", "t1", "audio"), ("album", "al1", "audio")}
    assert_vector(maps[("track", "t1", "audio")][1], [1, 2, 3, 4])
    assert_vector(maps[("album", "al1", "audio")][1], [4, 3, 2, 1])


async def test_large_batch_is_stored_bit_for_bit(seeded: httpx.AsyncClient, settings: Settings) -> None:
    """Many float32 values through the column decoder: stored exactly as sent."""
    await register(seeded, "wide", dimension=64)
    vectors = np.random.default_rng(3).standard_normal((6, 64)).astype(np.float32)
    ids = [("track", "t1"), ("track", "t2"), ("album", "al1"), ("artist", "ar2"), ("playlist", "p1")]
    features = [feature(eid, vectors[i].tolist(), etype) for i, (etype, eid) in enumerate(ids)]
    features.append(feature("t404", vectors[5].tolist()))
    r = await ingest(seeded, features, type_id="wide")
    assert r.status_code == 200, r.text
    assert r.json()["ingested"] == 5
    assert_item_errors(r.json()["errors"], [item_error(5, "track", "t404", "UNKNOWN_ENTITY")])
    maps = stored_maps(settings)
    for i, (etype, eid) in enumerate(ids):
        assert maps[(etype, eid, "wide")][1].tobytes() == vectors[i].astype("<f4").tobytes()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"features": [feature("t1", V1)]}, "feature_type_id"),
        ({"feature_type_id": "", "features": [feature("t1", V1)]}, "feature_type_id"),
        ({"feature_type_id": 5, "features": [feature("t1", V1)]}, "feature_type_id"),
        ({"feature_type_id": "audio"}, "features"),
        ({"feature_type_id": "audio", "features": {"t1": V1}}, "features"),
        ({"feature_type_id": "audio", "features": [feature("t1", V1)], "version": 0}, "version"),
        ({"feature_type_id": "audio", "features": [feature("t1", V1)], "version": "1"}, "version"),
        ({"feature_type_id": "audio", "features": [feature("t1", V1)], "version": 1.5}, "version"),
        ({"feature_type_id": "audio", "features": [feature("t1", V1)], "force": True}, "force"),
    ],
)
async def test_invalid_request_fields_are_400(
    seeded: httpx.AsyncClient, settings: Settings, body: dict[str, Any], field: str
) -> None:
    before = dump_databases(settings)
    assert_error(await seeded.post(INGEST, json=body, headers=ADMIN), 400, "BAD_USER_INPUT", field)
    assert dump_databases(settings) == before


@pytest.mark.parametrize(
    "headers, status, code",
    [
        ({}, 401, "UNAUTHENTICATED"),
        ({"Authorization": "Bearer "}, 401, "UNAUTHENTICATED"),
        ({"Authorization": f"Basic {ADMIN_TOKEN}"}, 401, "UNAUTHENTICATED"),
        (WRONG, 403, "FORBIDDEN"),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}x"}, 403, "FORBIDDEN"),
    ],
)
async def test_ingest_needs_the_admin_token(
    seeded: httpx.AsyncClient, settings: Settings, headers: dict[str, str], status: int, code: str
) -> None:
    before = dump_databases(settings)
    r = await ingest(seeded, [feature("t1", V1), feature("p1", V1, "playlist")], headers=headers)
    assert_error(r, status, code)
    assert dump_databases(settings) == before


# ------------------------------------------------------------------ limits


MINI_CATALOG = {
    "artists": [{"id": "ar1", "name": "A"}],
    "albums": [{"id": "al1", "name": "B", "artist_ids": ["ar1"]}],
    "tracks": [{"id": f"t{i}", "name": f"T{i}", "album_id": "al1", "artist_ids": ["ar1"]} for i in (1, 2, 3)],
}


async def _seed_mini(client: httpx.AsyncClient) -> None:
    """Five catalog items (fits both small limits) and type ``audio`` of dimension 4."""
    r = await client.post("/v1/admin/catalog", json=MINI_CATALOG, headers=ADMIN)
    assert r.status_code == 200 and r.json()["errors"] == [], r.text
    await register(client, "audio")


def _limited(settings_for: Callable[..., Settings], tmp_path: Path, **limits: Any) -> tuple[Settings, Any]:
    settings = settings_for(tmp_path / "limited", **limits)
    return settings, running_client(create_app(settings))


async def test_too_many_items_is_413_and_nothing_stored(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    settings, running = _limited(settings_for, tmp_path, max_batch_items=5)
    async with running as client:
        await _seed_mini(client)
        five = [feature(f"t{i}", V1) for i in (1, 2, 3)] + [
            feature("al1", V1, "album"),
            feature("ar1", V1, "artist"),
        ]
        before = dump_databases(settings)
        r = await ingest(client, [*five, feature("t1", V2)])
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert dump_databases(settings) == before
        # Exactly the limit is fine.
        await ingest_ok(client, five)
        assert len(stored_maps(settings)) == 5


def _padded_body(size: int) -> bytes:
    """A valid ingest body for t1 of exactly ``size`` bytes (padded with JSON whitespace)."""
    body = json.dumps({"feature_type_id": "audio", "features": [feature("t1", V1)]}).encode()
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}"


async def _chunks(body: bytes, size: int = 300) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_body_over_the_limit_is_413_and_nothing_stored(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    settings, running = _limited(settings_for, tmp_path, max_body_bytes=1024)
    headers = {**ADMIN, "Content-Type": "application/json"}
    async with running as client:
        await _seed_mini(client)
        before = dump_databases(settings)
        big = _padded_body(1025)

        r = await client.post(INGEST, content=big, headers=headers)
        assert r.request.headers["content-length"] == "1025"
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert dump_databases(settings) == before

        r = await client.post(INGEST, content=_chunks(_padded_body(5000)), headers=headers)
        assert "content-length" not in r.request.headers
        assert r.request.headers.get("transfer-encoding") == "chunked"
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert dump_databases(settings) == before

        # Exactly at the limit is accepted, with or without a Content-Length.
        r = await client.post(INGEST, content=_padded_body(1024), headers=headers)
        assert r.status_code == 200 and r.json() == {"ingested": 1, "errors": []}, r.text
        r = await client.post(INGEST, content=_chunks(_padded_body(1024)), headers=headers)
        assert r.status_code == 200 and r.json() == {"ingested": 1, "errors": []}, r.text
        assert set(stored_maps(settings)) == {("track", "t1", "audio")}
