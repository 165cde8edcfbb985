"""Tests for what handlers can do beyond answering (issue 8): wrong arguments stay
the caller's error, self-calls fail at once, self-stop, owned tasks and timers,
deferred replies, option names, and names released as soon as a service stops.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing
from _guards import checkpoints_even_when_raising
from test_service import Counter, capture, exactly, running, stats

import trioscope
from trioscope import (
    CallingSelfError,
    CallTimeoutError,
    MailboxFullError,
    Service,
    ServiceCrashedError,
    ServiceRef,
    ServiceUnavailableError,
)
from trioscope.testing import wait_for_restart

pytestmark = pytest.mark.trioscope_scope

# -- 2. a caller's wrong arguments -------------------------------------------------


class Account(Service):
    def __init__(self, balance: int = 0) -> None:
        self.balance = balance

    async def deposit(self, amount: int) -> int:
        self.balance += amount
        return self.balance

    async def body_type_error(self) -> None:
        raise TypeError("raised by the handler's body")


async def test_arguments_that_do_not_bind_raise_type_error_in_the_caller() -> None:
    async with running() as host:
        ref = await host.start(Account.child_spec(balance=10, name="acct"))
        # Python's own words for the binding error (3.13 adds "Did you mean ...?").
        with pytest.raises(TypeError) as python:
            Account.deposit(Account(), amont=1)  # type: ignore[call-arg]
        with pytest.raises(
            TypeError,
            match=exactly(
                "bad arguments for handler deposit() of service 'acct' (it did not run; "
                f"the service is untouched): {python.value}"
            ),
        ) as info:
            await ref.call(Account.deposit, amont=1)  # type: ignore[call-arg]
        assert isinstance(info.value.__cause__, TypeError)
        with pytest.raises(TypeError, match="missing 1 required positional argument"):
            await trioscope.call("acct", Account.deposit)  # type: ignore[call-arg]
        # Untouched: same incarnation, same state, nothing counted as handled.
        assert await ref.call(Account.deposit, 5) == 15
        assert trioscope.whereis("acct") == ref
        assert stats(ref) == (0, 0, 1)
        assert ref.incarnation not in host.exits


async def test_a_cast_with_wrong_arguments_is_logged_and_the_service_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running() as host:
        ref = await host.start(Account.child_spec(balance=10, name="acct"))
        await ref.cast(Account.deposit, 1, 2)  # type: ignore[call-arg]
        assert await ref.call(Account.deposit, 1) == 11
        assert [r.getMessage() for r in caplog.records] == [
            "service 'acct' got a cast with bad arguments for deposit(1, 2) (it did not "
            "run): Account.deposit() takes 2 positional arguments but 3 were given"
        ]


async def test_a_type_error_raised_by_the_handler_body_is_still_a_crash() -> None:
    async with running() as host:
        ref = await host.start(Account.child_spec(name="acct"))
        with pytest.raises(ServiceCrashedError) as info:
            await ref.call(Account.body_type_error)
        assert isinstance(info.value.__cause__, TypeError)
        exit_ = await host.ended(ref)
        assert isinstance(exit_, TypeError)
        assert str(exit_) == "raised by the handler's body"


# -- 1. calling itself ------------------------------------------------------------------


class Selfish(Service):
    def __init__(self) -> None:
        self.ref: ServiceRef[Selfish] | None = None

    async def remember(self, ref: ServiceRef[Selfish]) -> None:
        self.ref = ref

    async def ping(self) -> str:
        return "pong"

    async def call_self_by_ref(self) -> str:
        assert self.ref is not None
        return await self.ref.with_timeout(math.inf).call(Selfish.ping)

    async def call_self_by_name(self) -> str:
        return await trioscope.call("selfish", Selfish.ping)

    async def call_self_counting_checkpoints(self) -> str:
        assert self.ref is not None
        with checkpoints_even_when_raising(), pytest.raises(CallingSelfError):
            await self.ref.call(Selfish.ping)
        return "checkpointed"

    async def cast_self(self, times: int) -> int:
        assert self.ref is not None
        sent = 0
        for _ in range(times):
            await self.ref.cast(Selfish.ping)
            sent += 1
        return sent


CALLING_SELF = (
    "handler {running}() of service 'selfish' called its own service (ping()): a "
    "service takes one message at a time, so the call could never be answered. "
    "Call the method directly (await self.ping(...)), or cast"
)


@pytest.mark.parametrize("how", ["call_self_by_ref", "call_self_by_name"])
async def test_a_handler_calling_its_own_service_fails_at_once(
    how: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with running() as host:
        ref = await host.start(Selfish.child_spec(name="selfish"))
        await ref.call(Selfish.remember, ref)
        start = trio.current_time()
        with pytest.raises(ServiceCrashedError) as info:
            await ref.call(getattr(Selfish, how))
        assert trio.current_time() == start
        cause = info.value.__cause__
        assert isinstance(cause, CallingSelfError)
        assert isinstance(cause, RuntimeError)
        assert str(cause) == CALLING_SELF.format(running=how)
        assert (cause.service, cause.handler, cause.caller) == ("'selfish'", "ping", how)


async def test_a_failing_self_call_is_a_checkpoint() -> None:
    """Every waiting call checkpoints on every path, the self-call error included."""
    async with running() as host:
        ref = await host.start(Selfish.child_spec(name="selfish"))
        await ref.call(Selfish.remember, ref)
        assert await ref.call(Selfish.call_self_counting_checkpoints) == "checkpointed"


async def test_a_self_cast_into_a_full_mailbox_fails_at_once_instead_of_wedging() -> None:
    async with running() as host:
        ref = await host.start(Selfish.child_spec(name="selfish", mailbox_size=2))
        await ref.call(Selfish.remember, ref)
        assert await ref.call(Selfish.cast_self, 2) == 2
        with pytest.raises(ServiceCrashedError) as info:
            await ref.call(Selfish.cast_self, 3)
        assert isinstance(info.value.__cause__, MailboxFullError)


def test_the_timeout_message_mentions_call_cycles() -> None:
    assert str(CallTimeoutError("'a'", "get", 5.0)) == (
        "call to 'a' get() got no reply within 5 s; if the message was still queued it "
        "was withdrawn and will not run. Use ref.with_timeout(seconds) for a longer "
        "budget; a cycle of calls (A calls B, which calls A) also ends here"
    )


# -- 3. a service stops itself ------------------------------------------------------------


class Quitter(Service):
    def __init__(self, log: list[object] | None = None) -> None:
        self.log: list[object] = [] if log is None else log
        self.gate = trio.Event()

    async def terminate(self, reason: BaseException | None) -> None:
        self.log.append(("terminate", reason))

    async def echo(self, item: object) -> object:
        self.log.append(item)
        return item

    async def quit(self, reason: BaseException | None = None) -> str:
        await self.gate.wait()
        self.stop(reason)
        self.stop(RuntimeError("later calls change nothing"))
        self.log.append("after stop")
        return "bye"

    async def release(self) -> None:
        self.gate.set()


async def test_a_service_stops_itself_normally_after_replying() -> None:
    log: list[object] = []
    async with running() as host:
        ref = await host.start(Quitter.child_spec(name="q", log=log))
        async with trioscope.monitor("q") as down:
            results: dict[str, object] = {}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(capture, results, "quit", lambda: ref.call(Quitter.quit))
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(capture, results, "queued", lambda: ref.call(Quitter.echo, 1))
                await trio.testing.wait_all_tasks_blocked()
                ref.try_cast(Quitter.release)  # runs after the queued call: never
                ref._core.service.gate.set()  # type: ignore[attr-defined]
            assert results["quit"] == "bye"
            queued = results["queued"]
            assert isinstance(queued, ServiceUnavailableError)
            assert str(queued) == (
                "service 'q' is unavailable: it is shutting down; the message was not run"
            )
            assert await host.ended(ref) == "returned"
            assert (await down.wait()).reason == "normal"
        assert log == ["after stop", ("terminate", None)]
        assert trioscope.whereis("q") is None


async def test_a_service_stops_itself_with_a_reason_that_is_a_crash() -> None:
    log: list[object] = []
    enough = RuntimeError("enough")
    async with running() as host:
        ref = await host.start(Quitter.child_spec(name="q", log=log))
        ref._core.service.gate.set()  # type: ignore[attr-defined]
        assert await ref.call(Quitter.quit, enough) == "bye"
        assert await host.ended(ref) is enough
        assert log == ["after stop", ("terminate", enough)]
        with pytest.raises(ServiceUnavailableError):
            await ref.call(Quitter.echo, 1)


@pytest.mark.parametrize(("reason", "restarted"), [(None, False), (RuntimeError("x"), True)])
async def test_restart_types_apply_to_a_self_stop(
    reason: BaseException | None, restarted: bool, autojump_clock: trio.testing.MockClock
) -> None:
    spec = Quitter.child_spec(name="q", restart=trioscope.Restart.TRANSIENT)
    async with trioscope.open_registry(isolated=True), trioscope.open_supervisor([spec]) as sup:
        first = trioscope.whereis("q", Quitter)
        assert first is not None
        first._core.service.gate.set()  # type: ignore[attr-defined]
        assert await first.call(Quitter.quit, reason) == "bye"
        if restarted:
            second = await wait_for_restart("q", after=first)
            assert second.incarnation != first.incarnation
            await trio.testing.wait_all_tasks_blocked()  # registered in init, then started
            assert [(c.status, c.restarts) for c in sup.which_children()] == [("running", 1)]
            assert trioscope.whereis("q") is second
        else:
            await trio.testing.wait_all_tasks_blocked()  # the supervisor has handled the exit
            assert trioscope.whereis("q") is None
            assert [(c.status, c.restarts) for c in sup.which_children()] == [("stopped", 0)]


def test_stop_outside_a_running_service_is_an_error() -> None:
    with pytest.raises(
        RuntimeError,
        match=exactly(
            "Quitter.stop() was called outside a running service: it is for handlers "
            "and owned tasks of a running service"
        ),
    ):
        Quitter().stop()


class StopsInInit(Service):
    async def init(self) -> None:
        self.stop()


async def test_stop_during_init_is_an_error() -> None:
    async with running() as host:
        with pytest.raises(
            RuntimeError,
            match=exactly(
                "StopsInInit.stop() was called during init(): it is for handlers and "
                "owned tasks of a running service (to fail the start, raise from init())"
            ),
        ):
            await host.start(StopsInInit.child_spec())


async def test_stop_with_a_reason_that_is_not_an_exception_is_a_type_error() -> None:
    class Bad(Service):
        async def go(self) -> None:
            self.stop("oops")  # type: ignore[arg-type]

    async with running() as host:
        ref = await host.start(Bad.child_spec())
        with pytest.raises(ServiceCrashedError) as info:
            await ref.call(Bad.go)
        assert str(info.value.__cause__) == (
            "stop(reason): reason must be an exception or None, got str: 'oops'"
        )


def test_a_handler_may_not_shadow_what_handlers_call_on_self() -> None:
    with pytest.raises(
        TypeError,
        match=exactly(
            "test_a_handler_may_not_shadow_what_handlers_call_on_self.<locals>.Shadow.stop "
            "shadows Service.stop, which handlers call on self (defer, "
            "send_after, start_soon, stop are reserved): rename it"
        ),
    ):

        class Shadow(Service):
            async def stop(self) -> None:  # type: ignore[override]
                pass


# -- 8. the name is released as soon as the incarnation begins to stop -------------------


class SlowToTerminate(Service):
    def __init__(self, gate: trio.Event, seen: list[object]) -> None:
        self.gate = gate
        self.seen = seen

    async def terminate(self, reason: BaseException | None) -> None:
        self.seen.append(("whereis during terminate", trioscope.whereis("slow")))
        await self.gate.wait()

    async def crash(self) -> None:
        raise RuntimeError("boom")

    async def quit(self) -> None:
        self.stop()


@pytest.mark.parametrize("how", ["crash", "self-stop", "stop request"])
async def test_the_name_is_released_before_terminate_runs(
    how: str, autojump_clock: trio.testing.MockClock
) -> None:
    gate = trio.Event()
    seen: list[object] = []
    spec = SlowToTerminate.child_spec(name="slow", gate=gate, seen=seen)
    async with (
        trioscope.open_registry(isolated=True) as registry,
        trioscope.open_supervisor([spec]) as sup,
    ):
        first = trioscope.whereis("slow", SlowToTerminate)
        assert first is not None
        if how == "crash":
            with pytest.raises(ServiceCrashedError):
                await first.call(SlowToTerminate.crash)
        elif how == "self-stop":
            await first.call(SlowToTerminate.quit)
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sup.terminate_child, "slow")
                await trio.testing.wait_all_tasks_blocked()
                assert seen == [("whereis during terminate", None)]
                gate.set()
            assert trioscope.whereis("slow") is None
            return
        await trio.testing.wait_all_tasks_blocked()
        assert seen == [("whereis during terminate", None)]
        async with trio.open_nursery() as nursery:
            waited: list[object] = []

            async def wait() -> None:
                waited.append(await registry.wait_for("slow"))

            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            assert waited == []  # not the dying incarnation
            gate.set()
        assert waited[0] not in (None, first)
        assert trioscope.whereis("slow") == waited[0]


# -- 5. tasks and timers owned by an incarnation ----------------------------------------


class Ticker(Service):
    def __init__(self, log: list[object], period: float = 1.0) -> None:
        self.log = log
        self.period = period
        self.ticks = 0
        self.gate = trio.Event()
        self.timer: trioscope.Timer | None = None

    async def init(self) -> None:
        self.start_soon(self.tick_forever)

    async def terminate(self, reason: BaseException | None) -> None:
        self.log.append(("terminate", self.ticks, reason))

    async def tick_forever(self) -> None:
        try:
            while True:
                await trio.sleep(self.period)
                self.ticks += 1
        finally:
            self.log.append(("ticker ends", self.ticks))

    async def get(self) -> int:
        return self.ticks

    async def spawn_failing(self, delay: float) -> None:
        self.start_soon(self.fail_after, delay)

    async def fail_after(self, delay: float) -> None:
        await trio.sleep(delay)
        raise RuntimeError("owned task failed")

    async def hold(self) -> str:
        await self.gate.wait()
        return "released"

    async def remind(self, seconds: float, note: str) -> None:
        self.timer = self.send_after(seconds, Ticker.note, note)

    async def note(self, text: str) -> None:
        self.log.append(("note", text, trio.current_time()))

    async def cancel_reminder(self) -> bool:
        assert self.timer is not None
        return self.timer.cancel()

    async def stop_from_a_task(self) -> None:
        async def later() -> None:
            await trio.sleep(1)
            self.stop()

        self.start_soon(later)


async def test_an_owned_task_runs_with_the_service_and_is_cancelled_before_terminate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[object] = []
    async with running() as host:
        ref = await host.start(Ticker.child_spec(log=log))
        await trio.sleep(3.5)
        assert await ref.call(Ticker.get) == 3
        await ref.call(Ticker.stop_from_a_task)
        assert await host.ended(ref) == "returned"
    assert log == [("ticker ends", 4), ("terminate", 4, None)]


async def test_an_owned_task_that_raises_crashes_the_service_and_fails_the_running_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[object] = []
    async with running() as host:
        ref = await host.start(Ticker.child_spec(log=log, period=10))
        await ref.call(Ticker.spawn_failing, 1)
        with pytest.raises(ServiceCrashedError) as info:
            await ref.with_timeout(math.inf).call(Ticker.hold)
        cause = info.value.__cause__
        assert isinstance(cause, RuntimeError)
        assert str(cause) == "owned task failed"
        assert await host.ended(ref) is cause  # bare, not in a group
        assert log == [("ticker ends", 0), ("terminate", 0, cause)]


async def test_an_owned_task_that_raises_while_the_service_is_idle_crashes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[object] = []
    async with running() as host:
        ref = await host.start(Ticker.child_spec(log=log, period=10))
        await ref.call(Ticker.spawn_failing, 1)
        exit_ = await host.ended(ref)
        assert isinstance(exit_, RuntimeError)
        assert str(exit_) == "owned task failed"
        assert log == [("ticker ends", 0), ("terminate", 0, exit_)]


async def test_a_killed_service_cancels_its_owned_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[object] = []
    async with running() as host:
        ref = await host.start(Ticker.child_spec(log=log))
        await trio.sleep(2.5)
        await host.kill(ref)
        assert host.exits[ref.incarnation] == "cancelled"
    assert log == [("ticker ends", 2)]


async def test_send_after_casts_to_itself_after_the_delay_and_can_be_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[object] = []
    async with running() as host:
        ref = await host.start(Ticker.child_spec(log=log, period=100))
        start = trio.current_time()
        await ref.call(Ticker.remind, 5, "first")
        await trio.sleep(10)
        assert log == [("note", "first", start + 5)]
        assert await ref.call(Ticker.cancel_reminder) is False  # fired already
        await ref.call(Ticker.remind, 5, "second")
        assert await ref.call(Ticker.cancel_reminder) is True
        await trio.sleep(10)
        assert log == [("note", "first", start + 5)]


async def test_owned_tasks_and_timers_are_refused_once_the_service_is_stopping() -> None:
    class Late(Service):
        async def terminate(self, reason: BaseException | None) -> None:
            self.start_soon(trio.sleep, 1)

    async with running() as host:
        ref = await host.start(Late.child_spec(name="late"))
        ref._core.request_stop()
        exit_ = await host.ended(ref)
        assert isinstance(exit_, RuntimeError)
        assert str(exit_) == (
            "service 'late' is stopping: it starts no more tasks (its owned tasks are "
            "cancelled before terminate runs)"
        )


async def test_send_after_checks_its_arguments() -> None:
    class Bad(Service):
        async def go(self, seconds: float, fn: Any) -> None:
            self.send_after(seconds, fn)

        async def ok(self) -> None:
            pass

    async with running() as host:
        ref = await host.start(Bad.child_spec())
        with pytest.raises(ServiceCrashedError) as info:
            await ref.call(Bad.go, -1, Bad.ok)
        assert str(info.value.__cause__) == "send_after: seconds must be finite and >= 0, got -1"
        ref = await host.start(Bad.child_spec())
        with pytest.raises(ServiceCrashedError) as info:
            await ref.call(Bad.go, 1, Counter.incr)
        assert isinstance(info.value.__cause__, TypeError)


# -- 4. deferred replies -------------------------------------------------------------------


class Pool(Service):
    """One resource: ``acquire`` waits (deferred) while it is taken."""

    def __init__(self) -> None:
        self.taken = False
        self.waiting: list[trioscope.Deferred[int]] = []
        self.granted = 0
        self.skipped = 0

    async def acquire(self) -> trioscope.Deferred[int]:
        deferred: trioscope.Deferred[int] = self.defer()
        if not self.taken:
            self.taken = True
            self.granted += 1
            assert deferred.reply(self.granted) is True
        else:
            self.waiting.append(deferred)
        return deferred

    async def release(self) -> None:
        while self.waiting:
            deferred = self.waiting.pop(0)
            if deferred.abandoned:
                self.skipped += 1
                assert deferred.reply(-1) is False  # a stale reply goes nowhere
                continue
            self.granted += 1
            assert deferred.reply(self.granted) is True
            return
        self.taken = False

    async def fail_next(self) -> None:
        assert self.waiting[0].fail(ValueError("no luck")) is True
        self.waiting.pop(0)

    async def reply_twice(self) -> trioscope.Deferred[int]:
        deferred: trioscope.Deferred[int] = self.defer()
        deferred.reply(1)
        deferred.reply(2)
        return deferred

    async def crash(self) -> None:
        raise RuntimeError("pool crashed")

    async def defer_then_return(self) -> int:
        self.waiting.append(self.defer())
        return 7


async def test_a_deferred_reply_holds_the_caller_while_the_service_takes_other_messages() -> None:
    async with running() as host:
        ref = await host.start(Pool.child_spec())
        assert await ref.call(Pool.acquire) == 1
        results: dict[str, object] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(capture, results, "second", lambda: ref.call(Pool.acquire))
            await trio.testing.wait_all_tasks_blocked()
            assert stats(ref) == (0, 1, 2)  # the service is free: the caller still waits
            await ref.call(Pool.release)
        assert results == {"second": 2}
        assert stats(ref) == (0, 0, 3)


async def test_fail_raises_in_the_caller() -> None:
    async with running() as host:
        ref = await host.start(Pool.child_spec())
        await ref.call(Pool.acquire)
        results: dict[str, object] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(capture, results, "second", lambda: ref.call(Pool.acquire))
            await trio.testing.wait_all_tasks_blocked()
            await ref.call(Pool.fail_next)
        error = results["second"]
        assert isinstance(error, ValueError)
        assert str(error) == "no luck"


async def test_a_caller_that_gave_up_never_gets_a_stale_reply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as host:
        ref = await host.start(Pool.child_spec())
        await ref.call(Pool.acquire)
        with pytest.raises(CallTimeoutError):
            await ref.with_timeout(1).call(Pool.acquire)
        with trio.move_on_after(1):
            await ref.call(Pool.acquire)
        assert stats(ref) == (0, 2, 3)  # both still count until answered
        await ref.call(Pool.release)  # skips both: they gave up
        service = ref._core.service
        assert (service.skipped, service.taken) == (2, False)  # type: ignore[attr-defined]
        assert stats(ref) == (0, 0, 4)
        assert await ref.call(Pool.acquire) == 2


async def test_replying_twice_is_a_runtime_error() -> None:
    async with running() as host:
        ref = await host.start(Pool.child_spec(name="pool"))
        assert await ref.call(Pool.reply_twice) == 1  # the first reply stands
        exit_ = await host.ended(ref)  # the second is a bug: a crash
        assert isinstance(exit_, RuntimeError)
        assert str(exit_) == (
            "the deferred call reply_twice() of service 'pool' was answered already: a call "
            "gets exactly one reply"
        )


async def test_a_handler_that_defers_but_returns_a_value_answers_with_the_value() -> None:
    async with running() as host:
        ref = await host.start(Pool.child_spec())
        assert await ref.call(Pool.defer_then_return) == 7
        deferred = ref._core.service.waiting[0]  # type: ignore[attr-defined]
        assert deferred.answered
        with pytest.raises(RuntimeError, match="was answered already"):
            deferred.reply(8)


@pytest.mark.parametrize("ending", ["crash", "stop", "kill"])
async def test_deferred_calls_still_unanswered_when_the_incarnation_ends_are_unavailable(
    ending: str,
) -> None:
    async with running() as host:
        ref = await host.start(Pool.child_spec(name="pool"))
        await ref.call(Pool.acquire)
        results: dict[str, object] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(capture, results, "waiting", lambda: ref.call(Pool.acquire))
            await trio.testing.wait_all_tasks_blocked()
            if ending == "kill":
                await host.kill(ref)
            elif ending == "stop":
                ref._core.request_stop()
            else:
                with pytest.raises(ServiceCrashedError):
                    await ref.call(Pool.crash)
        error = results["waiting"]
        assert isinstance(error, ServiceUnavailableError)
        assert str(error) == (
            "service 'pool' is unavailable: it ended before answering this deferred call"
        )
        await host.ended(ref)
        assert stats(ref)[1] == 0


async def test_defer_outside_a_handler_is_an_error() -> None:
    class Tasky(Service):
        async def init(self) -> None:
            self.start_soon(self.bad)

        async def bad(self) -> None:
            self.defer()

    async with running() as host:
        ref = await host.start(Tasky.child_spec())
        exit_ = await host.ended(ref)
        assert str(exit_) == (
            "test_defer_outside_a_handler_is_an_error.<locals>.Tasky.defer() was called "
            "outside a handler: it defers the reply of the call the handler is running"
        )


# -- 7. option names and __init__ keywords --------------------------------------------------


class Named(Service):
    def __init__(self, name: str, shutdown: float = 1.0, *, colour: str = "red") -> None:
        self.seen = (name, shutdown, colour)

    async def get(self) -> tuple[str, float, str]:
        return self.seen


def test_an_init_parameter_named_like_an_option_is_an_error_at_spec_time() -> None:
    with pytest.raises(
        TypeError,
        match=exactly(
            "Named.child_spec: Named.__init__ takes 'name' and 'shutdown', which child_spec "
            "reserves for its own options; pass __init__'s values as "
            "init_kwargs={'name': ..., 'shutdown': ...} (init_kwargs={} keeps their defaults)"
        ),
    ):
        Named.child_spec(name="svc", shutdown=0.5)


async def test_init_kwargs_pass_what_the_options_would_shadow() -> None:
    async with running() as host:
        spec = Named.child_spec(
            name="svc", shutdown=0.5, init_kwargs={"name": "inner", "shutdown": 2.0}, colour="blue"
        )
        assert (spec.id, spec.shutdown) == ("svc", 0.5)
        ref = await host.start(spec)
        assert ref.name == "svc"
        assert await ref.call(Named.get) == ("inner", 2.0, "blue")


def test_init_kwargs_are_checked_against_init() -> None:
    with pytest.raises(
        TypeError,
        match=exactly(
            "Named.child_spec: bad arguments for __init__: missing a required argument: 'name'"
        ),
    ):
        Named.child_spec(init_kwargs={})
    with pytest.raises(
        TypeError,
        match=exactly("Named.child_spec: 'colour' is given both as a keyword and in init_kwargs"),
    ):
        Named.child_spec(colour="blue", init_kwargs={"name": "x", "colour": "red"})
    assert Counter.child_spec(start=10, name="counter").id == "counter"  # DESIGN.md's form


def test_an_empty_name_says_the_name_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match=exactly("Counter.child_spec: name must not be empty")):
        Counter.child_spec(name="")


async def test_a_classmethod_passed_as_a_handler_gets_a_useful_hint() -> None:
    async with running() as host:
        ref = await host.start(Counter.child_spec())
        with pytest.raises(
            TypeError,
            match=exactly(
                "Counter.child_spec is a classmethod, not a handler: handlers are the "
                "service's public async def (instance) methods (add_then_reject, crash, get, "
                "incr)"
            ),
        ):
            await ref.call(Counter.child_spec)  # type: ignore[arg-type]


class Poller(Service):
    """An owned task may call its own service: it is not the service's task."""

    def __init__(self, ref_box: list[ServiceRef[Poller]]) -> None:
        self.ref_box = ref_box
        self.polled = 0

    async def start_polling(self) -> str:
        self.start_soon(self.poll)
        return "started"  # the task begins once this handler has returned

    async def poll(self) -> None:
        for _ in range(3):
            await self.ref_box[0].call(Poller.bump)

    async def bump(self) -> int:
        self.polled += 1
        return self.polled


async def test_an_owned_task_may_call_its_own_service() -> None:
    box: list[ServiceRef[Poller]] = []
    async with running() as host:
        ref = await host.start(Poller.child_spec(ref_box=box))
        box.append(ref)
        assert await ref.call(Poller.start_polling) == "started"
        await trio.testing.wait_all_tasks_blocked()
        assert ref._core.service.polled == 3  # type: ignore[attr-defined]
        assert ref.incarnation not in host.exits


async def test_a_significant_service_stopping_itself_normally_ends_its_supervisor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = Quitter.child_spec(name="q", restart=trioscope.Restart.TRANSIENT, significant=True)
    with trio.fail_after(60):
        async with (
            trioscope.open_registry(isolated=True),
            trioscope.open_supervisor([spec], auto_shutdown="any_significant"),
        ):
            ref = trioscope.whereis("q", Quitter)
            assert ref is not None
            ref._core.service.gate.set()  # type: ignore[attr-defined]
            assert await ref.call(Quitter.quit) == "bye"
            await trio.sleep_forever()  # the supervisor's auto shutdown ends this block
