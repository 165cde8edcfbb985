"""`run`: the `trio.run` of a supervised application.

::

    import trioscope

    class Hello(trioscope.Service):
        async def greet(self, who: str) -> str:
            return f"hello {who}"

    if __name__ == "__main__":
        trioscope.run([Hello.child_spec(name="hello")])  # Ctrl-C stops it in order
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import signal
from collections.abc import Callable, Iterable

import trio

from ._child_spec import Backoff, ChildSpec
from ._registry import open_registry
from ._supervisor import (
    DEFAULT_MAX_RESTARTS,
    DEFAULT_MAX_SECONDS,
    AutoShutdown,
    Strategy,
    Supervisor,
    _open,
)

_log = logging.getLogger("trioscope.app")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def serve(
    children: Iterable[ChildSpec],
    *,
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    backoff: Backoff | None = None,
    auto_shutdown: AutoShutdown = "never",
    id: str = "supervisor",
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run *children* under a root supervisor in a fresh registry until SIGINT or SIGTERM.

    Signals are taken from the first instant, before any child starts: one
    that comes while children are still starting gives up the start in
    progress and stops what has started, in reverse order. Returns after an
    orderly stop, or when a significant child ends the supervisor. Once a stop
    has begun, for whatever reason (a signal, a child's ``sys.exit()``, the
    supervisor giving up), the signals are given back: a second SIGINT raises
    `KeyboardInterrupt`, which cancels a stop that hangs, and a second SIGTERM
    ends the process.

    It follows Trio's `nursery.start` protocol: ``await nursery.start(serve,
    children)`` returns the root `Supervisor` once every child is ready.

    Raises:
        StartError, RestartIntensityExceededError: as `open_supervisor`.
    """
    specs = list(children)
    root_id = id
    with contextlib.ExitStack() as signals_held:
        signals = signals_held.enter_context(trio.open_signal_receiver(*STOP_SIGNALS))
        stop = trio.CancelScope()

        async def first_signal() -> None:
            async for signum in signals:
                _log.info(
                    "received %s: stopping supervisor %r",
                    signal.Signals(signum).name,
                    root_id,
                    extra={"supervisor": root_id, "event": "signal", "signal": signum},
                )
                signals_held.close()  # give them back: the next one is not ours
                stop.cancel()
                return

        # Unwrap policy: the signal watcher raises nothing but Cancelled, and
        # the supervisor's exception is kept and raised after the nursery, bare.
        error: BaseException | None = None
        async with open_registry(namespace="app"), trio.open_nursery() as nursery:
            nursery.start_soon(first_signal, name="trioscope signals")
            try:
                with stop:
                    async with _open(
                        specs,
                        id=id,
                        strategy=strategy,
                        max_restarts=max_restarts,
                        max_seconds=max_seconds,
                        backoff=backoff,
                        max_children=None,
                        rng=rng,
                        auto_shutdown=auto_shutdown,
                        on_stop=signals_held.close,
                    ) as sup:
                        task_status.started(sup)
                        await trio.sleep_forever()
            except BaseException as exc:
                error = exc
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error


def run(
    children: Iterable[ChildSpec],
    *,
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    backoff: Backoff | None = None,
    auto_shutdown: AutoShutdown = "never",
    id: str = "supervisor",
    rng: random.Random | None = None,
    on_started: Callable[[Supervisor], object] | None = None,
) -> None:
    """Run an application: `trio.run` of `serve`. Stops gracefully on SIGINT/SIGTERM.

    The keywords are the root supervisor's, as for `open_supervisor`, and:

    Args:
        on_started: Called (synchronously, in Trio) with the root `Supervisor`
            once every child is ready, as ``await nursery.start(serve, ...)``
            would return it: an app listening on port 0 can print its port.
            If it raises, the application stops in order and `run` raises that.
    """
    trio.run(
        functools.partial(
            serve,
            list(children),
            strategy=strategy,
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            backoff=backoff,
            auto_shutdown=auto_shutdown,
            id=id,
            rng=rng,
            task_status=(
                trio.TASK_STATUS_IGNORED if on_started is None else _OnStarted(on_started)
            ),
        )
    )


class _OnStarted:
    """A `trio.TaskStatus` that hands the started root supervisor to a callback."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[Supervisor], object]) -> None:
        self.callback = callback

    def started(self, value: Supervisor | None = None) -> None:
        assert value is not None  # serve starts with its root supervisor
        self.callback(value)
