"""Member vectors from the similarity index: the same aggregates as from SQL, and SQL whenever
the index might differ from the database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert

from bench.aggregate import TYPE_ID, Data, _populate_catalog, _register, make_data
from fingerprints.domain import AggregationMethod, Distance, EntityType
from fingerprints.index.registry import IndexKey, KeyIndex
from fingerprints.service import aggregation, feature_types, indexing, ingest
from fingerprints.service.base import Services, cached_feature_type, open_services
from fingerprints.service.sync import ChangeFeed
from fingerprints.store import feature_maps as maps_store
from fingerprints.store.tables import changes
from tests.backends import BACKENDS, make_settings

DIM = 16
AGGREGATED = (EntityType.ALBUM, EntityType.ARTIST)


@pytest.fixture(params=BACKENDS)
def services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    svc = open_services(
        make_settings(
            request.param,
            tmp_path,
            index_load="lazy",
            index_snapshots=False,
            aggregation_interval=0,
            hnsw_threshold=50,
            hnsw_m=8,
            hnsw_ef_construction=40,
        )
    )
    try:
        yield svc
    finally:
        svc.dbs.dispose()


def _catalog(svc: Services, distance: Distance, method: AggregationMethod) -> Data:
    """300 tracks on 40 albums and 12 artists; 20 tracks without a vector, 60 a version behind."""
    data = make_data(300, 40, 12, DIM, seed=7)
    _populate_catalog(svc, data)
    _register(svc, DIM, method, distance)
    vectors = data.vectors * np.linspace(0.5, 3.0, len(data.vectors), dtype=np.float32)[:, None]

    def put(rows: range, version: int | None = None) -> None:
        features = [
            {"entity_type": "track", "entity_id": data.track_ids[i], "vector": vectors[i]} for i in rows
        ]
        done = ingest.ingest_feature_maps(svc, feature_type_id=TYPE_ID, features=features, version=version)
        assert not done.errors

    put(range(0, 280))
    feature_types.bump_feature_type_version(svc, type_id=TYPE_ID)
    put(range(60, 280), version=2)  # tracks 0-59 stay at version 1: outdated
    return data


def _load_index(svc: Services) -> KeyIndex:
    svc.feed = ChangeFeed(svc)
    svc.feed.mark_start()
    feature_type = cached_feature_type(svc, TYPE_ID)
    assert feature_type is not None
    return indexing.key_index(svc, feature_type, EntityType.TRACK)


def _run(
    svc: Services, *, scan_min: int, monkeypatch: pytest.MonkeyPatch
) -> dict[str, tuple[int, np.ndarray]]:
    """A forced job over albums and artists: (version, vector) of every stored aggregate."""
    monkeypatch.setattr(aggregation, "SCAN_MIN_TARGETS", scan_min)
    job = aggregation.trigger_aggregation(
        svc, feature_type_id=TYPE_ID, entity_types=["album", "artist"], force=True
    )
    assert aggregation.claim_next_job(svc) == job.id
    assert aggregation.run_job(svc, job.id).status == "succeeded"
    out = {}
    with svc.dbs.catalog.read() as conn:
        for entity_type in AGGREGATED:
            ids, matrix = maps_store.load_vectors(
                conn, entity_type=entity_type, type_id=TYPE_ID, dimension=DIM
            )
            found = maps_store.maps_of(conn, entity_type=entity_type, entity_ids=ids, type_ids=[TYPE_ID])
            for entity_id, row in zip(ids, matrix, strict=True):
                out[f"{entity_type.value}/{entity_id}"] = (found[entity_id][0].version, row)
    return out


def _spy_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the index gathers and the SQL reads of track vectors (with or without the
    album memberships) from here on."""
    calls = {"index": 0, "sql": 0}
    gather, track_maps = KeyIndex.gather, aggregation.agg_store.track_maps
    album_member_maps = aggregation.agg_store.album_member_maps

    def counted_gather(self: KeyIndex, ids: list[str], **kwargs: Any) -> tuple[np.ndarray, np.ndarray] | None:
        calls["index"] += 1
        return gather(self, ids, **kwargs)

    def counted_track_maps(*args: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        calls["sql"] += 1
        return track_maps(*args, **kwargs)  # type: ignore[arg-type]

    def counted_album_member_maps(*args: object, **kwargs: object) -> Any:
        calls["sql"] += 1
        return album_member_maps(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(KeyIndex, "gather", counted_gather)
    monkeypatch.setattr(aggregation.agg_store, "track_maps", counted_track_maps)
    monkeypatch.setattr(aggregation.agg_store, "album_member_maps", counted_album_member_maps)
    return calls


def _assert_same(got: dict[str, tuple[int, np.ndarray]], want: dict[str, tuple[int, np.ndarray]]) -> None:
    """Bit for bit: a job stores the same aggregates whichever path read its members."""
    assert got.keys() == want.keys() and len(want) > 40
    for key, (version, vector) in want.items():
        assert got[key][0] == version, key
        np.testing.assert_array_equal(got[key][1], vector, err_msg=key)


@pytest.mark.parametrize("distance", list(Distance))
@pytest.mark.parametrize(
    "method",
    [
        AggregationMethod.AVERAGE,
        AggregationMethod.WEIGHTED_BY_DURATION,
        AggregationMethod.MAX,
        AggregationMethod.CENTROID,  # from a copy, not under the index's lock
    ],
)
@pytest.mark.parametrize("scan_min", [1, 10**9], ids=["scan", "lookup"])
def test_index_and_sql_paths_store_the_same_aggregates(
    services: Services,
    distance: Distance,
    method: AggregationMethod,
    scan_min: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _catalog(services, distance, method)
    calls = _spy_reads(monkeypatch)
    from_sql = _run(services, scan_min=scan_min, monkeypatch=monkeypatch)
    assert calls == {"index": 0, "sql": 2}
    _load_index(services)
    from_index = _run(services, scan_min=scan_min, monkeypatch=monkeypatch)
    # Cosine reads SQL again: its index holds unit vectors (see _gather_from_index).
    assert calls == ({"index": 0, "sql": 4} if distance is Distance.COSINE else {"index": 2, "sql": 2})
    _assert_same(from_index, from_sql)
    # Outdated members keep the older version; others carry the current one.
    assert {version for version, _ in from_index.values()} == {1, 2}


def test_averages_from_the_index_equal_numpy(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _catalog(services, Distance.EUCLIDEAN, AggregationMethod.AVERAGE)
    index = _load_index(services)
    got = _run(services, scan_min=1, monkeypatch=monkeypatch)
    with index.gather(data.track_ids) as gathered:
        assert gathered is not None
        rows, matrix = gathered
        for album, album_id in enumerate(data.album_ids):
            members = rows[(data.album_of == album) & (rows >= 0)]
            if len(members):
                want = matrix[members].astype(np.float64).mean(axis=0).astype(np.float32)
                np.testing.assert_allclose(got[f"album/{album_id}"][1], want, rtol=1e-6, atol=1e-6)


def test_graph_and_fresh_tier_give_the_same_aggregates(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _catalog(services, Distance.EUCLIDEAN, AggregationMethod.AVERAGE)
    index = _load_index(services)
    index.build_graph()
    assert index.graph is not None and len(index.exact) == 0
    # Rewrite some tracks: their vectors move to the fresh tier, the graph's copies are deleted.
    features = [
        {"entity_type": "track", "entity_id": data.track_ids[i], "vector": data.vectors[i] * 2}
        for i in range(100, 130)
    ]
    assert not ingest.ingest_feature_maps(services, feature_type_id=TYPE_ID, features=features).errors
    assert len(index.exact) == 30
    calls = _spy_reads(monkeypatch)
    from_index = _run(services, scan_min=1, monkeypatch=monkeypatch)
    assert calls == {"index": 2, "sql": 0}
    services.feed = None  # now from SQL
    _assert_same(from_index, _run(services, scan_min=1, monkeypatch=monkeypatch))
    assert calls == {"index": 2, "sql": 2}


def test_gather_copies_each_vector_once(services: Services) -> None:
    data = _catalog(services, Distance.DOT_PRODUCT, AggregationMethod.AVERAGE)
    index = _load_index(services)
    ids = [data.track_ids[5], "nope", data.track_ids[290], data.track_ids[5], data.track_ids[7]]
    index.build_graph()
    assert not ingest.ingest_feature_maps(
        services,
        feature_type_id=TYPE_ID,
        features=[{"entity_type": "track", "entity_id": data.track_ids[7], "vector": data.vectors[7] * 3}],
    ).errors
    assert len(index.exact) == 1  # track 7 in the fresh tier, the others in the graph
    with index.gather(ids) as gathered:
        assert gathered is not None
        rows, matrix = gathered
        assert rows[1] == -1 and rows[2] == -1 and rows[0] == rows[3] and len(matrix) == 2
        np.testing.assert_array_equal(matrix[rows[4]], index.get(data.track_ids[7]))
        np.testing.assert_array_equal(matrix[rows[0]], index.get(data.track_ids[5]))
    with index.gather(ids, graph_limit=1) as gathered:
        assert gathered is None  # two ids are not in the exact tier: read SQL instead


def test_gather_lends_the_exact_matrix_under_the_read_lock(services: Services) -> None:
    """No graph: the block reads the exact tier's own matrix, read-only, and a writer waits for
    the block to end (the rows it reads cannot move under it)."""
    data = _catalog(services, Distance.EUCLIDEAN, AggregationMethod.AVERAGE)
    index = _load_index(services)
    ids = [data.track_ids[3], "nope", data.track_ids[3], data.track_ids[9]]
    want, kept = index.get(data.track_ids[9]), index.get(data.track_ids[3])
    assert want is not None and kept is not None
    written = threading.Event()

    def write() -> None:
        index.remove_many([data.track_ids[9]])
        written.set()

    with index.gather(ids) as gathered:
        assert gathered is not None
        rows, matrix = gathered
        assert np.shares_memory(matrix, index.exact._matrix) and not matrix.flags.writeable
        assert rows[1] == -1 and rows[0] == rows[2]
        writer = threading.Thread(target=write)
        writer.start()
        assert not written.wait(0.2)
        np.testing.assert_array_equal(matrix[rows[3]], want)
    writer.join(5)
    assert written.is_set() and index.get(data.track_ids[9]) is None
    assert index.exact._matrix.flags.writeable

    # lend=False: a copy, and writers go ahead during the block.
    with index.gather(ids, lend=False) as gathered:
        assert gathered is not None
        rows, matrix = gathered
        assert not np.shares_memory(matrix, index.exact._matrix) and len(matrix) == 1
        assert rows.tolist() == [0, -1, 0, -1]
        writer = threading.Thread(target=index.remove_many, args=([data.track_ids[3]],))
        writer.start()
        writer.join(5)
        assert not writer.is_alive() and index.get(data.track_ids[3]) is None
        np.testing.assert_array_equal(matrix[0], kept)


def test_sql_is_read_without_a_feed_or_with_a_foreign_write_pending(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    _catalog(services, Distance.EUCLIDEAN, AggregationMethod.AVERAGE)
    _load_index(services)
    calls = _spy_reads(monkeypatch)
    feed = services.feed
    services.feed = None  # nothing would apply other processes' writes
    _run(services, scan_min=1, monkeypatch=monkeypatch)
    assert calls == {"index": 0, "sql": 2}
    services.feed = feed
    with services.dbs.catalog.write() as conn:  # another replica's write the feed has not applied
        conn.execute(
            insert(changes).values(
                origin="another-replica",
                kind="maps",
                feature_type_id=TYPE_ID,
                entity_type="track",
                entity_ids='["t00001"]',
                created_at=0.0,
            )  # fmt: skip
        )
    _run(services, scan_min=1, monkeypatch=monkeypatch)
    assert calls == {"index": 2, "sql": 4}  # gathered, then found behind: read again from SQL
    assert feed is not None
    feed.catch_up()
    _run(services, scan_min=1, monkeypatch=monkeypatch)
    assert calls == {"index": 4, "sql": 4}
    assert services.index.get(IndexKey(TYPE_ID, EntityType.TRACK)) is not None
