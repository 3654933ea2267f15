"""The process-wide resources every use case works with, built once in the app lifespan."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio.to_thread

from fingerprints.auth import Authenticator, TokenAuthenticator, load_or_create_admin_token
from fingerprints.config import Settings
from fingerprints.domain import FeatureType
from fingerprints.index.registry import IndexParams, SimilarityIndex
from fingerprints.store import feature_types as types_store
from fingerprints.store.database import Databases, open_databases

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    dbs: Databases
    authenticator: Authenticator
    index: SimilarityIndex
    scheduler: Any = None  # the aggregation Scheduler, while the app runs
    feed: Any = None  # the sync.ChangeFeed applying other replicas' writes, while the app runs
    # Feature types by id (None: unknown), read on every query; cleared by every type write.
    type_cache: dict[str, FeatureType | None] = field(default_factory=dict)


def open_services(settings: Settings) -> Services:
    """Open (and migrate) the databases and load the admin token: what the app and CLI share."""
    dbs = open_databases(settings)
    token, token_path = load_or_create_admin_token(settings.admin_token, settings.data_dir)
    if token_path is not None:
        log.warning("admin token is in %s (set FINGERPRINTS_ADMIN_TOKEN to choose one)", token_path)
    services = Services(
        settings=settings,
        dbs=dbs,
        authenticator=TokenAuthenticator(token),
        index=SimilarityIndex(index_params(settings)),
    )
    return services


def index_params(settings: Settings) -> IndexParams:
    return IndexParams(
        hnsw_threshold=settings.hnsw_threshold,
        m=settings.hnsw_m,
        ef_construction=settings.hnsw_ef_construction,
        ef_search=settings.hnsw_ef_search,
        target_recall=settings.target_recall,
        threads=settings.index_threads,
        build_quiet_s=settings.hnsw_build_quiet_seconds,
    )


def cached_feature_type(svc: Services, type_id: str) -> FeatureType | None:
    """The feature type (None if unknown) from memory; one database read per id until the
    next change to any feature type through this service."""
    try:
        return svc.type_cache[type_id]
    except KeyError:
        with svc.dbs.catalog.read() as conn:
            feature_type = types_store.get_feature_type(conn, type_id=type_id)
        svc.type_cache[type_id] = feature_type
        return feature_type


def now() -> int:
    """Server time in whole seconds, the unit of every ``*_at`` column (spec §6)."""
    return int(time.time())


async def call(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a (blocking, database-bound) use case in a worker thread, off the event loop."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
