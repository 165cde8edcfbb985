"""Fan-out to subscribers with bounded buffers and an explicit cut-off.

::

    import trio
    from trioscope.foundation._subscription import Hub

    async def main() -> None:
        hub: Hub[int] = Hub(what="numbers")
        async with hub.subscribe(buffer=10) as numbers:
            hub.publish(1)
            hub.publish(2)
            assert [await numbers.receive(), await numbers.receive()] == [1, 2]

    trio.run(main)

The delivery rules every foundation subscription follows (config changes,
live events):

- every published item a subscriber accepts reaches it, in publication
  order, once: no gap, no duplicate;
- `Hub.publish` never waits and never fails because of a subscriber: the
  publisher (a service's handler) is never stalled by a slow consumer;
- a subscriber whose buffer is full when an item comes is *cut off*: it is
  removed from the hub, receives everything already buffered, and then
  `SubscriptionOverflowError`; it is never silently skipped past an item;
- a subscription lasts exactly as long as its ``async with`` block; however
  the block ends, nothing of it is left in the hub.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar, final

import attrs
import trio

from ._errors import SubscriptionOverflowError
from ._telemetry import SUBSCRIPTION_CUT_OFF, emit_count

T = TypeVar("T")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@attrs.frozen
class SubscriptionStatistics:
    """A subscription at one instant (as Trio's channel statistics, no await)."""

    buffered: int
    """Items received by the hub and not yet by the subscriber."""
    buffer: int
    """The buffer's bound."""
    delivered: int
    """Items the subscriber has received so far."""
    cut_off: bool
    """True once the subscriber was cut off for being too slow."""
    closed: bool
    """True once the hub ended the subscription (its service scope is gone)."""


@final
class Subscription(Generic[T]):
    """The receiving end of one subscription; iterate it or call `receive`."""

    __slots__ = (
        "_accept",
        "_buffer",
        "_closed",
        "_cut_off",
        "_delivered",
        "_hub",
        "_items",
        "_lot",
        "_task",
    )

    def __init__(self, hub: Hub[T], buffer: int, accept: Callable[[T], bool] | None) -> None:
        self._hub = hub
        self._buffer = buffer
        self._accept = accept
        self._items: deque[T] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._delivered = 0
        self._cut_off = False
        self._closed = False
        # The task that opened it (whose `async with` block it lasts for): who
        # holds it, for a leak report (trioscope.testing).
        self._task = trio.lowlevel.current_task()

    def __repr__(self) -> str:
        state = "cut off" if self._cut_off else "closed" if self._closed else "live"
        return (
            f"<Subscription to {self._hub.what} {len(self._items)}/{self._buffer} "
            f"delivered={self._delivered} {state}>"
        )

    def statistics(self) -> SubscriptionStatistics:
        """How full the buffer is and what was delivered (no await)."""
        return SubscriptionStatistics(
            buffered=len(self._items),
            buffer=self._buffer,
            delivered=self._delivered,
            cut_off=self._cut_off,
            closed=self._closed,
        )

    async def receive(self) -> T:
        """The next item, waiting for one if needed.

        Raises:
            SubscriptionOverflowError: the subscriber was cut off for being too
                slow, and every item buffered before that has been received.
            trio.EndOfChannel: the hub was closed (its service's scope ended),
                and every buffered item has been received.
        """
        while True:
            if self._items:
                await trio.lowlevel.checkpoint_if_cancelled()
                if not self._items:  # another receiver of this subscription took it
                    continue
                item = self._items.popleft()
                self._delivered += 1
                await trio.lowlevel.cancel_shielded_checkpoint()
                return item
            if self._cut_off:
                await trio.lowlevel.checkpoint()
                raise SubscriptionOverflowError(self._hub.what, self._delivered, self._buffer)
            if self._closed:
                await trio.lowlevel.checkpoint()
                raise trio.EndOfChannel(f"the subscription to {self._hub.what} was closed")
            await self._lot.park()

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def _offer(self, item: T) -> bool:
        """Buffer *item* if accepted; False when the subscriber must be cut off."""
        if self._accept is not None and not self._accept(item):
            return True
        if len(self._items) >= self._buffer:
            self._cut_off = True
            self._lot.unpark_all()
            return False
        self._items.append(item)
        self._lot.unpark_all()
        return True

    def _close(self) -> None:
        self._closed = True
        self._lot.unpark_all()


@final
class Hub(Generic[T]):
    """Publishes items to every live subscriber without ever waiting on one."""

    __slots__ = ("_closed", "_subscribers", "what")

    def __init__(self, *, what: str) -> None:
        self.what = what
        """What is published, for messages: ``"config changes"``, ``"events"``."""
        # A dict as an ordered set: O(1) removal when a block ends or a subscriber is cut off.
        self._subscribers: dict[Subscription[T], None] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<Hub of {self.what} subscribers={len(self._subscribers)}>"

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, item: T) -> None:
        """Hand *item* to every subscriber that accepts it; never waits.

        A subscriber whose buffer is full is cut off (see the module docstring).
        """
        cut: list[Subscription[T]] = []
        for sub in self._subscribers:
            if not sub._offer(item):
                cut.append(sub)
        for sub in cut:
            del self._subscribers[sub]
            emit_count(SUBSCRIPTION_CUT_OFF, 1, {"what": self.what, "buffer": sub._buffer})

    @contextlib.asynccontextmanager
    async def subscribe(
        self, *, buffer: int, accept: Callable[[T], bool] | None = None
    ) -> AsyncIterator[Subscription[T]]:
        """Receive what is published from now on, while the block lasts.

        Args:
            buffer: How many items may wait for the subscriber (>= 1) before it
                is cut off.
            accept: Only items for which this returns True are delivered
                (a filter; it runs in the publisher and must be cheap).

        Raises:
            ValueError: a buffer below 1.
            TypeError: a buffer that is not an int.
            trio.ClosedResourceError: the hub is closed.
        """
        await trio.lowlevel.checkpoint()  # first: every path checkpoints, errors included
        if not _is_int(buffer):
            raise TypeError(f"buffer must be an int, got {type(buffer).__name__}: {buffer!r}")
        if buffer < 1:
            raise ValueError(f"buffer must be >= 1, got {buffer}")
        if self._closed:
            raise trio.ClosedResourceError(f"cannot subscribe to {self.what}: it is closed")
        sub: Subscription[T] = Subscription(self, buffer, accept)
        self._subscribers[sub] = None
        try:
            yield sub
        finally:
            self._subscribers.pop(sub, None)
            sub._close()

    def close(self) -> None:
        """End every subscription; receivers get their buffered items, then end of stream."""
        self._closed = True
        subscribers, self._subscribers = self._subscribers, {}
        for sub in subscribers:
            sub._close()
