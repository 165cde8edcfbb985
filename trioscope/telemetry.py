"""Scoped, `:telemetry`-style events: `execute`, `attach`, `detach`, `span`.

::

    import trio, trioscope
    from trioscope import telemetry

    async def main() -> None:
        seen = []
        async with trioscope.open_registry(isolated=True):
            with telemetry.attached(
                "log-checkout", [("shop", "checkout", "stop")],
                lambda event, measurements, metadata: seen.append(metadata["order"]),
            ):
                with telemetry.span(("shop", "checkout"), {"order": 7}):
                    await trio.sleep(0)
        assert seen == [7]

    trio.run(main)

Handler tables belong to registry scopes (`trioscope.open_registry`): a
handler attached in a scope sees events executed in it and in the scopes
nested in it, up to an ``isolated=True`` scope (a boundary, as for names);
sibling scopes never see each other's handlers, and a handler is detached when
the block of the scope it was attached in exits. Handlers are plain
functions, called synchronously by `execute` in the emitting task; one that
raises is detached and reported (logged on ``trioscope.telemetry`` and
executed as `HANDLER_FAILURE`), and the emitter never notices. With no handler
attached anywhere, `execute` is a global counter check.

Units, everywhere: durations are ``float`` seconds, measured on Trio's clock
(so `trio.testing.MockClock` makes them exact), under the measurement name
``duration``; points in time are ``monotonic_time`` (Trio's clock, seconds);
counts and depths are ``int``.

Events the core executes (all metadata carries ``correlation_id``, the
request the work belongs to, or ``None``):

``("trioscope", "call" | "cast", "start")``
    A service begins a handler. Measurements: ``monotonic_time``,
    ``mailbox_depth`` (messages still queued behind it). Metadata:
    ``service`` (its label), ``name`` (its registered name or ``None``),
    ``handler``.
``("trioscope", "call" | "cast", "stop")``
    The handler returned (a `trioscope.Rejected` included: the service goes
    on). Measurements: ``duration``, ``monotonic_time``, ``mailbox_depth``
    (queued when it returned: a gauge needs only this event). Metadata: as start
    (the same mapping), plus ``rejected`` (the `trioscope.Rejected` raised)
    when the handler raised one.
``("trioscope", "call" | "cast", "exception")``
    The handler crashed the service, an owned task's crash ended it, or the
    service was killed while it ran. Measurements: ``duration``,
    ``monotonic_time``, ``mailbox_depth``. Metadata: as start, plus ``kind`` (``"crash"``,
    ``"owned_crash"`` or ``"killed"``) and ``reason`` (the exception, or
    ``None`` when killed).
``("trioscope", "child", "start")``
    A supervisor's child is up. Measurements: ``duration`` (spawn to ready),
    ``restarts``. Metadata: ``supervisor``, ``child``, and on a restart the
    ``correlation_id`` behind it.
``("trioscope", "child", "exit")``
    A child ended by itself (not stopped by its supervisor). Measurements:
    ``uptime``. Metadata: ``supervisor``, ``child``, ``reason`` (the
    exception, or ``None`` for a normal exit), ``service`` and ``handler``
    where the crash began (a handler, or an owned task by its name; also
    when it reached this child through a call or a supervisor that gave
    up), ``correlation_id`` of the request it began in.
``("trioscope", "child", "restart")``
    A restart attempt begins. Measurements: ``restarts``. Metadata:
    ``supervisor``, ``child``, ``cause`` (the child whose exit caused it:
    itself, or a sibling under ``one_for_all``/``rest_for_one``),
    ``correlation_id`` of the request behind that exit.
``("trioscope", "child", "backoff")``
    A restart waits. Measurements: ``delay`` (seconds), ``restart_at``
    (Trio's clock). Metadata: as restart.
``("trioscope", "supervisor", "give_up")``
    Restart intensity exceeded: the supervisor stops and fails. Measurements:
    ``max_restarts``, ``max_seconds``. Metadata: ``supervisor``, ``child``,
    ``reason`` (the `trioscope.RestartIntensityExceededError`),
    ``correlation_id``.
``("trioscope", "supervisor", "auto_shutdown")``
    A significant child ended and the supervisor stops by its
    ``auto_shutdown``. Metadata: ``supervisor``, ``child``.
"""

from ._fixup import fixup_module_metadata
from ._telemetry import HANDLER_FAILURE as HANDLER_FAILURE
from ._telemetry import EventName as EventName
from ._telemetry import Handler as Handler
from ._telemetry import HandlerInfo as HandlerInfo
from ._telemetry import Measurements as Measurements
from ._telemetry import Metadata as Metadata
from ._telemetry import attach as attach
from ._telemetry import attached as attached
from ._telemetry import detach as detach
from ._telemetry import execute as execute
from ._telemetry import handlers as handlers
from ._telemetry import span as span

__all__ = [
    "HANDLER_FAILURE",
    "EventName",
    "Handler",
    "HandlerInfo",
    "Measurements",
    "Metadata",
    "attach",
    "attached",
    "detach",
    "execute",
    "handlers",
    "span",
]


fixup_module_metadata(__name__, __all__, globals(), private="trioscope._telemetry")
del fixup_module_metadata
