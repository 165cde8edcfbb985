"""Scoped `:telemetry`-style dispatch: the implementation behind `trioscope.telemetry`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Final, TypeAlias, final

import attrs
import trio

from ._correlation import _correlation
from ._registry import (
    Registry,
    _current,
    _current_registry_or_none,
    _no_registry_error,
    _telemetry,
)

_log = logging.getLogger("trioscope.telemetry")

EventName: TypeAlias = tuple[str, ...]
"""An event's name: a non-empty tuple of strings, ``("trioscope", "call", "stop")``."""
Measurements: TypeAlias = Mapping[str, float]
"""What an event measured, by name: ``{"duration": 0.0012}`` (numbers; see the units)."""
Metadata: TypeAlias = Mapping[str, object]
"""What the event is about, by name: ``{"service": "cache", "handler": "get"}``."""
Handler: TypeAlias = Callable[[EventName, Measurements, Metadata], object]
"""A function called with (event name, measurements, metadata) for each event it is attached to."""

HANDLER_FAILURE: Final[EventName] = ("trioscope", "telemetry", "handler_failure")
"""Executed when a handler raised and was detached (metadata: ``handler_id``,
``event_name``, ``reason``)."""

_EMPTY: Final[Mapping[str, object]] = {}


@final
class _Handler:
    __slots__ = ("event_names", "fn", "handler_id", "registry")

    def __init__(
        self, handler_id: str, event_names: tuple[EventName, ...], fn: Handler, registry: Registry
    ) -> None:
        self.handler_id = handler_id
        self.event_names = event_names
        self.fn = fn
        self.registry = registry


@attrs.frozen
class HandlerInfo:
    """One attached handler, as `handlers` lists it."""

    handler_id: str
    """The id given to `attach`."""
    event_names: tuple[EventName, ...]
    """The events it is attached to."""
    handler: Handler
    """The function."""
    namespace: str | None
    """The namespace of the registry it is attached in."""


def _table(reg: Registry) -> dict[EventName, tuple[_Handler, ...]]:
    """The handlers visible from *reg*, by event name: outer scopes first, then attach order."""
    if reg._tversion == _telemetry.version:
        return reg._tcache
    table: dict[EventName, list[_Handler]] = {}
    for r in reversed(list(reg._visible_chain())):
        for h in r._handlers.values():
            for name in h.event_names:
                table.setdefault(name, []).append(h)
    reg._tcache = {name: tuple(hs) for name, hs in table.items()}
    reg._tversion = _telemetry.version
    return reg._tcache


def _handlers_for(reg: Registry | None, event_name: EventName) -> tuple[_Handler, ...] | None:
    """The handlers an event executed with *reg* as the current registry reaches, or ``None``."""
    if reg is None or not _telemetry.attached or reg._closed:
        return None
    return _table(reg).get(event_name)


def _dispatch(
    handlers: tuple[_Handler, ...],
    event_name: EventName,
    measurements: Measurements,
    metadata: Metadata,
) -> None:
    for h in handlers:
        try:
            h.fn(event_name, measurements, metadata)
        except KeyboardInterrupt:
            raise  # the user's Ctrl-C, landing in a handler: not the handler's failure
        except BaseException as exc:
            # A handler's failure is its own, never the emitter's: pytest's
            # Failed and SystemExit too (handlers are sync: no Cancelled).
            _handler_failed(h, event_name, exc)
            # The failure's report may have detached others: skip those.
            after = handlers[handlers.index(h) + 1 :]
            rest = [r for r in after if r.registry._handlers.get(r.handler_id) is r]
            _dispatch(tuple(rest), event_name, measurements, metadata)
            return


def _handler_failed(h: _Handler, event_name: EventName, exc: BaseException) -> None:
    reg = h.registry
    if reg._handlers.get(h.handler_id) is h:
        del reg._handlers[h.handler_id]
        _telemetry.attached -= 1
        _telemetry.version += 1
    _log.error(
        "telemetry handler %r raised on %s and was detached",
        h.handler_id,
        ".".join(event_name),
        exc_info=exc,
        extra={"handler_id": h.handler_id, "event_name": event_name},
    )
    handlers = _handlers_for(reg, HANDLER_FAILURE)
    if handlers:
        _dispatch(
            handlers,
            HANDLER_FAILURE,
            {"count": 1},
            {"handler_id": h.handler_id, "event_name": event_name, "reason": exc},
        )


def execute(
    event_name: EventName, measurements: Measurements, metadata: Metadata | None = None
) -> None:
    """Call every handler attached to *event_name* that is visible from the current scope.

    Handlers run synchronously, in the calling task, in the order: outer
    scopes first, then the order they were attached in. Nothing is copied:
    handlers must not change the mappings they are given. The core never
    changes the mappings of its own events once executed, so a handler may
    keep them (to aggregate later, as the TelemetryService does); other
    emitters should do the same.

    A handler that raises is detached and reported (an ERROR record on the
    ``trioscope.telemetry`` logger and a `HANDLER_FAILURE` event); the
    emitter and the other handlers go on as if nothing happened, as
    `:telemetry` does. Outside every registry scope, and when no handler is
    attached anywhere, it returns at once (a global counter and a context
    variable read; see docs/performance.md).
    """
    if not _telemetry.attached:
        return
    reg = _current.get()
    if reg is None or reg._closed:
        return
    handlers = _table(reg).get(event_name)
    if handlers:
        _dispatch(handlers, event_name, measurements, _EMPTY if metadata is None else metadata)


def _check_name(event_name: object) -> EventName:
    if (
        not isinstance(event_name, tuple)
        or not event_name
        or not all(isinstance(part, str) and part for part in event_name)
    ):
        raise TypeError(
            "an event name is a non-empty tuple of non-empty strings, "
            f"such as ('app', 'request', 'stop'); got {event_name!r}"
        )
    return event_name


def attach(handler_id: str, event_names: Iterable[EventName], handler: Handler) -> None:
    """Attach *handler* to *event_names* in the current registry scope.

    It sees every listed event executed in this scope or in a scope nested in
    it, up to (not across) an ``isolated=True`` scope nested in it: the same
    boundary as for names, so two sibling test scopes never see each other's
    events. It stays attached until `detach`, until it raises (it is then
    detached and reported), or until the scope's block exits.

    Event names match exactly (no prefixes or wildcards, as `:telemetry`).
    Unlike `:telemetry`, there is no config argument: close over what the
    handler needs (a lambda, `functools.partial`, a bound method).

    Raises:
        ValueError: *handler_id* is already attached in this registry (nothing changes).
        TypeError: an event name is not a non-empty tuple of non-empty strings,
            *event_names* is a single name rather than a list of names, or
            *handler* is not callable.
        trioscope.NoRegistryError: outside every registry scope.
    """
    reg = _current_registry_or_none()
    if reg is None:
        raise _no_registry_error(f"attach({handler_id!r})")
    if not isinstance(handler_id, str):
        raise TypeError(f"handler_id must be a str, got {type(handler_id).__name__}")
    if isinstance(event_names, tuple) and event_names and isinstance(event_names[0], str):
        raise TypeError(
            f"event_names is a list of event names; for one event, write [{event_names!r}]"
        )
    names = tuple(dict.fromkeys(_check_name(name) for name in event_names))
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {handler!r}")
    if handler_id in reg._handlers:
        raise ValueError(
            f"a telemetry handler with id {handler_id!r} is already attached in "
            f"registry {reg.namespace!r}"
        )
    reg._handlers[handler_id] = _Handler(handler_id, names, handler, reg)
    _telemetry.attached += 1
    _telemetry.version += 1


def detach(handler_id: str) -> bool:
    """Detach the handler *handler_id*; return whether one was attached.

    Looks in the current registry, then the visible enclosing ones, and
    detaches the first handler with that id. (`:telemetry` answers
    ``{:error, :not_found}`` where this returns ``False``.) Outside every
    scope there is nothing to detach: ``False``.
    """
    reg = _current_registry_or_none()
    if reg is None:
        return False
    for r in reg._visible_chain():
        if r._handlers.pop(handler_id, None) is not None:
            _telemetry.attached -= 1
            _telemetry.version += 1
            return True
    return False


@contextmanager
def attached(handler_id: str, event_names: Iterable[EventName], handler: Handler) -> Iterator[None]:
    """`attach` for the duration of the ``with`` block, then `detach` (if still attached)."""
    attach(handler_id, event_names, handler)
    reg = _current_registry_or_none()
    assert reg is not None
    try:
        yield
    finally:
        _detach_exactly(reg, handler_id, handler)


def _detach_exactly(reg: Registry, handler_id: str, handler: Handler) -> bool:
    """Detach *handler* from *reg* if it is still attached there as *handler_id*."""
    h = reg._handlers.get(handler_id)
    if h is None or h.fn is not handler:
        return False
    del reg._handlers[handler_id]
    _telemetry.attached -= 1
    _telemetry.version += 1
    return True


def handlers(event_name: EventName | None = None) -> list[HandlerInfo]:
    """The handlers visible from the current scope (for one event, or all), outer scopes first."""
    reg = _current_registry_or_none()
    if reg is None:
        return []
    result = []
    for r in reversed(list(reg._visible_chain())):
        for h in r._handlers.values():
            if event_name is None or event_name in h.event_names:
                result.append(HandlerInfo(h.handler_id, h.event_names, h.fn, r.namespace))
    return result


@contextmanager
def span(
    event_prefix: EventName, metadata: Metadata | None = None
) -> Iterator[MutableMapping[str, object]]:
    """Execute *event_prefix* + ``"start"``, then + ``"stop"`` or ``"exception"``, around the block.

    Measurements: start has ``monotonic_time`` (Trio's clock, seconds); stop
    and exception have ``duration`` (seconds, float) and ``monotonic_time``.
    Metadata: *metadata* plus ``correlation_id`` (the current one, unless
    given); the exception event adds ``kind`` (``"cancelled"`` for a
    `trio.Cancelled`, else ``"error"``) and ``reason`` (the exception), which
    is then raised again unchanged. The block gets the stop event's metadata
    as a dict, to add what it learned (a result size, a status).

    Needs a running Trio loop (it reads Trio's clock).
    """
    _check_name(event_prefix)
    meta: dict[str, object] = dict(metadata) if metadata is not None else {}
    meta.setdefault("correlation_id", _correlation.get())
    start = trio.current_time()
    execute((*event_prefix, "start"), {"monotonic_time": start}, dict(meta))
    try:
        yield meta
    except BaseException as exc:
        now = trio.current_time()
        kind = "cancelled" if isinstance(exc, trio.Cancelled) else "error"
        execute(
            (*event_prefix, "exception"),
            {"duration": now - start, "monotonic_time": now},
            {**meta, "kind": kind, "reason": exc},
        )
        raise
    now = trio.current_time()
    execute((*event_prefix, "stop"), {"duration": now - start, "monotonic_time": now}, meta)
