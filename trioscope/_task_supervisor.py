"""Task supervisors: supervised fire-and-forget tasks (Elixir's Task.Supervisor).

::

    import trio, trioscope

    async def main() -> None:
        async with trioscope.open_task_supervisor(max_children=10) as tasks:
            job = tasks.start_soon(trio.sleep_forever)  # a failure would be logged, not raised
            assert tasks.children() == [job]
            await tasks.terminate_child(job)
            assert await tasks.run(trio.to_thread.run_sync, sum, [1, 2]) == 3

    trio.run(main)

A task supervisor nests in a tree through `task_supervisor_spec`; stopping it
cancels its tasks and waits for them to end, within its shutdown budget.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar, final

import attrs
import outcome
import trio

from ._child_spec import Backoff, ChildSpec, Restart, _ChildHandle, _Startable
from ._errors import MaxChildrenError, ServiceUnavailableError, UnknownChildError
from ._exits import describe as _describe
from ._exits import read_exit
from ._logging import wants
from ._supervisor import _check_max_children, _keep_nursery_exit, _lookup, _registered

_log = logging.getLogger("trioscope.tasks")
R = TypeVar("R")


@attrs.frozen
class TaskInfo:
    """One task a `TaskSupervisor` runs, as `TaskSupervisor.children` reports it."""

    id: int
    """A serial number, unique within its task supervisor."""
    name: str
    """The ``name=`` given to `TaskSupervisor.start_soon`, else the function's ``__qualname__``."""
    started_at: float
    """The `trio.current_time` at which it was started."""


class _Task:
    __slots__ = ("ended", "info", "scope", "terminated")

    def __init__(self, info: TaskInfo, scope: trio.CancelScope) -> None:
        self.info = info
        self.scope = scope
        self.terminated = False  # by terminate_child
        self.ended: trio.Event | None = None  # made by terminate_child, which waits on it


def _label(fn: object) -> str:
    return str(getattr(fn, "__qualname__", fn))


@final
class TaskSupervisor:
    """Runs tasks whose failures never cancel anything else; from `open_task_supervisor`."""

    _nursery: trio.Nursery  # set when its block opens

    def __init__(self, id: str, *, name: str | None, max_children: int | None) -> None:
        self.id = id
        """Its name in logs and errors."""
        self.name = name
        """The name it is registered under (`whereis_task_supervisor`), or ``None``."""
        self.max_children = max_children
        """How many tasks it runs at most (``None``: no limit)."""
        self.failures = 0
        """How many tasks started with `start_soon` have failed."""
        # `cancel` cancels these rather than the nursery's own scope, so each
        # Cancelled ends at the scope it came from, as Trio intends.
        self._body_scope = trio.CancelScope()
        self._tasks: dict[int, _Task] = {}
        self._serials = itertools.count(1)
        self._cancelled = False
        self._closed = False  # its block has exited
        self._interrupted: BaseException | None = None

    def _interrupt(self, exc: BaseException) -> None:
        # KeyboardInterrupt or SystemExit in a task: stop everything, and
        # the block re-raises it bare once the tasks have ended.
        if self._interrupted is None:
            self._interrupted = exc
        self.cancel()

    def cancel(self) -> None:
        """Cancel every task it runs, and the body of its block, which then exits without error."""
        self._cancelled = True
        self._body_scope.cancel()
        for task in self._tasks.values():
            task.scope.cancel()

    def __repr__(self) -> str:
        return f"<TaskSupervisor {self.id!r} {len(self._tasks)} tasks>"

    # -- introspection -------------------------------------------------

    def children(self) -> list[TaskInfo]:
        """The tasks running now (started with `start_soon` or `run`), in start order."""
        return [task.info for task in self._tasks.values()]

    def count_children(self) -> int:
        """How many tasks are running now."""
        return len(self._tasks)

    # -- starting and stopping tasks -------------------------------------

    def _add(self, fn: object, name: object) -> _Task:
        limit = self.max_children
        if limit is not None and len(self._tasks) >= limit:
            raise MaxChildrenError(self.id, limit)
        label = name if isinstance(name, str) else _label(fn if name is None else name)
        info = TaskInfo(id=next(self._serials), name=label, started_at=trio.current_time())
        task = _Task(info, trio.CancelScope())
        if self._cancelled:
            task.scope.cancel()
        self._tasks[info.id] = task
        return task

    def _end(self, task: _Task) -> None:
        del self._tasks[task.info.id]
        if task.ended is not None:
            task.ended.set()

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: object, name: object = None
    ) -> TaskInfo:
        """Run ``fn(*args)`` as a supervised task; its failure is logged and counted.

        Returns the task's `TaskInfo` (for `terminate_child`).

        Raises:
            MaxChildrenError: it already runs *max_children* tasks.
        """
        task = self._add(fn, name)
        try:
            self._nursery.start_soon(self._guard, task, fn, args, name=name or fn)
        except BaseException:
            del self._tasks[task.info.id]  # it never ran
            raise
        return task.info

    async def _guard(
        self, task: _Task, fn: Callable[..., Awaitable[object]], args: tuple[object, ...]
    ) -> None:
        # Unwrap policy (trioscope._exits): the task's own scope has caught the
        # Cancelled that `cancel` caused; what else it raised is its failure,
        # logged and counted, except interrupts, which stop everything and
        # are raised bare by the block; a Cancelled from the nursery's scope
        # (the body failed) goes on to that scope.
        cancelled: BaseException | None = None
        try:
            with task.scope:
                await fn(*args)
        except BaseException as exc:
            read = read_exit(exc)
            del exc
            cancelled = read.cancelled
            if read.error is not None:
                self.failures += 1
                if wants(_log, logging.ERROR):
                    _log.error(
                        "task supervisor %r: task %s failed with %s",
                        self.id,
                        _label(fn),
                        _describe(read.error),
                        exc_info=read.error,
                        extra={"supervisor": self.id, "event": "task_failed"},
                    )
            if read.interrupt is not None:
                self._interrupt(read.interrupt)
        finally:
            self._end(task)
        if cancelled is not None:
            raise cancelled

    async def terminate_child(self, task: TaskInfo | int) -> None:
        """Cancel one task (given by its `TaskInfo` or its id) and wait until it has ended.

        A `run` caller waiting for it gets `ServiceUnavailableError`.

        Raises:
            UnknownChildError: no such task is running (it may have ended).
        """
        key = task.id if isinstance(task, TaskInfo) else task
        found = self._tasks.get(key)
        if found is None:
            await trio.lowlevel.checkpoint()
            error = UnknownChildError(self.id, str(key))
            error.args = (
                f"task supervisor {self.id!r} has no task {key!r}; children() lists the tasks "
                "it runs (this one may have ended)",
            )
            raise error
        found.terminated = True
        found.scope.cancel()
        if found.ended is None:
            found.ended = trio.Event()
        await found.ended.wait()

    async def run(self, fn: Callable[..., Awaitable[R]], *args: object) -> R:
        """Run ``fn(*args)`` under this supervisor and return its result or raise its error here.

        If the caller is cancelled, the task is cancelled too, and the caller
        waits until it has ended.

        Raises:
            ServiceUnavailableError: the task supervisor was cancelled or closed,
                or the task was terminated, before the task finished.
            MaxChildrenError: it already runs *max_children* tasks.
        """
        label = _label(fn)
        if self._cancelled or self._closed:
            await trio.lowlevel.checkpoint()
            why = (
                "it has closed (its async with block has exited)"
                if self._closed
                else "it was cancelled (TaskSupervisor.cancel())"
            )
            raise ServiceUnavailableError(
                f"task supervisor {self.id!r}", f"{why}, so {label} did not run"
            )
        try:
            task = self._add(fn, None)
        except MaxChildrenError:
            await trio.lowlevel.checkpoint()
            raise
        done = trio.Event()
        result: list[outcome.Outcome[R]] = []

        async def runner() -> None:
            # As `_guard`, but the failure goes to the caller instead of the log.
            cancelled: BaseException | None = None
            try:
                with task.scope:
                    result.append(outcome.Value(await fn(*args)))
            except BaseException as exc:
                read = read_exit(exc)
                del exc
                if read.error is not None:
                    result.append(outcome.Error(read.error))
                if read.interrupt is not None:
                    self._interrupt(read.interrupt)
                cancelled = read.cancelled
            finally:
                self._end(task)
                done.set()
            if cancelled is not None:
                raise cancelled

        try:
            self._nursery.start_soon(runner, name=fn)
        except BaseException:
            del self._tasks[task.info.id]  # it never ran
            raise
        try:
            await done.wait()
        finally:
            if not done.is_set():
                # As with a direct call, the caller goes on only once the task has ended.
                task.scope.cancel()
                with trio.CancelScope(shield=True):
                    await done.wait()
        if not result:
            if task.terminated:
                reason = f"its task {label} was terminated (terminate_child) before it finished"
            elif task.scope.cancel_called:  # by cancel(): a caller who left is not here
                reason = f"it was cancelled (TaskSupervisor.cancel()) before {label} finished"
            else:
                reason = f"it closed before {label} finished"
            raise ServiceUnavailableError(f"task supervisor {self.id!r}", reason)
        return result[0].unwrap()


@asynccontextmanager
async def _open(
    id: str, name: str | None, max_children: int | None
) -> AsyncIterator[TaskSupervisor]:
    if not isinstance(id, str):
        raise TypeError(f"task supervisor id must be a str, got {id!r}")
    # Unwrap policy: the tasks' wrappers catch every Exception (and turn an
    # interrupt into a cancel of everything), so only the body can raise inside
    # this nursery; keep its exception and raise it after, bare.
    supervisor = TaskSupervisor(id, name=name, max_children=max_children)
    body_error: BaseException | None = None
    with _registered("task supervisor", name, supervisor):
        try:
            async with trio.open_nursery() as nursery:
                supervisor._nursery = nursery
                try:
                    with supervisor._body_scope:
                        yield supervisor
                except BaseException as exc:
                    body_error = exc
                    nursery.cancel_scope.cancel()
        except BaseException as exc:
            # A Ctrl-C delivered to this task while the nursery waits for its
            # tasks would come out wrapped in a group: raised bare below.
            if not _keep_nursery_exit(exc, supervisor._interrupt):
                raise
    supervisor._closed = True
    if supervisor._interrupted is not None:
        raise supervisor._interrupted
    if body_error is not None:
        raise body_error


def open_task_supervisor(
    id: str = "tasks", *, name: str | None = None, max_children: int | None = None
) -> AbstractAsyncContextManager[TaskSupervisor]:
    """Open a task supervisor; like a nursery, leaving the block waits for its tasks.

    If the body raises, the tasks are cancelled and the body's exception is
    raised as it is (never inside an ExceptionGroup).

    Args:
        id: Its name in logs and errors.
        name: Register it under this name in the current registry for the
            block's duration; find it with `whereis_task_supervisor`.
        max_children: How many tasks it runs at most; `TaskSupervisor.start_soon`
            and `TaskSupervisor.run` past it raise `MaxChildrenError`.

    Raises:
        NoRegistryError: a *name*, and no registry is open.
        AlreadyRegisteredError: the *name* is taken.
    """
    _check_max_children(max_children)
    return _open(id, name, max_children)


def whereis_task_supervisor(name: str) -> TaskSupervisor | None:
    """The task supervisor registered as *name*, seen from here, or ``None``.

    Raises:
        NoRegistryError: no registry is open around the current task.
        TypeError: *name* holds something that is not a `TaskSupervisor`.
    """
    return _lookup(name, TaskSupervisor, "whereis_task_supervisor")


@final
class _TaskSupervisorStart(_Startable[TaskSupervisor]):
    """Runs a nested task supervisor; a stop request cancels its tasks and leaves its block."""

    __slots__ = ("id", "max_children", "name")
    kind = "supervisor"

    def __init__(self, id: str, name: str | None, max_children: int | None) -> None:
        self.id = id
        self.name = name
        self.max_children = max_children

    def __repr__(self) -> str:
        return f"<start task supervisor {self.id!r}>"

    async def run(self, task_status: trio.TaskStatus[TaskSupervisor], handle: _ChildHandle) -> None:
        async with _open(self.id, self.name, self.max_children) as tasks:
            # `cancel` cancels the body (this wait) too: the block then waits
            # for the tasks to end and exits without error.
            handle.on_stop(tasks.cancel)
            task_status.started(tasks)
            await trio.sleep_forever()


def task_supervisor_spec(
    *,
    id: str,
    max_children: int | None = None,
    restart: Restart = Restart.PERMANENT,
    shutdown: float = math.inf,
    child_backoff: Backoff | None = None,
    name: str | None = None,
) -> ChildSpec[TaskSupervisor]:
    """A `ChildSpec` that runs a nested task supervisor (as `open_task_supervisor`).

    Its started value is its `TaskSupervisor`. Stopping it cancels its tasks
    and waits for them to end (cleanup they shield runs), bounded by
    *shutdown* (unbounded by default); it shows as kind ``"supervisor"``.
    *child_backoff* delays its own restarts by its parent. *name* registers
    each incarnation in the parent's registry scope (`whereis_task_supervisor`).
    """
    _check_max_children(max_children)
    start = _TaskSupervisorStart(id, name, max_children)
    return ChildSpec(id, start, restart=restart, shutdown=shutdown, backoff=child_backoff)
