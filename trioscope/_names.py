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

    trio.run(main)
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from trio.lowlevel import current_task

from ._errors import CallTimeoutError, ServiceUnavailableError, _NotRunError
from ._registry import _current_registry_or_none, _no_registry_error
from ._service import DEFAULT_CALL_TIMEOUT_S, Service, ServiceRef, _Incarnation, _Message

if sys.version_info >= (3, 11):
    from typing import Concatenate, ParamSpec
else:  # pragma: no cover - exercised only on 3.10
    from typing import Concatenate

    from typing_extensions import ParamSpec

S = TypeVar("S", bound=Service)
P = ParamSpec("P")
R = TypeVar("R")


def whereis(name: str, cls: type[S] | None = None) -> ServiceRef[Any] | None:
    """The service registered as *name*, as seen from the current scope, or ``None``.

    With *cls*, the result is typed ``ServiceRef[cls]`` and checked to run that class.

    Raises:
        NoRegistryError: no registry is open around the current task.
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


async def call(
    name: str,
    fn: Callable[Concatenate[S, P], Awaitable[R]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """Call handler *fn* of the service registered as *name*, resolved on each attempt.

    Rides through a supervised restart: while the name is not registered, or
    the incarnation found ends before running the message, it waits for the
    name to be (re)registered and tries again, all within the default call
    timeout (`DEFAULT_CALL_TIMEOUT_S`). A message that ran is never retried.

    Raises:
        NoRegistryError: no registry is open around the current task, or it
            closed while the call waited for the name.
        ServiceUnavailableError: no live service took the message within the timeout.
        CallTimeoutError: the service took the message but did not reply in time.
        ServiceCrashedError, Rejected, TypeError: as `ServiceRef.call`.
    """
    registry = _current_registry_or_none()
    if registry is None:
        await trio.lowlevel.checkpoint()  # a checkpoint on every path, errors included
        raise _no_registry_error(f"call({name!r}, ...)")
    timeout = DEFAULT_CALL_TIMEOUT_S
    sent: _Message | None = None
    failed: _Incarnation | None = None
    with trio.CancelScope(deadline=trio.current_time() + timeout):
        while True:
            ref = _as_ref(name, registry.lookup(name), None)
            if ref is None or ref._core is failed:
                if ref is None and not inspect.iscoroutinefunction(fn):
                    # No service to check it against yet, but no service could
                    # run this: say so now rather than after the timeout.
                    raise TypeError(
                        f"{getattr(fn, '__qualname__', fn)!s} is not a handler: "
                        "handlers are `async def` methods of a Service"
                    )
                sent = None
                # Raises NoRegistryError if the registry closes meanwhile.
                await registry._wait_changed(name, f"call({name!r}, ...)")
                continue
            core = ref._core
            core.handler_name(fn)
            sent = _Message(core, fn, args, kwargs, current_task())
            try:
                return await core.call(sent)  # type: ignore[no-any-return]
            except _NotRunError:
                failed = core
    # A message still held by a live incarnation (queued, waiting for mailbox
    # space or running) means the service was there but slow: a timeout, as
    # for `ServiceRef.call`. Unavailable only when no incarnation held it.
    if sent is not None:
        raise CallTimeoutError(repr(name), getattr(fn, "__name__", repr(fn)), timeout)
    raise ServiceUnavailableError(
        repr(name),
        f"no live service took the call within {timeout:g} s "
        f"(nothing registered under that name{'' if failed is None else ' ran it'}); "
        "is it started under a supervisor in this registry scope?",
    )


async def cast(
    name: str,
    fn: Callable[Concatenate[S, P], Awaitable[object]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> None:
    """Cast handler *fn* to the service registered as *name*.

    Waits (within the default call timeout) for the name to be registered,
    then for mailbox space.

    Raises:
        NoRegistryError: no registry is open around the current task, or it
            closed while the cast waited for the name.
        ServiceUnavailableError: the name was not registered in time, or its
            incarnation stopped before taking the message.
    """
    registry = _current_registry_or_none()
    if registry is None:
        await trio.lowlevel.checkpoint()  # a checkpoint on every path, errors included
        raise _no_registry_error(f"cast({name!r}, ...)")
    ref: ServiceRef[Any] | None = None
    with trio.move_on_after(DEFAULT_CALL_TIMEOUT_S):
        while (ref := _as_ref(name, registry.lookup(name), None)) is None:
            # Raises NoRegistryError if the registry closes meanwhile.
            await registry._wait_changed(name, f"cast({name!r}, ...)")
    if ref is None:
        raise ServiceUnavailableError(
            repr(name),
            f"nothing was registered under that name within {DEFAULT_CALL_TIMEOUT_S:g} s",
        )
    await ref.cast(fn, *args, **kwargs)
