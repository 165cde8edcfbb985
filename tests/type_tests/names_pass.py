"""Typing checks for services by name that must PASS mypy --strict (run by test_typing.py)."""

from __future__ import annotations

from typing import Any, assert_type

import trioscope


class Counter(trioscope.Service):
    async def incr(self, by: int = 1) -> int:
        return by

    async def label(self, prefix: str, *, upper: bool = False) -> str:
        return prefix.upper() if upper else prefix


async def typed_by_name() -> None:
    assert_type(trioscope.whereis("c", Counter), trioscope.ServiceRef[Counter] | None)
    assert_type(trioscope.whereis("c"), trioscope.ServiceRef[Any] | None)
    assert_type(await trioscope.call("c", Counter.incr, by=2), int)
    assert_type(await trioscope.cast("c", Counter.incr), None)

    svc = trioscope.by_name("c", Counter, timeout=30)
    assert_type(svc, trioscope.NameRef[Counter])
    assert_type(trioscope.by_name("c"), trioscope.NameRef[Any])
    assert_type(svc.with_timeout(1.0), trioscope.NameRef[Counter])
    assert_type(await svc.call(Counter.incr, by=2), int)
    assert_type(await svc.call(Counter.label, "n=", upper=True), str)
    assert_type(await svc.cast(Counter.incr, 3), None)
    assert_type(await trioscope.by_name("c").call(Counter.incr), int)
    assert_type(svc.whereis(), trioscope.ServiceRef[Counter] | None)
    assert_type(await svc.wait_for(), trioscope.ServiceRef[Counter])

    ref = await trioscope.wait_for_service("c", Counter)
    assert_type(ref, trioscope.ServiceRef[Counter])
    assert_type(
        await trioscope.wait_for_service("c", Counter, after=ref), trioscope.ServiceRef[Counter]
    )
    assert_type(await trioscope.wait_for_service("c"), trioscope.ServiceRef[Any])

    reg = trioscope.current_registry()
    assert_type(await reg.wait_for("c", after=ref), object)
