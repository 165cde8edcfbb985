"""Model-based tests of services: ServiceStateMachine and the operation strategies."""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar, TypeVar

import pytest
import trio
import trio.testing
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule, run_state_machine_as_test

import trioscope
from trioscope._exits import describe
from trioscope.foundation import Event, events
from trioscope.testing._faults import (
    Fault,
    FaultSchedule,
    FiredFault,
    InjectedFault,
    fault_schedules,
)
from trioscope.testing._helpers import SimulatedCrash
from trioscope.testing._scope import LeakError, open_test_scope
from trioscope.testing._stateful import (
    ModelMismatchError,
    Operation,
    OperationResult,
    OperationTimeoutError,
    RestartRecord,
    ServiceStateMachine,
    TraceEvent,
    apply_operations,
    check_against_model,
    operation_sequences,
    operations,
)

R = TypeVar("R")

# Small, fixed runs: exact printed programs, and the whole file well under 10 s.
FAST = settings(
    max_examples=12,
    stateful_step_count=8,
    deadline=None,
    database=None,
    derandomize=True,
    print_blob=False,
)

# No explain phase: its notes name lines of this file.
NO_EXPLAIN = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)

KEYS = st.sampled_from("abc")
VALUES = st.integers(0, 9)


def program(exc: BaseException) -> list[str]:
    """The failing program Hypothesis printed (its notes, less the heading, whose
    wording changes between Hypothesis versions)."""
    notes: list[str] = getattr(exc, "__notes__", [])
    assert notes, f"no program printed on {exc!r}"
    assert notes[0].startswith(("Failing test case", "Falsifying example")), notes[0]
    return notes[1:]


# -- services and their models -----------------------------------------------------------


class KeyMissing(trioscope.Rejected, KeyError):
    """A get or delete of a key that is not there (the service keeps running)."""


class KV(trioscope.Service):
    def __init__(self) -> None:
        self.data: dict[str, int] = {}

    async def put(self, key: str, value: int) -> None:
        self.data[key] = value

    async def get(self, key: str) -> int:
        if key not in self.data:
            raise KeyMissing(key)
        return self.data[key]

    async def delete(self, key: str) -> None:
        if key not in self.data:
            raise KeyMissing(key)
        del self.data[key]

    async def size(self) -> int:
        return len(self.data)

    async def divide(self, key: str, by: int) -> int:
        # A crash when by == 0 (ZeroDivisionError is not a Rejected).
        self.data[key] = self.data.get(key, 0) // by
        return self.data[key]


class BuggyKV(KV):
    """Keeps its size in a counter, and forgets to decrement it on delete."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def put(self, key: str, value: int) -> None:
        if key not in self.data:
            self.count += 1
        self.data[key] = value

    async def delete(self, key: str) -> None:
        if key not in self.data:
            raise KeyMissing(key)
        del self.data[key]  # the bug: self.count stays as it was

    async def size(self) -> int:
        return self.count


class KVModel:
    """KV in plain Python: the same methods, returning and raising the same."""

    def __init__(self) -> None:
        self.data: dict[str, int] = {}

    def put(self, key: str, value: int) -> None:
        self.data[key] = value

    def get(self, key: str) -> int:
        if key not in self.data:
            raise KeyMissing(key)
        return self.data[key]

    def delete(self, key: str) -> None:
        if key not in self.data:
            raise KeyMissing(key)
        del self.data[key]

    def size(self) -> int:
        return len(self.data)

    def divide(self, key: str, by: int) -> int:
        if by == 0:
            self.data.clear()  # the service crashes: a fresh incarnation starts empty
            raise ZeroDivisionError
        self.data[key] = self.data.get(key, 0) // by
        return self.data[key]


# -- a machine that passes, and catches a bug ---------------------------------------------


class KVRules(ServiceStateMachine):
    """KV against a dict: puts, gets, deletes, and the sizes agree after each."""

    spec: ClassVar[trioscope.ChildSpec[Any]] = KV.child_spec(name="kv")
    kv: ClassVar[type[KV]] = KV  # whose handlers the rules call (a subclass's own, if any)
    max_restarts = 1000
    examples: ClassVar[list[tuple[TraceEvent, ...]]] = []

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, int] = {}

    @rule(key=KEYS, value=VALUES)
    def put(self, key: str, value: int) -> None:
        self.call(self.kv.put, key, value)
        self.model[key] = value

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        if key in self.model:
            assert self.call(self.kv.get, key) == self.model[key]
        else:
            with pytest.raises(KeyMissing):
                self.call(self.kv.get, key)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        if key in self.model:
            self.call(self.kv.delete, key)
            del self.model[key]
        else:
            with pytest.raises(KeyMissing):
                self.call(self.kv.delete, key)

    @invariant()
    def sizes_agree(self) -> None:
        assert self.call(self.kv.size) == len(self.model)

    def teardown(self) -> None:
        super().teardown()
        type(self).examples.append(self.trace)


class KVMachine(KVRules):
    """And crashes (the model knows a crash loses the state), and time passing."""

    examples: ClassVar[list[tuple[TraceEvent, ...]]] = []

    @rule()
    def crash_service(self) -> None:
        assert self.crash().action == "restarted"
        self.model.clear()  # a fresh incarnation: the state is lost

    @rule(seconds=st.sampled_from([0.5, 2.0]))
    def let_time_pass(self, seconds: float) -> None:
        before = self.now
        self.jump(seconds)
        assert self.now == before + seconds


class BuggyKVMachine(KVRules):
    spec = BuggyKV.child_spec(name="kv")
    kv = BuggyKV


def test_a_machine_whose_service_matches_its_model_passes() -> None:
    KVMachine.examples.clear()
    run_state_machine_as_test(KVMachine, settings=FAST)
    assert len(KVMachine.examples) == FAST.max_examples
    lines = [event.what for trace in KVMachine.examples for event in trace]
    # It did drive the service: crashes restarted it, and time passed.
    assert any(line.startswith("call KV.put(") for line in lines)
    assert any(line.startswith("exited: SimulatedCrash") for line in lines)
    assert any(line.startswith("jump ") for line in lines)


def test_the_machine_catches_a_buggy_service_and_shrinks_the_program() -> None:
    with pytest.raises(AssertionError) as info:
        run_state_machine_as_test(
            BuggyKVMachine,
            settings=settings(FAST, max_examples=200, stateful_step_count=5, phases=NO_EXPLAIN),
        )
    assert str(info.value).startswith("assert 1 == 0\n")
    assert program(info.value) == [
        "state = BuggyKVMachine()",
        "state.sizes_agree()",
        "state.put(key='a', value=0)",
        "state.sizes_agree()",
        "state.delete(key='a')",
        "state.sizes_agree()",
        "state.teardown()",
    ]


# -- the machine's operations, one at a time ---------------------------------------------


@contextlib.contextmanager
def running(cls: type[ServiceStateMachine]) -> Iterator[Any]:
    """One example's machine, driven by hand (as Hypothesis would, rule by rule)."""
    machine = cls()
    try:
        yield machine
    finally:
        machine.teardown()


def test_operations_run_in_the_scope_and_return_once_it_is_idle() -> None:
    with running(KVRules) as m:
        assert (m.name, m.incarnation, m.restarts, m.status, m.now) == ("kv", 0, 0, "running", 0)
        assert m.call(KV.put, "a", 1) is None
        m.cast(KV.put, "b", 2)
        # The cast's handler ran before cast() returned: three messages handled, the
        # put, the cast, and the private no-op cast() queued behind it to wait for it.
        assert m.ref is not None
        assert m.ref.statistics().handled == 3
        assert m.apply(Operation(KV.get, ("b",))) == 2
        with pytest.raises(KeyMissing):
            m.call(KV.get, "z")

        async def where() -> tuple[str | None, float]:
            return trioscope.current_registry().namespace, trio.current_time()

        assert m.run(where) == ("KVRules (hypothesis example)", 0.0)
        m.jump(1.5)
        assert m.now == 1.5
        assert [str(event) for event in m.trace] == [
            "0 #0 started",
            "0 #0 call KV.put('a', 1)",
            "0 #0 -> None",
            "0 #0 cast KV.put('b', 2)",
            "0 #0 -> None",
            "0 #0 call KV.get('b')",
            "0 #0 -> 2",
            "0 #0 call KV.get('z')",
            "0 #0 raised KeyMissing: 'z'",
            "0 #0 run test_operations_run_in_the_scope_and_return_once_it_is_idle.<locals>.where()",
            "0 #0 -> ('KVRules (hypothesis example)', 0.0)",
            "0 #0 jump 1.5 s",
            "1.5 #0 -> None",
        ]


class Delayed(KV):
    """Handlers that wait on a timer before they act (a write behind a rate limiter)."""

    async def put_later(self, key: str, value: int) -> None:
        await trio.sleep(0.25)
        self.data[key] = value

    async def crash_later(self) -> None:
        await trio.sleep(0.5)
        raise RuntimeError("crashed half a second in")

    async def stop_later(self) -> None:
        self.stop()  # an orderly stop: this handler finishes first
        await trio.sleep(0.75)
        self.data["stopped"] = 1

    async def stuck(self) -> None:
        await trio.sleep_forever()


class DelayedRules(KVRules):
    spec = Delayed.child_spec(name="kv")
    kv = Delayed

    def __init__(self) -> None:
        self.told: list[RestartRecord] = []
        super().__init__()

    def on_restart(self, record: RestartRecord) -> None:
        self.told.append(record)


def test_cast_returns_once_its_handler_has_finished() -> None:
    with running(DelayedRules) as m:
        stops: list[tuple[str, object, float]] = []

        async def watch() -> None:
            events = [("trioscope", "cast", "stop"), ("trioscope", "call", "stop")]
            trioscope.telemetry.attach(
                "stops",
                events,
                lambda e, ms, md: stops.append((e[1], md["handler"], ms["duration"])),
            )

        m.run(watch)
        m.cast(Delayed.put_later, "a", 1)
        # Its handler's timer ran out while cast() waited: the write is done.
        assert m.now == 0.25
        assert [str(event) for event in m.trace][3:] == [
            "0 #0 cast Delayed.put_later('a', 1)",
            "0.25 #0 -> None",
        ]
        ref = m.ref
        assert ref is not None
        assert ref._core.service.data == {"a": 1}  # read between rules, with no operation
        assert (ref.statistics().mailbox_depth, ref.statistics().in_flight) == (0, 0)
        # What cast() waited for: a private no-op, a message (a call) of its own.
        assert stops == [("cast", "put_later", 0.25), ("call", "_after_cast", 0.0)]
        assert ref.statistics().handled == 2

        async def unwatch() -> bool:
            return trioscope.telemetry.detach("stops")

        assert m.run(unwatch) is True


def test_a_cast_whose_handler_crashes_returns_once_the_supervisor_restarted_it() -> None:
    with running(DelayedRules) as m:
        m.cast(Delayed.crash_later)
        assert m.now == 0.5
        assert [(r.at_s, r.incarnation, r.reason) for r in m.told] == [
            (0.5, 1, "RuntimeError: crashed half a second in")
        ]
        assert (m.incarnation, m.status) == (1, "running")
        m.cast(Delayed.divide, "a", 0)  # crashes at once: no incarnation may be left to ask
        assert [(r.at_s, r.incarnation) for r in m.told] == [(0.5, 1), (0.5, 2)]
        assert m.told[1].reason == "ZeroDivisionError: integer division or modulo by zero"
        assert (m.incarnation, m.status) == (2, "running")


def test_a_cast_whose_handler_stops_the_service_returns_once_that_incarnation_ended() -> None:
    with running(DelayedRules) as m:
        first = m.ref
        assert first is not None
        m.cast(Delayed.stop_later)
        assert m.now == 0.75
        assert first._core.service.data == {"stopped": 1}
        assert first.statistics().handled == 1  # nothing else ran: the no-op was refused
        assert [(r.at_s, r.incarnation, r.reason) for r in m.told] == [(0.75, 1, "normal")]


def test_a_cast_whose_handler_never_finishes_times_out_on_the_trio_clock() -> None:
    with running(DelayedRules) as m:
        with pytest.raises(OperationTimeoutError) as info:
            m.cast(Delayed.stuck)
        assert str(info.value) == (
            "cast Delayed.stuck() did not finish within 60 s of Trio's clock (it waits for "
            "something that never happens; raise the machine's operation_timeout if it "
            "needs longer)"
        )
        assert m.now == 60.0
        ref = m.ref
        assert ref is not None
        # What cast() queued behind it to wait for was withdrawn: nothing is queued.
        assert (ref.statistics().mailbox_depth, ref.statistics().in_flight) == (0, 0)


class Told(KVRules):
    def __init__(self) -> None:
        self.told: list[RestartRecord] = []
        super().__init__()

    def on_restart(self, record: RestartRecord) -> None:
        self.told.append(record)
        self.model.clear()


def test_a_crashing_handler_restarts_the_service_and_the_model_is_told() -> None:
    with running(Told) as m:
        m.call(KV.put, "a", 1)
        m.model["a"] = 1
        m.jump(0.5)
        with pytest.raises(trioscope.ServiceCrashedError) as info:
            m.call(KV.divide, "a", 0)
        assert type(info.value.__cause__) is ZeroDivisionError
        restart = RestartRecord(0.5, 1, "ZeroDivisionError: integer division or modulo by zero")
        # Told once, before the call raised; take_restarts reports it once too.
        assert (m.told, m.model) == ([restart], {})
        assert m.told[0].error is info.value.__cause__
        assert m.take_restarts() == [restart]
        assert m.take_restarts() == []
        assert (m.incarnation, m.restarts, m.call(KV.size)) == (1, 1, 0)  # the state was lost


def test_crash_returns_once_the_real_supervisor_restarted_the_service() -> None:
    with running(Told) as m:
        m.call(KV.put, "a", 1)
        first = m.ref
        outcome = m.crash()
        assert (outcome.action, outcome.supervisor, outcome.child) == ("restarted", "Told", "kv")
        assert outcome.ref is m.ref
        assert m.ref is not None
        assert m.ref != first
        assert [r.reason for r in m.told] == ["SimulatedCrash: simulated crash of service 'kv'"]
        assert isinstance(m.told[0].error, SimulatedCrash)
        assert m.call(KV.size) == 0


class Backingoff(KVRules):
    backoff = trioscope.Backoff(initial=2.0, maximum=2.0, jitter=0.0)


def test_in_backoff_time_waits_for_a_jump_or_a_call() -> None:
    with running(Backingoff) as m:
        outcome = m.crash()
        assert (outcome.action, outcome.restart_at) == ("backoff", 2.0)
        assert (m.ref, m.status, m.incarnation, m.now) == (None, "backoff", 0, 0.0)
        m.jump(1.0)
        assert (m.ref, m.status, m.now) == (None, "backoff", 1.0)
        m.jump(1.0)
        assert (m.status, m.incarnation, m.now) == ("running", 1, 2.0)
        m.crash()
        # A call by name rides through the backoff: the clock autojumps to the restart.
        assert m.call(KV.size) == 0
        assert (m.incarnation, m.now) == (2, 4.0)
        assert [(r.at_s, r.incarnation) for r in m.take_restarts()] == [(2.0, 1), (4.0, 2)]


class Fragile(KVRules):
    max_restarts = 0


def test_a_supervisor_that_gives_up_leaves_the_example_without_its_service() -> None:
    with running(Fragile) as m:
        assert m.crash().action == "gave_up"
        assert isinstance(m.gave_up, trioscope.RestartIntensityExceededError)
        assert (m.ref, m.status) == (None, "stopped")
        with pytest.raises(trioscope.ServiceUnavailableError):
            m.call(KV.size)
        assert m.now == trioscope.DEFAULT_CALL_TIMEOUT_S  # the caller waited out its timeout


def test_an_operation_that_never_ends_times_out_on_the_trio_clock() -> None:
    with running(KVRules) as m:
        with pytest.raises(OperationTimeoutError) as info:
            m.run(trio.sleep_forever)
        assert str(info.value) == (
            "run sleep_forever() did not finish within 60 s of Trio's clock (it waits for "
            "something that never happens; raise the machine's operation_timeout if it "
            "needs longer)"
        )
        assert m.now == 60.0
        assert m.call(KV.size) == 0  # the example goes on


class Patient(KVRules):
    operation_timeout = math.inf


class _InterruptedOnce:
    """A reply queue whose first wait is interrupted, as Ctrl-C would interrupt it."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.interrupted = False

    def put(self, item: object) -> None:
        self.real.put(item)

    def get(self) -> object:
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return self.real.get()


def test_teardown_after_an_interrupted_rule_cancels_its_operation() -> None:
    m = Patient()
    m._runner.replies = _InterruptedOnce(m._runner.replies)
    with pytest.raises(KeyboardInterrupt):
        m.run(trio.sleep_forever)  # never ends, and no timeout
    m.teardown()  # cancels it, stops the service, ends the run: no hang
    assert not m._runner.thread.is_alive()
    assert [event.what for event in m.trace][-2:] == [
        "run sleep_forever()",
        "raised RuntimeError: run sleep_forever() was interrupted",
    ]


class WithFoundation(KVRules):
    foundation = True


def test_the_whole_foundation_can_run_in_the_example_scope() -> None:
    with running(WithFoundation) as m:

        async def store_and_count() -> int:
            await events.store(Event("kv.seen", {"key": "a"}))
            return len(await events.query(type="kv.seen"))

        assert m.run(store_and_count) == 1
        assert m.scope.foundation.which_children()[0].status == "running"


class Unstartable(trioscope.Service):
    async def init(self) -> None:
        raise ValueError("no config")


class UnstartableMachine(ServiceStateMachine):
    spec = Unstartable.child_spec(name="unstartable")

    @rule()
    def nothing(self) -> None:
        pass


def test_a_service_that_cannot_start_fails_the_machine_and_ends_its_run() -> None:
    with pytest.raises(trioscope.StartError) as info:
        UnstartableMachine()
    assert type(info.value.__cause__) is ValueError
    assert not [t for t in threading.enumerate() if t.name.startswith("trioscope machine")]


class StopsRecorded(KV):
    """KV that records how each incarnation stopped (``None``: an orderly stop)."""

    stops: ClassVar[list[BaseException | None]] = []

    async def terminate(self, reason: BaseException | None) -> None:
        StopsRecorded.stops.append(reason)


class SetupFails(ServiceStateMachine):
    """Its own __init__ sets the service up, then fails (a bug in the test's setup)."""

    spec = StopsRecorded.child_spec(name="kv")
    built: ClassVar[int] = 0

    def __init__(self) -> None:
        SetupFails.built += 1
        super().__init__()
        self.call(KV.put, "a", 1)  # the example's run is live
        raise LookupError("the test's own setup failed")

    @rule()
    def size(self) -> None:
        self.call(KV.size)


def _machine_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("trioscope machine")]


def test_a_subclass_init_that_fails_ends_the_run_it_started() -> None:
    StopsRecorded.stops.clear()
    assert _machine_threads() == []
    with pytest.raises(LookupError) as info:
        SetupFails()
    assert info.value.args == ("the test's own setup failed",)
    assert not hasattr(info.value, "__notes__")  # nothing leaked
    # The service was stopped in order and the scope closed: the run has ended.
    assert StopsRecorded.stops == [None]
    assert _machine_threads() == []


def test_a_machine_hypothesis_could_not_build_leaves_no_run_behind() -> None:
    # Hypothesis tears down only a machine its factory returned: each failing
    # construction (the first example, each shrink, the final replay) must end its own run.
    StopsRecorded.stops.clear()
    SetupFails.built = 0
    with pytest.raises(LookupError):
        run_state_machine_as_test(SetupFails, settings=settings(FAST, phases=NO_EXPLAIN))
    assert SetupFails.built > 1  # the failure was replayed: more than one run to end
    assert StopsRecorded.stops == [None] * SetupFails.built
    assert _machine_threads() == []


class _FailingSetup:
    """A mixin whose __init__ runs around the machine's, then fails."""

    def __init__(self) -> None:
        super().__init__()
        raise LookupError("the mixin's setup failed")


class MixedIn(_FailingSetup, KVRules):
    spec = StopsRecorded.child_spec(name="kv")


def test_a_mixin_init_that_fails_ends_the_run_too() -> None:
    StopsRecorded.stops.clear()
    with pytest.raises(LookupError, match=r"^the mixin's setup failed$"):
        MixedIn()
    assert StopsRecorded.stops == [None]
    assert _machine_threads() == []


class SetupLeaksThenFails(KVRules):
    def __init__(self) -> None:
        super().__init__()

        async def spawn() -> None:
            trio.lowlevel.spawn_system_task(
                trio.sleep_forever, name="set-up-and-left", context=contextvars.copy_context()
            )

        self.run(spawn)
        raise LookupError("the test's own setup failed")


def test_what_a_failed_init_leaked_is_a_note_on_its_error() -> None:
    with pytest.raises(LookupError) as info:
        SetupLeaksThenFails()
    [note] = info.value.__notes__
    assert note.startswith(
        "when the example's scope closed: LeakError: test scope 'SetupLeaksThenFails "
        "(hypothesis example)' leaked 1 thing that outlived it"
    )
    assert "task 'set-up-and-left'" in note
    assert _machine_threads() == []


def test_machine_definitions_are_checked() -> None:
    here = r"^test_machine_definitions_are_checked\.<locals>\."

    class NoSpec(ServiceStateMachine):
        @rule()
        def nothing(self) -> None:
            pass

    with pytest.raises(
        TypeError, match=here + r"NoSpec\.spec must be the child spec of the service to test"
    ):
        NoSpec()

    class Unnamed(NoSpec):
        spec = KV.child_spec()

    with pytest.raises(TypeError, match=here + r"Unnamed\.spec must start a named service"):
        Unnamed()

    with pytest.raises(TypeError) as info:

        class Shadowing(NoSpec):
            @rule()
            def crash(self) -> None:
                pass

    assert str(info.value).startswith(
        "test_machine_definitions_are_checked.<locals>.Shadowing.crash shadows "
        "ServiceStateMachine.crash, which rules use on self (apply, call, cast, crash, "
    )
    with pytest.raises(
        TypeError, match=here + r"WrongFaults\.faults must be a Hypothesis strategy"
    ):

        class WrongFaults(NoSpec):
            faults = "crash"  # type: ignore[assignment]


# -- failures, leaks, and the end of an example -------------------------------------------


class LeakyMachine(KVRules):
    @rule()
    def leak(self) -> None:
        async def spawn() -> None:
            # A task started in the scope (it sees the scope's registry) and left running.
            trio.lowlevel.spawn_system_task(
                trio.sleep_forever, name="leaky", context=contextvars.copy_context()
            )

        self.run(spawn)


def test_a_leak_fails_the_example_with_leak_error_naming_it() -> None:
    with pytest.raises(LeakError) as info:
        run_state_machine_as_test(LeakyMachine, settings=settings(FAST, phases=NO_EXPLAIN))
    assert [(leak.kind, leak.what) for leak in info.value.leaks] == [("task", "leaky")]
    assert program(info.value) == [
        "state = LeakyMachine()",
        "state.sizes_agree()",
        "state.leak()",
        "state.sizes_agree()",
        "state.teardown()",
    ]


def test_a_failing_rule_keeps_its_own_error_and_the_leak_is_a_note() -> None:
    def failing_rule() -> None:
        with running(LeakyMachine) as m:
            m.leak()
            raise AssertionError("the rule failed")

    with pytest.raises(AssertionError) as info:
        failing_rule()
    assert type(info.value) is AssertionError
    assert info.value.args == ("the rule failed",)
    [note] = info.value.__notes__
    assert note.startswith(
        "when the example's scope closed: LeakError: test scope 'LeakyMachine (hypothesis "
        "example)' leaked 1 thing that outlived it"
    )
    assert "task 'leaky'" in note


# -- determinism --------------------------------------------------------------------------


class Ticker(trioscope.Service):
    """Counts seconds of Trio's clock since it started, in a task of its own."""

    def __init__(self) -> None:
        self.ticks = 0
        self.started = 0.0

    async def init(self) -> None:
        self.started = trio.current_time()
        self.start_soon(self._tick)

    async def _tick(self) -> None:
        while True:
            await trio.sleep(1.0)
            self.ticks += 1

    async def read(self) -> tuple[int, float]:
        return self.ticks, self.started


class TickerMachine(ServiceStateMachine):
    spec = Ticker.child_spec(name="ticker")
    max_restarts = 1000
    examples: ClassVar[list[tuple[TraceEvent, ...]]] = []

    def __init__(self) -> None:
        super().__init__()
        self.last = self.now

    def between_rules(self) -> None:
        # Nothing ran and no time passed since the last operation returned,
        # though the ticker always has a deadline pending.
        assert self.now == self.last

    @rule(seconds=st.sampled_from([0.25, 1.0, 2.5]))
    def let_time_pass(self, seconds: float) -> None:
        self.between_rules()
        self.jump(seconds)
        self.last = self.now

    @rule()
    def crash_ticker(self) -> None:
        self.between_rules()
        assert self.crash().action == "restarted"

    @rule()
    def read(self) -> None:
        self.between_rules()
        ticks, started = self.call(Ticker.read)
        assert ticks == math.floor(self.now - started)

    def teardown(self) -> None:
        super().teardown()
        type(self).examples.append(self.trace)


def test_the_same_example_gives_the_same_trace() -> None:
    runs = []
    for _ in range(2):
        TickerMachine.examples.clear()
        run_state_machine_as_test(TickerMachine, settings=settings(FAST, max_examples=8))
        runs.append(list(TickerMachine.examples))
    assert runs[0] == runs[1]
    lines = [str(event) for trace in runs[0] for event in trace]
    assert len(runs[0]) == 8
    assert any(" #2 started" in line for line in lines)  # restarted twice in one example
    assert any(line.startswith("3.5 ") for line in lines)  # time did pass


# -- operation strategies -----------------------------------------------------------------


def test_operations_print_as_calls() -> None:
    assert repr(Operation(KV.put, ("a", 1))) == "KV.put('a', 1)"
    assert repr(Operation(KV.get, (), {"key": "a"})) == "KV.get(key='a')"
    assert repr(OperationResult(Operation(KV.size), 3)) == "KV.size() -> 3"
    crash = trioscope.ServiceCrashedError("'kv'", "divide")
    crash.__cause__ = ZeroDivisionError("division by zero")
    assert repr(OperationResult(Operation(KV.divide, ("a", 0)), None, crash)) == (
        "KV.divide('a', 0) crashed the service with ZeroDivisionError: division by zero"
    )
    assert repr(OperationResult(Operation(KV.get, ("z",)), None, KeyMissing("z"))) == (
        "KV.get('z') raised KeyMissing: 'z'"
    )


@settings(FAST, max_examples=30)
@given(operations(KV, put=(KEYS, VALUES), get={"key": KEYS}, size=()))
def test_operations_draw_calls_of_the_handlers_named(op: Operation) -> None:
    if op.handler is KV.put:
        key, value = op.args
        assert (key in "abc", 0 <= value <= 9, op.kwargs) == (True, True, {})  # type: ignore[operator]
    elif op.handler is KV.get:
        assert (op.args, list(op.kwargs)) == ((), ["key"])
    else:
        assert (op.handler, op.args, op.kwargs) == (KV.size, (), {})


def test_operations_check_their_arguments() -> None:
    with pytest.raises(
        TypeError,
        match=r"^KV\.nope is not a handler \(its handlers: delete, divide, get, put, size\)$",
    ):
        operations(KV, nope=())
    with pytest.raises(TypeError, match=r"^operations\(KV, put=\.\.\.\): the arguments do not fit"):
        operations(KV, put=(KEYS,))
    with pytest.raises(TypeError, match=r"^operations\(KV, get=\.\.\.\)\[0\] must be a Hypothesis"):
        operations(KV, get=("a",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^operations\(KV\) needs at least one handler"):
        operations(KV)
    with pytest.raises(TypeError, match=r"^operations\(\) needs a trioscope\.Service subclass"):
        operations(KVModel, put=(KEYS, VALUES))  # type: ignore[arg-type]


def _in_scope(body: Callable[[], Awaitable[R]], spec: trioscope.ChildSpec[Any]) -> R:
    async def main() -> R:
        async with open_test_scope("ops"), trioscope.open_supervisor([spec], max_restarts=100):
            return await body()

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(FAST, max_examples=15)
@given(
    operation_sequences(
        KV,
        max_size=12,
        put=(KEYS, VALUES),
        get=(KEYS,),
        delete=(KEYS,),
        divide=(KEYS, st.integers(0, 2)),
    )
)
def test_a_service_agrees_with_its_model_over_any_sequence(ops: list[Operation]) -> None:
    results = _in_scope(lambda: check_against_model("kv", ops, KVModel()), KV.child_spec(name="kv"))
    assert [r.operation for r in results] == ops


def test_the_first_disagreement_fails_naming_the_operations_run() -> None:
    ops = [
        Operation(BuggyKV.put, ("a", 1)),
        Operation(BuggyKV.delete, ("a",)),
        Operation(BuggyKV.size),
    ]
    with pytest.raises(ModelMismatchError) as info:
        _in_scope(lambda: check_against_model("kv", ops, KVModel()), BuggyKV.child_spec(name="kv"))
    assert str(info.value) == (
        "operation 3 disagrees with the model: BuggyKV.size(): the service returned 1, "
        "the model returned 0\n"
        "operations run:\n"
        "  1. BuggyKV.put('a', 1) -> None\n"
        "  2. BuggyKV.delete('a') -> None\n"
        "  3. BuggyKV.size() -> 1"
    )
    assert (info.value.index, info.value.expected.value) == (3, 0)

    class Strict(KVModel):
        def get(self, key: str) -> int:
            raise LookupError(key)

    wrong = [Operation(KV.get, ("a",))]
    with pytest.raises(
        ModelMismatchError,
        match=r"^operation 1 disagrees with the model: KV\.get\('a'\): the service raised "
        r"KeyMissing: 'a', the model raised LookupError: a\n",
    ):
        _in_scope(lambda: check_against_model("kv", wrong, Strict()), KV.child_spec(name="kv"))


def test_apply_operations_by_name_rides_through_a_crash_and_by_ref_does_not() -> None:
    ops = [
        Operation(KV.put, ("a", 4)),
        Operation(KV.divide, ("a", 0)),
        Operation(KV.get, ("a",)),
        Operation(KV.size),
    ]

    async def both() -> tuple[list[OperationResult], list[OperationResult]]:
        by_name = await apply_operations("kv", ops)
        ref = trioscope.whereis("kv")
        assert ref is not None
        return by_name, await apply_operations(ref, ops)

    by_name, by_ref = _in_scope(both, KV.child_spec(name="kv"))
    assert [repr(r) for r in by_name] == [
        "KV.put('a', 4) -> None",
        "KV.divide('a', 0) crashed the service with ZeroDivisionError: integer division or "
        "modulo by zero",
        "KV.get('a') raised KeyMissing: 'a'",
        "KV.size() -> 0",
    ]
    assert [repr(r).split(":")[0] for r in by_ref] == [
        "KV.put('a', 4) -> None",
        "KV.divide('a', 0) crashed the service with ZeroDivisionError",
        "KV.get('a') raised ServiceUnavailableError",
        "KV.size() raised ServiceUnavailableError",
    ]


# -- fault schedules ----------------------------------------------------------------------


class CrashAtTwo(Told):
    faults = st.just(FaultSchedule((Fault("crash", "kv", 2),)))


def test_a_crash_fault_restarts_the_service_through_the_real_supervisor() -> None:
    schedule = FaultSchedule((Fault("crash", "kv", 2),))
    with running(CrashAtTwo) as m:
        m.inject_faults(schedule=schedule)  # as Hypothesis runs it, first
        m.call(KV.put, "a", 1)
        m.model["a"] = 1
        m.jump(1.0)
        with pytest.raises(trioscope.ServiceCrashedError) as info:
            m.call(KV.put, "b", 2)  # the 2nd message: its handler raises instead of running
        fault = info.value.__cause__
        assert isinstance(fault, InjectedFault)
        assert m.fired == (FiredFault(Fault("crash", "kv", 2), 1, 1.0),)
        # The real supervisor restarted it, and the model was told before the call raised.
        assert m.told == [RestartRecord(1.0, 1, describe(fault))]
        assert m.model == {}
        assert (m.incarnation, m.restarts, m.call(KV.size)) == (1, 1, 0)
        assert [str(event) for event in m.trace][1:] == [
            f"0 #0 apply {schedule!r}",
            "0 #0 -> None",
            "0 #0 call KV.put('a', 1)",
            "0 #0 -> None",
            "0 #0 jump 1 s",
            "1 #0 -> None",
            "1 #0 call KV.put('b', 2)",
            f"1 #0 exited: {describe(fault)}",
            "1 #1 started",
            "1 #1 fault Fault('crash', 'kv', 2) fired (fault incarnation 1)",
            "1 #1 crashed the service with " + describe(fault),
            "1 #1 call KV.size()",
            "1 #1 -> 0",
        ]


def test_what_cast_waits_for_is_not_a_message_the_schedule_counts() -> None:
    schedule = FaultSchedule((Fault("stall", "kv", 2, 1.0), Fault("crash", "kv", 2)))
    with running(CrashAtTwo) as m:
        m.inject_faults(schedule=schedule)
        m.cast(KV.put, "a", 1)  # message 1
        assert m.fired == ()
        with pytest.raises(trioscope.ServiceCrashedError) as info:
            m.call(KV.put, "b", 2)  # message 2: stalled 1 s, then crashed
        assert isinstance(info.value.__cause__, InjectedFault)
        assert m.fired == (
            FiredFault(Fault("stall", "kv", 2, 1.0), 1, 0.0),
            FiredFault(Fault("crash", "kv", 2), 1, 1.0),
        )
        assert m._runner.faults is not None
        assert m._runner.faults.messages == {"kv": 2}


class CrashAtOne(Told):
    faults = st.just(FaultSchedule((Fault("crash", "kv", 1),)))


def test_the_crash_message_is_not_a_message_the_schedule_counts() -> None:
    # simulate_crash's own message is the test's crash, not the service's: a crash
    # fault at message 1 waits for the first real message, after the restart.
    with running(CrashAtOne) as m:
        m.inject_faults(schedule=FaultSchedule((Fault("crash", "kv", 1),)))
        outcome = m.crash()
        assert (outcome.action, outcome.supervisor, outcome.child) == (
            "restarted",
            "CrashAtOne",
            "kv",
        )
        assert outcome.ref is m.ref
        assert m.fired == ()
        [record] = m.told
        assert type(record.error) is SimulatedCrash
        with pytest.raises(trioscope.ServiceCrashedError) as info:
            m.call(KV.size)
        assert isinstance(info.value.__cause__, InjectedFault)
        # The schedule numbers the incarnations that reached a message it counts:
        # the one restarted by the crash is its first.
        assert m.fired == (FiredFault(Fault("crash", "kv", 1), 1, 0.0),)
        assert m.incarnation == 2


CRASHED = object()


class KVUnderFaults(ServiceStateMachine):
    """KV against a dict while crash faults hit it; the model forgets all on a restart."""

    spec = KV.child_spec(name="kv")
    max_restarts = 1000
    faults = fault_schedules(["kv"], kinds=["crash"], max_faults=2, max_at=4)

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, int] = {}

    def on_restart(self, record: RestartRecord) -> None:
        assert isinstance(record.error, InjectedFault)
        self.model.clear()

    def attempt(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        fired = len(self.fired)
        try:
            result = self.call(fn, *args)
        except trioscope.ServiceCrashedError as exc:
            cause = exc.__cause__
        else:
            return result
        # Only a fault crashes KV, at this very message.
        assert isinstance(cause, InjectedFault)
        assert len(self.fired) == fired + 1
        return CRASHED

    # One key: a crash between a put and a get of it is likely, and shrinks fast.
    @rule(key=st.just("a"), value=st.integers(0, 2))
    def put(self, key: str, value: int) -> None:
        if self.attempt(KV.put, key, value) is not CRASHED:
            self.model[key] = value

    @rule(key=st.just("a"))
    def get(self, key: str) -> None:
        try:
            got = self.attempt(KV.get, key)
        except KeyMissing:
            got = None
        assert got is CRASHED or got == self.model.get(key)

    @invariant()
    def agrees(self) -> None:
        self.get("a")


class ForgetfulModel(KVUnderFaults):
    """Forgets to forget: its model keeps the state a crash lost."""

    faults = fault_schedules(["kv"], kinds=["crash"], max_faults=1, max_at=3)

    def on_restart(self, record: RestartRecord) -> None:
        pass


def test_faults_from_a_schedule_strategy_reach_the_model() -> None:
    run_state_machine_as_test(KVUnderFaults, settings=FAST)


def test_a_model_that_ignores_restarts_fails_with_a_minimal_schedule() -> None:
    with pytest.raises(AssertionError) as info:
        run_state_machine_as_test(
            ForgetfulModel,
            settings=settings(FAST, max_examples=50, stateful_step_count=5, phases=NO_EXPLAIN),
        )
    # One crash fault, at the check after the put (message 3): the next get finds
    # the key gone while the model still has it.
    assert program(info.value) == [
        "state = ForgetfulModel()",
        "state.inject_faults(schedule=FaultSchedule((Fault('crash', 'kv', 3),)))",
        "state.agrees()",
        "state.put(key='a', value=0)",
        "state.agrees()",
        "state.get(key='a')",
        "state.teardown()",
    ]


class SeededUnderFaults(KVRules):
    faults = st.just(FaultSchedule((Fault("crash", "kv", 1),)))

    @initialize()
    def seed(self) -> None:
        # The schedule was applied first: this is message 1, whatever order
        # Hypothesis would pick the initialize rules in.
        with pytest.raises(trioscope.ServiceCrashedError):
            self.call(KV.put, "a", 0)


def test_the_schedule_is_applied_before_any_other_initialize_rule() -> None:
    run_state_machine_as_test(SeededUnderFaults, settings=FAST)
