"""Similarity queries (spec §6.3, §7; design §3 Q8, §4): by entity, raw vector or centroid,
single- or multi-feature, cross-entity, filtered, and batched with de-duplication."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import NamedTuple

import numpy as np

from fingerprints.auth import Principal
from fingerprints.domain import (
    Distance,
    EntityType,
    FeatureType,
    check_vector_for_type,
    coerce_vector,
    parse_enum,
)
from fingerprints.errors import NotFound, ValidationError, VectorError
from fingerprints.index.base import Hits, prepare, prepare_query, prepare_valid_query
from fingerprints.index.exact import ExactIndex
from fingerprints.index.registry import KeyIndex, take
from fingerprints.service import indexing
from fingerprints.service.base import Services, cached_feature_type
from fingerprints.service.fingerprints import check_playlist_visible
from fingerprints.service.inputs import (
    MAX_ID_LENGTH,
    as_bool,
    as_id,
    as_int,
    as_list,
    as_object,
    check_keys,
)
from fingerprints.store import catalog as catalog_store
from fingerprints.store import feature_maps as maps_store

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
MULTI_FEATURE_FETCH = 3  # candidates per feature = limit x this, then rescored exactly
FLOAT32 = np.dtype(np.float32)
QUERY_KEYS = frozenset(("entity_type", "entity_id", "vector", "entities"))


@dataclass(frozen=True, slots=True)
class EntityRef:
    entity_type: EntityType
    entity_id: str


@dataclass(frozen=True, slots=True)
class Weighted:
    feature_type: FeatureType
    weight: float


class SimilarItem(NamedTuple):
    """One result. A tuple so that a result list is built in C (``_items``), not per hit."""

    entity_type: EntityType
    entity_id: str
    score: float
    distance: float | None = None


@dataclass(slots=True)
class SimilarResult:
    target_entity_type: EntityType
    features: list[Weighted]
    results: list[SimilarItem] = field(default_factory=list)


# ------------------------------------------------------------------ input parsing


def parse_ref(raw: object, *, field: str) -> EntityRef:
    ref = as_object(raw, field=field)
    check_keys(ref, ("entity_type", "entity_id"), where=f"{field}.")
    return EntityRef(
        parse_enum(EntityType, ref.get("entity_type"), field=f"{field}.entity_type"),
        as_id(ref.get("entity_id"), field=f"{field}.entity_id"),
    )


def parse_limit(value: object, *, field: str = "limit", default: int = DEFAULT_LIMIT) -> int:
    return default if value is None else as_int(value, field=field, minimum=1, maximum=MAX_LIMIT)


def parse_min_score(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ValidationError("min_score must be a finite number", field="min_score")
    return float(value)


def _feature_type(svc: Services, type_id: object, *, field: str) -> FeatureType:
    tid = as_id(type_id, field=field)
    feature_type = cached_feature_type(svc, tid)
    if feature_type is None:
        raise NotFound(f"unknown feature type {tid!r}", field=field)
    if not feature_type.is_active:
        raise NotFound(f"feature type {tid!r} is inactive", field=field)
    return feature_type


def parse_features(svc: Services, feature_type: object, features: object) -> list[Weighted]:
    """``feature_type`` (one) or ``features: [{feature_type, weight}]`` (spec §7.2), not both."""
    if (feature_type is None) == (features is None):
        raise ValidationError("give either feature_type or features", field="feature_type")
    if feature_type is not None:
        return [Weighted(_feature_type(svc, feature_type, field="feature_type"), 1.0)]
    parsed = []
    for i, raw in enumerate(as_list(features, field="features")):
        item = as_object(raw, field=f"features[{i}]")
        check_keys(item, ("feature_type", "weight"), where=f"features[{i}].")
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < float("inf"):
            raise ValidationError("weight must be a positive number", field=f"features[{i}].weight")
        parsed.append(
            Weighted(
                _feature_type(svc, item.get("feature_type"), field=f"features[{i}].feature_type"), weight
            )
        )
    if not parsed:
        raise ValidationError("features is empty", field="features")
    if len({w.feature_type.id for w in parsed}) != len(parsed):
        raise ValidationError("a feature type is listed twice", field="features")
    return parsed


def _target(features: list[Weighted], target: object, default: EntityType) -> EntityType:
    entity_type = default if target is None else parse_enum(EntityType, target, field="target_entity_type")
    for w in features:
        if not w.feature_type.applies(entity_type):
            raise ValidationError(
                f"feature type {w.feature_type.id!r} does not apply to {entity_type.value}",
                field="target_entity_type",
            )
    return entity_type


# ------------------------------------------------------------------ query vectors


def _entity_vectors(
    svc: Services, refs: Sequence[EntityRef], feature_type: FeatureType, viewer: Principal
) -> np.ndarray:
    """The stored vectors of some entities for one feature type (one read per entity type);
    404 naming what is missing."""
    found: dict[EntityRef, np.ndarray] = {}
    for entity_type in dict.fromkeys(r.entity_type for r in refs):
        ids = list(dict.fromkeys(r.entity_id for r in refs if r.entity_type is entity_type))
        if entity_type is EntityType.PLAYLIST:
            for playlist_id in ids:
                check_playlist_visible(svc, playlist_id=playlist_id, viewer=viewer)
        with svc.dbs.for_entity(entity_type).read() as conn:
            maps = maps_store.maps_of(
                conn, entity_type=entity_type, entity_ids=ids, type_ids=[feature_type.id]
            )
            missing = [i for i in ids if i not in maps]
            known = (
                catalog_store.existing_ids(conn, entity_type=entity_type, ids=missing) if missing else set()
            )
        for entity_id in missing:
            if entity_id not in known:
                raise NotFound(f"{entity_type.value} {entity_id!r} not found", field="entity_id")
            raise NotFound(
                f"{entity_type.value} {entity_id!r} has no {feature_type.id!r} feature map",
                field="feature_type",
            )
        found.update({EntityRef(entity_type, i): m[0].vector for i, m in maps.items()})
    return np.stack([found[r] for r in refs])


def _raw_vector(value: object, feature_type: FeatureType) -> np.ndarray:
    dimension = feature_type.dimension
    if isinstance(value, np.ndarray) and value.dtype is FLOAT32 and value.shape == (dimension,):
        # The in-process case, checked without a numpy ufunc (a single query pays per numpy
        # call): float32 values summed as Python floats cannot overflow, so a finite sum means
        # finite values; ``any`` rules out the all-zero vector under cosine.
        values = value.tolist()
        if math.isfinite(sum(values)) and (feature_type.distance is not Distance.COSINE or any(values)):
            return value
    try:
        vector = coerce_vector(value)
        check_vector_for_type(vector, feature_type)
    except VectorError as exc:
        raise ValidationError(exc.message, field="query.vector") from None
    return vector


def _centroid(vectors: np.ndarray, feature_type: FeatureType) -> np.ndarray:
    """Mean of the query vectors (of their unit vectors under cosine)."""
    centroid = prepare(vectors, feature_type.distance).mean(axis=0)
    if not np.isfinite(centroid).all() or (feature_type.distance.value == "cosine" and not centroid.any()):
        raise ValidationError("the query entities' vectors cancel out", field="query.entities")
    return centroid


# ------------------------------------------------------------------ searching


def _search(
    svc: Services,
    features: list[Weighted],
    queries: Mapping[str, np.ndarray],
    target: EntityType,
    k: int,
    exclude: set[str],
    min_score: float | None,
    viewer: Principal,
) -> Hits:
    """One query: a single feature straight from its index, several rescored exactly (§7.2)."""
    if len(features) == 1:
        feature_type = features[0].feature_type
        index = indexing.key_index(svc, feature_type, target)
        allowed = _visible_playlists(svc, target, viewer)
        if allowed is not None:
            return _search_within(index, allowed, queries[feature_type.id], k, exclude, min_score)
        return index.search(queries[feature_type.id], k, exclude=exclude, min_score=min_score)
    indexes = {w.feature_type.id: indexing.key_index(svc, w.feature_type, target) for w in features}
    allowed = _visible_playlists(svc, target, viewer)
    return _multi_feature(features, indexes, queries, k, exclude, min_score, allowed)


def _multi_feature(
    features: list[Weighted],
    indexes: Mapping[str, KeyIndex],
    queries: Mapping[str, np.ndarray],
    k: int,
    exclude: set[str],
    min_score: float | None,
    allowed: list[str] | None,
) -> Hits:
    """Top k by combined score: gather each feature's best candidates, rescore them exactly,
    and widen until no unseen entity can beat the k-th.

    An entity missing from every feature's list scores at most that list's last score on
    each feature it has, so its combined score (a weighted mean) is at most the largest of
    those last scores. Once the k-th rescored candidate reaches that bound, the answer is
    exact (as exact as each feature's index).
    """
    fetch = max(k * MULTI_FEATURE_FETCH, k + 10)
    while True:
        candidates: set[str] = set()
        bound = -np.inf
        exhausted = True
        for w in features:
            index, query = indexes[w.feature_type.id], queries[w.feature_type.id]
            hits = (
                _search_within(index, allowed, query, fetch, exclude, None)
                if allowed is not None
                else index.search(query, fetch, exclude=exclude)
            )
            candidates.update(hits.ids)
            if len(hits) == fetch:  # more entities lie beyond this list
                exhausted = False
                bound = max(bound, float(hits.scores[-1]))
        result = _rescore(features, indexes, queries, sorted(candidates), k, min_score)
        if exhausted or (min_score is not None and bound < min_score):
            return result
        if len(result) >= k and float(result.scores[k - 1]) >= bound:
            return result
        fetch *= 4


def _rescore(
    features: list[Weighted],
    indexes: Mapping[str, KeyIndex],
    queries: Mapping[str, np.ndarray],
    candidates: list[str],
    k: int,
    min_score: float | None,
) -> Hits:
    """Combined score ``sum(w_i s_i) / sum(w_i)`` over the features each candidate has."""
    total = np.zeros(len(candidates), dtype=np.float64)
    weights = np.zeros(len(candidates), dtype=np.float64)
    for w in features:
        index = indexes[w.feature_type.id]
        present = [(i, v) for i, c in enumerate(candidates) if (v := index.get(c)) is not None]
        if not present:
            continue
        rows = [i for i, _ in present]
        exact = ExactIndex(index.dimension, index.distance, capacity=len(present))
        exact.upsert_many([candidates[i] for i in rows], np.stack([v for _, v in present]))
        hits = exact.search(queries[w.feature_type.id], len(present))
        position = {c: i for i, c in enumerate(candidates)}
        idx = np.array([position[c] for c in hits.ids])
        total[idx] += w.weight * hits.scores
        weights[idx] += w.weight
    has = weights > 0
    combined = np.where(has, total / np.where(has, weights, 1), -np.inf)
    order = sorted((i for i in range(len(candidates)) if has[i]), key=lambda i: (-combined[i], candidates[i]))
    if min_score is not None:
        order = [i for i in order if combined[i] >= min_score]
    order = order[:k]
    return Hits([candidates[i] for i in order], combined[order].astype(np.float32))


def _visible_playlists(svc: Services, target: EntityType, viewer: Principal) -> list[str] | None:
    """Playlist results are limited to the viewer's own playlists (admin sees all): None = all."""
    if target is not EntityType.PLAYLIST or viewer.is_admin:
        return None
    if viewer.user_id is None:
        return []
    with svc.dbs.user.read() as conn:
        return catalog_store.playlists_of(conn, user_id=viewer.user_id)


def _search_within(
    index: KeyIndex,
    allowed: list[str],
    query: np.ndarray,
    k: int,
    exclude: set[str],
    min_score: float | None,
) -> Hits:
    """Exact search over a small allowed set (a user's own playlists)."""
    present = [(a, v) for a in allowed if a not in exclude and (v := index.get(a)) is not None]
    if not present:
        return Hits.empty(index.distance)
    exact = ExactIndex(index.dimension, index.distance, capacity=len(present))
    exact.upsert_many([a for a, _ in present], np.stack([v for _, v in present]))
    return exact.search(query, k, min_score=min_score)


def _items(target: EntityType, hits: Hits) -> list[SimilarItem]:
    """Result items, built by ``tuple.__new__`` in C over zipped columns (no Python per hit)."""
    n = len(hits.ids)
    distances = repeat(None, n) if hits.distances is None else hits.distances.tolist()
    rows = zip(repeat(target, n), hits.ids, hits.scores.tolist(), distances, strict=True)
    return list(map(tuple.__new__, repeat(SimilarItem, n), rows))


# ------------------------------------------------------------------ use cases


def find_similar(
    svc: Services,
    *,
    query: object,
    feature_type: object = None,
    features: object = None,
    target_entity_type: object = None,
    limit: object = None,
    min_score: object = None,
    exclude_ids: object = None,
    include_query: object = None,
    viewer: Principal,
) -> SimilarResult:
    """POST /v1/content/similar: by entity, by raw vector, or by several entities (centroid)."""
    if (
        type(query) is dict
        and len(query) == 1
        and "vector" in query
        and features is None
        and target_entity_type is None
        and min_score is None
        and not exclude_ids
        and (include_query is None or type(include_query) is bool)
    ):
        found = _by_vector(svc, feature_type, query["vector"], limit)
        if found is not None:
            return found
    weighted = parse_features(svc, feature_type, features)
    k = parse_limit(limit)
    threshold = parse_min_score(min_score)
    exclude: set[str] = (
        {as_id(e, field="exclude_ids") for e in as_list(exclude_ids, field="exclude_ids")}
        if exclude_ids
        else set()
    )
    include = as_bool(include_query, field="include_query") if include_query is not None else False
    spec = as_object(query, field="query")
    if not spec.keys() <= QUERY_KEYS:
        check_keys(spec, QUERY_KEYS, where="query.")
    forms = ("entity_id" in spec or "entity_type" in spec) + ("vector" in spec) + ("entities" in spec)
    if forms != 1:
        raise ValidationError(
            "query takes exactly one of: entity_type+entity_id, vector, entities", field="query"
        )

    refs: list[EntityRef] = []
    vectors: dict[str, np.ndarray] = {}
    if "vector" in spec:
        if len(weighted) != 1:
            raise ValidationError("a raw vector query takes a single feature_type", field="query.vector")
        vectors[weighted[0].feature_type.id] = _raw_vector(spec["vector"], weighted[0].feature_type)
        default_target = EntityType.TRACK
    else:
        if "entities" in spec:
            refs = [
                parse_ref(r, field=f"query.entities[{i}]")
                for i, r in enumerate(as_list(spec["entities"], field="query.entities"))
            ]
            if not refs:
                raise ValidationError("query.entities is empty", field="query.entities")
        else:
            refs = [parse_ref(spec, field="query")]
        for w in weighted:
            stored = _entity_vectors(svc, refs, w.feature_type, viewer)
            vectors[w.feature_type.id] = stored[0] if len(refs) == 1 else _centroid(stored, w.feature_type)
        default_target = refs[0].entity_type
    target = _target(weighted, target_entity_type, default_target)
    if not include:
        exclude |= {r.entity_id for r in refs if r.entity_type is target}
    hits = _search(svc, weighted, vectors, target, k, exclude, threshold, viewer)
    return SimilarResult(target, weighted, _items(target, hits))


def _by_vector(svc: Services, type_id: object, vector: object, limit: object) -> SimilarResult | None:
    """The most common request, a raw vector against one feature type's tracks, in a few calls
    (a single HNSW query pays per Python call); None when any input is unusual: the general
    path then answers, or names the error. A bad vector raises as the general path would."""
    if type(type_id) is not str or len(type_id) > MAX_ID_LENGTH or not type_id.strip():
        return None
    if limit is None:
        k = DEFAULT_LIMIT
    elif type(limit) is int and 1 <= limit <= MAX_LIMIT:
        k = limit
    else:
        return None
    feature_type = cached_feature_type(svc, type_id)
    if feature_type is None or not feature_type.is_active or not feature_type.applies(EntityType.TRACK):
        return None
    # One sum of squares validates an in-process float32 vector and normalises it; the index
    # takes it as prepared (bit for bit what it would make of the raw vector itself).
    query = (
        prepare_valid_query(vector, feature_type.distance)
        if type(vector) is np.ndarray and vector.shape == (feature_type.dimension,)
        else None
    )
    if query is None:
        query = prepare_query(_raw_vector(vector, feature_type), feature_type.distance)
    hits = indexing.key_index(svc, feature_type, EntityType.TRACK).search(query, k, prepared=True)
    return SimilarResult(EntityType.TRACK, [Weighted(feature_type, 1.0)], _items(EntityType.TRACK, hits))


def similar_to_entity(
    svc: Services,
    *,
    entity_type: object,
    entity_id: object,
    feature_type: object,
    limit: object = None,
    min_score: object = None,
    viewer: Principal,
) -> SimilarResult:
    """GET /v1/content/similar/{entity_type}/{entity_id}: same-type neighbours of one entity."""
    if feature_type is None:
        raise ValidationError("feature_type is required", field="feature_type")
    return find_similar(
        svc,
        query={"entity_type": entity_type, "entity_id": entity_id},
        feature_type=feature_type,
        limit=limit,
        min_score=min_score,
        viewer=viewer,
    )


@dataclass(slots=True)
class BatchResult:
    target_entity_type: EntityType
    queries: list[EntityRef]
    results: list[list[SimilarItem]]


def find_similar_batch(
    svc: Services,
    *,
    queries: object,
    feature_type: object = None,
    features: object = None,
    target_entity_type: object = None,
    limit_per_query: object = None,
    min_score: object = None,
    exclude_ids: object = None,
    deduplicate: object = None,
    viewer: Principal,
) -> BatchResult:
    """POST /v1/content/similar/batch. With ``deduplicate`` an entity appears once across all
    lists, in the list where it scores best; query entities never appear."""
    weighted = parse_features(svc, feature_type, features)
    refs = [parse_ref(r, field=f"queries[{i}]") for i, r in enumerate(as_list(queries, field="queries"))]
    if not refs:
        raise ValidationError("queries is empty", field="queries")
    if len(refs) > MAX_LIMIT:
        raise ValidationError(f"at most {MAX_LIMIT} queries per batch", field="queries")
    k = parse_limit(limit_per_query, field="limit_per_query", default=10)
    threshold = parse_min_score(min_score)
    dedupe = as_bool(deduplicate, field="deduplicate") if deduplicate is not None else False
    exclude = {as_id(e, field="exclude_ids") for e in as_list(exclude_ids or [], field="exclude_ids")}
    target = _target(weighted, target_entity_type, refs[0].entity_type)
    exclude |= {r.entity_id for r in refs if r.entity_type is target}

    per_feature = {w.feature_type.id: _entity_vectors(svc, refs, w.feature_type, viewer) for w in weighted}
    fetch = min(k * len(refs) + len(refs), MAX_LIMIT) if dedupe else k
    if len(weighted) == 1 and _visible_playlists(svc, target, viewer) is None:
        index = indexing.key_index(svc, weighted[0].feature_type, target)
        all_hits = index.search_batch(
            per_feature[weighted[0].feature_type.id], fetch, exclude=exclude, min_score=threshold
        )
    else:
        all_hits = [
            _search(
                svc,
                weighted,
                {t: v[i] for t, v in per_feature.items()},
                target,
                fetch,
                exclude,
                threshold,
                viewer,
            )
            for i in range(len(refs))
        ]
    if dedupe:
        all_hits = _deduplicate(all_hits, k)
    return BatchResult(target, refs, [_items(target, h) for h in all_hits])


def _deduplicate(all_hits: list[Hits], k: int) -> list[Hits]:
    """Each entity at most once: taking (query, entity) pairs from the best score down, an
    entity goes to the first list that wants it and still has room (its best-scoring list
    unless that one is already full)."""
    pairs = sorted(
        ((score, q, i) for q, hits in enumerate(all_hits) for i, score in enumerate(hits.scores.tolist())),
        key=lambda p: (-p[0], p[1], all_hits[p[1]].ids[p[2]]),
    )
    taken: set[str] = set()
    chosen: list[list[int]] = [[] for _ in all_hits]
    for _, q, i in pairs:
        entity_id = all_hits[q].ids[i]
        if entity_id not in taken and len(chosen[q]) < k:
            taken.add(entity_id)
            chosen[q].append(i)
    return [take(hits, rows) for hits, rows in zip(all_hits, chosen, strict=True)]
