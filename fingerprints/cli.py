"""The ``fingerprints`` command: serve the API, or seed a demo catalog and serve it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fingerprints.config import Settings

DESCRIPTION = """\
Fingerprints of a music catalog: named float vectors per track, album, artist and playlist,
served over GraphQL (/graphql) and REST (/v1). Every setting can also be given in the
environment as FINGERPRINTS_<NAME> (e.g. FINGERPRINTS_ADMIN_TOKEN, FINGERPRINTS_MAX_BATCH_ITEMS);
flags win over the environment.
"""


def _settings(args: argparse.Namespace) -> Settings:
    given: dict[str, Any] = {
        key: value
        for key, value in (("data_dir", args.data_dir), ("host", args.host), ("port", args.port))
        if value is not None
    }
    return Settings(**given)


def _serve(settings: Settings) -> None:
    import uvicorn

    from fingerprints.app import create_app

    print(f"serving on http://{settings.host}:{settings.port}  (GraphQL at /graphql, REST at /v1)")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


def cmd_serve(args: argparse.Namespace) -> None:
    _serve(_settings(args))


def cmd_demo(args: argparse.Namespace) -> None:
    from fingerprints.demo import seed_demo
    from fingerprints.service.base import open_services

    settings = _settings(args)
    services = open_services(settings)
    try:
        print(f"seeding the demo catalog into {settings.data_dir.resolve()} ...")
        seed_demo(services, n_tracks=args.tracks, n_albums=args.albums, n_artists=args.artists)
    finally:
        services.dbs.dispose()
    if args.no_serve:
        return
    print(f"open http://{settings.host}:{settings.port}/graphql for GraphiQL")
    _serve(settings)


def cmd_aggregate(args: argparse.Namespace) -> None:
    from fingerprints.service import aggregation
    from fingerprints.service.base import open_services

    services = open_services(_settings(args))
    try:
        job = aggregation.trigger_aggregation(
            services,
            feature_type_id=args.feature_type,
            entity_types=args.entity_types.split(",") if args.entity_types else None,
            force=args.force,
            trigger="cli",
        )
        print(f"job {job.id}: {job.total} aggregates to recompute")
        job_id = aggregation.claim_next_job(services)
        while job_id is not None:  # this job and any queued before it
            finished = aggregation.run_job(services, job_id)
            print(f"job {finished.id}: {finished.status}, {finished.processed}/{finished.total}")
            for error in finished.errors:
                print(f"  error: {error}")
            job_id = aggregation.claim_next_job(services)
    finally:
        services.dbs.dispose()


def cmd_stats(args: argparse.Namespace) -> None:
    import orjson

    from fingerprints.service.base import open_services
    from fingerprints.service.stats import fingerprint_stats

    services = open_services(_settings(args))
    try:
        result = fingerprint_stats(services)
    finally:
        services.dbs.dispose()
    body = {
        "feature_types": {
            t: {e.value: asdict(c) for e, c in per_type.items()}
            for t, per_type in result.feature_types.items()
        },
        "storage_bytes": result.storage_bytes,
        "last_aggregation": result.last_aggregation,
    }
    print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fingerprints", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, default_dir: str | None) -> None:
        p.add_argument(
            "--data-dir",
            type=Path,
            default=default_dir,
            help="directory of catalog.db, user.db and admin-token (default ./data)",
        )
        p.add_argument("--host", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
        p.add_argument("--port", type=int, help="TCP port (default 8000)")

    serve = sub.add_parser("serve", help="serve the API (GraphQL /graphql, REST /v1, /healthz, /readyz)")
    common(serve, None)
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser(
        "demo",
        help="seed a synthetic catalog (5,000 tracks, 3 feature types) and serve it; idempotent",
    )
    common(demo, "./data")
    demo.add_argument("--tracks", type=int, default=5000, help="number of tracks (default 5000)")
    demo.add_argument("--albums", type=int, default=500, help="number of albums (default 500)")
    demo.add_argument("--artists", type=int, default=150, help="number of artists (default 150)")
    demo.add_argument("--no-serve", action="store_true", help="only seed, do not start the server")
    demo.set_defaults(func=cmd_demo)

    agg = sub.add_parser(
        "aggregate", help="recompute stale (or, with --force, all) album/artist/playlist fingerprints now"
    )
    common(agg, None)
    agg.add_argument("--feature-type", help="only this feature type (default: every aggregating type)")
    agg.add_argument("--entity-types", help="comma-separated: album,artist,playlist (default: all three)")
    agg.add_argument("--force", action="store_true", help="recompute even aggregates that are not stale")
    agg.set_defaults(func=cmd_aggregate)

    stats = sub.add_parser("stats", help="print coverage per feature type and entity type as JSON")
    common(stats, None)
    stats.set_defaults(func=cmd_stats)
    return parser


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads() -> None:
    """Give numpy's BLAS ``FINGERPRINTS_BLAS_THREADS`` threads (default 1; 0 keeps the
    library's own choice), before numpy loads. A server runs many small products at once,
    one per request thread: BLAS threads per product then fight over the same cores (measured
    on 2 cores, 16 concurrent exact searches: 2 QPS with the default, 85 with one thread)."""
    threads = os.environ.get("FINGERPRINTS_BLAS_THREADS", "1")
    if threads == "0" or "numpy" in sys.modules:
        return
    for variable in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(variable, threads)


def main(argv: list[str] | None = None) -> None:
    limit_blas_threads()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.func(args)


if __name__ == "__main__":
    main()
