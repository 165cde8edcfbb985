"""Monitors: wait for one incarnation of a service to end (OTP's monitor, Akka's watch).

::

    import trio, trioscope

    class Db(trioscope.Service):
        async def get(self) -> int:
            return 1

    async def main() -> None:
        async with trioscope.open_registry():
            async with trio.open_nursery() as nursery:
                await nursery.start(Db.child_spec(name="db").start)
                async with trioscope.monitor("db") as down:
                    nursery.cancel_scope.cancel()
            # Wait outside the cancelled nursery, or the wait itself is cancelled.
            assert (await down.wait()).reason == "killed"

    trio.run(main)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, final

import attrs
import trio

from ._names import _as_ref
from ._registry import _current_registry_or_none, _no_registry_error
from ._service import ServiceRef, _Incarnation

Reason = str | BaseException


@attrs.frozen
class Down:
    """How a monitored incarnation ended."""

    name: str | None
    """The name it was registered under, if any."""
    incarnation: int
    """The incarnation's number (see `ServiceRef.incarnation`); 0 when there was none."""
    reason: Reason
    """``"shutdown"`` (stopped in order), ``"normal"`` (it stopped itself with
    ``self.stop()``), ``"killed"`` (cancelled), ``"noproc"`` (nothing was
    running when the monitor was set up) or the exception it crashed
    with. A kill that came with an error (a task in a handler's nursery failing as
    it was cancelled) has that error as its reason."""


@final
class Monitor:
    """What `monitor` yields: `wait` returns the `Down` once that incarnation ends."""

    __slots__ = ("_core", "_name")

    def __init__(self, core: _Incarnation | None, name: str | None) -> None:
        self._core = core
        self._name = name

    def __repr__(self) -> str:
        target = self._core.label if self._core is not None else repr(self._name)
        return f"<Monitor {target}>"

    async def wait(self) -> Down:
        """Wait until the monitored incarnation ends; honours the caller's cancel scopes."""
        core = self._core
        if core is None:
            await trio.lowlevel.checkpoint()
            return Down(name=self._name, incarnation=0, reason="noproc")
        await core.ended().wait()
        assert core.reason is not None
        return Down(name=core.name, incarnation=core.number, reason=core.reason)


@asynccontextmanager
async def monitor(target: str | ServiceRef[Any]) -> AsyncIterator[Monitor]:
    """Watch the incarnation that *target* (a name or a `ServiceRef`) points at now.

    A name is resolved once, when the block opens; if nothing is registered
    under it, `Monitor.wait` returns at once with reason ``"noproc"``.

    Raises:
        NoRegistryError: *target* is a name and no registry is open.
    """
    if isinstance(target, ServiceRef):
        core: _Incarnation | None = target._core
        name = target.name
    elif isinstance(target, str):
        registry = _current_registry_or_none()
        if registry is None:
            raise _no_registry_error(f"monitor({target!r})")
        ref = _as_ref(target, registry.lookup(target), None)
        core = ref._core if ref is not None else None
        name = target
    else:
        raise TypeError(f"monitor() takes a service name or a ServiceRef, got {target!r}")
    yield Monitor(core, name)
