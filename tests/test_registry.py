"""Tests for scoped registries (DESIGN.md section 1)."""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing
from _guards import checkpoints_even_when_raising

import trioscope
from trioscope import AlreadyRegisteredError, NoRegistryError, Registry

pytestmark = pytest.mark.trioscope_scope

HOW_TO_OPEN = (
    "needs a registry, and none is open around the current task: wrap the code in "
    "`async with trioscope.open_registry():` (or run it under `trioscope.run(...)`, "
    "which opens one)"
)


def no_registry(what: str) -> str:
    """The exact message of a `NoRegistryError` for *what*, as a match pattern."""
    return "^" + re.escape(f"{what} {HOW_TO_OPEN}") + "$"


def closed_registry(what: str, namespace: str) -> str:
    """The exact message of a `NoRegistryError` for *what* on a closed registry."""
    return (
        f"{what} needs a registry, but registry {namespace!r} around this task has closed "
        "(its async with block exited before the task ended): start the task inside the "
        "block, or open a registry around it"
    )


# -- the scope and current_registry() ---------------------------------------


@pytest.mark.no_trioscope_scope("checks NoRegistryError outside every registry scope")
async def test_current_registry_outside_every_scope_says_how_to_open_one() -> None:
    with pytest.raises(NoRegistryError, match=no_registry("current_registry()")) as info:
        trioscope.current_registry()
    assert isinstance(info.value, trioscope.TrioscopeError)
    assert isinstance(info.value, LookupError)


@pytest.mark.no_trioscope_scope("checks a root registry (no parent), and none after its block")
async def test_open_registry_is_current_exactly_for_its_block() -> None:
    async with trioscope.open_registry(namespace="app") as reg:
        assert isinstance(reg, Registry)
        assert trioscope.current_registry() is reg
        assert reg.namespace == "app"
        assert reg.parent is None
        assert reg.isolated is False
    with pytest.raises(NoRegistryError):
        trioscope.current_registry()


async def test_open_registry_defaults() -> None:
    async with trioscope.open_registry() as reg:
        assert reg.namespace is None
        assert reg.isolated is False


@pytest.mark.no_trioscope_scope("checks NoRegistryError after a root registry's block raised")
async def test_the_block_is_left_cleanly_when_its_body_raises() -> None:
    opened: list[Registry] = []

    async def body() -> None:
        async with trioscope.open_registry() as reg:
            opened.append(reg)
            with reg.registered("x", 1):
                raise KeyError("body")

    with pytest.raises(KeyError):
        await body()
    assert opened[0].lookup("x") is None
    with pytest.raises(NoRegistryError):
        trioscope.current_registry()


async def test_namespace_must_be_a_str_or_none() -> None:
    with pytest.raises(TypeError, match=r"^namespace must be a str or None, got int$"):
        async with trioscope.open_registry(namespace=3):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_nested_scopes_have_parents_and_the_innermost_is_current() -> None:
    async with trioscope.open_registry("outer") as outer:
        async with trioscope.open_registry("inner", isolated=True) as inner:
            assert trioscope.current_registry() is inner
            # An isolated registry still names its parent, for introspection.
            assert inner.parent is outer
            assert inner.isolated is True
        assert trioscope.current_registry() is outer


async def test_every_task_started_inside_the_block_sees_it_at_any_depth() -> None:
    seen: list[Registry] = []

    async def deep(level: int) -> None:
        seen.append(trioscope.current_registry())
        if level:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(deep, level - 1)

    async with trioscope.open_registry() as reg, trio.open_nursery() as nursery:
        nursery.start_soon(deep, 3)
    assert seen == [reg] * 4


@pytest.mark.no_trioscope_scope("checks that a task outside a root registry's block sees none")
async def test_tasks_outside_the_block_do_not_see_it() -> None:
    opened = trio.Event()
    checked = trio.Event()
    outside: list[BaseException] = []

    async def opener() -> None:
        async with trioscope.open_registry():
            opened.set()
            await checked.wait()

    async def sibling() -> None:
        await opened.wait()
        try:
            trioscope.current_registry()
        except NoRegistryError as exc:
            outside.append(exc)
        checked.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(opener)
        nursery.start_soon(sibling)
    assert len(outside) == 1


async def test_repr() -> None:
    async with trioscope.open_registry("ns", isolated=True) as reg:
        with reg.registered("a", 1), reg.registered("b", 2):
            assert repr(reg) == "<Registry 'ns' isolated 2 names>"
    assert repr(reg) == "<Registry 'ns' isolated closed>"


# -- registering and lookups ---------------------------------------------


async def test_registered_lasts_for_the_with_block() -> None:
    async with trioscope.open_registry() as reg:
        value = object()
        assert reg.lookup("x") is None
        with reg.registered("x", value):
            assert reg.lookup("x") is value
            assert reg.names() == ["x"]
        assert reg.lookup("x") is None
        assert reg.names() == []


async def test_registered_is_released_when_its_block_raises() -> None:
    async with trioscope.open_registry() as reg:
        with pytest.raises(RuntimeError, match=r"^inside$"), reg.registered("x", 1):
            raise RuntimeError("inside")
        assert reg.lookup("x") is None


async def test_names_lists_local_names_in_registration_order() -> None:
    async with trioscope.open_registry() as outer:
        with outer.registered("outer-name", 0):
            async with trioscope.open_registry() as reg:
                with reg.registered("b", 1), reg.registered("a", 2), reg.registered("c", 3):
                    assert reg.names() == ["b", "a", "c"]
                    # names() is a copy: changing it changes nothing.
                    reg.names().clear()
                    assert reg.names() == ["b", "a", "c"]


async def test_registering_goes_into_the_innermost_registry() -> None:
    async with (
        trioscope.open_registry("outer") as outer,
        trioscope.open_registry("inner") as inner,
    ):
        with trioscope.current_registry().registered("x", 1):
            assert inner.names() == ["x"]
            assert outer.names() == []
            assert outer.lookup("x") is None


async def test_lookup_walks_outward_through_parents() -> None:
    async with trioscope.open_registry("a") as a:
        with a.registered("in-a", "A"):
            async with trioscope.open_registry("b") as b:
                with b.registered("in-b", "B"):
                    async with trioscope.open_registry("c") as c:
                        with c.registered("in-c", "C"):
                            assert [c.lookup(n) for n in ("in-a", "in-b", "in-c")] == [
                                "A",
                                "B",
                                "C",
                            ]
                            # Lookups never walk inward.
                            assert b.lookup("in-c") is None
                            assert a.lookup("in-b") is None
                            assert c.lookup("missing") is None


async def test_lookup_stops_at_an_isolated_registry() -> None:
    async with trioscope.open_registry("outer") as outer:
        with outer.registered("x", "outer"), outer.registered("only-outer", 1):
            async with trioscope.open_registry("iso", isolated=True) as iso:
                with iso.registered("in-iso", 2):
                    async with trioscope.open_registry("nested") as nested:
                        # From the isolated registry and from any scope nested in it:
                        for reg in (iso, nested):
                            assert reg.lookup("only-outer") is None
                            assert reg.lookup("x") is None
                        # ...but the isolated registry's own names are visible inward.
                        assert nested.lookup("in-iso") == 2
                        # The same name in the isolated scope: no conflict with outer.
                        with iso.registered("x", "iso"):
                            assert nested.lookup("x") == "iso"
                            assert outer.lookup("x") == "outer"


async def test_an_inner_scope_shadows_an_outer_name_until_it_is_released() -> None:
    async with trioscope.open_registry() as outer:
        with outer.registered("x", "outer"):
            async with trioscope.open_registry() as inner:
                with inner.registered("x", "inner"):
                    assert inner.lookup("x") == "inner"
                    assert outer.lookup("x") == "outer"
                assert inner.lookup("x") == "outer"


async def test_sibling_scopes_hold_the_same_name_at_once() -> None:
    async with trioscope.open_registry() as parent:
        results: dict[str, object] = {}

        async def sibling(label: str, ready: trio.Event, go: trio.Event) -> None:
            async with trioscope.open_registry() as reg:
                with reg.registered("x", label):
                    ready.set()
                    await go.wait()
                    results[label] = trioscope.current_registry().lookup("x")

        go = trio.Event()
        ready = [trio.Event(), trio.Event()]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sibling, "one", ready[0], go)
            nursery.start_soon(sibling, "two", ready[1], go)
            for event in ready:
                await event.wait()
            go.set()
        assert results == {"one": "one", "two": "two"}
        assert parent.names() == []


async def test_already_registered_changes_nothing_and_carries_the_holder() -> None:
    holder = object()
    async with trioscope.open_registry("ns") as reg:
        with reg.registered("x", holder):
            pattern = (
                r"^name 'x' is already registered in registry 'ns' \(held by "
                + re.escape(repr(holder))
                + r"\); pick another name, or open a nested registry scope to shadow it$"
            )
            with (
                pytest.raises(AlreadyRegisteredError, match=pattern) as info,
                reg.registered("x", "intruder"),
            ):
                pytest.fail("the second registration must not enter its block")
            err = info.value
            assert (err.name, err.holder, err.namespace) == ("x", holder, "ns")
            assert isinstance(err, ValueError)
            assert isinstance(err, trioscope.TrioscopeError)
            # Nothing changed: the holder keeps the name, and keeps it after the
            # failed attempt's cleanup.
            assert reg.lookup("x") is holder
            assert reg.names() == ["x"]
        assert reg.lookup("x") is None


async def test_already_registered_message_without_a_namespace() -> None:
    async with trioscope.open_registry() as reg:
        with reg.registered("x", 1):
            with (
                pytest.raises(
                    AlreadyRegisteredError,
                    match=(
                        r"^name 'x' is already registered in this registry \(held by 1\); "
                        r"pick another name, or open a nested registry scope to shadow it$"
                    ),
                ),
                reg.registered("x", 2),
            ):
                pass  # pragma: no cover
            assert reg.lookup("x") == 1


async def test_registered_rejects_a_non_str_name_and_none() -> None:
    async with trioscope.open_registry() as reg:
        with (
            pytest.raises(TypeError, match=r"^registry names must be str, got int: 5$"),
            reg.registered(5, "v"),  # type: ignore[arg-type]
        ):
            pass  # pragma: no cover
        with (
            pytest.raises(
                TypeError, match=r"^cannot register None as 'x': None means 'not registered'$"
            ),
            reg.registered("x", None),
        ):
            pass  # pragma: no cover
        assert reg.names() == []


# -- a registration lasts as long as its holder ---------------------------


@pytest.mark.parametrize("ending", ["return", "crash", "cancel"])
async def test_a_name_is_released_when_its_holder_ends(ending: str) -> None:
    release = trio.Event()
    crashed: list[BaseException] = []

    async def holder(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with trioscope.current_registry().registered("x", "held"):
                task_status.started()
                if ending == "cancel":
                    await trio.sleep_forever()
                await release.wait()
                if ending == "crash":
                    raise RuntimeError("holder crashed")
        except RuntimeError as exc:  # caught outside the block: it has already released
            crashed.append(exc)

    async with trioscope.open_registry() as reg:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(holder)
                assert reg.lookup("x") == "held"
                if ending == "cancel":
                    scope.cancel()
                release.set()
        assert scope.cancelled_caught == (ending == "cancel")
        assert len(crashed) == (ending == "crash")
        assert reg.lookup("x") is None
        assert reg.names() == []


async def test_a_released_name_can_be_registered_again() -> None:
    async with trioscope.open_registry() as reg:
        with reg.registered("x", 1):
            pass
        with reg.registered("x", 2):
            assert reg.lookup("x") == 2


async def test_when_a_scope_exits_nothing_it_registered_is_left_anywhere() -> None:
    attempts: list[BaseException] = []

    async def long_lived_holder(
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # Started from inside the block into a nursery that outlives it.
        reg = trioscope.current_registry()
        with reg.registered("held", "value"):
            task_status.started()
            await released.wait()
        # The scope has closed: registering again in it is refused, and the
        # closed registry is no longer current for this task.
        try:
            with reg.registered("again", "value"):
                pass  # pragma: no cover
        except NoRegistryError as exc:
            attempts.append(exc)
        try:
            trioscope.current_registry()
        except NoRegistryError as exc:
            attempts.append(exc)

    released = trio.Event()
    async with trioscope.open_registry("outer") as outer, trio.open_nursery() as nursery:
        async with trioscope.open_registry("scope") as reg:
            await nursery.start(long_lived_holder)
            with reg.registered("plain", 1):
                assert reg.names() == ["held", "plain"]
            with reg.registered("left-open", 2):
                pass
        assert reg.names() == []
        assert reg.lookup("held") is None
        assert outer.lookup("held") is None
        assert outer.names() == []
        released.set()
    closed = (
        "needs a registry, but registry 'scope' around this task has closed (its async "
        "with block exited before the task ended): start the task inside the block, or "
        "open a registry around it"
    )
    assert [str(exc) for exc in attempts] == [
        f"registering 'again' {closed}",
        f"current_registry() {closed}",
    ]


# -- wait_for ------------------------------------------------------------------


async def test_wait_for_returns_a_registered_value_after_a_checkpoint() -> None:
    async with trioscope.open_registry() as reg:
        with reg.registered("x", "v"), trio.testing.assert_checkpoints():
            assert await reg.wait_for("x") == "v"


async def test_wait_for_waits_until_the_name_is_registered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trioscope.open_registry() as reg, trio.open_nursery() as nursery:
        got: list[object] = []

        async def waiter() -> None:
            got.append(await reg.wait_for("x"))
            got.append(trio.current_time())

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        # An unrelated name does not satisfy it.
        with reg.registered("other", 1):
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
        await trio.sleep(7)
        with reg.registered("x", "late"):
            await trio.testing.wait_all_tasks_blocked()
        assert got == ["late", 7.0]


async def test_wait_for_sees_a_name_registered_in_an_enclosing_scope() -> None:
    got: list[object] = []

    async def waiter(inner: Registry) -> None:
        got.append(await inner.wait_for("x"))

    async with (
        trioscope.open_registry() as outer,
        trioscope.open_registry() as inner,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(waiter, inner)
        await trio.testing.wait_all_tasks_blocked()
        with outer.registered("x", "from-outer"):
            await trio.testing.wait_all_tasks_blocked()
        assert got == ["from-outer"]


async def test_wait_for_ignores_registrations_beyond_an_isolated_boundary(
    autojump_clock: trio.testing.MockClock,
) -> None:
    got: list[object] = []

    async def waiter(iso: Registry) -> None:
        with trio.move_on_after(10) as scope:
            got.append(await iso.wait_for("x"))
        got.append(scope.cancelled_caught)

    async with (
        trioscope.open_registry() as outer,
        trioscope.open_registry(isolated=True) as iso,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(waiter, iso)
        await trio.testing.wait_all_tasks_blocked()
        with outer.registered("x", "outer"):
            await trio.sleep(20)
    assert got == [True]


async def test_wait_for_honours_the_callers_cancel_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trioscope.open_registry() as outer, trioscope.open_registry() as reg:
        start = trio.current_time()
        with trio.move_on_after(3) as scope:
            await reg.wait_for("x")
        assert scope.cancelled_caught
        assert trio.current_time() - start == 3
        # The cancelled waiter left nothing behind in any registry it watched.
        assert reg._watchers == {}
        assert outer._watchers == {}
        # An already-cancelled scope cancels even a name that is there.
        with reg.registered("x", 1), trio.CancelScope() as cancelled:
            cancelled.cancel()
            await reg.wait_for("x")
        assert cancelled.cancelled_caught


async def test_wait_for_keeps_waiting_if_the_name_comes_and_goes_before_it_runs() -> None:
    async with trioscope.open_registry() as reg, trio.open_nursery() as nursery:
        got: list[object] = []

        async def waiter() -> None:
            got.append(await reg.wait_for("x"))

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        with reg.registered("x", "brief"):
            pass  # released before the waiter gets to run
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        with reg.registered("x", "stays"):
            await trio.testing.wait_all_tasks_blocked()
        assert got == ["stays"]


async def test_wait_for_on_a_registry_that_closes_raises_no_registry_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors: list[NoRegistryError] = []

    async def waiter(reg: Registry, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            with trio.fail_after(60):  # the clock jumps there if it waits for good
                await reg.wait_for("x")
        except NoRegistryError as exc:
            errors.append(exc)

    async with trioscope.open_registry("outer") as outer, trio.open_nursery() as nursery:
        async with trioscope.open_registry("scope") as reg:
            # The waiter runs in a nursery that outlives the block.
            await nursery.start(waiter, reg)
            await trio.testing.wait_all_tasks_blocked()
            assert errors == []
        await trio.testing.wait_all_tasks_blocked()
        assert [str(exc) for exc in errors] == [closed_registry("wait_for('x')", "scope")]
        assert (errors[0].what, errors[0].closed) == ("wait_for('x')", "scope")
        # It left nothing behind in the registries it watched.
        assert reg._watchers == {}
        assert outer._watchers == {}


async def test_wait_for_on_a_closed_registry_raises_after_a_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trioscope.open_registry("gone") as reg:
        pass
    with (
        trio.fail_after(60),  # the clock jumps there if it waits for good
        checkpoints_even_when_raising(),
        pytest.raises(
            NoRegistryError, match="^" + re.escape(closed_registry("wait_for('x')", "gone")) + "$"
        ),
    ):
        await reg.wait_for("x")
    # A cancelled caller is cancelled first, as at any checkpoint.
    with trio.CancelScope() as scope:
        scope.cancel()
        await reg.wait_for("x")
    assert scope.cancelled_caught
    assert reg._watchers == {}


async def test_a_registry_closing_does_not_end_a_wait_on_a_scope_nested_in_it() -> None:
    # A task started inside the outer block can open a scope that outlives it.
    got: list[object] = []
    inner_opened = trio.Event()
    release = trio.Event()
    inner_reg: list[Registry] = []

    async def inner_scope() -> None:
        async with trioscope.open_registry("inner") as inner:
            inner_reg.append(inner)
            inner_opened.set()
            await release.wait()
            with inner.registered("x", "late"):
                await trio.testing.wait_all_tasks_blocked()

    async def waiter() -> None:
        got.append(await inner_reg[0].wait_for("x"))

    async with trio.open_nursery() as nursery:
        async with trioscope.open_registry("outer"):
            nursery.start_soon(inner_scope)
            await inner_opened.wait()
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # the inner registry is still open: keep waiting
        release.set()
    assert got == ["late"]


# -- isolation under concurrency (required) --------------------------------


async def test_fifty_sibling_scopes_registering_the_same_names_do_not_interfere() -> None:
    scopes = 50
    names = ["config", "events", "telemetry"]
    all_registered = trio.Event()
    registered_count = 0
    problems: list[str] = []

    class Counter(trioscope.Service):
        def __init__(self, owner: int) -> None:
            self.owner = owner
            self.calls = 0

        async def whoami(self) -> tuple[int, int]:
            self.calls += 1
            await trio.lowlevel.checkpoint()  # let siblings interleave mid-handler
            return self.owner, self.calls

    async def sibling(i: int) -> None:
        nonlocal registered_count
        async with trioscope.open_registry(f"test-{i}", isolated=True) as reg:
            async with trio.open_nursery() as nursery:
                refs = [
                    await nursery.start(Counter.child_spec(i, name=name).start) for name in names
                ]
                with reg.registered("marker", ("marker", i)):
                    registered_count += 1
                    if registered_count == scopes:
                        all_registered.set()
                    await all_registered.wait()
                    # Every sibling holds every name at the same moment.
                    for round_ in range(1, 4):
                        for name, ref in zip(names, refs, strict=True):
                            if trioscope.whereis(name) != ref:
                                problems.append(f"{i}: whereis({name!r}) is not its own")
                            reply = await trioscope.call(name, Counter.whoami)
                            if reply != (i, round_):
                                problems.append(f"{i}: call({name!r}) answered {reply}")
                            await trio.lowlevel.checkpoint()
                        if reg.lookup("marker") != ("marker", i):
                            problems.append(f"{i}: marker is {reg.lookup('marker')}")
                    if sorted(reg.names()) != sorted([*names, "marker"]):
                        problems.append(f"{i}: names() is {reg.names()}")
                # Release in different orders across siblings, interleaved.
                for _ in range(i % 5):
                    await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()
            if reg.names() != []:
                problems.append(f"{i}: left {reg.names()}")

    async with trioscope.open_registry("parent") as parent:
        async with trio.open_nursery() as nursery:
            for i in range(scopes):
                nursery.start_soon(sibling, i)
        assert problems == []
        assert registered_count == scopes
        assert parent.names() == []
        assert trioscope.whereis("config") is None


# -- wait_for(after=...): the next value ----------------------------------------


async def test_wait_for_after_waits_for_a_value_that_is_not_the_old_one() -> None:
    old, new = object(), object()
    async with trioscope.open_registry() as reg, trio.open_nursery() as nursery:
        got: list[object] = []

        async def waiter() -> None:
            got.append(await reg.wait_for("x", after=old))

        with reg.registered("x", old):
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []  # the old value does not satisfy it
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # nor does its release
        with reg.registered("x", old):  # nor the old value registered again
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
        with reg.registered("x", new):
            await trio.testing.wait_all_tasks_blocked()
        assert got == [new]
        # A value that is already not the old one returns at once, after a checkpoint.
        with reg.registered("x", new), trio.testing.assert_checkpoints():
            assert await reg.wait_for("x", after=old) is new


async def test_wait_for_after_honours_cancel_scopes_and_a_closing_registry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    old = object()
    errors: list[str] = []

    async def waiter(reg: Registry, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await reg.wait_for("x", after=old)
        except NoRegistryError as exc:
            errors.append(str(exc))

    async with trio.open_nursery() as nursery:
        async with trioscope.open_registry("scope") as reg:
            with reg.registered("x", old):
                with trio.move_on_after(3) as scope:
                    await reg.wait_for("x", after=old)
                assert scope.cancelled_caught
                assert trio.current_time() == 3
                await nursery.start(waiter, reg)
                await trio.testing.wait_all_tasks_blocked()
        await trio.testing.wait_all_tasks_blocked()
    assert errors == [closed_registry("wait_for('x')", "scope")]
    assert trio.current_time() == 3
    assert reg._watchers == {}


async def test_lookup_here_never_looks_in_a_parent() -> None:
    async with trioscope.open_registry() as outer:
        with outer.registered("x", 1):
            async with trioscope.open_registry() as inner:
                assert inner.lookup("x") == 1
                assert inner.lookup_here("x") is None
                with inner.registered("x", 2):
                    assert inner.lookup_here("x") == 2
                assert outer.lookup_here("x") == 1
