"""Supervisors: nurseries that restart their children by strategy.

::

    import trio, trioscope

    class Worker(trioscope.Service):
        async def work(self, n: int) -> int:
            if n < 0:
                raise RuntimeError("bad input")  # let it crash
            return n * 2

    async def main() -> None:
        async with trioscope.open_registry():
            children = [Worker.child_spec(name="worker")]
            async with trioscope.open_supervisor(children) as sup:
                try:
                    await trioscope.call("worker", Worker.work, -1)
                except trioscope.ServiceCrashedError:
                    pass  # the supervisor has restarted it
                assert await trioscope.call("worker", Worker.work, 21) == 42
                assert sup.which_children()[0].restarts == 1

    trio.run(main)

Each child runs in its own cancel scope inside the supervisor's nursery, in a
small wrapper that catches the child's exception and reports the exit to the
supervisor's manager task. Nothing but `trio.Cancelled` is ever raised inside
the nursery, so a child's failure never cancels its siblings and no bare
`ExceptionGroup` escapes: the supervisor decides, and the opener sees
`StartError`, `RestartIntensityExceededError` or its own body's exception.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    nullcontext,
)
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast, final

import attrs
import outcome
import trio
from trio.lowlevel import Abort, reschedule, wait_task_rescheduled

from ._child_spec import (
    Backoff,
    ChildSpec,
    Restart,
    _ChildHandle,
    _is_int,
    _is_number,
    _Startable,
)
from ._correlation import Origin, crash_origin
from ._errors import (
    ChildStateError,
    MaxChildrenError,
    RestartIntensityExceededError,
    StartError,
    SupervisorClosedError,
    UnknownChildError,
)
from ._exits import describe as _describe
from ._exits import read_exit
from ._logging import wants
from ._names import _expect_restart, _unexpect_restart
from ._registry import _current_registry_or_none, _no_registry_error, _telemetry
from ._telemetry import EventName, _dispatch, _handlers_for

if TYPE_CHECKING:
    from trio.lowlevel import Task

_log = logging.getLogger("trioscope.supervisor")
T = TypeVar("T")

DEFAULT_MAX_RESTARTS: Final = 3
DEFAULT_MAX_SECONDS: Final = 5.0

JITTER_RANDOM: Final = random.Random()
"""The random source for backoff jitter when a supervisor is given none.

Tests register it with ``hypothesis.register_random`` so that failures replay.
"""


_CHILD_START: Final[EventName] = ("trioscope", "child", "start")
_CHILD_EXIT: Final[EventName] = ("trioscope", "child", "exit")
_CHILD_RESTART: Final[EventName] = ("trioscope", "child", "restart")
_CHILD_BACKOFF: Final[EventName] = ("trioscope", "child", "backoff")
_GIVE_UP: Final[EventName] = ("trioscope", "supervisor", "give_up")
_AUTO_SHUTDOWN_EVENT: Final[EventName] = ("trioscope", "supervisor", "auto_shutdown")


class Strategy(enum.Enum):
    """Which children a supervisor restarts when one fails."""

    ONE_FOR_ONE = "one_for_one"
    """Only the failed child."""
    ONE_FOR_ALL = "one_for_all"
    """All children: the others are stopped in reverse start order, then all restart in order."""
    REST_FOR_ONE = "rest_for_one"
    """The failed child and those started after it."""


ChildStatus = Literal[
    "starting", "running", "stopping", "restarting", "backoff", "stopped", "exited"
]
AutoShutdown = Literal["never", "any_significant", "all_significant"]
_AUTO_SHUTDOWN: Final = ("never", "any_significant", "all_significant")


@attrs.frozen
class ChildInfo:
    """One child of a supervisor, as `Supervisor.which_children` reports it."""

    id: str
    """The child's id from its spec."""
    status: ChildStatus
    """``running``, ``starting``, ``stopping``, ``restarting`` (its restart is
    due, or being attempted), ``backoff`` (waiting to restart until
    ``restart_at``), ``stopped`` (terminated, or exited and not to be
    restarted) or ``exited`` (its exit is on its way to the supervisor)."""
    value: object
    """What the child passed to ``task_status.started()`` (a `ServiceRef` for a
    service, the `Supervisor` for a nested one); ``None`` when not running."""
    restarts: int
    """How many times the supervisor has restarted it."""
    kind: str
    """``"worker"`` or ``"supervisor"``."""
    restart_at: float | None
    """While in backoff, the `trio.current_time` at which it restarts."""


@attrs.frozen
class ChildCounts:
    """Counts of a supervisor's children, as OTP's ``count_children``."""

    specs: int
    """All children, running or not."""
    active: int
    """Children running (or starting, or stopping)."""
    supervisors: int
    """Children that are supervisors."""
    workers: int
    """Children that are workers."""


_START: Final = 0
_TERMINATE: Final = 1
_RESTART: Final = 2


class _Child:
    __slots__ = (
        "attempt",
        "cause",
        "key",
        "order",
        "origin",
        "restart_at",
        "restarts",
        "run",
        "spec",
        "started_at",
        "status",
        "value",
    )

    def __init__(self, spec: ChildSpec, key: object, order: int) -> None:
        self.spec = spec
        self.key = key  # the id in a static supervisor; a serial number in a dynamic one
        self.order = order  # start order
        self.status: ChildStatus = "stopped"
        self.value: object = None
        self.restarts = 0
        self.attempt = 0  # consecutive backoff restarts, for the delay
        self.run: _Run | None = None
        self.started_at = 0.0
        self.restart_at: float | None = None
        # For telemetry: the exit that made it restart (child id, correlation id),
        # and where its own latest crash began (kept across failed restarts).
        self.cause: tuple[str, str | None] | None = None
        self.origin: Origin | None = None


class _Run:
    """One incarnation of a child: the ``task_status`` it is given, and what its wrapper saw.

    Only the child's wrapper writes the facts (``was_started``, ``value``,
    ``done``, ``error``); only the manager reads them and changes supervisor
    state. The child runs in ``scope``, shielded from the start: nothing but
    its supervisor stops it (one child at a time, in order, also when the
    supervisor itself is cancelled), and the supervisor gives the shield a
    deadline, the child's shutdown budget, as soon as it stops it.
    """

    __slots__ = (
        "abandoned",
        "child",
        "discard",
        "done",
        "error",
        "handle",
        "handled",
        "interrupted",
        "scope",
        "stopping",
        "sup",
        "task",
        "value",
        "was_started",
    )

    def __init__(self, sup: Supervisor, child: _Child) -> None:
        self.sup = sup
        self.child = child
        self.handle = _ChildHandle(child.restarts, child.spec.shutdown)
        self.handle.supervision = (sup.id, child.spec.id, child.spec.restart, sup._registry)
        self.scope = trio.CancelScope(shield=True)
        self.was_started = False
        self.value: object = None
        self.done = False
        self.error: BaseException | None = None
        self.interrupted = False
        self.stopping = False  # the supervisor stops it: its exit is expected
        self.abandoned = False  # its start was given up
        self.discard = False  # a new child (start_child): not kept unless it starts
        self.handled = False  # the manager has dealt with its exit
        self.task: Task | None = None  # the child's task, once it runs

    def started(self, value: object = None) -> None:
        """Trio's ``task_status.started``: the child is ready, with *value*."""
        if self.was_started:
            raise RuntimeError("called 'started' twice on the same task status")
        self.was_started = True
        self.value = value
        self.sup._wakeup()


class _Request:
    """A control call waiting for the manager's answer (OTP: a call to the supervisor)."""

    __slots__ = ("abandoned", "arg", "kind", "sup", "task")

    def __init__(self, sup: Supervisor, kind: int, arg: object) -> None:
        self.sup = sup
        self.kind = kind
        self.arg = arg
        self.task = trio.lowlevel.current_task()
        self.abandoned = False

    def abort(self, _raise_cancel: object) -> Abort:
        # The caller was cancelled: it goes on at once; a start it asked for is given up.
        self.abandoned = True
        self.sup._wakeup()
        return Abort.SUCCEEDED

    def answer(self, result: outcome.Outcome[object]) -> None:
        if not self.abandoned:
            self.abandoned = True  # answered: nothing more to say
            reschedule(self.task, result)


def _check_children(children: Iterable[ChildSpec]) -> list[ChildSpec]:
    if isinstance(children, ChildSpec):
        raise TypeError(
            f"children must be a list of ChildSpec values, got a single ChildSpec "
            f"({children.id!r}): wrap it in a list, [spec]"
        )
    specs = list(children)
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"children must be ChildSpec values, got {spec!r}")
        if spec.id in seen:
            raise ValueError(_duplicate_id(spec.id))
        seen.add(spec.id)
    return specs


def _duplicate_id(child_id: str) -> str:
    return (
        f"duplicate child id {child_id!r}: ids must be unique in a supervisor; "
        "pass id= to child_spec (or ChildSpec) to tell the children apart"
    )


def _check_options(
    strategy: Strategy, max_restarts: int, max_seconds: float, auto_shutdown: str = "never"
) -> None:
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a trioscope.Strategy, got {strategy!r}")
    if not _is_int(max_restarts):
        raise TypeError(f"max_restarts must be an int, got {max_restarts!r}")
    if max_restarts < 0:
        raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
    if not _is_number(max_seconds):
        raise TypeError(f"max_seconds must be a number, got {max_seconds!r}")
    if not 0 < max_seconds < math.inf:
        raise ValueError(f"max_seconds must be finite and > 0, got {max_seconds!r}")
    if auto_shutdown not in _AUTO_SHUTDOWN:
        raise ValueError(
            f"auto_shutdown must be one of {', '.join(map(repr, _AUTO_SHUTDOWN))}, "
            f"got {auto_shutdown!r}"
        )


def _check_significant(spec: ChildSpec, auto_shutdown: str, sup_id: str) -> None:
    if spec.significant and auto_shutdown == "never":
        raise ValueError(
            f"child {spec.id!r} is significant, but supervisor {sup_id!r} has "
            "auto_shutdown='never', so its ending could never stop the supervisor: open the "
            "supervisor with auto_shutdown='any_significant' or 'all_significant' (as OTP)"
        )


@final
class Supervisor:
    """A running supervisor; get one from `open_supervisor` or `open_dynamic_supervisor`.

    As OTP's supervisor process, one manager task owns all of its state: child
    exits, restart attempts and control calls (`start_child`,
    `terminate_child`, `restart_child`) are handled one at a time, in the
    order they arrive, and each restart attempt is one step, so between
    attempts it answers control calls and notices that it must stop.
    """

    def __init__(
        self,
        *,
        id: str,
        strategy: Strategy,
        max_restarts: int,
        max_seconds: float,
        backoff: Backoff | None,
        max_children: int | None,
        rng: random.Random | None,
        auto_shutdown: AutoShutdown = "never",
        dynamic: bool = False,
        handle: _ChildHandle | None = None,
        name: str | None = None,
    ) -> None:
        self.id = id
        self.name = name
        """The name it is registered under in its scope (`whereis_supervisor`), or ``None``."""
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.backoff = backoff
        self.max_children = max_children
        self.auto_shutdown = auto_shutdown
        self.dynamic = dynamic
        self._rng = rng if rng is not None else JITTER_RANDOM
        self._children: dict[object, _Child] = {}
        self._orders = itertools.count()
        self._pending: dict[_Child, None] = {}  # children waiting to restart
        self._restart_times: deque[float] = deque()
        self._inbox: deque[_Run | _Request] = deque()
        self._manager: Task | None = None  # parked, waiting for something to happen
        self._waiting_on: _Run | None = None  # the run a start or stop step waits for
        self._woken = False
        self._body_scope = trio.CancelScope()
        self._manager_scope = trio.CancelScope(shield=True)
        self._ready = trio.Event()  # the initial start is over, one way or another
        self._manager_done = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._closed = False
        self._stop_deadline = math.inf
        self._error: BaseException | None = None
        self._interrupted: BaseException | None = None
        self._handle = handle  # from the parent, when nested
        self._close_scope: trio.CancelScope | None = None  # the opener's wait, once closing
        if handle is not None:
            handle.on_deadline(self._budget_cut)
        # Where its named children register: told which wait to restart, so a
        # call by name that gives up can say so.
        self._registry = _current_registry_or_none()
        self._on_stop: Callable[[], object] | None = None  # serve(): give the signals back

    def __repr__(self) -> str:
        counts = self.count_children()
        state = "closed" if self._closed else "stopping" if self._stopping else "running"
        return (
            f"<Supervisor {self.id!r} {self.strategy.name} "
            f"{counts.active}/{counts.specs} children {state}>"
        )

    # -- introspection -------------------------------------------------

    @staticmethod
    def _status(child: _Child) -> ChildStatus:
        run = child.run
        if run is not None and run.done and not run.handled and child.status == "running":
            return "exited"  # its exit is on its way to the manager
        return child.status

    def which_children(self) -> list[ChildInfo]:
        """Every child, in start order."""
        infos = []
        for c in self._children.values():
            status = self._status(c)
            infos.append(
                ChildInfo(
                    id=c.spec.id,
                    status=status,
                    value=c.value if status in ("running", "stopping") else None,
                    restarts=c.restarts,
                    kind=c.spec.kind,
                    restart_at=c.restart_at if status == "backoff" else None,
                )
            )
        return infos

    def count_children(self) -> ChildCounts:
        """Counts of children by kind and activity."""
        supervisors = sum(1 for c in self._children.values() if c.spec.kind == "supervisor")
        active = sum(1 for c in self._children.values() if c.run is not None)
        return ChildCounts(
            specs=len(self._children),
            active=active,
            supervisors=supervisors,
            workers=len(self._children) - supervisors,
        )

    # -- control calls: requests to the manager -------------------------

    async def _ask(self, kind: int, arg: object, call: str) -> object:
        if self._stopping:
            await trio.lowlevel.checkpoint()
            raise SupervisorClosedError(self.id, call, stopped=self._closed)
        busy = self._waiting_on
        if busy is not None and busy.task is trio.lowlevel.current_task():
            # The manager waits for this very task (its start or its stop), so it
            # could never take the call: fail now (as OTP's calling_self).
            await trio.lowlevel.checkpoint()
            child = busy.child
            raise ChildStateError(
                self.id,
                child.spec.id,
                child.status,
                f"its {call} on its own supervisor could never be answered: the supervisor "
                "waits for it (until it calls task_status.started(), or has stopped)",
            )
        request = _Request(self, kind, arg)
        self._inbox.append(request)
        self._wakeup()
        return await wait_task_rescheduled(request.abort)

    async def start_child(self, spec: ChildSpec[T]) -> T:
        """Add a child at the end of the start order, start it, and return its started value.

        If the caller is cancelled before the child is ready, the start is given
        up: the child is cancelled and not kept, and the caller goes on at once.

        Raises:
            ValueError: a static supervisor has a child with that id already, or
                the child is significant and the supervisor's auto_shutdown is "never".
            MaxChildrenError: a dynamic supervisor is full.
            StartError: the child failed to start (it is not kept).
            SupervisorClosedError: the supervisor is stopping or has stopped.
        """
        given: object = spec
        if not isinstance(given, ChildSpec):
            await trio.lowlevel.checkpoint()
            raise TypeError(
                f"start_child takes a ChildSpec, got {given!r}"
                + (
                    f": use {given.__qualname__}.child_spec(...)"
                    if isinstance(given, type) and hasattr(given, "child_spec")
                    else ""
                )
            )
        # The manager answers with what the child passed to started(): a T.
        return cast("T", await self._ask(_START, spec, "start_child"))

    async def terminate_child(self, child: str | object) -> None:
        """Stop a child within its shutdown budget; it stays stopped until `restart_child`.

        A child waiting to restart stops waiting (with REST_FOR_ONE, so do the
        children after it that wait with it). *child* is the child's id, or
        its started value (in a dynamic supervisor, ids need not be unique).

        Raises:
            UnknownChildError: no such child.
            SupervisorClosedError: the supervisor is stopping or has stopped.
        """
        await self._ask(_TERMINATE, child, "terminate_child")

    async def restart_child(self, child: str | object) -> object:
        """Start a stopped child again; returns its started value.

        Raises:
            UnknownChildError: no such child.
            ChildStateError: the child is not stopped (running, or already restarting).
            MaxChildrenError: a dynamic supervisor already runs its maximum.
            StartError: it failed to start.
            SupervisorClosedError: the supervisor is stopping or has stopped.
        """
        return await self._ask(_RESTART, child, "restart_child")

    def delete_child(self, child: str | object) -> None:
        """Forget a stopped child.

        Raises:
            UnknownChildError: no such child.
            ChildStateError: the child is not stopped.
            SupervisorClosedError: the supervisor is stopping or has stopped.
        """
        if self._stopping:
            raise SupervisorClosedError(self.id, "delete_child", stopped=self._closed)
        found = self._find(child)
        status = self._status(found)
        if status != "stopped":
            raise ChildStateError(
                self.id, found.spec.id, status, "terminate_child it before deleting it"
            )
        del self._children[found.key]

    def _find(self, child: str | object) -> _Child:
        if isinstance(child, str):
            if not self.dynamic:
                found = self._children.get(child)
                if found is None:
                    raise UnknownChildError(self.id, child)
                return found
            matches = [c for c in self._children.values() if c.spec.id == child]
            if len(matches) == 1:
                return matches[0]
            if not matches:
                raise UnknownChildError(self.id, child)
            raise ValueError(
                f"supervisor {self.id!r} has {len(matches)} children with id {child!r}: "
                "pass the child's started value (what start_child returned) instead"
            )
        for c in self._children.values():
            if c.run is not None and c.value is not None and c.value == child:
                return c
        raise UnknownChildError(self.id, repr(child))

    def _check_room(self) -> None:
        """Raise `MaxChildrenError` if a dynamic supervisor already runs its maximum."""
        limit = self.max_children
        if limit is None or len(self._children) < limit:
            return
        # Stopped children keep their spec but not their slot (as Elixir's max_children).
        if sum(1 for c in self._children.values() if c.status != "stopped") >= limit:
            raise MaxChildrenError(self.id, limit)

    # -- the manager's wake-up -------------------------------------------

    def _wakeup(self) -> None:
        task = self._manager
        if task is not None:
            self._manager = None
            reschedule(task)
        else:
            self._woken = True

    async def _park(self, deadline: float = math.inf) -> None:
        """Wait until something happens (or *deadline*); the caller checks what."""
        if self._woken:
            self._woken = False
            return
        self._manager = trio.lowlevel.current_task()

        def abort(_raise_cancel: object) -> Abort:
            self._manager = None
            return Abort.SUCCEEDED

        if deadline == math.inf:
            await wait_task_rescheduled(abort)
        else:
            with trio.move_on_at(deadline):
                await wait_task_rescheduled(abort)

    # -- the manager ------------------------------------------------------

    @trio.lowlevel.enable_ki_protection
    async def _manage(self) -> None:
        # KeyboardInterrupt is never raised in here (KI protection): Trio
        # delivers it to the main task instead, whose opener stops the tree.
        cancelled: BaseException | None = None
        try:
            with self._manager_scope:
                try:
                    await self._start_initial()
                finally:
                    self._ready.set()
                await self._serve()
                await self._stop_children()
        except BaseException as exc:
            # A fault of the manager itself (a bug): the opener raises it, and
            # nothing may outlive it. Unwrap policy as for children.
            read = read_exit(exc)
            cancelled = read.cancelled
            if read.error is not None and self._error is None:
                self._error = read.error
            if read.interrupt is not None:
                self._interrupt(read.interrupt)
            self._kill()
            del exc, read
        finally:
            if self._manager_scope.cancelled_caught:
                self._kill()  # its deadline passed: cancel what is left
            self._pending.clear()
            self._stopping = True
            self._refuse_requests()
            self._manager_done.set()
        if cancelled is not None:
            raise cancelled

    async def _start_initial(self) -> None:
        for child in list(self._children.values()):
            if self._stopping:
                return
            run = await self._start(child, None)
            if not run.was_started and not run.abandoned:
                started = sum(1 for c in self._children.values() if c.run is not None)
                start_error = StartError(child.spec.id, self.id, stopped=started)
                start_error.__cause__ = self._start_failure(run)
                self._begin_stop(start_error)
                return

    async def _serve(self) -> None:
        inbox = self._inbox
        pending = self._pending
        while not self._stopping:
            if inbox:
                item = inbox.popleft()
                if isinstance(item, _Run):
                    await self._on_exit(item)
                else:
                    await self._on_request(item)
                continue
            deadline = math.inf
            if pending:
                now = trio.current_time()
                due: _Child | None = None
                for child in pending:
                    assert child.restart_at is not None
                    if child.restart_at <= now:
                        if due is None or child.order < due.order:
                            due = child
                    elif child.restart_at < deadline:
                        deadline = child.restart_at
                if due is not None:
                    await self._restart(due)
                    continue
            await self._park(deadline)

    async def _on_request(self, request: _Request) -> None:
        if request.abandoned:
            return  # its caller left while it waited
        # What the caller asked for may be refused: the checks below run
        # synchronously and hand their error to the caller, as OTP's
        # supervisor answers {error, Reason}; nothing else is caught here.
        if request.kind == _START:
            assert isinstance(request.arg, ChildSpec)
            result = await self._start_new(request.arg, request)
        else:
            found = outcome.capture(self._find, request.arg)
            if isinstance(found, outcome.Error):
                result = found
            elif request.kind == _TERMINATE:
                await self._terminate(found.value)
                result = outcome.Value(None)
            else:
                result = await self._restart_stopped(found.value, request)
        request.answer(result)

    async def _start_new(self, spec: ChildSpec, request: _Request) -> outcome.Outcome[object]:
        if not self.dynamic and spec.id in self._children:
            return outcome.Error(
                ValueError(
                    f"supervisor {self.id!r} already has a child {spec.id!r}: ids must be unique "
                    "in a static supervisor; pass id= to child_spec (or ChildSpec) to tell "
                    "them apart"
                )
            )
        refused = outcome.capture(_check_significant, spec, self.auto_shutdown, self.id)
        if isinstance(refused, outcome.Value):
            refused = outcome.capture(self._check_room)
        if isinstance(refused, outcome.Error):
            return refused
        order = next(self._orders)
        child = _Child(spec, order if self.dynamic else spec.id, order)
        self._children[child.key] = child
        run = await self._start(child, request, discard=True)
        return self._start_result(run, request)

    async def _restart_stopped(self, child: _Child, request: _Request) -> outcome.Outcome[object]:
        status = self._status(child)
        if status != "stopped":
            wanted = (
                "it is already waiting to restart; terminate_child it to stop that"
                if status in ("restarting", "backoff")
                else "only a stopped child can be restarted"
            )
            return outcome.Error(ChildStateError(self.id, child.spec.id, status, wanted))
        refused = outcome.capture(self._check_room)
        if isinstance(refused, outcome.Error):
            return refused
        child.restarts += 1
        run = await self._start(child, request)
        return self._start_result(run, request)

    def _start_result(self, run: _Run, request: _Request) -> outcome.Outcome[object]:
        if run.was_started and not run.abandoned:
            # The value it passed to started(), even if it has ended since.
            return outcome.Value(run.value)
        if run.abandoned:
            # Given up because the supervisor stops (a caller who left hears nothing).
            call = "start_child" if request.kind == _START else "restart_child"
            return outcome.Error(SupervisorClosedError(self.id, call, stopped=False))
        call = "start_child" if request.kind == _START else "restart_child"
        error = StartError(run.child.spec.id, self.id, call=call)
        error.__cause__ = self._start_failure(run)
        return outcome.Error(error)

    # -- starting and stopping one child ----------------------------------

    async def _start(
        self, child: _Child, request: _Request | None, *, discard: bool = False
    ) -> _Run:
        """Spawn *child* and wait until it is ready or has failed to start.

        Gives the start up (cancels the child, which is then not kept) when the
        supervisor begins to stop or the caller who asked for it leaves.
        """
        assert self._nursery is not None
        run = child.run = _Run(self, child)
        run.discard = discard
        if child.status != "restarting":
            child.status = "starting"
        child.restart_at = None
        # Read the clock only for someone who listens (a restart is a hot path too).
        spawned = trio.current_time() if self._wants(_CHILD_START) else 0.0
        self._nursery.start_soon(self._run_child, run, name=child.spec.id)
        self._waiting_on = run
        while not run.done and not run.was_started:
            if self._stopping or (request is not None and request.abandoned):
                run.abandoned = True
                self._stop_run(run, trio.current_time())
                self._waiting_on = None
                return run
            await self._park()
        self._waiting_on = None
        if request is not None and request.abandoned and not run.done:
            run.abandoned = True
            self._stop_run(run, trio.current_time())
            return run
        if run.was_started:
            child.status = "running"
            child.value = run.value
            child.started_at = trio.current_time()
            if _telemetry.attached:
                self._event(
                    _CHILD_START,
                    {"duration": child.started_at - spawned, "restarts": child.restarts},
                    child,
                    correlation_id=child.cause[1] if child.cause is not None else None,
                )
            if _log.isEnabledFor(logging.INFO):
                _log.info(
                    "supervisor %r started child %r (restarts %d)",
                    self.id,
                    child.spec.id,
                    child.restarts,
                    extra={
                        "supervisor": self.id,
                        "child": child.spec.id,
                        "event": "start",
                        "restarts": child.restarts,
                    },
                )
            return run
        # It ended before it was ready: the start failed.
        run.handled = True
        child.run = None
        child.status = "stopped"
        if discard:
            del self._children[child.key]
        error = run.error = self._start_failure(run)  # for the caller to take
        if wants(_log, logging.ERROR):
            _log.error(
                "supervisor %r: child %r failed to start",
                self.id,
                child.spec.id,
                exc_info=error,
                extra={"supervisor": self.id, "child": child.spec.id, "event": "start_failed"},
            )
        return run

    @staticmethod
    def _start_failure(run: _Run) -> BaseException:
        """Why *run* failed to start; taken out of it (see `_take_error`)."""
        error = _take_error(run)
        if error is not None:
            return error
        return RuntimeError(
            f"child {run.child.spec.id!r} returned without calling task_status.started()"
        )

    async def _run_child(self, run: _Run) -> None:
        """The wrapper every child runs in: it reports every exit, and raises nothing of its own.

        Unwrap policy (see `trioscope._exits`): the child's scope has caught
        the Cancelled its supervisor caused; everything else it raised is the
        exit's reason, interrupts excepted, which stop the whole tree and are
        raised bare by its opener. A Cancelled from any other scope is raised
        again (it cannot come through the shield, but it is never swallowed).
        """
        start = run.child.spec.start
        run.task = trio.lowlevel.current_task()
        cancelled: BaseException | None = None
        try:
            with run.scope:
                if isinstance(start, _Startable):
                    await start.run(run, run.handle)
                else:
                    await start(task_status=run)
        except BaseException as exc:
            cancelled = self._report_exit(run, exc)
            del exc
        else:
            self._report_exit(run, None)
        if cancelled is not None:
            raise cancelled

    @trio.lowlevel.enable_ki_protection
    def _report_exit(self, run: _Run, exc: BaseException | None) -> BaseException | None:
        """Record how *run* ended and tell the manager; return a Cancelled that is not ours.

        KI-protected, so that a Ctrl-C cannot land between the exit and its
        report (the manager would wait for it forever).
        """
        cancelled = None
        if exc is not None:
            read = read_exit(exc)
            cancelled = read.cancelled
            run.error = read.error
            if read.interrupt is not None:
                run.interrupted = True
                self._interrupt(read.interrupt)
        run.done = True
        run.handle._on_stop = run.handle._on_deadline = None  # no cycle through the child
        self._inbox.append(run)
        self._wakeup()
        return cancelled

    def _stop_run(self, run: _Run, now: float) -> None:
        """Ask *run* to stop within its child's budget; its exit comes as a report."""
        if run.done or run.stopping:
            return
        run.stopping = True
        run.child.status = "stopping"
        spec = run.child.spec
        # A nested supervisor's own budget bounds its children's: when its
        # parent cancels it, they are cancelled too.
        deadline = min(now + spec.shutdown, self._parent_deadline())
        handle = run.handle
        if deadline <= now or not run.was_started or not isinstance(spec.start, _Startable):
            handle.set_deadline(now)
            run.scope.cancel()
        else:
            handle.set_deadline(deadline)
            run.scope.deadline = deadline
            handle.request_stop()

    async def _stop_and_wait(self, child: _Child) -> None:
        """Stop one child and wait until it has exited; log how it ended."""
        run = child.run
        if run is None:
            return
        self._stop_run(run, trio.current_time())
        self._waiting_on = run
        while not run.done:
            await self._park()
        self._waiting_on = None
        self._finish_stop(run)

    def _finish_stop(self, run: _Run) -> None:
        run.handled = True
        child = run.child
        if child.run is run:
            child.run = None
            child.value = None
            child.status = "stopped"
            if run.discard and (run.abandoned or not run.was_started):
                # A start_child whose start was given up: the child is not kept.
                self._children.pop(child.key, None)
        spec = child.spec
        error = _take_error(run)
        if error is not None and wants(_log, logging.ERROR):
            # An error while stopping (a terminate() or a cleanup that raised)
            # is never lost. A crash of its own that came just before the stop
            # is reported as such: a service has written its crash report with
            # the traceback already, a plain child has nobody else to tell.
            own = not run.stopping
            _log.error(
                "supervisor %r: child %r %s: %s",
                self.id,
                spec.id,
                "exited by itself as it was being stopped" if own else "raised while being stopped",
                _describe(error),
                exc_info=None if own and isinstance(spec.start, _Startable) else error,
                extra={
                    "supervisor": self.id,
                    "child": spec.id,
                    "event": "exit" if own else "stop_error",
                    "reason": repr(error),
                },
            )
        elif _log.isEnabledFor(logging.INFO):
            _log.info(
                "supervisor %r stopped child %r",
                self.id,
                spec.id,
                extra={"supervisor": self.id, "child": spec.id, "event": "stop"},
            )

    def _budget_cut(self) -> None:
        """The parent set this (nested) supervisor's deadline: its stop budget, or a kill.

        Passed on at once to every shield this supervisor holds, its children's
        too, so that a nested supervisor never outlives what its parent gave it,
        also when it had begun to stop on its own.
        """
        assert self._handle is not None
        deadline = self._handle.deadline
        if deadline == -math.inf:
            self._kill()
            return
        self._stop_deadline = min(self._stop_deadline, deadline)
        self._manager_scope.deadline = min(self._manager_scope.deadline, deadline)
        if self._close_scope is not None:
            self._close_scope.deadline = min(self._close_scope.deadline, deadline)
        for child in self._children.values():
            run = child.run
            if run is not None and not run.done:
                run.scope.deadline = min(run.scope.deadline, deadline)
                if run.handle.deadline > deadline:
                    run.handle.set_deadline(deadline)

    def _parent_deadline(self) -> float:
        return self._handle.deadline if self._handle is not None else math.inf

    async def _terminate(self, child: _Child) -> None:
        if child in self._pending:
            self._unschedule(child)
        if child.run is not None:
            await self._stop_and_wait(child)
        child.status = "stopped"
        child.restart_at = None
        _unexpect_restart(self._registry, child.spec)

    def _unschedule(self, child: _Child) -> None:
        """*child* no longer waits to restart; with REST_FOR_ONE, nor do those after it."""
        dropped = [child]
        if self.strategy is Strategy.REST_FOR_ONE:
            dropped += [c for c in self._pending if c.order > child.order]
        for c in dropped:
            self._pending.pop(c, None)
            c.status = "stopped"
            c.restart_at = None
            _unexpect_restart(self._registry, c.spec)

    # -- deciding --------------------------------------------------------

    async def _on_exit(self, run: _Run) -> None:
        if run.handled:
            return
        child = run.child
        if run.stopping:
            # The supervisor stopped it (or gave up its start): expected.
            self._finish_stop(run)
            return
        run.handled = True
        child.run = None
        child.value = None
        spec = child.spec
        error = _take_error(run)
        if run.interrupted:
            child.status = "stopped"  # never restarted: the tree is stopping
            return
        if _telemetry.attached:
            # Where the crash began: told by the service, or found on the
            # trioscope error that passed it on (a caller's, a supervisor's).
            child.origin = (run.handle.origin or crash_origin(error)) if error is not None else None
            self._exit_event(child, error)
        if error is not None:
            if wants(_log, logging.ERROR):
                _log.error(
                    "supervisor %r: child %r exited with %s",
                    self.id,
                    spec.id,
                    _describe(error),
                    # Services and supervisors write their own crash reports
                    # with the traceback; a plain Trio child has nobody else.
                    exc_info=None if isinstance(spec.start, _Startable) else error,
                    extra={
                        "supervisor": self.id,
                        "child": spec.id,
                        "event": "exit",
                        "reason": repr(error),
                    },
                )
        elif _log.isEnabledFor(logging.INFO):
            _log.info(
                "supervisor %r: child %r exited normally",
                self.id,
                spec.id,
                extra={
                    "supervisor": self.id,
                    "child": spec.id,
                    "event": "exit",
                    "reason": "normal",
                },
            )
        restart = spec.restart is Restart.PERMANENT or (
            spec.restart is Restart.TRANSIENT and error is not None
        )
        if restart:
            await self._on_failure(child, error, ran=True)
            return
        # It ended for good, by itself.
        if spec.restart is Restart.TEMPORARY or self.dynamic:
            # A dynamic supervisor keeps no record of children that are
            # done (as Elixir's), so churn does not grow it without bound.
            del self._children[child.key]
        else:
            child.status = "stopped"
        if spec.significant and self._auto_shutdown_due():
            if _telemetry.attached:
                self._event(_AUTO_SHUTDOWN_EVENT, {}, child)
            _log.info(
                "supervisor %r stops (auto_shutdown=%s): significant child %r ended",
                self.id,
                self.auto_shutdown,
                spec.id,
                extra={"supervisor": self.id, "child": spec.id, "event": "auto_shutdown"},
            )
            self._begin_stop(None)

    def _auto_shutdown_due(self) -> bool:
        if self.auto_shutdown == "any_significant":
            return True
        if self.auto_shutdown == "all_significant":
            # As OTP: when no significant child is left alive.
            return not any(
                c.spec.significant and (c.run is not None or c in self._pending)
                for c in self._children.values()
            )
        return False

    async def _on_failure(self, child: _Child, error: BaseException | None, *, ran: bool) -> None:
        """Apply intensity, then the strategy, to a child that must restart.

        *ran* is false when the child failed to (re)start: that is no stable run,
        however long ago it last started.
        """
        now = trio.current_time()
        times = self._restart_times
        times.append(now)
        # As OTP: a restart exactly max_seconds ago is still inside the window.
        while times and now - times[0] > self.max_seconds:
            times.popleft()
        if len(times) > self.max_restarts:
            give_up = RestartIntensityExceededError(
                self.id, child.spec.id, self.max_restarts, self.max_seconds
            )
            give_up.__cause__ = error
            if _telemetry.attached:
                give_up._origin = child.origin  # passed on to the supervisor above
                self._event(
                    _GIVE_UP,
                    {"max_restarts": self.max_restarts, "max_seconds": self.max_seconds},
                    child,
                    reason=give_up,
                    correlation_id=child.origin[2] if child.origin is not None else None,
                )
            _log.error(
                "supervisor %r gives up: more than %d restarts in %g s (last: child %r)",
                self.id,
                self.max_restarts,
                self.max_seconds,
                child.spec.id,
                extra={"supervisor": self.id, "child": child.spec.id, "event": "give_up"},
            )
            child.status = "stopped"
            _unexpect_restart(self._registry, child.spec)
            self._begin_stop(give_up)
            return
        child.status = "restarting"
        if self.strategy is Strategy.ONE_FOR_ONE:
            group = [child]
        else:
            members = [
                c
                for c in self._children.values()
                if self.strategy is Strategy.ONE_FOR_ALL or c.order >= child.order
            ]
            group = [c for c in members if c is child or c.status != "stopped"]
            for other in reversed(group):
                if other is not child:
                    self._pending.pop(other, None)
                    if other.run is not None:
                        await self._stop_and_wait(other)
                    if other.spec.restart is Restart.TEMPORARY:
                        # Stopped by a strategy, it is not restarted (as in OTP): gone.
                        self._children.pop(other.key, None)
                    else:
                        other.status = "restarting"
                    if self._stopping:
                        return
            group = [
                c
                for c in group
                if c is child
                or (c.spec.restart is not Restart.TEMPORARY and self._children.get(c.key) is c)
            ]
        backoff = child.spec.backoff or self.backoff
        delay = 0.0
        if backoff is not None:
            if ran and now - child.started_at >= backoff.reset_after:
                child.attempt = 0
            delay = backoff.delay(child.attempt, self._rng)
            child.attempt += 1
        restart_at = now + delay
        cause = (
            (child.spec.id, child.origin[2] if child.origin is not None else None)
            if self._wants(_CHILD_RESTART) or (delay > 0 and self._wants(_CHILD_BACKOFF))
            else None
        )
        for member in group:
            member.status = "backoff" if delay > 0 else "restarting"
            member.restart_at = restart_at
            member.cause = cause
            if delay > 0 and cause is not None and self._wants(_CHILD_BACKOFF):
                self._event(
                    _CHILD_BACKOFF,
                    {"delay": delay, "restart_at": restart_at},
                    member,
                    cause=cause[0],
                    correlation_id=cause[1],
                )
            self._pending[member] = None
            _expect_restart(
                self._registry, member.spec, member.status, restart_at if delay > 0 else None
            )
        if delay:
            _log.info(
                "supervisor %r: child %r restarts in %.3f s",
                self.id,
                child.spec.id,
                delay,
                extra={"supervisor": self.id, "child": child.spec.id, "event": "backoff"},
            )

    async def _restart(self, child: _Child) -> None:
        """One restart attempt: one step of the manager."""
        del self._pending[child]
        if child.status != "restarting":  # from backoff; else the registry knows already
            child.status = "restarting"  # while the attempt runs, too
            _expect_restart(self._registry, child.spec, "restarting", None)
        child.restarts += 1
        if _telemetry.attached:
            cause = child.cause or (child.spec.id, None)
            self._event(
                _CHILD_RESTART,
                {"restarts": child.restarts},
                child,
                cause=cause[0],
                correlation_id=cause[1],
            )
        if _log.isEnabledFor(logging.INFO):
            _log.info(
                "supervisor %r restarts child %r (restart %d)",
                self.id,
                child.spec.id,
                child.restarts,
                extra={
                    "supervisor": self.id,
                    "child": child.spec.id,
                    "event": "restart",
                    "restarts": child.restarts,
                },
            )
        run = await self._start(child, None)
        if not run.was_started:
            _unexpect_restart(self._registry, child.spec)  # _on_failure notes a retry again
        if not run.was_started and not run.abandoned and not self._stopping:
            # A failed restart is another failure of that child, still caused
            # by the crash that made it restart (unless the start says otherwise).
            failure = self._start_failure(run)
            if _telemetry.attached:
                child.origin = crash_origin(failure) or child.origin
            await self._on_failure(child, failure, ran=False)

    # -- telemetry (only called while a handler is attached somewhere) ----

    def _wants(self, name: EventName) -> bool:
        return _telemetry.attached > 0 and _handlers_for(self._registry, name) is not None

    def _event(
        self,
        name: EventName,
        measurements: dict[str, float],
        child: _Child,
        **metadata: object,
    ) -> None:
        handlers = _handlers_for(self._registry, name)
        if handlers:
            metadata["supervisor"] = self.id
            metadata["child"] = child.spec.id
            metadata.setdefault("correlation_id", None)
            _dispatch(handlers, name, measurements, metadata)

    def _exit_event(self, child: _Child, error: BaseException | None) -> None:
        if not self._wants(_CHILD_EXIT):
            return
        service, handler, cid = child.origin if child.origin is not None else (None, None, None)
        uptime = trio.current_time() - child.started_at
        self._event(
            _CHILD_EXIT,
            {"uptime": uptime},
            child,
            reason=error,
            service=service,
            handler=handler,
            correlation_id=cid,
        )

    # -- stopping --------------------------------------------------------

    def _begin_stop(self, error: BaseException | None = None) -> None:
        """Stop the supervisor: give up (*error*), auto-shut down, or leave the block.

        Idempotent. From now on control calls fail at once, the start in
        progress is given up, and the manager stops every child in order.

        Deadlines: each child is shielded, and gets its own shutdown budget as
        its deadline when it is stopped (bounded by the budget this supervisor
        got from its parent, if nested). The manager's shield, and the
        opener's while it waits for the manager, get that parent budget: a
        nested supervisor never outlives what its parent gave it. At the top
        there is no budget above the children's own, and the manager only ever
        waits for children that are themselves bounded by theirs (no deadline
        can cut short a shield a child opens itself: Trio cannot, either).
        """
        if error is not None and self._error is None:
            self._error = error
        if self._stopping:
            return
        self._stopping = True
        self._stopped_hook()
        self._stop_deadline = self._parent_deadline()
        self._manager_scope.deadline = self._stop_deadline
        self._body_scope.cancel()
        self._wakeup()

    async def _stop_children(self) -> None:
        """Stop every child: in reverse start order, or all at once in a dynamic supervisor."""
        for child in list(self._pending):
            child.status = "stopped"
            child.restart_at = None
            _unexpect_restart(self._registry, child.spec)
        self._pending.clear()
        self._refuse_requests()
        active = [c for c in self._children.values() if c.run is not None]
        if self.dynamic:
            now = trio.current_time()
            runs = [c.run for c in active if c.run is not None]
            for run in runs:
                self._stop_run(run, now)
            for run in runs:
                while not run.done:
                    await self._park()
                    self._refuse_requests()
                self._finish_stop(run)
        else:
            for child in reversed(active):
                await self._stop_and_wait(child)
                self._refuse_requests()
        self._refuse_requests()

    def _refuse_requests(self) -> None:
        """While stopping: refuse the control calls waiting in the inbox, drop the rest.

        Exit reports are dropped: the stop handles each run it waits for
        (`_finish_stop`), and a child that ended by itself meanwhile is
        finished when its turn to be stopped comes (its run is done).
        """
        inbox = self._inbox
        while inbox:
            item = inbox.popleft()
            if isinstance(item, _Request):
                call = {_START: "start_child", _TERMINATE: "terminate_child"}.get(
                    item.kind, "restart_child"
                )
                item.answer(outcome.Error(SupervisorClosedError(self.id, call, stopped=False)))

    def _interrupt(self, exc: BaseException) -> None:
        """A KeyboardInterrupt (or SystemExit) arrived in one of this supervisor's tasks.

        The first one stops the supervisor in order (as leaving the block
        does); one that arrives while it is stopping cancels everything at
        once. The opener re-raises it, bare, after the nursery has closed.
        """
        if self._interrupted is None:
            self._interrupted = exc
        if self._stopping:
            self._kill()
        else:
            self._begin_stop()

    def _stopped_hook(self) -> None:
        hook, self._on_stop = self._on_stop, None
        if hook is not None:
            hook()

    def _kill(self) -> None:
        """Cancel the manager and every child at once."""
        self._stopping = True
        self._stopped_hook()
        self._manager_scope.cancel()
        self._body_scope.cancel()
        for child in self._children.values():
            run = child.run
            if run is not None:
                run.handle.set_deadline(-math.inf)  # a nested supervisor kills its own
                run.scope.cancel()

    async def _close(self) -> None:
        """Leave the block: stop in order, within the budgets; a second interrupt kills."""
        self._begin_stop()
        with trio.CancelScope(shield=True, deadline=self._stop_deadline) as self._close_scope:
            try:
                await self._manager_done.wait()
            except BaseException as exc:
                # An interrupt (a second Ctrl-C, delivered to this task) reaches
                # into this shielded scope: the orderly stop is taking too
                # long, so cancel everything at once. Anything else goes on.
                interrupt = read_exit(exc).interrupt
                if interrupt is None:
                    raise
                self._interrupt(interrupt)
        if not self._manager_done.is_set():
            self._kill()  # the budgets ran out
        self._closed = True


def _take_error(run: _Run) -> BaseException | None:
    """Take the exit's reason (and the started value) out of an ended *run*.

    The reason's traceback holds the wrapper's frame, which holds *run*; and a
    service's started value (its `ServiceRef`) leads to the incarnation, which
    keeps the reason for monitors. Either would make a reference cycle that
    only the garbage collector could free, inside every restart.
    """
    error, run.error = run.error, None
    if run.done:
        run.value = None
    return error


def _registered(kind: str, name: str | None, value: object) -> AbstractContextManager[None]:
    """Register *value* as *name* in the current registry for a ``with`` block (none: no-op).

    Raises:
        NoRegistryError: a name, and no registry open around the current task.
        AlreadyRegisteredError: the name is taken in the current registry.
    """
    if name is None:
        return nullcontext()
    registry = _current_registry_or_none()
    if registry is None:
        raise _no_registry_error(f"registering {kind} {name!r}")
    return registry.registered(name, value)


def whereis_supervisor(name: str) -> Supervisor | None:
    """The supervisor (static or dynamic) registered as *name*, seen from here, or ``None``.

    Raises:
        NoRegistryError: no registry is open around the current task.
        TypeError: *name* holds something that is not a `Supervisor`.
    """
    return _lookup(name, Supervisor, "whereis_supervisor")


_V = TypeVar("_V")


def _lookup(name: str, kind: type[_V], call: str) -> _V | None:
    """The *kind* registered as *name*, seen from the current task (for the typed lookups)."""
    registry = _current_registry_or_none()
    if registry is None:
        raise _no_registry_error(f"{call}({name!r})")
    value = registry.lookup(name)
    if value is None or isinstance(value, kind):
        return value
    raise TypeError(f"name {name!r} is registered to {value!r}, which is not a {kind.__name__}")


def _keep_nursery_exit(exc: BaseException, interrupt: Callable[[BaseException], None]) -> bool:
    """Read what a supervisor's nursery raised at its exit; whether the caller keeps it.

    Only Cancelled (for an enclosing scope) and an interrupt delivered to the
    opener's task can come out of it. An interrupt goes to *interrupt* (kept,
    to be raised bare by the opener); a group of Cancelled alone is not ours.
    """
    read = read_exit(exc)
    if read.interrupt is None and read.error is None:
        return False
    if read.interrupt is not None:
        interrupt(read.interrupt)
    if read.error is not None:
        raise read.error  # a fault of our own: bare, never in a group
    return True


@asynccontextmanager
async def _open(
    children: Iterable[ChildSpec],
    *,
    id: str,
    strategy: Strategy,
    max_restarts: int,
    max_seconds: float,
    backoff: Backoff | None,
    max_children: int | None,
    rng: random.Random | None,
    auto_shutdown: AutoShutdown = "never",
    handle: _ChildHandle | None = None,
    dynamic: bool = False,
    on_stop: Callable[[], object] | None = None,
    name: str | None = None,
) -> AsyncIterator[Supervisor]:
    specs = _check_children(children)
    _check_options(strategy, max_restarts, max_seconds, auto_shutdown)
    if backoff is not None and not isinstance(backoff, Backoff):
        raise TypeError(f"backoff must be a trioscope.Backoff or None, got {backoff!r}")
    if not isinstance(id, str):
        raise TypeError(f"supervisor id must be a str, got {id!r}")
    for spec in specs:
        _check_significant(spec, auto_shutdown, id)
    sup = Supervisor(
        id=id,
        strategy=strategy,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
        backoff=backoff,
        max_children=max_children,
        rng=rng,
        auto_shutdown=auto_shutdown,
        dynamic=dynamic,
        handle=handle,
        name=name,
    )
    sup._on_stop = on_stop
    for spec in specs:
        sup._children[spec.id] = _Child(spec, spec.id, next(sup._orders))
    # Unwrap policy: nothing but Cancelled is raised inside this nursery (child
    # wrappers and the manager catch everything else and report it), and the
    # body's own exception is caught here and re-raised after the nursery has
    # closed, so the opener sees bare exceptions, never an ExceptionGroup.
    # The manager starts the children: they run in the context it was spawned
    # with, this one, so their registry scope is always the supervisor's.
    # A name is registered before any child starts (so children can find their
    # supervisor), and released once every child has stopped.
    # While the nursery waits for children already killed, a Ctrl-C can still
    # land in this task, at the nursery's exit, which would wrap it in a group:
    # it is read like any other exit, and raised bare below.
    body_error: BaseException | None = None
    with _registered("supervisor", name, sup):
        try:
            async with trio.open_nursery() as nursery:
                sup._nursery = nursery
                nursery.start_soon(sup._manage, name=f"trioscope supervisor {id!r}")
                try:
                    await sup._ready.wait()
                    if sup._error is None and sup._interrupted is None:
                        with sup._body_scope:
                            yield sup
                except BaseException as exc:
                    body_error = exc
                    interrupt = read_exit(exc).interrupt
                    if interrupt is not None:
                        sup._interrupt(interrupt)
                await sup._close()
        except BaseException as exc:
            if not _keep_nursery_exit(exc, sup._interrupt):
                raise
    if sup._interrupted is not None:
        # Never swallowed, and it wins over any other outcome.
        interrupted = sup._interrupted
        if interrupted is not body_error and interrupted.__context__ is None:
            interrupted.__context__ = sup._error or body_error
        raise interrupted
    if sup._error is not None:
        if body_error is not None and sup._error.__context__ is None:
            sup._error.__context__ = body_error
        raise sup._error
    if body_error is not None:
        raise body_error


def open_supervisor(
    children: Iterable[ChildSpec],
    *,
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    backoff: Backoff | None = None,
    auto_shutdown: AutoShutdown = "never",
    id: str = "supervisor",
    rng: random.Random | None = None,
    name: str | None = None,
) -> AbstractAsyncContextManager[Supervisor]:
    """Start *children* in order, each awaited until ready, and supervise them.

    Leaving the block stops them in reverse start order, each within its
    shutdown budget. So does cancelling the block from outside: the children
    are shielded from outer cancellation, and the stop is bounded by the sum
    of their budgets, after which whatever is left is cancelled at once.

    Args:
        strategy: Which children restart when one fails.
        max_restarts: More restarts than this within *max_seconds* make the
            supervisor give up.
        backoff: Delays before restarts (a child's own spec overrides it).
        auto_shutdown: As OTP: ``"never"`` (significant children are then an
            error), ``"any_significant"`` (a significant child that ends for
            good stops the supervisor) or ``"all_significant"`` (once every
            significant child has ended). Such a stop cancels the body, and the
            block exits without error.
        id: The supervisor's name in logs and errors.
        rng: The random source for backoff jitter (default `JITTER_RANDOM`).
        name: Register the supervisor under this name in the current registry,
            before its children start and until they have all stopped; find it
            with `whereis_supervisor`.

    Raises:
        StartError: a child failed to start (those started before it were stopped).
        NoRegistryError: a *name*, and no registry is open.
        AlreadyRegisteredError: the *name* is taken (no child was started).
        RestartIntensityExceededError: the supervisor gave up.
        ValueError: two children share an id, or a significant child with
            ``auto_shutdown="never"``.
    """
    return _open(
        children,
        id=id,
        strategy=strategy,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
        backoff=backoff,
        max_children=None,
        rng=rng,
        auto_shutdown=auto_shutdown,
        name=name,
    )


def _check_max_children(max_children: int | None) -> None:
    if max_children is not None:
        if not _is_int(max_children):
            raise TypeError(f"max_children must be None or an int, got {max_children!r}")
        if max_children < 0:
            raise ValueError(f"max_children must be >= 0, got {max_children}")


def open_dynamic_supervisor(
    max_children: int | None = None,
    *,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    backoff: Backoff | None = None,
    id: str = "dynamic_supervisor",
    rng: random.Random | None = None,
    name: str | None = None,
) -> AbstractAsyncContextManager[Supervisor]:
    """A one-for-one supervisor that starts empty; add children with `Supervisor.start_child`.

    As Elixir's DynamicSupervisor: children need no unique ids (address one
    by its started value when ids repeat), children that end for good (a
    normal exit of a TRANSIENT child, any exit of a TEMPORARY one) are
    forgotten, so churn does not grow it, and leaving the block stops all
    children at once, each within its own budget. `Supervisor.terminate_child`
    keeps the spec until `delete_child`. Significant children are not
    supported (as Elixir's, which has no auto_shutdown). *name* registers it
    in the current registry, as for `open_supervisor`.

    Raises:
        MaxChildrenError: from `Supervisor.start_child`, when *max_children* are
            already running (stopped children keep their spec, not their slot).
    """
    _check_max_children(max_children)
    return _open(
        (),
        id=id,
        strategy=Strategy.ONE_FOR_ONE,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
        backoff=backoff,
        max_children=max_children,
        rng=rng,
        dynamic=True,
        name=name,
    )


@final
class _SupervisorStart(_Startable[Supervisor]):
    """Runs a nested supervisor (static or dynamic); a stop request leaves its block."""

    __slots__ = ("children", "options")
    kind = "supervisor"

    def __init__(self, children: Sequence[ChildSpec], options: dict[str, Any]) -> None:
        self.children = children
        self.options = options

    def __repr__(self) -> str:
        return f"<start supervisor {self.options['id']!r}>"

    async def run(self, task_status: trio.TaskStatus[Supervisor], handle: _ChildHandle) -> None:
        async with _open(self.children, handle=handle, **self.options) as sup:
            stop = trio.Event()
            handle.on_stop(stop.set)
            task_status.started(sup)
            await stop.wait()


def supervisor_spec(
    children: Iterable[ChildSpec],
    *,
    id: str,
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    backoff: Backoff | None = None,
    auto_shutdown: AutoShutdown = "never",
    restart: Restart = Restart.PERMANENT,
    shutdown: float = math.inf,
    significant: bool = False,
    child_backoff: Backoff | None = None,
    rng: random.Random | None = None,
    name: str | None = None,
) -> ChildSpec[Supervisor]:
    """A `ChildSpec` that runs a nested supervisor (whose started value is its `Supervisor`).

    If the nested supervisor gives up, its parent sees that as the child's
    crash: escalation. *backoff* applies to its children; *child_backoff* to
    its own restarts by its parent. *name* registers each incarnation in the
    parent's registry scope (`whereis_supervisor`).
    """
    specs = _check_children(children)
    _check_options(strategy, max_restarts, max_seconds, auto_shutdown)
    for spec in specs:
        _check_significant(spec, auto_shutdown, id)
    start = _SupervisorStart(
        specs,
        {
            "id": id,
            "strategy": strategy,
            "max_restarts": max_restarts,
            "max_seconds": max_seconds,
            "backoff": backoff,
            "auto_shutdown": auto_shutdown,
            "rng": rng,
            "max_children": None,
            "name": name,
        },
    )
    return ChildSpec(
        id,
        start,
        restart=restart,
        shutdown=shutdown,
        significant=significant,
        backoff=child_backoff,
    )


def dynamic_supervisor_spec(
    *,
    id: str,
    max_children: int | None = None,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    backoff: Backoff | None = None,
    restart: Restart = Restart.PERMANENT,
    shutdown: float = math.inf,
    child_backoff: Backoff | None = None,
    rng: random.Random | None = None,
    name: str | None = None,
) -> ChildSpec[Supervisor]:
    """A `ChildSpec` that runs a nested dynamic supervisor (as `open_dynamic_supervisor`).

    Its started value is its `Supervisor`; add children with
    `Supervisor.start_child`. It stops like any nested supervisor: all its
    children at once, each within its own budget, the whole bounded by
    *shutdown* (unbounded by default). *backoff* applies to its children;
    *child_backoff* to its own restarts by its parent. *name* registers each
    incarnation in the parent's registry scope (`whereis_supervisor`).
    """
    _check_options(Strategy.ONE_FOR_ONE, max_restarts, max_seconds)
    _check_max_children(max_children)
    if backoff is not None and not isinstance(backoff, Backoff):
        raise TypeError(f"backoff must be a trioscope.Backoff or None, got {backoff!r}")
    start = _SupervisorStart(
        (),
        {
            "id": id,
            "strategy": Strategy.ONE_FOR_ONE,
            "max_restarts": max_restarts,
            "max_seconds": max_seconds,
            "backoff": backoff,
            "rng": rng,
            "max_children": max_children,
            "dynamic": True,
            "name": name,
        },
    )
    return ChildSpec(id, start, restart=restart, shutdown=shutdown, backoff=child_backoff)
