"""The TelemetryService: metric definitions, aggregates, the window, Prometheus, restarts,
isolation, and the foundation's own metrics."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import cattrs
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

import trioscope
from trioscope import telemetry as core
from trioscope.foundation import (
    Event,
    EventBufferFullError,
    EventRejected,
    SubscriptionOverflowError,
    config,
    events,
    telemetry,
)
from trioscope.foundation import _telemetry as telemetry_module
from trioscope.foundation._events import event_store_spec
from trioscope.foundation._home import find_home

pytestmark = pytest.mark.trioscope_scope


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


APP: core.EventName = ("app", "job", "stop")
METRICS = [
    telemetry.counter("app.job.stop.count", tags=("queue",)),
    telemetry.sum("app.job.stop.bytes", tags=("queue",), unit="bytes"),
    telemetry.last_value("app.job.stop.depth", tags=("queue",)),
    telemetry.distribution("app.job.stop.duration", tags=("queue",), unit="seconds"),
]


@asynccontextmanager
async def running(
    *specs: trioscope.ChildSpec[Any], max_restarts: int = 3
) -> AsyncIterator[trioscope.Supervisor]:
    """An isolated scope with *specs* under a supervisor."""
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor(list(specs), max_restarts=max_restarts) as sup,
    ):
        yield sup


def home() -> telemetry_module.TelemetryHome:
    found = find_home(telemetry_module.HOME_NAME, telemetry_module.TelemetryHome)
    assert found is not None
    return found


def value(snap: telemetry.MetricsSnapshot, metric: str, /, **tags: str) -> float | None:
    series = snap.metric(metric).get(**tags)
    assert series is not None, (metric, tags)
    return series.value


def summary(
    snap: telemetry.MetricsSnapshot, metric: str, /, **tags: str
) -> telemetry.DistributionSummary:
    series = snap.metric(metric).get(**tags)
    assert series is not None, (metric, tags)
    assert series.summary is not None, (metric, tags)
    return series.summary


# -- definitions ---------------------------------------------------------------


def test_a_metric_name_is_the_event_then_the_measurement() -> None:
    metric = telemetry.distribution("app.job.stop.duration", tags=["queue"], unit="seconds")
    assert metric.kind == "distribution"
    assert metric.event_name == ("app", "job", "stop")
    assert metric.measurement == "duration"
    assert metric.tags == ("queue",)
    assert metric.prometheus_name == "app_job_stop_duration_seconds"
    assert telemetry.counter("app.job.stop.count").prometheus_name == "app_job_stop_count_total"
    assert telemetry.sum("a.b.bytes", unit="bytes").prometheus_name == "a_b_bytes_total"
    assert telemetry.last_value("9a.b-c.d").prometheus_name == "_9a_b_c_d"
    other = telemetry.sum("app.done", event_name=("app", "job", "stop"), measurement="bytes")
    assert (other.event_name, other.measurement) == (("app", "job", "stop"), "bytes")


def test_bad_definitions_are_refused_with_a_message() -> None:
    with pytest.raises(ValueError, match=r"^a metric name is dotted"):
        telemetry.counter("count")
    with pytest.raises(ValueError, match=r"^a metric name is dotted"):
        telemetry.counter("app..count")
    with pytest.raises(TypeError, match=exactly("a metric name must be a str, got int: 3")):
        telemetry.counter(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("for one key, write ('queue',)")):
        telemetry.counter("a.b", tags="queue")
    with pytest.raises(ValueError, match=exactly("tags must not repeat a key, got ('q', 'q')")):
        telemetry.counter("a.b", tags=("q", "q"))
    with pytest.raises(TypeError, match="event_name must be a non-empty tuple"):
        telemetry.counter("a.b", event_name=())


def test_telemetry_spec_refuses_clashing_names_and_bad_services() -> None:
    with pytest.raises(ValueError, match=exactly("telemetry_spec: two metrics are named 'a.b'")):
        telemetry.telemetry_spec([telemetry.counter("a.b"), telemetry.last_value("a.b")])
    with pytest.raises(ValueError, match="would both expose 'a_b_c' in Prometheus"):
        telemetry.telemetry_spec([telemetry.last_value("a.b_c"), telemetry.last_value("a_b.c")])
    with pytest.raises(TypeError, match="must be a TelemetryService subclass"):
        telemetry.telemetry_spec(service=trioscope.Service)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window_s"):
        telemetry.telemetry_spec(window_s=0)


def test_the_default_metrics_cover_the_core_and_the_foundation() -> None:
    events_covered = {metric.event_name for metric in telemetry.DEFAULT_METRICS}
    for name in (
        ("trioscope", "call", "stop"),
        ("trioscope", "cast", "stop"),
        ("trioscope", "child", "restart"),
        ("trioscope", "supervisor", "give_up"),
        core.HANDLER_FAILURE,
        telemetry.CONFIG_UPDATE,
        telemetry.CONFIG_RESET,
        telemetry.EVENTS_STORE,
        telemetry.EVENTS_PRUNE,
        telemetry.EVENTS_REJECT,
        telemetry.EVENTS_OVERFLOW,
        telemetry.SUBSCRIPTION_CUT_OFF,
    ):
        assert name in events_covered
    telemetry.telemetry_spec()  # no clash among them


# -- aggregates --------------------------------------------------------------------


async def test_counters_sums_last_values_and_distributions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(telemetry.telemetry_spec(METRICS)):
        for queue, size, depth, duration in [
            ("a", 10, 3, 0.5),
            ("b", 1, 7, 2.0),
            ("a", 5, 2, 1.5),
        ]:
            core.execute(
                APP, {"bytes": size, "depth": depth, "duration": duration}, {"queue": queue}
            )
        snap = await telemetry.snapshot()
    assert value(snap, "app.job.stop.count", queue="a") == 2
    assert value(snap, "app.job.stop.count", queue="b") == 1
    assert value(snap, "app.job.stop.bytes", queue="a") == 15
    assert value(snap, "app.job.stop.depth", queue="a") == 2
    assert value(snap, "app.job.stop.depth", queue="b") == 7
    a = summary(snap, "app.job.stop.duration", queue="a")
    assert (a.count, a.sum, a.window_count, a.window_sum, a.min, a.max) == (
        2,
        2.0,
        2,
        2.0,
        0.5,
        1.5,
    )
    for estimate in (a.p50, a.p95, a.p99):  # rank 0 of 2: 0.5
        assert estimate is not None
        assert abs(estimate - 0.5) <= telemetry.SKETCH_ALPHA * 0.5
    assert [s.tags for s in snap.metric("app.job.stop.count").series] == [
        {"queue": "a"},
        {"queue": "b"},
    ]
    assert snap.events_total == 3
    assert snap.dropped_total == 0


async def test_tags_are_strs_of_metadata_values_and_missing_ones_are_empty(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metric = telemetry.counter("app.job.stop.count", tags=("queue", "n"))
    async with running(telemetry.telemetry_spec([metric])):
        core.execute(APP, {}, {"queue": "a", "n": 1})
        core.execute(APP, {}, {"queue": "a", "n": "1"})  # the same series as 1
        core.execute(APP, {}, {"n": None})
        core.execute(APP, {}, {"queue": ["x"], "n": 2})  # unhashable: still found by its str
        core.execute(APP, {}, {"queue": ["x"], "n": 2})
        snap = await telemetry.snapshot()
    series = snap.metric("app.job.stop.count").series
    assert [(s.tags, s.value) for s in series] == [
        ({"queue": "", "n": "None"}, 1),
        ({"queue": "['x']", "n": "2"}, 2),
        ({"queue": "a", "n": "1"}, 2),
    ]


async def test_unusable_measurements_are_skipped_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(telemetry.telemetry_spec(METRICS)):
        for measurements in [
            {},
            {"bytes": True, "depth": "3", "duration": math.nan},
            {"bytes": math.inf, "depth": None, "duration": -math.inf},
            {"bytes": 2, "depth": 4.5, "duration": 0.25},
        ]:
            core.execute(APP, measurements, {"queue": "q"})
        snap = await telemetry.snapshot()
    assert value(snap, "app.job.stop.count", queue="q") == 4  # a counter ignores measurements
    assert value(snap, "app.job.stop.bytes", queue="q") == 2
    assert value(snap, "app.job.stop.depth", queue="q") == 4.5
    assert summary(snap, "app.job.stop.duration", queue="q").count == 1
    assert [snap.metric(m.name).skipped for m in METRICS] == [0, 3, 3, 3]


async def test_a_metadata_value_whose_str_raises_is_skipped_not_fatal(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("no str")

    async with running(telemetry.telemetry_spec(METRICS)):
        core.execute(APP, {"bytes": 1}, {"queue": Bad()})
        core.execute(APP, {"bytes": 1}, {"queue": Bad()})
        core.execute(APP, {"bytes": 1}, {"queue": "ok"})
        snap = await telemetry.snapshot()
    assert snap.metric("app.job.stop.count").skipped == 2
    assert value(snap, "app.job.stop.count", queue="ok") == 1
    warnings = [r for r in caplog.records if r.name == "trioscope.foundation.telemetry"]
    assert len(warnings) == 2  # once per metric that failed: count and bytes
    tail = "skipped an event it could not aggregate (logged once per metric)"
    assert {r.getMessage() for r in warnings} == {
        f"metric app.job.stop.count {tail}",
        f"metric app.job.stop.bytes {tail}",
    }


async def test_series_past_the_bound_are_counted_not_aggregated(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry_module, "MAX_SERIES", 2)
    async with running(telemetry.telemetry_spec(METRICS)):
        for queue in "abcab":
            core.execute(APP, {"bytes": 1, "depth": 1, "duration": 1.0}, {"queue": queue})
        snap = await telemetry.snapshot()
        text = await telemetry.prometheus()
    for metric in snap.metrics:
        assert [s.tags["queue"] for s in metric.series] == ["a", "b"]
        assert metric.series_dropped == 1
    assert 'trioscope_telemetry_series_dropped_total{metric="app.job.stop.count"} 1' in text


async def test_a_full_buffer_drops_and_counts(autojump_clock: trio.testing.MockClock) -> None:
    async with running(telemetry.telemetry_spec(METRICS, buffer_size=5)):
        for _ in range(8):  # no checkpoint: the aggregator cannot run meanwhile
            core.execute(APP, {"bytes": 1}, {"queue": "q"})
        stats = await telemetry.status()
        snap = await telemetry.snapshot()
        text = await telemetry.prometheus()
    assert (stats.buffer_size, stats.dropped_total) == (5, 3)
    assert (snap.events_total, snap.dropped_total) == (5, 3)
    assert value(snap, "app.job.stop.count", queue="q") == 5
    assert "\ntrioscope_telemetry_dropped_total 3\n" in text


async def test_the_aggregator_drains_without_a_snapshot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(telemetry.telemetry_spec(METRICS)):
        core.execute(APP, {"bytes": 1}, {"queue": "q"})
        assert len(home().buffer) == 1
        await trio.sleep(telemetry_module.AGGREGATE_DELAY_S)
        await trio.testing.wait_all_tasks_blocked()
        assert len(home().buffer) == 0
        assert home().events_total == 1


# -- the window ----------------------------------------------------------------------


@pytest.mark.parametrize("pending_max", [1, 2, 256])
async def test_the_window_follows_trio_time_exactly(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, pending_max: int
) -> None:
    """window_s=10: sub-windows of 1 s; a read at *now* covers floor(now) - 9 .. floor(now)."""
    monkeypatch.setattr(telemetry_module, "PENDING_MAX", pending_max)
    metric = telemetry.distribution("app.job.stop.duration")
    async with running(telemetry.telemetry_spec([metric], window_s=10.0)):
        start = trio.current_time()
        assert start == 0.0
        # Events placed by their monotonic_time, whatever the time they are aggregated at.
        for at, duration in [(0.0, 1.0), (0.5, 2.0), (3.0, 4.0), (9.5, 8.0)]:
            await trio.sleep(at - trio.current_time())
            core.execute(("app", "job", "stop"), {"duration": duration, "monotonic_time": at})
        # Without monotonic_time: the time it is aggregated at (here, the snapshot's).
        await trio.sleep(9.75 - trio.current_time())
        core.execute(("app", "job", "stop"), {"duration": 16.0})
        reads = {}
        for now in [9.75, 9.999, 10.0, 12.9, 13.0, 18.99, 19.0]:
            await trio.sleep(now - trio.current_time())
            reads[now] = summary(await telemetry.snapshot(), "app.job.stop.duration")
    window = {now: (s.window_count, s.window_sum, s.min, s.max) for now, s in reads.items()}
    assert window == {
        9.75: (5, 31.0, 1.0, 16.0),
        9.999: (5, 31.0, 1.0, 16.0),
        10.0: (3, 28.0, 4.0, 16.0),  # sub-window 0 (t in [0, 1)) left
        12.9: (3, 28.0, 4.0, 16.0),
        13.0: (2, 24.0, 8.0, 16.0),  # sub-window 3 left
        18.99: (2, 24.0, 8.0, 16.0),
        19.0: (0, 0, None, None),  # sub-window 9 left
    }
    last = reads[19.0]
    assert (last.count, last.sum, last.p50, last.p95, last.p99) == (5, 31.0, None, None, None)


async def test_the_window_follows_the_config_server(autojump_clock: trio.testing.MockClock) -> None:
    metric = telemetry.distribution("app.job.stop.duration")
    async with running(
        config.config_spec(values={"telemetry": {"window_s": 10.0}}, env={}),
        telemetry.telemetry_spec([metric], window_s=99.0),
    ):
        assert (await telemetry.status()).window_s == 10.0  # the config's, not the spec's
        for at in (1.0, 4.0, 8.0):
            await trio.sleep(at - trio.current_time())
            core.execute(("app", "job", "stop"), {"duration": at, "monotonic_time": at})
        await trio.sleep(9.0 - trio.current_time())
        await config.update("telemetry.window_s", 20.0)
        await trio.testing.wait_all_tasks_blocked()
        assert (await telemetry.status()).window_s == 20.0
        # Sub-windows of 2 s now: 1.0 -> 0, 4.0 -> 2, 8.0 -> 4; a read at 21 keeps k > 0.
        await trio.sleep(21.0 - trio.current_time())
        s = summary(await telemetry.snapshot(), "app.job.stop.duration")
        assert (s.window_count, s.min, s.max) == (2, 4.0, 8.0)
        await config.reset()
        await trio.testing.wait_all_tasks_blocked()
        assert (await telemetry.status()).window_s == 10.0


# -- plain data and Prometheus ---------------------------------------------------------


def _plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    return value is None or isinstance(value, (str, int, float))


async def test_a_snapshot_is_plain_data(autojump_clock: trio.testing.MockClock) -> None:
    async with running(telemetry.telemetry_spec(METRICS)):
        core.execute(APP, {"bytes": 1, "depth": 2, "duration": 0.5}, {"queue": "q"})
        snap = await telemetry.snapshot()
    plain = cattrs.unstructure(snap)
    assert _plain(plain)
    assert cattrs.structure(plain, telemetry.MetricsSnapshot) == snap
    assert plain["metrics"][0]["series"] == [{"tags": {"queue": "q"}, "value": 1, "summary": None}]


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, key
            samples[key] = sample.value
    return samples


def _same(a: float | None, b: float) -> bool:
    return math.isnan(b) if a is None else a == b


async def test_prometheus_text_parses_to_the_snapshot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tricky = 'a "quoted" \\ back\nslash'
    metric_with_odd_tag = telemetry.counter("app.job.stop.count", tags=("queue", "9-x"))
    metrics = [metric_with_odd_tag, *METRICS[1:]]
    async with running(telemetry.telemetry_spec(metrics)):
        for queue, duration in [(tricky, 0.5), ("plain", 1.25), ("plain", 2.5), (tricky, 0.125)]:
            core.execute(
                APP,
                {"bytes": 3, "depth": 1.5, "duration": duration},
                {"queue": queue, "9-x": "y"},
            )
        metric = telemetry.distribution("app.idle.duration")
        assert metric  # a distribution with no series: only its HELP and TYPE lines
        snap = await telemetry.snapshot()
    text = telemetry.render_prometheus(snap)
    assert text == snap.prometheus()
    families = _families(text)
    assert {name: f.type for name, f in families.items()} == {
        "app_job_stop_count": "counter",
        "app_job_stop_bytes": "counter",
        "app_job_stop_depth": "gauge",
        "app_job_stop_duration_seconds": "summary",
        "trioscope_telemetry_events": "counter",
        "trioscope_telemetry_dropped": "counter",
        "trioscope_telemetry_series_dropped": "counter",
        "trioscope_telemetry_skipped": "counter",
    }
    samples = _samples(text)
    expected: dict[tuple[str, tuple[tuple[str, str], ...]], float | None] = {}
    for m in snap.metrics:
        definition = next(d for d in metrics if d.name == m.name)
        name = definition.prometheus_name
        labels = {"_9_x" if tag == "9-x" else tag for tag in m.tags}
        for series in m.series:
            pairs = tuple(sorted(("_9_x" if k == "9-x" else k, v) for k, v in series.tags.items()))
            assert {k for k, _ in pairs} == labels
            if series.summary is None:
                expected[(name, pairs)] = series.value
                continue
            s = series.summary
            for q, v in zip(telemetry.QUANTILES, (s.p50, s.p95, s.p99), strict=True):
                expected[(name, tuple(sorted((*pairs, ("quantile", str(q))))))] = v
            expected[(name + "_sum", pairs)] = s.sum
            expected[(name + "_count", pairs)] = s.count
        for own in ("series_dropped", "skipped"):
            key = (f"trioscope_telemetry_{own}_total", (("metric", m.name),))
            expected[key] = getattr(m, own)
    expected[("trioscope_telemetry_events_total", ())] = snap.events_total
    expected[("trioscope_telemetry_dropped_total", ())] = snap.dropped_total
    assert samples.keys() == expected.keys()
    for key, got in samples.items():
        assert _same(expected[key], got), (key, expected[key], got)
    assert (("app_job_stop_count_total", (("_9_x", "y"), ("queue", tricky)))) in samples


async def test_an_empty_window_reports_nan_quantiles(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metric = telemetry.distribution("app.job.stop.duration", unit="seconds")
    async with running(telemetry.telemetry_spec([metric], window_s=1.0)):
        core.execute(APP, {"duration": 0.5})
        await trio.sleep(5)
        text = await telemetry.prometheus()
    samples = _samples(text)
    assert math.isnan(samples[("app_job_stop_duration_seconds", (("quantile", "0.5"),))])
    assert samples[("app_job_stop_duration_seconds_count", ())] == 1
    assert samples[("app_job_stop_duration_seconds_sum", ())] == 0.5


# -- the service: restarts, isolation, clients ----------------------------------------------


class Crashable(telemetry.TelemetryService):
    async def crash(self) -> None:
        raise RuntimeError("boom")


async def test_metrics_survive_a_crash_of_the_service(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(telemetry.telemetry_spec(METRICS, service=Crashable)):
        core.execute(APP, {"bytes": 4}, {"queue": "q"})
        before = await telemetry.snapshot()
        ref = trioscope.whereis("telemetry", Crashable)
        assert ref is not None
        with pytest.raises(trioscope.ServiceCrashedError):
            await ref.call(Crashable.crash)
        core.execute(APP, {"bytes": 4}, {"queue": "q"})  # meanwhile: the home still buffers
        after = await telemetry.snapshot()  # a call by name: waits for the next incarnation
        stats = await telemetry.status()
    assert value(before, "app.job.stop.count", queue="q") == 1
    assert value(after, "app.job.stop.count", queue="q") == 2
    assert value(after, "app.job.stop.bytes", queue="q") == 8
    assert stats.restarts == 1
    assert stats.attached


async def test_the_handler_is_detached_when_the_telemetry_child_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trioscope.open_registry(isolated=True):
        async with trioscope.open_supervisor([telemetry.telemetry_spec(METRICS)]):
            (info,) = core.handlers(APP)
            assert info.handler_id.startswith("trioscope.foundation.telemetry#")
        assert core.handlers() == []


async def test_sibling_scopes_see_only_their_own_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    snaps: dict[str, telemetry.MetricsSnapshot] = {}

    async def scope(queue: str, times: int, ready: trio.Event, go: trio.Event) -> None:
        async with running(telemetry.telemetry_spec(METRICS)):
            ready.set()
            await go.wait()
            for _ in range(times):
                core.execute(APP, {"bytes": 1}, {"queue": queue})
                await trio.lowlevel.checkpoint()
            snaps[queue] = await telemetry.snapshot()

    async with trio.open_nursery() as nursery:
        go = trio.Event()
        ready = [trio.Event(), trio.Event()]
        nursery.start_soon(scope, "a", 3, ready[0], go)
        nursery.start_soon(scope, "b", 5, ready[1], go)
        for event in ready:
            await event.wait()
        go.set()
    for queue, times in (("a", 3), ("b", 5)):
        series = snaps[queue].metric("app.job.stop.count").series
        assert [(s.tags, s.value) for s in series] == [({"queue": queue}, times)]


async def test_a_nested_scope_reports_to_the_enclosing_telemetry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(telemetry.telemetry_spec(METRICS)):
        async with trioscope.open_registry():  # not isolated: the outer handler sees it
            core.execute(APP, {}, {"queue": "inner"})
            snap = await telemetry.snapshot()  # the client finds the outer service too
        async with trioscope.open_registry(isolated=True):
            core.execute(APP, {}, {"queue": "isolated"})
            with pytest.raises(trioscope.ServiceUnavailableError, match="no telemetry service"):
                await telemetry.snapshot()
        assert [s.tags for s in snap.metric("app.job.stop.count").series] == [{"queue": "inner"}]
        assert value(await telemetry.snapshot(), "app.job.stop.count", queue="inner") == 1


@pytest.mark.no_trioscope_scope("checks what the clients do outside every registry scope")
async def test_clients_need_a_service_in_scope() -> None:
    with pytest.raises(trioscope.NoRegistryError):
        await telemetry.snapshot()
    async with trioscope.open_registry(isolated=True):
        with pytest.raises(
            trioscope.ServiceUnavailableError,
            match=re.escape("start trioscope.foundation.telemetry.telemetry_spec()"),
        ):
            await telemetry.prometheus()


async def test_health_reports_the_buffer(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry_module, "AGGREGATE_DELAY_S", 100.0)
    async with running(telemetry.telemetry_spec(METRICS, buffer_size=10)):
        ref = trioscope.whereis("telemetry", telemetry.TelemetryService)
        assert ref is not None
        health = await ref.health()
        assert health.status == "healthy"
        assert health.detail == {"buffered": 0, "buffer_size": 10, "dropped_total": 0}
        home()._wake_at = 100  # a starved aggregator: it waits for the delay
        for _ in range(9):
            core.execute(APP, {}, {"queue": "q"})
        health = await ref.health()
        assert health.status == "degraded"  # 90 % full
        assert health.detail["buffered"] == 9


# -- the core's and the foundation's own events ---------------------------------------------


class Worker(trioscope.Service):
    async def work(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def crash(self) -> None:
        raise RuntimeError("crash")


async def test_calls_and_restarts_of_services(autojump_clock: trio.testing.MockClock) -> None:
    async with running(
        telemetry.telemetry_spec(), Worker.child_spec(name="worker"), max_restarts=5
    ):
        for seconds in (0.5, 0.5, 0.25):
            await trioscope.call("worker", Worker.work, seconds)
        with pytest.raises(trioscope.ServiceCrashedError):
            await trioscope.call("worker", Worker.crash)
        await trioscope.wait_for_service("worker")
        snap = await telemetry.snapshot()
    worker = {"name": "worker", "handler": "work"}
    assert value(snap, "trioscope.call.stop.count", **worker) == 3
    durations = summary(snap, "trioscope.call.stop.duration", **worker)
    assert (durations.count, durations.sum, durations.min, durations.max) == (3, 1.25, 0.25, 0.5)
    assert durations.p50 == 0.5  # rank 1 of [0.25, 0.5, 0.5]: clamped to the exact max
    crash = {"name": "worker", "handler": "crash", "kind": "crash"}
    assert value(snap, "trioscope.call.exception.count", **crash) == 1
    restarts = snap.metric("trioscope.child.restart.count").series
    assert [(s.tags["child"], s.value) for s in restarts] == [("worker", 1)]


async def test_the_config_server_counts_updates_and_resets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(config.config_spec(env={}), telemetry.telemetry_spec()):
        await config.update("events.max_events", 500)
        await config.update("events.max_events", 600)
        await config.update("telemetry.window_s", 30.0)
        await config.reset()
        snap = await telemetry.snapshot()
    assert value(snap, "trioscope.config.update.count", path="events.max_events") == 2
    assert value(snap, "trioscope.config.update.count", path="telemetry.window_s") == 1
    assert value(snap, "trioscope.config.reset.count") == 1


async def test_the_event_store_counts_stored_pruned_rejected_and_overflow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(event_store_spec(client_buffer=2), telemetry.telemetry_spec()):
        await events.store(Event("a", {}))
        await events.store_batch([Event("b", {}), Event("b", {}), Event("b", {})])
        with pytest.raises(EventRejected):
            await events.store_batch([Event("c", {}), Event("c", {"x": object()})])  # both
        with pytest.raises(EventRejected):
            events.store_nowait(Event("c", {"x": object()}))
        assert await events.prune_before(2**62) == 4
        events.store_nowait(Event("d", {}))
        events.store_nowait(Event("d", {}))
        with pytest.raises(EventBufferFullError):
            events.store_nowait(Event("d", {}))
        await trio.testing.wait_all_tasks_blocked()  # the two buffered ones are flushed
        async with events.subscribe(buffer=1) as slow:
            await events.store_batch([Event("e", {}), Event("e", {})])
            with pytest.raises(SubscriptionOverflowError):
                async for _ in slow:
                    pass
        snap = await telemetry.snapshot()
    assert value(snap, "trioscope.events.store.count") == 1 + 3 + 2 + 2
    assert value(snap, "trioscope.events.reject.count") == 3
    assert value(snap, "trioscope.events.prune.count") == 4
    assert value(snap, "trioscope.events.overflow.count") == 1
    assert value(snap, "trioscope.subscription.cut_off.count", what="events") == 1


def test_emitted_event_names_are_documented() -> None:
    doc = telemetry_module.__doc__ or ""
    for name in (
        telemetry.CONFIG_UPDATE,
        telemetry.CONFIG_RESET,
        telemetry.EVENTS_STORE,
        telemetry.EVENTS_PRUNE,
        telemetry.EVENTS_REJECT,
        telemetry.EVENTS_OVERFLOW,
        telemetry.SUBSCRIPTION_CUT_OFF,
    ):
        assert repr(name) in doc.replace('"', "'")


def _metric_names(metrics: Sequence[telemetry.Metric]) -> list[str]:
    return [m.name for m in metrics]


def test_the_public_module_lists_what_it_exports() -> None:
    assert telemetry.__all__ == sorted(
        telemetry.__all__, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)
    )
    assert "telemetry_spec" in telemetry.__all__
    assert _metric_names(telemetry.DEFAULT_METRICS) == sorted(
        set(_metric_names(telemetry.DEFAULT_METRICS)),
        key=_metric_names(telemetry.DEFAULT_METRICS).index,
    )
