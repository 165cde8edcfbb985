"""Property: whatever sequence of appends, prunes, failures and reopenings, the file holds what a
plain list and a counter say it should."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trioscope.foundation import Event, Recovered
from trioscope.foundation._sqlite import SQLiteBackend

pytestmark = pytest.mark.trioscope_scope


@dataclass(frozen=True)
class Append:
    count: int
    fail_at: int | None = None  # inject a failure inside SQLite at this row of the batch


@dataclass(frozen=True)
class Prune:
    through: int


@dataclass(frozen=True)
class Reuse:
    """Append an id that was already used (refused: ids are never reused)."""


@dataclass(frozen=True)
class Reopen:
    crash: bool  # True: abandon the connection (no close, no checkpoint), as a killed process


Op = Append | Prune | Reuse | Reopen

ops = st.one_of(
    st.builds(Append, count=st.integers(1, 6)),
    st.integers(1, 6).flatmap(
        lambda n: st.builds(Append, count=st.just(n), fail_at=st.integers(0, n - 1))
    ),
    st.builds(Prune, through=st.integers(0, 40)),
    st.just(Reuse()),
    st.builds(Reopen, crash=st.booleans()),
)


def event(i: int) -> Event:
    return Event(
        "t",
        {"i": i, "nested": [i, {"s": "é" * (i % 3)}]},
        correlation_id=None if i % 2 else f"c{i % 5}",
        id=i,
        monotonic_ns=i,
        wall_ns=10 * i,
    )


@dataclass
class Model:
    events: list[Event] = field(default_factory=list)
    last_id: int = 0

    def recovered(self) -> Recovered:
        return Recovered(events=tuple(self.events), last_id=self.last_id)


@contextmanager
def side_connection(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def backend_for(path: Path) -> SQLiteBackend:
    return SQLiteBackend(path)  # the defaults: WAL, synchronous=FULL


# The property is about contents, atomicity and ids, not about the disk: on a tmpfs, where
# there is one, creating and syncing files costs microseconds instead of milliseconds, so
# Hypothesis tries ten times the sequences in the same time.
FAST_TMP: Final = (
    "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
)


async def run(ops: list[Op], path: Path) -> None:
    model = Model()
    abandoned: list[SQLiteBackend] = []
    backend = backend_for(path)
    assert await backend.open() == model.recovered()
    try:
        for op in ops:
            if isinstance(op, Append):
                batch = [event(model.last_id + 1 + k) for k in range(op.count)]
                if op.fail_at is None:
                    await backend.append(batch)
                    model.events += batch
                    model.last_id = batch[-1].id
                else:
                    # RAISE(FAIL): the rows before it stay in the transaction, so only
                    # the backend's ROLLBACK can remove them.
                    with side_connection(path) as side:
                        side.execute(
                            f"CREATE TRIGGER fail BEFORE INSERT ON events"
                            f" WHEN NEW.id = {batch[op.fail_at].id}"
                            " BEGIN SELECT RAISE(FAIL, 'injected'); END"
                        )
                    try:
                        with pytest.raises(sqlite3.IntegrityError, match=r"^injected$"):
                            await backend.append(batch)
                    finally:
                        with side_connection(path) as side:
                            side.execute("DROP TRIGGER fail")
            elif isinstance(op, Prune):
                await backend.prune_through(op.through)
                model.events = [e for e in model.events if e.id > op.through]
            elif isinstance(op, Reuse):
                if model.last_id:
                    with pytest.raises(ValueError, match=r"^cannot append event 0 of the batch"):
                        await backend.append([event(model.last_id)])
            else:
                if op.crash:
                    abandoned.append(backend)
                else:
                    await backend.aclose()
                backend = backend_for(path)
                assert await backend.open() == model.recovered()
        await backend.aclose()
        backend = backend_for(path)
        assert await backend.open() == model.recovered()
    finally:
        await backend.aclose()
        for old in abandoned:
            await old.aclose()


@given(st.lists(ops, max_size=16))
def test_reopened_contents_equal_the_model(ops: list[Op]) -> None:
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as tmp:
        trio.run(run, ops, Path(tmp) / "events.db")
