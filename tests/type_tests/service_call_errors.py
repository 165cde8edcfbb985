"""Typing checks that must FAIL mypy: each line with an E comment must be reported there."""

from __future__ import annotations

import trioscope


class Counter(trioscope.Service):
    async def incr(self, by: int = 1) -> int:
        return by


class Other(trioscope.Service):
    async def ping(self) -> None:
        return None


async def wrong(ref: trioscope.ServiceRef[Counter]) -> None:
    await ref.call(Counter.incr, by="two")  # E: wrong argument type
    await ref.call(Counter.incr, 1, 2)  # E: too many arguments
    await ref.call(Counter.incr, step=1)  # E: unknown keyword
    await ref.call(Other.ping)  # E: handler of another service
    result: str = await ref.call(Counter.incr)  # E: int is not str
    await trioscope.call("counter", Counter.incr, by="two")  # E: by name, too
