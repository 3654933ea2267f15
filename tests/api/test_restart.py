"""Durability: what an acknowledged ingest stored is read back identically after a restart."""

from __future__ import annotations

import numpy as np

from fingerprints.app import create_app
from fingerprints.config import Settings
from tests.helpers import ADMIN, running_client, seed


async def test_vectors_survive_a_restart_bit_for_bit(settings: Settings) -> None:
    vectors = np.random.default_rng(5).normal(size=(6, 4)).astype(np.float32)
    vectors[0, 0] = np.float32(1e-42)  # subnormal
    vectors[1, 1] = np.float32(3.4028235e38)  # float32 max
    async with running_client(create_app(settings)) as client:
        await seed(client)
        features = [
            {"entity_type": "track", "entity_id": f"t{i + 1}", "vector": v.tolist(), "metadata": {"i": i}}
            for i, v in enumerate(vectors)
        ]
        r = await client.post(
            "/v1/admin/fingerprints/ingest",
            json={"feature_type_id": "audio", "features": features},
            headers=ADMIN,
        )
        assert r.json() == {"ingested": 6, "errors": []}
        before = [(await client.get(f"/v1/content/fingerprint/track/t{i + 1}")).json() for i in range(6)]

    async with running_client(create_app(settings)) as client:  # a new process would do the same
        after = [(await client.get(f"/v1/content/fingerprint/track/t{i + 1}")).json() for i in range(6)]
        types = (await client.get("/v1/admin/fingerprints/types", headers=ADMIN)).json()["types"]

    assert after == before
    for i, body in enumerate(after):
        stored = np.array(body["fingerprint"]["audio"]["vector"], dtype=np.float32)
        assert stored.tobytes() == vectors[i].tobytes()
        assert body["fingerprint"]["audio"]["metadata"] == {"i": i}
    assert types[0]["stats"]["track_count"] == 6
