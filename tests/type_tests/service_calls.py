"""Typing checks that must PASS mypy --strict (run by test_typing.py, not by pytest)."""

from __future__ import annotations

from typing import assert_type

import trioscope


class Counter(trioscope.Service):
    def __init__(self, start: int = 0) -> None:
        self.value = start

    async def incr(self, by: int = 1) -> int:
        self.value += by
        return self.value

    async def label(self, prefix: str, *, upper: bool = False) -> str:
        text = f"{prefix}{self.value}"
        return text.upper() if upper else text


async def typed_calls(ref: trioscope.ServiceRef[Counter]) -> None:
    assert_type(await ref.call(Counter.incr, by=2), int)
    assert_type(await ref.call(Counter.incr), int)
    assert_type(await ref.call(Counter.label, "n=", upper=True), str)
    assert_type(await ref.cast(Counter.incr, 3), None)
    assert_type(ref.try_cast(Counter.incr), None)
    assert_type(ref.with_timeout(1.0), trioscope.ServiceRef[Counter])
    assert_type(ref.statistics(), trioscope.ServiceStatistics)
    assert_type(await ref.health(), trioscope.Health)


async def by_name() -> None:
    assert_type(await trioscope.call("counter", Counter.incr, by=2), int)
    found = trioscope.whereis("counter", Counter)
    if found is not None:
        assert_type(await found.call(Counter.label, "x"), str)
    untyped = trioscope.whereis("counter")
    if untyped is not None:
        assert_type(await untyped.call(Counter.incr), int)
