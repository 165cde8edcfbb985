"""Task supervisors: supervised fire-and-forget tasks (Elixir's Task.Supervisor).

::

    import trio, trioscope

    async def main() -> None:
        async with trioscope.open_task_supervisor() as tasks:
            tasks.start_soon(trio.sleep, 0)          # a failure would be logged, not raised
            assert await tasks.run(trio.to_thread.run_sync, sum, [1, 2]) == 3

    trio.run(main)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar, final

import outcome
import trio

from ._errors import ServiceUnavailableError
from ._exits import read_exit
from ._logging import wants

_log = logging.getLogger("trioscope.tasks")
R = TypeVar("R")


@final
class TaskSupervisor:
    """Runs tasks whose failures never cancel anything else; from `open_task_supervisor`."""

    def __init__(self, nursery: trio.Nursery, name: str) -> None:
        self._nursery = nursery
        self.name = name
        self.failures = 0
        """How many tasks started with `start_soon` have failed."""
        # `cancel` cancels these rather than the nursery's own scope, so each
        # Cancelled ends at the scope it came from, as Trio intends.
        self._body_scope = trio.CancelScope()
        self._task_scopes: set[trio.CancelScope] = set()
        self._cancelled = False
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
        for scope in self._task_scopes:
            scope.cancel()

    @contextmanager
    def _task_scope(self) -> Iterator[trio.CancelScope]:
        with trio.CancelScope() as scope:
            if self._cancelled:
                scope.cancel()
            self._task_scopes.add(scope)
            try:
                yield scope
            finally:
                self._task_scopes.discard(scope)

    def __repr__(self) -> str:
        return f"<TaskSupervisor {self.name!r} {len(self._nursery.child_tasks)} tasks>"

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: object, name: object = None
    ) -> None:
        """Run ``fn(*args)`` as a supervised task; its failure is logged and counted."""
        self._nursery.start_soon(self._guard, fn, args, name=name or fn)

    async def _guard(self, fn: Callable[..., Awaitable[object]], args: tuple[object, ...]) -> None:
        # Unwrap policy (trioscope._exits): the task's own scope has caught the
        # Cancelled that `cancel` caused; what else it raised is its failure,
        # logged and counted, except interrupts, which stop everything and
        # are raised bare by the block; a Cancelled from the nursery's scope
        # (the body failed) goes on to that scope.
        cancelled: BaseException | None = None
        try:
            with self._task_scope():
                await fn(*args)
        except BaseException as exc:
            read = read_exit(exc)
            del exc
            cancelled = read.cancelled
            if read.error is not None:
                self.failures += 1
                if wants(_log, logging.ERROR):
                    _log.error(
                        "task supervisor %r: task %s failed",
                        self.name,
                        getattr(fn, "__qualname__", fn),
                        exc_info=read.error,
                        extra={"supervisor": self.name, "event": "task_failed"},
                    )
            if read.interrupt is not None:
                self._interrupt(read.interrupt)
        if cancelled is not None:
            raise cancelled

    async def run(self, fn: Callable[..., Awaitable[R]], *args: object) -> R:
        """Run ``fn(*args)`` under this supervisor and return its result or raise its error here.

        If the caller is cancelled, the task is cancelled too, and the caller
        waits until it has ended.

        Raises:
            ServiceUnavailableError: the task supervisor closed before the task finished.
        """
        done = trio.Event()
        result: list[outcome.Outcome[R]] = []

        async def runner(*, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            # As `_guard`, but the failure goes to the caller instead of the log.
            cancelled: BaseException | None = None
            try:
                with self._task_scope() as scope:
                    task_status.started(scope)
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
                done.set()
            if cancelled is not None:
                raise cancelled

        scope = await self._nursery.start(runner)
        try:
            await done.wait()
        finally:
            if not done.is_set():
                # As with a direct call, the caller goes on only once the task has ended.
                scope.cancel()
                with trio.CancelScope(shield=True):
                    await done.wait()
        if not result:
            raise ServiceUnavailableError(
                f"task supervisor {self.name!r}",
                f"it closed before {getattr(fn, '__qualname__', fn)} finished",
            )
        return result[0].unwrap()


@asynccontextmanager
async def open_task_supervisor(name: str = "tasks") -> AsyncIterator[TaskSupervisor]:
    """Open a task supervisor; like a nursery, leaving the block waits for its tasks.

    If the body raises, the tasks are cancelled and the body's exception is
    raised as it is (never inside an ExceptionGroup).
    """
    # Unwrap policy: the tasks' wrappers catch every Exception (and turn an
    # interrupt into a cancel of everything), so only the body can raise inside
    # this nursery; keep its exception and raise it after, bare.
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        supervisor = TaskSupervisor(nursery, name)
        try:
            with supervisor._body_scope:
                yield supervisor
        except BaseException as exc:
            body_error = exc
            nursery.cancel_scope.cancel()
    if supervisor._interrupted is not None:
        raise supervisor._interrupted
    if body_error is not None:
        raise body_error
