"""Typing checks that must FAIL: each marked line is an error, and no other line."""

from __future__ import annotations

import trioscope
from trioscope import ChildSpec, ServiceRef


class Counter(trioscope.Service):
    async def incr(self, by: int = 1) -> int:
        return by


class Other(trioscope.Service):
    async def other(self) -> str:
        return ""


async def main() -> None:
    wrong: ChildSpec[ServiceRef[Other]] = Counter.child_spec()  # E: another service's ref
    async with trioscope.open_registry(), trioscope.open_dynamic_supervisor() as sup:
        ref = await sup.start_child(Counter.child_spec())
        await ref.call(Other.other)  # E: a handler of another service
        text: str = await ref.call(Counter.incr)  # E: incr returns an int
    del wrong, text
