"""Regression tests for issue 7: supervisors that never hang, lose an error or leak a group.

One section per numbered item of the issue. Item 15 (the mailbox), the
``Registry.wait_for`` half of item 13 and the service half of item 10 are tested
elsewhere.
"""

# How each item failed on the code before the rewrite (11f4646), one line per item:
#  1: start_child back at t=202 (plain) / 50 (service; watchdog), not 1; open_supervisor: 50, not 2
#  2: the block was left when the restart's start completed: t=104 / t=107, not 5 / 7
#  3: control calls waited for the failing loop: RestartIntensityExceededError came out instead
#  4: c3 started when the backoff ended although c2 was terminated: events ['start c3']
#  5: ExceptionGroup([Cancelled, ValueError]), BaseExceptionGroup([SystemExit]) or ([Fatal]) out
#  6: delete_child accepted (DID NOT RAISE); the manager then died with KeyError: 't'
#  7: the handler's calls waited for the lock until the budget: left at t=10, not 1; ChildStateError
#  8: the interrupt came out at t=2 (or 10, the test's bound), not 0.01, after 'start late'
#  9: the SIGINT was swallowed (stop hung); a startup signal waited for fail_after(50): TooSlowError
# 10: no ERROR record from trioscope.supervisor: [] != [OSError('cleanup failed')]
# 11: start_child / restart_child returned None instead of the started value
# 12: registered in the caller's scope: names (test, inner) == ([], ['s']), not (['s'], [])
# 13: MaxChildrenError / duplicate-id ValueError: "assert_checkpoints block did not yield!"
# 14: MaxChildrenError right after the only child was seen down (about half of the rounds)
# 16: TypeError: unexpected keyword argument 'auto_shutdown'; significant children accepted
# 17: id 'Stack-1', not 'Stack'; duplicates accepted / refused by a dynamic one; 2nd started() ran
# 18: the dynamic supervisor stopped children one after another: t=6 / 4, not 2 / 3

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from _children import Boom, Children
from _guards import no_stray_cancel
from trio.testing import wait_all_tasks_blocked

import trioscope
from trioscope import (
    Backoff,
    ChildSpec,
    ChildStateError,
    Restart,
    RestartIntensityExceededError,
    Strategy,
    Supervisor,
    SupervisorClosedError,
    UnknownChildError,
    open_dynamic_supervisor,
    open_supervisor,
    supervisor_spec,
)
from trioscope.testing import TestScope

pytestmark = pytest.mark.trioscope_scope


class Fatal(BaseException):
    """Neither an Exception nor an interrupt (as pytest's ``Failed``): still a crash."""


def now() -> str:
    """The mock clock's time, for event strings."""
    return f"{trio.current_time():g}"


@pytest.fixture
def registry(trioscope_scope: TestScope) -> trioscope.Registry:
    """The test scope's registry (requesting the scope, the test runs in it)."""
    return trioscope_scope.registry


async def _call(fn: Callable[..., Any], *args: Any) -> object:
    """Call *fn*, awaiting the result if it is a coroutine (delete_child is not async)."""
    result = fn(*args)
    return await result if inspect.isawaitable(result) else result


# == 1. A cancelled start returns promptly ===========================================


class Handshake(trioscope.Service):
    """A service whose ``init`` runs a handshake nothing may interrupt (a shielded section)."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def init(self) -> None:
        self.events.append(f"handshake from {now()}")
        with trio.CancelScope(shield=True):
            await trio.sleep(2)
        self.events.append(f"handshake done at {now()}")

    async def boom(self) -> None:
        raise Boom("unstuck by the test's watchdog")


async def _unstick(name: str, at: float) -> None:
    """Bound a test that hangs on the old code: crash service *name* at time *at*.

    Before the fix, a service whose start was abandoned ran forever, shielded,
    and its starter waited for it. A correct supervisor has ended it long before.
    """
    await trio.sleep_until(at)
    ref = trioscope.whereis(name)
    if ref is not None:
        ref.try_cast(Handshake.boom)


async def test_cancelled_start_child_returns_at_once_while_the_child_is_shielded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Item 1: a cancelled start_child returns as soon as its own cancel is delivered.

    The child is in a shielded handshake (t=0..2) when the caller is cancelled at
    t=1: the caller gets Cancelled at t=1 without waiting for it, the supervisor
    answers control calls at t=1, and the abandoned child is cancelled: it ends
    right after its shield (t=2), even though it calls started() then, and is
    not kept (nor restarted, although PERMANENT).
    """
    kids = Children()
    events: list[str] = []

    async def handshake(*, task_status: trio.TaskStatus[str]) -> None:
        events.append(f"h starts at {now()}")
        try:
            with trio.CancelScope(shield=True):
                await trio.sleep(2)
            task_status.started("h")
            await trio.sleep(200)
        finally:
            events.append(f"h ends at {now()}")

    async with open_supervisor([kids.spec("a")], id="sup") as sup:
        with trio.move_on_after(1) as caller:
            await sup.start_child(ChildSpec("h", handshake))
        assert trio.current_time() == 1
        assert caller.cancelled_caught
        # The supervisor answers at once while the abandoned child is still shielded.
        await sup.terminate_child("a")
        assert await sup.start_child(kids.spec("b")) == "b"
        assert trio.current_time() == 1
        await trio.sleep(100)
        await wait_all_tasks_blocked()
        assert events == ["h starts at 0", "h ends at 2"]
        assert [(c.id, c.status) for c in sup.which_children()] == [
            ("a", "stopped"),
            ("b", "running"),
        ]
    assert kids.events == ["start a", "stop a", "start b", "stop b"]


async def test_cancelled_start_child_of_a_service_returns_at_once(
    autojump_clock: trio.testing.MockClock, registry: trioscope.Registry
) -> None:
    """Item 1: a service whose init is in a shielded handshake does not hold its starter.

    Cancelled at t=1, start_child returns at t=1; the service ends when its
    handshake does (t=2), is not kept and leaves no name behind. Before the
    fix it was shielded for good once it called started(), and start_child
    never returned (a watchdog crashes it at t=50 to bound the test).
    """
    events: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_unstick, "h", 50)
        async with open_supervisor([], id="sup") as sup:
            with trio.move_on_after(1) as caller:
                await sup.start_child(Handshake.child_spec(events, name="h"))
            assert trio.current_time() == 1
            assert caller.cancelled_caught
            await trio.sleep(5)
            await wait_all_tasks_blocked()
            assert events == ["handshake from 0", "handshake done at 2"]
            assert trioscope.whereis("h") is None
            assert sup.which_children() == []
        nursery.cancel_scope.cancel()


async def test_open_supervisor_cancelled_during_a_shielded_init_exits_when_the_shield_ends(
    autojump_clock: trio.testing.MockClock, registry: trioscope.Registry
) -> None:
    """Item 1: a cancelled open_supervisor abandons the start in progress.

    Cancelled at t=1 while the service's init is shielded until t=2, the block
    is left at t=2 (the soonest Trio allows), not when the service would end on
    its own (never: a watchdog crashes it at t=50 to bound the old code).
    """
    events: list[str] = []
    entered: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_unstick, "h", 50)
        with trio.move_on_after(1) as outer:
            async with open_supervisor([Handshake.child_spec(events, name="h")]):
                entered.append(trio.current_time())  # it must not be: the opener was cancelled
                await trio.sleep_forever()
        assert trio.current_time() == 2
        assert entered == []
        assert outer.cancelled_caught
        assert events == ["handshake from 0", "handshake done at 2"]
        assert trioscope.whereis("h") is None
        nursery.cancel_scope.cancel()


# == 2. Shutdown during a restart respects the budgets and outer cancels ==============


async def test_outer_cancel_during_a_plain_childs_slow_restart_is_not_held_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Item 2: an outer move_on_after ends the block although a restart is in progress.

    The child (shutdown=0.1) crashes at t=4; its restart takes 100 s to be ready.
    The outer deadline at t=5 abandons that start (a plain child is cancelled at
    once) and the block is left at t=5, not when the restart completes (t=104).
    """
    events: list[str] = []

    async def child(*, task_status: trio.TaskStatus[None]) -> None:
        run = sum(e.startswith("start") for e in events)
        events.append(f"start at {now()}")
        try:
            if run:
                await trio.sleep(100)  # a slow start on restart
            task_status.started()
            await trio.sleep(4)
        except trio.Cancelled:
            events.append(f"cancelled at {now()}")
            raise
        events.append(f"crash at {now()}")
        raise Boom("crash")

    with trio.move_on_after(5) as outer:
        async with open_supervisor([ChildSpec("p", child, shutdown=0.1)]) as sup:
            await trio.sleep_forever()
    assert outer.cancelled_caught
    assert trio.current_time() == 5
    assert events == ["start at 0", "crash at 4", "start at 4", "cancelled at 5"]
    assert [c.status for c in sup.which_children()] == ["stopped"]


class SlowRestart(trioscope.Service):
    """Its first init is instant; on a restart, init is shielded for 3 s, then takes 100 s more."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def init(self) -> None:
        restart = any(e.startswith("init") for e in self.events)
        self.events.append(f"init at {now()}")
        if restart:
            try:
                with trio.CancelScope(shield=True):
                    await trio.sleep(3)
                await trio.sleep(100)
            finally:
                self.events.append(f"init ends at {now()}")

    async def boom(self) -> None:
        raise Boom("crash")


async def test_outer_cancel_during_a_services_restart_does_not_wait_for_its_init(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Item 2: a service's restart in progress is stopped within its budget.

    The service (shutdown=1) crashes at t=4; its restarted init is shielded
    until t=7, then would take 100 s more. The outer deadline at t=5 stops it:
    whether the start is abandoned at once or given its 1 s budget, the shield
    (which Trio cannot cut) ends at t=7 and the init is cancelled right there,
    so the block is left at t=7, not after the whole init (t=107).
    """
    events: list[str] = []
    spec = SlowRestart.child_spec(events, shutdown=1)
    with trio.move_on_after(5) as outer:
        async with open_supervisor([spec]) as sup:
            ref = sup.which_children()[0].value
            assert isinstance(ref, trioscope.ServiceRef)
            await trio.sleep(4)
            with pytest.raises(trioscope.ServiceCrashedError):
                await ref.call(SlowRestart.boom)
            await trio.sleep_forever()
    assert outer.cancelled_caught
    assert trio.current_time() == 7
    assert events == ["init at 0", "init at 4", "init ends at 7"]
    assert [c.status for c in sup.which_children()] == ["stopped"]


# == 3. The supervisor answers while a child's restart keeps failing ==================


class FailingRestarts:
    """A child that runs until `crash`, then fails every restart: at once, or after *seconds*.

    ``attempts`` holds the time of each restart attempt, ``failures`` the errors.
    """

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.attempts: list[float] = []
        self.failures: list[Boom] = []
        self.first_attempt = trio.Event()
        self._ran = False
        self._crash = trio.Event()

    def crash(self) -> None:
        self._crash.set()

    async def __call__(self, *, task_status: trio.TaskStatus[str]) -> None:
        if not self._ran:
            self._ran = True
            task_status.started("bad")
            await self._crash.wait()
            raise Boom("first crash")
        self.attempts.append(trio.current_time())
        self.first_attempt.set()
        if self.seconds:
            await trio.sleep(self.seconds)
        error = Boom(f"attempt {len(self.attempts)}")
        self.failures.append(error)
        raise error


async def test_terminate_child_stops_a_restart_loop_that_fails_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Item 3: between failed restart attempts the supervisor answers terminate_child.

    Every restart fails at once (no backoff, max_restarts=100): terminate_child
    is answered between attempts, stops the retries and leaves the child
    "stopped"; no attempt follows, and the supervisor does not give up.
    """
    kids = Children()
    bad = FailingRestarts()
    specs = [kids.spec("a"), ChildSpec("bad", bad)]
    async with open_supervisor(specs, id="sup", max_restarts=100, max_seconds=5) as sup:
        bad.crash()
        await bad.first_attempt.wait()
        await sup.terminate_child("bad")
        made = len(bad.attempts)
        assert 1 <= made < 100  # answered long before the limit
        assert [(c.id, c.status, c.restart_at) for c in sup.which_children()] == [
            ("a", "running", None),
            ("bad", "stopped", None),
        ]
        await trio.sleep(10)
        await wait_all_tasks_blocked()
        assert len(bad.attempts) == made
    assert kids.events == ["start a", "stop a"]


async def test_restart_child_of_a_restarting_child_is_a_state_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Item 3: a child whose restart is pending (no delay) shows "restarting".

    restart_child of it is a ChildStateError (status "restarting") at once;
    terminate_child then ends the retries.
    """
    bad = FailingRestarts()
    async with open_supervisor(
        [ChildSpec("bad", bad)], id="sup", max_restarts=100, max_seconds=5
    ) as sup:
        bad.crash()
        await bad.first_attempt.wait()
        with pytest.raises(
            ChildStateError, match=r"^child 'bad' of supervisor 'sup' is restarting; "
        ) as info:
            await sup.restart_child("bad")
        assert (info.value.child_id, info.value.status) == ("bad", "restarting")
        assert [c.status for c in sup.which_children()] == ["restarting"]
        await sup.terminate_child("bad")
        assert [c.status for c in sup.which_children()] == ["stopped"]


async def test_terminate_child_during_a_slow_failing_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Item 3: a restart that takes 2 s to fail does not hold the supervisor.

    terminate_child at t=1 (during the first attempt) is answered no later than
    the end of that attempt: no second attempt is made, the child stays stopped.
    """
    kids = Children()
    bad = FailingRestarts(seconds=2)
    specs = [kids.spec("a"), ChildSpec("bad", bad)]
    # 3 restarts in 10 s: the old code gave up at t=6 instead of answering. (With
    # 8 in 10 s, as in the issue, it held the supervisor for ever: attempts every
    # 2 s never exceed the limit, in OTP's counting either.)
    async with open_supervisor(specs, id="sup", max_restarts=3, max_seconds=10) as sup:
        bad.crash()
        await trio.sleep(1)
        await sup.terminate_child("bad")
        await trio.sleep(20)
        await wait_all_tasks_blocked()
        assert bad.attempts == [0]
        assert [(c.id, c.status) for c in sup.which_children()] == [
            ("a", "running"),
            ("bad", "stopped"),
        ]
    assert kids.events == ["start a", "stop a"]


async def test_start_child_is_answered_during_a_failing_restart_loop_that_then_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Item 3: the loop yields to control calls and gives up when the window allows.

    Restarts take 2 s to fail; max_restarts=3 in 10 s. Attempts are made (and
    counted) at t=0, 2 and 4; the 4th, due at t=6, would exceed the limit, so
    the supervisor gives up at t=6 with the 3rd failure as the cause. A
    start_child at t=1 is answered meanwhile, and that child is stopped on the
    way out, in reverse start order.
    """
    kids = Children()
    bad = FailingRestarts(seconds=2)
    added: list[object] = []

    async def run() -> None:
        specs = [kids.spec("a"), ChildSpec("bad", bad)]
        async with open_supervisor(specs, id="sup", max_restarts=3, max_seconds=10) as sup:
            bad.crash()
            await trio.sleep(1)
            added.append(await sup.start_child(kids.spec("late")))
            await trio.sleep_forever()

    with no_stray_cancel(), pytest.raises(RestartIntensityExceededError) as info:
        await run()
    assert added == ["late"]
    assert kids.events == ["start a", "start late", "stop late", "stop a"]
    assert bad.attempts == [0, 2, 4]
    assert trio.current_time() == 6
    assert type(info.value) is RestartIntensityExceededError
    assert (info.value.supervisor, info.value.child_id) == ("sup", "bad")
    assert info.value.__cause__ is bad.failures[-1]


# == 4. REST_FOR_ONE keeps its order ==================================================


async def test_rest_for_one_does_not_start_a_later_child_while_the_failed_one_is_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Item 4: c2 crashes (c2, c3 wait in backoff); terminate_child("c2") meanwhile.

    When the backoff ends c3 must not start: it stays stopped while c2 is stopped.
    """
    kids = Children()
    specs = [kids.spec(n) for n in ("c1", "c2", "c3")]
    async with open_supervisor(
        specs, strategy=Strategy.REST_FOR_ONE, backoff=Backoff(initial=5, jitter=0)
    ) as sup:
        kids.take()
        kids.crash("c2")
        await wait_all_tasks_blocked()
        assert kids.take() == ["crash c2", "stop c3"]
        assert [c.status for c in sup.which_children()] == ["running", "backoff", "backoff"]
        await trio.sleep(1)
        await sup.terminate_child("c2")
        await trio.sleep(10)
        await wait_all_tasks_blocked()
        assert kids.take() == []
        assert [(c.id, c.status, c.restart_at) for c in sup.which_children()] == [
            ("c1", "running", None),
            ("c2", "stopped", None),
            ("c3", "stopped", None),
        ]
    assert kids.take() == ["stop c1"]


# == 5. No exception group escapes =====================================================


async def _raise_on_cancel(events: list[str]) -> None:
    try:
        await trio.sleep_forever()
    finally:
        events.append("cleanup fails")
        raise ValueError("cleanup failed")


async def _with_a_nursery_failing_on_cancel(
    events: list[str], *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """A plain child whose nursery has a task that fails when cancelled: [Cancelled, ValueError]."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_raise_on_cancel, events)
        task_status.started("p")
        await trio.sleep_forever()


@pytest.mark.parametrize("how", ["terminate_child", "leave the block"])
async def test_a_plain_child_whose_subtask_fails_on_cancel_is_stopped_without_a_group(
    how: str,
) -> None:
    """Item 5: stopping such a child neither leaks an ExceptionGroup nor ends the supervisor."""
    events: list[str] = []
    spec = ChildSpec("p", functools.partial(_with_a_nursery_failing_on_cancel, events))
    async with open_supervisor([spec]) as sup:
        await wait_all_tasks_blocked()
        if how == "terminate_child":
            await sup.terminate_child("p")
            assert [(c.status, c.restarts) for c in sup.which_children()] == [("stopped", 0)]
            await wait_all_tasks_blocked()
    assert events == ["cleanup fails"]
    assert [(c.status, c.restarts) for c in sup.which_children()] == [("stopped", 0)]


class Spawner(trioscope.Service):
    """A service whose handler runs a nursery; its task fails when cancelled."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def fan_out(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_raise_on_cancel, self.events)
            await trio.sleep_forever()

    async def exit_in_subtask(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_exit_soon)
            await trio.sleep_forever()

    async def fatal(self) -> None:
        raise Fatal("neither Exception nor interrupt")

    async def ping(self) -> str:
        return "pong"


async def test_a_service_killed_while_its_handler_nursery_fails_on_cancel_leaks_no_group() -> None:
    """Item 5: brutal kill (shutdown=0) during such a handler; the block exits without error."""
    events: list[str] = []
    async with open_supervisor([Spawner.child_spec(events, id="s", shutdown=0)]) as sup:
        ref = sup.which_children()[0].value
        assert isinstance(ref, trioscope.ServiceRef)
        await ref.cast(Spawner.fan_out)
        await wait_all_tasks_blocked()
    assert events == ["cleanup fails"]
    assert [c.status for c in sup.which_children()] == ["stopped"]


async def _exit_soon() -> None:
    await trio.lowlevel.checkpoint()
    sys.exit(3)


async def test_sys_exit_in_a_childs_subtask_comes_out_bare() -> None:
    """Item 5: sys.exit() in a plain child's subtask: a bare SystemExit, others stopped in order."""
    kids = Children()

    async def child(*, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            nursery.start_soon(_exit_soon)
            await trio.sleep_forever()

    async def run() -> None:
        async with open_supervisor([kids.spec("a"), ChildSpec("x", child), kids.spec("z")]):
            await trio.sleep_forever()

    with pytest.raises(SystemExit) as info:
        await run()
    assert type(info.value) is SystemExit
    assert info.value.code == 3
    assert kids.events == ["start a", "start z", "stop z", "stop a"]


async def test_sys_exit_in_a_handlers_subtask_comes_out_bare() -> None:
    """Item 5: the same from a service handler's nursery."""
    kids = Children()
    events: list[str] = []

    async def run() -> None:
        specs = [kids.spec("a"), Spawner.child_spec(events, id="s")]
        async with open_supervisor(specs) as sup:
            ref = sup.which_children()[1].value
            assert isinstance(ref, trioscope.ServiceRef)
            await ref.cast(Spawner.exit_in_subtask)
            await trio.sleep_forever()

    with pytest.raises(SystemExit) as info:
        await run()
    assert type(info.value) is SystemExit
    assert info.value.code == 3
    assert kids.events == ["start a", "stop a"]


async def test_a_handler_raising_a_non_exception_base_exception_is_a_crash_restarted_from() -> None:
    """Item 5: a Fatal(BaseException) from a handler is a crash: restarts == 1, it answers again."""
    events: list[str] = []
    async with open_supervisor([Spawner.child_spec(events, id="s")]) as sup:
        ref = sup.which_children()[0].value
        assert isinstance(ref, trioscope.ServiceRef)
        await ref.cast(Spawner.fatal)
        await wait_all_tasks_blocked()
        [info] = sup.which_children()
        assert (info.status, info.restarts) == ("running", 1)
        new = info.value
        assert isinstance(new, trioscope.ServiceRef)
        assert new != ref
        assert await new.call(Spawner.ping) == "pong"


async def test_a_plain_child_raising_a_non_exception_base_exception_is_restarted() -> None:
    """Item 5: a plain child ending with Fatal(BaseException) is restarted like any crash."""
    runs: list[str] = []

    async def child(*, task_status: trio.TaskStatus[int]) -> None:
        runs.append(f"run {len(runs)}")
        task_status.started(len(runs))
        if len(runs) == 1:
            await trio.lowlevel.checkpoint()
            raise Fatal("not an Exception")
        await trio.sleep_forever()

    async with open_supervisor([ChildSpec("f", child)]) as sup:
        await wait_all_tasks_blocked()
        assert runs == ["run 0", "run 1"]
        assert [(c.status, c.restarts, c.value) for c in sup.which_children()] == [
            ("running", 1, 2)
        ]


async def test_task_supervisor_cancel_leaks_no_group(caplog: pytest.LogCaptureFixture) -> None:
    """Item 5: TaskSupervisor.cancel() of a task whose subtask fails on cancel.

    The block exits without error; the ValueError is the task's failure, logged and counted.
    """
    events: list[str] = []
    with no_stray_cancel():
        async with trioscope.open_task_supervisor(id="jobs") as tasks:
            tasks.start_soon(_with_a_nursery_failing_on_cancel, events)
            await wait_all_tasks_blocked()
            tasks.cancel()
    assert events == ["cleanup fails"]
    assert tasks.failures == 1
    [record] = [r for r in caplog.records if r.name == "trioscope.tasks"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert type(record.exc_info[1]) is ValueError
    assert str(record.exc_info[1]) == "cleanup failed"


async def test_sys_exit_in_a_task_supervisor_tasks_subtask_comes_out_bare() -> None:
    """Item 5: sys.exit() in a subtask of a start_soon task: a bare SystemExit."""

    async def task() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_exit_soon)
            await trio.sleep_forever()

    async def run() -> None:
        async with trioscope.open_task_supervisor() as tasks:
            tasks.start_soon(task)
            await trio.sleep_forever()

    with pytest.raises(SystemExit) as info:
        await run()
    assert type(info.value) is SystemExit
    assert info.value.code == 3


# == 6. Control calls never race the manager ==========================================


def _slow_stop(events: list[str], name: str) -> ChildSpec:
    """A plain child whose shielded cleanup takes 1 s once it is cancelled."""

    async def child(*, task_status: trio.TaskStatus[str]) -> None:
        events.append(f"start {name}")
        task_status.started(name)
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(1)
            events.append(f"stop {name} at {now()}")

    return ChildSpec(name, child)


async def test_delete_child_of_a_sibling_stopped_during_a_one_for_all_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Item 6: c, stopped by b's ONE_FOR_ALL restart while a is still stopping, awaits its restart.

    Its status is "restarting", so delete_child is refused; the group then
    restarts in order and the supervisor goes on.
    """
    kids = Children()
    events = kids.events
    specs = [_slow_stop(events, "a"), kids.spec("b"), kids.spec("c")]
    async with open_supervisor(specs, id="sup", strategy=Strategy.ONE_FOR_ALL) as sup:
        kids.take()
        kids.crash("b")
        await trio.sleep(0.5)  # c is stopped; a's cleanup runs until t=1
        assert kids.take() == ["crash b", "stop c"]
        with pytest.raises(
            ChildStateError, match=r"^child 'c' of supervisor 'sup' is restarting; "
        ) as info:
            sup.delete_child("c")
        assert info.value.status == "restarting"
        await trio.sleep(1)
        await wait_all_tasks_blocked()
        assert kids.take() == ["stop a at 1", "start a", "start b", "start c"]
        assert [(c.id, c.status, c.restarts) for c in sup.which_children()] == [
            ("a", "running", 1),
            ("b", "running", 1),
            ("c", "running", 1),
        ]


async def test_delete_child_of_a_temporary_sibling_stopped_during_a_one_for_all_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Item 6: a TEMPORARY sibling stopped by the strategy is gone as soon as it is stopped (OTP).

    delete_child of it is an UnknownChildError, and the restart goes on.
    """
    kids = Children()
    events = kids.events
    specs = [_slow_stop(events, "a"), kids.spec("t", restart=Restart.TEMPORARY), kids.spec("c")]
    async with open_supervisor(specs, id="sup", strategy=Strategy.ONE_FOR_ALL) as sup:
        kids.take()
        kids.crash("c")
        await trio.sleep(0.5)
        assert kids.take() == ["crash c", "stop t"]
        with pytest.raises(UnknownChildError):
            sup.delete_child("t")
        await trio.sleep(1)
        await wait_all_tasks_blocked()
        assert kids.take() == ["stop a at 1", "start a", "start c"]
        assert [(c.id, c.status) for c in sup.which_children()] == [
            ("a", "running"),
            ("c", "running"),
        ]


# == 7. A child may use its supervisor while the supervisor stops =====================


class UsesItsSupervisor(trioscope.Service):
    """A service whose handler makes every control call on its own supervisor."""

    def __init__(self, box: list[Supervisor], results: list[object]) -> None:
        self.box = box
        self.results = results

    async def control_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        sup = self.box[0]
        calls: list[tuple[str, Callable[..., Any], tuple[object, ...]]] = [
            ("start_child", sup.start_child, (ChildSpec("new", trio.sleep_forever),)),
            ("restart_child", sup.restart_child, ("a",)),
            ("terminate_child", sup.terminate_child, ("a",)),
            ("delete_child", sup.delete_child, ("a",)),
        ]
        for name, fn, args in calls:
            before = trio.current_time()
            try:
                await _call(fn, *args)
            except SupervisorClosedError as exc:
                self.results.append((name, exc, trio.current_time() - before))
            else:  # pragma: no cover - the failure being tested for
                self.results.append((name, "accepted"))


async def test_control_calls_from_a_child_while_the_supervisor_stops_fail_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Item 7: a handler still running when its supervisor stops may call it.

    Each control call fails at once with SupervisorClosedError (stopped=False),
    so the handler ends at t=1 and the stop takes 1 s, not the whole budget
    (shutdown=10; with math.inf it never ended before the fix).
    """
    kids = Children()
    box: list[Supervisor] = []
    results: list[Any] = []
    specs = [kids.spec("a"), UsesItsSupervisor.child_spec(box, results, id="u", shutdown=10)]
    async with open_supervisor(specs, id="sup") as sup:
        box.append(sup)
        ref = sup.which_children()[1].value
        assert isinstance(ref, trioscope.ServiceRef)
        await ref.cast(UsesItsSupervisor.control_after, 1)
        await wait_all_tasks_blocked()
    assert trio.current_time() == 1
    assert [(name, waited) for name, _, waited in results] == [
        ("start_child", 0),
        ("restart_child", 0),
        ("terminate_child", 0),
        ("delete_child", 0),
    ]
    for name, exc, _ in results:
        assert type(exc) is SupervisorClosedError
        assert (exc.supervisor, exc.stopped) == ("sup", False)
        assert str(exc).startswith(f"supervisor 'sup' is stopping: {name}")
    assert kids.events == ["start a", "stop a"]


async def test_control_calls_after_the_block_raise_supervisor_closed_error() -> None:
    """Item 7: on a supervisor that has stopped, every control call is refused at once."""
    kids = Children()
    async with open_supervisor([kids.spec("a")], id="sup") as sup:
        pass
    calls: list[tuple[str, Callable[..., Any], tuple[object, ...]]] = [
        ("start_child", sup.start_child, (kids.spec("b"),)),
        ("restart_child", sup.restart_child, ("a",)),
        ("terminate_child", sup.terminate_child, ("a",)),
        ("delete_child", sup.delete_child, ("a",)),
    ]
    for name, fn, args in calls:
        with pytest.raises(
            SupervisorClosedError, match=rf"^supervisor 'sup' has stopped: {name}"
        ) as info:
            await _call(fn, *args)
        assert (info.value.supervisor, info.value.stopped) == ("sup", True)
        assert isinstance(info.value, RuntimeError)
    assert kids.events == ["start a", "stop a"]
    assert [(c.id, c.status) for c in sup.which_children()] == [("a", "stopped")]


# == 8. Interrupts during the initial start are acted on at once =======================


@pytest.mark.parametrize("interrupt", [SystemExit, KeyboardInterrupt])
@pytest.mark.parametrize("slow_start", [2, math.inf])
async def test_an_interrupt_during_the_initial_start_comes_out_at_once(
    autojump_clock: trio.testing.MockClock,
    interrupt: type[BaseException],
    slow_start: float,
) -> None:
    """Item 8: an interrupt in a started child while a later start still blocks.

    It comes out bare at t=0.01, without waiting for the later start (which is
    abandoned: cancelled) and without starting the children after it.
    """
    events: list[str] = []

    async def early(*, task_status: trio.TaskStatus[None]) -> None:
        events.append("start early")
        task_status.started()
        await trio.sleep(0.01)
        raise interrupt

    async def slow(*, task_status: trio.TaskStatus[None]) -> None:
        events.append("start slow")
        try:
            await trio.sleep(slow_start)
            task_status.started()
            await trio.sleep_forever()
        finally:
            events.append(f"slow ends at {now()}")

    async def late(*, task_status: trio.TaskStatus[None]) -> None:  # pragma: no cover
        events.append("start late")
        task_status.started()
        await trio.sleep_forever()

    specs = [ChildSpec("early", early), ChildSpec("slow", slow), ChildSpec("late", late)]
    with trio.fail_after(10), pytest.raises(interrupt) as info:
        async with open_supervisor(specs):
            pytest.fail("the body must not run")  # pragma: no cover
    assert type(info.value) is interrupt
    assert trio.current_time() == 0.01
    assert events == ["start early", "start slow", "slow ends at 0.01"]


# == 9. serve() and signals ============================================================


@asynccontextmanager
async def signal_net() -> AsyncIterator[list[int]]:
    """Catch SIGINT/SIGTERM that the code under test lets through, instead of pytest.

    A signal that serve() does not consume (or re-delivers when its receiver
    closes) lands here and is listed, rather than interrupting or killing the
    test process.
    """
    caught: list[int] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as net:

        async def drain() -> None:
            async for signum in net:
                caught.append(signum)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            try:
                yield caught
            finally:
                with trio.CancelScope(shield=True):
                    await wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_during_startup_stops_what_has_started_and_serve_returns(
    autojump_clock: trio.testing.MockClock, signum: signal.Signals
) -> None:
    """Item 9: a signal while a child's start blocks is acted on from the first instant.

    The start in progress is abandoned, what had started is stopped in reverse
    order, the children after it never start, and serve returns (the exit-0
    path). Before the fix the signal was queued until startup ended (never
    here: bounded by fail_after(50)) and then re-delivered.
    """
    events: list[str] = []

    def plain(name: str) -> ChildSpec:
        async def child(*, task_status: trio.TaskStatus[None]) -> None:
            events.append(f"start {name} in {trioscope.current_registry().namespace}")
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                events.append(f"stop {name}")

        return ChildSpec(name, child)

    async def blocks(*, task_status: trio.TaskStatus[None]) -> None:
        events.append("start b")
        try:
            await trio.sleep_forever()  # an init that never ends
        finally:
            events.append("b abandoned")

    specs = [plain("a"), ChildSpec("b", blocks), plain("z")]

    async def app() -> None:
        await trioscope.serve(specs, id="root")
        events.append("serve returned")

    async with signal_net() as leaked:
        with trio.fail_after(50):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(app)
                await wait_all_tasks_blocked()
                assert events == ["start a in app", "start b"]
                os.kill(os.getpid(), signum)
    assert events == ["start a in app", "start b", "b abandoned", "stop a", "serve returned"]
    assert trio.current_time() == 0
    assert leaked == []


_STOP_BEGUN_BY_A_CHILD = textwrap.dedent(
    """
    import math
    import signal
    import sys
    import trio
    import trioscope

    # As when started from a terminal (a parent ignoring SIGINT would make Python ignore it).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    class Stuck(trioscope.Service):
        async def init(self):
            print("ready", flush=True)

        async def terminate(self, reason):
            try:
                print("stopping forever", flush=True)
                await trio.sleep_forever()  # a stop that hangs, with no budget to end it
            finally:
                print("killed", flush=True)

    async def quitter(*, task_status):
        task_status.started()
        await trio.lowlevel.checkpoint()
        sys.exit(3)

    trioscope.run([Stuck.child_spec(shutdown=math.inf), trioscope.ChildSpec("quitter", quitter)])
    print("returned", flush=True)
    """
)


@pytest.mark.wall_clock("a subprocess: its start and output take real time")
async def test_sigint_ends_a_hanging_stop_that_a_childs_sys_exit_began() -> None:
    """Item 9: a child's sys.exit(3) begins the orderly stop; the stop hangs in terminate.

    One SIGINT then ends it: the hanging terminate is cancelled and the process
    exits with the child's SystemExit (the first interrupt wins, re-raised bare):
    code 3. Before the fix serve still held the signals, so any number of
    SIGINTs was ignored (bounded here: 5 s after the signal).
    """
    output = b""

    async def kill_at_once(process: trio.Process) -> None:
        process.kill()

    async with trio.open_nursery() as nursery:
        with trio.fail_after(20):  # starting Python; a guard, not a wait
            process = await nursery.start(
                functools.partial(
                    trio.run_process,
                    [sys.executable, "-c", _STOP_BEGUN_BY_A_CHILD],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    check=False,
                    deliver_cancel=kill_at_once,
                )
            )
            assert process.stdout is not None
            while b"stopping forever\n" not in output:
                chunk = await process.stdout.receive_some()
                assert chunk, f"the app exited early: {output!r}"
                output += chunk
        process.send_signal(signal.SIGINT)
        try:
            with trio.fail_after(5):
                async for chunk in process.stdout:
                    output += chunk
                await process.wait()
        except trio.TooSlowError:
            pytest.fail(f"the stop still hangs 5 s after SIGINT; output: {output!r}")
        finally:
            nursery.cancel_scope.cancel()
    assert output.decode().splitlines() == ["ready", "stopping forever", "killed"]
    assert process.returncode == 3


# == 10. No error vanishes (the supervisor part) =======================================


@pytest.mark.parametrize("how", ["terminate_child", "leave the block"])
async def test_a_plain_childs_cleanup_error_while_stopped_is_logged_as_an_error(
    caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """Item 10: cleanup raising while the supervisor stops the child: one ERROR record with it."""
    caplog.set_level(logging.INFO, logger="trioscope.supervisor")
    errors: list[OSError] = []

    async def child(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            error = OSError("cleanup failed")
            errors.append(error)
            raise error

    async with open_supervisor([ChildSpec("p", child)], id="sup") as sup:
        if how == "terminate_child":
            await sup.terminate_child("p")
            assert [(c.status, c.restarts) for c in sup.which_children()] == [("stopped", 0)]
    [error] = errors
    records = [
        r for r in caplog.records if r.name == "trioscope.supervisor" and r.levelno >= logging.ERROR
    ]
    assert [r.exc_info[1] if r.exc_info else None for r in records] == [error]
    assert [(c.status, c.restarts) for c in sup.which_children()] == [("stopped", 0)]


# == 11. start_child / restart_child return the started value ==========================


async def test_start_child_returns_the_started_value_of_a_child_that_ends_right_after() -> None:
    """Item 11: a TEMPORARY child that calls started("value") and returns at once."""

    async def brief(*, task_status: trio.TaskStatus[str]) -> None:
        task_status.started("value")

    async with open_supervisor([], id="sup") as sup:
        spec = ChildSpec("brief", brief, restart=Restart.TEMPORARY)
        assert await sup.start_child(spec) == "value"
    async with open_dynamic_supervisor() as dyn:
        assert await dyn.start_child(spec) == "value"


async def test_restart_child_returns_the_started_value_of_a_child_that_ends_right_after() -> None:
    """Item 11: restart_child of a TRANSIENT child whose 2nd run returns right after started()."""
    runs: list[int] = []

    async def child(*, task_status: trio.TaskStatus[str]) -> None:
        runs.append(len(runs))
        task_status.started(f"run {len(runs) - 1}")
        if len(runs) == 1:
            await trio.sleep_forever()

    async with open_supervisor([ChildSpec("c", child, restart=Restart.TRANSIENT)]) as sup:
        await sup.terminate_child("c")
        assert await sup.restart_child("c") == "run 1"
        await wait_all_tasks_blocked()
        assert [(c.status, c.restarts) for c in sup.which_children()] == [("stopped", 1)]


# == 12. A child stays in its supervisor's registry scope ==============================


class Where(trioscope.Service):
    """Records the registry scope each incarnation starts in."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def init(self) -> None:
        self.events.append(f"init in {trioscope.current_registry().namespace}")

    async def boom(self) -> None:
        raise Boom("crash")


async def test_start_child_from_a_nested_scope_registers_in_the_supervisors_scope(
    registry: trioscope.Registry,
) -> None:
    """Item 12: the caller's nested isolated scope is not the child's; a restart keeps it too."""
    events: list[str] = []
    async with (
        open_supervisor([], id="sup") as sup,
        # The caller's scope: nested in the supervisor's, and isolated.
        trioscope.open_registry(namespace="inner", isolated=True) as inner,
    ):
        ref = await sup.start_child(Where.child_spec(events, name="s"))
        assert isinstance(ref, trioscope.ServiceRef)
        assert (registry.names(), inner.names()) == (["s"], [])
        assert trioscope.whereis("s") is None  # the inner scope is isolated
        with pytest.raises(trioscope.ServiceCrashedError):
            await ref.call(Where.boom)
        await wait_all_tasks_blocked()
        assert sup.which_children()[0].restarts == 1
        assert (registry.names(), inner.names()) == (["s"], [])
    assert events == [f"init in {registry.namespace}"] * 2


# == 13. Every waiting public call is a checkpoint (the supervisor half) ===============


async def test_start_child_raising_max_children_error_is_a_checkpoint() -> None:
    """Item 13: MaxChildrenError from start_child, after a checkpoint."""
    kids = Children()
    async with open_dynamic_supervisor(max_children=1) as sup:
        await sup.start_child(kids.spec("a"))
        with trio.testing.assert_checkpoints(), pytest.raises(trioscope.MaxChildrenError):
            await sup.start_child(kids.spec("b"))
    assert kids.events == ["start a", "stop a"]


async def test_start_child_raising_a_duplicate_id_error_is_a_checkpoint() -> None:
    """Item 13: the duplicate-id ValueError of a static supervisor, after a checkpoint."""
    kids = Children()
    async with open_supervisor([kids.spec("a")], id="sup") as sup:
        with trio.testing.assert_checkpoints(), pytest.raises(ValueError, match="'a'"):
            await sup.start_child(kids.spec("a"))
    assert kids.events == ["start a", "stop a"]


# == 14. A finished child frees its slot at once =======================================


class Worker(trioscope.Service):
    async def boom(self) -> None:
        raise Boom("done")


async def test_a_finished_child_frees_its_slot_as_soon_as_the_caller_can_know() -> None:
    """Item 14: max_children=1; once monitor() reports the only child down, start_child succeeds.

    Twenty rounds, because the old code lost this race only about half the time.
    """
    async with open_dynamic_supervisor(max_children=1, id="dyn") as sup:
        for n in range(20):
            spec = Worker.child_spec(id=f"w{n}", restart=Restart.TEMPORARY)
            ref = await sup.start_child(spec)
            assert isinstance(ref, trioscope.ServiceRef)
            async with trioscope.monitor(ref) as down:
                ref.try_cast(Worker.boom)
                assert isinstance((await down.wait()).reason, Boom)
        await wait_all_tasks_blocked()
        assert sup.which_children() == []


# == 16. auto_shutdown, as OTP =========================================================


async def test_a_significant_child_needs_an_auto_shutdown_mode() -> None:
    """Item 16: under the default auto_shutdown="never" a significant child is a ValueError."""
    kids = Children()
    specs = [kids.spec("a"), kids.spec("job", restart=Restart.TEMPORARY, significant=True)]
    with pytest.raises(ValueError, match="auto_shutdown") as info:
        async with open_supervisor(specs):
            pytest.fail("the body must not run")  # pragma: no cover
    assert "'job'" in str(info.value)
    assert kids.events == []


async def test_start_child_of_a_significant_child_needs_an_auto_shutdown_mode() -> None:
    """Item 16: start_child of a significant child: ValueError under "never" and when dynamic."""
    kids = Children()
    spec = kids.spec("job", restart=Restart.TRANSIENT, significant=True)
    async with open_supervisor([], id="sup") as sup:
        with pytest.raises(ValueError, match="'job'"):
            await sup.start_child(spec)
        assert sup.which_children() == []
    async with open_dynamic_supervisor() as dyn:
        with pytest.raises(ValueError, match="'job'"):
            await dyn.start_child(spec)
        assert dyn.which_children() == []
    assert kids.events == []


@pytest.mark.parametrize(
    ("restart", "how", "ends_the_supervisor"),
    [
        (Restart.TRANSIENT, "exit", True),
        (Restart.TEMPORARY, "exit", True),
        (Restart.TEMPORARY, "crash", True),
        (Restart.TRANSIENT, "crash", False),
    ],
)
async def test_any_significant(restart: Restart, how: str, ends_the_supervisor: bool) -> None:
    """Item 16: "any_significant": a significant child ending by itself for good ends the block.

    A TRANSIENT one exiting normally, a TEMPORARY one on any exit (a crash
    too): the others stop in reverse order, the body is cancelled, the block
    exits without error. A TRANSIENT one crashing is restarted instead.
    """
    kids = Children()
    specs = [kids.spec("a"), kids.spec("job", restart=restart, significant=True), kids.spec("z")]
    with no_stray_cancel():
        async with open_supervisor(specs, auto_shutdown="any_significant") as sup:
            kids.take()
            getattr(kids, how)("job")
            await wait_all_tasks_blocked()
            if not ends_the_supervisor:
                assert kids.take() == ["crash job", "start job"]
                assert [c.restarts for c in sup.which_children()] == [0, 1, 0]
                return
            await trio.sleep(math.inf)  # cancelled by the supervisor
    assert kids.take() == [f"{how} job", "stop z", "stop a"]
    assert [(c.id, c.status) for c in sup.which_children() if c.id != "job"] == [
        ("a", "stopped"),
        ("z", "stopped"),
    ]


async def test_all_significant_waits_for_every_significant_child() -> None:
    """Item 16: "all_significant": only the last significant child's end stops the supervisor."""
    kids = Children()
    specs = [
        kids.spec("a"),
        kids.spec("j1", restart=Restart.TEMPORARY, significant=True),
        kids.spec("j2", restart=Restart.TRANSIENT, significant=True),
    ]
    with no_stray_cancel():
        async with open_supervisor(specs, auto_shutdown="all_significant") as sup:
            kids.take()
            kids.crash("j1")  # a TEMPORARY one: any exit counts
            await wait_all_tasks_blocked()
            assert kids.take() == ["crash j1"]
            assert [(c.id, c.status) for c in sup.which_children() if c.id != "j1"] == [
                ("a", "running"),
                ("j2", "running"),
            ]
            kids.exit("j2")
            await trio.sleep(math.inf)  # cancelled by the supervisor
    assert kids.take() == ["exit j2", "stop a"]


async def test_stops_the_supervisor_causes_never_count_for_auto_shutdown() -> None:
    """Item 16: terminate_child of a significant child, or a strategy's bystander, never count."""
    kids = Children()
    specs = [
        kids.spec("a"),
        kids.spec("t", restart=Restart.TEMPORARY, significant=True),
        kids.spec("job", restart=Restart.TRANSIENT, significant=True),
        kids.spec("c"),
    ]
    async with open_supervisor(
        specs, strategy=Strategy.ONE_FOR_ALL, auto_shutdown="any_significant"
    ) as sup:
        kids.take()
        await sup.terminate_child("job")
        kids.crash("c")  # t is stopped as a bystander (and, TEMPORARY, not restarted)
        await wait_all_tasks_blocked()
        assert kids.take() == ["stop job", "crash c", "stop t", "stop a", "start a", "start c"]
        assert [(c.id, c.status) for c in sup.which_children()] == [
            ("a", "running"),
            ("job", "stopped"),
            ("c", "running"),
        ]
    assert kids.take() == ["stop c", "stop a"]


async def test_supervisor_spec_takes_auto_shutdown() -> None:
    """Item 16: a nested "any_significant" supervisor whose TEMPORARY significant child crashes.

    It ends normally, so its TRANSIENT spec is not restarted by the parent.
    """
    kids = Children()
    job = kids.spec("job", restart=Restart.TEMPORARY, significant=True)
    nested = supervisor_spec(
        [kids.spec("helper"), job],
        id="nested",
        restart=Restart.TRANSIENT,
        auto_shutdown="any_significant",
    )
    async with open_supervisor([nested, kids.spec("b")]) as sup:
        kids.take()
        kids.crash("job")
        await wait_all_tasks_blocked()
        assert kids.take() == ["crash job", "stop helper"]
        assert [(c.id, c.status, c.restarts) for c in sup.which_children()] == [
            ("nested", "stopped", 0),
            ("b", "running", 0),
        ]


# == 17. Default child ids; a second started() ========================================


class Stack(trioscope.Service):
    async def push(self, item: int) -> None:
        pass


def test_default_child_ids_are_the_name_or_the_class_name() -> None:
    """Item 17: the name if given, else the class's __qualname__ (as Elixir), stable."""
    assert Stack.child_spec(name="x").id == "x"
    assert Stack.child_spec().id == "Stack"
    assert Stack.child_spec().id == "Stack"
    assert Stack.child_spec(id="own", name="x").id == "own"


async def test_two_children_with_the_same_id_in_a_static_supervisor_ask_for_id() -> None:
    """Item 17: a clear ValueError telling the user to pass id=."""
    with pytest.raises(ValueError, match="id=") as info:
        async with open_supervisor([Stack.child_spec(), Stack.child_spec()]):
            pytest.fail("the body must not run")  # pragma: no cover
    assert "'Stack'" in str(info.value)


async def test_a_dynamic_supervisor_accepts_children_with_the_same_id() -> None:
    """Item 17: dynamic supervisors need no unique ids."""
    kids = Children()
    async with open_dynamic_supervisor() as sup:
        for _ in range(3):
            assert await sup.start_child(kids.spec("w")) == "w"
        assert [(c.id, c.status) for c in sup.which_children()] == [("w", "running")] * 3
        await sup.start_child(Stack.child_spec())
        await sup.start_child(Stack.child_spec())
        assert [c.id for c in sup.which_children()] == ["w", "w", "w", "Stack", "Stack"]
    assert kids.events == ["start w"] * 3 + ["stop w"] * 3


async def test_a_second_started_raises_runtime_error_in_the_child() -> None:
    """Item 17: as Trio, not a bare AssertionError; the first value stands."""
    seen: list[BaseException] = []

    async def twice(*, task_status: trio.TaskStatus[int]) -> None:
        task_status.started(1)
        try:
            task_status.started(2)
        except BaseException as exc:
            seen.append(exc)
        await trio.sleep_forever()

    async with open_supervisor([], id="sup") as sup:
        assert await sup.start_child(ChildSpec("twice", twice)) == 1
        [error] = seen
        assert type(error) is RuntimeError
        assert "started" in str(error)
        assert [(c.status, c.value) for c in sup.which_children()] == [("running", 1)]


# == 18. A dynamic supervisor stops its children concurrently ==========================


class SlowStop(trioscope.Service):
    """Its terminate takes *seconds*."""

    def __init__(self, events: list[str], label: str, seconds: float) -> None:
        self.events = events
        self.label = label
        self.seconds = seconds

    async def terminate(self, reason: BaseException | None) -> None:
        self.events.append(f"terminate {self.label} at {now()}")
        await trio.sleep(self.seconds)
        self.events.append(f"terminated {self.label} at {now()}")


async def test_a_dynamic_supervisor_stops_its_children_concurrently(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Item 18: three children each taking their whole 2 s to stop: leaving takes 2 s, not 6."""
    events: list[str] = []
    async with open_dynamic_supervisor() as sup:
        for label in "abc":
            await sup.start_child(SlowStop.child_spec(events, label, 2, id=label, shutdown=5))
        stopped_at = trio.current_time()
    assert trio.current_time() - stopped_at == 2
    assert sorted(events) == sorted(
        [f"terminate {label} at 0" for label in "abc"]
        + [f"terminated {label} at 2" for label in "abc"]
    )


async def test_a_dynamic_supervisor_stops_each_child_within_its_own_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Item 18: a (terminate hangs, budget 1) and b (terminate takes 3 s, budget 5).

    Stopped concurrently: a is cut off at t=1, b finishes at t=3, the block is
    left at t=3 (one after another it took 4 s).
    """
    events: list[str] = []
    async with open_dynamic_supervisor() as sup:
        await sup.start_child(SlowStop.child_spec(events, "a", math.inf, id="a", shutdown=1))
        await sup.start_child(SlowStop.child_spec(events, "b", 3, id="b", shutdown=5))
    assert trio.current_time() == 3
    assert sorted(events) == ["terminate a at 0", "terminate b at 0", "terminated b at 3"]


# == review: a Ctrl-C at a block's nursery exit ========================================

_INTERRUPT_AT_THE_NURSERY_EXIT = textwrap.dedent(
    """
    import signal
    import sys
    import trio
    import trioscope

    signal.signal(signal.SIGINT, signal.default_int_handler)

    async def slow_task():
        # It first runs once the body has left the block: the opener is then
        # parked in the nursery's exit, waiting for this task.
        print("waiting", flush=True)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(sys.stdin.readline)

    async def main():
        async with trioscope.open_task_supervisor() as tasks:
            tasks.start_soon(slow_task)

    try:
        trio.run(main)
    except BaseException as exc:
        print("raised", type(exc).__name__, flush=True)
    """
)


@pytest.mark.wall_clock("a subprocess: its start and output take real time")
async def test_a_ctrl_c_at_a_task_supervisors_nursery_exit_comes_out_bare() -> None:
    """A KeyboardInterrupt delivered while the block waits for its tasks is raised bare.

    Before: Trio's nursery exit wrapped it, and a BaseExceptionGroup escaped.
    """
    output = b""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(20):  # starting Python; a guard, not a wait
            process = await nursery.start(
                functools.partial(
                    trio.run_process,
                    [sys.executable, "-c", _INTERRUPT_AT_THE_NURSERY_EXIT],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    check=False,
                )
            )
            assert process.stdout is not None
            assert process.stdin is not None
            while b"waiting\n" not in output:
                chunk = await process.stdout.receive_some()
                assert chunk, f"the app exited early: {output!r}"
                output += chunk
            process.send_signal(signal.SIGINT)
            await process.stdin.send_all(b"done\n")  # let the shielded task end
            async for chunk in process.stdout:
                output += chunk
            await process.wait()
    assert output.decode().splitlines() == ["waiting", "raised KeyboardInterrupt"]


async def test_a_child_calling_its_supervisor_before_it_is_ready_fails_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The manager waits for the child's started(): the child's own call would deadlock."""
    kids = Children()
    box: list[Supervisor] = []
    seen: list[str] = []

    async def eager(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with pytest.raises(ChildStateError) as info:
            await box[0].start_child(kids.spec("b"))
        seen.append(str(info.value))
        task_status.started()
        await trio.sleep_forever()

    async with open_dynamic_supervisor(id="sup") as sup:
        box.append(sup)
        with trio.fail_after(1):
            await sup.start_child(ChildSpec("a", eager))
        assert trio.current_time() == 0
    assert seen == [
        "child 'a' of supervisor 'sup' is starting; its start_child on its own supervisor "
        "could never be answered: the supervisor waits for it (until it calls "
        "task_status.started(), or has stopped)"
    ]
    assert kids.events == []


class _SlowTerminate(trioscope.Service):
    async def terminate(self, reason: BaseException | None) -> None:
        await trio.sleep(3)  # within its own budget (shutdown=10)


async def test_a_nested_supervisor_stopping_on_its_own_keeps_to_its_parents_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The parent's budget for a nested supervisor reaches its shields even when it is
    already stopping (here by auto_shutdown) when the parent stops it (found by review)."""

    async def quitter(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(0.1)  # a normal exit: the nested supervisor shuts down

    inner = supervisor_spec(
        [
            _SlowTerminate.child_spec(id="slow", shutdown=10),
            ChildSpec("quit", quitter, restart=Restart.TRANSIENT, significant=True),
        ],
        id="inner",
        auto_shutdown="any_significant",
        shutdown=0.5,  # what the parent gives it to stop
    )
    async with open_supervisor([inner], id="outer"):
        await trio.sleep(0.3)  # inner is stopping on its own: "slow" is in its terminate
    assert trio.current_time() == 0.3 + 0.5  # left at 0.3, plus the budget
