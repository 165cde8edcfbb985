"""The suite's own rules: every Trio test runs in a trioscope scope and on a MockClock,
unless it says why not.

Every Trio test of this suite runs in its own isolated, leak-checked trioscope
scope (the plugin's ``trioscope_scope`` marker or fixture), or says why it must
not with ``@pytest.mark.no_trioscope_scope(reason)``: a test in neither fails
the collection, naming it.

Every Trio test of this suite runs under ``trio.testing.MockClock(autojump_threshold=0)``
by default, a fresh one per test (per example under Hypothesis): a sleep or a
timeout is on Trio's clock, jumps forward as soon as every task is blocked,
and can never synchronize with anything but the test's own tasks. A test that
requests a clock fixture of its own (``autojump_clock``, ``mock_clock``, or any
fixture whose value is a `trio.abc.Clock`) runs on that one instead. A test
that really needs Trio's system clock (threads or processes doing real I/O,
where an autojump clock would jump to a timeout while the thread works) says
so and why: ``@pytest.mark.wall_clock("sqlite runs in a thread")``.

How: pytest-trio runs a test on the clock among the test's own arguments (the
fixtures it names; an autouse fixture is not among them). So the test function
is wrapped to accept one more keyword, the default clock, and drop it before
the body runs, and pytest-trio's runner is wrapped to pass it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import hypothesis
import pytest
import trio
import trio.testing

import trioscope._supervisor
from trioscope.testing._plugin import MARKER, NO_MARKER, _body_wrapped, _closest_scope_marker

# Backoff jitter draws from this source; registering it lets Hypothesis seed it
# and replay failures exactly.
hypothesis.register_random(trioscope._supervisor.JITTER_RANDOM)

hypothesis.settings.register_profile("trioscope", deadline=None, max_examples=50, print_blob=True)
hypothesis.settings.load_profile("trioscope")

WALL_CLOCK = "wall_clock"
"""The opt-out marker: the test runs on Trio's system clock (the reason is required)."""

_CLOCK_ARG = "_suite_default_clock"
"""The keyword the default clock travels under, from pytest-trio's runner to the test."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{WALL_CLOCK}(reason): run this Trio test on Trio's system clock instead of the "
        "suite's default MockClock(autojump_threshold=0); only for real I/O in threads or "
        "processes (the reason is required)",
    )


def _wall_clock_reason(item: pytest.Item) -> str | None:
    """The reason of the test's `WALL_CLOCK` marker, or ``None`` without one.

    Raises:
        pytest.UsageError: the marker gives no reason, or more than one thing.
    """
    mark = item.get_closest_marker(WALL_CLOCK)
    if mark is None:
        return None
    args = [*mark.args, *([mark.kwargs["reason"]] if "reason" in mark.kwargs else [])]
    if len(args) != 1 or set(mark.kwargs) - {"reason"} or not str(args[0] or "").strip():
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.{WALL_CLOCK} takes one reason, a non-empty string "
            f"saying what real I/O needs Trio's system clock; got args={mark.args!r}, "
            f"kwargs={mark.kwargs!r}"
        )
    return str(args[0])


def _is_async(item: pytest.Function) -> bool:
    hypothesis = getattr(item.obj, "hypothesis", None)
    body = hypothesis.inner_test if hypothesis is not None else item.obj
    return inspect.iscoroutinefunction(inspect.unwrap(body))


def _in_a_scope(item: pytest.Function) -> bool:
    """Whether the test runs in a trioscope scope, or says why it does not."""
    if {MARKER, "foundation"} & set(item.fixturenames):
        return True
    return _closest_scope_marker(item) is not None or item.get_closest_marker(NO_MARKER) is not None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unscoped: list[str] = []
    for item in items:
        _wall_clock_reason(item)
        if isinstance(item, pytest.Function) and _is_async(item) and not _in_a_scope(item):
            unscoped.append(item.nodeid)
    if unscoped:
        listed = "".join(f"\n  {nodeid}" for nodeid in unscoped)
        raise pytest.UsageError(
            f"{len(unscoped)} Trio {'test runs' if len(unscoped) == 1 else 'tests run'} in no "
            f"trioscope scope: put `pytestmark = pytest.mark.{MARKER}` in the module (or "
            f"request the {MARKER} fixture), or say why not with "
            f"@pytest.mark.{NO_MARKER}(reason):{listed}"
        )


def _on_default_clock(item: pytest.Item) -> bool:
    return item.get_closest_marker("trio") is not None and _wall_clock_reason(item) is None


def _dropping_clock(fn: Callable[..., Awaitable[object]]) -> Callable[..., Awaitable[object]]:
    @functools.wraps(fn)
    async def test(*args: object, **kwargs: object) -> object:
        kwargs.pop(_CLOCK_ARG, None)
        return await fn(*args, **kwargs)

    return test


def _passing_clock(run: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(run)
    def run_on_default_clock(**kwargs: object) -> Any:
        if not any(isinstance(value, trio.abc.Clock) for value in kwargs.values()):
            kwargs[_CLOCK_ARG] = trio.testing.MockClock(autojump_threshold=0)
        return run(**kwargs)

    return run_on_default_clock


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    # Before pytest-trio wraps the test (its hookwrapper runs inside this one).
    if not (isinstance(item, pytest.Function) and _on_default_clock(item)):
        return (yield)
    with _body_wrapped(item, _dropping_clock):  # for this call only
        return (yield)


@pytest.hookimpl(tryfirst=True, specname="pytest_runtest_call")
def pytest_runtest_call_pass_the_default_clock(item: pytest.Item) -> None:
    # After pytest-trio wrapped the test in its runner, before the test runs (pytest
    # registers only functions named pytest_*: specname says which hook).
    if isinstance(item, pytest.Function) and _on_default_clock(item):
        inner = getattr(item.obj, "hypothesis", None)
        if inner is not None:
            inner.inner_test = _passing_clock(inner.inner_test)
        else:
            item.obj = _passing_clock(item.obj)
