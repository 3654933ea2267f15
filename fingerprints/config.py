"""Settings: one object, read from the environment (``FINGERPRINTS_*``) and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the service can be tuned with; each field is ``FINGERPRINTS_<NAME>`` in the env."""

    model_config = SettingsConfigDict(env_prefix="FINGERPRINTS_", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Directory holding catalog.db, user.db.")
    host: str = "127.0.0.1"
    port: int = 8000
    catalog_url: str | None = Field(
        None, description="SQLAlchemy URL of the catalog database (default: <data-dir>/catalog.db)."
    )
    user_url: str | None = Field(
        None, description="SQLAlchemy URL of the user database (default: <data-dir>/user.db)."
    )
    admin_token: str | None = Field(
        None, description="Bearer token for admin operations; generated into <data-dir> if unset."
    )
    sqlite_busy_timeout_ms: int = Field(10_000, ge=0)

    max_batch_items: int = Field(10_000, ge=1, description="Most items in one ingest batch.")
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Largest request body.")

    graphiql: bool = Field(True, description="Serve the GraphiQL IDE at /graphql.")
    introspection: bool = Field(True, description="Allow GraphQL introspection queries.")
    graphql_max_depth: int = Field(12, ge=1)
    graphql_max_aliases: int = Field(30, ge=1)
    graphql_max_tokens: int = Field(5_000, ge=10)

    hnsw_threshold: int = Field(
        50_000, ge=1, description="Vectors per (feature type, entity type) above which search uses HNSW."
    )
    hnsw_m: int | None = Field(None, ge=4, le=128, description="HNSW M; unset: chosen to meet target_recall.")
    hnsw_ef_construction: int = Field(200, ge=10)
    hnsw_ef_search: int | None = Field(
        None, ge=1, description="HNSW ef at query time; unset: tuned to meet target_recall."
    )
    target_recall: float = Field(0.95, gt=0, le=1, description="Recall@10 the HNSW indexes are tuned to.")
    index_load: Literal["eager", "lazy"] = Field(
        "eager", description="Build indexes at start-up (eager) or on first use (lazy)."
    )
    index_snapshots: bool = Field(True, description="Save indexes under <data-dir>/index for fast restarts.")
    index_threads: int = Field(2, ge=1, description="Threads for HNSW graph building.")
    hnsw_build_quiet_seconds: float = Field(
        1.0,
        ge=0,
        description="A key's first HNSW graph is built once it has had no writes for this long: a "
        "bulk ingest gets one build over everything at its end (the exact index answers meanwhile).",
    )

    aggregation_interval: float = Field(
        60, ge=0, description="Seconds between sweeps that recompute stale aggregates; 0 disables them."
    )
    aggregation_main_artists_only: bool = Field(
        False, description="Aggregate an artist from the tracks where it is a main artist only."
    )

    sync_interval: float = Field(
        1.0,
        gt=0,
        description="Seconds between looks at the change log for other replicas' writes "
        "(PostgreSQL also wakes replicas at once with LISTEN/NOTIFY).",
    )
    change_log_keep: int = Field(
        100_000, ge=1_000, description="Newest change-log entries kept (older ones are pruned)."
    )
    job_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a replica's claim on a running aggregation job holds without a heartbeat.",
    )

    blas_threads: int = Field(
        1,
        ge=0,
        description="Threads numpy's BLAS may use per product in the `fingerprints` command "
        "(read before numpy loads; 0: the library's default). One suits a server, which runs "
        "many small products at once.",
    )

    log_level: str = "info"

    def resolved_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{self.data_dir / 'catalog.db'}"

    def resolved_user_url(self) -> str:
        return self.user_url or f"sqlite:///{self.data_dir / 'user.db'}"
