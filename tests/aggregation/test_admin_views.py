"""Job and statistics views are admin-only on GraphQL as on REST; a method change re-marks."""

from __future__ import annotations

import sqlite3

import httpx

from fingerprints.config import Settings
from tests.helpers import ADMIN, seed


async def _gql(client: httpx.AsyncClient, query: str, headers: dict[str, str] | None = None) -> dict:
    r = await client.post("/graphql", json={"query": query, "variables": {}}, headers=headers or {})
    return r.json()


async def test_stats_and_jobs_need_the_admin_token(client: httpx.AsyncClient) -> None:
    await seed(client, aggregation_method="average")
    job = (await client.post("/v1/admin/fingerprints/aggregate", json={}, headers=ADMIN)).json()["job_id"]
    for query in ("{ fingerprintStats { storageBytes } }", f'{{ aggregationJob(id: "{job}") {{ status }} }}'):
        anonymous = await _gql(client, query)
        assert anonymous["data"] is None
        assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        wrong = await _gql(client, query, {"Authorization": "Bearer nope"})
        assert wrong["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert "errors" not in await _gql(client, query, ADMIN)


async def test_changing_the_method_marks_every_aggregate_stale(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await seed(client, aggregation_method="average")
    r = await client.put(
        "/v1/admin/fingerprints/types/audio", json={"aggregation_method": "max"}, headers=ADMIN
    )
    assert r.status_code == 200
    conn = sqlite3.connect(settings.data_dir / "catalog.db")
    marked = set(
        conn.execute("SELECT entity_type, entity_id FROM fingerprints_stale WHERE feature_type_id='audio'")
    )
    conn.close()
    assert marked == {
        ("album", "al1"),
        ("album", "al2"),
        ("artist", "ar1"),
        ("artist", "ar2"),
        ("artist", "ar3"),
    }
    conn = sqlite3.connect(settings.data_dir / "user.db")
    assert conn.execute("SELECT entity_id FROM fingerprints_stale").fetchall() == [("p1",)]
    conn.close()
