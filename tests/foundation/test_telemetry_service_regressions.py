"""Regressions found by review of the TelemetryService (each failed before its fix).

1. An event whose ``monotonic_time`` was not finite (or in the future) crashed
   the home (every aggregate lost) or the service (events_total out of step),
   or evicted the live sub-windows.
2. ``execute`` from a worker thread (``trio.to_thread`` copies the scope)
   raised in the handler, which was detached for good while ``status()`` said
   attached.
3. Prometheus: a tag named ``quantile`` on a distribution, two tags that
   sanitize alike, a metric named like the service's own families or a
   summary's ``_sum``/``_count``: duplicate labels or families.
4. Tag values equal but printed differently (``1``, ``True``, ``1.0``) shared
   one series.
5. Subclasses of int and float reached the snapshot and the Prometheus text
   (through their own ``repr``).
7. Shrinking the window at run time dropped events before their time.
8. Merging wide sketches folded the surplus one bucket at a time (a min() scan
   each: quadratic; 3.35 s for one contrived series). Its test checks that the
   one-pass fold keeps every count; the cost itself is not timed in a unit test.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import cattrs
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

import trioscope
from trioscope import telemetry as core
from trioscope.foundation import _telemetry as telemetry_module
from trioscope.foundation import config, telemetry
from trioscope.foundation._home import find_home

pytestmark = pytest.mark.trioscope_scope

APP: core.EventName = ("app", "job", "stop")


@asynccontextmanager
async def running(*specs: trioscope.ChildSpec[Any]) -> AsyncIterator[trioscope.Supervisor]:
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor(list(specs)) as sup,
    ):
        yield sup


def home() -> telemetry_module.TelemetryHome:
    found = find_home(telemetry_module.HOME_NAME, telemetry_module.TelemetryHome)
    assert found is not None
    return found


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 1e300])
async def test_1_an_event_with_a_bad_time_is_placed_now_and_nothing_is_lost(
    autojump_clock: trio.testing.MockClock, bad: float
) -> None:
    metrics = [
        telemetry.counter("app.job.stop.count"),
        telemetry.distribution("app.job.stop.duration"),
    ]
    async with running(telemetry.telemetry_spec(metrics, window_s=10.0)):
        first = home()
        await trio.sleep(5)
        core.execute(APP, {"duration": 1.0, "monotonic_time": 4.5})
        core.execute(APP, {"duration": 2.0, "monotonic_time": bad})
        await trio.sleep(1)  # the aggregator runs
        snap = await telemetry.snapshot()
        assert home() is first  # never crashed
        series = snap.metric("app.job.stop.duration").get()
        assert series is not None
        assert series.summary is not None
        assert (series.summary.count, series.summary.window_count) == (2, 2)
        assert snap.events_total == 2
        # The bad one counts as of when it was aggregated (t=5), not at its stamp:
        # at t=14.6 the event of t=4.5 has left and the bad one is still in.
        await trio.sleep(14.6 - trio.current_time())
        later = (await telemetry.snapshot()).metric("app.job.stop.duration").get()
        assert later is not None
        assert later.summary is not None
        assert (later.summary.window_count, later.summary.min) == (1, 2.0)


async def test_2_execute_from_a_worker_thread_is_aggregated_and_the_handler_stays() -> None:
    metrics = [telemetry.counter("app.job.stop.count")]
    async with running(telemetry.telemetry_spec(metrics)):
        core.execute(APP, {}, {})
        await telemetry.snapshot()  # drained: the aggregator waits for a first event
        await trio.to_thread.run_sync(core.execute, APP, {}, {})
        for _ in range(3):
            core.execute(APP, {}, {})
        snap = await telemetry.snapshot()
        series = snap.metric("app.job.stop.count").get()
        assert series is not None
        assert series.value == 5
        assert (await telemetry.status()).attached is True
        core.detach(home().handler_id)
        assert (await telemetry.status()).attached is False


def test_3_prometheus_names_and_labels_that_would_clash_are_refused() -> None:
    def refused(metrics: list[telemetry.Metric], message: str) -> None:
        with pytest.raises(ValueError, match=re.escape(message)):
            telemetry.telemetry_spec(metrics)

    refused(
        [telemetry.distribution("app.req.stop.duration", tags=("quantile",))],
        "give it the Prometheus label 'quantile' twice (a summary's quantile label is its own)",
    )
    refused(
        [telemetry.counter("app.req.stop.count", tags=("a.b", "a_b"))],
        "give it the Prometheus label 'a_b' twice",
    )
    refused(
        [telemetry.counter("trioscope.telemetry.events")],
        "metrics \"the TelemetryService's own\" and 'trioscope.telemetry.events' would both "
        "expose 'trioscope_telemetry_events_total'",
    )
    refused(
        [
            telemetry.distribution("app.req.stop.duration"),
            telemetry.last_value("app.req.stop.duration_count"),
        ],
        "would both expose 'app_req_stop_duration_count'",
    )


async def test_4_tag_values_that_print_differently_are_different_series() -> None:
    metrics = [telemetry.counter("app.job.stop.count", tags=("flag",))]
    values: list[object] = [1, True, 1.0, 0, False, 0.0, -0.0, 1, "1"]
    async with running(telemetry.telemetry_spec(metrics)):
        for v in values:
            core.execute(APP, {}, {"flag": v})
        snap = await telemetry.snapshot()
    got = {s.tags["flag"]: s.value for s in snap.metric("app.job.stop.count").series}
    assert got == {"1": 3, "True": 1, "1.0": 1, "0": 1, "False": 1, "0.0": 1, "-0.0": 1}


class Seconds(float):
    def __repr__(self) -> str:
        return f"Seconds({float(self)})"


class Count(int):
    def __repr__(self) -> str:
        return f"Count({int(self)})"


async def test_5_number_subclasses_are_kept_as_plain_numbers() -> None:
    metrics = [
        telemetry.last_value("app.job.stop.depth"),
        telemetry.sum("app.job.stop.items"),
        telemetry.distribution("app.job.stop.duration"),
    ]
    async with running(telemetry.telemetry_spec(metrics)):
        core.execute(APP, {"depth": Seconds(3.5), "items": Count(4), "duration": Seconds(0.5)})
        snap = await telemetry.snapshot()
        text = await telemetry.prometheus()
    plain = cattrs.unstructure(snap)
    depth = next(m for m in plain["metrics"] if m["name"] == "app.job.stop.depth")
    assert type(depth["series"][0]["value"]) is float
    items = next(m for m in plain["metrics"] if m["name"] == "app.job.stop.items")
    assert type(items["series"][0]["value"]) is int
    duration = next(m for m in plain["metrics"] if m["name"] == "app.job.stop.duration")
    assert type(duration["series"][0]["summary"]["max"]) is float
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["app_job_stop_depth"] == 3.5
    assert samples["app_job_stop_items_total"] == 4


async def test_7_shrinking_the_window_never_drops_an_event_early(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = [telemetry.distribution("app.job.stop.duration")]
    async with running(
        config.config_spec(values={"telemetry": {"window_s": 100.0}}, env={}),
        telemetry.telemetry_spec(metrics),
    ):
        await trio.sleep(99.5 - trio.current_time())
        core.execute(APP, {"duration": 1.0, "monotonic_time": trio.current_time()})
        await trio.sleep(99.9 - trio.current_time())
        await config.update("telemetry.window_s", 10.0)
        await trio.testing.wait_all_tasks_blocked()
        for at, expected in [(100.0, 1), (108.4, 1), (110.0, 0)]:
            await trio.sleep(at - trio.current_time())
            series = (await telemetry.snapshot()).metric("app.job.stop.duration").get()
            assert series is not None
            assert series.summary is not None
            assert series.summary.window_count == expected, at


def test_8_merging_wide_sketches_folds_the_surplus_at_once_and_keeps_every_count() -> None:
    sketches = []
    for k in range(10):
        sketch = telemetry_module.LogSketch()
        # Each spans a hundred orders of magnitude: far more buckets than the bound.
        sketch.add_many([10.0 ** (e / 100) for e in range(-5000 + k, 5000 + k)])
        assert len(sketch.pos) == telemetry_module.SKETCH_MAX_BUCKETS
        sketches.append(sketch)
    merged = telemetry_module.LogSketch()
    for sketch in sketches:
        merged.merge(sketch)
    assert len(merged.pos) == telemetry_module.SKETCH_MAX_BUCKETS
    assert sum(merged.pos.values()) == merged.count == 100_000
    # The buckets nearest zero were folded; the top of the range is exact.
    assert merged.max == max(s.max for s in sketches)
    assert merged.quantile(1.0) == merged.max


async def test_1_measurements_that_are_no_mapping_are_skipped_and_counted() -> None:
    metrics = [telemetry.distribution("app.job.stop.duration")]
    async with running(telemetry.telemetry_spec(metrics)):
        first = home()
        core.execute(APP, [("duration", 1.0)])  # type: ignore[arg-type]
        core.execute(APP, {"duration": 2.0})
        snap = await telemetry.snapshot()
        assert home() is first
    metric = snap.metric("app.job.stop.duration")
    assert (metric.skipped, snap.events_total) == (1, 2)
    series = metric.get()
    assert series is not None
    assert series.summary is not None
    assert series.summary.count == 1


async def test_an_unknown_metric_name_says_which_there_are() -> None:
    metrics = [telemetry.counter("app.job.stop.count")]
    async with running(telemetry.telemetry_spec(metrics)):
        snap = await telemetry.snapshot()
    with pytest.raises(
        KeyError,
        match=re.escape(
            "no metric is named 'app.job.count'; the metrics are: 'app.job.stop.count'"
        ),
    ):
        snap.metric("app.job.count")
