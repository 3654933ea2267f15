"""The single-query fast paths: ``prepare_query`` against ``prepare``, one HNSW search against
a batch row and brute force, and the readers-writer lock's hand-offs."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fingerprints.domain import Distance
from fingerprints.index.base import prepare, prepare_query
from fingerprints.index.hnsw import HnswIndex
from fingerprints.index.locks import RWLock
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
