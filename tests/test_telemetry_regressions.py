"""Regressions found by review of the telemetry change (each failed on a3118a4).

1. The origin of a crash was written onto the user's exception: a frozen
   exception made `crashed()` raise (the caller waited for its timeout), an
   exception whose ``__getattr__`` raised broke the supervisor's manager, and a
   shared exception raised again kept the first request's id.
2. A handler raising a BaseException that is not an Exception (pytest's
   ``Failed``, ``SystemExit``) reached the emitter: the call was never
   answered, the handler stayed attached, a supervisor's manager broke.
3. An owned task's crash was blamed on the request whose handler happened to
   run (or on none when idle), not on the request that started the task.
4. After a failed restart, the restarts, the give-up and the escalation lost
   the correlation id.
5. The service task kept the last request's id after its handler: an orderly
   ``terminate`` ran with it.
8. A HANDLER_FAILURE handler detached for failing was called again.
9. ``execute`` from a task whose registry had closed reached enclosing scopes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import trio
import trio.testing

import trioscope
from trioscope import telemetry
from trioscope.testing import wait_for_restart, wait_for_service

pytestmark = pytest.mark.trioscope_scope

Seen = list[tuple[str, Any, Any]]

SUPERVISION = [("trioscope", "child", k) for k in ("exit", "restart", "start")] + [
    ("trioscope", "supervisor", "give_up")
]


def record(seen: Seen) -> telemetry.Handler:
    def handler(event: tuple[str, ...], _m: Any, md: Any) -> None:
        seen.append((event[-1], md.get("child"), md.get("correlation_id")))

    return handler


@dataclasses.dataclass(frozen=True)
class FrozenError(Exception):
    code: int


class LookupHappyError(Exception):
    def __getattr__(self, name: str) -> object:
        raise KeyError(name)  # an API error that looks every field up


class Fragile(trioscope.Service):
    shared = RuntimeError("the pool is broken")  # one error object, raised again

    async def frozen(self) -> None:
        raise FrozenError(7)

    async def lookup(self) -> None:
        raise LookupHappyError("no")

    async def pool(self) -> None:
        raise self.shared


async def test_1_a_frozen_exception_crashes_the_service_and_the_caller_hears_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: Seen = []
    async with trioscope.open_registry(isolated=True):
        telemetry.attach("rec", SUPERVISION, record(seen))
        async with trioscope.open_supervisor([Fragile.child_spec(name="f")]):
            start = trio.current_time()
            with trioscope.correlate("r1"), pytest.raises(trioscope.ServiceCrashedError) as info:
                await trioscope.call("f", Fragile.frozen)
            assert trio.current_time() == start  # no timeout
            assert info.value.__cause__ == FrozenError(7)
            await trioscope.wait_for_service("f")
    assert ("exit", "f", "r1") in seen
    assert ("restart", "f", "r1") in seen


async def test_1_an_exception_whose_getattr_raises_leaves_the_manager_alone() -> None:
    seen: Seen = []
    async with trioscope.open_registry(isolated=True):
        telemetry.attach("rec", SUPERVISION, record(seen))
        async with trioscope.open_supervisor([Fragile.child_spec(name="f")]):
            with trioscope.correlate("r2"), pytest.raises(trioscope.ServiceCrashedError):
                await trioscope.call("f", Fragile.lookup)
            await trioscope.wait_for_service("f")
    assert [s for s in seen if s[0] != "start"] == [("exit", "f", "r2"), ("restart", "f", "r2")]


async def test_1_an_exception_raised_again_belongs_to_the_request_that_raised_it_now() -> None:
    seen: Seen = []
    async with trioscope.open_registry(isolated=True):
        telemetry.attach("rec", SUPERVISION, record(seen))
        async with trioscope.open_supervisor([Fragile.child_spec(name="f")], max_restarts=5):
            for request in ("A", "B"):
                with trioscope.correlate(request), pytest.raises(trioscope.ServiceCrashedError):
                    await trioscope.call("f", Fragile.pool)
                await trioscope.wait_for_service("f")
    assert [s for s in seen if s[0] != "start"] == [
        ("exit", "f", "A"),
        ("restart", "f", "A"),
        ("exit", "f", "B"),
        ("restart", "f", "B"),
    ]


class StrictFailure(BaseException):
    """As pytest's Failed: a BaseException that is not an Exception."""


class Echo(trioscope.Service):
    async def echo(self, text: str) -> str:
        return text


async def test_2_a_handler_raising_a_base_exception_is_detached_and_the_emitter_goes_on() -> None:
    failures: list[object] = []

    def strict(event: object, _m: object, _md: object) -> None:
        raise StrictFailure(f"unexpected {event}")

    async with trioscope.open_registry(isolated=True):
        telemetry.attach(
            "failures", [telemetry.HANDLER_FAILURE], lambda _e, _m, md: failures.append(md)
        )
        telemetry.attach("strict", [("trioscope", "call", "start"), *SUPERVISION], strict)
        async with trioscope.open_supervisor([Echo.child_spec(name="echo")]) as sup:
            assert await trioscope.call("echo", Echo.echo, "hi") == "hi"
            assert await trioscope.call("echo", Echo.echo, "again") == "again"
            assert sup.which_children()[0].restarts == 0
        assert [h.handler_id for h in telemetry.handlers()] == ["failures"]
    assert len(failures) == 1


async def test_2_a_supervisors_manager_survives_a_base_exception_from_a_handler() -> None:
    def strict(event: object, _m: object, _md: object) -> None:
        raise StrictFailure(f"unexpected {event}")

    async with trioscope.open_registry(isolated=True):
        telemetry.attach("strict", [("trioscope", "child", "restart")], strict)
        async with trioscope.open_supervisor([Fragile.child_spec(name="f")]) as sup:
            with pytest.raises(trioscope.ServiceCrashedError):
                await trioscope.call("f", Fragile.pool)
            ref = await trioscope.wait_for_service("f")
            assert sup.which_children()[0].restarts == 1
            assert ref.incarnation > 0


class Worker(trioscope.Service):
    async def kick(self) -> None:
        self.start_soon(self._job)

    async def _job(self) -> None:
        await trio.sleep(1)
        raise RuntimeError("background job failed")

    async def slow(self) -> None:
        await trio.sleep(5)


async def test_3_an_owned_tasks_crash_belongs_to_the_request_that_started_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: Seen = []
    calls: list[tuple[str, str | None]] = []
    async with trioscope.open_registry(isolated=True):
        telemetry.attach("rec", SUPERVISION, record(seen))
        telemetry.attach(
            "calls",
            [("trioscope", "call", "exception")],
            lambda _e, _m, md: calls.append((md["kind"], md["correlation_id"])),
        )
        async with trioscope.open_supervisor([Worker.child_spec(name="w")]):
            with trioscope.correlate("A"):
                await trioscope.call("w", Worker.kick)
            with trioscope.correlate("B"), pytest.raises(trioscope.ServiceCrashedError) as info:
                await trioscope.call("w", Worker.slow)
            await trioscope.wait_for_service("w", after=None)
    # B's call ended because of the crash (its own event says so, with its own id)...
    assert calls == [("owned_crash", "B")]
    # ...but the crash began in A's task: the exit and restart say A.
    assert [s for s in seen if s[0] != "start"] == [("exit", "w", "A"), ("restart", "w", "A")]
    assert info.value._origin == ("'w'", "Worker._job", "A")


async def test_3_an_owned_tasks_crash_while_idle_still_names_its_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: Seen = []
    async with trioscope.open_registry(isolated=True):
        telemetry.attach("rec", SUPERVISION, record(seen))
        async with trioscope.open_supervisor([Worker.child_spec(name="w")]):
            first = await wait_for_service("w")
            with trioscope.correlate("A"):
                await trioscope.call("w", Worker.kick)
            await wait_for_restart("w", after=first)  # its job fails at t=1
            assert trio.current_time() == 1.0
    assert [s for s in seen if s[0] != "start"] == [("exit", "w", "A"), ("restart", "w", "A")]


class Db(trioscope.Service):
    incarnations = 0

    async def init(self) -> None:
        Db.incarnations += 1
        if Db.incarnations > 1:
            raise ConnectionError("db still down")

    async def query(self) -> None:
        raise ConnectionError("db went down")


async def test_4_failed_restarts_give_up_and_escalation_keep_the_request() -> None:
    Db.incarnations = 0
    seen: Seen = []
    inner = trioscope.supervisor_spec([Db.child_spec(name="db")], id="inner", max_restarts=2)

    async def run_tree() -> None:
        async with trioscope.open_supervisor([inner], id="outer", max_restarts=0):
            with trioscope.correlate("req-9"), pytest.raises(trioscope.ServiceCrashedError):
                await trioscope.call("db", Db.query)
            await trio.sleep_forever()

    async with trioscope.open_registry(isolated=True):
        telemetry.attach("rec", SUPERVISION, record(seen))
        with pytest.raises(trioscope.RestartIntensityExceededError):
            await run_tree()
    assert [s for s in seen if s[0] != "start"] == [
        ("exit", "db", "req-9"),
        ("restart", "db", "req-9"),
        ("restart", "db", "req-9"),
        ("give_up", "db", "req-9"),
        ("exit", "inner", "req-9"),
        ("give_up", "inner", "req-9"),
    ]


class Tidy(trioscope.Service):
    def __init__(self, notes: list[str | None]) -> None:
        self.notes = notes

    async def work(self) -> None:
        pass

    async def terminate(self, reason: BaseException | None) -> None:
        self.notes.append(trioscope.current_correlation_id())


async def test_5_an_orderly_terminate_belongs_to_no_earlier_request() -> None:
    notes: list[str | None] = []
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([Tidy.child_spec(notes, name="t")]),
    ):
        with trioscope.correlate("req-1"):
            await trioscope.call("t", Tidy.work)
    assert notes == [None]


async def test_8_a_failure_handler_detached_for_failing_is_not_called_again() -> None:
    calls: list[tuple[str, object]] = []

    def bad(name: str) -> telemetry.Handler:
        def handler(_e: object, _m: object, md: Any) -> None:
            calls.append((name, md.get("handler_id")))
            raise RuntimeError(name)

        return handler

    async with trioscope.open_registry(isolated=True):
        telemetry.attach("x", [("app", "e")], bad("x"))
        telemetry.attach("f1", [telemetry.HANDLER_FAILURE], bad("f1"))
        telemetry.attach("f2", [telemetry.HANDLER_FAILURE], bad("f2"))
        telemetry.execute(("app", "e"), {})
        assert telemetry.handlers() == []
    # x fails: f1 hears it and fails, which f2 hears (and fails); f2 is not called again.
    assert calls == [("x", None), ("f1", "x"), ("f2", "f1")]


async def test_9_execute_from_a_task_whose_scope_closed_reaches_nobody() -> None:
    seen: list[object] = []
    async with trioscope.open_registry(), trio.open_nursery() as nursery:
        telemetry.attach("outer", [("app", "late")], lambda e, _m, _md: seen.append(e))
        go = trio.Event()
        async with trioscope.open_registry():

            async def late() -> None:
                await go.wait()
                telemetry.execute(("app", "late"), {})

            nursery.start_soon(late)
        go.set()
    assert seen == []
