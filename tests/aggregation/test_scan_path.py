"""Large jobs read every member and vector in one scan; the result equals the lookup path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fingerprints.config import Settings
from fingerprints.demo import seed_demo
from fingerprints.domain import EntityType
from fingerprints.service import aggregation
from fingerprints.service.base import open_services
from fingerprints.store import feature_maps as maps_store
from tests.helpers import ADMIN_TOKEN

DIMENSIONS = {"audio_spectrum": 128, "genre_profile": 64, "mood_profile": 32}


def _aggregates(
    data_dir: Path, scan_min: int, monkeypatch: pytest.MonkeyPatch
) -> dict[tuple[str, str, str], object]:
    monkeypatch.setattr(aggregation, "SCAN_MIN_TARGETS", scan_min)
    svc = open_services(Settings(data_dir=data_dir, admin_token=ADMIN_TOKEN))
    try:
        seed_demo(svc, n_tracks=400, n_albums=40, n_artists=15)
        aggregation.trigger_aggregation(svc, force=True)
        job_id = aggregation.claim_next_job(svc)
        assert job_id is not None
        assert aggregation.run_job(svc, job_id).status == "succeeded"
        out: dict[tuple[str, str, str], object] = {}
        for entity_type in (EntityType.ALBUM, EntityType.ARTIST, EntityType.PLAYLIST):
            with svc.dbs.for_entity(entity_type).read() as conn:
                for type_id, dimension in DIMENSIONS.items():
                    ids, matrix = maps_store.load_vectors(
                        conn, entity_type=entity_type, type_id=type_id, dimension=dimension
                    )
                    for entity_id, row in zip(ids, matrix, strict=True):
                        out[(type_id, entity_type.value, entity_id)] = row
        return out
    finally:
        svc.dbs.dispose()


def test_scan_and_lookup_paths_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scanned = _aggregates(tmp_path / "scan", 1, monkeypatch)
    looked_up = _aggregates(tmp_path / "lookup", 10**9, monkeypatch)
    assert scanned.keys() == looked_up.keys() and len(scanned) > 100
    for key, vector in scanned.items():
        np.testing.assert_allclose(vector, looked_up[key], atol=1e-6, err_msg=str(key))


def test_a_job_over_most_owners_of_a_kind_scans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer targets than SCAN_MIN_TARGETS but more than a chunk, and half the owners or more:
    one scan, not chunked key lookups; a single chunk still looks its members up."""
    monkeypatch.setattr(aggregation, "SCAN_MIN_TARGETS", 10**9)
    monkeypatch.setattr(aggregation, "CHUNK_OWNERS", 10)
    scans: list[tuple[str, int, bool]] = []
    gather = aggregation._gather

    def spy(svc: Any, feature_type: Any, entity_type: EntityType, owner_ids: list[str], *, scan: bool) -> Any:
        scans.append((entity_type.value, len(owner_ids), scan))
        return gather(svc, feature_type, entity_type, owner_ids, scan=scan)

    monkeypatch.setattr(aggregation, "_gather", spy)
    svc = open_services(Settings(data_dir=tmp_path, admin_token=ADMIN_TOKEN))
    try:
        seed_demo(svc, n_tracks=400, n_albums=40, n_artists=8)
        job = aggregation.trigger_aggregation(
            svc, feature_type_id="audio_spectrum", entity_types=["album", "artist"], force=True
        )
        assert aggregation.claim_next_job(svc) == job.id
        assert aggregation.run_job(svc, job.id).status == "succeeded"
    finally:
        svc.dbs.dispose()
    assert ("album", 40, True) in scans and ("artist", 8, False) in scans
    assert all(scan for kind, _, scan in scans if kind == "album")
