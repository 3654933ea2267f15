"""The single-query fast paths: ``prepare_query`` against ``prepare``, ``prepare_valid_query``
against both, prepared queries against raw ones in every index, one HNSW search against a batch
row and brute force, and the readers-writer lock's hand-offs under contention."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fingerprints.domain import Distance, EntityType
from fingerprints.index.base import Hits, prepare, prepare_query, prepare_valid_query
from fingerprints.index.exact import ExactIndex
from fingerprints.index.hnsw import HnswIndex
from fingerprints.index.locks import RWLock
from fingerprints.index.registry import IndexKey, IndexParams, KeyIndex
from tests.index.test_hnsw import DIM, build, random_data, reference

WAIT_S = 10.0  # a safety net against hanging, not a timing assertion


@pytest.mark.parametrize("distance", list(Distance))
def test_prepare_query_is_prepare_bit_for_bit(distance: Distance) -> None:
    rng = np.random.default_rng(7)
    scales = rng.uniform(-30, 30, 500)
    queries = (rng.standard_normal((500, 128)) * np.exp(scales)[:, None]).astype(np.float32)
    for query in queries:
        assert np.array_equal(prepare_query(query, distance), prepare(query[None, :], distance)[0])
    # the batch's arithmetic as well: a query and the same vector in a batch agree exactly
    assert np.array_equal(np.stack([prepare_query(q, distance) for q in queries]), prepare(queries, distance))


@pytest.mark.parametrize(
    "query",
    [
        np.zeros(4, np.float32),
        np.full(4, 1e30, np.float32),  # the squares overflow float32
        np.full(4, 1e-30, np.float32),  # the squares underflow to 0
        np.array([1.0, np.nan, 0, 0], np.float32),
        np.array([1.0, np.inf, 0, 0], np.float32),
        np.arange(8, dtype=np.float32)[::2],  # not contiguous
        np.arange(1, 5, dtype=np.float64),
        np.arange(1, 5, dtype=np.float32).reshape(1, 4),
    ],
)
def test_prepare_query_takes_the_long_way_when_unusual(query: np.ndarray) -> None:
    for distance in Distance:
        with np.errstate(all="ignore"):
            want = prepare(query.reshape(1, -1), distance)[0]
            got = prepare_query(query, distance)
        assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == (4,)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("distance", list(Distance))
def test_prepare_valid_query_is_prepare_query_bit_for_bit(distance: Distance) -> None:
    rng = np.random.default_rng(8)
    scales = rng.uniform(-15, 15, 300)  # squares stay inside float32
    queries = (rng.standard_normal((300, 64)) * np.exp(scales)[:, None]).astype(np.float32)
    for query in queries:
        got = prepare_valid_query(query, distance)
        assert got is not None and got.dtype == np.float32 and got.flags.c_contiguous
        assert np.array_equal(got, prepare_query(query, distance))
        assert np.array_equal(got, prepare(query[None, :], distance)[0])
    zero = np.zeros(64, np.float32)
    if distance is Distance.COSINE:
        assert prepare_valid_query(zero, distance) is None  # no direction to rank by
    else:
        assert prepare_valid_query(zero, distance) is zero


@pytest.mark.parametrize(
    "query",
    [
        np.array([1.0, np.nan, 0, 0], np.float32),
        np.array([1.0, np.inf, 0, 0], np.float32),
        np.array([1.0, -np.inf, 0, 0], np.float32),
        np.full(4, 1e30, np.float32),  # finite, but the squares overflow: validated the long way
        np.arange(8, dtype=np.float32)[::2],  # not contiguous
        np.arange(1, 5, dtype=np.float64),
        np.arange(1, 5, dtype=np.float32).reshape(1, 4),
    ],
)
def test_prepare_valid_query_leaves_the_unusual_to_the_long_way(query: np.ndarray) -> None:
    for distance in Distance:
        assert prepare_valid_query(query, distance) is None
    tiny = np.full(4, 1e-30, np.float32)  # the squares underflow to 0: a direction all the same
    assert prepare_valid_query(tiny, Distance.COSINE) is None
    assert prepare_valid_query(tiny, Distance.EUCLIDEAN) is tiny


def _same(a: Hits, b: Hits) -> None:
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.scores.dtype == b.scores.dtype == np.float32
    if a.distances is None:
        assert b.distances is None
    else:
        assert b.distances is not None
        np.testing.assert_array_equal(a.distances, b.distances)


@pytest.mark.parametrize("distance", list(Distance))
def test_a_prepared_query_answers_as_the_raw_one_bit_for_bit(distance: Distance) -> None:
    ids, matrix = random_data(600, seed=12)
    hnsw = build(distance, ids, matrix)
    exact = ExactIndex(DIM, distance)
    exact.upsert_many(ids, matrix)
    queries = (np.random.default_rng(13).standard_normal((15, DIM)) * 7).astype(np.float32)
    filters: list[dict[str, object]] = [{}, {"exclude": set(ids[:40])}, {"min_score": 0.1}]
    for index in (hnsw, exact):
        for query in queries:
            prepared = prepare_query(query, distance)
            for k in (1, 10, 700):  # 700: more than the index holds
                for extra in filters:
                    _same(index.search(prepared, k, prepared=True, **extra), index.search(query, k, **extra))  # type: ignore[arg-type]
        batch = np.stack([prepare_query(q, distance) for q in queries])
        for got, want in zip(
            index.search_batch(batch, 10, prepared=True), index.search_batch(queries, 10), strict=True
        ):
            _same(got, want)


@pytest.mark.parametrize("fresh", [0, 30])
def test_key_index_takes_a_prepared_query_in_both_tiers(fresh: int) -> None:
    ids, matrix = random_data(900, seed=14)
    index = KeyIndex(
        IndexKey("audio", EntityType.TRACK), DIM, Distance.COSINE, IndexParams(m=16, ef_search=200)
    )
    index.upsert_many(ids[: 900 - fresh], matrix[: 900 - fresh])
    index.build_graph()
    if fresh:
        index.upsert_many(ids[900 - fresh :], matrix[900 - fresh :])  # the fresh tier, until drained
    assert index.status()["fresh"] == fresh
    for query in (np.random.default_rng(15).standard_normal((10, DIM)) * 3).astype(np.float32):
        prepared = prepare_query(query, Distance.COSINE)
        _same(index.search(prepared, 10, prepared=True), index.search(query, 10))
        _same(
            index.search(prepared, 10, prepared=True, exclude={ids[0]}, min_score=0.0),
            index.search(query, 10, exclude={ids[0]}, min_score=0.0),
        )


@pytest.mark.parametrize("distance", list(Distance))
def test_single_search_is_the_batch_row_and_brute_force(distance: Distance) -> None:
    ids, matrix = random_data(800, seed=5)
    index = build(distance, ids, matrix)
    queries = np.random.default_rng(6).standard_normal((20, DIM)).astype(np.float32)
    for query, row in zip(queries, index.search_batch(queries, 10), strict=True):
        hits = index.search(query, 10)
        assert hits.ids == row.ids
        np.testing.assert_array_equal(hits.scores, row.scores)
        assert hits.scores.dtype == np.float32
        if distance is Distance.EUCLIDEAN:
            assert hits.distances is not None and row.distances is not None
            np.testing.assert_array_equal(hits.distances, row.distances)
        else:
            assert hits.distances is None
        want_ids, want_scores = reference(ids, matrix, query, 10, distance)
        assert hits.ids == want_ids
        np.testing.assert_allclose(hits.scores, want_scores, rtol=1e-4, atol=1e-5)


def test_single_search_breaks_ties_by_id() -> None:
    index = HnswIndex(DIM, Distance.DOT_PRODUCT, ef_search=100)
    vector = np.ones(DIM, np.float32)
    index.upsert_many(["d", "b", "c", "a"], np.stack([vector] * 4))
    index.upsert("far", -vector)
    assert index.search(vector, 4).ids == ["a", "b", "c", "d"]
    # Which of the tied are found at the k-th place is up to the graph (approximate search);
    # those it returns come in id order.
    found = index.search(vector, 3).ids
    assert found == sorted(found) and len(set(found)) == 3 and "far" not in found


def test_readers_share_writers_wait_and_are_not_starved() -> None:
    lock = RWLock()
    order: list[str] = []
    reader_in, writer_waiting, writer_done = threading.Event(), threading.Event(), threading.Event()

    def writer() -> None:
        writer_waiting.set()
        with lock.write():
            order.append("writer")
        writer_done.set()

    with lock.read():
        with lock.read():  # readers share
            order.append("readers")
        thread = threading.Thread(target=writer)
        thread.start()
        assert writer_waiting.wait(WAIT_S)
        while not lock._waiting_writers:  # the writer is queued behind this reader
            threading.Event().wait(0.001)
        late = threading.Thread(target=lambda: (reader_in.set(), lock.acquire_read(), order.append("late")))
        late.start()
        assert reader_in.wait(WAIT_S)
        assert not writer_done.is_set()
    assert writer_done.wait(WAIT_S)  # released by the last reader out
    late.join(WAIT_S)
    thread.join(WAIT_S)
    lock.release_read()  # the late reader's
    assert order == ["readers", "writer", "late"]  # the late reader waited for the queued writer
    with lock.write():  # nothing left held
        pass


def test_readers_and_writers_under_contention() -> None:
    """Readers never overlap a writer, writers never overlap each other, and every writer gets
    its turn while readers keep coming (they are not starved)."""
    lock = RWLock()
    state = {"readers": 0, "writers": 0, "reads": 0, "writes": 0}
    guard = threading.Lock()  # for the counters only
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            with lock.read():
                with guard:
                    state["readers"] += 1
                    if state["writers"]:
                        errors.append("a reader inside with a writer")
                threading.Event().wait(0.0001)
                with guard:
                    state["readers"] -= 1
                    state["reads"] += 1

    def writer() -> None:
        for _ in range(50):
            with lock.write():
                with guard:
                    state["writers"] += 1
                    if state["readers"] or state["writers"] > 1:
                        errors.append("a writer inside with others")
                with guard:
                    state["writers"] -= 1
                    state["writes"] += 1

    readers = [threading.Thread(target=reader) for _ in range(4)]
    writers = [threading.Thread(target=writer) for _ in range(2)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(WAIT_S)  # while the readers never pause
    stop.set()
    for thread in readers:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in readers + writers)
    assert not errors
    assert state["writes"] == 100 and state["reads"] > 0
    assert state["readers"] == state["writers"] == 0
    with lock.write():  # nothing left held
        pass
