"""The per-request GraphQL context: the services, who is calling, the raw request, and the
request's own loaders and searches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strawberry.types import Info as StrawberryInfo

from fingerprints.auth import Principal
from fingerprints.schema.loaders import Loaders, make_loaders
from fingerprints.schema.searches import Searches
from fingerprints.service.base import Services


@dataclass
class Context:
    services: Services
    principal: Principal
    request: Any
    response: Any
    loaders: Loaders = field(init=False)
    searches: Searches = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = make_loaders(self.services)  # fresh per request: no shared cache
        self.searches = Searches(self.services, self.principal)


Info = StrawberryInfo[Context, None]
