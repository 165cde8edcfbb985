"""Fault schedules: each kind's exact semantics under MockClock, isolation, and shrinking.

The key test (the issue asks for it) is ``test_hypothesis_finds_the_planted_bug...``:
a journal that loses an acknowledged entry when it crashes between the two
messages of a write is found by a property over `fault_schedules`, shrunk to one
fault, and replayed from the printed schedule.
"""

from __future__ import annotations

import gc
import re
import types
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import Phase, find, given, seed, settings
from hypothesis import strategies as st

import trioscope
from trioscope._registry import _faults
from trioscope.testing._faults import (
    Fault,
    FaultRun,
    FaultSchedule,
    FiredFault,
    InjectedFault,
    fault_schedules,
    run_with_faults,
)
from trioscope.testing._helpers import SimulatedCrash, wait_for_restart, wait_for_service
from trioscope.testing._scope import LeakError, open_test_scope

pytestmark = pytest.mark.trioscope_scope

pytest_plugins = ["pytester"]


class Box(trioscope.Service):
    """Logs (tag, Trio time) as each handler starts, in a list that outlives restarts."""

    def __init__(self, log: list[tuple[str, float]]) -> None:
        self.log = log
        self.value = 0  # reset by a restart

    async def put(self, tag: str) -> int:
        self.log.append((tag, trio.current_time()))
        self.value += 1
        return self.value


def _box(log: list[tuple[str, float]], **options: Any) -> trioscope.ChildSpec[Any]:
    return Box.child_spec(log, name="box", **options)


# -- values ------------------------------------------------------------------------------


def test_a_fault_prints_as_the_call_that_builds_it() -> None:
    crash = Fault("crash", "kv", 3)
    slow = Fault("slow", "kv", 2, 2)
    assert (repr(crash), repr(slow)) == ("Fault('crash', 'kv', 3)", "Fault('slow', 'kv', 2, 2.0)")
    assert type(slow.seconds) is float
    assert eval(repr(slow)) == slow
    assert crash.seconds == 0.0


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (
            ("boom", "kv", 1),
            ValueError,
            "Fault kind must be one of 'crash', 'hang', 'slow', 'stall', 'jump', got 'boom'",
        ),
        (("crash", 3, 1), TypeError, "Fault service must be a service name (str), got int"),
        (("crash", "", 1), ValueError, "Fault service must be a non-empty service name, got ''"),
        (
            ("crash", "kv", 1.0),
            TypeError,
            "Fault at must be an int (the k-th message, 1 for the first), got float",
        ),
        (
            ("crash", "kv", True),
            TypeError,
            "Fault at must be an int (the k-th message, 1 for the first), got bool",
        ),
        (("crash", "kv", 0), ValueError, "Fault at must be >= 1 (1 is the first message), got 0"),
        (("slow", "kv", 1, "2"), TypeError, "Fault seconds must be a number, got str"),
        (("slow", "kv", 1), ValueError, "a 'slow' fault's seconds must be finite and > 0, got 0.0"),
        (
            ("stall", "kv", 1, -1),
            ValueError,
            "a 'stall' fault's seconds must be finite and > 0, got -1",
        ),
        (
            ("jump", "kv", 1, float("inf")),
            ValueError,
            "a 'jump' fault's seconds must be finite and > 0, got inf",
        ),
        (
            ("slow", "kv", 1, float("nan")),
            ValueError,
            "a 'slow' fault's seconds must be finite and > 0, got nan",
        ),
        (
            ("hang", "kv", 1, 2.0),
            ValueError,
            "a 'hang' fault takes no seconds (they are for 'slow', 'stall' and 'jump'), got 2.0",
        ),
    ],
)
def test_a_fault_is_validated(args: tuple[Any, ...], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        Fault(*args)


def test_a_schedule_keeps_its_faults_in_acting_order_and_prints_as_its_call() -> None:
    schedule = FaultSchedule(
        [
            Fault("crash", "b", 1),
            Fault("crash", "a", 2),
            Fault("slow", "a", 2, 1.5),
            Fault("jump", "a", 2, 3.0),
            Fault("stall", "a", 2, 0.25),
            Fault("hang", "a", 1),
        ]
    )
    assert repr(schedule) == (
        "FaultSchedule((Fault('hang', 'a', 1), Fault('jump', 'a', 2, 3.0), "
        "Fault('stall', 'a', 2, 0.25), Fault('slow', 'a', 2, 1.5), Fault('crash', 'a', 2), "
        "Fault('crash', 'b', 1)))"
    )
    assert eval(repr(schedule)) == schedule
    assert schedule == FaultSchedule(reversed(schedule.faults))
    assert repr(FaultSchedule()) == "FaultSchedule(())"
    assert (
        repr(FaultSchedule((Fault("crash", "kv", 3),)))
        == "FaultSchedule((Fault('crash', 'kv', 3),))"
    )


def test_hypothesis_prints_faults_and_schedules_as_their_calls() -> None:
    # A falsifying example prints its arguments through this printer: before
    # _repr_pretty_, field by field (Fault(kind='crash', service='kv', at=1, seconds=0.0)).
    from hypothesis.vendor.pretty import pretty

    crash, slow = Fault("crash", "kv", 1), Fault("slow", "kv", 2, 2.5)
    assert pretty(crash) == "Fault('crash', 'kv', 1)"
    assert pretty(FaultSchedule((slow, crash))) == (
        "FaultSchedule((Fault('crash', 'kv', 1), Fault('slow', 'kv', 2, 2.5)))"
    )
    assert pretty(FaultSchedule()) == "FaultSchedule(())"
    assert pretty([crash]) == "[Fault('crash', 'kv', 1)]"
    assert pretty(FiredFault(crash, 1, 0.0)) == (
        "FiredFault(fault=Fault('crash', 'kv', 1), incarnation=1, at_time=0.0)"
    )


@pytest.mark.parametrize(
    ("faults", "error", "message"),
    [
        (
            Fault("crash", "kv", 1),
            TypeError,
            "FaultSchedule takes a sequence of Fault values, got Fault "
            "(one fault is FaultSchedule((fault,)))",
        ),
        (
            "crash",
            TypeError,
            "FaultSchedule takes a sequence of Fault values, got str "
            "(one fault is FaultSchedule((fault,)))",
        ),
        (
            (Fault("crash", "kv", 1), ("crash", "kv", 2)),
            TypeError,
            "FaultSchedule takes Fault values only, got ('crash', 'kv', 2)",
        ),
        (
            (Fault("slow", "kv", 4, 1.0), Fault("slow", "kv", 4, 2.0)),
            ValueError,
            "FaultSchedule has two 'slow' faults at message 4 of 'kv' (Fault('slow', 'kv', 4, 1.0) "
            "and Fault('slow', 'kv', 4, 2.0)): each fires once, at that message, so one of them "
            "would never fire",
        ),
    ],
)
def test_a_schedule_is_validated(faults: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        FaultSchedule(faults)


def test_an_injected_fault_is_a_simulated_crash_naming_its_fault() -> None:
    fault = Fault("crash", "kv", 3)
    exc = InjectedFault(fault)
    assert isinstance(exc, SimulatedCrash)
    assert exc.fault is fault
    assert str(exc) == (
        "injected fault Fault('crash', 'kv', 3): the handler of message 3 of service 'kv' "
        "crashed before running"
    )


# -- each kind, exactly ------------------------------------------------------------------


async def test_a_crash_fails_the_call_as_the_handler_raising_and_the_supervisor_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    fault = Fault("crash", "box", 2)
    async with (
        open_test_scope("crash"),
        FaultSchedule((fault,)).apply() as run,
        trioscope.open_supervisor([_box(log)]) as sup,
    ):
        first = await wait_for_service("box")
        assert await first.call(Box.put, "one") == 1
        await trio.sleep(1)
        with pytest.raises(trioscope.ServiceCrashedError) as info:
            await first.call(Box.put, "two")
        assert type(info.value.__cause__) is InjectedFault
        assert info.value.__cause__.fault is fault
        second = await wait_for_restart("box", after=first)
        assert await second.call(Box.put, "three") == 1  # a fresh incarnation
        assert sup.which_children()[0].restarts == 1
    assert log == [("one", 0.0), ("three", 1.0)]  # "two" never ran
    assert run.fired == (FiredFault(fault, 1, 1.0),)
    assert run.pending == ()
    assert run.messages == {"box": 3}


async def test_messages_are_counted_across_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    crashes = (Fault("crash", "box", 2), Fault("crash", "box", 4))
    results: list[object] = []
    async with (
        open_test_scope("count"),
        FaultSchedule(crashes).apply() as run,
        trioscope.open_supervisor([_box(log)]),
    ):
        for tag in "abcde":
            await trio.sleep(1)
            try:
                results.append(await trioscope.call("box", Box.put, tag))
            except trioscope.ServiceCrashedError as exc:
                results.append(type(exc.__cause__).__name__)
    assert results == [1, "InjectedFault", 1, "InjectedFault", 1]
    assert [tag for tag, _ in log] == ["a", "c", "e"]
    assert run.fired == (FiredFault(crashes[0], 1, 2.0), FiredFault(crashes[1], 2, 4.0))
    assert run.messages == {"box": 5}


async def test_a_hang_never_returns_the_callers_time_out_and_the_stop_kills_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    fault = Fault("hang", "box", 1)
    async with (
        open_test_scope("hang"),
        FaultSchedule((fault,)).apply() as run,
        trioscope.open_supervisor([_box(log, shutdown=2.0)]) as sup,
    ):
        ref = await wait_for_service("box")
        with pytest.raises(trioscope.CallTimeoutError):
            await ref.with_timeout(3.0).call(Box.put, "one")
        assert trio.current_time() == 3.0
        with pytest.raises(trioscope.CallTimeoutError):
            await ref.with_timeout(4.0).call(Box.put, "two")  # queued behind the hang
        assert trio.current_time() == 7.0
        stats = ref.statistics()
        assert (stats.handled, stats.mailbox_depth) == (0, 0)  # "two" was withdrawn
        assert sup.which_children()[0].restarts == 0
    # Stopping waited the child's shutdown budget (2 s), then killed the hung handler.
    assert trio.current_time() == 9.0
    assert log == []
    assert run.fired == (FiredFault(fault, 1, 0.0),)
    assert run.messages == {"box": 1}


async def test_a_slow_handler_starts_late_and_still_runs_when_its_caller_gave_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    slow1, slow2 = Fault("slow", "box", 1, 2.5), Fault("slow", "box", 2, 4.0)
    async with (
        open_test_scope("slow"),
        FaultSchedule((slow1, slow2)).apply() as run,
        trioscope.open_supervisor([_box(log)]),
    ):
        ref = await wait_for_service("box")
        assert await ref.call(Box.put, "one") == 1
        assert trio.current_time() == 2.5
        with pytest.raises(trioscope.CallTimeoutError):
            await ref.with_timeout(1.0).call(Box.put, "two")  # abandoned, still runs
        assert trio.current_time() == 3.5
        assert await ref.call(Box.put, "three") == 3
        assert trio.current_time() == 6.5
    assert log == [("one", 2.5), ("two", 6.5), ("three", 6.5)]
    assert run.fired == (FiredFault(slow1, 1, 0.0), FiredFault(slow2, 1, 2.5))


async def test_a_stall_holds_the_message_unlooked_at_so_a_caller_that_gives_up_withdraws_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    stall = Fault("stall", "box", 2, 3.0)
    async with (
        open_test_scope("stall"),
        FaultSchedule((stall,)).apply() as run,
        trioscope.open_supervisor([_box(log)]),
    ):
        ref = await wait_for_service("box")
        assert await ref.call(Box.put, "one") == 1
        with pytest.raises(trioscope.CallTimeoutError):
            await ref.with_timeout(1.0).call(Box.put, "two")
        assert trio.current_time() == 1.0
        ref.try_cast(Box.put, "cast")  # the mailbox keeps filling meanwhile
        assert ref.statistics().mailbox_depth == 1
        assert await ref.call(Box.put, "three") == 3
        assert trio.current_time() == 3.0
    # "two" was withdrawn during the stall and never ran: "cast" was the 2nd message.
    assert log == [("one", 0.0), ("cast", 3.0), ("three", 3.0)]
    assert run.fired == (FiredFault(stall, 1, 0.0),)
    assert run.messages == {"box": 3}


async def test_a_stalled_message_whose_caller_waits_runs_after_the_stall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    stall = Fault("stall", "box", 1, 3.0)
    async with (
        open_test_scope("stall-wait"),
        FaultSchedule((stall,)).apply() as run,
        trioscope.open_supervisor([_box(log)]),
    ):
        assert await trioscope.call("box", Box.put, "one") == 1
    assert log == [("one", 3.0)]
    assert run.fired == (FiredFault(stall, 1, 0.0),)


async def test_a_service_killed_during_a_stall_answers_the_held_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    stall = Fault("stall", "box", 1, 10.0)
    outcomes: list[tuple[float, str]] = []
    async with open_test_scope("kill"), FaultSchedule((stall,)).apply() as run:
        host = trio.CancelScope()

        async def hosted(task_status: trio.TaskStatus[trioscope.ServiceRef[Box]]) -> None:
            with host:
                async with trio.open_nursery() as nursery:
                    task_status.started(await nursery.start(_box(log).start))

        async def caller(ref: trioscope.ServiceRef[Box]) -> None:
            try:
                await ref.with_timeout(30.0).call(Box.put, "one")
            except trioscope.ServiceUnavailableError as exc:
                outcomes.append((trio.current_time(), str(exc)))

        async with trio.open_nursery() as nursery:
            ref = await nursery.start(hosted)
            nursery.start_soon(caller, ref)
            await trio.sleep(2)
            host.cancel()
    assert outcomes == [
        (
            2.0,
            "service 'box' is unavailable: it was killed while a fault schedule stalled "
            "this message; it was not run",
        )
    ]
    assert log == []
    assert run.fired == (FiredFault(stall, 1, 0.0),)


async def test_a_jump_moves_the_clock_before_the_message_is_looked_at(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    woke: list[float] = []
    jump1, jump2 = Fault("jump", "box", 2, 10.0), Fault("jump", "box", 3, 4.0)

    async def sleeper() -> None:
        await trio.sleep(7)
        woke.append(trio.current_time())

    async with (
        open_test_scope("jump") as scope,
        FaultSchedule((jump1, jump2)).apply() as run,
        trioscope.open_supervisor([_box(log)]),
    ):
        ref = await wait_for_service("box")
        assert await ref.call(Box.put, "one") == 1
        scope.start_soon(sleeper)
        await trio.testing.wait_all_tasks_blocked()
        # The caller's 5 s deadline passes in the jump: it withdraws "two".
        with pytest.raises(trioscope.CallTimeoutError):
            await ref.with_timeout(5.0).call(Box.put, "two")
        assert trio.current_time() == 10.0
        await trio.testing.wait_all_tasks_blocked()  # the sleeper woke in the same tick
        assert woke == [10.0]  # the timer fired as if the 10 s had passed
        assert await ref.with_timeout(30.0).call(Box.put, "three") == 2
        # "three" was the 2nd message run; the 3rd sees the clock 4 s later.
        assert await ref.with_timeout(30.0).call(Box.put, "four") == 3
    assert log == [("one", 0.0), ("three", 10.0), ("four", 14.0)]
    assert run.fired == (FiredFault(jump1, 1, 0.0), FiredFault(jump2, 1, 10.0))


async def test_before_the_service_looks_at_the_message_every_deadline_jumped_over_expired(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # What a jump guarantees: the deadlines it passed have expired (cancel scopes
    # cancelled) when the handler starts; not that the tasks they woke have run.
    log: list[tuple[str, float]] = []
    deadlines = [trio.CancelScope(deadline=d) for d in (1.0, 5.0, 10.0, 10.5)]
    seen: list[list[bool]] = []

    class Looking(Box):
        async def look(self) -> None:
            seen.append([scope.cancel_called for scope in deadlines])

    async def waiter(scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_forever()

    async with (
        open_test_scope("deadlines") as scope,
        FaultSchedule((Fault("jump", "box", 1, 10.0),)).apply(),
        trioscope.open_supervisor([Looking.child_spec(log, name="box")]),
    ):
        for each in deadlines:
            scope.start_soon(waiter, each)
        ref = await wait_for_service("box")
        await trio.testing.wait_all_tasks_blocked()
        await ref.with_timeout(30.0).call(Looking.look)
        await trio.testing.wait_all_tasks_blocked()
        assert [each.cancelled_caught for each in deadlines] == [True, True, True, False]
        deadlines[3].cancel()
    assert seen == [[True, True, True, False]]


def test_jumps_need_a_mock_clock_when_the_schedule_is_applied() -> None:
    async def main() -> None:
        async with open_test_scope("real-clock"):
            async with FaultSchedule((Fault("crash", "box", 1),)).apply() as run:  # no jumps
                assert run.pending == (Fault("crash", "box", 1),)
            with pytest.raises(
                RuntimeError,
                match=r"^the fault schedule jumps Trio's clock "
                r"\(Fault\('jump', 'box', 1, 1\.0\)\), which only a trio\.testing\.MockClock "
                r"can do; this run's clock is SystemClock "
                r"\(run with trio\.run\(\.\.\., clock=trio\.testing\.MockClock\(\)\), or "
                r"pytest-trio's autojump_clock fixture\)$",
            ):
                async with FaultSchedule((Fault("jump", "box", 1, 1.0),)).apply():
                    pytest.fail("applied")

    trio.run(main)  # on Trio's own clock
    assert _faults.installed == 0


async def test_faults_at_one_message_act_jump_stall_slow_then_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    faults = (
        Fault("crash", "box", 2),
        Fault("slow", "box", 2, 1.0),
        Fault("stall", "box", 2, 2.0),
        Fault("jump", "box", 2, 4.0),
    )
    schedule = FaultSchedule(faults)
    assert [f.kind for f in schedule.faults] == ["jump", "stall", "slow", "crash"]
    async with (
        open_test_scope("order"),
        schedule.apply() as run,
        trioscope.open_supervisor([_box(log)]),
    ):
        ref = await wait_for_service("box")
        assert await ref.call(Box.put, "one") == 1
        with pytest.raises(trioscope.ServiceCrashedError):
            await ref.with_timeout(30.0).call(Box.put, "two")
        assert trio.current_time() == 7.0
    assert run.fired == (
        FiredFault(faults[3], 1, 0.0),  # jump: the time before it
        FiredFault(faults[2], 1, 4.0),  # stall: from the jumped clock
        FiredFault(faults[1], 1, 6.0),  # slow: once the stall ended
        FiredFault(faults[0], 1, 7.0),  # crash: when the handler would have started
    )
    assert log == [("one", 0.0)]


async def test_a_crash_behind_a_hang_at_the_same_message_never_fires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hang, crash = Fault("hang", "box", 1), Fault("crash", "box", 1)
    async with (
        open_test_scope("hang-crash"),
        FaultSchedule((crash, hang)).apply() as run,
        trioscope.open_supervisor([_box([], shutdown=0.0)]),
    ):
        with pytest.raises(trioscope.CallTimeoutError):
            await trioscope.by_name("box", timeout=2.0).call(Box.put, "one")
    assert run.fired == (FiredFault(hang, 1, 0.0),)
    assert run.pending == (crash,)


async def test_a_fault_whose_message_never_comes_stays_pending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    never = Fault("crash", "box", 3)
    other = Fault("crash", "nobody", 1)
    async with (
        open_test_scope("pending"),
        FaultSchedule((never, other)).apply() as run,
        trioscope.open_supervisor([_box([])]),
    ):
        assert await trioscope.call("box", Box.put, "one") == 1
        assert await trioscope.call("box", Box.put, "two") == 2
    assert run.fired == ()
    assert run.pending == (never, other)
    assert run.messages == {"box": 2}
    assert repr(run) == (
        "<FaultRun 0 fired, 2 pending of FaultSchedule((Fault('crash', 'box', 3), "
        "Fault('crash', 'nobody', 1)))>"
    )


async def test_no_handler_coroutine_is_left_unawaited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    schedule = FaultSchedule(
        (Fault("crash", "box", 1), Fault("slow", "box", 2, 100.0), Fault("hang", "other", 1))
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with open_test_scope("unawaited"), schedule.apply() as run:
            specs = [_box([], shutdown=0.0), Box.child_spec([], name="other", shutdown=0.0)]
            async with trioscope.open_supervisor(specs):
                with pytest.raises(trioscope.ServiceCrashedError):
                    await trioscope.call("box", Box.put, "crashes")
                with pytest.raises(trioscope.CallTimeoutError):
                    await trioscope.by_name("box", timeout=1.0).call(Box.put, "slow")
                with pytest.raises(trioscope.CallTimeoutError):
                    await trioscope.by_name("other", timeout=1.0).call(Box.put, "hangs")
            # Leaving the block killed the slow handler in its delay, and the hung one.
            assert trio.current_time() == 2.0
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert [f.fault.kind for f in run.fired] == ["crash", "slow", "hang"]


async def test_unnamed_services_get_no_faults(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_test_scope("unnamed"),
        FaultSchedule((Fault("crash", "box", 1),)).apply() as run,
        trio.open_nursery() as nursery,
    ):
        ref = await nursery.start(Box.child_spec([]).start)
        assert await ref.call(Box.put, "one") == 1
        nursery.cancel_scope.cancel()
    assert (run.fired, run.messages) == ((), {})


# -- where a schedule applies ------------------------------------------------------------


async def test_sibling_scopes_never_share_a_schedule_even_under_the_same_names(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: dict[str, list[object]] = {}
    runs: dict[str, FaultRun | None] = {}

    async def scope_body(name: str, schedule: FaultSchedule | None) -> None:
        log: list[tuple[str, float]] = []
        results = seen[name] = []
        async with (
            open_test_scope(name) as scope,
            trioscope.open_supervisor([_box(log)]),
        ):
            if schedule is None:
                runs[name] = None
                for tag in "abc":
                    results.append(await trioscope.call("box", Box.put, tag))
                    await trio.sleep(1)
                return
            async with schedule.apply() as run:
                runs[name] = run
                assert run.registry is scope.registry
                for tag in "abc":
                    try:
                        results.append(await trioscope.call("box", Box.put, tag))
                    except trioscope.ServiceCrashedError:
                        results.append("crashed")
                    await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(scope_body, "first", FaultSchedule((Fault("crash", "box", 1),)))
        nursery.start_soon(scope_body, "second", FaultSchedule((Fault("crash", "box", 2),)))
        nursery.start_soon(scope_body, "third", None)
    assert seen == {
        "first": ["crashed", 1, 2],
        "second": [1, "crashed", 1],
        "third": [1, 2, 3],
    }
    first, second = runs["first"], runs["second"]
    assert first is not None
    assert second is not None
    assert first.fired == (FiredFault(Fault("crash", "box", 1), 1, 0.0),)
    assert second.fired == (FiredFault(Fault("crash", "box", 2), 1, 1.0),)
    assert first.messages == second.messages == {"box": 3}
    assert _faults.installed == 0


async def test_registries_nested_in_the_scope_share_its_schedule_unless_isolated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    schedule = FaultSchedule((Fault("crash", "box", 1), Fault("crash", "box", 2)))
    async with open_test_scope("outer"), schedule.apply() as run:
        async with trioscope.open_registry("isolated", isolated=True):  # noqa: SIM117
            async with trioscope.open_supervisor([_box([])]):
                assert await trioscope.call("box", Box.put, "a") == 1  # not subject to it
        async with trioscope.open_registry("nested"):  # noqa: SIM117
            async with trioscope.open_supervisor([_box([])]):
                with pytest.raises(trioscope.ServiceCrashedError):
                    await trioscope.call("box", Box.put, "b")
                async with (
                    trioscope.open_registry("inner"),
                    FaultSchedule().apply() as inner,
                    trioscope.open_supervisor([_box([])]),
                ):
                    # The innermost schedule applies: no crash at its 1st message.
                    assert await trioscope.call("box", Box.put, "c") == 1
                assert inner.messages == {"box": 1}
    assert run.fired == (FiredFault(Fault("crash", "box", 1), 1, 0.0),)
    assert run.messages == {"box": 1}


async def test_an_isolated_registry_stops_a_schedule_for_every_registry_nested_in_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    schedule = FaultSchedule((Fault("crash", "box", 1),))
    async with open_test_scope("outer"), schedule.apply() as run:
        async with open_test_scope("a nested test scope"):  # isolated  # noqa: SIM117
            async with trioscope.open_registry("below it"):  # not isolated, but below one
                async with trioscope.open_supervisor([_box([])]):
                    assert await trioscope.call("box", Box.put, "a") == 1
        async with trioscope.open_supervisor([_box([])]):
            with pytest.raises(trioscope.ServiceCrashedError):
                await trioscope.call("box", Box.put, "b")  # the schedule's 1st message
    assert run.fired == (FiredFault(Fault("crash", "box", 1), 1, 0.0),)
    assert run.messages == {"box": 1}


async def test_same_named_services_in_two_registries_share_one_message_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    crash = Fault("crash", "box", 2)
    async with open_test_scope("shared"), FaultSchedule((crash,)).apply() as run:
        async with trioscope.open_registry("first"):  # noqa: SIM117
            async with trioscope.open_supervisor([_box(log)]):
                assert await trioscope.call("box", Box.put, "a") == 1  # message 1
        async with trioscope.open_registry("second"):  # noqa: SIM117
            async with trioscope.open_supervisor([_box(log)]):
                # Its own first message, the schedule's second: the crash fires here.
                with pytest.raises(trioscope.ServiceCrashedError) as info:
                    await trioscope.call("box", Box.put, "b")
                assert isinstance(info.value.__cause__, InjectedFault)
                assert await trioscope.call("box", Box.put, "c") == 1  # restarted
    assert log == [("a", 0.0), ("c", 0.0)]
    # One count and one incarnation numbering for the name: the second registry's
    # box was the name's 2nd incarnation to take a message.
    assert run.messages == {"box": 3}
    assert run.fired == (FiredFault(crash, 2, 0.0),)


@pytest.mark.no_trioscope_scope("checks NoRegistryError outside every registry scope")
async def test_applying_needs_a_registry_and_one_schedule_per_registry() -> None:
    with pytest.raises(
        trioscope.NoRegistryError, match=r"^FaultSchedule\.apply\(\) needs a registry"
    ):
        async with FaultSchedule().apply():
            pytest.fail("applied")
    async with open_test_scope("twice"), FaultSchedule().apply():
        with pytest.raises(
            RuntimeError,
            match=r"^a fault schedule is already applied to registry 'twice' "
            r"\(<FaultRun 0 fired, 0 pending of FaultSchedule\(\(\)\)>\): leave its block "
            r"first, or open a nested scope$",
        ):
            async with FaultSchedule().apply():
                pytest.fail("applied twice")
        assert _faults.installed == 1
    assert _faults.installed == 0


async def test_leaving_the_block_uninstalls_the_schedule_on_every_path() -> None:
    assert _faults.installed == 0
    async with open_test_scope("uninstall") as scope:
        with pytest.raises(KeyError):  # noqa: PT012 - the block is what is being tested
            async with FaultSchedule().apply():
                assert (_faults.installed, scope.registry._faults is not None) == (1, True)
                raise KeyError("the body failed")
        assert (_faults.installed, scope.registry._faults) == (0, None)
        with trio.CancelScope() as cancel:
            async with FaultSchedule().apply():
                cancel.cancel()
                await trio.sleep_forever()
        assert cancel.cancelled_caught
        assert (_faults.installed, scope.registry._faults) == (0, None)
        async with FaultSchedule().apply() as again:  # applied again: a fresh run
            assert (again.fired, _faults.installed) == ((), 1)
    assert _faults.installed == 0


# -- run_with_faults -----------------------------------------------------------------------


async def count_three(run: FaultRun) -> list[object]:
    results: list[object] = []
    async with trioscope.open_supervisor([_box([])]):
        for tag in "abc":
            try:
                results.append(await trioscope.call("box", Box.put, tag))
            except trioscope.ServiceCrashedError:
                results.append("crashed")
    return [*results, run.fired]


async def fails_after_one(run: FaultRun) -> None:
    async with trioscope.open_supervisor([_box([])]):
        await trioscope.call("box", Box.put, "a")
    raise ValueError("the body's own check failed")


HELD: list[object] = []  # kept beyond the body, as a module-level cache would


async def leaks_a_name(run: FaultRun) -> None:
    held = run.registry.registered("forgotten", 1)
    held.__enter__()  # a `with` block never left
    HELD.append(held)


def test_run_with_faults_runs_the_body_in_a_fresh_scope_and_returns_its_result() -> None:
    crash = Fault("crash", "box", 2)
    assert run_with_faults(count_three, FaultSchedule((crash,))) == [
        1,
        "crashed",
        1,
        (FiredFault(crash, 1, 0.0),),
    ]
    with pytest.raises(TypeError, match=r"^schedule must be a FaultSchedule, got tuple$"):
        run_with_faults(count_three, (crash,))  # type: ignore[arg-type]


def test_a_failure_under_run_with_faults_says_how_to_replay_it() -> None:
    schedule = FaultSchedule((Fault("slow", "box", 1, 0.5),))
    with pytest.raises(ValueError) as info:  # noqa: PT011 - the message is checked below
        run_with_faults(
            fails_after_one, schedule, foundation=True, values={"events": {"max_events": 5}}
        )
    assert str(info.value) == "the body's own check failed"
    assert info.value.__notes__ == [
        "fault schedule: FaultSchedule((Fault('slow', 'box', 1, 0.5),))\n"
        "fired: [FiredFault(fault=Fault('slow', 'box', 1, 0.5), incarnation=1, at_time=0.0)]\n"
        "replay: run_with_faults(fails_after_one, FaultSchedule((Fault('slow', 'box', 1, 0.5),)), "
        "foundation=True, values={'events': {'max_events': 5}})"
    ]


def test_a_leak_under_run_with_faults_fails_with_the_replay_note() -> None:
    with pytest.raises(LeakError) as info:
        run_with_faults(leaks_a_name, FaultSchedule())
    assert [(leak.kind, leak.what) for leak in info.value.leaks] == [("name", "forgotten")]
    assert info.value.__notes__ == [
        "fault schedule: FaultSchedule(())\nfired: []\n"
        "replay: run_with_faults(leaks_a_name, FaultSchedule(()))"
    ]


async def interleaved(run: FaultRun) -> tuple[list[tuple[str, float]], tuple[FiredFault, ...]]:
    """Eight callers at once: the order their messages arrive is the scheduler's choice."""
    log: list[tuple[str, float]] = []
    async with (
        trioscope.open_supervisor([_box(log)], max_restarts=10),
        trio.open_nursery() as nursery,
    ):
        for i in range(8):
            nursery.start_soon(_put_ignoring_crashes, f"caller{i}")
    return log, run.fired


async def _put_ignoring_crashes(tag: str) -> None:
    for step in range(2):
        try:
            await trioscope.by_name("box", timeout=30.0).call(Box.put, f"{tag}.{step}")
        except trioscope.ServiceCrashedError:
            pass


def _trio_rng() -> Any:
    import trio._core._run as trio_run

    return trio_run._r


def test_the_same_schedule_runs_the_same_way_every_time() -> None:
    schedule = FaultSchedule(
        (Fault("crash", "box", 3), Fault("stall", "box", 5, 1.0), Fault("slow", "box", 9, 2.0))
    )
    first = run_with_faults(interleaved, schedule)
    _trio_rng().seed(12345)  # whatever state the scheduler's random source is in
    again = run_with_faults(interleaved, schedule)
    assert again == first
    assert [f.fault.kind for f in first[1]] == ["crash", "stall", "slow"]
    # The order does depend on the scheduler: two other seeds, two other orders.
    orders = set()
    for value in (1, 2):
        _trio_rng().seed(value)
        log, _ = trio.run(
            _in_scope, interleaved, schedule, clock=trio.testing.MockClock(autojump_threshold=0)
        )
        orders.add(tuple(tag for tag, _ in log))
    assert len(orders | {tuple(tag for tag, _ in first[0])}) == 3


async def _in_scope(body: Callable[[FaultRun], Awaitable[Any]], schedule: FaultSchedule) -> Any:
    async with open_test_scope("plain"), schedule.apply() as run:
        return await body(run)


# -- fault_schedules ---------------------------------------------------------------------

QUICK = settings(database=None, max_examples=300, deadline=None)


@pytest.mark.parametrize(
    ("condition", "minimal"),
    [
        (lambda s: len(s.faults) >= 1, "FaultSchedule((Fault('crash', 'a', 1),))"),
        (
            lambda s: len(s.faults) >= 2,
            "FaultSchedule((Fault('crash', 'a', 1), Fault('crash', 'a', 2)))",
        ),
        (
            lambda s: any(f.service == "b" for f in s.faults),
            "FaultSchedule((Fault('crash', 'b', 1),))",
        ),
        (lambda s: any(f.at >= 7 for f in s.faults), "FaultSchedule((Fault('crash', 'a', 7),))"),
        (
            lambda s: any(f.kind == "hang" for f in s.faults),
            "FaultSchedule((Fault('hang', 'a', 1),))",
        ),
        (
            lambda s: any(f.kind == "stall" for f in s.faults),
            "FaultSchedule((Fault('stall', 'a', 1, 0.25),))",
        ),
        (
            lambda s: any(f.seconds >= 3 for f in s.faults),
            "FaultSchedule((Fault('slow', 'a', 1, 3.0),))",
        ),
    ],
)
def test_schedules_shrink_to_fewer_earlier_shorter_simpler_faults(
    condition: Callable[[FaultSchedule], bool], minimal: str
) -> None:
    assert repr(find(fault_schedules(["a", "b"]), condition, settings=QUICK)) == minimal


def test_the_simplest_kind_comes_first_whatever_the_order_given() -> None:
    strategy = fault_schedules(["a"], kinds=("jump", "slow"))
    found = find(strategy, lambda s: len(s.faults) >= 1, settings=QUICK)
    assert found == FaultSchedule((Fault("slow", "a", 1, 0.25),))


@settings(database=None, max_examples=60, deadline=None)
@given(fault_schedules(["a", "b"], kinds=("jump", "slow"), max_faults=2, max_at=4, max_seconds=1.1))
def test_schedules_stay_within_their_bounds(schedule: FaultSchedule) -> None:
    assert len(schedule.faults) <= 2
    for fault in schedule.faults:
        assert fault.kind in ("jump", "slow")
        assert fault.service in ("a", "b")
        assert 1 <= fault.at <= 4
        assert fault.seconds in (0.25, 0.5, 0.75, 1.0)


@given(st.data())
@settings(database=None, max_examples=5, deadline=None)
def test_a_schedule_of_no_more_than_zero_faults_is_empty(data: st.DataObject) -> None:
    assert data.draw(fault_schedules(["a"], max_faults=0)) == FaultSchedule()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"services": "kv"},
            TypeError,
            "services must be a sequence of service names, got str (for one service: ['kv'])",
        ),
        ({"services": {"kv"}}, TypeError, "services must be a sequence of service names, got set"),
        ({"services": ["kv", 3]}, TypeError, "services must hold service names (str), got 3"),
        ({"services": [""]}, ValueError, "services must hold non-empty service names, got ''"),
        ({"services": []}, ValueError, "services must name at least one service"),
        (
            {"services": ["kv"], "kinds": ("crash", "boom")},
            ValueError,
            "kinds must be among 'crash', 'hang', 'slow', 'stall', 'jump', got 'boom'",
        ),
        (
            {"services": ["kv"], "kinds": ()},
            ValueError,
            "kinds must hold at least one of 'crash', 'hang', 'slow', 'stall', 'jump'",
        ),
        (
            {"services": ["kv"], "max_faults": 1.0},
            TypeError,
            "max_faults must be an int, got float",
        ),
        ({"services": ["kv"], "max_faults": -1}, ValueError, "max_faults must be >= 0, got -1"),
        ({"services": ["kv"], "max_at": True}, TypeError, "max_at must be an int, got bool"),
        (
            {"services": ["kv"], "max_at": 0},
            ValueError,
            "max_at must be >= 1 (1 is the first message), got 0",
        ),
        (
            {"services": ["kv"], "max_seconds": "1"},
            TypeError,
            "max_seconds must be a number, got str",
        ),
        (
            {"services": ["kv"], "max_seconds": 0.2},
            ValueError,
            "max_seconds must be finite and >= 0.25 (seconds come in quarters), got 0.2",
        ),
        (
            {"services": ["kv"], "max_seconds": float("inf")},
            ValueError,
            "max_seconds must be finite and >= 0.25 (seconds come in quarters), got inf",
        ),
    ],
)
def test_the_strategy_checks_its_arguments(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        fault_schedules(**kwargs)


# -- the planted bug: found, shrunk, replayed -------------------------------------------------

# A journal whose writes take two messages, begin(entry) then commit(). The entries
# live in a home the test keeps (they outlive restarts); the pending entry does not
# (the planted bug): a crash between the two messages of a write, at the size() the
# writer reads in between, forgets it, and the commit that follows acknowledges a
# write it never made. FixedJournal keeps the pending entry in the home too.
# One write: the crash that loses it is at message 2, and every failing schedule
# holds it, so shrinking ends there whatever path Hypothesis's search takes (with
# several writes, a search could stop at a later write's crash: a local minimum).
JOURNAL = '''
import trioscope
from trioscope.testing._faults import FaultRun

CALL_ERRORS = (
    trioscope.ServiceCrashedError,
    trioscope.CallTimeoutError,
    trioscope.ServiceUnavailableError,
)


class Journal(trioscope.Service):
    def __init__(self, home: dict[str, list[str]]) -> None:
        self.home = home  # outlives restarts
        self.pending: list[str] = []  # the planted bug: a restart forgets it

    async def begin(self, entry: str) -> None:
        self.pending = [entry]

    async def size(self) -> int:
        return len(self.home["entries"])

    async def commit(self) -> None:
        self.home["entries"] += self.pending
        self.pending = []


class FixedJournal(Journal):
    async def begin(self, entry: str) -> None:
        self.home["pending"] = [entry]

    async def commit(self) -> None:
        self.home["entries"] += self.home["pending"]
        self.home["pending"] = []


async def attempt(fn, *args) -> bool:
    """Whether the call returned (it may have failed: crashed, timed out)."""
    try:
        await trioscope.by_name("journal", timeout=30.0).call(fn, *args)
    except CALL_ERRORS:
        return False
    return True


async def write(cls: type[Journal], entries: str, reads_first: int = 0) -> None:
    home = {"entries": [], "pending": []}
    acknowledged = []
    async with trioscope.open_supervisor([cls.child_spec(home, name="journal")], max_restarts=10):
        for _ in range(reads_first):
            await attempt(cls.size)
        for entry in entries:
            began = await attempt(cls.begin, entry)
            await attempt(cls.size)
            if await attempt(cls.commit) and began:
                acknowledged.append(entry)
    if [e for e in home["entries"] if e in acknowledged] != acknowledged:
        raise AssertionError(f"acknowledged {acknowledged}, journal {home['entries']}")


async def write_journal(run: FaultRun) -> None:
    await write(Journal, "a")


async def write_fixed_journal(run: FaultRun) -> None:
    await write(FixedJournal, "a")
'''

PROPERTIES = """

from hypothesis import Phase, given, settings
from trioscope.testing._faults import fault_schedules, run_with_faults

QUICK = settings(
    database=None, deadline=None, print_blob=False, phases=[Phase.generate, Phase.shrink]
)


@QUICK
@given(fault_schedules(["journal"], max_at=6))
def test_the_journal_loses_no_acknowledged_entry(schedule):
    run_with_faults(write_journal, schedule)


@settings(QUICK, max_examples=50)
@given(fault_schedules(["journal"], max_at=6))
def test_the_fixed_journal_loses_no_acknowledged_entry(schedule):
    run_with_faults(write_fixed_journal, schedule)
"""


def _journal_module() -> types.ModuleType:
    module = types.ModuleType("journal_example")
    exec(compile(JOURNAL, "journal_example", "exec"), module.__dict__)
    return module


journal = _journal_module()

NOTE_LINE = re.compile(r"^E\s+((?:fault schedule|fired|replay): .*)$")


def _run_the_properties(pytester: pytest.Pytester, *, fixed: bool = True) -> list[str]:
    """The note the failing property printed (schedule, fired, replay line)."""
    pytester.makepyfile(test_journal=JOURNAL + PROPERTIES)
    only = () if fixed else ("-k", "not fixed")
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:logging", "--hypothesis-seed=0", *only
    )
    # The property fails for the journal and passes for the fixed one: it can go both ways.
    result.assert_outcomes(failed=1, passed=1 if fixed else 0, deselected=0 if fixed else 1)
    result.stdout.fnmatch_lines(
        ["*FAILED test_journal.py::test_the_journal_loses_no_acknowledged_entry*"]
    )
    return [m.group(1) for line in result.outlines if (m := NOTE_LINE.match(line))]


def test_hypothesis_finds_the_planted_bug_shrinks_it_to_one_fault_and_it_replays(
    pytester: pytest.Pytester,
) -> None:
    note = _run_the_properties(pytester)
    minimal = "FaultSchedule((Fault('crash', 'journal', 2),))"
    fired = "[FiredFault(fault=Fault('crash', 'journal', 2), incarnation=1, at_time=0.0)]"
    assert note == [
        f"fault schedule: {minimal}",
        f"fired: {fired}",
        f"replay: run_with_faults(write_journal, {minimal})",
    ]
    # The same seed, the same search: the same schedule, printed the same way.
    assert _run_the_properties(pytester, fixed=False) == note
    # Replay from the printed schedule: the same failure, the same faults fired.
    schedule = eval(
        note[0].removeprefix("fault schedule: "), {"Fault": Fault, "FaultSchedule": FaultSchedule}
    )
    with pytest.raises(AssertionError) as info:
        run_with_faults(journal.write_journal, schedule)
    assert str(info.value) == "acknowledged ['a'], journal []"
    assert info.value.__notes__ == ["\n".join(note)]


def test_shrinking_removes_every_fault_the_failure_does_not_need() -> None:
    # The write comes after nine reads: the crash that loses it is at message 11,
    # and every failing schedule holds it. Whatever else a failing schedule holds
    # can go, one fault at a time, so the shrinker always ends at that one crash.
    failing: list[FaultSchedule] = []

    async def write_after_reads(run: FaultRun) -> None:
        await journal.write(journal.Journal, "a", reads_first=9)

    @seed(0)
    @settings(
        database=None,
        max_examples=300,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        print_blob=False,
    )
    @given(fault_schedules(["journal"], max_at=11))
    def journal_keeps_its_entries(schedule: FaultSchedule) -> None:
        try:
            run_with_faults(write_after_reads, schedule)
        except AssertionError:
            failing.append(schedule)
            raise

    with pytest.raises(AssertionError, match=r"^acknowledged \['a'\], journal \[\]"):
        journal_keeps_its_entries()
    culprit = Fault("crash", "journal", 11)
    assert all(culprit in schedule.faults for schedule in failing)
    assert failing[-1] == FaultSchedule((culprit,))
