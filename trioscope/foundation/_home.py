"""Homes: state that outlives one incarnation of a service.

::

    import trio, trioscope
    from trioscope.foundation._home import Home, find_home, home_spec

    class CounterHome(Home):
        name = "counter.home"
        def __init__(self) -> None:
            self.total = 0

    async def main() -> None:
        async with trioscope.open_registry(), trioscope.open_supervisor(
            [home_spec(CounterHome, id="counter.home")]
        ):
            home = find_home("counter.home", CounterHome)
            assert home is not None and home.total == 0

    trio.run(main)

A service's state dies with its incarnation; some state must not: the last
published config snapshot (readers keep it while the server restarts), the
subscription hubs (no gap across a restart), the in-memory event backend,
the retry and write buffers of clients. OTP keeps such state in an ETS table
owned by a longer-lived process. Here it lives in a *home*: a plain object
owned by a supervised task child, started just before its service in the
same `trioscope.Strategy.REST_FOR_ONE` supervisor, and registered in the
registry scope under its own name. Its background tasks run in the home's
own nursery, so they are supervised: if one raises, the home child crashes
and the supervisor restarts the home and the service after it. (The
ElixirScope original created such tables lazily, owned by whichever process
asked first, and lost them with it.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import trio

from .._child_spec import ChildSpec
from .._names import _as_ref
from .._registry import Registry, current_registry
from .._service import Service, ServiceRef

HOME_CLOSE_S: Final = 1.0
"""Seconds a stopping home gets for `Home.aclose` (it is shielded, with this deadline)."""


S = TypeVar("S", bound=Service)


class Home:
    """Base of the objects homes keep; subclass it and set `name`."""

    name: str = ""
    """The name the home is registered under in its scope, e.g. ``"config.home"``."""

    _nursery: trio.Nursery | None = None
    _registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        """The registry the home is registered in: its service registers there too.

        Raises:
            RuntimeError: the home has not started.
        """
        if self._registry is None:
            raise RuntimeError(f"{type(self).__qualname__} {self.name!r} has not started")
        return self._registry

    def service(self, name: str, cls: type[S]) -> ServiceRef[S] | None:
        """The service registered as *name* in the home's own scope (never a parent's).

        The home's tasks and its clients pair with *their* service this way: while
        it restarts, a namesake in an enclosing scope must not receive its work.

        Raises:
            TypeError: *name* holds something that is not a *cls* service.
        """
        return _as_ref(name, self.registry.lookup_here(name), cls)

    async def wait_service(
        self, name: str, cls: type[S], *, after: ServiceRef[S] | None = None
    ) -> ServiceRef[S]:
        """Wait for the service registered as *name* in the home's own scope (not *after*).

        Honours the caller's cancel scopes (wrap it in `trio.move_on_after`).

        Raises:
            trioscope.NoRegistryError: the home's registry closed meanwhile.
        """
        registry = self.registry
        seen: object = after
        while True:
            value = await registry.wait_for(name, after=seen)
            if registry.lookup_here(name) is value:
                ref = _as_ref(name, value, cls)
                assert ref is not None
                return ref
            seen = value  # a parent scope's namesake: wait for the next change

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``fn(*args)`` in the home's nursery, supervised with the home.

        Raises:
            RuntimeError: the home is not running (not started yet, or stopped).
        """
        if self._nursery is None:
            raise RuntimeError(f"{type(self).__qualname__} {self.name!r} is not running")
        self._nursery.start_soon(fn, *args)

    async def started(self) -> None:
        """Hook: runs in the home's task before it is registered (tasks may be started)."""

    async def aclose(self) -> None:
        """Hook: runs when the home stops, after its name is released (shielded,
        for at most `HOME_CLOSE_S`)."""


H = TypeVar("H", bound=Home)


async def _run_home(factory: Callable[[], H], *, task_status: trio.TaskStatus[H]) -> None:
    home = factory()
    if not home.name:
        raise ValueError(f"{type(home).__qualname__}.name must be set (the name to register)")
    registry = current_registry()
    async with trio.open_nursery() as nursery:
        home._nursery = nursery
        home._registry = registry
        try:
            await home.started()
            with registry.registered(home.name, home):
                task_status.started(home)
                await trio.sleep_forever()
        finally:
            home._nursery = None
            with trio.CancelScope(shield=True) as shield:
                shield.deadline = trio.current_time() + HOME_CLOSE_S
                await home.aclose()
            nursery.cancel_scope.cancel()


def home_spec(factory: Callable[[], H], *, id: str) -> ChildSpec[H]:
    """A `ChildSpec` whose child keeps a fresh ``factory()`` registered while it runs.

    The started value is the home. The home is created anew on every
    (re)start of the child.
    """

    async def start(*, task_status: trio.TaskStatus[H] = trio.TASK_STATUS_IGNORED) -> None:
        await _run_home(factory, task_status=task_status)

    return ChildSpec(id, start)


def find_home(name: str, cls: type[H]) -> H | None:
    """The home registered as *name* in the current scope (or a visible parent), if any.

    Raises:
        trioscope.NoRegistryError: outside every registry scope.
        TypeError: something that is not a *cls* is registered under *name*.
    """
    value = current_registry().lookup(name)
    if value is None or isinstance(value, cls):
        return value
    raise TypeError(
        f"{name!r} is registered to a {type(value).__qualname__}, not a {cls.__qualname__}"
    )


def own_home(name: str, cls: type[H], service: str, spec: str) -> H:
    """The home *name* of the current registry itself: a service's own, started just
    before it in the same supervisor (a parent scope's would be another service's).

    For a service's ``init``. *service* and *spec* name the service and the spec
    that starts both, for the message.

    Raises:
        RuntimeError: no such home in this scope (the service was started
            without its spec).
    """
    home = current_registry().lookup_here(name)
    if not isinstance(home, cls):
        raise RuntimeError(
            f"{service} found no {name!r} in its registry scope: start it with {spec}, "
            "which starts its home first"
        )
    return home
