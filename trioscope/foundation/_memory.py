"""`MemoryBackend`: the EventStore's default backend, in memory (not durable).

::

    import trio
    from trioscope.foundation import Event, MemoryBackend

    async def main() -> None:
        backend = MemoryBackend()
        assert (await backend.open()).last_id == 0
        await backend.append([Event("a", id=1, wall_ns=5), Event("b", id=2, wall_ns=6)])
        await backend.prune_through(1)
        recovered = await backend.open()      # what a restarted store sees
        assert [e.id for e in recovered.events] == [2] and recovered.last_id == 2

    trio.run(main)

The backend lives in the events home (`event_store_spec` makes one per start
of the home), not in the store service, so its events survive a crash of the
store, as an ETS table given to an heir would; they do not survive the home's
restart or the process. Every method is instant: `append` and `prune_through`
never checkpoint, so the store applies writes inline (``durable`` is False).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import final

from ._event import Event, Recovered


@final
class MemoryBackend:
    """Keeps retained events in a deque, oldest first, and the highest id ever appended.

    Not safe to share between two running stores (each store assumes it is
    the only writer); give each `event_store_spec` its own, or a factory.
    """

    __slots__ = ("_events", "_last_id")

    durable: bool = False
    """Never: the events live only as long as this object."""

    def __init__(self) -> None:
        self._events: deque[Event] = deque()
        self._last_id = 0

    def __repr__(self) -> str:
        return f"<MemoryBackend {len(self._events)} events, last id {self._last_id}>"

    def __len__(self) -> int:
        """The number of events held."""
        return len(self._events)

    async def open(self) -> Recovered:
        """The held events (ascending id) and the highest id ever appended."""
        return Recovered(events=list(self._events), last_id=self._last_id)

    async def append(self, events: Sequence[Event]) -> None:
        """Keep *events*, whose ids ascend above every id appended so far.

        Only the first and the last id are checked (the store assigns them in order).

        Raises:
            ValueError: the first id is not above every id appended so far, or the
                last is below the first (nothing is kept).
        """
        if not events:
            return
        first, last = events[0].id, events[-1].id
        if first <= self._last_id or last < first:
            raise ValueError(
                f"MemoryBackend.append: event ids must ascend above {self._last_id}, "
                f"got {first} .. {last}"
            )
        self._events.extend(events)
        self._last_id = last

    async def prune_through(self, last_id: int) -> None:
        """Forget every event whose id is <= *last_id* (the highest id ever appended is kept)."""
        events = self._events
        while events and events[0].id <= last_id:
            events.popleft()

    async def aclose(self) -> None:
        """Nothing to release: the events stay for the next `open`."""

    def describe(self) -> str:
        """``"memory"``."""
        return "memory"
