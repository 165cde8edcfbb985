"""Tests for `trioscope.monitor` on bare services (no supervisor)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trioscope
from trioscope import Down, Monitor, NoRegistryError, ServiceRef

pytestmark = pytest.mark.trioscope_scope


class Fatal(BaseException):
    """Neither an `Exception` nor an interrupt, like pytest's ``Failed``."""


class Db(trioscope.Service):
    def __init__(
        self, init_gate: trio.Event | None = None, init_error: BaseException | None = None
    ) -> None:
        self.init_gate = init_gate
        self.init_error = init_error

    async def init(self) -> None:
        if self.init_gate is not None:
            await self.init_gate.wait()
        if self.init_error is not None:
            raise self.init_error

    async def get(self) -> int:
        return 1

    async def crash(self) -> None:
        raise RuntimeError("db crashed")


async def run_service(
    spec: trioscope.ChildSpec, scope: trio.CancelScope, *, task_status: trio.TaskStatus[Any]
) -> None:
    """Run one bare incarnation in *scope*; a crash after start ends only this task."""
    with scope:
        try:
            await spec.start(task_status=task_status)
        except RuntimeError:
            pass  # the monitor reports it


@asynccontextmanager
async def services() -> AsyncIterator[trio.Nursery]:
    async with trioscope.open_registry("test", isolated=True), trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def start(
    nursery: trio.Nursery, spec: trioscope.ChildSpec
) -> tuple[ServiceRef[Any], trio.CancelScope]:
    scope = trio.CancelScope()
    ref: ServiceRef[Any] = await nursery.start(run_service, spec, scope)
    return ref, scope


async def test_monitor_a_ref_until_it_is_killed(autojump_clock: trio.testing.MockClock) -> None:
    async with services() as nursery:
        ref, scope = await start(nursery, Db.child_spec(name="db"))
        async with trioscope.monitor(ref) as down:
            assert isinstance(down, Monitor)
            nursery.start_soon(_cancel_after, scope, 4)
            start_time = trio.current_time()
            result = await down.wait()
        assert trio.current_time() - start_time == 4
        assert result == Down(name="db", incarnation=ref.incarnation, reason="killed")


async def _cancel_after(scope: trio.CancelScope, seconds: float) -> None:
    await trio.sleep(seconds)
    scope.cancel()


async def test_monitor_a_name_until_it_crashes() -> None:
    async with services() as nursery:
        ref, _ = await start(nursery, Db.child_spec(name="db"))
        async with trioscope.monitor("db") as down:
            with pytest.raises(trioscope.ServiceCrashedError) as info:
                await ref.call(Db.crash)
            result = await down.wait()
        assert (result.name, result.incarnation) == ("db", ref.incarnation)
        assert result.reason is info.value.__cause__
        assert isinstance(result.reason, RuntimeError)


async def test_monitor_reports_an_orderly_stop_as_shutdown() -> None:
    # Only a supervisor stops a service in order; the monitor itself is on the bare ref.
    async with trioscope.open_registry(isolated=True):
        async with trioscope.open_supervisor([Db.child_spec(name="db")]):
            ref = trioscope.whereis("db")
            assert ref is not None
            async with trioscope.monitor(ref) as down:
                pass
        assert await down.wait() == Down(name="db", incarnation=ref.incarnation, reason="shutdown")


@pytest.mark.parametrize(
    "error", [ConnectionError("database unreachable"), Fatal("no Exception")], ids=repr
)
async def test_monitor_reports_a_failed_init_with_its_exception(error: BaseException) -> None:
    async with services() as nursery:
        gate = trio.Event()
        failures: list[BaseException] = []

        async def starting() -> None:
            try:
                await nursery.start(
                    Db.child_spec(name="db", init_gate=gate, init_error=error).start
                )
            except (ConnectionError, Fatal) as exc:
                failures.append(exc)

        nursery.start_soon(starting)
        await trio.testing.wait_all_tasks_blocked()
        async with trioscope.monitor("db") as down:
            gate.set()
            result = await down.wait()
        await trio.testing.wait_all_tasks_blocked()  # the starter gets the error too
        assert result.name == "db"
        assert result.reason is failures[0] is error


async def test_a_name_with_nothing_registered_is_noproc_at_once() -> None:
    async with services():
        async with trioscope.monitor("ghost") as down:
            with trio.testing.assert_checkpoints():
                result = await down.wait()
        assert result == Down(name="ghost", incarnation=0, reason="noproc")
        assert repr(down) == "<Monitor 'ghost'>"


async def test_a_name_is_resolved_once_when_the_block_opens() -> None:
    async with services() as nursery:
        spec = Db.child_spec(name="db")
        first, first_scope = await start(nursery, spec)
        async with trioscope.monitor("db") as watching_first:
            first_scope.cancel()
            assert (await watching_first.wait()).incarnation == first.incarnation
            second, second_scope = await start(nursery, spec)
            # Still the first incarnation's Down, though the name now runs another one.
            assert (await watching_first.wait()).incarnation == first.incarnation
        async with trioscope.monitor("db") as watching_second:
            assert repr(watching_second) == "<Monitor 'db'>"
            with trio.move_on_after(0) as still_running:
                await watching_second.wait()
            assert still_running.cancelled_caught
            second_scope.cancel()
            assert (await watching_second.wait()).incarnation == second.incarnation


async def test_wait_honours_cancel_scopes(autojump_clock: trio.testing.MockClock) -> None:
    async with services() as nursery:
        ref, _ = await start(nursery, Db.child_spec(name="db"))
        async with trioscope.monitor(ref) as down:
            with trio.move_on_after(2) as scope:
                await down.wait()
            assert scope.cancelled_caught
            assert trio.current_time() == 2
            assert await ref.call(Db.get) == 1


async def test_several_monitors_and_waits_see_the_same_down() -> None:
    async with services() as nursery:
        ref, scope = await start(nursery, Db.child_spec(name="db"))
        results: list[Down] = []
        async with trioscope.monitor(ref) as one, trioscope.monitor("db") as two:

            async def wait(monitor: Monitor) -> None:
                results.append(await monitor.wait())

            async with trio.open_nursery() as waiters:
                waiters.start_soon(wait, one)
                waiters.start_soon(wait, two)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
            # Waiting again, after the end, returns the same at once.
            results.append(await one.wait())
        assert results == [Down(name="db", incarnation=ref.incarnation, reason="killed")] * 3


async def test_monitor_an_unnamed_service_outside_any_registry() -> None:
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        ref = await nursery.start(run_service, Db.child_spec(), scope)
        async with trioscope.monitor(ref) as down:
            assert repr(down) == f"<Monitor <Db #{ref.incarnation}>>"
            scope.cancel()
            result = await down.wait()
        assert result == Down(name=None, incarnation=ref.incarnation, reason="killed")


@pytest.mark.no_trioscope_scope("checks NoRegistryError outside every registry scope")
async def test_monitor_by_name_needs_a_registry() -> None:
    with pytest.raises(
        NoRegistryError,
        match="^"
        + re.escape(
            "monitor('db') needs a registry, and none is open around the current task: wrap "
            "the code in `async with trioscope.open_registry():` (or run it under "
            "`trioscope.run(...)`, which opens one)"
        )
        + "$",
    ):
        async with trioscope.monitor("db"):
            pass  # pragma: no cover


async def test_monitor_refuses_other_targets() -> None:
    with pytest.raises(
        TypeError, match=r"^monitor\(\) takes a service name or a ServiceRef, got 42$"
    ):
        async with trioscope.monitor(42):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_monitor_of_a_name_holding_something_else() -> None:
    async with services():
        with (
            trioscope.current_registry().registered("plain", 42),
            pytest.raises(
                TypeError, match=r"^name 'plain' is registered to 42, which is not a service$"
            ),
        ):
            async with trioscope.monitor("plain"):
                pass  # pragma: no cover


def test_down_is_frozen() -> None:
    down = Down(name="db", incarnation=3, reason="killed")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        down.reason = "shutdown"  # type: ignore[misc]
