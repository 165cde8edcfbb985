"""Plain Trio children that a test drives, shared by the supervisor tests."""

from __future__ import annotations

import functools
from typing import Any

import trio

from trioscope import ChildSpec


class Boom(Exception):
    """A child's crash."""


class Children:
    """Plain Trio children that the test drives; each start, stop, crash and exit is recorded.

    A child started as ``spec("a")`` is ready at once (its started value is
    ``"a"``) and then runs until the test calls ``crash("a")`` or ``exit("a")``,
    or its supervisor cancels it.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.crashes: list[Boom] = []
        self.fail_start: dict[str, BaseException] = {}
        self._wake: dict[str, trio.Event] = {}
        self._outcome: dict[str, BaseException | None] = {}

    def spec(self, name: str, **options: Any) -> ChildSpec:
        return ChildSpec(name, functools.partial(self._run, name), **options)

    async def _run(
        self, name: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.events.append(f"start {name}")
        error = self.fail_start.pop(name, None)
        if error is not None:
            raise error
        wake = self._wake[name] = trio.Event()
        try:
            task_status.started(name)
            await wake.wait()
        except trio.Cancelled:
            self.events.append(f"stop {name}")
            raise
        error = self._outcome.pop(name)
        if error is None:
            self.events.append(f"exit {name}")
            return
        self.events.append(f"crash {name}")
        raise error

    def crash(self, name: str) -> Boom:
        error = self._outcome[name] = Boom(name)
        self.crashes.append(error)
        self._wake[name].set()
        return error

    def exit(self, name: str) -> None:
        self._outcome[name] = None
        self._wake[name].set()

    def take(self) -> list[str]:
        """The events since the last call."""
        events, self.events[:] = list(self.events), []
        return events
