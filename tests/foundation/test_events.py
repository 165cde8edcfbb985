"""The EventStore: ids, validation, atomic batches, queries, retention, subscriptions,
the write buffer, group commit, settings from config and isolation between scopes."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trioscope
from trioscope.foundation import (
    EventBufferFullError,
    EventRejected,
    SubscriptionOverflowError,
    config,
    events,
)
from trioscope.foundation._event import Event, Recovered
from trioscope.foundation._events import (
    EventQueryRejected,
    EventStore,
    EventStoreSettings,
    event_store_spec,
    truncate_data,
)
from trioscope.foundation._memory import MemoryBackend
from trioscope.foundation._settings import setting

pytestmark = pytest.mark.trioscope_scope

START_NS = 1_700_000_000_000_000_000


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


class WallClock:
    """An injected wall clock (ns) that only moves when told to."""

    def __init__(self) -> None:
        self.now = START_NS

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


class Backend:
    """A MemoryBackend that can fail an append (crashing the store) or hold an open
    (keeping a restarting store out of service) or an append (a slow disk)."""

    def __init__(self, *, durable: bool = False) -> None:
        self.inner = MemoryBackend()
        self.durable = durable
        self.fail_appends = 0
        self.open_gate: trio.Event | None = None
        self.append_gate: trio.Event | None = None
        self.opens = 0
        self.closes = 0
        self.appends: list[list[int]] = []

    async def open(self) -> Recovered:
        self.opens += 1
        if self.open_gate is not None:
            await self.open_gate.wait()
        return await self.inner.open()

    async def append(self, batch: Sequence[Event]) -> None:
        if self.append_gate is not None:
            await self.append_gate.wait()
        if self.fail_appends:
            self.fail_appends -= 1
            raise RuntimeError("disk on fire")
        await self.inner.append(batch)
        self.appends.append([e.id for e in batch])

    async def prune_through(self, last_id: int) -> None:
        await self.inner.prune_through(last_id)

    async def aclose(self) -> None:
        self.closes += 1

    def describe(self) -> str:
        return "test"


@asynccontextmanager
async def running(*specs: trioscope.ChildSpec[Any]) -> AsyncIterator[trioscope.Supervisor]:
    """An isolated scope with *specs* (default: an event store) under a supervisor."""
    children = list(specs) or [event_store_spec()]
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor(children, max_restarts=10) as sup,
    ):
        yield sup


async def ids() -> list[int]:
    return [e.id for e in await events.query()]


# -- ids ---------------------------------------------------------------------------


async def test_ids_are_assigned_in_order_with_timestamps() -> None:
    clock = WallClock()
    async with running(event_store_spec(wall_clock=clock)):
        assert await events.store(Event("a")) == 1
        clock.advance(1)
        assert await events.store_batch([Event("b"), Event("c", {"k": [1, 2.5, None]})]) == [2, 3]
        assert await events.store_batch([]) == []
        stored = await events.query()
        assert [(e.id, e.type, e.wall_ns) for e in stored] == [
            (1, "a", START_NS),
            (2, "b", START_NS + 10**9),
            (3, "c", START_NS + 10**9),
        ]
        assert stored[2].data == {"k": [1, 2.5, None]}
        assert 0 < stored[0].monotonic_ns <= stored[1].monotonic_ns
        assert await events.get(2) == stored[1]
        assert await events.get(4) is None


async def test_wall_time_never_goes_back_in_id_order() -> None:
    clock = WallClock()
    async with running(event_store_spec(wall_clock=clock)):
        await events.store(Event("a"))
        clock.advance(-5)  # the system clock was set back
        await events.store(Event("b"))
        clock.advance(10)
        await events.store(Event("c"))
        assert [e.wall_ns for e in await events.query()] == [
            START_NS,
            START_NS,
            START_NS + 5 * 10**9,
        ]


async def test_ids_are_never_reused_across_a_crash_of_the_store() -> None:
    backend = Backend()
    async with running(event_store_spec(crash_trail=False, backend=lambda: backend)):
        assert await events.store_batch([Event("a"), Event("b"), Event("c")]) == [1, 2, 3]
        assert await events.prune_before(START_NS * 2) == 3  # everything is pruned
        backend.fail_appends = 1
        with pytest.raises(trioscope.ServiceCrashedError) as crashed:
            await events.store(Event("lost"))
        assert str(crashed.value.__cause__) == "disk on fire"
        # The crashed write was never acknowledged; the next id is above every id
        # acknowledged before, although none is retained.
        assert await events.store(Event("d")) == 4
        stats = await events.stats()
        assert (stats.count, stats.first_id, stats.last_id, stats.restarts) == (1, 4, 4, 1)
        assert (stats.stored_total, stats.pruned_total) == (4, 3)
        assert backend.opens == 2
        assert backend.closes == 1  # the crashed incarnation closed it


async def test_events_in_memory_survive_a_crash_of_the_store() -> None:
    backend = Backend()
    async with running(event_store_spec(crash_trail=False, backend=lambda: backend)):
        await events.store_batch([Event("a", correlation_id="r"), Event("b")])
        backend.fail_appends = 1
        with pytest.raises(trioscope.ServiceCrashedError):
            await events.store(Event("lost"))
        assert await events.store(Event("c", correlation_id="r")) == 3
        assert await ids() == [1, 2, 3]
        assert [e.type for e in await events.correlation_chain("r")] == ["a", "c"]


# -- validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            Event("a", id=7),
            "it has id 7: ids are assigned by the store, never by the caller "
            "(pass an Event with id=0)",
        ),
        (
            Event("a", wall_ns=7),
            "it has timestamps set: monotonic_ns and wall_ns are assigned by the store "
            "(pass an Event with both 0)",
        ),
        (
            Event("a", {"x": {"y": [1, {2, 3}]}}),  # type: ignore[list-item]
            "data['x']['y'][1] is a set ({2, 3}), which is not JSON-compatible "
            "(None, bool, int, finite float, str, list, tuple, dict with str keys)",
        ),
        (
            Event("a", {"x": math.nan}),
            "data['x'] is nan: JSON has no NaN or infinity (finite floats only)",
        ),
        (
            Event("a", {"x": [math.inf]}),
            "data['x'][0] is inf: JSON has no NaN or infinity (finite floats only)",
        ),
        (
            Event("a", {"x": {1: "one"}}),  # type: ignore[dict-item]
            "data['x'] has a key 1 that is not a str (JSON keys are str)",
        ),
        (
            Event("a", {1: "one"}),  # type: ignore[dict-item]
            "data has a key 1 that is not a str (JSON keys are str)",
        ),
        ("not an event", "str 'not an event' is not an Event"),
    ],
)
async def test_an_invalid_event_is_rejected_with_the_rule(event: Any, reason: str) -> None:
    async with running():
        with pytest.raises(EventRejected, match=exactly(f"event rejected: {reason}")) as caught:
            await events.store(event)
        assert (caught.value.reason, caught.value.index, caught.value.event) == (
            reason,
            None,
            event,
        )
        with pytest.raises(EventRejected, match=exactly(f"event rejected: {reason}")):
            events.store_nowait(event)
        stats = await events.stats()
        assert (stats.count, stats.last_id, stats.rejected_total) == (0, 0, 2)


async def test_a_deeply_nested_or_cyclic_value_is_rejected() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    async with running():
        with pytest.raises(EventRejected, match=r"^event rejected: data\['c'\](\[0\]){99} is "):
            await events.store(Event("a", {"c": cyclic}))  # type: ignore[dict-item]


async def test_data_is_copied_as_plain_json() -> None:
    data: dict[str, Any] = {"t": (1, 2), "nested": {"k": ["v"]}, "big": 10**30, "f": 1.5}
    async with running():
        await events.store(Event("a", data))
        data["nested"]["k"].append("changed later")
        (stored,) = await events.query()
        assert stored.data == {"t": [1, 2], "nested": {"k": ["v"]}, "big": 10**30, "f": 1.5}


async def test_data_over_the_size_limit_is_rejected_naming_size_and_limit() -> None:
    async with running(event_store_spec(max_data_bytes=100)):
        fits = {"s": "x" * 92}  # {"s":"xxx..."} is 100 bytes
        await events.store(Event("ok", fits))
        with pytest.raises(
            EventRejected,
            match=exactly(
                "event rejected: data is 101 bytes as JSON, over the limit of 100 bytes "
                "(events.max_data_bytes); truncate_data() summarises large values"
            ),
        ):
            await events.store(Event("big", {"s": "x" * 93}))
        # Multi-byte characters count in bytes of UTF-8.
        with pytest.raises(EventRejected, match=r"^event rejected: data is 132 bytes as JSON"):
            await events.store(Event("big", {"s": "é" * 62}))
        summary = truncate_data({"s": "x" * 1000, "n": 1}, 200)
        assert summary == {
            "s": {"truncated": "str", "bytes": 1002, "chars": 1000, "preview": "x" * 64},
            "n": 1,
        }
        with pytest.raises(EventRejected):  # the summary is larger than 100 bytes
            await events.store(Event("big", summary))
        assert await ids() == [1]


def test_truncate_data_summarises_the_largest_values_first() -> None:
    small = {"a": 1, "b": "x"}
    assert truncate_data(small, 128) == small
    assert truncate_data(small, 128) is not small
    data = {"list": list(range(100)), "dict": {str(i): i for i in range(30)}, "n": 5}
    assert truncate_data(data, 200) == {
        "list": {"truncated": "list", "bytes": 291, "items": 100},
        "dict": {"truncated": "dict", "bytes": 221, "keys": 30},
        "n": 5,
    }
    many = {f"key{i}": "v" * 50 for i in range(20)}
    assert truncate_data(many, 128) == {"truncated": "dict", "bytes": 1211, "keys": 20}
    with pytest.raises(
        ValueError,
        match=exactly("truncate_data: max_bytes must be >= 128 (room for a summary), got 127"),
    ):
        truncate_data(small, 127)
    with pytest.raises(
        TypeError, match=exactly("truncate_data: max_bytes must be an int, got float: 200.0")
    ):
        truncate_data(small, 200.0)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=exactly(
            "truncate_data: data['s'] is a set (set()), which is not JSON-compatible "
            "(None, bool, int, finite float, str, list, tuple, dict with str keys)"
        ),
    ):
        truncate_data({"s": set()}, 200)


# -- batches -------------------------------------------------------------------------


async def test_a_batch_with_one_bad_event_stores_nothing_and_names_its_index() -> None:
    async with running():
        await events.store(Event("before"))
        bad: dict[str, Any] = {"bad": {1, 2}}
        batch = [Event("a"), Event("b"), Event("c", bad), Event("d")]
        with pytest.raises(
            EventRejected,
            match=exactly(
                "event 2 of the batch rejected: data['bad'] is a set ({1, 2}), which is not "
                "JSON-compatible (None, bool, int, finite float, str, list, tuple, dict with "
                "str keys); nothing in the batch was stored"
            ),
        ) as caught:
            await events.store_batch(batch)
        assert (caught.value.index, caught.value.event) == (2, batch[2])
        assert await ids() == [1]
        # No id was consumed by the rejected batch.
        assert await events.store_batch([Event("e"), Event("f")]) == [2, 3]
        stats = await events.stats()
        assert (stats.rejected_total, stats.stored_total) == (4, 3)


async def test_a_parent_may_be_an_earlier_event_of_the_same_batch() -> None:
    async with running():
        with pytest.raises(
            EventRejected,
            match=exactly(
                "event rejected: parent_id 1 does not name an earlier event (this event gets "
                "id 1): a parent is stored before its children"
            ),
        ):
            await events.store(Event("a", parent_id=1))
        assert await events.store_batch([Event("root"), Event("child", parent_id=1)]) == [1, 2]
        with pytest.raises(
            EventRejected,
            match=exactly(
                "event 1 of the batch rejected: parent_id 4 does not name an earlier event "
                "(this event gets id 4): a parent is stored before its children; nothing in "
                "the batch was stored"
            ),
        ):
            await events.store_batch([Event("x", parent_id=2), Event("y", parent_id=4)])


# -- queries -------------------------------------------------------------------------


async def seed(clock: WallClock) -> None:
    """Ten events, one second apart: types a/b alternating, correlation r0..r2."""
    for i in range(10):
        await events.store(Event("a" if i % 2 == 0 else "b", {"i": i}, correlation_id=f"r{i % 3}"))
        clock.advance(1)


async def test_queries_filter_by_type_correlation_and_time() -> None:
    clock = WallClock()
    async with running(event_store_spec(wall_clock=clock)):
        await seed(clock)

        async def found(**filters: Any) -> list[int]:
            return [e.data["i"] for e in await events.query(**filters)]  # type: ignore[misc]

        assert await found() == list(range(10))
        assert await found(type="a") == [0, 2, 4, 6, 8]
        assert await found(correlation_id="r1") == [1, 4, 7]
        assert await found(type="a", correlation_id="r1") == [4]
        assert await found(type="b", correlation_id="r1") == [1, 7]
        assert await found(type="nope") == []
        assert await found(type="a", correlation_id="nope") == []
        # Half-open: since_ns <= wall_ns < until_ns.
        assert await found(since_ns=START_NS + 3 * 10**9, until_ns=START_NS + 6 * 10**9) == [
            3,
            4,
            5,
        ]
        assert await found(type="b", since_ns=START_NS + 3 * 10**9) == [3, 5, 7, 9]
        assert await found(after_id=7) == [7, 8, 9]  # ids are i + 1
        assert await found(before_id=3, order="desc") == [1, 0]
        assert await found(limit=0) == []


async def test_desc_with_a_limit_gives_the_newest() -> None:
    clock = WallClock()
    async with running(event_store_spec(wall_clock=clock)):
        await seed(clock)
        newest = await events.query(order="desc", limit=3)
        assert [e.id for e in newest] == [10, 9, 8]
        assert [e.id for e in await events.query(limit=3)] == [1, 2, 3]
        assert [e.id for e in await events.query(type="a", order="desc", limit=2)] == [9, 7]
        assert [
            e.id for e in await events.query(type="a", correlation_id="r0", order="desc", limit=1)
        ] == [7]
        assert [e.id for e in await events.query(order="desc")] == list(range(10, 0, -1))


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"order": "newest"}, "order must be 'asc' or 'desc', got 'newest'"),
        ({"limit": -1}, "limit must be None or an int >= 0, got -1"),
        ({"limit": 2.0}, "limit must be None or an int >= 0, got 2.0"),
        (
            {"since_ns": 1.5},
            "since_ns must be None or an int (nanoseconds, time.time_ns()), got 1.5",
        ),
    ],
)
async def test_bad_query_arguments_are_rejected(filters: dict[str, Any], message: str) -> None:
    async with running():
        with pytest.raises(EventQueryRejected, match=exactly(message)):
            await events.query(**filters)
        # The service checks them too, and keeps running.
        with pytest.raises(EventQueryRejected, match=exactly(message)):
            await trioscope.call("events", EventStore.query, **filters)
        with pytest.raises(EventQueryRejected, match=exactly("batch must be an int >= 1, got 0")):
            async for _ in events.stream(batch=0):
                pass  # pragma: no cover
        assert await events.store(Event("a")) == 1


@pytest.mark.parametrize(
    ("handler", "kwargs", "error", "message"),
    [
        (
            EventStore.query,
            {"after_id": "7"},
            EventQueryRejected,
            "after_id must be None or an int (an event id), got '7'",
        ),
        (
            EventStore.query,
            {"type": ["a"]},
            EventQueryRejected,
            "type must be None or a str, got ['a']",
        ),
        (
            EventStore.query,
            {"correlation_id": 3},
            EventQueryRejected,
            "correlation_id must be None or a str, got 3",
        ),
        (EventStore.get, {"id": "1"}, EventQueryRejected, "id must be an int, got '1'"),
        (
            EventStore.correlation_chain,
            {"correlation_id": None},
            EventQueryRejected,
            "correlation_id must be a str, got None",
        ),
        (
            EventStore.prune_before,
            {"wall_ns": None},
            EventQueryRejected,
            "wall_ns must be an int (nanoseconds), got None",
        ),
        (
            EventStore.store_batch,
            {"events": None},
            EventRejected,
            "event rejected: store_batch takes a sequence of events, got NoneType",
        ),
        (
            EventStore.store_batch,
            {"events": "ab"},
            EventRejected,
            "event rejected: store_batch takes a sequence of events, got str",
        ),
        (
            EventStore.store_batch,
            {"events": [None]},
            EventRejected,
            "event 0 of the batch rejected: NoneType None is not an Event; nothing in the "
            "batch was stored",
        ),
    ],
)
async def test_a_callers_mistake_never_crashes_the_store(
    handler: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    async with running():
        with pytest.raises(error, match=exactly(message)):
            await trioscope.call("events", handler, **kwargs)
        assert (await events.stats()).restarts == 0


async def test_correlation_chain_puts_parents_before_children() -> None:
    async with running():
        root = await events.store(Event("request", correlation_id="r"))
        other = await events.store(Event("unrelated", correlation_id="s"))
        a = await events.store(Event("a", correlation_id="r", parent_id=root))
        # A child whose parent is in another chain, then a grandchild.
        b = await events.store(Event("b", correlation_id="r", parent_id=other))
        c = await events.store(Event("c", correlation_id="r", parent_id=a))
        d = await events.store(Event("d", correlation_id="r", parent_id=root))
        chain = await events.correlation_chain("r")
        assert [e.id for e in chain] == [root, a, b, c, d]
        position = {e.id: i for i, e in enumerate(chain)}
        for event in chain:
            if event.parent_id in position:
                assert position[event.parent_id] < position[event.id]
        assert await events.correlation_chain("none") == []


async def test_stream_yields_full_batches_and_ends_under_an_endless_stream() -> None:
    async with running():
        await events.store_batch([Event("a", {"i": i}) for i in range(25)])
        seen: list[list[int]] = []
        async for batch in events.stream(batch=10):
            seen.append([e.id for e in batch])
            await events.store(Event("a"))  # written while streaming: not in this stream
        assert seen == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
        desc = [[e.id for e in b] async for b in events.stream(batch=12, order="desc")]
        assert desc == [list(range(28, 16, -1)), list(range(16, 4, -1)), [4, 3, 2, 1]]
        by_type = [len(b) async for b in events.stream(type="none")]
        assert by_type == []


# -- retention -------------------------------------------------------------------------


async def test_retention_by_count_never_keeps_more_than_max_events() -> None:
    async with running(event_store_spec(max_events=128)):
        last = 0
        for round in range(40):
            if round % 2:
                last = (await events.store_batch([Event("t", correlation_id=f"c{round}")] * 17))[-1]
            else:
                last = await events.store(Event("u", correlation_id=f"c{round}"))
            stats = await events.stats()
            assert stats.count <= 128
            retained = await ids()
            assert retained == list(range(last - len(retained) + 1, last + 1))  # the newest
        # Pruning goes down to max_events minus 1/64 of it, once per that many writes.
        assert 126 <= stats.count <= 128
        assert stats.pruned_total == last - stats.count
        # Indexes of pruned types and correlations are gone too: memory stays bounded.
        assert stats.correlations == len({e.correlation_id for e in await events.query()})
        assert stats.types == 2


async def test_retention_by_age_on_write_and_periodically(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = WallClock()
    spec = event_store_spec(wall_clock=clock, max_age_s=10.0, prune_interval_s=5.0)
    async with running(spec):
        await events.store(Event("old"))
        clock.advance(6)
        await events.store(Event("newer"))
        clock.advance(5)  # "old" is 11 s old, "newer" 5 s
        await events.store(Event("newest"))  # pruned on write
        assert [e.type for e in await events.query()] == ["newer", "newest"]
        clock.advance(6)  # "newer" is 11 s old: the periodic task prunes it...
        await trio.sleep(4.9)
        assert [e.type for e in await events.query()] == ["newer", "newest"]
        await trio.sleep(0.2)  # ...at the next interval
        assert [e.type for e in await events.query()] == ["newest"]
        clock.advance(100)
        await trio.sleep(5)
        assert await events.query() == []
        stats = await events.stats()
        assert (stats.count, stats.pruned_total, stats.last_id) == (0, 3, 3)


async def test_prune_before_forgets_older_events() -> None:
    clock = WallClock()
    async with running(event_store_spec(wall_clock=clock)):
        await seed(clock)
        assert await events.prune_before(START_NS + 4 * 10**9) == 4
        assert await events.prune_before(START_NS + 4 * 10**9) == 0
        assert await ids() == [5, 6, 7, 8, 9, 10]
        assert [e.data["i"] for e in await events.query(correlation_id="r0")] == [6, 9]
        with pytest.raises(
            EventQueryRejected, match=exactly("wall_ns must be an int (nanoseconds), got 1.0")
        ):
            await events.prune_before(1.0)  # type: ignore[arg-type]


async def test_settings_are_checked_in_the_spec() -> None:
    with pytest.raises(
        ValueError, match=exactly("EventStoreSettings.max_events must be an int >= 1, got 0")
    ):
        event_store_spec(max_events=0)
    with pytest.raises(
        ValueError,
        match=exactly("EventStoreSettings.max_age_s must be a number of seconds > 0, got nan"),
    ):
        event_store_spec(max_age_s=math.nan)
    with pytest.raises(
        TypeError,
        match=exactly("EventStoreSettings.client_buffer must be an int >= 1, got str: '5'"),
    ):
        event_store_spec(client_buffer="5")  # type: ignore[arg-type]


# -- subscriptions -----------------------------------------------------------------------


async def test_subscribers_get_matching_events_in_order_across_a_store_restart() -> None:
    backend = Backend()
    async with running(event_store_spec(crash_trail=False, backend=lambda: backend)):
        async with (
            events.subscribe() as every,
            events.subscribe(type="a") as only_a,
            events.subscribe(correlation_id="r", type="b") as rb,
        ):
            assert (await events.stats()).subscribers == 3
            await events.store_batch([Event("a"), Event("b", correlation_id="r")])
            backend.fail_appends = 1
            with pytest.raises(trioscope.ServiceCrashedError):
                await events.store(Event("a"))  # never stored: never published
            await events.store(Event("a", correlation_id="r"))
            await events.store(Event("b", correlation_id="r"))
            assert [(await every.receive()).id for _ in range(4)] == [1, 2, 3, 4]
            assert [(await only_a.receive()).id for _ in range(2)] == [1, 3]
            assert [(await rb.receive()).id for _ in range(2)] == [2, 4]
            assert every.statistics().buffered == 0
        assert (await events.stats()).subscribers == 0


async def test_a_slow_subscriber_is_cut_off_and_the_store_goes_on() -> None:
    async with (
        running(event_store_spec(subscriber_buffer=2)),
        events.subscribe() as slow,
        events.subscribe(buffer=10) as fast,
    ):
        await events.store_batch([Event("a")] * 3)
        assert [(await slow.receive()).id for _ in range(2)] == [1, 2]
        with pytest.raises(
            SubscriptionOverflowError,
            match=exactly(
                "subscription to events cut off after 2 items: its buffer of 2 was full when "
                "the next one came (the subscriber is too slow); subscribe again, with a "
                "larger buffer or a faster consumer"
            ),
        ):
            await slow.receive()
        assert [(await fast.receive()).id for _ in range(3)] == [1, 2, 3]
        assert (await events.stats()).subscribers == 1


async def test_subscriptions_end_when_the_store_stops() -> None:
    async with running() as sup, events.subscribe() as sub:
        await events.store(Event("a"))
        await sup.terminate_child("events")
        assert [e.id async for e in sub] == [1]


# -- the write buffer ---------------------------------------------------------------------


async def test_buffered_writes_wait_for_a_restarting_store_and_flush_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = Backend()
    async with running(
        event_store_spec(crash_trail=False, backend=lambda: backend, client_buffer=3)
    ):
        events.store_nowait(Event("first"))
        await trio.testing.wait_all_tasks_blocked()
        assert await ids() == [1]
        # Crash the store and keep its next start waiting in open().
        backend.open_gate = trio.Event()
        backend.fail_appends = 1
        with pytest.raises(trioscope.ServiceCrashedError):
            await events.store(Event("lost"))
        for name in ("b1", "b2", "b3"):
            events.store_nowait(Event(name, {"n": name}))
        with pytest.raises(
            EventBufferFullError,
            match=exactly(
                "the event write buffer is full (3 events waiting for the store to come back; "
                "1 refused so far): use `await events.store(...)` to wait, or raise "
                "events.client_buffer"
            ),
        ):
            events.store_nowait(Event("b4"))
        await trio.testing.wait_all_tasks_blocked()  # the new store waits in open()
        stats = events.buffer_statistics()
        assert (stats.buffered, stats.capacity, stats.flushed_total, stats.overflow_total) == (
            3,
            3,
            1,
            1,
        )
        backend.open_gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert [e.type for e in await events.query()] == ["first", "b1", "b2", "b3"]
        assert await ids() == [1, 2, 3, 4]
        client = (await events.stats()).client
        assert (client.buffered, client.flushed_total, client.overflow_total) == (0, 4, 1)
        assert (client.rejected_total, client.unconfirmed_total) == (0, 0)


async def test_buffered_writes_wait_for_a_store_slow_to_start_however_long(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = Backend()
    backend.open_gate = trio.Event()

    async def supervise() -> None:
        async with trioscope.open_supervisor([event_store_spec(backend=lambda: backend)]):
            await trio.sleep_forever()

    async with trioscope.open_registry(isolated=True), trio.open_nursery() as nursery:
        nursery.start_soon(supervise)
        await trio.testing.wait_all_tasks_blocked()
        events.store_nowait(Event("a"))  # the home runs; the store is in its init
        await trio.sleep(60)  # far beyond any call timeout
        assert events.buffer_statistics().buffered == 1
        backend.open_gate.set()
        await trio.testing.wait_all_tasks_blocked()
        stats = events.buffer_statistics()
        assert (stats.buffered, stats.flushed_total, stats.unconfirmed_total) == (0, 1, 0)
        assert await ids() == [1]
        nursery.cancel_scope.cancel()


async def test_a_buffered_event_the_store_rejects_later_is_counted_and_the_rest_flushed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = Backend()
    async with running(event_store_spec(crash_trail=False, backend=lambda: backend)):
        backend.open_gate = trio.Event()
        backend.fail_appends = 1
        with pytest.raises(trioscope.ServiceCrashedError):
            await events.store(Event("lost"))
        events.store_nowait(Event("a"))
        events.store_nowait(Event("b", parent_id=5))  # no event 5 exists yet: ok for now
        events.store_nowait(Event("c"))
        backend.open_gate.set()
        await trio.testing.wait_all_tasks_blocked()
        # "b" would get id 2, and its parent 5 is not an earlier event.
        assert [e.type for e in await events.query()] == ["a", "c"]
        client = events.buffer_statistics()
        assert (client.flushed_total, client.rejected_total) == (2, 1)


async def test_a_buffered_batch_lost_in_a_crash_is_unconfirmed_not_stored_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = Backend()
    async with running(event_store_spec(crash_trail=False, backend=lambda: backend)):
        backend.fail_appends = 1
        events.store_nowait(Event("a"))
        events.store_nowait(Event("b"))
        await trio.testing.wait_all_tasks_blocked()
        client = events.buffer_statistics()
        assert (client.buffered, client.flushed_total, client.unconfirmed_total) == (0, 0, 2)
        events.store_nowait(Event("c"))
        await trio.testing.wait_all_tasks_blocked()
        assert [e.type for e in await events.query()] == ["c"]


# -- group commit (durable backends) ---------------------------------------------------------


async def test_a_durable_backend_commits_concurrent_writes_together_and_acks_after() -> None:
    backend = Backend(durable=True)
    async with running(event_store_spec(backend=lambda: backend)):
        assert (await events.stats()).durable
        assert await events.store(Event("solo")) == 1
        backend.append_gate = trio.Event()
        got: dict[str, object] = {}
        async with events.subscribe() as sub, trio.open_nursery() as nursery:

            async def write(name: str, batch: int) -> None:
                if batch:
                    got[name] = await events.store_batch([Event(name)] * batch)
                else:
                    got[name] = await events.store(Event(name))

            nursery.start_soon(write, "x", 0)  # its append waits at the gate...
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(write, "y", 2)  # ...and these queue behind it
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(write, "z", 0)
            await trio.testing.wait_all_tasks_blocked()
            assert got == {}
            assert await ids() == [1]  # nothing unacknowledged is visible
            stats = await events.stats()
            assert (stats.pending, stats.last_id) == (3, 1)
            assert sub.statistics().buffered == 0
            backend.append_gate.set()
        assert got == {"x": 2, "y": [3, 4], "z": 5}
        assert backend.appends == [[1], [2], [3, 4, 5]]  # y and z in one append
        assert [(await sub.receive()).id for _ in range(4)] == [2, 3, 4, 5]
        assert await events.prune_before(START_NS * 2) == 5
        assert await backend.inner.open() == Recovered(events=[], last_id=5)


async def test_a_failed_durable_append_acknowledges_nothing_and_reuses_no_visible_id() -> None:
    backend = Backend(durable=True)
    async with running(event_store_spec(crash_trail=False, backend=lambda: backend)):
        await events.store(Event("a"))
        backend.fail_appends = 1
        with pytest.raises(trioscope.ServiceUnavailableError, match="ended before answering"):
            await events.store(Event("lost"))
        assert await events.store(Event("b")) == 2  # "lost" (id 2) was never visible
        assert [e.type for e in await events.query()] == ["a", "b"]


async def test_an_orderly_stop_commits_what_is_pending() -> None:
    backend = Backend(durable=True)
    async with running(event_store_spec(backend=lambda: backend)) as sup:
        backend.append_gate = trio.Event()
        async with trio.open_nursery() as nursery:
            result: list[int] = []

            async def write() -> None:
                result.append(await events.store(Event("a")))

            nursery.start_soon(write)
            await trio.testing.wait_all_tasks_blocked()
            backend.append_gate.set()
            await sup.terminate_child("events")
        assert result == [1]
        assert backend.appends == [[1]]


# -- settings from config ---------------------------------------------------------------------


async def test_settings_come_from_the_config_server_and_follow_its_updates() -> None:
    spec = config.config_spec(values={"events": {"max_events": 64, "max_data_bytes": 500}}, env={})
    async with running(spec, event_store_spec(max_events=5)):
        stats = await events.stats()
        assert stats.settings_source == "config"
        assert (stats.settings.max_events, stats.settings.max_data_bytes) == (64, 500)
        await events.store_batch([Event("t")] * 64)
        await config.update("events.max_events", 10)
        await trio.testing.wait_all_tasks_blocked()
        stats = await events.stats()
        assert stats.settings.max_events == 10
        # Retention applied at once; the config change itself was recorded as an event.
        assert stats.count <= 10
        assert (await events.query(order="desc", limit=1))[0].type == "config.updated"
        await config.reset()
        await trio.testing.wait_all_tasks_blocked()
        assert (await events.stats()).settings.max_events == 64


async def test_the_store_follows_a_restarted_config_child() -> None:
    spec = config.config_spec(values={"events.max_events": 64}, env={})
    async with running(spec, event_store_spec()) as sup:
        await sup.terminate_child("config")
        await sup.restart_child("config")
        await config.update("events.max_events", 20)
        await trio.testing.wait_all_tasks_blocked()
        stats = await events.stats()
        assert (stats.settings.max_events, stats.restarts) == (20, 0)


@attrs.frozen
class LooseEvents:
    """An application's events section, with looser rules than the store's."""

    max_events: int = setting(10, updatable=True)


@attrs.frozen
class AppConfig:
    events: LooseEvents = setting(factory=LooseEvents)  # noqa: RUF009 (attrs, not a dataclass)


async def test_an_application_schema_gives_what_it_has_and_the_spec_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = config.config_spec(AppConfig, env={})
    async with running(spec, event_store_spec(max_events=5, max_age_s=7.0)):
        stats = await events.stats()
        assert stats.settings_source == "config"
        assert stats.settings == EventStoreSettings(max_events=10, max_age_s=7.0)
        # A value the store cannot use is logged, and the store keeps its settings.
        await config.update("events.max_events", 0)
        await trio.testing.wait_all_tasks_blocked()
        assert (await events.stats()).settings.max_events == 10
        assert [r.getMessage() for r in caplog.records if r.name.endswith("events")] == [
            "the config's events.* settings cannot be used: EventStoreSettings.max_events "
            "must be an int >= 1, got 0; the event store keeps its current settings"
        ]


@attrs.frozen
class NoEvents:
    debug: bool = setting(False, updatable=True)


async def test_a_config_schema_without_events_settings_leaves_the_spec_settings() -> None:
    async with running(config.config_spec(NoEvents, env={}), event_store_spec(max_events=5)):
        await config.update("debug", True)  # never wakes the store
        stats = await events.stats()
        assert (stats.settings_source, stats.settings.max_events) == ("spec", 5)


async def test_a_config_value_the_store_cannot_use_fails_its_start() -> None:
    spec = config.config_spec(AppConfig, values={"events.max_events": 0}, env={})
    async with trioscope.open_registry(isolated=True):
        with pytest.raises(trioscope.StartError) as info:
            async with trioscope.open_supervisor([spec, event_store_spec()]):
                pass  # pragma: no cover - never started
    cause: BaseException | None = info.value
    while isinstance(cause, trioscope.StartError):
        cause = cause.__cause__
    assert str(cause) == (
        "the config's events.* settings cannot be used: EventStoreSettings.max_events "
        "must be an int >= 1, got 0"
    )


async def test_without_config_the_spec_settings_apply() -> None:
    async with running(event_store_spec(max_events=5, max_data_bytes=50)):
        stats = await events.stats()
        assert stats.settings_source == "spec"
        assert stats.settings == EventStoreSettings(max_events=5, max_data_bytes=50)
        assert stats.backend == "memory"


# -- scopes -------------------------------------------------------------------------------------


async def test_sibling_isolated_scopes_each_have_their_own_store() -> None:
    seen: dict[str, list[str]] = {}
    names = [f"scope{i}" for i in range(50)]

    async def scope(name: str, ready: trio.Event, go: trio.Event) -> None:
        async with running(), events.subscribe() as sub:
            ready.set()
            await go.wait()
            await events.store(Event(name))
            events.store_nowait(Event(name + ".buffered"))
            await trio.testing.wait_all_tasks_blocked()
            seen[name] = [e.type for e in await events.query()]
            seen[name + ".sub"] = [(await sub.receive()).type for _ in range(2)]
            assert sub.statistics().buffered == 0
            assert (await events.stats()).stored_total == 2

    readies = [trio.Event() for _ in names]
    go = trio.Event()
    async with trio.open_nursery() as nursery:
        for name, ready in zip(names, readies, strict=True):
            nursery.start_soon(scope, name, ready, go)
        for ready in readies:
            await ready.wait()
        go.set()  # every scope runs and subscribes before any stores
    assert seen == {
        key: [name, name + ".buffered"] for name in names for key in (name, name + ".sub")
    }


@pytest.mark.no_trioscope_scope("checks what the clients do outside every registry scope")
async def test_outside_a_scope_and_without_a_store(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(trioscope.NoRegistryError):
        await events.store(Event("a"))
    with pytest.raises(trioscope.NoRegistryError):
        events.store_nowait(Event("a"))
    with pytest.raises(trioscope.NoRegistryError):
        async with events.subscribe():
            pass  # pragma: no cover
    async with trioscope.open_registry(isolated=True):
        unavailable = (
            "service 'events.home' is unavailable: no event store runs in this scope "
            "(start event_store_spec() or the foundation)"
        )
        with pytest.raises(trioscope.ServiceUnavailableError, match=exactly(unavailable)):
            events.store_nowait(Event("a"))
        with pytest.raises(trioscope.ServiceUnavailableError, match=exactly(unavailable)):
            events.buffer_statistics()
        start = trio.current_time()
        with pytest.raises(trioscope.ServiceUnavailableError):
            await events.query()
        with pytest.raises(
            trioscope.ServiceUnavailableError,
            match=exactly(
                "service 'events.home' is unavailable: no event store ran in this scope within 5 s"
            ),
        ):
            async with events.subscribe():
                pass  # pragma: no cover
        assert trio.current_time() - start == 10


# -- with SQLite -----------------------------------------------------------------------------------


@pytest.mark.wall_clock(
    "sqlite runs in a thread (trio.to_thread): Trio's clock must not jump meanwhile"
)
async def test_a_sqlite_store_reloads_its_events_and_ids_on_restart(tmp_path: Path) -> None:
    from trioscope.foundation._sqlite import SQLiteBackend

    path = tmp_path / "events.db"
    async with running(event_store_spec(backend=lambda: SQLiteBackend(path))):
        assert await events.store_batch([Event("a", correlation_id="r"), Event("b")]) == [1, 2]
        assert await events.prune_before(START_NS * 2) == 2
        assert await events.store(Event("c", {"k": [1]}, correlation_id="r", parent_id=1)) == 3
        stats = await events.stats()
        assert (stats.durable, stats.backend) == (True, f"sqlite:{path}")
    # A new home and store (a new process, as far as the file knows).
    spec = config.config_spec(
        values={"events": {"backend": "sqlite", "sqlite_path": str(path)}}, env={}
    )
    async with running(spec, event_store_spec()):
        (c,) = await events.query()
        assert (c.id, c.type, c.data, c.correlation_id, c.parent_id) == (3, "c", {"k": [1]}, "r", 1)
        assert await events.store(Event("d")) == 4
        assert (await events.stats()).backend == f"sqlite:{path}"


@pytest.mark.parametrize(
    ("make", "kept"),
    [(MemoryBackend, False), (lambda: MemoryBackend(), False), (MemoryBackend(), True)],
    ids=["class", "factory", "instance"],
)
async def test_a_backend_factory_makes_one_per_home_and_an_instance_is_kept(
    make: Any, kept: bool
) -> None:
    async with running(event_store_spec(backend=make)) as sup:
        await events.store(Event("a"))
        await sup.terminate_child("events")  # the home too: a new backend from a factory
        await sup.restart_child("events")
        assert await ids() == ([1] if kept else [])


# -- review fixes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            Event("bad\ud800"),
            "type cannot be encoded as UTF-8 (a lone surrogate '\\ud800' at index 3)",
        ),
        (
            Event("bad", correlation_id="r\udfff"),
            "correlation_id cannot be encoded as UTF-8 (a lone surrogate '\\udfff' at index 1)",
        ),
        (
            Event("bad", {"s": "x\ud800"}),
            "data['s'] cannot be encoded as UTF-8 (a lone surrogate '\\ud800' at index 1)",
        ),
        (
            Event("bad", {"\ud800": 1}),
            "data key '\\ud800' cannot be encoded as UTF-8 (a lone surrogate '\\ud800' at index 0)",
        ),
        (
            Event("bad", {"l": [1, {"k": ("\ud800",)}]}),
            "data['l'][1]['k'][0] cannot be encoded as UTF-8 "
            "(a lone surrogate '\\ud800' at index 0)",
        ),
        (
            Event("bad", {"d": {"a\udc80": 1}}),
            "data['d'] key 'a\\udc80' cannot be encoded as UTF-8 "
            "(a lone surrogate '\\udc80' at index 1)",
        ),
    ],
)
@pytest.mark.wall_clock(
    "sqlite runs in a thread (trio.to_thread): Trio's clock must not jump meanwhile"
)
async def test_strings_not_encodable_as_utf8_are_rejected_up_front(
    tmp_path: Path, event: Event, reason: str
) -> None:
    from trioscope.foundation._sqlite import SQLiteBackend

    path = tmp_path / "events.db"
    async with running(event_store_spec(backend=lambda: SQLiteBackend(path))):
        with pytest.raises(EventRejected) as rejected:
            events.store_nowait(event)
        assert rejected.value.reason == reason
        good: list[int] = []

        async def store_good() -> None:
            good.append(await events.store(Event("good")))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store_good)  # in the same group commit as the bad one
            with pytest.raises(EventRejected) as rejected:
                await events.store(event)
            assert rejected.value.reason == reason
            with pytest.raises(EventRejected) as rejected:
                await events.store_batch([Event("ok"), event])
            assert (rejected.value.reason, rejected.value.index) == (reason, 1)
        stats = await events.stats()
        assert (good, stats.restarts, stats.count, stats.rejected_total) == ([1], 0, 1, 4)
        assert [e.type for e in await events.query()] == ["good"]


async def test_a_buffered_batch_whose_commit_crashes_the_store_is_never_sent_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = Backend(durable=True)
    async with running(event_store_spec(crash_trail=False, backend=lambda: backend)):
        backend.fail_appends = 1  # the group commit crashes the store
        events.store_nowait(Event("a"))
        events.store_nowait(Event("b"))
        await trio.testing.wait_all_tasks_blocked()  # flushed, crashed, restarted
        client = events.buffer_statistics()
        assert (client.buffered, client.flushed_total, client.unconfirmed_total) == (0, 0, 2)
        assert backend.appends == []  # not sent again to the next incarnation
        stats = await events.stats()
        assert (stats.restarts, stats.count) == (1, 0)


async def test_an_inner_scope_never_sends_its_events_to_the_outer_scope_store(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running():
        async with (
            trioscope.open_registry(),
            trioscope.open_supervisor([event_store_spec()], max_restarts=10) as inner,
        ):
            store_sup = inner.which_children()[0].value
            assert isinstance(store_sup, trioscope.Supervisor)
            await store_sup.terminate_child("events")  # the inner store is away
            events.store_nowait(Event("inner.buffered"))
            with pytest.raises(trioscope.ServiceUnavailableError):
                await events.store(Event("inner.direct"))
            with pytest.raises(trioscope.ServiceUnavailableError):
                await events.query()
            await trio.sleep(10)
            assert events.buffer_statistics().buffered == 1
            await store_sup.restart_child("events")
            await trio.testing.wait_all_tasks_blocked()
            assert [e.type for e in await events.query()] == ["inner.buffered"]
        assert await events.query() == []


@pytest.mark.parametrize("max_age_s", [1e300, 1e10 * 365 * 86400, math.inf])
async def test_an_age_limit_beyond_the_wall_clock_prunes_nothing_and_never_overflows(
    max_age_s: float,
) -> None:
    clock = WallClock()
    async with running(event_store_spec(wall_clock=clock, max_age_s=max_age_s)):
        await events.store(Event("a"))
        clock.advance(10**9)
        await events.store_batch([Event("b")])
        stats = await events.stats()
        assert (stats.restarts, stats.count, stats.pruned_total) == (0, 2, 0)


async def test_an_orderly_stop_stores_what_was_buffered(tmp_path: Path) -> None:
    from trioscope.foundation._events import EventsHome
    from trioscope.foundation._home import find_home
    from trioscope.foundation._sqlite import SQLiteBackend

    path = tmp_path / "events.db"
    async with trioscope.open_registry(isolated=True):
        async with trioscope.open_supervisor(
            [event_store_spec(backend=lambda: SQLiteBackend(path))]
        ):
            home = find_home("events.home", EventsHome)
            assert home is not None
            events.store_nowait(Event("first"))
            events.store_nowait(Event("orphan", parent_id=9))  # rejected when stored
            events.store_nowait(Event("last.words", parent_id=1))
        client = home.buffer_statistics()
        assert (client.buffered, client.flushed_total, client.rejected_total) == (0, 2, 1)
        async with trioscope.open_supervisor(
            [event_store_spec(backend=lambda: SQLiteBackend(path))]
        ):
            stored = await events.query()
            assert [(e.id, e.type, e.parent_id) for e in stored] == [
                (1, "first", None),
                (2, "last.words", 1),
            ]


class CancellableBackend(Backend):
    """A durable test backend whose gated append, once cancelled, has not started (as
    `SQLiteBackend.append` cancelled before its thread runs) and lets later ones through."""

    def __init__(self) -> None:
        super().__init__(durable=True)
        self.cancelled_appends = 0

    async def append(self, batch: Sequence[Event]) -> None:
        gate = self.append_gate
        if gate is not None:
            try:
                await gate.wait()
            except trio.Cancelled:
                self.cancelled_appends += 1
                self.append_gate = None
                raise
        await self.inner.append(batch)
        self.appends.append([e.id for e in batch])


async def test_an_orderly_stop_commits_the_batch_whose_append_was_cancelled_once() -> None:
    backend = CancellableBackend()
    backend.append_gate = trio.Event()
    replies: list[object] = []

    async def store(event: Event) -> None:
        replies.append(await events.store(event))

    async with trioscope.open_registry(isolated=True):
        async with (
            trio.open_nursery() as nursery,  # exits last: its caller is answered in terminate
            trioscope.open_supervisor([event_store_spec(backend=lambda: backend)]),
        ):
            nursery.start_soon(store, Event("sent"))
            await trio.testing.wait_all_tasks_blocked()
            events.store_nowait(Event("buffered"))  # the flush's batch waits for the writer
            await trio.testing.wait_all_tasks_blocked()
            events.store_nowait(Event("late"))  # still in the buffer at the stop
            assert (await events.stats()).pending == 1  # the buffered batch: in the next commit
        assert backend.cancelled_appends == 1
        assert backend.appends == [[1, 2, 3]]  # once each, in one final commit
        assert replies == [1]
        async with trioscope.open_supervisor([event_store_spec(backend=lambda: backend)]):
            assert [e.type for e in await events.query()] == ["sent", "buffered", "late"]


async def _bad_query() -> None:
    await events.query(order="sideways")  # type: ignore[arg-type]


async def _bad_stream() -> None:
    async for _ in events.stream(batch=0):
        pass  # pragma: no cover - never reached


@pytest.mark.parametrize("fn", [_bad_query, _bad_stream])
async def test_query_and_stream_checkpoint_when_rejecting_arguments(
    fn: Any, autojump_clock: trio.testing.MockClock
) -> None:
    from _guards import checkpoints_even_when_raising

    async with running():
        with pytest.raises(EventQueryRejected), checkpoints_even_when_raising():
            await fn()


@pytest.mark.parametrize("max_age_s", [1e300, math.inf])
async def test_a_config_update_to_an_age_limit_beyond_the_wall_clock_is_applied(
    max_age_s: float, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(config.config_spec(env={}), event_store_spec()):
        await events.store(Event("a"))
        await config.update("events.max_age_s", max_age_s)
        await trio.testing.wait_all_tasks_blocked()  # the store follows config changes
        await events.store(Event("b"))
        stats = await events.stats()
        assert (stats.restarts, stats.settings.max_age_s, stats.pruned_total) == (0, max_age_s, 0)
        assert [e.type for e in await events.query()] == ["a", "config.updated", "b"]


@pytest.mark.wall_clock(
    "sqlite runs in a thread (trio.to_thread): Trio's clock must not jump meanwhile"
)
async def test_a_stopping_home_leaves_the_backend_of_a_running_store_open(
    tmp_path: Path,
) -> None:
    from trioscope.foundation._events import EventsHome
    from trioscope.foundation._home import find_home
    from trioscope.foundation._sqlite import SQLiteBackend

    backend = SQLiteBackend(tmp_path / "events.db")
    async with running(event_store_spec(backend=lambda: backend)) as sup:
        home = find_home("events.home", EventsHome)
        assert home is not None
        assert await events.store(Event("a")) == 1
        # What a crashing home runs while its store still runs (REST_FOR_ONE stops the
        # store only afterwards): the store keeps its backend meanwhile.
        await home.aclose()
        assert not repr(backend).endswith("closed>")
        assert await events.store(Event("b")) == 2
        assert (await events.stats()).restarts == 0
        store_sup = sup.which_children()[0].value
        assert isinstance(store_sup, trioscope.Supervisor)
        await store_sup.terminate_child("events")  # stopped now: the store closed it
        assert repr(backend).endswith("closed>")
