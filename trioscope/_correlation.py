"""Correlation ids: which request a piece of work belongs to, across services.

::

    import trio, trioscope

    class Greeter(trioscope.Service):
        async def hello(self) -> str | None:
            return trioscope.current_correlation_id()

    async def main() -> None:
        async with trioscope.open_registry(), trioscope.open_supervisor(
            [Greeter.child_spec(name="greeter")]
        ):
            with trioscope.correlate("req-42"):
                assert await trioscope.call("greeter", Greeter.hello) == "req-42"
            assert await trioscope.call("greeter", Greeter.hello) is None

    trio.run(main)

The id lives in a context variable, so every task started inside a
`correlate` block inherits it. A call or cast carries the caller's id to the
service, which runs the handler with it (the service's own task would
otherwise see whatever its last message had). Core telemetry events put it in
their metadata, foundation events store it by default, and a crash records it
on the exception, so a supervisor can say which request crashed a child.
"""

from __future__ import annotations

import contextvars
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, TypeAlias

from ._errors import TrioscopeError

if sys.version_info < (3, 11):  # pragma: no cover - exercised only on 3.10
    from exceptiongroup import BaseExceptionGroup

__all__ = ["correlate", "current_correlation_id"]

_correlation: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar(
    "trioscope_correlation_id", default=None
)

Origin: TypeAlias = tuple[str, str, str | None]
"""Where a crash began: (service label, handler or owned task name, correlation id)."""

_SEARCH_LIMIT: Final = 64  # exceptions examined at most in one chain (cycles, huge groups)


def current_correlation_id() -> str | None:
    """The correlation id of the current task (set by `correlate`, or carried by a call)."""
    return _correlation.get()


@contextmanager
def correlate(correlation_id: str | None = None) -> Iterator[str]:
    """Run the block with a correlation id; yields it.

    Args:
        correlation_id: The id to use (any non-empty ``str``: a request id from
            an HTTP header, say). ``None`` makes a new one (a random UUID).

    Tasks started inside the block inherit the id (Trio copies the context
    into each new task); calls and casts made in it carry it to the service
    that runs them. Blocks nest: the innermost id wins until it exits.

    Raises:
        TypeError: *correlation_id* is neither a ``str`` nor ``None``.
        ValueError: *correlation_id* is an empty string.
    """
    if correlation_id is None:
        correlation_id = str(uuid.uuid4())
    elif not isinstance(correlation_id, str):
        raise TypeError(
            f"correlation_id must be a str or None, got {type(correlation_id).__name__}"
        )
    elif not correlation_id:
        raise ValueError("correlation_id must not be empty")
    token = _correlation.set(correlation_id)
    try:
        yield correlation_id
    finally:
        _correlation.reset(token)


def crash_origin(exc: BaseException | None) -> Origin | None:
    """The origin of the crash *exc* came from, if trioscope recorded one on the way.

    User exceptions are never marked (they may be frozen, shared, or raise
    from ``__getattr__``): trioscope's own errors carry the origin. A caller's
    `ServiceCrashedError` carries the crash of the handler it called, a
    `RestartIntensityExceededError` the failure that made its supervisor give
    up. Searches *exc*, then what it was raised from and during
    (``__cause__``, ``__context__``) and the members of exception groups,
    nearest first.
    """
    if exc is None:
        return None
    seen: set[int] = set()
    queue = [exc]
    i = 0
    while i < len(queue) and i < _SEARCH_LIMIT:
        current = queue[i]
        i += 1
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, TrioscopeError) and current._origin is not None:
            return current._origin
        if current.__cause__ is not None:
            queue.append(current.__cause__)
        if current.__context__ is not None:
            queue.append(current.__context__)
        if isinstance(current, BaseExceptionGroup):
            queue.extend(current.exceptions)
    return None
