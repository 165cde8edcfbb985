"""Properties of the ConfigServer: linearizable updates and reads, gap-free subscriptions.

Concurrent clients update and read while a chaos task stops and restarts the
server; afterwards the history is checked against a plain sequential model.
The versions the server hands out give the linearization order: version *v*
is the model's state after the *v*-th applied change.
"""

from __future__ import annotations

from typing import Any

import attrs
import hypothesis
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import trioscope
from trioscope.foundation import (
    ConfigRejected,
    ConfigUpdateTimeoutError,
    SubscriptionOverflowError,
    config,
)
from trioscope.foundation._settings import at_least, setting
from trioscope.testing._scope import open_test_scope

pytestmark = pytest.mark.trioscope_scope

hypothesis.register_random(config.RETRY_RANDOM)


@attrs.frozen
class Pair:
    low: int = setting(1, updatable=True, validator=at_least(0))
    high: int = setting(5, updatable=True, validator=at_least(0))

    def __attrs_post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")


def model_apply(state: Pair | None, path: str, value: int) -> Pair | None:
    """The sequential model: the new state, or None if the update is refused."""
    assert state is not None
    low, high = (value, state.high) if path == "low" else (state.low, value)
    if value < 0 or low > high:
        return None
    return Pair(low, high)


Op = tuple[str, str, int, float, float]  # (kind, path, value, sleep before, timeout_s)
ops = st.tuples(
    st.sampled_from(["update", "update", "read", "reset"]),
    st.sampled_from(["low", "high"]),
    st.integers(-1, 8),
    st.sampled_from([0.0, 0.0, 0.01, 0.1, 0.5]),
    st.sampled_from([30.0, 30.0, 0.5]),
)


@attrs.define
class Record:
    kind: str
    path: str
    value: int
    before: int  # the published version when the call began
    after: int  # ... when it returned
    version: int | None = None  # what it returned (update/reset) or read (read)
    seen: Pair | None = None  # what a read saw
    error: str | None = None


async def run_history(
    clients: list[list[Op]],
    chaos: list[tuple[float, float]],
    buffer: int,
    reader_pace: float,
) -> tuple[list[Record], list[tuple[str, Any]], Pair]:
    records: list[Record] = []
    seen: list[tuple[str, Any]] = []  # ("change", ConfigChange) / ("snapshot", ConfigSnapshot)
    spec = config.config_spec(Pair, env={})
    async with (
        open_test_scope("linearizable-config"),
        trioscope.open_supervisor([spec], max_restarts=1000) as sup,
    ):
        loaded = config.snapshot(Pair).config
        inner = sup.which_children()[0].value
        assert isinstance(inner, trioscope.Supervisor)
        done = trio.Event()

        async def client(script: list[Op]) -> None:
            for kind, path, value, pause, timeout_s in script:
                await trio.sleep(pause)
                before = config.snapshot().version
                record = Record(kind, path, value, before, before)
                if kind == "read":
                    snap = config.snapshot(Pair)
                    record.version, record.seen = snap.version, snap.config
                else:
                    try:
                        if kind == "reset":
                            record.version = await config.reset(timeout_s=timeout_s)
                        else:
                            record.version = await config.update(path, value, timeout_s=timeout_s)
                    except ConfigRejected as exc:
                        record.error = exc.rule
                    except ConfigUpdateTimeoutError:
                        record.error = "timeout"
                record.after = config.snapshot().version
                records.append(record)

        async def subscriber() -> None:
            while not done.is_set():
                async with config.subscribe(buffer=buffer) as changes:
                    seen.append(("snapshot", config.snapshot(Pair)))
                    try:
                        while True:
                            with trio.move_on_after(5):
                                seen.append(("change", await changes.receive()))
                                await trio.sleep(reader_pace)
                                continue
                            if done.is_set():
                                return
                    except SubscriptionOverflowError:
                        seen.append(("cut", None))

        async def chaos_monkey() -> None:
            for wait, down in chaos:
                await trio.sleep(wait)
                await inner.terminate_child("config")
                await trio.sleep(down)
                await inner.restart_child("config")

        async with trio.open_nursery() as watchers:
            watchers.start_soon(subscriber)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(chaos_monkey)
                for script in clients:
                    nursery.start_soon(client, script)
            done.set()
    return records, seen, loaded


def _at(state: Pair, path: str) -> object:
    return state if path == "" else getattr(state, path)


def check(records: list[Record], seen: list[tuple[str, Any]], loaded: Pair) -> None:
    changes = sorted(
        (r for r in records if r.kind != "read" and r.error is None), key=lambda r: r.version or 0
    )
    # Every version from 1 up is the result of exactly one returned update: none
    # is lost, none is applied twice, and no withdrawn update was applied.
    assert [r.version for r in changes] == list(range(1, len(changes) + 1))
    states: list[Pair] = [loaded]
    for r in changes:
        assert r.version is not None
        assert r.before < r.version <= r.after  # it took effect during the call
        new = loaded if r.kind == "reset" else model_apply(states[-1], r.path, r.value)
        assert new is not None, f"the server applied {r} that the model refuses"
        states.append(new)
    for r in records:
        if r.kind == "read":
            assert r.version is not None
            assert r.seen == states[r.version]
        elif r.error is not None and r.error != "timeout":
            # Refused in some state it could have been linearized at.
            candidates = states[r.before : r.after + 1]
            assert any(model_apply(s, r.path, r.value) is None for s in candidates), r
    # The subscriber: each run of changes continues its snapshot without gap or
    # duplicate, and matches the model.
    expected_version = None
    for kind, item in seen:
        if kind == "snapshot":
            assert item.config == states[item.version]
            expected_version = item.version + 1
        elif kind == "change":
            assert item.version == expected_version
            assert item.old == _at(states[item.version - 1], item.path)
            assert item.new == _at(states[item.version], item.path)
            expected_version += 1
    assert expected_version is not None


@hypothesis.settings(max_examples=40, deadline=None)
@given(
    clients=st.lists(st.lists(ops, max_size=8), min_size=1, max_size=4),
    chaos=st.lists(
        st.tuples(st.sampled_from([0.0, 0.05, 0.3]), st.sampled_from([0.0, 0.1, 1.0])),
        max_size=3,
    ),
    buffer=st.integers(1, 4),
    reader_pace=st.sampled_from([0.0, 0.05, 0.5]),
)
def test_concurrent_updates_and_reads_are_linearizable(
    clients: list[list[Op]],
    chaos: list[tuple[float, float]],
    buffer: int,
    reader_pace: float,
) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    records, seen, loaded = trio.run(run_history, clients, chaos, buffer, reader_pace, clock=clock)
    check(records, seen, loaded)
