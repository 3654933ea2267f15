"""The service migrates empty databases itself: every other API test on PostgreSQL starts on
copies of databases migrated once per session (tests/backends.py), so this one does not."""

from __future__ import annotations

from pathlib import Path

from fingerprints.app import create_app
from fingerprints.store import migrations
from tests.backends import Backend, make_settings, sql, table_names
from tests.helpers import ADMIN, running_client, seed


async def test_service_migrates_empty_databases(backend: Backend, tmp_path: Path) -> None:
    settings = make_settings(backend, tmp_path / "data", migrated=False)
    settings.data_dir.mkdir(parents=True)
    assert table_names(settings, "catalog") == [] and table_names(settings, "user") == []

    for start in range(2):  # a restart finds every migration applied and applies none again
        async with running_client(create_app(settings)) as client:
            if start == 0:
                await seed(client)
            r = await client.get("/v1/admin/fingerprints/types/audio", headers=ADMIN)
            assert r.status_code == 200 and r.json()["stats"]["playlist_count"] == 0, r.text
        for db, steps in (("catalog", migrations.CATALOG_MIGRATIONS), ("user", migrations.USER_MIGRATIONS)):
            versions = sql(settings, db, "SELECT version FROM fingerprints_schema_version ORDER BY version")
            assert versions == [(m.version,) for m in steps], db
    assert {"feature_map_types", "feature_maps", "tracks", "fingerprints_schema_version"} <= set(
        table_names(settings, "catalog")
    )
    assert {"playlist_feature_maps", "user_playlist", "fingerprints_schema_version"} <= set(
        table_names(settings, "user")
    )
