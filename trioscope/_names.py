"""Services by name: `whereis`, and `call`/`cast` resolved through the registry on each attempt.

::

    import trio, trioscope

    class Echo(trioscope.Service):
        async def echo(self, text: str) -> str:
            return text

    async def main() -> None:
        async with trioscope.open_registry():
            async with trioscope.open_supervisor([Echo.child_spec(name="echo")]):
                assert await trioscope.call("echo", Echo.echo, "hi") == "hi"
                ref = trioscope.whereis("echo", Echo)
                assert ref is not None and await ref.call(Echo.echo, "ho") == "ho"
                slow = trioscope.by_name("echo", Echo, timeout=30)  # a budget of its own
                assert await slow.call(Echo.echo, "hu") == "hu"

    trio.run(main)
"""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, NoReturn, Protocol, TypeVar, final, overload

import trio
from trio.lowlevel import current_task

from ._child_spec import _check_seconds
from ._errors import CallTimeoutError, ServiceUnavailableError, _NotRunError
from ._registry import Registry, _current_registry_or_none, _no_registry_error
from ._service import (
    DEFAULT_CALL_TIMEOUT_S,
    Deferred,
    Service,
    ServiceRef,
    _Incarnation,
    _Message,
    _ServiceStart,
)

if sys.version_info >= (3, 11):
    from typing import Concatenate, ParamSpec
else:  # pragma: no cover - exercised only on 3.10
    from typing import Concatenate

    from typing_extensions import ParamSpec

S = TypeVar("S", bound=Service)
P = ParamSpec("P")
R = TypeVar("R")


@overload
def whereis(name: str, cls: type[S]) -> ServiceRef[S] | None: ...
@overload
def whereis(name: str, cls: None = None) -> ServiceRef[Any] | None: ...
def whereis(name: str, cls: type[Service] | None = None) -> ServiceRef[Any] | None:
    """The service registered as *name*, as seen from the current scope, or ``None``.

    With *cls*, the result is typed ``ServiceRef[cls]`` and checked to run that class.

    Raises:
        NoRegistryError: no registry is open around the current task (or it has closed).
        TypeError: *name* holds something that is not a service (or not a *cls*).
    """
    registry = _current_registry_or_none()
    if registry is None:
        raise _no_registry_error(f"whereis({name!r})")
    return _as_ref(name, registry.lookup(name), cls)


def _as_ref(name: str, value: object, cls: type[Service] | None) -> ServiceRef[Any] | None:
    if value is None:
        return None
    if not isinstance(value, ServiceRef):
        raise TypeError(f"name {name!r} is registered to {value!r}, which is not a service")
    if cls is not None and not issubclass(value._core.cls, cls):
        raise TypeError(
            f"name {name!r} runs {value._core.cls.__qualname__}, not {cls.__qualname__}"
        )
    return value


@overload
async def wait_for_service(
    name: str, cls: type[S], *, after: ServiceRef[Any] | None = None
) -> ServiceRef[S]: ...
@overload
async def wait_for_service(
    name: str, cls: None = None, *, after: ServiceRef[Any] | None = None
) -> ServiceRef[Any]: ...
async def wait_for_service(
    name: str, cls: type[Service] | None = None, *, after: ServiceRef[Any] | None = None
) -> ServiceRef[Any]:
    """Wait until a service is registered as *name*, as seen from the current scope.

    With *after* (a ref to an incarnation, typically one that just crashed),
    wait for another incarnation: the supervisor's restart, not the one being
    torn down. Returns at once (after a checkpoint) when one is registered.
    Honours the caller's cancel scopes: wrap it in `trio.fail_after` for a limit.

    Raises:
        NoRegistryError: no registry is open around the current task, or it
            closed (before or while waiting).
        TypeError: *name* holds something that is not a service (or not a *cls*).
    """
    await trio.lowlevel.checkpoint()
    what = f"wait_for_service({name!r})"
    registry = _current_registry_or_none()
    if registry is None:
        raise _no_registry_error(what)
    old = after._core if after is not None else None
    while True:
        ref = _as_ref(name, registry.lookup(name), cls)
        if ref is not None and ref._core is not old:
            return ref
        # Raises NoRegistryError if the registry closes meanwhile.
        await registry._wait_changed(name, what)


@final
class NameRef(Generic[S]):
    """A service found by name on every use, with a call timeout of its own.

    Where a `ServiceRef` points at one incarnation and never waits, a
    ``NameRef`` resolves its name in the calling task's registry scope on each
    `call`/`cast` and rides through restarts within its timeout. Get one from
    `by_name`; it holds no resource and can be kept and shared.
    """

    __slots__ = ("_cls", "_name", "_timeout")

    def __init__(self, name: str, cls: type[S] | None, timeout: float) -> None:
        self._name = name
        self._cls = cls
        self._timeout = timeout

    def __repr__(self) -> str:
        cls = f" {self._cls.__qualname__}" if self._cls is not None else ""
        return f"<NameRef {self._name!r}{cls} timeout {self._timeout:g}>"

    @property
    def name(self) -> str:
        """The name it resolves."""
        return self._name

    @property
    def service_class(self) -> type[S] | None:
        """The class the name's service is checked to run, if one was given."""
        return self._cls

    @property
    def timeout(self) -> float:
        """Seconds `call` and `cast` wait, for the name and then for the reply."""
        return self._timeout

    def with_timeout(self, seconds: float) -> NameRef[S]:
        """The same name, with another timeout (``math.inf`` for none)."""
        _check_seconds("timeout", seconds, allow_inf=True)
        return NameRef(self._name, self._cls, seconds)

    @overload
    async def call(
        self,
        fn: Callable[Concatenate[S, P], Awaitable[Deferred[R]]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    async def call(
        self, fn: Callable[Concatenate[S, P], Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    async def call(
        self, fn: Callable[Concatenate[S, P], Awaitable[Any]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Any:
        """Call handler *fn* of the service registered under this name; see `trioscope.call`.

        Everything (waiting for the name, for mailbox space, for the reply)
        happens within this handle's timeout.
        """
        return await _call(self._name, self._cls, self._timeout, fn, args, kwargs)

    async def cast(
        self,
        fn: Callable[Concatenate[S, P], Awaitable[object]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        """Cast handler *fn* to the service registered under this name; see `trioscope.cast`."""
        await _cast(self._name, self._cls, self._timeout, fn, args, kwargs)

    def whereis(self) -> ServiceRef[S] | None:
        """`trioscope.whereis` for this name (checked against its class, if any)."""
        return whereis(self._name, self._cls)

    async def wait_for(self, *, after: ServiceRef[Any] | None = None) -> ServiceRef[S]:
        """`trioscope.wait_for_service` for this name (checked against its class, if any)."""
        return await wait_for_service(self._name, self._cls, after=after)


@overload
def by_name(name: str, cls: type[S], *, timeout: float = ...) -> NameRef[S]: ...
@overload
def by_name(name: str, cls: None = None, *, timeout: float = ...) -> NameRef[Any]: ...
def by_name(
    name: str, cls: type[Service] | None = None, *, timeout: float = DEFAULT_CALL_TIMEOUT_S
) -> NameRef[Any]:
    """A handle calling the service registered as *name*, within *timeout* seconds.

    ``await trioscope.by_name("db", Db, timeout=30).call(Db.get, key)`` is
    `trioscope.call` with a budget of its own: for a slow handler, or to ride
    through a restart whose backoff is longer than the default 5 s. The
    timeout covers waiting for the name, for mailbox space and for the reply;
    ``math.inf`` waits as long as the caller's cancel scopes allow. With *cls*,
    the handle is typed for that class and checks the service runs it.

    Raises:
        TypeError: *name* is not a ``str``, *cls* not a `Service` subclass,
            or *timeout* not a number.
        ValueError: *timeout* is negative or NaN.
    """
    if not isinstance(name, str):
        raise TypeError(f"service names must be str, got {type(name).__name__}: {name!r}")
    checked: object = cls  # callers without type checking can pass anything
    if checked is not None and not (isinstance(checked, type) and issubclass(checked, Service)):
        raise TypeError(
            f"cls must be a Service subclass, got {getattr(cls, '__qualname__', repr(cls))}"
        )
    _check_seconds("timeout", timeout, allow_inf=True)
    return NameRef(name, cls, timeout)


@overload
async def call(
    name: str,
    fn: Callable[Concatenate[S, P], Awaitable[Deferred[R]]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R: ...
@overload
async def call(
    name: str,
    fn: Callable[Concatenate[S, P], Awaitable[R]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R: ...
async def call(
    name: str,
    fn: Callable[Concatenate[S, P], Awaitable[Any]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> Any:
    """Call handler *fn* of the service registered as *name*, resolved on each attempt.

    Rides through a supervised restart: while the name is not registered, or
    the incarnation found ends before running the message, it waits for the
    name to be (re)registered and tries again, all within the default call
    timeout (`DEFAULT_CALL_TIMEOUT_S`); `by_name` gives another. A message
    that ran is never retried.

    Raises:
        NoRegistryError: no registry is open around the current task, or it
            closed while the call waited for the name.
        ServiceUnavailableError: no live service took the message within the
            timeout; the message says whether the name's child is in backoff or
            restarting, or whether the name looks like a typo.
        CallTimeoutError: the service took the message but did not reply in time.
        ServiceCrashedError, Rejected, TypeError: as `ServiceRef.call`.

    A handler annotated ``-> Deferred[R]`` (it answers later) is typed ``R`` here too.
    """
    return await _call(name, None, DEFAULT_CALL_TIMEOUT_S, fn, args, kwargs)


async def cast(
    name: str,
    fn: Callable[Concatenate[S, P], Awaitable[object]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> None:
    """Cast handler *fn* to the service registered as *name*.

    Waits (within the default call timeout; `by_name` gives another) for the
    name to be registered, then for mailbox space; if the incarnation found
    stops before taking the message, tries the next one.

    Raises:
        NoRegistryError: no registry is open around the current task, or it
            closed while the cast waited for the name.
        ServiceUnavailableError: no live service took the message in time.
        TypeError: as `ServiceRef.cast`.
    """
    await _cast(name, None, DEFAULT_CALL_TIMEOUT_S, fn, args, kwargs)


# -- the implementation shared by the functions and NameRef -------------------


async def _raise_no_registry(what: str) -> NoReturn:
    """`NoRegistryError`, after a checkpoint: a waiting call checkpoints on every
    path, errors included (kept out of line: the found-registry path pays nothing)."""
    await trio.lowlevel.checkpoint()
    raise _no_registry_error(what)


async def _call(
    name: str,
    cls: type[Service] | None,
    budget_s: float,
    fn: Callable[..., Awaitable[object]],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    *,
    here: Registry | None = None,
) -> Any:
    """A call by name; with *here*, only the service registered in that very
    registry is called (never a parent scope's namesake; for the foundation's homes)."""
    what = f"call({name!r}, ...)"
    registry = _current_registry_or_none() if here is None else here
    if registry is None:
        await _raise_no_registry(what)
    lookup = registry.lookup if here is None else registry.lookup_here
    sent: _Message | None = None
    failed: _Incarnation | None = None
    with trio.CancelScope(deadline=trio.current_time() + budget_s):
        while True:
            # A TypeError (a programming error) is raised at once, before any
            # checkpoint, as `ServiceRef.call` and Trio's own argument checks do.
            ref = _as_ref(name, lookup(name), cls)
            if ref is None and not inspect.iscoroutinefunction(fn):
                # No service to check it against yet, but no service could
                # run this: say so now rather than after the timeout.
                raise TypeError(
                    f"{getattr(fn, '__qualname__', fn)!s} is not a handler: "
                    "handlers are `async def` methods of a Service"
                )
            if ref is not None:
                ref._core.handler_name(fn)
            if ref is None or ref._core is failed:
                sent = None
                # Raises NoRegistryError if the registry closes meanwhile.
                await registry._wait_changed(name, what)
                continue
            core = ref._core
            sent = _Message(core, fn, args, kwargs, current_task())
            try:
                return await core.call(sent)
            except _NotRunError:
                # Never ran: try the next incarnation (the private error stays here).
                failed = core
    # A message still held by a live incarnation (queued, waiting for mailbox
    # space or running) means the service was there but slow: a timeout, as
    # for `ServiceRef.call`. Unavailable only when no incarnation held it.
    if sent is not None:
        raise CallTimeoutError(
            repr(name),
            getattr(fn, "__name__", repr(fn)),
            budget_s,
            longer=f"trioscope.by_name({name!r}, timeout=seconds)",
        )
    head = f"no live service took the call within {budget_s:g} s"
    error = ServiceUnavailableError(repr(name), _gave_up(registry, name, head, failed, "ran"))
    raise error from _crash_of(failed)


async def _cast(
    name: str,
    cls: type[Service] | None,
    budget_s: float,
    fn: Callable[..., Awaitable[object]],
    args: tuple[object, ...],
    kwargs: dict[str, object],
) -> None:
    what = f"cast({name!r}, ...)"
    registry = _current_registry_or_none()
    if registry is None:
        await _raise_no_registry(what)
    failed: _Incarnation | None = None
    with trio.CancelScope(deadline=trio.current_time() + budget_s):
        while True:
            ref = _as_ref(name, registry.lookup(name), cls)  # TypeError at once, as in _call
            if ref is not None:
                ref._core.handler_name(fn)
            if ref is None or ref._core is failed:
                await registry._wait_changed(name, what)
                continue
            core = ref._core
            try:
                await core.mailbox.send(_Message(core, fn, args, kwargs, None))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # Stopped before taking it: the next incarnation may.
                failed = core
                await trio.lowlevel.cancel_shielded_checkpoint()
                continue
            return
    if failed is None:
        head = f"nothing was registered under that name within {budget_s:g} s"
    else:
        head = f"no live service took the cast within {budget_s:g} s"
    error = ServiceUnavailableError(repr(name), _gave_up(registry, name, head, failed, "took"))
    raise error from _crash_of(failed)


_STATUS_TEXT: Final = {"backoff": "in backoff"}


def _crash_of(failed: _Incarnation | None) -> Exception | None:
    """The error the last incarnation tried crashed with: the real cause of giving up."""
    reason = failed.reason if failed is not None else None
    return reason if isinstance(reason, Exception) else None


def _gave_up(
    registry: Registry, name: str, head: str, failed: _Incarnation | None, verb: str
) -> str:
    """Why a call or cast by name found no live service, after *head*."""
    expected = registry._expectation(name)
    if expected is not None:
        status, restart_at = expected
        when = ""
        if restart_at is not None:
            now = trio.current_time()
            left = max(0.0, restart_at - now)
            when = f", restarting in {left:g} s (at {restart_at:g} on the Trio clock)"
        return (
            f"{head}: its child is {_STATUS_TEXT.get(status, status)}{when}; "
            "give the call a longer timeout, "
            f"e.g. trioscope.by_name({name!r}, timeout=...)"
        )
    known = registry._known_names()
    if failed is None and name not in known:
        matches = difflib.get_close_matches(name, known, n=3)
        hint = "did you mean " + " or ".join(repr(m) for m in matches) + "?" if matches else ""
        return (
            f"{head}: nothing has been registered under that name recently in the visible "
            "registry scopes; it looks like a typo"
            + (f": {hint}" if hint else ", or its service was never started in this scope")
        )
    ran = "" if failed is None else f" {verb} it"
    return (
        f"{head} (nothing registered under that name{ran}); "
        "is it started under a supervisor in this registry scope?"
    )


# -- what supervisors tell the registry (so calls by name can say why) ---------


class _HasStart(Protocol):
    """A `ChildSpec` (whatever it is generic in), as far as these helpers look."""

    @property
    def start(self) -> object: ...


def _child_name(spec: _HasStart) -> str | None:
    """The name the child of *spec* registers, if it is a named service."""
    start = spec.start
    return start.name if isinstance(start, _ServiceStart) else None


def _expect_restart(
    registry: Registry | None, spec: _HasStart, status: str, restart_at: float | None
) -> None:
    """A supervisor's child of *spec* is *status* (``"backoff"``/``"restarting"``).

    The supervisor calls it with the registry open around it when it opened
    (its children register there); a no-op for unnamed children or no registry.
    """
    name = _child_name(spec)
    if name is not None and registry is not None:
        registry._expect(name, status, restart_at)


def _unexpect_restart(registry: Registry | None, spec: _HasStart) -> None:
    """The supervisor's child of *spec* will not start again (stopped, or given up)."""
    name = _child_name(spec)
    if name is not None and registry is not None:
        registry._unexpect(name)
