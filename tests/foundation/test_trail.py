"""The crash trail: crashes, restarts, backoffs and give-ups stored with the request's id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing

import trioscope
from trioscope import telemetry
from trioscope.foundation import Event, MemoryBackend, event_store_spec, events, open_foundation
from trioscope.foundation._trail import CHAIN_LIMIT, TRAIL_HANDLER_ID, exception_chain

pytestmark = pytest.mark.trioscope_scope


class Back(trioscope.Service):
    async def crash(self, order: int) -> None:
        raise RuntimeError(f"order {order} broke the back end")

    async def ok(self) -> str:
        return "fine"


class Front(trioscope.Service):
    async def handle(self, order: int) -> None:
        # A breadcrumb of our own, correlated with nothing to pass along.
        await events.store(Event("front.received", {"order": order}))
        await trioscope.call("back", Back.crash, order)


def app() -> list[trioscope.ChildSpec[Any]]:
    # Two levels down: app > backend > back; back's supervisor tolerates no restart.
    backend = trioscope.supervisor_spec(
        [Back.child_spec(name="back")], id="backend", max_restarts=0
    )
    return [backend, Front.child_spec(name="front")]


def summary(event: Event) -> tuple[str, ...]:
    d = event.data
    if event.type == "trioscope.crash":
        return (event.type, str(d["service"]), str(d["handler"]))
    if event.type == "front.received":
        return (event.type,)
    return (event.type, str(d["supervisor"]), str(d["child"]))


async def test_a_request_that_crashes_a_service_two_levels_down_leaves_a_whole_trail() -> None:
    async with trioscope.open_registry(isolated=True), open_foundation():
        async with (
            trioscope.open_supervisor(app(), id="app"),
            events.subscribe(correlation_id="req-7") as trail,
        ):
            with trioscope.correlate("req-7"), pytest.raises(trioscope.ServiceCrashedError):
                await trioscope.call("front", Front.handle, 7)
            seen = [await trail.receive() for _ in range(9)]
            # The whole tree recovered: a new request goes through.
            assert await trioscope.call("back", Back.ok) == "fine"
        stored = await events.query(correlation_id="req-7")
    assert [e.id for e in stored] == [e.id for e in seen]
    assert sorted(map(summary, seen)) == sorted(
        [
            ("front.received",),
            ("trioscope.crash", "'back'", "crash"),
            ("trioscope.child.exit", "backend", "back"),
            ("trioscope.supervisor.give_up", "backend", "back"),
            ("trioscope.child.exit", "app", "backend"),
            ("trioscope.child.restart", "app", "backend"),
            ("trioscope.crash", "'front'", "handle"),
            ("trioscope.child.exit", "app", "front"),
            ("trioscope.child.restart", "app", "front"),
        ]
    )
    order = [summary(e) for e in seen]

    # Causes before effects, on each path up the tree.
    received = ("front.received",)
    back_crash = ("trioscope.crash", "'back'", "crash")
    back_exit = ("trioscope.child.exit", "backend", "back")
    give_up = ("trioscope.supervisor.give_up", "backend", "back")
    backend_exit = ("trioscope.child.exit", "app", "backend")
    backend_restart = ("trioscope.child.restart", "app", "backend")
    front_crash = ("trioscope.crash", "'front'", "handle")
    front_exit = ("trioscope.child.exit", "app", "front")
    front_restart = ("trioscope.child.restart", "app", "front")
    for path in (
        [received, back_crash, back_exit, give_up, backend_exit, backend_restart],
        [back_crash, front_crash, front_exit, front_restart],
    ):
        assert [order.index(step) for step in path] == sorted(order.index(step) for step in path)

    by = {summary(e): e.data for e in seen}
    assert by[("trioscope.crash", "'back'", "crash")]["exception"] == [
        {"type": "builtins.RuntimeError", "message": "order 7 broke the back end"}
    ]
    assert by[("trioscope.crash", "'front'", "handle")]["exception"] == [
        {
            "type": "trioscope.ServiceCrashedError",
            "message": str(by_type(seen, "trioscope.crash", "'front'")["exception"][0]["message"]),
        },
        {"type": "builtins.RuntimeError", "message": "order 7 broke the back end"},
    ]
    backend_exited = by[backend_exit]
    assert [x["type"] for x in backend_exited["exception"]] == [
        "trioscope.RestartIntensityExceededError",
        "builtins.RuntimeError",
    ]
    # The supervisor above names the service and handler the crash began in.
    assert (backend_exited["service"], backend_exited["handler"]) == ("'back'", "crash")
    assert by[("trioscope.child.restart", "app", "backend")]["cause"] == "backend"
    assert by[("trioscope.child.restart", "app", "front")]["restarts"] == 1
    gave_up = by[give_up]
    assert (gave_up["max_restarts"], gave_up["max_seconds"]) == (0, 5.0)


def by_type(seen: list[Event], kind: str, service: str) -> Any:
    [event] = [e for e in seen if e.type == kind and e.data.get("service") == service]
    return event.data


async def test_backoff_is_recorded_with_when_the_restart_will_come(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff = trioscope.Backoff(initial=2.0, maximum=2.0, jitter=0.0)
    async with (
        trioscope.open_registry(isolated=True),
        open_foundation(),
        trioscope.open_supervisor([Back.child_spec(name="back")], id="sup", backoff=backoff),
        events.subscribe(correlation_id="slow") as trail,
    ):
        with trioscope.correlate("slow"), pytest.raises(trioscope.ServiceCrashedError):
            await trioscope.call("back", Back.crash, 1)
        seen = [await trail.receive() for _ in range(4)]
    assert [e.type for e in seen] == [
        "trioscope.crash",
        "trioscope.child.exit",
        "trioscope.child.backoff",
        "trioscope.child.restart",
    ]
    assert seen[2].data["delay_s"] == 2.0
    assert seen[2].data["cause"] == "back"


async def test_work_without_a_correlation_id_is_recorded_without_one() -> None:
    async with (
        trioscope.open_registry(isolated=True),
        open_foundation(),
        trioscope.open_supervisor([Back.child_spec(name="back")], id="sup"),
        events.subscribe(type="trioscope.child.restart") as restarts,
    ):
        with pytest.raises(trioscope.ServiceCrashedError):
            await trioscope.call("back", Back.crash, 1)
        restart = await restarts.receive()
    assert restart.correlation_id is None
    assert restart.data["child"] == "back"


async def test_the_trail_lives_exactly_as_long_as_the_event_store_home() -> None:
    async with trioscope.open_registry(isolated=True):
        assert telemetry.handlers() == []
        async with open_foundation():
            ids = sorted(h.handler_id for h in telemetry.handlers())
            # The trail's, and the telemetry service's (whose id numbers its home).
            assert ids[0] == TRAIL_HANDLER_ID
            assert [i.rsplit("#", 1)[0] for i in ids[1:]] == ["trioscope.foundation.telemetry"]
        assert telemetry.handlers() == []


def test_exception_chains_follow_causes_groups_and_stop_at_the_limit() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise ValueError("outer") from inner
    except ValueError as exc:
        caught = exc
    assert exception_chain(caught) == [
        {"type": "builtins.ValueError", "message": "outer"},
        {"type": "builtins.KeyError", "message": "'inner'"},
    ]
    group = ExceptionGroupCompat("many", [OSError("first"), OSError("second")])
    assert exception_chain(group)[0]["group"] == 2  # type: ignore[index,call-overload]
    assert exception_chain(group)[1] == {"type": "builtins.OSError", "message": "first"}
    loop = RuntimeError("x" * 1000)
    loop.__cause__ = loop
    assert len(exception_chain(loop)) == 1
    assert len(exception_chain(loop)[0]["message"]) == 500  # type: ignore[index,arg-type]
    deep: BaseException = ValueError(0)
    for i in range(1, 40):
        e = ValueError(i)
        e.__cause__ = deep
        deep = e
    assert len(exception_chain(deep)) == CHAIN_LIMIT
    assert exception_chain(None) == []

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert exception_chain(Unprintable()) == [
        {
            "type": f"{__name__}.{Unprintable.__qualname__}",
            "message": "<unprintable Unprintable: __str__ raised RuntimeError>",
        }
    ]


try:
    ExceptionGroupCompat = ExceptionGroup
except NameError:  # Python 3.10
    from exceptiongroup import ExceptionGroup as ExceptionGroupCompat


class FailingBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.fail = 0

    async def append(self, events: Sequence[Event]) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("disk on fire")
        await super().append(events)


async def test_the_event_stores_own_crash_is_on_the_trail_of_the_write_that_caused_it() -> None:
    backend = FailingBackend()
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([event_store_spec(backend=lambda: backend)]),
        events.subscribe(correlation_id="w-1") as trail,
    ):
        backend.fail = 1
        with trioscope.correlate("w-1"), pytest.raises(trioscope.ServiceCrashedError):
            await events.store(Event("doomed"))
        seen = [await trail.receive() for _ in range(3)]
    assert [(e.type, summary(e)[1:]) for e in seen] == [
        ("trioscope.crash", ("'events'", "store")),
        ("trioscope.child.exit", ("events", "events")),
        ("trioscope.child.restart", ("events", "events")),
    ]


async def test_a_store_without_a_crash_trail_stores_only_what_clients_write() -> None:
    backend = FailingBackend()
    spec = event_store_spec(backend=lambda: backend, crash_trail=False)
    async with trioscope.open_registry(isolated=True), trioscope.open_supervisor([spec]):
        assert telemetry.handlers() == []
        backend.fail = 1
        with pytest.raises(trioscope.ServiceCrashedError):
            await events.store(Event("doomed"))
        assert await events.store(Event("kept")) == 1
        assert [e.type for e in await events.query()] == ["kept"]
