"""Shared helpers for the benchmarks: timing, statistics, memory, logging.

Every benchmark function in ``raw.py``, ``scope.py`` and ``otp.py`` follows one
of three shapes, so that ``run.py`` can treat them alike:

- a *rate* benchmark: ``async def f(n) -> float`` does its setup, then times
  ``n`` operations with `time.perf_counter` and returns the elapsed seconds
  (setup and teardown are outside the timed region);
- a *memory* benchmark: ``async def f(n) -> float`` returns bytes per item,
  measured with `tracemalloc` (see `traced`);
- a *latency* benchmark: ``async def f(samples, extra_names) -> list[float]``
  returns one duration in seconds per sample.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import statistics
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

perf = time.perf_counter


def silence_logging() -> None:
    """Configure both libraries to discard their log records (as a quiet production app would).

    The records are still created (the libraries pay for building them), but
    nothing is formatted or written. trioscope uses stdlib `logging`; without
    this, Python's last-resort handler would print every crash's traceback to
    stderr and the restart benchmarks would measure terminal output.
    """
    for name in ("trioscope",):
        logger = logging.getLogger(name)
        logger.handlers[:] = [logging.NullHandler()]
        logger.propagate = False
    try:  # triotp logs through logbook; triotp.node.run pushes a NullHandler the same way
        import logbook  # type: ignore[import-untyped]
    except ImportError:
        return
    logbook.NullHandler().push_application()


def emit_and_exit(result: dict[str, float]) -> None:
    """For a scenario run in its own interpreter: print the result and exit at once.

    Used by memory runs, which have nothing left to measure after their reading.
    """
    print(json.dumps(result), flush=True)
    os._exit(0)


def young_collections() -> int:
    """How many times the cyclic GC has collected the youngest generation so far."""
    return int(gc.get_stats()[0]["collections"])


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * p / 100.0
    lo = math.floor(k)
    hi = math.ceil(k)
    if lo == hi:
        return ordered[lo]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Traced:
    """Bytes allocated (and still alive) since `traced` started; see `traced`."""

    def __init__(self) -> None:
        self.baseline = 0

    def current(self) -> int:
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - self.baseline


@contextmanager
def traced() -> Iterator[Traced]:
    """Trace Python allocations from here on; ``t.current()`` is the live growth in bytes.

    `gc.collect` runs before the baseline and before every reading, so only
    live objects count. tracemalloc slows allocation a lot, so a memory
    measurement is always a separate run from any timing measurement.
    """
    gc.collect()
    tracemalloc.start()
    t = Traced()
    try:
        t.baseline = tracemalloc.get_traced_memory()[0]
        yield t
    finally:
        tracemalloc.stop()


def fmt_us(seconds: float) -> str:
    us = seconds * 1e6
    if us >= 100:
        return f"{us:.0f} µs"
    return f"{us:.1f} µs"


def fmt_rate(per_second: float) -> str:
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f}M/s"
    return f"{per_second / 1e3:.1f}k/s"


def fmt_bytes(b: float) -> str:
    if abs(b) >= 10 * 1024:
        return f"{b / 1024:.1f} KiB"
    return f"{b:,.0f} B"


def fmt_seconds(s: float) -> str:
    if s >= 10:
        return f"{s:.1f} s"
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1e3:.0f} ms"
