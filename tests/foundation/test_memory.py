"""MemoryBackend: the EventStore's default backend, kept in the events home."""

from __future__ import annotations

import re

import pytest

from trioscope.foundation._event import Event, Recovered
from trioscope.foundation._memory import MemoryBackend

pytestmark = pytest.mark.trioscope_scope


def stored(*ids: int) -> list[Event]:
    return [Event("t", {"n": i}, id=i, wall_ns=100 + i) for i in ids]


async def test_open_returns_what_was_appended_and_the_last_id() -> None:
    backend = MemoryBackend()
    assert backend.durable is False
    assert backend.describe() == "memory"
    assert await backend.open() == Recovered(events=[], last_id=0)
    await backend.append(stored(1, 2))
    await backend.append([])
    await backend.append(stored(5))
    assert await backend.open() == Recovered(events=stored(1, 2, 5), last_id=5)
    assert len(backend) == 3
    assert repr(backend) == "<MemoryBackend 3 events, last id 5>"


async def test_pruning_forgets_a_prefix_and_keeps_the_last_id() -> None:
    backend = MemoryBackend()
    await backend.append(stored(1, 2, 3))
    await backend.prune_through(2)
    assert await backend.open() == Recovered(events=stored(3), last_id=3)
    await backend.prune_through(10)
    assert await backend.open() == Recovered(events=[], last_id=3)  # ids are never reused


async def test_close_keeps_the_events_for_the_next_open() -> None:
    backend = MemoryBackend()
    await backend.append(stored(1))
    await backend.aclose()
    await backend.aclose()  # idempotent
    assert (await backend.open()).events == stored(1)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (stored(2), "MemoryBackend.append: event ids must ascend above 2, got 2 .. 2"),
        (stored(4, 3), "MemoryBackend.append: event ids must ascend above 2, got 4 .. 3"),
    ],
)
async def test_ids_must_ascend(batch: list[Event], message: str) -> None:
    backend = MemoryBackend()
    await backend.append(stored(1, 2))
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        await backend.append(batch)
    assert await backend.open() == Recovered(events=stored(1, 2), last_id=2)
