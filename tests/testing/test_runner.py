"""run_concurrently: many isolated bodies at once, each failing alone and by name."""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest
import trio
import trio.testing
from _scope_support import Token, line_of

import trioscope
from trioscope.foundation import ConfigChange, Event, config, events, telemetry
from trioscope.testing._runner import (
    BodiesFailedError,
    BodyResult,
    BodyTimeoutError,
    RunReport,
    ScopeBody,
    run_concurrently,
)
from trioscope.testing._scope import Leak, LeakError, TestScope

pytestmark = pytest.mark.trioscope_scope

try:
    BaseExceptionGroupCompat = BaseExceptionGroup
except NameError:  # Python 3.10
    from exceptiongroup import BaseExceptionGroup as BaseExceptionGroupCompat
try:
    ExceptionGroupCompat = ExceptionGroup
except NameError:  # Python 3.10
    from exceptiongroup import ExceptionGroup as ExceptionGroupCompat

HERE = __file__
BODIES = 200
LEAK_PREAMBLE = (
    "leaked 1 thing that outlived it (release names, detach handlers and close "
    "subscriptions in the test; run background tasks with scope.start_soon or a "
    "nursery inside the scope):"
)

_KEPT: list[AbstractContextManager[None]] = []


async def forever() -> None:
    await trio.sleep_forever()  # LEAKED-TASK-WAITS-HERE


async def passes(scope: TestScope) -> None:
    assert trioscope.current_registry() is scope.registry
    await trio.lowlevel.checkpoint()


# -- 200 foundations under the same names, all at once -------------------------------


async def test_200_bodies_each_with_the_whole_foundation_all_pass_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    up = 0
    all_up = trio.Event()
    config_refs: dict[int, object] = {}
    done: list[int] = []

    async def body(scope: TestScope, i: int) -> None:
        nonlocal up
        cid = f"corr-{i}"
        config_refs[i] = scope.registry.lookup("config")
        async with (
            config.subscribe() as changes,
            events.subscribe(correlation_id=cid) as mine,
            events.subscribe(type="config.updated") as updated,
        ):
            # Every foundation is up before any body works: all 200 run at once.
            up += 1
            if up == BODIES:
                all_up.set()
            await all_up.wait()

            assert await config.update("events.max_events", 1_000 + i) == 1
            assert config.get("events.max_events") == 1_000 + i
            assert await changes.receive() == ConfigChange(
                "events.max_events", 100_000, 1_000 + i, 1
            )
            ids = [
                await events.store(Event("order", {"body": i, "n": n}, correlation_id=cid))
                for n in range(3)
            ]
            received = [await mine.receive() for _ in range(3)]
            assert [(e.id, e.type, dict(e.data), e.correlation_id) for e in received] == [
                (ids[n], "order", {"body": i, "n": n}, cid) for n in range(3)
            ]
            change = await updated.receive()
            assert dict(change.data) == {
                "path": "events.max_events",
                "old": 100_000,
                "new": 1_000 + i,
                "version": 1,
            }
            assert mine.statistics().buffered == 0
            assert updated.statistics().buffered == 0
            assert changes.statistics().buffered == 0

        assert [e.id for e in await events.query(correlation_id=cid)] == ids
        # Its own store holds exactly its own four events, numbered from 1.
        assert sorted(e.id for e in await events.query()) == [1, 2, 3, 4]
        assert sorted([*ids, change.id]) == [1, 2, 3, 4]
        assert (await config.status()).updates_applied == 1
        snap = await telemetry.snapshot()
        updates = snap.metric("trioscope.config.update.count")
        assert [(dict(s.tags), s.value) for s in updates.series] == [
            ({"path": "events.max_events"}, 1)
        ]
        stored = snap.metric("trioscope.events.store.count").get()
        assert stored is not None
        assert stored.value == 4
        done.append(i)

    def bound(i: int) -> ScopeBody:
        async def run(scope: TestScope) -> None:
            await body(scope, i)

        return run

    names = [f"body-{i:03}" for i in range(BODIES)]
    report = await run_concurrently(
        {name: bound(i) for i, name in enumerate(names)},
        foundation=True,
    )

    report.raise_if_failed()
    assert [r.name for r in report.results] == names
    assert [r.outcome for r in report.results] == ["passed"] * BODIES
    assert report.failed == ()
    assert report.leaked == ()
    assert len(report.passed) == BODIES
    assert sorted(done) == list(range(BODIES))
    # Same name, 200 different services: each body reached only its own.
    assert len({id(ref) for ref in config_refs.values()}) == BODIES
    assert all(isinstance(ref, trioscope.ServiceRef) for ref in config_refs.values())


# -- a body that leaks, or raises, fails alone ---------------------------------------


async def test_a_leaking_body_fails_alone_naming_itself_and_its_leak(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as outer:

        async def leaks_a_task(scope: TestScope) -> None:
            outer.start_soon(forever, name="stray-worker")
            await trio.testing.wait_all_tasks_blocked()

        async def leaks_a_name(scope: TestScope) -> None:
            held = scope.registry.registered("cache", Token("cache"))
            held.__enter__()
            _KEPT.append(held)
            await trio.lowlevel.checkpoint()

        async def uses_the_foundation(scope: TestScope) -> None:
            assert config.get("events.max_events") == 50
            assert await config.update("events.max_events", 7) == 1
            assert config.get("events.max_events") == 7

        report = await run_concurrently(
            [
                ("ok-1", uses_the_foundation),
                ("task-leak", leaks_a_task),
                ("ok-2", uses_the_foundation),
                ("name-leak", leaks_a_name),
                ("ok-3", uses_the_foundation),
            ],
            foundation=True,
            values={"events": {"max_events": 50}},
        )
        outer.cancel_scope.cancel()

    assert [(r.name, r.outcome) for r in report.results] == [
        ("ok-1", "passed"),
        ("task-leak", "leaked"),
        ("ok-2", "passed"),
        ("name-leak", "leaked"),
        ("ok-3", "passed"),
    ]
    assert report.failed == report.leaked == (report["task-leak"], report["name-leak"])
    task_error = report["task-leak"].error
    name_error = report["name-leak"].error
    assert isinstance(task_error, LeakError)
    assert isinstance(name_error, LeakError)
    started = line_of(forever, "async def forever")
    waits = line_of(forever, "LEAKED-TASK-WAITS-HERE")
    spawned = line_of(test_a_leaking_body_fails_alone_naming_itself_and_its_leak, "stray-worker")
    task_detail = (
        f"still running: started at leaks_a_task ({HERE}:{spawned}) as forever ({HERE}:{started}), "
        f"now in forever ({HERE}:{waits})"
    )
    assert task_error.leaks == (Leak("task", "stray-worker", "task-leak", task_detail),)
    assert name_error.leaks == (
        Leak("name", "cache", "name-leak", "still registered, held by <Token cache>"),
    )

    with pytest.raises(BodiesFailedError) as info:
        report.raise_if_failed()
    assert str(info.value) == (
        "2 of 5 bodies run concurrently failed:\n"
        f"  - 'task-leak' leaked: test scope 'task-leak' {LEAK_PREAMBLE}\n"
        f"      - task 'stray-worker' in registry 'task-leak': {task_detail}\n"
        f"  - 'name-leak' leaked: test scope 'name-leak' {LEAK_PREAMBLE}\n"
        "      - name 'cache' in registry 'name-leak': still registered, held by <Token cache>"
    )
    assert isinstance(info.value, AssertionError)
    assert info.value.report is report
    cause = info.value.__cause__
    assert isinstance(cause, BaseExceptionGroupCompat)
    assert list(cause.exceptions) == [task_error, name_error]


async def test_a_failing_body_fails_alone_with_its_exception_and_its_leaks_as_a_note() -> None:
    async def fails(scope: TestScope) -> None:
        await trio.lowlevel.checkpoint()
        assert 1 + 1 == 3, "arithmetic"

    async def fails_and_leaks(scope: TestScope) -> None:
        held = scope.registry.registered("left", Token("left"))
        held.__enter__()
        _KEPT.append(held)
        raise ValueError("bad value")

    async def fails_through_pytest(scope: TestScope) -> None:
        pytest.fail("explicitly")

    report = await run_concurrently(
        {
            "a": passes,
            "asserts": fails,
            "b": passes,
            "leaks-too": fails_and_leaks,
            "pytest-fail": fails_through_pytest,
        }
    )

    assert [(r.name, r.outcome) for r in report.results] == [
        ("a", "passed"),
        ("asserts", "raised"),
        ("b", "passed"),
        ("leaks-too", "raised"),
        ("pytest-fail", "raised"),
    ]
    assert report.passed == (report["a"], report["b"])
    assert report["a"].error is None
    assert report["a"].passed is True
    assert report.leaked == ()
    asserted = report["asserts"].error
    assert isinstance(asserted, AssertionError)
    assert str(asserted).startswith("arithmetic")
    valued = report["leaks-too"].error
    assert isinstance(valued, ValueError)
    assert getattr(valued, "__notes__", None) == [
        f"test scope 'leaks-too' {LEAK_PREAMBLE}\n"
        "  - name 'left' in registry 'leaks-too': still registered, held by <Token left>"
    ]
    failed = report["pytest-fail"].error
    assert type(failed).__name__ == "Failed"

    with pytest.raises(BodiesFailedError) as info:
        report.raise_if_failed()
    first, *rest = str(info.value).split("\n")
    assert first == "3 of 5 bodies run concurrently failed:"
    assert rest[0] == "  - 'asserts' raised AssertionError: arithmetic"
    assert rest[1].startswith("    assert ")  # pytest's rewritten assertion explains itself
    leaks_at = rest.index("  - 'leaks-too' raised ValueError: bad value")
    assert rest[leaks_at:] == [
        "  - 'leaks-too' raised ValueError: bad value",
        f"    test scope 'leaks-too' {LEAK_PREAMBLE}",
        "      - name 'left' in registry 'leaks-too': still registered, held by <Token left>",
        "  - 'pytest-fail' raised Failed: explicitly",
    ]
    assert isinstance(info.value.__cause__, BaseExceptionGroupCompat)
    assert list(info.value.__cause__.exceptions) == [asserted, valued, failed]


async def test_one_failure_is_the_cause_itself() -> None:
    async def fails(scope: TestScope) -> None:
        raise KeyError("k")

    report = await run_concurrently([("only", fails), ("fine", passes)])
    with pytest.raises(BodiesFailedError) as info:
        report.raise_if_failed()
    assert (
        str(info.value) == "1 of 2 bodies run concurrently failed:\n  - 'only' raised KeyError: 'k'"
    )
    assert info.value.__cause__ is report["only"].error


async def test_an_exception_group_is_explained_leaf_by_leaf() -> None:
    async def raises_two(scope: TestScope) -> None:
        await trio.lowlevel.checkpoint()
        raise ExceptionGroupCompat("two", [ValueError("a"), KeyError("b")])

    report = await run_concurrently({"group": raises_two})
    with pytest.raises(BodiesFailedError) as info:
        report.raise_if_failed()
    # The scope propagates the body's own group unchanged (open_test_scope).
    assert str(info.value) == (
        "1 of 1 body run concurrently failed:\n"
        "  - 'group' raised ExceptionGroup: two (2 sub-exceptions)\n"
        "      - ValueError: a\n"
        "      - KeyError: 'b'"
    )


# -- cancellation, interrupts, limits, timeouts --------------------------------------


async def test_cancelling_the_runner_propagates_and_ends_every_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ended: list[str] = []

    async def waits(scope: TestScope) -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.append(scope.namespace or "")

    async def quick(scope: TestScope) -> None:
        ended.append("quick")

    report: RunReport | None = None
    with trio.move_on_after(5.0) as cancelled:
        report = await run_concurrently({"w1": waits, "quick": quick, "w2": waits})
    assert cancelled.cancelled_caught is True
    assert report is None
    assert trio.current_time() == 5.0
    assert sorted(ended) == ["quick", "w1", "w2"]


async def test_cancelling_the_runner_propagates_with_the_foundation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def waits(scope: TestScope) -> None:
        await trio.sleep_forever()

    with trio.CancelScope() as outer:

        async def cancels_everything(scope: TestScope) -> None:
            await trio.testing.wait_all_tasks_blocked()
            outer.cancel()
            await trio.sleep_forever()

        await run_concurrently({"w": waits, "c": cancels_everything}, foundation=True)
        pytest.fail("run_concurrently returned although it was cancelled")  # pragma: no cover
    assert outer.cancelled_caught is True


async def test_a_keyboard_interrupt_in_a_body_propagates_bare() -> None:
    async def interrupts(scope: TestScope) -> None:
        await trio.lowlevel.checkpoint()
        raise KeyboardInterrupt

    async def waits(scope: TestScope) -> None:
        await trio.sleep_forever()

    with pytest.raises(KeyboardInterrupt):
        await run_concurrently({"w": waits, "ki": interrupts})


async def test_max_concurrency_starts_bodies_in_order_as_slots_free(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started: dict[str, float] = {}
    live = peak = 0

    async def one_second(scope: TestScope) -> None:
        nonlocal live, peak
        started[scope.namespace or ""] = trio.current_time()
        live += 1
        peak = max(peak, live)
        await trio.sleep(1.0)
        live -= 1

    names = [f"b{i}" for i in range(6)]
    report = await run_concurrently(dict.fromkeys(names, one_second), max_concurrency=2)
    report.raise_if_failed()
    assert [started[n] for n in names] == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    assert peak == 2
    assert [r.elapsed_s for r in report.results] == [1.0] * 6
    assert report.elapsed_s == 3.0


async def test_a_body_past_its_timeout_fails_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def hangs(scope: TestScope) -> None:
        await trio.sleep_forever()

    async def takes_a_second(scope: TestScope) -> None:
        await trio.sleep(1.0)

    report = await run_concurrently(
        {"hangs": hangs, "second": takes_a_second}, timeout=2.5, foundation=True
    )
    assert [(r.name, r.outcome, r.elapsed_s) for r in report.results] == [
        ("hangs", "raised", 2.5),
        ("second", "passed", 1.0),
    ]
    error = report["hangs"].error
    assert isinstance(error, BodyTimeoutError)
    assert isinstance(error, trio.TooSlowError)
    assert (error.name, error.timeout) == ("hangs", 2.5)
    assert str(error) == (
        "body 'hangs' did not end within 2.5 s (Trio's clock): it was cancelled, "
        "and its leaks were not checked"
    )


# -- the report and the arguments ------------------------------------------------------


async def test_no_bodies_is_an_empty_passing_report(
    autojump_clock: trio.testing.MockClock,
) -> None:
    report = await run_concurrently({})
    assert report == RunReport((), 0.0)
    report.raise_if_failed()


def test_report_lookup_and_result_text() -> None:
    ok = BodyResult("ok", "passed", None, 0.0)
    report = RunReport((ok,), 0.0)
    assert report["ok"] is ok
    assert ok.describe() == "'ok' passed"
    with pytest.raises(KeyError, match=r"no body is named 'missing'; the bodies are: 'ok'"):
        report["missing"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"bodies": [("a", passes), ("a", passes)]},
            ValueError,
            "run_concurrently: two bodies are named 'a'; names must be unique",
        ),
        (
            {"bodies": [passes]},
            TypeError,
            "run_concurrently: bodies must be a mapping of name -> body or (name, body) "
            f"pairs; item 0 is {passes!r}",
        ),
        (
            {"bodies": [(1, passes)]},
            TypeError,
            "run_concurrently: body names must be str, got 1",
        ),
        (
            {"bodies": {"a": "not callable"}},
            TypeError,
            "run_concurrently: body 'a' is not callable: 'not callable'",
        ),
        (
            {"bodies": {}, "values": {}},
            TypeError,
            "run_concurrently: values configure the foundation; pass foundation=True too",
        ),
        (
            {"bodies": {}, "max_concurrency": 0},
            ValueError,
            "max_concurrency must be an integer >= 1 or None, got 0",
        ),
        (
            {"bodies": {}, "max_concurrency": True},
            TypeError,
            "max_concurrency must be an integer >= 1 or None, got bool",
        ),
        (
            {"bodies": {}, "timeout": -1.0},
            ValueError,
            "timeout must be >= 0 (math.inf allowed), got -1.0",
        ),
    ],
)
async def test_bad_arguments(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        await run_concurrently(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message
