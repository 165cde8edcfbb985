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
import signal
from collections.abc import Iterable
from typing import Any

import trio

from ._child_spec import ChildSpec
from ._registry import open_registry
from ._supervisor import open_supervisor

_log = logging.getLogger("trioscope.app")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def serve(children: Iterable[ChildSpec], **supervisor_options: Any) -> None:
    """Run *children* under a root supervisor in a fresh registry until SIGINT or SIGTERM.

    Returns after an orderly stop (every child stopped in reverse start order),
    or when a significant child ends the supervisor. Only the first signal asks
    for an orderly stop: a second SIGINT raises `KeyboardInterrupt` and a second
    SIGTERM ends the process, for a stop that hangs.

    Raises:
        StartError, RestartIntensityExceededError: as `open_supervisor`.
    """
    with contextlib.ExitStack() as first_signal_only:
        signals = first_signal_only.enter_context(trio.open_signal_receiver(*STOP_SIGNALS))
        async with (
            open_registry(namespace="app"),
            open_supervisor(children, **supervisor_options) as sup,
        ):
            async for signum in signals:
                _log.info(
                    "received %s: stopping supervisor %r",
                    signal.Signals(signum).name,
                    sup.id,
                    extra={"supervisor": sup.id, "event": "signal", "signal": signum},
                )
                break
            # Give the signals back before the orderly stop, so that a second
            # Ctrl-C (KeyboardInterrupt) or SIGTERM ends a stop that hangs.
            first_signal_only.close()


def run(children: Iterable[ChildSpec], **supervisor_options: Any) -> None:
    """Run an application: `trio.run` of `serve`. Stops gracefully on SIGINT/SIGTERM.

    Any keyword is passed to `open_supervisor` (``strategy``, ``max_restarts``...).
    """
    trio.run(functools.partial(serve, list(children), **supervisor_options))
