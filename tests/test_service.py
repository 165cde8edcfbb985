"""Tests for services, `ServiceRef` and calls by name (DESIGN.md section 2).

Services are started bare, ``await nursery.start(spec.start)``, with no
supervisor: `Host` runs each incarnation in its own cancel scope and records
how it ended, so a crash is observed instead of tearing the test's nursery down.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from _guards import _only_cancelled, checkpoints_even_when_raising
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    invariant,
    rule,
    run_state_machine_as_test,
)

import trioscope
from trioscope import (
    CallTimeoutError,
    ChildSpec,
    Down,
    Health,
    MailboxFullError,
    NoRegistryError,
    Restart,
    Service,
    ServiceCrashedError,
    ServiceRef,
    ServiceStatistics,
    ServiceUnavailableError,
)
from trioscope._child_spec import _ChildHandle, _Startable
from trioscope.testing._stateful import ServiceStateMachine

pytestmark = pytest.mark.trioscope_scope

HOW_TO_OPEN = (
    "needs a registry, and none is open around the current task: wrap the code in "
    "`async with trioscope.open_registry():` (or run it under `trioscope.run(...)`, "
    "which opens one)"
)


def exactly(message: str) -> str:
    """A `pytest.raises` match pattern for exactly *message*."""
    return "^" + re.escape(message) + "$"


def closed_registry(what: str, namespace: str) -> str:
    """The exact message of a `NoRegistryError` for *what* on a closed registry."""
    return (
        f"{what} needs a registry, but registry {namespace!r} around this task has closed "
        "(its async with block exited before the task ended): start the task inside the "
        "block, or open a registry around it"
    )


# -- services under test --------------------------------------------------------


class BadAmount(trioscope.Rejected, ValueError):
    """An expected failure: the caller gets it, the service keeps running."""


class Counter(Service):
    def __init__(self, start: int = 0) -> None:
        self.value = start

    async def incr(self, by: int = 1) -> int:
        self.value += by
        return self.value

    async def get(self) -> int:
        return self.value

    async def add_then_reject(self, by: int) -> int:
        self.value += by
        raise BadAmount(f"rejected after adding {by}")

    async def crash(self) -> None:
        raise RuntimeError("counter crashed")


class Worker(Service):
    """Records what it runs in *log*; ``hold`` runs until *gate* is set."""

    def __init__(self, log: list[object] | None = None, gate: trio.Event | None = None) -> None:
        self.log: list[object] = [] if log is None else log
        self.gate = trio.Event() if gate is None else gate
        self.value = 0
        self.active = 0
        self.max_active = 0

    async def record(self, item: object) -> object:
        self.log.append(item)
        return item

    async def hold(self) -> str:
        self.log.append("hold")
        await self.gate.wait()
        return "released"

    async def hold_then_crash(self) -> None:
        self.log.append("hold")
        await self.gate.wait()
        raise RuntimeError("worker crashed")

    async def slow_incr(self) -> int:
        # Reads, awaits, then writes: two of these interleaved would lose an update.
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        current = self.value
        await trio.sleep(1)
        self.value = current + 1
        self.active -= 1
        return self.value

    async def max_concurrency(self) -> int:
        return self.max_active

    def describe(self) -> str:  # public but not async: not a handler
        return "worker"

    async def _private(self) -> None:  # private: not a handler
        pass  # pragma: no cover


class Recorder(Service):
    """Keeps whatever ``__init__`` received."""

    instances = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.args = args
        self.kwargs = kwargs
        Recorder.instances += 1
        # A serial number, not id(self): a freed instance's id can be reused.
        self.serial = Recorder.instances

    async def seen(self) -> tuple[tuple[object, ...], dict[str, object], int]:
        return self.args, self.kwargs, self.serial


class NeedsArg(Service):
    def __init__(self, required: int) -> None:
        self.required = required


class Lifecycle(Service):
    """Logs its hooks; ``init`` can be held at *init_gate* or fail with *init_error*."""

    def __init__(
        self,
        log: list[object],
        init_gate: trio.Event | None = None,
        init_error: BaseException | None = None,
        terminate_forever: bool = False,
        terminate_error: BaseException | None = None,
    ) -> None:
        self.log = log
        self.init_gate = init_gate
        self.init_error = init_error
        self.terminate_forever = terminate_forever
        self.terminate_error = terminate_error

    async def init(self) -> None:
        self.log.append("init")
        if self.init_gate is not None:
            await self.init_gate.wait()
        if self.init_error is not None:
            raise self.init_error
        self.log.append("ready")

    async def terminate(self, reason: BaseException | None) -> None:
        self.log.append(("terminate", reason))
        if self.terminate_forever:
            await trio.sleep_forever()
        if self.terminate_error is not None:
            raise self.terminate_error

    async def record(self, item: object) -> object:
        self.log.append(item)
        return item

    async def crash(self) -> None:
        raise RuntimeError("lifecycle crashed")


class Fatal(BaseException):
    """Neither an `Exception` nor an interrupt, like pytest's ``Failed``."""


async def _fails_when_cancelled() -> None:
    try:
        await trio.sleep_forever()
    finally:
        raise ValueError("cleanup failed")  # a cleanup that fails while being cancelled


class Risky(Lifecycle):
    """Handlers that end in every way a handler can end."""

    async def fatal(self, gate: trio.Event) -> None:
        await gate.wait()
        raise Fatal("fatal in handler")

    async def interrupt(self) -> None:
        raise KeyboardInterrupt

    async def nested(self, raised: list[BaseException]) -> None:
        """Run a nursery whose task fails when cancelled; keep what the nursery raises."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_fails_when_cancelled)
                await trio.sleep_forever()
        except BaseException as exc:
            raised.append(exc)
            raise


class FailingCleanup(Lifecycle):
    """Its ``terminate`` waits in a nursery whose task fails when cancelled."""

    async def terminate(self, reason: BaseException | None) -> None:
        self.log.append(("terminate", reason))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_fails_when_cancelled)
            await trio.sleep_forever()


class Probe(Service):
    """A health hook that reports *report*, raises it, or waits for *gate*."""

    def __init__(
        self, report: Mapping[str, object] | Exception, gate: trio.Event | None = None
    ) -> None:
        self.report = report
        self.gate = gate

    async def health(self) -> Mapping[str, object]:
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(self.report, Exception):
            raise self.report
        return self.report

    async def hold(self, gate: trio.Event) -> None:
        await gate.wait()

    async def noop(self) -> None:
        pass


async def stray(self: Worker) -> None:  # looks like a handler, belongs to no class
    pass  # pragma: no cover


# -- running bare services ----------------------------------------------------------


class _Forward:
    """A task status that also tells `Host` which incarnation started."""

    def __init__(self, inner: trio.TaskStatus[ServiceRef[Any]], on_started: Callable[..., None]):
        self._inner = inner
        self._on_started = on_started
        self.ref: ServiceRef[Any] | None = None

    def started(self, value: ServiceRef[Any]) -> None:
        self.ref = value
        self._on_started(value)
        self._inner.started(value)


class Host:
    """Runs incarnations in a nursery, each in its own cancel scope, recording its exit.

    ``exits[incarnation]`` is the exception it crashed with, ``"cancelled"`` or
    ``"returned"``. Failures before ``started()`` propagate to `start` (the start failed).
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.exits: dict[int, BaseException | str] = {}
        self._scopes: dict[int, trio.CancelScope] = {}
        self._ended: dict[int, trio.Event] = {}

    async def start(self, spec: ChildSpec) -> ServiceRef[Any]:
        ref: ServiceRef[Any] = await self.nursery.start(self._run, spec)
        return ref

    async def _run(self, spec: ChildSpec, *, task_status: trio.TaskStatus[Any]) -> None:
        scope = trio.CancelScope()

        def on_started(ref: ServiceRef[Any]) -> None:
            self._scopes[ref.incarnation] = scope
            self._ended[ref.incarnation] = trio.Event()

        forward = _Forward(task_status, on_started)
        exit_: BaseException | str = "returned"
        try:
            with scope:
                try:
                    await spec.start(task_status=forward)
                except Exception as exc:
                    if forward.ref is None:
                        raise
                    exit_ = exc
            if scope.cancelled_caught:
                exit_ = "cancelled"
        finally:
            if forward.ref is not None:
                self.exits[forward.ref.incarnation] = exit_
                self._ended[forward.ref.incarnation].set()

    async def ended(self, ref: ServiceRef[Any]) -> BaseException | str:
        await self._ended[ref.incarnation].wait()
        return self.exits[ref.incarnation]

    async def kill(self, ref: ServiceRef[Any]) -> None:
        self._scopes[ref.incarnation].cancel()
        await self.ended(ref)


async def run_raw(
    spec: ChildSpec,
    raised: list[BaseException],
    *,
    handle: _ChildHandle | None = None,
    task_status: trio.TaskStatus[tuple[ServiceRef[Any], trio.CancelScope]],
) -> None:
    """Run one bare incarnation; record exactly what its task raised.

    With *handle*, run it as a supervisor would, so ``handle.request_stop()``
    stops it in order. What is left once its cancel scope has taken its own
    `trio.Cancelled` back must be one of the errors these tests provoke.
    """
    scope = trio.CancelScope()
    start = spec.start
    assert isinstance(start, _Startable)

    class _Status:
        def started(self, ref: ServiceRef[Any]) -> None:
            task_status.started((ref, scope))

    try:
        with scope:
            try:
                await start.run(_Status(), handle or _ChildHandle())  # type: ignore[arg-type]
            except BaseException as exc:
                raised.append(exc)
                raise
    except (Exception, Fatal, KeyboardInterrupt):
        pass  # recorded above


@asynccontextmanager
async def running(namespace: str = "test") -> AsyncIterator[Host]:
    """An isolated registry scope and a `Host` whose services are killed on exit."""
    async with trioscope.open_registry(namespace, isolated=True), trio.open_nursery() as nursery:
        yield Host(nursery)
        nursery.cancel_scope.cancel()


async def capture(
    results: dict[str, object], key: str, fn: Callable[[], Awaitable[object]]
) -> None:
    """Store what *fn* returns or raises under *key*."""
    try:
        results[key] = await fn()
    except Exception as exc:
        results[key] = exc


def stats(ref: ServiceRef[Any]) -> tuple[int, int, int]:
    """(mailbox_depth, in_flight, handled) of *ref*."""
    s = ref.statistics()
    return s.mailbox_depth, s.in_flight, s.handled


# -- child_spec ------------------------------------------------------------------


def test_child_spec_takes_the_reserved_options() -> None:
    backoff = trioscope.Backoff(initial=1.0)
    spec = Counter.child_spec(
        5,
        name="counter",
        id="the-child",
        restart=Restart.TRANSIENT,
        shutdown=2.5,
        mailbox_size=7,
        significant=True,
        backoff=backoff,
    )
    assert isinstance(spec, ChildSpec)
    assert (spec.id, spec.restart, spec.shutdown, spec.significant, spec.backoff) == (
        "the-child",
        Restart.TRANSIENT,
        2.5,
        True,
        backoff,
    )
    assert spec.kind == "worker"


def test_child_spec_defaults() -> None:
    spec = Counter.child_spec(name="counter")
    assert spec.id == "counter"  # the id defaults to the name
    assert spec.restart is Restart.PERMANENT
    assert spec.shutdown == trioscope.DEFAULT_SHUTDOWN_S
    assert (spec.significant, spec.backoff) == (False, None)
    # Without a name, the id is the class's qualified name (as Elixir uses the
    # module): stable across runs and specs, so two unnamed children of one
    # class in a static supervisor need an id= each.
    assert Counter.child_spec().id == "Counter"
    assert Counter.child_spec(5).id == "Counter"

    class Local(Service):
        pass

    assert Local.child_spec().id == ("test_child_spec_defaults.<locals>.Local")
    assert Counter.child_spec(id="mine").id == "mine"


async def test_other_arguments_go_to_init_and_reserved_ones_do_not() -> None:
    async with running() as host:
        spec = Recorder.child_spec(
            1,
            2,
            name="rec",
            id="rec-id",
            restart=Restart.TRANSIENT,
            shutdown=1.0,
            mailbox_size=3,
            significant=False,
            backoff=None,
            colour="red",
        )
        ref = await host.start(spec)
        args, kwargs, _ = await ref.call(Recorder.seen)
        assert args == (1, 2)
        assert kwargs == {"colour": "red"}
        assert ref.statistics().mailbox_capacity == 3
        assert ref.name == "rec"


async def test_every_start_makes_a_fresh_instance() -> None:
    async with running() as host:
        spec = Counter.child_spec(10, name="counter")
        first = await host.start(spec)
        assert await first.call(Counter.incr, by=5) == 15
        await host.kill(first)
        second = await host.start(spec)
        assert second != first
        assert second.incarnation != first.incarnation
        assert await second.call(Counter.get) == 10  # not 15: a new instance

        spec = Recorder.child_spec(name="rec")
        ids = set()
        for _ in range(3):
            ref = await host.start(spec)
            ids.add((await ref.call(Recorder.seen))[2])
            await host.kill(ref)
        assert len(ids) == 3


def test_child_spec_rejects_a_name_that_is_not_a_str() -> None:
    with pytest.raises(
        TypeError, match=exactly("Counter.child_spec: name must be a str, got int: 5")
    ):
        Counter.child_spec(name=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -1])
def test_child_spec_rejects_a_mailbox_below_one(size: int) -> None:
    with pytest.raises(
        ValueError,
        match=exactly(
            "Counter.child_spec: mailbox_size must be an integer >= 1 "
            f"(mailboxes are always bounded), got {size}"
        ),
    ):
        Counter.child_spec(mailbox_size=size)


@pytest.mark.parametrize(
    ("size", "shown"),
    [(1.5, "float: 1.5"), ("8", "str: '8'"), (True, "bool: True"), (math.inf, "float: inf")],
)
def test_child_spec_rejects_a_mailbox_size_that_is_not_an_integer(size: object, shown: str) -> None:
    with pytest.raises(
        TypeError,
        match=exactly(f"Counter.child_spec: mailbox_size must be an integer >= 1, got {shown}"),
    ):
        Counter.child_spec(mailbox_size=size)  # type: ignore[arg-type]


def test_child_spec_accepts_a_mailbox_of_one() -> None:
    assert Counter.child_spec(mailbox_size=1).start is not None


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: Counter.child_spec(bogus=1), "got an unexpected keyword argument 'bogus'"),
        (lambda: Counter.child_spec(1, 2), "too many positional arguments"),
        (lambda: NeedsArg.child_spec(), "missing a required argument: 'required'"),
    ],
)
def test_child_spec_rejects_arguments_init_does_not_accept(
    make: Callable[[], ChildSpec], problem: str
) -> None:
    owner = "NeedsArg" if "required" in problem else "Counter"
    with pytest.raises(
        TypeError, match=exactly(f"{owner}.child_spec: bad arguments for __init__: {problem}")
    ) as info:
        make()
    assert isinstance(info.value.__cause__, TypeError)


def test_lifecycle_hooks_must_be_async() -> None:
    with pytest.raises(
        TypeError,
        match=exactly(
            "test_lifecycle_hooks_must_be_async.<locals>.SyncInit.init must be an async def method"
        ),
    ):

        class SyncInit(Service):
            def init(self) -> None:  # type: ignore[override]
                pass  # pragma: no cover


@pytest.mark.no_trioscope_scope(
    "checks that a named service needs a registry, and an unnamed one runs outside every one"
)
async def test_a_named_service_needs_a_registry_and_an_unnamed_one_does_not() -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(NoRegistryError, match=exactly(f"starting service 'c' {HOW_TO_OPEN}")):
            await nursery.start(Counter.child_spec(name="c").start)
        ref = await nursery.start(Counter.child_spec().start)
        assert ref.name is None
        assert await ref.call(Counter.incr) == 1
        nursery.cancel_scope.cancel()


# -- bad handlers: TypeError before anything is sent ----------------------------------

WORKER_HANDLERS = "hold, hold_then_crash, max_concurrency, record, slow_incr"
LIFECYCLE_REFUSED = (
    "is not a handler: private methods and the lifecycle hooks (init, terminate, health) "
    "cannot be called through a ServiceRef"
)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (
            Worker().record,
            "pass the function, not a bound method: use Worker.record, not instance.record",
        ),
        (Worker.describe, "Worker.describe is not a handler: handlers must be `async def` methods"),
        (Worker._private, f"Worker._private {LIFECYCLE_REFUSED}"),
        (Worker.init, f"Service.init {LIFECYCLE_REFUSED}"),
        (Worker.terminate, f"Service.terminate {LIFECYCLE_REFUSED}"),
        (Worker.health, f"Service.health {LIFECYCLE_REFUSED}"),
        (
            Counter.incr,
            "Counter.incr is not a handler of Worker; handlers are its public async def "
            f"methods ({WORKER_HANDLERS})",
        ),
        (
            stray,
            "stray is not a handler of Worker; handlers are its public async def "
            f"methods ({WORKER_HANDLERS})",
        ),
        (42, "expected a handler of Worker, got 42"),
    ],
    ids=[
        "bound",
        "not-async",
        "private",
        "init",
        "terminate",
        "health",
        "other-class",
        "function",
        "not-callable",
    ],
)
async def test_a_function_that_is_not_a_handler_is_refused_before_anything_is_sent(
    autojump_clock: trio.testing.MockClock, fn: Any, message: str
) -> None:
    async with running() as host:
        ref = await host.start(Worker.child_spec(name="w", mailbox_size=1))
        # The mailbox is full: anything actually sent would wait (and time out).
        host.nursery.start_soon(ref.call, Worker.hold)
        await trio.testing.wait_all_tasks_blocked()
        ref.try_cast(Worker.record, "fills the mailbox")
        before = stats(ref)
        start = trio.current_time()
        attempts: list[Callable[[], object]] = [
            lambda: ref.call(fn),
            lambda: ref.cast(fn),
            lambda: trioscope.call("w", fn),
            lambda: trioscope.cast("w", fn),
        ]
        for attempt in attempts:
            with pytest.raises(TypeError, match=exactly(message)):
                await attempt()  # type: ignore[misc]
        with pytest.raises(TypeError, match=exactly(message)):
            ref.try_cast(fn)
        assert trio.current_time() == start
        assert stats(ref) == before == (1, 1, 0)


# -- whereis and ServiceRef ---------------------------------------------------------


@pytest.mark.no_trioscope_scope("checks NoRegistryError outside every registry scope")
async def test_whereis_outside_every_registry() -> None:
    with pytest.raises(NoRegistryError, match=exactly(f"whereis('c') {HOW_TO_OPEN}")):
        trioscope.whereis("c")


async def test_whereis_finds_the_running_incarnation() -> None:
    async with running() as host:
        assert trioscope.whereis("c") is None
        ref = await host.start(Counter.child_spec(name="c"))
        assert trioscope.whereis("c") == ref
        assert trioscope.whereis("c", Counter) == ref
        assert trioscope.current_registry().names() == ["c"]
        await host.kill(ref)
        assert trioscope.whereis("c") is None


async def test_whereis_sees_enclosing_scopes_but_not_across_an_isolated_one() -> None:
    async with running() as host:
        ref = await host.start(Counter.child_spec(name="c"))
        async with trioscope.open_registry():
            assert trioscope.whereis("c") == ref
            async with trioscope.open_registry(isolated=True):
                assert trioscope.whereis("c") is None


async def test_whereis_checks_what_the_name_holds() -> None:
    async with running() as host:
        await host.start(Counter.child_spec(name="c"))
        with pytest.raises(TypeError, match=exactly("name 'c' runs Counter, not Worker")):
            trioscope.whereis("c", Worker)
        with trioscope.current_registry().registered("plain", 42):
            with pytest.raises(
                TypeError, match=exactly("name 'plain' is registered to 42, which is not a service")
            ):
                trioscope.whereis("plain")
            with pytest.raises(
                TypeError, match=exactly("name 'plain' is registered to 42, which is not a service")
            ):
                await trioscope.call("plain", Counter.get)


async def test_service_ref_properties_and_repr() -> None:
    async with running() as host:
        ref = await host.start(Counter.child_spec(name="c", mailbox_size=8))
        assert ref.name == "c"
        assert ref.service_class is Counter
        assert ref.timeout == trioscope.DEFAULT_CALL_TIMEOUT_S == 5.0
        assert repr(ref) == "<ServiceRef 'c' mailbox 0/8 running>"
        anonymous = await host.start(Counter.child_spec())
        assert anonymous.name is None
        assert (
            repr(anonymous)
            == f"<ServiceRef <Counter #{anonymous.incarnation}> mailbox 0/1024 running>"
        )
        assert anonymous.incarnation != ref.incarnation
        await host.kill(ref)
        assert repr(ref) == "<ServiceRef 'c' mailbox 0/8 ended>"


async def test_with_timeout_is_the_same_incarnation_with_another_budget() -> None:
    async with running() as host:
        ref = await host.start(Counter.child_spec(name="c"))
        slow = ref.with_timeout(30)
        assert slow.timeout == 30
        assert ref.timeout == 5.0
        assert slow == ref
        assert hash(slow) == hash(ref)
        assert slow.incarnation == ref.incarnation
        assert await slow.call(Counter.incr) == 1
        assert ref.with_timeout(math.inf).timeout == math.inf
        with pytest.raises(
            ValueError, match=exactly("timeout must be >= 0 (math.inf allowed), got -1")
        ):
            ref.with_timeout(-1)
        with pytest.raises(
            TypeError, match=exactly("timeout must be a number of seconds, got str")
        ):
            ref.with_timeout("1")  # type: ignore[arg-type]


# -- call, cast, try_cast -----------------------------------------------------------


async def test_call_returns_the_handlers_result() -> None:
    async with running() as host:
        ref = await host.start(Counter.child_spec(10, name="c"))
        assert await ref.call(Counter.incr) == 11
        assert await ref.call(Counter.incr, 4) == 15
        assert await ref.call(Counter.incr, by=5) == 20
        assert await ref.call(Counter.get) == 20


async def test_cast_and_try_cast_run_in_mailbox_order() -> None:
    async with running() as host:
        log: list[object] = []
        ref = await host.start(Worker.child_spec(name="w", log=log))
        await ref.cast(Worker.record, 1)
        ref.try_cast(Worker.record, 2)
        await ref.cast(Worker.record, item=3)
        assert await ref.call(Worker.record, 4) == 4
        assert log == [1, 2, 3, 4]
        assert stats(ref) == (0, 0, 4)


async def test_call_and_cast_by_name() -> None:
    async with running() as host:
        await host.start(Counter.child_spec(name="c"))
        assert await trioscope.call("c", Counter.incr, 2) == 2
        await trioscope.cast("c", Counter.incr, by=3)
        assert await trioscope.call("c", Counter.get) == 5


@pytest.mark.no_trioscope_scope("checks NoRegistryError outside every registry scope")
async def test_calls_by_name_outside_every_registry() -> None:
    with (
        checkpoints_even_when_raising(),
        pytest.raises(NoRegistryError, match=exactly(f"call('c', ...) {HOW_TO_OPEN}")),
    ):
        await trioscope.call("c", Counter.get)
    with (
        checkpoints_even_when_raising(),
        pytest.raises(NoRegistryError, match=exactly(f"cast('c', ...) {HOW_TO_OPEN}")),
    ):
        await trioscope.cast("c", Counter.get)


async def test_calls_by_name_waiting_when_their_registry_closes_say_it_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    results: dict[str, object] = {}
    async with trio.open_nursery() as nursery:
        async with trioscope.open_registry("scope", isolated=True):
            # Started inside the block, into a nursery that outlives it.
            nursery.start_soon(capture, results, "call", lambda: trioscope.call("c", Counter.get))
            nursery.start_soon(capture, results, "cast", lambda: trioscope.cast("c", Counter.get))
            await trio.testing.wait_all_tasks_blocked()
            assert results == {}
        await trio.testing.wait_all_tasks_blocked()
    # At once, not after their 5 s timeout: nothing can be registered there any more.
    assert trio.current_time() == 0
    assert {key: (type(exc), str(exc)) for key, exc in results.items()} == {
        "call": (NoRegistryError, closed_registry("call('c', ...)", "scope")),
        "cast": (NoRegistryError, closed_registry("cast('c', ...)", "scope")),
    }


async def test_by_name_operations_in_a_task_whose_registry_has_closed_say_so() -> None:
    errors: dict[str, str] = {}
    released = trio.Event()

    async def late(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await released.wait()
        attempts: dict[str, Callable[[], Awaitable[object]]] = {
            "call": lambda: trioscope.call("c", Counter.get),
            "cast": lambda: trioscope.cast("c", Counter.get),
        }
        for key, attempt in attempts.items():
            with checkpoints_even_when_raising(), pytest.raises(NoRegistryError) as info:
                await attempt()
            errors[key] = str(info.value)
        with pytest.raises(NoRegistryError) as info:
            trioscope.whereis("c")
        errors["whereis"] = str(info.value)
        with pytest.raises(NoRegistryError) as info:
            async with trioscope.monitor("c"):
                pass  # pragma: no cover
        errors["monitor"] = str(info.value)
        async with trio.open_nursery() as nursery:
            with pytest.raises(NoRegistryError) as info:
                await nursery.start(Counter.child_spec(name="c").start)
        errors["start"] = str(info.value)

    async with trio.open_nursery() as nursery:
        async with trioscope.open_registry("scope", isolated=True):
            await nursery.start(late)
        released.set()
    assert errors == {
        "call": closed_registry("call('c', ...)", "scope"),
        "cast": closed_registry("cast('c', ...)", "scope"),
        "whereis": closed_registry("whereis('c')", "scope"),
        "monitor": closed_registry("monitor('c')", "scope"),
        "start": closed_registry("starting service 'c'", "scope"),
    }


async def test_a_call_by_name_is_resolved_on_every_call() -> None:
    async with running() as host:
        first = await host.start(Counter.child_spec(100, name="c"))
        assert await trioscope.call("c", Counter.incr) == 101
        await host.kill(first)
        second = await host.start(Counter.child_spec(200, name="c"))
        assert await trioscope.call("c", Counter.incr) == 201
        assert stats(second)[2] == 1


async def test_a_call_by_name_waits_for_the_name_within_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as host:
        results: dict[str, object] = {}
        host.nursery.start_soon(capture, results, "call", lambda: trioscope.call("c", Counter.incr))
        host.nursery.start_soon(capture, results, "cast", lambda: trioscope.cast("c", Counter.incr))
        await trio.sleep(4.5)
        assert results == {}
        ref = await host.start(Counter.child_spec(name="c"))
        await trio.testing.wait_all_tasks_blocked()
        assert results["cast"] is None
        assert results["call"] in (1, 2)
        assert await ref.call(Counter.get) == 2
        assert trio.current_time() == 4.5


async def test_a_call_by_name_that_never_appears_is_unavailable_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running():
        start = trio.current_time()
        with pytest.raises(
            ServiceUnavailableError,
            match=exactly(
                "service 'ghost' is unavailable: no live service took the call within 5 s: "
                "nothing has been registered under that name recently in the visible registry "
                "scopes; it looks like a typo, or its service was never started in this scope"
            ),
        ) as info:
            await trioscope.call("ghost", Counter.get)
        assert info.value.service == "'ghost'"
        assert trio.current_time() - start == 5.0
        with pytest.raises(
            ServiceUnavailableError,
            match=exactly(
                "service 'ghost' is unavailable: nothing was registered under that name within "
                "5 s: nothing has been registered under that name recently in the visible "
                "registry scopes; it looks like a typo, or its service was never started in "
                "this scope"
            ),
        ):
            await trioscope.cast("ghost", Counter.get)
        assert trio.current_time() - start == 10.0


async def test_a_call_by_name_honours_an_enclosing_cancel_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running():
        with trio.move_on_after(1) as scope:
            await trioscope.call("ghost", Counter.get)
        assert scope.cancelled_caught
        assert trio.current_time() == 1


async def test_a_call_by_name_to_a_busy_service_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The name is there, so this is a timeout (CallTimeoutError), not "unavailable".
    async with running() as host:
        log: list[object] = []
        gate = trio.Event()
        ref = await host.start(Worker.child_spec(name="w", log=log, gate=gate))
        host.nursery.start_soon(ref.with_timeout(math.inf).call, Worker.hold)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(
            CallTimeoutError,
            match=exactly(
                "call to 'w' record() got no reply within 5 s; if the message was still "
                "queued it was withdrawn and will not run. Use trioscope.by_name('w', "
                "timeout=seconds) for a longer budget; a cycle of calls (A calls B, which "
                "calls A) also ends here"
            ),
        ):
            await trioscope.call("w", Worker.record, "late")
        gate.set()
        assert await ref.call(Worker.record, "after") == "after"
        assert log == ["hold", "after"]


# -- one message at a time ------------------------------------------------------------


async def test_one_message_at_a_time_even_across_awaits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as host:
        ref = (await host.start(Worker.child_spec(name="w"))).with_timeout(math.inf)
        results: dict[str, object] = {}
        async with trio.open_nursery() as callers:
            for i in range(10):
                callers.start_soon(capture, results, str(i), lambda: ref.call(Worker.slow_incr))
            callers.start_soon(capture, results, "cast", lambda: ref.cast(Worker.slow_incr))
        # Eleven updates, each seen exactly once: no two handlers overlapped.
        replies = [v for k, v in results.items() if k != "cast"]
        assert len(set(replies)) == 10
        assert set(replies) < set(range(1, 12))
        assert await ref.call(Worker.max_concurrency) == 1
        assert await ref.call(Worker.slow_incr) == 12  # the cast's update is not lost either
        assert trio.current_time() == 12


# -- bounded mailbox: backpressure -----------------------------------------------------


async def test_a_full_mailbox_makes_cast_and_call_wait_and_try_cast_fail() -> None:
    async with running() as host:
        log: list[object] = []
        gate = trio.Event()
        ref = await host.start(Worker.child_spec(name="w", log=log, gate=gate, mailbox_size=2))
        host.nursery.start_soon(ref.call, Worker.hold)
        await trio.testing.wait_all_tasks_blocked()
        await ref.cast(Worker.record, 1)
        await ref.cast(Worker.record, 2)
        assert ref.statistics().mailbox_depth == 2

        done: list[object] = []

        async def waiting_cast() -> None:
            await ref.cast(Worker.record, 3)
            done.append("cast")

        async def waiting_call() -> None:
            done.append(await ref.with_timeout(math.inf).call(Worker.record, 4))

        host.nursery.start_soon(waiting_cast)
        await trio.testing.wait_all_tasks_blocked()
        host.nursery.start_soon(waiting_call)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []
        assert ref.statistics().mailbox_depth == 2

        with pytest.raises(
            MailboxFullError,
            match=exactly(
                "mailbox of service 'w' is full (2/2); nothing was sent. Use "
                "`await ref.cast(...)` to wait for space, or give the service a larger mailbox_size"
            ),
        ) as info:
            ref.try_cast(Worker.record, "dropped?")
        assert isinstance(info.value, trio.WouldBlock)
        assert (info.value.service, info.value.capacity) == ("'w'", 2)

        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        # Nothing was dropped, nothing was reordered, and the refused try_cast never ran.
        assert log == ["hold", 1, 2, 3, 4]
        assert done == ["cast", 4]
        assert stats(ref) == (0, 0, 5)


async def test_the_default_mailbox_holds_1024_messages() -> None:
    async with running() as host:
        gate = trio.Event()
        ref = await host.start(Worker.child_spec(name="w", gate=gate))
        assert trioscope.DEFAULT_MAILBOX_SIZE == 1024
        host.nursery.start_soon(ref.call, Worker.hold)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(1024):
            ref.try_cast(Worker.record, i)
        with pytest.raises(MailboxFullError):
            ref.try_cast(Worker.record, "one too many")
        assert ref.statistics().mailbox_capacity == 1024
        gate.set()


# -- timeouts and cancellation ---------------------------------------------------------


async def test_a_call_times_out_after_5_s_by_default(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as host:
        gate = trio.Event()
        log: list[object] = []
        ref = await host.start(Worker.child_spec(name="w", log=log, gate=gate))
        start = trio.current_time()
        with pytest.raises(
            CallTimeoutError,
            match=exactly(
                "call to 'w' hold() got no reply within 5 s; if the message was still "
                "queued it was withdrawn and will not run. Use ref.with_timeout(seconds) "
                "for a longer budget; a cycle of calls (A calls B, which calls A) also ends here"
            ),
        ) as info:
            await ref.call(Worker.hold)
        assert trio.current_time() - start == 5.0
        err = info.value
        assert isinstance(err, trio.TooSlowError)
        assert isinstance(err, trioscope.TrioscopeError)
        assert (err.service, err.handler, err.timeout) == ("'w'", "hold", 5.0)
        # The handler still runs: its late reply is discarded once it finishes.
        assert stats(ref) == (0, 1, 0)
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert stats(ref) == (0, 0, 1)
        assert await ref.call(Worker.record, "still serving") == "still serving"


async def test_with_timeout_sets_the_budget(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as host:
        gate = trio.Event()
        ref = await host.start(Worker.child_spec(name="w", gate=gate))
        start = trio.current_time()
        with pytest.raises(
            CallTimeoutError, match=r"^call to 'w' hold\(\) got no reply within 1\.5 s;"
        ):
            await ref.with_timeout(1.5).call(Worker.hold)
        assert trio.current_time() - start == 1.5
        # No timeout at all: a reply after a minute still arrives.
        host.nursery.start_soon(_set_after, gate, 60)
        assert await ref.with_timeout(math.inf).call(Worker.hold) == "released"
        assert trio.current_time() - start == 61.5


async def _set_after(event: trio.Event, seconds: float) -> None:
    await trio.sleep(seconds)
    event.set()


async def test_a_call_honours_enclosing_cancel_scopes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as host:
        ref = await host.start(Worker.child_spec(name="w"))
        with trio.move_on_after(1) as scope:
            await ref.call(Worker.hold)
        assert scope.cancelled_caught
        assert trio.current_time() == 1


async def test_a_cancelled_call_still_queued_is_withdrawn_and_never_runs() -> None:
    async with running() as host:
        log: list[object] = []
        gate = trio.Event()
        ref = await host.start(Worker.child_spec(name="w", log=log, gate=gate))
        host.nursery.start_soon(ref.call, Worker.hold)
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["hold"]

        caller_scope = trio.CancelScope()
        results: list[object] = []

        async def caller() -> None:
            with caller_scope:
                results.append(await ref.call(Worker.record, "withdrawn"))

        host.nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        assert stats(ref) == (1, 2, 0)  # queued behind hold; two calls in flight
        caller_scope.cancel()
        assert stats(ref) == (0, 1, 0)  # withdrawn from the mailbox at once
        await trio.testing.wait_all_tasks_blocked()
        assert caller_scope.cancelled_caught
        assert results == []
        assert stats(ref) == (0, 1, 0)

        gate.set()
        assert await ref.call(Worker.record, "after") == "after"
        assert log == ["hold", "after"]  # the withdrawn call never ran
        assert stats(ref) == (0, 0, 2)


async def test_a_call_that_times_out_while_queued_is_withdrawn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as host:
        log: list[object] = []
        gate = trio.Event()
        ref = await host.start(Worker.child_spec(name="w", log=log, gate=gate))
        host.nursery.start_soon(ref.with_timeout(math.inf).call, Worker.hold)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(CallTimeoutError):
            await ref.with_timeout(2).call(Worker.record, "timed out")
        assert stats(ref) == (0, 1, 0)  # it no longer takes a place in the mailbox
        gate.set()
        await ref.call(Worker.record, "after")
        assert log == ["hold", "after"]
        assert stats(ref) == (0, 0, 2)


async def test_a_call_cancelled_while_waiting_for_mailbox_space_is_never_sent() -> None:
    async with running() as host:
        log: list[object] = []
        gate = trio.Event()
        ref = await host.start(Worker.child_spec(name="w", log=log, gate=gate, mailbox_size=1))
        host.nursery.start_soon(ref.call, Worker.hold)
        await trio.testing.wait_all_tasks_blocked()
        ref.try_cast(Worker.record, "queued")
        with trio.CancelScope() as scope:
            host.nursery.start_soon(_cancel_when_blocked, scope)
            await ref.call(Worker.record, "never sent")
        assert scope.cancelled_caught
        assert stats(ref) == (1, 1, 0)
        gate.set()
        await ref.call(Worker.record, "after")
        assert log == ["hold", "queued", "after"]
        assert stats(ref) == (0, 0, 3)


async def _cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


async def _cancellable_call(
    ref: ServiceRef[Any],
    fn: Callable[..., Awaitable[object]],
    *args: object,
    task_status: trio.TaskStatus[trio.CancelScope],
) -> None:
    with trio.CancelScope() as scope:
        task_status.started(scope)
        await ref.call(fn, *args)


async def queue_call(
    host: Host, ref: ServiceRef[Any], fn: Callable[..., Awaitable[object]], *args: object
) -> trio.CancelScope:
    """Make a call from a task of its own, once it waits; return the scope that cancels it."""
    scope: trio.CancelScope = await host.nursery.start(_cancellable_call, ref, fn, *args)
    await trio.testing.wait_all_tasks_blocked()
    return scope


async def test_a_withdrawn_call_stops_counting_toward_a_full_mailbox_at_once() -> None:
    async with running() as host:
        log: list[object] = []
        gate = trio.Event()
        ref = await host.start(Worker.child_spec(name="w", log=log, gate=gate, mailbox_size=2))
        host.nursery.start_soon(ref.call, Worker.hold)
        await trio.testing.wait_all_tasks_blocked()
        first = await queue_call(host, ref, Worker.record, "withdrawn first")
        second = await queue_call(host, ref, Worker.record, "withdrawn second")
        assert stats(ref) == (2, 3, 0)
        with pytest.raises(MailboxFullError):
            ref.try_cast(Worker.record, "refused")
        second.cancel()  # the one at the back of the queue
        assert stats(ref) == (1, 2, 0)
        ref.try_cast(Worker.record, "cast 1")
        with pytest.raises(MailboxFullError):
            ref.try_cast(Worker.record, "refused")
        first.cancel()  # the one at the front
        assert stats(ref) == (1, 1, 0)
        ref.try_cast(Worker.record, "cast 2")
        assert stats(ref) == (2, 1, 0)
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["hold", "cast 1", "cast 2"]
        assert stats(ref) == (0, 0, 3)


async def test_a_withdrawn_call_lets_a_cast_or_call_waiting_for_space_in_at_once() -> None:
    async with running() as host:
        log: list[object] = []
        gate = trio.Event()
        ref = await host.start(Worker.child_spec(name="w", log=log, gate=gate, mailbox_size=1))
        host.nursery.start_soon(ref.call, Worker.hold)
        await trio.testing.wait_all_tasks_blocked()
        queued = await queue_call(host, ref, Worker.record, "withdrawn")
        # A call, then a cast, wait for space behind it.
        waiting = await queue_call(host, ref.with_timeout(math.inf), Worker.record, "call")
        done: list[str] = []

        async def waiting_cast() -> None:
            await ref.cast(Worker.record, "cast")
            done.append("cast")

        host.nursery.start_soon(waiting_cast)
        await trio.testing.wait_all_tasks_blocked()
        assert stats(ref) == (1, 3, 0)
        queued.cancel()
        await trio.testing.wait_all_tasks_blocked()
        # The call took the freed slot (the cast waits behind it): withdrawing
        # the call in turn frees the slot for the cast.
        assert (stats(ref), done) == ((1, 2, 0), [])
        waiting.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert (stats(ref), done) == ((1, 1, 0), ["cast"])
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["hold", "cast"]
        assert stats(ref) == (0, 0, 2)


async def test_a_call_cancelled_while_running_discards_the_reply_and_leaks_nothing() -> None:
    async with running() as host:
        log: list[object] = []
        gate = trio.Event()
        ref = await host.start(Worker.child_spec(name="w", log=log, gate=gate))
        with trio.CancelScope() as scope:
            host.nursery.start_soon(_cancel_when_blocked, scope)
            await ref.call(Worker.hold)
        assert scope.cancelled_caught
        assert log == ["hold"]
        assert stats(ref) == (0, 1, 0)  # still running: in flight until it finishes
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert stats(ref) == (0, 0, 1)
        assert await ref.call(Worker.record, "next") == "next"
        assert stats(ref) == (0, 0, 2)


# -- expected failures and crashes -----------------------------------------------------


async def test_rejected_reaches_the_caller_and_the_service_keeps_its_state() -> None:
    async with running() as host:
        ref = await host.start(Counter.child_spec(10, name="c"))
        with pytest.raises(BadAmount, match=r"^rejected after adding 5$") as info:
            await ref.call(Counter.add_then_reject, 5)
        assert isinstance(info.value, ValueError)
        assert not isinstance(info.value, trioscope.TrioscopeError)
        # The service kept running, with its state as the handler left it.
        assert await ref.call(Counter.get) == 15
        with pytest.raises(BadAmount):
            await trioscope.call("c", Counter.add_then_reject, 1)
        assert await trioscope.call("c", Counter.get) == 16
        assert ref.statistics().handled == 4
        assert host.exits == {}


async def test_a_rejected_cast_is_logged_not_dropped_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running() as host:
        ref = await host.start(Counter.child_spec(name="c"))
        with caplog.at_level(logging.WARNING, logger="trioscope.service"):
            await ref.cast(Counter.add_then_reject, 5)
            assert await ref.call(Counter.get) == 5
        assert [r.getMessage() for r in caplog.records] == [
            "service 'c' rejected cast add_then_reject(5): rejected after adding 5"
        ]


async def test_a_crash_fails_the_caller_and_the_queue_and_ends_the_task(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    async with running() as host:
        log: list[object] = []
        gate = trio.Event()
        ref = await host.start(Worker.child_spec(name="w", log=log, gate=gate))
        results: dict[str, object] = {}
        host.nursery.start_soon(
            capture, results, "crashing", lambda: ref.call(Worker.hold_then_crash)
        )
        await trio.testing.wait_all_tasks_blocked()
        host.nursery.start_soon(capture, results, "queued", lambda: ref.call(Worker.record, "q"))
        host.nursery.start_soon(capture, results, "by-ref", lambda: ref.call(Worker.record, "q2"))
        await trio.testing.wait_all_tasks_blocked()
        ref.try_cast(Worker.record, "queued cast")
        assert stats(ref) == (3, 3, 0)

        gate.set()
        exit_ = await host.ended(ref)
        await trio.testing.wait_all_tasks_blocked()

        crashed = results["crashing"]
        assert isinstance(crashed, ServiceCrashedError)
        assert str(crashed) == (
            "service 'w' crashed in handler hold_then_crash() while handling this call "
            "(the original error is the __cause__); its supervisor decides whether it restarts"
        )
        assert (crashed.service, crashed.handler) == ("'w'", "hold_then_crash")
        original = crashed.__cause__
        assert isinstance(original, RuntimeError)
        assert str(original) == "worker crashed"
        # The service task itself exits with the very same exception.
        assert exit_ is original

        not_run = (
            "service 'w' is unavailable: it crashed with RuntimeError: worker crashed; "
            "the message was not run"
        )
        for key in ("queued", "by-ref"):
            err = results[key]
            assert isinstance(err, ServiceUnavailableError)
            assert not isinstance(err, ServiceCrashedError)
            assert str(err) == not_run
        assert log == ["hold"]  # the queued messages never ran
        assert trioscope.whereis("w") is None
        assert stats(ref) == (0, 0, 1)
        assert "service 'w' stopped with 1 queued cast(s) that were not run" in [
            r.getMessage() for r in caplog.records
        ]
        assert "service 'w' crashed in hold_then_crash() (mailbox depth 3, restarts 0)" in [
            r.getMessage() for r in caplog.records
        ]

        # A ServiceRef points at that incarnation only, and never waits.
        start = trio.current_time()
        with (
            checkpoints_even_when_raising(),
            pytest.raises(ServiceUnavailableError, match=exactly(not_run)),
        ):
            await ref.call(Worker.record, "afterwards")
        with (
            checkpoints_even_when_raising(),
            pytest.raises(ServiceUnavailableError, match=exactly(not_run)),
        ):
            await ref.cast(Worker.record, "afterwards")
        with pytest.raises(ServiceUnavailableError, match=exactly(not_run)):
            ref.try_cast(Worker.record, "afterwards")
        assert trio.current_time() == start


async def test_a_killed_service_fails_the_running_and_the_queued_calls() -> None:
    async with running() as host:
        log: list[object] = []
        ref = await host.start(Worker.child_spec(name="w", log=log))
        results: dict[str, object] = {}
        host.nursery.start_soon(capture, results, "running", lambda: ref.call(Worker.hold))
        await trio.testing.wait_all_tasks_blocked()
        host.nursery.start_soon(capture, results, "queued", lambda: ref.call(Worker.record, "q"))
        await trio.testing.wait_all_tasks_blocked()
        await host.kill(ref)
        await trio.testing.wait_all_tasks_blocked()
        assert host.exits[ref.incarnation] == "cancelled"
        assert str(results["running"]) == (
            "service 'w' is unavailable: it was killed while handling this call"
        )
        assert str(results["queued"]) == (
            "service 'w' is unavailable: it is shutting down; the message was not run"
        )
        assert log == ["hold"]
        assert stats(ref) == (0, 0, 0)
        with pytest.raises(
            ServiceUnavailableError,
            match=exactly(
                "service 'w' is unavailable: this incarnation has ended (killed); "
                "the message was not run"
            ),
        ):
            await ref.call(Worker.record, "afterwards")


# -- every way a handler can end (see trioscope._exits) ------------------------------


async def test_a_handler_raising_a_base_exception_that_is_no_interrupt_is_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running() as host:
        log: list[object] = []
        raised: list[BaseException] = []
        ref, _ = await host.nursery.start(run_raw, Risky.child_spec(name="r", log=log), raised)
        async with trioscope.monitor(ref) as down:
            results: dict[str, object] = {}
            gate = trio.Event()
            host.nursery.start_soon(capture, results, "fatal", lambda: ref.call(Risky.fatal, gate))
            await trio.testing.wait_all_tasks_blocked()
            host.nursery.start_soon(capture, results, "queued", lambda: ref.call(Risky.record, 1))
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
            ended = await down.wait()
        await trio.testing.wait_all_tasks_blocked()
        # The service task exits raising it, as it would an Exception.
        [fatal] = raised
        assert isinstance(fatal, Fatal)
        crashed = results["fatal"]
        assert isinstance(crashed, ServiceCrashedError)
        assert crashed.__cause__ is fatal
        assert str(crashed) == (
            "service 'r' crashed in handler fatal() while handling this call "
            "(the original error is the __cause__); its supervisor decides whether it restarts"
        )
        queued = results["queued"]
        assert isinstance(queued, ServiceUnavailableError)
        assert str(queued) == (
            "service 'r' is unavailable: it crashed with Fatal: fatal in handler; "
            "the message was not run"
        )
        assert log == ["init", "ready", ("terminate", fatal)]
        assert ended == Down(name="r", incarnation=ref.incarnation, reason=fatal)
        [report] = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert report.getMessage() == (
            f"service 'r' crashed in fatal({gate!r}) (mailbox depth 1, restarts 0)"
        )
        assert report.exc_info is not None
        assert report.exc_info[1] is fatal


async def test_a_service_killed_while_its_handler_nursery_fails_keeps_the_error() -> None:
    # Killing the service cancels the handler; a task in its nursery fails while
    # being cancelled, so the handler raises a group [Cancelled, ValueError].
    async with running() as host:
        log: list[object] = []
        raised: list[BaseException] = []
        in_handler: list[BaseException] = []
        ref, scope = await host.nursery.start(run_raw, Risky.child_spec(name="r", log=log), raised)
        async with trioscope.monitor(ref) as down:
            results: dict[str, object] = {}
            host.nursery.start_soon(
                capture, results, "running", lambda: ref.call(Risky.nested, in_handler)
            )
            await trio.testing.wait_all_tasks_blocked()
            host.nursery.start_soon(capture, results, "queued", lambda: ref.call(Risky.record, 1))
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            ended = await down.wait()
        await trio.testing.wait_all_tasks_blocked()
        # Re-raised unchanged: the Cancelled in it belongs to the scope that killed it.
        [group] = in_handler
        assert raised == [group]
        assert sorted(type(e).__name__ for e in group.exceptions) == ["Cancelled", "ValueError"]
        [error] = [e for e in group.exceptions if isinstance(e, ValueError)]
        assert ended == Down(name="r", incarnation=ref.incarnation, reason=error)
        assert {key: str(exc) for key, exc in results.items()} == {
            "running": "service 'r' is unavailable: it was killed while handling this call",
            "queued": "service 'r' is unavailable: it is shutting down; the message was not run",
        }
        assert log == ["init", "ready"]  # killed: terminate does not run


async def test_an_interrupt_in_a_handler_is_killed_and_raised_again_bare() -> None:
    async with running() as host:
        log: list[object] = []
        raised: list[BaseException] = []
        ref, _ = await host.nursery.start(run_raw, Risky.child_spec(name="r", log=log), raised)
        async with trioscope.monitor(ref) as down:
            results: dict[str, object] = {}
            host.nursery.start_soon(capture, results, "running", lambda: ref.call(Risky.interrupt))
            ended = await down.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert str(results["running"]) == (
            "service 'r' is unavailable: it was killed while handling this call"
        )
        assert ended == Down(name="r", incarnation=ref.incarnation, reason="killed")
        assert [type(exc) for exc in raised] == [KeyboardInterrupt]
        assert log == ["init", "ready"]  # not a crash: terminate does not run


async def test_a_service_ref_never_waits_for_the_next_incarnation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as host:
        old = await host.start(Counter.child_spec(name="c"))
        await host.kill(old)
        new = await host.start(Counter.child_spec(name="c"))
        start = trio.current_time()
        with pytest.raises(ServiceUnavailableError):
            await old.call(Counter.incr)
        assert trio.current_time() == start
        assert await trioscope.call("c", Counter.incr) == 1
        assert stats(new)[2] == 1


async def test_a_call_by_name_whose_message_ran_and_crashed_is_not_retried() -> None:
    async with running() as host:
        ref = await host.start(Counter.child_spec(name="c"))
        with pytest.raises(ServiceCrashedError) as info:
            await trioscope.call("c", Counter.crash)
        assert str(info.value.__cause__) == "counter crashed"
        assert isinstance(await host.ended(ref), RuntimeError)
        assert trioscope.whereis("c") is None


# -- a call by name rides through a restart (required) ------------------------------------


async def test_a_call_by_name_rides_through_a_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as host:
        spec = Counter.child_spec(100, name="c")
        first = await host.start(spec)
        assert await trioscope.call("c", Counter.incr) == 101
        with pytest.raises(ServiceCrashedError):
            await first.call(Counter.crash)
        await host.ended(first)
        assert trioscope.whereis("c") is None

        # Issued while no incarnation is registered: it waits for the name.
        results: dict[str, object] = {}
        host.nursery.start_soon(
            capture, results, "call", lambda: trioscope.call("c", Counter.incr, 5)
        )
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(2)  # a supervisor's restart delay, say
        assert results == {}

        second = await host.start(spec)  # the "restart": a new incarnation, same name
        await trio.testing.wait_all_tasks_blocked()
        assert results == {"call": 105}  # ran on the fresh instance, not the crashed one
        assert stats(second) == (0, 0, 1)
        assert trio.current_time() == 2


async def test_a_queued_call_by_name_is_retried_on_the_next_incarnation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as host:
        log: list[object] = []
        gate = trio.Event()
        spec = Worker.child_spec(name="w", log=log, gate=gate)
        first = await host.start(spec)
        results: dict[str, object] = {}
        host.nursery.start_soon(
            capture, results, "crash", lambda: first.call(Worker.hold_then_crash)
        )
        await trio.testing.wait_all_tasks_blocked()
        host.nursery.start_soon(
            capture, results, "by-name", lambda: trioscope.call("w", Worker.record, "retried")
        )
        host.nursery.start_soon(
            capture, results, "by-ref", lambda: first.call(Worker.record, "lost")
        )
        await trio.testing.wait_all_tasks_blocked()
        assert stats(first)[0] == 2

        gate.set()
        await host.ended(first)
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(results["crash"], ServiceCrashedError)
        assert isinstance(results["by-ref"], ServiceUnavailableError)  # a ref never retries
        assert "by-name" not in results  # the never-run message waits for a new incarnation

        await trio.sleep(1)
        second = await host.start(spec)
        await trio.testing.wait_all_tasks_blocked()
        assert results["by-name"] == "retried"
        assert log == ["hold", "retried"]
        assert stats(second) == (0, 0, 1)


# -- init, terminate -----------------------------------------------------------------------


async def test_init_runs_before_ready_and_calls_made_meanwhile_wait_for_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as host:
        log: list[object] = []
        gate = trio.Event()
        started: list[ServiceRef[Any]] = []

        async def start() -> None:
            started.append(
                await host.start(Lifecycle.child_spec(name="l", log=log, init_gate=gate))
            )

        host.nursery.start_soon(start)
        await trio.testing.wait_all_tasks_blocked()
        assert started == []
        starting = trioscope.whereis("l")
        assert starting is not None
        assert starting.statistics().started_at is None
        assert repr(starting) == "<ServiceRef 'l' mailbox 0/1024 starting>"
        assert (await starting.health()).status == "unavailable"
        results: dict[str, object] = {}
        host.nursery.start_soon(
            capture, results, "early", lambda: starting.call(Lifecycle.record, "early")
        )
        await trio.sleep(3)
        assert results == {}
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert started == [starting]
        assert results == {"early": "early"}
        assert log == ["init", "ready", "early"]
        assert starting.statistics().started_at == 3.0


async def test_init_failing_fails_the_start() -> None:
    async with running() as host:
        log: list[object] = []
        gate = trio.Event()
        error = OSError("no database")
        failures: list[BaseException] = []

        async def start() -> None:
            try:
                await host.nursery.start(
                    Lifecycle.child_spec(name="l", log=log, init_gate=gate, init_error=error).start
                )
            except OSError as exc:
                failures.append(exc)

        host.nursery.start_soon(start)
        await trio.testing.wait_all_tasks_blocked()
        starting = trioscope.whereis("l")
        assert starting is not None
        results: dict[str, object] = {}
        host.nursery.start_soon(
            capture, results, "early", lambda: starting.call(Lifecycle.record, "early")
        )
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert failures == [error]
        assert str(results["early"]) == (
            "service 'l' is unavailable: its init() failed (OSError: no database); "
            "the message was not run"
        )
        assert log == ["init"]
        assert trioscope.whereis("l") is None
        # The name is free again.
        ok = await host.start(Lifecycle.child_spec(name="l", log=log))
        assert trioscope.whereis("l") == ok


async def test_terminate_runs_on_crash_with_the_exception() -> None:
    async with running() as host:
        log: list[object] = []
        ref = await host.start(Lifecycle.child_spec(name="l", log=log))
        with pytest.raises(ServiceCrashedError) as info:
            await ref.call(Lifecycle.crash)
        exit_ = await host.ended(ref)
        assert log == ["init", "ready", ("terminate", info.value.__cause__)]
        assert exit_ is info.value.__cause__


async def test_terminate_on_crash_gets_the_shutdown_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as host:
        log: list[object] = []
        ref = await host.start(
            Lifecycle.child_spec(name="l", log=log, terminate_forever=True, shutdown=2)
        )
        with pytest.raises(ServiceCrashedError):
            await ref.call(Lifecycle.crash)
        start = trio.current_time()
        exit_ = await host.ended(ref)
        assert trio.current_time() - start == 2
        assert isinstance(exit_, RuntimeError)  # still exits with the crash, not a cancel


async def test_terminate_runs_on_an_orderly_stop() -> None:
    # Only a supervisor can stop a service in order (leaving its block does).
    log: list[object] = []
    async with trioscope.open_registry(isolated=True):
        async with trioscope.open_supervisor([Lifecycle.child_spec(name="l", log=log)]):
            assert await trioscope.call("l", Lifecycle.record, "x") == "x"
        assert trioscope.whereis("l") is None
    assert log == ["init", "ready", "x", ("terminate", None)]


async def test_terminate_raising_on_an_orderly_stop_is_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running() as host:
        log: list[object] = []
        raised: list[BaseException] = []
        error = OSError("flush failed")
        handle = _ChildHandle()
        spec = Lifecycle.child_spec(name="l", log=log, terminate_error=error)
        ref, _ = await host.nursery.start(functools.partial(run_raw, handle=handle), spec, raised)
        async with trioscope.monitor(ref) as down:
            with caplog.at_level(logging.INFO, logger="trioscope"):
                handle.request_stop()  # as its supervisor does
                ended = await down.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["init", "ready", ("terminate", None)]
        assert raised == [error]
        assert ended == Down(name="l", incarnation=ref.incarnation, reason=error)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [(r.name, r.levelno, r.getMessage()) for r in errors] == [
            (
                "trioscope.service",
                logging.ERROR,
                "service 'l': terminate() raised during an orderly stop",
            )
        ]
        assert errors[0].exc_info is not None
        assert errors[0].exc_info[1] is error


async def test_terminate_raising_after_a_crash_is_logged_and_the_crash_is_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running() as host:
        log: list[object] = []
        raised: list[BaseException] = []
        error = OSError("flush failed")
        spec = Lifecycle.child_spec(name="l", log=log, terminate_error=error)
        ref, _ = await host.nursery.start(run_raw, spec, raised)
        async with trioscope.monitor(ref) as down:
            with pytest.raises(ServiceCrashedError) as info:
                await ref.call(Lifecycle.crash)
            ended = await down.wait()
        await trio.testing.wait_all_tasks_blocked()
        crash = info.value.__cause__
        assert isinstance(crash, RuntimeError)
        assert log == ["init", "ready", ("terminate", crash)]
        # The service exits with the crash, and monitors see the crash.
        assert raised == [crash]
        assert ended == Down(name="l", incarnation=ref.incarnation, reason=crash)
        # The terminate error is logged beside the crash report, not lost.
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [(r.name, r.levelno, r.getMessage()) for r in errors] == [
            (
                "trioscope.service",
                logging.ERROR,
                "service 'l' crashed in crash() (mailbox depth 0, restarts 0)",
            ),
            (
                "trioscope.service",
                logging.ERROR,
                "service 'l': terminate() raised after a crash; the service exits with "
                "the crash (RuntimeError: lifecycle crashed)",
            ),
        ]
        assert errors[0].exc_info is not None
        assert errors[0].exc_info[1] is crash
        assert errors[1].exc_info is not None
        assert errors[1].exc_info[1] is error


async def test_a_service_killed_in_terminate_after_a_crash_keeps_the_crash_and_logs_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running() as host:
        log: list[object] = []
        raised: list[BaseException] = []
        spec = FailingCleanup.child_spec(name="l", log=log, shutdown=math.inf)
        ref, scope = await host.nursery.start(run_raw, spec, raised)
        async with trioscope.monitor(ref) as down:
            with pytest.raises(ServiceCrashedError) as info:
                await ref.call(Lifecycle.crash)
            await trio.testing.wait_all_tasks_blocked()
            crash = info.value.__cause__
            assert log == ["init", "ready", ("terminate", crash)]
            scope.cancel()  # killed while terminate runs; its nursery's task fails
            ended = await down.wait()
        await trio.testing.wait_all_tasks_blocked()
        # Only the Cancelled went on, to the scope that killed it: nothing escaped
        # that scope, the crash stays the reason, and terminate's error is logged.
        [cancelled] = raised
        assert _only_cancelled(cancelled)
        assert ended == Down(name="l", incarnation=ref.incarnation, reason=crash)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [r.getMessage() for r in errors][1:] == [
            "service 'l': terminate() raised after a crash; the service exits with "
            "the crash (RuntimeError: lifecycle crashed)"
        ]
        assert errors[1].exc_info is not None
        assert isinstance(errors[1].exc_info[1], ValueError)


async def test_terminate_does_not_run_when_the_service_is_killed() -> None:
    async with running() as host:
        log: list[object] = []
        ref = await host.start(Lifecycle.child_spec(name="l", log=log))
        await host.kill(ref)
        assert log == ["init", "ready"]


@pytest.mark.parametrize("ending", ["crash", "kill", "init-failure", "orderly-stop"])
async def test_a_service_name_is_released_however_the_service_ends(ending: str) -> None:
    async with running() as host:
        log: list[object] = []
        if ending == "init-failure":
            with pytest.raises(OSError, match=r"^no$"):
                await host.start(Lifecycle.child_spec(name="l", log=log, init_error=OSError("no")))
        elif ending == "orderly-stop":
            async with trioscope.open_supervisor([Lifecycle.child_spec(name="l", log=log)]):
                assert trioscope.whereis("l") is not None
        else:
            ref = await host.start(Lifecycle.child_spec(name="l", log=log))
            assert trioscope.whereis("l") == ref
            if ending == "crash":
                with pytest.raises(ServiceCrashedError):
                    await ref.call(Lifecycle.crash)
                await host.ended(ref)
            else:
                await host.kill(ref)
        assert trioscope.whereis("l") is None
        assert trioscope.current_registry().names() == []
        again = await host.start(Lifecycle.child_spec(name="l", log=log))
        assert trioscope.whereis("l") == again


async def test_a_second_service_under_a_live_name_fails_to_start_and_changes_nothing() -> None:
    async with running("ns") as host:
        first = await host.start(Counter.child_spec(name="c"))
        with pytest.raises(
            trioscope.AlreadyRegisteredError,
            match=exactly(
                f"name 'c' is already registered in registry 'ns' (held by {first!r}); "
                "pick another name, or open a nested registry scope to shadow it"
            ),
        ) as info:
            await host.nursery.start(Counter.child_spec(50, name="c").start)
        assert info.value.holder == first
        assert trioscope.whereis("c") == first
        assert await trioscope.call("c", Counter.incr) == 1


# -- health and statistics -----------------------------------------------------------


async def test_health_of_a_healthy_service() -> None:
    async with running() as host:
        ref = await host.start(Probe.child_spec({"connections": 3}, name="p", mailbox_size=8))
        health = await ref.health()
        assert health == Health(
            status="healthy",
            name="p",
            mailbox_depth=0,
            mailbox_capacity=8,
            restarts=0,
            detail={"connections": 3},
        )
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            health.status = "degraded"  # type: ignore[misc]
        # A service without a hook is healthy with no detail.
        counter = await host.start(Counter.child_spec(name="c"))
        assert (await counter.health()).detail == {}
        assert (await counter.health()).status == "healthy"


@pytest.mark.parametrize("status", ["degraded", "unavailable"])
async def test_health_reports_what_the_hook_says(status: str) -> None:
    async with running() as host:
        ref = await host.start(Probe.child_spec({"status": status, "why": "disk"}, name="p"))
        health = await ref.health()
        assert health.status == status
        assert health.detail == {"status": status, "why": "disk"}


async def test_health_is_degraded_when_the_hook_rejects() -> None:
    async with running() as host:
        ref = await host.start(Probe.child_spec(BadAmount("replica lag"), name="p"))
        health = await ref.health()
        assert (health.status, health.detail) == ("degraded", {"error": "replica lag"})
        assert await ref.call(Probe.noop) is None  # Rejected: still running


async def test_health_is_degraded_when_the_hook_does_not_answer_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as host:
        ref = await host.start(Probe.child_spec({}, gate=trio.Event(), name="p"))
        health = await ref.health()
        assert (health.status, health.detail) == ("degraded", {"error": "no answer within 5 s"})
        assert trio.current_time() == 5
        health = await ref.with_timeout(1).health()
        assert health.detail == {"error": "no answer within 1 s"}


async def health_behind_a_held_call(
    host: Host, ref: ServiceRef[Probe]
) -> tuple[trio.Event, trio.Event, dict[str, object]]:
    """Hold the service in a call (until *gate*), queue a health check behind it
    (its result lands in *results*), then another held call (until *second_gate*)
    that keeps the mailbox from draining once the health check has run."""
    gate = trio.Event()
    host.nursery.start_soon(ref.call, Probe.hold, gate)
    await trio.testing.wait_all_tasks_blocked()
    results: dict[str, object] = {}
    host.nursery.start_soon(capture, results, "health", ref.health)
    await trio.testing.wait_all_tasks_blocked()
    second_gate = trio.Event()
    ref.try_cast(Probe.hold, second_gate)
    return gate, second_gate, results


async def test_health_is_degraded_when_the_mailbox_is_nearly_full() -> None:
    async with running() as host:
        ref = await host.start(Probe.child_spec({}, name="p", mailbox_size=10))
        gate, second_gate, results = await health_behind_a_held_call(host, ref)
        for _ in range(8):
            ref.try_cast(Probe.noop)
        for _ in range(3):  # waiting senders refill every slot the service frees
            host.nursery.start_soon(ref.cast, Probe.noop)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        health = results["health"]
        assert isinstance(health, Health)
        assert health.status == "degraded"
        assert health.mailbox_depth == 10
        second_gate.set()


async def test_withdrawn_calls_do_not_count_toward_degraded_health() -> None:
    async with running() as host:
        ref = await host.start(Probe.child_spec({}, name="p", mailbox_size=20))
        gate, second_gate, results = await health_behind_a_held_call(host, ref)
        withdrawn = [await queue_call(host, ref, Probe.noop) for _ in range(10)]
        for _ in range(8):
            ref.try_cast(Probe.noop)
        assert ref.statistics().mailbox_depth == 20
        for scope in withdrawn:
            scope.cancel()
        assert ref.statistics().mailbox_depth == 10
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        # Degraded from 18 messages (90% of 20): the 8 live ones are well below.
        health = results["health"]
        assert isinstance(health, Health)
        assert (health.status, health.mailbox_depth) == ("healthy", 8)
        second_gate.set()


async def test_health_of_an_ended_or_crashing_service_is_unavailable() -> None:
    async with running() as host:
        ref = await host.start(Counter.child_spec(name="c"))
        await host.kill(ref)
        assert await ref.health() == Health(
            status="unavailable", name="c", mailbox_depth=0, mailbox_capacity=1024, restarts=0
        )
        crashing = await host.start(Probe.child_spec(RuntimeError("hook crashed"), name="p"))
        health = await crashing.health()
        assert health.status == "unavailable"
        assert isinstance(await host.ended(crashing), RuntimeError)


async def test_statistics(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as host:
        await trio.sleep(3)
        gate = trio.Event()
        ref = await host.start(Worker.child_spec(name="w", gate=gate, mailbox_size=16))
        statistics = ref.statistics()
        assert statistics == ServiceStatistics(
            mailbox_depth=0, mailbox_capacity=16, handled=0, in_flight=0, started_at=3.0
        )
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            statistics.handled = 1  # type: ignore[misc]
        host.nursery.start_soon(ref.call, Worker.hold)
        await trio.testing.wait_all_tasks_blocked()
        await ref.cast(Worker.record, 1)  # casts are not in flight: nobody waits for them
        host.nursery.start_soon(ref.call, Worker.record, 2)
        await trio.testing.wait_all_tasks_blocked()
        assert stats(ref) == (2, 2, 0)
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert stats(ref) == (0, 0, 3)
        await host.kill(ref)
        assert ref.statistics() == ServiceStatistics(
            mailbox_depth=0, mailbox_capacity=16, handled=3, in_flight=0, started_at=3.0
        )


# -- a stateful model ------------------------------------------------------------------------


class NotFound(trioscope.Rejected, KeyError):
    pass


class BadValue(trioscope.Rejected, ValueError):
    pass


class KV(Service):
    def __init__(self) -> None:
        self.data: dict[str, int] = {}

    async def put(self, key: str, value: int) -> int | None:
        old = self.data.get(key)
        self.data[key] = value
        return old

    async def pop(self, key: str) -> int:
        if key not in self.data:
            raise NotFound(key)
        return self.data.pop(key)

    async def put_all(self, items: list[tuple[str, int]]) -> None:
        # Applies items in order across awaits; a bad one rejects the rest, keeping the first.
        for key, value in items:
            if value < 0:
                raise BadValue(f"negative value for {key!r}")
            self.data[key] = value
            await trio.lowlevel.checkpoint()

    async def snapshot(self) -> dict[str, int]:
        return dict(self.data)

    async def crash(self) -> None:
        raise RuntimeError("kv crashed")


KEYS = st.sampled_from(["a", "b", "c"])


class KVMachine(ServiceStateMachine):
    """A KV service against a dict, under a real supervisor.

    Each example runs in its own Trio run, on a MockClock, in a leak-checked
    test scope that stops the service when the example ends.
    """

    spec = KV.child_spec(name="kv", mailbox_size=4)
    max_restarts = 1_000  # crashes are a rule here, not a reason to give up

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, int] = {}
        self.incarnations = {self.incarnation}

    @rule(key=KEYS, value=st.integers(0, 9))
    def put_by_name(self, key: str, value: int) -> None:
        assert self.call(KV.put, key, value) == self.model.get(key)
        self.model[key] = value

    @rule(key=KEYS, value=st.integers(0, 9))
    def put_by_cast(self, key: str, value: int) -> None:
        self.cast(KV.put, key, value)
        self.model[key] = value

    @rule(key=KEYS)
    def pop(self, key: str) -> None:
        if key in self.model:
            assert self.call(KV.pop, key) == self.model.pop(key)
        else:
            with pytest.raises(NotFound):
                self.call(KV.pop, key)

    @rule(items=st.lists(st.tuples(KEYS, st.integers(-2, 9)), max_size=4))
    def put_all(self, items: list[tuple[str, int]]) -> None:
        expected = dict(self.model)
        rejected = False
        for key, value in items:
            if value < 0:
                rejected = True
                break
            expected[key] = value
        if rejected:
            with pytest.raises(BadValue):
                self.call(KV.put_all, items)
        else:
            assert self.call(KV.put_all, items) is None
        self.model = expected  # a rejection keeps what the handler had done

    @rule()
    def crash_and_restart(self) -> None:
        restarts = self.restarts
        with pytest.raises(ServiceCrashedError):
            self.call(KV.crash)
        # The call returns once the Trio side is idle: the supervisor has restarted it.
        assert (self.status, self.restarts) == ("running", restarts + 1)
        assert self.incarnation not in self.incarnations
        self.incarnations.add(self.incarnation)
        self.model = {}

    @invariant()
    def service_matches_model(self) -> None:
        # A call queues behind every earlier cast, so this sees all of them.
        assert self.call(KV.snapshot) == self.model
        ref = self.ref
        assert ref is not None
        assert (ref.statistics().mailbox_depth, ref.statistics().in_flight) == (0, 0)


def test_kv_service_matches_a_dict_model() -> None:
    run_state_machine_as_test(KVMachine, settings=settings(max_examples=15, stateful_step_count=15))


async def test_a_plain_function_by_name_fails_at_once_even_if_nothing_is_registered() -> None:
    def not_async(self: object) -> None:
        return None

    message = (
        "test_a_plain_function_by_name_fails_at_once_even_if_nothing_is_registered.<locals>"
        ".not_async is not a handler: handlers are `async def` methods of a Service"
    )
    async with trioscope.open_registry():
        with trio.testing.assert_no_checkpoints(), pytest.raises(TypeError, match=exactly(message)):
            await trioscope.call("nobody", not_async)  # type: ignore[arg-type]


# -- what a call through a ref raises when its message never ran -----------------


async def test_a_ref_never_shows_the_private_not_run_error() -> None:
    """Issue 8 item 13: the retry marker is for calls by name only."""
    async with running() as host:
        ref = await host.start(Counter.child_spec())
        with pytest.raises(trioscope.ServiceCrashedError):
            await ref.call(Counter.crash)
        await trio.testing.wait_all_tasks_blocked()
        for attempt in (
            lambda: ref.call(Counter.get),
            lambda: ref.cast(Counter.get),
        ):
            with pytest.raises(ServiceUnavailableError) as info:
                await attempt()
            assert type(info.value) is ServiceUnavailableError
        with pytest.raises(ServiceUnavailableError) as info:
            ref.try_cast(Counter.get)
        assert type(info.value) is ServiceUnavailableError
