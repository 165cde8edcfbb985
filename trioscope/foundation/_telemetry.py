"""The TelemetryService (registered as ``"telemetry"``): metrics aggregated from the scope's events.

::

    import trio, trioscope
    from trioscope.foundation import telemetry

    async def main() -> None:
        metrics = [
            telemetry.counter("shop.checkout.stop.count", tags=("shop",)),
            telemetry.distribution("shop.checkout.stop.duration", unit="seconds"),
        ]
        async with trioscope.open_registry(isolated=True), trioscope.open_supervisor(
            [telemetry.telemetry_spec(metrics)]
        ):
            with trioscope.telemetry.span(("shop", "checkout"), {"shop": "north"}):
                await trio.sleep(0.25)
            snap = await telemetry.snapshot()
            assert snap.metric("shop.checkout.stop.count").get(shop="north").value == 1
            assert "shop_checkout_stop_count_total" in await telemetry.prometheus()

    trio.run(main)

**Metrics** are declared as in Elixir's ``Telemetry.Metrics``: `counter`,
`sum`, `last_value` (a gauge) and `distribution`. A metric's name is dotted;
its event is every part but the last, its measurement the last
(``"trioscope.call.stop.duration"``: the ``duration`` of
``("trioscope", "call", "stop")``); a counter counts events and ignores its
measurement (``count`` by convention). *Tags* are metadata keys: each distinct
tuple of their values (``str(value)``; ``""`` for a missing key) is a
*series*. A metric holds at most `MAX_SERIES` series; an event that would open
one more is not aggregated but counted in the metric's ``series_dropped``.
An event whose measurement is missing, not an ``int`` or ``float`` (a ``bool``
is not a number here), or not finite is counted in the metric's ``skipped``.
Nothing is hidden: both counts are in `snapshot` and in `prometheus`.

**Aggregates**: counters and sums are cumulative since the telemetry child
started; a last value is the measurement of the latest event; a
distribution keeps ``count`` and ``sum`` cumulatively (as a Prometheus
summary does) and, over a sliding window of ``window_s`` seconds of Trio's
clock, ``window_count``, ``window_sum``, ``min``, ``max`` (exact) and
``p50``/``p95``/``p99``. The window is a ring of `SUBWINDOWS` sub-windows of
``sub = window_s / SUBWINDOWS`` seconds each. An event's time *t* is its
``monotonic_time`` measurement (Trio's clock when it was executed: the
core's call, cast and span events carry it), or else the Trio time it is
aggregated at (at most `AGGREGATE_DELAY_S` later, or at a `snapshot`; also
when its ``monotonic_time`` is not a plain finite float or lies ahead); it
falls in sub-window ``floor(t / sub)``, and a read at time *now* covers the
sub-windows ``k`` with ``floor(now / sub) - SUBWINDOWS < k <= floor(now /
sub)``. So an event stays in the window for at least ``window_s * (1 - 1 /
SUBWINDOWS)`` and less than ``window_s`` seconds.
``telemetry.window_s`` may change at run time through the config server:
the sub-windows kept are then re-keyed to the new width by their end (the
last new sub-window each overlaps; merged where they meet), so nothing
already aggregated is lost or leaves the window earlier than it would have.

**Quantiles** come from `LogSketch`, a DDSketch-style sketch (Masson,
Rim and Lee, VLDB 2019): logarithmic buckets of relative width
``gamma = (1 + alpha) / (1 - alpha)`` with ``alpha = SKETCH_ALPHA`` (1 %),
mergeable (bucket counts add), bounded (`SKETCH_MAX_BUCKETS` per sign; past
it the buckets nearest zero are merged). The quantile *q* of *n* values is
defined as the value of rank ``floor(q * (n - 1))`` (0-based) of the sorted
values; the sketch returns it within relative error *alpha* (for values of
normal float magnitude, as long as no bucket was merged: the values of a
window would need to span more than 35 orders of magnitude), clamped to the
window's exact min and max. Why written here rather than DataDog's
``ddsketch`` package, which implements the same algorithm: its ``add``
measured 1.35 us against 0.6 us for this dict-bucket version (Python 3.11,
this project's VM), and ``add`` is on the aggregator's hot path; the window
needs rotation and re-keying, which it does not offer, anyway.

**Where things live.** `telemetry_spec` is a `trioscope.Strategy.REST_FOR_ONE`
supervisor of the *home* (`TelemetryHome`, registered as
``"telemetry.home"``) and the service (`TelemetryService`, ``"telemetry"``).
The home attaches the handler in its own task, so in the scope the
telemetry child runs in (it sees that scope's events and those of the scopes
nested in it, not across an isolated one), and detaches it when it stops. It
owns the bounded buffer, the aggregates and the aggregator task, so metrics
survive a restart of the service. The handler never blocks and never raises:
it appends the event to the buffer (``telemetry.buffer_size`` events), or,
when the buffer is full, counts it as dropped
(``trioscope_telemetry_dropped_total``). The aggregator task drains the
buffer in batches (one wake-up per `AGGREGATE_DELAY_S` or `DRAIN_BATCH`
events, not one per event); `snapshot` drains it first, so a snapshot
covers every event executed before it was asked for: aggregated plus
dropped equals executed. The handler keeps the event's measurement and
metadata mappings until they are aggregated, without copying them (a copy
would double its cost): an emitter must not change them once `execute`
returned. The core and the foundation build fresh ones for every event;
so does an emitter that passes a literal or `trioscope.telemetry.span`.

**The foundation's own events** (metadata always has ``correlation_id``,
the current one; every measurement is ``count``, an ``int``):

``("trioscope", "config", "update")``
    The config server applied an update. Metadata: ``path``, ``version``.
``("trioscope", "config", "reset")``
    It applied a reset. Metadata: ``version``.
``("trioscope", "events", "store")``
    The event store stored ``count`` events (one store, batch or flush).
``("trioscope", "events", "prune")``
    Retention or `~trioscope.foundation.events.prune_before` removed ``count`` events.
``("trioscope", "events", "reject")``
    ``count`` events were rejected (a rejected batch counts each event).
``("trioscope", "events", "overflow")``
    `~trioscope.foundation.events.store_nowait` found its buffer full.
    Metadata: ``capacity``.
``("trioscope", "subscription", "cut_off")``
    A subscriber too slow for its buffer was cut off. Metadata: ``what``
    (``"config changes"``, ``"events"``), ``buffer``.

They are executed in the task of the service or home that did the work,
whose context holds the scope's registry, so the telemetry of that scope
sees them. `DEFAULT_METRICS` covers them, the core's events (see
`trioscope.telemetry`) and restarts (``trioscope.child.restart.count``).
"""

from __future__ import annotations

import builtins
import itertools
import logging
import math
import operator
import re
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal, TypeAlias, cast, final

import attrs
import trio

from .._child_spec import ChildSpec
from .._correlation import _correlation
from .._errors import NoRegistryError, ServiceUnavailableError
from .._names import _call
from .._registry import _no_registry_error
from .._service import DEFAULT_CALL_TIMEOUT_S, DEFAULT_MAILBOX_SIZE, Service
from .._supervisor import Strategy, Supervisor, supervisor_spec
from ..telemetry import EventName, Measurements, Metadata, attach, detach, execute, handlers
from ._home import Home, find_home, home_spec, own_home
from ._settings import TelemetrySettings

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
    "HOME_NAME",
    "MAX_SERIES",
    "QUANTILES",
    "SERVICE_NAME",
    "SKETCH_ALPHA",
    "SKETCH_MAX_BUCKETS",
    "SUBSCRIPTION_CUT_OFF",
    "SUBWINDOWS",
    "DistributionSummary",
    "LogSketch",
    "Metric",
    "MetricKind",
    "MetricSnapshot",
    "MetricsSnapshot",
    "SeriesSnapshot",
    "TelemetryHome",
    "TelemetryService",
    "TelemetryStatus",
    "counter",
    "distribution",
    "emit_count",
    "last_value",
    "prometheus",
    "render_prometheus",
    "snapshot",
    "status",
    "sum",
    "telemetry_spec",
]

_log = logging.getLogger("trioscope.foundation.telemetry")
_add_up: Final = builtins.sum  # this module's `sum` defines a metric

SERVICE_NAME: Final = "telemetry"
"""The name the `TelemetryService` registers."""
HOME_NAME: Final = "telemetry.home"
"""The name the `TelemetryHome` registers."""
DEFAULT_WINDOW_S: Final = 60.0
"""Seconds of history a distribution's window covers (when no config server says otherwise)."""
DEFAULT_BUFFER_SIZE: Final = 10_000
"""Events the handler buffers for the aggregator (when no config server says otherwise)."""
SUBWINDOWS: Final = 10
"""Sub-windows per window: an event leaves the window between 90 % and 100 % of ``window_s``."""
MAX_SERIES: Final = 1_000
"""Series (distinct tag values) one metric holds; events beyond are counted, not aggregated."""
SKETCH_ALPHA: Final = 0.01
"""Relative accuracy of the quantiles (1 %)."""
SKETCH_MAX_BUCKETS: Final = 2_048
"""Buckets a `LogSketch` keeps per sign (positive, negative) before merging the nearest zero."""
QUANTILES: Final = (0.5, 0.95, 0.99)
"""The quantiles a distribution reports (``p50``, ``p95``, ``p99``)."""
PENDING_MAX: Final = 256
"""Values a distribution series collects before adding them to its sketch together."""
DRAIN_BATCH: Final = 1_000
"""Events the aggregator task aggregates between two checkpoints."""
AGGREGATE_DELAY_S: Final = 0.1
"""Seconds the aggregator task collects events before it aggregates them (see `TelemetryHome`)."""

CONFIG_UPDATE: Final[EventName] = ("trioscope", "config", "update")
"""Executed when the config server applied an update (measurement ``count``: 1)."""
CONFIG_RESET: Final[EventName] = ("trioscope", "config", "reset")
"""Executed when the config server applied a reset (measurement ``count``: 1)."""
EVENTS_STORE: Final[EventName] = ("trioscope", "events", "store")
"""Executed when the event store stored events (measurement ``count``: how many)."""
EVENTS_PRUNE: Final[EventName] = ("trioscope", "events", "prune")
"""Executed when the event store pruned events (measurement ``count``: how many)."""
EVENTS_REJECT: Final[EventName] = ("trioscope", "events", "reject")
"""Executed when events were rejected (measurement ``count``: how many)."""
EVENTS_OVERFLOW: Final[EventName] = ("trioscope", "events", "overflow")
"""Executed when `store_nowait`'s buffer was full (measurement ``count``: 1)."""
SUBSCRIPTION_CUT_OFF: Final[EventName] = ("trioscope", "subscription", "cut_off")
"""Executed when a too slow subscriber was cut off (measurement ``count``: 1)."""


def emit_count(
    event_name: EventName, count: int, metadata: dict[str, object] | None = None
) -> None:
    """Execute one of the foundation's events: measurement ``count``, metadata plus
    ``correlation_id`` (the current one). Cheap, synchronous, never raises for a handler."""
    meta = {} if metadata is None else metadata
    meta["correlation_id"] = _correlation.get()
    execute(event_name, {"count": count}, meta)


MetricKind: TypeAlias = Literal["counter", "sum", "last_value", "distribution"]
"""What a metric aggregates."""


# -- metric definitions ------------------------------------------------------------


def _check_name(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    _valid_name(value)


def _valid_name(value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"a metric name must be a str, got {type(value).__name__}: {value!r}")
    parts = value.split(".")
    if len(parts) < 2 or not all(parts):
        raise ValueError(
            f"a metric name is dotted, the event name then the measurement, such as "
            f"'app.request.stop.duration'; got {value!r}"
        )


def _check_tags(
    instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: object
) -> None:
    if not isinstance(value, tuple) or not all(isinstance(tag, str) and tag for tag in value):
        raise TypeError(f"tags must be metadata keys (non-empty strings), got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"tags must not repeat a key, got {value!r}")


def _check_event_name(
    instance: object, attribute: attrs.Attribute[EventName], value: object
) -> None:
    if (
        not isinstance(value, tuple)
        or not value
        or not all(isinstance(part, str) and part for part in value)
    ):
        raise TypeError(
            f"a metric's event_name must be a non-empty tuple of non-empty strings, "
            f"such as ('app', 'request', 'stop'); got {value!r}"
        )


def _check_measurement(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"a metric's measurement must be a non-empty str, got {value!r}")


def _as_tags(tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise TypeError(f"tags is a list of metadata keys; for one key, write ({tags!r},)")
    return tuple(tags)


@attrs.frozen
class Metric:
    """One metric definition; build it with `counter`, `sum`, `last_value` or `distribution`."""

    kind: MetricKind = attrs.field(
        validator=attrs.validators.in_(("counter", "sum", "last_value", "distribution"))
    )
    """What it aggregates."""
    name: str = attrs.field(validator=_check_name)
    """The dotted name: ``"trioscope.call.stop.duration"``."""
    event_name: EventName = attrs.field(validator=_check_event_name)
    """The event it aggregates (by default the name's parts but the last)."""
    measurement: str = attrs.field(validator=_check_measurement)
    """The measurement it aggregates (by default the name's last part; a counter ignores it)."""
    tags: tuple[str, ...] = attrs.field(default=(), validator=_check_tags)
    """Metadata keys whose values tell its series apart."""
    description: str = ""
    """Free text, the ``# HELP`` line of the Prometheus exposition."""
    unit: str = ""
    """The measurement's unit (``"seconds"``, ``"bytes"``), appended to the Prometheus name."""

    @property
    def prometheus_name(self) -> str:
        """The name in the Prometheus exposition (sanitized; ``_total`` for counters and sums)."""
        name = _sanitize(self.name.replace(".", "_"))
        unit = _sanitize(self.unit) if self.unit else ""
        if unit and not name.endswith("_" + unit):
            name += "_" + unit
        if self.kind in ("counter", "sum") and not name.endswith("_total"):
            name += "_total"
        return name


def _metric(
    kind: MetricKind,
    name: str,
    tags: Iterable[str],
    event_name: EventName | None,
    measurement: str | None,
    description: str,
    unit: str,
) -> Metric:
    _valid_name(name)
    parts = tuple(name.split("."))
    return Metric(
        kind,
        name,
        parts[:-1] if event_name is None else event_name,
        parts[-1] if measurement is None else measurement,
        _as_tags(tags),
        description,
        unit,
    )


def counter(
    name: str,
    *,
    tags: Iterable[str] = (),
    event_name: EventName | None = None,
    description: str = "",
) -> Metric:
    """A metric counting events: ``"app.request.stop.count"`` counts ``("app", "request", "stop")``.

    Raises:
        ValueError, TypeError: a name that is not dotted, or bad tags.
    """
    return _metric("counter", name, tags, event_name, None, description, "")


def sum(  # Telemetry.Metrics' name; this module never needs the builtin
    name: str,
    *,
    tags: Iterable[str] = (),
    event_name: EventName | None = None,
    measurement: str | None = None,
    description: str = "",
    unit: str = "",
) -> Metric:
    """A metric adding up a measurement (cumulative): meant for non-negative ones
    (counts, bytes), since Prometheus sees it as a counter.

    Raises:
        ValueError, TypeError: a name that is not dotted, or bad tags.
    """
    return _metric("sum", name, tags, event_name, measurement, description, unit)


def last_value(
    name: str,
    *,
    tags: Iterable[str] = (),
    event_name: EventName | None = None,
    measurement: str | None = None,
    description: str = "",
    unit: str = "",
) -> Metric:
    """A gauge: the measurement of the latest event (a queue depth, a pool size).

    Raises:
        ValueError, TypeError: a name that is not dotted, or bad tags.
    """
    return _metric("last_value", name, tags, event_name, measurement, description, unit)


def distribution(
    name: str,
    *,
    tags: Iterable[str] = (),
    event_name: EventName | None = None,
    measurement: str | None = None,
    description: str = "",
    unit: str = "",
) -> Metric:
    """A distribution: cumulative count and sum; min, max and p50/p95/p99 over the window.

    Raises:
        ValueError, TypeError: a name that is not dotted, or bad tags.
    """
    return _metric("distribution", name, tags, event_name, measurement, description, unit)


_HANDLER = ("name", "handler")

DEFAULT_METRICS: Final[tuple[Metric, ...]] = (
    counter("trioscope.call.stop.count", tags=_HANDLER, description="Calls handled."),
    distribution(
        "trioscope.call.stop.duration",
        tags=_HANDLER,
        unit="seconds",
        description="How long call handlers ran.",
    ),
    counter(
        "trioscope.call.exception.count",
        tags=(*_HANDLER, "kind"),
        description="Calls whose handler crashed the service or was killed.",
    ),
    last_value(
        "trioscope.call.stop.mailbox_depth",
        tags=("name",),
        description="Messages queued when the latest call's handler returned.",
    ),
    counter("trioscope.cast.stop.count", tags=_HANDLER, description="Casts handled."),
    distribution(
        "trioscope.cast.stop.duration",
        tags=_HANDLER,
        unit="seconds",
        description="How long cast handlers ran.",
    ),
    counter(
        "trioscope.cast.exception.count",
        tags=(*_HANDLER, "kind"),
        description="Casts whose handler crashed the service or was killed.",
    ),
    counter(
        "trioscope.child.start.count",
        tags=("supervisor", "child"),
        description="Supervised children started.",
    ),
    counter(
        "trioscope.child.exit.count",
        tags=("supervisor", "child"),
        description="Supervised children that ended by themselves.",
    ),
    counter(
        "trioscope.child.restart.count",
        tags=("supervisor", "child"),
        description="Restarts of supervised children.",
    ),
    distribution(
        "trioscope.child.backoff.delay",
        tags=("supervisor", "child"),
        unit="seconds",
        description="Backoff delays before restarts.",
    ),
    counter(
        "trioscope.supervisor.give_up.count",
        tags=("supervisor",),
        description="Supervisors that gave up (restart intensity exceeded).",
    ),
    counter(
        "trioscope.supervisor.auto_shutdown.count",
        tags=("supervisor",),
        description="Supervisors stopped by auto_shutdown.",
    ),
    counter(
        "trioscope.telemetry.handler_failure.count",
        tags=("handler_id",),
        description="Telemetry handlers that raised and were detached.",
    ),
    counter("trioscope.config.update.count", tags=("path",), description="Config updates applied."),
    counter("trioscope.config.reset.count", description="Config resets applied."),
    sum("trioscope.events.store.count", description="Events stored."),
    sum("trioscope.events.prune.count", description="Events pruned."),
    sum("trioscope.events.reject.count", description="Events rejected."),
    sum(
        "trioscope.events.overflow.count",
        description="Events refused by a full store_nowait buffer.",
    ),
    counter(
        "trioscope.subscription.cut_off.count",
        tags=("what",),
        description="Subscribers cut off for being too slow.",
    ),
)
"""The metrics `telemetry_spec` aggregates unless given others."""


# -- the sketch ---------------------------------------------------------------------

_GAMMA: Final = (1 + SKETCH_ALPHA) / (1 - SKETCH_ALPHA)
_LOG_GAMMA: Final = math.log(_GAMMA)
_INV_LOG_GAMMA: Final = 1 / _LOG_GAMMA
_MAX_KEY: Final = math.floor(math.log(sys.float_info.max) / _LOG_GAMMA) - 1


def _bucket_value(key: int) -> float:
    """The estimate for bucket *key*, ``(gamma**(key-1), gamma**key]``: within alpha of it all."""
    if key > _MAX_KEY:
        return math.inf
    return 2 * math.exp(key * _LOG_GAMMA) / (_GAMMA + 1)


def _collapse(buckets: dict[int, int]) -> None:
    """Fold the buckets nearest zero into the lowest one kept, down to the bound.

    One sort for any surplus (a merge of wide sketches may be far over it).
    """
    surplus = len(buckets) - SKETCH_MAX_BUCKETS
    if surplus <= 0:
        return
    keys = sorted(buckets)
    folded = 0
    for key in keys[:surplus]:
        folded += buckets.pop(key)
    buckets[keys[surplus]] += folded


def _slot_of(time_s: float, width: float) -> int:
    """The sub-window of *time_s* (finite: Trio's clock), for a width of *width* seconds."""
    try:
        return math.floor(time_s / width)
    except (OverflowError, ValueError):  # a width so small the quotient is not finite
        return 0


@final
class LogSketch:
    """A DDSketch-style quantile sketch (see the module docstring): count, sum, min,
    max exactly; quantiles within relative error `SKETCH_ALPHA`; mergeable."""

    __slots__ = ("count", "max", "min", "neg", "pos", "sum", "zeros")

    def __init__(self) -> None:
        self.count = 0
        self.sum: float = 0
        self.min = math.inf
        self.max = -math.inf
        self.pos: dict[int, int] = {}  # key -> count, values in (gamma**(key-1), gamma**key]
        self.neg: dict[int, int] = {}  # the same for -value
        self.zeros = 0

    def __repr__(self) -> str:
        return f"<LogSketch count={self.count} buckets={len(self.pos) + len(self.neg)}>"

    def add(self, value: float) -> None:
        """Add one finite value."""
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value > 0:
            key = math.ceil(math.log(value) * _INV_LOG_GAMMA)
            pos = self.pos
            if key in pos:
                pos[key] += 1
            else:
                pos[key] = 1
                if len(pos) > SKETCH_MAX_BUCKETS:
                    _collapse(pos)
        elif value < 0:
            key = math.ceil(math.log(-value) * _INV_LOG_GAMMA)
            neg = self.neg
            if key in neg:
                neg[key] += 1
            else:
                neg[key] = 1
                if len(neg) > SKETCH_MAX_BUCKETS:
                    _collapse(neg)
        else:
            self.zeros += 1

    def add_many(self, values: list[float]) -> None:
        """Add finite values: the same as `add` for each, in C-level loops when all are
        positive (the sum may round differently from adding them one at a time)."""
        if not values:
            return
        low = min(values)
        if low <= 0:
            for value in values:
                self.add(value)
            return
        self.count += len(values)
        self.sum += _add_up(values)
        if low < self.min:
            self.min = low
        high = max(values)
        if high > self.max:
            self.max = high
        pos = self.pos
        keys = map(math.ceil, map(_INV_LOG_GAMMA.__mul__, map(math.log, values)))
        for key, count in Counter(keys).items():
            pos[key] = pos.get(key, 0) + count
        _collapse(pos)

    def merge(self, other: LogSketch) -> None:
        """Add everything *other* holds to this sketch."""
        if not other.count:
            return
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.zeros += other.zeros
        for mine, theirs in ((self.pos, other.pos), (self.neg, other.neg)):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count
            _collapse(mine)

    def quantile(self, q: float) -> float | None:
        """The value of rank ``floor(q * (count - 1))`` of the sorted values, within
        relative error `SKETCH_ALPHA` (clamped to the exact min and max); ``None`` if empty.

        Raises:
            ValueError: *q* is not within [0, 1].
        """
        if not 0 <= q <= 1:
            raise ValueError(f"q must be within [0, 1], got {q!r}")
        if not self.count:
            return None
        rank = math.floor(q * (self.count - 1))
        estimate: float | None = None
        negatives = self.count - self.zeros - _total(self.pos)
        if rank < negatives:
            for key in sorted(self.neg, reverse=True):  # the most negative first
                rank -= self.neg[key]
                if rank < 0:
                    estimate = -_bucket_value(key)
                    break
        elif rank < negatives + self.zeros:
            estimate = 0.0
        else:
            rank -= negatives + self.zeros
            for key in sorted(self.pos):
                rank -= self.pos[key]
                if rank < 0:
                    estimate = _bucket_value(key)
                    break
        assert estimate is not None
        return min(max(estimate, self.min), self.max)


def _total(buckets: dict[int, int]) -> int:
    total = 0
    for count in buckets.values():
        total += count
    return total


# -- aggregation --------------------------------------------------------------------

_INDEX_BOUND: Final = 4 * MAX_SERIES
"""Raw tag values remembered per metric (several may name one series: ``1`` and ``"1"``)."""


def _number(value: object) -> bool:
    """A finite int or float, not a bool (the slow path of the aggregators' test)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value: object) -> float | None:
    """*value* as a plain ``int`` or ``float`` if it is a finite number (not a bool), else
    ``None``: a subclass (numpy's float64, say) would otherwise reach the snapshot, which
    must be plain data, and the Prometheus text through its own ``repr``."""
    if not _number(value):
        return None
    return float(value) if isinstance(value, float) else int(value)  # type: ignore[call-overload]


def _indexable(raw: object) -> bool:
    """Whether tag values *raw* may key the index: ``str`` and ``None`` (or a tuple of them)."""
    kind = type(raw)
    if kind is str or raw is None:
        return True
    if kind is tuple:
        return all(type(v) is str or v is None for v in cast(tuple[object, ...], raw))
    return False


def _labels_of(tags: tuple[str, ...], raw: object) -> tuple[str, ...]:
    """The series' tag values (``str`` of each) from what `_TagReader` read."""
    if len(tags) == 1:
        return (str(raw),)
    return tuple(str(value) for value in cast(tuple[object, ...], raw))


@final
class _TagReader:
    """Reads the raw tag values of an event, once for every metric of it with these tags.

    The raw values (a tuple; a single value for one tag) are keys of each
    aggregate's index; ``str`` is applied only when a new one opens a series.
    """

    __slots__ = ("aggregates", "getter", "tags")

    def __init__(self, tags: tuple[str, ...], aggregates: tuple[_Aggregate, ...]) -> None:
        self.tags = tags
        self.aggregates = aggregates
        self.getter: Callable[[Metadata], object] | None = (
            operator.itemgetter(*tags) if tags else None
        )

    def read(self, metadata: Metadata) -> object:
        getter = self.getter
        if getter is None:
            return ()
        try:
            return getter(metadata)
        except KeyError:  # a missing tag reads as ""
            get = metadata.get
            values = tuple([get(tag, "") for tag in self.tags])
            return values[0] if len(values) == 1 else values


class _Aggregate:
    """One metric's series. `update` runs on the aggregator's hot path: it finds the
    series by the raw tag values (the index), and stringifies them only for a new one."""

    __slots__ = ("_failed", "index", "measurement", "metric", "series", "series_dropped", "skipped")

    def __init__(self, metric: Metric) -> None:
        self.metric = metric
        self.measurement = metric.measurement
        self.series: dict[tuple[str, ...], Any] = {}  # tag values -> the series' state
        self.index: dict[object, Any] = {}  # raw tag values -> the same state
        self.series_dropped = 0
        self.skipped = 0
        self._failed = False

    def new_state(self) -> Any:
        raise NotImplementedError

    def state_for(self, raw: object) -> Any:
        """The state of the series *raw* names, opened if needed; ``None`` past the bound."""
        labels = _labels_of(self.metric.tags, raw)
        state = self.series.get(labels)
        if state is None:
            if len(self.series) >= MAX_SERIES:
                return None
            state = self.series[labels] = self.new_state()
        # Only values equal exactly when their str is (1 == True == 1.0 would
        # share an entry while naming three series): others by their str every time.
        if len(self.index) < _INDEX_BOUND and _indexable(raw):
            self.index[raw] = state
        return state

    def miss(self, raw: object) -> Any:
        """The slow path of the index: a new raw value, or an unhashable one (a list)."""
        state = self.state_for(raw)
        if state is None:
            self.series_dropped += 1
        return state

    def update(self, measurements: Measurements, raw: object, slot: int) -> None:
        raise NotImplementedError

    def failed(self, exc: Exception) -> None:
        """An update raised (a metadata value whose ``str`` raised, say): skipped, logged once."""
        self.skipped += 1
        if not self._failed:
            self._failed = True
            _log.warning(
                "metric %s skipped an event it could not aggregate (logged once per metric)",
                self.metric.name,
                exc_info=exc,
            )


@final
class _Counter(_Aggregate):
    """State: ``[count]``."""

    __slots__ = ()

    def new_state(self) -> list[int]:
        return [0]

    def update(self, measurements: Measurements, raw: object, slot: int) -> None:
        try:
            state = self.index[raw]
        except (KeyError, TypeError):
            state = self.miss(raw)
            if state is None:
                return
        state[0] += 1


class _Measured(_Aggregate):
    """An aggregate of a measurement's values: `update` checks the value (a finite
    int or float, kept plain) and finds the series; `apply` is the kind's own step."""

    __slots__ = ()

    def update(self, measurements: Measurements, raw: object, slot: int) -> None:
        value: object = measurements.get(self.measurement)
        if type(value) is float:
            if value - value != 0:  # inf or NaN
                self.skipped += 1
                return
        elif type(value) is not int:
            value = _plain(value)  # a subclass is kept as a plain int or float
            if value is None:
                self.skipped += 1
                return
        try:
            state = self.index[raw]
        except (KeyError, TypeError):
            state = self.miss(raw)
            if state is None:
                return
        self.apply(state, value, slot)

    def apply(self, state: Any, value: float, slot: int) -> None:
        raise NotImplementedError


@final
class _Sum(_Measured):
    """State: ``[total]``."""

    __slots__ = ()

    def new_state(self) -> list[float]:
        return [0]

    def apply(self, state: Any, value: float, slot: int) -> None:
        state[0] += value


@final
class _LastValue(_Measured):
    """State: ``[value]``."""

    __slots__ = ()

    def new_state(self) -> list[float]:
        return [0]

    def apply(self, state: Any, value: float, slot: int) -> None:
        state[0] = value


@final
class _DistributionSeries:
    """Cumulative count and sum, and the window's ring of sub-window sketches.

    Values of one sub-window are collected in a list and added to its sketch
    together (`LogSketch.add_many`: C-level loops) when the sub-window changes,
    `PENDING_MAX` are waiting, or the series is read: a fifth of the cost of
    adding them one by one.
    """

    __slots__ = ("count", "pending", "ring", "slot", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.sum: float = 0
        self.ring: dict[int, LogSketch] = {}  # sub-window index -> its sketch
        self.pending: list[float] = []  # values of sub-window `slot` not in its sketch yet
        self.slot = 0

    def add(self, value: float, slot: int) -> None:
        if slot != self.slot:
            self.flush()
            self.slot = slot
        pending = self.pending
        pending.append(value)
        if len(pending) >= PENDING_MAX:
            self.flush()

    def flush(self) -> None:
        """Add the pending values to their sub-window's sketch (and the totals)."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        self.count += len(pending)
        self.sum += _add_up(pending)
        ring, slot = self.ring, self.slot
        sketch = ring.get(slot)
        if sketch is None:
            sketch = ring[slot] = LogSketch()
            if len(ring) > SUBWINDOWS:
                self.expire(max(ring))
        sketch.add_many(pending)

    def expire(self, slot: int) -> None:
        """Forget the sub-windows that left the window read at sub-window *slot*."""
        oldest = slot - SUBWINDOWS
        for key in [key for key in self.ring if key <= oldest]:
            del self.ring[key]

    def window(self, slot: int) -> LogSketch:
        """The window read at sub-window *slot*: its sub-windows merged."""
        self.flush()
        self.expire(slot)
        merged = LogSketch()
        for key, sketch in self.ring.items():
            if key <= slot:
                merged.merge(sketch)
        return merged

    def rekey(self, old_width: float, new_width: float) -> None:
        """Re-key the ring from sub-windows of *old_width* seconds to *new_width*."""
        self.flush()
        self.slot = 0
        ring: dict[int, LogSketch] = {}
        for key in sorted(self.ring):
            # The last new sub-window the old one overlaps: an event keeps (at
            # least) the stay it had, never leaves the window early.
            end = (key + 1) * old_width / new_width  # where it ends, in new sub-windows
            new = math.ceil(end - 1e-9 * max(1.0, abs(end))) - 1
            if new in ring:
                ring[new].merge(self.ring[key])
            else:
                ring[new] = self.ring[key]
        self.ring = ring


@final
class _Distribution(_Measured):
    """State: a `_DistributionSeries`."""

    __slots__ = ()

    def new_state(self) -> _DistributionSeries:
        return _DistributionSeries()

    def apply(self, state: Any, value: float, slot: int) -> None:
        state.add(value, slot)


_AGGREGATES: Final[Mapping[str, type[_Aggregate]]] = {
    "counter": _Counter,
    "sum": _Sum,
    "last_value": _LastValue,
    "distribution": _Distribution,
}


def _readers(aggregates: Iterable[_Aggregate]) -> dict[EventName, tuple[_TagReader, ...]]:
    """For each event: one reader per distinct tag tuple, with its aggregates."""
    grouped: dict[EventName, dict[tuple[str, ...], list[_Aggregate]]] = {}
    for aggregate in aggregates:
        metric = aggregate.metric
        by_tags = grouped.setdefault(metric.event_name, {})
        by_tags.setdefault(metric.tags, []).append(aggregate)
    return {
        name: tuple(_TagReader(tags, tuple(aggs)) for tags, aggs in by_tags.items())
        for name, by_tags in grouped.items()
    }


# -- snapshots ------------------------------------------------------------------------


@attrs.frozen
class DistributionSummary:
    """A distribution series: cumulative count and sum, and its window."""

    count: int
    """Values aggregated since the telemetry child started."""
    sum: float
    """Their sum."""
    window_count: int
    """Values in the window."""
    window_sum: float
    """Their sum."""
    min: float | None
    """The least value in the window (exact), ``None`` if it is empty."""
    max: float | None
    """The greatest value in the window (exact), ``None`` if it is empty."""
    p50: float | None
    """The median of the window (within `SKETCH_ALPHA`; see `LogSketch.quantile`)."""
    p95: float | None
    """The 95th percentile of the window."""
    p99: float | None
    """The 99th percentile of the window."""


@attrs.frozen
class SeriesSnapshot:
    """One series of a metric: its tag values and aggregate."""

    tags: Mapping[str, str]
    """Tag -> value (``str`` of the metadata value; ``""`` when it was missing)."""
    value: float | None
    """A counter's count, a sum's total, a last value; ``None`` for a distribution."""
    summary: DistributionSummary | None = None
    """A distribution's aggregate; ``None`` for the other kinds."""


@attrs.frozen
class MetricSnapshot:
    """One metric: its definition and its series, in tag order."""

    name: str
    """The dotted name."""
    kind: MetricKind
    """``"counter"``, ``"sum"``, ``"last_value"`` or ``"distribution"``."""
    event_name: tuple[str, ...]
    """The event it aggregates."""
    measurement: str
    """The measurement it aggregates (a counter's is ignored)."""
    tags: tuple[str, ...]
    """Its tag keys."""
    description: str
    """Its description."""
    unit: str
    """Its measurement's unit."""
    series: tuple[SeriesSnapshot, ...]
    """Its series, sorted by tag values."""
    series_dropped: int
    """Events not aggregated because they would have opened a series past `MAX_SERIES`."""
    skipped: int
    """Events whose measurement was missing, not a finite number, or whose tags failed."""

    def get(self, **tags: str) -> SeriesSnapshot | None:
        """The series with exactly these tag values (``get()`` for a metric without tags)."""
        for series in self.series:
            if series.tags == tags:
                return series
        return None


@attrs.frozen
class MetricsSnapshot:
    """Every metric of a TelemetryService at one instant: plain data (`cattrs.unstructure`
    turns it into dicts, lists, strs, ints and floats)."""

    time_s: float
    """When it was taken (Trio's clock, seconds)."""
    window_s: float
    """The distributions' window, seconds."""
    events_total: int
    """Events aggregated since the telemetry child started."""
    dropped_total: int
    """Events dropped because the buffer was full (never aggregated)."""
    buffer_size: int
    """The buffer's bound, events."""
    metrics: tuple[MetricSnapshot, ...]
    """Every metric, in definition order."""

    def metric(self, name: str) -> MetricSnapshot:
        """The metric named *name*.

        Raises:
            KeyError: no metric has that name.
        """
        for metric in self.metrics:
            if metric.name == name:
                return metric
        known = ", ".join(repr(metric.name) for metric in self.metrics) or "none"
        raise KeyError(f"no metric is named {name!r}; the metrics are: {known}")

    def prometheus(self) -> str:
        """This snapshot in the Prometheus text exposition format (see `render_prometheus`)."""
        return render_prometheus(self)


def _summary(series: _DistributionSeries, slot: int) -> DistributionSummary:
    window = series.window(slot)
    p50, p95, p99 = (window.quantile(q) for q in QUANTILES)
    empty = not window.count
    return DistributionSummary(
        count=series.count,
        sum=series.sum,
        window_count=window.count,
        window_sum=window.sum,
        min=None if empty else window.min,
        max=None if empty else window.max,
        p50=p50,
        p95=p95,
        p99=p99,
    )


def _metric_snapshot(aggregate: _Aggregate, slot: int) -> MetricSnapshot:
    metric = aggregate.metric
    tags = metric.tags
    series: list[SeriesSnapshot] = []
    for key in sorted(aggregate.series):
        value = aggregate.series[key]
        named = dict(zip(tags, key, strict=True))
        if isinstance(value, _DistributionSeries):
            series.append(SeriesSnapshot(named, None, _summary(value, slot)))
        else:
            series.append(SeriesSnapshot(named, value[0]))
    return MetricSnapshot(
        name=metric.name,
        kind=metric.kind,
        event_name=metric.event_name,
        measurement=metric.measurement,
        tags=tags,
        description=metric.description,
        unit=metric.unit,
        series=tuple(series),
        series_dropped=aggregate.series_dropped,
        skipped=aggregate.skipped,
    )


# -- Prometheus -------------------------------------------------------------------------

_INVALID_NAME: Final = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL: Final = re.compile(r"[^a-zA-Z0-9_]")


def _sanitize(name: str) -> str:
    """A Prometheus metric name: ``[a-zA-Z_:][a-zA-Z0-9_:]*``."""
    name = _INVALID_NAME.sub("_", name)
    return "_" + name if not name or name[0].isdigit() else name


def _label_name(tag: str) -> str:
    """A Prometheus label name: ``[a-zA-Z_][a-zA-Z0-9_]*``, not starting with ``__``."""
    name = _INVALID_LABEL.sub("_", tag)
    if not name or name[0].isdigit():
        name = "_" + name
    return "tag" + name if name.startswith("__") else name


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{name}="{_escape_label(value)}"' for name, value in pairs)
    return "{" + inner + "}"


def _number_text(value: float | None) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


_PROMETHEUS_TYPE: Final[Mapping[str, str]] = {
    "counter": "counter",
    "sum": "counter",
    "last_value": "gauge",
    "distribution": "summary",
}


_OWN_FAMILIES: Final = tuple(
    f"trioscope_telemetry_{short}_total"
    for short in ("events", "dropped", "series_dropped", "skipped")
)


def render_prometheus(snapshot: MetricsSnapshot) -> str:
    """*snapshot* in the Prometheus text exposition format, version 0.0.4.

    Each metric is a family named `Metric.prometheus_name` with a ``# HELP``
    (its description, else its dotted name) and a ``# TYPE`` line: counters
    and sums are ``counter`` (named ``..._total``), last values ``gauge``,
    distributions ``summary`` (``quantile`` labels 0.5, 0.95 and 0.99 over the
    window, ``NaN`` when it is empty, and the cumulative ``_sum`` and
    ``_count``). Tags become labels (names sanitized to
    ``[a-zA-Z_][a-zA-Z0-9_]*``, values escaped). The service's own counters
    follow: ``trioscope_telemetry_events_total``,
    ``trioscope_telemetry_dropped_total`` (buffer overflow), and per metric
    ``trioscope_telemetry_series_dropped_total`` and
    ``trioscope_telemetry_skipped_total``.
    """
    lines: list[str] = []
    for metric in snapshot.metrics:
        name = Metric(
            metric.kind,
            metric.name,
            metric.event_name,
            metric.measurement,
            metric.tags,
            metric.description,
            metric.unit,
        ).prometheus_name
        lines.append(f"# HELP {name} {_escape_help(metric.description or metric.name)}")
        lines.append(f"# TYPE {name} {_PROMETHEUS_TYPE[metric.kind]}")
        label_names = [_label_name(tag) for tag in metric.tags]
        for series in metric.series:
            pairs = [
                (label, series.tags[tag])
                for label, tag in zip(label_names, metric.tags, strict=True)
            ]
            summary = series.summary
            if summary is None:
                lines.append(f"{name}{_labels(pairs)} {_number_text(series.value)}")
                continue
            for q, value in zip(QUANTILES, (summary.p50, summary.p95, summary.p99), strict=True):
                quantile = [*pairs, ("quantile", str(q))]
                lines.append(f"{name}{_labels(quantile)} {_number_text(value)}")
            lines.append(f"{name}_sum{_labels(pairs)} {_number_text(summary.sum)}")
            lines.append(f"{name}_count{_labels(pairs)} {summary.count}")
    own = (
        ("events", "Events aggregated by the TelemetryService.", snapshot.events_total),
        ("dropped", "Events dropped because its buffer was full.", snapshot.dropped_total),
    )
    for short, text, value in own:
        name = f"trioscope_telemetry_{short}_total"
        lines += [f"# HELP {name} {text}", f"# TYPE {name} counter", f"{name} {value}"]
    per_metric = (
        ("series_dropped", "Events not aggregated: a new series past the bound.", "series_dropped"),
        ("skipped", "Events without a usable measurement.", "skipped"),
    )
    for short, text, field in per_metric:
        name = f"trioscope_telemetry_{short}_total"
        lines += [f"# HELP {name} {text}", f"# TYPE {name} counter"]
        for metric in snapshot.metrics:
            value = getattr(metric, field)
            lines.append(f"{name}{_labels([('metric', metric.name)])} {value}")
    return "\n".join(lines) + "\n"


# -- the home ---------------------------------------------------------------------------

_handler_ids = itertools.count(1)
_HandlerFn: TypeAlias = Callable[[EventName, Measurements, Metadata], None]


class TelemetryHome(Home):
    """What outlives a service incarnation: the handler, the buffer, the aggregates.

    Registered as ``"telemetry.home"``; created anew at every start of the home
    child (`telemetry_spec`'s first), which is when it reads
    ``telemetry.buffer_size`` and ``telemetry.window_s``.
    """

    name = HOME_NAME

    def __init__(self, metrics: Sequence[Metric], settings: TelemetrySettings) -> None:
        self.spec_settings = settings
        """The settings given to `telemetry_spec` (used when no config server runs)."""
        self.settings = settings
        """The settings in force."""
        self.from_config = False
        """Whether the settings came from the scope's config server (then followed)."""
        self.aggregates = [_AGGREGATES[m.kind](m) for m in metrics]
        self.readers = _readers(self.aggregates)
        self.timed = frozenset(
            a.metric.event_name for a in self.aggregates if isinstance(a, _Distribution)
        )  # events with a distribution: their time picks the sub-window
        self.buffer: deque[tuple[EventName, Measurements, Metadata]] = deque()
        """Events executed and not aggregated yet, oldest first."""
        self.events_total = 0
        self.dropped_total = 0
        self.service_starts = 0
        self.handler_id = f"trioscope.foundation.telemetry#{next(_handler_ids)}"
        """The id of the attached handler (unique: never detaching another's)."""
        self.attached = False
        self.started_at = 0.0
        self._width = settings.window_s / SUBWINDOWS
        self._wake = trio.Event()
        self._wake_at = max(1, min(DRAIN_BATCH, settings.buffer_size // 2))

    def __repr__(self) -> str:
        return (
            f"<TelemetryHome metrics={len(self.aggregates)} "
            f"buffered={len(self.buffer)}/{self.settings.buffer_size} "
            f"dropped={self.dropped_total}>"
        )

    async def started(self) -> None:
        """Read the settings, attach the handler in this scope, start the aggregator."""
        from_config = _settings_from_config(self.spec_settings)
        if from_config is not None:
            self.settings, self.from_config = from_config, True
            self._width = from_config.window_s / SUBWINDOWS
            self._wake_at = max(1, min(DRAIN_BATCH, from_config.buffer_size // 2))
        self.started_at = trio.current_time()
        attach(self.handler_id, list(self.readers), self._handler())
        self.attached = True
        self.start_soon(self._aggregate)

    def is_attached(self) -> bool:
        """Whether its handler is attached now (one that raised was detached)."""
        return any(h.handler_id == self.handler_id for h in handlers())

    async def aclose(self) -> None:
        """Detach the handler (nothing is buffered any more)."""
        if self.attached:
            self.attached = False
            detach(self.handler_id)
        await trio.lowlevel.checkpoint()

    def _handler(self) -> _HandlerFn:
        """The attached handler: buffer the event with its Trio time, or count it dropped."""
        buffer = self.buffer
        append = buffer.append
        capacity = self.settings.buffer_size
        wake_at = self._wake_at
        home = self
        token = trio.lowlevel.current_trio_token()

        def handler(event_name: EventName, measurements: Measurements, metadata: Metadata) -> None:
            # Kept, not copied: emitters never change an event's mappings once
            # executed (see the module docstring), and a copy would double its cost.
            n = len(buffer)
            if n < capacity:
                append((event_name, measurements, metadata))
                if n == 0 or n == wake_at:
                    wake = home._wake
                    try:
                        wake.set()
                    except RuntimeError:
                        # Executed in a worker thread (trio.to_thread copies the
                        # scope into it): wake the aggregator from Trio's thread.
                        token.run_sync_soon(wake.set)
            else:
                home.dropped_total += 1

        return handler

    async def _aggregate(self) -> None:
        """Aggregate what the handler buffers (a task of the home).

        Woken by the first event in an empty buffer, it collects for
        `AGGREGATE_DELAY_S`, or until the buffer holds `DRAIN_BATCH` events (or
        half its bound), then drains it all, `DRAIN_BATCH` events between two
        checkpoints. So a busy service costs it one wake-up per delay, not one
        per event; events keep the time they were executed at, so the delay
        changes no aggregate of an event that carries its ``monotonic_time``.
        """
        buffer = self.buffer
        while True:
            if not buffer:
                self._wake = trio.Event()
                await self._wake.wait()
            if len(buffer) < self._wake_at:
                self._wake = trio.Event()
                with trio.move_on_after(AGGREGATE_DELAY_S):
                    await self._wake.wait()
            while buffer:
                self.drain(DRAIN_BATCH)
                await trio.lowlevel.checkpoint()

    def drain(self, limit: int | None = None) -> int:
        """Aggregate the oldest buffered events (all, or at most *limit*); return how many.

        Each goes to the sub-window of its ``monotonic_time`` measurement (a
        float: Trio's clock when it was executed), or else of the time now.
        """
        buffer = self.buffer
        n = len(buffer) if limit is None else min(limit, len(buffer))
        if not n:
            return 0
        width = self._width
        floor = math.floor
        now = trio.current_time()
        now_slot = _slot_of(now, width)
        popleft = buffer.popleft
        readers = self.readers
        timed = self.timed
        none: tuple[_TagReader, ...] = ()
        slot = 0
        for _ in range(n):
            event_name, measurements, metadata = popleft()
            if event_name in timed:
                # Its own time if it is a plain float not after now (a NaN, an
                # infinity or a future time would break the ring): else now.
                try:
                    time_s = measurements.get("monotonic_time")
                    if type(time_s) is float and time_s <= now:
                        slot = floor(time_s / width)
                    else:
                        slot = now_slot
                except Exception:  # measurements that are no mapping; a subnormal width
                    slot = now_slot
            for reader in readers.get(event_name, none):
                # A bad value (whose str or hash raises, say) must not stop the rest.
                try:
                    raw = reader.read(metadata)
                except Exception as exc:
                    for aggregate in reader.aggregates:
                        aggregate.failed(exc)
                    continue
                for aggregate in reader.aggregates:
                    try:
                        aggregate.update(measurements, raw, slot)
                    except Exception as exc:
                        aggregate.failed(exc)
        # Nothing above raises: every event popped was aggregated (or skipped, counted).
        self.events_total += n
        return n

    def set_window(self, window_s: float) -> None:
        """Use a window of *window_s* seconds from now on (sub-windows re-keyed)."""
        old, new = self._width, window_s / SUBWINDOWS
        self.settings = attrs.evolve(self.settings, window_s=window_s)
        if new == old:
            return
        self._width = new
        for aggregate in self.aggregates:
            if isinstance(aggregate, _Distribution):
                for series in aggregate.series.values():
                    series.rekey(old, new)

    def snapshot(self) -> MetricsSnapshot:
        """Aggregate what is buffered, then every metric's state now."""
        self.drain()
        now = trio.current_time()
        slot = _slot_of(now, self._width)
        return MetricsSnapshot(
            time_s=now,
            window_s=self.settings.window_s,
            events_total=self.events_total,
            dropped_total=self.dropped_total,
            buffer_size=self.settings.buffer_size,
            metrics=tuple(_metric_snapshot(a, slot) for a in self.aggregates),
        )


def _settings_from_config(fallback: TelemetrySettings) -> TelemetrySettings | None:
    """The ``telemetry.*`` settings of the scope's config server, or ``None`` if none
    runs (or its schema has none of them); a path its schema lacks keeps *fallback*'s."""
    from . import _config  # not at import time: _config imports this module's event names
    from ._errors import UnknownConfigPathError

    values: dict[str, object] = {}
    found = False
    for field in ("window_s", "buffer_size"):
        try:
            values[field] = _config.get(f"telemetry.{field}")
            found = True
        except UnknownConfigPathError:
            values[field] = getattr(fallback, field)
        except ServiceUnavailableError:
            return None
    if not found:
        return None
    try:
        return TelemetrySettings(**values)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        _log.error("the config's telemetry.* settings cannot be used (%s): using the spec's", exc)
        return None


# -- the service ---------------------------------------------------------------------------


@attrs.frozen
class TelemetryStatus:
    """What `status` reports."""

    uptime_s: float
    """Seconds the current service incarnation has run (Trio's clock)."""
    window_s: float
    """The distributions' window, seconds."""
    buffer_size: int
    """The buffer's bound, events."""
    buffered: int
    """Events waiting for the aggregator."""
    events_total: int
    """Events aggregated since the telemetry child started."""
    dropped_total: int
    """Events dropped because the buffer was full."""
    metrics: int
    """Metrics defined."""
    series: int
    """Series held, all metrics together."""
    attached: bool
    """Whether the handler is attached (false only while the home stops)."""
    restarts: int
    """Times the service restarted since its home started."""


class TelemetryService(Service):
    """Answers for the aggregates of its home: `snapshot`, `prometheus`, `status`.

    Use the module functions; start it with `telemetry_spec`, which starts its
    home first. It follows ``telemetry.window_s`` while a config server runs.
    """

    def __init__(self) -> None:
        self._started = 0.0

    async def init(self) -> None:
        """Find the home of its own scope (started just before it)."""
        home = own_home(
            HOME_NAME,
            TelemetryHome,
            "TelemetryService",
            "trioscope.foundation.telemetry.telemetry_spec()",
        )
        self._home = home
        home.service_starts += 1
        self._started = trio.current_time()
        if home.from_config:
            self.start_soon(self._follow_config)

    async def health(self) -> Mapping[str, object]:
        """How full the buffer is and what was dropped; degraded past 90 % full."""
        home = self._home
        detail: dict[str, object] = {
            "buffered": len(home.buffer),
            "buffer_size": home.settings.buffer_size,
            "dropped_total": home.dropped_total,
        }
        if len(home.buffer) * 10 >= home.settings.buffer_size * 9:
            detail["status"] = "degraded"
        return detail

    async def snapshot(self) -> MetricsSnapshot:
        """Every metric now (what is buffered is aggregated first)."""
        return self._home.snapshot()

    async def prometheus(self) -> str:
        """Every metric now, in the Prometheus text exposition format."""
        return render_prometheus(self._home.snapshot())

    async def status(self) -> TelemetryStatus:
        """Counters of the service and its home."""
        home = self._home
        return TelemetryStatus(
            uptime_s=trio.current_time() - self._started,
            window_s=home.settings.window_s,
            buffer_size=home.settings.buffer_size,
            buffered=len(home.buffer),
            events_total=home.events_total,
            dropped_total=home.dropped_total,
            metrics=len(home.aggregates),
            series=_series_count(home.aggregates),
            attached=home.is_attached(),
            restarts=home.service_starts - 1,
        )

    async def _follow_config(self) -> None:
        """Apply updates of ``telemetry.window_s`` as they come."""
        from . import _config

        await _config.follow("telemetry", self._reload_settings)

    def _reload_settings(self) -> None:
        home = self._home
        new = _settings_from_config(home.spec_settings)
        if new is not None and new.window_s != home.settings.window_s:
            home.set_window(new.window_s)


def _series_count(aggregates: Iterable[_Aggregate]) -> int:
    total = 0
    for aggregate in aggregates:
        total += len(aggregate.series)
    return total


# -- the spec --------------------------------------------------------------------------


def telemetry_spec(
    metrics: Iterable[Metric] | None = None,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    mailbox_size: int = DEFAULT_MAILBOX_SIZE,
    service: type[TelemetryService] | None = None,
    id: str = SERVICE_NAME,
) -> ChildSpec[Supervisor]:
    """A `ChildSpec` running the telemetry home and the `TelemetryService`, `REST_FOR_ONE`.

    Args:
        metrics: What to aggregate (default `DEFAULT_METRICS`).
        window_s: The distributions' window in seconds, unless the scope's
            config server has ``telemetry.window_s`` (then followed at run time).
        buffer_size: Events buffered for the aggregator, unless the config
            server has ``telemetry.buffer_size`` (read at each start of the home).
        mailbox_size: The service's mailbox bound.
        service: A `TelemetryService` subclass to run instead.
        id: The supervisor's child id.

    Raises:
        TypeError: a metric that is not a `Metric`, or *service* not a
            `TelemetryService` subclass.
        ValueError: two metrics with one name or one Prometheus name, or a
            bad *window_s* or *buffer_size*.
    """
    chosen = list(DEFAULT_METRICS if metrics is None else metrics)
    names: set[str] = set()
    # Every sample name the exposition will hold -> who holds it (the service's own first).
    exposed: dict[str, str] = dict.fromkeys(_OWN_FAMILIES, "the TelemetryService's own")
    for metric in chosen:
        if not isinstance(metric, Metric):
            raise TypeError(f"telemetry_spec: metrics must be Metric values, got {metric!r}")
        if metric.name in names:
            raise ValueError(f"telemetry_spec: two metrics are named {metric.name!r}")
        names.add(metric.name)
        family = metric.prometheus_name
        samples = [family]
        if metric.kind == "distribution":
            samples += [f"{family}_sum", f"{family}_count"]
        for sample in samples:
            other = exposed.setdefault(sample, metric.name)
            if other != metric.name:
                raise ValueError(
                    f"telemetry_spec: metrics {other!r} and {metric.name!r} would both expose "
                    f"{sample!r} in Prometheus: rename one"
                )
        labels = [_label_name(tag) for tag in metric.tags]
        if metric.kind == "distribution":
            labels.append("quantile")
        clash = sorted({label for label in labels if labels.count(label) > 1})
        if clash:
            raise ValueError(
                f"telemetry_spec: metric {metric.name!r} has tags {metric.tags!r}, which would "
                f"give it the Prometheus label {clash[0]!r} twice"
                + (" (a summary's quantile label is its own)" if "quantile" in clash else "")
            )
    settings = TelemetrySettings(window_s=window_s, buffer_size=buffer_size)
    cls: object = TelemetryService if service is None else service
    if not (isinstance(cls, type) and issubclass(cls, TelemetryService)):
        raise TypeError(f"telemetry_spec: service must be a TelemetryService subclass, got {cls!r}")
    frozen = tuple(chosen)

    def make_home() -> TelemetryHome:
        return TelemetryHome(frozen, settings)

    return supervisor_spec(
        [
            home_spec(make_home, id=HOME_NAME),
            cls.child_spec(name=SERVICE_NAME, mailbox_size=mailbox_size),
        ],
        id=id,
        strategy=Strategy.REST_FOR_ONE,
    )


# -- client functions (each resolves through the current registry scope) ------------------


async def _call_service(fn: object) -> object:
    """Call handler *fn* of the telemetry service paired with the home visible from here."""
    try:
        home = find_home(HOME_NAME, TelemetryHome)
    except NoRegistryError:
        await trio.lowlevel.checkpoint()  # a waiting call checkpoints on every path
        name = getattr(fn, "__name__", "call")
        raise _no_registry_error(f"trioscope.foundation.telemetry.{name}()") from None
    if home is None:
        await trio.lowlevel.checkpoint()  # a waiting call checkpoints on every path
        raise ServiceUnavailableError(
            repr(SERVICE_NAME),
            f"no telemetry service runs in this registry scope (nothing is registered as "
            f"{HOME_NAME!r}); start trioscope.foundation.telemetry.telemetry_spec() under "
            "a supervisor in this scope",
        )
    # The service of the home's own scope: while it restarts, a namesake in an
    # enclosing scope must not answer for it.
    return await _call(
        SERVICE_NAME,
        TelemetryService,
        DEFAULT_CALL_TIMEOUT_S,
        fn,  # type: ignore[arg-type]
        (),
        {},
        here=home.registry,
    )


async def snapshot() -> MetricsSnapshot:
    """Every metric of this scope's TelemetryService now (a call: rides through a restart).

    Raises:
        trioscope.ServiceUnavailableError: no telemetry runs in this scope, or
            its service took no call in time.
        trioscope.NoRegistryError: outside every registry scope.
    """
    return cast(MetricsSnapshot, await _call_service(TelemetryService.snapshot))


async def prometheus() -> str:
    """Every metric now, in the Prometheus text exposition format 0.0.4 (see `render_prometheus`).

    Raises:
        trioscope.ServiceUnavailableError, trioscope.NoRegistryError: as `snapshot`.
    """
    return cast(str, await _call_service(TelemetryService.prometheus))


async def status() -> TelemetryStatus:
    """The service's `TelemetryStatus`.

    Raises:
        trioscope.ServiceUnavailableError, trioscope.NoRegistryError: as `snapshot`.
    """
    return cast(TelemetryStatus, await _call_service(TelemetryService.status))
