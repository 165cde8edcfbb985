"""Task supervisors: fire-and-forget tasks whose failures are reported and contained."""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.lowlevel
import trio.testing
from _guards import no_stray_cancel
from trio.testing import wait_all_tasks_blocked

import trioscope

pytestmark = pytest.mark.trioscope_scope


class Boom(Exception):
    pass


async def fail(message: str) -> None:
    await trio.lowlevel.checkpoint()
    raise Boom(message)


async def test_start_soon_failure_is_logged_and_cancels_nothing_else(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []

    async def steady() -> None:
        await trio.sleep(5)
        events.append("steady done")

    async with trioscope.open_task_supervisor(id="jobs") as tasks:
        tasks.start_soon(steady)
        tasks.start_soon(fail, "job one")
        await wait_all_tasks_blocked()
        assert tasks.failures == 1
        events.append("body goes on")
    assert events == ["body goes on", "steady done"]
    assert trio.current_time() == 5
    [record] = [r for r in caplog.records if r.name == "trioscope.tasks"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "task supervisor 'jobs': task fail failed with Boom: job one"
    assert record.supervisor == "jobs"  # type: ignore[attr-defined]
    assert record.event == "task_failed"  # type: ignore[attr-defined]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Boom)
    assert str(record.exc_info[1]) == "job one"


async def test_start_soon_passes_arguments_and_name() -> None:
    seen: list[object] = []

    async def job(a: int, b: str) -> None:
        seen.append((a, b, trio.lowlevel.current_task().name))

    async with trioscope.open_task_supervisor() as tasks:
        tasks.start_soon(job, 1, "x", name="the job")
    assert seen == [(1, "x", "the job")]


async def test_many_failures_are_counted() -> None:
    async with trioscope.open_task_supervisor() as tasks:
        for n in range(10):
            tasks.start_soon(fail, str(n))
    assert tasks.failures == 10


async def test_run_returns_the_result() -> None:
    async def double(n: int) -> int:
        await trio.lowlevel.checkpoint()
        return n * 2

    async with trioscope.open_task_supervisor() as tasks:
        assert await tasks.run(double, 21) == 42


async def test_run_raises_in_the_caller_only(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []

    async def steady() -> None:
        await trio.sleep(1)
        events.append("steady done")

    async with trioscope.open_task_supervisor() as tasks:
        tasks.start_soon(steady)
        with pytest.raises(Boom, match=r"^in run$") as info:
            await tasks.run(fail, "in run")
        assert type(info.value) is Boom
        assert tasks.failures == 0  # raised to the caller, not counted or logged
        events.append("body goes on")
    assert events == ["body goes on", "steady done"]
    assert not [r for r in caplog.records if r.name == "trioscope.tasks"]


async def test_a_cancelled_caller_cancels_its_run_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []

    async def slow() -> None:
        try:
            await trio.sleep(10)
        finally:
            events.append(f"slow ended at {trio.current_time():g}")

    async with trioscope.open_task_supervisor() as tasks:
        with trio.move_on_after(1):
            await tasks.run(slow)
        events.append("caller moved on")
    assert events == ["slow ended at 1", "caller moved on"]


async def test_run_when_the_supervisor_is_cancelled() -> None:
    errors: list[Exception] = []
    async with trio.open_nursery() as nursery:
        with no_stray_cancel():
            async with trioscope.open_task_supervisor(id="jobs") as tasks:

                async def caller() -> None:
                    try:
                        await tasks.run(trio.sleep_forever)
                    except trioscope.ServiceUnavailableError as exc:
                        errors.append(exc)

                nursery.start_soon(caller)
                await wait_all_tasks_blocked()
                tasks.cancel()
    [error] = errors
    assert str(error) == (
        "service task supervisor 'jobs' is unavailable: it was cancelled "
        "(TaskSupervisor.cancel()) before sleep_forever finished"
    )


async def test_cancel_with_a_nursery_in_the_body() -> None:
    # The body's own nursery turns the Cancelled into a group: it still ends here.
    with no_stray_cancel():
        async with trioscope.open_task_supervisor() as tasks, trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            tasks.start_soon(trio.sleep_forever)
            await wait_all_tasks_blocked()
            tasks.cancel()
    assert tasks.failures == 0


async def test_tasks_started_after_cancel_are_cancelled() -> None:
    events: list[str] = []

    async def late() -> None:
        try:
            await trio.sleep_forever()
        finally:
            events.append("late cancelled")

    with no_stray_cancel():
        async with trioscope.open_task_supervisor() as tasks:
            tasks.cancel()
            tasks.start_soon(late)
    assert events == ["late cancelled"]


async def test_the_body_exception_propagates_bare_and_cancels_the_tasks() -> None:
    cancelled: list[str] = []

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append("forever")
            raise

    async def body_fails() -> None:
        async with trioscope.open_task_supervisor() as tasks:
            tasks.start_soon(forever)
            await wait_all_tasks_blocked()
            raise KeyError("body")

    with pytest.raises(KeyError) as info:
        await body_fails()
    assert type(info.value) is KeyError
    assert cancelled == ["forever"]


async def test_cancel_ends_the_block_without_error() -> None:
    with no_stray_cancel():
        async with trioscope.open_task_supervisor() as tasks:
            tasks.start_soon(trio.sleep_forever)
            tasks.cancel()
            await trio.sleep(math.inf)  # the body is inside the supervisor's scope too
    assert tasks.failures == 0


async def test_outer_cancellation_propagates() -> None:
    with trio.CancelScope() as outer:
        async with trioscope.open_task_supervisor() as tasks:
            tasks.start_soon(trio.sleep_forever)
            outer.cancel()
            await trio.sleep_forever()
    assert outer.cancelled_caught


async def test_outer_cancellation_propagates_when_both_are_cancelled() -> None:
    with trio.CancelScope() as outer:
        async with trioscope.open_task_supervisor() as tasks:
            outer.cancel()
            tasks.cancel()
            await trio.sleep_forever()
        pytest.fail("the outer cancellation must not be swallowed")  # pragma: no cover
    assert outer.cancelled_caught


async def test_repr() -> None:
    async with trioscope.open_task_supervisor(id="jobs") as tasks:
        tasks.start_soon(trio.sleep_forever)
        assert repr(tasks) == "<TaskSupervisor 'jobs' 1 tasks>"
        tasks.cancel()


async def test_a_keyboard_interrupt_in_a_task_cancels_the_rest_and_is_raised_bare() -> None:
    cancelled: list[str] = []

    async def sibling() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append("sibling")
            raise

    async def interrupted() -> None:
        await trio.lowlevel.checkpoint()
        raise KeyboardInterrupt

    async def run() -> None:
        async with trioscope.open_task_supervisor() as tasks:
            tasks.start_soon(sibling)
            tasks.start_soon(interrupted)
            await trio.sleep_forever()

    with pytest.raises(KeyboardInterrupt) as info:
        await run()
    assert type(info.value) is KeyboardInterrupt
    assert cancelled == ["sibling"]


async def test_run_when_the_block_fails_says_it_closed() -> None:
    errors: list[Exception] = []

    async def caller(tasks: trioscope.TaskSupervisor) -> None:
        try:
            await tasks.run(trio.sleep_forever)
        except trioscope.ServiceUnavailableError as exc:
            errors.append(exc)

    async def failing_block(nursery: trio.Nursery) -> None:
        async with trioscope.open_task_supervisor(id="jobs") as tasks:
            nursery.start_soon(caller, tasks)
            await wait_all_tasks_blocked()
            raise Boom("the body failed")

    async with trio.open_nursery() as nursery:
        with pytest.raises(Boom):
            await failing_block(nursery)
    [error] = errors
    assert str(error) == (
        "service task supervisor 'jobs' is unavailable: it closed before sleep_forever finished"
    )


async def test_run_after_the_block_says_it_has_closed() -> None:
    async with trioscope.open_task_supervisor(id="jobs") as tasks:
        pass
    with pytest.raises(trioscope.ServiceUnavailableError) as info:
        await tasks.run(trio.sleep, 0)
    assert str(info.value) == (
        "service task supervisor 'jobs' is unavailable: it has closed (its async with block "
        "has exited), so sleep did not run"
    )
