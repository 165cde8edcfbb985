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
- ``@pytest.mark.no_trioscope_scope(reason)`` opts a test (or a class, or a
  module) out of a ``trioscope_scope`` marker further out: a test that must
  run with no scope around it (one that checks what happens outside every
  scope, or the root registry itself) in a module marked for scopes. The
  closer of the two markers wins; both on the same test, class or module, a
  missing or empty reason, or a test that requests ``trioscope_scope`` or
  ``foundation`` while it is opted out, is a `pytest.UsageError`.

A leak fails the test with the `LeakError` message (raised as the scope ends,
after the test body); a test that already failed keeps its own error, and
pytest-trio reports both.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any, Final

import pytest
import trio

from ._scope import TestScope, open_test_scope

MARKER = "trioscope_scope"
"""The marker's (and the scope fixture's) name."""

NO_MARKER = "no_trioscope_scope"
"""The opt-out marker's name: no scope around the test, whatever a module's or
class's `MARKER` says; it takes the reason, which is required."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(name=None, foundation=False, **foundation_kwargs): run the test in its own "
        "isolated, leak-checked trioscope scope (configures the trioscope_scope fixture, or "
        "wraps the test body when it requests no scope fixture)",
    )
    config.addinivalue_line(
        "markers",
        f"{NO_MARKER}(reason): run the test with no trioscope scope around it, though a "
        f"module's or class's {MARKER} marker asks for one (the closer marker wins; the "
        "reason is required)",
    )


def _reason(node: pytest.Item, mark: pytest.Mark) -> str:
    """The reason a `NO_MARKER` marker gives (positional or ``reason=``), checked."""
    args = list(mark.args)
    if "reason" in mark.kwargs:
        args.append(mark.kwargs["reason"])
    extra = set(mark.kwargs) - {"reason"}
    if len(args) != 1 or extra or not isinstance(args[0], str) or not args[0].strip():
        raise pytest.UsageError(
            f"{node.nodeid}: @pytest.mark.{NO_MARKER} takes one reason, a non-empty string "
            f"saying why the test runs with no scope around it; got args={mark.args!r}, "
            f"kwargs={mark.kwargs!r}"
        )
    return args[0]


def _closest_scope_marker(node: pytest.Item) -> pytest.Mark | None:
    """The `MARKER` that applies to *node*, or ``None``: none anywhere, or a closer
    (or only) `NO_MARKER` opts it out.

    Raises:
        pytest.UsageError: both markers on the same node (test, class or
            module), or a `NO_MARKER` without a reason.
    """
    found: tuple[object, pytest.Mark] | None = None
    for owner, mark in node.iter_markers_with_node():
        if mark.name == NO_MARKER:
            _reason(node, mark)
        elif mark.name != MARKER:
            continue
        if found is None:
            found = (owner, mark)
        elif owner is found[0] and mark.name != found[1].name:
            where = "the test" if owner is node else repr(owner.nodeid)
            raise pytest.UsageError(
                f"{node.nodeid}: both @pytest.mark.{MARKER} and @pytest.mark.{NO_MARKER} "
                f"on {where}: keep one"
            )
    if found is None or found[1].name == NO_MARKER:
        return None
    return found[1]


def _scope_kwargs(node: pytest.Item, *, foundation: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"name": node.nodeid}
    marker = _closest_scope_marker(node)
    opted_out = marker is None and node.get_closest_marker(NO_MARKER) is not None
    if opted_out:
        requested = sorted({MARKER, "foundation"} & set(getattr(node, "fixturenames", ())))
        raise pytest.UsageError(
            f"{node.nodeid}: requests the {' and '.join(requested)} "
            f"{'fixture' if len(requested) == 1 else 'fixtures'} but is marked "
            f"@pytest.mark.{NO_MARKER}: drop one"
        )
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


_SCOPE_KWARGS: Final = pytest.StashKey[dict[str, Any]]()
"""The scope settings of a test whose body the marker wraps (set at collection)."""


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        requests_fixture = bool({MARKER, "foundation"} & set(item.fixturenames))
        marker = _closest_scope_marker(item)
        if requests_fixture:
            _scope_kwargs(item, foundation=False)  # a usage error now, not at setup
            continue  # the fixture reads the marker
        if marker is None:
            continue
        kwargs = _scope_kwargs(item, foundation=False)
        hypothesis = getattr(item.obj, "hypothesis", None)
        body = hypothesis.inner_test if hypothesis is not None else item.obj
        if not inspect.iscoroutinefunction(inspect.unwrap(body)):
            # A sync test has no Trio run to open a scope in: under a module's or
            # class's marker it runs as it is; marked itself, it is a mistake.
            if any(mark.name == MARKER for mark in item.own_markers):
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.{MARKER} on a test that is not async: "
                    "a scope needs a Trio run (make the test async def, or open "
                    "open_test_scope inside the trio.run it starts)"
                )
            continue
        item.stash[_SCOPE_KWARGS] = kwargs


@contextmanager
def _body_wrapped(
    item: pytest.Function,
    wrap: Callable[[Callable[..., Awaitable[object]]], Callable[..., Awaitable[object]]],
) -> Iterator[None]:
    """Wrap *item*'s test body (a Hypothesis test's inner test) for one call only,
    and unwrap it after (with whatever pytest-trio wrapped around it meanwhile):
    the items of a parametrized test share one function and one ``inner_test``."""
    hypothesis = getattr(item.obj, "hypothesis", None)
    if hypothesis is not None:
        inner = hypothesis.inner_test
        hypothesis.inner_test = wrap(inner)
        try:
            yield
        finally:
            hypothesis.inner_test = inner
    else:
        obj = item.obj
        item.obj = wrap(obj)
        try:
            yield
        finally:
            item.obj = obj


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Run a marked test's body in its scope (one per Hypothesis example), wrapped
    before pytest-trio wraps it in its runner."""
    kwargs = item.stash.get(_SCOPE_KWARGS, None)
    if kwargs is None or not isinstance(item, pytest.Function):
        return (yield)
    with _body_wrapped(item, lambda fn: _in_scope(fn, kwargs)):
        return (yield)
