"""Index freshness through the real app (spec §5.4, design §3 Q13, §4): writes are visible to
the very next query, with the exact index, while an HNSW graph is built and once it serves
(fresh tier); recall of the graph; snapshots across restarts (used, corrupt, stale); lazy load."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fingerprints.app import create_app
from fingerprints.config import Settings
from tests.api.similar_helpers import (
    SIMILAR,
    Vectors,
    assert_error,
    assert_matches,
    big_catalog,
    clustered,
    delete_maps,
    ingest,
    key_status,
    load_catalog,
    readyz,
    reference,
    register_type,
    set_active,
    track_id,
    upsert_playlist,
    wait_for_key,
)
from tests.helpers import ADMIN, running_client

DIM = 16
KEY = "audio/track"


SettingsFor = Callable[..., Settings]


async def by_vector(
    client: httpx.AsyncClient, vector: np.ndarray, limit: int = 10, **extra: Any
) -> list[dict[str, Any]]:
    body = {
        "feature_type": "audio",
        "query": {"vector": np.asarray(vector, np.float32).tolist()},
        "limit": limit,
    }
    r = await client.post(SIMILAR, json={**body, **extra})
    assert r.status_code == 200, r.text
    return r.json()["results"]


async def by_entity(client: httpx.AsyncClient, entity_id: str, limit: int = 10) -> list[dict[str, Any]]:
    r = await client.get(f"{SIMILAR}/track/{entity_id}", params={"feature_type": "audio", "limit": limit})
    assert r.status_code == 200, r.text
    return r.json()["results"]


async def assert_found_first(client: httpx.AsyncClient, entity_id: str, vector: np.ndarray) -> None:
    """The entity comes first for its own vector, sent raw and as an include_query query."""
    results = await by_vector(client, vector, limit=3)
    assert results and results[0]["entity_id"] == entity_id, (entity_id, results)
    assert abs(results[0]["score"] - 1.0) <= 1e-4, results[0]
    r = await client.post(
        SIMILAR,
        json={
            "feature_type": "audio",
            "query": {"entity_type": "track", "entity_id": entity_id},
            "include_query": True,
            "limit": 3,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["entity_id"] == entity_id, r.text


async def setup(client: httpx.AsyncClient, n_catalog: int, vectors: Vectors, *, n_albums: int = 30) -> None:
    await load_catalog(client, big_catalog(n_catalog, n_albums, 10))
    await register_type(client, "audio", DIM)
    await ingest(client, "audio", "track", vectors)


def make_vectors(
    rng: np.random.Generator, indexes: range, centers: np.ndarray, noise: float = 0.6
) -> Vectors:
    ids = [track_id(i) for i in indexes]
    return clustered(rng, ids, centers, [i % len(centers) for i in indexes], noise)


# ------------------------------------------------------------------ (1) + (2) exact index


async def test_writes_are_visible_to_the_next_query(settings_for: SettingsFor, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(30, DIM))
    vectors = make_vectors(rng, range(300), centers)
    async with running_client(create_app(settings_for(tmp_path / "data"))) as client:
        await setup(client, 620, vectors)
        await upsert_playlist(client, "pl7a", 7, [track_id(1)])
        await upsert_playlist(client, "pl7b", 7, [track_id(2)])
        # the key is loaded by the first query, and later writes go straight into it
        assert_matches(await by_vector(client, centers[0]), reference(vectors, centers[0], "cosine"), 10)

        # (1) every ingest is searchable as soon as it returns
        for i in range(300, 330):
            new = make_vectors(rng, range(i, i + 1), centers, noise=0.3)
            await ingest(client, "audio", "track", new)
            vectors.update(new)
            await assert_found_first(client, track_id(i), new[track_id(i)])
        query = centers[3]
        assert_matches(await by_vector(client, query, 50), reference(vectors, query, "cosine"), 50)

        # (2a) update: a re-ingested vector moves its entity
        moved = track_id(5)
        old = vectors[moved]
        vectors[moved] = (centers[17] + 0.05 * rng.normal(size=DIM)).astype(np.float32)
        await ingest(client, "audio", "track", {moved: vectors[moved]})
        await assert_found_first(client, moved, vectors[moved])
        results = await by_vector(client, old, 30)
        assert_matches(results, reference(vectors, old, "cosine"), 30)
        assert_matches(
            await by_entity(client, moved, 30),
            reference(vectors, vectors[moved], "cosine", exclude=[moved]),
            30,
        )

        # (2b) delete: gone from the very next query, and no longer a query entity
        gone = [track_id(6), track_id(300)]
        body = await delete_maps(client, "audio", [("track", t) for t in gone])
        assert body["deleted"] == 2, body
        for t in gone:
            results = await by_vector(client, vectors[t], 600)
            assert t not in {item["entity_id"] for item in results}
            r = await client.get(f"{SIMILAR}/track/{t}", params={"feature_type": "audio"})
            assert_error(r, 404, "NOT_FOUND")
            del vectors[t]
        assert_matches(await by_vector(client, query, 600), reference(vectors, query, "cosine"), 600)

        # (2b') deleting an entity's maps of every type: gone from each type's results
        await register_type(client, "extra", 4)
        extra = {t: rng.normal(size=4).astype(np.float32) for t in list(vectors)[:50]}
        await ingest(client, "extra", "track", extra)
        victim = track_id(8)
        body = await delete_maps(client, None, [("track", victim)])
        assert body["deleted"] == 2, body
        assert victim not in {i["entity_id"] for i in await by_vector(client, vectors[victim], 600)}
        extra_query = extra[victim]
        del vectors[victim], extra[victim]
        r = await client.post(
            SIMILAR, json={"feature_type": "extra", "query": {"vector": extra_query.tolist()}, "limit": 100}
        )
        assert r.status_code == 200, r.text
        assert_matches(r.json()["results"], reference(extra, extra_query, "cosine"), 100)

        # (2f) bumping the version: outdated maps stay queryable (design Q10), same answers
        before = await by_vector(client, query, 20)
        r = await client.post("/v1/admin/fingerprints/types/audio/bump-version", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert await by_vector(client, query, 20) == before
        assert_matches(
            await by_entity(client, track_id(1), 20),
            reference(vectors, vectors[track_id(1)], "cosine", exclude=[track_id(1)]),
            20,
        )

        # (2c) deactivating the type: queries 404; re-activating: they work again, same answers
        before = await by_vector(client, query, 20)
        await set_active(client, "audio", False)
        r = await client.get(f"{SIMILAR}/track/{track_id(1)}", params={"feature_type": "audio"})
        assert_error(r, 404, "NOT_FOUND")
        r = await client.post(SIMILAR, json={"feature_type": "audio", "query": {"vector": query.tolist()}})
        assert_error(r, 404, "NOT_FOUND")
        await set_active(client, "audio", True)
        assert await by_vector(client, query, 20) == before
        new = make_vectors(rng, range(400, 401), centers, noise=0.3)
        await ingest(client, "audio", "track", new)
        vectors.update(new)
        await assert_found_first(client, track_id(400), new[track_id(400)])

        # (2d) deleting a playlist removes it from playlist results
        playlists = {p: rng.normal(size=DIM).astype(np.float32) for p in ("pl7a", "pl7b")}
        await ingest(client, "audio", "playlist", playlists)
        body = {
            "feature_type": "audio",
            "query": {"vector": playlists["pl7a"].tolist()},
            "target_entity_type": "playlist",
        }
        for headers in (ADMIN, {"X-User-Id": "7"}):
            r = await client.post(SIMILAR, json=body, headers=headers)
            assert [i["entity_id"] for i in r.json()["results"]] == [
                x.entity_id for x in reference(playlists, playlists["pl7a"], "cosine")
            ], r.text
        r = await client.delete("/v1/admin/playlists/pl7a", headers=ADMIN)
        assert r.status_code == 200, r.text
        for headers in (ADMIN, {"X-User-Id": "7"}):
            r = await client.post(SIMILAR, json=body, headers=headers)
            assert [i["entity_id"] for i in r.json()["results"]] == ["pl7b"], r.text
        r = await client.get(f"{SIMILAR}/playlist/pl7a", params={"feature_type": "audio"}, headers=ADMIN)
        assert_error(r, 404, "NOT_FOUND")

        # (2e) deleting every map of the type empties its results
        r = await client.request(
            "DELETE", "/v1/admin/fingerprints/features", json={"feature_type_id": "audio"}, headers=ADMIN
        )
        assert r.status_code == 200, r.text
        assert await by_vector(client, query, 20) == []


# ------------------------------------------------------------------ (3) HNSW


def recall_at_10(got: list[dict[str, Any]], want: list[Any]) -> float:
    return len({i["entity_id"] for i in got} & {w.entity_id for w in want[:10]}) / 10


async def test_hnsw_build_fresh_tier_and_recall(settings_for: SettingsFor, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    centers = rng.normal(size=(40, DIM))
    vectors = make_vectors(rng, range(1500), centers)
    settings = settings_for(tmp_path / "data", hnsw_threshold=200, target_recall=0.9)
    async with running_client(create_app(settings)) as client:
        await setup(client, 1700, vectors, n_albums=40)
        # the first query loads the key (1500 > 200 vectors): the graph build starts
        assert_matches(await by_vector(client, centers[1]), reference(vectors, centers[1], "cosine"), 10)
        status = await key_status(client, KEY)
        assert status is not None and status["size"] == 1500, status
        # the build starts once the key's writes have paused (FINGERPRINTS_HNSW_BUILD_QUIET_SECONDS):
        # wait for it before writing, or a loaded machine might see the writes defer it to the end
        deadline = time.monotonic() + 30
        while not status["building"]:
            assert status["kind"] != "hnsw", "the graph was built before the test saw it building"
            assert time.monotonic() < deadline, await readyz(client)
            await asyncio.sleep(0.02)
            status = await key_status(client, KEY)
            assert status is not None

        # while the graph is built: each new vector is found at once (concurrent writers too)
        async def write_then_read(i: int) -> None:
            new = make_vectors(rng, range(i, i + 1), centers, noise=0.3)
            await ingest(client, "audio", "track", new)
            vectors.update(new)
            await assert_found_first(client, track_id(i), new[track_id(i)])

        await asyncio.gather(*(write_then_read(i) for i in range(1500, 1510)))
        for i in range(1510, 1520):
            await write_then_read(i)

        status = await wait_for_key(client, KEY, kind="hnsw")
        assert status["size"] == 1520, status
        # the vectors written during the build were replayed into the graph's fresh tier
        for i in range(1500, 1520, 3):
            await assert_found_first(client, track_id(i), vectors[track_id(i)])

        # with the graph serving, new vectors go to the fresh tier. To see them wait there, keep
        # the single index worker busy: a second feature type's graph build starts now.
        await register_type(client, "other", DIM)
        other = make_vectors(rng, range(1500), rng.normal(size=(40, DIM)))
        await ingest(client, "other", "track", other)
        r = await client.post(SIMILAR, json={"feature_type": "other", "query": {"vector": [1.0] * DIM}})
        assert r.status_code == 200, r.text
        # its build starts once the key's writes have paused (FINGERPRINTS_HNSW_BUILD_QUIET_SECONDS)
        deadline = time.monotonic() + 30
        while not (await key_status(client, "other/track") or {}).get("building"):
            assert time.monotonic() < deadline, await readyz(client)
            await asyncio.sleep(0.05)
        batch = make_vectors(rng, range(1520, 1620), centers, noise=0.3)
        await ingest(client, "audio", "track", batch)
        vectors.update(batch)
        status = await key_status(client, KEY)
        assert status is not None and status["kind"] == "hnsw" and status["fresh"] >= 100, status
        for t in list(batch)[::25]:
            await assert_found_first(client, t, batch[t])
        # still waiting (a drain step moves all 100 at once): those answers came from the fresh tier
        status = await key_status(client, KEY)
        assert status is not None and status["fresh"] >= 100, status
        for t in list(batch)[::9]:
            await assert_found_first(client, t, batch[t])
        assert_matches(await by_vector(client, centers[2], 40), reference(vectors, centers[2], "cosine"), 40)
        await asyncio.gather(*(write_then_read(i) for i in range(1620, 1630)))
        await wait_for_key(client, "other/track", kind="hnsw")
        await wait_until_drained(client)
        for t in list(batch)[::9]:  # drained into the graph: still found first
            await assert_found_first(client, t, batch[t])
        # update and delete of vectors already in the graph
        moved = track_id(10)
        vectors[moved] = (centers[33] + 0.05 * rng.normal(size=DIM)).astype(np.float32)
        await ingest(client, "audio", "track", {moved: vectors[moved]})
        await assert_found_first(client, moved, vectors[moved])
        gone = track_id(11)
        await delete_maps(client, "audio", [("track", gone)])
        assert gone not in {i["entity_id"] for i in await by_vector(client, vectors[gone], 50)}
        del vectors[gone]
        status = await key_status(client, KEY)
        assert status is not None and status["kind"] == "hnsw" and status["size"] == len(vectors), status

        # recall@10 against brute force over 30 queries (15 new vectors, 15 entities)
        queries: list[tuple[str, np.ndarray | str]] = [
            ("vector", (centers[j % 40] + 0.6 * rng.normal(size=DIM)).astype(np.float32)) for j in range(15)
        ]
        queries += [("entity", track_id(int(i))) for i in rng.choice(np.arange(12, 1500), 15, replace=False)]

        async def answer(kind: str, q: Any) -> tuple[list[dict[str, Any]], list[Any]]:
            if kind == "vector":
                return await by_vector(client, q), reference(vectors, q, "cosine")
            return await by_entity(client, q), reference(vectors, vectors[q], "cosine", exclude=[q])

        recalls = []
        for kind, q in queries:
            got, want = await answer(kind, q)
            recalls.append(recall_at_10(got, want))
            scores = {w.entity_id: w.score for w in want}
            for item in got:  # approximate ranking, exact scores
                assert abs(item["score"] - scores[item["entity_id"]]) <= 1e-4, item
        assert np.mean(recalls) >= 0.9, recalls

        # (4, HNSW) a restart loads graph and fresh tier from the snapshot: identical answers
        await wait_until_drained(client)
        before = [await answer(kind, q) for kind, q in queries[:10]]

    async with running_client(create_app(settings)) as client:
        status = await key_status(client, KEY)
        assert status is not None, await readyz(client)
        assert (status["source"], status["kind"], status["size"]) == ("snapshot", "hnsw", len(vectors)), (
            status
        )
        after = [await answer(kind, q) for kind, q in queries[:10]]
        assert [g for g, _ in after] == [g for g, _ in before]
        # the loaded graph keeps taking writes: new vectors, an update, a delete
        more = make_vectors(rng, range(1630, 1700), centers, noise=0.3)
        await ingest(client, "audio", "track", more)
        vectors.update(more)
        moved, gone = track_id(0), track_id(1)  # not among the entity queries (12..1499)
        vectors[moved] = (centers[5] + 0.05 * rng.normal(size=DIM)).astype(np.float32)
        await ingest(client, "audio", "track", {moved: vectors[moved]})
        await delete_maps(client, "audio", [("track", gone)])
        for t in [*list(more)[::10], moved]:
            await assert_found_first(client, t, vectors[t])
        await wait_until_drained(client)
        for t in [*list(more)[::10], moved]:
            await assert_found_first(client, t, vectors[t])
        assert gone not in {i["entity_id"] for i in await by_vector(client, vectors[gone], 50)}
        del vectors[gone]
        assert (await key_status(client, KEY) or {}).get("size") == len(vectors)
        recalls = [recall_at_10(*(await answer(kind, q))) for kind, q in queries]
        assert np.mean(recalls) >= 0.9, recalls


async def wait_until_drained(client: httpx.AsyncClient, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        status = await key_status(client, KEY)
        if status is not None and status["fresh"] == 0 and not status["building"]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fresh tier not drained: {await key_status(client, KEY)}")


# ------------------------------------------------------------------ (4) snapshots


QUERY_IDS = [track_id(i) for i in (0, 50, 333, 599)]


async def answers(client: httpx.AsyncClient, centers: np.ndarray) -> list[list[dict[str, Any]]]:
    out = [await by_entity(client, q, 25) for q in QUERY_IDS]
    out += [await by_vector(client, c, 25) for c in centers[:4]]
    return out


def check(out: list[list[dict[str, Any]]], vectors: Vectors, centers: np.ndarray) -> None:
    wants = [reference(vectors, vectors[q], "cosine", exclude=[q]) for q in QUERY_IDS]
    wants += [reference(vectors, c, "cosine") for c in centers[:4]]
    for got, want in zip(out, wants, strict=True):
        assert_matches(got, want, 25)


async def test_snapshots_used_rejected_when_corrupt_or_stale(
    settings_for: SettingsFor, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(30, DIM))
    vectors = make_vectors(rng, range(600), centers)
    data_dir = tmp_path / "data"
    settings = settings_for(data_dir)
    snap = data_dir / "index" / "audio" / "track"

    async with running_client(create_app(settings)) as client:
        await setup(client, 620, vectors)
        first = await answers(client, centers)
        check(first, vectors, centers)
        assert (await key_status(client, KEY) or {}).get("source") == "database"
    assert (snap / "meta.json").exists() and list(snap.glob("*.npy")), list(snap.iterdir())

    # a restart loads the key from its snapshot, with identical answers
    async with running_client(create_app(settings)) as client:
        status = await key_status(client, KEY)
        assert status is not None and status["source"] == "snapshot", await readyz(client)
        assert status["size"] == 600, status
        assert await answers(client, centers) == first

    # a damaged snapshot file: rebuilt from the database, identical answers
    npy = sorted(snap.glob("*.npy"))[0]
    raw = bytearray(npy.read_bytes())
    raw[-3] ^= 0xFF
    npy.write_bytes(bytes(raw))
    async with running_client(create_app(settings)) as client:
        status = await key_status(client, KEY)
        assert status is not None and status["source"] == "database", status
        assert await answers(client, centers) == first

    # a stale snapshot (older than the database) is caught up from the change log, never
    # served as it is: restore an older copy after (a) an update, which leaves the count
    # alone, and (b) a new vector (tests/api/test_change_log.py: a log too short → rebuilt)
    rounds = [
        {track_id(7): (centers[21] + 0.05 * rng.normal(size=DIM)).astype(np.float32)},
        make_vectors(rng, range(600, 601), centers, noise=0.3),
    ]
    for changed in rounds:
        saved = tmp_path / f"saved-{next(iter(changed))}"
        shutil.copytree(snap, saved)
        async with running_client(create_app(settings)) as client:
            assert (await key_status(client, KEY) or {}).get("source") == "snapshot"
            await ingest(client, "audio", "track", changed)
            vectors.update(changed)
            for t, v in changed.items():
                await assert_found_first(client, t, v)
        shutil.rmtree(snap)
        shutil.copytree(saved, snap)
        async with running_client(create_app(settings)) as client:
            status = await key_status(client, KEY)
            assert status is not None and status["source"] == "snapshot", status
            assert status["size"] == len(vectors), status
            for t, v in changed.items():
                await assert_found_first(client, t, v)
            check(await answers(client, centers), vectors, centers)


# ------------------------------------------------------------------ (5) lazy load


async def test_lazy_index_load(settings_for: SettingsFor, tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    centers = rng.normal(size=(30, DIM))
    vectors = make_vectors(rng, range(600), centers)
    settings = settings_for(tmp_path / "data", index_load="lazy")
    async with running_client(create_app(settings)) as client:
        await setup(client, 620, vectors)
        index = (await readyz(client))["index"]
        assert index["load"] == "lazy" and index["status"] == "lazy" and index["keys"] == {}, index
        check(await answers(client, centers), vectors, centers)  # the first query loads the key
        status = await key_status(client, KEY)
        assert status is not None and status["source"] == "database" and status["size"] == 600, status
        new = make_vectors(rng, range(600, 601), centers, noise=0.3)
        await ingest(client, "audio", "track", new)
        vectors.update(new)
        await assert_found_first(client, track_id(600), new[track_id(600)])

    async with running_client(create_app(settings)) as client:  # lazy, over a saved snapshot
        index = (await readyz(client))["index"]
        assert index["load"] == "lazy" and index["keys"] == {}, index
        await assert_found_first(client, track_id(600), vectors[track_id(600)])
        check(await answers(client, centers), vectors, centers)
        status = await key_status(client, KEY)
        assert status is not None and status["source"] == "snapshot", status


def check_exact_scores(results: list[dict[str, Any]], want: list[Any], distance: str) -> None:
    """Approximate results: each id once, best first, with the exact score (and distance)."""
    scores = {w.entity_id: w for w in want}
    for item in results:
        assert abs(item["score"] - scores[item["entity_id"]].score) <= 1e-4, item
        if distance == "euclidean":
            assert abs(item["distance"] - scores[item["entity_id"]].distance) <= 1e-4, item
    ids = [i["entity_id"] for i in results]
    assert len(ids) == len(set(ids))
    assert [i["score"] for i in results] == sorted((i["score"] for i in results), reverse=True)


async def test_hnsw_for_euclidean_and_dot_product_and_every_query_form(
    settings_for: SettingsFor, tmp_path: Path
) -> None:
    """Above the threshold the graph answers every form: filters, cross-entity, large limits,
    batches with de-duplication; scores stay exact and recall@10 stays >= 0.9."""
    rng = np.random.default_rng(13)
    settings = settings_for(tmp_path / "data", hnsw_threshold=200, target_recall=0.9)
    n = 1200
    async with running_client(create_app(settings)) as client:
        await load_catalog(client, big_catalog(n, 40, 10))
        stored: dict[str, dict[str, Vectors]] = {}
        for type_id, distance in (("timbre", "euclidean"), ("energy", "dot_product")):
            await register_type(client, type_id, 8, distance, ["track", "album"])
            centers = rng.normal(size=(40, 8))
            scale = rng.uniform(0.5, 2.0, n) if distance == "dot_product" else None
            tracks = clustered(
                rng, [track_id(i) for i in range(n)], centers, [i // 30 for i in range(n)], 0.4, scale
            )
            albums = clustered(rng, [f"al{j:02d}" for j in range(40)], centers, range(40), 0.2)
            await ingest(client, type_id, "track", tracks)
            await ingest(client, type_id, "album", albums)
            stored[type_id] = {"track": tracks, "album": albums}
            r = await client.post(SIMILAR, json={"feature_type": type_id, "query": {"vector": [1.0] * 8}})
            assert r.status_code == 200, r.text
        for type_id in stored:
            status = await wait_for_key(client, f"{type_id}/track", kind="hnsw")
            assert status["size"] == n, status

        for type_id, distance in (("timbre", "euclidean"), ("energy", "dot_product")):
            tracks, albums = stored[type_id]["track"], stored[type_id]["album"]

            recalls = []
            for q in rng.choice(n, 12, replace=False):
                qid = track_id(int(q))
                r = await client.get(f"{SIMILAR}/track/{qid}", params={"feature_type": type_id})
                assert r.status_code == 200, r.text
                want = reference(tracks, tracks[qid], distance, exclude=[qid])
                check_exact_scores(r.json()["results"], want, distance)
                assert qid not in {i["entity_id"] for i in r.json()["results"]}
                recalls.append(recall_at_10(r.json()["results"], want))
            for j in range(0, 40, 5):  # cross-entity: tracks similar to an album
                body = {
                    "feature_type": type_id,
                    "query": {"entity_type": "album", "entity_id": f"al{j:02d}"},
                    "target_entity_type": "track",
                }
                r = await client.post(SIMILAR, json=body)
                assert r.status_code == 200, r.text
                want = reference(tracks, albums[f"al{j:02d}"], distance)
                check_exact_scores(r.json()["results"], want, distance)
                recalls.append(recall_at_10(r.json()["results"], want))
            assert np.mean(recalls) >= 0.9, (type_id, recalls)

            # min_score and exclude_ids through the graph; a limit far above ef
            qid = track_id(77)
            want = reference(tracks, tracks[qid], distance, exclude=[qid])
            threshold = (want[14].score + want[15].score) / 2
            excluded = [want[0].entity_id, want[3].entity_id]
            r = await client.post(
                SIMILAR,
                json={
                    "feature_type": type_id,
                    "query": {"entity_type": "track", "entity_id": qid},
                    "min_score": threshold,
                    "exclude_ids": excluded,
                    "limit": 100,
                },
            )
            assert r.status_code == 200, r.text
            results = r.json()["results"]
            check_exact_scores(results, want, distance)
            assert all(i["score"] >= threshold for i in results)
            assert not {i["entity_id"] for i in results} & set(excluded)
            assert len(results) >= 12, results  # 13 pass the filters; approximate search may miss one
            r = await client.post(
                SIMILAR,
                json={
                    "feature_type": type_id,
                    "query": {"entity_type": "track", "entity_id": qid},
                    "limit": 1000,
                },
            )
            results = r.json()["results"]
            assert len(results) == 1000, len(results)
            check_exact_scores(results, want, distance)
            assert len({i["entity_id"] for i in results} & {w.entity_id for w in want[:1000]}) >= 950

            # batch with de-duplication over the graph
            queries = [track_id(i) for i in (300, 301, 302, 900)]
            r = await client.post(
                "/v1/content/similar/batch",
                json={
                    "feature_type": type_id,
                    "queries": [{"entity_type": "track", "entity_id": q} for q in queries],
                    "limit_per_query": 6,
                    "deduplicate": True,
                },
            )
            assert r.status_code == 200, r.text
            seen: list[str] = []
            for entry, q in zip(r.json()["results"], queries, strict=True):
                want = reference(tracks, tracks[q], distance, exclude=queries)
                check_exact_scores(entry["results"], want, distance)
                assert len(entry["results"]) == 6
                seen += [i["entity_id"] for i in entry["results"]]
            assert len(seen) == len(set(seen)) and not set(seen) & set(queries)
