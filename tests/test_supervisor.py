"""Supervisors: start order, strategies, restart types, intensity, backoff, shutdown, control."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import random
import re
import socket
from collections.abc import AsyncIterator
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
    StartError,
    Strategy,
    Supervisor,
    UnknownChildError,
    open_dynamic_supervisor,
    open_supervisor,
    supervisor_spec,
)

pytestmark = pytest.mark.trioscope_scope


class Svc(trioscope.Service):
    """A service that records its lifecycle in *events*."""

    def __init__(self, events: list[str], label: str, terminate_s: float = 0.0) -> None:
        self.events = events
        self.label = label
        self.terminate_s = terminate_s

    async def init(self) -> None:
        self.events.append(f"start {self.label}")

    async def slow(self, seconds: float) -> str:
        self.events.append(f"handler start {self.label}")
        await trio.sleep(seconds)
        self.events.append(f"handler end {self.label}")
        return "done"

    async def boom(self, error: Exception) -> None:
        raise error

    async def terminate(self, reason: BaseException | None) -> None:
        self.events.append(f"terminate {self.label} {reason!r}")
        await trio.sleep(self.terminate_s)
        self.events.append(f"terminated {self.label}")


@pytest.fixture
async def registry() -> AsyncIterator[trioscope.Registry]:
    async with trioscope.open_registry(namespace="test", isolated=True) as reg:
        yield reg


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


# -- starting ---------------------------------------------------------------------


async def test_children_start_in_order_each_ready_before_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []

    def slow_starter(name: str, seconds: float) -> ChildSpec:
        async def start(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            events.append(f"start {name}")
            await trio.sleep(seconds)
            events.append(f"ready {name} at {trio.current_time():g}")
            task_status.started(name)
            await trio.sleep_forever()

        return ChildSpec(name, start)

    specs = [slow_starter("a", 2), slow_starter("b", 1), slow_starter("c", 0)]
    async with open_supervisor(specs) as sup:
        assert events == [
            "start a",
            "ready a at 2",
            "start b",
            "ready b at 3",
            "start c",
            "ready c at 3",
        ]
        assert [(c.id, c.status, c.value) for c in sup.which_children()] == [
            ("a", "running", "a"),
            ("b", "running", "b"),
            ("c", "running", "c"),
        ]


async def test_start_failure_stops_started_children_in_reverse_and_raises_start_error() -> None:
    kids = Children()
    cause = Boom("no database")
    kids.fail_start["c"] = cause
    specs = [kids.spec(n) for n in "abcd"]
    with pytest.raises(StartError) as info:
        async with open_supervisor(specs, id="app"):
            pytest.fail("the body must not run")  # pragma: no cover
    assert type(info.value) is StartError
    assert info.match(
        exact(
            "child 'c' of supervisor 'app' failed to start (see the cause); "
            "the children started before it were stopped in reverse order"
        )
    )
    assert info.value.child_id == "c"
    assert info.value.supervisor == "app"
    assert info.value.__cause__ is cause
    assert kids.events == ["start a", "start b", "start c", "stop b", "stop a"]


async def test_a_child_returning_without_started_fails_to_start() -> None:
    async def lazy(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.lowlevel.checkpoint()

    with pytest.raises(StartError) as info:
        async with open_supervisor([ChildSpec("lazy", lazy)]):
            pytest.fail("the body must not run")  # pragma: no cover
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"strategy": "one_for_one"}, TypeError, "strategy must be a trioscope.Strategy, got "),
        ({"max_restarts": -1}, ValueError, "max_restarts must be >= 0, got -1"),
        ({"max_restarts": 1.5}, TypeError, "max_restarts must be an int, got 1.5"),
        ({"max_seconds": 0}, ValueError, "max_seconds must be finite and > 0, got 0"),
        ({"max_seconds": math.inf}, ValueError, "max_seconds must be finite and > 0, got inf"),
        ({"max_seconds": "5"}, TypeError, "max_seconds must be a number, got '5'"),
        ({"backoff": 1.0}, TypeError, "backoff must be a trioscope.Backoff or None, got 1.0"),
        ({"id": 1}, TypeError, "supervisor id must be a str, got 1"),
    ],
)
async def test_supervisor_options_are_checked(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}"):
        async with open_supervisor([], **options):
            pytest.fail("the body must not run")  # pragma: no cover


async def test_children_must_be_child_specs() -> None:
    with pytest.raises(TypeError, match=r"^children must be ChildSpec values, got 'a'$"):
        async with open_supervisor(["a"]):  # type: ignore[list-item]
            pytest.fail("the body must not run")  # pragma: no cover


# -- strategies -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "after_crash"),
    [
        (Strategy.ONE_FOR_ONE, ["crash b", "start b"]),
        (
            Strategy.ONE_FOR_ALL,
            ["crash b", "stop d", "stop c", "stop a", "start a", "start b", "start c", "start d"],
        ),
        (Strategy.REST_FOR_ONE, ["crash b", "stop d", "stop c", "start b", "start c", "start d"]),
    ],
)
async def test_strategy_stop_and_restart_order(strategy: Strategy, after_crash: list[str]) -> None:
    kids = Children()
    async with open_supervisor([kids.spec(n) for n in "abcd"], strategy=strategy) as sup:
        assert kids.take() == ["start a", "start b", "start c", "start d"]
        kids.crash("b")
        await wait_all_tasks_blocked()
        assert kids.take() == after_crash
        restarted = {e.split()[1] for e in after_crash if e.startswith("start")}
        assert {c.id: c.restarts for c in sup.which_children()} == {
            n: int(n in restarted) for n in "abcd"
        }
        assert all(c.status == "running" for c in sup.which_children())
    assert kids.take() == ["stop d", "stop c", "stop b", "stop a"]


async def test_one_for_all_does_not_restart_temporary_siblings() -> None:
    kids = Children()
    specs = [kids.spec("a"), kids.spec("t", restart=Restart.TEMPORARY), kids.spec("c")]
    async with open_supervisor(specs, strategy=Strategy.ONE_FOR_ALL) as sup:
        kids.take()
        kids.crash("c")
        await wait_all_tasks_blocked()
        assert kids.take() == ["crash c", "stop t", "stop a", "start a", "start c"]
        assert [c.id for c in sup.which_children()] == ["a", "c"]


async def test_rest_for_one_skips_stopped_children() -> None:
    kids = Children()
    specs = [kids.spec(n) for n in "abc"]
    async with open_supervisor(specs, strategy=Strategy.REST_FOR_ONE) as sup:
        await sup.terminate_child("c")
        kids.take()
        kids.crash("a")
        await wait_all_tasks_blocked()
        assert kids.take() == ["crash a", "stop b", "start a", "start b"]
        assert [c.status for c in sup.which_children()] == ["running", "running", "stopped"]


async def test_simultaneous_failures_restart_the_group_once() -> None:
    kids = Children()
    specs = [kids.spec(n) for n in "abc"]
    async with open_supervisor(specs, strategy=Strategy.ONE_FOR_ALL, max_restarts=1) as sup:
        kids.take()
        kids.crash("a")
        kids.crash("b")  # its exit report is stale once a's restart round has begun
        await wait_all_tasks_blocked()
        events = kids.take()
        assert set(events[:2]) == {"crash a", "crash b"}  # in Trio's scheduling order
        assert events[2:] == ["stop c", "start a", "start b", "start c"]
        # One restart round, counted once: max_restarts=1 was not exceeded.
        assert [c.restarts for c in sup.which_children()] == [1, 1, 1]


async def test_a_crash_never_cancels_siblings() -> None:
    kids = Children()
    async with open_supervisor([kids.spec(n) for n in "abc"], max_restarts=10) as sup:
        kids.take()
        for _ in range(5):
            kids.crash("b")
            await wait_all_tasks_blocked()
        assert kids.take() == ["crash b", "start b"] * 5
        assert [c.restarts for c in sup.which_children()] == [0, 5, 0]


# -- restart types ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "how", "restarted"),
    [
        (Restart.PERMANENT, "crash", True),
        (Restart.PERMANENT, "exit", True),
        (Restart.TRANSIENT, "crash", True),
        (Restart.TRANSIENT, "exit", False),
        (Restart.TEMPORARY, "crash", False),
        (Restart.TEMPORARY, "exit", False),
    ],
)
async def test_restart_types(restart: Restart, how: str, restarted: bool) -> None:
    kids = Children()
    async with open_supervisor([kids.spec("a"), kids.spec("x", restart=restart)]) as sup:
        kids.take()
        getattr(kids, how)("x")
        await wait_all_tasks_blocked()
        infos = {c.id: c for c in sup.which_children()}
        if restarted:
            assert kids.take() == [f"{how} x", "start x"]
            assert (infos["x"].status, infos["x"].restarts) == ("running", 1)
        elif restart is Restart.TEMPORARY:
            assert kids.take() == [f"{how} x"]
            assert list(infos) == ["a"]  # removed after it exited
        else:
            assert kids.take() == [f"{how} x"]
            assert (infos["x"].status, infos["x"].value) == ("stopped", None)
        assert infos["a"].status == "running"
    assert kids.take() == (["stop x", "stop a"] if restarted else ["stop a"])


# -- intensity --------------------------------------------------------------------


async def test_exactly_max_restarts_are_allowed_then_it_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Children()
    specs = [kids.spec(n) for n in "abc"]
    opened: list[Supervisor] = []

    async def crash_b_four_times() -> None:
        async with open_supervisor(specs, max_restarts=3, max_seconds=5, id="sup") as sup:
            opened.append(sup)
            kids.take()
            for _ in range(3):
                kids.crash("b")
                await wait_all_tasks_blocked()
                assert kids.take() == ["crash b", "start b"]
                await trio.sleep(1)
            assert trio.current_time() == 3
            kids.crash("b")  # the 4th restart within 5 s: not performed
            await trio.sleep_forever()

    with no_stray_cancel(), pytest.raises(RestartIntensityExceededError) as info:
        await crash_b_four_times()
    assert type(info.value) is RestartIntensityExceededError  # bare, not in a group
    assert info.value.__cause__ is kids.crashes[-1]
    assert info.match(
        exact(
            "supervisor 'sup' gave up after child 'b' failed: more than 3 restarts within 5 s "
            "(the latest failure is the __cause__); all its children were stopped"
        )
    )
    assert (info.value.supervisor, info.value.child_id) == ("sup", "b")
    assert (info.value.max_restarts, info.value.max_seconds) == (3, 5)
    assert kids.take() == ["crash b", "stop c", "stop a"]
    assert [c.status for c in opened[0].which_children()] == ["stopped"] * 3
    assert trio.current_time() == 3


async def test_intensity_window_slides(autojump_clock: trio.testing.MockClock) -> None:
    kids = Children()

    async def crash_at_0_6_12_14() -> None:
        async with open_supervisor([kids.spec("a")], max_restarts=2, max_seconds=10):
            # Failures at 0 and 6 fill the window; at 12 the one at 0 has left it.
            for at in (0, 6, 12):
                await trio.sleep_until(at)
                kids.crash("a")
                await wait_all_tasks_blocked()
            assert kids.take() == ["start a"] + ["crash a", "start a"] * 3
            await trio.sleep_until(14)
            kids.crash("a")  # 6, 12 and 14 are within 10 s: the third is too many
            await trio.sleep_forever()

    with no_stray_cancel(), pytest.raises(RestartIntensityExceededError):
        await crash_at_0_6_12_14()
    assert trio.current_time() == 14


async def test_a_restart_exactly_max_seconds_ago_is_still_in_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # As OTP's supervisor: the window is closed at both ends.
    kids = Children()

    async def crash_at_0_and_5() -> None:
        async with open_supervisor([kids.spec("a")], max_restarts=1, max_seconds=5):
            kids.crash("a")
            await wait_all_tasks_blocked()
            await trio.sleep_until(5)
            kids.crash("a")
            await trio.sleep_forever()

    with no_stray_cancel(), pytest.raises(RestartIntensityExceededError):
        await crash_at_0_and_5()
    assert trio.current_time() == 5


async def test_restarts_spaced_wider_than_the_window_never_give_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Children()
    async with open_supervisor([kids.spec("a")], max_restarts=1, max_seconds=5) as sup:
        for _ in range(20):
            kids.crash("a")
            await wait_all_tasks_blocked()
            await trio.sleep(6)
        assert sup.which_children()[0].restarts == 20
        assert sup.which_children()[0].status == "running"


async def test_zero_max_restarts_gives_up_on_the_first_failure() -> None:
    kids = Children()

    async def crash_once() -> None:
        async with open_supervisor([kids.spec("a"), kids.spec("b")], max_restarts=0):
            kids.crash("a")
            await trio.sleep_forever()

    with no_stray_cancel(), pytest.raises(RestartIntensityExceededError) as info:
        await crash_once()
    assert info.value.__cause__ is kids.crashes[0]
    assert kids.events == ["start a", "start b", "crash a", "stop b"]


async def test_escalation_through_two_levels_of_nesting() -> None:
    kids = Children()
    inner = supervisor_spec([kids.spec("w")], id="inner", max_restarts=0)
    middle = supervisor_spec([inner], id="middle", max_restarts=1)

    async def crash_w_twice() -> None:
        async with open_supervisor([middle, kids.spec("x")], id="outer", max_restarts=0) as outer:
            [middle_info, _] = outer.which_children()
            assert middle_info.kind == "supervisor"
            middle_sup = middle_info.value
            assert isinstance(middle_sup, Supervisor)
            assert middle_sup.id == "middle"
            assert middle_sup.which_children()[0].kind == "supervisor"
            assert kids.take() == ["start w", "start x"]

            kids.crash("w")  # inner gives up; middle restarts it
            await wait_all_tasks_blocked()
            assert kids.take() == ["crash w", "start w"]
            assert middle_sup.which_children()[0].restarts == 1
            assert outer.which_children()[0].restarts == 0

            kids.crash("w")  # inner gives up, middle gives up, outer gives up
            await trio.sleep_forever()

    with no_stray_cancel(), pytest.raises(RestartIntensityExceededError) as info:
        await crash_w_twice()
    assert kids.take() == ["crash w", "stop x"]
    outer_error = info.value
    assert type(outer_error) is RestartIntensityExceededError
    assert (outer_error.supervisor, outer_error.child_id) == ("outer", "middle")
    middle_error = outer_error.__cause__
    assert isinstance(middle_error, RestartIntensityExceededError)
    assert (middle_error.supervisor, middle_error.child_id) == ("middle", "inner")
    inner_error = middle_error.__cause__
    assert isinstance(inner_error, RestartIntensityExceededError)
    assert (inner_error.supervisor, inner_error.child_id) == ("inner", "w")
    assert inner_error.__cause__ is kids.crashes[1]


async def test_an_outer_supervisor_restarts_a_nested_one_that_gave_up() -> None:
    kids = Children()
    nested = supervisor_spec([kids.spec("a"), kids.spec("b")], id="nested", max_restarts=0)
    async with open_supervisor([nested]) as sup:
        kids.take()
        kids.crash("a")
        await wait_all_tasks_blocked()
        assert kids.take() == ["crash a", "stop b", "start a", "start b"]
        assert sup.which_children()[0].restarts == 1
    assert kids.take() == ["stop b", "stop a"]


# -- a plain Trio server as a child -----------------------------------------------


async def test_serve_tcp_is_a_child() -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some():
                await stream.send_all(data)

    spec = ChildSpec("echo", functools.partial(trio.serve_tcp, echo, 0))
    async with open_supervisor([spec]) as sup:
        [info] = sup.which_children()
        listeners = info.value
        assert isinstance(listeners, list)
        assert all(isinstance(listener, trio.SocketListener) for listener in listeners)
        [port] = {
            listener.socket.getsockname()[1]
            for listener in listeners
            if listener.socket.family == socket.AF_INET
        }
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(b"hello")
            assert await stream.receive_some() == b"hello"
    assert sup.which_children()[0].status == "stopped"
    assert all(listener.socket.fileno() == -1 for listener in listeners)  # closed


# -- shutdown -----------------------------------------------------------------------


async def test_leaving_the_block_stops_children_in_reverse_start_order(
    registry: trioscope.Registry,
) -> None:
    kids = Children()
    events = kids.events
    specs = [
        kids.spec("a"),
        Svc.child_spec(events, "s", name="s"),
        supervisor_spec([kids.spec("n1"), kids.spec("n2")], id="nested"),
        kids.spec("z"),
    ]
    async with open_supervisor(specs) as sup:
        assert kids.take() == ["start a", "start s", "start n1", "start n2", "start z"]
    assert kids.take() == [
        "stop z",
        "stop n2",
        "stop n1",
        "terminate s None",
        "terminated s",
        "stop a",
    ]
    assert [c.status for c in sup.which_children()] == ["stopped"] * 4
    assert sup.count_children().active == 0
    assert "closed" in repr(sup)


async def test_graceful_stop_lets_the_current_handler_finish_then_terminate_runs(
    autojump_clock: trio.testing.MockClock, registry: trioscope.Registry
) -> None:
    events: list[str] = []
    results: list[str] = []
    async with trio.open_nursery() as nursery:
        async with open_supervisor([Svc.child_spec(events, "s", name="s", shutdown=10)]) as sup:
            ref = sup.which_children()[0].value
            assert isinstance(ref, trioscope.ServiceRef)

            async def caller() -> None:
                results.append(await ref.call(Svc.slow, 3))

            nursery.start_soon(caller)
            await wait_all_tasks_blocked()
            assert events == ["start s", "handler start s"]
            stopped_at = trio.current_time()
        assert trio.current_time() - stopped_at == 3
    assert events == [
        "start s",
        "handler start s",
        "handler end s",
        "terminate s None",
        "terminated s",
    ]
    assert results == ["done"]


async def test_shutdown_zero_cancels_at_once(
    autojump_clock: trio.testing.MockClock, registry: trioscope.Registry
) -> None:
    events: list[str] = []
    errors: list[Exception] = []
    async with trio.open_nursery() as nursery:
        async with open_supervisor([Svc.child_spec(events, "s", name="s", shutdown=0)]) as sup:
            ref = sup.which_children()[0].value
            assert isinstance(ref, trioscope.ServiceRef)

            async def caller() -> None:
                try:
                    await ref.call(Svc.slow, 3)
                except trioscope.ServiceUnavailableError as exc:
                    errors.append(exc)

            nursery.start_soon(caller)
            await wait_all_tasks_blocked()
            stopped_at = trio.current_time()
        assert trio.current_time() == stopped_at
    assert events == ["start s", "handler start s"]  # no terminate: a brutal kill
    [error] = errors
    assert str(error) == "service 's' is unavailable: it was killed while handling this call"


@pytest.mark.parametrize("shutdown", [0, 0.5, 5])
async def test_a_plain_child_is_cancelled_at_once_but_shielded_cleanup_completes(
    autojump_clock: trio.testing.MockClock, shutdown: float
) -> None:
    events: list[str] = []

    async def child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            events.append(f"cleanup from {trio.current_time():g}")
            with trio.CancelScope(shield=True):
                await trio.sleep(1)
            events.append(f"cleanup done at {trio.current_time():g}")

    async with open_supervisor([ChildSpec("plain", child, shutdown=shutdown)]):
        await trio.sleep(10)
    assert events == ["cleanup from 10", "cleanup done at 11"]


async def test_a_hanging_terminate_is_cancelled_at_the_budget(
    autojump_clock: trio.testing.MockClock, registry: trioscope.Registry
) -> None:
    events: list[str] = []
    spec = Svc.child_spec(events, "s", math.inf, name="s", shutdown=2)
    async with open_supervisor([spec]) as sup:
        stopped_at = trio.current_time()
    assert trio.current_time() - stopped_at == 2
    assert events == ["start s", "terminate s None"]
    assert sup.which_children()[0].status == "stopped"


async def test_a_terminate_cut_off_at_the_budget_is_reported_killed(
    autojump_clock: trio.testing.MockClock, registry: trioscope.Registry
) -> None:
    events: list[str] = []
    spec = Svc.child_spec(events, "s", math.inf, name="s", shutdown=2)
    async with open_supervisor([spec]) as sup, trioscope.monitor("s") as down:
        await sup.terminate_child("s")
        assert (await down.wait()).reason == "killed"


async def test_an_infinite_budget_waits_as_long_as_it_takes(
    autojump_clock: trio.testing.MockClock, registry: trioscope.Registry
) -> None:
    events: list[str] = []
    spec = Svc.child_spec(events, "s", 10_000, name="s", shutdown=math.inf)
    async with open_supervisor([spec]):
        stopped_at = trio.current_time()
    assert trio.current_time() - stopped_at == 10_000
    assert events == ["start s", "terminate s None", "terminated s"]


@pytest.mark.parametrize("shutdown", [0, 3])
async def test_a_nested_supervisor_budget_bounds_its_children(
    autojump_clock: trio.testing.MockClock, registry: trioscope.Registry, shutdown: float
) -> None:
    events: list[str] = []
    nested = supervisor_spec(
        [
            Svc.child_spec(events, "fast", 1, name="fast"),
            Svc.child_spec(events, "slow", math.inf, name="slow", shutdown=math.inf),
        ],
        id="nested",
        shutdown=shutdown,
    )
    async with open_supervisor([nested]):
        stopped_at = trio.current_time()
    # The nested supervisor's own budget cuts its slow child short; 0 kills it at once.
    assert trio.current_time() - stopped_at == shutdown
    if shutdown:
        assert events == ["start fast", "start slow", "terminate slow None"]
    else:
        assert events == ["start fast", "start slow"]


async def test_a_nested_supervisor_within_budget_stops_children_gracefully(
    autojump_clock: trio.testing.MockClock, registry: trioscope.Registry
) -> None:
    events: list[str] = []
    nested = supervisor_spec(
        [Svc.child_spec(events, label, 1, name=label) for label in "ab"], id="nested", shutdown=5
    )
    async with open_supervisor([nested]):
        stopped_at = trio.current_time()
    assert trio.current_time() - stopped_at == 2
    assert events == [
        "start a",
        "start b",
        "terminate b None",
        "terminated b",
        "terminate a None",
        "terminated a",
    ]


# -- errors and cancellation ----------------------------------------------------------


async def test_the_body_exception_propagates_bare_after_children_stop() -> None:
    kids = Children()
    with pytest.raises(KeyError) as info:
        async with open_supervisor([kids.spec("a"), kids.spec("b")]):
            raise KeyError("body")
    assert type(info.value) is KeyError
    assert kids.events == ["start a", "start b", "stop b", "stop a"]


async def test_outer_cancellation_stops_children_gracefully_and_propagates(
    autojump_clock: trio.testing.MockClock, registry: trioscope.Registry
) -> None:
    events: list[str] = []
    specs = [Svc.child_spec(events, label, 1, name=label) for label in "ab"]
    with trio.CancelScope() as outer:
        async with open_supervisor(specs):
            outer.cancel()
            await trio.sleep(math.inf)
    assert outer.cancelled_caught  # the supervisor did not swallow the Cancelled
    # Each terminate sleeps 1 s: the stop is shielded from the outer cancellation.
    assert events == [
        "start a",
        "start b",
        "terminate b None",
        "terminated b",
        "terminate a None",
        "terminated a",
    ]
    assert trio.current_time() == 2


async def test_outer_deadline_during_start_stops_started_children(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Children()

    async def never_ready(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep_forever()

    with trio.move_on_after(5) as outer:
        async with open_supervisor([kids.spec("a"), ChildSpec("slow", never_ready)]):
            pytest.fail("the body must not run")  # pragma: no cover
    assert outer.cancelled_caught
    assert kids.events == ["start a", "stop a"]


async def test_significant_child_exiting_normally_stops_the_supervisor() -> None:
    kids = Children()
    specs = [kids.spec("a"), kids.spec("job", restart=Restart.TRANSIENT, significant=True)]
    specs.append(kids.spec("z"))
    with no_stray_cancel():
        async with open_supervisor(specs, auto_shutdown="any_significant") as sup:
            kids.take()
            kids.exit("job")
            await trio.sleep(math.inf)  # cancelled by the supervisor
    assert kids.take() == ["exit job", "stop z", "stop a"]
    assert [c.status for c in sup.which_children()] == ["stopped"] * 3


async def test_significant_child_crashing_is_restarted() -> None:
    kids = Children()
    spec = kids.spec("job", restart=Restart.TRANSIENT, significant=True)
    async with open_supervisor([spec], auto_shutdown="any_significant") as sup:
        kids.crash("job")
        await wait_all_tasks_blocked()
        assert sup.which_children()[0].restarts == 1


async def test_significant_child_ends_a_nested_supervisor_normally() -> None:
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
        kids.exit("job")
        await wait_all_tasks_blocked()
        assert kids.take() == ["exit job", "stop helper"]
        # The nested supervisor ended normally, so its TRANSIENT spec is not restarted.
        assert [(c.id, c.status) for c in sup.which_children()] == [
            ("nested", "stopped"),
            ("b", "running"),
        ]


# -- backoff --------------------------------------------------------------------------


class Scripted:
    """A child whose n-th run lasts ``runs[n]`` seconds, then crashes.

    ``None`` makes that run fail to start; past the end of the list it runs
    until stopped. Start times are recorded.
    """

    def __init__(self, runs: list[float | None]) -> None:
        self.runs = runs
        self.starts: list[float] = []

    async def __call__(self, *, task_status: trio.TaskStatus[int]) -> None:
        n = len(self.starts)
        self.starts.append(trio.current_time())
        run = self.runs[n] if n < len(self.runs) else math.inf
        if run is None:
            raise Boom(f"start {n}")
        task_status.started(n)
        await trio.sleep(run)
        raise Boom(f"run {n}")

    def delays(self) -> list[float]:
        """Seconds from each failure to the next start."""
        ends = [start + (self.runs[n] or 0.0) for n, start in enumerate(self.starts[:-1])]
        return [nxt - end for end, nxt in zip(ends, self.starts[1:], strict=True)]


async def test_backoff_delays_without_jitter(autojump_clock: trio.testing.MockClock) -> None:
    child = Scripted([0.0] * 6)
    backoff = Backoff(initial=1, maximum=5, multiplier=2, jitter=0, reset_after=100)
    specs = [ChildSpec("a", child)]
    async with open_supervisor(specs, backoff=backoff, max_restarts=10, max_seconds=100):
        await trio.sleep(100)
    assert child.delays() == [1, 2, 4, 5, 5, 5]
    assert child.starts == [0, 1, 3, 7, 12, 17, 22]


@pytest.mark.parametrize("seed", [0, 1, 1234])
async def test_backoff_jitter_is_seeded(autojump_clock: trio.testing.MockClock, seed: int) -> None:
    child = Scripted([0.0] * 5)
    backoff = Backoff(initial=1, maximum=8, multiplier=2, jitter=0.5, reset_after=100)
    draws = random.Random(seed)
    expected = [min(8, 2**n) * (1 - 0.5 * draws.random()) for n in range(5)]
    async with open_supervisor(
        [ChildSpec("a", child)],
        backoff=backoff,
        max_restarts=10,
        max_seconds=100,
        rng=random.Random(seed),
    ):
        await trio.sleep(100)
    assert child.delays() == pytest.approx(expected, abs=1e-9)
    assert len(set(child.delays())) == 5


async def test_a_child_backoff_overrides_the_supervisor_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    own = Scripted([0.0])
    other = Scripted([0.0])
    specs = [
        ChildSpec("own", own, backoff=Backoff(initial=7, jitter=0)),
        ChildSpec("other", other),
    ]
    async with open_supervisor(specs, backoff=Backoff(initial=2, jitter=0)):
        await trio.sleep(20)
    assert own.delays() == [7]
    assert other.delays() == [2]


async def test_backoff_resets_after_a_stable_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Two quick failures (1 s, 2 s), then a run of 10 s: the sequence starts over.
    child = Scripted([0.0, 0.0, 10.0, 0.0, 9.0, 0.0])
    backoff = Backoff(initial=1, maximum=100, multiplier=2, jitter=0, reset_after=10)
    async with open_supervisor(
        [ChildSpec("a", child)], backoff=backoff, max_restarts=10, max_seconds=100
    ):
        await trio.sleep(200)
    assert child.delays() == [1, 2, 1, 2, 4, 8]


async def test_backoff_does_not_reset_while_restarts_keep_failing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Only running for reset_after counts as stable; failed restarts do not,
    # however long the waits between them have grown.
    await trio.sleep(1)
    child = Scripted([0.0, None, None, None, None])
    backoff = Backoff(initial=1, maximum=100, multiplier=2, jitter=0, reset_after=5)
    async with open_supervisor(
        [ChildSpec("a", child)], backoff=backoff, max_restarts=10, max_seconds=100
    ):
        await trio.sleep(100)
    assert child.delays() == [1, 2, 4, 8, 16]


async def test_which_children_shows_backoff_and_restart_at(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Children()
    specs = [kids.spec("a", backoff=Backoff(initial=5, jitter=0)), kids.spec("b")]
    async with open_supervisor(specs) as sup:
        await trio.sleep(1)
        kids.crash("a")
        await wait_all_tasks_blocked()
        [a, b] = sup.which_children()
        assert (a.status, a.restart_at, a.value, a.restarts) == ("backoff", 6, None, 0)
        assert (b.status, b.restart_at, b.value) == ("running", None, "b")
        assert sup.count_children().active == 1
        await trio.sleep_until(6)
        await wait_all_tasks_blocked()
        [a, _] = sup.which_children()
        assert (a.status, a.restart_at, a.value, a.restarts) == ("running", None, "a", 1)


async def test_backoff_with_one_for_all(autojump_clock: trio.testing.MockClock) -> None:
    kids = Children()
    async with open_supervisor(
        [kids.spec(n) for n in "abc"],
        strategy=Strategy.ONE_FOR_ALL,
        backoff=Backoff(initial=2, jitter=0),
    ) as sup:
        kids.take()
        kids.crash("b")
        await wait_all_tasks_blocked()
        assert kids.take() == ["crash b", "stop c", "stop a"]
        infos = sup.which_children()
        assert [(c.status, c.restart_at) for c in infos] == [("backoff", 2)] * 3
        await trio.sleep(2)
        await wait_all_tasks_blocked()
        assert kids.take() == ["start a", "start b", "start c"]
        assert [c.restarts for c in sup.which_children()] == [1, 1, 1]


async def test_backoff_then_intensity_gives_up(autojump_clock: trio.testing.MockClock) -> None:
    child = Scripted([0.0] * 10)
    backoff = Backoff(initial=1, maximum=100, multiplier=2, jitter=0)

    async def run_until_it_gives_up() -> None:
        async with open_supervisor(
            [ChildSpec("a", child)], backoff=backoff, max_restarts=2, max_seconds=10
        ):
            await trio.sleep_forever()

    with no_stray_cancel(), pytest.raises(RestartIntensityExceededError) as info:
        await run_until_it_gives_up()
    # Failures at 0, 1 and 3 (after waits of 1 s and 2 s): the third is one too many.
    assert child.starts == [0, 1, 3]
    assert trio.current_time() == 3
    assert str(info.value.__cause__) == "run 2"


async def test_children_in_backoff_are_stopped_when_the_supervisor_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    child = Scripted([0.0])
    spec = ChildSpec("a", child, backoff=Backoff(initial=5, jitter=0))
    async with open_supervisor([ChildSpec("b", Scripted([])), spec]) as sup:
        await wait_all_tasks_blocked()
        assert sup.which_children()[1].status == "backoff"
    assert [(c.status, c.restart_at) for c in sup.which_children()] == [("stopped", None)] * 2
    assert trio.current_time() == 0
    assert child.starts == [0]


async def test_terminate_child_cancels_a_pending_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Children()
    async with open_supervisor([kids.spec("a", backoff=Backoff(initial=5, jitter=0))]) as sup:
        kids.crash("a")
        await wait_all_tasks_blocked()
        assert sup.which_children()[0].status == "backoff"
        await sup.terminate_child("a")
        assert (sup.which_children()[0].status, sup.which_children()[0].restart_at) == (
            "stopped",
            None,
        )
        await trio.sleep(10)
        assert kids.events == ["start a", "crash a"]


# -- introspection and control ------------------------------------------------------


async def test_which_children_and_count_children(registry: trioscope.Registry) -> None:
    kids = Children()
    events = kids.events
    specs = [
        kids.spec("a"),
        Svc.child_spec(events, "s", name="s"),
        supervisor_spec([kids.spec("n")], id="nested"),
    ]
    async with open_supervisor(specs) as sup:
        infos = sup.which_children()
        assert [(c.id, c.kind, c.status, c.restarts, c.restart_at) for c in infos] == [
            ("a", "worker", "running", 0, None),
            ("s", "worker", "running", 0, None),
            ("nested", "supervisor", "running", 0, None),
        ]
        assert infos[0].value == "a"
        assert infos[1].value == trioscope.whereis("s")
        assert isinstance(infos[2].value, Supervisor)
        assert sup.count_children() == trioscope.ChildCounts(
            specs=3, active=3, supervisors=1, workers=2
        )
        await sup.terminate_child("a")
        assert sup.count_children() == trioscope.ChildCounts(
            specs=3, active=2, supervisors=1, workers=2
        )
        assert repr(sup) == "<Supervisor 'supervisor' ONE_FOR_ONE 2/3 children running>"


async def test_start_child_appends_and_returns_the_started_value() -> None:
    kids = Children()
    async with open_supervisor([kids.spec("a")]) as sup:
        assert await sup.start_child(kids.spec("b")) == "b"
        assert [c.id for c in sup.which_children()] == ["a", "b"]
        kids.crash("b")  # it is supervised like any other child
        await wait_all_tasks_blocked()
        assert sup.which_children()[1].restarts == 1
    assert kids.events == ["start a", "start b", "crash b", "start b", "stop b", "stop a"]


async def test_start_child_with_a_duplicate_id() -> None:
    kids = Children()
    async with open_supervisor([kids.spec("a")], id="sup") as sup:
        message = (
            "supervisor 'sup' already has a child 'a': ids must be unique in a static "
            "supervisor; pass id= to child_spec (or ChildSpec) to tell them apart"
        )
        with pytest.raises(ValueError, match=exact(message)):
            await sup.start_child(kids.spec("a"))
        assert kids.events == ["start a"]


async def test_start_child_that_fails_to_start_is_not_kept() -> None:
    kids = Children()
    cause = kids.fail_start["b"] = Boom("no")
    async with open_supervisor([kids.spec("a")], id="sup") as sup:
        with pytest.raises(StartError) as info:
            await sup.start_child(kids.spec("b"))
        assert info.value.__cause__ is cause
        assert info.value.child_id == "b"
        assert [c.id for c in sup.which_children()] == ["a"]


async def test_start_child_takes_a_child_spec() -> None:
    async with open_supervisor([]) as sup:
        with pytest.raises(TypeError, match=r"^start_child takes a ChildSpec, got 'a'$"):
            await sup.start_child("a")  # type: ignore[arg-type]


@pytest.mark.parametrize("restart", list(Restart))
async def test_terminate_child_stays_stopped_whatever_its_restart_type(
    restart: Restart,
) -> None:
    kids = Children()
    async with open_supervisor([kids.spec("a", restart=restart), kids.spec("b")]) as sup:
        await sup.terminate_child("a")
        await wait_all_tasks_blocked()
        assert [(c.id, c.status) for c in sup.which_children()] == [
            ("a", "stopped"),
            ("b", "running"),
        ]
        await sup.terminate_child("a")  # already stopped: nothing to do
        assert await sup.restart_child("a") == "a"
        assert [(c.status, c.restarts) for c in sup.which_children()] == [
            ("running", 1),
            ("running", 0),
        ]
    assert kids.events == ["start a", "start b", "stop a", "start a", "stop b", "stop a"]


async def test_restart_child_of_a_running_child_is_a_state_error() -> None:
    kids = Children()
    async with open_supervisor([kids.spec("a")], id="sup") as sup:
        message = "child 'a' of supervisor 'sup' is running; only a stopped child can be restarted"
        with pytest.raises(ChildStateError, match=exact(message)) as info:
            await sup.restart_child("a")
        assert (info.value.child_id, info.value.status) == ("a", "running")


async def test_restart_child_that_fails_to_start() -> None:
    kids = Children()
    async with open_supervisor([kids.spec("a")], id="sup") as sup:
        await sup.terminate_child("a")
        cause = kids.fail_start["a"] = Boom("no")
        with pytest.raises(StartError) as info:
            await sup.restart_child("a")
        assert info.value.__cause__ is cause
        assert sup.which_children()[0].status == "stopped"


async def test_delete_child() -> None:
    kids = Children()
    async with open_supervisor([kids.spec("a"), kids.spec("b")], id="sup") as sup:
        message = "child 'a' of supervisor 'sup' is running; terminate_child it before deleting it"
        with pytest.raises(ChildStateError, match=exact(message)):
            sup.delete_child("a")
        await sup.terminate_child("a")
        sup.delete_child("a")
        assert [c.id for c in sup.which_children()] == ["b"]
        await sup.start_child(kids.spec("a"))  # the id is free again
        assert [c.id for c in sup.which_children()] == ["b", "a"]


async def _call(fn: Any, *args: Any) -> object:
    """Call *fn*, awaiting the result if it is a coroutine."""
    result = fn(*args)
    return await result if inspect.isawaitable(result) else result


@pytest.mark.parametrize("operation", ["terminate_child", "restart_child", "delete_child"])
async def test_unknown_child(operation: str) -> None:
    async with open_supervisor([], id="sup") as sup:
        message = "supervisor 'sup' has no child 'nope'; which_children() lists the ids it has"
        with pytest.raises(UnknownChildError, match=exact(message)) as info:
            await _call(getattr(sup, operation), "nope")
        assert isinstance(info.value, LookupError)


async def test_control_after_the_block_is_refused() -> None:
    kids = Children()
    async with open_supervisor([kids.spec("a")], id="sup") as sup:
        pass
    refusal = (
        "was refused (a stopping supervisor starts, restarts and terminates nothing more; "
        "its children are stopped in order)"
    )
    for call, attempt in [
        ("start_child", lambda: sup.start_child(kids.spec("b"))),
        ("restart_child", lambda: sup.restart_child("a")),
        ("terminate_child", lambda: sup.terminate_child("a")),
    ]:
        message = f"supervisor 'sup' has stopped: {call} {refusal}"
        with (
            trio.testing.assert_checkpoints(),
            pytest.raises(trioscope.SupervisorClosedError, match=exact(message)),
        ):
            await attempt()
    with pytest.raises(
        trioscope.SupervisorClosedError,
        match=exact(f"supervisor 'sup' has stopped: delete_child {refusal}"),
    ):
        sup.delete_child("a")


# -- monitors on supervised services ------------------------------------------------


async def test_monitor_sees_a_crash_then_the_supervisor_restarts_it(
    registry: trioscope.Registry,
) -> None:
    events: list[str] = []
    async with open_supervisor([Svc.child_spec(events, "s", name="s")]) as sup:
        ref = trioscope.whereis("s")
        assert ref is not None
        error = Boom("handler")
        async with trioscope.monitor("s") as down:
            with pytest.raises(trioscope.ServiceCrashedError) as info:
                await ref.call(Svc.boom, error)
            assert info.value.__cause__ is error
            assert await down.wait() == trioscope.Down(
                name="s", incarnation=ref.incarnation, reason=error
            )
        await wait_all_tasks_blocked()
        new = trioscope.whereis("s")
        assert new is not None
        assert new.incarnation != ref.incarnation
        assert sup.which_children()[0].restarts == 1


async def test_monitor_sees_an_orderly_shutdown(registry: trioscope.Registry) -> None:
    events: list[str] = []
    async with open_supervisor([Svc.child_spec(events, "s", name="s")]) as sup:
        ref = trioscope.whereis("s")
        assert ref is not None
        async with trioscope.monitor(ref) as down:
            await sup.terminate_child("s")
            assert await down.wait() == trioscope.Down(
                name="s", incarnation=ref.incarnation, reason="shutdown"
            )
        assert trioscope.whereis("s") is None


async def test_monitor_of_nothing_is_noproc(registry: trioscope.Registry) -> None:
    async with trioscope.monitor("nobody") as down:
        assert await down.wait() == trioscope.Down(name="nobody", incarnation=0, reason="noproc")


# -- dynamic supervisors ------------------------------------------------------------


async def test_dynamic_supervisor_max_children() -> None:
    kids = Children()
    async with open_dynamic_supervisor(max_children=2) as sup:
        assert sup.which_children() == []
        assert sup.strategy is Strategy.ONE_FOR_ONE
        await sup.start_child(kids.spec("a"))
        await sup.start_child(kids.spec("b"))
        message = (
            "supervisor 'dynamic_supervisor' already has its maximum of 2 children; "
            "stop one first or open it with a larger max_children"
        )
        with pytest.raises(trioscope.MaxChildrenError, match=exact(message)) as info:
            await sup.start_child(kids.spec("c"))
        assert (info.value.supervisor, info.value.max_children) == ("dynamic_supervisor", 2)
        assert kids.events == ["start a", "start b"]
        await sup.terminate_child("a")  # a stopped child keeps its spec, not its slot
        await sup.start_child(kids.spec("c"))
        assert [(c.id, c.status) for c in sup.which_children()] == [
            ("a", "stopped"),
            ("b", "running"),
            ("c", "running"),
        ]
        with pytest.raises(trioscope.MaxChildrenError):
            await sup.restart_child("a")
        with pytest.raises(trioscope.MaxChildrenError):
            await sup.start_child(kids.spec("d"))
        sup.delete_child("a")
        await sup.terminate_child("b")
        assert await sup.restart_child("b") == "b"


async def test_dynamic_supervisor_frees_a_slot_when_a_temporary_child_exits() -> None:
    kids = Children()
    async with open_dynamic_supervisor(max_children=1) as sup:
        await sup.start_child(kids.spec("a", restart=Restart.TEMPORARY))
        kids.exit("a")
        await wait_all_tasks_blocked()
        await sup.start_child(kids.spec("b"))


@pytest.mark.parametrize("how", ["exit", "crash"])
async def test_dynamic_supervisor_forgets_children_that_end_for_good(how: str) -> None:
    kids = Children()
    async with open_dynamic_supervisor() as sup:
        await sup.start_child(kids.spec("a", restart=Restart.TRANSIENT))
        await sup.start_child(kids.spec("b", restart=Restart.TRANSIENT))
        if how == "exit":
            kids.exit("a")  # a normal exit: not restarted, and not kept either
        else:
            kids.crash("a")  # a crash: restarted, so kept
        await wait_all_tasks_blocked()
        ids = [c.id for c in sup.which_children()]
        assert ids == (["b"] if how == "exit" else ["a", "b"])


@pytest.mark.parametrize(
    ("max_children", "error", "message"),
    [
        (-1, ValueError, "max_children must be >= 0, got -1"),
        (1.5, TypeError, "max_children must be None or an int, got 1.5"),
        ("2", TypeError, "max_children must be None or an int, got '2'"),
        (True, TypeError, "max_children must be None or an int, got True"),
    ],
)
async def test_dynamic_supervisor_max_children_is_checked(
    max_children: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=exact(message)):
        open_dynamic_supervisor(max_children)


async def test_dynamic_supervisor_scales_to_a_thousand_children() -> None:
    stops: list[int] = []

    async def child(n: int, *, task_status: trio.TaskStatus[int]) -> None:
        task_status.started(n)
        try:
            await trio.sleep_forever()
        finally:
            stops.append(n)

    async with open_dynamic_supervisor(id="many") as sup:
        for n in range(1000):
            assert await sup.start_child(ChildSpec(f"c{n}", functools.partial(child, n))) == n
        assert sup.count_children() == trioscope.ChildCounts(
            specs=1000, active=1000, supervisors=0, workers=1000
        )
    # Stopped all at once (as Elixir's DynamicSupervisor), each within its budget.
    assert sorted(stops) == list(range(1000))


# -- logging --------------------------------------------------------------------------


async def test_one_structured_record_per_start_exit_restart_and_give_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioscope.supervisor")
    kids = Children()

    async def crash_b_twice() -> None:
        async with open_supervisor([kids.spec("a"), kids.spec("b")], id="sup", max_restarts=1):
            kids.crash("b")
            await wait_all_tasks_blocked()
            kids.crash("b")
            await trio.sleep_forever()

    with no_stray_cancel(), pytest.raises(RestartIntensityExceededError):
        await crash_b_twice()
    records = [r for r in caplog.records if r.name == "trioscope.supervisor"]
    events = [
        (r.event, r.supervisor, r.child, r.levelno)  # type: ignore[attr-defined]
        for r in records
        if r.event in ("start", "exit", "restart", "give_up")  # type: ignore[attr-defined]
    ]
    assert events == [
        ("start", "sup", "a", logging.INFO),
        ("start", "sup", "b", logging.INFO),
        ("exit", "sup", "b", logging.ERROR),
        ("restart", "sup", "b", logging.INFO),
        ("start", "sup", "b", logging.INFO),
        ("exit", "sup", "b", logging.ERROR),
        ("give_up", "sup", "b", logging.ERROR),
    ]
    exits = [r for r in records if r.event == "exit"]  # type: ignore[attr-defined]
    assert all(isinstance(r.exc_info and r.exc_info[1], Boom) for r in exits)
    assert [r.restarts for r in records if r.event == "restart"] == [1]  # type: ignore[attr-defined]
    assert records[-1].event == "stop"  # type: ignore[attr-defined]
    assert records[-1].child == "a"  # type: ignore[attr-defined]


async def test_a_crashed_service_has_one_traceback_in_the_logs(
    caplog: pytest.LogCaptureFixture, registry: trioscope.Registry
) -> None:
    # The service's crash report carries the traceback and the request; the
    # supervisor's exit record names the error without repeating it.
    caplog.set_level(logging.INFO)
    events: list[str] = []
    async with open_supervisor([Svc.child_spec(events, "s", name="s")], id="sup") as sup:
        with pytest.raises(trioscope.ServiceCrashedError):
            await trioscope.call("s", Svc.boom, Boom("bad"))
        await wait_all_tasks_blocked()
        assert sup.which_children()[0].restarts == 1
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert [(r.name, r.getMessage()) for r in with_traceback] == [
        (
            "trioscope.service",
            "service 's' crashed in boom(Boom('bad')) (mailbox depth 0, restarts 0)",
        )
    ]
    [exit_record] = [r for r in caplog.records if getattr(r, "event", None) == "exit"]
    assert exit_record.getMessage() == "supervisor 'sup': child 's' exited with Boom: bad"


async def test_a_normal_exit_is_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioscope.supervisor")
    kids = Children()
    async with open_supervisor([kids.spec("a", restart=Restart.TRANSIENT)], id="sup"):
        kids.exit("a")
        await wait_all_tasks_blocked()
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "exit"]
    assert record.levelno == logging.INFO
    assert record.reason == "normal"  # type: ignore[attr-defined]
    assert record.getMessage() == "supervisor 'sup': child 'a' exited normally"


async def test_a_keyboard_interrupt_in_a_child_stops_the_rest_in_order_and_is_raised_bare() -> None:
    kids = Children()

    go = trio.Event()

    async def interrupted(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await go.wait()
        raise KeyboardInterrupt

    async def run() -> None:
        specs = [kids.spec("a"), ChildSpec("ki", interrupted), kids.spec("c")]
        async with open_supervisor(specs) as sup:
            opened.append(sup)
            go.set()
            await trio.sleep_forever()

    opened: list[Supervisor] = []
    with pytest.raises(KeyboardInterrupt) as info:
        await run()
    assert type(info.value) is KeyboardInterrupt  # bare, never in a group
    assert kids.events == ["start a", "start c", "stop c", "stop a"]
    assert [c.status for c in opened[0].which_children()] == ["stopped"] * 3
