"""The process-wide resources every use case works with, built once in the app lifespan."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fingerprints.auth import Authenticator
from fingerprints.config import Settings
from fingerprints.store.database import Databases


@dataclass
class Services:
    settings: Settings
    dbs: Databases
    authenticator: Authenticator


def now() -> int:
    """Server time in whole seconds, the unit of every ``*_at`` column (spec §6)."""
    return int(time.time())
