"""Typing checks that must PASS mypy --strict: child specs carry their started value's type."""

from __future__ import annotations

from typing import assert_type

import trio

import trioscope
from trioscope import ChildSpec, Supervisor, TaskSupervisor


async def echo(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started(8080)
    await trio.sleep_forever()


def specs() -> list[ChildSpec]:  # unparameterized stays usable
    return [ChildSpec("echo", echo)]


async def main() -> None:
    spec = ChildSpec("echo", echo)
    assert_type(spec, ChildSpec[int])
    nested = trioscope.supervisor_spec([spec], id="inner", name="inner")
    assert_type(nested, ChildSpec[Supervisor])
    assert_type(trioscope.dynamic_supervisor_spec(id="d", max_children=3), ChildSpec[Supervisor])
    assert_type(trioscope.task_supervisor_spec(id="t"), ChildSpec[TaskSupervisor])
    async with trioscope.open_registry(), trioscope.open_supervisor(specs(), name="root") as sup:
        assert_type(await sup.start_child(ChildSpec("echo2", echo)), int)
        assert_type(await sup.start_child(nested), Supervisor)
        assert_type(await sup.restart_child("echo"), object)
        assert_type(trioscope.whereis_supervisor("root"), Supervisor | None)
        assert_type(trioscope.whereis_task_supervisor("t"), TaskSupervisor | None)
        async with trioscope.open_task_supervisor(id="jobs", name="jobs", max_children=2) as tasks:
            info = tasks.start_soon(trio.sleep, 1)
            assert_type(info, trioscope.TaskInfo)
            assert_type(tasks.children(), list[trioscope.TaskInfo])
            assert_type(tasks.count_children(), int)
            await tasks.terminate_child(info)
            await tasks.terminate_child(info.id)


def on_started(sup: Supervisor) -> None:
    print(sup.which_children())


def app() -> None:
    trioscope.run([ChildSpec("echo", echo)], max_restarts=3, on_started=on_started)
