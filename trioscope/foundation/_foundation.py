"""The foundation as one supervised unit: config first, then the event store.

::

    import trio, trioscope
    from trioscope.foundation import Event, config, events, open_foundation

    async def main() -> None:
        async with trioscope.open_registry(isolated=True), open_foundation():
            await config.update("events.max_events", 5_000)
            assert config.get("events.max_events") == 5_000
            await events.store(Event("order.placed", {"order": 1}))

    trio.run(main)

`foundation_spec` nests under any supervisor (a `trioscope.run` application's
root, say); `open_foundation` opens it directly, for scripts and tests. Both
use `trioscope.Strategy.REST_FOR_ONE`, as the DESIGN asks: the event store
reads its settings from the config server, so a config restart restarts the
store after it, and a store restart leaves the config alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

from .._child_spec import ChildSpec
from .._supervisor import Strategy, Supervisor, open_supervisor, supervisor_spec
from ._config import config_spec
from ._events import event_store_spec

FOUNDATION_MAX_RESTARTS: Final = 3
"""Restarts of config or event store tolerated within `FOUNDATION_MAX_SECONDS`."""
FOUNDATION_MAX_SECONDS: Final = 5.0
"""The window, in seconds, for `FOUNDATION_MAX_RESTARTS`."""


def _children(
    config: ChildSpec[object] | None, events: ChildSpec[object] | None
) -> list[ChildSpec[object]]:
    return [
        config if config is not None else config_spec(),
        events if events is not None else event_store_spec(),
    ]


def foundation_spec(
    *,
    config: ChildSpec[object] | None = None,
    events: ChildSpec[object] | None = None,
    id: str = "foundation",
    max_restarts: int = FOUNDATION_MAX_RESTARTS,
    max_seconds: float = FOUNDATION_MAX_SECONDS,
) -> ChildSpec[Supervisor]:
    """A `ChildSpec` supervising the config server and the event store, in that order.

    Args:
        config: The config server's spec (default: ``config_spec()``, the
            foundation's own schema, with ``TRIOSCOPE__*`` environment overrides).
        events: The event store's spec (default: ``event_store_spec()``, in memory).
        id: The child id in the parent supervisor.
        max_restarts: Restarts tolerated within *max_seconds* before the
            foundation gives up (and its parent sees it crash).
        max_seconds: The window for *max_restarts*.
    """
    return supervisor_spec(
        _children(config, events),
        id=id,
        strategy=Strategy.REST_FOR_ONE,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
    )


@contextlib.asynccontextmanager
async def open_foundation(
    *,
    config: ChildSpec[object] | None = None,
    events: ChildSpec[object] | None = None,
    max_restarts: int = FOUNDATION_MAX_RESTARTS,
    max_seconds: float = FOUNDATION_MAX_SECONDS,
) -> AsyncIterator[Supervisor]:
    """Run the foundation's services in the current registry scope for the block.

    The same supervisor as `foundation_spec`, opened directly; it stops both
    services (event store first) when the block ends.

    Raises:
        trioscope.StartError: a service failed to start (a bad configuration,
            an unreadable event database...), chained from the cause.
        trioscope.NoRegistryError: outside every registry scope.
    """
    async with open_supervisor(
        _children(config, events),
        strategy=Strategy.REST_FOR_ONE,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
    ) as sup:
        yield sup
