"""The core's scoped telemetry dispatch (`trioscope.telemetry`) and correlation ids."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import trioscope
from trioscope import telemetry
from trioscope._correlation import crash_origin
from trioscope._registry import _telemetry

pytestmark = pytest.mark.trioscope_scope

Seen = list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]]


def recorder(seen: Seen) -> telemetry.Handler:
    def handler(event: tuple[str, ...], measurements: Any, metadata: Any) -> None:
        seen.append((event, dict(measurements), dict(metadata)))

    return handler


EV = ("app", "thing", "done")


# -- dispatch ---------------------------------------------------------------------


async def test_execute_reaches_exactly_the_handlers_attached_to_that_name() -> None:
    seen: Seen = []
    other: Seen = []
    async with trioscope.open_registry():
        telemetry.attach("a", [EV], recorder(seen))
        telemetry.attach("b", [("app", "thing")], recorder(other))
        telemetry.execute(EV, {"n": 1}, {"k": "v"})
        telemetry.execute(("app", "thing", "done", "late"), {"n": 2})
        telemetry.execute(EV, {"n": 3})
    assert seen == [(EV, {"n": 1}, {"k": "v"}), (EV, {"n": 3}, {})]
    assert other == []


async def test_handlers_run_outer_scopes_first_then_in_attach_order() -> None:
    order: list[str] = []
    async with trioscope.open_registry():
        telemetry.attach("outer-2", [EV], lambda *_: order.append("outer-2"))
        async with trioscope.open_registry():
            telemetry.attach("inner", [EV], lambda *_: order.append("inner"))
            telemetry.execute(EV, {})
        telemetry.attach("outer-3", [EV], lambda *_: order.append("outer-3"))
        telemetry.execute(EV, {})
    assert order == ["outer-2", "inner", "outer-2", "outer-3"]


async def test_attach_rejects_bad_input_and_a_duplicate_id_changes_nothing() -> None:
    seen: Seen = []
    async with trioscope.open_registry(namespace="ns"):
        telemetry.attach("h", [EV], recorder(seen))
        with pytest.raises(
            ValueError,
            match=re.escape("a telemetry handler with id 'h' is already attached in registry 'ns'"),
        ):
            telemetry.attach("h", [("other",)], recorder([]))
        with pytest.raises(TypeError, match="event_names is a list of event names"):
            telemetry.attach("x", EV, recorder([]))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="non-empty tuple of non-empty strings"):
            telemetry.attach("x", [["app"]], recorder([]))  # type: ignore[list-item]
        with pytest.raises(TypeError, match="non-empty tuple of non-empty strings"):
            telemetry.attach("x", [()], recorder([]))
        with pytest.raises(TypeError, match="handler must be callable"):
            telemetry.attach("x", [EV], 42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="handler_id must be a str"):
            telemetry.attach(7, [EV], recorder([]))  # type: ignore[arg-type]
        assert [h.handler_id for h in telemetry.handlers()] == ["h"]
        telemetry.execute(EV, {"n": 1})
    assert seen == [(EV, {"n": 1}, {})]


@pytest.mark.no_trioscope_scope(
    "checks telemetry outside every registry scope (execute a no-op, attach refused)"
)
async def test_outside_every_scope_execute_is_a_no_op_and_attach_says_why() -> None:
    telemetry.execute(EV, {"n": 1})
    assert telemetry.detach("h") is False
    assert telemetry.handlers() == []
    with pytest.raises(trioscope.NoRegistryError, match="attach"):
        telemetry.attach("h", [EV], recorder([]))


async def test_detach_finds_the_nearest_visible_handler_and_says_whether_it_did() -> None:
    seen: Seen = []
    async with trioscope.open_registry():
        telemetry.attach("h", [EV], recorder(seen))
        async with trioscope.open_registry():
            assert telemetry.detach("h") is True
            assert telemetry.detach("h") is False
            telemetry.execute(EV, {})
        async with trioscope.open_registry(isolated=True):
            telemetry.attach("h", [EV], recorder(seen))
        assert seen == []
        telemetry.attach("h", [EV], recorder(seen))
        async with trioscope.open_registry(isolated=True):
            assert telemetry.detach("h") is False  # across the boundary: not visible
        telemetry.execute(EV, {})
    assert seen == [(EV, {}, {})]


async def test_attached_detaches_at_the_end_of_its_block_only_its_own_handler() -> None:
    seen: Seen = []
    async with trioscope.open_registry():
        with telemetry.attached("h", [EV], recorder(seen)):
            telemetry.execute(EV, {"n": 1})
            assert telemetry.detach("h")
            telemetry.attach("h", [EV], recorder(seen))  # someone else's now
        telemetry.execute(EV, {"n": 2})
        with telemetry.attached("g", [EV], recorder([])):
            pass
        assert [h.handler_id for h in telemetry.handlers(EV)] == ["h"]
    assert [m for _, m, _ in seen] == [{"n": 1}, {"n": 2}]


async def test_a_scope_closing_detaches_its_handlers_and_the_global_count_returns() -> None:
    before = _telemetry.attached
    async with trioscope.open_registry():
        telemetry.attach("a", [EV], recorder([]))
        telemetry.attach("b", [EV], recorder([]))
        assert _telemetry.attached == before + 2
    assert _telemetry.attached == before


# Scope trees: a handler attached at node A receives an event executed at node B
# exactly when A is on B's visible chain (B itself, then parents up to and
# including the first isolated one).


@st.composite
def scope_trees(draw: st.DrawFn) -> list[tuple[int | None, bool]]:
    n = draw(st.integers(1, 7))
    nodes: list[tuple[int | None, bool]] = [(None, draw(st.booleans()))]
    for i in range(1, n):
        nodes.append((draw(st.integers(0, i - 1)), draw(st.booleans())))
    return nodes


@given(
    tree=scope_trees(),
    attach_at=st.lists(st.integers(0, 6), max_size=6),
    emit_at=st.lists(st.integers(0, 6), max_size=8),
)
def test_handlers_see_exactly_their_scope_and_nested_ones_up_to_isolation(
    tree: list[tuple[int | None, bool]], attach_at: list[int], emit_at: list[int]
) -> None:
    n = len(tree)
    attach_at = [a % n for a in attach_at]
    emit_at = [e % n for e in emit_at]

    def visible_chain(node: int) -> list[int]:
        chain = [node]
        while not tree[chain[-1]][1] and tree[chain[-1]][0] is not None:
            parent = tree[chain[-1]][0]
            assert parent is not None
            chain.append(parent)
        return chain

    received: list[tuple[int, int]] = []

    async def main() -> None:
        ready = {i: trio.Event() for i in range(n)}
        channels = {i: trio.open_memory_channel[trio.Event](0) for i in range(n)}

        async def open_node(i: int) -> None:
            async with trioscope.open_registry(namespace=str(i), isolated=tree[i][1]):
                for j, at in enumerate(attach_at):
                    if at == i:
                        telemetry.attach(
                            f"h{j}",
                            [EV],
                            lambda _e, m, _md, j=j: received.append((j, m["from"])),
                        )
                async with trio.open_nursery() as nursery:
                    for child in range(n):
                        if tree[child][0] == i:
                            nursery.start_soon(open_node, child)
                    ready[i].set()
                    # Execute, inside this scope, whenever asked; until the channel closes.
                    async for ack in channels[i][1]:
                        telemetry.execute(EV, {"from": i})
                        ack.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_node, 0)
            for i in range(n):
                await ready[i].wait()
            for e in emit_at:
                ack = trio.Event()
                await channels[e][0].send(ack)
                await ack.wait()
            for send, _ in channels.values():
                await send.aclose()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    expected = [(j, e) for e in emit_at for j, at in enumerate(attach_at) if at in visible_chain(e)]
    # Handlers run outer scopes first: compare per event as sets of handler ids.
    assert sorted(received) == sorted(expected)


async def test_sibling_scopes_never_see_each_others_handlers() -> None:
    seen: dict[str, list[str]] = {"a": [], "b": []}
    gate = trio.Event()

    async def scope(name: str, task_status: trio.TaskStatus[None]) -> None:
        async with trioscope.open_registry(namespace=name, isolated=True):
            telemetry.attach("same-id", [EV], lambda _e, m, _md: seen[name].append(m["who"]))
            task_status.started()
            await gate.wait()
            telemetry.execute(EV, {"who": name})

    async with trioscope.open_registry(), trio.open_nursery() as nursery:
        await nursery.start(scope, "a")
        await nursery.start(scope, "b")
        telemetry.execute(EV, {"who": "parent"})
        gate.set()
    assert seen == {"a": ["a"], "b": ["b"]}


async def test_a_raising_handler_is_detached_reported_and_the_emitter_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: Seen = []
    failures: Seen = []

    def bad(_e: object, _m: object, _md: object) -> None:
        raise ZeroDivisionError("handler bug")

    async with trioscope.open_registry():
        telemetry.attach("failures", [telemetry.HANDLER_FAILURE], recorder(failures))
        telemetry.attach("bad", [EV], bad)
        telemetry.attach("good", [EV], recorder(seen))
        with caplog.at_level(logging.ERROR, logger="trioscope.telemetry"):
            telemetry.execute(EV, {"n": 1})
            telemetry.execute(EV, {"n": 2})
        assert [h.handler_id for h in telemetry.handlers()] == ["failures", "good"]
    assert [m for _, m, _ in seen] == [{"n": 1}, {"n": 2}]
    assert len(failures) == 1
    event, measurements, metadata = failures[0]
    assert event == ("trioscope", "telemetry", "handler_failure")
    assert measurements == {"count": 1}
    assert metadata["handler_id"] == "bad"
    assert metadata["event_name"] == EV
    assert isinstance(metadata["reason"], ZeroDivisionError)
    [record] = [r for r in caplog.records if r.name == "trioscope.telemetry"]
    assert (
        record.getMessage() == "telemetry handler 'bad' raised on app.thing.done and was detached"
    )
    assert record.exc_info is not None
    assert record.exc_info[0] is ZeroDivisionError


async def test_span_emits_start_and_stop_with_exact_durations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: Seen = []
    names = [("op", "start"), ("op", "stop"), ("op", "exception")]
    async with trioscope.open_registry():
        telemetry.attach("rec", names, recorder(seen))
        t0 = trio.current_time()
        with trioscope.correlate("req-1"), telemetry.span(("op",), {"size": 3}) as meta:
            await trio.sleep(1.5)
            meta["status"] = "ok"
    assert seen == [
        (("op", "start"), {"monotonic_time": t0}, {"size": 3, "correlation_id": "req-1"}),
        (
            ("op", "stop"),
            {"duration": 1.5, "monotonic_time": t0 + 1.5},
            {"size": 3, "correlation_id": "req-1", "status": "ok"},
        ),
    ]


async def test_span_emits_exception_and_reraises_unchanged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: Seen = []
    names = [("op", "start"), ("op", "stop"), ("op", "exception")]
    boom = KeyError("x")
    async with trioscope.open_registry():
        telemetry.attach("rec", names, recorder(seen))

        async def fail_in_span() -> None:
            with telemetry.span(("op",)):
                await trio.sleep(2)
                raise boom

        with pytest.raises(KeyError) as info:
            await fail_in_span()
        assert info.value is boom
        with trio.move_on_after(1), telemetry.span(("op",), {"correlation_id": "given"}):
            await trio.sleep(5)
    assert [e for e, _, _ in seen] == [("op", "start"), ("op", "exception")] * 2
    assert seen[1][1]["duration"] == 2
    assert seen[1][2] == {"correlation_id": None, "kind": "error", "reason": boom}
    assert seen[3][1]["duration"] == 1
    assert seen[3][2]["kind"] == "cancelled"
    assert seen[3][2]["correlation_id"] == "given"
    assert isinstance(seen[3][2]["reason"], trio.Cancelled)


async def test_span_checks_its_prefix() -> None:
    with pytest.raises(TypeError, match="non-empty tuple"), telemetry.span("op"):  # type: ignore[arg-type]
        pass


# -- correlation ids ----------------------------------------------------------------


async def test_correlate_sets_nests_generates_and_checks() -> None:
    assert trioscope.current_correlation_id() is None
    with trioscope.correlate("outer") as outer:
        assert outer == "outer"
        with trioscope.correlate() as new:
            assert uuid.UUID(new).version == 4
            assert trioscope.current_correlation_id() == new
        assert trioscope.current_correlation_id() == "outer"
    assert trioscope.current_correlation_id() is None
    with pytest.raises(ValueError, match="must not be empty"), trioscope.correlate(""):
        pass
    with pytest.raises(TypeError, match="must be a str or None"), trioscope.correlate(5):  # type: ignore[arg-type]
        pass


class Inner(trioscope.Service):
    async def whose(self) -> str | None:
        return trioscope.current_correlation_id()

    async def note(self, into: list[str | None]) -> None:
        into.append(trioscope.current_correlation_id())

    async def crash(self) -> None:
        raise RuntimeError("inner crashed")

    async def refuse(self) -> None:
        raise trioscope.Rejected("no")


class Outer(trioscope.Service):
    async def whose(self) -> tuple[str | None, str | None]:
        inner = await trioscope.call("inner", Inner.whose)
        return trioscope.current_correlation_id(), inner

    async def crash_inner(self) -> None:
        await trioscope.call("inner", Inner.crash)


def pair() -> list[trioscope.ChildSpec[Any]]:
    return [Inner.child_spec(name="inner"), Outer.child_spec(name="outer")]


async def test_calls_and_casts_carry_the_callers_id_across_services() -> None:
    notes: list[str | None] = []
    async with trioscope.open_registry(), trioscope.open_supervisor(pair()):
        with trioscope.correlate("r1"):
            assert await trioscope.call("outer", Outer.whose) == ("r1", "r1")
            await trioscope.cast("inner", Inner.note, notes)
        assert await trioscope.call("outer", Outer.whose) == (None, None)
        with trioscope.correlate("r2"):
            await trioscope.cast("inner", Inner.note, notes)
            assert await trioscope.call("inner", Inner.whose) == "r2"
    assert notes == ["r1", "r2"]


# -- the core's own events ------------------------------------------------------------

CALL = [("trioscope", "call", k) for k in ("start", "stop", "exception")]
CAST = [("trioscope", "cast", k) for k in ("start", "stop", "exception")]
CHILD = [("trioscope", "child", k) for k in ("start", "exit", "restart", "backoff")]
SUP = [("trioscope", "supervisor", k) for k in ("give_up", "auto_shutdown")]


class Timed(trioscope.Service):
    async def work(self, seconds: float) -> int:
        await trio.sleep(seconds)
        return 1

    async def refuse(self) -> None:
        raise trioscope.Rejected("no")

    async def boom(self) -> None:
        await trio.sleep(0.25)
        raise RuntimeError("boom")


async def test_call_events_measure_the_handler_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: Seen = []
    async with trioscope.open_registry():
        telemetry.attach("rec", CALL + CAST, recorder(seen))
        async with trioscope.open_supervisor([Timed.child_spec(name="t")]):
            with trioscope.correlate("c1"):
                t0 = trio.current_time()
                assert await trioscope.call("t", Timed.work, 2.0) == 1
                await trioscope.cast("t", Timed.work, 0.5)
            with pytest.raises(trioscope.Rejected):
                await trioscope.call("t", Timed.refuse)
            with pytest.raises(trioscope.ServiceCrashedError):
                await trioscope.call("t", Timed.boom)
            await trioscope.wait_for_service("t")
    meta = {"service": "'t'", "name": "t", "handler": "work", "correlation_id": "c1"}
    assert seen[:2] == [
        (CALL[0], {"monotonic_time": t0, "mailbox_depth": 0}, meta),
        (CALL[1], {"duration": 2.0, "monotonic_time": t0 + 2.0, "mailbox_depth": 0}, meta),
    ]
    assert [(e, m["duration"]) for e, m, _ in seen[2:] if "duration" in m] == [
        (CAST[1], 0.5),
        (CALL[1], 0.0),
        (CALL[2], 0.25),
    ]
    assert isinstance(seen[5][2]["rejected"], trioscope.Rejected)
    crash = seen[7][2]
    assert crash["kind"] == "crash"
    assert str(crash["reason"]) == "boom"
    assert crash["correlation_id"] is None


async def test_mailbox_depth_counts_the_messages_queued_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: Seen = []
    async with trioscope.open_registry():
        telemetry.attach("rec", [CAST[0]], recorder(seen))
        async with trioscope.open_supervisor([Timed.child_spec(name="t")]):
            await trioscope.cast("t", Timed.work, 1.0)
            await trio.testing.wait_all_tasks_blocked()  # it runs, the mailbox is empty
            for _ in range(3):
                await trioscope.cast("t", Timed.work, 1.0)
            # A call queues behind the casts (and counts): once it returns, they have all run.
            assert await trioscope.call("t", Timed.work, 0.0) == 1
            assert trio.current_time() == 4.0
    assert [m["mailbox_depth"] for _, m, _ in seen] == [0, 3, 2, 1]


async def test_supervisor_events_follow_a_crash_restart_backoff_and_give_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: Seen = []
    backoff = trioscope.Backoff(initial=1.0, maximum=1.0, jitter=0.0)
    async with trioscope.open_registry():
        telemetry.attach("rec", CHILD + SUP, recorder(seen))

        async def crash_twice() -> None:
            async with trioscope.open_supervisor(
                [Timed.child_spec(name="t")], id="sup", max_restarts=1, backoff=backoff
            ):
                with trioscope.correlate("req"):
                    with pytest.raises(trioscope.ServiceCrashedError):
                        await trioscope.call("t", Timed.boom)
                    await trioscope.wait_for_service("t")
                    with pytest.raises(trioscope.ServiceCrashedError):
                        await trioscope.call("t", Timed.boom)
                await trio.sleep_forever()

        with pytest.raises(trioscope.RestartIntensityExceededError) as info:
            await crash_twice()
    events = [(e[2], md.get("child"), md.get("correlation_id")) for e, _, md in seen]
    assert events == [
        ("start", "t", None),
        ("exit", "t", "req"),
        ("backoff", "t", "req"),
        ("restart", "t", "req"),
        ("start", "t", "req"),
        ("exit", "t", "req"),
        ("give_up", "t", "req"),
    ]
    exit_meta = seen[1][2]
    assert exit_meta["service"] == "'t'"
    assert exit_meta["handler"] == "boom"
    assert exit_meta["supervisor"] == "sup"
    assert seen[2][1] == {"delay": 1.0, "restart_at": pytest.approx(seen[2][1]["restart_at"])}
    assert seen[2][1]["delay"] == 1.0
    assert seen[3][1] == {"restarts": 1}
    assert seen[3][2]["cause"] == "t"
    assert seen[6][2]["reason"] is info.value
    assert seen[6][1] == {"max_restarts": 1, "max_seconds": 5.0}


async def test_crash_origin_follows_the_chain_up_two_services() -> None:
    async with trioscope.open_registry(), trioscope.open_supervisor(pair()):
        with trioscope.correlate("deep"), pytest.raises(trioscope.ServiceCrashedError) as info:
            await trioscope.call("outer", Outer.crash_inner)
    # Outer crashed with the ServiceCrashedError from inner: the caller's error
    # carries Outer's crash, and the one Outer got carries Inner's.
    assert crash_origin(info.value) == ("'outer'", "crash_inner", "deep")
    inner_crash = info.value.__cause__
    assert isinstance(inner_crash, trioscope.ServiceCrashedError)
    assert crash_origin(inner_crash) == ("'inner'", "crash", "deep")
    # The user's own exception is never touched.
    assert crash_origin(inner_crash.__cause__) is None
    assert "_origin" not in vars(inner_crash.__cause__)
    assert crash_origin(None) is None
