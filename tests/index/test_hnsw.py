"""HnswIndex against a numpy brute-force reference, and recall tuning on a hard clustered set."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import pytest

from fingerprints.domain import Distance
from fingerprints.index.hnsw import GRAPH_FILE, META_FILE, HnswIndex
from fingerprints.index.tuning import choose_ef, choose_m, measure_recall
from tests.index.data import clustered

DIM = 32
N = 2_000


def reference(
    ids: list[str],
    matrix: np.ndarray,
    query: np.ndarray,
    k: int,
    distance: Distance,
    *,
    exclude: Collection[str] = (),
    min_score: float | None = None,
) -> tuple[list[str], np.ndarray]:
    """Brute force in float64: the ``k`` best (id, score), best first, ties by id."""
    x, q = matrix.astype(np.float64), query.astype(np.float64)
    if distance is Distance.COSINE:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q)
    scores = 1 / (1 + np.linalg.norm(x - q, axis=1)) if distance is Distance.EUCLIDEAN else x @ q
    passing = [i for i in range(len(ids)) if min_score is None or scores[i] >= min_score]
    ranked = sorted((i for i in passing if ids[i] not in exclude), key=lambda i: (-scores[i], ids[i]))[:k]
    return [ids[i] for i in ranked], scores[ranked]


def random_data(n: int = N, seed: int = 1) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = [f"e{i:05d}" for i in rng.permutation(n)]  # id order unrelated to insertion order
    return ids, rng.standard_normal((n, DIM)).astype(np.float32)


def build(distance: Distance, ids: list[str], matrix: np.ndarray, **params: int) -> HnswIndex:
    index = HnswIndex(DIM, distance, **({"ef_search": 400, "capacity": 64} | params))
    index.upsert_many(ids, matrix)
    return index


@pytest.fixture
def cosine() -> tuple[HnswIndex, list[str], np.ndarray]:
    ids, matrix = random_data()
    return build(Distance.COSINE, ids, matrix), ids, matrix


# ---------------------------------------------------------------------- exactness at high ef


@pytest.mark.parametrize("distance", list(Distance))
def test_matches_brute_force(distance: Distance) -> None:
    ids, matrix = random_data()
    index = build(distance, ids, matrix)
    queries = np.random.default_rng(2).standard_normal((40, DIM)).astype(np.float32)
    for query, hits in zip(queries, index.search_batch(queries, 10), strict=True):
        want_ids, want_scores = reference(ids, matrix, query, 10, distance)
        assert hits.ids == want_ids
        np.testing.assert_allclose(hits.scores, want_scores, rtol=1e-5, atol=1e-5)
        assert (hits.distances is not None) == (distance is Distance.EUCLIDEAN)
        if hits.distances is not None:
            np.testing.assert_allclose(1 / (1 + hits.distances), hits.scores, rtol=1e-6)
        single = index.search(query, 10)
        assert single.ids == hits.ids and np.array_equal(single.scores, hits.scores)


def test_items_and_get_return_prepared_vectors(cosine: tuple[HnswIndex, list[str], np.ndarray]) -> None:
    index, ids, matrix = cosine
    got_ids, got = index.items()
    assert sorted(got_ids) == sorted(ids) and got.shape == (N, DIM) and got.dtype == np.float32
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    np.testing.assert_allclose(got[got_ids.index(ids[7])], unit[7], atol=1e-6)
    np.testing.assert_allclose(index.get(ids[7]), unit[7], atol=1e-6)  # type: ignore[arg-type]
    assert index.get("missing") is None


# ---------------------------------------------------------------------- writes


def test_upsert_updates_in_place(cosine: tuple[HnswIndex, list[str], np.ndarray]) -> None:
    index, ids, _ = cosine
    query = np.random.default_rng(3).standard_normal(DIM).astype(np.float32)
    assert index.search(query, 1).ids != [ids[0]]
    index.upsert(ids[0], query)
    hits = index.search(query, 3)
    assert hits.ids[0] == ids[0] and hits.scores[0] == pytest.approx(1.0, abs=1e-6)
    assert len(index) == N
    index.upsert_many([ids[1], ids[1]], np.stack([-query, query]))  # last vector wins
    assert set(index.search(query, 2).ids) == {ids[0], ids[1]}


def test_remove_never_returned_and_labels_reused(cosine: tuple[HnswIndex, list[str], np.ndarray]) -> None:
    index, ids, matrix = cosine
    query = matrix[5]
    gone = index.search(query, 20).ids
    assert all(index.remove(entity_id) for entity_id in gone)
    assert not index.remove(gone[0]) and gone[0] not in index
    assert len(index) == N - 20
    assert not set(index.search(query, 50).ids) & set(gone)
    slots = index._index.element_count
    rng = np.random.default_rng(4)
    index.upsert_many([f"new{i}" for i in range(20)], rng.standard_normal((20, DIM)).astype(np.float32))
    assert index._index.element_count == slots  # the 20 freed labels were reused, not appended
    assert len(index) == N and "new3" in index
    index.upsert(gone[0], query)  # a removed id comes back under a fresh (or freed) label
    assert index.search(query, 1).ids == [gone[0]] and len(index) == N + 1
    live_ids, vectors = index.items()
    assert len(live_ids) == len(set(live_ids)) == len(index) and len(vectors) == len(index)
    assert not set(gone[1:]) & set(live_ids)


def test_capacity_grows() -> None:
    ids, matrix = random_data(300)
    index = HnswIndex(DIM, Distance.EUCLIDEAN, capacity=8, ef_search=300)
    for start in range(0, 300, 7):
        index.upsert_many(ids[start : start + 7], matrix[start : start + 7])
    assert len(index) == 300 and index._index.max_elements < 600  # doubling, not one per call
    hits = index.search(matrix[9], 1)
    assert hits.ids == [ids[9]] and hits.distances is not None and hits.distances[0] == 0


def test_rejects_mismatched_input() -> None:
    index = HnswIndex(DIM, Distance.COSINE)
    with pytest.raises(ValueError):
        index.upsert_many(["a", "b"], np.ones((1, DIM), dtype=np.float32))
    with pytest.raises(ValueError):
        index.upsert_many(["a"], np.ones((1, DIM + 1), dtype=np.float32))
    assert len(index) == 0 and len(index.search(np.ones(DIM), 5)) == 0


# ---------------------------------------------------------------------- filters


@pytest.mark.parametrize("distance", list(Distance))
def test_exclude_and_min_score_still_fill_k(distance: Distance) -> None:
    ids, matrix = random_data()
    index = build(distance, ids, matrix)
    query = matrix[11] + 0.1
    nearest, scores = reference(ids, matrix, query, 60, distance)
    hits = index.search(query, 10, exclude=nearest[:50])
    assert hits.ids == nearest[50:60]
    index.ef_search = 10  # less than the excluded ids: the over-fetch still fills k
    assert len(index.search(query, 10, exclude=nearest[:50])) == 10
    index.ef_search = 400
    floor = float(scores[12])  # exactly 13 qualify
    assert index.search(query, 10, min_score=floor).ids == nearest[:10]
    assert index.search(query, 30, min_score=floor).ids == nearest[:13]
    both = index.search_batch(np.stack([query, query]), 10, exclude=nearest[:5], min_score=floor)
    assert [h.ids for h in both] == [nearest[5:13]] * 2
    assert len(index.search(query, 10, min_score=1e9)) == 0


def test_k_larger_than_len() -> None:
    ids, matrix = random_data(30)
    for distance in Distance:
        index = build(distance, ids, matrix)
        hits = index.search(matrix[0], 100, exclude=ids[:5])
        assert hits.ids == reference(ids, matrix, matrix[0], 100, distance, exclude=ids[:5])[0]
        assert len(hits) == 25


def test_unanswerable_rows_fall_back_to_brute_force(
    cosine: tuple[HnswIndex, list[str], np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    index, ids, matrix = cosine
    graph = index._index

    class Flaky:  # hnswlib raises when it cannot reach enough live nodes; simulate it for one row
        def __getattr__(self, name: str) -> object:
            return getattr(graph, name)

        def knn_query(self, data: np.ndarray, k: int, num_threads: int) -> tuple[np.ndarray, np.ndarray]:
            if data.ndim == 2 and len(data) > 1 or np.allclose(data, queries[1]):
                raise RuntimeError("Cannot return the results in a contiguous 2D array")
            return graph.knn_query(data, k=k, num_threads=num_threads)  # type: ignore[no-any-return]

    queries = matrix[:3] / np.linalg.norm(matrix[:3], axis=1, keepdims=True)
    monkeypatch.setattr(index, "_index", Flaky())
    for query, hits in zip(queries, index.search_batch(queries, 10, exclude=ids[:2]), strict=True):
        assert hits.ids == reference(ids, matrix, query, 10, Distance.COSINE, exclude=ids[:2])[0]


# ---------------------------------------------------------------------- persistence


def test_save_load_round_trip(cosine: tuple[HnswIndex, list[str], np.ndarray], tmp_path: Path) -> None:
    index, ids, matrix = cosine
    for entity_id in ids[:30]:
        index.remove(entity_id)
    index.ef_search = 50
    index.save(tmp_path / "graph")
    loaded = HnswIndex.load(tmp_path / "graph")
    assert (len(loaded), loaded.ef_search, loaded.M) == (len(index), 50, index.M)
    assert loaded.distance is Distance.COSINE
    queries = matrix[100:140]
    for a, b in zip(index.search_batch(queries, 10), loaded.search_batch(queries, 10), strict=True):
        assert a.ids == b.ids and np.array_equal(a.scores, b.scores)
    assert ids[0] not in loaded and ids[40] in loaded
    loaded.upsert(ids[0], matrix[0])  # freed labels survive the round trip
    assert loaded._index.element_count == index._index.element_count
    assert loaded.search(matrix[0], 1).ids == [ids[0]]


@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped", "bad_json", "no_graph"])
def test_load_refuses_damaged_files(damage: str, tmp_path: Path) -> None:
    ids, matrix = random_data(200)
    build(Distance.EUCLIDEAN, ids, matrix).save(tmp_path)
    graph, meta = tmp_path / GRAPH_FILE, tmp_path / META_FILE
    if damage == "missing":
        meta.unlink()
    elif damage == "truncated":
        graph.write_bytes(graph.read_bytes()[:1000])
    elif damage == "flipped":
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 0xFF
        graph.write_bytes(bytes(data))
    elif damage == "bad_json":
        meta.write_text(meta.read_text()[:-10])
    else:
        graph.unlink()
    with pytest.raises(ValueError, match="cannot load HNSW index"):
        HnswIndex.load(tmp_path)


# ---------------------------------------------------------------------- recall on hard data


def recall_at_10(index: HnswIndex, base: np.ndarray, queries: np.ndarray) -> float:
    """Recall@10 of held-out queries, truth by numpy."""
    keys = queries @ base.T
    truth = np.argpartition(-keys, 9, axis=1)[:, :10]
    hits = index.search_batch(queries, 10)
    found = [len({f"p{j}" for j in t} & set(h.ids)) for t, h in zip(truth, hits, strict=True)]
    return sum(found) / (10 * len(queries))


@pytest.fixture(scope="module")
def hard() -> tuple[HnswIndex, np.ndarray, np.ndarray, np.ndarray]:
    """20,000 indexed points, 200 held-out tuning queries and 800 held-out check queries."""
    points = clustered(21_000, 128)
    base, tuning, check = points[:20_000], points[20_000:20_200], points[20_200:]
    index = HnswIndex(128, Distance.COSINE, M=16, ef_construction=200, capacity=len(base), num_threads=2)
    index.upsert_many([f"p{i}" for i in range(len(base))], base)
    return index, base, tuning, check


def test_clustered_data_is_hard(hard: tuple[HnswIndex, np.ndarray, np.ndarray, np.ndarray]) -> None:
    index, base, _, check = hard
    index.ef_search = 10
    assert recall_at_10(index, base, check) < 0.9


def test_choose_ef_meets_target_on_fresh_queries(
    hard: tuple[HnswIndex, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    index, base, tuning, check = hard
    ef, recall = choose_ef(index, 0.98, queries=tuning)
    assert recall >= 0.98 and index.ef_search == ef
    assert recall_at_10(index, base, check) >= 0.97  # queries it was not tuned on


def test_choose_ef_on_own_vectors(hard: tuple[HnswIndex, np.ndarray, np.ndarray, np.ndarray]) -> None:
    index, base, _, _ = hard
    ef, recall = choose_ef(index, 0.98)
    assert recall >= 0.98 and index.ef_search == ef >= 10
    # Independent check: other own vectors as queries, each excluding itself, truth by numpy.
    rows = np.random.default_rng(7).choice(len(base), 300, replace=False)
    keys = base[rows] @ base.T
    keys[np.arange(len(rows)), rows] = -np.inf
    truth = np.argpartition(-keys, 9, axis=1)[:, :10]
    found = 0
    for row, t, hits in zip(rows, truth, index.search_batch(base[rows], 11), strict=True):
        answer = [i for i in hits.ids if i != f"p{row}"][:10]  # itself: usually, not surely, first
        found += len({f"p{j}" for j in t} & set(answer))
    assert found / (10 * len(rows)) >= 0.97


def test_measure_recall_agrees_with_numpy(hard: tuple[HnswIndex, np.ndarray, np.ndarray, np.ndarray]) -> None:
    index, base, _, check = hard
    index.ef_search = 24
    assert measure_recall(index, queries=check) == pytest.approx(recall_at_10(index, base, check), abs=1e-9)


def test_choose_m_picks_a_candidate_that_reaches_the_target() -> None:
    points = clustered(4_000, 32, clusters=40, sigma=0.15, seed=3)
    m = choose_m(points, Distance.COSINE, 0.95, candidates=(8, 16), pilot_size=3_000, num_threads=2)
    assert m in (8, 16)
