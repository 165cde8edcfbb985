"""The EventStore service (registered as ``"events"``) and its client functions.

::

    import trio, trioscope
    from trioscope.foundation import Event, event_store_spec, events

    async def main() -> None:
        async with trioscope.open_registry(isolated=True), trioscope.open_supervisor(
            [event_store_spec(max_events=10_000)]
        ):
            root = await events.store(Event("request", {"path": "/"}, correlation_id="r1"))
            await events.store(Event("db.query", {"ms": 3}, correlation_id="r1", parent_id=root))
            chain = await events.correlation_chain("r1")
            assert [e.type for e in chain] == ["request", "db.query"]
            newest = await events.query(order="desc", limit=1)
            assert newest[0].type == "db.query"

    trio.run(main)

What the store guarantees:

- **Ids** are assigned by the store: ``1, 2, 3...``, unique, ascending in the
  order events are accepted, never reused, also across restarts of the store
  (the backend's `Recovered.last_id`), also after everything was pruned. An
  event handed in with an id (or a timestamp) already set is rejected: ids
  are never the caller's to choose. (The one id that can come back is one
  nobody ever saw: given to a write whose durable ``append`` failed, never
  acknowledged, never visible.)
- **Timestamps** are ``int`` nanoseconds: ``monotonic_ns`` (`time.monotonic_ns`)
  and ``wall_ns`` (`time.time_ns`, clamped so it never decreases in id order:
  time ranges and age retention are id ranges and prefixes).
- **Validation**: a non-empty ``type``; ``data`` JSON-compatible (str keys;
  None, bool, int, finite float, str, and lists, tuples and dicts of these;
  the message names the bad key or index); every str (``type``,
  ``correlation_id``, keys and values of ``data``) encodable as UTF-8 (no
  lone surrogates such as ``"\\ud800"``) and at most ``max_data_bytes`` as
  compact UTF-8 JSON; a ``parent_id`` naming an earlier id. Stored data is a
  copy made at acceptance (tuples become lists, mappings dicts): later changes
  to the caller's objects change nothing stored. Events returned by queries
  share their data with the store: treat them as read-only.
- **store_batch is atomic**: one invalid event rejects the whole batch
  (`EventRejected` names its index and the reason) before anything happens:
  nothing is stored, published or counted as stored, and no id is consumed.
- **Queries** are answered from in-memory indexes (by id, by type, by
  correlation id; all kept in id order, so time bounds are bisections): the cost
  of a query grows with the events it returns (with a type *and* a
  correlation id: with the smaller of the two), never with the store's size.
  Time ranges are half-open, ``since_ns <= wall_ns < until_ns``.
  ``order="desc"`` with a ``limit`` gives the newest events (the ElixirScope
  original's ``get_recent`` gave the oldest).
- **correlation_chain** is causal: a parent always comes before its children
  (a ``parent_id`` must name an earlier id, so id order is a topological
  order of the causal graph, ties broken by id).
- **Retention** by count (``max_events``) and age (``max_age_s``) on every
  write and by a periodic task every ``prune_interval_s`` (age). Pruning
  drops an id prefix from every index (amortised O(1) per event); past
  ``max_events`` the store prunes down to ``max_events - max_events // 64``,
  so it prunes once per that many writes and never holds more than
  ``max_events``. Memory stays bounded under an endless stream: the indexes
  of a type or correlation id go with its last event.
- **Memory and durability**: queries are always answered from memory. A
  durable backend (SQLite) is the durability layer: the retained events are
  held in memory too (retention bounds both) and reloaded on every start.
- **Durable backends** (SQLite) get group commit: writes arriving while one
  ``append`` runs are queued and go to disk together in the next one; a write
  is acknowledged (the call returns), becomes visible to queries and reaches
  subscribers only once its ``append`` has returned. A call that times out
  or whose store crashed says nothing about whether its events were stored.
- **Live subscriptions** (`subscribe`) with a type/correlation filter follow
  the config subscriptions' delivery rules: in order, no gap, no duplicate, a
  too slow subscriber cut off with `SubscriptionOverflowError`. They live in
  the events *home* and ride through restarts of the store.
- **Buffered writes** (`store_nowait`) go into a bounded buffer in the home,
  flushed in order by a supervised task of the home whenever the store of
  the home's own scope runs; an event counts as stored only once the store
  acknowledged it. The store takes a batch out of the buffer as it accepts
  it, so no event is ever stored twice; a batch taken and never acknowledged
  (the store crashed or stopped meanwhile) is counted as unconfirmed and
  never sent again. An orderly stop of the store stores what is still
  buffered. Overflow raises `EventBufferFullError` and is counted
  (`buffer_statistics`).

Settings come from the scope's ConfigServer when one runs (``events.*``,
read at every start of the store; updates of ``events.max_events`` and
``events.max_age_s`` apply at once, retention included; with no backend
given, ``events.backend`` chooses memory or SQLite), otherwise from
`event_store_spec`'s arguments. Every client function resolves the store
through the current registry scope on every call: `get`, `query` and the
others need a running store (the calls ride through its restarts);
`store_nowait`, `buffer_statistics` and `subscribe` only its home. In a
scope that runs an event store of its own, the calls go to that store only:
while it restarts they wait for it, and never reach an enclosing scope's.
"""

from __future__ import annotations

import bisect
import builtins
import contextlib
import json
import logging
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any, Final, Literal, cast, final

import attrs
import trio

from .. import _names
from .._child_spec import ChildSpec
from .._errors import ServiceCrashedError, ServiceUnavailableError
from .._names import call
from .._registry import _current_registry_or_none, current_registry
from .._service import DEFAULT_CALL_TIMEOUT_S, Deferred, Service
from .._supervisor import Strategy, Supervisor, supervisor_spec
from .._telemetry import Handler
from ._errors import (
    EventBufferFullError,
    EventQueryRejected,
    EventRejected,
)
from ._event import JSON, Backend, Event
from ._home import Home, find_home, home_spec, own_home
from ._memory import MemoryBackend
from ._subscription import Hub, Subscription
from ._telemetry import EVENTS_OVERFLOW, EVENTS_PRUNE, EVENTS_REJECT, EVENTS_STORE, emit_count
from ._trail import attach_trail, detach_trail

__all__ = [
    "DEFAULT_CLIENT_BUFFER",
    "DEFAULT_MAX_AGE_S",
    "DEFAULT_MAX_DATA_BYTES",
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_PRUNE_INTERVAL_S",
    "DEFAULT_STREAM_BATCH",
    "DEFAULT_SUBSCRIBER_BUFFER",
    "EVENTS_HOME_NAME",
    "EVENTS_NAME",
    "EventBufferStatistics",
    "EventQueryRejected",
    "EventStore",
    "EventStoreSettings",
    "EventStoreStats",
    "EventsHome",
    "buffer_statistics",
    "correlation_chain",
    "event_store_spec",
    "get",
    "prune_before",
    "query",
    "stats",
    "store",
    "store_batch",
    "store_nowait",
    "stream",
    "subscribe",
    "truncate_data",
]

EVENTS_NAME: Final = "events"
"""The name the EventStore service is registered under."""
EVENTS_HOME_NAME: Final = "events.home"
"""The name the events home (backend, subscriptions, write buffer) is registered under."""
DEFAULT_MAX_EVENTS: Final = 100_000
"""Events retained; the oldest beyond it are pruned on write."""
DEFAULT_MAX_AGE_S: Final = 3600.0
"""Seconds an event is retained."""
DEFAULT_MAX_DATA_BYTES: Final = 1_000_000
"""Largest ``data`` of one event, in bytes of compact UTF-8 JSON."""
DEFAULT_PRUNE_INTERVAL_S: Final = 60.0
"""Seconds between runs of the periodic retention task."""
DEFAULT_SUBSCRIBER_BUFFER: Final = 1_000
"""Events a live subscription buffers before a too slow subscriber is cut off."""
DEFAULT_CLIENT_BUFFER: Final = 10_000
"""Events `store_nowait` buffers while the store is away."""
DEFAULT_STREAM_BATCH: Final = 1_000
"""Events per batch (one call each) of `stream`."""
FLUSH_BATCH: Final = 1_000
"""Most buffered events the home's flush task sends in one `store_batch`."""
MAX_DATA_DEPTH: Final = 100
"""Deepest nesting of lists and dicts accepted in ``data`` (also stops cycles)."""
RETENTION_SLACK: Final = 64
"""Beyond ``max_events``, the store prunes down to ``max_events - max_events // 64``:
one prune per that many writes (amortised), never more than ``max_events`` kept."""
CLOSE_ON_FAILED_INIT_S: Final = 1.0
"""Seconds a store whose start failed gives its backend's `Backend.aclose` (shielded)."""
TRUNCATE_MIN_BYTES: Final = 128
"""Smallest *max_bytes* `truncate_data` accepts: room for its smallest summary."""
TRUNCATE_PREVIEW_CHARS: Final = 64
"""Characters of a long string that `truncate_data` keeps as its preview."""

_log = logging.getLogger("trioscope.foundation.events")

Order = Literal["asc", "desc"]
SettingsSource = Literal["config", "spec"]

_ID: Final = attrgetter("id")
_TYPE: Final = attrgetter("type")
_CID: Final = attrgetter("correlation_id")
_WALL: Final = attrgetter("wall_ns")

# Building a stored event: Event is a frozen slotted attrs class whose
# validators the store has just checked itself; setting the slots directly
# costs a third of calling __init__ (which runs the validators again).
_new_event = Event.__new__
_SLOTS: Final = {name: Event.__dict__[name].__set__ for name in attrs.fields_dict(Event)}
_set_type: Final = _SLOTS["type"]
_set_data: Final = _SLOTS["data"]
_set_cid: Final = _SLOTS["correlation_id"]
_set_parent: Final = _SLOTS["parent_id"]
_set_id: Final = _SLOTS["id"]
_set_mono: Final = _SLOTS["monotonic_ns"]
_set_wall: Final = _SLOTS["wall_ns"]


# -- values ---------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_at_least(minimum: int) -> Callable[[object, attrs.Attribute[int], object], None]:
    def check(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
        if not _is_int(value):
            raise TypeError(
                f"{type(instance).__name__}.{attribute.name} must be an int >= {minimum}, "
                f"got {type(value).__name__}: {value!r}"
            )
        assert isinstance(value, int)
        if value < minimum:
            raise ValueError(
                f"{type(instance).__name__}.{attribute.name} must be an int >= {minimum}, "
                f"got {value}"
            )

    return check


def _positive_seconds(instance: object, attribute: attrs.Attribute[float], value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(
            f"{type(instance).__name__}.{attribute.name} must be a number of seconds > 0, "
            f"got {type(value).__name__}: {value!r}"
        )
    if not value > 0:  # also NaN
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be a number of seconds > 0, "
            f"got {value!r}"
        )


@attrs.frozen
class EventStoreSettings:
    """The settings an EventStore runs with (the ``events.*`` config paths)."""

    max_events: int = attrs.field(default=DEFAULT_MAX_EVENTS, validator=_int_at_least(1))
    """Events retained; the oldest beyond it are pruned on write."""
    max_age_s: float = attrs.field(default=DEFAULT_MAX_AGE_S, validator=_positive_seconds)
    """Seconds an event is retained (``math.inf``: no age limit)."""
    max_data_bytes: int = attrs.field(default=DEFAULT_MAX_DATA_BYTES, validator=_int_at_least(1))
    """Largest ``data`` of one event, in bytes of compact UTF-8 JSON."""
    prune_interval_s: float = attrs.field(
        default=DEFAULT_PRUNE_INTERVAL_S, validator=_positive_seconds
    )
    """Seconds between runs of the periodic retention task."""
    subscriber_buffer: int = attrs.field(
        default=DEFAULT_SUBSCRIBER_BUFFER, validator=_int_at_least(1)
    )
    """Default buffer of a live subscription."""
    client_buffer: int = attrs.field(default=DEFAULT_CLIENT_BUFFER, validator=_int_at_least(1))
    """Events `store_nowait` buffers while the store is away."""


@attrs.frozen
class EventBufferStatistics:
    """The client write buffer of one scope (`store_nowait`), at one instant."""

    buffered: int
    """Events waiting to be flushed (including a batch the store took and has
    not acknowledged yet)."""
    capacity: int
    """The buffer's bound (``events.client_buffer``)."""
    flushed_total: int
    """Buffered events the store acknowledged: stored."""
    overflow_total: int
    """Events refused with `EventBufferFullError` because the buffer was full."""
    rejected_total: int
    """Buffered events the store rejected when flushed (a setting changed meanwhile)."""
    unconfirmed_total: int
    """Buffered events sent whose outcome is unknown (the store crashed while
    storing them): not counted as stored, not sent again (no duplicates)."""


@attrs.frozen
class EventStoreStats:
    """An EventStore at one instant (`stats`)."""

    count: int
    """Events retained (visible to queries)."""
    first_id: int | None
    """The oldest retained event's id (``None`` when empty)."""
    last_id: int
    """The highest id ever acknowledged (0 if none); the next is above it, never reused."""
    oldest_wall_ns: int | None
    """The oldest retained event's ``wall_ns`` (``None`` when empty)."""
    newest_wall_ns: int | None
    """The newest retained event's ``wall_ns`` (``None`` when empty)."""
    types: int
    """Distinct event types retained."""
    correlations: int
    """Distinct correlation ids retained."""
    stored_total: int
    """Events acknowledged since the events home started (across store restarts)."""
    pruned_total: int
    """Events removed by retention or `prune_before` since the events home started."""
    rejected_total: int
    """Events rejected since the events home started (a rejected batch counts once per event)."""
    pending: int
    """Events accepted and waiting for their group commit (durable backends)."""
    backend: str
    """The backend's `Backend.describe`: ``"memory"``, ``"sqlite:/path"``."""
    durable: bool
    """Whether the backend is durable (group commit, acknowledged once on disk)."""
    subscribers: int
    """Live subscriptions."""
    restarts: int
    """Times the store started after its first start in this home (crashes and restarts)."""
    settings: EventStoreSettings
    """The settings in force."""
    settings_source: SettingsSource
    """Where the settings came from: the scope's ConfigServer, or the spec's arguments."""
    client: EventBufferStatistics
    """The `store_nowait` buffer."""


# -- validation ------------------------------------------------------------------------


class _Bad(Exception):
    """Why an event (or its data) is refused; becomes `EventRejected`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_BIG_INT: Final = 10**18
# Ints strictly between -_BIG_INT and _BIG_INT encode in at most 20 bytes
# (_check_data spells it as a literal).
_ALLOWED: Final = "None, bool, int, finite float, str, list, tuple, dict with str keys"


def _not_json(where: str, value: object) -> _Bad:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return _Bad(
        f"{where} is a {type(value).__name__} ({text}), which is not JSON-compatible ({_ALLOWED})"
    )


def _not_utf8(where: str, text: str) -> _Bad | None:
    """`_Bad` if *text* cannot be encoded as UTF-8 (a lone surrogate), else ``None``."""
    if text.isascii():
        return None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return _Bad(
            f"{where} cannot be encoded as UTF-8 "
            f"(a lone surrogate {text[exc.start]!r} at index {exc.start})"
        )
    return None


def _utf8(where: str, text: str) -> str:
    """*text*, or `_Bad` if it cannot be encoded as UTF-8 (`_not_utf8`)."""
    bad = _not_utf8(where, text)
    if bad is not None:
        raise bad
    return text


def _scalar_bound(where: str, value: object) -> tuple[JSON, int]:
    """A scalar (or str/int/float subclass) as a plain JSON value and an upper bound of
    its encoded size; `_Bad` for anything else that is not a container."""
    if value is None:
        return None, 4
    if isinstance(value, bool):
        return bool(value), 5
    if isinstance(value, int):
        plain = int(value)
        if -_BIG_INT < plain < _BIG_INT:
            return plain, 20
        try:
            return plain, len(str(plain))
        except ValueError:  # beyond Python's int-to-str digit limit
            raise _Bad(f"{where} is an int too large to encode as JSON") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad(f"{where} is {value!r}: JSON has no NaN or infinity (finite floats only)")
        return float(value), 24
    if isinstance(value, str):
        plain_s = _utf8(where, str.__str__(value))
        return plain_s, 6 * len(plain_s) + 2
    raise _not_json(where, value)


def _copy_value(where: str, value: object, depth: int) -> tuple[JSON, int]:
    """A plain JSON copy of *value* and an upper bound of its encoded size."""
    kind = type(value)
    if kind is str:
        text: str = value  # type: ignore[assignment]
        if not text.isascii():
            _utf8(where, text)
        return text, 6 * len(text) + 2
    if kind is int:
        number: int = value  # type: ignore[assignment]
        if -_BIG_INT < number < _BIG_INT:
            return number, 20
    if kind is dict or isinstance(value, Mapping):
        if depth >= MAX_DATA_DEPTH:
            raise _Bad(f"{where} is nested deeper than {MAX_DATA_DEPTH} levels")
        out: dict[str, JSON] = {}
        size = 2
        for key, item in cast(Mapping[object, object], value).items():
            if type(key) is not str:
                if not isinstance(key, str):
                    raise _Bad(f"{where} has a key {key!r} that is not a str (JSON keys are str)")
                key = str.__str__(key)
            if not key.isascii():
                _utf8(f"{where} key {key!r}", key)
            out[key], n = _copy_value(f"{where}[{key!r}]", item, depth + 1)
            size += n + 6 * len(key) + 4
        return out, size
    if kind is list or kind is tuple:
        if depth >= MAX_DATA_DEPTH:
            raise _Bad(f"{where} is nested deeper than {MAX_DATA_DEPTH} levels")
        items: list[JSON] = []
        size = 2
        for index, item in enumerate(cast(Sequence[object], value)):
            copied, n = _copy_value(f"{where}[{index}]", item, depth + 1)
            items.append(copied)
            size += n + 1
        return items, size
    return _scalar_bound(where, value)


def _encoded_size(data: JSON) -> int:
    """Bytes of *data* as compact UTF-8 JSON: the size ``max_data_bytes`` limits."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return len(text.encode("utf-8", "surrogatepass"))


def _check_data(data: object, max_bytes: float) -> dict[str, JSON]:
    """A plain copy of an event's data, or `_Bad` naming the bad key or the size."""
    out: dict[str, Any]
    if type(data) is dict:
        out = data.copy()
    elif isinstance(data, Mapping):
        out = dict(data)
    else:
        raise _not_json("data", data)
    # The fast path: str keys and short scalars, checked in place in the copy (a
    # value that needs copying or converting is replaced: no key is added). The
    # bound is what the encoded size cannot exceed: per entry 4 bytes of quotes,
    # colon and comma, at most 24 for a scalar, 6 per character (escapes).
    bound = 2 + 28 * len(out)
    chars = 0
    for key, value in out.items():
        if type(key) is not str:
            copied, bound = _copy_value("data", data, 0)
            whole = cast(dict[str, JSON], copied)  # a Mapping copies to a dict
            return whole if bound <= max_bytes else _limit(whole, max_bytes)
        if not key.isascii():
            _utf8(f"data key {key!r}", key)
        kind = type(value)
        if kind is str:
            if not value.isascii():
                _utf8(f"data[{key!r}]", value)
            chars += len(value)
        elif kind is int:
            # Literals, not _BIG_INT: a constant costs nothing to load.
            if not -1_000_000_000_000_000_000 < value < 1_000_000_000_000_000_000:
                out[key], n = _scalar_bound(f"data[{key!r}]", value)
                bound += n
        elif kind is float:
            if value - value != 0.0:  # inf or NaN
                _scalar_bound(f"data[{key!r}]", value)
        elif value is not None and kind is not bool:
            out[key], n = _copy_value(f"data[{key!r}]", value, 1)
            bound += n
        chars += len(key)
    if bound + 6 * chars > max_bytes:
        return _limit(out, max_bytes)
    return out


def _limit(data: dict[str, JSON], max_bytes: float) -> dict[str, JSON]:
    """*data* if its encoded size is within *max_bytes*, else `_Bad` naming both."""
    size = _encoded_size(data)
    if size > max_bytes:
        raise _Bad(
            f"data is {size} bytes as JSON, over the limit of {max_bytes} bytes "
            "(events.max_data_bytes); truncate_data() summarises large values"
        )
    return data


def _with_data(event: Event, data: dict[str, JSON]) -> Event:
    """*event* (checked) with *data* (its checked copy), without running validators again."""
    new = _new_event(Event)
    _set_type(new, event.type)
    _set_data(new, data)
    _set_cid(new, event.correlation_id)
    _set_parent(new, event.parent_id)
    _set_id(new, 0)
    _set_mono(new, 0)
    _set_wall(new, 0)
    return new


def _rejection(exc: _Bad, index: int | None, event: object) -> EventRejected:
    return EventRejected(exc.reason, index=index, event=event)


def _precheck(event: object, max_bytes: float) -> dict[str, JSON]:
    """Everything about one event that does not depend on the store's state; returns
    the copy of its data. Raises `_Bad`."""
    if type(event) is not Event and not isinstance(event, Event):
        raise _Bad(f"{type(event).__name__} {event!r:.60} is not an Event")
    ev = event
    if ev.id:
        raise _Bad(
            f"it has id {ev.id}: ids are assigned by the store, never by the caller "
            "(pass an Event with id=0)"
        )
    if ev.monotonic_ns or ev.wall_ns:
        raise _Bad(
            "it has timestamps set: monotonic_ns and wall_ns are assigned by the store "
            "(pass an Event with both 0)"
        )
    kind = ev.type
    if type(kind) is not str or not kind:
        raise _Bad(f"type must be a non-empty str, got {kind!r}")
    _utf8("type", kind)
    cid = ev.correlation_id
    if cid is not None:
        if type(cid) is not str:
            raise _Bad(f"correlation_id must be a str or None, got {type(cid).__name__}")
        _utf8("correlation_id", cid)
    parent = ev.parent_id
    if parent is not None and (not _is_int(parent) or parent < 1):
        raise _Bad(f"parent_id must be an id (an int >= 1) or None, got {parent!r}")
    return _check_data(ev.data, max_bytes)


def _check_parent(parent: object, new_id: int) -> None:
    """`_Bad` unless *parent* names an id below *new_id* (the id the event gets)."""
    if not _is_int(parent) or parent < 1:  # type: ignore[operator]
        raise _Bad(f"parent_id must be an id (an int >= 1) or None, got {parent!r}")
    if parent >= new_id:  # type: ignore[operator]
        raise _Bad(
            f"parent_id {parent} does not name an earlier event (this event gets id {new_id}): "
            "a parent is stored before its children"
        )


def _check_query(
    limit: object,
    order: object,
    since_ns: object = None,
    until_ns: object = None,
    *,
    type: object = None,
    correlation_id: object = None,
    after_id: object = None,
    before_id: object = None,
    batch: object = 1,
) -> None:
    """`EventQueryRejected` naming the first bad argument of a query (checked by the
    service, which must never crash on a caller's mistake, and by `stream` up front)."""
    if order != "asc" and order != "desc":
        raise EventQueryRejected(f"order must be 'asc' or 'desc', got {order!r}")
    if limit is not None and (not _is_int(limit) or limit < 0):  # type: ignore[operator]
        raise EventQueryRejected(f"limit must be None or an int >= 0, got {limit!r}")
    for name, value in (("since_ns", since_ns), ("until_ns", until_ns)):
        if value is not None and not _is_int(value):
            raise EventQueryRejected(
                f"{name} must be None or an int (nanoseconds, time.time_ns()), got {value!r}"
            )
    for name, value in (("after_id", after_id), ("before_id", before_id)):
        if value is not None and not _is_int(value):
            raise EventQueryRejected(f"{name} must be None or an int (an event id), got {value!r}")
    for name, value in (("type", type), ("correlation_id", correlation_id)):
        if value is not None and not isinstance(value, str):
            raise EventQueryRejected(f"{name} must be None or a str, got {value!r}")
    if not _is_int(batch) or batch < 1:  # type: ignore[operator]
        raise EventQueryRejected(f"batch must be an int >= 1, got {batch!r}")


# -- truncation helper -----------------------------------------------------------------


def _summary(value: JSON, size: int) -> dict[str, JSON]:
    if isinstance(value, str):
        return {
            "truncated": "str",
            "bytes": size,
            "chars": len(value),
            "preview": value[:TRUNCATE_PREVIEW_CHARS],
        }
    if isinstance(value, list):
        return {"truncated": "list", "bytes": size, "items": len(value)}
    if isinstance(value, dict):
        return {"truncated": "dict", "bytes": size, "keys": len(value)}
    return {"truncated": type(value).__name__, "bytes": size}


def truncate_data(data: Mapping[str, object], max_bytes: int) -> dict[str, JSON]:
    """*data*, made to fit in *max_bytes* of JSON by summarising its largest values.

    For callers who would rather store a summary than have an event rejected
    for its size: ``await events.store(Event("big", truncate_data(data, 10_000)))``.
    If *data* fits, a plain copy of it is returned. Otherwise its largest
    top-level values are replaced, largest first, by summaries until it fits:
    ``{"truncated": "str", "bytes": 81234, "chars": 80000, "preview": "first
    64 characters"}`` (``"list"`` with ``items``, ``"dict"`` with ``keys``). If
    even the summaries do not fit (too many keys), the whole is summarised:
    ``{"truncated": "dict", "bytes": ..., "keys": ...}``. Sizes are bytes of
    compact UTF-8 JSON, as the store measures them.

    Raises:
        ValueError: *max_bytes* is below `TRUNCATE_MIN_BYTES`, or *data* is
            not JSON-compatible (the message names the bad key or index).
        TypeError: *max_bytes* is not an int.
    """
    if not _is_int(max_bytes):
        raise TypeError(
            f"truncate_data: max_bytes must be an int, got {type(max_bytes).__name__}: "
            f"{max_bytes!r}"
        )
    if max_bytes < TRUNCATE_MIN_BYTES:
        raise ValueError(
            f"truncate_data: max_bytes must be >= {TRUNCATE_MIN_BYTES} (room for a summary), "
            f"got {max_bytes}"
        )
    try:
        copy = _check_data(data, math.inf)
    except _Bad as exc:
        raise ValueError(f"truncate_data: {exc.reason}") from None
    total = _encoded_size(copy)
    if total <= max_bytes:
        return copy
    sizes = {key: _encoded_size(value) for key, value in copy.items()}
    for key in sorted(sizes, key=lambda k: (-sizes[k], k)):
        copy[key] = _summary(copy[key], sizes[key])
        if _encoded_size(copy) <= max_bytes:
            return copy
    return {"truncated": "dict", "bytes": total, "keys": len(copy)}


# -- the indexes -----------------------------------------------------------------------


@final
class _Run:
    """Events of one key (or all), ascending id, with a pruned prefix ``[:head]``.

    Pruning only ever removes the oldest events, so each run loses a prefix:
    the head moves on, and the list is compacted once the dead prefix is half
    of it (amortised O(1) per pruned event).
    """

    __slots__ = ("events", "head")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.head = 0

    def __len__(self) -> int:
        return len(self.events) - self.head

    def drop(self, count: int) -> None:
        self.head += count
        if self.head >= 64 and self.head * 2 >= len(self.events):
            del self.events[: self.head]
            self.head = 0

    def first(self) -> Event | None:
        return self.events[self.head] if self.head < len(self.events) else None


class _Indexes:
    """By id (``all``), by type and by correlation id; every run in id order."""

    __slots__ = ("all", "by_cid", "by_type")

    def __init__(self) -> None:
        self.all = _Run()
        self.by_type: dict[str, _Run] = {}
        self.by_cid: dict[str, _Run] = {}

    def add(self, events: Sequence[Event]) -> None:
        self.all.events.extend(events)
        by_type, by_cid = self.by_type, self.by_cid
        for event in events:
            run = by_type.get(event.type)
            if run is None:
                run = by_type[event.type] = _Run()
            run.events.append(event)
            cid = event.correlation_id
            if cid is not None:
                run = by_cid.get(cid)
                if run is None:
                    run = by_cid[cid] = _Run()
                run.events.append(event)

    def drop_oldest(self, count: int) -> int:
        """Remove the *count* oldest events from every index; return the last id removed."""
        all_run = self.all
        start = all_run.head
        removed = all_run.events[start : start + count]
        # The oldest events are at the heads of their runs too.
        if len(removed) <= 16:
            for event in removed:
                for index, key in ((self.by_type, event.type), (self.by_cid, event.correlation_id)):
                    if key is None:
                        continue
                    run = index[key]
                    if run.head + 1 >= len(run.events):
                        del index[key]
                    else:
                        run.drop(1)
        else:  # per key, counting in C, rather than per event
            for index, counts in (
                (self.by_type, Counter(map(_TYPE, removed))),
                (self.by_cid, Counter(map(_CID, removed))),
            ):
                counts.pop(None, None)
                for key, n in counts.items():
                    run = index[key]
                    if run.head + n >= len(run.events):
                        del index[key]
                    else:
                        run.drop(n)
        all_run.drop(len(removed))
        return removed[-1].id if removed else 0


def _select(
    indexes: _Indexes,
    *,
    type: str | None,
    correlation_id: str | None,
    since_ns: int | None,
    until_ns: int | None,
    after_id: int | None,
    before_id: int | None,
    limit: int | None,
    order: Order,
) -> list[Event]:
    """The events matching every given filter, in *order*, at most *limit*."""
    run: _Run | None
    other: Callable[[Event], bool] | None = None
    if correlation_id is not None:
        run = indexes.by_cid.get(correlation_id)
        if type is not None:
            type_run = indexes.by_type.get(type)
            if run is None or type_run is None:
                return []
            if len(type_run) < len(run):  # walk the smaller run, check the other key
                run, wanted_cid = type_run, correlation_id
                other = lambda e: e.correlation_id == wanted_cid  # noqa: E731
            else:
                wanted_type = type
                other = lambda e: e.type == wanted_type  # noqa: E731
    elif type is not None:
        run = indexes.by_type.get(type)
    else:
        run = indexes.all
    if run is None or limit == 0:
        return []
    events = run.events
    lo, hi = run.head, len(events)
    if since_ns is not None:
        lo = bisect.bisect_left(events, since_ns, lo, hi, key=_WALL)
    if until_ns is not None:
        hi = bisect.bisect_left(events, until_ns, lo, hi, key=_WALL)
    if after_id is not None:
        lo = bisect.bisect_right(events, after_id, lo, hi, key=_ID)
    if before_id is not None:
        hi = bisect.bisect_left(events, before_id, lo, hi, key=_ID)
    if lo >= hi:
        return []
    if other is None:
        if limit is None:
            result = events[lo:hi]
            if order == "desc":
                result.reverse()
            return result
        if order == "asc":
            return events[lo : min(hi, lo + limit)]
        result = events[max(lo, hi - limit) : hi]
        result.reverse()
        return result
    picked: list[Event] = []
    indices = range(lo, hi) if order == "asc" else range(hi - 1, lo - 1, -1)
    for i in indices:
        event = events[i]
        if other(event):
            picked.append(event)
            if limit is not None and len(picked) >= limit:
                break
    return picked


# -- the home ----------------------------------------------------------------------------


class EventsHome(Home):
    """What outlives one incarnation of the EventStore: backend, subscriptions, write buffer.

    Registered as ``"events.home"``; created anew on every start of the home
    child (`event_store_spec`'s first child). Not used directly: the client
    functions find it.
    """

    name = EVENTS_HOME_NAME

    def __init__(
        self, backend: Backend, settings: EventStoreSettings, *, crash_trail: bool = True
    ) -> None:
        self.backend = backend
        """The backend every incarnation of the store opens."""
        self.settings = settings
        """The settings in force (the store updates them from config)."""
        self.hub: Hub[Event] = Hub(what="events")
        """Live subscriptions: they survive restarts of the store."""
        self.buffer: deque[Event] = deque()
        """`store_nowait`'s events, oldest first (a batch being sent stays here)."""
        self.starts = 0
        self.stored_total = 0
        self.pruned_total = 0
        self.rejected_total = 0
        self.flushed_total = 0
        self.overflow_total = 0
        self.buffer_rejected_total = 0
        self.unconfirmed_total = 0
        self.in_store = 0
        """Buffered events the store took and has not acknowledged yet."""
        self.backend_users = 0
        """Running incarnations of the store that hold the backend open (0 or 1)."""
        self._wake = trio.Event()
        self._trail: Handler | None = None  # the crash trail's, while the home runs
        self._keep_trail = crash_trail

    def __repr__(self) -> str:
        return (
            f"<EventsHome {self.backend.describe()} buffered={len(self.buffer)} "
            f"subscribers={len(self.hub)}>"
        )

    async def started(self) -> None:
        self.start_soon(self._flush)
        if self._keep_trail:
            self._trail = attach_trail(self)

    async def aclose(self) -> None:
        if self._trail is not None:
            detach_trail(self, self._trail)
        self.hub.close()
        if self.buffer:
            _log.warning(
                "the events home stopped with %d buffered events never stored", len(self.buffer)
            )
        # A store killed outright (shutdown=0) never ran terminate: its backend is still
        # open. The home owns the backend, so it closes it (aclose is idempotent). But
        # not under a store that still runs (the home crashed: REST_FOR_ONE stops the
        # store only afterwards): that store closes it in its terminate.
        if not self.backend_users:
            await self.backend.aclose()
        else:
            await trio.lowlevel.checkpoint()

    def buffer_statistics(self) -> EventBufferStatistics:
        """The write buffer's counters."""
        return EventBufferStatistics(
            buffered=len(self.buffer) + self.in_store,
            capacity=self.settings.client_buffer,
            flushed_total=self.flushed_total,
            overflow_total=self.overflow_total,
            rejected_total=self.buffer_rejected_total,
            unconfirmed_total=self.unconfirmed_total,
        )

    def rejected(self, count: int) -> None:
        """Count *count* rejected events (and tell the scope's telemetry)."""
        self.rejected_total += count
        emit_count(EVENTS_REJECT, count)

    def offer(self, event: Event) -> None:
        """Check *event* as the store would, then buffer it (`store_nowait`'s path).

        Raises:
            EventRejected: *event* breaks a rule (named; counted as rejected).
            EventBufferFullError: the buffer is full (counted as overflow).
        """
        try:
            data = _precheck(event, self.settings.max_data_bytes)
        except _Bad as exc:
            self.rejected(1)
            raise _rejection(exc, None, event) from None
        self.put(_with_data(event, data))

    def put(self, event: Event) -> None:
        """Buffer *event* (checked already) for the flush task.

        Raises:
            EventBufferFullError: the buffer is full (counted).
        """
        if len(self.buffer) >= self.settings.client_buffer:
            self.overflow_total += 1
            emit_count(EVENTS_OVERFLOW, 1, {"capacity": self.settings.client_buffer})
            raise EventBufferFullError(self.settings.client_buffer, self.overflow_total)
        self.buffer.append(event)
        self._wake.set()

    async def call(
        self, budget_s: float, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> Any:
        """Call handler *fn* of the store of the home's own scope, within *budget_s*.

        Like a call by name (`trioscope.call`), it rides through restarts: a
        message an incarnation never ran goes to the next one, a message that
        ran is never sent again. Unlike it, it never falls back on a namesake
        in an enclosing scope while the store is away.

        Raises:
            trioscope.ServiceUnavailableError: no incarnation took the message
                within *budget_s*, or the one that took it ended before replying.
            trioscope.CallTimeoutError: one took it but did not reply in time.
            trioscope.ServiceCrashedError, EventRejected, EventQueryRejected:
                as `trioscope.ServiceRef.call`.
        """
        return await _names._call(
            EVENTS_NAME, EventStore, budget_s, fn, args, kwargs, here=self.registry
        )

    async def _flush(self) -> None:
        """Hand the buffer to the store of this scope in order, a batch at a time, forever.

        The store takes a batch out of the buffer as it accepts it (a bad event
        is dropped there and counted as rejected), so an event is never given
        to two incarnations (nor to a final commit and a flush). A call the
        store never ran goes to its next incarnation. A batch the store took
        and never acknowledged (it crashed or stopped meanwhile) is counted as
        unconfirmed and dropped: it may or may not be stored, and it is never
        sent again. The calls have no timeout: a timeout could not tell a store
        slow to start from one that took the batch.
        """
        buffer = self.buffer
        while True:
            if not buffer:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            try:
                count = await self.call(math.inf, EventStore.take_buffered)
            except (ServiceUnavailableError, ServiceCrashedError) as exc:
                lost, self.in_store = self.in_store, 0
                if not lost:
                    # It crashed before taking anything: the next incarnation gets them.
                    _log.warning("the event store failed before taking buffered events: %s", exc)
                    continue
                _log.error(
                    "%d buffered events may or may not be stored (%s): counted as unconfirmed",
                    lost,
                    exc,
                )
                self.unconfirmed_total += lost
            else:
                self.in_store -= count
                self.flushed_total += count


# -- the service -------------------------------------------------------------------------


_Reply = tuple[Deferred[object], object]


@final
class EventStore(Service):
    """Keeps events, answers queries from indexes, publishes to live subscribers.

    Start it with `event_store_spec` (which starts its home first); talk to it
    through the client functions of `trioscope.foundation.events`.
    """

    def __init__(
        self,
        settings: EventStoreSettings = EventStoreSettings(),  # a frozen value: sharing it is safe
        wall_clock: Callable[[], int] | None = None,
    ) -> None:
        self._spec_settings = settings
        self._settings = settings
        self._source: SettingsSource = "spec"
        self._wall_clock = wall_clock if wall_clock is not None else time.time_ns
        self._indexes = _Indexes()
        self._last_id = 0  # the highest id assigned (pending ones included)
        self._acked_id = 0  # the highest id acknowledged
        self._last_wall = 0
        # Durable backends: writes waiting for the writer task's next append.
        self._pending: list[Event] = []
        self._replies: list[_Reply] = []
        # The batch of the append under way, until it returns: an append cancelled
        # before it ran (an orderly stop) leaves it here for terminate's final commit.
        self._inflight: list[Event] = []
        self._inflight_replies: list[_Reply] = []
        self._writer_wake = trio.Event()
        self._prune_target = 0  # prune the backend through this id...
        self._backend_pruned = 0  # ...it is pruned through this one
        self._prune_waiters: list[tuple[int, Deferred[object], int]] = []
        self._retention_scope: trio.CancelScope | None = None
        self._home: EventsHome
        self._backend: Backend
        self._durable = False

    # -- lifecycle -----------------------------------------------------------------

    async def init(self) -> None:
        home = own_home(
            EVENTS_HOME_NAME, EventsHome, "EventStore", "trioscope.foundation.event_store_spec()"
        )
        self._home = home
        from_config = _settings_from_config(self._spec_settings)
        if from_config is not None:
            self._settings, self._source = from_config, "config"
        home.settings = self._settings
        home.starts += 1
        self._backend = backend = home.backend
        self._durable = bool(backend.durable)
        recovered = await backend.open()
        try:
            await self._recover(list(recovered.events), recovered.last_id)
        except BaseException:
            with trio.CancelScope(
                shield=True, deadline=trio.current_time() + CLOSE_ON_FAILED_INIT_S
            ):
                await backend.aclose()
            raise

    async def _recover(self, events: list[Event], last_id: int) -> None:
        self._indexes.add(events)
        last = events[-1] if events else None
        self._last_id = self._acked_id = max(last_id, last.id if last else 0)
        self._last_wall = last.wall_ns if last else 0
        self._backend_pruned = self._prune_target = 0
        await self._retain(self._wall_clock())
        self._home.backend_users += 1  # until _hold_backend ends (also when killed)
        self.start_soon(self._hold_backend)
        if self._durable:
            self.start_soon(self._writer)
        self.start_soon(self._periodic_retention)
        if self._source == "config":
            self.start_soon(self._follow_config)

    async def _hold_backend(self) -> None:
        """Tell the home, while this incarnation runs, that it holds the backend open.

        Its tasks end when it stops, killed or not (before ``terminate``, which
        closes the backend; a killed store's is closed by the home).
        """
        try:
            await trio.sleep_forever()
        finally:
            self._home.backend_users -= 1

    async def terminate(self, reason: BaseException | None) -> None:
        backend = self._backend
        try:
            if reason is None:
                # An orderly stop: what was accepted still gets its commit, and what
                # was handed to the home's buffer (store_nowait) is stored too.
                home = self._home
                drained = self._accept_buffered(len(home.buffer))
                if self._durable:
                    self._pending.extend(drained)
                    if self._pending or self._inflight:
                        await self._commit()
                elif drained:
                    await backend.append(drained)
                    through = self._applied(drained)
                    if through:
                        await backend.prune_through(through)
                home.flushed_total += len(drained)
        finally:
            await backend.aclose()

    async def health(self) -> Mapping[str, object]:
        return {
            "count": len(self._indexes.all),
            "last_id": self._acked_id,
            "backend": self._backend.describe(),
            "pending": len(self._pending),
        }

    # -- writes --------------------------------------------------------------------

    def _accept(
        self, events: Sequence[Event], batch: bool, *, buffered: bool = False
    ) -> list[Event]:
        """Check every event and build the stored ones (ids, timestamps): all or none.

        Nothing changes unless every event passes: a rejection consumes no id.
        A rejection is counted here, except for *buffered* events (the caller
        drops the one bad event and counts it).
        """
        max_bytes = self._settings.max_data_bytes
        first_id = new_id = self._last_id + 1
        wall = self._wall_clock()
        if wall < self._last_wall:
            wall = self._last_wall
        mono = time.monotonic_ns()
        stored: list[Event] = []
        append = stored.append
        event: object = None
        try:
            for event in events:
                # One test for the usual event; the slow path says what is wrong.
                if (
                    type(event) is not Event
                    or event.id
                    or event.monotonic_ns
                    or event.wall_ns
                    or type(event.type) is not str
                    or not event.type
                    or not event.type.isascii()
                    or (
                        event.correlation_id is not None
                        and (
                            type(event.correlation_id) is not str
                            or not event.correlation_id.isascii()
                        )
                    )
                ):
                    data = _precheck(event, max_bytes)
                else:
                    data = _check_data(event.data, max_bytes)
                parent = event.parent_id
                if parent is not None and not (type(parent) is int and 0 < parent < new_id):
                    _check_parent(parent, new_id)
                new = _new_event(Event)
                _set_type(new, event.type)
                _set_data(new, data)
                _set_cid(new, event.correlation_id)
                _set_parent(new, parent)
                _set_id(new, new_id)
                _set_mono(new, mono)
                _set_wall(new, wall)
                append(new)
                new_id += 1
        except _Bad as exc:
            if not buffered:
                self._home.rejected(len(events) if batch else 1)
            raise _rejection(exc, new_id - first_id if batch else None, event) from None
        self._last_id = new_id - 1
        self._last_wall = wall
        return stored

    def _applied(self, stored: list[Event]) -> int:
        """*stored* is in the backend: index it, count it, publish it, retain.

        Returns the id through which a non-durable backend must be pruned (0: none).
        """
        self._indexes.add(stored)
        last = stored[-1]
        self._acked_id = last.id
        home = self._home
        home.stored_total += len(stored)
        emit_count(EVENTS_STORE, len(stored))
        hub = home.hub
        if len(hub):
            for event in stored:
                hub.publish(event)
        return self._retain_now(last.wall_ns)

    async def store(self, event: Event) -> int:
        """Store *event*; return its id (the reply comes once it is stored).

        Raises:
            EventRejected: *event* breaks a rule (named); nothing was stored.
        """
        stored = self._accept((event,), False)
        if self._durable:
            # A Deferred: the caller's call still returns the id (int).
            return cast(int, self._enqueue(stored, stored[0].id))
        await self._backend.append(stored)
        through = self._applied(stored)
        if through:
            await self._backend.prune_through(through)
        return stored[0].id

    async def store_batch(self, events: Sequence[Event]) -> list[int]:
        """Store *events* atomically; return their ids in order.

        Raises:
            EventRejected: one event breaks a rule: its index and the rule are
                named, and nothing of the batch was stored (no id consumed).
        """
        given: object = events  # a caller's mistake must not crash the store
        if not isinstance(given, (list, tuple)) and (
            not isinstance(given, Sequence) or isinstance(given, (str, bytes))
        ):
            self._home.rejected(1)
            raise EventRejected(
                f"store_batch takes a sequence of events, got {builtins.type(given).__name__}",
                event=given,
            )
        if not events:
            return []
        stored = self._accept(events, True)
        ids = list(range(stored[0].id, stored[-1].id + 1))
        if self._durable:
            return cast(list[int], self._enqueue(stored, ids))
        await self._backend.append(stored)
        through = self._applied(stored)
        if through:
            await self._backend.prune_through(through)
        return ids

    async def take_buffered(self) -> int:
        """For the events home's flush task: store the oldest buffered events (at most
        `FLUSH_BATCH`), taken out of the buffer as they are accepted; return how many.

        A buffered event the store rejects (a setting changed since it was
        buffered) is dropped and counted; the others are stored.
        """
        stored = self._accept_buffered(FLUSH_BATCH)
        if not stored:
            return 0
        count = len(stored)
        self._home.in_store += count  # the flush task settles it with the reply
        if self._durable:
            return cast(int, self._enqueue(stored, count))
        await self._backend.append(stored)
        through = self._applied(stored)
        if through:
            await self._backend.prune_through(through)
        return count

    def _accept_buffered(self, limit: int) -> list[Event]:
        """Accept the oldest buffered events (at most *limit*) and take them out of the
        buffer; a rejected one is dropped and counted, and the rest are tried again."""
        home = self._home
        buffer = home.buffer
        while buffer:
            batch = [buffer[i] for i in range(min(len(buffer), limit))]
            try:
                stored = self._accept(batch, True, buffered=True)
            except EventRejected as exc:
                bad = exc.index if exc.index is not None else 0
                _log.warning("a buffered event was rejected when flushed: %s", exc.reason)
                del buffer[bad]
                home.buffer_rejected_total += 1
                home.rejected(1)
                continue
            for _ in batch:
                buffer.popleft()
            return stored
        return []

    def _enqueue(self, stored: list[Event], reply: object) -> Deferred[object]:
        deferred: Deferred[object] = self.defer()
        self._pending.extend(stored)
        self._replies.append((deferred, reply))
        self._writer_wake.set()
        return deferred

    async def _writer(self) -> None:
        """Durable backends: one append for everything pending, then acknowledge it all."""
        while True:
            if not self._pending and self._prune_target <= self._backend_pruned:
                self._writer_wake = trio.Event()
                await self._writer_wake.wait()
                continue
            if self._pending:
                await self._commit()
            if self._prune_target > self._backend_pruned:
                await self._prune_backend()

    async def _commit(self) -> None:
        if self._inflight:  # an append cancelled before it ran: it goes first
            self._inflight.extend(self._pending)
            self._inflight_replies.extend(self._replies)
        else:
            self._inflight, self._inflight_replies = self._pending, self._replies
        self._pending, self._replies = [], []
        batch = self._inflight
        # Cancelled only before it ran (SQLiteBackend: abandon_on_cancel=False): the
        # batch then stays in flight for the next commit (terminate's, on a stop).
        await self._backend.append(batch)
        replies = self._inflight_replies
        self._inflight, self._inflight_replies = [], []
        self._applied(batch)  # durable: the writer prunes the backend
        for deferred, value in replies:
            deferred.reply(value)

    async def _prune_backend(self) -> None:
        target = self._prune_target
        await self._backend.prune_through(target)
        self._backend_pruned = target
        if self._prune_waiters:
            still = []
            for through, deferred, count in self._prune_waiters:
                if through <= target:
                    deferred.reply(count)
                else:
                    still.append((through, deferred, count))
            self._prune_waiters = still

    def _forget(self, count: int) -> int:
        """Drop the *count* oldest events from the indexes; return the id through which
        a non-durable backend must be pruned (a durable one's writer is told)."""
        through = self._indexes.drop_oldest(count)
        self._home.pruned_total += count
        emit_count(EVENTS_PRUNE, count)
        if self._durable:
            self._prune_target = max(self._prune_target, through)
            self._writer_wake.set()
            return 0
        return through

    def _retain_now(self, now_wall_ns: int) -> int:
        """Apply retention by count and by age to the indexes; return as `_forget`.

        Beyond ``max_events``, the oldest are pruned down to ``max_events``
        minus a slack of 1/64 of it (`RETENTION_SLACK`): the count never exceeds
        the bound, and pruning runs once per slack writes, in one go.
        """
        settings = self._settings
        run = self._indexes.all
        events, head = run.events, run.head
        excess = len(events) - head - settings.max_events
        if excess > 0:
            excess += settings.max_events // RETENTION_SLACK
        age_ns = settings.max_age_s * 1e9  # a float: math.inf, or huge, never overflows
        if head < len(events) and age_ns < now_wall_ns:  # else no event is too old
            cutoff = now_wall_ns - int(age_ns)
            if events[head].wall_ns < cutoff:
                old = bisect.bisect_left(events, cutoff, head, key=_WALL) - head
                excess = max(excess, old)
        return self._forget(excess) if excess > 0 else 0

    async def _retain(self, now_wall_ns: int) -> None:
        """Apply retention (`_retain_now`), the backend included."""
        through = self._retain_now(now_wall_ns)
        if through:
            await self._backend.prune_through(through)

    async def _periodic_retention(self) -> None:
        last = trio.current_time()
        while True:
            # A settings update moves this deadline (see _reload_settings).
            with trio.CancelScope(deadline=last + self._settings.prune_interval_s) as scope:
                self._retention_scope = scope
                await trio.sleep_forever()
            self._retention_scope = None
            last = trio.current_time()
            await self._retain(self._wall_clock())

    async def prune_before(self, wall_ns: int) -> int:
        """Forget every event older than *wall_ns*; return how many were forgotten.

        With a durable backend the reply comes once the backend forgot them too.

        Raises:
            EventQueryRejected: *wall_ns* is not an int.
        """
        if not _is_int(wall_ns):
            raise EventQueryRejected(f"wall_ns must be an int (nanoseconds), got {wall_ns!r}")
        run = self._indexes.all
        count = bisect.bisect_left(run.events, wall_ns, run.head, key=_WALL) - run.head
        if count <= 0:
            return 0
        through = self._forget(count)
        if not self._durable:
            await self._backend.prune_through(through)
            return count
        target = self._prune_target  # the writer prunes the backend through it
        if target > self._backend_pruned:
            deferred: Deferred[object] = self.defer()
            self._prune_waiters.append((target, deferred, count))
            return cast(int, deferred)
        return count

    # -- reads ---------------------------------------------------------------------

    async def get(self, id: int) -> Event | None:
        """The retained event with id *id*, or ``None`` (never stored, or pruned).

        Raises:
            EventQueryRejected: *id* is not an int.
        """
        if not _is_int(id):
            raise EventQueryRejected(f"id must be an int, got {id!r}")
        run = self._indexes.all
        events = run.events
        i = bisect.bisect_left(events, id, run.head, key=_ID)
        if i < len(events) and events[i].id == id:
            return events[i]
        return None

    async def query(
        self,
        *,
        type: str | None = None,
        correlation_id: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        after_id: int | None = None,
        before_id: int | None = None,
        limit: int | None = None,
        order: Order = "asc",
    ) -> list[Event]:
        """The retained events matching every filter given (see `query`).

        Raises:
            EventQueryRejected: a bad argument (the message names it).
        """
        _check_query(
            limit,
            order,
            since_ns,
            until_ns,
            type=type,
            correlation_id=correlation_id,
            after_id=after_id,
            before_id=before_id,
        )
        return _select(
            self._indexes,
            type=type,
            correlation_id=correlation_id,
            since_ns=since_ns,
            until_ns=until_ns,
            after_id=after_id,
            before_id=before_id,
            limit=limit,
            order=order,
        )

    async def correlation_chain(self, correlation_id: str) -> list[Event]:
        """The retained events of *correlation_id* in causal order (parents first).

        Raises:
            EventQueryRejected: *correlation_id* is not a str.
        """
        if not isinstance(correlation_id, str):
            raise EventQueryRejected(f"correlation_id must be a str, got {correlation_id!r}")
        run = self._indexes.by_cid.get(correlation_id)
        # parent_id always names an earlier id: id order is causal order.
        return run.events[run.head :] if run is not None else []

    async def last_id(self) -> int:
        """The highest id acknowledged so far (0 if none)."""
        return self._acked_id

    async def stats(self) -> EventStoreStats:
        """Counts, bounds, settings and the client buffer (see `EventStoreStats`)."""
        home = self._home
        run = self._indexes.all
        first = run.first()
        newest = run.events[-1] if len(run) else None
        return EventStoreStats(
            count=len(run),
            first_id=first.id if first is not None else None,
            last_id=self._acked_id,
            oldest_wall_ns=first.wall_ns if first is not None else None,
            newest_wall_ns=newest.wall_ns if newest is not None else None,
            types=len(self._indexes.by_type),
            correlations=len(self._indexes.by_cid),
            stored_total=home.stored_total,
            pruned_total=home.pruned_total,
            rejected_total=home.rejected_total,
            pending=len(self._pending),
            backend=self._backend.describe(),
            durable=self._durable,
            subscribers=len(home.hub),
            restarts=home.starts - 1,
            settings=self._settings,
            settings_source=self._source,
            client=home.buffer_statistics(),
        )

    # -- settings from config --------------------------------------------------------

    async def _follow_config(self) -> None:
        """Apply updates of ``events.*`` as they come (retention at once)."""
        from . import _config

        await _config.follow(
            "events", self._reload_settings, lambda: self._retain(self._wall_clock())
        )

    def _reload_settings(self) -> None:
        try:
            new = _settings_from_config(self._spec_settings)
        except ValueError as exc:
            # An update the store cannot use: keep what runs (a crash would only
            # fail the next start the same way).
            _log.error("%s; the event store keeps its current settings", exc)
            return
        if new is None or new == self._settings:
            return
        old, self._settings = self._settings, new
        self._home.settings = new
        scope = self._retention_scope
        if scope is not None and new.prune_interval_s != old.prune_interval_s:
            scope.deadline = scope.deadline - old.prune_interval_s + new.prune_interval_s


_CONFIG_FIELDS: Final = tuple(attrs.fields_dict(EventStoreSettings))


def _settings_from_config(fallback: EventStoreSettings) -> EventStoreSettings | None:
    """The ``events.*`` settings of the scope's ConfigServer, or ``None`` if none runs
    (or its schema has none of them).

    A path the config's schema lacks (an application schema with a smaller
    ``events`` section) keeps *fallback*'s value.

    Raises:
        ValueError: the config holds a value the store cannot use (an
            application schema with looser rules than `EventStoreSettings`).
    """
    from . import _config  # not at import time: _config stores its changes as events
    from ._errors import UnknownConfigPathError

    values: dict[str, object] = {}
    found = False
    for field in _CONFIG_FIELDS:
        try:
            values[field] = _config.get(f"events.{field}")
            found = True
        except UnknownConfigPathError:
            values[field] = getattr(fallback, field)
        except ServiceUnavailableError:
            return None  # no config home in this scope
    if not found:
        return None  # a schema without events settings: the spec's apply
    try:
        return EventStoreSettings(**values)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the config's events.* settings cannot be used: {exc}") from exc


# -- the spec ----------------------------------------------------------------------------


def _backend_factory(backend: Backend | Callable[[], Backend] | None) -> Callable[[], Backend]:
    """A factory for *backend*: a class or function is one; an instance is reused."""
    if backend is None:
        return _default_backend
    if isinstance(backend, type) or not hasattr(backend, "append"):
        return cast(Callable[[], Backend], backend)
    instance = cast(Backend, backend)
    return lambda: instance


def _default_backend() -> Backend:
    """The backend the scope's config names (``events.backend``), else memory."""
    from . import _config
    from ._errors import UnknownConfigPathError

    try:
        kind = _config.get("events.backend")
        if kind == "sqlite":
            from ._sqlite import SQLiteBackend

            return SQLiteBackend(cast(str, _config.get("events.sqlite_path")))
    except (UnknownConfigPathError, ServiceUnavailableError):
        pass  # no config in this scope, or a schema without these settings
    return MemoryBackend()


def event_store_spec(
    *,
    backend: Backend | Callable[[], Backend] | None = None,
    max_events: int = DEFAULT_MAX_EVENTS,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES,
    prune_interval_s: float = DEFAULT_PRUNE_INTERVAL_S,
    subscriber_buffer: int = DEFAULT_SUBSCRIBER_BUFFER,
    client_buffer: int = DEFAULT_CLIENT_BUFFER,
    wall_clock: Callable[[], int] | None = None,
    crash_trail: bool = True,
    id: str = EVENTS_NAME,
) -> ChildSpec[Supervisor]:
    """A `ChildSpec` for the event store: its home, then the ``"events"`` service.

    The two run under a `Strategy.REST_FOR_ONE` supervisor: a crash of the
    store restarts the store only (the home keeps the in-memory events, the
    subscriptions and the write buffer); a crash of the home restarts both.

    Args:
        backend: A backend, or a factory called at every start of the home.
            Default: the scope's config ``events.backend`` (``"sqlite"`` opens
            ``events.sqlite_path``) when a ConfigServer runs, else a fresh
            `MemoryBackend` per start of the home.
        max_events: Events retained (when no ConfigServer runs; else
            ``events.max_events``; likewise for the settings below).
        max_age_s: Seconds an event is retained (``math.inf``: no limit).
        max_data_bytes: Largest ``data`` of one event, in bytes of JSON.
        prune_interval_s: Seconds between runs of the periodic retention task.
        subscriber_buffer: Default buffer of a live subscription.
        client_buffer: Events `store_nowait` buffers while the store is away.
        wall_clock: Returns the wall time in ns (default `time.time_ns`); for tests.
        crash_trail: Store the crash trail of the store's scope (see
            `trioscope.foundation._trail`): every crash, restart, backoff and
            give-up there, with the request behind it. ``False`` for a store
            whose ids and contents must be only what its clients write.
        id: The child id in the parent supervisor.

    Raises:
        TypeError, ValueError: a setting breaks its rule (the message names it).
    """
    settings = EventStoreSettings(
        max_events=max_events,
        max_age_s=max_age_s,
        max_data_bytes=max_data_bytes,
        prune_interval_s=prune_interval_s,
        subscriber_buffer=subscriber_buffer,
        client_buffer=client_buffer,
    )
    make_backend = _backend_factory(backend)

    def make_home() -> EventsHome:
        return EventsHome(make_backend(), settings, crash_trail=crash_trail)

    return supervisor_spec(
        [
            home_spec(make_home, id=EVENTS_HOME_NAME),
            EventStore.child_spec(settings=settings, wall_clock=wall_clock, name=EVENTS_NAME),
        ],
        strategy=Strategy.REST_FOR_ONE,
        id=id,
    )


# -- client functions ------------------------------------------------------------------


async def store(event: Event) -> int:
    """Store *event* in the current scope's EventStore; return its id.

    Returns once the event is stored (on disk, for a durable backend).

    Raises:
        EventRejected: *event* breaks a rule (named); nothing was stored.
        trioscope.ServiceUnavailableError: no EventStore took it in time.
        trioscope.CallTimeoutError: it took the event but did not answer in
            time (the event may or may not be stored).
        trioscope.NoRegistryError: outside every registry scope.
    """
    return cast("int", await _call_store(EventStore.store, event))


async def store_batch(events: Sequence[Event]) -> list[int]:
    """Store *events* atomically; return their ids, in order.

    Raises:
        EventRejected: one event breaks a rule: its index and the rule are
            named, and nothing of the batch was stored.
        trioscope.ServiceUnavailableError, trioscope.CallTimeoutError,
        trioscope.NoRegistryError: as `store`.
    """
    return cast("list[int]", await _call_store(EventStore.store_batch, events))


async def _call_store(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """Call handler *fn* of the current scope's EventStore (the default call timeout).

    With an events home in this very scope, only its own store is called (a
    call by name would reach an enclosing scope's store while it restarts);
    otherwise the nearest enclosing scope's store, by name.
    """
    registry = _current_registry_or_none()
    home = registry.lookup_here(EVENTS_HOME_NAME) if registry is not None else None
    if isinstance(home, EventsHome):
        return await home.call(DEFAULT_CALL_TIMEOUT_S, fn, *args, **kwargs)
    return await call(EVENTS_NAME, fn, *args, **kwargs)


def _home() -> EventsHome:
    home = find_home(EVENTS_HOME_NAME, EventsHome)
    if home is None:
        raise ServiceUnavailableError(
            repr(EVENTS_HOME_NAME),
            "no event store runs in this scope (start event_store_spec() or the foundation)",
        )
    return home


def store_nowait(event: Event) -> None:
    """Buffer *event* for the store without waiting (the twin of `store`).

    The event is checked now (`EventRejected` at once), then kept in a
    bounded buffer in the events home, which a supervised task flushes in
    order, in batches, whenever the store runs, also while it restarts. It
    counts as stored once the store acknowledged it (`buffer_statistics`).

    Raises:
        EventRejected: *event* breaks a rule (named); nothing was buffered.
        EventBufferFullError: the buffer is full (counted as overflow).
        trioscope.ServiceUnavailableError: no event store runs in this scope.
        trioscope.NoRegistryError: outside every registry scope.
    """
    home = _home()
    home.offer(event)


def buffer_statistics() -> EventBufferStatistics:
    """The current scope's `store_nowait` buffer counters (no await; works while the
    store restarts).

    Raises:
        trioscope.ServiceUnavailableError: no event store runs in this scope.
        trioscope.NoRegistryError: outside every registry scope.
    """
    return _home().buffer_statistics()


async def get(id: int) -> Event | None:
    """The event with id *id*, or ``None`` if it was never stored or was pruned.

    Raises:
        trioscope.ServiceUnavailableError, trioscope.CallTimeoutError,
        trioscope.NoRegistryError: as `store`.
    """
    return cast("Event | None", await _call_store(EventStore.get, id))


async def query(
    *,
    type: str | None = None,
    correlation_id: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    after_id: int | None = None,
    before_id: int | None = None,
    limit: int | None = None,
    order: Order = "asc",
) -> list[Event]:
    """The retained events matching every filter given, in id order.

    Args:
        type: Only events of this type.
        correlation_id: Only events with this correlation id.
        since_ns: Only events with ``wall_ns >= since_ns``.
        until_ns: Only events with ``wall_ns < until_ns`` (half-open).
        after_id: Only events with a larger id (a cursor).
        before_id: Only events with a smaller id (a cursor).
        limit: At most this many: the oldest with ``order="asc"``, the
            newest with ``order="desc"``.
        order: ``"asc"`` (oldest first) or ``"desc"`` (newest first).

    The cost grows with the result (with both *type* and *correlation_id*,
    with the smaller of the two), not with the store.

    Raises:
        EventQueryRejected: a bad argument (the message names it).
        trioscope.ServiceUnavailableError, trioscope.CallTimeoutError,
        trioscope.NoRegistryError: as `store`.
    """
    # The store checks the arguments (it must never crash on a caller's mistake);
    # checking here too would only repeat that work on every valid query.
    return cast(
        "list[Event]",
        await _call_store(
            EventStore.query,
            type=type,
            correlation_id=correlation_id,
            since_ns=since_ns,
            until_ns=until_ns,
            after_id=after_id,
            before_id=before_id,
            limit=limit,
            order=order,
        ),
    )


async def correlation_chain(correlation_id: str) -> list[Event]:
    """The retained events of *correlation_id*, a parent always before its children.

    Raises:
        trioscope.ServiceUnavailableError, trioscope.CallTimeoutError,
        trioscope.NoRegistryError: as `store`.
    """
    return cast("list[Event]", await _call_store(EventStore.correlation_chain, correlation_id))


async def stream(
    *,
    type: str | None = None,
    correlation_id: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    order: Order = "asc",
    batch: int = DEFAULT_STREAM_BATCH,
) -> AsyncIterator[list[Event]]:
    """The events `query` would return, in batches of at most *batch*, one call each.

    ::

        async for events in events.stream(type="order.placed"):
            ...

    The store answers one batch per call, so writers wait at most one batch
    between two. The stream covers the events acknowledged when it starts
    (later ones are left out, so it ends under an endless stream); events
    pruned meanwhile are skipped. Every batch but the last is full.

    Raises:
        EventQueryRejected: a bad argument (the message names it).
        trioscope.ServiceUnavailableError, trioscope.CallTimeoutError,
        trioscope.NoRegistryError: as `store`.
    """
    try:
        # Checked before the first call: the batch size is the stream's own, and a
        # bad filter should not cost a round trip first. The pages are plain queries.
        _check_query(
            None, order, since_ns, until_ns, type=type, correlation_id=correlation_id, batch=batch
        )
    except EventQueryRejected:
        await trio.lowlevel.checkpoint()  # a waiting call checkpoints on every path
        raise
    last = await _call_store(EventStore.last_id)
    after_id: int | None = None
    before_id: int | None = last + 1
    while True:
        page = await query(
            type=type,
            correlation_id=correlation_id,
            since_ns=since_ns,
            until_ns=until_ns,
            after_id=after_id,
            before_id=before_id,
            limit=batch,
            order=order,
        )
        if not page:
            return
        yield page
        if len(page) < batch:
            return
        if order == "asc":
            after_id = page[-1].id
        else:
            before_id = page[-1].id


async def prune_before(wall_ns: int) -> int:
    """Forget every event with ``wall_ns < wall_ns``; return how many were forgotten.

    Raises:
        EventQueryRejected: *wall_ns* is not an int.
        trioscope.ServiceUnavailableError, trioscope.CallTimeoutError,
        trioscope.NoRegistryError: as `store`.
    """
    return cast("int", await _call_store(EventStore.prune_before, wall_ns))


async def stats() -> EventStoreStats:
    """The current scope's EventStore counters, bounds and settings.

    Raises:
        trioscope.ServiceUnavailableError, trioscope.CallTimeoutError,
        trioscope.NoRegistryError: as `store`.
    """
    return cast("EventStoreStats", await _call_store(EventStore.stats))


def _matcher(type: str | None, correlation_id: str | None) -> Callable[[Event], bool] | None:
    if type is None and correlation_id is None:
        return None
    if correlation_id is None:
        return lambda e: e.type == type
    if type is None:
        return lambda e: e.correlation_id == correlation_id
    return lambda e: e.type == type and e.correlation_id == correlation_id


@contextlib.asynccontextmanager
async def subscribe(
    *,
    type: str | None = None,
    correlation_id: str | None = None,
    buffer: int | None = None,
) -> AsyncIterator[Subscription[Event]]:
    """Receive the events stored from now on that match the filter, while the block lasts.

    ::

        async with events.subscribe(type="order.placed") as placed:
            async for event in placed:
                ...

    Delivery follows the config subscriptions' rules: in id order, no gap, no
    duplicate; a subscriber whose buffer is full is cut off, receiving what
    was buffered and then `SubscriptionOverflowError`. The subscription rides
    through restarts of the store; it ends (`trio.EndOfChannel`, the end of
    an ``async for``) when the events home stops.

    Args:
        type: Only events of this type.
        correlation_id: Only events with this correlation id.
        buffer: Events buffered for this subscriber (default
            ``events.subscriber_buffer``).

    Raises:
        trioscope.ServiceUnavailableError: no event store runs in this scope
            (waited for within the default call timeout).
        trioscope.NoRegistryError: outside every registry scope.
        ValueError, TypeError: a buffer that is not an int >= 1.
    """
    registry = current_registry()
    home = find_home(EVENTS_HOME_NAME, EventsHome)
    if home is None:
        with trio.move_on_after(DEFAULT_CALL_TIMEOUT_S):
            home = cast(EventsHome, await registry.wait_for(EVENTS_HOME_NAME))
        if home is None:
            raise ServiceUnavailableError(
                repr(EVENTS_HOME_NAME),
                f"no event store ran in this scope within {DEFAULT_CALL_TIMEOUT_S:g} s",
            )
    size = buffer if buffer is not None else home.settings.subscriber_buffer
    async with home.hub.subscribe(buffer=size, accept=_matcher(type, correlation_id)) as sub:
        yield sub
