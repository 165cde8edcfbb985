"""Calls by name of a handler returning ``Deferred[R]`` (must FAIL mypy on each E line)."""

from __future__ import annotations

import trioscope


class Pool(trioscope.Service):
    async def acquire(self, timeout: float = 1.0) -> trioscope.Deferred[int]:
        deferred: trioscope.Deferred[int] = self.defer()
        return deferred


async def wrong() -> None:
    text: str = await trioscope.call("pool", Pool.acquire)  # E: the reply is an int
    await trioscope.call("pool", Pool.acquire, timeout="2")  # E: wrong argument type
    pool = trioscope.by_name("pool", Pool)
    await pool.call(Pool.acquire, 1.0, 2)  # E: too many arguments
