"""The per-request GraphQL context: the services, who is calling, the raw request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strawberry.types import Info as StrawberryInfo

from fingerprints.auth import Principal
from fingerprints.schema.loaders import Loaders, make_loaders
from fingerprints.service.base import Services


@dataclass
class Context:
    services: Services
    principal: Principal
    request: Any
    response: Any
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = make_loaders(self.services)  # fresh per request: no shared cache


Info = StrawberryInfo[Context, None]
