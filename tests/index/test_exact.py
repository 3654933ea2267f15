"""ExactIndex against a brute-force numpy reference written here."""

from __future__ import annotations

import numpy as np
import pytest

from fingerprints.domain import Distance
from fingerprints.index.exact import ExactIndex


def reference(
    matrix: np.ndarray, ids: list[str], query: np.ndarray, distance: Distance
) -> tuple[list[str], np.ndarray]:
    """Every id ordered by score (ties by id), with the scores of design §4."""
    m = matrix.astype(np.float64)
    q = query.astype(np.float64)
    if distance is Distance.COSINE:
        scores = (m / np.linalg.norm(m, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    elif distance is Distance.DOT_PRODUCT:
        scores = m @ q
    else:
        scores = 1 / (1 + np.linalg.norm(m - q, axis=1))
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
    return [ids[i] for i in order], scores[order]


def assert_same_ranking(
    got_ids: list[str], got_scores: np.ndarray, want_ids: list[str], want_scores: np.ndarray
) -> None:
    """Same ids in the same order, except that float32 may swap neighbours closer than 1e-5."""
    np.testing.assert_allclose(got_scores, want_scores[: len(got_ids)], rtol=1e-4, atol=1e-5)
    score_of = dict(zip(want_ids, want_scores.tolist(), strict=True))
    for i, entity_id in enumerate(got_ids):
        assert entity_id == want_ids[i] or abs(score_of[entity_id] - want_scores[i]) < 1e-5, (i, entity_id)


@pytest.fixture
def data() -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(3000, 24)).astype(np.float32)
    ids = [f"e{i:05d}" for i in rng.permutation(3000)]
    return ids, matrix, rng.normal(size=(20, 24)).astype(np.float32)


@pytest.mark.parametrize("distance", list(Distance))
def test_top_k_matches_numpy(distance: Distance, data: tuple[list[str], np.ndarray, np.ndarray]) -> None:
    ids, matrix, queries = data
    index = ExactIndex(24, distance)
    index.upsert_many(ids, matrix)
    for query in queries:
        hits = index.search(query, 15)
        want_ids, want_scores = reference(matrix, ids, query, distance)
        assert_same_ranking(hits.ids, hits.scores, want_ids, want_scores)
        if distance is Distance.EUCLIDEAN:
            assert hits.distances is not None
            np.testing.assert_allclose(1 / (1 + hits.distances), hits.scores, rtol=1e-5)
    batch = index.search_batch(queries, 15)
    assert [h.ids for h in batch] == [index.search(q, 15).ids for q in queries]


def test_ties_are_broken_by_id() -> None:
    index = ExactIndex(3, Distance.COSINE)
    same = np.tile([1.0, 2.0, 3.0], (6, 1))
    index.upsert_many(["f", "b", "e", "a", "d", "c"], same)
    index.upsert("z", np.array([3.0, 2.0, 1.0]))
    assert index.search(np.array([1.0, 2.0, 3.0]), 4).ids == ["a", "b", "c", "d"]
    assert index.search_batch(np.array([[1.0, 2.0, 3.0]]), 4)[0].ids == ["a", "b", "c", "d"]


def test_exclude_and_min_score_still_fill_the_limit(data: tuple[list[str], np.ndarray, np.ndarray]) -> None:
    ids, matrix, queries = data
    index = ExactIndex(24, Distance.COSINE)
    index.upsert_many(ids, matrix)
    want_ids, want_scores = reference(matrix, ids, queries[0], Distance.COSINE)
    hits = index.search(queries[0], 10, exclude=set(want_ids[:50]))
    assert hits.ids == want_ids[50:60]
    cutoff = float(want_scores[7]) - 1e-6
    filtered = index.search(queries[0], 50, min_score=cutoff)
    assert filtered.ids == want_ids[:8]


def test_euclidean_min_score_is_on_the_public_score() -> None:
    index = ExactIndex(2, Distance.EUCLIDEAN)
    index.upsert_many(["near", "far"], np.array([[1.0, 0.0], [4.0, 0.0]]))
    hits = index.search(np.array([0.0, 0.0]), 5, min_score=0.4)  # score(near)=0.5, score(far)=0.2
    assert hits.ids == ["near"] and hits.distances is not None and hits.distances[0] == pytest.approx(1.0)
    assert index.search(np.array([0.0, 0.0]), 5, min_score=1.5).ids == []


def test_updates_removals_and_growth() -> None:
    index = ExactIndex(4, Distance.DOT_PRODUCT, capacity=2)
    rng = np.random.default_rng(0)
    vectors = {f"v{i}": rng.normal(size=4).astype(np.float32) for i in range(3000)}
    index.upsert_many(list(vectors), np.stack(list(vectors.values())))
    for i in range(0, 3000, 3):
        assert index.remove(f"v{i}")
        del vectors[f"v{i}"]
    assert not index.remove("v0") and "v0" not in index
    vectors["v1"] = np.array([100, 100, 100, 100], np.float32)
    index.upsert("v1", vectors["v1"])
    index.upsert_many(["v2", "v2"], np.array([[1, 0, 0, 0], [0, 0, 0, 9]], np.float32))  # last wins
    vectors["v2"] = np.array([0, 0, 0, 9], np.float32)
    assert len(index) == len(vectors)
    ids, matrix = index.items()
    assert sorted(ids) == sorted(vectors)
    for entity_id, row in zip(ids, matrix, strict=True):
        np.testing.assert_array_equal(row, vectors[entity_id])
    query = np.ones(4, np.float32)
    want, _ = reference(np.stack(list(vectors.values())), list(vectors), query, Distance.DOT_PRODUCT)
    assert index.search(query, 25).ids == want[:25]


def test_k_beyond_size_and_empty_index() -> None:
    index = ExactIndex(2, Distance.COSINE)
    assert index.search(np.ones(2), 5).ids == []
    index.upsert_many(["a", "b"], np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert index.search(np.array([1.0, 0.1]), 50).ids == ["a", "b"]
    assert [h.ids for h in index.search_batch(np.ones((2, 2)), 50)] == [["a", "b"], ["a", "b"]]
