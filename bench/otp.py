"""triotp 0.3.1 benchmarks, the same measurements written the way triotp is used.

triotp's gen_server takes a *module* of callbacks (``init``, ``handle_call``,
``handle_cast``, ``handle_info``); mailboxes and names live in a registry held
in context variables that `triotp.mailbox._init` creates (as `triotp.node.run`
does before starting applications). Each benchmark calls it first, so every
``trio.run`` gets a fresh registry. Importing this module fails on a Python
where triotp is not installed (or older than 3.13, which triotp 0.3.1 needs).
"""

from __future__ import annotations

import contextlib
import types
from typing import Any

import trio
import trio.testing
from common import emit_and_exit, perf, traced, young_collections
from triotp import dynamic_supervisor, gen_server, mailbox, supervisor

VERSION = "0.3.1"

# -- callback modules -----------------------------------------------------------


def _module(name: str, **callbacks: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    for key, value in callbacks.items():
        setattr(mod, key, value)
    return mod


async def _echo_init(_arg: object) -> dict[str, Any]:
    return {"count": 0, "target": -1, "done": None}


async def _echo_call(message: Any, _caller: object, state: Any) -> Any:
    return (gen_server.Reply(payload=message), state)


async def _echo_cast(_message: Any, state: Any) -> Any:
    state["count"] += 1
    if state["count"] == state["target"]:
        state["done"].set()
    return (gen_server.NoReply(), state)


async def _echo_info(message: Any, state: Any) -> Any:
    state["target"], state["done"] = message
    state["count"] = 0
    return (gen_server.NoReply(), state)


ECHO = _module(
    "bench_echo",
    init=_echo_init,
    handle_call=_echo_call,
    handle_cast=_echo_cast,
    handle_info=_echo_info,
)


class _Counter:
    def __init__(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.all_ready = trio.Event()


_counter = _Counter(0)


async def _idle_init(_arg: object) -> None:
    _counter.count += 1
    if _counter.count == _counter.target:
        _counter.all_ready.set()


async def _idle_call(_message: Any, _caller: object, state: Any) -> Any:
    return (gen_server.Reply(payload=None), state)


IDLE = _module("bench_idle", init=_idle_init, handle_call=_idle_call)


class _Round:
    def __init__(self) -> None:
        self.ready = trio.Event()


_round = _Round()


async def _victim_init(_arg: object) -> None:
    _round.ready.set()


async def _victim_cast(_message: Any, _state: Any) -> Any:
    raise RuntimeError("boom (benchmark crash)")


VICTIM = _module("bench_victim", init=_victim_init, handle_cast=_victim_cast)


def child_specs(n: int) -> float:
    """Build *n* ``supervisor.child_spec`` values for named gen_servers."""
    t0 = perf()
    for i in range(n):
        name = f"worker-{i}"
        supervisor.child_spec(id=name, task=gen_server.start, args=[IDLE, None, name])
    return perf() - t0


# -- rates ------------------------------------------------------------------------


async def call(n: int) -> float:
    """``await gen_server.call("echo", i)``, one caller, *n* round trips."""
    mailbox._init()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gen_server.start, ECHO, None, "echo")
        await trio.testing.wait_all_tasks_blocked()
        t0 = perf()
        for i in range(n):
            await gen_server.call("echo", i)
        elapsed = perf() - t0
        nursery.cancel_scope.cancel()
    return elapsed


async def cast(n: int) -> float:
    """``await gen_server.cast("echo", i)`` *n* times; stops when the server has handled all."""
    mailbox._init()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gen_server.start, ECHO, None, "echo")
        await trio.testing.wait_all_tasks_blocked()
        done = trio.Event()
        await mailbox.send("echo", (n, done))
        await trio.testing.wait_all_tasks_blocked()
        t0 = perf()
        for i in range(n):
            await gen_server.cast("echo", i)
        await done.wait()
        elapsed = perf() - t0
        nursery.cancel_scope.cancel()
    return elapsed


async def lookups(n: int, names: list[str]) -> float:
    """*n* name resolutions (``mailbox._resolve``, what ``send``/``call`` by name do)."""
    mailbox._init()
    mid = mailbox.create()
    for name in names:
        mailbox.register(mid, name)
    resolve = mailbox._resolve
    rounds, rest = divmod(n, len(names))
    t0 = perf()
    for _ in range(rounds):
        for name in names:
            resolve(name)
    for name in names[:rest]:
        resolve(name)
    elapsed = perf() - t0
    await trio.lowlevel.checkpoint()
    return elapsed


async def idle_server_memory(n: int) -> float:
    """Bytes per idle, unnamed gen_server (``nursery.start_soon(gen_server.start, ...)``)."""
    global _counter
    mailbox._init()
    _counter = _Counter(n)
    async with trio.open_nursery() as nursery:
        with traced() as mem:
            for _ in range(n):
                nursery.start_soon(gen_server.start, IDLE, None)
            await _counter.all_ready.wait()
            await trio.testing.wait_all_tasks_blocked()
            per = mem.current() / n
        nursery.cancel_scope.cancel()
    return per


# -- dynamic supervisor scale ------------------------------------------------------


async def dynamic_scale(n: int, memory: bool) -> dict[str, float]:
    """Start *n* named idle gen_servers through ``dynamic_supervisor.start_child``.

    ``start_child`` only hands the spec to the supervisor's mailbox, so the
    start time runs until every child's ``init`` has run. Teardown is
    cancelling the nursery that holds the dynamic supervisor (triotp has no
    orderly stop), until it has exited.
    """
    global _counter
    mailbox._init()
    _counter = _Counter(n)
    opts = supervisor.options()
    result: dict[str, float] = {}
    with traced() if memory else contextlib.nullcontext() as mem:
        t0 = perf()
        async with trio.open_nursery() as nursery:
            mid = await nursery.start(dynamic_supervisor.start, opts)
            for i in range(n):
                name = f"worker-{i}"
                await dynamic_supervisor.start_child(
                    mid,
                    supervisor.child_spec(id=name, task=gen_server.start, args=[IDLE, None, name]),
                )
            await _counter.all_ready.wait()
            t1 = perf()
            await trio.testing.wait_all_tasks_blocked()
            if mem is not None:
                emit_and_exit({"memory": mem.current() / n})
            t2 = perf()
            nursery.cancel_scope.cancel()
        t3 = perf()
    if not memory:
        result["start"] = (t1 - t0) / n
        result["teardown"] = (t3 - t2) / n
    return result


# -- restart latency -----------------------------------------------------------------


async def restart_latency(samples: int, extra_names: int) -> tuple[list[float], int]:
    """A supervised gen_server crashed by a cast, until its next incarnation's ``init`` ran.

    The measuring task wakes only after the new incarnation has parked on
    its mailbox. *extra_names* other names are registered (to another mailbox).
    """
    global _round
    mailbox._init()
    if extra_names:
        other = mailbox.create()
        for i in range(extra_names):
            mailbox.register(other, f"other-{i}")
    spec = supervisor.child_spec(id="victim", task=gen_server.start, args=[VICTIM, None, "victim"])
    opts = supervisor.options(max_restarts=10**9, max_seconds=1)
    durations: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.start, [spec], opts)
        await trio.testing.wait_all_tasks_blocked()
        gc0 = young_collections()
        for _ in range(samples):
            _round = _Round()
            t0 = perf()
            await gen_server.cast("victim", "crash")
            await _round.ready.wait()
            durations.append(perf() - t0)
            await trio.testing.wait_all_tasks_blocked()
        gc_runs = young_collections() - gc0
        nursery.cancel_scope.cancel()
    return durations, gc_runs
