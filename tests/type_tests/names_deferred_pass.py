"""Calls by name of a handler returning ``Deferred[R]`` give ``R`` (must PASS mypy --strict)."""

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

    async def size(self) -> int:
        return len(self.waiting)


async def typed() -> None:
    assert_type(await trioscope.call("pool", Pool.acquire), int)
    assert_type(await trioscope.call("pool", Pool.acquire, timeout=2.0), int)
    assert_type(await trioscope.call("pool", Pool.size), int)
    pool = trioscope.by_name("pool", Pool, timeout=30)
    assert_type(await pool.call(Pool.acquire), int)
    assert_type(await pool.call(Pool.acquire, 2.0), int)
    assert_type(await pool.call(Pool.size), int)
    assert_type(await trioscope.by_name("pool").call(Pool.acquire), int)
    await trioscope.cast("pool", Pool.acquire)
    await pool.cast(Pool.acquire)
