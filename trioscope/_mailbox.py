"""A service's mailbox: a bounded, single-receiver memory channel.

It behaves as one end of a `trio.open_memory_channel` pair (FIFO, bounded,
``send`` waits for space, ``receive`` waits for a message, both checkpoint and
honour cancellation; ``send_nowait`` raises `trio.WouldBlock` when full), but
an idle one costs a few hundred bytes instead of about 2.3 KB: a service has
exactly one receiver, and the buffer and the queue of waiting senders are made
only when first needed. Idle services are the common case (a dynamic
supervisor may hold 100,000 of them), which is what the saving is for.

One operation a memory channel lacks: `_Mailbox.withdraw` takes a queued value
back out (a call whose caller gave up), so it stops holding capacity at once.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Generic, TypeVar, final

import outcome
import trio
from trio.lowlevel import (
    Abort,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

if TYPE_CHECKING:
    from trio.lowlevel import Task

T = TypeVar("T")


@final
class _Mailbox(Generic[T]):
    __slots__ = ("_buffer", "_receiver", "_senders", "capacity", "closed")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.closed = False
        self._buffer: deque[T] | None = None
        self._receiver: Task | None = None
        self._senders: OrderedDict[Task, T] | None = None

    def depth(self) -> int:
        """Messages waiting to be received."""
        return len(self._buffer) if self._buffer is not None else 0

    # -- sending (any task) ---------------------------------------------------

    def send_nowait(self, value: T) -> None:
        if self.closed:
            raise trio.BrokenResourceError
        receiver = self._receiver
        if receiver is not None:
            # The receiver waits, so the buffer is empty: hand the value over.
            self._receiver = None
            reschedule(receiver, outcome.Value(value))
            return
        buffer = self._buffer
        if buffer is None:
            buffer = self._buffer = deque()
        if len(buffer) >= self.capacity:
            raise trio.WouldBlock
        buffer.append(value)

    async def send(self, value: T) -> None:
        await checkpoint_if_cancelled()
        try:
            self.send_nowait(value)
        except trio.WouldBlock:
            pass
        else:
            await cancel_shielded_checkpoint()
            return
        task = current_task()
        senders = self._senders
        if senders is None:
            senders = self._senders = OrderedDict()
        senders[task] = value

        def abort(_raise_cancel: object) -> Abort:
            senders.pop(task, None)  # cancelled while waiting: nothing was sent
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def withdraw(self, value: T) -> bool:
        """Take *value* back out of the queue, if it is there; its slot is free at once.

        Returns whether it was queued. *value* is an object queued at most once
        (as a message is), found by identity (or ``==``, for values that define
        it). The freed slot goes to the longest-waiting sender, as if the receiver
        had taken a message. O(1) at either end of the queue (the newest message,
        whose caller gave up at once; the oldest, whose caller timed out first),
        O(queue) in between: it is for the rare path only.
        """
        buffer = self._buffer
        if not buffer:
            return False
        if buffer[-1] is value:
            buffer.pop()
        else:
            try:
                buffer.remove(value)  # identity first, then ==: a message compares by identity
            except ValueError:
                return False
        senders = self._senders
        if senders:
            task, waiting = senders.popitem(last=False)
            buffer.append(waiting)
            reschedule(task, outcome.Value(None))
        return True

    # -- receiving (the service's task) ---------------------------------------

    def receive_nowait(self) -> T:
        buffer = self._buffer
        if buffer:
            value = buffer.popleft()
            senders = self._senders
            if senders:
                # Room now: the longest-waiting sender's value joins the queue.
                task, waiting = senders.popitem(last=False)
                buffer.append(waiting)
                reschedule(task, outcome.Value(None))
            return value
        if self.closed:
            raise trio.ClosedResourceError
        raise trio.WouldBlock

    async def receive(self) -> T:
        await checkpoint_if_cancelled()
        try:
            value = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await cancel_shielded_checkpoint()
            return value
        self._receiver = current_task()

        def abort(_raise_cancel: object) -> Abort:
            self._receiver = None
            return Abort.SUCCEEDED

        return await wait_task_rescheduled(abort)  # type: ignore[no-any-return]

    def close(self) -> None:
        """No more messages: a waiting receiver gets `trio.ClosedResourceError`,
        waiting and later senders `trio.BrokenResourceError`. Drain it first."""
        if self.closed:
            return
        self.closed = True
        if self._receiver is not None:
            receiver, self._receiver = self._receiver, None
            reschedule(receiver, outcome.Error(trio.ClosedResourceError()))
        if self._senders:
            for task in self._senders:
                reschedule(task, outcome.Error(trio.BrokenResourceError()))
            self._senders.clear()
        if self._buffer:
            self._buffer.clear()
