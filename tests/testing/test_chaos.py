"""ChaosMonkey: seeded crashes on Trio's clock, reported exactly, under MockClock."""

from __future__ import annotations

import math
import random

import pytest
import trio
import trio.testing
from _guards import checkpoints_even_when_raising

import trioscope
from trioscope.testing._chaos import ChaosMonkey, ChaosRecord
from trioscope.testing._helpers import ServiceWaitTimeoutError, wait_for_service
from trioscope.testing._scope import open_test_scope

pytestmark = pytest.mark.trioscope_scope


class Counter(trioscope.Service):
    def __init__(self) -> None:
        self.value = 0

    async def incr(self) -> int:
        self.value += 1
        return self.value

    async def hold(self, gate: trio.Event) -> None:
        await gate.wait()


NAMES = ["a", "b", "c"]


def _expected(
    seed: int, rate: float, names: list[str], n: int, start: float = 0.0
) -> list[tuple[float, str]]:
    """What the monkey draws when every crash takes no time: (at_s, victim)."""
    rng = random.Random(seed)
    t = start
    out = []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append((t, rng.choice(names)))
    return out


async def _tree(seed: int) -> tuple[float, tuple[ChaosRecord, ...]]:
    async with (
        open_test_scope("chaos"),
        trioscope.open_supervisor(
            [Counter.child_spec(name=n) for n in reversed(NAMES)], max_restarts=1000
        ),
    ):
        t0 = trio.current_time()
        async with ChaosMonkey(seed, rate_per_s=2.0, max_crashes=6) as monkey:
            await trio.sleep(100)
    return t0, monkey.crashes


def _run_tree(seed: int) -> tuple[float, tuple[ChaosRecord, ...]]:
    """One whole run, in a Trio run of its own under a fresh MockClock."""
    return trio.run(_tree, seed, clock=trio.testing.MockClock(autojump_threshold=0))


def _summary(records: tuple[ChaosRecord, ...]) -> list[tuple[float, str, str | None]]:
    return [(r.at_s, r.name, r.outcome.action if r.outcome else r.skipped_reason) for r in records]


def test_same_seed_same_crashes_at_the_exact_drawn_times() -> None:
    t0, first = _run_tree(1234)
    t1, second = _run_tree(1234)
    assert t0 == t1
    assert _summary(first) == _summary(second)
    # Every crash restarted its victim, at the times and on the victims drawn.
    assert [(r.at_s, r.name) for r in first] == _expected(1234, 2.0, NAMES, 6, t0)
    for record in first:
        assert record.crashed
        assert record.skipped_reason is None
        assert record.outcome is not None
        assert (record.outcome.action, record.outcome.child) == ("restarted", record.name)
    # Another seed, other crashes.
    t2, other = _run_tree(99)
    assert _summary(other) != _summary(first)
    assert [(r.at_s, r.name) for r in other] == _expected(99, 2.0, NAMES, 6, t2)


async def test_a_supervised_counter_keeps_serving_and_fails_exactly_after_each_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tick_s = 0.25
    ticks = 80
    seen: list[tuple[float, str, int]] = []  # (time, "ok" | "unavailable", value)
    async with (
        open_test_scope("serving"),
        trioscope.open_supervisor([Counter.child_spec(name="counter")], max_restarts=1000),
    ):
        t0 = trio.current_time()
        ref = await wait_for_service("counter", timeout=0)
        async with ChaosMonkey(3, rate_per_s=0.5) as monkey:
            for k in range(1, ticks + 1):
                await trio.sleep_until(t0 + k * tick_s)
                now = trio.current_time()
                try:
                    seen.append((now, "ok", await ref.call(Counter.incr)))
                except trioscope.ServiceUnavailableError:
                    ref = await wait_for_service("counter", timeout=0)
                    seen.append((now, "unavailable", await ref.call(Counter.incr)))
    crashes = [r.at_s for r in monkey.crashes]
    assert all(r.outcome is not None and r.outcome.action == "restarted" for r in monkey.crashes)
    assert len(crashes) >= 3  # the seed does crash it, several times
    assert not set(crashes) & {t for t, _, _ in seen}  # no crash at a tick itself
    # The call after a crash (and only it) finds the old incarnation gone; the
    # new one starts counting from zero; nothing else ever fails.
    expected = []
    previous, value = t0, 0
    for t, _, _ in seen:
        crashed = any(previous < c < t for c in crashes)
        value = 1 if crashed else value + 1
        expected.append((t, "unavailable" if crashed else "ok", value))
        previous = t
    assert seen == expected


async def test_unregistered_names_are_skipped_recorded_and_not_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_test_scope("skips"),
        trioscope.open_supervisor([Counter.child_spec(name="a")], max_restarts=1000),
    ):
        t0 = trio.current_time()
        async with ChaosMonkey(5, rate_per_s=1.0, names=["ghost", "a"], max_crashes=3) as monkey:
            await trio.sleep(1000)
    rng = random.Random(5)
    expected: list[tuple[float, str, bool]] = []
    t = t0
    while sum(crashed for _, _, crashed in expected) < 3:
        t += rng.expovariate(1.0)
        name = rng.choice(["ghost", "a"])
        expected.append((t, name, name == "a"))
    assert [(r.at_s, r.name, r.crashed) for r in monkey.crashes] == expected
    assert any(name == "ghost" for _, name, _ in expected)
    for record in monkey.crashes:
        if record.name == "ghost":
            assert record.outcome is None
            assert record.skipped_reason == (
                "not registered in the visible registry scopes right now"
            )
    assert monkey.report() == monkey.crashes


async def test_without_names_it_chooses_among_the_services_registered_here(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_scope("registered") as scope:
        t0 = trio.current_time()
        first = _expected(8, 1.0, ["x"], 1, t0)[0][0]
        async with ChaosMonkey(8, rate_per_s=1.0, max_crashes=2) as monkey:
            await trio.sleep_until(math.nextafter(first, 0))
            assert not monkey.report()
            await trio.sleep(10)  # nothing registered: a skip per draw
            assert monkey.crashes[0] == ChaosRecord(
                first,
                "",
                None,
                "no service is registered in the scope's registry",
            )
            with scope.registry.registered("not-a-service", 42):
                async with trioscope.open_supervisor(
                    [Counter.child_spec(name="b"), Counter.child_spec(name="a")],
                    max_restarts=100,
                ):
                    up = trio.current_time()
                    await trio.sleep(1000)
    # Draws before the services were up were skips (no victim chosen); then
    # victims among the registered services, sorted ("not-a-service" is no service).
    rng = random.Random(8)
    expected: list[tuple[float, str, bool]] = []
    t = t0
    while sum(crashed for _, _, crashed in expected) < 2:
        t += rng.expovariate(1.0)
        if t < up:
            expected.append((t, "", False))
        else:
            expected.append((t, rng.choice(["a", "b"]), True))
    assert [(r.at_s, r.name, r.crashed) for r in monkey.crashes] == expected
    assert expected[0][1] == ""
    assert expected[-1][1] != ""


async def test_the_end_of_the_block_withdraws_a_crash_in_progress(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()
    async with (
        open_test_scope("withdraw"),
        trioscope.open_supervisor([Counter.child_spec(name="c")]),
    ):
        ref = await wait_for_service("c", timeout=0)
        await ref.cast(Counter.hold, gate)  # the crash queues behind this
        first = _expected(2, 1.0, ["c"], 1)[0][0]  # an offset from now
        async with ChaosMonkey(2, rate_per_s=1.0, names=["c"]) as monkey:
            await trio.sleep(first + 1.0)
            await trio.testing.wait_all_tasks_blocked()
        assert not monkey.report()
        gate.set()
        assert await ref.call(Counter.incr) == 1  # the same incarnation, never crashed
        assert await wait_for_service("c", timeout=0) == ref


class SlowRestart(trioscope.Service):
    """Starts at once the first time; its later incarnations take 1 s to start."""

    def __init__(self, starts: list[float]) -> None:
        self.starts = starts

    async def init(self) -> None:
        if self.starts:
            await trio.sleep(1.0)
        self.starts.append(trio.current_time())

    async def started(self) -> list[float]:
        return list(self.starts)


async def test_a_crash_that_ran_before_the_block_ended_is_recorded_without_outcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []
    async with (
        open_test_scope("cut"),
        trioscope.open_supervisor([SlowRestart.child_spec(starts, name="c")], max_restarts=100),
    ):
        t0 = trio.current_time()
        first = _expected(4, 1.0, ["c"], 1, t0)[0][0]
        async with ChaosMonkey(4, rate_per_s=1.0, names=["c"]) as monkey:
            await trio.sleep_until(first + 0.5)  # crashed at first, restarting until first + 1
        assert monkey.crashes == (ChaosRecord(first, "c", None, None),)
        assert monkey.crashes[0].crashed
        ref = await wait_for_service("c", timeout=1.0)
        assert await ref.call(SlowRestart.started) == [t0, first + 1.0]


async def test_the_monkeys_error_ends_the_block_and_propagates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()
    async with (
        open_test_scope("timeout"),
        trioscope.open_supervisor([Counter.child_spec(name="c")]),
    ):
        ref = await wait_for_service("c", timeout=0)
        await ref.cast(Counter.hold, gate)
        first = _expected(6, 1.0, ["c"], 1)[0][0]
        t0 = trio.current_time()
        body_ended = trio.Event()

        async def block() -> None:
            async with ChaosMonkey(6, rate_per_s=1.0, names=["c"], timeout=2.0):
                try:
                    await trio.sleep_forever()
                finally:
                    body_ended.set()

        with pytest.raises(ServiceWaitTimeoutError, match="within 2 s"):
            await block()
        assert body_ended.is_set()
        assert trio.current_time() == t0 + first + 2.0
        gate.set()
        assert await ref.call(Counter.incr) == 1  # the crash was withdrawn


async def test_the_blocks_own_error_propagates_as_the_very_object(
    autojump_clock: trio.testing.MockClock,
) -> None:
    error = ValueError("mine")
    async with open_test_scope("own"):

        async def block() -> None:
            async with ChaosMonkey(1, rate_per_s=1.0):
                raise error

        with pytest.raises(ValueError, match=r"^mine$") as info:
            await block()
        assert info.value is error


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"rate_per_s": 0}, ValueError, "rate_per_s must be finite and > 0"),
        ({"rate_per_s": -1.0}, ValueError, "rate_per_s must be finite and > 0"),
        ({"rate_per_s": math.nan}, ValueError, "rate_per_s must be finite and > 0 .*, got nan$"),
        ({"rate_per_s": math.inf}, ValueError, "rate_per_s must be finite and > 0 .*, got inf$"),
        ({"rate_per_s": "1"}, TypeError, "rate_per_s must be a number"),
        ({"rate_per_s": 1.0, "max_crashes": -1}, ValueError, "max_crashes must be >= 0, got -1"),
        ({"rate_per_s": 1.0, "max_crashes": 1.5}, TypeError, "max_crashes must be an int"),
        ({"rate_per_s": 1.0, "names": "abc"}, TypeError, "names must be a sequence"),
        ({"rate_per_s": 1.0, "names": []}, ValueError, "names is empty"),
        ({"rate_per_s": 1.0, "names": [1]}, TypeError, "names must be strings"),
        ({"rate_per_s": 1.0, "timeout": -1.0}, ValueError, "timeout must be"),
    ],
)
def test_bad_arguments_raise_with_clear_messages(
    kwargs: dict[str, object], exc: type[Exception], message: str
) -> None:
    with pytest.raises(exc, match=f"^ChaosMonkey: {message}|^{message}"):
        ChaosMonkey(1, **kwargs)  # type: ignore[arg-type]


def test_the_seed_must_be_an_int() -> None:
    with pytest.raises(TypeError, match=r"^ChaosMonkey: seed must be an int, got float$"):
        ChaosMonkey(1.0, rate_per_s=1.0)  # type: ignore[arg-type]


@pytest.mark.no_trioscope_scope("checks NoRegistryError outside every registry scope")
async def test_entering_needs_a_registry_and_happens_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    monkey = ChaosMonkey(1, rate_per_s=1.0)
    with checkpoints_even_when_raising(), pytest.raises(trioscope.NoRegistryError):
        async with monkey:
            pass  # pragma: no cover
    async with open_test_scope("once"):
        monkey = ChaosMonkey(1, rate_per_s=1.0)
        async with monkey:
            pass
        with pytest.raises(RuntimeError, match="used once"):
            async with monkey:
                pass  # pragma: no cover
