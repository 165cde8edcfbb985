"""The crash trail: crashes, restarts, backoffs and give-ups, stored as events.

While an event store runs in a scope, its home attaches one telemetry handler
(`TRAIL_HANDLER_ID`) to the core's crash and restart events in that scope,
and stores each as an `Event` through the write buffer (`store_nowait`'s
path: never blocking the supervisor or service that emitted it, and riding
through a restart of the store itself). Each carries the correlation id of
the request whose call crashed the service (`trioscope.correlate`), so::

    await events.query(correlation_id=request_id)

answers which request crashed a service, in which handler, with which
exception chain, and what each supervisor did about it: restart, back off
until when, or give up (and then what its own supervisor did). No OTP
report links a crash to the request that caused it: `logger` crash reports
name the last message, not who sent it or why.

One crash cannot be recorded: the events home's own (its exit and its
restart happen while no home runs to take them). It is logged, as every
crash is.

Event types (``data`` keys; times as everywhere in the event store):

``trioscope.crash``
    A handler crashed its service: ``service``, ``name``, ``handler``,
    ``exception`` (the chain, below), ``duration_s`` (how long the handler ran).
``trioscope.child.exit``
    A child ended with an error by itself: ``supervisor``, ``child``,
    ``service`` and ``handler`` (when a handler crash was the cause, else
    null), ``exception``, ``uptime_s``.
``trioscope.child.backoff``
    A restart waits: ``supervisor``, ``child``, ``cause`` (the child whose exit
    caused it), ``delay_s``, ``until_wall_ns`` (when it will restart, on the
    wall clock).
``trioscope.child.restart``
    A restart attempt begins: ``supervisor``, ``child``, ``cause``, ``restarts``.
``trioscope.supervisor.give_up``
    Restart intensity exceeded: ``supervisor``, ``child`` (the last to fail),
    ``max_restarts``, ``max_seconds``, ``exception``. What happens next is the
    ``trioscope.child.exit`` of that supervisor in its own parent.

An exception chain is a list, outermost first, of ``{"type": qualified name,
"message": str(exc)}`` following ``__cause__`` (else ``__context__``, unless
suppressed); an exception group adds ``"group": number of members`` and the
chain goes on into its first member. At most `CHAIN_LIMIT` entries, each
message cut to `MESSAGE_LIMIT` characters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from .. import telemetry
from .._telemetry import _detach_exactly
from ._errors import EventBufferFullError, EventRejected
from ._event import JSON, Event

if TYPE_CHECKING:
    from ._events import EventsHome

__all__ = ["CHAIN_LIMIT", "MESSAGE_LIMIT", "TRAIL_HANDLER_ID", "exception_chain"]

_log = logging.getLogger("trioscope.foundation.events")

TRAIL_HANDLER_ID: Final = "trioscope.foundation.crash_trail"
"""The id of the crash trail's telemetry handler in the event store's scope."""
CHAIN_LIMIT: Final = 16
"""Exceptions recorded at most in one chain."""
MESSAGE_LIMIT: Final = 500
"""Characters kept of each exception's message."""

_CALL_EXCEPTION: Final = ("trioscope", "call", "exception")
_CAST_EXCEPTION: Final = ("trioscope", "cast", "exception")
_EXIT: Final = ("trioscope", "child", "exit")
_RESTART: Final = ("trioscope", "child", "restart")
_BACKOFF: Final = ("trioscope", "child", "backoff")
_GIVE_UP: Final = ("trioscope", "supervisor", "give_up")
TRAIL_EVENTS: Final = (_CALL_EXCEPTION, _CAST_EXCEPTION, _EXIT, _RESTART, _BACKOFF, _GIVE_UP)


def exception_chain(exc: BaseException | None) -> list[JSON]:
    """*exc* and what it was raised from, as JSON-compatible data (see the module doc)."""
    chain: list[JSON] = []
    seen: set[int] = set()
    current = exc
    while current is not None and len(chain) < CHAIN_LIMIT and id(current) not in seen:
        seen.add(id(current))
        kind = type(current)
        entry: dict[str, JSON] = {
            "type": f"{kind.__module__}.{kind.__qualname__}",
            "message": _message(current)[:MESSAGE_LIMIT],
        }
        members = getattr(current, "exceptions", None)
        nxt: BaseException | None
        if isinstance(members, tuple) and members and isinstance(members[0], BaseException):
            entry["group"] = len(members)
            nxt = members[0]
        elif current.__cause__ is not None:
            nxt = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            nxt = current.__context__
        else:
            nxt = None
        chain.append(entry)
        current = nxt
    return chain


def _message(exc: BaseException) -> str:
    # The handler must never raise (it would be detached): an exception whose
    # __str__ fails is still recorded, by its type.
    try:
        return str(exc)
    except Exception as failure:  # any failure of a user's __str__
        return f"<unprintable {type(exc).__name__}: __str__ raised {type(failure).__name__}>"


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def attach_trail(home: EventsHome) -> telemetry.Handler:
    """Attach the crash trail's handler in the current scope (the home's); return it.

    The events home attaches it as it starts, before it is registered, and
    detaches it (`detach_trail`) when it stops, however it stops.
    """
    handler = _recorder(home)
    telemetry.attach(TRAIL_HANDLER_ID, TRAIL_EVENTS, handler)
    return handler


def detach_trail(home: EventsHome, handler: telemetry.Handler) -> None:
    """Detach *handler* (`attach_trail`'s) from the home's scope, if still attached."""
    _detach_exactly(home.registry, TRAIL_HANDLER_ID, handler)


def _recorder(home: EventsHome) -> telemetry.Handler:

    def record(
        event: telemetry.EventName,
        measurements: Mapping[str, float],
        metadata: Mapping[str, object],
    ) -> None:
        if event == _EXIT:
            if metadata.get("reason") is None:
                return  # a normal exit is no crash
            kind = "trioscope.child.exit"
            data: dict[str, JSON] = {
                "supervisor": _text(metadata.get("supervisor")),
                "child": _text(metadata.get("child")),
                "service": _text(metadata.get("service")),
                "handler": _text(metadata.get("handler")),
                "exception": exception_chain(_error(metadata.get("reason"))),
                "uptime_s": float(measurements.get("uptime", 0.0)),
            }
        elif event in (_CALL_EXCEPTION, _CAST_EXCEPTION):
            if metadata.get("kind") != "crash":
                return  # killed while it ran: the supervisor's stop, no crash
            kind = "trioscope.crash"
            data = {
                "service": _text(metadata.get("service")),
                "name": _text(metadata.get("name")),
                "handler": _text(metadata.get("handler")),
                "exception": exception_chain(_error(metadata.get("reason"))),
                "duration_s": float(measurements.get("duration", 0.0)),
            }
        elif event == _RESTART:
            kind = "trioscope.child.restart"
            data = {
                "supervisor": _text(metadata.get("supervisor")),
                "child": _text(metadata.get("child")),
                "cause": _text(metadata.get("cause")),
                "restarts": int(measurements.get("restarts", 0)),
            }
        elif event == _BACKOFF:
            kind = "trioscope.child.backoff"
            delay = float(measurements.get("delay", 0.0))
            data = {
                "supervisor": _text(metadata.get("supervisor")),
                "child": _text(metadata.get("child")),
                "cause": _text(metadata.get("cause")),
                "delay_s": delay,
                "until_wall_ns": time.time_ns() + round(delay * 1e9),
            }
        else:
            kind = "trioscope.supervisor.give_up"
            data = {
                "supervisor": _text(metadata.get("supervisor")),
                "child": _text(metadata.get("child")),
                "max_restarts": int(measurements.get("max_restarts", 0)),
                "max_seconds": float(measurements.get("max_seconds", 0.0)),
                "exception": exception_chain(_error(metadata.get("reason"))),
            }
        cid = metadata.get("correlation_id")
        _store(home, Event(kind, data, correlation_id=cid if isinstance(cid, str) else None))

    return record


def _error(value: object) -> BaseException | None:
    return value if isinstance(value, BaseException) else None


def _store(home: EventsHome, event: Event) -> None:
    # The handler must never raise (it would be detached): both refusals are
    # counted by the home already; a rejection (only an exception chain too long
    # for max_data_bytes can be one) is also said.
    try:
        home.offer(event)
    except EventRejected as exc:
        _log.warning("crash trail event %s not stored: %s", event.type, exc)
    except EventBufferFullError:
        pass  # counted as overflow (overflow_total, and its telemetry event)
