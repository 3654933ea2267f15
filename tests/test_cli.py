"""The console script: help texts and an idempotent demo seed (without serving)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fingerprints.cli import build_parser, main


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "serve" in out and "demo" in out and "FINGERPRINTS_" in out


def test_demo_seeds_and_is_idempotent(tmp_path: Path) -> None:
    args = [
        "demo",
        "--data-dir",
        str(tmp_path),
        "--no-serve",
        "--tracks",
        "300",
        "--albums",
        "30",
        "--artists",
        "12",
    ]
    main(args)
    main(args)  # twice: same rows, no errors
    conn = sqlite3.connect(tmp_path / "catalog.db")
    tracks = conn.execute("SELECT count(*) FROM tracks").fetchone()[0]
    maps = dict(
        conn.execute(
            "SELECT feature_type_id, count(*) FROM feature_maps WHERE entity_type = 'track' GROUP BY 1"
        ).fetchall()
    )
    albums = conn.execute("SELECT count(*) FROM feature_maps WHERE entity_type = 'album'").fetchone()[0]
    dims = dict(conn.execute("SELECT id, dimension FROM feature_map_types").fetchall())
    genres = conn.execute("SELECT count(DISTINCT artist_rowid) FROM artist_genres").fetchone()[0]
    conn.close()
    assert tracks == 300 and genres == 12 and albums == 3 * 30  # aggregates too
    assert maps == {"audio_spectrum": 300, "genre_profile": 300, "mood_profile": 300}
    assert dims == {"audio_spectrum": 128, "genre_profile": 64, "mood_profile": 32}
    assert (tmp_path / "admin-token").stat().st_mode & 0o777 == 0o600


def test_console_script_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fingerprints", "serve", "--help"], capture_output=True, text=True, check=True
    )
    assert "--data-dir" in done.stdout and "--port" in done.stdout


def test_the_command_gives_blas_one_thread_by_default() -> None:
    """Before numpy loads, ``fingerprints`` caps BLAS threads (FINGERPRINTS_BLAS_THREADS)."""
    import subprocess
    import sys

    code = (
        "import os; from fingerprints import cli; cli.limit_blas_threads(); "
        "print(os.environ.get('OPENBLAS_NUM_THREADS'), os.environ.get('OMP_NUM_THREADS'))"
    )
    env = {k: v for k, v in os.environ.items() if "THREADS" not in k}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]
    env["FINGERPRINTS_BLAS_THREADS"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "None"]
