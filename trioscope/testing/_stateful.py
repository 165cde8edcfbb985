"""Model-based tests of a Service: operation strategies, and a Hypothesis state machine.

::

    import trioscope
    from hypothesis import settings, strategies as st
    from hypothesis.stateful import rule, run_state_machine_as_test
    from trioscope.testing._stateful import ServiceStateMachine

    class Counter(trioscope.Service):
        def __init__(self) -> None:
            self.value = 0

        async def incr(self, by: int) -> int:
            self.value += by
            return self.value

    class CounterMachine(ServiceStateMachine):
        spec = Counter.child_spec(name="counter")
        max_restarts = 100

        def __init__(self) -> None:
            super().__init__()
            self.model = 0  # the plain-Python model of Counter

        @rule(by=st.integers(1, 3))
        def incr(self, by: int) -> None:
            self.model += by
            assert self.call(Counter.incr, by) == self.model

        @rule()
        def crash_it(self) -> None:
            assert self.crash().action == "restarted"
            self.model = 0  # a fresh incarnation starts from zero

    run_state_machine_as_test(
        CounterMachine, settings=settings(max_examples=5, stateful_step_count=5, deadline=None)
    )

`ServiceStateMachine` runs each Hypothesis example in its own Trio run, with
the service under a real supervisor in a leak-checked `open_test_scope`; its
rules drive the service (`ServiceStateMachine.call`, ``cast``, ``run``,
``crash``, ``jump``) and check it against a plain-Python model. Time moves
only while a rule's operation runs, and the Trio side is idle between rules,
so an example replays exactly and a failure shrinks (see the class).

For sequences without a machine: `operations` and `operation_sequences` are
strategies of `Operation` values (one handler call each), `apply_operations`
runs them in order, and `check_against_model` compares each outcome with what
a plain-Python model of the service returns or raises.

Needs Hypothesis (a test dependency), which this module imports.
"""

from __future__ import annotations

import functools
import inspect
import math
import queue
import random
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, ClassVar, Final, TypeVar, final, overload

import attrs
import outcome
import trio
import trio.testing
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize
from hypothesis.strategies import SearchStrategy

from .._child_spec import Backoff, ChildSpec, _check_seconds
from .._errors import (
    RestartIntensityExceededError,
    ServiceCrashedError,
    ServiceUnavailableError,
    TrioscopeError,
)
from .._exits import describe
from .._names import _child_name
from .._names import call as _call_by_name
from .._names import cast as _cast_by_name
from .._registry import _current_registry_or_none
from .._service import Deferred, Service, ServiceRef, _Incarnation, _Message
from .._supervisor import (
    _CHILD_BACKOFF,
    _CHILD_EXIT,
    _CHILD_START,
    _GIVE_UP,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_MAX_SECONDS,
    Strategy,
    Supervisor,
    open_supervisor,
)
from .._telemetry import Measurements, Metadata, attached
from ._faults import FaultRun, FaultSchedule, FiredFault, _after_cast
from ._helpers import CrashOutcome, simulate_crash
from ._scope import TestScope, _add_note, open_test_scope

if sys.version_info >= (3, 11):
    from typing import Concatenate, ParamSpec
else:  # pragma: no cover
    from typing import Concatenate

    from typing_extensions import ParamSpec


P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound=Service)

DEFAULT_OPERATION_TIMEOUT_S: Final = 60.0
"""Seconds of Trio's clock one operation of a `ServiceStateMachine` may take."""

_EVENTS: Final = (_CHILD_START, _CHILD_EXIT, _CHILD_BACKOFF, _GIVE_UP)


# -- operations ------------------------------------------------------------------------


def _brief(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@final
@attrs.frozen(repr=False)
class Operation:
    """One call of a service's handler: ``handler(*args, **kwargs)``.

    Its repr is the call, ``KV.put('a', 1)``, so a failing sequence prints
    readably (Hypothesis prints it the same way).
    """

    handler: Callable[..., Awaitable[object]]
    """The handler function, as passed to `trioscope.call` (``KV.put``)."""
    args: tuple[object, ...] = ()
    """Positional arguments."""
    kwargs: Mapping[str, object] = attrs.field(factory=dict)
    """Keyword arguments."""

    @property
    def name(self) -> str:
        """The handler's name (``"put"``): the model's method of that name answers it."""
        return getattr(self.handler, "__name__", repr(self.handler))

    def __repr__(self) -> str:
        qualname = getattr(self.handler, "__qualname__", None) or self.name
        parts = [repr(a) for a in self.args]
        parts.extend(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{qualname}({', '.join(parts)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints attrs classes field by field unless told otherwise.
        printer.text(repr(self))


def _describe_error(error: BaseException) -> str:
    if isinstance(error, ServiceCrashedError) and error.__cause__ is not None:
        return f"crashed the service with {describe(error.__cause__)}"
    return f"raised {describe(error)}"


@final
@attrs.frozen(repr=False)
class OperationResult:
    """What one `Operation` gave: a value, or the exception the caller got."""

    operation: Operation
    """The operation."""
    value: object = None
    """What it returned (``None`` when it raised)."""
    error: Exception | None = attrs.field(default=None, eq=False)
    """The exception the caller got, or ``None``. A crash is a
    `trioscope.ServiceCrashedError` whose ``__cause__`` is the handler's error."""

    def __repr__(self) -> str:
        if self.error is not None:
            return f"{self.operation!r} {_describe_error(self.error)}"
        return f"{self.operation!r} -> {_brief(self.value)}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class ModelMismatchError(TrioscopeError, AssertionError):
    """`check_against_model`: the service and its model disagreed about an operation.

    An `AssertionError`, so a test runner (and Hypothesis) reports a failure.
    """

    def __init__(
        self,
        index: int,
        got: OperationResult,
        expected: OperationResult,
        history: tuple[OperationResult, ...],
    ) -> None:
        self.index = index
        """Which operation disagreed (1 for the first)."""
        self.got = got
        """What the service did."""
        self.expected = expected
        """What the model did."""
        self.history = history
        """What the service did for the operations before it, which agreed."""
        lines = [
            f"operation {index} disagrees with the model: {got.operation!r}: the service "
            f"{_outcome_text(got)}, the model {_outcome_text(expected)}",
            "operations run:",
        ]
        lines.extend(f"  {n}. {r!r}" for n, r in enumerate((*history, got), start=1))
        super().__init__("\n".join(lines))


def _outcome_text(result: OperationResult) -> str:
    if result.error is not None:
        return _describe_error(result.error)
    return f"returned {_brief(result.value)}"


def _handler(service: type[Service], name: str) -> Callable[..., Awaitable[object]]:
    fn = getattr(service, name, None)
    handlers = service._trioscope_handlers
    if fn is None or fn not in handlers:
        known = ", ".join(sorted(handlers.values())) or "none"
        raise TypeError(f"{service.__qualname__}.{name} is not a handler (its handlers: {known})")
    handler: Callable[..., Awaitable[object]] = fn
    return handler


def _check_strategy(where: str, value: object) -> SearchStrategy[Any]:
    if not isinstance(value, SearchStrategy):
        raise TypeError(f"{where} must be a Hypothesis strategy, got {value!r}")
    return value


def operations(
    service: type[Service],
    /,
    **handlers: Sequence[SearchStrategy[Any]] | Mapping[str, SearchStrategy[Any]],
) -> SearchStrategy[Operation]:
    """A Hypothesis strategy of `Operation` values: calls of *service*'s handlers.

    Each keyword names a handler and gives the strategies of its arguments: a
    tuple (or list) of strategies for positional arguments, or a mapping of
    parameter names to strategies for keyword arguments; ``()`` for a handler
    that takes none::

        operations(KV, put=(keys, values), get=(keys,), size=())
        operations(KV, put={"key": keys, "value": values})

    Operations shrink towards the first handler given, then towards simpler
    arguments.

    Raises:
        TypeError: *service* is not a `trioscope.Service` subclass, no handler
            given, a name that is not a handler of *service*, arguments that are
            not strategies, or argument strategies that do not fit the handler's
            signature.
    """
    checked: object = service  # callers without type checking can pass anything
    if not (isinstance(checked, type) and issubclass(checked, Service)):
        raise TypeError(f"operations() needs a trioscope.Service subclass, got {service!r}")
    if not handlers:
        raise TypeError(
            f"operations({service.__qualname__}) needs at least one handler: "
            "handler_name=(argument strategies...)"
        )
    choices: list[SearchStrategy[Operation]] = []
    for name, given in handlers.items():
        fn = _handler(service, name)
        where = f"operations({service.__qualname__}, {name}=...)"
        if isinstance(given, Mapping):
            keywords = {
                str(key): _check_strategy(f"{where}[{key!r}]", value)
                for key, value in given.items()
            }
            _check_binds(where, fn, (), keywords)
            choices.append(
                st.fixed_dictionaries(keywords).map(
                    lambda kwargs, fn=fn: Operation(fn, (), kwargs)  # type: ignore[misc]
                )
            )
        elif isinstance(given, (tuple, list)):
            positional = [_check_strategy(f"{where}[{i}]", v) for i, v in enumerate(given)]
            _check_binds(where, fn, tuple(range(len(positional))), {})
            choices.append(
                st.tuples(*positional).map(
                    lambda args, fn=fn: Operation(fn, args)  # type: ignore[misc]
                )
            )
        else:
            raise TypeError(
                f"{where}: give a tuple of strategies (positional arguments) or a dict "
                f"of strategies (keyword arguments), got {given!r}"
            )
    return st.one_of(choices)


def _check_binds(
    where: str, fn: Callable[..., object], args: tuple[object, ...], kwargs: Mapping[str, object]
) -> None:
    try:
        inspect.signature(fn).bind(None, *args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{where}: the arguments do not fit {fn.__qualname__}: {exc}") from exc


def operation_sequences(
    service: type[Service],
    /,
    *,
    min_size: int = 0,
    max_size: int = 20,
    **handlers: Sequence[SearchStrategy[Any]] | Mapping[str, SearchStrategy[Any]],
) -> SearchStrategy[list[Operation]]:
    """Lists of *min_size* to *max_size* `operations` (same *handlers* arguments).

    They shrink towards shorter lists of simpler operations.

    Raises:
        TypeError, ValueError: as `operations`, or sizes Hypothesis refuses.
    """
    return st.lists(operations(service, **handlers), min_size=min_size, max_size=max_size)


async def _perform(target: str | ServiceRef[Any], op: Operation) -> OperationResult:
    try:
        if isinstance(target, str):
            value = await _call_by_name(target, op.handler, *op.args, **op.kwargs)
        else:
            value = await target.call(op.handler, *op.args, **op.kwargs)
    except Exception as exc:
        return OperationResult(op, None, exc)
    return OperationResult(op, value)


def _check_target(target: object) -> None:
    if not isinstance(target, (str, ServiceRef)):
        raise TypeError(
            f"target must be a service name (str) or a trioscope.ServiceRef, got {target!r}"
        )


async def apply_operations(
    target: str | ServiceRef[Any], ops: Iterable[Operation]
) -> list[OperationResult]:
    """Call each operation in order and return what each gave.

    *target* is a service name (each call goes through `trioscope.call`: it
    waits for the name and rides through restarts) or a `trioscope.ServiceRef`
    (one incarnation). An `Exception` the caller gets is recorded in its
    `OperationResult` and the next operation runs; anything else (a
    `trio.Cancelled`) propagates.

    Raises:
        TypeError: *target* is neither a name nor a ref.
    """
    _check_target(target)
    return [await _perform(target, op) for op in ops]


def _model_result(model: object, op: Operation) -> OperationResult:
    method = getattr(model, op.name, None)
    if not callable(method):
        raise TypeError(
            f"the model {type(model).__qualname__} has no method {op.name!r} to answer {op!r}"
        )
    try:
        value = method(*op.args, **op.kwargs)
    except Exception as exc:
        return OperationResult(op, None, exc)
    if isinstance(value, Awaitable):
        close = getattr(value, "close", None)
        if close is not None:
            close()
        raise TypeError(
            f"the model's {type(model).__qualname__}.{op.name} returned an awaitable: "
            "a model is plain (synchronous) Python"
        )
    return OperationResult(op, value)


def _as_raised(error: Exception) -> BaseException:
    """What the handler raised: a crash's cause, else the error itself."""
    if isinstance(error, ServiceCrashedError) and error.__cause__ is not None:
        return error.__cause__
    return error


def _agree(got: OperationResult, expected: OperationResult) -> bool:
    if got.error is None and expected.error is None:
        return bool(got.value == expected.value)
    if got.error is None or expected.error is None:
        return False
    return type(_as_raised(got.error)) is type(expected.error)


async def check_against_model(
    target: str | ServiceRef[Any], ops: Iterable[Operation], model: object
) -> list[OperationResult]:
    """Run *ops* in order on the service and on *model*; fail at the first disagreement.

    *model* is plain Python with one method per handler, of the same name,
    taking the same arguments (``model.put(key, value)`` for ``KV.put``). It
    agrees with the service about an operation when both return equal values
    (``==``), or both raise exceptions of the same type: the model raises what
    the handler raises, so a `trioscope.Rejected` subclass is compared as
    itself and a crash (`trioscope.ServiceCrashedError`) by its ``__cause__``.
    A model that knows a crash loses the service's state resets itself as it
    raises. Calls go to *target* as in `apply_operations`.

    Returns:
        What the service did for each operation (all agreed).

    Raises:
        ModelMismatchError: an operation disagreed; it lists the operations run.
        TypeError: *target* is neither a name nor a ref; the model lacks a
            method for an operation, or its method returned an awaitable.
    """
    _check_target(target)
    done: list[OperationResult] = []
    for index, op in enumerate(ops, start=1):
        got = await _perform(target, op)
        expected = _model_result(model, op)
        if not _agree(got, expected):
            raise ModelMismatchError(index, got, expected, tuple(done))
        done.append(got)
    return done


# -- what the machine records -----------------------------------------------------------


@attrs.frozen
class RestartRecord:
    """One restart of a `ServiceStateMachine`'s service by its supervisor."""

    at_s: float
    """When the new incarnation was up (Trio's clock, seconds)."""
    incarnation: int
    """The new incarnation's number in this example: 0 is the first start, 1 the
    first restart, ..."""
    reason: str
    """How the incarnation before it ended (``"InjectedFault: ..."``, ``"normal"``)."""
    error: BaseException | None = attrs.field(default=None, eq=False, repr=False)
    """The exception it crashed with (``None`` for a normal exit)."""


@attrs.frozen
class TraceEvent:
    """One line of a `ServiceStateMachine`'s trace: what happened, when, to which incarnation."""

    at_s: float
    """Trio's clock, seconds."""
    incarnation: int
    """The number (in this example) of the latest incarnation started by then."""
    what: str
    """An operation (``"call KV.put('a', 1)"``), its outcome (``"-> None"``,
    ``"raised KeyError: 'a'"``), or a supervisor's or fault's event."""

    def __str__(self) -> str:
        return f"{self.at_s:g} #{self.incarnation} {self.what}"


class OperationTimeoutError(TrioscopeError, trio.TooSlowError):
    """An operation of a `ServiceStateMachine` did not finish within its timeout.

    Trio's clock autojumps while an operation runs, so an operation that can
    never finish (a deadlock, a hang with no timeout) reaches its timeout at
    once rather than hanging the test.
    """

    def __init__(self, what: str, timeout: float) -> None:
        self.what = what
        self.timeout = timeout
        super().__init__(
            f"{what} did not finish within {timeout:g} s of Trio's clock (it waits for "
            "something that never happens; raise the machine's operation_timeout if it "
            "needs longer)"
        )


# -- the Trio side ------------------------------------------------------------------------


@final
class _Request:
    __slots__ = ("args", "cancelled", "fn", "kwargs", "timeout_s", "what")

    def __init__(
        self,
        what: str,
        fn: Callable[..., Awaitable[object]] | None,
        args: tuple[object, ...] = (),
        kwargs: Mapping[str, object] | None = None,
        timeout_s: float = math.inf,
    ) -> None:
        self.what = what
        self.fn = fn
        self.args = args
        self.kwargs = kwargs or {}
        self.timeout_s = timeout_s
        self.cancelled = False  # set (in the Trio thread) to cancel it, run or not yet


_CLOSE: Final = _Request("close", None)


@final
@attrs.frozen
class _Reply:
    result: outcome.Outcome[object]


@final
@attrs.frozen
class _Ended:
    """The Trio run returned (``error is None``) or raised *error*."""

    error: BaseException | None


@final
class _Runner:
    """One example's Trio run, in a worker thread, driven one request at a time.

    The thread runs ``trio.run(self._main, clock=MockClock(...))``; requests
    come in through a memory channel (fed with ``TrioToken.run_sync_soon``),
    replies go out through a `queue.SimpleQueue`. Everything the machine reads
    is written by the Trio thread before it replies and read by the other
    thread after, while the Trio side is idle: no locks needed.
    """

    def __init__(self, machine: ServiceStateMachine, spec: ChildSpec[Any], name: str) -> None:
        self.machine = machine
        self.spec = spec
        self.name = name
        self.clock = trio.testing.MockClock(autojump_threshold=math.inf)
        self.replies: queue.SimpleQueue[_Reply | _Ended] = queue.SimpleQueue()
        self.token: trio.lowlevel.TrioToken | None = None
        self.send: trio.MemorySendChannel[_Request] | None = None
        self.stop = trio.Event()
        self.stack = AsyncExitStack()
        self.scope: TestScope | None = None
        self.supervisor: Supervisor | None = None
        self.gave_up: RestartIntensityExceededError | None = None
        self.faults: FaultRun | None = None
        self.fired_seen = 0
        self.op_scope: trio.CancelScope | None = None
        self.in_flight_request: _Request | None = None
        self.trace: list[TraceEvent] = []
        self.restarts: list[RestartRecord] = []
        self.incarnation = -1
        self.last_exit: BaseException | None = None
        self.in_flight = False
        self.ended: _Ended | None = None
        self.thread = threading.Thread(
            target=self._thread_main, name=f"trioscope machine {name!r}", daemon=True
        )

    # -- the machine's thread --

    def start(self) -> None:
        try:
            self.thread.start()
        except BaseException as exc:
            self.ended = _Ended(exc)  # no run to end
            raise
        item = self.replies.get()
        if isinstance(item, _Ended):
            self._finish(item)
            raise (
                item.error
                if item.error is not None
                else RuntimeError("the example's Trio run ended before the service started")
            )

    def request(self, request: _Request) -> object:
        if self.ended is not None:
            raise RuntimeError(
                f"{request.what}: the example's Trio run has ended (after teardown, or it failed)"
            )
        assert self.token is not None
        assert self.send is not None
        self.in_flight = True
        self.in_flight_request = request
        try:
            self.token.run_sync_soon(self.send.send_nowait, request)
        except trio.RunFinishedError:
            pass  # its end is on its way to the queue
        item = self.replies.get()
        self.in_flight = False
        if isinstance(item, _Ended):
            self._finish(item)
            if item.error is not None:
                raise item.error
            raise RuntimeError(f"the example's Trio run ended during {request.what}")
        return item.result.unwrap()

    def close(self) -> BaseException | None:
        """End the Trio run (stop the service, close the scope); its error, if any."""
        ended = self.ended
        if ended is not None:
            return ended.error
        assert self.token is not None  # set before the start's reply
        assert self.send is not None
        try:
            if self.in_flight:
                # A rule was interrupted while it waited (KeyboardInterrupt): cancel
                # its operation and take its reply, which may be the run's end.
                assert self.in_flight_request is not None
                self.token.run_sync_soon(self._cancel_operation, self.in_flight_request)
                item = self.replies.get()
                self.in_flight = False
                if isinstance(item, _Ended):
                    ended = self._finish(item)
            if ended is None:
                self.token.run_sync_soon(self.send.send_nowait, _CLOSE)
        except trio.RunFinishedError:
            pass  # its end is on its way to the queue
        while ended is None:
            item = self.replies.get()
            if isinstance(item, _Ended):
                ended = self._finish(item)
        return ended.error

    def _finish(self, ended: _Ended) -> _Ended:
        self.ended = ended
        self.thread.join()
        return ended

    # -- the Trio thread --

    def _thread_main(self) -> None:
        try:
            trio.run(self._main, clock=self.clock)
        except BaseException as exc:  # reported to the machine's thread, which raises it
            self.replies.put(_Ended(exc))
        else:
            self.replies.put(_Ended(None))

    def _cancel_operation(self, request: _Request) -> None:
        # Sticky: the request may not have started yet (its send and this
        # cancel can run in one batch of callbacks, before the driver does).
        request.cancelled = True
        if self.op_scope is not None:
            self.op_scope.cancel()

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        send, receive = trio.open_memory_channel[_Request](math.inf)
        self.send = send
        machine = type(self.machine)
        handler_id = f"trioscope.testing.ServiceStateMachine#{id(self)}"
        async with open_test_scope(
            f"{machine.__qualname__} (hypothesis example)", foundation=machine.foundation
        ) as scope:
            self.scope = scope
            with attached(handler_id, _EVENTS, self._on_event):
                # Unwrap policy: the nursery holds only the supervisor's task, whose
                # own errors (none expected: giving up is recorded) would come as a
                # group; an error of the body (a failed start, a cancellation from
                # the scope) is kept aside and raised bare once the nursery closed.
                body_error: BaseException | None = None
                async with trio.open_nursery() as nursery:
                    try:
                        self.clock.autojump_threshold = 0  # the service's init may take time
                        self.supervisor = await nursery.start(self._supervise)
                        await trio.testing.wait_all_tasks_blocked()
                        self.clock.autojump_threshold = math.inf
                        self.replies.put(_Reply(outcome.Value(None)))
                        async with self.stack:
                            await self._drive(receive)
                    except BaseException as exc:
                        body_error = exc
                    finally:
                        # Teardown (or a failure): let the service's shutdown budget run.
                        self.clock.autojump_threshold = 0
                        self.stop.set()
                if body_error is not None:
                    try:
                        raise body_error
                    finally:
                        del body_error

    async def _supervise(self, *, task_status: trio.TaskStatus[Supervisor]) -> None:
        machine = type(self.machine)
        try:
            async with open_supervisor(
                [self.spec],
                strategy=machine.strategy,
                max_restarts=machine.max_restarts,
                max_seconds=machine.max_seconds,
                backoff=machine.backoff,
                id=machine.__qualname__,
                # Backoff jitter, the same in every run of an example.
                rng=random.Random(0),
            ) as sup:
                task_status.started(sup)
                await self.stop.wait()
        except RestartIntensityExceededError as exc:
            # The supervisor gave up: the example goes on without it (the model
            # can see it in `gave_up`; calls by name now fail).
            self.gave_up = exc

    async def _drive(self, receive: trio.MemoryReceiveChannel[_Request]) -> None:
        async for request in receive:
            if request is _CLOSE:
                return
            self.replies.put(_Reply(await self._perform(request)))

    async def _perform(self, request: _Request) -> outcome.Outcome[object]:
        assert request.fn is not None
        self._log(request.what)
        # Time moves only while an operation runs: the clock autojumps to the
        # next deadline whenever every task is blocked (a timer, a call's
        # timeout, a backoff), and never while the run waits for the next rule.
        self.clock.autojump_threshold = 0
        try:
            with trio.move_on_after(request.timeout_s) as cancel_scope:
                self.op_scope = cancel_scope
                if request.cancelled:
                    cancel_scope.cancel()
                try:
                    result: outcome.Outcome[object] = outcome.Value(
                        await request.fn(*request.args, **request.kwargs)
                    )
                except Exception as exc:
                    result = outcome.Error(exc)
            self.op_scope = None
            if cancel_scope.cancelled_caught:
                if trio.current_time() >= cancel_scope.deadline:
                    result = outcome.Error(OperationTimeoutError(request.what, request.timeout_s))
                else:
                    result = outcome.Error(RuntimeError(f"{request.what} was interrupted"))
            # Quiescence: whatever the operation set off (a restart, a reply's
            # follow-up, a message a handler sent) runs to its next wait now, not during
            # the next rule; wait_all_tasks_blocked wins over the autojump, so
            # this moves no time.
            await trio.testing.wait_all_tasks_blocked()
        finally:
            self.clock.autojump_threshold = math.inf
        self._note_faults()
        if isinstance(result, outcome.Error):
            self._log(_describe_error(result.error))
        elif isinstance(result, outcome.Value) and isinstance(result.value, CrashOutcome):
            crash = result.value
            due = f" until {crash.restart_at:g}" if crash.restart_at is not None else ""
            self._log(f"-> {crash.action}{due}")
        elif isinstance(result, outcome.Value):
            self._log(f"-> {_brief(result.value)}")
        return result

    async def cast(
        self,
        fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
        kwargs: Mapping[str, object],
    ) -> None:
        await _cast_by_name(self.name, fn, *args, **kwargs)
        # Then wait until the incarnation that took it has finished its handler:
        # a private no-op message queued behind it is answered after that, or the
        # incarnation ends first (crashed at it, or stopping: its handler ends,
        # then the incarnation). Fault schedules do not count the no-op.
        core = self._latest_incarnation()
        if core is None:
            # No incarnation is registered or stopping: the one that took the cast
            # has ended, having run it or not.
            await trio.lowlevel.checkpoint()
            return
        try:
            await core.call(_Message(core, _after_cast, (), {}, trio.lowlevel.current_task()))
        except (ServiceUnavailableError, ServiceCrashedError):
            await core.ended().wait()

    def _latest_incarnation(self) -> _Incarnation | None:
        registry = _current_registry_or_none()
        value = registry.lookup(self.name) if registry is not None else None
        if isinstance(value, ServiceRef):
            return value._core
        # Stopping (its name already released, its handler may still run).
        assert self.supervisor is not None
        for info in self.supervisor.which_children():
            if info.id == self.spec.id and isinstance(info.value, ServiceRef):
                return info.value._core
        return None

    async def crash(self, error: BaseException | None) -> CrashOutcome:
        return await simulate_crash(self.name, error)

    def _log(self, what: str) -> None:
        self.trace.append(TraceEvent(trio.current_time(), max(self.incarnation, 0), what))

    def _note_faults(self) -> None:
        if self.faults is None:
            return
        fired = self.faults.fired
        for record in fired[self.fired_seen :]:
            self.trace.append(
                TraceEvent(
                    record.at_time,
                    max(self.incarnation, 0),
                    f"fault {record.fault!r} fired (fault incarnation {record.incarnation})",
                )
            )
        self.fired_seen = len(fired)

    def _on_event(
        self, event: tuple[str, ...], measurements: Measurements, metadata: Metadata
    ) -> None:
        # A telemetry handler: runs in the supervisor's task, must not raise.
        if metadata.get("supervisor") != type(self.machine).__qualname__:
            return
        if metadata.get("child") != self.spec.id:
            return
        if event == _CHILD_START:
            self.incarnation += 1
            if self.incarnation > 0:
                error = self.last_exit
                how = describe(error) if error is not None else "normal"
                self.restarts.append(
                    RestartRecord(trio.current_time(), self.incarnation, how, error)
                )
            self._log("started")
        elif event == _CHILD_EXIT:
            reason = metadata.get("reason")
            self.last_exit = reason if isinstance(reason, BaseException) else None
            exited = self.last_exit
            self._log(f"exited: {describe(exited)}" if exited is not None else "exited")
        elif event == _CHILD_BACKOFF:
            self._log(f"backoff until {measurements['restart_at']:g}")
        elif event == _GIVE_UP:
            self._log("supervisor gave up")


# -- the state machine ------------------------------------------------------------------

_RESERVED: Final = frozenset(
    {
        "apply",
        "call",
        "cast",
        "crash",
        "fired",
        "gave_up",
        "incarnation",
        "jump",
        "name",
        "now",
        "ref",
        "restarts",
        "run",
        "scope",
        "status",
        "supervisor",
        "take_restarts",
        "trace",
    }
)
"""What a `ServiceStateMachine` subclass may not define: the machine's own operations
and state, which its rules use (overriding `on_restart` and `teardown` is expected)."""


def _ending_the_run_on_error(init: Callable[..., None]) -> Callable[..., None]:
    """*init*, which ends the example's Trio run if it raises (see `ServiceStateMachine`).

    Hypothesis tears down only a machine its factory returned: a machine whose
    ``__init__`` raised after ``ServiceStateMachine.__init__`` had started the
    run would leave that run (a thread, a live service, a scope whose leak
    check never runs) behind, once per failing example and shrink.
    """

    @functools.wraps(init)  # the same signature (Hypothesis's digest of the machine)
    def __init__(self: ServiceStateMachine, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except BaseException as exc:
            self._abandon(exc)
            raise

    __init__._trioscope_ends_run = True  # type: ignore[attr-defined]
    return __init__


class ServiceStateMachine(RuleBasedStateMachine):
    """A Hypothesis state machine whose rules drive one service under a real supervisor.

    Subclass it, say which service to test and how it is supervised (class
    attributes), and write rules and invariants that drive the service and
    compare it with a plain-Python model kept on ``self``::

        class KVMachine(ServiceStateMachine):
            spec = KV.child_spec(name="kv")   # a named service's child spec
            max_restarts = 100                # supervisor settings (see below)

            def __init__(self) -> None:
                super().__init__()
                self.model: dict[str, int] = {}

            @rule(key=keys, value=st.integers())
            def put(self, key: str, value: int) -> None:
                self.call(KV.put, key, value)
                self.model[key] = value

    Run it as any Hypothesis state machine: ``TestKV = KVMachine.TestCase``, or
    ``run_state_machine_as_test(KVMachine, settings=...)`` from a synchronous
    test (not from an async one: a rule blocks its thread while the service
    works).

    **Each example** gets a Trio run of its own, in a worker thread:
    ``trio.run(..., clock=trio.testing.MockClock())`` with an `open_test_scope`
    (leak-checked; with the whole foundation if `foundation`), in which the
    service runs under a real `trioscope.open_supervisor` with `strategy`,
    `max_restarts`, `max_seconds` and `backoff` (jitter drawn from
    ``random.Random(0)``, the same in every example). `__init__` returns once
    the service is up (a subclass's ``__init__`` may use the operations below
    to set it up); `teardown` stops it, closes the scope and ends the run. If
    the subclass's ``__init__`` raises, Hypothesis gets no machine to tear
    down: the machine ends the run itself (stops the service, closes the
    scope) before the error propagates, with what leaked as a note on it.

    **A rule** acts through the machine's operations, each of which runs in the
    Trio run, inside the scope, and returns (or raises) once the run is idle
    again:

    - `call` (by name: what a caller gets, `trioscope.Rejected` subclasses,
      `trioscope.ServiceCrashedError` ...), `cast`, `apply` (an `Operation`);
    - `run` (any Trio code in the scope), `crash` (`simulate_crash`: the
      supervisor's `CrashOutcome`), `jump` (let seconds of Trio's clock pass);
    - read `ref`, `incarnation`, `restarts`, `status`, `now`, `gave_up`,
      `trace`, between them.

    Every restart of the service (a crash through `crash`, a handler that
    crashed, a fault) is reported once to `on_restart` and kept for
    `take_restarts`, so the model can learn that state was lost.

    **Fault schedules**: set `faults` to a strategy of
    `trioscope.testing.FaultSchedule` values (``fault_schedules(["kv"])``): the
    machine gets an initialize rule, ``inject_faults(schedule=...)``, run before
    any other rule (also before your own initialize rules, so the schedule
    counts the example's messages from the first), which applies the drawn
    schedule for the rest of the example; a failing example prints it, and it
    shrinks with the rest. What fired is in `fired` and in the trace; a crash
    fault's restart reaches `on_restart` like any other.

    **Determinism** (why the example replays, and so shrinks): a worker thread
    rather than Trio's guest mode, because a rule is synchronous code that
    must block until its operation is done, and a plain `trio.run` is exactly
    the Trio a service runs in production (guest mode would need a host loop
    pumped from inside each rule, with the same handoff problem). The
    handoff is strict: one request at a time, and the thread that runs the
    rules waits for each reply. While an operation runs, the mock clock
    autojumps (threshold 0): time moves only when every task is blocked, to
    the next deadline, as in any MockClock test. When the operation is done,
    the Trio side waits for `trio.testing.wait_all_tasks_blocked` (which wins
    over the autojump, so it moves no time): whatever the operation set off
    (a restart, a reply's follow-up) has run to its next wait (`cast`, whose
    handler could be blocked on a timer there, first waits for that handler
    to finish). Only then does the
    threshold go back to infinity and the reply go out. Between rules the Trio
    thread is therefore blocked in its I/O wait with every task blocked and
    the clock frozen: nothing runs and no time passes, however long Hypothesis
    takes. Trio's own scheduler is seeded per example (Trio registers its
    random source with Hypothesis), so the same example does the same thing
    at the same Trio times, which `trace` shows.

    **Failures**: an operation's exception is raised in the rule as the
    caller got it; a rule's own failure reaches Hypothesis unchanged.
    `teardown` always stops the service and ends the run (an operation can
    take at most `operation_timeout` seconds of Trio's clock, reached at once
    under autojump). If the scope leaked, `teardown` raises
    `trioscope.testing.LeakError`; if a rule had already failed, the leaks are
    added to that failure as a note instead. The Trio side cannot be
    preempted: an operation that never blocks (a busy loop) hangs the example,
    as it would hang any Trio program.

    Unlike OTP (whose supervisors, and so such tests, run on the wall clock),
    every time here is Trio's mock clock, so a test never waits for a real
    second and never races the scheduler.
    """

    spec: ClassVar[ChildSpec[Any]]
    """The service under test: a named service's child spec (``KV.child_spec(name="kv")``)."""
    strategy: ClassVar[Strategy] = Strategy.ONE_FOR_ONE
    """The supervisor's restart strategy."""
    max_restarts: ClassVar[int] = DEFAULT_MAX_RESTARTS
    """More restarts than this within `max_seconds` make the supervisor give up."""
    max_seconds: ClassVar[float] = DEFAULT_MAX_SECONDS
    """The intensity window, seconds of Trio's clock."""
    backoff: ClassVar[Backoff | None] = None
    """Delays before restarts, or ``None`` for immediate restarts."""
    foundation: ClassVar[bool] = False
    """Start the whole foundation (config, events, telemetry) in the example's scope."""
    faults: ClassVar[SearchStrategy[FaultSchedule] | None] = None
    """A strategy of fault schedules applied for the whole example, or ``None``."""
    operation_timeout: ClassVar[float] = DEFAULT_OPERATION_TIMEOUT_S
    """Seconds of Trio's clock an operation (other than `jump`) may take."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Its __init__ (its own, or a mixin's before ours) ends the run if it fails.
        if not getattr(cls.__init__, "_trioscope_ends_run", False):
            cls.__init__ = _ending_the_run_on_error(cls.__init__)  # type: ignore[method-assign]
        for name in _RESERVED:
            if name in cls.__dict__:
                raise TypeError(
                    f"{cls.__qualname__}.{name} shadows ServiceStateMachine.{name}, which "
                    f"rules use on self ({', '.join(sorted(_RESERVED))} are reserved): "
                    f"rename it (a rule could be {name}_service, for instance)"
                )
        if "faults" not in cls.__dict__:
            return  # inherited, with the parent's rule (if any)
        faults = cls.__dict__["faults"]
        if faults is None:
            if getattr(cls, "inject_faults", None) is not None:
                cls.inject_faults = None  # the parent's rule no longer applies
                cls._inject_faults_function = None
            return
        _check_strategy(f"{cls.__qualname__}.faults", faults)

        def inject_faults(self: ServiceStateMachine, schedule: FaultSchedule) -> None:
            self._inject_faults(schedule)

        inject_faults.__qualname__ = f"{cls.__qualname__}.inject_faults"
        cls.inject_faults = initialize(schedule=faults)(inject_faults)
        cls._inject_faults_function = inject_faults  # what Hypothesis's rule calls

    inject_faults: ClassVar[Callable[..., None] | None] = None
    _inject_faults_function: ClassVar[Callable[..., None] | None] = None

    def __init__(self) -> None:
        super().__init__()
        cls = type(self)
        spec = getattr(cls, "spec", None)
        if not isinstance(spec, ChildSpec):
            raise TypeError(
                f"{cls.__qualname__}.spec must be the child spec of the service to test "
                f"(spec = MyService.child_spec(name=...)), got {spec!r}"
            )
        name = _child_name(spec)
        if name is None:
            raise TypeError(
                f"{cls.__qualname__}.spec must start a named service (the machine calls "
                f"it by name): give child_spec a name=, got {spec!r}"
            )
        _check_seconds("operation_timeout", cls.operation_timeout, allow_inf=True)
        self._name = name
        # An exception being handled around the machine (Hypothesis's own): not a rule's.
        self._outer = sys.exc_info()[1]
        self._closed = False
        self._restarts_taken = 0
        self._restarts_told = 0
        self._run_first_initializer()
        self._runner = _Runner(self, spec, name)
        self._runner.start()

    def _run_first_initializer(self) -> None:
        # Hypothesis picks initialize rules in any order: hold back the others
        # until inject_faults has applied the schedule, so it counts every message.
        # (Hypothesis's private list; without it the schedule starts where drawn.)
        self._held_initializers: list[Any] = []
        pending = getattr(self, "_initialize_rules_to_run", None)
        inject = type(self)._inject_faults_function
        if inject is None or not isinstance(pending, list):
            return
        mine = [r for r in pending if getattr(r, "function", None) is inject]
        if mine:
            self._held_initializers = [r for r in pending if r not in mine]
            pending[:] = mine

    def _inject_faults(self, schedule: FaultSchedule) -> None:
        checked: object = schedule
        if not isinstance(checked, FaultSchedule):
            raise TypeError(
                f"{type(self).__qualname__}.faults must draw FaultSchedule values, got {schedule!r}"
            )
        runner = self._runner

        async def apply() -> None:
            runner.faults = await runner.stack.enter_async_context(schedule.apply())

        self._request(f"apply {schedule!r}", apply, ())
        pending = getattr(self, "_initialize_rules_to_run", None)
        if isinstance(pending, list):
            pending.extend(self._held_initializers)
        self._held_initializers = []

    # -- operations --

    def _request(
        self,
        what: str,
        fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
        kwargs: Mapping[str, object] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        if self._closed:
            raise RuntimeError(f"{what}: the machine has been torn down")
        timeout = self.operation_timeout if timeout_s is None else timeout_s
        try:
            return self._runner.request(_Request(what, fn, args, kwargs, timeout))
        finally:
            self._tell_restarts()

    def _tell_restarts(self) -> None:
        records = self._runner.restarts
        while self._restarts_told < len(records):
            record = records[self._restarts_told]
            self._restarts_told += 1
            self.on_restart(record)

    @overload
    def call(
        self,
        fn: Callable[Concatenate[S, P], Awaitable[Deferred[R]]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    def call(
        self, fn: Callable[Concatenate[S, P], Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    def call(
        self, fn: Callable[Concatenate[S, P], Awaitable[Any]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Any:
        """``await trioscope.call(name, fn, *args, **kwargs)`` in the example's scope.

        By name, as a client calls: through a restart (or a backoff, while
        Trio's clock autojumps) to the next incarnation, within the default
        call timeout.

        Returns:
            The handler's result.

        Raises:
            Whatever the caller gets: the handler's `trioscope.Rejected`
            subclass, `trioscope.ServiceCrashedError`, `trioscope.CallTimeoutError`,
            `trioscope.ServiceUnavailableError` ...
        """
        what = f"call {Operation(fn, args, kwargs)!r}"
        return self._request(what, _call_by_name, (self._name, fn, *args), kwargs)

    def cast(
        self,
        fn: Callable[Concatenate[S, P], Awaitable[object]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        """``await trioscope.cast(name, fn, *args, **kwargs)``, then wait until the service
        has handled it, so the next rule sees its effect.

        Handled: its handler has returned or raised (Trio's clock autojumps
        meanwhile, through the timers it waits on), or the incarnation that
        took it has ended without running it. Then, as after every operation,
        the run is idle again: a crash it caused has been acted on (a restart
        reported to `on_restart`), and whatever else it set off (a message it
        sent, a task it started) has run to its next wait.

        To learn when the handler is done, the machine queues a private no-op
        message behind the cast and waits for its reply (a cast reports
        nothing itself). Fault schedules do not count that message and no
        fault acts at it; but, being a message, it adds one to the
        incarnation's `trioscope.ServiceRef.statistics` ``handled`` count and
        emits the service's call telemetry events (handler ``"_after_cast"``).

        Raises:
            OperationTimeoutError: the handler did not finish within
                `operation_timeout` seconds of Trio's clock (a ``"hang"``
                fault at it, a wait that nothing ends); the no-op is withdrawn,
                and the handler goes on.
            ServiceUnavailableError: as `trioscope.cast`: no live service took
                the cast within the default call timeout.
        """
        what = f"cast {Operation(fn, args, kwargs)!r}"
        self._request(what, self._runner.cast, (fn, args, kwargs))

    def apply(self, op: Operation) -> Any:
        """`call` for an `Operation` (as drawn from `operations`)."""
        if not isinstance(op, Operation):
            raise TypeError(f"apply() takes an Operation, got {op!r}")
        return self._request(
            f"call {op!r}", _call_by_name, (self._name, op.handler, *op.args), op.kwargs
        )

    def run(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``await fn(*args, **kwargs)`` in the Trio run, inside the example's scope.

        For anything the other operations do not cover (a call through
        `ref`, a monitor, the supervisor's control calls, the foundation's
        clients). It runs in the machine's driver task: tasks it starts must
        end before it returns, or go in ``self.scope.start_soon`` (cancelled
        at teardown); anything else it leaves behind is a leak.

        Returns:
            What *fn* returned.

        Raises:
            What *fn* raised (an `Exception`); `OperationTimeoutError` after
            `operation_timeout` seconds of Trio's clock.
        """
        name = getattr(fn, "__qualname__", None) or repr(fn)
        shown = [*map(_brief, args), *(f"{k}={_brief(v)}" for k, v in kwargs.items())]
        what = f"run {name}({', '.join(shown)})"
        result: R = self._request(what, fn, args, kwargs)
        return result

    def crash(self, error: BaseException | None = None) -> CrashOutcome:
        """`simulate_crash` the service: it crashes at its next message, as if its handler
        raised *error* (default `SimulatedCrash`), and this returns once the real
        supervisor has acted (a restart is up, a backoff is decided, it gave up).

        The restart also reaches `on_restart` / `take_restarts`. Under `faults`,
        the crash's message is not one the schedule counts (`Fault.at`): no fault
        acts at it.

        Raises:
            What `simulate_crash` raises: `trioscope.ServiceUnavailableError`
            when no incarnation runs (in backoff, or after the supervisor gave up),
            `CrashNotReachedError`, `ServiceWaitTimeoutError` (a hang fault at
            that message).
        """
        return self._request("crash", self._runner.crash, (error,))  # type: ignore[no-any-return]

    def jump(self, seconds: float) -> None:
        """Let *seconds* of Trio's clock pass: timers, timeouts and backoffs due
        meanwhile fire in order, each at its own time (``trio.sleep`` under
        autojump), then the run goes idle at the new time.

        Raises:
            ValueError: *seconds* is negative, not finite, or NaN.
            TypeError: *seconds* is not a number.
        """
        _check_seconds("seconds", seconds, allow_inf=False)
        self._request(f"jump {seconds:g} s", trio.sleep, (seconds,), timeout_s=math.inf)

    # -- what the machine knows --

    @property
    def name(self) -> str:
        """The service's name."""
        return self._name

    @property
    def scope(self) -> TestScope:
        """The example's `TestScope` (use it inside `run` only: the Trio side's objects
        are not thread-safe)."""
        assert self._runner.scope is not None
        return self._runner.scope

    @property
    def supervisor(self) -> Supervisor:
        """The service's supervisor (its control calls go through `run`)."""
        assert self._runner.supervisor is not None
        return self._runner.supervisor

    def _child(self) -> Any:
        for info in self.supervisor.which_children():
            if info.id == self._runner.spec.id:
                return info
        return None  # pragma: no cover - the machine never deletes its child

    @property
    def ref(self) -> ServiceRef[Any] | None:
        """The running incarnation's `trioscope.ServiceRef`, or ``None`` while none runs
        (in backoff, or after the supervisor gave up)."""
        info = self._child()
        value = info.value if info is not None and info.status == "running" else None
        return value if isinstance(value, ServiceRef) else None

    @property
    def status(self) -> str:
        """The child's `trioscope.ChildInfo` status (``"running"``, ``"backoff"``, ...)."""
        info = self._child()
        return str(info.status) if info is not None else "stopped"

    @property
    def restarts(self) -> int:
        """How many times the supervisor has restarted the service (`trioscope.ChildInfo.restarts`:
        restart attempts, as OTP counts them)."""
        info = self._child()
        return int(info.restarts) if info is not None else 0

    @property
    def incarnation(self) -> int:
        """The number of the latest incarnation started in this example: 0 at first,
        one more at each restart."""
        return self._runner.incarnation

    @property
    def now(self) -> float:
        """Trio's clock (seconds): it moves only while an operation runs."""
        return self._runner.clock.current_time()

    @property
    def gave_up(self) -> RestartIntensityExceededError | None:
        """The supervisor's error once it gave up (too many restarts), else ``None``."""
        return self._runner.gave_up

    @property
    def fired(self) -> tuple[FiredFault, ...]:
        """The faults of the schedule that fired so far (`FiredFault` values); ``()``
        without `faults`."""
        return self._runner.faults.fired if self._runner.faults is not None else ()

    @property
    def trace(self) -> tuple[TraceEvent, ...]:
        """Everything that happened in this example, in order: each operation and its
        outcome, starts, exits, backoffs, faults fired, at their Trio times. The same
        example gives the same trace."""
        return tuple(self._runner.trace)

    def take_restarts(self) -> list[RestartRecord]:
        """The restarts since the last call (oldest first), each reported once."""
        records = self._runner.restarts[self._restarts_taken :]
        self._restarts_taken = len(self._runner.restarts)
        return records

    def on_restart(self, record: RestartRecord) -> None:
        """Called once per restart of the service, at the end of the operation during
        which it happened (before that operation returns or raises). Override it to
        update the model (``self.model.clear()`` for a service that loses its state);
        does nothing by default."""

    # -- the end --

    def _abandon(self, error: BaseException) -> None:
        """``__init__`` raised *error*: end the run it may have started (see
        `_ending_the_run_on_error`); what the scope found is a note on *error*."""
        runner: _Runner | None = self.__dict__.get("_runner")
        if runner is None or self.__dict__.get("_closed", True):
            return  # failed before the run started (or torn down already)
        self._closed = True
        ended = runner.close()
        if ended is not None and ended is not error and isinstance(error, Exception):
            _add_note(error, f"when the example's scope closed: {describe(ended)}")

    def teardown(self) -> None:
        """Stop the service, close the scope (leak check) and end the Trio run.

        Subclasses that override it call ``super().teardown()``.

        Raises:
            LeakError: the scope leaked, and no rule had failed (else the leaks
                are a note on that failure, which propagates unchanged).
            Exception: whatever else ended the Trio run with an error.
        """
        if self._closed:
            return
        self._closed = True
        propagating = sys.exc_info()[1]
        failing = propagating is not None and propagating is not self._outer
        error = self._runner.close()
        if error is None or error is propagating:
            return  # (a rule got the run's end as its own error already)
        if failing:
            if isinstance(propagating, Exception):
                _add_note(propagating, f"when the example's scope closed: {describe(error)}")
            return
        raise error
