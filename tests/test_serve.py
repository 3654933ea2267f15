"""`fingerprints serve` as a real process on loopback, used as a client would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from fingerprints.demo import generate_catalog, generate_vectors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_writes_an_admin_token_and_answers(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINGERPRINTS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fingerprints", "serve", "--data-dir", str(tmp_path), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            assert proc.poll() is None, "server exited early"
            time.sleep(0.1)
        token_file = tmp_path / "admin-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        r = httpx.post(
            f"{base}/graphql",
            json={"query": 'mutation { bumpFeatureTypeVersion(id: "x") { newVersion } }'},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert httpx.get(f"{base}/v1/admin/fingerprints/types").status_code == 401
        assert "fingerprints_http_requests_total" in httpx.get(f"{base}/metrics").text
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "admin token is in" in out


def test_demo_vectors_cluster_by_artist() -> None:
    demo = generate_catalog(n_artists=10, n_albums=20, n_tracks=400)
    vectors = generate_vectors(demo, 32, seed=1)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    artists = np.array([t["artist_ids"][0] for t in demo["tracks"]])
    similarity = unit @ unit.T
    same = artists[:, None] == artists[None, :]
    np.fill_diagonal(same, False)
    different = artists[:, None] != artists[None, :]
    assert similarity[same].mean() > similarity[different].mean() + 0.2
