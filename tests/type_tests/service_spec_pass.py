"""Typing checks that must PASS mypy --strict: a service's child spec starts a typed ref."""

from __future__ import annotations

from typing import assert_type

import trioscope
from trioscope import ChildSpec, ServiceRef


class Counter(trioscope.Service):
    def __init__(self, start: int = 0) -> None:
        self.value = start

    async def incr(self, by: int = 1) -> int:
        self.value += by
        return self.value


async def main() -> None:
    spec = Counter.child_spec(start=1, name="counter")
    assert_type(spec, ChildSpec[ServiceRef[Counter]])
    async with trioscope.open_registry(), trioscope.open_dynamic_supervisor() as sup:
        ref = await sup.start_child(spec)
        assert_type(ref, ServiceRef[Counter])
        assert_type(await ref.call(Counter.incr, by=2), int)
