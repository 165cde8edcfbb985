"""Typing checks that must FAIL mypy: each line with an E comment must be reported there."""

from __future__ import annotations

import trio

import trioscope
from trioscope import ChildSpec, Supervisor


async def echo(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started(8080)


async def wrong(sup: Supervisor) -> None:
    port: str = await sup.start_child(ChildSpec("echo", echo))  # E: int is not str
    nested: ChildSpec[int] = trioscope.supervisor_spec([], id="x")  # E: a Supervisor spec
    tasks: ChildSpec[Supervisor] = trioscope.task_supervisor_spec(id="t")  # E: TaskSupervisor
    found: trioscope.TaskSupervisor | None = trioscope.whereis_supervisor("x")  # E: kind


def app() -> None:
    trioscope.run([ChildSpec("echo", echo)], max_restart=3)  # E: misspelt option
    trioscope.run([ChildSpec("echo", echo)], strategy="one_for_one")  # E: a Strategy, not a str
    trioscope.run([ChildSpec("echo", echo)], on_started=lambda sup, extra: None)  # E: one arg
