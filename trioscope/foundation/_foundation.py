"""The foundation as one supervised unit: config first, then the event store, then telemetry.

::

    import trio, trioscope
    from trioscope.foundation import Event, config, events, health, open_foundation

    async def main() -> None:
        async with trioscope.open_registry(isolated=True), open_foundation(
            values={"events": {"max_events": 10_000}}
        ):
            await config.update("events.max_events", 5_000)
            assert config.get("events.max_events") == 5_000
            await events.store(Event("order.placed", {"order": 1}))
            summary = await health()
            assert summary.status == "healthy"
            assert list(summary.services) == ["config", "events", "telemetry"]

    trio.run(main)

`foundation_spec` nests under any supervisor (a `trioscope.run` application's
root, say); `open_foundation` opens it directly, for scripts and tests. Both
use `trioscope.Strategy.REST_FOR_ONE`, as the DESIGN asks: the event store
and the telemetry service read their settings from the config server, so a
config restart restarts them after it; a store that its own supervisor gave
up on is restarted with the telemetry after it (its metrics start again from
zero, which Prometheus reads as a counter reset), and a telemetry restart
leaves the events alone. Each service's own crash is handled inside its own
small supervisor, where the state that outlives it (snapshot, events,
aggregates) is kept: that never reaches this one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from typing import Final

import attrs
import trio

from .._child_spec import ChildSpec
from .._registry import _current_registry_or_none, _no_registry_error
from .._service import Health, HealthStatus, ServiceRef
from .._supervisor import Strategy, Supervisor, open_supervisor, supervisor_spec
from ._config import config_spec
from ._events import event_store_spec
from ._telemetry import telemetry_spec

FOUNDATION_MAX_RESTARTS: Final = 3
"""Restarts of config or event store tolerated within `FOUNDATION_MAX_SECONDS`."""
FOUNDATION_MAX_SECONDS: Final = 5.0
"""The window, in seconds, for `FOUNDATION_MAX_RESTARTS`."""


FOUNDATION_SERVICES: Final = ("config", "events", "telemetry")
"""The names the foundation's services register under, in start order."""


def _children(
    config: ChildSpec[object] | None,
    events: ChildSpec[object] | None,
    telemetry: ChildSpec[object] | None,
    values: Mapping[str, object] | None,
    toml: str | os.PathLike[str] | None,
) -> list[ChildSpec[object]]:
    if config is not None and (values is not None or toml is not None):
        raise TypeError(
            "foundation_spec: give either config= (a config_spec) or values=/toml= "
            "(for the default config_spec), not both"
        )
    if config is None:
        config = config_spec(values=values, toml=toml)
    return [
        config,
        events if events is not None else event_store_spec(),
        telemetry if telemetry is not None else telemetry_spec(),
    ]


def foundation_spec(
    *,
    values: Mapping[str, object] | None = None,
    toml: str | os.PathLike[str] | None = None,
    config: ChildSpec[object] | None = None,
    events: ChildSpec[object] | None = None,
    telemetry: ChildSpec[object] | None = None,
    id: str = "foundation",
    max_restarts: int = FOUNDATION_MAX_RESTARTS,
    max_seconds: float = FOUNDATION_MAX_SECONDS,
) -> ChildSpec[Supervisor]:
    """A `ChildSpec` supervising the config server, the event store and the telemetry service.

    One configuration drives all three: the store follows ``events.*`` and
    the telemetry service ``telemetry.*`` from the config server of the same
    scope, so a mapping or one TOML file configures the whole foundation
    (and ``TRIOSCOPE__*`` environment variables override either).

    Args:
        values: Settings for the default config server (``{"events":
            {"max_events": 5000}}`` or dotted keys), as `config_spec`'s.
        toml: A TOML file for the default config server, as `config_spec`'s.
        config: The config server's spec instead (``config_spec(MySchema, ...)``);
            not with *values* or *toml*.
        events: The event store's spec (default: ``event_store_spec()``, in memory).
        telemetry: The telemetry service's spec (default: ``telemetry_spec()``,
            the default metrics).
        id: The child id in the parent supervisor.
        max_restarts: Restarts tolerated within *max_seconds* before the
            foundation gives up (and its parent sees it crash).
        max_seconds: The window for *max_restarts*.

    Raises:
        TypeError: *config* given with *values* or *toml*.
    """
    return supervisor_spec(
        _children(config, events, telemetry, values, toml),
        id=id,
        strategy=Strategy.REST_FOR_ONE,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
    )


@contextlib.asynccontextmanager
async def open_foundation(
    *,
    values: Mapping[str, object] | None = None,
    toml: str | os.PathLike[str] | None = None,
    config: ChildSpec[object] | None = None,
    events: ChildSpec[object] | None = None,
    telemetry: ChildSpec[object] | None = None,
    max_restarts: int = FOUNDATION_MAX_RESTARTS,
    max_seconds: float = FOUNDATION_MAX_SECONDS,
) -> AsyncIterator[Supervisor]:
    """Run the foundation's services in the current registry scope for the block.

    The same supervisor as `foundation_spec` (same arguments), opened
    directly; it stops the three services (telemetry first, config last)
    when the block ends.

    Raises:
        TypeError: *config* given with *values* or *toml*.
        trioscope.StartError: a service failed to start (a bad configuration,
            an unreadable event database...), chained from the cause.
        trioscope.NoRegistryError: outside every registry scope.
    """
    async with open_supervisor(
        _children(config, events, telemetry, values, toml),
        strategy=Strategy.REST_FOR_ONE,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
    ) as sup:
        yield sup


@attrs.frozen
class FoundationHealth:
    """How the foundation's three services are, as `health` reports it."""

    status: HealthStatus
    """The worst of the three: ``"healthy"``, ``"degraded"`` or ``"unavailable"``."""
    services: Mapping[str, Health]
    """Each service's `trioscope.Health`, by name, in start order."""


_RANK: Final[Mapping[str, int]] = {"healthy": 0, "degraded": 1, "unavailable": 2}


async def health() -> FoundationHealth:
    """Ask the config server, the event store and the telemetry service how they are.

    Each is the service of that name visible from the current scope (as a
    call by name finds it), asked through its mailbox (`trioscope.ServiceRef.health`,
    within its call timeout). One that is not running is ``"unavailable"``:
    never an exception for an unhealthy foundation.

    Raises:
        trioscope.NoRegistryError: outside every registry scope.
    """
    await trio.lowlevel.checkpoint()  # on every path, raising included
    registry = _current_registry_or_none()
    if registry is None:
        raise _no_registry_error("trioscope.foundation.health()")
    services: dict[str, Health] = {}
    for name in FOUNDATION_SERVICES:
        ref = registry.lookup(name)
        if isinstance(ref, ServiceRef):
            services[name] = await ref.health()
        else:
            services[name] = Health(
                status="unavailable",
                name=name,
                mailbox_depth=0,
                mailbox_capacity=0,
                restarts=0,
                detail={"error": f"no service {name!r} is running in this scope"},
            )
    status = max((h.status for h in services.values()), key=_RANK.__getitem__)
    return FoundationHealth(status=status, services=services)
