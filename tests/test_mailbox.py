"""The private mailbox behaves as one end of a trio memory channel."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trioscope._mailbox import _Mailbox

pytestmark = pytest.mark.trioscope_scope


async def test_fifo_and_bounded() -> None:
    box: _Mailbox[int] = _Mailbox(2)
    box.send_nowait(1)
    box.send_nowait(2)
    with pytest.raises(trio.WouldBlock):
        box.send_nowait(3)
    assert box.depth() == 2
    assert [box.receive_nowait(), box.receive_nowait()] == [1, 2]
    with pytest.raises(trio.WouldBlock):
        box.receive_nowait()


async def test_send_and_receive_checkpoint() -> None:
    box: _Mailbox[int] = _Mailbox(1)
    with trio.testing.assert_checkpoints():
        await box.send(1)
    with trio.testing.assert_checkpoints():
        assert await box.receive() == 1


async def test_waiting_senders_are_served_in_order_and_a_cancelled_one_sends_nothing() -> None:
    box: _Mailbox[str] = _Mailbox(1)
    box.send_nowait("first")

    async def send_cancellable(
        value: str, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await box.send(value)

    async with trio.open_nursery() as nursery:
        await nursery.start(send_cancellable, "a")
        b = await nursery.start(send_cancellable, "b")
        await nursery.start(send_cancellable, "c")
        await trio.testing.wait_all_tasks_blocked()
        b.cancel()
        await trio.testing.wait_all_tasks_blocked()
        received = [await box.receive() for _ in range(3)]
    assert received == ["first", "a", "c"]
    assert box.depth() == 0


async def test_a_waiting_sender_is_cancelled_without_sending() -> None:
    box: _Mailbox[str] = _Mailbox(1)
    box.send_nowait("first")
    with trio.move_on_after(1) as scope:
        await box.send("never")
    assert scope.cancelled_caught
    assert box.receive_nowait() == "first"
    with pytest.raises(trio.WouldBlock):
        box.receive_nowait()


async def test_close_wakes_the_receiver_and_fails_senders() -> None:
    box: _Mailbox[int] = _Mailbox(1)
    errors: list[type[BaseException]] = []

    async def receive() -> None:
        try:
            await box.receive()
        except trio.ClosedResourceError as exc:
            errors.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        box.close()
    assert errors == [trio.ClosedResourceError]
    with pytest.raises(trio.BrokenResourceError):
        box.send_nowait(1)
    with pytest.raises(trio.ClosedResourceError):
        box.receive_nowait()


async def test_close_fails_waiting_senders() -> None:
    box: _Mailbox[int] = _Mailbox(1)
    box.send_nowait(0)

    async def close_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        box.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_soon)
        with pytest.raises(trio.BrokenResourceError):
            await box.send(1)


async def test_withdraw_removes_a_queued_value_and_frees_its_slot_at_once() -> None:
    box: _Mailbox[str] = _Mailbox(2)
    box.send_nowait("a")
    box.send_nowait("b")
    with pytest.raises(trio.WouldBlock):
        box.send_nowait("c")
    assert box.withdraw("a") is True
    assert box.depth() == 1
    box.send_nowait("c")  # the withdrawn value's slot is free for the next sender
    assert box.depth() == 2
    assert [box.receive_nowait(), box.receive_nowait()] == ["b", "c"]


@pytest.mark.parametrize("position", [0, 2, 4])
async def test_withdraw_at_the_front_the_middle_or_the_back_keeps_the_order(
    position: int,
) -> None:
    box: _Mailbox[str] = _Mailbox(5)
    values = ["v0", "v1", "v2", "v3", "v4"]
    for value in values:
        box.send_nowait(value)
    assert box.withdraw(values[position]) is True
    assert box.withdraw(values[position]) is False  # only once
    assert box.depth() == 4
    assert [box.receive_nowait() for _ in range(4)] == values[:position] + values[position + 1 :]


async def test_withdraw_of_a_value_not_in_the_queue_changes_nothing() -> None:
    box: _Mailbox[str] = _Mailbox(2)
    assert box.withdraw("never sent") is False  # before the buffer exists
    box.send_nowait("a")
    assert box.withdraw("elsewhere") is False
    assert box.receive_nowait() == "a"
    assert box.withdraw("a") is False  # already received
    assert box.depth() == 0
    box.close()
    assert box.withdraw("a") is False


async def test_withdraw_admits_the_longest_waiting_sender() -> None:
    box: _Mailbox[str] = _Mailbox(1)
    box.send_nowait("queued")
    sent: list[str] = []

    async def sender(value: str) -> None:
        await box.send(value)
        sent.append(value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender, "first waiter")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(sender, "second waiter")
        await trio.testing.wait_all_tasks_blocked()
        assert box.withdraw("queued") is True
        # The freed slot went to the first waiting sender, at once; the second still waits.
        assert box.depth() == 1
        await trio.testing.wait_all_tasks_blocked()
        assert sent == ["first waiter"]
        assert box.receive_nowait() == "first waiter"
        await trio.testing.wait_all_tasks_blocked()
        assert sent == ["first waiter", "second waiter"]
        assert box.receive_nowait() == "second waiter"
    assert box.depth() == 0


# Every value sent is a new one (values are withdrawn by identity, as messages
# are); a withdraw picks any value sent so far: queued, received or still waiting.
Op = st.one_of(
    st.tuples(st.just("send"), st.just(0)),
    st.tuples(st.just("receive"), st.just(0)),
    st.tuples(st.just("withdraw"), st.integers(0, 9)),
)


def _pick(sent: list[int], index: int) -> int:
    """The value a withdraw targets: one sent so far, or -1 (never sent)."""
    return sent[index % len(sent)] if sent else -1


def _withdraw_from_channel(
    send: trio.MemorySendChannel[int], receive: trio.MemoryReceiveChannel[int], value: int
) -> bool:
    """A withdraw modelled on a memory channel with no waiting senders: drain it,
    and send back everything but the first occurrence of *value*."""
    queued = _drain(receive.receive_nowait)
    found = value in queued
    if found:
        queued.remove(value)
    for item in queued:
        send.send_nowait(item)
    return found


@given(capacity=st.integers(1, 4), ops=st.lists(Op, max_size=40))
def test_nowait_operations_match_a_trio_memory_channel(
    capacity: int, ops: list[tuple[str, int]]
) -> None:
    box: _Mailbox[int] = _Mailbox(capacity)
    send, receive = trio.open_memory_channel[int](capacity)
    sent: list[int] = []
    for number, (op, value) in enumerate(ops):
        if op == "send":
            value = number
            sent.append(value)
            outcomes = []
            for fn in (box.send_nowait, send.send_nowait):
                try:
                    fn(value)
                    outcomes.append("ok")
                except trio.WouldBlock:
                    outcomes.append("full")
        elif op == "withdraw":
            target = _pick(sent, value)
            outcomes = [box.withdraw(target), _withdraw_from_channel(send, receive, target)]
        else:
            outcomes = []
            for rfn in (box.receive_nowait, receive.receive_nowait):
                try:
                    outcomes.append(rfn())
                except trio.WouldBlock:
                    outcomes.append("empty")
        assert outcomes[0] == outcomes[1]
        assert box.depth() == receive.statistics().current_buffer_used
    # What is left comes out in the same order.
    assert _drain(box.receive_nowait) == _drain(receive.receive_nowait)


def _drain(receive_nowait: Callable[[], int]) -> list[int]:
    values = []
    while True:
        try:
            values.append(receive_nowait())
        except trio.WouldBlock:
            return values


WaitingOp = st.one_of(
    st.tuples(st.just("send_nowait"), st.just(0)),
    st.tuples(st.just("send"), st.just(0)),  # from a task of its own: may wait
    st.tuples(st.just("receive"), st.just(0)),
    st.tuples(st.just("withdraw"), st.integers(0, 9)),
    st.tuples(st.just("cancel"), st.integers(0, 3)),  # the n-th sender still waiting
)


@given(capacity=st.integers(1, 3), ops=st.lists(WaitingOp, max_size=30))
def test_withdraw_with_waiting_senders_matches_a_model(
    capacity: int, ops: list[tuple[str, int]]
) -> None:
    """With senders waiting for space, a withdraw admits the longest-waiting one,
    exactly as a receive does; a cancelled waiting sender sends nothing."""

    async def main() -> None:
        box: _Mailbox[int] = _Mailbox(capacity)
        queue: list[int] = []  # the model: what the buffer holds, in order
        waiting: list[tuple[int, int]] = []  # (sender, value), longest-waiting first
        sent: set[int] = set()  # senders whose send returned
        expected_sent: set[int] = set()
        scopes: dict[int, trio.CancelScope] = {}
        values: list[int] = []  # every value sent so far, by send_nowait or a sender

        def admit_one() -> None:
            if waiting:
                sender, value = waiting.pop(0)
                queue.append(value)
                expected_sent.add(sender)

        async def sender(number: int, value: int) -> None:
            with trio.CancelScope() as scopes[number]:
                await box.send(value)
                sent.add(number)

        async with trio.open_nursery() as nursery:
            for number, (op, value) in enumerate(ops):
                if op in ("send_nowait", "send"):
                    value = number
                    values.append(value)
                if op == "send_nowait":
                    try:
                        box.send_nowait(value)
                        outcome: object = "ok"
                    except trio.WouldBlock:
                        outcome = "full"
                    assert outcome == ("ok" if len(queue) < capacity else "full")
                    if outcome == "ok":
                        queue.append(value)
                elif op == "send":
                    nursery.start_soon(sender, number, value)
                    if len(queue) < capacity:
                        queue.append(value)
                        expected_sent.add(number)
                    else:
                        waiting.append((number, value))
                elif op == "receive":
                    try:
                        got: object = box.receive_nowait()
                    except trio.WouldBlock:
                        got = "empty"
                    assert got == (queue.pop(0) if queue else "empty")
                    if got != "empty":
                        admit_one()
                elif op == "withdraw":
                    value = _pick(values, value)
                    found = box.withdraw(value)
                    assert found == (value in queue)
                    if found:
                        queue.remove(value)
                        admit_one()
                elif value < len(waiting):  # cancel
                    cancelled, _ = waiting.pop(value)
                    scopes[cancelled].cancel()
                await trio.testing.wait_all_tasks_blocked()
                assert box.depth() == len(queue)
                assert sent == expected_sent
            # Draining admits the waiting senders, in the order they came.
            assert _drain(box.receive_nowait) == queue + [value for _, value in waiting]
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
