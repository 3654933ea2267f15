"""The process-wide resources every use case works with, built once in the app lifespan."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread

from fingerprints.auth import Authenticator
from fingerprints.config import Settings
from fingerprints.store.database import Databases

T = TypeVar("T")


@dataclass
class Services:
    settings: Settings
    dbs: Databases
    authenticator: Authenticator


def now() -> int:
    """Server time in whole seconds, the unit of every ``*_at`` column (spec §6)."""
    return int(time.time())


async def call(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a (blocking, database-bound) use case in a worker thread, off the event loop."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
