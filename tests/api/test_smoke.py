from __future__ import annotations

import httpx

from tests.helpers import seed


async def test_health_and_seed(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    await seed(client)
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
