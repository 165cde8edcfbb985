"""Supervision trees (issue 8, items 9-13): nesting dynamic and task supervisors,
supervisors found by name, task-supervisor introspection, messages that tell the truth."""

from __future__ import annotations

import logging
import math
import re

import pytest
import trio
import trio.lowlevel
import trio.testing
from trio.testing import wait_all_tasks_blocked

import trioscope
from trioscope import (
    ChildSpec,
    MaxChildrenError,
    NoRegistryError,
    StartError,
    Supervisor,
    TaskInfo,
    TaskSupervisor,
    UnknownChildError,
    dynamic_supervisor_spec,
    open_dynamic_supervisor,
    open_supervisor,
    open_task_supervisor,
    supervisor_spec,
    task_supervisor_spec,
    whereis_supervisor,
    whereis_task_supervisor,
)

pytestmark = pytest.mark.trioscope_scope


def exact(text: str) -> str:
    return f"^{re.escape(text)}$"


class Boom(Exception):
    pass


class Slow(trioscope.Service):
    """A service whose terminate takes *stop_s* seconds, recording when it ends."""

    def __init__(self, events: list[str], label: str, stop_s: float = 1.0) -> None:
        self.events = events
        self.label = label
        self.stop_s = stop_s

    async def ping(self) -> str:
        return "pong"

    async def terminate(self, reason: BaseException | None) -> None:
        try:
            await trio.sleep(self.stop_s)
            self.events.append(f"terminated {self.label} at {trio.current_time():g}")
        except trio.Cancelled:
            self.events.append(f"cut short {self.label} at {trio.current_time():g}")
            raise


async def too_slow() -> None:
    await trio.lowlevel.checkpoint()
    raise trio.TooSlowError


async def ready(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started("ready")
    await trio.sleep_forever()


# -- item 9: nesting dynamic and task supervisors ---------------------------------


async def test_a_nested_dynamic_supervisor_is_a_supervisor_child_that_stops_gracefully(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []
    sessions_spec = dynamic_supervisor_spec(id="sessions")
    async with trioscope.open_registry(), open_supervisor([sessions_spec]) as root:
        [info] = root.which_children()
        assert (info.id, info.kind, info.status) == ("sessions", "supervisor", "running")
        assert root.count_children().supervisors == 1
        sessions = info.value
        assert isinstance(sessions, Supervisor)
        assert sessions.dynamic
        ref = await sessions.start_child(Slow.child_spec(events, "s1", name="s1"))
        assert await ref.call(Slow.ping) == "pong"
    # Stopped in order, within budgets: the service's terminate ran to its end.
    assert events == ["terminated s1 at 1"]


async def test_a_nested_dynamic_supervisors_stop_is_bounded_by_its_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []
    spec = dynamic_supervisor_spec(id="sessions", shutdown=2)
    assert spec.shutdown == 2
    async with trioscope.open_registry(), open_supervisor([spec]) as root:
        sessions = root.which_children()[0].value
        assert isinstance(sessions, Supervisor)
        await sessions.start_child(
            Slow.child_spec(events, "s1", stop_s=10, shutdown=math.inf, name="s1")
        )
    assert events == ["cut short s1 at 2"]
    assert trio.current_time() == 2


async def test_dynamic_supervisor_spec_passes_max_children() -> None:
    async with open_supervisor([dynamic_supervisor_spec(id="pool", max_children=1)]) as root:
        pool = root.which_children()[0].value
        assert isinstance(pool, Supervisor)
        assert pool.max_children == 1
        assert pool.id == "pool"
        await pool.start_child(ChildSpec("a", ready))
        with pytest.raises(MaxChildrenError):
            await pool.start_child(ChildSpec("b", ready))


def test_nested_supervisor_specs_default_to_an_infinite_shutdown() -> None:
    assert dynamic_supervisor_spec(id="d").shutdown == math.inf
    assert task_supervisor_spec(id="t").shutdown == math.inf
    assert dynamic_supervisor_spec(id="d").kind == "supervisor"
    assert task_supervisor_spec(id="t").kind == "supervisor"
    assert dynamic_supervisor_spec(id="d").id == "d"


async def test_a_nested_task_supervisor_stops_its_tasks_gracefully(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []

    async def job() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(1)  # cleanup that takes a while
                events.append(f"job cleaned up at {trio.current_time():g}")

    async with open_supervisor([ChildSpec("a", ready), task_supervisor_spec(id="jobs")]) as root:
        infos = root.which_children()
        assert [(i.id, i.kind) for i in infos] == [("a", "worker"), ("jobs", "supervisor")]
        tasks = infos[1].value
        assert isinstance(tasks, TaskSupervisor)
        assert tasks.id == "jobs"
        tasks.start_soon(job)
        await wait_all_tasks_blocked()
    assert events == ["job cleaned up at 1"]


async def test_stopping_a_nested_task_supervisor_cancels_its_tasks_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []

    async def stubborn() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            events.append(f"cancelled at {trio.current_time():g}")
            raise

    async with open_supervisor([task_supervisor_spec(id="jobs", shutdown=3)]) as root:
        tasks = root.which_children()[0].value
        assert isinstance(tasks, TaskSupervisor)
        tasks.start_soon(stubborn)
        await wait_all_tasks_blocked()
    assert events == ["cancelled at 0"]  # graceful: its tasks are cancelled at once


async def test_task_supervisor_children_count_and_terminate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []

    async def job(label: str) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            events.append(f"{label} cancelled")
            raise

    async with open_task_supervisor(id="jobs") as tasks:
        assert tasks.children() == []
        assert tasks.count_children() == 0
        await trio.sleep(2)
        first = tasks.start_soon(job, "one")
        await trio.sleep(1)
        second = tasks.start_soon(job, "two", name="second job")
        assert isinstance(first, TaskInfo)
        assert first == TaskInfo(id=first.id, name=job.__qualname__, started_at=2.0)
        assert second.name == "second job"
        assert second.started_at == 3.0
        assert first.id != second.id
        assert tasks.children() == [first, second]
        assert tasks.count_children() == 2
        await wait_all_tasks_blocked()
        await tasks.terminate_child(first)
        assert events == ["one cancelled"]
        assert tasks.children() == [second]
        await tasks.terminate_child(second.id)
        assert tasks.children() == []
        with pytest.raises(
            UnknownChildError,
            match=exact(
                f"task supervisor 'jobs' has no task {second.id}; children() lists the tasks "
                "it runs (this one may have ended)"
            ),
        ):
            await tasks.terminate_child(second.id)
    assert events == ["one cancelled", "two cancelled"]
    assert tasks.failures == 0


async def test_task_supervisor_unknown_task_message_names_children() -> None:
    async with open_task_supervisor(id="jobs") as tasks:
        with pytest.raises(UnknownChildError) as info:
            await tasks.terminate_child(12345)
        assert info.value.child_id == "12345"


async def test_terminating_a_run_task_tells_its_caller() -> None:
    errors: list[Exception] = []
    async with open_task_supervisor(id="jobs") as tasks:

        async def caller() -> None:
            try:
                await tasks.run(trio.sleep_forever)
            except trioscope.ServiceUnavailableError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            await wait_all_tasks_blocked()
            [task] = tasks.children()
            assert task.name == "sleep_forever"
            await tasks.terminate_child(task)
    [error] = errors
    assert str(error) == (
        "service task supervisor 'jobs' is unavailable: its task sleep_forever was "
        "terminated (terminate_child) before it finished"
    )


async def _add(a: int, b: int) -> int:
    await trio.lowlevel.checkpoint()
    return a + b


async def test_task_supervisor_max_children() -> None:
    async with open_task_supervisor(id="jobs", max_children=1) as tasks:
        assert tasks.max_children == 1
        tasks.start_soon(trio.sleep_forever)
        message = (
            "supervisor 'jobs' already has its maximum of 1 children; "
            "stop one first or open it with a larger max_children"
        )
        with pytest.raises(MaxChildrenError, match=exact(message)):
            tasks.start_soon(trio.sleep_forever)
        with pytest.raises(MaxChildrenError, match=exact(message)):
            await tasks.run(trio.sleep, 0)
        await wait_all_tasks_blocked()
        await tasks.terminate_child(tasks.children()[0])
        assert await tasks.run(_add, 1, 2) == 3
        tasks.cancel()


@pytest.mark.parametrize("limit", [-1, 1.5, True])
def test_task_supervisor_max_children_is_checked(limit: object) -> None:
    error = ValueError if limit == -1 else TypeError
    with pytest.raises(error):
        open_task_supervisor(max_children=limit)  # type: ignore[arg-type]
    with pytest.raises(error):
        task_supervisor_spec(id="t", max_children=limit)  # type: ignore[arg-type]


async def test_task_supervisor_spec_passes_max_children() -> None:
    async with open_supervisor([task_supervisor_spec(id="jobs", max_children=2)]) as root:
        tasks = root.which_children()[0].value
        assert isinstance(tasks, TaskSupervisor)
        assert tasks.max_children == 2


# -- item 10: finding a supervisor ------------------------------------------------


async def test_every_kind_of_supervisor_is_found_by_name() -> None:
    async with trioscope.open_registry():
        assert whereis_supervisor("root") is None
        async with open_supervisor(
            [
                supervisor_spec([], id="inner", name="inner"),
                dynamic_supervisor_spec(id="sessions", name="sessions"),
                task_supervisor_spec(id="jobs", name="jobs"),
            ],
            name="root",
        ) as root:
            assert whereis_supervisor("root") is root
            values = [c.value for c in root.which_children()]
            assert whereis_supervisor("inner") is values[0]
            assert whereis_supervisor("sessions") is values[1]
            assert whereis_task_supervisor("jobs") is values[2]
            async with open_dynamic_supervisor(name="dyn") as dyn:
                assert whereis_supervisor("dyn") is dyn
            async with open_task_supervisor(name="loose") as loose:
                assert whereis_task_supervisor("loose") is loose
            assert whereis_supervisor("dyn") is None
            assert whereis_task_supervisor("loose") is None
        for name in ["root", "inner", "sessions"]:
            assert whereis_supervisor(name) is None
        assert whereis_task_supervisor("jobs") is None


async def test_whereis_supervisor_checks_the_kind() -> None:
    async with (
        trioscope.open_registry() as reg,
        open_task_supervisor(name="jobs"),
        open_supervisor([], name="sup"),
    ):
        with pytest.raises(
            TypeError, match=r"^name 'jobs' is registered to <TaskSupervisor 'tasks' "
        ):
            whereis_supervisor("jobs")
        with pytest.raises(TypeError, match=r"^name 'sup' is registered to <Supervisor "):
            whereis_task_supervisor("sup")
        with (
            reg.registered("other", 42),
            pytest.raises(
                TypeError,
                match=exact("name 'other' is registered to 42, which is not a Supervisor"),
            ),
        ):
            whereis_supervisor("other")


@pytest.mark.no_trioscope_scope(
    "checks that naming a supervisor outside every registry scope raises NoRegistryError"
)
async def test_a_name_needs_a_registry() -> None:
    message = (
        "registering supervisor 'root' needs a registry, and none is open around the current "
        "task: wrap the code in `async with trioscope.open_registry():` (or run it under "
        "`trioscope.run(...)`, which opens one)"
    )
    with pytest.raises(NoRegistryError, match=exact(message)):
        async with open_supervisor([], name="root"):
            pytest.fail("the body must not run")  # pragma: no cover
    with pytest.raises(
        NoRegistryError, match=exact(message.replace("supervisor", "task supervisor", 1))
    ):
        async with open_task_supervisor(name="root"):
            pytest.fail("the body must not run")  # pragma: no cover
    with pytest.raises(NoRegistryError):
        whereis_supervisor("root")
    with pytest.raises(NoRegistryError):
        whereis_task_supervisor("root")


async def test_a_taken_name_fails_before_any_child_starts() -> None:
    started: list[str] = []

    async def child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started.append("child")
        task_status.started()
        await trio.sleep_forever()

    async with trioscope.open_registry(), open_supervisor([], name="root"):
        with pytest.raises(trioscope.AlreadyRegisteredError):
            async with open_supervisor([ChildSpec("c", child)], name="root"):
                pytest.fail("the body must not run")  # pragma: no cover
    assert started == []


async def test_a_nested_named_supervisor_is_found_again_after_a_restart() -> None:
    async with trioscope.open_registry():
        spec = supervisor_spec([ChildSpec("a", ready)], id="inner", name="inner")
        async with open_supervisor([spec]) as root:
            first = whereis_supervisor("inner")
            assert first is not None
            await root.terminate_child("inner")
            assert whereis_supervisor("inner") is None
            second = await root.restart_child("inner")
            assert whereis_supervisor("inner") is second is not first


async def test_children_find_their_supervisor_by_name_while_they_start() -> None:
    seen: list[object] = []

    async def child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        seen.append(whereis_supervisor("root"))
        task_status.started()
        await trio.sleep_forever()

    async with trioscope.open_registry(), open_supervisor([ChildSpec("c", child)], name="root"):
        assert seen == [whereis_supervisor("root")]
        assert isinstance(seen[0], Supervisor)
        assert seen[0].name == "root"


@pytest.mark.no_trioscope_scope(
    "checks that a named nested supervisor outside every registry scope fails to start"
)
async def test_a_named_nested_supervisor_without_a_registry_fails_to_start() -> None:
    with pytest.raises(StartError) as info:
        async with open_supervisor([task_supervisor_spec(id="jobs", name="jobs")], id="app"):
            pytest.fail("the body must not run")  # pragma: no cover
    assert isinstance(info.value.__cause__, NoRegistryError)
    assert str(info.value.__cause__).startswith(
        "registering task supervisor 'jobs' needs a registry, and none is open"
    )


async def test_a_named_nested_task_supervisor_is_registered_again_when_it_restarts() -> None:
    async with trioscope.open_registry():
        spec = task_supervisor_spec(id="jobs", name="jobs")
        async with open_supervisor([spec]) as root:
            first = whereis_task_supervisor("jobs")
            assert first is not None
            assert first.name == "jobs"
            first.cancel()  # its block exits normally: a PERMANENT child restarts
            await wait_all_tasks_blocked()
            second = whereis_task_supervisor("jobs")
            assert second is not None
            assert second is not first
            assert root.which_children()[0].restarts == 1


# -- item 11: run's on_started hook --------------------------------------------------
# (tested in test_app.py, beside run's other tests)


# -- item 13: messages ----------------------------------------------------------------


async def test_start_error_of_the_first_child_says_nothing_was_stopped() -> None:
    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise Boom("no")

    with pytest.raises(StartError) as info:
        async with open_supervisor([ChildSpec("a", broken), ChildSpec("b", ready)], id="app"):
            pytest.fail("the body must not run")  # pragma: no cover
    assert info.match(
        exact(
            "child 'a' of supervisor 'app' failed to start (see the cause); it was the "
            "first child, so no other child had started"
        )
    )


async def test_start_error_after_one_child_says_it_was_stopped() -> None:
    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise Boom("no")

    with pytest.raises(StartError) as info:
        async with open_supervisor([ChildSpec("a", ready), ChildSpec("b", broken)], id="app"):
            pytest.fail("the body must not run")  # pragma: no cover
    assert info.match(
        exact(
            "child 'b' of supervisor 'app' failed to start (see the cause); "
            "the child started before it was stopped"
        )
    )


async def test_start_error_of_start_child_and_restart_child_say_what_happened() -> None:
    fail = [True]

    async def flaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if fail[0]:
            raise Boom("no")
        task_status.started()
        await trio.sleep_forever()

    async with open_supervisor([ChildSpec("a", ready)], id="app") as sup:
        with pytest.raises(StartError) as info:
            await sup.start_child(ChildSpec("b", flaky))
        assert info.match(
            exact(
                "child 'b' of supervisor 'app' failed to start in start_child (see the "
                "cause); it was not added, and the other children were not touched"
            )
        )
        fail[0] = False
        await sup.start_child(ChildSpec("b", flaky))
        await sup.terminate_child("b")
        fail[0] = True
        with pytest.raises(StartError) as info:
            await sup.restart_child("b")
        assert info.match(
            exact(
                "child 'b' of supervisor 'app' failed to start in restart_child (see the "
                "cause); it stays stopped, and the other children were not touched"
            )
        )


class Counter(trioscope.Service):
    async def get(self) -> int:
        return 0


def test_a_class_as_start_says_to_use_child_spec() -> None:
    with pytest.raises(
        TypeError,
        match=exact(
            "ChildSpec.start must be an async callable taking task_status=..., got the class "
            "Counter: use Counter.child_spec(...) to make a service's ChildSpec"
        ),
    ):
        ChildSpec("x", Counter)  # type: ignore[arg-type]

    class Plain:
        pass

    with pytest.raises(
        TypeError,
        match=exact(
            "ChildSpec.start must be an async callable taking task_status=..., got the class "
            "test_a_class_as_start_says_to_use_child_spec.<locals>.Plain (calling it would "
            "make an instance, not run a task)"
        ),
    ):
        ChildSpec("x", Plain)  # type: ignore[arg-type]


async def test_run_after_cancel_says_it_was_cancelled() -> None:
    async with open_task_supervisor(id="jobs") as tasks:
        tasks.cancel()
        # As a caller outside the block would (the block's body is cancelled now).
        with (
            trio.CancelScope(shield=True),
            pytest.raises(trioscope.ServiceUnavailableError) as info,
        ):
            await tasks.run(trio.sleep, 0)
        error = info.value
    assert str(error) == (
        "service task supervisor 'jobs' is unavailable: it was cancelled "
        "(TaskSupervisor.cancel()), so sleep did not run"
    )


async def test_a_crash_without_a_message_is_logged_without_a_dangling_colon(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioscope")
    crashed = trio.Event()

    async def crash(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if not crashed.is_set():
            crashed.set()
            raise trio.TooSlowError

        await trio.sleep_forever()

    async with open_supervisor([ChildSpec("a", crash)], id="app"):
        await crashed.wait()
        await wait_all_tasks_blocked()
    async with open_task_supervisor(id="jobs") as tasks:
        tasks.start_soon(too_slow)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert messages == [
        "supervisor 'app': child 'a' exited with TooSlowError",
        "task supervisor 'jobs': task too_slow failed with TooSlowError",
    ]
    assert not any(m.endswith(": ") for m in (r.getMessage() for r in caplog.records))
