"""Warm the request's loaders for the fields a query selects on a list of entities.

A resolver that produces many entities at once (``similar``, ``tracks(ids)``...) calls
``prefetch`` with the loads of the entities themselves, then awaits ``rounds.idle()`` before
returning them: the loads their fields will ask for are made in the same turn, so in the same
round, and when graphql-core resolves those fields each loader hands back a finished future
and ``pending`` returns its value at once. The list then completes synchronously,
without a coroutine, a task and a future callback per field of every entity, which is most
of what a 20-item track page costs otherwise. Only a cache is warmed: every field still
resolves through its loader, with or without this.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    InlineFragmentNode,
    SelectionNode,
)
from graphql.execution.values import VariableValues, get_argument_values
from strawberry.types.nodes import convert_arguments

from fingerprints.domain import EntityType
from fingerprints.schema.context import Info
from fingerprints.schema.loaders import Loader
from fingerprints.schema.plans import python_arguments
from fingerprints.schema.searches import similar_params

TYPE_NAMES = {
    EntityType.TRACK: "Track",
    EntityType.ALBUM: "Album",
    EntityType.ARTIST: "Artist",
    EntityType.PLAYLIST: "Playlist",
}


def selections(info: Info) -> Sequence[SelectionNode]:
    """The selections under the current field, as graphql-core parsed them.

    Read from the document itself: Strawberry's ``info.selected_fields`` converts the whole
    subtree below the field (every argument and directive of every level) on each call, which
    for a track page costs more than the loads it lets us start early."""
    out: list[SelectionNode] = []
    for node in info._raw_info.field_nodes:
        if node.selection_set is not None:
            out.extend(node.selection_set.selections)
    return out


def subfields(info: Info, selected: Iterable[SelectionNode], type_name: str) -> dict[str, FieldNode]:
    """The fields selected on an object of ``type_name``, fragments included, by name."""
    out: dict[str, FieldNode] = {}
    for selection in selected:
        if isinstance(selection, FieldNode):
            out.setdefault(selection.name.value, selection)
            continue
        if isinstance(selection, InlineFragmentNode):
            fragment: InlineFragmentNode | FragmentDefinitionNode | None = selection
        elif isinstance(selection, FragmentSpreadNode):
            fragment = info._raw_info.fragments.get(selection.name.value)
        else:
            fragment = None
        if fragment is None:
            continue
        condition = fragment.type_condition.name.value if fragment.type_condition is not None else None
        if condition in (None, type_name):
            for name, field in subfields(info, fragment.selection_set.selections, type_name).items():
                out.setdefault(name, field)
    return out


def selected(info: Info, name: str) -> Sequence[SelectionNode] | None:
    """What is selected under the field ``name`` of the current field's value; None if the
    field is not selected."""
    for selection in selections(info):
        if isinstance(selection, FieldNode) and selection.name.value == name:
            return selection.selection_set.selections if selection.selection_set is not None else ()
    return None


def prefetch(
    info: Info, entity_type: EntityType, ids: Sequence[str], selected: Iterable[SelectionNode]
) -> None:
    """Ask the loaders now (for this turn's round) for what the selected fields of these
    entities will ask for; the caller awaits ``info.context.loaders.rounds.idle()``. A failed
    load stays in its loader's cache and surfaces at the field that asks for it."""
    fields = subfields(info, selected, TYPE_NAMES[entity_type])
    loaders = info.context.loaders
    if "fingerprint" in fields:
        types = convert_arguments(info._raw_info, fields["fingerprint"].arguments).get("types")
        key_types = tuple(sorted(str(t) for t in types)) if types is not None else None
        for i in ids:
            loaders.feature_maps.load((entity_type, i, key_types))
    if entity_type is EntityType.TRACK and "artists" in fields:
        _load_all(loaders.track_credits, ids)
    if entity_type is EntityType.ALBUM:
        if "artists" in fields:
            _load_all(loaders.album_artists, ids)
        if "tracks" in fields:
            _load_all(loaders.album_tracks, ids)
    if entity_type is EntityType.ARTIST and "genres" in fields:
        _load_all(loaders.genres, ids)


def _load_all(loader: Loader[str, Any], ids: Sequence[str]) -> None:
    for i in ids:
        loader.load(i)


def similar_node(info: Info, entity_type: EntityType, selected: Iterable[SelectionNode]) -> FieldNode | None:
    """The ``similar`` field selected on the entity, if any (the first, as graphql-core merges
    the fields of one response name)."""
    return subfields(info, selected, TYPE_NAMES[entity_type]).get("similar")


def similar_arguments(
    info: Info, entity_type: EntityType, entity_id: str, node: FieldNode
) -> dict[str, Any] | None:
    """The search parameters the ``similar`` resolver will compute for ``node`` (its arguments
    coerced by graphql-core and converted by Strawberry, as for the resolver); None when they
    do not convert here (the field then reports what is wrong with them)."""
    raw_info = info._raw_info
    object_type = raw_info.schema.get_type(TYPE_NAMES[entity_type])
    if not isinstance(object_type, GraphQLObjectType) or "similar" not in object_type.fields:
        return None
    field = object_type.fields["similar"]
    try:
        # Strawberry's resolve infos carry the coerced variables only (a dict, not
        # graphql-core's VariableValues): all that coercing the arguments reads of them.
        variables: Any = raw_info.variable_values
        if not isinstance(variables, VariableValues):
            variables = VariableValues(sources={}, coerced=variables)
        raw = get_argument_values(field, node, variables)
        return similar_params(entity_type, entity_id, **python_arguments(raw_info.schema, field, raw))
    except Exception:  # noqa: BLE001 - left to the field
        return None
