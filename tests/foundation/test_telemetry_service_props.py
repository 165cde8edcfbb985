"""Properties of the TelemetryService: aggregates equal a brute-force computation over the
events emitted; nothing lost or counted twice under concurrent emitters; sibling scopes
never see each other's events; the sketch's quantiles stay within alpha of the exact rank."""

from __future__ import annotations

import math
from typing import Any

import hypothesis
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import trioscope
from trioscope import telemetry as core
from trioscope.foundation import telemetry
from trioscope.foundation._telemetry import LogSketch
from trioscope.testing._scope import open_test_scope

pytestmark = pytest.mark.trioscope_scope

ALPHA = telemetry.SKETCH_ALPHA
WINDOW_S = 10.0
SUB_S = WINDOW_S / telemetry.SUBWINDOWS
EVENT: core.EventName = ("app", "job", "stop")
METRICS = [
    telemetry.counter("app.job.stop.count", tags=("queue",)),
    telemetry.sum("app.job.stop.bytes", tags=("queue",)),
    telemetry.last_value("app.job.stop.depth", tags=("queue",)),
    telemetry.distribution("app.job.stop.duration", tags=("queue",)),
]


def exact_rank(values: list[float], q: float) -> float:
    """The documented quantile: the value of rank floor(q * (n - 1)) of the sorted values."""
    return sorted(values)[math.floor(q * (len(values) - 1))]


def within_alpha(estimate: float | None, exact: float) -> bool:
    # Alpha itself is the bound; 1e-9 relative covers the rounding of log and exp.
    return estimate is not None and abs(estimate - exact) <= ALPHA * abs(exact) * (1 + 1e-9)


# -- the sketch --------------------------------------------------------------------------

finite = st.one_of(
    st.floats(min_value=1e-6, max_value=1e6),
    st.floats(min_value=-1e6, max_value=-1e-6),
    st.just(0.0),
    st.integers(-1000, 1000),
)


@given(st.lists(finite, min_size=1, max_size=300), st.floats(0, 1))
def test_sketch_quantiles_are_within_alpha_of_the_exact_rank(values: list[float], q: float) -> None:
    sketch = LogSketch()
    for value in values:
        sketch.add(value)
    assert (sketch.count, sketch.min, sketch.max) == (len(values), min(values), max(values))
    for quantile in (q, *telemetry.QUANTILES, 0.0, 1.0):
        assert within_alpha(sketch.quantile(quantile), exact_rank(values, quantile))


@given(st.lists(st.lists(finite, max_size=50), min_size=1, max_size=6))
def test_merged_sketches_equal_one_sketch_of_everything(parts: list[list[float]]) -> None:
    merged, whole = LogSketch(), LogSketch()
    for part in parts:
        sketch = LogSketch()
        for value in part:
            sketch.add(value)
            whole.add(value)
        merged.merge(sketch)
    assert (merged.count, merged.zeros, merged.pos, merged.neg) == (
        whole.count,
        whole.zeros,
        whole.pos,
        whole.neg,
    )
    assert (merged.min, merged.max) == (whole.min, whole.max)
    assert math.isclose(merged.sum, whole.sum, rel_tol=1e-9, abs_tol=1e-6)


@given(st.lists(finite, max_size=300))
def test_adding_many_equals_adding_one_at_a_time(values: list[float]) -> None:
    one, many = LogSketch(), LogSketch()
    for value in values:
        one.add(value)
    many.add_many(values)
    assert (many.count, many.zeros, many.pos, many.neg) == (one.count, one.zeros, one.pos, one.neg)
    assert (many.min, many.max) == (one.min, one.max)
    assert math.isclose(many.sum, one.sum, rel_tol=1e-9, abs_tol=1e-6)


# -- aggregates against brute force ---------------------------------------------------------

# (sleep before, queue, bytes, depth, duration, stamped): measurements are multiples of
# 1/4 (sums are exact in any order); "stamped" events carry their monotonic_time.
Emit = tuple[float, str, int, float, float, bool]
emits = st.tuples(
    st.sampled_from([0.0, 0.0, 0.25, 1.0, 3.5, 7.0]),
    st.sampled_from(["a", "b", "c"]),
    st.integers(0, 1000),
    st.integers(-40, 40).map(lambda n: n / 4),
    st.integers(0, 400).map(lambda n: n / 4),
    st.booleans(),
)


async def emit_then_snapshot(
    script: list[Emit], read_after: float
) -> tuple[telemetry.MetricsSnapshot, list[tuple[float, Emit]]]:
    """Run *script* in an isolated scope; return the snapshot and each event's time."""
    timed = []
    async with (
        open_test_scope("telemetry-script"),
        trioscope.open_supervisor([telemetry.telemetry_spec(METRICS, window_s=WINDOW_S)]),
    ):
        for step in script:
            sleep, queue, size, depth, duration, stamped = step
            await trio.sleep(sleep)
            now = trio.current_time()
            measurements: dict[str, float] = {"bytes": size, "depth": depth, "duration": duration}
            if stamped:
                measurements["monotonic_time"] = now
            core.execute(EVENT, measurements, {"queue": queue})
            # An unstamped event is placed when it is aggregated: take that now.
            snap = await telemetry.snapshot() if not stamped else None
            assert snap is None or snap.time_s == now
            timed.append((now, step))
        await trio.sleep(read_after)
        return await telemetry.snapshot(), timed


@given(st.lists(emits, max_size=40), st.sampled_from([0.0, 0.5, 5.0, 9.99, 30.0]))
def test_aggregates_equal_a_brute_force_computation(script: list[Emit], read_after: float) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    snap, timed = trio.run(emit_then_snapshot, script, read_after, clock=clock)
    now_slot = math.floor(snap.time_s / SUB_S)
    assert snap.events_total == len(script)
    assert snap.dropped_total == 0
    for queue in "abc":
        mine = [(t, step) for t, step in timed if step[1] == queue]
        count = snap.metric("app.job.stop.count").get(queue=queue)
        total = snap.metric("app.job.stop.bytes").get(queue=queue)
        last = snap.metric("app.job.stop.depth").get(queue=queue)
        dist = snap.metric("app.job.stop.duration").get(queue=queue)
        if not mine:
            assert count is total is last is dist is None
            continue
        assert count is not None
        assert total is not None
        assert last is not None
        assert dist is not None
        assert dist.summary is not None
        assert count.value == len(mine)
        assert total.value == sum(step[2] for _, step in mine)
        assert last.value == mine[-1][1][3]
        durations = [step[4] for _, step in mine]
        s = dist.summary
        assert (s.count, s.sum) == (len(durations), sum(durations))
        window = [
            step[4] for t, step in mine if now_slot - telemetry.SUBWINDOWS < math.floor(t / SUB_S)
        ]
        assert (s.window_count, s.window_sum) == (len(window), sum(window))
        if not window:
            assert (s.min, s.max, s.p50, s.p95, s.p99) == (None,) * 5
            continue
        assert (s.min, s.max) == (min(window), max(window))
        for q, estimate in zip(telemetry.QUANTILES, (s.p50, s.p95, s.p99), strict=True):
            assert within_alpha(estimate, exact_rank(window, q))


# -- concurrent emitters: nothing lost, nothing counted twice ------------------------------


async def concurrent(
    emitters: list[list[int]], buffer_size: int
) -> tuple[telemetry.MetricsSnapshot, int]:
    emitted = 0

    async def emitter(n: int, pauses: list[int]) -> None:
        nonlocal emitted
        for pause in pauses:
            for _ in range(pause):
                core.execute(EVENT, {"bytes": 1}, {"queue": f"e{n}"})
                emitted += 1
            await trio.lowlevel.checkpoint()

    async with (
        open_test_scope("telemetry-emitters"),
        trioscope.open_supervisor([telemetry.telemetry_spec(METRICS, buffer_size=buffer_size)]),
    ):
        async with trio.open_nursery() as nursery:
            for n, pauses in enumerate(emitters):
                nursery.start_soon(emitter, n, pauses)
                if n % 2:  # some snapshots while they run, too
                    nursery.start_soon(telemetry.snapshot)
        return await telemetry.snapshot(), emitted


@given(
    st.lists(st.lists(st.integers(0, 30), max_size=8), min_size=1, max_size=6),
    st.integers(1, 64),
)
def test_concurrent_emitters_lose_nothing_and_count_nothing_twice(
    emitters: list[list[int]], buffer_size: int
) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    snap, emitted = trio.run(concurrent, emitters, buffer_size, clock=clock)
    counted = snap.metric("app.job.stop.count").series
    summed = snap.metric("app.job.stop.bytes").series
    assert snap.events_total + snap.dropped_total == emitted
    # The handler is attached to our event only: each aggregated event is counted once.
    assert sum(s.value or 0 for s in counted) == snap.events_total
    assert sum(s.value or 0 for s in summed) == snap.events_total


# -- isolation between sibling scopes --------------------------------------------------------


async def siblings(plans: list[list[int]]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = [{} for _ in plans]

    async def scope(i: int, plan: list[int], started: trio.Event, go: trio.Event) -> None:
        async with (
            open_test_scope(f"sibling-{i}"),
            trioscope.open_supervisor([telemetry.telemetry_spec(METRICS)]),
        ):
            started.set()
            await go.wait()
            for burst in plan:
                for _ in range(burst):
                    core.execute(EVENT, {"bytes": 1}, {"queue": f"s{i}"})
                await trio.lowlevel.checkpoint()
            snap = await telemetry.snapshot()
            results[i] = {
                tuple(sorted(s.tags.items())): s.value
                for s in snap.metric("app.job.stop.count").series
            }

    async with trio.open_nursery() as nursery:
        go = trio.Event()
        started = [trio.Event() for _ in plans]
        for i, plan in enumerate(plans):
            nursery.start_soon(scope, i, plan, started[i], go)
        for event in started:
            await event.wait()
        go.set()
    return results


@given(st.lists(st.lists(st.integers(0, 20), max_size=5), min_size=2, max_size=4))
@hypothesis.settings(max_examples=25)
def test_sibling_scopes_see_only_their_own_events(plans: list[list[int]]) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    results = trio.run(siblings, plans, clock=clock)
    for i, plan in enumerate(plans):
        expected = {(("queue", f"s{i}"),): sum(plan)} if sum(plan) else {}
        assert results[i] == expected
