"""The telemetry client: ``from trioscope.foundation import telemetry``.

::

    import trio, trioscope
    from trioscope.foundation import telemetry

    async def main() -> None:
        async with trioscope.open_registry(isolated=True), trioscope.open_supervisor(
            [telemetry.telemetry_spec([telemetry.counter("app.job.stop.count", tags=("queue",))])]
        ):
            trioscope.telemetry.execute(("app", "job", "stop"), {"duration": 0.5}, {"queue": "q1"})
            snap = await telemetry.snapshot()
            assert snap.metric("app.job.stop.count").get(queue="q1").value == 1
            text = await telemetry.prometheus()
            assert 'app_job_stop_count_total{queue="q1"} 1' in text

    trio.run(main)

Metrics are declared with `counter`, `sum`, `last_value` and `distribution`
(Elixir's ``Telemetry.Metrics``); `telemetry_spec` runs the service that
aggregates them from the events executed in its registry scope
(`trioscope.telemetry`), by default `DEFAULT_METRICS`: the core's events and
the foundation's own. Every function resolves the service through the
current registry scope on every call: nothing is global, nothing cached
across scopes. See `trioscope.foundation._telemetry` for the aggregates, the
window, the quantile sketch and the events the foundation executes.
"""

from ._telemetry import CONFIG_RESET as CONFIG_RESET
from ._telemetry import CONFIG_UPDATE as CONFIG_UPDATE
from ._telemetry import DEFAULT_BUFFER_SIZE as DEFAULT_BUFFER_SIZE
from ._telemetry import DEFAULT_METRICS as DEFAULT_METRICS
from ._telemetry import DEFAULT_WINDOW_S as DEFAULT_WINDOW_S
from ._telemetry import EVENTS_OVERFLOW as EVENTS_OVERFLOW
from ._telemetry import EVENTS_PRUNE as EVENTS_PRUNE
from ._telemetry import EVENTS_REJECT as EVENTS_REJECT
from ._telemetry import EVENTS_STORE as EVENTS_STORE
from ._telemetry import MAX_SERIES as MAX_SERIES
from ._telemetry import QUANTILES as QUANTILES
from ._telemetry import SKETCH_ALPHA as SKETCH_ALPHA
from ._telemetry import SKETCH_MAX_BUCKETS as SKETCH_MAX_BUCKETS
from ._telemetry import SUBSCRIPTION_CUT_OFF as SUBSCRIPTION_CUT_OFF
from ._telemetry import SUBWINDOWS as SUBWINDOWS
from ._telemetry import DistributionSummary as DistributionSummary
from ._telemetry import Metric as Metric
from ._telemetry import MetricKind as MetricKind
from ._telemetry import MetricSnapshot as MetricSnapshot
from ._telemetry import MetricsSnapshot as MetricsSnapshot
from ._telemetry import SeriesSnapshot as SeriesSnapshot
from ._telemetry import TelemetryService as TelemetryService
from ._telemetry import TelemetryStatus as TelemetryStatus
from ._telemetry import counter as counter
from ._telemetry import distribution as distribution
from ._telemetry import last_value as last_value
from ._telemetry import prometheus as prometheus
from ._telemetry import render_prometheus as render_prometheus
from ._telemetry import snapshot as snapshot
from ._telemetry import status as status
from ._telemetry import sum as sum
from ._telemetry import telemetry_spec as telemetry_spec

__all__ = [
    "CONFIG_RESET",
    "CONFIG_UPDATE",
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_METRICS",
    "DEFAULT_WINDOW_S",
    "EVENTS_OVERFLOW",
    "EVENTS_PRUNE",
    "EVENTS_REJECT",
    "EVENTS_STORE",
    "MAX_SERIES",
    "QUANTILES",
    "SKETCH_ALPHA",
    "SKETCH_MAX_BUCKETS",
    "SUBSCRIPTION_CUT_OFF",
    "SUBWINDOWS",
    "DistributionSummary",
    "Metric",
    "MetricKind",
    "MetricSnapshot",
    "MetricsSnapshot",
    "SeriesSnapshot",
    "TelemetryService",
    "TelemetryStatus",
    "counter",
    "distribution",
    "last_value",
    "prometheus",
    "render_prometheus",
    "snapshot",
    "status",
    "sum",
    "telemetry_spec",
]
