"""`fingerprints aggregate` and `fingerprints stats` on a small demo catalog (design §5)."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from fingerprints.cli import main
from fingerprints.config import Settings
from fingerprints.service import aggregation, feature_types, ingest
from fingerprints.service.base import open_services
from tests.aggregation.test_jobs import counted_stats, reference

TYPES = {"audio_spectrum": "weighted_by_duration", "genre_profile": "average", "mood_profile": "centroid"}
JOB_QUEUED = re.compile(r"^job (agg_\w+): (\d+) aggregates to recompute$")
JOB_DONE = re.compile(r"^job (agg_\w+): (\w+), (\d+)/(\d+)$")


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo catalog (300 tracks, 30 albums, 12 artists, 3 types, 6 playlists), seeded once."""
    data = tmp_path_factory.mktemp("demo") / "data"
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("FINGERPRINTS_")]:
            mp.delenv(name)
        main(
            [
                "demo",
                "--data-dir",
                str(data),
                "--no-serve",
                "--tracks",
                "300",
                "--albums",
                "30",
                "--artists",
                "12",
            ]
        )
    return data


@pytest.fixture
def demo(demo_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh copy of the demo data directory for one test."""
    for name in [n for n in os.environ if n.startswith("FINGERPRINTS_")]:
        monkeypatch.delenv(name)
    data = tmp_path / "data"
    shutil.copytree(demo_template, data)
    yield data


def run(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    capsys.readouterr()
    main(list(args))
    return capsys.readouterr().out.splitlines()


def aggregate(
    capsys: pytest.CaptureFixture[str], data: Path, *flags: str
) -> tuple[int, list[tuple[str, ...]]]:
    """Run `fingerprints aggregate`: (aggregates announced, [(job id, status, processed, total)])."""
    lines = run(capsys, "aggregate", "--data-dir", str(data), *flags)
    announced = JOB_QUEUED.match(lines[0])
    assert announced, lines
    done = [JOB_DONE.match(line) for line in lines[1:]]
    assert all(done), lines
    return int(announced.group(2)), [m.groups() for m in done if m]


def stats(capsys: pytest.CaptureFixture[str], data: Path) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads("\n".join(run(capsys, "stats", "--data-dir", str(data))))
    return body


def query(data: Path, sql: str, db: str = "catalog.db") -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(data / db)) as conn:
        return conn.execute(sql).fetchall()


def count(data: Path, sql: str, db: str = "catalog.db") -> int:
    return int(query(data, sql, db)[0][0])


def stale(data: Path) -> int:
    return sum(count(data, "SELECT count(*) FROM fingerprints_stale", db) for db in ("catalog.db", "user.db"))


def owners_with_tracks(data: Path) -> dict[str, int]:
    return {
        "album": count(data, "SELECT count(DISTINCT album_rowid) FROM tracks"),
        "artist": count(data, "SELECT count(DISTINCT artist_rowid) FROM track_artists"),
        "playlist": count(data, "SELECT count(DISTINCT playlist_id) FROM user_playlist_tracks", "user.db"),
    }


def aggregate_maps(data: Path) -> dict[tuple[str, str, str], tuple[int, Any, bytes]]:
    found = {
        (kind, entity_id, type_id): (version, orjson.loads(metadata), vector)
        for kind, entity_id, type_id, version, metadata, vector in query(
            data,
            "SELECT entity_type, entity_id, feature_type_id, version, metadata, vector FROM feature_maps "
            "WHERE entity_type != 'track'",
        )
    }
    for entity_id, type_id, version, metadata, vector in query(
        data,
        "SELECT playlist_id, feature_type_id, version, metadata, vector FROM playlist_feature_maps",
        "user.db",
    ):
        found[("playlist", entity_id, type_id)] = (version, orjson.loads(metadata), vector)
    return found


def retouch(data: Path, track_ids: list[str], type_id: str = "genre_profile") -> None:
    """New vectors for some tracks, ingested through the service layer: their aggregates go stale."""
    services = open_services(Settings(data_dir=data))
    try:
        dimension = dict(query(data, "SELECT id, dimension FROM feature_map_types"))[type_id]
        rng = np.random.default_rng(len(track_ids))
        features = [
            {"entity_type": "track", "entity_id": t, "vector": rng.standard_normal(dimension) + 1}
            for t in track_ids
        ]
        result = ingest.ingest_feature_maps(services, feature_type_id=type_id, features=features)
        assert result.errors == [] and result.ingested == len(track_ids)
    finally:
        services.dbs.dispose()


# ------------------------------------------------------------------ tests


def test_demo_leaves_everything_aggregated(demo: Path) -> None:
    owners = owners_with_tracks(demo)
    assert stale(demo) == 0
    assert len(aggregate_maps(demo)) == len(TYPES) * sum(owners.values())
    assert query(demo, 'SELECT status, "trigger" FROM fingerprints_jobs') == [("succeeded", "demo")]


def test_aggregate_recomputes_what_is_stale_then_nothing_then_everything_with_force(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    owners = owners_with_tracks(demo)
    everything = len(TYPES) * sum(owners.values())
    first = aggregate_maps(demo)

    # Nothing is stale after the demo.
    announced, jobs = aggregate(capsys, demo)
    assert announced == 0
    assert [(s, p, t) for _, s, p, t in jobs] == [("succeeded", "0", "0")]

    # Two tracks with new genre vectors: their albums, artists and playlists.
    tracks = ["track_00000", "track_00150"]
    retouch(demo, tracks)
    marked = stale(demo)
    assert marked >= 4  # at least two albums and two artists
    assert {r[0] for r in query(demo, "SELECT DISTINCT feature_type_id FROM fingerprints_stale")} <= {
        "genre_profile"
    }
    announced, jobs = aggregate(capsys, demo)
    assert announced == marked
    assert len(jobs) == 1
    job_id, status, processed, total = jobs[0]
    assert (status, int(processed), int(total)) == ("succeeded", marked, marked)
    assert stale(demo) == 0
    assert query(demo, f"SELECT status, \"trigger\" FROM fingerprints_jobs WHERE id = '{job_id}'") == [
        ("succeeded", "cli")
    ]
    second = aggregate_maps(demo)
    assert second.keys() == first.keys()
    changed = {k for k in first if first[k][2] != second[k][2]}
    assert changed and {type_id for _, _, type_id in changed} == {"genre_profile"}
    assert len(changed) <= marked

    # --force: every aggregate again, with the same values.
    announced, jobs = aggregate(capsys, demo, "--force")
    assert announced == everything
    assert [(s, int(p), int(t)) for _, s, p, t in jobs] == [("succeeded", everything, everything)]
    again = aggregate_maps(demo)
    assert again.keys() == second.keys()
    keys = sorted(second)
    assert [again[k][:2] for k in keys] == [second[k][:2] for k in keys]
    for k in keys:
        assert np.allclose(
            np.frombuffer(again[k][2], "<f4"), np.frombuffer(second[k][2], "<f4"), atol=1e-6
        ), k


def test_aggregate_one_feature_type_and_entity_types(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    owners = owners_with_tracks(demo)
    announced, jobs = aggregate(
        capsys, demo, "--feature-type", "genre_profile", "--entity-types", "album", "--force"
    )
    assert announced == owners["album"]
    assert [(s, int(p)) for _, s, p, _ in jobs] == [("succeeded", owners["album"])]

    retouch(demo, ["track_00001", "track_00002", "track_00003"])
    marked = stale(demo)
    albums = count(demo, "SELECT count(*) FROM fingerprints_stale WHERE entity_type = 'album'")
    announced, _ = aggregate(capsys, demo, "--entity-types", "artist,playlist")
    assert announced == marked - albums
    assert stale(demo) == albums
    announced, _ = aggregate(capsys, demo, "--feature-type", "mood_profile")
    assert announced == 0
    assert stale(demo) == albums


def test_aggregates_equal_references_of_the_demo_methods(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aggregate(capsys, demo, "--force")
    dims = dict(query(demo, "SELECT id, dimension FROM feature_map_types"))
    album_tracks: dict[str, list[tuple[str, int, int]]] = {}
    for album, track, duration, popularity in query(
        demo,
        "SELECT albums.id, tracks.id, tracks.duration_ms, tracks.popularity FROM tracks "
        "JOIN albums ON albums.rowid = tracks.album_rowid",
    ):
        album_tracks.setdefault(album, []).append((track, duration, popularity))
    maps = aggregate_maps(demo)
    for type_id, method in TYPES.items():
        vectors = {
            entity_id: np.frombuffer(blob, "<f4")
            for entity_id, blob in query(
                demo,
                f"SELECT entity_id, vector FROM feature_maps WHERE feature_type_id = '{type_id}' "
                "AND entity_type = 'track'",
            )
        }
        for album, members in sorted(album_tracks.items()):
            version, metadata, blob = maps[("album", album, type_id)]
            assert version == 1
            assert metadata == {"track_count": len(members), "method": method}
            x = np.stack([vectors[t] for t, _, _ in members])
            want = reference(method, x, np.array([d for _, d, _ in members], dtype=np.float64), "cosine")
            got = np.frombuffer(blob, "<f4")
            assert got.shape == (dims[type_id],)
            assert np.allclose(got, want, atol=1e-4 if method == "centroid" else 1e-6), (type_id, album)


def test_stats_prints_the_coverage(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = stats(capsys, demo)
    assert set(body) >= {"feature_types", "storage_bytes", "last_aggregation"}
    counted = counted_stats(demo)
    assert body["feature_types"] == counted["feature_types"]
    assert body["last_aggregation"] == counted["last_aggregation"] is not None
    assert body["storage_bytes"] > 0
    owners = owners_with_tracks(demo)
    playlists = count(demo, "SELECT count(*) FROM user_playlist", "user.db")
    for type_id in TYPES:
        assert body["feature_types"][type_id] == {
            "track": {"total": 300, "with_feature": 300, "outdated": 0},
            "album": {"total": 30, "with_feature": owners["album"], "outdated": 0},
            "artist": {"total": 12, "with_feature": owners["artist"], "outdated": 0},
            "playlist": {"total": playlists, "with_feature": owners["playlist"], "outdated": 0},
        }

    # A bumped version: every map of that type is outdated until recomputed from new vectors.
    services = open_services(Settings(data_dir=demo))
    try:
        feature_types.bump_feature_type_version(services, type_id="mood_profile")
    finally:
        services.dbs.dispose()
    aggregate(capsys, demo, "--force")
    body = stats(capsys, demo)
    counted = counted_stats(demo)
    assert body["feature_types"] == counted["feature_types"]
    assert body["feature_types"]["mood_profile"]["album"] == {
        "total": 30,
        "with_feature": owners["album"],
        "outdated": owners["album"],
    }
    assert body["last_aggregation"] == counted["last_aggregation"]
    assert body["last_aggregation"] == query(demo, "SELECT max(finished_at) FROM fingerprints_jobs")[0][0]


def test_aggregate_also_runs_jobs_queued_before(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    services = open_services(Settings(data_dir=demo))
    try:
        earlier = aggregation.trigger_aggregation(
            services, feature_type_id="mood_profile", entity_types=["album"], force=True
        )
    finally:
        services.dbs.dispose()
    lines = run(capsys, "aggregate", "--data-dir", str(demo), "--feature-type", "genre_profile", "--force")
    announced = JOB_QUEUED.match(lines[0])
    assert announced, lines
    done = {m.group(1): m.groups()[1:] for m in map(JOB_DONE.match, lines[1:]) if m}
    assert len(lines) == 3 and len(done) == 2, lines
    owners = owners_with_tracks(demo)
    assert done[earlier.id] == ("succeeded", str(owners["album"]), str(owners["album"]))
    everything = str(sum(owners.values()))
    assert done[announced.group(1)] == ("succeeded", everything, everything)
    assert query(demo, "SELECT DISTINCT status FROM fingerprints_jobs") == [("succeeded",)]


def test_aggregate_with_an_unknown_feature_type_fails(demo: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fingerprints",
            "aggregate",
            "--data-dir",
            str(demo),
            "--feature-type",
            "nope",
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("FINGERPRINTS_")},
    )
    assert done.returncode != 0
    assert "unknown feature type 'nope'" in done.stderr
    assert count(demo, "SELECT count(*) FROM fingerprints_jobs") == 1  # the demo's own
