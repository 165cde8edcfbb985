"""open_test_scope: isolation, and an exact report of every kind of leak."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager

import pytest
import trio
import trio.testing
from _scope_support import Token, line_of

import trioscope
from trioscope import telemetry
from trioscope.foundation import Event, config, events
from trioscope.foundation._foundation import FOUNDATION_SERVICES
from trioscope.testing._scope import Leak, LeakError, TestScope, open_test_scope

pytestmark = pytest.mark.trioscope_scope

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

HERE = __file__


_KEPT: list[AbstractContextManager[None]] = []


def _leave_registered(reg: trioscope.Registry, name: str, value: object) -> None:
    """Enter reg.registered(name, value) and never leave it.

    The context manager is kept: dropping it would close its generator, and so
    release the name.
    """
    held = reg.registered(name, value)
    held.__enter__()
    _KEPT.append(held)


async def forever() -> None:
    await trio.sleep_forever()  # LEAKED-TASK-WAITS-HERE


async def hold_name_forever(name: str) -> None:
    async with trioscope.open_registry(namespace="nested"):
        with trioscope.current_registry().registered(name, Token(name)):
            await trio.sleep_forever()  # NESTED-WAITS-HERE


# -- no false positives --------------------------------------------------------


async def test_clean_scope_is_isolated_and_current() -> None:
    async with trioscope.open_registry(namespace="outer") as outer:
        with outer.registered("outside", Token("outside")):
            async with open_test_scope("clean") as scope:
                assert isinstance(scope, TestScope)
                assert scope.namespace == "clean"
                assert trioscope.current_registry() is scope.registry
                assert scope.registry.isolated is True
                assert scope.registry.parent is outer
                assert scope.registry.lookup("outside") is None
                with scope.registry.registered("inside", Token("inside")):
                    pass
            assert scope.registry._closed is True


async def test_background_tasks_holding_names_are_the_scopes_own() -> None:
    ran = trio.Event()

    async def serve(name: str) -> None:
        with trioscope.current_registry().registered(name, Token(name)):
            ran.set()
            await trio.sleep_forever()

    async with open_test_scope("bg") as scope:
        scope.start_soon(serve, "worker", name="worker-task")
        await ran.wait()
        assert scope.registry.names() == ["worker"]
    # No LeakError: the scope cancelled its own task before the check.
    with pytest.raises(RuntimeError, match=r"^test scope 'bg' has ended: cannot start "):
        scope.start_soon(forever)


async def test_foundation_scope_holds_nothing_of_its_own_as_a_leak(
    autojump_clock: trio.testing.MockClock,
) -> None:
    delivered: list[str] = []
    subscribed = trio.Event()

    async def consume() -> None:
        async with events.subscribe() as live:
            subscribed.set()
            async for event in live:
                delivered.append(event.type)

    async with open_test_scope(
        "found", foundation=True, values={"events": {"max_events": 50}}
    ) as scope:
        assert isinstance(scope.foundation, trioscope.Supervisor)
        for name in FOUNDATION_SERVICES:
            assert isinstance(scope.registry.lookup(name), trioscope.ServiceRef)
        assert config.get("events.max_events") == 50
        await config.update("events.max_events", 60)
        async with config.subscribe() as changes:
            await config.update("events.max_events", 70)
            change = await changes.receive()
            assert (change.path, change.new) == ("events.max_events", 70)
        scope.start_soon(consume)
        await subscribed.wait()
        await events.store(Event("order.placed", {"order": 1}))
        await trio.testing.wait_all_tasks_blocked()
        assert delivered == ["order.placed"]


async def test_foundation_property_without_foundation() -> None:
    async with open_test_scope("bare") as scope:
        with pytest.raises(
            RuntimeError,
            match=r"^test scope 'bare' has no foundation: open it with "
            r"open_test_scope\(foundation=True\) \(or use the foundation fixture\)$",
        ):
            scope.foundation  # noqa: B018


async def test_foundation_kwargs_need_foundation() -> None:
    with pytest.raises(
        TypeError,
        match=r"^open_test_scope: values configure the foundation; pass foundation=True too$",
    ):
        async with open_test_scope("x", values={}):
            pass  # pragma: no cover


# -- each kind of leak, exactly ------------------------------------------------


async def test_leaked_name() -> None:
    async def body() -> None:
        async with open_test_scope("names") as scope:
            _leave_registered(scope.registry, "cache", Token("cache"))

    with pytest.raises(LeakError) as info:
        await body()
    assert info.value.scope == "names"
    assert info.value.leaks == (
        Leak("name", "cache", "names", "still registered, held by <Token cache>"),
    )
    assert str(info.value) == (
        "test scope 'names' leaked 1 thing that outlived it (release names, detach handlers "
        "and close subscriptions in the test; run background tasks with scope.start_soon or a "
        "nursery inside the scope):\n"
        "  - name 'cache' in registry 'names': still registered, held by <Token cache>"
    )
    assert isinstance(info.value, AssertionError)
    assert isinstance(info.value, trioscope.TrioscopeError)


async def test_leaked_handler() -> None:
    def handler(*_: object) -> None:
        pass

    async def body() -> None:
        async with open_test_scope("handlers"):
            telemetry.attach("my-handler", [("app", "request", "stop"), ("app", "x")], handler)
            with telemetry.attached("released", [("app", "y")], handler):
                pass

    with pytest.raises(LeakError) as info:
        await body()
    assert info.value.leaks == (
        Leak(
            "handler",
            "my-handler",
            "handlers",
            f"telemetry handler still attached to app.request.stop, app.x ({handler!r})",
        ),
    )


async def test_leaked_subscription_on_a_foundation_hub(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def body() -> None:
        async with open_test_scope("subs", foundation=True):
            held = events.subscribe(buffer=7)
            await held.__aenter__()  # and never left
            async with events.subscribe():
                pass  # a subscription that ends is no leak

    with pytest.raises(LeakError) as info:
        await body()
    kinds = [(leak.kind, leak.what, leak.registry) for leak in info.value.leaks]
    assert kinds == [("subscription", "events", "subs")]
    assert info.value.leaks[0].detail == (
        "subscription still open on the hub of 'events.home': "
        "<Subscription to events 0/7 delivered=0 live>, opened by task "
        f"{trio.lowlevel.current_task().name!r}"
    )


async def test_leaked_task_named_with_where_it_started_and_waits() -> None:
    async with trio.open_nursery() as outer:

        async def body() -> None:
            async with open_test_scope("tasks"):
                outer.start_soon(forever, name="leaky-worker")
                await trio.testing.wait_all_tasks_blocked()

        with pytest.raises(LeakError) as info:
            await body()
        outer.cancel_scope.cancel()
    started = line_of(forever, "async def forever")
    waits = line_of(forever, "LEAKED-TASK-WAITS-HERE")
    spawned = line_of(test_leaked_task_named_with_where_it_started_and_waits, 'name="leaky-worker"')
    assert info.value.leaks == (
        Leak(
            "task",
            "leaky-worker",
            "tasks",
            f"still running: started at body ({HERE}:{spawned}) as forever ({HERE}:{started}), "
            f"now in forever ({HERE}:{waits})",
        ),
    )


async def test_task_alive_as_the_body_ends_is_a_leak_even_if_cancelled_right_after() -> None:
    # The outer nursery is cancelled only after the scope closed; the task was
    # alive outside the scope when its body ended, so it outlived the body.
    async with trio.open_nursery() as outer:

        async def body() -> None:
            async with open_test_scope("race"):
                outer.start_soon(forever, name="short-lived")

        with pytest.raises(LeakError) as info:
            await body()
        outer.cancel_scope.cancel()
    assert [(leak.kind, leak.what) for leak in info.value.leaks] == [("task", "short-lived")]


async def test_nested_registry_of_a_leaked_task_reports_its_names_too() -> None:
    async with trio.open_nursery() as outer:

        async def body() -> None:
            async with open_test_scope("outer-scope"):
                outer.start_soon(hold_name_forever, "deep", name="holder")
                await trio.testing.wait_all_tasks_blocked()

        with pytest.raises(LeakError) as info:
            await body()
        outer.cancel_scope.cancel()
    waits = line_of(hold_name_forever, "NESTED-WAITS-HERE")
    started = line_of(hold_name_forever, "async def hold_name_forever")
    spawned = line_of(test_nested_registry_of_a_leaked_task_reports_its_names_too, 'name="holder"')
    assert info.value.leaks == (
        Leak("name", "deep", "nested", "still registered, held by <Token deep>"),
        Leak(
            "task",
            "holder",
            "nested",
            f"still running: started at body ({HERE}:{spawned}) "
            f"as hold_name_forever ({HERE}:{started}), "
            f"now in hold_name_forever ({HERE}:{waits})",
        ),
    )


async def test_every_kind_at_once_names_first_then_tasks_sorted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as outer:

        async def body() -> None:
            async with open_test_scope("all", foundation=True) as scope:
                outer.start_soon(forever, name="z-task")
                outer.start_soon(forever, name="a-task")
                _leave_registered(scope.registry, "n", Token("n"))
                telemetry.attach("h", [("e",)], print)
                sub = events.subscribe()
                await sub.__aenter__()
                await trio.testing.wait_all_tasks_blocked()

        with pytest.raises(LeakError) as info:
            await body()
        outer.cancel_scope.cancel()
    assert [(leak.kind, leak.what) for leak in info.value.leaks] == [
        ("name", "n"),
        ("handler", "h"),
        ("subscription", "events"),
        ("task", "a-task"),
        ("task", "z-task"),
    ]
    assert str(info.value).startswith("test scope 'all' leaked 5 things that outlived it ")


# -- exceptions from the body -------------------------------------------------


async def test_body_exception_propagates_with_the_leaks_as_a_note() -> None:
    async def body() -> None:
        async with open_test_scope("failing") as scope:
            _leave_registered(scope.registry, "left", Token("left"))
            raise ValueError("the test failed")

    with pytest.raises(ValueError, match=r"^the test failed\n") as info:
        await body()
    assert info.value.__notes__ == [
        "test scope 'failing' leaked 1 thing that outlived it (release names, detach handlers "
        "and close subscriptions in the test; run background tasks with scope.start_soon or a "
        "nursery inside the scope):\n"
        "  - name 'left' in registry 'failing': still registered, held by <Token left>"
    ]


async def test_body_exception_without_leaks_is_untouched() -> None:
    error = KeyError("k")

    async def body() -> None:
        async with open_test_scope("failing"):
            raise error

    with pytest.raises(KeyError) as info:
        await body()
    assert info.value is error
    assert not hasattr(error, "__notes__")


async def test_background_task_error_propagates_alone() -> None:
    async def crash() -> None:
        raise OSError("background")

    async def body() -> None:
        async with open_test_scope("bg-crash") as scope:
            scope.start_soon(crash)
            await trio.sleep_forever()

    with pytest.raises(OSError, match=r"^background$"):
        await body()


async def test_two_errors_propagate_as_their_group() -> None:
    async def crash() -> None:
        raise OSError("background")

    with pytest.RaisesGroup(OSError, ValueError):
        async with open_test_scope("two") as scope:
            scope.start_soon(crash)
            try:
                await trio.sleep_forever()
            finally:
                raise ValueError("body")


async def test_cancellation_leaves_unchecked(autojump_clock: trio.testing.MockClock) -> None:
    with trio.move_on_after(1.0) as cancel_scope:
        async with open_test_scope("cancelled") as scope:
            _leave_registered(scope.registry, "left", Token("left"))
            await trio.sleep_forever()
    assert cancel_scope.cancelled_caught is True


# -- nesting ------------------------------------------------------------------------


async def test_nested_scopes_check_themselves() -> None:
    async with open_test_scope("outer") as outer:
        with outer.registry.registered("shared", Token("outer")):

            async def body() -> None:
                async with open_test_scope("inner") as inner:
                    assert inner.registry.parent is outer.registry
                    assert inner.registry.lookup("shared") is None  # isolated
                    _leave_registered(inner.registry, "shared", Token("inner"))

            with pytest.raises(LeakError) as info:
                await body()
            assert info.value.leaks == (
                Leak("name", "shared", "inner", "still registered, held by <Token inner>"),
            )
            assert trioscope.current_registry() is outer.registry
    # The outer scope ended clean: the inner registry is closed, its leak was its own.


def test_leak_str() -> None:
    leak = Leak("task", "t", None, "still running")
    assert str(leak) == "task 't' in registry None: still running"


async def test_foundation_restarted_in_the_body_is_still_no_leak(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_scope("restarted", foundation=True) as scope:
        ids = [child.id for child in scope.foundation.which_children()]
        before = {name: scope.registry.lookup(name) for name in FOUNDATION_SERVICES}
        # New incarnations: new refs, new homes, a new telemetry handler id.
        for child in (ids[2], ids[0]):
            await scope.foundation.terminate_child(child)
            await scope.foundation.restart_child(child)
        for name in FOUNDATION_SERVICES:
            await trioscope.wait_for_service(name)
        after = {name: scope.registry.lookup(name) for name in FOUNDATION_SERVICES}
        assert [after[name] is before[name] for name in FOUNDATION_SERVICES] == [False, True, False]
        await events.store(Event("after.restart", {}))


# -- review regressions: what leaves the body leaves the scope unchanged ----------------


async def test_a_group_the_body_raises_propagates_as_the_very_object() -> None:
    async def boom() -> None:
        raise ValueError("inner")

    with pytest.raises(BaseExceptionGroup) as info:
        async with open_test_scope("group-of-one"), trio.open_nursery() as nursery:
            nursery.start_soon(boom)
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    assert info.value.message == "Exceptions from Trio nursery"  # the body's own nursery's

    mine = ExceptionGroup("mine", [ValueError("a"), KeyError("b")])
    with pytest.raises(ExceptionGroup) as caught:
        async with open_test_scope("group-of-two"):
            raise mine
    assert caught.value is mine


async def test_a_cancellation_passes_through_bare() -> None:
    with trio.CancelScope() as outer:
        try:
            async with open_test_scope("cancelled"):
                outer.cancel()
                await trio.sleep_forever()
        except trio.Cancelled:
            raise
        except BaseException as exc:  # pragma: no cover - the regression
            pytest.fail(f"the cancellation came out as {exc!r}")
    assert outer.cancelled_caught


async def test_a_foundation_object_registered_again_under_another_name_is_a_leak() -> None:
    """Review: the foundation's own entries were exempt by value, any name."""
    aliases: list[AbstractContextManager[None]] = []

    async def alias_and_forget() -> None:
        async with open_test_scope("alias", foundation=True) as scope:
            config_ref = trioscope.whereis("config")
            aliases.append(scope.registry.registered("my-config", config_ref))
            aliases.append(scope.registry.registered("my-sup", scope.foundation))
            for alias in aliases:
                alias.__enter__()  # and never left

    with pytest.raises(LeakError) as info:
        await alias_and_forget()
    assert [(leak.kind, leak.what) for leak in info.value.leaks] == [
        ("name", "my-config"),
        ("name", "my-sup"),
    ]


async def test_a_task_leaked_by_a_nested_scope_is_the_outer_scopes_leak_too() -> None:
    # Each scope reads the tasks spawned in it; a nested scope's leftovers pass to
    # the open scope around it when it closes, so they are not forgotten there.
    async with trio.open_nursery() as outer:

        async def leaky_inner() -> None:
            async with open_test_scope("inner"):
                outer.start_soon(forever, name="left-inside")
                await trio.testing.wait_all_tasks_blocked()

        async def body() -> None:
            async with open_test_scope("outer"):
                with pytest.raises(LeakError) as inner:
                    await leaky_inner()
                assert [leak.what for leak in inner.value.leaks] == ["left-inside"]

        with pytest.raises(LeakError) as info:
            await body()
        outer.cancel_scope.cancel()
    assert [(leak.kind, leak.what, leak.registry) for leak in info.value.leaks] == [
        ("task", "left-inside", "inner")
    ]
