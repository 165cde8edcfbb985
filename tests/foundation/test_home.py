"""Homes: registered while their supervised task runs, their tasks supervised too."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trioscope
from trioscope.foundation._home import Home, find_home, home_spec

pytestmark = pytest.mark.trioscope_scope


class CounterHome(Home):
    name = "counter.home"

    def __init__(self) -> None:
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


async def test_a_home_is_registered_while_it_runs_and_closed_when_it_stops() -> None:
    async with trioscope.open_registry(isolated=True):
        async with trioscope.open_supervisor([home_spec(CounterHome, id="home")]) as sup:
            home = find_home("counter.home", CounterHome)
            assert home is not None
            assert sup.which_children()[0].value is home
            assert not home.closed
        assert home.closed
        assert find_home("counter.home", CounterHome) is None


async def test_a_failing_home_task_crashes_the_home_and_it_is_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    go = trio.Event()

    async def fail() -> None:
        await go.wait()
        raise RuntimeError("home task failed")

    async with (
        trioscope.open_registry(isolated=True) as registry,
        trioscope.open_supervisor([home_spec(CounterHome, id="home")]) as sup,
    ):
        first = find_home("counter.home", CounterHome)
        assert first is not None
        first.start_soon(fail)
        go.set()
        second = await registry.wait_for("counter.home", after=first)
        assert second is find_home("counter.home", CounterHome)
        assert second is not first
        assert first.closed
        assert sup.which_children()[0].restarts == 1


async def test_find_home_checks_the_type() -> None:
    async with trioscope.open_registry(isolated=True) as reg:
        with (
            reg.registered("counter.home", 42),
            pytest.raises(TypeError, match=r"^'counter.home' is registered to a int"),
        ):
            find_home("counter.home", CounterHome)


async def test_a_stopped_home_refuses_tasks() -> None:
    home = CounterHome()
    with pytest.raises(RuntimeError, match=r"^CounterHome 'counter.home' is not running$"):
        home.start_soon(trio.sleep, 0)


class Echo(trioscope.Service):
    async def echo(self, x: int) -> int:
        return x


async def test_a_home_pairs_only_with_the_service_of_its_own_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A namesake in an enclosing scope is visible to `lookup`, never to the home."""
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([Echo.child_spec(name="echo")]),
        trioscope.open_registry(),  # nested, not isolated: the parent's names are visible
        trioscope.open_supervisor(
            [home_spec(CounterHome, id="home"), Echo.child_spec(name="echo", id="inner")]
        ) as inner,
    ):
        home = find_home("counter.home", CounterHome)
        assert home is not None
        ours = home.service("echo", Echo)
        assert ours is trioscope.whereis("echo")
        await inner.terminate_child("inner")
        outer = trioscope.whereis("echo")
        assert outer is not None  # the parent's, through lookup
        assert home.service("echo", Echo) is None

        async def restart_later() -> None:
            await trio.sleep(1)
            await inner.restart_child("inner")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(restart_later)
            again = await home.wait_service("echo", Echo, after=ours)
        assert again is not outer
        assert again is home.service("echo", Echo)
        assert trio.current_time() == 1
