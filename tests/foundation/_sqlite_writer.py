"""Streams events into an SQLite event database until killed; run by test_sqlite_crash.py.

Usage: ``python _sqlite_writer.py backend|store DB_PATH``

Each acknowledgement is printed, and flushed, as soon as it is received, in
one ``write`` of one line (shorter than PIPE_BUF, so a kill never leaves half
of one):

- ``backend``: sequential `SQLiteBackend.append` calls of 1 to 7 events, ids
  following the file's last id. Line: ``ack FIRST_ID COUNT`` once append returned.
- ``store``: a real EventStore with this backend and 4 concurrent writers
  calling ``store_batch`` (group commit merges their batches). Writer ``w``
  sends events ``{"w": w, "seq": s}`` with ``s = 0, 1, 2...`` in batches of 1
  to 5. Line: ``ack W FIRST_SEQ COUNT FIRST_ID`` once store_batch returned.

Everything the test can rely on is that a printed line means acknowledged.
"""

from __future__ import annotations

import math
import os
import sys

import trio

import trioscope
from trioscope.foundation import Event
from trioscope.foundation._events import event_store_spec, store_batch
from trioscope.foundation._sqlite import SQLiteBackend

WRITERS = 4


def issued(i: int) -> Event:
    """What the backend mode stores as id *i* (the test rebuilds it to compare)."""
    return Event("crash.backend", {"i": i, "pad": "x" * (i % 50)}, id=i, monotonic_ns=i, wall_ns=i)


def ack(line: str) -> None:
    os.write(sys.stdout.fileno(), (line + "\n").encode())  # one write: atomic for a pipe


async def via_backend(path: str) -> None:
    backend = SQLiteBackend(path)
    next_id = (await backend.open()).last_id + 1
    size = 1
    while True:
        await backend.append([issued(i) for i in range(next_id, next_id + size)])
        ack(f"ack {next_id} {size}")
        next_id += size
        size = size % 7 + 1


async def writer(w: int) -> None:
    seq, size = 0, 1 + w
    while True:
        ids = await store_batch(
            [Event(f"crash.w{w}", {"w": w, "seq": s}) for s in range(seq, seq + size)]
        )
        ack(f"ack {w} {seq} {size} {ids[0]}")
        seq += size
        size = size % 5 + 1


async def via_store(path: str) -> None:
    spec = event_store_spec(backend=SQLiteBackend(path), max_events=10**9, max_age_s=math.inf)
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([spec]),
        trio.open_nursery() as nursery,
    ):
        for w in range(WRITERS):
            nursery.start_soon(writer, w)


if __name__ == "__main__":
    mode, db = sys.argv[1], sys.argv[2]
    trio.run(via_backend if mode == "backend" else via_store, db)
