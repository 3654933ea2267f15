"""GraphQL over HTTP next to REST and plain orjson, on the demo catalog served by uvicorn.

Seeds the demo catalog (``fingerprints demo --no-serve``, default 100,000 tracks, 10,000 albums,
3,000 artists; timed and reported, not part of any figure), starts ``fingerprints serve`` as a
subprocess on a free loopback port (``FINGERPRINTS_ADMIN_TOKEN`` set, aggregation sweeps off),
waits until ``/readyz`` answers 200 with every index key built, then measures with one
``httpx.Client`` (keep-alive, request bodies encoded before the clock starts):

- track page: (a) the GraphQL query a track page sends (the track, its album and artists, its
  ``audio_spectrum`` fingerprint and 20 similar tracks with their album and artists) next to
  (b) ``GET /v1/content/similar/track/{id}?feature_type=audio_spectrum&limit=20`` alone (the
  REST route requires ``feature_type``). Random track ids (seeded, a fresh one per request),
  the variants taking turns request by request; p50/p95/mean per variant. Goal: p50 of (a)
  <= 2x p50 of (b). Two cheaper GraphQL queries take their turns too, to split (a)'s cost:
  ``track(id) { id }`` (a GraphQL round trip) and ``track(id) { similar { entityId score } }``
  (the same search as (b), through GraphQL).
- fingerprints: (i) GraphQL ``tracks(ids: [100 ids]) { id fingerprint(types: ["audio_spectrum"])
  { vector } }`` over HTTP next to (ii) in-process ``orjson.dumps`` of the very same payload,
  (the response, decoded after the clock stopped: Python float lists; also as float32 arrays
  with ``OPT_SERIALIZE_NUMPY``, what the server's encoder is given), and ``GET /healthz`` as the
  floor of an HTTP round trip. REST has no batch fingerprint route (100 x ``GET
  /v1/content/fingerprint/track/{id}`` is not the same thing), so there is no REST row.

Every latency is client-side wall time from sending the request to having read the whole body.
``--repeats`` rounds of ``--requests`` requests per variant after a warm-up; the figures are
medians over the rounds of each round's p50/p95/mean (2 noisy cores: one round can be unlucky).

    .venv/bin/python -m bench.graphql                        # 100,000 tracks (seeding: minutes)
    .venv/bin/python -m bench.graphql --tracks 5000 --albums 500 --artists 150    # quick
    .venv/bin/python -m bench.graphql --data-dir D --no-seed  # reuse a catalog seeded before
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: ``python bench/graphql.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402

from fingerprints.config import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOAL = 2.0  # p50 of the GraphQL track page / p50 of the REST similar call, at most
SEED = 20240601
ADMIN_TOKEN = "bench-admin-token"
FEATURE_TYPE = "audio_spectrum"
LIMIT = 20
READY_TIMEOUT_S = 3600.0  # HNSW graphs of a big catalog build in the background after start-up
SETTLE_S = 3.0  # the index must look finished this long (a graph's snapshot is saved after it)

TRACK_PAGE_QUERY = """
query TrackPage($id: ID!, $limit: Int!) {
  track(id: $id) {
    id name durationMs
    album { id name }
    artists { role artist { id name } }
    fingerprint(types: ["audio_spectrum"]) { featureType vector }
    similar(featureType: "audio_spectrum", limit: $limit) {
      entityId score
      entity { ... on Track { id name album { id name } artists { artist { id name } } } }
    }
  }
}
"""
MINIMAL_QUERY = "query Minimal($id: ID!) { track(id: $id) { id } }"
SIMILAR_ONLY_QUERY = """
query SimilarOnly($id: ID!, $limit: Int!) {
  track(id: $id) { similar(featureType: "audio_spectrum", limit: $limit) { entityId score } }
}
"""
FINGERPRINTS_QUERY = """
query Fingerprints($ids: [ID!]!) {
  tracks(ids: $ids) { id fingerprint(types: ["audio_spectrum"]) { vector } }
}
"""

# Variant names, in the order of the report.
TRACK_PAGE = "(a) GraphQL track page, 20 similar"
REST_SIMILAR = "(b) REST GET similar, limit 20"
GQL_MINIMAL = "    GraphQL track(id) { id }"
GQL_SIMILAR = "    GraphQL track(id) { similar {entityId score} }"
FP_GRAPHQL = "(i)  GraphQL tracks(100 ids) fingerprint"
FP_ORJSON = "(ii) orjson.dumps, float lists (in-process)"
FP_ORJSON_NP = "     orjson.dumps, float32 arrays (in-process)"
HEALTHZ = "     GET /healthz (HTTP floor)"


# ---------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Stats:
    """Seconds: medians over rounds of each round's p50, p95 and mean; the rounds' p50s."""

    p50: float
    p95: float
    mean: float
    round_p50s: tuple[float, ...]

    @classmethod
    def of(cls, rounds: np.ndarray) -> Stats:  # (repeats, count) seconds
        p50s = np.percentile(rounds, 50, axis=1)
        return cls(
            p50=float(np.median(p50s)),
            p95=float(np.median(np.percentile(rounds, 95, axis=1))),
            mean=float(np.median(rounds.mean(axis=1))),
            round_p50s=tuple(float(x) for x in p50s),
        )


@dataclass
class Result:
    tracks: int
    albums: int
    artists: int
    requests: int
    repeats: int
    entities: int
    machine: dict[str, str]
    seed_seconds: float | None = None  # None: --no-seed
    ready_seconds: float = 0.0
    index: dict[str, str] = field(default_factory=dict)  # key -> kind
    track_page: dict[str, Stats] = field(default_factory=dict)
    fingerprint: dict[str, Stats] = field(default_factory=dict)
    sizes: dict[str, float] = field(default_factory=dict)  # variant -> mean response bytes
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.track_page[TRACK_PAGE].p50 / self.track_page[REST_SIMILAR].p50

    @property
    def round_ratios(self) -> list[float]:
        a, b = self.track_page[TRACK_PAGE].round_p50s, self.track_page[REST_SIMILAR].round_p50s
        return [x / y for x, y in zip(a, b, strict=True)]

    @property
    def passed(self) -> bool:
        return self.ratio <= GOAL

    @property
    def fingerprint_ratio(self) -> float:
        return self.fingerprint[FP_GRAPHQL].p50 / self.fingerprint[FP_ORJSON].p50


# ---------------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without its FINGERPRINTS_* settings, plus the bench's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINGERPRINTS_")}
    env["FINGERPRINTS_ADMIN_TOKEN"] = ADMIN_TOKEN
    env["FINGERPRINTS_AGGREGATION_INTERVAL"] = "0"
    env.update(extra)
    return env


def seed(data_dir: Path, *, tracks: int, albums: int, artists: int, log_path: Path) -> float:
    """``fingerprints demo --no-serve`` in a subprocess; its wall time in seconds."""
    cmd = [sys.executable, "-m", "fingerprints", "demo", "--data-dir", str(data_dir), "--no-serve"]
    cmd += ["--tracks", str(tracks), "--albums", str(albums), "--artists", str(artists)]
    # ``seed_demo`` upserts every artist and album in one call, which the default batch limit
    # (10,000 items) refuses at 3,000 + 10,000: raise the limit for the seeding process only.
    extra = {"FINGERPRINTS_MAX_BATCH_ITEMS": str(albums + artists)} if albums + artists > 10_000 else {}
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        done = subprocess.run(cmd, cwd=ROOT, env=_env(extra), stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"seeding failed ({done.returncode}):\n{_tail(log_path)}")
    return seconds


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _settled(index: dict[str, Any], hnsw_threshold: int) -> bool:
    keys = index["keys"].values()
    return index["status"] == "ready" and not any(
        k["building"] or (k["kind"] == "exact" and k["size"] > hnsw_threshold) for k in keys
    )


class Server:
    """``fingerprints serve`` on a free loopback port; its output goes to a file (a pipe nobody
    reads would fill up with access-log lines and stall the server)."""

    def __init__(self, data_dir: Path, log_path: Path, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cmd = [sys.executable, "-m", "fingerprints", "serve", "--data-dir", str(data_dir)]
        cmd += ["--port", str(self.port)]
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(env), stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float, hnsw_threshold: int, settle: float) -> dict[str, Any]:
        """Poll /readyz until the server is ready *and settled*; the last body.

        /readyz says "ready" whenever no key is building at that instant, but the worker builds
        the HNSW graphs one key after the other (then snapshots each): between two builds, or
        before the first, it is "ready" with graphs still to come. Settled: every key above the
        HNSW threshold has its graph, none is building, and that held for ``settle`` seconds."""
        deadline = time.monotonic() + timeout
        settled_since: float | None = None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{_tail(self.log_path)}")
            body: dict[str, Any] | None = None
            try:
                r = httpx.get(f"{self.base}/readyz", timeout=5)
                if r.status_code == 200:
                    body = r.json()
            except httpx.TransportError:
                pass
            if body is not None and _settled(body["index"], hnsw_threshold):
                settled_since = settled_since or time.monotonic()
                if time.monotonic() - settled_since >= settle:
                    return body
            else:
                settled_since = None
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout:.0f}s:\n{_tail(self.log_path)}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# ---------------------------------------------------------------------------------- requests


def _gql_body(query: str, variables: dict[str, Any]) -> bytes:
    return orjson.dumps({"query": query, "variables": variables})


GQL_HEADERS = {"Content-Type": "application/json"}


def _check_gql(r: httpx.Response) -> dict[str, Any]:
    if r.status_code != 200:
        raise RuntimeError(f"GraphQL: {r.status_code} {r.text[:500]}")
    doc: dict[str, Any] = orjson.loads(r.content)
    if doc.get("errors"):
        raise RuntimeError(f"GraphQL errors: {doc['errors'][:3]}")
    return doc


def _check_track_page(doc: dict[str, Any], track_id: str) -> None:
    t = doc["data"]["track"]
    sim = t["similar"]
    ok = (
        t["id"] == track_id
        and t["album"] is not None
        and t["artists"]
        and len(t["fingerprint"]) == 1
        and len(t["fingerprint"][0]["vector"]) > 0
        and len(sim) == LIMIT
        and all(s["entity"] is not None and s["entity"]["album"] is not None for s in sim)
    )
    if not ok:
        raise RuntimeError(f"unexpected track page for {track_id}: {str(doc)[:500]}")


def _rest_similar_ids(r: httpx.Response) -> list[str]:
    if r.status_code != 200:
        raise RuntimeError(f"REST similar: {r.status_code} {r.text[:500]}")
    results = orjson.loads(r.content)["results"]
    if len(results) != LIMIT:
        raise RuntimeError(f"REST similar: {len(results)} results, want {LIMIT}")
    return [item["entity_id"] for item in results]


def _interleaved(
    fns: dict[str, Callable[[int, int], float]], count: int, repeats: int
) -> dict[str, np.ndarray]:
    """Seconds per request, (repeats, count) per variant. The variants take turns one request
    at a time (a, b, a, b, ...; the first variant rotating from round to round), so noise from
    the machine's other tenants lands on all of them alike. ``fn(round, i)`` times one request
    and returns its seconds (bodies are encoded and responses checked outside that span)."""
    names = list(fns)
    times = {name: np.empty((repeats, count)) for name in names}
    for r in range(repeats):
        gc.collect()
        order = names[r % len(names) :] + names[: r % len(names)]
        for i in range(count):
            for name in order:
                times[name][r, i] = fns[name](r, i)
    return times


# ---------------------------------------------------------------------------------- the run


def _machine() -> dict[str, str]:
    def version(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "-"

    return {
        "nproc": str(os.cpu_count()),
        "python": sys.version.split()[0],
        "packages": ", ".join(
            f"{p} {version(p)}"
            for p in ("uvicorn", "starlette", "strawberry-graphql", "graphql-core", "httpx", "orjson")
        ),
        "uvicorn extras": ", ".join(
            f"{p} {'yes' if version(p) != '-' else 'no'}" for p in ("uvloop", "httptools")
        ),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def run(
    *,
    tracks: int = 100_000,
    albums: int = 10_000,
    artists: int = 3_000,
    requests: int = 300,
    warmup: int = 30,
    repeats: int = 3,
    entities: int = 100,
    fp_requests: int | None = None,
    breakdown: bool = True,
    data_dir: Path | None = None,
    no_seed: bool = False,
    server_env: dict[str, str] | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
    settle: float = SETTLE_S,
    out: Any = sys.stdout,
) -> Result:
    """Seed, serve, measure both parts, print the report; the figures."""
    if min(tracks, albums, artists, requests, repeats, entities) < 1 or warmup < 0:
        raise ValueError("sizes and counts must be positive")
    if entities > tracks:
        raise ValueError("--entities must be at most --tracks")
    if no_seed and data_dir is None:
        raise ValueError("--no-seed needs --data-dir")
    fp_count = requests if fp_requests is None else fp_requests
    cleanup = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="fingerprints-bench-")) if data_dir is None else data_dir
    root.mkdir(parents=True, exist_ok=True)
    catalog_dir = root / "catalog"

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    result = Result(
        tracks=tracks,
        albums=albums,
        artists=artists,
        requests=requests,
        repeats=repeats,
        entities=entities,
        machine=_machine(),
    )
    server: Server | None = None
    try:
        say(
            f"graphql benchmark: demo catalog {tracks:,} tracks, {albums:,} albums, {artists:,} artists; "
            f"{repeats} x {requests} requests per variant after {warmup} warm-up"
        )
        say(f"data dir: {catalog_dir}{' (temporary)' if cleanup else ''}")
        if no_seed:
            if not (catalog_dir / "catalog.db").exists():
                raise SystemExit(f"--no-seed: no catalog in {catalog_dir}")
        else:
            say("seeding (fingerprints demo --no-serve) ...")
            result.seed_seconds = seed(
                catalog_dir, tracks=tracks, albums=albums, artists=artists, log_path=root / "seed.log"
            )
            say(f"  seeded in {result.seed_seconds:.1f}s")
            if albums + artists > 10_000:
                result.notes.append(
                    f"seeded with FINGERPRINTS_MAX_BATCH_ITEMS={albums + artists}: seed_demo upserts all "
                    "artists and albums in one call, over the default limit of 10,000 items"
                )

        t0 = time.perf_counter()
        server = Server(catalog_dir, root / "serve.log", server_env or {})
        env = server_env or {}
        threshold = int(
            env.get("FINGERPRINTS_HNSW_THRESHOLD", Settings.model_fields["hnsw_threshold"].default)
        )
        ready = server.wait_ready(ready_timeout, threshold, settle)
        graphs = sum(k["kind"] == "hnsw" for k in ready["index"]["keys"].values())
        result.ready_seconds = time.perf_counter() - t0
        result.index = {
            key: _kind(k) for key, k in ready["index"]["keys"].items() if key == f"{FEATURE_TYPE}/track"
        }
        result.index["HNSW graphs"] = f"{graphs} of {len(ready['index']['keys'])} keys"
        say(f"server ready in {result.ready_seconds:.1f}s on {server.base}; index {result.index}")

        rng = np.random.default_rng(SEED)
        with httpx.Client(base_url=server.base, timeout=120) as client:
            _track_page_part(client, result, rng, tracks, warmup, breakdown, say)
            _fingerprint_part(client, result, rng, tracks, warmup, fp_count, say)
        result.machine["loadavg after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        _report(result, say)
        return result
    finally:
        if server is not None:
            server.stop()
        if cleanup:
            shutil.rmtree(root, ignore_errors=True)


def _kind(key: dict[str, Any]) -> str:
    if key.get("m") is None:
        return str(key["kind"])
    return f"{key['kind']} (M={key['m']}, ef={key['ef_search']}, recall {key['recall']})"


def _track_ids(rng: np.random.Generator, tracks: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, tracks, size=shape)


def _name(i: int) -> str:
    return f"track_{i:05d}"


def _track_page_part(
    client: httpx.Client,
    result: Result,
    rng: np.random.Generator,
    tracks: int,
    warmup: int,
    breakdown: bool,
    say: Callable[[str], None],
) -> None:
    count, repeats = result.requests, result.repeats
    clock = time.perf_counter

    def gql(query: str, variables: Callable[[str], dict[str, Any]]) -> Callable[[str], float]:
        def one(track_id: str) -> float:
            body = _gql_body(query, variables(track_id))
            t0 = clock()
            r = client.post("/graphql", content=body, headers=GQL_HEADERS)
            seconds = clock() - t0
            doc = _check_gql(r)
            if doc["data"]["track"] is None:
                raise RuntimeError(f"no track {track_id}")
            if query is TRACK_PAGE_QUERY:
                _check_track_page(doc, track_id)
            sizes[query].append(len(r.content))
            return seconds

        return one

    def rest(track_id: str) -> float:
        url = f"/v1/content/similar/track/{track_id}?feature_type={FEATURE_TYPE}&limit={LIMIT}"
        t0 = clock()
        r = client.get(url)
        seconds = clock() - t0
        _rest_similar_ids(r)
        sizes["rest"].append(len(r.content))
        return seconds

    sizes: dict[str, list[int]] = {
        TRACK_PAGE_QUERY: [],
        MINIMAL_QUERY: [],
        SIMILAR_ONLY_QUERY: [],
        "rest": [],
    }
    one_by_name: dict[str, Callable[[str], float]] = {
        TRACK_PAGE: gql(TRACK_PAGE_QUERY, lambda t: {"id": t, "limit": LIMIT}),
        REST_SIMILAR: rest,
    }
    if breakdown:
        one_by_name[GQL_MINIMAL] = gql(MINIMAL_QUERY, lambda t: {"id": t})
        one_by_name[GQL_SIMILAR] = gql(SIMILAR_ONLY_QUERY, lambda t: {"id": t, "limit": LIMIT})
    names = list(one_by_name)

    # The same search both ways: GraphQL similar { entityId } == REST results, for a few ids.
    for i in _track_ids(rng, tracks, (5,)):
        tid = _name(int(i))
        doc = _check_gql(
            client.post(
                "/graphql",
                content=_gql_body(TRACK_PAGE_QUERY, {"id": tid, "limit": LIMIT}),
                headers=GQL_HEADERS,
            )
        )
        _check_track_page(doc, tid)
        url = f"/v1/content/similar/track/{tid}?feature_type={FEATURE_TYPE}&limit={LIMIT}"
        if [s["entityId"] for s in doc["data"]["track"]["similar"]] != _rest_similar_ids(client.get(url)):
            raise RuntimeError(f"GraphQL and REST disagree on the tracks similar to {tid}")
    result.checks.append("GraphQL similar == REST similar (same ids, same order) for 5 random tracks")

    say(f"track page: warm-up ({warmup} per variant) ...")
    for i in _track_ids(rng, tracks, (warmup,)):
        for name in names:
            one_by_name[name](_name(int(i)))
    for v in sizes.values():
        v.clear()

    # A fresh random track per request, per variant and round.
    ids = _track_ids(rng, tracks, (len(names), repeats, count))
    say(f"track page: {repeats} rounds x {count} requests x {len(names)} variants ...")

    def turn(j: int, one: Callable[[str], float]) -> Callable[[int, int], float]:
        return lambda r, i: one(_name(int(ids[j, r, i])))

    fns = {name: turn(j, one_by_name[name]) for j, name in enumerate(names)}
    times = _interleaved(fns, count, repeats)
    result.track_page = {name: Stats.of(times[name]) for name in names}
    size_of = {
        TRACK_PAGE: TRACK_PAGE_QUERY,
        REST_SIMILAR: "rest",
        GQL_MINIMAL: MINIMAL_QUERY,
        GQL_SIMILAR: SIMILAR_ONLY_QUERY,
    }
    for name in names:
        result.sizes[name] = float(np.mean(sizes[size_of[name]]))


def _fingerprint_part(
    client: httpx.Client,
    result: Result,
    rng: np.random.Generator,
    tracks: int,
    warmup: int,
    count: int,
    say: Callable[[str], None],
) -> None:
    repeats, entities = result.repeats, result.entities
    clock = time.perf_counter
    # One payload per GraphQL request, decoded after its clock stopped; the orjson turns that
    # follow encode exactly that payload (the same data as the response just timed).
    last: dict[str, Any] = {}
    sizes: list[int] = []

    def graphql(r: int, i: int) -> float:
        chosen = rng.choice(tracks, size=entities, replace=False)
        ids = [_name(int(x)) for x in chosen]
        body = _gql_body(FINGERPRINTS_QUERY, {"ids": ids})
        t0 = clock()
        resp = client.post("/graphql", content=body, headers=GQL_HEADERS)
        seconds = clock() - t0
        doc = _check_gql(resp)
        got = doc["data"]["tracks"]
        if [t["id"] for t in got] != ids or any(len(t["fingerprint"]) != 1 for t in got):
            raise RuntimeError("fingerprint query: wrong tracks or missing fingerprints")
        last["lists"] = doc
        last["arrays"] = {
            "data": {
                "tracks": [
                    {
                        "id": t["id"],
                        "fingerprint": [{"vector": np.asarray(t["fingerprint"][0]["vector"], np.float32)}],
                    }
                    for t in got
                ]
            }
        }
        last["bytes"] = resp.content
        sizes.append(len(resp.content))
        return seconds

    def dumps_lists(r: int, i: int) -> float:
        t0 = clock()
        orjson.dumps(last["lists"])
        return clock() - t0

    def dumps_arrays(r: int, i: int) -> float:
        t0 = clock()
        orjson.dumps(last["arrays"], option=orjson.OPT_SERIALIZE_NUMPY)
        return clock() - t0

    def healthz(r: int, i: int) -> float:
        t0 = clock()
        resp = client.get("/healthz")
        seconds = clock() - t0
        if resp.status_code != 200:
            raise RuntimeError(f"/healthz: {resp.status_code}")
        return seconds

    say(f"fingerprints: warm-up ({warmup} per variant) ...")
    fns = {FP_GRAPHQL: graphql, FP_ORJSON: dumps_lists, FP_ORJSON_NP: dumps_arrays, HEALTHZ: healthz}
    for i in range(warmup):
        for fn in fns.values():
            fn(0, i)
    sizes.clear()

    lists_same = orjson.dumps(last["lists"]) == last["bytes"]
    arrays_same = orjson.dumps(last["arrays"], option=orjson.OPT_SERIALIZE_NUMPY) == last["bytes"]
    dims = {len(t["fingerprint"][0]["vector"]) for t in last["lists"]["data"]["tracks"]}
    result.checks.append(
        f"fingerprint payload: {entities} x {'/'.join(map(str, sorted(dims)))} floats; orjson output "
        f"byte-identical to the GraphQL body: float lists {'yes' if lists_same else 'NO'}, "
        f"float32 arrays {'yes' if arrays_same else 'NO'}"
    )

    say(f"fingerprints: {repeats} rounds x {count} requests x {len(fns)} variants ...")
    # The GraphQL request must come right before the orjson turns that reuse its payload: keep
    # this order in every round (no rotation) and start with the request.
    times = {name: np.empty((repeats, count)) for name in fns}
    for r in range(repeats):
        gc.collect()
        for i in range(count):
            for name, fn in fns.items():
                times[name][r, i] = fn(r, i)
    result.fingerprint = {name: Stats.of(t) for name, t in times.items()}
    result.sizes[FP_GRAPHQL] = float(np.mean(sizes))


# ---------------------------------------------------------------------------------- report


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:,.2f}"


def _report(r: Result, say: Callable[[str], None]) -> None:
    m = r.machine
    say("")
    say(
        f"== graphql benchmark: demo catalog {r.tracks:,} tracks / {r.albums:,} albums / "
        f"{r.artists:,} artists; {r.repeats} rounds x {r.requests} requests per variant"
    )
    say(f"machine: nproc {m['nproc']}, python {m['python']}; {m['packages']}")
    say(
        f"uvicorn extras: {m['uvicorn extras']}; loadavg before {m['loadavg']}, "
        f"after {m.get('loadavg after', '?')}"
    )
    seeded = "skipped (--no-seed)" if r.seed_seconds is None else f"{r.seed_seconds:.1f}s"
    index = ", ".join(f"{k}: {v}" for k, v in r.index.items())
    say(f"seeding {seeded}; server ready {r.ready_seconds:.1f}s; index {index}")
    say("latency: client wall time per request over loopback HTTP, ms; median over rounds")
    say("")
    head = f"  {'variant':50}{'p50':>9}{'p95':>9}{'mean':>9}{'/ (b) p50':>11}{'bytes':>9}"
    say(f"track page  ((b) = GET /v1/content/similar/track/{{id}}?feature_type={FEATURE_TYPE}&limit={LIMIT})")
    say(head)
    base = r.track_page[REST_SIMILAR].p50
    for name, s in r.track_page.items():
        say(
            f"  {name:50}{_ms(s.p50):>9}{_ms(s.p95):>9}{_ms(s.mean):>9}{s.p50 / base:>10.2f}x"
            f"{r.sizes.get(name, 0):>9,.0f}"
        )
    rounds = ", ".join(f"{x:.2f}" for x in r.round_ratios)
    say(f"  ratio (a) / (b), p50: {r.ratio:.2f}  (rounds: {rounds})")
    say(f"  goal (a) <= {GOAL} x (b): {'PASS' if r.passed else 'FAIL'}")
    say("")
    say(f"fingerprints of {r.entities} tracks")
    say(f"  {'variant':50}{'p50':>9}{'p95':>9}{'mean':>9}{'/ (ii) p50':>11}{'bytes':>9}")
    base = r.fingerprint[FP_ORJSON].p50
    for name, s in r.fingerprint.items():
        size = f"{r.sizes[name]:>9,.0f}" if name in r.sizes else f"{'':>9}"
        say(f"  {name:50}{_ms(s.p50):>9}{_ms(s.p95):>9}{_ms(s.mean):>9}{s.p50 / base:>11.1f}x{size}")
    say(f"  ratio (i) / (ii), p50: {r.fingerprint_ratio:.1f}")
    say("  (iii) REST: no batch fingerprint route; 100 x GET /v1/content/fingerprint/... is not comparable")
    say("")
    for check in r.checks:
        say(f"verified: {check}")
    for note in r.notes:
        say(f"note: {note}")


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.graphql",
        description="GraphQL track page vs REST similar, and GraphQL fingerprints vs plain orjson, "
        "over HTTP against `fingerprints serve` on the demo catalog.",
    )
    parser.add_argument("--tracks", type=int, default=100_000, help="demo tracks (default 100000)")
    parser.add_argument("--albums", type=int, default=10_000, help="demo albums (default 10000)")
    parser.add_argument("--artists", type=int, default=3_000, help="demo artists (default 3000)")
    parser.add_argument(
        "--requests", type=int, default=300, help="timed requests per variant and round (default 300)"
    )
    parser.add_argument(
        "--fp-requests", type=int, default=None, help="the same for the fingerprint part (default --requests)"
    )
    parser.add_argument("--warmup", type=int, default=30, help="warm-up requests per variant (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians reported (default 3)")
    parser.add_argument(
        "--entities", type=int, default=100, help="tracks per fingerprint request (default 100)"
    )
    parser.add_argument(
        "--no-breakdown", action="store_true", help="only (a) and (b), not the two cheaper GraphQL queries"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the catalog (subdir catalog/) and the logs go, kept; default a temp dir, removed",
    )
    parser.add_argument(
        "--no-seed", action="store_true", help="serve the catalog already in --data-dir as it is"
    )
    parser.add_argument(
        "--env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the server, e.g. FINGERPRINTS_LOG_LEVEL=warning (repeatable)",
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=READY_TIMEOUT_S, help="seconds to wait for /readyz"
    )
    args = parser.parse_args(argv)
    run(
        tracks=args.tracks,
        albums=args.albums,
        artists=args.artists,
        requests=args.requests,
        warmup=args.warmup,
        repeats=args.repeats,
        entities=args.entities,
        fp_requests=args.fp_requests,
        breakdown=not args.no_breakdown,
        data_dir=args.data_dir,
        no_seed=args.no_seed,
        server_env=dict(args.env),
        ready_timeout=args.ready_timeout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
