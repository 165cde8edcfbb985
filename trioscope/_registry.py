"""Registries bound to ``async with`` scopes.

::

    import trio, trioscope

    async def main() -> None:
        async with trioscope.open_registry(namespace="app") as reg:
            with reg.registered("answer", 42):
                assert trioscope.current_registry().lookup("answer") == 42
            assert reg.lookup("answer") is None

    trio.run(main)

A registry is found through a context variable, so every task started inside
the block sees it and nothing outside does. Scopes nest: a lookup walks
outward until it finds the name or crosses an ``isolated=True`` boundary.
Registering always goes into the innermost registry.
"""

from __future__ import annotations

import contextvars
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final, final

import trio

from ._errors import AlreadyRegisteredError, NoRegistryError

_current: Final[contextvars.ContextVar[Registry | None]] = contextvars.ContextVar(
    "trioscope_registry", default=None
)


class _TelemetryState:
    """Process-wide facts that make `trioscope.telemetry.execute` nearly free.

    ``attached`` counts handlers attached in open registries (zero: every
    ``execute`` returns at once); ``version`` changes whenever any handler
    table changes, so each registry knows when its cached view of the handlers
    visible from it (its own and its visible parents') is stale.
    """

    __slots__ = ("attached", "version")

    def __init__(self) -> None:
        self.attached = 0
        self.version = 0


_telemetry: Final = _TelemetryState()


@final
class _FaultHooks:
    """Where `trioscope.testing`'s fault schedules reach the service loop.

    ``installed`` counts the schedules applied in open registries: while it is
    zero (always, outside such a test) the loop pays one check per message and
    nothing else. ``at_message(core, msg)`` is awaited when a service has taken
    a message from its mailbox, before it looks at it (a stall, a clock jump);
    ``wrap(core, msg, coro)`` returns the coroutine to await instead of a
    handler's (a crash, a hang, a slow handler). trioscope.testing sets both and
    keeps each schedule on the registry it applies to (``Registry._faults``).
    """

    __slots__ = ("at_message", "installed", "wrap")

    def __init__(self) -> None:
        self.installed = 0
        self.at_message: Callable[[Any, Any], Awaitable[None]] | None = None
        self.wrap: Callable[[Any, Any, Any], Any] | None = None


_faults: Final = _FaultHooks()

RECENT_NAMES_KEPT: Final = 256
"""How many recently registered names each registry remembers after their release
(least recently registered forgotten first): enough for a call by name that gives
up to tell a typo from a service that is down, without growing for ever."""


@final
class Registry:
    """Maps names to live values for exactly as long as its ``async with`` block.

    Build one with `open_registry`; find the innermost one with `current_registry`.
    """

    __slots__ = (
        "_closed",
        "_entries",
        "_expected",
        "_faults",
        "_handlers",
        "_recent",
        "_tcache",
        "_tversion",
        "_watchers",
        "isolated",
        "namespace",
        "parent",
    )

    namespace: str | None
    """The name given to `open_registry`, for introspection and messages."""
    parent: Registry | None
    """The enclosing registry (even across an isolated boundary), or ``None``."""
    isolated: bool
    """Whether lookups stop here instead of continuing into `parent`."""

    def __init__(self, namespace: str | None, parent: Registry | None, isolated: bool) -> None:
        self.namespace = namespace
        self.parent = parent
        self.isolated = isolated
        self._entries: dict[str, object] = {}
        # name -> events of tasks waiting for that name to change, here or inward.
        self._watchers: dict[str, set[trio.Event]] = {}
        # Names registered here lately, oldest first (bounded: RECENT_NAMES_KEPT).
        self._recent: OrderedDict[str, None] = OrderedDict()
        # name -> (status, restart_at) of a supervised child that will register it again.
        self._expected: dict[str, tuple[str, float | None]] = {}
        self._closed = False
        # Telemetry: handler id -> handler attached here; the cached view of every
        # handler visible from here by event name, valid while _tversion matches.
        self._handlers: dict[str, Any] = {}
        self._tcache: dict[tuple[str, ...], tuple[Any, ...]] = {}
        self._tversion = -1
        self._faults: object | None = None  # a fault schedule applied here (trioscope.testing)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._entries)} names"
        iso = " isolated" if self.isolated else ""
        return f"<Registry {self.namespace!r}{iso} {state}>"

    # -- reading ---------------------------------------------------------

    def lookup(self, name: str) -> object | None:
        """The value registered as *name* here or in a visible enclosing registry.

        Walks outward from this registry and stops after the first registry opened
        with ``isolated=True``. Returns ``None`` when the name is not visible.
        """
        reg: Registry | None = self
        while reg is not None:
            value = reg._entries.get(name)
            if value is not None:
                return value
            if reg.isolated:
                return None
            reg = reg.parent
        return None

    def lookup_here(self, name: str) -> object | None:
        """The value registered as *name* in this registry itself, never a parent's.

        For code that must pair with a sibling registered in the same scope (a
        service and the state it keeps beside it): when the sibling is away,
        `lookup` would find a parent scope's namesake instead.
        """
        return self._entries.get(name)

    def names(self) -> list[str]:
        """The names registered in this registry itself (not its parents), in order."""
        return list(self._entries)

    def _visible_chain(self) -> Iterator[Registry]:
        reg: Registry | None = self
        while reg is not None:
            yield reg
            if reg.isolated:
                return
            reg = reg.parent

    async def wait_for(self, name: str, *, after: object | None = None) -> object:
        """Wait until *name* is visible from this registry, and return its value.

        With *after* (a value seen earlier, such as the `ServiceRef` of an
        incarnation that crashed), wait for a value that ``is not after``: the
        next registration, not the one being torn down. Returns at once (after a
        checkpoint) when such a value is already registered. Honours the
        caller's cancel scopes: wrap it in `trio.fail_after` for a limit.

        Raises:
            NoRegistryError: this registry has closed (its block exited), before
                or while waiting: nothing can be registered in it any more.
        """
        await trio.lowlevel.checkpoint()
        while True:
            if self._closed:
                raise self._closed_error(f"wait_for({name!r})")
            value = self.lookup(name)
            if value is not None and value is not after:
                return value
            await self._wait_changed(name, f"wait_for({name!r})")

    def _closed_error(self, what: str) -> NoRegistryError:
        return NoRegistryError(what, closed=str(self.namespace))

    async def _wait_changed(self, name: str, what: str) -> None:
        """Park until *name* is registered or released anywhere in the visible chain.

        Raises `NoRegistryError` for *what* (the caller's operation) when this
        registry has closed, before parking or once woken by its closing. Only
        call it after a checkpoint of one's own: it raises at once if closed.
        """
        if self._closed:
            raise self._closed_error(what)
        event = trio.Event()
        chain = list(self._visible_chain())
        for reg in chain:
            reg._watchers.setdefault(name, set()).add(event)
        try:
            await event.wait()
        finally:
            for reg in chain:
                watchers = reg._watchers.get(name)
                if watchers is not None:
                    watchers.discard(event)
                    if not watchers:
                        del reg._watchers[name]
        if self._closed:
            raise self._closed_error(what)

    def _notify(self, name: str) -> None:
        watchers = self._watchers.pop(name, None)
        if watchers:
            for event in watchers:
                event.set()

    # -- writing ---------------------------------------------------------

    def _register(self, name: str, value: object) -> None:
        if not isinstance(name, str):
            raise TypeError(f"registry names must be str, got {type(name).__name__}: {name!r}")
        if value is None:
            raise TypeError(f"cannot register None as {name!r}: None means 'not registered'")
        if self._closed:
            raise self._closed_error(f"registering {name!r}")
        holder = self._entries.get(name)
        if holder is not None:
            raise AlreadyRegisteredError(name, holder, self.namespace)
        self._entries[name] = value
        self._expected.pop(name, None)
        recent = self._recent
        recent[name] = None
        recent.move_to_end(name)
        if len(recent) > RECENT_NAMES_KEPT:
            recent.popitem(last=False)
        self._notify(name)

    def _unregister(self, name: str, value: object) -> None:
        # Only the registration's owner removes it, and only if it is still its own.
        if self._entries.get(name) is value:
            del self._entries[name]
            self._notify(name)

    @contextmanager
    def registered(self, name: str, value: object) -> Iterator[None]:
        """Register *name* for the duration of the ``with`` block.

        Raises:
            AlreadyRegisteredError: *name* is already registered here (nothing changes).
            TypeError: *name* is not a ``str``, or *value* is ``None``.
        """
        self._register(name, value)
        try:
            yield
        finally:
            self._unregister(name, value)

    # -- what supervisors tell it, for messages ---------------------------

    def _expect(self, name: str, status: str, restart_at: float | None) -> None:
        """A supervised child that registers *name* is *status* (``"backoff"`` or
        ``"restarting"``), to start again at *restart_at* (Trio clock) if known.

        Calls by name that give up say so. Forgotten when *name* is registered
        again, on `_unexpect`, and when the registry closes.
        """
        if not self._closed:
            self._expected[name] = (status, restart_at)

    def _unexpect(self, name: str) -> None:
        """The child that registers *name* will not start again (stopped, or gone)."""
        self._expected.pop(name, None)

    def _expectation(self, name: str) -> tuple[str, float | None] | None:
        """What a supervisor said about *name*, in the innermost visible registry
        that either holds it or expects it."""
        for reg in self._visible_chain():
            if name in reg._entries:
                return None
            expected = reg._expected.get(name)
            if expected is not None:
                return expected
        return None

    def _known_names(self) -> list[str]:
        """Names visible from here now or registered recently, innermost first."""
        seen: dict[str, None] = {}
        for reg in self._visible_chain():
            seen.update(dict.fromkeys(reg._entries))
            seen.update(dict.fromkeys(reversed(reg._recent)))
        return list(seen)

    def _close(self) -> None:
        self._closed = True
        if self._handlers:
            # A handler lasts as long as the scope it was attached in.
            _telemetry.attached -= len(self._handlers)
            _telemetry.version += 1
            self._handlers.clear()
        self._expected.clear()
        names = list(self._entries)
        self._entries.clear()
        for name in names:
            self._notify(name)
        # Wake any remaining waiters so they re-check (and find nothing here).
        for name in list(self._watchers):
            self._notify(name)


@asynccontextmanager
async def open_registry(
    namespace: str | None = None, *, isolated: bool = False
) -> AsyncIterator[Registry]:
    """Open a registry scope for the body of the ``async with`` block.

    Args:
        namespace: A label for introspection and error messages.
        isolated: If true, lookups from this scope (or any nested in it) never
            see the enclosing registries. Each test opening its own isolated
            scope is how trioscope isolates tests.

    When the block exits, everything registered in it is released.
    """
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str or None, got {type(namespace).__name__}")
    reg = Registry(namespace, _current.get(), isolated)
    token = _current.set(reg)
    try:
        yield reg
    finally:
        _current.reset(token)
        reg._close()


def current_registry() -> Registry:
    """The innermost registry open around the current task.

    Raises:
        NoRegistryError: no `open_registry` block encloses the current task.
    """
    reg = _current_registry_or_none()
    if reg is None:
        raise _no_registry_error("current_registry()")
    return reg


def _current_registry_or_none() -> Registry | None:
    reg = _current.get()
    return None if reg is None or reg._closed else reg


def _no_registry_error(what: str) -> NoRegistryError:
    """Why *what* found no registry (`_current_registry_or_none` gave ``None``):
    none is open around the task, or the one around it has closed."""
    reg = _current.get()
    if reg is not None and reg._closed:
        return reg._closed_error(what)
    return NoRegistryError(what)
