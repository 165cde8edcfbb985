"""The durable store after a crash holds exactly the acknowledged prefix (and at most what was
in flight, whole): a SIGKILL of the process, and a kill of the EventStore service.

What can be asserted, and is: when a writer learns that its events are stored, they are on
disk, so every acknowledged event is there after the crash. A write whose COMMIT finished but
whose acknowledgement had not reached the writer (or had not been printed) may be there too:
no storage can tell a writer about a commit after the crash took the writer's side of it. But
it is whole (atomic batches), it is each writer's *next* write (it comes after everything that
writer had acknowledged, and a writer issues one write at a time), and ids stay a prefix
(``1..K``, no hole, no duplicate). So for each writer, what is stored is its issued sequence cut
at the acknowledged count, or at that count plus the one write it had in flight.
"""

from __future__ import annotations

import importlib.util
import math
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

import pytest
import trio

import trioscope
from trioscope.foundation import Backend, Event, Recovered
from trioscope.foundation._events import (
    EVENTS_HOME_NAME,
    EVENTS_NAME,
    EventsHome,
    EventStore,
    EventStoreSettings,
    query,
    store_batch,
)
from trioscope.foundation._home import home_spec
from trioscope.foundation._sqlite import SQLiteBackend

pytestmark = pytest.mark.trioscope_scope

WRITER = Path(__file__).with_name("_sqlite_writer.py")
RUN_TIMEOUT_S: Final = 60.0  # a guard against a hung subprocess, never reached when all is well


def _load_writer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_sqlite_writer", WRITER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


writer_script = _load_writer()


async def reopened(path: Path) -> Recovered:
    backend = SQLiteBackend(path)
    try:
        return await backend.open()
    finally:
        await backend.aclose()


async def stream_and_kill(mode: str, db: Path, acks_before_kill: int) -> list[list[int]]:
    """Run the writer, SIGKILL it once it printed *acks_before_kill* lines; every ack it printed."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(WRITER), mode, str(db)], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    lines: list[bytes] = []
    pending = b""
    try:
        with trio.fail_after(RUN_TIMEOUT_S):
            while len(lines) < acks_before_kill:
                chunk = await process.stdout.receive_some()
                assert chunk, f"the writer exited early with {await process.wait()}"
                *complete, pending = (pending + chunk).split(b"\n")
                lines += complete
            process.kill()  # SIGKILL: no cleanup, no flush, no close of the database
            assert await process.wait() == -signal.SIGKILL
            # What it printed before it died is still in the pipe: those are acks too.
            while chunk := await process.stdout.receive_some():
                *complete, pending = (pending + chunk).split(b"\n")
                lines += complete
    finally:
        process.kill()
        with trio.CancelScope(shield=True, deadline=trio.current_time() + RUN_TIMEOUT_S):
            await process.wait()
            await process.stdout.aclose()
    assert pending == b"", "an ack line is written whole or not at all"
    return [[int(field) for field in line.split()[1:]] for line in lines]


@pytest.mark.wall_clock("a subprocess: its start and output take real time")
async def test_process_killed_mid_stream_keeps_the_acknowledged_prefix(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    stored_before = 0
    for _ in range(2):  # the second run continues the file the first one was killed in
        acks = await stream_and_kill("backend", db, acks_before_kill=60)
        acked: list[int] = []
        for first, count in acks:
            acked += range(first, first + count)
        assert acked == list(range(stored_before + 1, stored_before + 1 + len(acked)))

        recovered = await reopened(db)
        ids = [event.id for event in recovered.events]
        assert ids == list(range(1, len(ids) + 1))  # a prefix of the ids issued, in order
        in_flight = acks[-1][1] % 7 + 1  # the size of the batch after the last acknowledged one
        assert len(ids) in (acked[-1], acked[-1] + in_flight)
        assert recovered.events == tuple(writer_script.issued(i) for i in ids)
        assert recovered.last_id == len(ids)
        stored_before = len(ids)


def check_writers(acks: list[list[int]], events: tuple[Event, ...], writers: int) -> None:
    """Per writer: stored = its sequence cut at the acknowledged count, or one write later."""
    ids = [event.id for event in events]
    assert ids == list(range(1, len(ids) + 1))
    by_id = {event.id: event for event in events}
    acked_count: dict[int, int] = defaultdict(int)
    last_size: dict[int, int] = {}
    for w, first_seq, count, first_id in acks:
        assert first_seq == acked_count[w]
        for k in range(count):  # acknowledged: stored, with that id and that content
            event = by_id[first_id + k]
            assert (event.type, event.data) == (f"crash.w{w}", {"w": w, "seq": first_seq + k})
        acked_count[w] += count
        last_size[w] = count
    stored_seqs: dict[int, list[int]] = defaultdict(list)
    for event in events:
        w = int(event.type.removeprefix("crash.w"))
        assert event.data["w"] == w
        seq = event.data["seq"]
        assert isinstance(seq, int)
        stored_seqs[w].append(seq)
    for w in range(writers):
        in_flight = last_size[w] % 5 + 1 if w in last_size else 1 + w
        assert stored_seqs[w] in (
            list(range(acked_count[w])),
            list(range(acked_count[w] + in_flight)),
        ), f"writer {w}"


@pytest.mark.wall_clock("a subprocess: its start and output take real time")
async def test_process_running_an_event_store_killed_mid_stream(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    acks = await stream_and_kill("store", db, acks_before_kill=80)
    recovered = await reopened(db)
    check_writers(acks, tuple(recovered.events), writer_script.WRITERS)
    assert recovered.last_id == len(recovered.events)


async def run_in(scope: trio.CancelScope, fn: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await fn()


class Writes:
    """What the in-process writers issued and learned, and a way to wait for progress."""

    def __init__(self) -> None:
        # Per writer, in issue order: (first seq, count, first id if acknowledged else None).
        self.calls: dict[int, list[tuple[int, int, int | None]]] = defaultdict(list)
        self.acked = 0
        self._progress = trio.Event()

    def record(self, w: int, first_seq: int, count: int, first_id: int | None) -> None:
        self.calls[w].append((first_seq, count, first_id))
        if first_id is not None:
            self.acked += count
            self._progress.set()
            self._progress = trio.Event()

    async def wait_for_acks(self, total: int) -> None:
        while self.acked < total:
            await self._progress.wait()


def check_calls(writes: Writes, events: tuple[Event, ...], seen: dict[int, Event]) -> None:
    """Acknowledged calls are stored whole, with their ids; failed ones whole or not at all;
    ids are 1..K; each writer's events are in its order; whatever a query showed is stored."""
    ids = [event.id for event in events]
    assert ids == list(range(1, len(ids) + 1))
    by_id = {event.id: event for event in events}
    stored_seqs: dict[int, list[int]] = defaultdict(list)
    for event in events:
        assert isinstance(event.data["w"], int)
        assert isinstance(event.data["seq"], int)
        stored_seqs[event.data["w"]].append(event.data["seq"])
    for w, calls in writes.calls.items():
        expected: list[int] = []
        stored = set(stored_seqs[w])
        for first_seq, count, first_id in calls:
            seqs = list(range(first_seq, first_seq + count))
            if first_id is not None:
                for k, seq in enumerate(seqs):
                    event = by_id[first_id + k]
                    assert (event.type, event.data) == (f"crash.w{w}", {"w": w, "seq": seq})
                expected += seqs
            elif seqs[0] in stored:  # committed, but its writer was never told: whole
                expected += seqs
        assert stored_seqs[w] == expected, f"writer {w}"
    for event in seen.values():
        assert by_id[event.id] == event


class CrashAfterCommit:
    """An SQLiteBackend whose 20th, 40th and 60th appends crash the store right after COMMIT:
    the worst moment, on disk and not acknowledged."""

    def __init__(self, inner: SQLiteBackend) -> None:
        self.inner = inner
        self.appends = 0

    @property
    def durable(self) -> bool:
        return True

    async def open(self) -> Recovered:
        return await self.inner.open()

    async def append(self, events: Sequence[Event]) -> None:
        await self.inner.append(events)
        self.appends += 1
        if self.appends in (20, 40, 60):
            raise RuntimeError("crash after commit (injected by the test)")

    async def prune_through(self, last_id: int) -> None:
        await self.inner.prune_through(last_id)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def describe(self) -> str:
        return self.inner.describe()


@pytest.mark.wall_clock("a subprocess: its start and output take real time")
@pytest.mark.parametrize("how", ["killed", "crashed after commit"])
async def test_event_store_killed_mid_stream_keeps_every_acknowledged_event(
    tmp_path: Path, how: str
) -> None:
    """A real EventStore on SQLite while 4 writers stream batches and a reader queries:
    killed three times (shutdown=0: cancelled at once, mid-commit or not) and restarted by
    hand, or crashed three times right after a COMMIT and restarted by its supervisor."""
    settings = EventStoreSettings(max_events=10**9, max_age_s=math.inf)
    sqlite = SQLiteBackend(tmp_path / "events.db")
    backend: Backend = sqlite if how == "killed" else CrashAfterCommit(sqlite)
    spec = trioscope.supervisor_spec(
        [
            home_spec(
                lambda: EventsHome(backend, settings, crash_trail=False), id=EVENTS_HOME_NAME
            ),
            EventStore.child_spec(settings=settings, name=EVENTS_NAME, shutdown=0),
        ],
        strategy=trioscope.Strategy.REST_FOR_ONE,
        max_restarts=10,
        id="events",
    )
    writes = Writes()
    seen: dict[int, Event] = {}
    stop = trio.Event()
    failures: list[BaseException] = []

    async def writer(w: int) -> None:
        seq, size = 0, 1 + w
        while not stop.is_set():
            batch = [Event(f"crash.w{w}", {"w": w, "seq": s}) for s in range(seq, seq + size)]
            try:
                ids = await store_batch(batch)
            except (trioscope.ServiceCrashedError, trioscope.ServiceUnavailableError) as exc:
                failures.append(exc)  # the store died with the call: stored or not, unknown
                writes.record(w, seq, size, None)
            else:
                writes.record(w, seq, size, ids[0])
            seq += size
            size = size % 5 + 1

    async def reader() -> None:
        # One query per acknowledgement, not a busy loop: a loop that never waits would
        # hold the GIL against the backend's worker thread and slow every commit down.
        while not stop.is_set():
            await writes.wait_for_acks(writes.acked + 1)
            try:
                for event in await query(order="desc", limit=10):
                    seen[event.id] = event
            except (trioscope.ServiceCrashedError, trioscope.ServiceUnavailableError):
                await trio.lowlevel.checkpoint()

    with trio.fail_after(RUN_TIMEOUT_S):
        async with trioscope.open_registry(isolated=True), trioscope.open_supervisor([]) as root:
            store = await root.start_child(spec)
            async with trio.open_nursery() as nursery:
                for w in range(4):
                    nursery.start_soon(writer, w)
                reading = trio.CancelScope()
                nursery.start_soon(run_in, reading, reader)
                for kill in range(1, 4):
                    await writes.wait_for_acks(100 * kill)
                    if how == "killed":
                        await store.terminate_child(EVENTS_NAME)
                        await store.restart_child(EVENTS_NAME)
                await writes.wait_for_acks(400)  # the last incarnation works too
                stop.set()
                reading.cancel()  # it may be waiting for an ack that no writer will send

    # The supervisor killed the last incarnation too (shutdown=0), and a killed service never
    # runs terminate: the events home, which owns the backend, closed it when it stopped.
    assert repr(sqlite).endswith("closed>")
    recovered = await reopened(tmp_path / "events.db")
    check_calls(writes, tuple(recovered.events), seen)
    assert recovered.last_id == len(recovered.events)
    assert failures  # the kills did land while calls were in flight
    if how != "killed":
        assert isinstance(backend, CrashAfterCommit)
        assert backend.appends > 60
        # Each crash left one commit (of one call or more) unacknowledged: those calls failed,
        # and their events are stored, rightly reported by the next incarnation. (Calls queued
        # for the next commit failed too, and are not stored.)
        stored = {(e.data["w"], e.data["seq"]) for e in recovered.events}
        failed = [(w, c[0]) for w, calls in writes.calls.items() for c in calls if c[2] is None]
        assert sum(call in stored for call in failed) >= 3
