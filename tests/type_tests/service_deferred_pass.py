"""Deferred replies are typed: calling a handler that returns ``Deferred[R]`` gives ``R``."""

from __future__ import annotations

from typing import assert_type

import trioscope


class Pool(trioscope.Service):
    def __init__(self) -> None:
        self.waiting: list[trioscope.Deferred[int]] = []

    async def acquire(self, timeout: float = 1.0) -> trioscope.Deferred[int]:
        deferred: trioscope.Deferred[int] = self.defer()
        self.waiting.append(deferred)
        return deferred

    async def release(self) -> bool:
        ok: bool = self.waiting.pop().reply(3)
        return ok

    async def tick(self) -> None:
        timer = self.send_after(1.0, Pool.release)
        assert_type(timer, trioscope.Timer)
        assert_type(timer.cancel(), bool)
        self.start_soon(self.sleep_for, 1.0)
        self.stop()
        self.stop(RuntimeError("done"))

    async def sleep_for(self, seconds: float) -> None:
        pass


async def typed(ref: trioscope.ServiceRef[Pool]) -> None:
    assert_type(await ref.call(Pool.acquire), int)
    assert_type(await ref.call(Pool.acquire, timeout=2.0), int)
    assert_type(await ref.call(Pool.release), bool)
    await ref.cast(Pool.acquire)
