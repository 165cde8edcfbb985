"""The pytest plugin: a leak-checked trioscope scope per test, by fixture or by marker.

::

    import pytest
    import trioscope
    from trioscope.foundation import config

    async def test_alone(trioscope_scope):
        # The test's own isolated registry is the current one here.
        assert trioscope.current_registry() is trioscope_scope.registry

    async def test_with_foundation(foundation):
        await config.update("events.max_events", 10)

    @pytest.mark.trioscope_scope(foundation=True, values={"events": {"max_events": 5}})
    async def test_marked():
        assert config.get("events.max_events") == 5

Nothing is autouse: a test that asks for no scope sees none. The fixtures are
async, so they run under pytest-trio (``trio_mode = true``, or tests marked
``@pytest.mark.trio``); pytest-trio runs a test and its fixtures in one shared
`contextvars.Context`, which is how the test body sees the fixture's registry
as its current one.

- ``trioscope_scope``: the test's `TestScope` (see `open_test_scope`), named
  after the test's node id. The ``trioscope_scope`` marker's keyword arguments
  configure it (``name=``, ``foundation=True``, and ``open_foundation``'s).
- ``foundation``: the same scope with the whole foundation started in it
  (requesting both gives one scope, with the foundation).
- ``@pytest.mark.trioscope_scope(...)`` on a test that requests neither runs
  the test body itself inside such a scope (one per example under
  Hypothesis). That scope ends with the body, before pytest-trio cancels its
  ``nursery`` fixture: tasks the test starts there are reported. With that
  fixture, request ``trioscope_scope`` instead (it is torn down after it).

A leak fails the test with the `LeakError` message (raised as the scope ends,
after the test body); a test that already failed keeps its own error, and
pytest-trio reports both.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio

from ._scope import TestScope, open_test_scope

MARKER = "trioscope_scope"
"""The marker's (and the scope fixture's) name."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(name=None, foundation=False, **foundation_kwargs): run the test in its own "
        "isolated, leak-checked trioscope scope (configures the trioscope_scope fixture, or "
        "wraps the test body when it requests no scope fixture)",
    )


def _scope_kwargs(node: pytest.Item, *, foundation: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"name": node.nodeid}
    marker = node.get_closest_marker(MARKER)
    if marker is not None:
        if marker.args:
            raise pytest.UsageError(
                f"{node.nodeid}: @pytest.mark.{MARKER} takes keyword arguments only "
                f"(name=, foundation=, open_foundation's), got {marker.args!r}"
            )
        kwargs.update(marker.kwargs)
    if foundation:
        kwargs["foundation"] = True
    return kwargs


@pytest.fixture
async def trioscope_scope(request: pytest.FixtureRequest) -> AsyncIterator[TestScope]:
    """The test's own isolated trioscope scope, checked for leaks when the test ends."""
    kwargs = _scope_kwargs(request.node, foundation="foundation" in request.fixturenames)
    async with open_test_scope(**kwargs, _foreign=_other_fixtures) as scope:
        yield scope


def _other_fixtures() -> frozenset[trio.lowlevel.Task]:
    """pytest-trio's tasks for the test's other fixtures (siblings of this fixture's
    task, the test's own task aside): what they start is theirs, not the test's."""
    me = trio.lowlevel.current_task()
    nursery = me.parent_nursery
    if nursery is None:
        return frozenset()
    return frozenset(
        task
        for task in nursery.child_tasks
        if task is not me and not task.name.startswith("<test ")
    )


@pytest.fixture
def foundation(trioscope_scope: TestScope) -> TestScope:
    """The test's scope (as ``trioscope_scope``) with the whole foundation started in it."""
    return trioscope_scope


def _in_scope(
    fn: Callable[..., Awaitable[object]], kwargs: dict[str, Any]
) -> Callable[..., Awaitable[None]]:
    @functools.wraps(fn)
    async def run_in_scope(*args: object, **fixtures: object) -> None:
        async with open_test_scope(**kwargs):
            await fn(*args, **fixtures)

    return run_in_scope


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function) or item.get_closest_marker(MARKER) is None:
            continue
        if {MARKER, "foundation"} & set(item.fixturenames):
            continue  # the fixture reads the marker
        kwargs = _scope_kwargs(item, foundation=False)
        hypothesis = getattr(item.obj, "hypothesis", None)
        body = hypothesis.inner_test if hypothesis is not None else item.obj
        if not inspect.iscoroutinefunction(inspect.unwrap(body)):
            # A sync test under a module's or class's marker has no Trio run to
            # open a scope in: it runs as it is.
            continue
        if hypothesis is not None:
            # One scope per example: wrap the inner test Hypothesis calls.
            hypothesis.inner_test = _in_scope(hypothesis.inner_test, kwargs)
        else:
            item.obj = _in_scope(item.obj, kwargs)
