"""A synthetic but realistic demo catalog with clustered, genre-correlated feature vectors.

Deterministic (fixed seed) and idempotent: seeding twice upserts the same rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from fingerprints.errors import Conflict
from fingerprints.service import aggregation, catalog, feature_types, ingest
from fingerprints.service.base import Services

log = logging.getLogger(__name__)

GENRES = [
    "rock", "indie", "jazz", "blues", "electronic", "techno", "house", "hip hop", "r&b", "soul",
    "classical", "folk", "metal", "punk", "pop", "reggae", "latin", "ambient",
]  # fmt: skip
WORDS = [
    "night", "river", "golden", "echo", "velvet", "fire", "glass", "summer", "neon", "ghost",
    "silver", "electric", "wild", "ocean", "paper", "midnight", "crystal", "broken", "lonely",
    "dream", "city", "shadow", "sun", "stone", "heart", "blue", "red", "storm", "rain", "light",
]  # fmt: skip


@dataclass(frozen=True)
class DemoType:
    id: str
    name: str
    dimension: int
    aggregation_method: str
    description: str


DEMO_TYPES = [
    DemoType("audio_spectrum", "Audio Spectrum Analysis", 128, "weighted_by_duration",
             "MFCC, chroma and spectral features"),
    DemoType("genre_profile", "Genre Profile", 64, "average", "Genre distribution"),
    DemoType("mood_profile", "Mood Profile", 32, "centroid", "Happy, sad, energetic, calm"),
]  # fmt: skip


def _title(rng: np.random.Generator, words: int) -> str:
    return " ".join(str(w).capitalize() for w in rng.choice(WORDS, size=words, replace=False))


def generate_catalog(
    *, n_artists: int = 150, n_albums: int = 500, n_tracks: int = 5000, seed: int = 7
) -> dict[str, Any]:
    """Artists with 1-3 genres, albums by one or two artists, tracks spread over the albums."""
    rng = np.random.default_rng(seed)
    artists = []
    for i in range(n_artists):
        genres = rng.choice(GENRES, size=int(rng.integers(1, 4)), replace=False)
        artists.append(
            {
                "id": f"artist_{i:04d}",
                "name": _title(rng, 2),
                "genres": [str(g) for g in genres],
                "popularity": int(rng.integers(5, 100)),
                "followers_total": int(rng.lognormal(9, 2)),
            }
        )
    albums = []
    album_artist = rng.integers(0, n_artists, size=n_albums)
    for i in range(n_albums):
        ids = [artists[album_artist[i]]["id"]]
        if rng.random() < 0.1:
            ids.append(artists[int(rng.integers(0, n_artists))]["id"])
        albums.append(
            {
                "id": f"album_{i:04d}",
                "name": _title(rng, int(rng.integers(1, 4))),
                "artist_ids": list(dict.fromkeys(ids)),
                "album_type": str(rng.choice(["album", "album", "album", "single", "compilation"])),
                "label": f"{_title(rng, 1)} Records",
                "popularity": int(rng.integers(0, 100)),
                "release_date": f"{int(rng.integers(1960, 2026))}-{int(rng.integers(1, 13)):02d}-01",
            }
        )
    album_of_track = np.sort(rng.integers(0, n_albums, size=n_tracks))
    tracks: list[dict[str, Any]] = []
    number: dict[str, int] = {}
    for i in range(n_tracks):
        album = albums[album_of_track[i]]
        number[album["id"]] = number.get(album["id"], 0) + 1
        featured = []
        if rng.random() < 0.08:
            featured = [artists[int(rng.integers(0, n_artists))]["id"]]
        tracks.append(
            {
                "id": f"track_{i:05d}",
                "name": _title(rng, int(rng.integers(1, 4))),
                "album_id": album["id"],
                "artist_ids": album["artist_ids"][:1],
                "featured_artist_ids": [a for a in featured if a not in album["artist_ids"][:1]],
                "duration_ms": int(np.clip(rng.lognormal(12.2, 0.3), 45_000, 900_000)),
                "popularity": int(np.clip(rng.normal(45, 20), 0, 100)),
                "track_number": number[album["id"]],
                "explicit": bool(rng.random() < 0.12),
                "language": str(rng.choice(["en", "en", "en", "es", "it", "fr", "de"])),
            }
        )
    return {"artists": artists, "albums": albums, "tracks": tracks}


def generate_vectors(demo: dict[str, Any], dimension: int, *, seed: int) -> np.ndarray:
    """One vector per track: its artist's genre centres, an artist offset and per-track noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(GENRES), dimension)).astype(np.float32)
    artist_index = {a["id"]: i for i, a in enumerate(demo["artists"])}
    genre_index = {g: i for i, g in enumerate(GENRES)}
    artist_vectors = np.stack(
        [centres[[genre_index[g] for g in a["genres"]]].mean(axis=0) for a in demo["artists"]]
    )
    artist_vectors += 0.5 * rng.normal(size=artist_vectors.shape).astype(np.float32)
    rows = np.array([artist_index[t["artist_ids"][0]] for t in demo["tracks"]])
    noise = 0.6 * rng.normal(size=(len(rows), dimension)).astype(np.float32)
    return np.ascontiguousarray(artist_vectors[rows] + noise, dtype=np.float32)


def seed_demo(svc: Services, *, n_tracks: int = 5000, n_albums: int = 500, n_artists: int = 150) -> None:
    """Catalog, three feature types, one vector per track and type, a few playlists, aggregates."""
    demo = generate_catalog(n_artists=n_artists, n_albums=n_albums, n_tracks=n_tracks)
    step = svc.settings.max_batch_items
    for kind in ("artists", "albums", "tracks"):  # in that order: albums name artists, tracks albums
        for start in range(0, len(demo[kind]), step):
            result = catalog.upsert_catalog(svc, **{kind: demo[kind][start : start + step]})
            if result.errors:
                raise RuntimeError(f"demo catalog rejected: {result.errors[:3]}")
    for k, demo_type in enumerate(DEMO_TYPES):
        try:
            feature_types.register_feature_type(
                svc,
                id=demo_type.id,
                name=demo_type.name,
                description=demo_type.description,
                dimension=demo_type.dimension,
                aggregation_method=demo_type.aggregation_method,
            )
        except Conflict:
            pass  # already seeded: keep the type, refresh its vectors
        vectors = generate_vectors(demo, demo_type.dimension, seed=100 + k)
        for start in range(0, len(vectors), step):
            chunk = demo["tracks"][start : start + step]
            features = [
                {"entity_type": "track", "entity_id": t["id"], "vector": v}
                for t, v in zip(chunk, vectors[start : start + step], strict=True)
            ]
            ingested = ingest.ingest_feature_maps(svc, feature_type_id=demo_type.id, features=features)
            if ingested.errors:
                raise RuntimeError(f"demo ingest rejected: {ingested.errors[:3]}")
    rng = np.random.default_rng(11)
    for user_id in (1, 2):
        for p in range(3):
            picks = rng.choice(len(demo["tracks"]), size=int(rng.integers(10, 40)), replace=False)
            catalog.upsert_playlist(
                svc,
                id=f"playlist_u{user_id}_{p}",
                user_id=user_id,
                name=_title(rng, 2),
                track_ids=[demo["tracks"][i]["id"] for i in picks],
            )
    job = aggregation.trigger_aggregation(svc, trigger="demo")
    job_id = aggregation.claim_next_job(svc)
    while job_id is not None:
        aggregation.run_job(svc, job_id)
        job_id = aggregation.claim_next_job(svc)
    log.info("demo aggregates: %d albums, artists and playlists recomputed", job.total)
    log.info(
        "demo catalog: %d artists, %d albums, %d tracks, %d feature types",
        len(demo["artists"]), len(demo["albums"]), len(demo["tracks"]), len(DEMO_TYPES),
    )  # fmt: skip
