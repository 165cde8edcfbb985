"""A durable EventStore backend on SQLite: an event is acknowledged only once it is on disk.

::

    import tempfile, time, trio
    from pathlib import Path
    from trioscope.foundation import Event, SQLiteBackend

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            backend = SQLiteBackend(Path(tmp) / "events.db")
            recovered = await backend.open()
            assert recovered.events == () and recovered.last_id == 0
            now = time.monotonic_ns(), time.time_ns()
            await backend.append([
                Event("order.placed", {"order": 17}, id=1, monotonic_ns=now[0], wall_ns=now[1]),
                Event("order.paid", {"order": 17}, id=2, monotonic_ns=now[0], wall_ns=now[1]),
            ])
            await backend.prune_through(1)
            await backend.aclose()

            reopened = SQLiteBackend(Path(tmp) / "events.db")  # as after a restart
            again = await reopened.open()
            assert [e.type for e in again.events] == ["order.paid"] and again.last_id == 2
            await reopened.aclose()
            await reopened.aclose()  # idempotent

    trio.run(main)

An EventStore normally drives the backend (``events.backend = "sqlite"``); the
store assigns ids and timestamps, groups concurrent writes into one `append`
and acknowledges them only when it returns. Queries never touch the file: the
store answers them from its in-memory indexes, rebuilt from `SQLiteBackend.open`
on every start, so the file is the durability layer and retention bounds both.

How it is durable:

- **One transaction per** `SQLiteBackend.append`: all the events of a batch are
  written or none are; it returns only after ``COMMIT``. If it raises, the
  transaction was rolled back; the one case SQLite cannot rule out is an I/O
  error in the final sync of ``COMMIT``, so after a failed append the caller
  should reopen (the EventStore crashes and its restart reopens).
- **WAL journal, synchronous=FULL** (the default): every commit is synced to
  disk before it returns, so an acknowledged event survives a crash of the
  service, a ``SIGKILL`` of the process and a power loss. ``synchronous="NORMAL"``
  is faster but, in WAL mode, only survives the first two: a power loss or an
  OS crash may take the last commits with it. Use it only when that is fine.
- **Ids are never reused**: the highest id ever stored is the last event's, or,
  once pruning took that one, the one `SQLiteBackend.prune_through` saved in
  the ``meta`` table; `SQLiteBackend.append` refuses an id at or below it (also
  one another connection to the same file stored meanwhile).
- **One connection, one thread at a time**: every blocking call runs through
  `trio.to_thread.run_sync` under a private `trio.CapacityLimiter` of 1, with
  ``abandon_on_cancel=False``. A cancelled caller therefore waits for the
  transaction in progress to reach ``COMMIT`` or ``ROLLBACK``: a commit is never
  abandoned half-way, and if `SQLiteBackend.append` returns, the batch is on
  disk even when the caller was cancelled meanwhile (Trio delivers the
  cancellation at its next checkpoint).

What a crash can leave: every acknowledged event, in id order, and possibly the
one batch whose ``COMMIT`` finished but whose acknowledgement did not reach its
writer (no storage can tell a writer about a commit after the writer's process
is gone). Such a batch is whole, never partial, and comes after every
acknowledged one.

The file can be read on its own (``sqlite3 events.db``): a table ``events`` with
columns ``id`` (the primary key), ``type``, ``correlation_id``, ``parent_id``,
``monotonic_ns``, ``wall_ns`` and ``data`` (compact JSON text), indexed by type
and by correlation id unless ``indexes=False``. Its layout has a version in
``PRAGMA user_version``; a file written by a newer trioscope is refused with
`IncompatibleDatabaseError` rather than misread. ``monotonic_ns`` of recovered
events came from the clock of the process that stored them and is only
comparable with others from that run.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Final, Literal, TypeVar, final

import trio

from ._errors import IncompatibleDatabaseError
from ._event import JSON, Event, Recovered

_T = TypeVar("_T")

SCHEMA_VERSION: Final = 1
"""The layout this module writes, kept in ``PRAGMA user_version``. Older files are
migrated on open; newer ones are refused."""

DEFAULT_BUSY_TIMEOUT_S: Final = 5.0
"""Seconds a statement waits for another connection's lock on the same file."""

CLOSE_GRACE_S: Final = 5.0
"""Seconds `SQLiteBackend.aclose` waits, beyond the busy timeout and even when
cancelled, for a call in progress on the connection before it gives up closing."""

_CREATE_SCHEMA: Final = (
    # WITHOUT ROWID: a tiny key/value table, looked up by key only.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO meta (key, value) VALUES ('last_id', 0)",
    # id INTEGER PRIMARY KEY is the rowid: events are stored in id order, and
    # appending at the end of the b-tree is the cheapest insert SQLite has.
    "CREATE TABLE events ("
    " id INTEGER PRIMARY KEY,"
    " type TEXT NOT NULL,"
    " correlation_id TEXT,"
    " parent_id INTEGER,"
    " monotonic_ns INTEGER NOT NULL,"
    " wall_ns INTEGER NOT NULL,"
    " data TEXT NOT NULL)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
# Not needed by trioscope (the store queries its memory), but they make the file useful on
# its own, e.g. to ask a dead process's file which request crashed what. Optional: they cost
# write throughput (see SQLiteBackend's ``indexes``). Not part of the layout version.
_CREATE_INDEXES: Final = (
    "CREATE INDEX IF NOT EXISTS events_by_type ON events (type)",
    # Partial: uncorrelated events cost no index entry.
    "CREATE INDEX IF NOT EXISTS events_by_correlation ON events (correlation_id)"
    " WHERE correlation_id IS NOT NULL",
)
_DROP_INDEXES: Final = (
    "DROP INDEX IF EXISTS events_by_type",
    "DROP INDEX IF EXISTS events_by_correlation",
)
_COLUMNS: Final = "id, type, correlation_id, parent_id, monotonic_ns, wall_ns, data"
_SELECT_ALL: Final = f"SELECT {_COLUMNS} FROM events ORDER BY id"
# The highest id ever stored: the last event's, or (once it was pruned) the one
# prune_through saved in meta. append does not write meta, so a commit dirties
# only the pages of the new rows and their indexes.
_LAST_ID: Final = (
    "SELECT max(coalesce((SELECT max(id) FROM events), 0),"
    " (SELECT value FROM meta WHERE key = 'last_id'))"
)
_SAVE_LAST_ID: Final = f"UPDATE meta SET value = ({_LAST_ID}) WHERE key = 'last_id'"

_CHUNK_ROWS: Final = 128
"""Rows per INSERT statement: 7 parameters each, 896 in all, under 999 (the lowest
limit an SQLite build may have). One multi-row INSERT costs about a third less
than the same rows through executemany."""


@functools.lru_cache(maxsize=_CHUNK_ROWS)
def _insert_sql(rows: int) -> str:
    values = ",".join(["(?,?,?,?,?,?,?)"] * rows)
    return f"INSERT INTO events ({_COLUMNS}) VALUES {values}"


# Compact and exact: no spaces, non-ASCII kept as is, NaN/inf refused (not JSON).
# Built once: json.dumps with any non-default argument builds an encoder per call.
_encode: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _params(events: Sequence[Event]) -> list[object]:
    params: list[object] = []
    for event in events:
        data = event.data if isinstance(event.data, dict) else dict(event.data)
        params += (
            event.id,
            event.type,
            event.correlation_id,
            event.parent_id,
            event.monotonic_ns,
            event.wall_ns,
            _encode(data),
        )
    return params


def _event(row: tuple[int, str, str | None, int | None, int, int, str]) -> Event:
    id_, type_, correlation_id, parent_id, monotonic_ns, wall_ns, data = row
    decoded: dict[str, JSON] = json.loads(data)
    return Event(
        type_,
        decoded,
        correlation_id=correlation_id,
        parent_id=parent_id,
        id=id_,
        monotonic_ns=monotonic_ns,
        wall_ns=wall_ns,
    )


def _rollback_if_open(conn: sqlite3.Connection) -> None:
    # Called from an except block: the transaction (if SQLite left one open) is
    # undone, and the caller re-raises the original error.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _check_layout(conn: sqlite3.Connection, path: str) -> int:
    """The file's layout version, after making sure it is one this module can use."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise IncompatibleDatabaseError(
            path,
            f"it was written with layout version {version}, and this trioscope "
            f"reads versions up to {SCHEMA_VERSION}: upgrade trioscope, or point "
            "events.sqlite_path at another file",
        )
    if version == 0:
        (tables,) = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        ).fetchone()
        if tables:
            raise IncompatibleDatabaseError(
                path,
                "it is an SQLite database that trioscope did not create "
                "(it has tables but no trioscope layout version)",
            )
    return int(version)


def _open_sync(
    path: str, synchronous: str, busy_timeout_s: float, indexes: bool
) -> sqlite3.Connection:
    # isolation_level=None: the sqlite3 module issues no implicit BEGIN/COMMIT;
    # every transaction here is explicit, so what is atomic is plain to see.
    conn = sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    try:
        _check_layout(conn, path)  # before anything is written, not even the journal mode
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            raise IncompatibleDatabaseError(
                path, f"SQLite cannot use a WAL journal for it (journal mode is {mode!r})"
            )
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        # IMMEDIATE: take the write lock now, so that two processes creating the
        # file at once cannot both see version 0 and both create the tables.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if _check_layout(conn, path) == 0:  # again: another process may have been first
                for statement in _CREATE_SCHEMA:
                    conn.execute(statement)
            # Layout migrations from older versions go here, one `if version == n:` each.
            for statement in _CREATE_INDEXES if indexes else _DROP_INDEXES:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            _rollback_if_open(conn)
            raise
    except BaseException:
        conn.close()
        raise
    return conn


def _recover_sync(conn: sqlite3.Connection) -> Recovered:
    # One read transaction, so the events and last_id are one consistent snapshot.
    conn.execute("BEGIN")
    try:
        (last_id,) = conn.execute(_LAST_ID).fetchone()
        events = tuple(_event(row) for row in conn.execute(_SELECT_ALL))
        conn.execute("COMMIT")
    except BaseException:
        _rollback_if_open(conn)
        raise
    return Recovered(events=events, last_id=last_id)


def _append_sync(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    params = _params(events)  # encoded before the write lock is taken
    width = 7 * _CHUNK_ROWS
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Checked inside the transaction: another connection to the same file
        # (another process) may have stored ids since this one last looked.
        (last_id,) = conn.execute(_LAST_ID).fetchone()
        if events[0].id <= last_id:
            raise ValueError(
                f"cannot append event id {events[0].id}: the database already holds ids "
                f"up to {last_id} (another writer uses the same file?), and ids are never reused"
            )
        for start in range(0, len(params), width):
            chunk = params[start : start + width]
            conn.execute(_insert_sql(len(chunk) // 7), chunk)
        conn.execute("COMMIT")
    except BaseException:
        _rollback_if_open(conn)
        raise


def _prune_sync(conn: sqlite3.Connection, last_id: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_SAVE_LAST_ID)  # before the events that hold it may go
        conn.execute("DELETE FROM events WHERE id <= ?", (last_id,))
        conn.execute("COMMIT")
    except BaseException:
        _rollback_if_open(conn)
        raise


@final
class SQLiteBackend:
    """Keeps an EventStore's events in an SQLite file (stdlib `sqlite3`, WAL journal).

    Args:
        path: The database file; created with its directory's permissions if
            missing. It must be a real file: ``":memory:"`` is refused (use the
            memory backend for that).
        synchronous: ``"FULL"`` (the default) syncs every commit to disk before
            `append` returns: acknowledged events survive a power loss. ``"NORMAL"``
            syncs only at WAL checkpoints: faster, and still safe against a crash of
            the service or a kill of the process, but the last commits may be lost
            if the machine loses power or the OS crashes.
        busy_timeout_s: How long a statement waits for a lock held by another
            connection to the same file before failing with `sqlite3.OperationalError`.
        indexes: Keep SQL indexes on ``type`` and ``correlation_id`` (the default),
            so that the file answers such queries on its own, for instance with the
            ``sqlite3`` shell after a crash. trioscope never needs them (the store
            queries its memory) and they cost write throughput (about a third for
            large batches); with False, `open` drops them if the file has them.

    Raises:
        ValueError: *path* is empty, ``":memory:"`` or a ``file:`` URI, *synchronous*
            is not one of the two modes, or *busy_timeout_s* is negative or not finite.

    One instance holds at most one connection, opened by `open` and closed by
    `aclose`; an EventStore opens it on every start of the service and closes
    it when the service stops or crashes (a store killed outright runs no
    ``terminate``: its connection then stays open until the next `open`, which
    closes it first, or `aclose`). Every method that does I/O runs it in a
    worker thread, one call at a time, and is not abandoned when cancelled
    (see the module docs).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        indexes: bool = True,
    ) -> None:
        raw = os.fspath(path)
        if raw in ("", ":memory:") or raw.startswith("file:"):
            raise ValueError(
                f"SQLiteBackend path must be a file path, got {raw!r} "
                "(for events kept in memory only, use the memory backend)"
            )
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(
                f"SQLiteBackend synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}"
            )
        if not (math.isfinite(busy_timeout_s) and busy_timeout_s >= 0):
            raise ValueError(
                f"SQLiteBackend busy_timeout_s must be a finite number >= 0, got {busy_timeout_s!r}"
            )
        self._path: Final = os.path.abspath(raw)
        self._synchronous: Final = synchronous
        self._busy_timeout_s: Final = float(busy_timeout_s)
        self._indexes: Final = bool(indexes)
        self._conn: sqlite3.Connection | None = None
        # One worker thread at a time uses the connection: the limiter is held
        # until the thread finishes, also when the waiting task was cancelled.
        self._limiter: Final = trio.CapacityLimiter(1)
        self._last_id = 0

    @property
    def durable(self) -> bool:
        """Always True: `append` returns only once its events are on disk."""
        return True

    @property
    def path(self) -> str:
        """The database file, as an absolute path."""
        return self._path

    @property
    def synchronous(self) -> Literal["FULL", "NORMAL"]:
        """The SQLite ``synchronous`` mode commits use (see the class docs)."""
        return self._synchronous

    def describe(self) -> str:
        """``"sqlite:"`` followed by the absolute path of the file."""
        return f"sqlite:{self._path}"

    def __repr__(self) -> str:
        state = f"open, last id {self._last_id}" if self._conn is not None else "closed"
        return f"<SQLiteBackend {self._path!r} synchronous={self._synchronous} {state}>"

    async def _run(self, fn: Callable[[], _T]) -> _T:
        # abandon_on_cancel=False (Trio's default, spelled out because it matters):
        # a cancelled caller waits for the thread, so a transaction is never left
        # half-way and the connection is never used by two threads at once.
        return await trio.to_thread.run_sync(fn, limiter=self._limiter, abandon_on_cancel=False)

    async def _connection(self, what: str) -> sqlite3.Connection:
        if self._conn is None:
            await trio.lowlevel.checkpoint()  # a checkpoint on the error path too
            raise trio.ClosedResourceError(
                f"cannot {what}: {self!r} is not open (call `await backend.open()` first)"
            )
        return self._conn

    async def open(self) -> Recovered:
        """Open the file (creating it and its tables if needed) and read back what it holds.

        Called by the EventStore on every start of the service. If the backend is
        already open, its connection is closed first, so a store that crashed
        before it could close still reopens cleanly.

        Returns:
            The retained events in ascending id order, and the highest id ever
            stored (also when all were pruned).

        Raises:
            IncompatibleDatabaseError: The file was written by a newer trioscope
                (a higher ``PRAGMA user_version``), is an SQLite database that
                trioscope did not create, or cannot use a WAL journal.
            sqlite3.DatabaseError: The file is not an SQLite database, or cannot
                be read or created.
        """
        await self.aclose()
        path, synchronous, timeout_s = self._path, self._synchronous, self._busy_timeout_s
        indexes = self._indexes
        conn = await self._run(lambda: _open_sync(path, synchronous, timeout_s, indexes))
        self._conn = conn
        try:
            recovered = await self._run(lambda: _recover_sync(conn))
        except BaseException:
            await self.aclose()
            raise
        self._last_id = recovered.last_id
        return recovered

    async def append(self, events: Sequence[Event]) -> None:
        """Store *events* in one transaction; return only once they are on disk.

        All the events are stored, or (if it raises) none are. An empty sequence
        is a checkpoint and nothing else.

        Args:
            events: Stored events (ids assigned), ids strictly ascending and above
                every id stored so far in this file.

        Raises:
            ValueError: An id is not above the previous one or the last id stored
                (ids are never reused), or an event's data holds a NaN or infinite float.
            TypeError: An event's data holds a value JSON cannot encode.
            trio.ClosedResourceError: The backend is not open.
            sqlite3.Error: SQLite failed (disk full, I/O error, lock timeout...);
                the transaction was rolled back.
        """
        conn = await self._connection("append events")
        if not events:
            await trio.lowlevel.checkpoint()
            return
        previous = self._last_id
        for index, event in enumerate(events):
            if event.id <= previous:
                await trio.lowlevel.checkpoint()
                raise ValueError(
                    f"cannot append event {index} of the batch: its id {event.id} is not above "
                    f"{previous} (ids must be ascending and above every id stored; "
                    "they are never reused)"
                )
            previous = event.id
        await self._run(lambda: _append_sync(conn, events))
        self._last_id = max(self._last_id, previous)

    async def prune_through(self, last_id: int) -> None:
        """Delete every event whose id is <= *last_id*, in one transaction.

        The highest id stored is kept, so ids are never reused after pruning.

        Raises:
            trio.ClosedResourceError: The backend is not open.
            sqlite3.Error: SQLite failed; nothing was deleted.
        """
        conn = await self._connection("prune events")
        await self._run(lambda: _prune_sync(conn, last_id))

    async def aclose(self) -> None:
        """Close the connection; a no-op if it is not open. Idempotent.

        It waits for a call in progress on the connection (at most the busy
        timeout plus `CLOSE_GRACE_S`), shielded from cancellation so that a
        crashing store still releases the file; a cancelled caller then gets its
        `trio.Cancelled` at the end. If the wait times out, the connection is left
        for the garbage collector (the file stays consistent: SQLite never depends
        on a clean close).
        """
        conn, self._conn = self._conn, None
        if conn is None:
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(self._busy_timeout_s + CLOSE_GRACE_S, shield=True):
            await self._run(conn.close)
        await trio.lowlevel.checkpoint()
