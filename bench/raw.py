"""The raw-Trio floors: what the same work costs written directly with Trio.

Each is the plain code a Trio programmer would write without any library:
memory channels for messages, a fresh ``open_memory_channel(1)`` (or one kept
for the whole run) for replies, ``nursery.start``/``start_soon`` for tasks,
and two hand-rolled minimal one-for-one restart loops (a manager that
``nursery.start``s the new worker, and a leaner one that ``start_soon``s it).
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from common import perf, traced, young_collections

# The mailbox bound trioscope uses by default, so that both sides queue alike.
MAILBOX = 1024


async def _echo_server(recv: trio.MemoryReceiveChannel[Any]) -> None:
    async for value, reply in recv:
        await reply.send(value)


async def pingpong_fresh(n: int) -> float:
    """Request/response with a fresh ``open_memory_channel(1)`` per request for the reply."""
    send, recv = trio.open_memory_channel[Any](MAILBOX)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_echo_server, recv)
        await trio.testing.wait_all_tasks_blocked()
        t0 = perf()
        for i in range(n):
            reply_send, reply_recv = trio.open_memory_channel[int](1)
            await send.send((i, reply_send))
            await reply_recv.receive()
        elapsed = perf() - t0
        nursery.cancel_scope.cancel()
    return elapsed


async def pingpong_persistent(n: int) -> float:
    """Request/response with one reply channel kept for the whole run."""
    send, recv = trio.open_memory_channel[Any](MAILBOX)
    reply_send, reply_recv = trio.open_memory_channel[int](1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_echo_server, recv)
        await trio.testing.wait_all_tasks_blocked()
        t0 = perf()
        for i in range(n):
            await send.send((i, reply_send))
            await reply_recv.receive()
        elapsed = perf() - t0
        nursery.cancel_scope.cancel()
    return elapsed


async def oneway(n: int) -> float:
    """One-way sends; the clock stops when the server has received all *n*."""
    send, recv = trio.open_memory_channel[int](MAILBOX)
    done = trio.Event()

    async def server() -> None:
        count = 0
        async for _ in recv:
            count += 1
            if count == n:
                done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        await trio.testing.wait_all_tasks_blocked()
        t0 = perf()
        for i in range(n):
            await send.send(i)
        await done.wait()
        elapsed = perf() - t0
        nursery.cancel_scope.cancel()
    return elapsed


async def idle_task_memory(n: int) -> float:
    """Bytes per idle task: *n* tasks parked in ``receive`` on one shared channel."""
    send, recv = trio.open_memory_channel[int](0)

    async def idle() -> None:
        await recv.receive()

    async with trio.open_nursery() as nursery:
        with traced() as mem:
            for _ in range(n):
                nursery.start_soon(idle)
            await trio.testing.wait_all_tasks_blocked()
            per = mem.current() / n
        nursery.cancel_scope.cancel()
    del send
    return per


def dict_lookups(n: int, names: list[str]) -> float:
    """The plain-Python floor for a name lookup: ``dict.get`` over the same names."""
    table = {name: object() for name in names}
    get = table.get
    k = len(names)
    rounds, rest = divmod(n, k)
    t0 = perf()
    for _ in range(rounds):
        for name in names:
            get(name)
    for name in names[:rest]:
        get(name)
    return perf() - t0


# -- scale: spawning and tearing down many tasks ---------------------------


async def spawn_scale(n: int, how: str) -> dict[str, float]:
    """Spawn *n* idle tasks (``start_soon`` then wait until all are parked, or
    ``await nursery.start`` one by one), then cancel them all; per-task seconds."""
    send, recv = trio.open_memory_channel[int](0)

    async def idle(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await recv.receive()

    t0 = perf()
    async with trio.open_nursery() as nursery:
        if how == "start_soon":
            for _ in range(n):
                nursery.start_soon(idle)
            await trio.testing.wait_all_tasks_blocked()
        else:
            for _ in range(n):
                await nursery.start(idle)
        t1 = perf()
        nursery.cancel_scope.cancel()
    t2 = perf()
    del send
    return {"start": (t1 - t0) / n, "teardown": (t2 - t1) / n}


# -- restart: a minimal hand-rolled one-for-one supervisor -------------------


class _Round:
    def __init__(self) -> None:
        self.ready = trio.Event()


async def restart_latency(samples: int, extra_names: int) -> tuple[list[float], int]:
    """Crash-to-ready latency of a minimal one-for-one written in plain Trio, ``nursery.start``.

    One nursery. A worker registers its channel in a dict, parks on
    ``receive`` and raises on any message; a wrapper catches the exception and
    reports it on a channel; a manager task takes the report and starts a
    fresh worker with ``await nursery.start(wrapper)``, so (like a supervisor)
    it knows when the worker is up and could tell a failed start from a
    later crash. Ready means the new worker is registered and parked on its
    mailbox (it sets an event that the measuring task waits on, then calls
    ``task_status.started()`` and parks, all in one step).
    """
    names: dict[str, object] = {f"other-{i}": object() for i in range(extra_names)}
    current = _Round()
    reports_send, reports_recv = trio.open_memory_channel[BaseException](float("inf"))

    async def worker(task_status: trio.TaskStatus[None]) -> None:
        send, recv = trio.open_memory_channel[str](MAILBOX)
        names["victim"] = send
        try:
            current.ready.set()
            task_status.started()
            await recv.receive()
            raise RuntimeError("boom")
        finally:
            del names["victim"]

    async def wrapper(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await worker(task_status)
        except Exception as exc:
            reports_send.send_nowait(exc)

    async def manager(nursery: trio.Nursery) -> None:
        async for _ in reports_recv:
            await nursery.start(wrapper)

    durations: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(wrapper)
        nursery.start_soon(manager, nursery)
        await trio.testing.wait_all_tasks_blocked()
        gc0 = young_collections()
        for _ in range(samples):
            current = _Round()
            mailbox: Any = names["victim"]
            t0 = perf()
            await mailbox.send("crash")
            await current.ready.wait()
            durations.append(perf() - t0)
            await trio.testing.wait_all_tasks_blocked()
        gc_runs = young_collections() - gc0
        nursery.cancel_scope.cancel()
    return durations, gc_runs


async def restart_latency_soon(samples: int, extra_names: int) -> tuple[list[float], int]:
    """The same loop as `restart_latency`, leaner: the manager ``start_soon``s the wrapper.

    Nothing waits for the new worker to be up: no temporary nursery, no
    ``task_status`` hand-over, the manager goes straight back to its report
    channel. Readiness is signalled only by the event the worker sets right
    before it parks on its mailbox (registration and parking happen in the
    same step, so the measuring task wakes to a worker that is serving). The
    manager cannot tell a failed start from a crash after it, which a
    supervisor reports differently; for this crash-and-restart loop it is
    still correct, and it is the least code that does the job.
    """
    names: dict[str, object] = {f"other-{i}": object() for i in range(extra_names)}
    current = _Round()
    reports_send, reports_recv = trio.open_memory_channel[BaseException](float("inf"))

    async def worker() -> None:
        send, recv = trio.open_memory_channel[str](MAILBOX)
        names["victim"] = send
        try:
            current.ready.set()
            await recv.receive()
            raise RuntimeError("boom")
        finally:
            del names["victim"]

    async def wrapper() -> None:
        try:
            await worker()
        except Exception as exc:
            reports_send.send_nowait(exc)

    async def manager(nursery: trio.Nursery) -> None:
        async for _ in reports_recv:
            nursery.start_soon(wrapper)

    durations: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wrapper)
        nursery.start_soon(manager, nursery)
        await trio.testing.wait_all_tasks_blocked()
        gc0 = young_collections()
        for _ in range(samples):
            current = _Round()
            mailbox: Any = names["victim"]
            t0 = perf()
            await mailbox.send("crash")
            await current.ready.wait()
            durations.append(perf() - t0)
            await trio.testing.wait_all_tasks_blocked()
        gc_runs = young_collections() - gc0
        nursery.cancel_scope.cancel()
    return durations, gc_runs
