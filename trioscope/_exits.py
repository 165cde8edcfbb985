"""How a supervised task ended: one place that reads an exit, so every wrapper reads it alike.

A task's exception may be bare or an `ExceptionGroup` from a nursery inside
it: ``[Cancelled, ValueError]`` when a subtask fails while being cancelled,
``[SystemExit]`` when a subtask calls `sys.exit`. Wrappers (a supervisor's
child, a task supervisor's task, a service's handler) catch everything and
hand it here. The policy is "everything but Cancelled is the exit's reason":

- `trio.Cancelled` leaves are dropped. The wrappers catch *outside* the cancel
  scope they own, so Trio has already removed the Cancelled that scope caught;
  a Cancelled from any other scope must propagate, and the caller re-raises it.
- `KeyboardInterrupt` and `SystemExit` are interrupts: never a crash to
  restart from, always raised again, bare, by whoever opened the tree.
- What is left (any other `BaseException`, pytest's ``Failed`` included) is
  the reason; a group that holds a single exception is reduced to it.
"""

from __future__ import annotations

import sys
from typing import Final

import trio

if sys.version_info < (3, 11):  # pragma: no cover - Trio brings the backport there
    from exceptiongroup import BaseExceptionGroup

_INTERRUPTS: Final = (KeyboardInterrupt, SystemExit)


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _reduce(exc: BaseException) -> BaseException:
    """A group of exactly one exception (at any depth) is that exception."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class Exit:
    """An exception read by the policy above."""

    __slots__ = ("cancelled", "error", "interrupt")

    def __init__(
        self,
        cancelled: BaseException | None,
        interrupt: BaseException | None,
        error: BaseException | None,
    ) -> None:
        self.cancelled = cancelled
        """The `trio.Cancelled` part, if any: not the wrapper's to keep."""
        self.interrupt = interrupt
        """The first `KeyboardInterrupt`/`SystemExit`, bare."""
        self.error = error
        """Everything else: the reason the task ended abnormally."""


def read_exit(exc: BaseException) -> Exit:
    """Split *exc* into its Cancelled part, its first interrupt and the rest."""
    if not isinstance(exc, BaseExceptionGroup):
        # The common case: a bare exception, no allocation beyond the result.
        if isinstance(exc, trio.Cancelled):
            return Exit(exc, None, None)
        if isinstance(exc, _INTERRUPTS):
            return Exit(None, exc, None)
        return Exit(None, None, exc)
    cancelled, rest = exc.split(trio.Cancelled)
    interrupts: BaseException | None = None
    if rest is not None:
        interrupts, rest = rest.split(_INTERRUPTS)
    return Exit(
        cancelled,
        _first_leaf(interrupts) if interrupts is not None else None,
        _reduce(rest) if rest is not None else None,
    )


def describe(error: BaseException) -> str:
    """``Type: message`` for logs and errors, or just ``Type`` when the message is empty."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
