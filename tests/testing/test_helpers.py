"""trioscope.testing's helpers: exact outcomes under MockClock, no polling."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from _guards import checkpoints_even_when_raising

import trioscope
from trioscope import telemetry
from trioscope.testing._helpers import (
    CrashNotReachedError,
    CrashOutcome,
    OpsMeasurement,
    ServiceWaitTimeoutError,
    SimulatedCrash,
    assert_isolated,
    measure_concurrent_ops,
    simulate_crash,
    wait_for_restart,
    wait_for_service,
)

pytestmark = pytest.mark.trioscope_scope


class Counter(trioscope.Service):
    def __init__(self, log: list[str] | None = None) -> None:
        self.value = 0
        self.log = log if log is not None else []

    async def incr(self) -> int:
        self.value += 1
        return self.value

    async def note(self, text: str) -> None:
        self.log.append(text)

    async def hold(self, gate: trio.Event) -> None:
        self.log.append("hold")
        await gate.wait()

    async def fail(self) -> None:
        raise ValueError("boom")

    async def nap(self, seconds: float) -> float:
        await trio.sleep(seconds)
        return seconds


Starter = Callable[..., Awaitable[object]]


def _supervised(*specs: trioscope.ChildSpec, **options: object) -> Callable[..., Awaitable[None]]:
    """A task running a supervisor of *specs* outside the test's body, so that
    its giving up (which cancels its body) is seen, not suffered."""

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trioscope.open_supervisor(list(specs), **options):  # type: ignore[arg-type]
            task_status.started()
            await trio.sleep_forever()

    return run


# -- wait_for_service / wait_for_restart ----------------------------------------------------


async def test_wait_for_service_returns_a_registered_service_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trioscope.open_registry(isolated=True), trio.open_nursery() as nursery:
        ref = await nursery.start(Counter.child_spec(name="c").start)
        t0 = trio.current_time()
        assert await wait_for_service("c") == ref
        assert trio.current_time() == t0
        nursery.cancel_scope.cancel()


async def test_wait_for_service_waits_for_a_later_registration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def later() -> None:
        await trio.sleep(3)
        await nursery.start(Counter.child_spec(name="c").start)

    async with trioscope.open_registry(isolated=True), trio.open_nursery() as nursery:
        t0 = trio.current_time()
        nursery.start_soon(later)
        ref = await wait_for_service("c", timeout=5)
        assert trio.current_time() == t0 + 3
        assert await ref.call(Counter.incr) == 1
        nursery.cancel_scope.cancel()


async def test_wait_for_service_times_out_saying_it_looks_like_a_typo(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trioscope.open_registry(isolated=True), trio.open_nursery() as nursery:
        await nursery.start(Counter.child_spec(name="cache").start)
        t0 = trio.current_time()
        with pytest.raises(ServiceWaitTimeoutError) as info:
            await wait_for_service("cahce", timeout=2)
        assert str(info.value) == (
            "no service was registered as 'cahce' within 2 s (Trio clock): nothing has been "
            "registered under that name in the visible registry scopes; did you mean 'cache'?"
        )
        assert isinstance(info.value, trio.TooSlowError)
        assert isinstance(info.value, trioscope.TrioscopeError)
        assert (info.value.service, info.value.timeout) == ("cahce", 2)
        assert trio.current_time() == t0 + 2
        nursery.cancel_scope.cancel()


async def test_wait_for_service_times_out_on_a_name_that_was_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trioscope.open_registry(isolated=True):
        async with trio.open_nursery() as nursery:  # closed before the wait
            await nursery.start(Counter.child_spec(name="c").start)
            nursery.cancel_scope.cancel()
        t0 = trio.current_time()
        with pytest.raises(
            ServiceWaitTimeoutError, match=r"^no service was registered as 'c'"
        ) as info:
            await wait_for_service("c", timeout=1)
        assert trio.current_time() == t0 + 1
        assert info.value.detail == (
            "it was registered recently in the visible registry scopes, and no supervisor "
            "says it will start again (stopped, TEMPORARY, or its supervisor gave up)"
        )


async def test_wait_for_restart_waits_out_the_backoff_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff = trioscope.Backoff(initial=2, maximum=2, jitter=0)
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([Counter.child_spec(name="c")], backoff=backoff),
    ):
        old = await wait_for_service("c")
        t0 = trio.current_time()
        outcome = await simulate_crash("c")
        assert outcome.action == "backoff"
        with pytest.raises(ServiceWaitTimeoutError) as info:
            await wait_for_restart("c", old, timeout=0.5)
        assert str(info.value) == (
            f"no incarnation of 'c' after #{old.incarnation} was registered within 0.5 s "
            f"(Trio clock): its supervisor has it in backoff, restarting at {t0 + 2:g} on "
            "the Trio clock (1.5 s from now); wait longer than that"
        )
        new = await wait_for_restart("c", old)
        assert trio.current_time() == t0 + 2
        assert new != old
        assert new.incarnation > old.incarnation


async def test_wait_for_restart_times_out_while_the_incarnation_lives(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([Counter.child_spec(name="c")]),
    ):
        old = await wait_for_service("c")
        with pytest.raises(ServiceWaitTimeoutError) as info:
            await wait_for_restart("c", old.with_timeout(1), timeout=3)
        assert info.value.detail == (
            f"incarnation #{old.incarnation} is still registered: it has not ended"
        )


@pytest.mark.no_trioscope_scope("checks NoRegistryError outside every registry scope")
async def test_wait_helpers_check_their_arguments() -> None:
    async with trioscope.open_registry(isolated=True):
        with pytest.raises(
            ValueError, match=r"^timeout must be >= 0 \(math.inf allowed\), got -1$"
        ):
            await wait_for_service("c", timeout=-1)
        with pytest.raises(TypeError, match=r"^after must be a trioscope.ServiceRef, got str$"):
            await wait_for_restart("c", "c")  # type: ignore[arg-type]
    with pytest.raises(trioscope.NoRegistryError):
        await wait_for_service("c")


# -- simulate_crash ---------------------------------------------------------------------------


async def test_simulate_crash_restarts_a_supervised_service_with_fresh_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([Counter.child_spec(name="c")], id="root"),
    ):
        old = await wait_for_service("c")
        assert await old.call(Counter.incr) == 1
        assert await old.call(Counter.incr) == 2
        t0 = trio.current_time()
        outcome = await simulate_crash("c")
        assert trio.current_time() == t0
        assert outcome.action == "restarted"
        assert (outcome.supervisor, outcome.child, outcome.restart_at) == ("root", "c", None)
        assert outcome.ref is not None
        assert outcome.ref != old
        assert trioscope.whereis("c") == outcome.ref
        assert await outcome.ref.call(Counter.incr) == 1  # state reset
        with pytest.raises(trioscope.ServiceUnavailableError):
            await old.call(Counter.incr)
        assert telemetry.handlers() == []  # its temporary handler is gone


async def test_simulate_crash_reports_the_backoff_until_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff = trioscope.Backoff(initial=2, maximum=2, jitter=0)
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([Counter.child_spec(name="c")], backoff=backoff, id="root"),
    ):
        await trio.sleep(10)
        outcome = await simulate_crash("c")
        assert outcome == CrashOutcome("backoff", "root", "c", None, 12.0)
        assert trio.current_time() == 10
        assert trioscope.whereis("c") is None


async def test_simulate_crash_reports_a_supervisor_giving_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def supervise(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with pytest.raises(trioscope.RestartIntensityExceededError):
            await _supervised(Counter.child_spec(name="c"), max_restarts=0, id="root")(
                task_status=task_status
            )

    async with trioscope.open_registry(isolated=True), trio.open_nursery() as nursery:
        await nursery.start(supervise)
        outcome = await simulate_crash("c")
        assert outcome == CrashOutcome("gave_up", "root", "c", None, None)


async def test_simulate_crash_of_a_temporary_child_is_not_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = Counter.child_spec(name="c", restart=trioscope.Restart.TEMPORARY)
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([spec], id="root") as sup,
    ):
        await wait_for_service("c")
        outcome = await simulate_crash("c")
        assert outcome == CrashOutcome("not_restarted", "root", "c", None, None)
        assert sup.which_children() == []


async def test_simulate_crash_under_one_for_all_follows_its_own_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    specs = [Counter.child_spec(name="a"), Counter.child_spec(name="b")]
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor(specs, strategy=trioscope.Strategy.ONE_FOR_ALL, id="all"),
    ):
        old_a, old_b = await wait_for_service("a"), await wait_for_service("b")
        outcome = await simulate_crash("b")
        assert (outcome.action, outcome.supervisor, outcome.child) == ("restarted", "all", "b")
        assert outcome.ref == trioscope.whereis("b")
        assert outcome.ref != old_b
        new_a = trioscope.whereis("a")
        assert new_a is not None
        assert new_a != old_a  # its sibling was restarted too


async def test_simulate_crash_in_a_dynamic_supervisor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_dynamic_supervisor(id="dyn") as sup,
    ):
        old = await sup.start_child(Counter.child_spec(name="c"))
        outcome = await simulate_crash("c")
        assert (outcome.action, outcome.supervisor, outcome.child) == ("restarted", "dyn", "c")
        assert outcome.ref is not None
        assert outcome.ref != old


@pytest.mark.no_trioscope_scope("checks NoRegistryError outside every registry scope")
async def test_helpers_checkpoint_when_they_raise(autojump_clock: trio.testing.MockClock) -> None:
    with checkpoints_even_when_raising(), pytest.raises(trioscope.NoRegistryError):
        await wait_for_service("c")
    async with trioscope.open_registry(isolated=True):
        with checkpoints_even_when_raising(), pytest.raises(ServiceWaitTimeoutError):
            await wait_for_service("c", timeout=0)
        with checkpoints_even_when_raising(), pytest.raises(trioscope.ServiceUnavailableError):
            await simulate_crash("c")


async def test_cancelling_simulate_crash_withdraws_the_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([Counter.child_spec(name="c")]),
    ):
        ref = await wait_for_service("c")
        await ref.cast(Counter.hold, gate)
        with trio.move_on_after(1) as scope:
            await simulate_crash("c")
        assert scope.cancelled_caught
        assert ref.statistics().mailbox_depth == 0
        assert telemetry.handlers() == []
        gate.set()
        assert await ref.call(Counter.incr) == 1


async def test_messages_queued_ahead_of_the_crash_run_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    gate = trio.Event()
    outcomes: list[CrashOutcome] = []

    async def crash() -> None:
        outcomes.append(await simulate_crash("c"))

    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([Counter.child_spec(log, name="c")]),
    ):
        ref = await wait_for_service("c")
        await ref.cast(Counter.hold, gate)
        for text in ("a", "b", "c"):
            await ref.cast(Counter.note, text)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(crash)
            await trio.testing.wait_all_tasks_blocked()
            # hold runs; a, b, c and the crash wait in that order.
            assert ref.statistics().mailbox_depth == 4
            assert log == ["hold"]
            gate.set()
        assert log == ["hold", "a", "b", "c"]
        assert outcomes[0].action == "restarted"
        assert ref.statistics().handled == 5  # the four, then the crash


async def test_simulate_crash_raises_the_given_error_in_the_service(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reasons: list[object] = []
    error = KeyError("planted")
    async with trioscope.open_registry(isolated=True):
        with telemetry.attached(
            "exits", [("trioscope", "child", "exit")], lambda e, m, meta: reasons.append(meta)
        ):
            async with trioscope.open_supervisor([Counter.child_spec(name="c")], id="root"):
                await wait_for_service("c")
                outcome = await simulate_crash("c", error)
                assert outcome.action == "restarted"
    assert len(reasons) == 1
    assert reasons[0] == {
        "supervisor": "root",
        "child": "c",
        "reason": error,
        "service": "'c'",
        "handler": "simulate_crash",
        "correlation_id": None,
    }


async def test_simulate_crash_of_an_unsupervised_service_just_ends_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def host(*, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED) -> None:
        with pytest.raises(SimulatedCrash, match=r"^simulated crash of service 'c'$"):
            await Counter.child_spec(name="c").start(task_status=task_status)

    async with trioscope.open_registry(isolated=True), trio.open_nursery() as nursery:
        ref = await nursery.start(host)
        outcome = await simulate_crash("c")
        assert outcome == CrashOutcome("not_supervised", None, None, None, None)
        assert trioscope.whereis("c") is None
        assert isinstance(ref, trioscope.ServiceRef)
        assert ref.statistics().handled == 1


async def test_a_crash_that_never_runs_is_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()

    async def release() -> None:
        await trio.testing.wait_all_tasks_blocked()
        gate.set()

    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([Counter.child_spec(name="c")]),
    ):
        ref = await wait_for_service("c")
        await ref.cast(Counter.hold, gate)
        await ref.cast(Counter.fail)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(release)
            with pytest.raises(CrashNotReachedError) as info:
                await simulate_crash("c")
        assert str(info.value) == (
            "the simulated crash of service 'c' never ran: that incarnation crashed with "
            "ValueError: boom before reaching it (the crash was dropped with its mailbox)"
        )
        assert telemetry.handlers() == []


async def test_simulate_crash_times_out_and_withdraws_the_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([Counter.child_spec(name="c")]),
    ):
        ref = await wait_for_service("c")
        await ref.cast(Counter.hold, gate)
        with pytest.raises(ServiceWaitTimeoutError) as info:
            await simulate_crash("c", timeout=3)
        assert str(info.value) == (
            "simulate_crash('c') was not done within 3 s (Trio clock): the crash message "
            "had not run yet (still queued behind other messages); it was withdrawn"
        )
        assert ref.statistics().mailbox_depth == 0
        gate.set()
        assert await ref.call(Counter.incr) == 1  # the same incarnation: no crash
        assert trioscope.whereis("c") == ref


async def test_simulate_crash_checks_its_arguments() -> None:
    async with trioscope.open_registry(isolated=True):
        with pytest.raises(trioscope.ServiceUnavailableError) as info:
            await simulate_crash("nobody")
        assert str(info.value) == (
            "service 'nobody' is unavailable: nothing is registered under that name in the "
            "visible registry scopes (wait_for_service() first)"
        )
        with pytest.raises(TypeError, match=r"^error must be an exception a handler could crash"):
            await simulate_crash("c", KeyboardInterrupt())
        with pytest.raises(TypeError, match=r"^error must be an exception"):
            await simulate_crash("c", "boom")  # type: ignore[arg-type]


# -- assert_isolated ----------------------------------------------------------------------


async def _scope(
    namespace: str, *, task_status: trio.TaskStatus[trioscope.Registry] = trio.TASK_STATUS_IGNORED
) -> None:
    async with (
        trioscope.open_registry(namespace, isolated=True) as reg,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(Counter.child_spec(name="cache").start)
        task_status.started(reg)
        await trio.sleep_forever()


async def test_two_sibling_isolated_scopes_cannot_see_each_other() -> None:
    async with trioscope.open_registry("outer"), trio.open_nursery() as nursery:
        a = await nursery.start(_scope, "a")
        b = await nursery.start(_scope, "b")
        assert a.lookup("cache") != b.lookup("cache")
        assert_isolated("cache", b, here=a)
        assert_isolated("cache", a, here=b)
        assert_isolated("cache", a, b)  # nor does the scope around them see either
        nursery.cancel_scope.cancel()


async def test_assert_isolated_fails_when_a_nested_scope_sees_the_parents_service() -> None:
    async with trioscope.open_registry("parent") as parent, trio.open_nursery() as nursery:
        ref = await nursery.start(Counter.child_spec(name="cache").start)
        async with trioscope.open_registry("child"):
            message = (
                f"registry 'parent', holding 'cache' as {ref!r}, is on the visible chain of "
                "registry 'child': lookups walk outward into it (open the inner scope with "
                "isolated=True)"
            )
            with pytest.raises(AssertionError, match=f"^{re.escape(message)}$"):
                assert_isolated("cache", parent)
        async with trioscope.open_registry("child", isolated=True):
            assert_isolated("cache", parent)
        nursery.cancel_scope.cancel()


async def test_assert_isolated_fails_when_the_value_is_reachable_another_way() -> None:
    async with trioscope.open_registry("outer"), trio.open_nursery() as nursery:
        b = await nursery.start(_scope, "b")
        theirs = b.lookup_here("cache")
        async with trioscope.open_registry("a", isolated=True) as a:
            message = (
                f"whereis('cache') from registry 'a' finds {theirs!r}, the value "
                "registry 'b' holds as 'cache'"
            )
            with (
                a.registered("cache", theirs),
                pytest.raises(AssertionError, match=f"^{re.escape(message)}$"),
            ):
                assert_isolated("cache", b)
            with a.registered("alias", theirs):
                message = (
                    f"registry 'a', visible from registry 'a', holds {theirs!r} as 'alias': "
                    "the value registry 'b' holds as 'cache'"
                )
                with pytest.raises(AssertionError, match=f"^{re.escape(message)}$"):
                    assert_isolated("cache", b)
            with pytest.raises(
                AssertionError,
                match=r"^registry 'a' holds nothing as 'cache': there is no value of its "
                r"to check isolation against$",
            ):
                assert_isolated("cache", a, here=b)
        nursery.cancel_scope.cancel()


async def test_assert_isolated_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match=r"^assert_isolated needs at least one other registry"):
        assert_isolated("cache")
    with pytest.raises(TypeError, match=r"^expected trioscope.Registry objects, got 'x'$"):
        assert_isolated("cache", "x")  # type: ignore[arg-type]
    async with trioscope.open_registry("r") as reg:
        with (
            reg.registered("cache", object()),
            pytest.raises(AssertionError, match=r"^registry 'r' is itself one of"),
        ):
            assert_isolated("cache", reg)


# -- measure_concurrent_ops ----------------------------------------------------------------


async def test_measure_gives_exact_nearest_rank_percentiles(
    autojump_clock: trio.testing.MockClock,
) -> None:
    durations = iter(range(100, 0, -1))  # 100 s, 99 s, ..., 1 s: sorted by the helper
    async with trioscope.open_registry(isolated=True), trio.open_nursery() as nursery:
        ref = await nursery.start(Counter.child_spec(name="c").start)
        slow = ref.with_timeout(1000)

        async def op() -> None:
            await slow.call(Counter.nap, next(durations))

        measured = await measure_concurrent_ops(op, 100, 1)
        nursery.cancel_scope.cancel()
    assert measured == OpsMeasurement(
        count=100,
        errors=0,
        elapsed_s=5050.0,
        throughput_per_s=100 / 5050,
        p50_s=50.0,
        p95_s=95.0,
        p99_s=99.0,
        max_s=100.0,
    )


async def test_measure_includes_queueing_behind_a_serial_service(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trioscope.open_registry(isolated=True), trio.open_nursery() as nursery:
        ref = await nursery.start(Counter.child_spec(name="c").start)
        measured = await measure_concurrent_ops(lambda: ref.call(Counter.nap, 1), 6, 3)
        nursery.cancel_scope.cancel()
    # One message at a time: the first three wait 1, 2 and 3 s; each later one
    # starts as one ends and waits behind the two still queued: 3 s.
    assert measured == OpsMeasurement(6, 0, 6.0, 1.0, 3.0, 3.0, 3.0, 3.0)


async def test_measure_runs_at_most_concurrency_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    running = peak = 0

    async def op() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(1)
        running -= 1

    measured = await measure_concurrent_ops(op, 10, 3)
    assert peak == 3
    assert measured == OpsMeasurement(10, 0, 4.0, 2.5, 1.0, 1.0, 1.0, 1.0)


async def test_measure_counts_errors_and_goes_on(autojump_clock: trio.testing.MockClock) -> None:
    numbers = iter(range(5))
    raised: list[Exception] = []

    async def op() -> None:
        number = next(numbers)
        await trio.sleep(1)
        if number % 2:
            raised.append(ValueError(number))
            raise raised[-1]

    measured = await measure_concurrent_ops(op, 5, 1)
    assert (measured.count, measured.errors, measured.elapsed_s) == (5, 2, 5.0)
    assert measured.first_error is raised[0]
    assert (measured.p50_s, measured.max_s) == (1.0, 1.0)


async def test_measure_raises_what_is_not_an_exception_bare(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def op() -> None:
        await trio.sleep(1)
        pytest.fail("checked inside the operation")

    with pytest.raises(pytest.fail.Exception, match=r"^checked inside the operation$"):
        await measure_concurrent_ops(op, 10, 4)
    assert trio.current_time() == 1  # the others were cancelled, not waited for


async def test_measure_lets_cancellation_through(autojump_clock: trio.testing.MockClock) -> None:
    async def op() -> None:
        await trio.sleep(1)

    with trio.move_on_after(2.5) as scope:
        await measure_concurrent_ops(op, 10, 1)
    assert scope.cancelled_caught
    assert trio.current_time() == 2.5


async def test_measure_checks_its_arguments() -> None:
    async def op() -> None:
        await trio.lowlevel.checkpoint()

    with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got 0$"):
        await measure_concurrent_ops(op, 0, 1)
    with pytest.raises(TypeError, match=r"^concurrency must be an integer >= 1, got float$"):
        await measure_concurrent_ops(op, 1, 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^fn must be an async callable"):
        await measure_concurrent_ops(None, 1, 1)  # type: ignore[arg-type]


# -- review regressions (each failed before its fix) ---------------------------------------


async def test_a_registered_service_is_found_even_with_a_zero_timeout() -> None:
    async with trioscope.open_registry(isolated=True), trio.open_nursery() as nursery:
        ref = await nursery.start(Counter.child_spec(name="c").start)
        assert await wait_for_service("c", timeout=0) is ref
        nursery.cancel_scope.cancel()


async def test_simulate_crash_refuses_a_rejection_which_crashes_nothing() -> None:
    async with trioscope.open_registry(isolated=True), trio.open_nursery() as nursery:
        await nursery.start(Counter.child_spec(name="c").start)
        with pytest.raises(TypeError, match=re.escape("nor a trioscope.Rejected")):
            await simulate_crash("c", trioscope.Rejected("no"))
        nursery.cancel_scope.cancel()


async def test_measure_refuses_a_function_that_returns_no_awaitable() -> None:
    with pytest.raises(TypeError, match="returned int, which cannot be awaited"):
        await measure_concurrent_ops(lambda: 1, n=3, concurrency=2)  # type: ignore[arg-type,return-value]
