"""Aggregation jobs end to end (spec §5.3, §6.2; design Q3, Q10, Q11, §4, §5).

REST: trigger, job status until the end, the stored aggregates against numpy references of
every method, progress on a larger catalog, force, errors, versions and stats. GraphQL: the
``triggerAggregation`` mutation, the ``aggregationJob`` query, the ``aggregationJob``
subscription (in process through ``Schema.subscribe`` and over a real graphql-transport-ws
websocket of ``fingerprints serve``) and ``fingerprintStats``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from starlette.applications import Starlette

from fingerprints.app import create_app
from fingerprints.auth import ADMIN as ADMIN_PRINCIPAL
from fingerprints.config import Settings
from fingerprints.resolvers import subscriptions
from fingerprints.schema import build_schema
from fingerprints.schema.context import Context
from fingerprints.service import aggregation as aggregation_service
from fingerprints.service import catalog as catalog_service
from fingerprints.service import feature_types as types_service
from fingerprints.service import ingest as ingest_service
from fingerprints.service.base import open_services
from tests.helpers import ADMIN, ADMIN_TOKEN, running_client, seed, small_catalog

FINISHED = ("succeeded", "failed", "cancelled")
METHODS = ["average", "weighted_by_duration", "weighted_by_popularity", "max", "min", "centroid"]

# seed()'s catalog plus album al3 by ar2: t7 and t8 weigh nothing (zero duration and popularity,
# so the weighted methods fall back to the mean), t9 never gets a vector.
EXTRA = {
    "albums": [{"id": "al3", "name": "Album Three", "artist_ids": ["ar2"]}],
    "tracks": [
        {"id": "t7", "name": "Seven", "album_id": "al3", "artist_ids": ["ar2"], "duration_ms": 0},
        {"id": "t8", "name": "Eight", "album_id": "al3", "artist_ids": ["ar2"], "duration_ms": 0},
        {"id": "t9", "name": "Nine", "album_id": "al3", "artist_ids": ["ar2"], "duration_ms": 99_000},
    ],
}
WITH_VECTORS = ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"]
# Members with a vector of every aggregate of seed() + EXTRA.
MEMBERS = {
    ("album", "al1"): ["t1", "t2", "t3", "t4"],
    ("album", "al2"): ["t5", "t6"],
    ("album", "al3"): ["t7", "t8"],
    ("artist", "ar1"): ["t1", "t2", "t3", "t4"],
    ("artist", "ar2"): ["t2", "t7", "t8"],  # featured on t2
    ("artist", "ar3"): ["t5", "t6"],
    ("playlist", "p1"): ["t1", "t5", "t6"],
}
SEED_AGGREGATES = 6  # al1, al2, ar1, ar2, ar3, p1: the aggregates of seed()'s catalog

JOB_FIELDS = "id status featureTypeId entityTypes force progress { processed total percent } " + (
    "createdAt startedAt finishedAt errors"
)
TRIGGER = f"""
mutation Trigger($input: TriggerAggregationInput) {{ triggerAggregation(input: $input) {{ {JOB_FIELDS} }} }}
"""
JOB = f"query Job($id: ID!) {{ aggregationJob(id: $id) {{ {JOB_FIELDS} }} }}"
SUBSCRIBE = (
    "subscription Job($id: ID!) "
    "{ aggregationJob(id: $id) { id status progress { processed total percent } } }"
)
STATS = """
{ fingerprintStats {
    coverage { featureType entityType total withFeature outdated }
    storageBytes indexStatus lastAggregation
} }
"""


# ------------------------------------------------------------------ helpers


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=data_dir, admin_token=ADMIN_TOKEN, aggregation_interval=0, **overrides)


@asynccontextmanager
async def app_client(data_dir: Path, **overrides: Any) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(settings_for(data_dir, **overrides))
    async with running_client(app) as client:
        yield app, client


async def gql(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None, **kw: Any
) -> Any:
    r = await client.post("/graphql", json={"query": query, "variables": variables or {}}, **kw)
    assert r.status_code == 200, r.text
    return r.json()


async def ingest(
    client: httpx.AsyncClient,
    by_track: dict[str, np.ndarray],
    *,
    type_id: str = "audio",
    version: int | None = None,
) -> None:
    body: dict[str, Any] = {
        "feature_type_id": type_id,
        "features": [
            {"entity_type": "track", "entity_id": t, "vector": np.asarray(v).tolist()}
            for t, v in by_track.items()
        ],
    }
    if version is not None:
        body["version"] = version
    r = await client.post("/v1/admin/fingerprints/ingest", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {"ingested": len(by_track), "errors": []}, r.text


async def trigger(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/admin/fingerprints/aggregate", json=body, headers=ADMIN)
    assert r.status_code in (200, 202), r.text
    started = r.json()
    assert set(started) >= {"job_id", "status", "estimated_entities"}, started
    assert started["status"] == "queued", started
    return started


async def wait_job(
    client: httpx.AsyncClient, job_id: str, *, timeout: float = 60, pause: float = 0.01
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll the job until it has ended: (final status, every status seen)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get(f"/v1/admin/fingerprints/aggregate/{job_id}", headers=ADMIN)
        assert r.status_code == 200, r.text
        job = r.json()
        seen.append(job)
        if job["status"] in FINISHED:
            return job, seen
        assert time.monotonic() < deadline, f"job did not finish in {timeout}s: {job}"
        await asyncio.sleep(pause)


async def run_job(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    started = await trigger(client, **body)
    job, _ = await wait_job(client, started["job_id"])
    assert job["status"] == "succeeded", job
    assert job["progress"]["processed"] == job["progress"]["total"] == started["estimated_entities"], job
    return job


async def stored(
    client: httpx.AsyncClient, kind: str, entity_id: str, type_id: str = "audio"
) -> dict[str, Any]:
    r = await client.get(f"/v1/content/fingerprint/{kind}/{entity_id}", headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()["fingerprint"][type_id]  # type: ignore[no-any-return]


def unit_rows(x: np.ndarray, distance: str) -> np.ndarray:
    """The members as the methods see them: L2-normalised under cosine, as stored otherwise."""
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    if distance == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return x


def geometric_median(x: np.ndarray) -> np.ndarray:
    """Weiszfeld's iteration from the mean, in float64, run to convergence."""
    y = x.mean(axis=0)
    for _ in range(100_000):
        d = np.linalg.norm(x - y, axis=1)
        if (d < 1e-12).any():  # at a member: with these inputs only when all members coincide
            break
        w = 1.0 / d
        nxt = (w[:, None] * x).sum(axis=0) / w.sum()
        done = np.linalg.norm(nxt - y) < 1e-14
        y = nxt
        if done:
            break
    return y


def distance_sum(x: np.ndarray, y: np.ndarray) -> float:
    """What a geometric median minimises."""
    return float(np.linalg.norm(x - y, axis=1).sum())


def reference(method: str, vectors: np.ndarray, weights: np.ndarray, distance: str) -> np.ndarray:
    """One aggregate computed the plain way (mirrors fingerprints/aggregation/methods.py)."""
    x = unit_rows(vectors, distance)
    w = np.asarray(weights, dtype=np.float64)
    if method == "average" or (method.startswith("weighted") and w.sum() == 0):
        return x.mean(axis=0)
    if method.startswith("weighted"):
        return (x * (w / w.sum())[:, None]).sum(axis=0)
    if method == "max":
        return x.max(axis=0)
    if method == "min":
        return x.min(axis=0)
    assert method == "centroid"
    return geometric_median(x)


def track_weights() -> dict[str, tuple[int, int]]:
    """track id -> (duration_ms, popularity) of seed()'s catalog plus EXTRA."""
    tracks = small_catalog()["tracks"] + EXTRA["tracks"]
    return {t["id"]: (t.get("duration_ms", 0), t.get("popularity", 0)) for t in tracks}


def random_vectors(ids: list[str], dimension: int, seed_: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed_)
    x = rng.standard_normal((len(ids), dimension)) + np.linspace(-1, 1, dimension)
    x[0] *= 3  # an outlier of another length: normalising matters, and the median is not the mean
    return {i: v.astype(np.float32) for i, v in zip(ids, x, strict=True)}


def big_catalog(n_tracks: int, n_albums: int, n_artists: int) -> dict[str, list[dict[str, Any]]]:
    """Album i by artist i % n_artists; track i on album i % n_albums."""
    return {
        "artists": [{"id": f"ar{i:05d}", "name": f"Artist {i}"} for i in range(n_artists)],
        "albums": [
            {"id": f"al{i:05d}", "name": f"Album {i}", "artist_ids": [f"ar{i % n_artists:05d}"]}
            for i in range(n_albums)
        ],
        "tracks": [
            {
                "id": f"t{i:06d}",
                "name": f"Track {i}",
                "album_id": f"al{i % n_albums:05d}",
                "artist_ids": [f"ar{(i % n_albums) % n_artists:05d}"],
                "duration_ms": 60_000 + (i * 7919) % 300_000,
                "popularity": (i * 31) % 101,
            }
            for i in range(n_tracks)
        ],
    }


BIG = {"n_tracks": 6000, "n_albums": 3000, "n_artists": 300}


async def load_big(client: httpx.AsyncClient, *, dimension: int = 8, method: str = "average") -> np.ndarray:
    """6,000 tracks in 3,000 albums by 300 artists, one vector each, through REST."""
    demo = big_catalog(**BIG)
    r = await client.post("/v1/admin/catalog", json=demo, headers=ADMIN)
    assert r.status_code == 200 and r.json()["errors"] == [], r.text[:500]
    body = {"id": "audio", "name": "Audio", "dimension": dimension, "aggregation_method": method}
    r = await client.post("/v1/admin/fingerprints/types", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    x = np.random.default_rng(3).standard_normal((BIG["n_tracks"], dimension)).astype(np.float32)
    r = await client.post(
        "/v1/admin/fingerprints/ingest",
        content=orjson.dumps(
            {
                "feature_type_id": "audio",
                "features": [
                    {"entity_type": "track", "entity_id": t["id"], "vector": v}
                    for t, v in zip(demo["tracks"], x, strict=True)
                ],
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        ),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert r.status_code == 200 and r.json()["ingested"] == BIG["n_tracks"], r.text[:500]
    return x


# ------------------------------------------------------------------ REST: jobs and aggregates


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("method", METHODS)
async def test_job_over_rest_stores_the_reference_aggregate_of_each_method(
    tmp_path: Path, method: str, distance: str
) -> None:
    async with app_client(tmp_path / "data") as (_, client):
        await seed(client, dimension=6, aggregation_method=method, distance=distance)
        r = await client.post("/v1/admin/catalog", json=EXTRA, headers=ADMIN)
        assert r.status_code == 200 and r.json()["errors"] == [], r.text
        by_track = random_vectors(WITH_VECTORS, 6, seed_=METHODS.index(method))
        await ingest(client, by_track)

        before = int(time.time())
        started = await trigger(client)  # the spec's body is all optional
        assert started["estimated_entities"] == len(MEMBERS)
        job, _ = await wait_job(client, started["job_id"])
        after = int(time.time())
        assert job["job_id"] == started["job_id"]
        assert job["status"] == "succeeded", job
        assert job["progress"] == {"processed": len(MEMBERS), "total": len(MEMBERS), "percent": 100.0}
        assert before <= job["started_at"] <= job["finished_at"] <= after
        assert job["errors"] == []

        weights = track_weights()
        column = {"weighted_by_duration": 0, "weighted_by_popularity": 1}.get(method, 0)
        for (kind, entity_id), members in MEMBERS.items():
            fp = await stored(client, kind, entity_id)
            assert fp["version"] == 1
            assert fp["metadata"] == {"track_count": len(members), "method": method}
            x = np.stack([by_track[t] for t in members])
            w = np.array([weights[t][column] for t in members], dtype=np.float64)
            want = reference(method, x, w, distance)
            got = np.array(fp["vector"], dtype=np.float64)
            if method == "centroid":
                # An iterative answer: close to the converged median, and no worse a median.
                assert np.allclose(got, want, atol=1e-4), (kind, entity_id, got, want)
                ux = unit_rows(x, distance)
                assert distance_sum(ux, got) <= distance_sum(ux, want) + 1e-6
            else:
                assert np.allclose(got, want, atol=1e-6), (kind, entity_id, got, want)
        # t9 never had a vector: al3 is made of t7 and t8 only.
        assert (await client.get("/v1/content/fingerprint/track/t9", headers=ADMIN)).status_code == 404


async def test_dot_product_types_aggregate_raw_vectors(tmp_path: Path) -> None:
    async with app_client(tmp_path / "data") as (_, client):
        await seed(client, aggregation_method="average", distance="dot_product")
        by_track = random_vectors(WITH_VECTORS[:6], 4)
        await ingest(client, by_track)
        await run_job(client)
        fp = await stored(client, "album", "al1")
        want = np.stack([by_track[t] for t in ("t1", "t2", "t3", "t4")]).astype(np.float64).mean(axis=0)
        assert np.allclose(fp["vector"], want, atol=1e-6)


async def test_progress_moves_on_a_larger_catalog(tmp_path: Path) -> None:
    async with app_client(tmp_path / "data") as (_, client):
        tracks = unit_rows(await load_big(client), "cosine")
        total = BIG["n_albums"] + BIG["n_artists"]
        started = await trigger(client, feature_type_id="audio", entity_types=["album", "artist"], force=True)
        assert started["estimated_entities"] == total
        job, seen = await wait_job(client, started["job_id"], pause=0)
        assert job["status"] == "succeeded", job
        assert job["progress"] == {"processed": total, "total": total, "percent": 100.0}

        processed = [s["progress"]["processed"] for s in seen]
        assert processed == sorted(processed), processed
        assert any(0 < p < total for p in processed), f"no intermediate progress seen: {processed}"
        for s in seen:
            p = s["progress"]
            assert p["total"] == total
            assert p["percent"] == round(100 * p["processed"] / total, 1)
            assert s["status"] in ("queued", "running", "succeeded"), s
            if s["status"] == "running":
                assert s["started_at"] is not None and s["finished_at"] is None
        # Progress is recorded after each chunk of CHUNK_OWNERS aggregates of one entity type.
        chunk = aggregation_service.CHUNK_OWNERS
        boundaries = {0, total} | set(range(chunk, BIG["n_albums"], chunk)) | {BIG["n_albums"]}
        assert set(processed) <= boundaries, processed

        # The stored aggregates are the means of their tracks' unit vectors.
        for album in (0, 1234, 2999):
            fp = await stored(client, "album", f"al{album:05d}")
            want = tracks[[album, album + BIG["n_albums"]]].mean(axis=0)
            assert np.allclose(fp["vector"], want, atol=1e-6)
            assert fp["metadata"] == {"track_count": 2, "method": "average"}


async def test_writes_during_a_job_are_never_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A track re-ingested while its album is being recomputed: when the job ends the album is
    either recomputed from the new vector or still marked stale, and the next job settles it."""
    monkeypatch.setattr(aggregation_service, "CHUNK_OWNERS", 100)
    data = tmp_path / "data"
    async with app_client(data) as (_, client):
        x = await load_big(client)
        started = await trigger(client, entity_types=["album"], force=True)
        # Wait until the job is under way, then change the first and the last album's tracks.
        deadline = time.monotonic() + 30
        while True:
            r = await client.get(f"/v1/admin/fingerprints/aggregate/{started['job_id']}", headers=ADMIN)
            job = r.json()
            if job["progress"]["processed"] > 0 or job["status"] in FINISHED:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0)
        n_albums = BIG["n_albums"]
        changed = {0: ["t000000", f"t{n_albums:06d}"], n_albums - 1: [f"t{n_albums - 1:06d}"]}
        new = {t: -x[int(t[1:])] + 0.25 for ts in changed.values() for t in ts}
        await ingest(client, new)
        job, _ = await wait_job(client, started["job_id"])
        assert job["status"] == "succeeded", job

        def expected(album: int) -> np.ndarray:
            rows = [album, album + n_albums]
            vectors = [new.get(f"t{i:06d}", x[i]) for i in rows]
            return unit_rows(np.stack(vectors), "cosine").mean(axis=0)

        with closing(sqlite3.connect(data / "catalog.db")) as conn:
            stale = {
                r[0]
                for r in conn.execute("SELECT entity_id FROM fingerprints_stale WHERE entity_type='album'")
            }
        for album in changed:
            fp = await stored(client, "album", f"al{album:05d}")
            fresh = np.allclose(fp["vector"], expected(album), atol=1e-6)
            assert fresh or f"al{album:05d}" in stale, (album, stale)

        await run_job(client, entity_types=["album"])
        for album in changed:
            fp = await stored(client, "album", f"al{album:05d}")
            assert np.allclose(fp["vector"], expected(album), atol=1e-6)


async def test_force_recomputes_everything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data) as (_, client):
        await seed(client)
        by_track = random_vectors(WITH_VECTORS[:6], 4)
        await ingest(client, by_track)
        await run_job(client)

        # Nothing is stale: a plain job has nothing to do and ends at once.
        started = await trigger(client)
        assert started["estimated_entities"] == 0
        job, _ = await wait_job(client, started["job_id"])
        assert job["status"] == "succeeded"
        assert job["progress"] == {"processed": 0, "total": 0, "percent": 100.0}

        # An aggregate changed behind the service's back is not stale, so only force repairs it.
        with closing(sqlite3.connect(data / "catalog.db")) as conn, conn:
            conn.execute(
                "UPDATE feature_maps SET vector = ?, metadata = '{}' WHERE entity_type = 'album' "
                "AND entity_id = 'al1'",
                (np.zeros(4, "<f4").tobytes(),),
            )
        await run_job(client)
        assert (await stored(client, "album", "al1"))["metadata"] == {}

        job = await run_job(client, force=True)
        assert job["progress"]["total"] == SEED_AGGREGATES
        fp = await stored(client, "album", "al1")
        want = unit_rows(np.stack([by_track[t] for t in ("t1", "t2", "t3", "t4")]), "cosine").mean(axis=0)
        assert np.allclose(fp["vector"], want, atol=1e-6)
        assert fp["metadata"] == {"track_count": 4, "method": "average"}

        # A new aggregation method applies to the aggregates once they are recomputed.
        r = await client.put(
            "/v1/admin/fingerprints/types/audio", json={"aggregation_method": "max"}, headers=ADMIN
        )
        assert r.status_code == 200, r.text
        job = await run_job(client, force=True, entity_types=["album"])
        assert job["progress"]["total"] == 2
        fp = await stored(client, "album", "al1")
        assert fp["metadata"] == {"track_count": 4, "method": "max"}
        want = unit_rows(np.stack([by_track[t] for t in ("t1", "t2", "t3", "t4")]), "cosine").max(axis=0)
        assert np.allclose(fp["vector"], want, atol=1e-6)
        assert (await stored(client, "artist", "ar1"))["metadata"]["method"] == "average"


async def test_forced_job_of_one_type_and_entity_type_counts_exactly_those(tmp_path: Path) -> None:
    async with app_client(tmp_path / "data") as (_, client):
        await seed(client)
        body = {"id": "mood", "name": "Mood", "dimension": 3, "applies_to": ["track", "album", "artist"]}
        r = await client.post("/v1/admin/fingerprints/types", json=body, headers=ADMIN)
        assert r.status_code == 201, r.text
        await ingest(client, random_vectors(WITH_VECTORS[:6], 4))
        await ingest(client, random_vectors(WITH_VECTORS[:6], 3), type_id="mood")
        # Stale: audio al1, al2, ar1-3, p1; mood al1, al2, ar1-3 (mood has no playlists).
        assert (await trigger(client, force=False, entity_types=["album", "artist", "playlist"]))[
            "estimated_entities"
        ] == 11
        job, _ = await wait_job(client, (await trigger(client, feature_type_id="mood", force=True))["job_id"])
        assert job["feature_type_id"] == "mood"
        assert job["entity_types"] == ["album", "artist", "playlist"]
        assert job["force"] is True
        assert job["progress"]["total"] == 5  # mood does not apply to playlists
        started = await trigger(client, feature_type_id="audio", entity_types=["playlist"], force=True)
        assert started["estimated_entities"] == 1


async def test_trigger_and_status_errors(tmp_path: Path) -> None:
    async with app_client(tmp_path / "data") as (_, client):
        await seed(client)
        r = await client.post(
            "/v1/admin/fingerprints/types",
            json={"id": "raw", "name": "Raw", "dimension": 4, "aggregation_method": "none"},
            headers=ADMIN,
        )
        assert r.status_code == 201, r.text
        url = "/v1/admin/fingerprints/aggregate"

        r = await client.post(url, json={"feature_type_id": "nope"}, headers=ADMIN)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "NOT_FOUND"
        for entity_types in (["track"], ["album", "track"], [], ["song"]):
            r = await client.post(url, json={"entity_types": entity_types}, headers=ADMIN)
            assert r.status_code == 400, (entity_types, r.text)
        r = await client.post(url, json={"feature_type_id": "raw"}, headers=ADMIN)
        assert r.status_code == 400, r.text  # method none: nothing to aggregate
        r = await client.post(url, json={"force": "yes please"}, headers=ADMIN)
        assert r.status_code == 400, r.text
        r = await client.post(url, json={"bogus": 1}, headers=ADMIN)
        assert r.status_code == 400, r.text

        r = await client.post(url, json={})
        assert r.status_code == 401, r.text
        r = await client.post(url, json={}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 403, r.text
        job = (await client.post(url, json={}, headers=ADMIN)).json()
        r = await client.get(f"{url}/{job['job_id']}")
        assert r.status_code == 401, r.text
        r = await client.get(f"{url}/agg_doesnotexist", headers=ADMIN)
        assert r.status_code == 404, r.text
        r = await client.get("/v1/admin/fingerprints/stats")
        assert r.status_code == 401, r.text
        # None of the refused triggers left a job behind.
        with closing(sqlite3.connect(tmp_path / "data" / "catalog.db")) as conn:
            assert conn.execute("SELECT count(*) FROM fingerprints_jobs").fetchone() == (1,)


async def test_a_failing_part_fails_the_job_and_the_rest_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gather = aggregation_service._gather

    def failing_for_artists(svc: Any, feature_type: Any, entity_type: Any, owner_ids: Any, **kw: Any) -> Any:
        if entity_type.value == "artist":
            raise RuntimeError("boom")
        return gather(svc, feature_type, entity_type, owner_ids, **kw)

    monkeypatch.setattr(aggregation_service, "_gather", failing_for_artists)
    data = tmp_path / "data"
    async with app_client(data) as (_, client):
        await seed(client)
        await ingest(client, random_vectors(WITH_VECTORS[:6], 4))
        started = await trigger(client)
        job, _ = await wait_job(client, started["job_id"])
        assert job["status"] == "failed", job
        assert job["errors"] == ["audio/artist: RuntimeError: boom"]
        assert job["progress"]["processed"] == job["progress"]["total"] == SEED_AGGREGATES
        assert job["finished_at"] is not None
        assert (await stored(client, "album", "al1"))["metadata"]["track_count"] == 4
        assert (await stored(client, "playlist", "p1"))["metadata"]["track_count"] == 3
        r = await client.get("/v1/content/fingerprint/artist/ar1", headers=ADMIN)
        assert r.status_code == 404
        # The artists stay stale for the next job; a failed job is not a last aggregation.
        with closing(sqlite3.connect(data / "catalog.db")) as conn:
            left = conn.execute("SELECT entity_type, entity_id FROM fingerprints_stale ORDER BY 2").fetchall()
        assert left == [("artist", "ar1"), ("artist", "ar2"), ("artist", "ar3")]
        stats = (await client.get("/v1/admin/fingerprints/stats", headers=ADMIN)).json()
        assert stats["last_aggregation"] is None

        monkeypatch.setattr(aggregation_service, "_gather", gather)
        job = await run_job(client)
        assert job["progress"]["total"] == 3
        assert (await stored(client, "artist", "ar1"))["metadata"]["track_count"] == 4


def test_queued_jobs_run_in_the_order_they_were_queued(tmp_path: Path) -> None:
    """claim_next_job takes "the oldest queued job": jobs queued one after the other (here
    within the same second or two) run in that order."""
    services = open_services(settings_for(tmp_path / "data"))
    try:
        types_service.register_feature_type(services, id="audio", name="Audio", dimension=4)
        queued = [
            aggregation_service.trigger_aggregation(services, entity_types=[kind], force=True).id
            for kind in ("album", "artist", "playlist", "album", "artist", "playlist", "album", "artist")
        ]
        claimed = []
        while (job_id := aggregation_service.claim_next_job(services)) is not None:
            claimed.append(job_id)
            assert aggregation_service.run_job(services, job_id).status == "succeeded"
    finally:
        services.dbs.dispose()
    assert claimed == queued


# ------------------------------------------------------------------ versions (Q10) and stats


async def test_aggregates_keep_the_oldest_member_version(tmp_path: Path) -> None:
    async with app_client(tmp_path / "data") as (_, client):
        await seed(client)
        v1 = random_vectors(WITH_VECTORS[:6], 4)
        await ingest(client, v1)
        await run_job(client)
        assert (await stored(client, "album", "al1"))["version"] == 1

        r = await client.post("/v1/admin/fingerprints/types/audio/bump-version", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["new_version"] == 2
        assert r.json()["outdated_count"] == 6 + SEED_AGGREGATES

        await run_job(client, entity_types=["album"], force=True)
        fp = await stored(client, "album", "al1")
        assert fp["version"] == 1 and fp["outdated"] is True
        stats = (await client.get("/v1/admin/fingerprints/stats", headers=ADMIN)).json()
        assert stats["feature_types"]["audio"]["album"] == {"total": 2, "with_feature": 2, "outdated": 2}

        # Three of al1's four tracks at version 2: still built from a version-1 map.
        v2 = {t: v1[t] + 1 for t in ("t1", "t2", "t3", "t4")}
        await ingest(client, {t: v2[t] for t in ("t1", "t2", "t3")}, version=2)
        await run_job(client)
        assert (await stored(client, "album", "al1"))["version"] == 1

        await ingest(client, {"t4": v2["t4"]}, version=2)
        await run_job(client)
        fp = await stored(client, "album", "al1")
        assert fp["version"] == 2 and fp["outdated"] is False
        want = unit_rows(np.stack([v2[t] for t in ("t1", "t2", "t3", "t4")]), "cosine").mean(axis=0)
        assert np.allclose(fp["vector"], want, atol=1e-6)
        assert (await stored(client, "artist", "ar1"))["version"] == 2
        assert (await stored(client, "artist", "ar2"))["version"] == 2  # only t2
        assert (await stored(client, "playlist", "p1"))["version"] == 1  # t5, t6 still version 1
        assert (await stored(client, "album", "al2"))["version"] == 1

        stats = (await client.get("/v1/admin/fingerprints/stats", headers=ADMIN)).json()
        audio = stats["feature_types"]["audio"]
        assert audio["track"] == {"total": 6, "with_feature": 6, "outdated": 2}
        assert audio["album"] == {"total": 2, "with_feature": 2, "outdated": 1}
        assert audio["artist"] == {"total": 3, "with_feature": 3, "outdated": 1}
        assert audio["playlist"] == {"total": 1, "with_feature": 1, "outdated": 1}


def counted_stats(data_dir: Path) -> dict[str, Any]:
    """The stats of spec §6.2, counted here with sqlite3."""
    with (
        closing(sqlite3.connect(data_dir / "catalog.db")) as cat,
        closing(sqlite3.connect(data_dir / "user.db")) as usr,
    ):

        def one(conn: sqlite3.Connection, sql: str, *args: Any) -> int:
            return int(conn.execute(sql, args).fetchone()[0])

        totals = {
            "track": one(cat, "SELECT count(*) FROM tracks"),
            "album": one(cat, "SELECT count(*) FROM albums"),
            "artist": one(cat, "SELECT count(*) FROM artists"),
            "playlist": one(usr, "SELECT count(*) FROM user_playlist"),
        }
        feature_types: dict[str, Any] = {}
        for type_id, version, applies in cat.execute(
            "SELECT id, current_version, applies_to FROM feature_map_types"
        ).fetchall():
            kinds = orjson.loads(applies) if applies else list(totals)
            per_type = {}
            for kind in kinds:
                if kind == "playlist":
                    conn, sql = usr, "SELECT count(*) FROM playlist_feature_maps WHERE feature_type_id = ?"
                    args: tuple[Any, ...] = (type_id,)
                else:
                    conn = cat
                    sql = "SELECT count(*) FROM feature_maps WHERE feature_type_id = ? AND entity_type = ?"
                    args = (type_id, kind)
                per_type[kind] = {
                    "total": totals[kind],
                    "with_feature": one(conn, sql, *args),
                    "outdated": one(conn, sql + " AND version < ?", *args, version),
                }
            feature_types[type_id] = per_type
        last = cat.execute(
            "SELECT max(finished_at) FROM fingerprints_jobs WHERE status = 'succeeded'"
        ).fetchone()[0]
    return {"feature_types": feature_types, "last_aggregation": last}


async def test_stats_match_the_databases_over_rest_and_graphql(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with app_client(data) as (_, client):
        await seed(client)
        r = await client.post("/v1/admin/catalog", json=EXTRA, headers=ADMIN)
        assert r.status_code == 200 and r.json()["errors"] == [], r.text
        for body in (
            {
                "id": "mood",
                "name": "Mood",
                "dimension": 3,
                "aggregation_method": "max",
                "applies_to": ["track", "album"],
            },
            {
                "id": "raw",
                "name": "Raw",
                "dimension": 2,
                "aggregation_method": "none",
                "applies_to": ["track"],
            },
        ):
            r = await client.post("/v1/admin/fingerprints/types", json=body, headers=ADMIN)
            assert r.status_code == 201, r.text
        stats = (await client.get("/v1/admin/fingerprints/stats", headers=ADMIN)).json()
        assert stats["last_aggregation"] is None
        assert stats["feature_types"] == counted_stats(data)["feature_types"]

        await ingest(client, random_vectors(WITH_VECTORS, 4))
        await ingest(client, random_vectors(["t1", "t2", "t3"], 3), type_id="mood")
        await ingest(client, random_vectors(["t1"], 2), type_id="raw")
        before = int(time.time())
        job = await run_job(client)
        r = await client.post("/v1/admin/fingerprints/types/audio/bump-version", headers=ADMIN)
        assert r.status_code == 200, r.text
        await ingest(client, random_vectors(["t1", "t5"], 4, seed_=8), version=2)
        await ingest(client, random_vectors(["t6"], 4, seed_=9), version=1)
        await run_job(client, entity_types=["playlist"])

        r = await client.get("/v1/admin/fingerprints/stats", headers=ADMIN)
        assert r.status_code == 200, r.text
        stats = r.json()
        counted = counted_stats(data)
        assert stats["feature_types"] == counted["feature_types"]
        assert stats["last_aggregation"] == counted["last_aggregation"] >= job["finished_at"] >= before
        assert stats["storage_bytes"] > 0
        assert stats["index_status"] == "ready"
        # A few numbers spelled out, so the sqlite3 counting above is itself checked.
        assert stats["feature_types"]["audio"]["track"] == {"total": 9, "with_feature": 8, "outdated": 6}
        assert stats["feature_types"]["audio"]["album"] == {"total": 3, "with_feature": 3, "outdated": 3}
        assert stats["feature_types"]["audio"]["playlist"] == {"total": 1, "with_feature": 1, "outdated": 1}
        assert stats["feature_types"]["mood"] == {
            "track": {"total": 9, "with_feature": 3, "outdated": 0},
            "album": {"total": 3, "with_feature": 1, "outdated": 0},
        }
        assert stats["feature_types"]["raw"] == {"track": {"total": 9, "with_feature": 1, "outdated": 0}}

        body = await gql(client, STATS, headers=ADMIN)
        assert "errors" not in body, body
        got = body["data"]["fingerprintStats"]
        coverage: dict[str, dict[str, Any]] = {}
        for c in got["coverage"]:
            coverage.setdefault(c["featureType"], {})[c["entityType"].lower()] = {
                "total": c["total"],
                "with_feature": c["withFeature"],
                "outdated": c["outdated"],
            }
        assert coverage == stats["feature_types"]
        assert got["lastAggregation"] == stats["last_aggregation"]
        assert got["indexStatus"] == stats["index_status"]
        assert got["storageBytes"] > 0


# ------------------------------------------------------------------ GraphQL


async def test_graphql_trigger_and_job_query(tmp_path: Path) -> None:
    async with app_client(tmp_path / "data") as (_, client):
        await seed(client)
        by_track = random_vectors(WITH_VECTORS[:6], 4)
        await ingest(client, by_track)

        body = await gql(
            client,
            TRIGGER,
            {"input": {"featureTypeId": "audio", "entityTypes": ["ALBUM", "ARTIST"]}},
            headers=ADMIN,
        )
        assert "errors" not in body, body
        queued = body["data"]["triggerAggregation"]
        assert queued["status"] == "queued"
        assert queued["featureTypeId"] == "audio"
        assert queued["entityTypes"] == ["ALBUM", "ARTIST"]
        assert queued["force"] is False
        assert queued["progress"]["total"] == 5  # al1, al2, ar1, ar2, ar3
        assert queued["startedAt"] is None and queued["finishedAt"] is None

        deadline = time.monotonic() + 30
        while True:
            body = await gql(client, JOB, {"id": queued["id"]}, headers=ADMIN)
            assert "errors" not in body, body
            job = body["data"]["aggregationJob"]
            if job["status"] in FINISHED:
                break
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.01)
        assert job["status"] == "succeeded"
        assert job["progress"] == {"processed": 5, "total": 5, "percent": 100.0}
        assert job["startedAt"] <= job["finishedAt"]
        assert job["errors"] == []
        rest = (await client.get(f"/v1/admin/fingerprints/aggregate/{queued['id']}", headers=ADMIN)).json()
        assert (rest["status"], rest["progress"], rest["started_at"], rest["finished_at"]) == (
            job["status"],
            job["progress"],
            job["startedAt"],
            job["finishedAt"],
        )
        # Playlists were not part of it: p1 is still stale and has no aggregate.
        r = await client.get("/v1/content/fingerprint/playlist/p1", headers=ADMIN)
        assert r.status_code == 404
        want = unit_rows(np.stack([by_track[t] for t in ("t5", "t6")]), "cosine").mean(axis=0)
        assert np.allclose((await stored(client, "album", "al2"))["vector"], want, atol=1e-6)

        # Without input: every type, every aggregate entity type, not forced.
        body = await gql(
            client, "mutation { triggerAggregation { status entityTypes progress { total } } }", headers=ADMIN
        )
        assert body["data"]["triggerAggregation"] == {
            "status": "queued",
            "entityTypes": ["ALBUM", "ARTIST", "PLAYLIST"],
            "progress": {"total": 1},
        }


async def test_graphql_trigger_errors(tmp_path: Path) -> None:
    async with app_client(tmp_path / "data") as (_, client):
        await seed(client)
        cases = [
            ({"input": {"featureTypeId": "nope"}}, ADMIN, "NOT_FOUND"),
            ({"input": {"entityTypes": ["TRACK"]}}, ADMIN, "BAD_USER_INPUT"),
            ({"input": {}}, {}, "UNAUTHENTICATED"),
            ({"input": {}}, {"Authorization": "Bearer wrong"}, "FORBIDDEN"),
        ]
        for variables, headers, code in cases:
            body = await gql(client, TRIGGER, variables, headers=headers)
            assert body.get("data") is None, body
            assert [e["extensions"]["code"] for e in body["errors"]] == [code], body
        body = await gql(client, JOB, {"id": "agg_nope"}, headers=ADMIN)
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND", body


async def test_subscription_streams_progress_until_the_job_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks and a quick poll: several progress states to stream within a short job.
    monkeypatch.setattr(aggregation_service, "CHUNK_OWNERS", 150)
    monkeypatch.setattr(subscriptions, "POLL_SECONDS", 0.005)
    settings = settings_for(tmp_path / "data")
    app = create_app(settings)
    async with running_client(app) as client:
        await load_big(client)
        services = app.state.services
        schema = build_schema(settings)
        context = Context(services=services, principal=ADMIN_PRINCIPAL, request=None, response=None)

        total = BIG["n_albums"] + BIG["n_artists"]
        started = await trigger(client, force=True)
        result = await schema.subscribe(
            SUBSCRIBE, variable_values={"id": started["job_id"]}, context_value=context
        )
        events = []
        async for item in result:  # type: ignore[union-attr]
            assert item.errors is None, item.errors
            events.append(item.data["aggregationJob"])
        assert events, "no event"
        assert events[-1] == {
            "id": started["job_id"],
            "status": "succeeded",
            "progress": {"processed": total, "total": total, "percent": 100.0},
        }
        assert events[0]["status"] in ("queued", "running")
        processed = [e["progress"]["processed"] for e in events]
        assert processed == sorted(processed)
        assert any(0 < p < total for p in processed), processed
        states = [(e["status"], e["progress"]["processed"]) for e in events]
        assert len(states) == len(set(states)), f"an unchanged state was sent again: {states}"

        # A finished job: its final state, once.
        result = await schema.subscribe(
            SUBSCRIBE, variable_values={"id": started["job_id"]}, context_value=context
        )
        statuses = [item.data["aggregationJob"]["status"] async for item in result]  # type: ignore[union-attr]
        assert statuses == ["succeeded"]

        # An unknown job: one NOT_FOUND error.
        result = await schema.subscribe(SUBSCRIBE, variable_values={"id": "agg_nope"}, context_value=context)
        items = [item async for item in result]  # type: ignore[union-attr]
        assert len(items) == 1 and items[0].errors, items
        assert items[0].errors[0].extensions["code"] == "NOT_FOUND"


# ------------------------------------------------------------------ a real server and websocket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(data_dir: Path, **env_settings: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``fingerprints serve`` in a subprocess on a free port, ready; stopped (or killed) at the end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINGERPRINTS_")}
    env |= {"FINGERPRINTS_ADMIN_TOKEN": ADMIN_TOKEN, "FINGERPRINTS_AGGREGATION_INTERVAL": "0"}
    env |= {f"FINGERPRINTS_{k.upper()}": v for k, v in env_settings.items()}
    log = open(data_dir.parent / f"serve-{port}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "fingerprints", "serve", "--data-dir", str(data_dir), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (data_dir.parent / f"serve-{port}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.05)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def seed_in_process(
    data_dir: Path,
    *,
    n_tracks: int,
    n_albums: int,
    n_artists: int,
    dimension: int,
    method: str,
    playlists: int = 0,
    settings: Settings | None = None,
) -> None:
    """A big catalog, one feature type and a vector per track, through the service layer
    (on ``settings``' databases when given, else on SQLite files in ``data_dir``)."""
    services = open_services(settings or settings_for(data_dir))
    try:
        step = services.settings.max_batch_items
        demo = big_catalog(n_tracks, n_albums, n_artists)
        for kind in ("artists", "albums", "tracks"):
            for start in range(0, len(demo[kind]), step):
                result = catalog_service.upsert_catalog(services, **{kind: demo[kind][start : start + step]})
                assert result.errors == []
        types_service.register_feature_type(
            services, id="audio", name="Audio", dimension=dimension, aggregation_method=method
        )
        x = np.random.default_rng(5).standard_normal((n_tracks, dimension)).astype(np.float32)
        for start in range(0, n_tracks, step):
            features = [
                {"entity_type": "track", "entity_id": f"t{i:06d}", "vector": x[i]}
                for i in range(start, min(start + step, n_tracks))
            ]
            result = ingest_service.ingest_feature_maps(services, feature_type_id="audio", features=features)
            assert result.errors == []
        rng = np.random.default_rng(6)
        for p in range(playlists):
            picks = rng.choice(n_tracks, size=25, replace=False)
            catalog_service.upsert_playlist(
                services, id=f"pl{p:03d}", user_id=p % 3, name="P", track_ids=[f"t{i:06d}" for i in picks]
            )
    finally:
        services.dbs.dispose()


async def test_subscription_over_a_real_websocket(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect

    data = tmp_path / "data"
    seed_in_process(data, n_tracks=8000, n_albums=4000, n_artists=400, dimension=32, method="centroid")
    with serve(data) as (_, base):
        async with httpx.AsyncClient(base_url=base) as client:
            started = await trigger(client, force=True)
            total = started["estimated_entities"]
            assert total == 4000 + 400
            uri = base.replace("http://", "ws://") + "/graphql"
            async with connect(uri, subprotocols=["graphql-transport-ws"], additional_headers=ADMIN) as ws:
                assert ws.subprotocol == "graphql-transport-ws"
                await ws.send(orjson.dumps({"type": "connection_init", "payload": {}}).decode())
                assert orjson.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "connection_ack"}
                message = {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": SUBSCRIBE, "variables": {"id": started["job_id"]}},
                }
                await ws.send(orjson.dumps(message).decode())
                events = []
                while True:
                    reply = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
                    assert reply["id"] == "1", reply
                    if reply["type"] == "complete":
                        break
                    assert reply["type"] == "next", reply
                    assert "errors" not in reply["payload"], reply
                    events.append(reply["payload"]["data"]["aggregationJob"])
            assert events, "no next message before complete"
            assert events[-1]["status"] == "succeeded"
            assert events[-1]["progress"] == {"processed": total, "total": total, "percent": 100.0}
            processed = [e["progress"]["processed"] for e in events]
            assert processed == sorted(processed)
            assert len(events) >= 2, f"expected progress before the final state: {events}"
            rest = (
                await client.get(f"/v1/admin/fingerprints/aggregate/{started['job_id']}", headers=ADMIN)
            ).json()
            assert rest["status"] == "succeeded"
