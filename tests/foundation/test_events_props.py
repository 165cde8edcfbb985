"""Properties of the EventStore against plain models: queries equal a brute-force filter,
batches are atomic, ids are unique and ascending, retention keeps the newest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hypothesis
import hypothesis.strategies as st
import pytest
import trio

import trioscope
from trioscope.foundation import EventRejected, events
from trioscope.foundation._event import Event
from trioscope.foundation._events import _Indexes, _select, event_store_spec
from trioscope.foundation._memory import MemoryBackend
from trioscope.testing._scope import open_test_scope

pytestmark = pytest.mark.trioscope_scope

TYPES = ("a", "b", "c")
CIDS = (None, "r1", "r2", "r3")


def make(i: int, type: str, cid: str | None, wall_ns: int) -> Event:
    return Event(type, {"i": i}, correlation_id=cid, id=i, wall_ns=wall_ns)


@st.composite
def stored_events(draw: st.DrawFn) -> list[Event]:
    """Events as a store holds them: ids ascending with gaps, walls nondecreasing."""
    steps = draw(
        st.lists(
            st.tuples(
                st.integers(1, 3),
                st.sampled_from((0, 0, 1, 5)),
                st.sampled_from(TYPES),
                st.sampled_from(CIDS),
            ),
            max_size=60,
        )
    )
    out: list[Event] = []
    id, wall = 0, 1_000
    for id_step, wall_step, type, cid in steps:
        id += id_step
        wall += wall_step
        out.append(make(id, type, cid, wall))
    return out


bounds = st.none() | st.integers(995, 1_200)
filters = st.fixed_dictionaries(
    {
        "type": st.none() | st.sampled_from((*TYPES, "zz")),
        "correlation_id": st.none() | st.sampled_from(("r1", "r2", "r3", "zz")),
        "since_ns": bounds,
        "until_ns": bounds,
        "after_id": st.none() | st.integers(0, 120),
        "before_id": st.none() | st.integers(0, 120),
        "limit": st.none() | st.integers(0, 10),
        "order": st.sampled_from(("asc", "desc")),
    }
)


def brute_force(all_events: list[Event], f: dict[str, Any]) -> list[Event]:
    picked = [
        e
        for e in all_events
        if (f["type"] is None or e.type == f["type"])
        and (f["correlation_id"] is None or e.correlation_id == f["correlation_id"])
        and (f["since_ns"] is None or e.wall_ns >= f["since_ns"])
        and (f["until_ns"] is None or e.wall_ns < f["until_ns"])
        and (f["after_id"] is None or e.id > f["after_id"])
        and (f["before_id"] is None or e.id < f["before_id"])
    ]
    if f["order"] == "desc":
        picked.reverse()
    return picked if f["limit"] is None else picked[: f["limit"]]


@hypothesis.settings(max_examples=100)
@hypothesis.given(
    stored_events(),
    st.lists(st.integers(0, 20), max_size=4),
    st.lists(filters, min_size=5, max_size=15),
)
def test_queries_equal_a_brute_force_filter_also_after_pruning(
    stored: list[Event], prunes: list[int], queries: list[dict[str, Any]]
) -> None:
    indexes = _Indexes()
    # Added in a few slices, pruned in between: heads move, runs empty and go.
    retained: list[Event] = []
    for start in range(0, len(stored), 25):
        indexes.add(stored[start : start + 25])
        retained += stored[start : start + 25]
        if prunes:
            count = min(prunes.pop(), len(retained))
            last = indexes.drop_oldest(count)
            assert last == (retained[count - 1].id if count else 0)
            retained = retained[count:]
    for f in queries:
        assert _select(indexes, **f) == brute_force(retained, f)
    # Every index holds exactly what is retained, so memory follows retention.
    assert set(indexes.by_type) == {e.type for e in retained}
    assert set(indexes.by_cid) == {e.correlation_id for e in retained} - {None}
    assert len(indexes.all) == len(retained)


# -- through the service -----------------------------------------------------------------------

good_events = st.builds(
    Event,
    st.sampled_from(TYPES),
    st.fixed_dictionaries({"n": st.integers(-5, 5)}),
    st.sampled_from(CIDS),
)
bad_event = st.sampled_from(
    (
        Event("bad", {"x": float("nan")}),
        Event("bad", id=3),
        Event("bad", {"x": b"bytes"}),  # type: ignore[dict-item]
        Event("bad", parent_id=10_000),
    )
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("store"), good_events),
        st.tuples(st.just("batch"), st.lists(good_events, max_size=6)),
        st.tuples(
            st.just("bad batch"),
            st.lists(good_events, max_size=4),
            bad_event,
            st.integers(0, 4),
        ),
        st.tuples(st.just("tick"), st.integers(0, 3)),
        st.tuples(st.just("prune"), st.integers(0, 4)),
        st.tuples(st.just("crash")),
    ),
    min_size=4,
    max_size=30,
)


class Flaky:
    """A MemoryBackend whose next append can be made to fail (crashing the store);
    durable or not (a durable one makes the store group-commit through its writer)."""

    def __init__(self, durable: bool) -> None:
        self.inner = MemoryBackend()
        self.durable = durable
        self.fail_next = False
        self.open, self.prune_through = self.inner.open, self.inner.prune_through
        self.aclose = self.inner.aclose

    async def append(self, batch: Sequence[Event]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("append failed")
        await self.inner.append(batch)

    def describe(self) -> str:
        return "flaky memory"


@pytest.mark.parametrize("durable", [False, True], ids=["inline", "group-commit"])
@hypothesis.settings(max_examples=40)
@hypothesis.given(operations, st.integers(2, 12), st.lists(filters, min_size=1, max_size=5))
def test_the_store_matches_a_model_of_atomic_batches_and_retention(
    durable: bool, ops: list[tuple[Any, ...]], max_events: int, queries: list[dict[str, Any]]
) -> None:
    wall = [1_000]
    backend = Flaky(durable)

    async def main() -> None:
        spec = event_store_spec(
            crash_trail=False,
            backend=lambda: backend,
            max_events=max_events,
            wall_clock=lambda: wall[0],
        )
        crashes = 0
        async with (
            open_test_scope("events-model"),
            trioscope.open_supervisor([spec]),
            events.subscribe(buffer=1_000) as sub,
        ):
            model: list[Event] = []  # what the store should retain, in order
            next_id = 1
            for op in ops:
                if op[0] == "store":
                    assert await events.store(op[1]) == next_id
                    accepted = [op[1]]
                elif op[0] == "batch":
                    ids = await events.store_batch(op[1])
                    assert ids == list(range(next_id, next_id + len(op[1])))
                    accepted = op[1]
                elif op[0] == "bad batch":
                    batch = list(op[1])
                    index = min(op[3], len(batch))
                    batch.insert(index, op[2])
                    with pytest.raises(EventRejected) as rejected:
                        await events.store_batch(batch)
                    assert rejected.value.index == index
                    accepted = []
                elif op[0] == "crash":
                    if crashes == 2:  # within the restart intensity (real time here)
                        continue
                    crashes += 1
                    # The store crashes storing this event: it was never acknowledged,
                    # and the restarted store goes on from what was.
                    backend.fail_next = True
                    lost = (
                        trioscope.ServiceUnavailableError
                        if durable
                        else trioscope.ServiceCrashedError
                    )
                    with pytest.raises(lost):
                        await events.store(Event("lost"))
                    accepted = []
                elif op[0] == "tick":
                    wall[0] += op[1]
                    accepted = []
                else:
                    pruned = await events.prune_before(wall[0] - op[1])
                    assert pruned == sum(e.wall_ns < wall[0] - op[1] for e in model)
                    model = [e for e in model if e.wall_ns >= wall[0] - op[1]]
                    accepted = []
                for event in accepted:
                    model.append(
                        Event(
                            event.type,
                            dict(event.data),
                            event.correlation_id,
                            id=next_id,
                            wall_ns=wall[0],
                        )
                    )
                    next_id += 1
                # Retention keeps the newest max_events (with no slack below 64).
                model = model[-max_events:]
                retained = await events.query()
                assert [(e.id, e.type, e.correlation_id, e.wall_ns, e.data) for e in retained] == [
                    (e.id, e.type, e.correlation_id, e.wall_ns, e.data) for e in model
                ]
            for f in queries:
                got = await events.query(**f)
                assert [e.id for e in got] == [e.id for e in brute_force(model, f)]
            # Subscribers saw every accepted event once, in id order, and nothing rejected.
            received = []
            while sub.statistics().buffered:
                received.append((await sub.receive()).id)
            assert received == list(range(1, next_id))

    trio.run(main)
