"""``find_similar`` called in process (as the benchmark and other Python callers do): a raw
vector as a float32 array goes a short way, and answers exactly as the same vector as a list."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fingerprints.auth import ADMIN
from fingerprints.config import Settings
from fingerprints.errors import NotFound, ValidationError
from fingerprints.service import catalog, feature_types, indexing, ingest, similarity
from fingerprints.service.base import Services, open_services
from tests.helpers import ADMIN_TOKEN
from tests.index.data import clustered

DIM = 16
WAIT_S = 120.0
N = 300


@pytest.fixture(params=["cosine", "euclidean", "dot_product"])
def svc(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Services, np.ndarray]]:
    services = open_services(
        Settings(data_dir=tmp_path, admin_token=ADMIN_TOKEN, hnsw_threshold=100, hnsw_m=16, hnsw_ef_search=64)
    )
    try:
        feature_types.register_feature_type(
            services, id="audio", name="Audio", dimension=DIM, applies_to=["track"], distance=request.param
        )
        tracks = [
            {"id": f"t{i:04d}", "name": f"T{i}", "album_id": "al1", "artist_ids": ["ar1"]} for i in range(N)
        ]
        done = catalog.upsert_catalog(
            services,
            artists=[{"id": "ar1", "name": "A"}],
            albums=[{"id": "al1", "name": "Al", "artist_ids": ["ar1"]}],
            tracks=tracks,
        )
        assert not done.errors
        vectors = clustered(N, DIM, clusters=10, seed=4) * np.float32(3)
        features = [
            {"entity_type": "track", "entity_id": f"t{i:04d}", "vector": vectors[i]} for i in range(N)
        ]
        assert ingest.ingest_feature_maps(services, feature_type_id="audio", features=features).ingested == N
        indexing.start(services)
        yield services, vectors
    finally:
        indexing.stop(services)
        services.dbs.dispose()


def _find(services: Services, vector: Any, **extra: Any) -> similarity.SimilarResult:
    return similarity.find_similar(
        services, query={"vector": vector}, feature_type="audio", limit=10, viewer=ADMIN, **extra
    )


def _rows(result: similarity.SimilarResult) -> list[tuple[str, str, float, float | None]]:
    return [(i.entity_type.value, i.entity_id, i.score, i.distance) for i in result.results]


def test_array_and_list_answer_alike_exact_and_hnsw(svc: tuple[Services, np.ndarray]) -> None:
    services, vectors = svc
    queries = clustered(5, DIM, clusters=10, seed=9) * np.float32(2)
    key = indexing.key_index(
        services, similarity.parse_features(services, "audio", None)[0].feature_type, "track"
    )  # type: ignore[arg-type]
    for _ in range(2):  # the exact index or the graph, then the graph the worker builds
        for q in queries:
            as_array, as_list = _find(services, q), _find(services, q.tolist())
            assert _rows(as_array) == _rows(as_list)
            as_double = _find(services, q.astype(np.float64))
            assert [i.entity_id for i in as_array.results] == [i.entity_id for i in as_double.results]
            scores = [i.score for i in as_array.results]
            assert scores == sorted(scores, reverse=True) and len(scores) == 10
        deadline = time.monotonic() + WAIT_S  # a safety net, not a timing assertion
        while key.graph is None and time.monotonic() < deadline:
            time.sleep(0.02)
    assert key.status()["kind"] == "hnsw"


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (np.array([1.0, np.nan] + [0.0] * (DIM - 2), np.float32), "NaN"),
        (np.array([np.inf] + [0.0] * (DIM - 2), np.float32), "NaN"),
        (np.ones(DIM - 1, np.float32), "values"),
        (np.ones((1, DIM), np.float32), "flat"),
    ],
)
def test_bad_arrays_are_rejected(svc: tuple[Services, np.ndarray], vector: np.ndarray, message: str) -> None:
    services, _ = svc
    with pytest.raises(ValidationError, match=message) as caught:
        _find(services, vector)
    assert caught.value.field == "query.vector"


def test_zero_huge_and_tiny_arrays(svc: tuple[Services, np.ndarray]) -> None:
    services, _ = svc
    distance = feature_types.get_feature_type(services, type_id="audio").distance.value
    zero = np.zeros(DIM, np.float32)
    if distance == "cosine":
        with pytest.raises(ValidationError, match="zero"):
            _find(services, zero)
    else:
        assert len(_find(services, zero).results) == 10
    tiny = _find(services, np.full(DIM, 1e-30, np.float32))  # its squared norm underflows to 0
    assert len(tiny.results) == 10
    if distance == "cosine":  # a squared norm beyond float32: still a direction
        huge = _find(services, np.full(DIM, 1e30, np.float32))
        assert _rows(huge) == _rows(_find(services, np.ones(DIM, np.float32)))


def test_the_short_way_answers_as_the_general_path(svc: tuple[Services, np.ndarray]) -> None:
    services, _ = svc
    q = clustered(1, DIM, clusters=10, seed=11)[0]
    short = _find(services, q)
    general = _find(services, q, exclude_ids=["not-a-track"], include_query=False)  # the long way
    assert _rows(short) == _rows(general)
    assert short.target_entity_type is general.target_entity_type
    assert [w.feature_type.id for w in short.features] == [w.feature_type.id for w in general.features]
    for limit, feature_type in ((0, "audio"), (True, "audio"), (10, "nope"), (10, " ")):
        with pytest.raises((ValidationError, NotFound)):
            similarity.find_similar(
                services, query={"vector": q}, feature_type=feature_type, limit=limit, viewer=ADMIN
            )
