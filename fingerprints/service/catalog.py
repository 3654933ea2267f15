"""Catalog admin (design §5): bulk upsert of artists, albums, tracks; playlist upsert and delete."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fingerprints.domain import EntityType, ItemError
from fingerprints.errors import NotFound, PayloadTooLarge, Rejected, ValidationError
from fingerprints.service import aggregation, indexing
from fingerprints.service.base import Services, now
from fingerprints.service.inputs import as_bool, as_id, as_int, as_list, as_object, as_str, check_keys
from fingerprints.store import aggregation as agg_store
from fingerprints.store import catalog as catalog_store
from fingerprints.store.tables import albums as albums_table
from fingerprints.store.tables import artists as artists_table

ARTIST_KEYS = ("id", "name", "popularity", "followers_total", "genres")
ALBUM_KEYS = (
    "id",
    "name",
    "artist_ids",
    "album_type",
    "label",
    "popularity",
    "release_date",
    "release_date_precision",
)
TRACK_KEYS = (
    "id",
    "name",
    "album_id",
    "artist_ids",
    "featured_artist_ids",
    "duration_ms",
    "popularity",
    "track_number",
    "disc_number",
    "explicit",
    "language",
)
MAIN, FEATURED = 0, 1  # track_artists.role


@dataclass(slots=True)
class CatalogResult:
    artists: int = 0
    albums: int = 0
    tracks: int = 0
    errors: list[ItemError] = field(default_factory=list)


def _collect(
    kind: str, items: list[Any], parse: Callable[[Mapping[str, Any]], Any], errors: list[ItemError]
) -> list[Any]:
    """Parse each item; a bad one becomes an error entry instead of failing the batch."""
    good = []
    for index, raw in enumerate(items):
        item_id = raw.get("id") if isinstance(raw, Mapping) else None
        try:
            item = as_object(raw, field=f"{kind}s[{index}]")
            check_keys(item, _KEYS[kind])
            good.append(parse(item))
        except ValidationError as exc:
            errors.append(
                ItemError(
                    index=index,
                    code=exc.reason if isinstance(exc, Rejected) else "INVALID_ITEM",
                    message=exc.message,
                    entity_type=kind,
                    entity_id=item_id if isinstance(item_id, str) else None,
                    extra={"field": exc.field} if exc.field else {},
                )
            )
    return good


def _popularity(item: Mapping[str, Any]) -> int:
    return as_int(item.get("popularity", 0), field="popularity", minimum=0, maximum=100)


def _ids(item: Mapping[str, Any], key: str) -> list[str]:
    return [as_id(v, field=key) for v in as_list(item.get(key) or [], field=key)]


def _parse_artist(item: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    genres = [
        as_str(g, field="genres", max_length=200) for g in as_list(item.get("genres") or [], field="genres")
    ]
    row = {
        "id": as_id(item.get("id"), field="id"),
        "name": as_str(item.get("name"), field="name", max_length=1000),
        "followers_total": as_int(item.get("followers_total", 0), field="followers_total", minimum=0),
        "popularity": _popularity(item),
    }
    return row, genres


def _parse_album(item: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    row = {
        "id": as_id(item.get("id"), field="id"),
        "name": as_str(item.get("name"), field="name", max_length=1000),
        "album_type": as_str(item.get("album_type", "album"), field="album_type", max_length=50),
        "label": str(as_str(item.get("label"), field="label", optional=True) or ""),
        "popularity": _popularity(item),
        "release_date": str(as_str(item.get("release_date"), field="release_date", optional=True) or ""),
        "release_date_precision": as_str(
            item.get("release_date_precision", "day"), field="release_date_precision", max_length=10
        ),
    }
    return row, _ids(item, "artist_ids")


def _parse_track(item: Mapping[str, Any]) -> tuple[dict[str, Any], str, list[str], list[str]]:
    row = {
        "id": as_id(item.get("id"), field="id"),
        "name": as_str(item.get("name"), field="name", max_length=1000),
        "track_number": as_int(item.get("track_number", 1), field="track_number", minimum=0),
        "disc_number": as_int(item.get("disc_number", 1), field="disc_number", minimum=0),
        "popularity": _popularity(item),
        "duration_ms": as_int(item.get("duration_ms", 0), field="duration_ms", minimum=0),
        "explicit": int(as_bool(item.get("explicit", False), field="explicit")),
        "language": as_str(item.get("language"), field="language", optional=True, max_length=20),
    }
    album_id = as_id(item.get("album_id"), field="album_id")
    return row, album_id, _ids(item, "artist_ids"), _ids(item, "featured_artist_ids")


_KEYS = {"artist": ARTIST_KEYS, "album": ALBUM_KEYS, "track": TRACK_KEYS}


def _unknown(kind: str, index: int, item_id: str, code: str, message: str) -> ItemError:
    return ItemError(index=index, code=code, message=message, entity_type=kind, entity_id=item_id)


def upsert_catalog(
    svc: Services, *, artists: object = None, albums: object = None, tracks: object = None
) -> CatalogResult:
    """Upsert artists, then albums, then tracks (so references within one request resolve)."""
    raw = {
        kind: as_list(value or [], field=f"{kind}s")
        for kind, value in (("artist", artists), ("album", albums), ("track", tracks))
    }
    total = sum(len(v) for v in raw.values())
    if total > svc.settings.max_batch_items:
        raise PayloadTooLarge(
            f"a catalog upsert holds at most {svc.settings.max_batch_items} items (got {total})"
        )
    result = CatalogResult()
    errors = result.errors
    parsed_artists = _collect("artist", raw["artist"], _parse_artist, errors)
    parsed_albums = _collect("album", raw["album"], _parse_album, errors)
    parsed_tracks = _collect("track", raw["track"], _parse_track, errors)

    with svc.dbs.catalog.write() as conn:
        if parsed_artists:
            catalog_store.upsert_artists(
                conn, rows=[r for r, _ in parsed_artists], genres={r["id"]: g for r, g in parsed_artists}
            )
        result.artists = len(parsed_artists)

        album_rows, album_links = [], {}
        artist_ids = {a for _, ids in parsed_albums for a in ids} | {
            a for _, _, main, feat in parsed_tracks for a in (*main, *feat)
        }
        artist_rowids = catalog_store.rowids(conn, table=artists_table, ids=artist_ids)
        for index, (row, ids) in enumerate(parsed_albums):
            missing = [a for a in ids if a not in artist_rowids]
            if missing:
                errors.append(
                    _unknown("album", index, row["id"], "UNKNOWN_ARTIST", f"unknown artist {missing[0]!r}")
                )
                continue
            album_rows.append(row)
            album_links[row["id"]] = [artist_rowids[a] for a in ids]
        if album_rows:
            catalog_store.upsert_albums(conn, rows=album_rows, artist_rowids=album_links)
        result.albums = len(album_rows)

        album_rowids = catalog_store.rowids(
            conn, table=albums_table, ids=[album_id for _, album_id, _, _ in parsed_tracks]
        )
        track_rows, track_links = [], {}
        for index, (row, album_id, main, featured) in enumerate(parsed_tracks):
            if album_id not in album_rowids:
                errors.append(
                    _unknown("track", index, row["id"], "UNKNOWN_ALBUM", f"unknown album {album_id!r}")
                )
                continue
            missing = [a for a in (*main, *featured) if a not in artist_rowids]
            if missing:
                errors.append(
                    _unknown("track", index, row["id"], "UNKNOWN_ARTIST", f"unknown artist {missing[0]!r}")
                )
                continue
            track_rows.append({**row, "album_rowid": album_rowids[album_id]})
            roles = {artist_rowids[a]: FEATURED for a in featured}
            roles.update({artist_rowids[a]: MAIN for a in main})
            track_links[row["id"]] = roles
        if track_rows:
            moved = [r["id"] for r in track_rows]
            aggregation.mark_tracks_changed(svc, conn, track_ids=moved)  # their old albums and artists
            catalog_store.upsert_tracks(conn, rows=track_rows, artist_roles=track_links)
            aggregation.mark_tracks_changed(svc, conn, track_ids=moved)  # their new ones
        result.tracks = len(track_rows)
    errors.sort(key=lambda e: (("artist", "album", "track").index(e.entity_type or "track"), e.index))
    return result


@dataclass(slots=True)
class PlaylistResult:
    id: str
    user_id: int
    track_count: int
    errors: list[ItemError] = field(default_factory=list)


def upsert_playlist(
    svc: Services,
    *,
    id: object = None,
    user_id: object = None,
    name: object = None,
    track_ids: object = None,
) -> PlaylistResult:
    """Create or replace a playlist; unknown track ids are listed in ``errors`` and left out."""
    playlist_id = as_id(id, field="id")
    owner = as_int(user_id, field="user_id")
    title = as_str(name, field="name", optional=True, max_length=1000)
    wanted = [as_id(t, field="track_ids") for t in as_list(track_ids or [], field="track_ids")]
    if len(wanted) > svc.settings.max_batch_items:
        raise PayloadTooLarge(
            f"a playlist holds at most {svc.settings.max_batch_items} tracks", field="track_ids"
        )
    with svc.dbs.catalog.read() as conn:
        known = catalog_store.existing_ids(conn, entity_type=EntityType.TRACK, ids=wanted)
    result = PlaylistResult(id=playlist_id, user_id=owner, track_count=0)
    kept = []
    for index, track_id in enumerate(wanted):
        if track_id in known:
            kept.append(track_id)
        else:
            result.errors.append(
                ItemError(
                    index=index,
                    code="UNKNOWN_TRACK",
                    message=f"track {track_id!r} is not in the catalog",
                    entity_type="track",
                    entity_id=track_id,
                )
            )
    with svc.dbs.user.write() as conn:
        catalog_store.upsert_playlist(
            conn, playlist_id=playlist_id, user_id=owner, name=title, created=now(), track_ids=kept
        )
        aggregation.mark_playlist_changed(svc, conn, playlist_id=playlist_id)
    result.track_count = len(kept)
    return result


def delete_playlist(svc: Services, *, playlist_id: object) -> None:
    pid = as_id(playlist_id, field="id")
    with svc.dbs.user.serialized():
        with svc.dbs.user.write() as conn:
            if not catalog_store.delete_playlist(conn, playlist_id=pid):
                raise NotFound(f"playlist {pid!r} not found", field="id")
            agg_store.forget_stale(conn, entity_type=EntityType.PLAYLIST, entity_ids=[pid])
        indexing.maps_deleted(svc, None, EntityType.PLAYLIST, [pid])
