"""The event store's client functions: ``from trioscope.foundation import events``.

::

    import trio, trioscope
    from trioscope.foundation import Event, event_store_spec, events

    async def main() -> None:
        async with trioscope.open_registry(isolated=True), trioscope.open_supervisor(
            [event_store_spec()]
        ):
            first = await events.store(Event("user.login", {"user": "ada"}, correlation_id="s1"))
            views = [Event("page.view", {"n": n}, correlation_id="s1") for n in (1, 2)]
            await events.store_batch(views)
            assert [e.id for e in await events.query(correlation_id="s1")] == [first, 2, 3]
            assert (await events.stats()).count == 3

    trio.run(main)

Each function resolves the ``"events"`` service (or its home) through the
current registry scope on every call: nothing is global, nothing is cached
across scopes. The store assigns ids (unique, ascending, never reused) and
nanosecond timestamps; `store_batch` is atomic; `query` and
`correlation_chain` are answered from indexes, so their cost follows the
result, not the store; retention by count and age bounds memory; `subscribe`
and `store_nowait` ride through restarts of the store. The guide and the
`event_store_spec` docs have the details.
"""

from ._events import DEFAULT_CLIENT_BUFFER as DEFAULT_CLIENT_BUFFER
from ._events import DEFAULT_MAX_AGE_S as DEFAULT_MAX_AGE_S
from ._events import DEFAULT_MAX_DATA_BYTES as DEFAULT_MAX_DATA_BYTES
from ._events import DEFAULT_MAX_EVENTS as DEFAULT_MAX_EVENTS
from ._events import DEFAULT_PRUNE_INTERVAL_S as DEFAULT_PRUNE_INTERVAL_S
from ._events import DEFAULT_STREAM_BATCH as DEFAULT_STREAM_BATCH
from ._events import DEFAULT_SUBSCRIBER_BUFFER as DEFAULT_SUBSCRIBER_BUFFER
from ._events import EventBufferStatistics as EventBufferStatistics
from ._events import EventQueryRejected as EventQueryRejected
from ._events import EventStore as EventStore
from ._events import EventStoreSettings as EventStoreSettings
from ._events import EventStoreStats as EventStoreStats
from ._events import buffer_statistics as buffer_statistics
from ._events import correlation_chain as correlation_chain
from ._events import event_store_spec as event_store_spec
from ._events import get as get
from ._events import prune_before as prune_before
from ._events import query as query
from ._events import stats as stats
from ._events import store as store
from ._events import store_batch as store_batch
from ._events import store_nowait as store_nowait
from ._events import stream as stream
from ._events import subscribe as subscribe
from ._events import truncate_data as truncate_data
from ._memory import MemoryBackend as MemoryBackend

__all__ = [
    "DEFAULT_CLIENT_BUFFER",
    "DEFAULT_MAX_AGE_S",
    "DEFAULT_MAX_DATA_BYTES",
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_PRUNE_INTERVAL_S",
    "DEFAULT_STREAM_BATCH",
    "DEFAULT_SUBSCRIBER_BUFFER",
    "EventBufferStatistics",
    "EventQueryRejected",
    "EventStore",
    "EventStoreSettings",
    "EventStoreStats",
    "MemoryBackend",
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
