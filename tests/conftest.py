"""Shared fixtures: a temporary data directory, the real ASGI app with its lifespan, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from fingerprints.app import create_app
from fingerprints.config import Settings
from tests.helpers import ADMIN_TOKEN, running_client


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", admin_token=ADMIN_TOKEN)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_client(create_app(settings)) as c:
        yield c


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="session", autouse=True)
def _drop_pg_databases() -> Iterator[None]:
    """PostgreSQL databases made for tests live until the session ends, then go."""
    yield
    from tests.backends import drop_pg_databases

    drop_pg_databases()
