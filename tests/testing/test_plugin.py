"""The pytest plugin, run through pytester: fixtures, marker, and a test that must fail."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

# No "-p trioscope.testing._plugin": installing trioscope registers it (pytest11).
PLUGIN = ("-p", "no:cacheprovider")

TRIO_MODE = """
[pytest]
trio_mode = true
"""

NO_TRIO_MODE = """
[pytest]
addopts = --strict-markers
"""

LEAKY = """
import pytest
import trio
import trioscope

class Cache:
    def __repr__(self):
        return "<Cache>"

async def leaky_worker():
    await trio.sleep_forever()

@pytest.fixture
async def background():
    # A nursery that outlives the test body (its teardown runs beside the scope's).
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()

async def test_leaks(trioscope_scope, background):
    background.start_soon(leaky_worker, name="leaky-worker")
    held = trioscope_scope.registry.registered("cache", Cache())
    held.__enter__()
    test_leaks.held = held  # keep the registration alive past the test
    await trio.testing.wait_all_tasks_blocked()

async def test_clean(trioscope_scope, nursery):
    # pytest-trio's nursery fixture is the test's own: cancelled as the test ends.
    with trioscope_scope.registry.registered("cache", Cache()):
        nursery.start_soon(leaky_worker)
        trioscope_scope.start_soon(leaky_worker)
        await trio.testing.wait_all_tasks_blocked()
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess(*PLUGIN, *args)


def test_the_scope_is_the_tests_current_registry(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_MODE)
    pytester.makepyfile(
        """
        import contextvars
        import trioscope
        from trioscope._registry import _current

        async def test_current(trioscope_scope, request):
            assert trioscope.current_registry() is trioscope_scope.registry
            assert trioscope_scope.namespace == request.node.nodeid
            assert trioscope_scope.registry.isolated
            assert trioscope_scope.registry.parent is None

        async def test_no_scope_without_asking():
            assert _current.get() is None
        """
    )
    _run(pytester).assert_outcomes(passed=2)


def test_foundation_fixture_and_both_fixtures_share_one_scope(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_MODE)
    pytester.makepyfile(
        """
        import pytest
        import trioscope
        from trioscope.foundation import config

        async def test_foundation(foundation):
            assert trioscope.current_registry() is foundation.registry
            assert isinstance(foundation.foundation, trioscope.Supervisor)
            await config.update("events.max_events", 7)
            assert config.get("events.max_events") == 7

        async def test_both(trioscope_scope, foundation):
            assert trioscope_scope is foundation
            assert foundation.foundation is not None

        @pytest.mark.trioscope_scope(name="mine", values={"events": {"max_events": 3}})
        async def test_marker_configures_the_fixture(foundation):
            assert foundation.namespace == "mine"
            assert config.get("events.max_events") == 3
        """
    )
    _run(pytester).assert_outcomes(passed=3)


def test_marker_alone_runs_the_body_in_a_scope(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_MODE)
    pytester.makepyfile(
        """
        import pytest
        import trioscope
        from trioscope.foundation import config

        @pytest.mark.trioscope_scope(foundation=True, values={"events": {"max_events": 9}})
        async def test_marked():
            reg = trioscope.current_registry()
            assert reg.isolated
            assert reg.namespace.endswith("::test_marked")
            assert config.get("events.max_events") == 9

        @pytest.mark.trioscope_scope
        async def test_marked_leak():
            test_marked_leak.held = trioscope.current_registry().registered("left", "value")
            test_marked_leak.held.__enter__()
        """
    )
    result = _run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*LeakError: test scope '*::test_marked_leak' leaked 1 thing*", "*- name 'left'*"]
    )


def test_a_leaky_test_fails_naming_the_task_and_the_name(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_MODE)
    pytester.makepyfile(test_leaky=LEAKY)
    result = _run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*LeakError: test scope 'test_leaky.py::test_leaks' leaked 2 things that outlived it*",
            "*- name 'cache' in registry 'test_leaky.py::test_leaks': still registered, "
            "held by <Cache>",
            "*- task 'leaky-worker' in registry 'test_leaky.py::test_leaks': still running: "
            "started at test_leaks (*test_leaky.py:20) as leaky_worker (*test_leaky.py:9), "
            "now in leaky_worker (*test_leaky.py:10)",
        ]
    )
    assert "test_clean" not in "\n".join(
        line for line in result.outlines if line.startswith("FAILED")
    )


def test_marked_trio_tests_without_trio_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini(NO_TRIO_MODE)
    pytester.makepyfile(
        test_marked="""
        import pytest
        import trio
        import trioscope

        pytestmark = pytest.mark.trio

        async def test_current(trioscope_scope):
            assert trioscope.current_registry() is trioscope_scope.registry

        async def test_leaks(trioscope_scope):
            trio.lowlevel.spawn_system_task(
                trio.sleep_forever,
                name="system-leak",
                context=trio.lowlevel.current_task().context.copy(),
            )
            await trio.lowlevel.checkpoint()
        """
    )
    result = _run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*- task 'system-leak' in registry 'test_marked.py::test_leaks'*"])


def test_a_failing_test_keeps_its_error_beside_the_leak(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_MODE)
    pytester.makepyfile(
        test_fails="""
        async def test_fails(trioscope_scope):
            test_fails.held = trioscope_scope.registry.registered("left", "v")
            test_fails.held.__enter__()
            assert 1 == 2, "the test's own failure"
        """
    )
    result = _run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: the test's own failure*"])
    result.stdout.fnmatch_lines(["*LeakError: test scope 'test_fails.py::test_fails' leaked 1*"])


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.trioscope_scope(name=None, foundation=False, *"])


def test_tasks_another_fixture_starts_for_itself_are_not_the_tests_leaks(
    pytester: pytest.Pytester,
) -> None:
    """pytest-trio shares one context between a test and its fixtures, and sets up
    fixtures that do not depend on each other in any order: a fixture's own tasks
    may inherit the test scope's registry. They are that fixture's business (it
    cancels them in its teardown), not leaks of the test (review: 10 of 20 failed)."""
    pytester.makeini(TRIO_MODE)
    pytester.makepyfile(
        test_other_fixture="""
        import pytest
        import trio

        async def heartbeat():
            await trio.sleep_forever()

        @pytest.fixture
        async def server():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(heartbeat, name="server-heartbeat")
                yield
                nursery.cancel_scope.cancel()

        @pytest.mark.parametrize("i", range(20))
        async def test_clean(trioscope_scope, server, i):
            pass
        """
    )
    result = _run(pytester)
    result.assert_outcomes(passed=20)


def test_a_module_marker_leaves_sync_tests_alone(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_MODE)
    pytester.makepyfile(
        test_module_marker="""
        import pytest
        import trioscope

        pytestmark = pytest.mark.trioscope_scope

        def test_plain_sync_helper():
            assert 1 + 1 == 2

        async def test_async_gets_a_scope():
            assert trioscope.current_registry().isolated
        """
    )
    _run(pytester).assert_outcomes(passed=2)


def test_no_scope_marker_opts_out_of_a_module_or_class_marker(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_MODE)
    pytester.makepyfile(
        test_opt_out="""
        import pytest
        import trioscope
        from trioscope._registry import _current

        pytestmark = pytest.mark.trioscope_scope

        async def test_scoped():
            assert trioscope.current_registry().isolated

        @pytest.mark.no_trioscope_scope("checks what happens outside every scope")
        async def test_outside():
            assert _current.get() is None

        @pytest.mark.no_trioscope_scope(reason="the keyword form")
        async def test_outside_by_keyword():
            assert _current.get() is None

        @pytest.mark.no_trioscope_scope("the whole class runs outside")
        class TestOutside:
            async def test_outside(self):
                assert _current.get() is None

            @pytest.mark.trioscope_scope(name="closer")
            async def test_closer_marker_wins(self):
                assert trioscope.current_registry().namespace == "closer"

            @pytest.mark.trioscope_scope(name="closer-fixture")
            async def test_closer_marker_and_fixture(self, trioscope_scope):
                assert trioscope_scope.namespace == "closer-fixture"

        def test_sync_outside():
            pass
        """
    )
    _run(pytester).assert_outcomes(passed=7)


def test_an_opted_out_test_requesting_a_scope_fixture_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(TRIO_MODE)
    pytester.makepyfile(
        test_contradiction="""
        import pytest

        @pytest.mark.no_trioscope_scope("runs outside every scope")
        async def test_outside(foundation):
            pass
        """
    )
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*test_contradiction.py::test_outside: requests the foundation and trioscope_scope "
            "fixtures but is marked @pytest.mark.no_trioscope_scope: drop one*"
        ]
    )


@pytest.mark.parametrize(
    "marker",
    [
        "no_trioscope_scope",
        "no_trioscope_scope()",
        'no_trioscope_scope("")',
        'no_trioscope_scope("  ")',
        "no_trioscope_scope(reason=None)",
        'no_trioscope_scope("a", "b")',
        'no_trioscope_scope("a", why="b")',
    ],
)
def test_no_scope_marker_requires_one_reason(pytester: pytest.Pytester, marker: str) -> None:
    pytester.makeini(TRIO_MODE)
    pytester.makepyfile(
        test_no_reason=f"""
        import pytest

        @pytest.mark.{marker}
        async def test_outside():
            pass
        """
    )
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*test_no_reason.py::test_outside: @pytest.mark.no_trioscope_scope takes one reason, "
            "a non-empty string saying why the test runs with no scope around it*"
        ]
    )


def test_both_markers_on_one_node_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_MODE)
    pytester.makepyfile(
        test_both="""
        import pytest

        pytestmark = [
            pytest.mark.trioscope_scope,
            pytest.mark.no_trioscope_scope("contradicts the line above"),
        ]

        async def test_either():
            pass
        """
    )
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*test_both.py::test_either: both @pytest.mark.trioscope_scope and "
            "@pytest.mark.no_trioscope_scope on 'test_both.py': keep one*"
        ]
    )


def test_no_scope_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.no_trioscope_scope(reason): run the test with *"])


PARAMETRIZED_HYPOTHESIS = """
import pytest
import trio
import trioscope
from hypothesis import given, settings, strategies as st

pytestmark = pytest.mark.trioscope_scope

RAN = []


@pytest.mark.parametrize("p", [1, 2, 3])
@settings(max_examples=2, deadline=None, database=None)
@given(x=st.integers())
async def test_each_param(p, x):
    names = []
    reg = trioscope.current_registry()
    while reg is not None:
        names.append(reg.namespace)
        reg = reg.parent
    RAN.append((p, names))
    await trio.lowlevel.checkpoint()


def test_each_param_ran_in_its_own_one_scope():
    assert sorted({p for p, _ in RAN}) == [1, 2, 3]
    for p, names in RAN:
        assert names == [f"test_params.py::test_each_param[{p}]"], (p, names)
"""


def test_each_item_of_a_parametrized_hypothesis_test_runs_in_its_own_scope(
    pytester: pytest.Pytester,
) -> None:
    # The items share one function and one Hypothesis inner_test: wrapping it at
    # collection ran every parameter inside all three scopes, named after another.
    pytester.makeini(TRIO_MODE)
    pytester.makepyfile(test_params=PARAMETRIZED_HYPOTHESIS)
    _run(pytester).assert_outcomes(passed=4)


def test_the_marker_on_a_sync_test_itself_is_a_usage_error(pytester: pytest.Pytester) -> None:
    # Under a module's marker a sync test runs as it is; marked itself, the scope
    # it asks for could never open (no Trio run): say so instead of ignoring it.
    pytester.makeini(TRIO_MODE)
    pytester.makepyfile(
        test_sync_marked="""
        import pytest

        @pytest.mark.trioscope_scope
        def test_sync():
            pass
        """
    )
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*test_sync_marked.py::test_sync: @pytest.mark.trioscope_scope on a test that is "
            "not async: a scope needs a Trio run*"
        ]
    )
