"""The whole foundation under a supervised application: config, events, telemetry, crash trail.

A small shop runs under one root supervisor beside the foundation (config
server, event store, telemetry service). ``orders`` places an order by
calling ``stock``, which runs two levels down, under its own ``warehouse``
supervisor. The configuration is changed at run time. Then one order asks
for an item that crashes ``stock``: that request's correlation id is enough
to read back the whole crash trail (which handler crashed, with which
exception, and what each supervisor restarted because of it), and the
telemetry service shows the calls, the crash and the restarts, as numbers
and in the Prometheus text format.

Run it (it starts, works, prints, stops in order, exits 0)::

    python examples/observed_app.py
    python examples/observed_app.py --prometheus   # the whole /metrics text too
"""

from __future__ import annotations

import argparse
import logging

import trio

import trioscope
from trioscope.foundation import Event, config, events, foundation_spec, health, telemetry


class OutOfStock(trioscope.Rejected, LookupError):
    """An expected refusal: the caller hears it, the service keeps running."""


class Stock(trioscope.Service):
    """Reserves items. A bug makes it crash on one of them ("let it crash")."""

    def __init__(self) -> None:
        self.left = {"tea": 10, "cups": 4, "kettle": 1}

    async def reserve(self, item: str) -> int:
        if item == "teapot":
            raise KeyError(f"no shelf for {item!r}")  # the bug
        if self.left.get(item, 0) < 1:
            raise OutOfStock(item)
        self.left[item] -= 1
        return self.left[item]


class Orders(trioscope.Service):
    """Places orders: one correlated event per step, one call to stock per item."""

    async def place(self, items: list[str]) -> int:
        # Built while handling the request: the event takes its correlation id.
        placed = await events.store(Event("order.placed", {"items": items}))
        for item in items:
            left = await trioscope.call("stock", Stock.reserve, item)
            await events.store(
                Event("item.reserved", {"item": item, "left": left}, parent_id=placed)
            )
        return placed


async def scenario(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """The demo itself: a significant child, so the app stops in order when it is done."""
    task_status.started()
    with trioscope.correlate("order-1"):
        await trioscope.call("orders", Orders.place, ["tea", "cups"])
    print("order-1 placed")

    await config.update("events.max_events", 50_000)
    print(f"config changed at run time: events.max_events = {config.get('events.max_events')}")

    with trioscope.correlate("order-2"):
        try:
            await trioscope.call("orders", Orders.place, ["kettle", "teapot"])
        except trioscope.ServiceCrashedError as exc:
            print(f"order-2 failed: {exc}")
    # Wait for the restarted orders service (it crashed too: it did not catch the error).
    await trioscope.wait_for_service("orders")
    with trioscope.correlate("order-3"):
        await trioscope.call("orders", Orders.place, ["tea"])
    print("order-3 placed: the tree recovered")

    print("crash trail of order-2:")
    # Two restarts come from order-2 (warehouse's stock, shop's orders): stored
    # already, or about to be (the trail is written through a buffer).
    async with events.subscribe(type="trioscope.child.restart", correlation_id="order-2") as new:
        stored = await events.query(type="trioscope.child.restart", correlation_id="order-2")
        restarted = {event.id for event in stored}
        while len(restarted) < 2:
            restarted.add((await new.receive()).id)
    for event in await events.query(correlation_id="order-2"):
        print(f"  #{event.id} {event.type}: {describe(event)}")

    snap = await telemetry.snapshot()
    print("metrics:")
    for name in (
        "trioscope.call.stop.count",
        "trioscope.call.exception.count",
        "trioscope.child.restart.count",
        "trioscope.config.update.count",
    ):
        for series in snap.metric(name).series:
            tags = ", ".join(f"{k}={v}" for k, v in series.tags.items() if v)
            if series.value and series.tags.get("name", "-") in ("-", "orders", "stock"):
                print(f"  {name}{{{tags}}} = {series.value:g}")
    place = snap.metric("trioscope.call.stop.duration").get(name="orders", handler="place")
    assert place is not None
    assert place.summary is not None
    print(f"  orders.place calls: {place.summary.count} (p50/p99 in the Prometheus text)")
    summary = await health()
    states = ", ".join(f"{name} {h.status}" for name, h in summary.services.items())
    print(f"foundation health: {summary.status} ({states})")
    text = await telemetry.prometheus()
    if PROMETHEUS:
        print(text, end="")
    else:
        sample = [line for line in text.splitlines() if line.startswith("trioscope_child_restart")]
        print("prometheus sample:")
        for line in sample:
            print(f"  {line}")


def describe(event: Event) -> str:
    d = event.data
    if event.type == "trioscope.crash":
        return f"{d['service']}.{d['handler']} raised {d['exception'][0]['type']}"
    if event.type == "trioscope.child.exit":
        return f"{d['supervisor']}/{d['child']} exited"
    if event.type == "trioscope.child.restart":
        return f"{d['supervisor']} restarts {d['child']}"
    return str(dict(d))


PROMETHEUS = False


def children() -> list[trioscope.ChildSpec]:
    warehouse = trioscope.supervisor_spec([Stock.child_spec(name="stock")], id="warehouse")
    return [
        foundation_spec(values={"telemetry": {"window_s": 30.0}}),
        warehouse,
        Orders.child_spec(name="orders"),
        trioscope.ChildSpec(
            "scenario", scenario, restart=trioscope.Restart.TEMPORARY, significant=True
        ),
    ]


def main() -> None:
    global PROMETHEUS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", action="store_true", help="print all the metrics text")
    PROMETHEUS = parser.parse_args().prometheus
    # The crash is the point of the demo: its reports are in the event store.
    logging.getLogger("trioscope").addHandler(logging.NullHandler())
    logging.getLogger("trioscope").propagate = False
    trioscope.run(children(), id="shop", auto_shutdown="any_significant")
    print("stopped in order; bye")


if __name__ == "__main__":
    main()
