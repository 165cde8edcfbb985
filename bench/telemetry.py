"""Telemetry's benchmarks (issue 10): `execute`, and what instrumentation costs calls and restarts.

Every benchmark follows `common`'s shapes: a *rate* benchmark is
``async def f(n) -> float`` (or a plain ``def`` for the floor), elapsed
seconds for *n* operations with the setup outside the clock; a *latency*
benchmark returns one duration per sample.

What is attached, in every scenario (``mode``):

- ``none``: no handler attached anywhere in the process (the global counter
  is zero: every emit point is one integer test);
- ``elsewhere``: a no-op handler attached to the same events in an unrelated
  sibling registry scope only. The global counter is non-zero, so every emit
  point looks the scope's handler table up (cached per registry) and finds
  nothing: the cost a test suite with a handler in another test pays;
- ``handler``: one no-op handler attached in the scope (for calls: to the
  call start and stop events);
- ``service``: the foundation's TelemetryService running in the scope
  (``trioscope.foundation.telemetry.telemetry_spec()``, its default metrics),
  so every event is copied into its buffer and aggregated by its home's task
  in the same Trio loop (counted: it runs on the same thread).

The ``service`` mode needs ``trioscope.foundation.telemetry``; `service_missing`
says why it is skipped when that module is not there.

The floor for `execute` is a plain Python call of a function with the
handler's signature, ``noop(event, measurements, metadata)``, with the same
prebuilt arguments, in the same kind of loop: what calling the one handler
costs without any dispatch. Calls and restarts reuse the request/reply and
restart floors of ``raw.py`` and the benchmarks of ``scope.py`` unchanged,
each run inside an outer registry scope holding what *mode* attaches (the
scope that ``scope.py`` opens is nested in it, so the outer handlers see its
events), the same for every mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeAlias

import trio
import trio.lowlevel
import trio.testing
from common import perf

import trioscope
from trioscope import telemetry as tm

Mode: TypeAlias = Literal["none", "elsewhere", "handler", "service"]
MODES: tuple[Mode, ...] = ("none", "elsewhere", "handler", "service")

# The event executed by the `execute` benchmarks: one the TelemetryService's
# default metrics aggregate (a counter and a distribution), with the
# measurements and metadata the core gives it.
EVENT: tm.EventName = ("trioscope", "call", "stop")
MEASUREMENTS: dict[str, float] = {"duration": 1.5e-05, "monotonic_time": 12.5}
METADATA: dict[str, object] = {
    "service": "Echo#1",
    "name": "echo",
    "handler": "echo",
    "correlation_id": None,
    "rejected": None,
}
CALL_EVENTS: list[tm.EventName] = [
    ("trioscope", "call", "start"),
    ("trioscope", "call", "stop"),
    ("trioscope", "call", "exception"),
]
CHILD_EVENTS: list[tm.EventName] = [
    ("trioscope", "child", "start"),
    ("trioscope", "child", "exit"),
    ("trioscope", "child", "restart"),
]
# Events the service-mode `execute` benchmark emits before yielding once, so
# that its aggregator drains them: below the service's buffer (10,000 by
# default), so that none is dropped.
BURST = 1_000

# Events the TelemetryService dropped (buffer full) in the service scenarios of
# this process: reported beside the figures; a non-zero count would mean the
# figure measured the cheaper drop path.
dropped: list[int] = []


def noop(event_name: tm.EventName, measurements: tm.Measurements, metadata: tm.Metadata) -> None:
    """The trivial handler (and the floor's function): does nothing."""


def service_missing() -> str | None:
    """Why the TelemetryService rows are skipped, or ``None`` when they can run."""
    try:
        import trioscope.foundation.telemetry  # noqa: F401
    except ImportError as exc:
        return f"trioscope.foundation.telemetry unavailable ({type(exc).__name__}: {exc})"
    return None


def _telemetry_spec() -> trioscope.ChildSpec[Any]:
    from trioscope.foundation import telemetry as ft

    return ft.telemetry_spec()


async def _sibling_with_handler(
    events: list[tm.EventName], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """A sibling registry scope with a no-op handler attached, open until cancelled."""
    async with trioscope.open_registry():
        with tm.attached("bench-elsewhere", events, noop):
            task_status.started()
            await trio.sleep_forever()


async def _record_dropped() -> None:
    from trioscope.foundation import telemetry as ft

    dropped.append((await ft.status()).dropped_total)


@contextlib.asynccontextmanager
async def attached_as(mode: Mode, events: list[tm.EventName]) -> AsyncIterator[None]:
    """An outer registry scope with what *mode* attaches to *events*; the block runs in it."""
    async with trioscope.open_registry(), trio.open_nursery() as nursery:
        if mode == "elsewhere":
            await nursery.start(_sibling_with_handler, events)
        elif mode == "service":
            await nursery.start(_telemetry_spec().start)
        here = tm.attached("bench-here", events, noop) if mode == "handler" else None
        with here or contextlib.nullcontext():
            await trio.testing.wait_all_tasks_blocked()
            yield
        if mode == "service":
            await trio.testing.wait_all_tasks_blocked()
            await _record_dropped()
        nursery.cancel_scope.cancel()


# -- execute --------------------------------------------------------------------


def floor_call(n: int) -> float:
    """The floor: *n* plain calls ``noop(EVENT, MEASUREMENTS, METADATA)``."""
    fn, event, measurements, metadata = noop, EVENT, MEASUREMENTS, METADATA
    t0 = perf()
    for _ in range(n):
        fn(event, measurements, metadata)
    return perf() - t0


def _execute_loop(n: int) -> float:
    execute, event, measurements, metadata = tm.execute, EVENT, MEASUREMENTS, METADATA
    t0 = perf()
    for _ in range(n):
        execute(event, measurements, metadata)
    return perf() - t0


async def execute_in(mode: Mode, n: int) -> float:
    """*n* ``telemetry.execute(EVENT, ...)`` in a registry scope with what *mode* attaches.

    For ``service``, see `execute_service`.
    """
    if mode == "service":
        return await execute_service(n, end_to_end=False)
    async with attached_as(mode, [EVENT]), trioscope.open_registry():
        return _execute_loop(n)


async def execute_service(n: int, *, end_to_end: bool) -> float:
    """*n* executes with the TelemetryService attached, in bursts of `BURST`.

    After each burst the emitter yields once (a checkpoint), so that the
    service's aggregator drains the buffer and nothing is dropped. With
    *end_to_end*, the clock runs over everything, the aggregation of the last
    event included (`trio.testing.wait_all_tasks_blocked` at the end); without,
    it runs over the bursts only: what the emitter pays.
    """
    execute, event, measurements, metadata = tm.execute, EVENT, MEASUREMENTS, METADATA
    checkpoint = trio.lowlevel.checkpoint
    bursts, rest = divmod(n, BURST)
    sizes = [BURST] * bursts + ([rest] if rest else [])
    elapsed = 0.0
    async with attached_as("service", [EVENT]), trioscope.open_registry():
        t_all = perf()
        for size in sizes:
            t0 = perf()
            for _ in range(size):
                execute(event, measurements, metadata)
            elapsed += perf() - t0
            await checkpoint()
        if end_to_end:
            await trio.testing.wait_all_tasks_blocked()
            elapsed = perf() - t_all
    return elapsed


# -- calls ------------------------------------------------------------------------


async def calls_in(mode: Mode, bench: Callable[[int], Awaitable[float]], n: int) -> float:
    """A call benchmark of ``scope.py`` (``scope.call``, ``scope.call_by_name``) under *mode*."""
    async with attached_as(mode, CALL_EVENTS[:2] if mode == "handler" else CALL_EVENTS):
        return await bench(n)


# -- restarts ---------------------------------------------------------------------


async def restarts_in(
    mode: Mode,
    bench: Callable[[int, int], Awaitable[tuple[list[float], int]]],
    samples: int,
    extra_names: int,
) -> tuple[list[float], int]:
    """A restart benchmark of ``scope.py`` (``scope.restart_latency``) under *mode*."""
    async with attached_as(mode, CHILD_EVENTS):
        return await bench(samples, extra_names)
