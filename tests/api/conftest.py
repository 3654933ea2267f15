"""The API suite runs twice: on SQLite files and on PostgreSQL (see ``tests/backends.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fingerprints.app import create_app
from fingerprints.config import Settings
from tests.backends import BACKENDS, Backend, make_settings
from tests.helpers import running_client


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def settings_for(backend: Backend) -> Callable[..., Settings]:
    """``settings_for(data_dir, **overrides)``: settings on this run's backend."""

    def build(data_dir: Path, **overrides: Any) -> Settings:
        return make_settings(backend, data_dir, **overrides)

    return build


@pytest.fixture
def settings(settings_for: Callable[..., Settings], tmp_path: Path) -> Settings:
    return settings_for(tmp_path / "data")


CustomClient = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Settings]]]


@pytest.fixture
def custom_client(settings_for: Callable[..., Settings], tmp_path: Path) -> CustomClient:
    """``custom_client(**overrides)``: the app on this run's backend with overridden settings."""

    @asynccontextmanager
    async def run(**overrides: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
        settings = settings_for(tmp_path / "d", **overrides)
        async with running_client(create_app(settings)) as c:
            yield c, settings

    return run
