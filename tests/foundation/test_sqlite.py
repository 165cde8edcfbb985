"""SQLiteBackend: what it keeps, what it refuses, and how it behaves under cancellation."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from _guards import checkpoints_even_when_raising

from trioscope.foundation import Event, Recovered
from trioscope.foundation._sqlite import IncompatibleDatabaseError, SQLiteBackend

pytestmark = pytest.mark.trioscope_scope


def ev(i: int, **data: object) -> Event:
    """Event *i* as a store would pass it: id and timestamps assigned."""
    return Event(
        f"type.{i % 3}",
        {"i": i, **data},  # type: ignore[dict-item]
        correlation_id=f"req-{i // 4}" if i % 2 else None,
        parent_id=i - 1 if i > 1 else None,
        id=i,
        monotonic_ns=1_000 + i,
        wall_ns=1_700_000_000_000_000_000 + i,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


async def reopened(path: Path) -> Recovered:
    backend = SQLiteBackend(path)
    try:
        return await backend.open()
    finally:
        await backend.aclose()


@contextmanager
def side_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection to the file, as another process would have."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


async def test_roundtrip_keeps_every_field(db: Path) -> None:
    backend = SQLiteBackend(db)
    assert await backend.open() == Recovered(events=(), last_id=0)
    odd = Event(
        "odd.data",
        {
            "text": 'naïve ☃ \u2028 "quoted" \\ end',
            "nested": {"list": [1, 2.5, None, True, "x", {"deep": []}], "empty": {}},
            "big": 2**70,
            "float": 0.1 + 0.2,
            "neg": -1e-300,
        },
        correlation_id="",
        parent_id=7,
        id=8,
        monotonic_ns=0,
        wall_ns=2**62,
    )
    events = [ev(1), ev(2), ev(3), odd]
    await backend.append(events)
    await backend.aclose()

    recovered = await reopened(db)
    assert recovered == Recovered(events=tuple(events), last_id=8)
    assert recovered.events[3].data == odd.data


async def test_batches_accumulate_in_id_order(db: Path) -> None:
    backend = SQLiteBackend(db)
    await backend.open()
    await backend.append([ev(1), ev(2)])
    await backend.append([])  # nothing, and no error
    await backend.append([ev(5)])  # gaps are fine: ids only ascend
    await backend.append([ev(6), ev(7), ev(9)])
    await backend.aclose()
    recovered = await reopened(db)
    assert [e.id for e in recovered.events] == [1, 2, 5, 6, 7, 9]
    assert recovered.last_id == 9


async def test_large_batch_spans_several_insert_statements(db: Path) -> None:
    events = [ev(i) for i in range(1, 301)]  # more than one chunk of rows per INSERT
    backend = SQLiteBackend(db)
    await backend.open()
    await backend.append(events)
    await backend.aclose()
    assert await reopened(db) == Recovered(events=tuple(events), last_id=300)


async def test_prune_through_keeps_later_events_and_the_last_id(db: Path) -> None:
    backend = SQLiteBackend(db)
    await backend.open()
    await backend.append([ev(i) for i in range(1, 6)])
    await backend.prune_through(2)
    await backend.aclose()
    assert await reopened(db) == Recovered(events=tuple(ev(i) for i in range(3, 6)), last_id=5)

    backend = SQLiteBackend(db)
    await backend.open()
    await backend.prune_through(5)  # everything
    await backend.aclose()
    assert await reopened(db) == Recovered(events=(), last_id=5)


async def test_ids_are_never_reused_after_pruning_everything_and_reopening(db: Path) -> None:
    backend = SQLiteBackend(db)
    await backend.open()
    await backend.append([ev(1), ev(2), ev(3)])
    await backend.prune_through(10)
    await backend.aclose()

    backend = SQLiteBackend(db)
    assert await backend.open() == Recovered(events=(), last_id=3)
    with pytest.raises(
        ValueError,
        match=r"^cannot append event 0 of the batch: its id 3 is not above 3 \(ids must be "
        r"ascending and above every id stored; they are never reused\)$",
    ):
        await backend.append([ev(3)])
    await backend.append([ev(4)])
    await backend.aclose()
    assert await reopened(db) == Recovered(events=(ev(4),), last_id=4)


async def test_append_refuses_ids_not_ascending(db: Path) -> None:
    backend = SQLiteBackend(db)
    await backend.open()
    await backend.append([ev(1), ev(2)])
    with pytest.raises(ValueError, match=r"^cannot append event 0 of the batch: its id 2 is not"):
        await backend.append([ev(2)])
    with pytest.raises(ValueError, match=r"^cannot append event 2 of the batch: its id 4 is not"):
        await backend.append([ev(3), ev(5), ev(4)])
    await backend.aclose()
    assert (await reopened(db)).last_id == 2


async def test_another_writer_on_the_same_file_cannot_make_ids_collide(db: Path) -> None:
    first, second = SQLiteBackend(db), SQLiteBackend(db)
    await first.open()
    await second.open()  # both saw last id 0
    await first.append([ev(1), ev(2), ev(3)])
    with pytest.raises(
        ValueError,
        match=r"^cannot append event id 2: the database already holds ids up to 3 \(another "
        r"writer uses the same file\?\), and ids are never reused$",
    ):
        await second.append([ev(2)])
    await first.aclose()
    await second.aclose()
    assert await reopened(db) == Recovered(events=(ev(1), ev(2), ev(3)), last_id=3)


async def test_a_failure_mid_batch_stores_nothing_of_it(db: Path) -> None:
    backend = SQLiteBackend(db)
    await backend.open()
    await backend.append([ev(1), ev(2)])
    with side_connection(db) as side:
        # The 4th row of the next batch fails inside SQLite, after three were inserted.
        # RAISE(FAIL) keeps those three in the transaction (ABORT would undo the whole
        # INSERT statement): only the backend's ROLLBACK can remove them.
        side.execute(
            "CREATE TRIGGER fail BEFORE INSERT ON events WHEN NEW.id = 6"
            " BEGIN SELECT RAISE(FAIL, 'injected failure'); END"
        )
    with pytest.raises(sqlite3.IntegrityError, match=r"^injected failure$"):
        await backend.append([ev(3), ev(4), ev(5), ev(6), ev(7)])
    # The connection is usable again, and the ids of the failed batch were not used.
    await backend.append([ev(3)])
    await backend.aclose()
    assert await reopened(db) == Recovered(events=(ev(1), ev(2), ev(3)), last_id=3)


async def test_data_that_is_not_json_stores_nothing(db: Path) -> None:
    backend = SQLiteBackend(db)
    await backend.open()
    bad = Event("bad", {"x": float("nan")}, id=2, monotonic_ns=1, wall_ns=1)
    with pytest.raises(ValueError, match=r"^Out of range float values are not JSON compliant"):
        await backend.append([ev(1), bad])
    await backend.append([ev(1)])
    await backend.aclose()
    assert await reopened(db) == Recovered(events=(ev(1),), last_id=1)


async def test_file_is_wal_with_the_chosen_synchronous_mode(db: Path) -> None:
    for mode, level in (("FULL", 2), ("NORMAL", 1)):
        backend = SQLiteBackend(db, synchronous=mode)  # type: ignore[arg-type]
        await backend.open()
        assert backend._conn is not None
        assert backend._conn.execute("PRAGMA synchronous").fetchone() == (level,)
        assert backend.synchronous == mode
        await backend.aclose()
    with side_connection(db) as side:
        assert side.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert side.execute("PRAGMA user_version").fetchone() == (1,)


async def test_a_file_from_a_newer_version_is_refused_untouched(db: Path) -> None:
    with side_connection(db) as side:
        side.execute("PRAGMA user_version = 99")
    backend = SQLiteBackend(db)
    with pytest.raises(
        IncompatibleDatabaseError,
        match=rf"^cannot open event database {re.escape(repr(str(db)))}: it was written with "
        r"layout version 99, and this trioscope reads versions up to 1: upgrade trioscope, "
        r"or point events.sqlite_path at another file$",
    ) as caught:
        await backend.open()
    assert caught.value.path == str(db)
    assert "closed" in repr(backend)
    with side_connection(db) as side:
        assert side.execute("PRAGMA user_version").fetchone() == (99,)
        assert side.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
        assert side.execute("PRAGMA journal_mode").fetchone() == ("delete",)


async def test_a_database_trioscope_did_not_create_is_refused_untouched(db: Path) -> None:
    with side_connection(db) as side:
        side.execute("CREATE TABLE events (whatever TEXT)")
    with pytest.raises(
        IncompatibleDatabaseError,
        match=r"^cannot open event database .*: it is an SQLite database that trioscope did "
        r"not create \(it has tables but no trioscope layout version\)$",
    ):
        await SQLiteBackend(db).open()
    with side_connection(db) as side:
        assert side.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert side.execute("SELECT name FROM sqlite_master").fetchall() == [("events",)]


async def test_indexes_follow_the_flag_and_the_events_stay(db: Path) -> None:
    def index_names() -> list[str]:
        with side_connection(db) as side:
            rows = side.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            return sorted(name for (name,) in rows)

    for indexes, expected in (
        (True, ["events_by_correlation", "events_by_type"]),
        (False, []),
        (True, ["events_by_correlation", "events_by_type"]),
    ):
        backend = SQLiteBackend(db, indexes=indexes)
        recovered = await backend.open()
        await backend.append([ev(recovered.last_id + 1)])
        await backend.aclose()
        assert index_names() == expected
    assert [e.id for e in (await reopened(db)).events] == [1, 2, 3]
    with side_connection(db) as side:  # the file answers on its own
        plan = side.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM events WHERE correlation_id = 'req-0'"
        ).fetchall()
        assert "events_by_correlation" in str(plan)


async def test_a_file_that_is_not_a_database_is_an_sqlite_error(db: Path) -> None:
    await trio.Path(db).write_bytes(b"not a database, just some text that is long enough" * 100)
    with pytest.raises(sqlite3.DatabaseError, match=r"^file is not a database$"):
        await SQLiteBackend(db).open()


async def test_use_before_open_and_after_close_is_a_closed_resource_error(db: Path) -> None:
    backend = SQLiteBackend(db)
    closed = re.escape(f"{backend!r} is not open (call `await backend.open()` first)")
    with pytest.raises(trio.ClosedResourceError, match=rf"^cannot append events: {closed}$"):
        await backend.append([ev(1)])
    await backend.open()
    await backend.aclose()
    await backend.aclose()  # idempotent
    with pytest.raises(trio.ClosedResourceError, match=rf"^cannot prune events: {closed}$"):
        await backend.prune_through(1)


async def test_open_again_reopens(db: Path) -> None:
    backend = SQLiteBackend(db)
    await backend.open()
    await backend.append([ev(1)])
    assert await backend.open() == Recovered(events=(ev(1),), last_id=1)
    await backend.append([ev(2)])
    await backend.aclose()
    assert (await reopened(db)).last_id == 2


def test_describe_repr_and_durable(db: Path) -> None:
    backend = SQLiteBackend(db, synchronous="NORMAL")
    assert backend.durable is True
    assert backend.path == str(db)
    assert backend.describe() == f"sqlite:{db}"
    assert repr(backend) == f"<SQLiteBackend {str(db)!r} synchronous=NORMAL closed>"


async def test_repr_when_open(db: Path) -> None:
    backend = SQLiteBackend(db)
    await backend.open()
    await backend.append([ev(1), ev(4)])
    assert repr(backend) == f"<SQLiteBackend {str(db)!r} synchronous=FULL open, last id 4>"
    await backend.aclose()


def test_relative_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert SQLiteBackend("events.db").path == str(tmp_path / "events.db")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"path": ":memory:"},
            "SQLiteBackend path must be a file path, got ':memory:' "
            "(for events kept in memory only, use the memory backend)",
        ),
        (
            {"path": ""},
            "SQLiteBackend path must be a file path, got '' "
            "(for events kept in memory only, use the memory backend)",
        ),
        (
            {"path": "x.db", "synchronous": "OFF"},
            "SQLiteBackend synchronous must be 'FULL' or 'NORMAL', got 'OFF'",
        ),
        (
            {"path": "x.db", "busy_timeout_s": -1.0},
            "SQLiteBackend busy_timeout_s must be a finite number >= 0, got -1.0",
        ),
        (
            {"path": "x.db", "busy_timeout_s": float("inf")},
            "SQLiteBackend busy_timeout_s must be a finite number >= 0, got inf",
        ),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}$"):
        SQLiteBackend(**kwargs)  # type: ignore[arg-type]


async def test_a_cancelled_append_is_not_abandoned_mid_commit(db: Path) -> None:
    """Cancelled while its thread waits for the file's lock, append still commits and returns;
    the cancellation arrives at the caller's next checkpoint."""
    backend = SQLiteBackend(db)
    await backend.open()
    returned: list[bool] = []
    with side_connection(db) as side:
        side.execute("BEGIN IMMEDIATE")  # holds the write lock: the append's thread waits
        async with trio.open_nursery() as nursery:

            async def writer(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
                with trio.CancelScope() as scope:
                    task_status.started(scope)
                    await backend.append([ev(1), ev(2)])
                    returned.append(True)
                    await trio.lowlevel.checkpoint()
                    pytest.fail("the cancellation should have arrived at this checkpoint")

            scope = await nursery.start(writer)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert not returned  # still waiting for its thread, cancelled or not
            side.execute("COMMIT")  # release the lock
    assert returned == [True]
    assert scope.cancelled_caught
    await backend.aclose()
    assert [e.id for e in (await reopened(db)).events] == [1, 2]


async def test_a_cancelled_append_waiting_for_its_turn_stores_nothing(db: Path) -> None:
    backend = SQLiteBackend(db)
    await backend.open()

    async def second(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await backend.append([ev(2)])  # waits for the first one's thread
        assert scope.cancelled_caught

    with side_connection(db) as side:
        side.execute("BEGIN IMMEDIATE")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backend.append, [ev(1)])  # in its thread, waiting for the lock
            await trio.testing.wait_all_tasks_blocked()
            (await nursery.start(second)).cancel()
            await trio.testing.wait_all_tasks_blocked()
            side.execute("COMMIT")
    await backend.aclose()
    assert [e.id for e in (await reopened(db)).events] == [1]


async def test_aclose_when_cancelled_still_closes(db: Path) -> None:
    backend = SQLiteBackend(db)
    await backend.open()
    with trio.CancelScope() as scope:
        scope.cancel()
        await backend.aclose()
        pytest.fail("aclose should deliver the cancellation after closing")
    assert scope.cancelled_caught
    assert "closed" in repr(backend)
    assert (await reopened(db)).last_id == 0


async def test_every_path_checkpoints_even_when_it_does_no_io(db: Path) -> None:
    backend = SQLiteBackend(db)
    with checkpoints_even_when_raising(), pytest.raises(trio.ClosedResourceError):
        await backend.append([ev(1)])
    with checkpoints_even_when_raising(), pytest.raises(trio.ClosedResourceError):
        await backend.prune_through(1)
    with checkpoints_even_when_raising():
        await backend.aclose()  # not open: nothing to do
    await backend.open()
    await backend.append([ev(1)])
    with checkpoints_even_when_raising():
        await backend.append([])
    with checkpoints_even_when_raising(), pytest.raises(ValueError, match=r"^cannot append"):
        await backend.append([ev(1)])
    await backend.aclose()
