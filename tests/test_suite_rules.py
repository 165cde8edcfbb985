"""The suite's own rules (tests/conftest.py): every Trio test in a trioscope scope and on a
MockClock, unless it says why not."""

from __future__ import annotations

from pathlib import Path

import hypothesis
import hypothesis.strategies as st
import pytest
import trio
import trio.testing

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.trioscope_scope


async def test_a_trio_test_runs_on_a_fresh_autojump_mock_clock() -> None:
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock)
    assert clock.autojump_threshold == 0
    assert trio.current_time() == 0.0
    await trio.sleep(3600)
    assert trio.current_time() == 3600.0


async def test_a_requested_clock_fixture_is_the_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    assert trio.lowlevel.current_clock() is autojump_clock


async def test_a_requested_clock_without_autojump_is_the_clock(
    mock_clock: trio.testing.MockClock,
) -> None:
    assert trio.lowlevel.current_clock() is mock_clock
    assert mock_clock.autojump_threshold == float("inf")


@pytest.mark.wall_clock("checks the opt-out itself")
async def test_the_wall_clock_marker_runs_on_trios_system_clock() -> None:
    assert not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)


@hypothesis.given(delay=st.floats(min_value=0.0, max_value=1e6))
@hypothesis.settings(max_examples=10)
async def test_each_hypothesis_example_gets_its_own_clock(delay: float) -> None:
    assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    assert trio.current_time() == 0.0
    await trio.sleep(delay)
    assert trio.current_time() == delay


CONFTEST = Path(__file__).with_name("conftest.py").read_text()


@pytest.mark.parametrize(
    "marker",
    ["wall_clock", "wall_clock()", 'wall_clock("")', 'wall_clock("a", "b")', "wall_clock(why=1)"],
)
def test_the_wall_clock_marker_requires_one_reason(pytester: pytest.Pytester, marker: str) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_no_reason=f"""
        import pytest

        @pytest.mark.{marker}
        async def test_real_io():
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*test_no_reason.py::test_real_io: @pytest.mark.wall_clock takes one reason, a "
            "non-empty string saying what real I/O needs Trio's system clock*"
        ]
    )


def test_a_sleep_on_the_default_clock_takes_no_wall_time(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_sleeps="""
        import pytest
        import time
        import trio

        pytestmark = pytest.mark.trioscope_scope

        async def test_a_day():
            start = time.monotonic()
            with trio.fail_after(86400 + 1):
                await trio.sleep(86400)
            assert time.monotonic() - start < 60

        async def test_a_timeout_fires_on_the_mock_clock():
            with trio.move_on_after(30) as scope:
                await trio.sleep_forever()
            assert scope.cancelled_caught
            assert trio.current_time() == 30.0
        """
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_trio_test_in_no_scope_fails_the_collection_naming_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_unscoped="""
        import hypothesis
        import hypothesis.strategies as st
        import pytest

        def test_sync_needs_none():
            pass

        async def test_unscoped():
            pass

        @hypothesis.given(st.integers())
        async def test_unscoped_property(n):
            pass

        async def test_fixture(trioscope_scope):
            pass

        async def test_foundation(foundation):
            pass

        @pytest.mark.trioscope_scope
        async def test_marked():
            pass

        @pytest.mark.no_trioscope_scope("checks what happens outside every scope")
        async def test_opted_out():
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.errlines[:3] == [
        "ERROR: 2 Trio tests run in no trioscope scope: put `pytestmark = "
        "pytest.mark.trioscope_scope` in the module (or request the trioscope_scope fixture), "
        "or say why not with @pytest.mark.no_trioscope_scope(reason):",
        "  test_unscoped.py::test_unscoped",
        "  test_unscoped.py::test_unscoped_property",
    ]


def test_scoped_and_opted_out_trio_tests_run(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_scoped="""
        import pytest
        import trioscope
        from trioscope._registry import _current

        pytestmark = pytest.mark.trioscope_scope

        async def test_in_a_scope():
            assert trioscope.current_registry().isolated

        @pytest.mark.no_trioscope_scope("checks what happens outside every scope")
        async def test_opted_out():
            assert _current.get() is None
        """
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_every_item_of_a_parametrized_hypothesis_test_runs(pytester: pytest.Pytester) -> None:
    # The items share one Hypothesis inner_test: wrapped for good by the first item,
    # pytest-trio's runner came back to the second one already wrapped, and Hypothesis
    # got a coroutine instead of None.
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_params="""
        import hypothesis
        import hypothesis.strategies as st
        import pytest
        import trio

        # No scope: the plugin's own wrapping (which unwraps too) stays out of it.
        pytestmark = pytest.mark.no_trioscope_scope("the conftest's clock wrapping alone")
        RAN = []

        @pytest.mark.parametrize("p", [1, 2])
        @hypothesis.settings(max_examples=2, database=None)
        @hypothesis.given(x=st.integers())
        async def test_param(p, x):
            await trio.sleep(1)
            RAN.append((p, trio.current_time()))

        def test_both_ran_on_their_own_clocks():
            assert sorted(set(RAN)) == [(1, 1.0), (2, 1.0)]
        """
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)


def test_a_deadlocked_test_fails_within_the_suites_timeout(request: pytest.FixtureRequest) -> None:
    # On an autojump clock a test whose tasks all wait with no deadline spins a CPU:
    # pytest-timeout fails it (stacks printed) instead of letting CI run out its hours.
    # (A deadline guard inside the test cannot tell a deadlock from a worker thread
    # doing real I/O: the clock would jump to it while the thread works.)
    assert float(request.config.getini("timeout")) == 300.0
