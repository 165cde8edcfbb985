"""Services: GenServer-style tasks that own their state and take one message at a time.

::

    import trio, trioscope

    class Counter(trioscope.Service):
        def __init__(self, start: int = 0) -> None:
            self.value = start

        async def incr(self, by: int = 1) -> int:
            self.value += by
            return self.value

    async def main() -> None:
        async with trioscope.open_registry(), trio.open_nursery() as nursery:
            ref = await nursery.start(Counter.child_spec(start=10, name="counter").start)
            assert await ref.call(Counter.incr, by=2) == 12
            assert await trioscope.call("counter", Counter.incr) == 13
            nursery.cancel_scope.cancel()

    trio.run(main)

Every public ``async def`` method of a `Service` subclass is a handler. The
mailbox is a bounded `trio` memory channel: `ServiceRef.call` and
`ServiceRef.cast` wait for space (backpressure) and nothing is dropped silently.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import sys
import types
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Literal, TypeVar, final, overload

import attrs
import outcome
import trio
from trio.lowlevel import (
    Abort,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from ._child_spec import (
    DEFAULT_SHUTDOWN_S,
    Backoff,
    ChildSpec,
    Restart,
    _check_seconds,
    _ChildHandle,
    _is_int,
    _Startable,
)
from ._correlation import Origin, _correlation
from ._errors import (
    CallingSelfError,
    CallTimeoutError,
    MailboxFullError,
    Rejected,
    ServiceCrashedError,
    ServiceUnavailableError,
    _NotRunError,
)
from ._exits import describe, read_exit
from ._logging import wants
from ._mailbox import _Mailbox
from ._registry import (
    Registry,
    _current,
    _current_registry_or_none,
    _faults,
    _no_registry_error,
    _telemetry,
)
from ._telemetry import EventName, _dispatch, _table

if sys.version_info >= (3, 11):
    from typing import Concatenate, ParamSpec, TypeVarTuple, Unpack
else:  # pragma: no cover - exercised only on 3.10
    from typing import Concatenate

    from typing_extensions import ParamSpec, TypeVarTuple, Unpack

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from trio.lowlevel import Task

DEFAULT_MAILBOX_SIZE: Final = 1024
"""Messages a service's mailbox holds before senders wait."""
DEFAULT_CALL_TIMEOUT_S: Final = 5.0
"""Seconds a call waits for its reply before `CallTimeoutError`."""
DEGRADED_MAILBOX_FRACTION: Final = 0.9
"""A mailbox at least this full makes `ServiceRef.health` report ``"degraded"``."""

_LIFECYCLE: Final = frozenset({"init", "terminate", "health", "child_spec"})
# What a handler calls on ``self``: a subclass may not shadow them.
_CONTROLS: Final = frozenset({"stop", "defer", "start_soon", "send_after"})
# child_spec's own options: an __init__ parameter of that name takes init_kwargs=.
_OPTIONS: Final = (
    "name",
    "id",
    "restart",
    "shutdown",
    "mailbox_size",
    "significant",
    "backoff",
    "init_kwargs",
)
_log = logging.getLogger("trioscope.service")
_CALL_EVENTS: Final[tuple[EventName, EventName, EventName]] = (
    ("trioscope", "call", "start"),
    ("trioscope", "call", "stop"),
    ("trioscope", "call", "exception"),
)
_CAST_EVENTS: Final[tuple[EventName, EventName, EventName]] = (
    ("trioscope", "cast", "start"),
    ("trioscope", "cast", "stop"),
    ("trioscope", "cast", "exception"),
)
_STOP: Final = 1
_EXCEPTION: Final = 2
_incarnations = itertools.count(1)

S = TypeVar("S", bound="Service")
P = ParamSpec("P")
R = TypeVar("R")
PosArgsT = TypeVarTuple("PosArgsT")

HealthStatus = Literal["healthy", "degraded", "unavailable"]


@attrs.frozen
class Health:
    """A service's health, as `ServiceRef.health` reports it."""

    status: HealthStatus
    """``"healthy"``, ``"degraded"`` (mailbox nearly full, or the hook says so) or
    ``"unavailable"`` (not running, or it crashed answering)."""
    name: str | None
    """The registered name, if any."""
    mailbox_depth: int
    """Messages waiting in the mailbox."""
    mailbox_capacity: int
    """The mailbox's bound."""
    restarts: int
    """How many times its supervisor had restarted this child before this incarnation."""
    detail: Mapping[str, object] = attrs.field(factory=dict)
    """What the service's own `Service.health` hook returned."""


@attrs.frozen
class ServiceStatistics:
    """A snapshot of one incarnation's counters (like Trio's channel statistics)."""

    mailbox_depth: int
    """Messages waiting in the mailbox (a withdrawn call leaves it at once)."""
    mailbox_capacity: int
    """The mailbox's bound."""
    handled: int
    """Messages whose handler has run to completion (or raised)."""
    in_flight: int
    """Calls sent and not yet answered, withdrawn or failed."""
    started_at: float | None
    """`trio.current_time` when it became ready; ``None`` while starting."""


class Service:
    """Base class for services. Subclass it and write ``async def`` handlers.

    A fresh instance is made with the spec's arguments on every (re)start.
    Optional hooks: `init` (runs before the service is ready), `terminate`
    (runs on orderly stop and on crash), `health` (extra detail for health checks).
    """

    _trioscope_handlers: ClassVar[dict[Callable[..., Any], str]] = {}
    _trioscope_signature: ClassVar[inspect.Signature | None] = None
    _trioscope_clashes: ClassVar[tuple[str, ...]] = ()
    # The running incarnation; set on the instance while it runs, so that a
    # handler's ``self.stop()`` and the like find it (no cycle once it ends).
    _trioscope_core: _Incarnation | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[Callable[..., Any], str] = {}
        for name in dir(cls):
            if name.startswith("_"):
                continue
            attr = inspect.getattr_static(cls, name)
            if name in _CONTROLS and attr is not inspect.getattr_static(Service, name):
                raise TypeError(
                    f"{cls.__qualname__}.{name} shadows Service.{name}, which handlers "
                    f"call on self ({', '.join(sorted(_CONTROLS))} are reserved): "
                    "rename it"
                )
            if name in _LIFECYCLE:
                if isinstance(attr, types.FunctionType) and not inspect.iscoroutinefunction(attr):
                    raise TypeError(f"{cls.__qualname__}.{name} must be an async def method")
                continue
            if isinstance(attr, types.FunctionType) and inspect.iscoroutinefunction(attr):
                handlers[attr] = name
        cls._trioscope_handlers = handlers

    async def init(self) -> None:
        """Runs before the service is ready; raising here fails the start."""

    async def terminate(self, reason: BaseException | None) -> None:
        """Runs on orderly stop (``reason`` is ``None``) and on crash (the exception).

        It is not run when the service is cancelled outright (a brutal kill).
        An error it raises is logged (ERROR, logger ``trioscope.service``); after a
        crash the service still exits with the crash, which stays its reason.
        """

    async def health(self) -> Mapping[str, object]:
        """Extra detail for `ServiceRef.health`. Include ``"status": "degraded"`` to say so."""
        return {}

    def stop(self, reason: BaseException | None = None) -> None:
        """Stop this service once the current handler has returned (its reply delivered).

        Without *reason* it is a normal exit: the service task returns, so a
        ``TRANSIENT`` child is not restarted and a significant child counts as
        ended (monitors see ``"normal"``). With *reason* (an exception) it is an
        abnormal exit: ``terminate(reason)`` runs, then the task raises *reason*,
        a crash for its supervisor. Either way the service takes no more
        messages: those still queued fail with `ServiceUnavailableError` (they
        never ran, so calls by name retry them on the next incarnation), and its
        name is released at once. Call it from a handler or an owned task;
        later calls, once it is stopping, change nothing.

        Raises:
            RuntimeError: the service is not running (still in ``init``, or ended).
            TypeError: *reason* is neither ``None`` nor an exception.
        """
        _core_of(self, "stop()").stop_self(reason)

    def defer(self) -> Deferred[Any]:
        """Answer the current call later (gen_server's ``noreply``, then ``reply/2``).

        Keep the returned `Deferred` and return it from the handler, annotated
        ``-> trioscope.Deferred[R]`` (the caller's ``await ref.call(...)`` is then
        typed ``R``). The service goes on taking other messages; the caller waits
        until `Deferred.reply` or `Deferred.fail`, within its own timeout. If
        the incarnation ends first, the caller gets `ServiceUnavailableError`.
        A handler that returns anything else answers with that, as usual.

        Raises:
            RuntimeError: not called from a handler (an owned task has no call
                to defer; ``init`` and ``terminate`` neither).
        """
        core = _core_of(self, "defer()")
        msg = core.current
        if msg is None:
            raise RuntimeError(
                f"{type(self).__qualname__}.defer() was called outside a handler: it defers "
                "the reply of the call the handler is running"
            )
        return Deferred(msg)

    def start_soon(
        self, fn: Callable[[Unpack[PosArgsT]], Awaitable[object]], *args: Unpack[PosArgsT]
    ) -> None:
        """Run ``await fn(*args)`` as a task owned by this incarnation.

        The task is cancelled when the incarnation stops (before ``terminate``
        runs). If it raises, the service crashes as if a handler had: the
        caller of the handler then running gets `ServiceCrashedError` (the
        task's error as ``__cause__``), ``terminate`` runs with the error, and
        its supervisor applies the restart type. Started from ``init`` or a
        handler, the task begins once that returns (the service opens the
        nursery for its tasks only then, and only if it has any); from an owned
        task, at once.

        Raises:
            RuntimeError: the service is stopping or has ended.
        """
        _core_of(self, "start_soon()", in_init=True).start_owned(fn, args)

    def send_after(
        self: S,
        seconds: float,
        fn: Callable[Concatenate[S, P], Awaitable[object]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Timer:
        """Cast handler *fn* to this service after *seconds* (OTP's ``send_after``).

        The delay runs in a task owned by the incarnation (see `start_soon`), so
        a restart forgets it. `Timer.cancel` withdraws it before it fires. The
        message waits for mailbox space like `ServiceRef.cast`; if the service is
        stopping by then, it is dropped with the incarnation.

        Raises:
            TypeError: *fn* is not a handler of this service's class.
            ValueError: *seconds* is negative, infinite or NaN.
            RuntimeError: the service is stopping or has ended.
        """
        core = _core_of(self, "send_after()", in_init=True)
        core.handler_name(fn)
        _check_seconds("send_after: seconds", seconds, allow_inf=False)
        timer = Timer()
        core.start_owned(_fire, (core, timer, seconds, _Message(core, fn, args, kwargs, None)))
        return timer

    @classmethod
    def child_spec(
        cls: type[S],
        *args: object,
        name: str | None = None,
        id: str | None = None,
        restart: Restart = Restart.PERMANENT,
        shutdown: float = DEFAULT_SHUTDOWN_S,
        mailbox_size: int = DEFAULT_MAILBOX_SIZE,
        significant: bool = False,
        backoff: Backoff | None = None,
        init_kwargs: Mapping[str, object] | None = None,
        **kwargs: object,
    ) -> ChildSpec[ServiceRef[S]]:
        """A `ChildSpec` that runs this service; other arguments go to ``__init__``.

        Args:
            name: Register the service under this name in the current registry.
            id: The child id in its supervisor (default: the name, else the class's
                ``__qualname__``; give two unnamed children of one class an id each).
            mailbox_size: The mailbox's bound (an integer >= 1).
            init_kwargs: More keyword arguments for ``__init__``, for parameters
                named like these options. Required (``{}`` if they keep their
                defaults) when ``__init__`` has a parameter of such a name, so
                ``shutdown=0.5`` can never silently mean the other one.

        Raises:
            TypeError: a non-``str`` name, a non-integer mailbox size,
                arguments that ``__init__`` does not accept, or an ``__init__``
                parameter named like an option without ``init_kwargs``.
            ValueError: an empty name, a mailbox size below 1.
        """
        if name is not None and not isinstance(name, str):
            raise TypeError(
                f"{cls.__qualname__}.child_spec: name must be a str, "
                f"got {type(name).__name__}: {name!r}"
            )
        if name == "":
            raise ValueError(f"{cls.__qualname__}.child_spec: name must not be empty")
        if not _is_int(mailbox_size):
            raise TypeError(
                f"{cls.__qualname__}.child_spec: mailbox_size must be an integer >= 1, "
                f"got {type(mailbox_size).__name__}: {mailbox_size!r}"
            )
        if mailbox_size < 1:
            raise ValueError(
                f"{cls.__qualname__}.child_spec: mailbox_size must be an integer >= 1 "
                f"(mailboxes are always bounded), got {mailbox_size}"
            )
        signature = cls.__dict__.get("_trioscope_signature")
        if signature is None:
            # inspect.signature costs tens of microseconds: once per class, and
            # so does finding the __init__ parameters named like our options.
            signature = inspect.signature(cls)
            cls._trioscope_signature = signature
            cls._trioscope_clashes = tuple(
                p
                for p in _OPTIONS
                if p in signature.parameters
                and signature.parameters[p].kind
                in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            )
        if init_kwargs is None:
            clashes = cls._trioscope_clashes
            if clashes:
                listed = " and ".join(map(repr, clashes))
                given = ", ".join(f"{p!r}: ..." for p in clashes)
                raise TypeError(
                    f"{cls.__qualname__}.child_spec: {cls.__qualname__}.__init__ takes "
                    f"{listed}, which child_spec reserves for its own options; pass "
                    f"__init__'s values as init_kwargs={{{given}}} (init_kwargs={{}} keeps "
                    f"{'its default' if len(clashes) == 1 else 'their defaults'})"
                )
        elif init_kwargs:
            for key in init_kwargs:
                if key in kwargs:
                    raise TypeError(
                        f"{cls.__qualname__}.child_spec: {key!r} is given both as a "
                        "keyword and in init_kwargs"
                    )
            kwargs = {**kwargs, **init_kwargs}
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"{cls.__qualname__}.child_spec: bad arguments for __init__: {exc}"
            ) from exc
        _check_seconds("shutdown", shutdown, allow_inf=True)
        if id is None:
            # Stable, as Elixir uses the module: the name, else the class.
            id = name if name is not None else cls.__qualname__
        starter = _ServiceStart(cls, args, kwargs, name, mailbox_size, shutdown)
        return ChildSpec(
            id,
            starter,
            restart=restart,
            shutdown=shutdown,
            significant=significant,
            backoff=backoff,
        )


# -- messages -------------------------------------------------------------

_QUEUED: Final = 0
_RUNNING: Final = 1
_WITHDRAWN: Final = 2  # the caller left while it was queued: never run
_ABANDONED: Final = 3  # the caller left while it ran: the reply is discarded
_DONE: Final = 4


class _Message:
    __slots__ = ("args", "core", "correlation", "fn", "kwargs", "parked", "result", "state", "task")

    def __init__(
        self,
        core: _Incarnation,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        task: Task | None,
    ) -> None:
        self.core = core
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.task = task  # None for a cast
        self.state = _QUEUED
        self.parked = False
        self.result: outcome.Outcome[Any] | None = None
        self.correlation = _correlation.get()  # carried to the handler's execution

    def abort(self, _raise_cancel: object) -> Abort:
        # The caller is cancelled while parked: withdraw a queued message, abandon
        # a running one (its reply is discarded). A withdrawn message leaves the
        # mailbox at once, so it holds no capacity; one already handed to the
        # waiting service task is not in the queue, and the service skips it.
        if self.state == _QUEUED:
            self.state = _WITHDRAWN
            core = self.core
            core.in_flight -= 1
            core.mailbox.withdraw(self)
        elif self.state == _RUNNING:
            self.state = _ABANDONED
        self.parked = False
        return Abort.SUCCEEDED

    def describe(self) -> str:
        parts = [repr(a) for a in self.args]
        parts += [f"{k}={v!r}" for k, v in self.kwargs.items()]
        text = f"{getattr(self.fn, '__name__', self.fn)}({', '.join(parts)})"
        return text if len(text) <= 200 else text[:197] + "..."


def _reply(msg: _Message, result: outcome.Outcome[Any]) -> None:
    if msg.task is None:
        return
    core = msg.core
    if msg.state == _ABANDONED:
        core.in_flight -= 1
        msg.state = _DONE
        return
    if msg.state in (_QUEUED, _RUNNING):
        core.in_flight -= 1
    msg.state = _DONE
    if msg.parked:
        msg.parked = False
        reschedule(msg.task, result)
    else:
        # The caller has not parked yet (it was waiting in `send` when its
        # message ran); it picks the result up when it resumes.
        msg.result = result


# -- one incarnation --------------------------------------------------------

_STARTING: Final = "starting"
_RUNNING_S: Final = "running"
_STOPPING: Final = "stopping"
_ENDED: Final = "ended"


class _Incarnation:
    """Everything about one run of a service; `ServiceRef` points at one of these."""

    __slots__ = (
        "_ended_event",
        "clock",
        "cls",
        "context_registry",
        "current",
        "deferred",
        "handled",
        "handlers",
        "in_flight",
        "label",
        "mailbox",
        "name",
        "number",
        "origin",
        "owned",
        "reason",
        "registry",
        "restarts",
        "service",
        "started_at",
        "status",
        "stop_reason",
        "supervision",
        "t0",
        "t_meta",
        "task",
    )

    def __init__(
        self,
        service: Service,
        name: str | None,
        capacity: int,
        restarts: int,
        registry: Registry | None,
    ) -> None:
        self.service = service
        self.cls = type(service)
        self.handlers = self.cls._trioscope_handlers
        self.name = name
        self.number = next(_incarnations)
        self.label = repr(name) if name is not None else f"<{self.cls.__qualname__} #{self.number}>"
        self.mailbox: _Mailbox[_Message] = _Mailbox(capacity)
        self.handled = 0
        self.in_flight = 0
        self.restarts = restarts
        self.registry = registry
        self.started_at: float | None = None
        self.status = _STARTING
        self.reason: str | BaseException | None = None
        self._ended_event: trio.Event | None = None
        self.task: Task | None = None  # the service's own task, once it runs
        self.current: _Message | None = None  # the message whose handler runs
        # Set by Service.stop: None (not asked), True (normal) or the reason.
        self.stop_reason: BaseException | bool | None = None
        self.owned: _Owned | None = None  # made by the first start_soon/send_after
        self.deferred: set[Deferred[Any]] | None = None  # unanswered deferred calls
        # Telemetry: the registry of the service's own context (its events are
        # executed there), and when the running handler began, if anyone listens.
        self.context_registry: Registry | None = None
        self.t0: float | None = None
        self.t_meta: dict[str, object] | None = None
        self.origin: Origin | None = None  # where its crash began, once it crashed
        # Who supervises it: (supervisor id, child id, restart, registry), or None.
        self.supervision: tuple[str, str, Restart, object] | None = None
        self.clock: Callable[[], float] | None = None  # Trio's clock, read once needed

    # -- callers' side --

    def handler_name(self, fn: Callable[..., Any]) -> str:
        name = self.handlers.get(fn)
        if name is None:
            raise _not_a_handler(self.cls, fn)
        return name

    def unavailable(
        self, kind: type[ServiceUnavailableError] = _NotRunError
    ) -> ServiceUnavailableError:
        """Why a message was not run; *kind* `_NotRunError` (the default) marks it for
        calls by name to retry, a plain `ServiceUnavailableError` is what users see."""
        if isinstance(self.reason, BaseException) and self.started_at is None:
            why = (
                f"its init() failed ({type(self.reason).__name__}: {self.reason}); "
                "the message was not run"
            )
        elif isinstance(self.reason, BaseException):
            why = f"it {_reason_text(self.reason)}; the message was not run"
        elif self.status == _STOPPING:
            why = "it is shutting down; the message was not run"
        else:
            why = (
                f"this incarnation has ended ({_reason_text(self.reason)}); the message was not run"
            )
        return kind(self.label, why)

    def calling_self(self, fn: Callable[..., Any]) -> CallingSelfError:
        current = self.current
        if current is not None:
            caller = getattr(current.fn, "__name__", repr(current.fn))
        else:
            caller = "init" if self.status == _STARTING else "terminate"
        return CallingSelfError(self.label, getattr(fn, "__name__", repr(fn)), caller)

    async def call(self, msg: _Message) -> Any:
        if msg.task is self.task:
            # Its own task could never take the message: fail now, not at the timeout
            # (after a checkpoint, as every waiting call on every path).
            await trio.lowlevel.checkpoint()
            raise self.calling_self(msg.fn)
        self.in_flight += 1
        try:
            self.mailbox.send_nowait(msg)
        except trio.WouldBlock:
            pass  # full: wait for space below, outside this clause (no WouldBlock context)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.in_flight -= 1
            await trio.lowlevel.checkpoint()  # Trio's rule: an async call always checkpoints
            raise self.unavailable() from None
        else:
            msg.parked = True
            return await wait_task_rescheduled(msg.abort)
        try:
            await self.mailbox.send(msg)  # backpressure: wait for mailbox space
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.in_flight -= 1
            raise self.unavailable() from None
        except BaseException:
            self.in_flight -= 1  # cancelled before it was enqueued: nothing sent
            raise
        if msg.state == _DONE:
            # It ran while this task was being let in: the result is waiting.
            assert msg.result is not None
            return msg.result.unwrap()
        msg.parked = True
        return await wait_task_rescheduled(msg.abort)

    # -- the service's side --

    def fail_queued(self) -> None:
        """Release the name and answer every message still queued: it never ran."""
        self.unregister()
        dropped_casts = 0
        while True:
            try:
                msg = self.mailbox.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                break
            if msg.task is None:
                dropped_casts += 1
            elif msg.state == _QUEUED:
                _reply(msg, outcome.Error(self.unavailable()))
        self.mailbox.close()
        if dropped_casts:
            _log.warning(
                "service %s stopped with %d queued cast(s) that were not run",
                self.label,
                dropped_casts,
                extra={"service": self.name, "dropped_casts": dropped_casts},
            )

    def start_owned(self, fn: Callable[..., Awaitable[object]], args: tuple[object, ...]) -> None:
        if self.status not in (_STARTING, _RUNNING_S):
            raise RuntimeError(
                f"service {self.label} is stopping: it starts no more tasks (its owned "
                "tasks are cancelled before terminate runs)"
            )
        owned = self.owned
        if owned is None:
            owned = self.owned = _Owned()
        if owned.nursery is not None:
            owned.nursery.start_soon(_run_owned, owned, fn, args)
        else:
            owned.pending.append((fn, args))

    def stop_self(self, reason: BaseException | None) -> None:
        if reason is not None and not isinstance(reason, BaseException):
            raise TypeError(
                f"stop(reason): reason must be an exception or None, got "
                f"{type(reason).__name__}: {reason!r}"
            )
        if self.status != _RUNNING_S:
            return  # already stopping: the first reason stands
        self.stop_reason = True if reason is None else reason
        self.request_stop()

    def request_stop(self) -> None:
        """Graceful stop: finish the current handler, run nothing more."""
        if self.status in (_STOPPING, _ENDED):
            return
        self.status = _STOPPING
        # Closing the receive side wakes the service if it waits for mail, and
        # makes new senders fail at once instead of queueing for nobody.
        self.fail_queued()

    def unregister(self) -> None:
        # As soon as it begins to stop (before terminate runs): whoever looks the
        # name up, or waits for it, sees only the next incarnation.
        registry, name = self.registry, self.name
        if registry is not None and name is not None:
            held = registry._entries.get(name)
            if isinstance(held, ServiceRef) and held._core is self:
                registry._unregister(name, held)

    def ended(self) -> trio.Event:
        if self._ended_event is None:
            self._ended_event = trio.Event()
            if self.status == _ENDED:
                self._ended_event.set()
        return self._ended_event

    def keep_deferred(self, msg: _Message, deferred: Deferred[Any]) -> None:
        """The handler of *msg* returned *deferred*: answer it later."""
        if deferred._msg is not msg:
            _reply(
                msg,
                outcome.Error(
                    TypeError(
                        f"handler {getattr(msg.fn, '__name__', msg.fn)}() of service {self.label} "
                        "returned a Deferred that is not its own call's (return the one "
                        "self.defer() gave this call)"
                    )
                ),
            )
            return
        if deferred._answered or msg.task is None:
            return  # answered already, or a cast: nobody waits
        if self.deferred is None:
            self.deferred = set()
        self.deferred.add(deferred)

    def fail_deferred(self) -> None:
        """The incarnation ends: callers still waiting for a deferred reply never get one."""
        pending, self.deferred = self.deferred, None
        for deferred in pending or ():
            if not deferred._answered:
                deferred._answered = True
                error = ServiceUnavailableError(
                    self.label, "it ended before answering this deferred call"
                )
                _reply(deferred._msg, outcome.Error(error))

    def finish(self, reason: str | BaseException) -> None:
        self.fail_deferred()
        self.service._trioscope_core = None  # no cycle through a crash's traceback
        self.status = _ENDED
        self.reason = reason
        if self._ended_event is not None:
            self._ended_event.set()

    def bad_arguments(self, msg: _Message, exc: TypeError) -> None:
        """The arguments of *msg* do not bind to its handler: the sender's mistake."""
        name = getattr(msg.fn, "__name__", repr(msg.fn))
        if msg.task is None:
            _log.warning(
                "service %s got a cast with bad arguments for %s (it did not run): %s",
                self.label,
                msg.describe(),
                exc,
                extra={"service": self.name},
            )
            return
        error = TypeError(
            f"bad arguments for handler {name}() of service {self.label} (it did not run; "
            f"the service is untouched): {exc}"
        )
        error.__cause__ = exc
        _reply(msg, outcome.Error(error))

    def rejected(self, msg: _Message, exc: Rejected) -> None:
        self.handled += 1
        if msg.task is None:
            _log.warning(
                "service %s rejected cast %s: %s",
                self.label,
                msg.describe(),
                exc,
                extra={"service": self.name},
            )
        _reply(msg, outcome.Error(exc))

    # Exits, read by trioscope._exits' policy (everything but Cancelled is the
    # reason). Methods rather than code in the service loop: their locals would
    # otherwise widen the frame that every idle service keeps alive.

    def start_failed(self, exc: BaseException, reason: str | BaseException) -> str | BaseException:
        """``init`` raised *exc*: fail what was queued meanwhile; return the reason."""
        error = read_exit(exc).error
        if error is not None:
            reason = self.reason = error  # before fail_queued: callers are told why
        self.status = _STOPPING
        self.fail_queued()
        return reason

    def loop_failed(self, exc: BaseException, reason: str | BaseException) -> str | BaseException:
        """The service loop raised *exc*: fail the queue; return the reason.

        A crash (no Cancelled, no interrupt in it) sets ``self.reason``. A kill or
        an interrupt does not; an error that came with it (a task failing as it
        was cancelled) is still the reason monitors see.
        """
        self.status = _STOPPING
        ended = read_exit(exc)
        if ended.error is not None:
            reason = ended.error
            if ended.cancelled is None and ended.interrupt is None:
                self.reason = reason
        self.note_owned_origin()
        self.fail_queued()
        return reason

    def terminate_raised(
        self, exc: BaseException, reason: str | BaseException
    ) -> str | BaseException:
        """``terminate`` raised *exc* on an orderly stop: log an error; return the reason."""
        error = read_exit(exc).error
        if error is None:
            return reason  # cut off at the shutdown budget, or interrupted
        self.terminate_failed(error, None)
        return error

    def handler_failed(self, msg: _Message, exc: BaseException) -> None:
        """Answer the caller of a handler that raised *exc* (not `Rejected`)."""
        self.current = None
        ended = read_exit(exc)
        if ended.cancelled is None and ended.interrupt is None:
            # Everything but Cancelled and interrupts is a crash: any
            # BaseException (pytest's Failed), or a group of such from a nursery.
            assert ended.error is not None
            self.crashed(msg, ended.error)
        elif ended.interrupt is None and self.owned is not None and self.owned.crash is not None:
            # Cancelled because an owned task crashed: that is this call's crash,
            # though it began in the task (for the request that started it).
            self.note_owned_origin()
            self.crashed(msg, self.owned.crash, kind="owned_crash")
        else:
            self.killed(msg)

    def crashed(self, msg: _Message, exc: BaseException, kind: str = "crash") -> None:
        self.handled += 1
        fn = msg.fn
        handler = self.handlers.get(fn) or getattr(fn, "__name__", None) or repr(fn)
        if self.origin is None:
            self.origin = (self.label, handler, msg.correlation)
        crashed = ServiceCrashedError(self.label, handler)
        crashed.__cause__ = exc
        crashed._origin = self.origin
        _reply(msg, outcome.Error(crashed))
        if self.t0 is not None:
            self.handler_ended(msg, _EXCEPTION, {"kind": kind, "reason": exc})
        self.crash_report(msg, exc)

    def note_owned_origin(self) -> None:
        """An owned task crashed: its crash began there, for the request that started it."""
        owned = self.owned
        if self.origin is None and owned is not None and owned.origin is not None:
            self.origin = (self.label, *owned.origin)

    def killed(self, msg: _Message) -> None:
        # Cancelled (killed) or interrupted: the handler did not finish.
        error = ServiceUnavailableError(self.label, "it was killed while handling this call")
        _reply(msg, outcome.Error(error))
        if self.t0 is not None:
            self.handler_ended(msg, _EXCEPTION, {"kind": "killed", "reason": None})

    # Telemetry around handlers: called only while some handler is attached
    # somewhere (`_telemetry.attached`), so the loop pays one check otherwise.

    def handler_began(self, msg: _Message) -> None:
        """Execute *msg*'s start event; note the time if any event of its handler is wanted.

        The metadata is built once per message and shared by its start and
        stop events (handlers may keep it: nothing changes it afterwards).
        """
        reg = self.context_registry
        if reg is None:
            return
        table = reg._tcache if reg._tversion == _telemetry.version else _table(reg)
        names = _CALL_EVENTS if msg.task is not None else _CAST_EVENTS
        start = table.get(names[0])
        if start is None and names[1] not in table and names[2] not in table:
            return
        if self.clock is None:
            self.clock = trio.lowlevel.current_clock().current_time
        now = self.t0 = self.clock()
        fn = msg.fn
        metadata = self.t_meta = {
            "service": self.label,
            "name": self.name,
            "handler": self.handlers.get(fn) or getattr(fn, "__name__", None) or repr(fn),
            "correlation_id": msg.correlation,
        }
        if start is not None:
            measurements = {"monotonic_time": now, "mailbox_depth": self.mailbox.depth()}
            _dispatch(start, names[0], measurements, metadata)

    def handler_ended(self, msg: _Message, which: int, extra: dict[str, object] | None) -> None:
        """Execute *msg*'s stop (or exception) event, with *extra* metadata if any."""
        t0 = self.t0
        metadata = self.t_meta
        assert t0 is not None
        assert metadata is not None
        assert self.context_registry is not None
        assert self.clock is not None
        self.t0 = self.t_meta = None
        reg = self.context_registry
        table = reg._tcache if reg._tversion == _telemetry.version else _table(reg)
        name = (_CALL_EVENTS if msg.task is not None else _CAST_EVENTS)[which]
        handlers = table.get(name)
        if handlers:
            now = self.clock()
            if extra is not None:
                metadata = {**metadata, **extra}
            measurements = {
                "duration": now - t0,
                "monotonic_time": now,
                "mailbox_depth": self.mailbox.depth(),
            }
            _dispatch(handlers, name, measurements, metadata)

    def terminate_failed(self, error: BaseException, crash: BaseException | None) -> None:
        """Log an error raised by ``terminate`` (after *crash*, or on an orderly stop)."""
        if crash is None:
            _log.error(
                "service %s: terminate() raised during an orderly stop",
                self.label,
                exc_info=error,
                extra={"service": self.name},
            )
        else:
            _log.error(
                "service %s: terminate() raised after a crash; the service exits with "
                "the crash (%s)",
                self.label,
                describe(crash),
                exc_info=error,
                extra={"service": self.name, "crash": crash},
            )

    def crash_report(self, msg: _Message, exc: BaseException) -> None:
        # Formatting the request is most of a crash report's cost: only when
        # a handler would do something with it (not for a NullHandler).
        if not wants(_log, logging.ERROR):
            return
        depth = self.mailbox.depth()
        request = msg.describe()
        _log.error(
            "service %s crashed in %s (mailbox depth %d, restarts %d)",
            self.label,
            request,
            depth,
            self.restarts,
            exc_info=exc,
            extra={
                "service": self.name,
                "handler": getattr(msg.fn, "__name__", repr(msg.fn)),
                "request": request,
                "mailbox_depth": depth,
                "restarts": self.restarts,
            },
        )


def _core_of(service: Service, what: str, *, in_init: bool = False) -> _Incarnation:
    core = service._trioscope_core
    if core is None or (core.status == _STARTING and not in_init):
        when = "during init()" if core is not None else "outside a running service"
        raise RuntimeError(
            f"{type(service).__qualname__}.{what} was called {when}: it is for handlers "
            "and owned tasks of a running service"
            + (" (to fail the start, raise from init())" if core is not None else "")
        )
    return core


def _public(exc: _NotRunError) -> ServiceUnavailableError:
    return ServiceUnavailableError(exc.service, exc.reason)


def _reason_text(reason: str | BaseException | None) -> str:
    if reason is None:
        return "not started"
    if isinstance(reason, BaseException):
        return f"crashed with {describe(reason)}"
    return reason


def _not_a_handler(cls: type[Service], fn: object) -> TypeError:
    fname = getattr(fn, "__qualname__", None) or repr(fn)
    name = getattr(fn, "__name__", "")
    if isinstance(fn, types.MethodType) and isinstance(fn.__self__, type):
        return TypeError(
            f"{fn.__self__.__qualname__}.{name} is a classmethod, not a handler: handlers "
            "are the service's public "
            f"async def (instance) methods "
            f"({', '.join(sorted(cls._trioscope_handlers.values())) or 'none'})"
        )
    if isinstance(fn, types.MethodType):
        return TypeError(
            f"pass the function, not a bound method: use {cls.__qualname__}.{name}, "
            f"not instance.{name}"
        )
    if not callable(fn):
        return TypeError(f"expected a handler of {cls.__qualname__}, got {fname}")
    if getattr(cls, name, None) is fn:
        if name.startswith("_") or name in _LIFECYCLE:
            return TypeError(
                f"{fname} is not a handler: private methods and the lifecycle hooks "
                f"(init, terminate, health) cannot be called through a ServiceRef"
            )
        if not inspect.iscoroutinefunction(fn):
            return TypeError(f"{fname} is not a handler: handlers must be `async def` methods")
    return TypeError(
        f"{fname} is not a handler of {cls.__qualname__}; handlers are its public "
        f"async def methods ({', '.join(sorted(cls._trioscope_handlers.values())) or 'none'})"
    )


# -- references --------------------------------------------------------------


@final
class ServiceRef(Generic[S]):
    """A handle on one incarnation of a service. It never waits for a restart:
    once that incarnation ends, every use raises `ServiceUnavailableError`.

    Get one from ``nursery.start(spec.start)``, a supervisor, or `whereis`.
    """

    __slots__ = ("_core", "_timeout")

    def __init__(self, core: _Incarnation, timeout: float) -> None:
        self._core = core
        self._timeout = timeout

    def __repr__(self) -> str:
        core, mailbox = self._core, self._core.mailbox
        depth = f"{mailbox.depth()}/{mailbox.capacity}"
        return f"<ServiceRef {core.label} mailbox {depth} {core.status}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServiceRef) and other._core is self._core

    def __hash__(self) -> int:
        return hash(self._core)

    @property
    def name(self) -> str | None:
        """The name this incarnation is registered under, if any."""
        return self._core.name

    @property
    def incarnation(self) -> int:
        """A number unique to this incarnation within the process."""
        return self._core.number

    @property
    def service_class(self) -> type[Service]:
        """The `Service` subclass this incarnation runs."""
        return self._core.cls

    @property
    def timeout(self) -> float:
        """Seconds `call` waits for a reply."""
        return self._timeout

    def with_timeout(self, seconds: float) -> ServiceRef[S]:
        """The same incarnation, with another call timeout (``math.inf`` for none)."""
        _check_seconds("timeout", seconds, allow_inf=True)
        return ServiceRef(self._core, seconds)

    @overload
    async def call(
        self,
        fn: Callable[Concatenate[S, P], Awaitable[Deferred[R]]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    async def call(
        self, fn: Callable[Concatenate[S, P], Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    async def call(
        self, fn: Callable[Concatenate[S, P], Awaitable[Any]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Any:
        """Run handler *fn* in the service with these arguments and return its result.

        Waits for mailbox space, then for the reply, within this ref's timeout.
        If the caller is cancelled or times out while the message is queued, the
        message is withdrawn and never runs; if it is already running, its reply
        is discarded.

        A handler calling its own service fails at once (it could never be
        answered); a cycle through other services ends in the timeout.

        Raises:
            TypeError: *fn* is not a handler of this service's class, or the
                arguments do not bind to it (the service did not run it and is
                untouched).
            CallingSelfError: called from the service's own task.
            CallTimeoutError: no reply within the timeout.
            ServiceCrashedError: the handler crashed the service (``__cause__``).
            ServiceUnavailableError: this incarnation is stopping or has ended.
            Rejected: whatever subclass the handler raised.
        """
        core = self._core
        handler = core.handler_name(fn)
        msg = _Message(core, fn, args, kwargs, current_task())
        timeout = self._timeout
        with trio.CancelScope(deadline=trio.current_time() + timeout):
            try:
                return await core.call(msg)
            except _NotRunError as exc:
                # The private marker is for calls by name, which retry; a ref never does.
                raise _public(exc) from exc.__cause__
        raise CallTimeoutError(core.label, handler, timeout)

    async def cast(
        self,
        fn: Callable[Concatenate[S, P], Awaitable[object]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        """Send handler *fn* to run later, waiting only for mailbox space.

        A cast from the service's own task (a handler casting to its own
        service) never waits: it would wait for itself, so it behaves as
        `try_cast`. Arguments that do not bind to *fn* are logged (WARNING) by
        the service, which does not run the message and is otherwise untouched.

        Raises:
            TypeError: *fn* is not a handler of this service's class.
            MailboxFullError: a self-cast found the mailbox full; nothing was sent.
            ServiceUnavailableError: this incarnation is stopping or has ended.
        """
        core = self._core
        core.handler_name(fn)
        if core.task is current_task():
            # Its own task never waits for space in its own mailbox: it would
            # wait for itself. A self-cast behaves as `try_cast`.
            await checkpoint_if_cancelled()
            self.try_cast(fn, *args, **kwargs)
            await cancel_shielded_checkpoint()
            return
        try:
            await core.mailbox.send(_Message(core, fn, args, kwargs, None))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # `send` only checked for cancellation before refusing: a schedule
            # point too, so a loop retrying a stopped service cannot starve others.
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise core.unavailable(ServiceUnavailableError) from None

    def try_cast(
        self,
        fn: Callable[Concatenate[S, P], Awaitable[object]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        """The non-waiting twin of `cast` (like ``send_nowait`` beside ``send``).

        Raises:
            MailboxFullError: the mailbox is full; nothing was sent.
            ServiceUnavailableError: this incarnation is stopping or has ended.
        """
        core = self._core
        core.handler_name(fn)
        try:
            core.mailbox.send_nowait(_Message(core, fn, args, kwargs, None))
        except trio.WouldBlock:
            raise MailboxFullError(core.label, core.mailbox.capacity) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise core.unavailable(ServiceUnavailableError) from None

    def statistics(self) -> ServiceStatistics:
        """Counters of this incarnation, without waiting."""
        core = self._core
        return ServiceStatistics(
            mailbox_depth=core.mailbox.depth(),
            mailbox_capacity=core.mailbox.capacity,
            handled=core.handled,
            in_flight=core.in_flight,
            started_at=core.started_at,
        )

    async def health(self) -> Health:
        """Ask the service how it is, through its mailbox, within this ref's timeout.

        Never raises for an unhealthy service: a stopped or crashed one is
        ``"unavailable"``; one whose mailbox is nearly full, whose hook raises
        `Rejected` or does not answer in time is ``"degraded"``.
        """
        core = self._core
        detail: Mapping[str, object] = {}
        status: HealthStatus = "healthy"
        if core.status != _RUNNING_S:
            await trio.lowlevel.checkpoint()
            status = "unavailable"
        else:
            msg = _Message(core, type(core.service).health, (), {}, current_task())
            try:
                with trio.fail_after(self._timeout):
                    answer = await core.call(msg)
            except trio.TooSlowError:
                status, detail = "degraded", {"error": f"no answer within {self._timeout:g} s"}
            except Rejected as exc:
                status, detail = "degraded", {"error": str(exc)}
            except (ServiceUnavailableError, ServiceCrashedError) as exc:
                status, detail = "unavailable", {"error": str(exc)}
            else:
                if not isinstance(answer, Mapping):
                    raise TypeError(
                        f"{core.cls.__qualname__}.health() must return a mapping, "
                        f"got {type(answer).__name__}"
                    )
                detail = answer
                reported = answer.get("status")
                if reported == "degraded" or reported == "unavailable":
                    status = reported
                elif core.mailbox.depth() >= math.ceil(
                    core.mailbox.capacity * DEGRADED_MAILBOX_FRACTION
                ):
                    status = "degraded"
        return Health(
            status=status,
            name=core.name,
            mailbox_depth=core.mailbox.depth(),
            mailbox_capacity=core.mailbox.capacity,
            restarts=core.restarts,
            detail=detail,
        )


# -- starting ------------------------------------------------------------------


@final
class _ServiceStart(_Startable[ServiceRef[S]], Generic[S]):
    """The ``start`` of a service's `ChildSpec` (follows the `nursery.start` protocol)."""

    __slots__ = ("args", "cls", "kwargs", "mailbox_size", "name", "shutdown")
    kind = "worker"

    def __init__(
        self,
        cls: type[S],
        args: tuple[object, ...],
        kwargs: dict[str, object],
        name: str | None,
        mailbox_size: int,
        shutdown: float,
    ) -> None:
        self.cls = cls
        self.args = args
        self.kwargs = kwargs
        self.name = name
        self.mailbox_size = mailbox_size
        self.shutdown = shutdown

    def __repr__(self) -> str:
        named = f" name={self.name!r}" if self.name is not None else ""
        return f"<start {self.cls.__qualname__}{named}>"

    def __call__(
        self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> Coroutine[Any, Any, None]:
        # A plain function returning the coroutine: one frame less per service.
        return self.run(task_status, _ChildHandle(shutdown=self.shutdown))

    async def run(self, task_status: trio.TaskStatus[ServiceRef[S]], handle: _ChildHandle) -> None:
        registry: Registry | None = None
        name = self.name
        if name is not None:
            registry = _current_registry_or_none()
            if registry is None:
                raise _no_registry_error(f"starting service {name!r}")
        service = self.cls(*self.args, **self.kwargs)
        core = _Incarnation(service, name, self.mailbox_size, handle.restarts, registry)
        ref: ServiceRef[Any] = ServiceRef(core, DEFAULT_CALL_TIMEOUT_S)
        if registry is not None:
            assert name is not None
            registry._register(name, ref)
        reason: str | BaseException = "killed"
        core.task = current_task()
        core.context_registry = _current.get()
        core.supervision = handle.supervision
        service._trioscope_core = core
        try:
            try:
                if self.cls.init is not Service.init:
                    await service.init()
            except BaseException as exc:
                reason = core.start_failed(exc, reason)
                raise
            core.status = _RUNNING_S
            core.started_at = trio.current_time()
            handle.on_stop(core.request_stop)
            task_status.started(ref)
            # Drop it: it holds the nursery.start() machinery, about 1 KB that
            # would otherwise live as long as the service.
            del task_status
            mailbox = core.mailbox
            msg: _Message | None = None
            correlation = initial_correlation = _correlation.get()
            try:
                if core.owned is not None:
                    await core.owned.open()  # init started tasks
                # The service loop, inline: one frame less per idle service.
                while core.status == _RUNNING_S:
                    try:
                        msg = await mailbox.receive()
                    except trio.ClosedResourceError:
                        break  # request_stop closed the mailbox while we waited
                    if _faults.installed:
                        assert _faults.at_message is not None
                        try:
                            await _faults.at_message(core, msg)  # a stall or clock jump, if due
                        except BaseException:
                            if msg.state == _QUEUED:  # taken from the mailbox, never to run
                                why = (
                                    "it was killed while a fault schedule stalled this "
                                    "message; it was not run"
                                )
                                _reply(msg, outcome.Error(_NotRunError(core.label, why)))
                            raise
                    if msg.state != _QUEUED:
                        continue  # withdrawn by a cancelled caller
                    if core.status != _RUNNING_S:
                        _reply(msg, outcome.Error(core.unavailable()))
                        break
                    msg.state = _RUNNING
                    try:
                        # Making the coroutine binds the arguments and runs none of
                        # the handler: a TypeError here is the caller's mistake.
                        coro = msg.fn(service, *msg.args, **msg.kwargs)
                    except TypeError as exc:
                        core.bad_arguments(msg, exc)
                        continue
                    if _faults.installed:
                        assert _faults.wrap is not None
                        coro = _faults.wrap(core, msg, coro)  # a crash, hang or delay, if due
                    core.current = msg
                    if msg.correlation is not correlation:
                        # The handler runs with its caller's correlation id.
                        correlation = msg.correlation
                        _correlation.set(correlation)
                    try:
                        if _telemetry.attached:
                            core.handler_began(msg)
                        result = await coro
                    except Rejected as exc:
                        core.current = None
                        core.rejected(msg, exc)
                        if core.t0 is not None:
                            core.handler_ended(msg, _STOP, {"rejected": exc})
                    except BaseException as exc:
                        # Raised again unchanged, whatever it is: a Cancelled in
                        # it belongs to the scope that is killing the service.
                        core.handler_failed(msg, exc)
                        raise
                    else:
                        core.current = None
                        core.handled += 1
                        if type(result) is Deferred:
                            core.keep_deferred(msg, result)
                        else:
                            _reply(msg, outcome.Value(result))
                        if core.t0 is not None:
                            core.handler_ended(msg, _STOP, None)
                    del coro  # finished: not kept alive while idle
                    if core.owned is not None and core.owned.nursery is None:
                        await core.owned.open()  # the handler started tasks
                if correlation is not initial_correlation:
                    # An orderly stop belongs to no request of the messages handled.
                    _correlation.set(initial_correlation)
                if core.owned is not None:
                    await core.owned.close()  # before terminate; raises what they raised
                if isinstance(core.stop_reason, BaseException):
                    # Service.stop(reason): an abnormal exit, as a crash after
                    # the reply (terminate(reason) runs, below).
                    raise core.stop_reason
            except BaseException as exc:
                if core.owned is not None and core.owned.nursery is not None:
                    # The loop ran in the owned tasks' nursery: close it with
                    # this exit, and go on with what it raises instead. Stopping
                    # (name released, no new tasks) before waiting for the tasks.
                    core.status = _STOPPING
                    core.unregister()
                    try:
                        await core.owned.close(exc)
                    except BaseException as combined:
                        reason = core.loop_failed(combined, reason)
                        if core.reason is not None and self.cls.terminate is not Service.terminate:
                            await _terminate_after_crash(service, core, handle.shutdown)
                        raise
                reason = core.loop_failed(exc, reason)
                # A crash (core.reason) runs terminate within the child's shutdown
                # budget; on an orderly stop the supervisor enforces its deadline.
                if core.reason is not None and self.cls.terminate is not Service.terminate:
                    await _terminate_after_crash(service, core, handle.shutdown)
                raise  # unchanged: the crash itself, whatever terminate did
            core.fail_queued()
            if self.cls.terminate is not Service.terminate:
                try:
                    await service.terminate(None)
                except BaseException as exc:
                    reason = core.terminate_raised(exc, reason)
                    raise
            # Only now: a terminate cut off at the shutdown budget was "killed".
            reason = "normal" if core.stop_reason is True else "shutdown"
        finally:
            if registry is not None:
                assert name is not None
                registry._unregister(name, ref)
            handle.origin = core.origin  # for the supervisor: which request crashed it
            core.finish(reason)
            # A crash's traceback holds this frame: drop every local that leads
            # back to the exception (through the incarnation, whose reason it
            # is), so the crash leaves no cycle for the garbage collector.
            handle._on_stop = None
            msg = None
            del core, ref, reason


# -- deferred replies ----------------------------------------------------------------


@final
class Deferred(Generic[R]):
    """A call whose reply a handler gave later: what `Service.defer` returns.

    ::

        class Gate(trioscope.Service):
            def __init__(self) -> None:
                self.waiting: list[trioscope.Deferred[str]] = []

            async def wait(self) -> trioscope.Deferred[str]:
                deferred: trioscope.Deferred[str] = self.defer()
                self.waiting.append(deferred)
                return deferred  # the service goes on taking messages

            async def open(self) -> int:
                answered = sum(d.reply("open") for d in self.waiting)
                self.waiting.clear()
                return answered  # callers that gave up are not counted
    """

    __slots__ = ("_answered", "_msg")

    def __init__(self, msg: _Message) -> None:
        self._msg = msg
        self._answered = False

    def __repr__(self) -> str:
        state = "answered" if self._answered else "abandoned" if self.abandoned else "waiting"
        return f"<Deferred {self._msg.describe()} {state}>"

    @property
    def abandoned(self) -> bool:
        """Whether the caller gave up (timed out or was cancelled): nobody will read a reply.

        Always true for a handler that runs for a cast."""
        return self._msg.task is None or self._msg.state == _ABANDONED

    @property
    def answered(self) -> bool:
        """Whether `reply` or `fail` was called (or the incarnation ended, failing it)."""
        return self._answered or self._msg.state == _DONE

    def reply(self, value: R) -> bool:
        """Answer the caller with *value*; return whether a caller was still waiting.

        Raises:
            RuntimeError: the call was answered already.
        """
        return self._answer(outcome.Value(value))

    def fail(self, error: BaseException) -> bool:
        """Make the caller's ``call`` raise *error*; return whether a caller was still waiting.

        Raises:
            RuntimeError: the call was answered already.
        """
        return self._answer(outcome.Error(error))

    def _answer(self, result: outcome.Outcome[Any]) -> bool:
        msg = self._msg
        if self._answered or msg.state == _DONE:
            raise RuntimeError(
                f"the deferred call {msg.describe()} of service {msg.core.label} was "
                "answered already: a call gets exactly one reply"
            )
        self._answered = True
        core = msg.core
        if core.deferred is not None:
            core.deferred.discard(self)
        if msg.task is None:
            return False
        waiting = msg.state != _ABANDONED
        _reply(msg, result)
        return waiting


# -- tasks and timers owned by an incarnation -----------------------------------------


@final
class Timer:
    """What `Service.send_after` returns: a delayed cast that can be cancelled."""

    __slots__ = ("_fired", "_scope")

    def __init__(self) -> None:
        self._scope = trio.CancelScope()
        self._fired = False

    def __repr__(self) -> str:
        state = "fired" if self._fired else "cancelled" if self._scope.cancel_called else "pending"
        return f"<Timer {state}>"

    @property
    def fired(self) -> bool:
        """Whether its message was sent."""
        return self._fired

    def cancel(self) -> bool:
        """Withdraw the message if it has not been sent yet; return whether it was withdrawn."""
        if self._fired:
            return False
        self._scope.cancel()
        return True


async def _fire(core: _Incarnation, timer: Timer, seconds: float, msg: _Message) -> None:
    with timer._scope:
        await trio.sleep(seconds)
        timer._fired = True
        try:
            await core.mailbox.send(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # stopping: the owned tasks are about to be cancelled


async def _run_owned(
    owned: _Owned, fn: Callable[..., Awaitable[object]], args: tuple[object, ...]
) -> None:
    try:
        await fn(*args)
    except BaseException as exc:
        if owned.crash is None:
            owned.crash = read_exit(exc).error
            if owned.crash is not None:
                name = getattr(fn, "__qualname__", None) or repr(fn)
                owned.origin = (name, _correlation.get())
        raise
    finally:
        del owned  # the crash's traceback holds this frame: no cycle through it


class _Owned:
    """The nursery of an incarnation's owned tasks, opened only once it has one.

    An idle service keeps no nursery (it would cost a sixth of its memory): the
    first `Service.start_soon` records the task, and the service loop enters
    the nursery by hand (``__aenter__``) between two messages, so that the rest
    of the loop runs inside it; it leaves it (``__aexit__``) before
    ``terminate``, in the same task, no other cancel scope open in between.
    """

    __slots__ = ("crash", "manager", "nursery", "origin", "pending")

    def __init__(self) -> None:
        self.manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self.nursery: trio.Nursery | None = None
        self.pending: list[tuple[Callable[..., Awaitable[object]], tuple[object, ...]]] = []
        self.crash: BaseException | None = None  # the first error an owned task raised
        # That task's name and correlation id (the request it was started for).
        self.origin: tuple[str, str | None] | None = None

    async def open(self) -> None:
        if self.manager is not None:
            return
        self.manager = trio.open_nursery()
        nursery = self.nursery = await self.manager.__aenter__()
        for fn, args in self.pending:
            nursery.start_soon(_run_owned, self, fn, args)
        self.pending.clear()

    async def close(self, exc: BaseException | None = None) -> None:
        """Leave the nursery: with *exc*, the loop's exit; without, an orderly stop
        that cancels the tasks. Raises what the incarnation exits with instead."""
        manager, nursery = self.manager, self.nursery
        self.pending.clear()
        if manager is None or nursery is None:
            return
        self.nursery = None
        if exc is None:
            nursery.cancel_scope.cancel()
        # Unwrap policy: the nursery raises a group (strict exception groups).
        # A crash (no Cancelled, no interrupt in it) comes out bare, its own
        # __context__ kept; an interrupt comes out bare; a group holding a
        # Cancelled of an enclosing scope goes on whole, for that scope.
        try:
            if exc is None:
                await manager.__aexit__(None, None, None)
            else:
                absorbed = await manager.__aexit__(type(exc), exc, exc.__traceback__)
                if absorbed:  # pragma: no cover - only the nursery's own Cancelled
                    raise RuntimeError("the owned tasks' nursery swallowed the exit") from exc
        except BaseException as combined:
            ended = read_exit(combined)
            error = ended.interrupt if ended.interrupt is not None else ended.error
            if ended.cancelled is not None or error is None or error is combined:
                raise
            context = error.__context__
            try:
                raise error  # bare: the group is not its cause, it holds it
            finally:
                error.__context__ = context
                del error, context, ended, combined


async def _terminate_after_crash(service: Service, core: _Incarnation, budget: float) -> None:
    """Run ``terminate`` with the crash (``core.reason``) within *budget*.

    An error it raises is logged, not raised: the service exits with its crash,
    which monitors and callers keep as the reason.
    """
    crash = core.reason
    assert isinstance(crash, BaseException)
    try:
        with trio.move_on_after(budget):
            await service.terminate(crash)
    except BaseException as exc:
        ended = read_exit(exc)
        try:
            if ended.error is None:
                raise  # killed (or interrupted) while terminating: not a failure of terminate
            core.terminate_failed(ended.error, crash)
            # Only what is not terminate's error goes on: an interrupt (bare), or
            # the Cancelled of the scope that is killing the service.
            if ended.interrupt is not None:
                raise ended.interrupt from None
            if ended.cancelled is not None:
                raise ended.cancelled from None
        finally:
            del ended, crash  # the exception's traceback holds this frame: no cycle
