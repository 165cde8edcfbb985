"""trioscope benchmarks, through the public API only."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import trio
import trio.testing
from common import emit_and_exit, perf, traced, young_collections

import trioscope


class Echo(trioscope.Service):
    """Answers calls and counts casts."""

    def __init__(self) -> None:
        self.count = 0
        self.target = -1
        self.done: trio.Event | None = None

    async def echo(self, value: int) -> int:
        return value

    async def arm(self, target: int, done: trio.Event) -> None:
        self.count = 0
        self.target = target
        self.done = done

    async def bump(self) -> None:
        self.count += 1
        if self.count == self.target:
            assert self.done is not None
            self.done.set()


class Idle(trioscope.Service):
    """A service that only waits for mail (the smallest useful service)."""

    async def ping(self) -> None:
        return None


async def call(n: int) -> float:
    """``await ref.call(Echo.echo, i)``, one caller, *n* round trips."""
    async with trioscope.open_registry(), trio.open_nursery() as nursery:
        ref = await nursery.start(Echo.child_spec(name="echo").start)
        await trio.testing.wait_all_tasks_blocked()
        t0 = perf()
        for i in range(n):
            await ref.call(Echo.echo, i)
        elapsed = perf() - t0
        nursery.cancel_scope.cancel()
    return elapsed


async def call_by_name(n: int) -> float:
    """``await trioscope.call("echo", Echo.echo, i)``: the name is resolved on every call."""
    async with trioscope.open_registry(), trio.open_nursery() as nursery:
        await nursery.start(Echo.child_spec(name="echo").start)
        await trio.testing.wait_all_tasks_blocked()
        t0 = perf()
        for i in range(n):
            await trioscope.call("echo", Echo.echo, i)
        elapsed = perf() - t0
        nursery.cancel_scope.cancel()
    return elapsed


async def cast(n: int) -> float:
    """``await ref.cast(Echo.bump)`` *n* times; the clock stops when the service has run all."""
    async with trioscope.open_registry(), trio.open_nursery() as nursery:
        ref = await nursery.start(Echo.child_spec(name="echo").start)
        done = trio.Event()
        await ref.call(Echo.arm, n, done)
        await trio.testing.wait_all_tasks_blocked()
        t0 = perf()
        for _ in range(n):
            await ref.cast(Echo.bump)
        await done.wait()
        elapsed = perf() - t0
        nursery.cancel_scope.cancel()
    return elapsed


async def lookups(n: int, names: list[str], how: str) -> float:
    """*n* lookups cycling over *names*, all registered in one registry.

    Every name is registered to the same live service's ref, so that
    ``whereis`` (which checks it got a service) succeeds for each.
    """
    async with trioscope.open_registry() as reg:
        with contextlib.ExitStack() as stack:
            async with trio.open_nursery() as nursery:
                ref = await nursery.start(Idle.child_spec().start)
                for name in names:
                    stack.enter_context(reg.registered(name, ref))
                get = trioscope.whereis if how == "whereis" else reg.lookup
                rounds, rest = divmod(n, len(names))
                t0 = perf()
                for _ in range(rounds):
                    for name in names:
                        get(name)
                for name in names[:rest]:
                    get(name)
                elapsed = perf() - t0
                nursery.cancel_scope.cancel()
    return elapsed


def child_specs(n: int) -> float:
    """Build *n* specs the way a dynamic supervisor's caller does: ``Idle.child_spec(name=...)``."""
    t0 = perf()
    for i in range(n):
        Idle.child_spec(name=f"worker-{i}")
    return perf() - t0


async def idle_service_memory(n: int) -> float:
    """Bytes per idle, unnamed service started with ``nursery.start(spec.start)``."""
    spec = Idle.child_spec()  # one spec starts any number of unnamed services
    async with trio.open_nursery() as nursery:
        with traced() as mem:
            for _ in range(n):
                await nursery.start(spec.start)
            await trio.testing.wait_all_tasks_blocked()
            per = mem.current() / n
        nursery.cancel_scope.cancel()
    return per


# -- dynamic supervisor scale ------------------------------------------------


async def dynamic_scale(n: int, memory: bool) -> dict[str, float]:
    """Start *n* named idle services with ``await sup.start_child(spec)``, then leave the block.

    The spec is built inline, as a caller would (``Idle.child_spec(name=...)``),
    so its cost and the memory the supervisor keeps for it are counted.
    With *memory*, reports live bytes per child (tracemalloc; no timings) and
    exits the process at once (teardown is timed in the timing runs).
    """
    result: dict[str, float] = {}
    async with trioscope.open_registry():
        with traced() if memory else contextlib.nullcontext() as mem:
            t0 = perf()
            async with trioscope.open_dynamic_supervisor() as sup:
                for i in range(n):
                    await sup.start_child(Idle.child_spec(name=f"worker-{i}"))
                t1 = perf()
                await trio.testing.wait_all_tasks_blocked()
                assert sup.count_children().active == n
                if mem is not None:
                    emit_and_exit({"memory": mem.current() / n})
                t2 = perf()
            t3 = perf()
    if not memory:
        result["start"] = (t1 - t0) / n
        result["teardown"] = (t3 - t2) / n
    return result


# -- restart latency -----------------------------------------------------------


class _Round:
    def __init__(self) -> None:
        self.ready = trio.Event()


_round = _Round()


class Victim(trioscope.Service):
    """Crashes on ``crash``; its ``init`` tells the benchmark a new incarnation is up."""

    async def init(self) -> None:
        _round.ready.set()

    async def crash(self) -> None:
        raise RuntimeError("boom (benchmark crash)")


async def restart_latency(samples: int, extra_names: int) -> tuple[list[float], int]:
    """ONE_FOR_ONE: from casting a crashing message to the new incarnation being ready.

    The new incarnation's ``init`` sets an event the measuring task waits on;
    the measuring task can only run once that incarnation has called
    ``task_status.started`` and parked on its mailbox, so the clock stops when
    it is serving. *extra_names* other names are registered in the same registry.

    Logging is as the caller configured it: ``run.py`` sends trioscope's
    records to a `logging.NullHandler` (`common.silence_logging`), and
    `restart_latency_nolog` switches them off altogether.
    """
    global _round
    durations: list[float] = []
    async with trioscope.open_registry() as reg:
        with contextlib.ExitStack() as stack:
            for i in range(extra_names):
                stack.enter_context(reg.registered(f"other-{i}", object()))
            async with trioscope.open_supervisor(
                [Victim.child_spec(name="victim")],
                strategy=trioscope.Strategy.ONE_FOR_ONE,
                max_restarts=10**9,
                max_seconds=1.0,
            ):
                await trio.testing.wait_all_tasks_blocked()
                gc0 = young_collections()
                for _ in range(samples):
                    ref: Any = reg.lookup("victim")
                    _round = _Round()
                    t0 = perf()
                    await ref.cast(Victim.crash)
                    await _round.ready.wait()
                    durations.append(perf() - t0)
                    await trio.testing.wait_all_tasks_blocked()
                gc_runs = young_collections() - gc0
    return durations, gc_runs


# The logger every trioscope logger ("trioscope.supervisor", "trioscope.service", ...)
# inherits its level from.
LIBRARY_LOGGER = "trioscope"


@contextlib.contextmanager
def logging_disabled() -> Iterator[None]:
    """trioscope's logging off: its top logger above CRITICAL, restored on exit.

    Raises if some trioscope logger still has CRITICAL enabled (one with a
    level of its own), so that this never measures a configuration other than
    the one it is named after.
    """
    top = logging.getLogger(LIBRARY_LOGGER)
    before = top.level
    top.setLevel(logging.CRITICAL + 1)
    try:
        yield
        on = [
            name
            for name, logger in logging.root.manager.loggerDict.items()
            if name.startswith(LIBRARY_LOGGER + ".")
            and isinstance(logger, logging.Logger)
            and logger.isEnabledFor(logging.CRITICAL)
        ]
        if on:
            raise RuntimeError(f"trioscope loggers still enabled with logging off: {on}")
    finally:
        top.setLevel(before)


async def restart_latency_nolog(samples: int, extra_names: int) -> tuple[list[float], int]:
    """`restart_latency` with trioscope's logging disabled for the whole scenario.

    ``logging.getLogger("trioscope").setLevel(logging.CRITICAL + 1)`` before
    the supervisor opens, undone after it closed: no record is built at all.
    """
    with logging_disabled():
        return await restart_latency(samples, extra_names)
