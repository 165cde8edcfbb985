"""The `Event` value and the `Backend` protocol an EventStore keeps its events with.

::

    from trioscope.foundation import Event

    event = Event("order.placed", {"order": 17, "total": 12.5}, correlation_id="req-1")
    assert event.id == 0          # not stored yet: the store assigns id and timestamps

Units, the same everywhere in the foundation: timestamps are ``int``
nanoseconds (``monotonic_ns`` from `time.monotonic_ns`, ``wall_ns`` from
`time.time_ns`); durations are ``float`` seconds; sizes are ``int`` bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, TypeAlias

import attrs

from .._correlation import current_correlation_id

JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None
"""A JSON-compatible value: what an event's ``data`` may hold (finite floats only)."""


def _check_type(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"Event.type must be a str, got {type(value).__name__}: {value!r}")
    if not value:
        raise ValueError("Event.type must be a non-empty str")


def _check_data(_: object, attribute: attrs.Attribute[Mapping[str, JSON]], value: object) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"Event.data must be a mapping with str keys, got {type(value).__name__}: {value!r}"
        )


def _check_optional_str(_: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(
            f"Event.{attribute.name} must be a str or None, got {type(value).__name__}: {value!r}"
        )


def _check_count(_: object, attribute: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"Event.{attribute.name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"Event.{attribute.name} must be >= 0, got {value}")


def _check_parent(_: object, attribute: attrs.Attribute[int | None], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"Event.parent_id must be an int or None, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"Event.parent_id must be a stored event's id (>= 1), got {value}")


@attrs.frozen
class Event:
    """Something that happened, as an EventStore keeps it.

    Build one with ``type`` and ``data`` (and optionally ``correlation_id`` and
    ``parent_id``); the store assigns ``id``, ``monotonic_ns`` and ``wall_ns``
    when it accepts the event, and every event it returns has them set. Unlike
    the ElixirScope original, the caller never chooses the id, so two events
    can never share one (there a duplicate id silently overwrote).
    """

    type: str = attrs.field(validator=_check_type)
    """What happened, e.g. ``"config.updated"``. A non-empty str."""
    data: Mapping[str, JSON] = attrs.field(factory=dict, validator=_check_data)
    """JSON-compatible details (str keys; None, bool, int, finite float, str,
    lists and dicts of these), checked and size-limited by the store."""
    correlation_id: str | None = attrs.field(
        factory=current_correlation_id, validator=_check_optional_str
    )
    """Ties together the events of one request or operation. By default, the
    current task's (`trioscope.correlate`): an event built while handling a
    request belongs to it, with nothing to pass along."""
    parent_id: int | None = attrs.field(default=None, validator=_check_parent)
    """The id of the stored event that caused this one (for causal chains)."""
    id: int = attrs.field(default=0, validator=_check_count)
    """Assigned by the store: >= 1, monotonic, unique, never reused. 0 until stored."""
    monotonic_ns: int = attrs.field(default=0, validator=_check_count)
    """`time.monotonic_ns` when the store accepted it (only comparable within one
    process run). 0 until stored."""
    wall_ns: int = attrs.field(default=0, validator=_check_count)
    """`time.time_ns` when the store accepted it, never below the previous
    event's (so time ranges and age pruning follow id order). 0 until stored."""


@attrs.frozen
class Recovered:
    """What a backend holds when an EventStore (re)opens it."""

    events: Sequence[Event]
    """The retained events, in ascending id order."""
    last_id: int
    """The highest id ever assigned (0 if none): the next id is ``last_id + 1``.
    Kept even when every event was pruned, so ids are never reused."""


class Backend(Protocol):
    """Where an EventStore keeps its events: in memory, or on disk.

    The store calls `open` on every (re)start, `append` for every accepted
    write, `prune_through` for retention and `aclose` when it stops (also after
    a crash, so it must be idempotent). Queries are answered from the store's
    own in-memory indexes, rebuilt from `open`; a backend is the durability
    layer, not a query engine.
    """

    @property
    def durable(self) -> bool:
        """False: `append` is instant and the store applies writes inline.
        True: `append` does I/O; the store groups concurrent writes into one
        `append` and acknowledges them only after it returns."""
        ...

    async def open(self) -> Recovered:
        """Open (creating if needed) and return the retained events and the last id."""
        ...

    async def append(self, events: Sequence[Event]) -> None:
        """Keep *events* (ids ascending, all above every id kept so far): all or none.

        When it returns, the events survive a crash of the process (for a
        durable backend) and of the store service (for any backend).
        """
        ...

    async def prune_through(self, last_id: int) -> None:
        """Forget every event whose id is <= *last_id* (``last_id`` itself is kept)."""
        ...

    async def aclose(self) -> None:
        """Release what `open` acquired. Idempotent."""
        ...

    def describe(self) -> str:
        """A short description for stats and reprs: ``"memory"``, ``"sqlite:/path"``."""
        ...
