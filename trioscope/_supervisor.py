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
import logging
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, Literal, final

import attrs
import trio

from ._child_spec import (
    Backoff,
    ChildSpec,
    Restart,
    _ChildHandle,
    _is_int,
    _is_number,
    _Startable,
)
from ._errors import (
    ChildStateError,
    MaxChildrenError,
    RestartIntensityExceededError,
    StartError,
    UnknownChildError,
)

_log = logging.getLogger("trioscope.supervisor")

DEFAULT_MAX_RESTARTS: Final = 3
DEFAULT_MAX_SECONDS: Final = 5.0

JITTER_RANDOM: Final = random.Random()
"""The random source for backoff jitter when a supervisor is given none.

Tests register it with ``hypothesis.register_random`` so that failures replay.
"""


class Strategy(enum.Enum):
    """Which children a supervisor restarts when one fails."""

    ONE_FOR_ONE = "one_for_one"
    """Only the failed child."""
    ONE_FOR_ALL = "one_for_all"
    """All children: the others are stopped in reverse start order, then all restart in order."""
    REST_FOR_ONE = "rest_for_one"
    """The failed child and those started after it."""


ChildStatus = Literal["starting", "running", "stopping", "backoff", "stopped", "exited"]


@attrs.frozen
class ChildInfo:
    """One child of a supervisor, as `Supervisor.which_children` reports it."""

    id: str
    """The child's id from its spec."""
    status: ChildStatus
    """``running``, ``starting``, ``stopping``, ``backoff`` (waiting to restart),
    ``stopped`` (terminated, or exited and not to be restarted) or ``exited``
    (its exit is being handled)."""
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


class _Child:
    __slots__ = (
        "attempt",
        "done",
        "generation",
        "handle",
        "restart_at",
        "restarts",
        "scope",
        "spec",
        "started_at",
        "status",
        "stopping",
        "value",
    )

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.status: ChildStatus = "stopped"
        self.value: object = None
        self.restarts = 0
        self.attempt = 0  # consecutive backoff restarts, for the delay
        self.generation = 0
        self.scope: trio.CancelScope | None = None
        self.handle: _ChildHandle | None = None
        self.done: trio.Event | None = None
        self.stopping = False
        self.started_at = 0.0
        self.restart_at: float | None = None


class _Forward:
    """The ``task_status`` a child sees: marks it running and shields it once ready."""

    __slots__ = ("_child", "_status", "was_started")

    def __init__(self, status: trio.TaskStatus[Any], child: _Child) -> None:
        self._status: trio.TaskStatus[Any] | None = status
        self._child = child
        self.was_started = False

    def started(self, value: object = None) -> None:
        child = self._child
        self.was_started = True
        child.value = value
        child.status = "running"
        child.started_at = trio.current_time()
        # From now on only the supervisor stops it, one child at a time and in
        # order, even when the supervisor itself is being cancelled.
        assert child.scope is not None
        child.scope.shield = True
        status, self._status = self._status, None
        # Dropping the status frees the nursery.start() machinery (about 1 KB
        # per child) instead of keeping it for the child's whole life.
        assert status is not None
        status.started(value)


class _Exit:
    __slots__ = ("child", "error", "generation")

    def __init__(self, child: _Child, generation: int, error: BaseException | None) -> None:
        self.child = child
        self.generation = generation
        self.error = error


def _check_children(children: Iterable[ChildSpec]) -> list[ChildSpec]:
    specs = list(children)
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"children must be ChildSpec values, got {spec!r}")
        if spec.id in seen:
            raise ValueError(f"duplicate child id {spec.id!r}: ids must be unique in a supervisor")
        seen.add(spec.id)
    return specs


def _check_options(strategy: Strategy, max_restarts: int, max_seconds: float) -> None:
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


@final
class Supervisor:
    """A running supervisor; get one from `open_supervisor` or `open_dynamic_supervisor`."""

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
        dynamic: bool = False,
        handle: _ChildHandle | None = None,
    ) -> None:
        self.id = id
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.backoff = backoff
        self.max_children = max_children
        self.dynamic = dynamic
        self._rng = rng if rng is not None else JITTER_RANDOM
        self._children: dict[str, _Child] = {}
        self._waiting: dict[_Child, None] = {}  # children in backoff, in start order
        self._restart_times: deque[float] = deque()
        self._reports_send, self._reports_recv = trio.open_memory_channel[_Exit](math.inf)
        self._lock = trio.Lock()
        self._body_scope = trio.CancelScope()
        self._manager_scope = trio.CancelScope(shield=True)
        self._manager_done = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._closed = False
        self._error: BaseException | None = None
        self._interrupted: BaseException | None = None
        self._handle = handle  # from the parent, when nested

    def __repr__(self) -> str:
        counts = self.count_children()
        state = "closed" if self._closed else "running"
        return (
            f"<Supervisor {self.id!r} {self.strategy.name} "
            f"{counts.active}/{counts.specs} children {state}>"
        )

    # -- introspection -------------------------------------------------

    def which_children(self) -> list[ChildInfo]:
        """Every child, in start order."""
        return [
            ChildInfo(
                id=c.spec.id,
                status=c.status,
                value=c.value if c.status in ("running", "stopping") else None,
                restarts=c.restarts,
                kind=c.spec.kind,
                restart_at=c.restart_at if c.status == "backoff" else None,
            )
            for c in self._children.values()
        ]

    def count_children(self) -> ChildCounts:
        """Counts of children by kind and activity."""
        supervisors = sum(1 for c in self._children.values() if c.spec.kind == "supervisor")
        active = sum(
            1 for c in self._children.values() if c.status in ("running", "starting", "stopping")
        )
        return ChildCounts(
            specs=len(self._children),
            active=active,
            supervisors=supervisors,
            workers=len(self._children) - supervisors,
        )

    # -- control -------------------------------------------------------

    def _get(self, child_id: str) -> _Child:
        child = self._children.get(child_id)
        if child is None:
            raise UnknownChildError(self.id, child_id)
        return child

    def _check_open(self, child_id: str) -> None:
        if self._closing:
            child = self._children.get(child_id)
            raise ChildStateError(
                self.id,
                child_id,
                child.status if child is not None else "not started",
                "the supervisor is shutting down and starts no more children",
            )

    def _check_room(self) -> None:
        """Raise `MaxChildrenError` if a dynamic supervisor already runs its maximum."""
        limit = self.max_children
        if limit is None or len(self._children) < limit:
            return
        # Stopped children keep their spec but not their slot (as Elixir's max_children).
        if sum(1 for c in self._children.values() if c.status != "stopped") >= limit:
            raise MaxChildrenError(self.id, limit)

    async def _lock_fast(self) -> None:
        """Take the lock, without a trip through the scheduler when it is free.

        `trio.Lock` always checkpoints, which costs a scheduler round; the
        callers checkpoint anyway (starting a child, receiving a report).
        """
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def start_child(self, spec: ChildSpec) -> object:
        """Add a child at the end of the start order, start it, and return its started value.

        Raises:
            ValueError: a child with that id exists already.
            MaxChildrenError: a dynamic supervisor is full.
            StartError: the child failed to start (it is not kept).
        """
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"start_child takes a ChildSpec, got {spec!r}")
        await self._lock_fast()  # starting the child below is the checkpoint
        try:
            self._check_open(spec.id)
            if spec.id in self._children:
                raise ValueError(
                    f"supervisor {self.id!r} already has a child {spec.id!r}: ids must be unique"
                )
            self._check_room()
            child = _Child(spec)
            self._children[spec.id] = child
            try:
                error = await self._start(child)
            except BaseException:
                self._children.pop(spec.id, None)
                raise
            if error is not None:
                self._children.pop(spec.id, None)
                raise StartError(spec.id, self.id) from error
            return child.value
        finally:
            self._lock.release()

    async def terminate_child(self, child_id: str) -> None:
        """Stop a child within its shutdown budget; it stays stopped until `restart_child`.

        Raises:
            UnknownChildError: no such child.
        """
        async with self._lock:
            child = self._get(child_id)
            self._waiting.pop(child, None)
            if child.status in ("running", "starting", "stopping"):
                await self._stop(child)
            child.status = "stopped"
            child.restart_at = None

    async def restart_child(self, child_id: str) -> object:
        """Start a stopped child again; returns its started value.

        Raises:
            UnknownChildError: no such child.
            ChildStateError: the child is not stopped.
            MaxChildrenError: a dynamic supervisor already runs its maximum.
            StartError: it failed to start.
        """
        async with self._lock:
            child = self._get(child_id)
            self._check_open(child_id)
            if child.status != "stopped":
                raise ChildStateError(
                    self.id, child_id, child.status, "only a stopped child can be restarted"
                )
            self._check_room()
            child.restarts += 1
            error = await self._start(child)
            if error is not None:
                child.status = "stopped"
                raise StartError(child_id, self.id) from error
            return child.value

    def delete_child(self, child_id: str) -> None:
        """Forget a stopped child.

        Raises:
            UnknownChildError: no such child.
            ChildStateError: the child is not stopped.
        """
        child = self._get(child_id)
        if child.status != "stopped":
            raise ChildStateError(
                self.id, child_id, child.status, "terminate_child it before deleting it"
            )
        del self._children[child_id]

    # -- running children ----------------------------------------------

    async def _run_child(
        self, child: _Child, generation: int, *, task_status: trio.TaskStatus[Any]
    ) -> None:
        spec = child.spec
        handle = child.handle = _ChildHandle(child.restarts, spec.shutdown)
        forward = _Forward(task_status, child)
        del task_status  # only `forward` may keep it, and only until started()
        error: BaseException | None = None
        try:
            with trio.CancelScope() as scope:
                child.scope = scope
                try:
                    start = spec.start
                    if isinstance(start, _Startable):
                        await start.run(forward, handle)
                    else:
                        await start(task_status=forward)
                except Exception as exc:
                    if not forward.was_started:
                        raise  # nursery.start() hands it to whoever is starting the child
                    error = exc
                except (KeyboardInterrupt, SystemExit) as exc:
                    if not forward.was_started:
                        raise
                    # KeyboardInterrupt (or SystemExit) landed in this child:
                    # never swallowed, never restarted; the opener re-raises it.
                    child.stopping = True
                    self._interrupt(exc)
        finally:
            if forward.was_started:
                if child.stopping:
                    child.status = "stopped"
                else:
                    child.status = "exited"
                    self._reports_send.send_nowait(_Exit(child, generation, error))
                child.value = None
                child.scope = None
                child.handle = None
                # The report holds the error; this frame must not (a cycle
                # through the traceback would wait for the garbage collector).
                error = None
                if child.done is not None:
                    child.done.set()
        if not forward.was_started:
            raise RuntimeError(f"child {spec.id!r} returned without calling task_status.started()")

    async def _start(self, child: _Child) -> BaseException | None:
        """Start one child; return why it failed to start, if it did."""
        assert self._nursery is not None
        child.generation += 1
        child.status = "starting"
        child.stopping = False
        child.done = None
        child.restart_at = None
        try:
            await self._nursery.start(self._run_child, child, child.generation)
        except Exception as exc:
            child.status = "stopped"
            _log.error(
                "supervisor %r: child %r failed to start",
                self.id,
                child.spec.id,
                exc_info=exc,
                extra={"supervisor": self.id, "child": child.spec.id, "event": "start_failed"},
            )
            return exc
        except BaseException:
            child.status = "stopped"
            raise
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
        return None

    async def _stop(self, child: _Child) -> None:
        """Stop one running child within its shutdown budget and wait until it has exited."""
        if child.scope is None or child.status not in ("running", "starting", "stopping"):
            return  # not running (an "exited" child's report is still on its way)
        scope = child.scope
        done = child.done
        if done is None:
            done = child.done = trio.Event()
        if not child.stopping:
            child.stopping = True
            child.status = "stopping"
            now = trio.current_time()
            # A nested supervisor's own budget bounds its children's: when its
            # parent cancels it, they are cancelled too.
            deadline = min(now + child.spec.shutdown, self._parent_deadline())
            handle = child.handle
            if deadline <= now or handle is None or not isinstance(child.spec.start, _Startable):
                if handle is not None:
                    handle.deadline = now
                scope.cancel()
            else:
                handle.deadline = deadline
                handle.request_stop()
                scope.deadline = min(scope.deadline, deadline)
        await done.wait()
        _log.info(
            "supervisor %r stopped child %r",
            self.id,
            child.spec.id,
            extra={"supervisor": self.id, "child": child.spec.id, "event": "stop"},
        )

    def _parent_deadline(self) -> float:
        return self._handle.deadline if self._handle is not None else math.inf

    async def _stop_all(self) -> None:
        for child in reversed(list(self._children.values())):
            await self._stop(child)
        # Children waiting to restart, or whose exit is not handled yet, will not run again.
        for child in self._children.values():
            if child.status in ("backoff", "exited"):
                child.status = "stopped"
                child.restart_at = None
        self._waiting.clear()

    # -- deciding --------------------------------------------------------

    async def _manage(self) -> None:
        try:
            with self._manager_scope:
                while True:
                    report: _Exit | None = None
                    deadline = min(
                        (c.restart_at for c in self._waiting if c.restart_at is not None),
                        default=math.inf,
                    )
                    if deadline == math.inf:
                        report = await self._reports_recv.receive()
                    else:
                        with trio.move_on_at(deadline):
                            report = await self._reports_recv.receive()
                    # Receiving was the checkpoint (see _lock_fast).
                    await self._lock_fast()
                    try:
                        if self._closing:
                            return
                        if report is not None:
                            await self._on_exit(report)
                        await self._restart_due()
                    finally:
                        self._lock.release()
        except (KeyboardInterrupt, SystemExit) as exc:
            self._interrupt(exc)  # it landed here: see _interrupt
        finally:
            self._manager_done.set()

    async def _on_exit(self, report: _Exit) -> None:
        child = report.child
        if (
            child.generation != report.generation
            or child.status != "exited"
            or self._children.get(child.spec.id) is not child
        ):
            return  # stale: it was stopped or restarted since
        spec = child.spec
        error = report.error
        _log.log(
            logging.ERROR if error is not None else logging.INFO,
            "supervisor %r: child %r exited %s",
            self.id,
            spec.id,
            "normally" if error is None else f"with {type(error).__name__}: {error}",
            # Services and supervisors write their own crash reports with the
            # traceback; a plain Trio child has nobody else to tell.
            exc_info=None if isinstance(spec.start, _Startable) else error,
            extra={
                "supervisor": self.id,
                "child": spec.id,
                "event": "exit",
                "reason": "normal" if error is None else repr(error),
            },
        )
        if error is None and spec.significant:
            _log.info(
                "supervisor %r stops: significant child %r exited normally",
                self.id,
                spec.id,
                extra={"supervisor": self.id, "child": spec.id, "event": "auto_shutdown"},
            )
            child.status = "stopped"
            await self._finish(None)
            return
        restart = spec.restart is Restart.PERMANENT or (
            spec.restart is Restart.TRANSIENT and error is not None
        )
        if not restart:
            if spec.restart is Restart.TEMPORARY or self.dynamic:
                # A dynamic supervisor keeps no record of children that are
                # done (as Elixir's), so churn does not grow it without bound.
                del self._children[spec.id]
            else:
                child.status = "stopped"
            return
        await self._on_failure(child, error, ran=True)

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
            _log.error(
                "supervisor %r gives up: more than %d restarts in %g s (last: child %r)",
                self.id,
                self.max_restarts,
                self.max_seconds,
                child.spec.id,
                extra={"supervisor": self.id, "child": child.spec.id, "event": "give_up"},
            )
            child.status = "stopped"
            await self._finish(give_up)
            return
        if self.strategy is Strategy.ONE_FOR_ONE:
            group = [child]
        else:
            children = list(self._children.values())
            if self.strategy is Strategy.ONE_FOR_ALL:
                members = children
            else:
                members = children[children.index(child) :]
            group = [c for c in members if c is child or c.status != "stopped"]
            for other in reversed(group):
                if other is not child:
                    self._waiting.pop(other, None)
                    await self._stop(other)
            # Temporary children stopped by a strategy are not restarted (as in OTP).
            for other in group:
                if other is not child and other.spec.restart is Restart.TEMPORARY:
                    del self._children[other.spec.id]
            group = [c for c in group if c is child or c.spec.restart is not Restart.TEMPORARY]
        backoff = child.spec.backoff or self.backoff
        delay = 0.0
        if backoff is not None:
            if ran and now - child.started_at >= backoff.reset_after:
                child.attempt = 0
            delay = backoff.delay(child.attempt, self._rng)
            child.attempt += 1
        restart_at = now + delay
        for member in group:
            member.status = "backoff"
            member.restart_at = restart_at
            self._waiting.pop(member, None)
            self._waiting[member] = None
        if delay:
            _log.info(
                "supervisor %r: child %r restarts in %.3f s",
                self.id,
                child.spec.id,
                delay,
                extra={"supervisor": self.id, "child": child.spec.id, "event": "backoff"},
            )

    async def _restart_due(self) -> None:
        while self._waiting and self._error is None and not self._closing:
            now = trio.current_time()
            due = [c for c in self._waiting if c.restart_at is not None and c.restart_at <= now]
            if not due:
                return
            if len(due) > 1:
                order = {c: i for i, c in enumerate(self._children.values())}
                due.sort(key=order.__getitem__)
            for child in due:
                del self._waiting[child]
                child.restarts += 1
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
                error = await self._start(child)
                if error is not None:
                    # A failed restart is another failure of that child.
                    await self._on_failure(child, error, ran=False)
                    break

    async def _finish(self, error: BaseException | None) -> None:
        """Give up (with *error*) or auto-shut down (``None``): stop everything, end the body."""
        self._error = error
        self._closing = True
        await self._stop_all()
        self._body_scope.cancel()

    def _interrupt(self, exc: BaseException) -> None:
        """A KeyboardInterrupt (or SystemExit) arrived in one of this supervisor's tasks.

        The first one stops the supervisor in order (as leaving the block
        does); one that arrives while it is stopping cancels everything at
        once. The opener re-raises it, bare, after the nursery has closed.
        """
        if self._interrupted is None:
            self._interrupted = exc
        if self._closing:
            self._kill()
        else:
            self._body_scope.cancel()

    def _kill(self) -> None:
        """Cancel the manager and every child at once, nested supervisors' children too."""
        self._closing = True
        self._manager_scope.cancel()
        for child in self._children.values():
            if isinstance(child.value, Supervisor):
                child.value._kill()
            if child.scope is not None:
                child.scope.cancel()

    async def _shutdown(self) -> None:
        self._closing = True
        async with self._lock:
            self._manager_scope.cancel()
            await self._stop_all()
        self._closed = True


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
    handle: _ChildHandle | None = None,
    dynamic: bool = False,
) -> AsyncIterator[Supervisor]:
    specs = _check_children(children)
    _check_options(strategy, max_restarts, max_seconds)
    if backoff is not None and not isinstance(backoff, Backoff):
        raise TypeError(f"backoff must be a trioscope.Backoff or None, got {backoff!r}")
    if not isinstance(id, str):
        raise TypeError(f"supervisor id must be a str, got {id!r}")
    sup = Supervisor(
        id=id,
        strategy=strategy,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
        backoff=backoff,
        max_children=max_children,
        rng=rng,
        dynamic=dynamic,
        handle=handle,
    )
    for spec in specs:
        sup._children[spec.id] = _Child(spec)
    # Unwrap policy: nothing but Cancelled is raised inside this nursery (child
    # wrappers catch everything else and report it), and the body's own
    # exception is caught here and re-raised after the nursery has closed, so
    # the opener sees bare exceptions, never an ExceptionGroup.
    body_error: BaseException | None = None
    manager_started = False
    async with trio.open_nursery() as nursery:
        sup._nursery = nursery
        try:
            async with sup._lock:
                for child in list(sup._children.values()):
                    error = await sup._start(child)
                    if error is not None:
                        await sup._stop_all()
                        sup._closing = True
                        raise StartError(child.spec.id, id) from error
            nursery.start_soon(sup._manage, name=f"trioscope supervisor {id!r}")
            manager_started = True
            with sup._body_scope:
                yield sup
        except BaseException as exc:
            body_error = exc
        with trio.CancelScope(shield=True):
            try:
                await sup._shutdown()
                if manager_started:
                    await sup._manager_done.wait()
            except BaseException as exc:
                # Only KeyboardInterrupt (say, a second Ctrl-C) gets here, as
                # nothing else reaches into this shielded scope: the orderly
                # stop is taking too long, so cancel everything at once.
                sup._interrupt(exc)
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
    id: str = "supervisor",
    rng: random.Random | None = None,
) -> AbstractAsyncContextManager[Supervisor]:
    """Start *children* in order, each awaited until ready, and supervise them.

    Leaving the block stops them in reverse start order, each within its
    shutdown budget.

    Args:
        strategy: Which children restart when one fails.
        max_restarts: More restarts than this within *max_seconds* make the
            supervisor give up.
        backoff: Delays before restarts (a child's own spec overrides it).
        id: The supervisor's name in logs and errors.
        rng: The random source for backoff jitter (default `JITTER_RANDOM`).

    Raises:
        StartError: a child failed to start (those started before it were stopped).
        RestartIntensityExceededError: the supervisor gave up.
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
    )


def open_dynamic_supervisor(
    max_children: int | None = None,
    *,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    backoff: Backoff | None = None,
    id: str = "dynamic_supervisor",
    rng: random.Random | None = None,
) -> AbstractAsyncContextManager[Supervisor]:
    """A one-for-one supervisor that starts empty; add children with `Supervisor.start_child`.

    Children that end for good (a normal exit of a TRANSIENT child, any exit
    of a TEMPORARY one) are forgotten, as in Elixir, so churn does not grow
    it; `Supervisor.terminate_child` keeps the spec until `delete_child`.

    Raises:
        MaxChildrenError: from `Supervisor.start_child`, when *max_children* are
            already running (stopped children keep their spec, not their slot).
    """
    if max_children is not None:
        if not _is_int(max_children):
            raise TypeError(f"max_children must be None or an int, got {max_children!r}")
        if max_children < 0:
            raise ValueError(f"max_children must be >= 0, got {max_children}")
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
    )


@final
class _SupervisorStart(_Startable):
    __slots__ = ("children", "options")
    kind = "supervisor"

    def __init__(self, children: Sequence[ChildSpec], options: dict[str, Any]) -> None:
        self.children = children
        self.options = options

    def __repr__(self) -> str:
        return f"<start supervisor {self.options['id']!r}>"

    async def run(self, task_status: trio.TaskStatus[Any], handle: _ChildHandle) -> None:
        async with _open(self.children, max_children=None, handle=handle, **self.options) as sup:
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
    restart: Restart = Restart.PERMANENT,
    shutdown: float = math.inf,
    significant: bool = False,
    child_backoff: Backoff | None = None,
    rng: random.Random | None = None,
) -> ChildSpec:
    """A `ChildSpec` that runs a nested supervisor (whose started value is its `Supervisor`).

    If the nested supervisor gives up, its parent sees that as the child's
    crash: escalation. *backoff* applies to its children; *child_backoff* to
    its own restarts by its parent.
    """
    specs = _check_children(children)
    _check_options(strategy, max_restarts, max_seconds)
    start = _SupervisorStart(
        specs,
        {
            "id": id,
            "strategy": strategy,
            "max_restarts": max_restarts,
            "max_seconds": max_seconds,
            "backoff": backoff,
            "rng": rng,
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
