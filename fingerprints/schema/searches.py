"""The similar-entity searches of one request, each run once and answered from memory after.

``track(id) { ... similar(...) { entity { ... } } }`` would otherwise read the database in
two rounds: the track and its fields' data, then (once ``similar`` has searched) the similar
entities and theirs, each round a read transaction of its own. ``track(id)`` and the like run
the search their selection asks for first (``catalog.prefetch_similar``) and read everything
in one round; the ``similar`` resolver then gets the outcome of that very search from here.
Searches are keyed by their parameters, so a resolver only ever gets the outcome of exactly
the search it would have run itself; a failed search fails again, with the same error, for
the field that asks for it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from fingerprints import domain
from fingerprints.auth import Principal
from fingerprints.service import similarity
from fingerprints.service.base import Services, call


def similar_params(
    entity_type: domain.EntityType,
    entity_id: str,
    *,
    feature_type: str | None = None,
    features: Sequence[Any] | None = None,
    limit: int = 20,
    min_score: float | None = None,
    target_entity_type: domain.EntityType | None = None,
    exclude_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``find_similar``'s parameters for an entity's ``similar`` field, from the arguments its
    resolver gets (with the resolver's defaults)."""
    return {
        "query": {"entity_type": entity_type, "entity_id": entity_id},
        "feature_type": feature_type,
        "features": [{"feature_type": str(f.feature_type), "weight": f.weight} for f in features]
        if features is not None
        else None,
        "target_entity_type": target_entity_type,
        "limit": limit,
        "min_score": min_score,
        "exclude_ids": [str(e) for e in exclude_ids] if exclude_ids is not None else None,
    }


def _frozen(value: Any) -> Hashable:
    """A key equal for equal parameters (TypeError for anything unhashable)."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    hash(value)
    return (type(value), value)


class Searches:
    """The outcomes (result or exception) of the request's searches, by their parameters."""

    def __init__(self, services: Services, viewer: Principal) -> None:
        self.services = services
        self.viewer = viewer
        self._outcomes: dict[Hashable, similarity.SimilarResult | Exception] = {}

    async def run(self, params: dict[str, Any]) -> similarity.SimilarResult:
        """``find_similar(**params)`` for the request's viewer, searched once per request."""
        try:
            key: Hashable | None = _frozen(params)
        except TypeError:
            key = None
        outcome = self._outcomes.get(key) if key is not None else None
        if outcome is None:
            try:
                outcome = await call(similarity.find_similar, self.services, **params, viewer=self.viewer)
            except Exception as exc:  # noqa: BLE001 - kept for the field that asks, raised below
                outcome = exc
            if key is not None:
                self._outcomes[key] = outcome
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
