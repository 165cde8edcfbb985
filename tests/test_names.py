"""Tests for services by name: `by_name`, `wait_for_service`, and why a call by name gave up."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from _guards import checkpoints_even_when_raising

import trioscope
from trioscope import NoRegistryError, Registry, ServiceRef, ServiceUnavailableError
from trioscope._errors import _NotRunError
from trioscope._registry import RECENT_NAMES_KEPT

pytestmark = pytest.mark.trioscope_scope


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def closed_registry(what: str, namespace: str) -> str:
    return (
        f"{what} needs a registry, but registry {namespace!r} around this task has closed "
        "(its async with block exited before the task ended): start the task inside the "
        "block, or open a registry around it"
    )


class Slow(trioscope.Service):
    def __init__(self, start: int = 0) -> None:
        self.value = start

    async def incr(self, by: int = 1) -> int:
        self.value += by
        return self.value

    async def slow_get(self, seconds: float) -> int:
        await trio.sleep(seconds)
        return self.value

    async def crash(self) -> None:
        raise RuntimeError("boom")


class Other(trioscope.Service):
    async def ping(self) -> str:
        return "pong"


async def run_service(
    spec: trioscope.ChildSpec, scope: trio.CancelScope, *, task_status: trio.TaskStatus[Any]
) -> None:
    """Run one bare incarnation in *scope*; a crash after start ends only this task."""
    with scope:
        try:
            await spec.start(task_status=task_status)
        except RuntimeError:
            pass


@asynccontextmanager
async def services(namespace: str = "test") -> AsyncIterator[tuple[Registry, trio.Nursery]]:
    async with (
        trioscope.open_registry(namespace, isolated=True) as reg,
        trio.open_nursery() as nursery,
    ):
        yield reg, nursery
        nursery.cancel_scope.cancel()


async def start(
    nursery: trio.Nursery, spec: trioscope.ChildSpec
) -> tuple[ServiceRef[Any], trio.CancelScope]:
    scope = trio.CancelScope()
    ref: ServiceRef[Any] = await nursery.start(run_service, spec, scope)
    return ref, scope


# -- by_name: a timeout of one's own --------------------------------------------


async def test_by_name_calls_a_handler_slower_than_the_default_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with services() as (_, nursery):
        await start(nursery, Slow.child_spec(7, name="s"))
        svc = trioscope.by_name("s", Slow, timeout=30)
        assert isinstance(svc, trioscope.NameRef)
        assert (svc.name, svc.service_class, svc.timeout) == ("s", Slow, 30)
        t0 = trio.current_time()
        assert await svc.call(Slow.slow_get, 20) == 7
        assert trio.current_time() - t0 == 20
        # trioscope.call keeps its default timeout, unchanged.
        with pytest.raises(trioscope.CallTimeoutError):
            await trioscope.call("s", Slow.slow_get, 20)
        assert trio.current_time() - t0 == 25


async def test_by_name_waits_for_a_registration_as_long_as_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with services() as (_, nursery):
        got: list[object] = []

        async def caller() -> None:
            got.append(await trioscope.by_name("s", timeout=12).call(Slow.incr, 2))
            await trioscope.by_name("s", Slow, timeout=12).cast(Slow.incr)
            got.append(trio.current_time())

        nursery.start_soon(caller)
        await trio.sleep(11)
        ref, _ = await start(nursery, Slow.child_spec(name="s"))
        await trio.testing.wait_all_tasks_blocked()
        assert got == [2, 11.0]
        assert await ref.call(Slow.incr, 0) == 3


async def test_by_name_defaults_and_with_timeout() -> None:
    svc = trioscope.by_name("s")
    assert (svc.name, svc.service_class, svc.timeout) == (
        "s",
        None,
        trioscope.DEFAULT_CALL_TIMEOUT_S,
    )
    longer = svc.with_timeout(math.inf)
    assert (longer.name, longer.timeout) == ("s", math.inf)
    assert svc.timeout == trioscope.DEFAULT_CALL_TIMEOUT_S
    assert repr(longer) == "<NameRef 's' timeout inf>"
    assert repr(trioscope.by_name("s", Slow, timeout=2)) == "<NameRef 's' Slow timeout 2>"


async def test_by_name_validates_at_once() -> None:
    with pytest.raises(
        ValueError, match=exactly("timeout must be >= 0 (math.inf allowed), got -1")
    ):
        trioscope.by_name("s", timeout=-1)
    with pytest.raises(TypeError, match=exactly("timeout must be a number of seconds, got str")):
        trioscope.by_name("s", timeout="5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=exactly("service names must be str, got int: 5")):
        trioscope.by_name(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=exactly("cls must be a Service subclass, got int")):
        trioscope.by_name("s", int)  # type: ignore[type-var]


async def test_by_name_with_a_class_checks_what_the_name_runs() -> None:
    async with services() as (_, nursery):
        await start(nursery, Other.child_spec(name="s"))
        with (
            trio.testing.assert_no_checkpoints(),
            pytest.raises(TypeError, match=exactly("name 's' runs Other, not Slow")),
        ):
            await trioscope.by_name("s", Slow).call(Slow.incr)
        with (
            trio.testing.assert_no_checkpoints(),
            pytest.raises(TypeError, match=exactly("name 's' runs Other, not Slow")),
        ):
            await trioscope.by_name("s", Slow).cast(Slow.incr)


async def test_calls_by_name_raise_type_errors_at_once() -> None:
    # Programming errors, raised before any checkpoint (as ServiceRef.call does).
    async with services() as (reg, nursery):
        await start(nursery, Other.child_spec(name="s"))
        with reg.registered("plain", 42):
            for attempt in (
                lambda: trioscope.call("plain", Other.ping),
                lambda: trioscope.cast("plain", Other.ping),
                lambda: trioscope.call("s", Slow.incr),  # not a handler of Other
                lambda: trioscope.cast("s", Slow.incr),
            ):
                with trio.testing.assert_no_checkpoints(), pytest.raises(TypeError):
                    await attempt()


# -- why a call by name gave up ---------------------------------------------------


async def test_a_call_by_name_to_a_name_in_backoff_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with services() as (reg, _):
        reg._expect("db", "backoff", 12.5)
        with pytest.raises(
            ServiceUnavailableError,
            match=exactly(
                "service 'db' is unavailable: no live service took the call within 5 s: "
                "its child is in backoff, restarting in 7.5 s (at 12.5 on the Trio clock); "
                "give the call a longer timeout, e.g. trioscope.by_name('db', timeout=...)"
            ),
        ) as info:
            await trioscope.call("db", Slow.incr)
        assert type(info.value) is ServiceUnavailableError
        reg._expect("db", "restarting", None)
        with pytest.raises(
            ServiceUnavailableError,
            match=exactly(
                "service 'db' is unavailable: nothing was registered under that name within 2 s: "
                "its child is restarting; give the call a longer timeout, e.g. "
                "trioscope.by_name('db', timeout=...)"
            ),
        ):
            await trioscope.by_name("db", timeout=2).cast(Slow.incr)
        reg._unexpect("db")
        with pytest.raises(ServiceUnavailableError) as info:
            await trioscope.call("db", Slow.incr)
        assert "backoff" not in str(info.value)


async def test_an_expectation_is_seen_from_nested_scopes_and_ends_with_a_registration() -> None:
    async with services() as (reg, _):
        reg._expect("db", "backoff", 3.0)
        assert reg._expectation("db") == ("backoff", 3.0)
        async with trioscope.open_registry() as inner:
            assert inner._expectation("db") == ("backoff", 3.0)
            async with trioscope.open_registry(isolated=True) as iso:
                assert iso._expectation("db") is None
        with reg.registered("db", "value"):
            assert reg._expectation("db") is None
        reg._expect("db", "restarting", None)
        reg._unexpect("db")
        reg._unexpect("db")  # idempotent
        assert reg._expectation("db") is None
        reg._expect("db", "restarting", None)
    assert reg._expectation("db") is None  # closing forgets it


async def test_a_call_by_name_to_a_name_never_registered_says_it_looks_like_a_typo(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with services() as (reg, nursery):
        await start(nursery, Slow.child_spec(name="counter"))
        with pytest.raises(
            ServiceUnavailableError,
            match=exactly(
                "service 'countr' is unavailable: no live service took the call within 5 s: "
                "nothing has been registered under that name recently in the visible registry "
                "scopes; it looks like a typo: did you mean 'counter'?"
            ),
        ):
            await trioscope.call("countr", Slow.incr)
        with pytest.raises(
            ServiceUnavailableError,
            match=exactly(
                "service 'zzz' is unavailable: nothing was registered under that name within 1 s: "
                "nothing has been registered under that name recently in the visible registry "
                "scopes; it looks like a typo, or its service was never started in this scope"
            ),
        ):
            await trioscope.by_name("zzz", timeout=1).cast(Slow.incr)
        # A name that was registered (and released) is no typo.
        with reg.registered("gone", 1):
            pass
        with pytest.raises(
            ServiceUnavailableError,
            match=exactly(
                "service 'gone' is unavailable: no live service took the call within 5 s "
                "(nothing registered under that name); is it started under a supervisor in "
                "this registry scope?"
            ),
        ):
            await trioscope.call("gone", Slow.incr)


async def test_names_registered_in_an_outer_scope_are_suggested_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trioscope.open_registry() as outer:
        with outer.registered("session-store", 1):
            pass
        async with trioscope.open_registry():
            with pytest.raises(ServiceUnavailableError, match=r"did you mean 'session-store'\?$"):
                await trioscope.call("session_store", Slow.incr)


async def test_the_memory_of_past_names_is_bounded() -> None:
    async with trioscope.open_registry() as reg:
        for i in range(RECENT_NAMES_KEPT + 10):
            with reg.registered(f"n{i}", i):
                pass
        assert len(reg._recent) == RECENT_NAMES_KEPT
        assert "n0" not in reg._recent
        assert f"n{RECENT_NAMES_KEPT + 9}" in reg._recent
        # Registering again refreshes a name.
        with reg.registered("n10", 1):
            pass
        assert list(reg._recent)[-1] == "n10"


# -- no private error in by-name tracebacks ----------------------------------------


async def test_a_call_by_name_that_gives_up_after_a_crash_raises_a_plain_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with services() as (_, nursery):
        ref, _ = await start(nursery, Slow.child_spec(name="s"))
        results: list[BaseException] = []

        async def capture(call: Any) -> None:
            try:
                await call
            except (ServiceUnavailableError, trioscope.ServiceCrashedError) as exc:
                results.append(exc)

        nursery.start_soon(ref.with_timeout(math.inf).call, Slow.slow_get, 1)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(capture, ref.call(Slow.crash))  # queued first
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(capture, trioscope.by_name("s", timeout=3).call(Slow.incr))
        await trio.sleep(5)
        [crash, error] = results
        assert isinstance(crash, trioscope.ServiceCrashedError)
        assert type(error) is ServiceUnavailableError
        assert not isinstance(error, _NotRunError)
        assert isinstance(error.__cause__, RuntimeError)
        assert error.__cause__ is crash.__cause__
        assert str(error) == (
            "service 's' is unavailable: no live service took the call within 3 s "
            "(nothing registered under that name ran it); is it started under a supervisor "
            "in this registry scope?"
        )


async def test_calls_by_name_to_an_ended_incarnation_ride_through_or_raise_a_plain_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with services() as (reg, nursery):
        dead, scope = await start(nursery, Slow.child_spec(name="s"))
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        results: dict[str, object] = {}

        async def capture(key: str, attempt: Any) -> None:
            try:
                results[key] = await attempt
            except ServiceUnavailableError as exc:
                results[key] = exc

        # A registered incarnation that has ended (as while its terminate runs):
        # the message never runs there, and the next incarnation takes it.
        with reg.registered("s", dead):
            nursery.start_soon(capture, "call", trioscope.by_name("s", timeout=3).call(Slow.incr))
            nursery.start_soon(capture, "cast", trioscope.by_name("s", timeout=3).cast(Slow.incr))
            await trio.testing.wait_all_tasks_blocked()
            assert results == {}
        live, live_scope = await start(nursery, Slow.child_spec(name="s"))
        await trio.testing.wait_all_tasks_blocked()
        assert results == {"call": 1, "cast": None} or results == {"call": 2, "cast": None}
        assert await live.call(Slow.incr, 0) == 2
        live_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        # It stays registered for the whole timeout: a plain error, with no context.
        results.clear()
        with reg.registered("s", dead):
            nursery.start_soon(capture, "call", trioscope.by_name("s", timeout=3).call(Slow.incr))
            nursery.start_soon(capture, "cast", trioscope.by_name("s", timeout=3).cast(Slow.incr))
            await trio.sleep(5)
        for key, verb in (("call", "ran"), ("cast", "took")):
            error = results[key]
            assert type(error) is ServiceUnavailableError
            assert error.__cause__ is None
            assert error.__context__ is None
            assert str(error) == (
                f"service 's' is unavailable: no live service took the {key} within 3 s "
                f"(nothing registered under that name {verb} it); is it started under a "
                "supervisor in this registry scope?"
            )


# -- waiting for the next incarnation -------------------------------------------------


async def test_wait_for_service_returns_the_next_incarnation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with services() as (_, nursery):
        first, scope = await start(nursery, Slow.child_spec(name="s"))
        with trio.testing.assert_checkpoints():
            same = await trioscope.wait_for_service("s", Slow)
        assert same == first
        got: list[ServiceRef[Slow]] = []

        async def waiter() -> None:
            got.append(await trioscope.wait_for_service("s", Slow, after=first))

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        # The same incarnation under another timeout is still the same one.
        nursery.start_soon(lambda: trioscope.wait_for_service("s", after=first.with_timeout(1)))
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        second, _ = await start(nursery, Slow.child_spec(name="s"))
        await trio.testing.wait_all_tasks_blocked()
        assert got == [second]
        assert await trioscope.by_name("s", Slow).wait_for(after=first) == second


async def test_wait_for_service_honours_cancel_scopes_and_checks_the_class(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with services() as (_, nursery):
        with trio.move_on_after(4) as cancelled:
            await trioscope.wait_for_service("s")
        assert cancelled.cancelled_caught
        assert trio.current_time() == 4
        await start(nursery, Other.child_spec(name="s"))
        with (
            checkpoints_even_when_raising(),
            pytest.raises(TypeError, match=exactly("name 's' runs Other, not Slow")),
        ):
            await trioscope.wait_for_service("s", Slow)


@pytest.mark.no_trioscope_scope(
    "checks NoRegistryError outside every registry scope (then in a closing one)"
)
async def test_wait_for_service_outside_or_after_its_registry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with (
        checkpoints_even_when_raising(),
        pytest.raises(NoRegistryError, match=r"^wait_for_service\('s'\) needs a registry, and"),
    ):
        await trioscope.wait_for_service("s")
    errors: list[str] = []

    async def waiter(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await trioscope.wait_for_service("s")
        except NoRegistryError as exc:
            errors.append(str(exc))

    async with trio.open_nursery() as nursery, trioscope.open_registry("scope", isolated=True):
        await nursery.start(waiter)
        await trio.testing.wait_all_tasks_blocked()
    assert errors == [closed_registry("wait_for_service('s')", "scope")]
    assert trio.current_time() == 0


async def test_every_by_name_path_in_a_task_that_outlived_its_registry_says_it_closed() -> None:
    errors: dict[str, str] = {}
    released = trio.Event()

    async def late(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await released.wait()
        svc = trioscope.by_name("c", Slow, timeout=1)
        for key, attempt in {
            "by_name.call": lambda: svc.call(Slow.incr),
            "by_name.cast": lambda: svc.cast(Slow.incr),
            "wait_for_service": lambda: trioscope.wait_for_service("c"),
        }.items():
            with checkpoints_even_when_raising(), pytest.raises(NoRegistryError) as info:
                await attempt()
            errors[key] = str(info.value)
        with pytest.raises(NoRegistryError) as info:
            trioscope.current_registry()
        errors["current_registry"] = str(info.value)
        with pytest.raises(NoRegistryError) as info:
            svc.whereis()
        errors["by_name.whereis"] = str(info.value)

    async with trio.open_nursery() as nursery:
        async with trioscope.open_registry("scope", isolated=True):
            await nursery.start(late)
        released.set()
    assert errors == {
        "by_name.call": closed_registry("call('c', ...)", "scope"),
        "by_name.cast": closed_registry("cast('c', ...)", "scope"),
        "wait_for_service": closed_registry("wait_for_service('c')", "scope"),
        "current_registry": closed_registry("current_registry()", "scope"),
        "by_name.whereis": closed_registry("whereis('c')", "scope"),
    }


# -- what supervisors tell the registry -------------------------------------------


async def test_the_supervisor_helpers_note_only_named_services() -> None:
    from trioscope._names import _expect_restart, _unexpect_restart

    async with trioscope.open_registry() as reg:
        named = Slow.child_spec(name="db")
        _expect_restart(reg, named, "backoff", 4.0)
        assert reg._expectation("db") == ("backoff", 4.0)
        _expect_restart(reg, named, "restarting", None)
        assert reg._expectation("db") == ("restarting", None)
        _unexpect_restart(reg, named)
        assert reg._expectation("db") is None
        # Unnamed services and plain Trio children register nothing: no-ops.
        _expect_restart(reg, Slow.child_spec(), "backoff", 4.0)
        _expect_restart(reg, trioscope.ChildSpec("plain", trio.sleep_forever), "backoff", 4.0)
        assert reg._expected == {}
        # So is a supervisor that opened outside every registry.
        _expect_restart(None, named, "backoff", 4.0)
        _unexpect_restart(None, named)


async def test_wait_for_service_after_a_supervised_crash_returns_the_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([Slow.child_spec(name="s")]),
    ):
        first = await trioscope.wait_for_service("s", Slow)
        await first.cast(Slow.crash)
        second = await trioscope.wait_for_service("s", Slow, after=first)
        assert second.incarnation != first.incarnation
        assert await second.call(Slow.incr) == 1


async def test_a_call_by_name_to_a_supervised_child_in_backoff_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = Slow.child_spec(name="s", backoff=trioscope.Backoff(initial=8.0, jitter=0.0))
    async with trioscope.open_registry(isolated=True), trioscope.open_supervisor([spec]):
        first = await trioscope.wait_for_service("s")
        await first.cast(Slow.crash)
        await trio.testing.wait_all_tasks_blocked()
        t0 = trio.current_time()
        with pytest.raises(
            ServiceUnavailableError,
            match=exactly(
                "service 's' is unavailable: no live service took the call within 5 s: "
                f"its child is in backoff, restarting in 3 s (at {t0 + 8:g} on the Trio clock); "
                "give the call a longer timeout, e.g. trioscope.by_name('s', timeout=...)"
            ),
        ):
            await trioscope.call("s", Slow.incr)
        # A budget past the backoff rides through the restart.
        assert await trioscope.by_name("s", Slow, timeout=10).call(Slow.incr) == 1
        assert trioscope.current_registry()._expectation("s") is None


async def test_a_call_by_name_that_waited_for_mailbox_space_has_no_stray_context(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with services() as (_, nursery):
        ref, scope = await start(nursery, Slow.child_spec(name="s", mailbox_size=1))

        async def busy() -> None:
            with pytest.raises(ServiceUnavailableError):
                await ref.with_timeout(math.inf).call(Slow.slow_get, 100)

        nursery.start_soon(busy)
        await trio.testing.wait_all_tasks_blocked()
        await ref.cast(Slow.incr)  # the mailbox is now full
        # Timed out while waiting for space: a timeout, with nothing chained.
        with pytest.raises(trioscope.CallTimeoutError) as timed_out:
            await trioscope.by_name("s", timeout=2).call(Slow.incr)
        assert timed_out.value.__context__ is None
        assert timed_out.value.__cause__ is None
        # Waiting for space when the incarnation is killed: never ran, so it
        # waits for the next one, and gives up with a plain error.
        results: list[BaseException] = []

        async def caller() -> None:
            try:
                await trioscope.by_name("s", timeout=2).call(Slow.incr)
            except ServiceUnavailableError as exc:
                results.append(exc)

        nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.sleep(3)
        [error] = results
        assert type(error) is ServiceUnavailableError
        assert error.__context__ is None
        assert error.__cause__ is None
        assert str(error) == (
            "service 's' is unavailable: no live service took the call within 2 s "
            "(nothing registered under that name ran it); is it started under a supervisor "
            "in this registry scope?"
        )
