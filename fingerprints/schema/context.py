"""The per-request GraphQL context: the services, who is calling, the raw request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strawberry.types import Info as StrawberryInfo

from fingerprints.auth import Principal
from fingerprints.service.base import Services


@dataclass
class Context:
    services: Services
    principal: Principal
    request: Any
    response: Any


Info = StrawberryInfo[Context, None]
