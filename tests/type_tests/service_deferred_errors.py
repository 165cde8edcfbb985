"""Typing checks that must FAIL mypy: each line with an E comment must be reported there."""

from __future__ import annotations

import trioscope


class Pool(trioscope.Service):
    async def acquire(self) -> trioscope.Deferred[int]:
        deferred: trioscope.Deferred[int] = self.defer()
        deferred.reply("three")  # E: the reply must be an int
        return deferred

    async def release(self) -> None:
        self.send_after(1.0, Pool.acquire, 1)  # E: acquire takes no argument
        self.send_after("soon", Pool.release)  # E: seconds is a number
        self.start_soon(self.sleep_for, "one")  # E: a task's arguments are checked
        self.stop("done")  # E: the reason is an exception

    async def sleep_for(self, seconds: float) -> None:
        pass


async def wrong(ref: trioscope.ServiceRef[Pool]) -> None:
    text: str = await ref.call(Pool.acquire)  # E: the reply is an int, not a str
    await ref.call(Pool.acquire, 1)  # E: acquire takes no argument
