"""Reading and deleting feature maps: one entity's fingerprint, deletes by type or by entity."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from fingerprints.auth import Principal
from fingerprints.domain import EntityType, FeatureMap, parse_enum
from fingerprints.errors import NotFound, ValidationError
from fingerprints.service import aggregation, indexing
from fingerprints.service.base import Services
from fingerprints.service.inputs import as_id, as_list, as_object, check_keys
from fingerprints.store import aggregation as agg_store
from fingerprints.store import catalog as catalog_store
from fingerprints.store import feature_maps as maps_store
from fingerprints.store import feature_types as types_store


@dataclass(frozen=True, slots=True)
class Fingerprint:
    entity_type: EntityType
    entity_id: str
    feature_maps: list[FeatureMap]
    current_versions: dict[str, int]

    @property
    def last_updated(self) -> int:
        return max(m.computed_at for m in self.feature_maps)

    def outdated(self, feature_map: FeatureMap) -> bool:
        return feature_map.version < self.current_versions.get(feature_map.feature_type_id, 0)


def check_playlist_visible(svc: Services, *, playlist_id: str, viewer: Principal) -> None:
    """Playlists are private: anyone but the owner or admin is told it does not exist."""
    with svc.dbs.user.read() as conn:
        owner = catalog_store.playlist_owner(conn, playlist_id=playlist_id)
    if owner is None or not viewer.can_see_playlist(owner):
        raise NotFound(f"playlist {playlist_id!r} not found", field="entity_id")


def get_fingerprint(
    svc: Services,
    *,
    entity_type: object,
    entity_id: object,
    types: list[str] | None = None,
    viewer: Principal,
) -> Fingerprint:
    """The entity's feature maps (all, or only ``types``); 404 when unknown or without maps."""
    kind = parse_enum(EntityType, entity_type, field="entity_type")
    eid = as_id(entity_id, field="entity_id")
    if types is not None:
        types = [as_id(t, field="types") for t in as_list(types, field="types")]
    if kind is EntityType.PLAYLIST:
        check_playlist_visible(svc, playlist_id=eid, viewer=viewer)
    with svc.dbs.catalog.read() as conn:
        current_versions = {ft.id: ft.current_version for ft in types_store.list_feature_types(conn)}
        if types is not None:
            unknown = [t for t in types if t not in current_versions]
            if unknown:
                raise NotFound(f"unknown feature type {unknown[0]!r}", field="types")
        if kind is not EntityType.PLAYLIST:
            if not catalog_store.existing_ids(conn, entity_type=kind, ids=[eid]):
                raise NotFound(f"{kind.value} {eid!r} not found", field="entity_id")
            maps = maps_store.maps_of(conn, entity_type=kind, entity_ids=[eid], type_ids=types).get(eid, [])
    if kind is EntityType.PLAYLIST:
        with svc.dbs.user.read() as conn:
            maps = maps_store.maps_of(conn, entity_type=kind, entity_ids=[eid], type_ids=types).get(eid, [])
    if not maps:
        wanted = f" of type {', '.join(types)}" if types else ""
        raise NotFound(f"{kind.value} {eid!r} has no feature maps{wanted}", field="entity_id")
    return Fingerprint(kind, eid, maps, current_versions)


@dataclass(slots=True)
class DeleteResult:
    deleted: int = 0
    by_entity_type: dict[str, int] = field(default_factory=dict)


def delete_feature_maps(
    svc: Services, *, feature_type_id: object = None, entities: object = None
) -> DeleteResult:
    """Delete every map of a feature type, or the maps of listed entities (of that type only,
    when both are given)."""
    if feature_type_id is None and entities is None:
        raise ValidationError("give feature_type_id, entities, or both", field="feature_type_id")
    type_id = as_id(feature_type_id, field="feature_type_id") if feature_type_id is not None else None
    targets: dict[EntityType, list[str]] = defaultdict(list)
    if entities is not None:
        for i, raw in enumerate(as_list(entities, field="entities")):
            entity = as_object(raw, field=f"entities[{i}]")
            check_keys(entity, ("entity_type", "entity_id"), where=f"entities[{i}].")
            kind = parse_enum(EntityType, entity.get("entity_type"), field=f"entities[{i}].entity_type")
            targets[kind].append(as_id(entity.get("entity_id"), field=f"entities[{i}].entity_id"))
        if not targets:
            raise ValidationError("entities is empty", field="entities")

    result = DeleteResult()
    if type_id is not None:
        with svc.dbs.catalog.read() as conn:
            if types_store.get_feature_type(conn, type_id=type_id) is None:
                raise NotFound(f"unknown feature type {type_id!r}", field="feature_type_id")
    counts: dict[EntityType, int] = {}
    for playlists, db in ((False, svc.dbs.catalog), (True, svc.dbs.user)):
        kinds = [
            k
            for k in (targets if entities is not None else EntityType)
            if (k is EntityType.PLAYLIST) == playlists
        ]
        if not kinds:
            continue
        with db.serialized():  # the index follows in commit order
            with db.write() as conn:
                if entities is None:
                    assert type_id is not None
                    counts.update(
                        maps_store.delete_feature_type_maps(conn, type_id=type_id, playlists=playlists)
                    )
                    agg_store.forget_stale(conn, type_id=type_id)
                else:
                    for kind in kinds:
                        counts[kind] = maps_store.delete_entity_maps(
                            conn, entity_type=kind, entity_ids=targets[kind], type_id=type_id
                        )
                    if EntityType.TRACK in targets and not playlists:
                        aggregation.mark_tracks_changed(
                            svc,
                            conn,
                            track_ids=targets[EntityType.TRACK],
                            type_ids=[type_id] if type_id is not None else None,
                        )
            if entities is None:
                assert type_id is not None
                indexing.feature_type_cleared(svc, type_id, kinds)
            else:
                for kind in kinds:
                    indexing.maps_deleted(svc, type_id, kind, targets[kind])
    result.by_entity_type = {k.value: v for k, v in counts.items() if v}
    result.deleted = sum(result.by_entity_type.values())
    return result
