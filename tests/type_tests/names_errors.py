"""Typing checks for services by name that must FAIL mypy: each line with an E comment errs."""

from __future__ import annotations

import trioscope


class Counter(trioscope.Service):
    async def incr(self, by: int = 1) -> int:
        return by


class Other(trioscope.Service):
    async def ping(self) -> None:
        return None


async def wrong() -> None:
    ref = trioscope.whereis("c", Counter)
    assert ref is not None
    await ref.call(Other.ping)  # E: whereis with a class gives that class's ref
    svc = trioscope.by_name("c", Counter, timeout=3)
    await svc.call(Counter.incr, by="two")  # E: wrong argument type
    await svc.call(Other.ping)  # E: handler of another service
    await svc.cast(Counter.incr, 1, 2)  # E: too many arguments
    text: str = await svc.call(Counter.incr)  # E: int is not str
    trioscope.by_name("c", timeout="3")  # E: timeout is a number
    trioscope.by_name("c", int)  # E: not a service class
    started = await trioscope.wait_for_service("c", Counter)
    await started.call(Other.ping)  # E: typed for Counter
