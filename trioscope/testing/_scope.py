"""Leak-checked test scopes: an isolated registry per test, and a report of what outlived it.

::

    import trio, trioscope
    from trioscope.testing._scope import LeakError, open_test_scope

    async def main() -> None:
        async with open_test_scope("clean") as scope:
            with scope.registry.registered("answer", 42):
                assert trioscope.current_registry().lookup("answer") == 42
        try:
            async with open_test_scope("leaky") as scope:
                held = scope.registry.registered("forgotten", "value")
                held.__enter__()  # and never left
        except LeakError as exc:
            assert [leak.kind for leak in exc.leaks] == ["name"]
        else:
            raise AssertionError("the leak was not reported")

    trio.run(main)

`open_test_scope` opens an ``isolated=True`` registry (so nothing outside the
scope is visible from it), optionally starts the whole foundation in it, and
gives the body a nursery of its own (`TestScope.start_soon`). When the body
ends it tears down, in this order, and checks what is left:

1. the scope's own background tasks (`TestScope.start_soon`) are cancelled and
   waited for: they are the scope's, so they are never reported;
2. names, telemetry handlers and foundation subscriptions still held in the
   scope's registry, or in a registry nested in it that is still open, are
   collected, while the foundation (whose own are excluded) still runs:
   stopping it and closing the registry would release them all;
3. the foundation stops, and the registry closes;
4. every live task of the Trio run whose context still has the scope's
   registry (or one nested in it) as its current registry is a task started
   inside the scope that outlives it.

Anything found fails the scope with `LeakError`, which names every leak. If
the body raised (or a background task did), that exception propagates
unchanged and the leaks are added to it as a note (``__notes__``), so a
failure is never masked by its consequences; cancellation, ``KeyboardInterrupt``,
``SystemExit`` and ``GeneratorExit`` leaving the body skip the check entirely.
"""

from __future__ import annotations

import contextvars
import os
import sys
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Final, Literal, final

import attrs
import trio

from .._errors import TrioscopeError
from .._registry import Registry, _current, open_registry
from .._supervisor import Supervisor
from ..foundation._foundation import open_foundation
from ..foundation._home import Home
from ..foundation._subscription import Hub
from ..foundation._trail import TRAIL_HANDLER_ID

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

LeakKind = Literal["name", "handler", "subscription", "task"]
"""What leaked: a registered name, a telemetry handler, a hub subscription, a task."""

_KIND_ORDER: Final = ("name", "handler", "subscription", "task")


@attrs.frozen
class Leak:
    """One thing a test scope left behind, as `LeakError` reports it."""

    kind: LeakKind
    """``"name"``, ``"handler"``, ``"subscription"`` or ``"task"``."""
    what: str
    """The leaked thing's own name: the registered name, the handler id, what
    the hub publishes (``"events"``, ``"config changes"``), the task's name."""
    registry: str | None
    """The namespace of the registry it was found in (the scope's or a nested one)."""
    detail: str
    """Who holds it, which events, where the task started and where it is now."""

    def __str__(self) -> str:
        return f"{self.kind} {self.what!r} in registry {self.registry!r}: {self.detail}"


class LeakError(TrioscopeError, AssertionError):
    """A test scope ended with tasks, names, handlers or subscriptions still alive.

    An `AssertionError`, so a test runner reports it as a failed test.
    """

    def __init__(self, scope: str | None, leaks: tuple[Leak, ...]) -> None:
        self.scope = scope
        """The namespace of the scope that leaked."""
        self.leaks = leaks
        """Every leak found, names first, then handlers, subscriptions and tasks."""
        super().__init__(_describe(scope, leaks))


def _describe(scope: str | None, leaks: tuple[Leak, ...]) -> str:
    lines = [
        f"test scope {scope!r} leaked {len(leaks)} "
        f"{'thing' if len(leaks) == 1 else 'things'} that outlived it "
        "(release names, detach handlers and close subscriptions in the test; run "
        "background tasks with scope.start_soon or a nursery inside the scope):"
    ]
    lines.extend(f"  - {leak}" for leak in leaks)
    return "\n".join(lines)


@final
class TestScope:
    """What `open_test_scope` gives its body: the registry, a nursery, the foundation."""

    __test__ = False  # a class named Test*, but not a test class for pytest

    __slots__ = ("_foundation", "_nursery", "registry")

    registry: Registry
    """The scope's own isolated registry (the current registry in the body)."""

    def __init__(self, registry: Registry, foundation: Supervisor | None) -> None:
        self.registry = registry
        self._foundation = foundation
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        found = " with foundation" if self._foundation is not None else ""
        return f"<TestScope {self.namespace!r}{found} {self.registry!r}>"

    @property
    def namespace(self) -> str | None:
        """The scope's name: the namespace of its registry."""
        return self.registry.namespace

    @property
    def foundation(self) -> Supervisor:
        """The supervisor of the foundation started in the scope.

        Raises:
            RuntimeError: the scope was opened without ``foundation=True``.
        """
        if self._foundation is None:
            raise RuntimeError(
                f"test scope {self.namespace!r} has no foundation: open it with "
                "open_test_scope(foundation=True) (or use the foundation fixture)"
            )
        return self._foundation

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: object, name: object = None
    ) -> None:
        """Run ``fn(*args)`` in the scope's nursery, inside the scope, until the scope ends.

        The task sees the scope's registry. When the body ends it is cancelled
        and waited for before the leak check, so it never counts as a leak; if
        it raises, the scope's body is cancelled and the exception propagates
        from the ``async with``.

        Raises:
            RuntimeError: the scope's body has ended.
        """
        if self._nursery is None:
            raise RuntimeError(f"test scope {self.namespace!r} has ended: cannot start {fn!r}")
        self._nursery.start_soon(fn, *args, name=name)


# -- walking what is alive ---------------------------------------------------


def _walk(task: trio.lowlevel.Task | None) -> Iterator[trio.lowlevel.Task]:
    """*task* and every task below it, parents first (siblings in no particular order)."""
    stack = [] if task is None else [task]
    while stack:
        t = stack.pop()
        yield t
        for nursery in reversed(t.child_nurseries):
            stack.extend(nursery.child_tasks)


def _nursery_tasks(nurseries: list[trio.Nursery]) -> Iterator[trio.lowlevel.Task]:
    for nursery in nurseries:
        for child in nursery.child_tasks:
            yield from _walk(child)


def _within(reg: Registry | None, scope: Registry) -> bool:
    """Whether *reg* is *scope* or a registry opened inside it."""
    while reg is not None:
        if reg is scope:
            return True
        reg = reg.parent
    return False


def _task_registry(task: trio.lowlevel.Task) -> Registry | None:
    context: contextvars.Context = task.context
    return context.get(_current)


def _scope_tasks(scope: Registry, spawns: _Spawns) -> list[trio.lowlevel.Task]:
    """Live tasks spawned inside the scope (or an open test scope nested in it)."""
    return [task for reg, tasks in spawns.scopes.items() if _within(reg, scope) for task in tasks]


def _open_registries(scope: Registry, tasks: list[trio.lowlevel.Task]) -> list[Registry]:
    """The scope's registry and every registry nested in it still open around a live task.

    Registries only know their parents, so the nested ones are found through
    the contexts of the live tasks started in the scope (a registry's block
    runs in some task), and the scope's own task's.
    """
    found: dict[Registry, None] = {scope: None}
    for task in [trio.lowlevel.current_task(), *tasks]:
        reg = _task_registry(task)
        chain: list[Registry] = []
        while reg is not None and reg is not scope:
            chain.append(reg)
            reg = reg.parent
        if reg is scope:
            for nested in reversed(chain):
                if not nested._closed:
                    found.setdefault(nested, None)
    return list(found)


# -- what the foundation holds itself ----------------------------------------


@attrs.frozen
class _Holdings:
    """What the scope's own foundation holds: never a leak while it runs.

    Kept as the objects themselves (keyed by id), so no id is reused while checking.
    """

    values: dict[int, object]
    """The values its (nested) children started with: refs, homes, supervisors."""
    handlers: dict[int, object]
    """The telemetry handlers (registry entries) its homes attached."""
    subscriptions: dict[int, object]
    """The subscriptions its tasks hold."""


def _children_values(sup: Supervisor) -> Iterator[object]:
    for info in sup.which_children():
        if info.value is None:
            continue
        yield info.value
        if isinstance(info.value, Supervisor):
            yield from _children_values(info.value)


def _home_handlers(home: object) -> Iterator[object]:
    """The handlers a foundation home attached in its registry: the telemetry home's
    aggregator (by its unique id) and the events home's crash trail (by function)."""
    if not isinstance(home, Home) or home._registry is None:
        return
    handler_id = getattr(home, "handler_id", None)
    trail = getattr(home, "_trail", None)
    for hid, handler in home._registry._handlers.items():
        if hid == handler_id or (hid == TRAIL_HANDLER_ID and handler.fn is trail):
            yield handler


def _holdings(sup: Supervisor | None, nurseries: list[trio.Nursery]) -> _Holdings:
    if sup is None:
        return _Holdings({}, {}, {})
    values = [sup, *_children_values(sup)]
    handlers = [h for value in values for h in _home_handlers(value)]
    # The services that follow the config server subscribe to its hub from their
    # own tasks: a subscription opened by a foundation task is its own.
    own_tasks = set(_nursery_tasks(nurseries))
    subscriptions = [
        sub
        for value in values
        if isinstance(getattr(value, "hub", None), Hub)
        for sub in value.hub._subscribers  # type: ignore[attr-defined]
        if sub._task in own_tasks
    ]
    return _Holdings(
        {id(v): v for v in values},
        {id(h): h for h in handlers},
        {id(s): s for s in subscriptions},
    )


# -- the checks ----------------------------------------------------------------


def _holder(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _held_leaks(scope: Registry, holdings: _Holdings, spawns: _Spawns) -> list[Leak]:
    """Names, handlers and subscriptions still held in the scope (foundation's excluded)."""
    leaks: list[Leak] = []
    for reg in _open_registries(scope, _scope_tasks(scope, spawns)):
        for name, value in reg._entries.items():
            if id(value) in holdings.values and getattr(value, "name", None) == name:
                continue  # a foundation child, registered under its own name
            leaks.append(
                Leak("name", name, reg.namespace, f"still registered, held by {_holder(value)}")
            )
        for handler_id, handler in reg._handlers.items():
            if id(handler) in holdings.handlers:
                continue
            events = ", ".join(".".join(name) for name in handler.event_names)
            leaks.append(
                Leak(
                    "handler",
                    handler_id,
                    reg.namespace,
                    f"telemetry handler still attached to {events} ({_holder(handler.fn)})",
                )
            )
        for name, value in reg._entries.items():
            hub = getattr(value, "hub", None)
            if not isinstance(hub, Hub):
                continue
            for sub in hub._subscribers:
                if id(sub) in holdings.subscriptions:
                    continue
                leaks.append(
                    Leak(
                        "subscription",
                        hub.what,
                        reg.namespace,
                        f"subscription still open on the hub of {name!r}: {sub!r}, "
                        f"opened by task {sub._task.name!r}",
                    )
                )
    return leaks


def _where(task: trio.lowlevel.Task, spawns: _Spawns) -> str:
    code = getattr(task.coro, "cr_code", None)
    started = (
        f"{code.co_qualname if hasattr(code, 'co_qualname') else code.co_name} "
        f"({code.co_filename}:{code.co_firstlineno})"
        if code is not None
        else repr(task.coro)
    )
    # The innermost frame outside Trio itself: where the task's own code waits.
    frames = [(f, n) for f, n in task.iter_await_frames() if not _in_trio(f.f_code.co_filename)]
    if frames:
        frame, lineno = frames[-1]
        now = f"{frame.f_code.co_name} ({frame.f_code.co_filename}:{lineno})"
    else:
        now = "Trio's own code (not started yet, or waiting in it)"
    site = spawns.site.get(task)
    at = f"started at {site} " if site is not None else "started "
    return f"still running: {at}as {started}, now in {now}"


_TRIO_DIR: Final = os.path.dirname(trio.__file__) + os.sep


def _in_trio(filename: str) -> bool:
    return filename.startswith(_TRIO_DIR)


_TRIOSCOPE_DIR: Final = os.path.dirname(os.path.dirname(__file__)) + os.sep


def _spawn_site() -> str | None:
    """Where the running task called ``start_soon``/``start``: the innermost frame
    of its own code (outside Trio and trioscope; else outside Trio), or ``None``."""
    frame: types.FrameType | None = sys._getframe(2)  # past this function and the hook
    fallback: str | None = None
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _in_trio(filename):
            site = f"{frame.f_code.co_name} ({filename}:{frame.f_lineno})"
            if not filename.startswith(_TRIOSCOPE_DIR):
                return site
            if fallback is None:
                fallback = site
        frame = frame.f_back
    return fallback


@final
class _Spawns(trio.abc.Instrument):
    """Who spawned each task, from where, and which open test scope it began in.

    One per Trio run (a `trio.lowlevel.RunVar`), installed while any test scope
    is open: with many scopes at once (`run_concurrently`) each spawn is
    recorded once, and each scope's leak check reads its own tasks instead of
    walking every task of the run.

    A task's nursery says where it runs, not who started it: a test body may
    start a task in a nursery some other fixture owns (a leak of the test's),
    and that fixture may start its own tasks there (none of the test's
    business, even when they inherit the test's registry through the context
    pytest-trio shares between a test and its fixtures).
    """

    def __init__(self) -> None:
        self.users = 0
        self.spawner: dict[trio.lowlevel.Task, trio.lowlevel.Task] = {}
        self.site: dict[trio.lowlevel.Task, str] = {}
        # Open scope registry -> live tasks spawned with it (or a registry nested
        # in it, up to the next open scope) as their current registry.
        self.scopes: dict[Registry, set[trio.lowlevel.Task]] = {}
        self.scope_of: dict[trio.lowlevel.Task, Registry] = {}

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        try:
            self.spawner[task] = trio.lowlevel.current_task()
        except RuntimeError:  # spawned from outside any task (a system task)
            pass
        else:
            site = _spawn_site()
            if site is not None:
                self.site[task] = site
        reg = _task_registry(task)
        while reg is not None and reg not in self.scopes:
            reg = reg.parent
        if reg is not None:
            self.scopes[reg].add(task)
            self.scope_of[task] = reg

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.spawner.pop(task, None)
        self.site.pop(task, None)
        scope = self.scope_of.pop(task, None)
        if scope is not None:
            self.scopes[scope].discard(task)

    def open_scope(self, scope: Registry) -> None:
        self.scopes[scope] = set()

    def close_scope(self, scope: Registry) -> None:
        """Hand the scope's live tasks to the open scope around it, if any."""
        tasks = self.scopes.pop(scope)
        outer = scope.parent
        while outer is not None and outer not in self.scopes:
            outer = outer.parent
        for task in tasks:
            if outer is None:
                del self.scope_of[task]
            else:
                self.scopes[outer].add(task)
                self.scope_of[task] = outer


_spawns_var: Final = trio.lowlevel.RunVar[_Spawns | None]("trioscope.testing.spawns", default=None)


def _use_spawns() -> _Spawns:
    spawns = _spawns_var.get()
    if spawns is None:
        spawns = _Spawns()
        _spawns_var.set(spawns)
    if spawns.users == 0:
        trio.lowlevel.add_instrument(spawns)
    spawns.users += 1
    return spawns


def _release_spawns(spawns: _Spawns) -> None:
    spawns.users -= 1
    if spawns.users == 0:
        trio.lowlevel.remove_instrument(spawns)
        spawns.spawner.clear()
        spawns.site.clear()
        spawns.scope_of.clear()


def _started_by(
    task: trio.lowlevel.Task, spawns: _Spawns, roots: frozenset[trio.lowlevel.Task]
) -> trio.lowlevel.Task | None:
    """The first of *roots* that started *task* (itself, or through the tasks that
    started it, else its nurseries' owners), or ``None``."""
    current: trio.lowlevel.Task | None = task
    seen: set[trio.lowlevel.Task] = set()
    while current is not None and current not in seen:
        if current in roots:
            return current
        seen.add(current)
        parent = spawns.spawner.get(current)
        if parent is None:
            nursery = current.parent_nursery
            parent = nursery.parent_task if nursery is not None else None
        current = parent
    return None


def _task_leaks(
    scope: Registry,
    me: trio.lowlevel.Task,
    own: list[trio.Nursery],
    spawns: _Spawns,
    foreign: frozenset[trio.lowlevel.Task] = frozenset(),
) -> dict[trio.lowlevel.Task, Leak]:
    """Live tasks spawned in the scope whose current registry is still within it.

    Not reported: the current task; tasks in the scope's *own* nurseries (its
    background nursery, the foundation's), which the scope tears down itself;
    tasks sharing the current task's very context object (pytest-trio runs a
    test and its fixtures in one shared context: they are not started inside
    the scope, and leave it when the scope resets its registry); and tasks
    started by *foreign* ones (other fixtures' own business).
    """
    skip = set(_nursery_tasks(own))
    skip.add(me)
    leaks: dict[trio.lowlevel.Task, Leak] = {}
    for task in _scope_tasks(scope, spawns):
        if task in skip or task.context is me.context:
            continue
        if foreign and _started_by(task, spawns, foreign) is not None:
            continue  # started by another fixture (its own business), not by the test
        reg = _task_registry(task)
        if _within(reg, scope):
            assert reg is not None
            leaks[task] = Leak("task", task.name, reg.namespace, _where(task, spawns))
    return leaks


# -- exceptions leaving the body ------------------------------------------------


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


_NO_CHECK: Final = (trio.Cancelled, KeyboardInterrupt, SystemExit, GeneratorExit)


def _add_note(exc: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:  # pragma: no cover
        setattr(exc, "__notes__", [*getattr(exc, "__notes__", ()), note])  # noqa: B010


@asynccontextmanager
async def open_test_scope(
    name: str | None = None,
    *,
    foundation: bool = False,
    _foreign: Callable[[], frozenset[trio.lowlevel.Task]] | None = None,
    **foundation_kwargs: object,
) -> AsyncIterator[TestScope]:
    """Open an isolated registry scope for a test body, and fail it if anything leaks.

    Args:
        name: The namespace of the scope's registry, for messages (a test's id).
        foundation: Start the whole foundation (config, events, telemetry) in
            the scope, with `trioscope.foundation.open_foundation`; its
            supervisor is `TestScope.foundation`. What it holds itself is never
            a leak.
        **foundation_kwargs: Passed to ``open_foundation`` (``values=``, ...);
            only with ``foundation=True``.

    The body's exception, if any, propagates unchanged (the very object, a
    `trio.Cancelled` or an exception group included), with any leaks added as
    a note. An exception raised by a task of `TestScope.start_soon`
    propagates alone; several at once as their exception group; beside an
    error of the body, as a group of the body's and the tasks' errors.

    Raises:
        LeakError: the body ended normally, and a name, telemetry handler,
            subscription or task outlived it (see the module docstring).
        TypeError: *foundation_kwargs* without ``foundation=True``.
    """
    if foundation_kwargs and not foundation:
        raise TypeError(
            f"open_test_scope: {', '.join(foundation_kwargs)} configure the foundation; "
            "pass foundation=True too"
        )
    me = trio.lowlevel.current_task()
    spawns = _use_spawns()
    try:
        async with _open_test_scope(
            name, me, foundation, _foreign, spawns, foundation_kwargs
        ) as scope:
            yield scope
    finally:
        _release_spawns(spawns)


@asynccontextmanager
async def _open_test_scope(
    name: str | None,
    me: trio.lowlevel.Task,
    foundation: bool,
    foreign_of: Callable[[], frozenset[trio.lowlevel.Task]] | None,
    spawns: _Spawns,
    foundation_kwargs: dict[str, object],
) -> AsyncIterator[TestScope]:
    foreign = frozenset[trio.lowlevel.Task]()
    error: BaseException | None = None
    leaks: list[Leak] = []
    stray: dict[trio.lowlevel.Task, Leak] = {}
    opened: Registry | None = None
    try:
        # Two blocks, not one: the registry must outlive the foundation's stop.
        async with open_registry(name, isolated=True) as registry:
            opened = registry
            spawns.open_scope(registry)  # before any task can be spawned in it
            async with AsyncExitStack() as stack:
                sup: Supervisor | None = None
                foundation_nurseries: list[trio.Nursery] = []
                if foundation:
                    before = set(me.child_nurseries)
                    sup = await stack.enter_async_context(open_foundation(**foundation_kwargs))  # type: ignore[arg-type]
                    foundation_nurseries = [n for n in me.child_nurseries if n not in before]
                scope = TestScope(registry, sup)
                body_error: BaseException | None = None
                try:
                    async with trio.open_nursery() as nursery:
                        scope._nursery = nursery
                        try:
                            yield scope
                        except BaseException as exc:
                            # Kept aside, and raised again, the very object, once the
                            # scope's own tasks are done: never wrapped in the nursery's group.
                            body_error = exc
                        finally:
                            # Tasks started in the scope that are alive as the body ends,
                            # outside the scope's own nurseries, outlive it: even one that
                            # another nursery is about to cancel (pytest-trio's nursery
                            # fixture tears down at this very moment, in its own task).
                            if foreign_of is not None:
                                foreign = foreign_of()
                            stray = _task_leaks(
                                registry, me, [nursery, *foundation_nurseries], spawns, foreign
                            )
                            scope._nursery = None
                            nursery.cancel_scope.cancel()
                except BaseExceptionGroup as group:
                    # What the scope's own tasks raised (the body's error is kept aside).
                    # Unwrap policy: one exception that is not Cancelled propagates alone;
                    # several propagate as the group; beside a body error, with it.
                    real = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
                    if isinstance(body_error, trio.Cancelled) and real:
                        body_error = None  # cancelled because a background task failed
                    if body_error is not None and real:
                        raise BaseExceptionGroup(
                            "a test scope's body and its background tasks failed",
                            [body_error, *real],
                        ) from None
                    if body_error is None:
                        if len(real) != 1:
                            raise
                        error = real[0]
                if body_error is not None:
                    error = body_error
                if error is None or not isinstance(error, _NO_CHECK):
                    leaks.extend(
                        _held_leaks(registry, _holdings(sup, foundation_nurseries), spawns)
                    )
        if error is None or not isinstance(error, _NO_CHECK):
            # Again once everything is closed: tasks started while the scope tore down.
            stray.update(_task_leaks(registry, me, [], spawns, foreign))
            # Sibling tasks come in no particular order: report them in a stable one.
            leaks.extend(sorted(stray.values(), key=lambda leak: (leak.what, leak.detail)))
        found = tuple(sorted(leaks, key=lambda leak: _KIND_ORDER.index(leak.kind)))
        if error is not None:
            if found:
                _add_note(error, _describe(name, found))
            raise error
        if found:
            raise LeakError(name, found)
    finally:
        if opened is not None:
            spawns.close_scope(opened)
