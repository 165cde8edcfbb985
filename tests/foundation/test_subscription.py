"""The delivery rules of `Hub`: in order, no gap, no duplicate, explicit cut-off."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from _guards import checkpoints_even_when_raising
from hypothesis import given
from hypothesis import strategies as st

from trioscope.foundation import SubscriptionOverflowError
from trioscope.foundation._subscription import Hub

pytestmark = pytest.mark.trioscope_scope


async def test_items_arrive_in_order_to_every_subscriber() -> None:
    hub: Hub[int] = Hub(what="numbers")
    async with hub.subscribe(buffer=5) as a, hub.subscribe(buffer=5) as b:
        for i in range(5):
            hub.publish(i)
        assert [await a.receive() for _ in range(5)] == [0, 1, 2, 3, 4]
        assert [await b.receive() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert len(hub) == 0


async def test_a_slow_subscriber_is_cut_off_after_its_buffered_items() -> None:
    hub: Hub[int] = Hub(what="numbers")
    async with hub.subscribe(buffer=2) as slow, hub.subscribe(buffer=10) as fast:
        for i in range(4):
            hub.publish(i)  # never waits, never raises
        assert len(hub) == 1
        assert slow.statistics().cut_off
        assert [await slow.receive(), await slow.receive()] == [0, 1]
        with pytest.raises(
            SubscriptionOverflowError,
            match=r"^subscription to numbers cut off after 2 items: its buffer of 2 was full",
        ) as info:
            await slow.receive()
        assert (info.value.delivered, info.value.buffer) == (2, 2)
        assert [await fast.receive() for _ in range(4)] == [0, 1, 2, 3]


async def test_filter_and_iteration_end_when_the_hub_closes() -> None:
    hub: Hub[int] = Hub(what="numbers")
    async with hub.subscribe(buffer=3, accept=lambda n: n % 2 == 0) as evens:
        for i in range(6):
            hub.publish(i)
        hub.close()
        assert [n async for n in evens] == [0, 2, 4]
    with pytest.raises(trio.ClosedResourceError):
        async with hub.subscribe(buffer=1):
            pass  # pragma: no cover


async def test_a_receiver_waits_for_the_next_item() -> None:
    hub: Hub[str] = Hub(what="words")
    got: list[str] = []
    async with hub.subscribe(buffer=1) as sub, trio.open_nursery() as nursery:

        async def receive() -> None:
            got.append(await sub.receive())

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        hub.publish("hello")
    assert got == ["hello"]


async def test_a_subscriber_that_crashes_leaves_nothing_behind() -> None:
    hub: Hub[int] = Hub(what="numbers")
    with pytest.raises(RuntimeError, match=r"^boom$"):
        async with hub.subscribe(buffer=1):
            raise RuntimeError("boom")
    assert len(hub) == 0


@pytest.mark.parametrize(
    ("buffer", "error"), [(0, ValueError), (1.5, TypeError), (True, TypeError)]
)
async def test_bad_buffers_are_refused(buffer: object, error: type[Exception]) -> None:
    hub: Hub[int] = Hub(what="numbers")
    with pytest.raises(error, match=r"^buffer must be"):
        async with hub.subscribe(buffer=buffer):  # type: ignore[arg-type]
            pass  # pragma: no cover


@given(
    st.lists(st.integers(min_value=0, max_value=4), max_size=40),
    st.integers(min_value=1, max_value=5),
)
def test_delivery_is_the_published_prefix_then_the_cut(reads: list[int], buffer: int) -> None:
    """Interleave publishing with reads of random sizes: what the subscriber gets is
    exactly a prefix of what was published, with no gap or duplicate, and it is cut
    off precisely when a publish found its buffer full."""

    async def main() -> None:
        hub: Hub[int] = Hub(what="numbers")
        published = 0
        received: list[int] = []
        model_buffered = 0
        model_cut = False
        async with hub.subscribe(buffer=buffer) as sub:
            for n in reads:
                hub.publish(published)
                published += 1
                if not model_cut:
                    if model_buffered == buffer:
                        model_cut = True
                    else:
                        model_buffered += 1
                for _ in range(min(n, model_buffered)):
                    received.append(await sub.receive())
                    model_buffered -= 1
            while model_buffered:
                received.append(await sub.receive())
                model_buffered -= 1
            assert received == list(range(len(received)))
            if model_cut:
                with pytest.raises(SubscriptionOverflowError):
                    await sub.receive()
            else:
                assert len(received) == published

    trio.run(main)


@pytest.mark.parametrize("buffer", [0, 1.5])
async def test_a_refused_subscription_checkpoints(buffer: object) -> None:
    hub: Hub[int] = Hub(what="numbers")
    with checkpoints_even_when_raising(), pytest.raises((ValueError, TypeError)):
        async with hub.subscribe(buffer=buffer):  # type: ignore[arg-type]
            pass  # pragma: no cover
