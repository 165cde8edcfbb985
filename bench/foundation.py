"""The foundation's benchmarks (issue 9): config server and event store, beside their floors.

Every benchmark follows `common`'s shapes: a *rate* benchmark is
``async def f(n) -> float`` (elapsed seconds for *n* operations, setup
outside the clock); the scenarios that need a heap of their own (a store of
a million events, the memory curve of an endless stream) return a dict and
run in a fresh interpreter through ``run.py --scenario``.

Each trioscope figure has a floor written in plain Trio or plain Python for
the same shape of work, measured in the same run:

- a config read (``config.get(path)``, no message round trip) against a
  function that reads a dict through an object held in a `contextvars.ContextVar`
  (how a snapshot published for the current scope is reached);
- config updates and single event stores (calls) against the request/reply
  floors of ``raw.py``; buffered stores (``events.store_nowait``) against its
  one-way floor;
- batches of 100 events in memory against a hand-written Trio store (a task
  that takes a batch and a fresh reply channel, stamps id and timestamps on
  each event, appends to a deque and indexes it by correlation id); on SQLite
  against plain `sqlite3` (WAL, ``synchronous=FULL``, one transaction per batch
  of JSON rows, the same two indexes as `SQLiteBackend`) through `trio.to_thread.run_sync`;
- correlation queries, against the request/reply floor, at 10k and 1M events.

Events are built before the clock starts (building an `Event` is timed on its
own row): the rates are the store's, not the caller's attrs validators.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import itertools
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import raw
import trio
import trio.lowlevel
import trio.testing
from common import percentile, perf

import trioscope
from trioscope.foundation import (
    Event,
    EventBufferFullError,
    SQLiteBackend,
    config,
    event_store_spec,
    events,
    open_foundation,
)

# What the ElixirScope seeds managed (../shared/elixirscope-foundation.md): the floor to beat.
SEED = {
    "config_read": (50_000, 100_000),
    "config_update": (5_000, 10_000),
    "store": (10_000, 20_000),
    "batch": (50_000, 100_000),
}

# A path every schema has, read and updated by the benchmarks. Updates go to a
# telemetry setting: the event store follows ``events.*`` and would do extra work.
READ_PATH = "events.max_events"
UPDATE_PATH = "telemetry.window_s"
BATCH = 100


def make_events(n: int, *, per_correlation: int = 10, start: int = 0) -> list[Event]:
    """*n* small events; every *per_correlation* consecutive ones share a correlation id."""
    return [
        Event("bench.event", {"i": i, "ok": True}, correlation_id=f"c{i // per_correlation}")
        for i in range(start, start + n)
    ]


def batched(items: list[Event], size: int = BATCH) -> list[list[Event]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@contextlib.asynccontextmanager
async def running(
    *, max_events: int | None = None, sqlite_path: str | None = None
) -> AsyncIterator[None]:
    """An isolated registry scope with the foundation running in it (config + event store).

    *max_events* is applied with ``config.update`` (an updatable setting), so
    the store runs with it before the benchmark starts; *sqlite_path* gives the
    store a durable SQLite backend in place of the memory one.
    """
    async with (
        trioscope.open_registry(isolated=True),
        open_foundation(**foundation_kwargs(sqlite_path)),
    ):
        if max_events is not None:
            await config.update("events.max_events", max_events)
        await trio.testing.wait_all_tasks_blocked()
        yield


def foundation_kwargs(sqlite_path: str | None) -> dict[str, Any]:
    if sqlite_path is None:
        return {}
    return {"events": event_store_spec(backend=lambda: SQLiteBackend(sqlite_path))}


# -- config reads ------------------------------------------------------------------


class _Snapshot:
    __slots__ = ("values", "version")

    def __init__(self, values: dict[str, object], version: int) -> None:
        self.values = values
        self.version = version


_published: contextvars.ContextVar[_Snapshot] = contextvars.ContextVar("bench_snapshot")


def _floor_get(path: str) -> object:
    return _published.get().values[path]


async def floor_config_read(n: int) -> float:
    """The plain-Python floor of a snapshot read: a dict read through a contextvar-held object."""
    _published.set(_Snapshot({READ_PATH: 100_000, UPDATE_PATH: 60.0}, 1))
    get = _floor_get
    t0 = perf()
    for _ in itertools.repeat(None, n):
        get(READ_PATH)
    return perf() - t0


async def config_read(n: int) -> float:
    """``config.get(path)`` inside a registry scope with the foundation running."""
    async with running():
        get = config.get
        assert get(READ_PATH) == get(READ_PATH)
        t0 = perf()
        for _ in itertools.repeat(None, n):
            get(READ_PATH)
        elapsed = perf() - t0
    return elapsed


# -- config updates, with one subscriber draining ------------------------------------


async def config_update(n: int) -> float:
    """``await config.update(path, value)`` *n* times; the clock stops when one subscriber has
    received every change."""
    async with running(), config.subscribe() as changes, trio.open_nursery() as nursery:
        done = trio.Event()

        async def drain() -> None:
            count = 0
            async for _ in changes:
                count += 1
                if count == n:
                    done.set()
                    return

        nursery.start_soon(drain)
        await trio.testing.wait_all_tasks_blocked()
        update = config.update
        t0 = perf()
        for i in range(n):
            await update(UPDATE_PATH, 30.0 + (i & 1))
        await done.wait()
        elapsed = perf() - t0
    return elapsed


# -- single event stores ---------------------------------------------------------------


async def store_call(n: int) -> float:
    """``await events.store(event)`` *n* times (a call: each waits for its id)."""
    evs = make_events(n)
    async with running(max_events=max(n, 100_000)):
        store = events.store
        t0 = perf()
        for ev in evs:
            await store(ev)
        elapsed = perf() - t0
    return elapsed


async def store_nowait(n: int) -> float:
    """``events.store_nowait(event)`` *n* times, a checkpoint every 64 (as a producer that
    shares the loop would); the clock stops when the store has acknowledged all *n*
    (the events home's flush task sends the buffer as `store_batch` calls)."""
    evs = make_events(n)
    async with running(max_events=max(n, 100_000)):
        put = events.store_nowait
        stats = events.buffer_statistics
        before = stats().flushed_total
        t0 = perf()
        for i, ev in enumerate(evs):
            while True:
                try:
                    put(ev)
                    break
                except EventBufferFullError:
                    await trio.lowlevel.checkpoint()
            if i & 63 == 63:
                await trio.lowlevel.checkpoint()
        while stats().flushed_total - before < n:  # acknowledged by the store
            await trio.lowlevel.checkpoint()
        elapsed = perf() - t0
    return elapsed


# -- batches ---------------------------------------------------------------------------


async def batch_memory(n: int) -> float:
    """``await events.store_batch(batch)`` for batches of 100, *n* events, memory backend."""
    batches = batched(make_events(n))
    async with running(max_events=max(n, 100_000)):
        store_batch = events.store_batch
        t0 = perf()
        for b in batches:
            await store_batch(b)
        elapsed = perf() - t0
    return elapsed


async def floor_batch_memory(n: int) -> float:
    """A hand-written Trio store: batches of 100 to a task that stamps and indexes them."""
    batches = batched(make_events(n))
    send, recv = trio.open_memory_channel[Any](raw.MAILBOX)
    log: deque[tuple[Any, ...]] = deque()
    by_correlation: dict[str | None, list[int]] = {}

    async def server() -> None:
        last_id = 0
        async for batch, reply in recv:
            ids = []
            for ev in batch:
                last_id += 1
                log.append(
                    (
                        last_id,
                        time.monotonic_ns(),
                        time.time_ns(),
                        ev.type,
                        ev.data,
                        ev.correlation_id,
                    )
                )
                by_correlation.setdefault(ev.correlation_id, []).append(last_id)
                ids.append(last_id)
            await reply.send(ids)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        await trio.testing.wait_all_tasks_blocked()
        t0 = perf()
        for b in batches:
            reply_send, reply_recv = trio.open_memory_channel[list[int]](1)
            await send.send((b, reply_send))
            await reply_recv.receive()
        elapsed = perf() - t0
        nursery.cancel_scope.cancel()
    return elapsed


def _tmp_db(tmp: str, tag: str) -> str:
    return os.path.join(tmp, f"{tag}-{time.monotonic_ns()}.db")


async def batch_sqlite(n: int, writers: int = 1) -> float:
    """``store_batch`` of 100 on SQLite (durable: acknowledged once on disk), *writers* at once."""
    batches = batched(make_events(n))
    with tempfile.TemporaryDirectory(prefix="trioscope-bench-") as tmp:
        async with running(max_events=max(n, 100_000), sqlite_path=_tmp_db(tmp, "store")):
            store_batch = events.store_batch

            async def writer(mine: list[list[Event]]) -> None:
                for b in mine:
                    await store_batch(b)

            t0 = perf()
            async with trio.open_nursery() as nursery:
                for w in range(writers):
                    nursery.start_soon(writer, batches[w::writers])
            elapsed = perf() - t0
    return elapsed


def _open_floor_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, type TEXT NOT NULL, data TEXT NOT NULL,"
        " correlation_id TEXT, parent_id INTEGER, monotonic_ns INTEGER, wall_ns INTEGER)"
    )
    # The two indexes SQLiteBackend keeps by default (indexes=True), so both write as much.
    db.execute("CREATE INDEX events_by_type ON events (type)")
    db.execute(
        "CREATE INDEX events_by_correlation ON events (correlation_id)"
        " WHERE correlation_id IS NOT NULL"
    )
    return db


async def floor_batch_sqlite(n: int) -> float:
    """Plain `sqlite3` (WAL, ``synchronous=FULL``, the backend's two indexes): each batch of
    100 JSON rows in one transaction, in a worker thread (`trio.to_thread.run_sync`), one
    batch at a time."""
    batches = batched(make_events(n))
    with tempfile.TemporaryDirectory(prefix="trioscope-bench-") as tmp:
        db = _open_floor_db(_tmp_db(tmp, "floor"))
        last_id = 0

        def write(rows: list[tuple[Any, ...]]) -> None:
            db.execute("BEGIN")
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")

        try:
            t0 = perf()
            for b in batches:
                rows = []
                for ev in b:
                    last_id += 1
                    rows.append(
                        (
                            last_id,
                            ev.type,
                            json.dumps(ev.data),
                            ev.correlation_id,
                            ev.parent_id,
                            time.monotonic_ns(),
                            time.time_ns(),
                        )
                    )
                await trio.to_thread.run_sync(write, rows)
            elapsed = perf() - t0
        finally:
            db.close()
    return elapsed


def event_build(n: int) -> float:
    """Building ``Event(type, data, correlation_id=...)`` (attrs validators), per event."""
    data = {"i": 1, "ok": True}
    t0 = perf()
    for _ in itertools.repeat(None, n):
        Event("bench.event", data, correlation_id="c1")
    return perf() - t0


# -- correlation queries at 10k and 1M events (each in a fresh interpreter) ------------


def _rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


async def correlation_query(size: int, queries: int) -> dict[str, Any]:
    """Fill a memory store with *size* events (``store_batch`` of 1,000, 10 per correlation
    id), then time *queries* correlation queries (and as many causal chains) at random
    ids, in 10 chunks, each followed by a chunk of the request/reply floor."""
    rng = random.Random(9)
    out: dict[str, Any] = {"size": size, "queries": queries}
    async with running(max_events=size + 1_000):
        store_batch = events.store_batch
        t0 = perf()
        chunk = 1_000
        for start in range(0, size, chunk):
            await store_batch(make_events(min(chunk, size - start), start=start))
        out["fill_s"] = perf() - t0
        out["rss_bytes"] = _rss_bytes()
        gc.collect()
        ids = [f"c{rng.randrange(size // 10)}" for _ in range(queries)]
        query, chain = events.query, events.correlation_chain
        got = await query(correlation_id=ids[0])
        assert len(got) == 10, f"expected 10 events for {ids[0]}, got {len(got)}"
        q_lat: list[float] = []
        c_lat: list[float] = []
        floor: list[float] = []
        gcs0 = [g["collections"] for g in gc.get_stats()]
        chunks = 10
        per_chunk = max(len(ids) // chunks, 1)
        for k in range(chunks):
            for cid in ids[k * per_chunk : (k + 1) * per_chunk]:
                t = perf()
                await query(correlation_id=cid)
                q_lat.append(perf() - t)
                t = perf()
                await chain(cid)
                c_lat.append(perf() - t)
            # The request/reply floor in the same interpreter, same heap, same minute.
            floor.append(await raw.pingpong_fresh(per_chunk) / per_chunk)
        # Collections of each generation meanwhile: a full one would walk every event.
        out["gc_runs"] = [g["collections"] - g0 for g, g0 in zip(gc.get_stats(), gcs0, strict=True)]
    out["query"] = _lat_stats(q_lat)
    out["chain"] = _lat_stats(c_lat)
    out["floor_fresh"] = percentile(floor, 50)
    return out


def _lat_stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "mean": sum(values) / len(values),
        "n": len(values),
    }


# -- latency under concurrent load ----------------------------------------------------


async def under_load(ops: int, writers: int = 50, readers: int = 50) -> dict[str, Any]:
    """p50/p99 latencies with *writers* tasks storing events (calls), *readers* tasks reading
    config, 5 batch writers, one updater with a subscriber draining, and 2 query tasks,
    all at once in one store; beside it the floor: as many request/reply clients of one
    echo task, and as many contextvar dict readers."""
    lat: dict[str, list[float]] = {
        "store": [],
        "store_nowait": [],
        "config_get": [],
        "update": [],
        "batch": [],
        "query": [],
    }
    async with running(max_events=200_000), trio.open_nursery() as nursery:
        writing = writers + 5 + 1

        async def writer(w: int) -> None:
            nonlocal writing
            evs = make_events(ops, start=w * ops)
            for k, ev in enumerate(evs):
                if k & 1:
                    t = perf()
                    events.store_nowait(ev)
                    lat["store_nowait"].append(perf() - t)
                    await trio.lowlevel.checkpoint()
                else:
                    t = perf()
                    await events.store(ev)
                    lat["store"].append(perf() - t)
            writing -= 1

        async def batcher(w: int) -> None:
            nonlocal writing
            for b in batched(make_events(ops // 5 * BATCH, start=10**7 + w * 10**6)):
                t = perf()
                await events.store_batch(b)
                lat["batch"].append(perf() - t)
            writing -= 1

        async def updater() -> None:
            nonlocal writing
            for i in range(ops):
                t = perf()
                await config.update(UPDATE_PATH, 30.0 + (i & 1))
                lat["update"].append(perf() - t)
            writing -= 1

        async def subscriber(task_status: trio.TaskStatus[None]) -> None:
            async with config.subscribe() as changes:
                task_status.started()
                async for _ in changes:
                    pass

        async def reader() -> None:
            get = config.get
            while writing:
                t = perf()
                get(READ_PATH)
                lat["config_get"].append(perf() - t)
                await trio.lowlevel.checkpoint()

        async def querier() -> None:
            rng = random.Random(1)
            while writing:
                cid = f"c{rng.randrange(max(writers * ops // 10, 1))}"
                t = perf()
                await events.query(correlation_id=cid)
                lat["query"].append(perf() - t)

        await nursery.start(subscriber)
        t0 = perf()
        async with trio.open_nursery() as load:
            for w in range(writers):
                load.start_soon(writer, w)
            for w in range(5):
                load.start_soon(batcher, w)
            load.start_soon(updater)
            for _ in range(readers):
                load.start_soon(reader)
            for _ in range(2):
                load.start_soon(querier)
        wall = perf() - t0
        nursery.cancel_scope.cancel()
    out: dict[str, Any] = {k: _lat_stats(v) for k, v in lat.items() if v}
    out["wall_s"] = wall
    out["writers"], out["readers"], out["ops"] = writers, readers, ops
    out["floor"] = await _floor_under_load(ops, writers, readers)
    return out


async def _floor_under_load(ops: int, clients: int, readers: int) -> dict[str, Any]:
    """The same concurrency in plain Trio: *clients* request/reply loops (fresh reply channel)
    against one echo task, *readers* tasks reading a dict through a contextvar."""
    send, recv = trio.open_memory_channel[Any](raw.MAILBOX)
    _published.set(_Snapshot({READ_PATH: 100_000}, 1))
    lat: dict[str, list[float]] = {"call": [], "read": []}
    active = clients

    async def client() -> None:
        nonlocal active
        for i in range(ops):
            reply_send, reply_recv = trio.open_memory_channel[int](1)
            t = perf()
            await send.send((i, reply_send))
            await reply_recv.receive()
            lat["call"].append(perf() - t)
        active -= 1

    async def reader() -> None:
        get = _floor_get
        while active:
            t = perf()
            get(READ_PATH)
            lat["read"].append(perf() - t)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(raw._echo_server, recv)
        async with trio.open_nursery() as load:
            for _ in range(clients):
                load.start_soon(client)
            for _ in range(readers):
                load.start_soon(reader)
        nursery.cancel_scope.cancel()
    return {k: _lat_stats(v) for k, v in lat.items()}


# -- memory under an endless stream (a fresh interpreter) ----------------------------


async def endless_stream(total: int, max_events: int, every: int) -> dict[str, Any]:
    """Write *total* events (``store_batch`` of 100) into a store keeping *max_events*.

    After every *every* events (and a full collection): the events held, the
    pymalloc blocks in use (`sys.getallocatedblocks`: every live Python object
    and buffer, at no tracing cost) and the process RSS, each as growth since
    just before the stream. tracemalloc would slow the stream about 15-fold, so
    it runs only at the end, while the store turns its whole content over
    twice more: what it counts then is what the store keeps at steady state.
    """
    points: list[dict[str, int]] = []
    async with running(max_events=max_events):
        store_batch = events.store_batch
        gc.collect()
        blocks0, rss0 = sys.getallocatedblocks(), _rss_bytes()
        t0 = perf()
        written = 0
        while written < total:
            for _ in range(every // BATCH):
                await store_batch(make_events(BATCH, start=written))
                written += BATCH
            gc.collect()
            points.append(
                {
                    "written": written,
                    "held": await _held_count(),
                    "blocks": sys.getallocatedblocks() - blocks0,
                    "rss_bytes": _rss_bytes() - rss0,
                }
            )
        elapsed = perf() - t0
        gc.collect()
        tracemalloc.start()
        try:
            for _ in range(2 * max_events // BATCH):
                await store_batch(make_events(BATCH, start=written))
                written += BATCH
            gc.collect()
            steady = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        held = await _held_count()
    return {
        "total": total,
        "max_events": max_events,
        "every": every,
        "points": points,
        "wall_s": elapsed,
        "rss0_bytes": rss0,
        "steady_heap_bytes": steady,
        "steady_held": held,
    }


async def _held_count() -> int:
    return (await events.stats()).count
