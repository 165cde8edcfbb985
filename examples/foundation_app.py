"""The foundation at work: a config server and an event store beside an app's own service.

A small checkout service records what it does as correlated events (one
correlation id per order, each event pointing at the one that caused it).
Meanwhile the configuration is changed at run time: the event store follows
its new retention limit, and a subscriber sees the change. Then the events
are queried back: by order, as a causal chain, the most recent ones, and the
config change itself.

Run it (it starts, works, prints, stops in order, exits 0)::

    python examples/foundation_app.py
    python examples/foundation_app.py --db events.db   # keep the events in SQLite

Settings come from the environment too: ``TRIOSCOPE__EVENTS__MAX_EVENTS=500
python examples/foundation_app.py`` starts with that retention limit.
"""

from __future__ import annotations

import argparse

import trio

import trioscope
from trioscope.foundation import (
    Event,
    SQLiteBackend,
    config,
    event_store_spec,
    events,
    open_foundation,
)


class Checkout(trioscope.Service):
    """Places orders; every step is an event correlated by the order's id."""

    def __init__(self) -> None:
        self.placed = 0

    async def place(self, order: str, items: list[str]) -> int:
        root = await events.store(Event("order.placed", {"items": items}, correlation_id=order))
        parent = root
        for item in items:
            parent = await events.store(
                Event("item.reserved", {"item": item}, correlation_id=order, parent_id=parent)
            )
        await events.store(Event("order.paid", {}, correlation_id=order, parent_id=parent))
        self.placed += 1
        return root


async def watch_config(changes: trioscope.foundation.Subscription[config.ConfigChange]) -> None:
    async for change in changes:
        print(f"  config v{change.version}: {change.path} {change.old} -> {change.new}")


async def main(db: str | None) -> None:
    store = event_store_spec(backend=SQLiteBackend(db) if db else None)
    async with (
        trioscope.open_registry(namespace="shop"),
        open_foundation(events=store),
        trioscope.open_supervisor([Checkout.child_spec(name="checkout")]),
        trio.open_nursery() as nursery,
    ):
        print(f"events kept: up to {config.get('events.max_events')}")
        # With --db, the events of earlier runs are back: number this run's orders after them.
        before = len(await events.query(type="order.placed"))
        if before:
            print(f"orders from earlier runs: {before}")
        first, second = f"order-{before + 1}", f"order-{before + 2}"
        async with config.subscribe() as changes:
            nursery.start_soon(watch_config, changes)

            await trioscope.call("checkout", Checkout.place, first, ["tea", "cups"])
            await config.update("events.max_events", 50_000)  # changed at run time
            await trioscope.call("checkout", Checkout.place, second, ["kettle"])

            chain = await events.correlation_chain(first)
            print(f"{first}, cause before effect:")
            for event in chain:
                print(f"  #{event.id} {event.type} {dict(event.data)} (parent {event.parent_id})")
            latest = await events.query(type="order.paid", order="desc", limit=1)
            print(f"latest payment: {latest[0].correlation_id}")
            (recorded,) = await events.query(type="config.updated", order="desc", limit=1)
            print(f"recorded change: {recorded.data['path']} = {recorded.data['new']}")
            stats = await events.stats()
            print(f"events stored: {stats.count}, kept up to {stats.settings.max_events}")
            nursery.cancel_scope.cancel()
    print("stopped in order; bye")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="keep the events in this SQLite file")
    trio.run(main, parser.parse_args().db)
