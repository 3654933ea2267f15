"""The request's loaders (schema/loaders.py): the keys every loader is asked for in one
event-loop turn are read as one round; futures are cached per key; a failed batch fails its
keys only; ``rounds.idle()`` waits for every key asked for so far, inline or in a worker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from fingerprints.schema.loaders import Loader, Rounds
from fingerprints.service import graph


class Seen(list[list[tuple[str, list[Any]]]]):
    """Every round: its (fetch, keys) jobs; and in ``inline``, whether it was read inline."""

    inline: list[bool]


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Seen:
    """Rounds run without a database: each fetch gets ``reads=None``; every round recorded."""
    rounds = Seen()
    rounds.inline = []

    def run_round(svc: Any, jobs: Sequence[tuple[Any, Sequence[Any]]], *, inline: bool = False) -> list[Any]:
        rounds.append([(fetch.__name__, list(keys)) for fetch, keys in jobs])
        rounds.inline.append(inline)
        out: list[Any] = []
        for fetch, keys in jobs:
            try:
                out.append(fetch(None, keys))
            except Exception as exc:  # noqa: BLE001 - as graph.run_round does
                out.append(exc)
        return out

    monkeypatch.setattr(graph, "run_round", run_round)
    monkeypatch.setattr(graph, "inline", lambda svc, keys: True)
    return rounds


def upper(reads: Any, keys: Sequence[str]) -> dict[str, str]:
    return {k: k.upper() for k in keys if k != "missing"}


def length(reads: Any, keys: Sequence[str]) -> dict[str, int]:
    return {k: len(k) for k in keys}


def broken(reads: Any, keys: Sequence[str]) -> dict[str, int]:
    raise RuntimeError("the database is gone")


async def test_one_round_per_turn_for_every_loader(seen: Seen) -> None:
    rounds = Rounds(svc=None)  # type: ignore[arg-type]
    names = Loader[str, str](rounds, upper, default="?")
    sizes = Loader[str, int](rounds, length, lambda n: n * 10)
    first = names.load("a")
    assert names.load("a") is first  # cached: one key, one future
    both = names.load_many(["b", "missing"])
    size = sizes.load("abc")
    await rounds.idle()
    assert seen == [[("upper", ["a", "b", "missing"]), ("length", ["abc"])]]
    assert seen.inline == [True]  # on the event loop: on the connection its thread keeps
    assert first.result() == "A" and size.result() == 30
    assert await both == ["B", "?"]  # a miss is the loader's default

    # settled keys come from the cache; new ones make the next round
    assert names.load("a") is first
    await asyncio.gather(names.load("c"), sizes.load("de"))
    assert seen[1:] == [[("upper", ["c"]), ("length", ["de"])]]


async def test_a_failed_batch_fails_its_keys_only(seen: Seen) -> None:
    rounds = Rounds(svc=None)  # type: ignore[arg-type]
    good = Loader[str, str](rounds, upper)
    bad = Loader[str, int](rounds, broken)
    never_asked = bad.load("x")  # nobody awaits it: no "exception never retrieved" report
    asked = bad.load("y")
    fine = good.load("z")
    await rounds.idle()  # done although a batch failed
    assert fine.result() == "Z"
    with pytest.raises(RuntimeError, match="the database is gone"):
        await asked
    assert isinstance(never_asked.exception(), RuntimeError)


async def test_idle_waits_for_a_round_read_in_a_worker(seen: Seen, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph, "inline", lambda svc, keys: False)
    rounds = Rounds(svc=None)  # type: ignore[arg-type]
    names = Loader[str, str](rounds, upper)
    future = names.load("w")
    idle = rounds.idle()
    assert not idle.done()  # type: ignore[attr-defined]
    await idle
    assert future.result() == "W"
    assert seen == [[("upper", ["w"])]]
    assert seen.inline == [False]  # a worker thread reads on pooled connections, keeps none
    await rounds.idle()  # nothing due: done at once
