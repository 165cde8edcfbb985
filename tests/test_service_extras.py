"""Tests for what handlers can do beyond answering (issue 8): wrong arguments stay
the caller's error, self-calls fail at once, self-stop, owned tasks and timers,
deferred replies, option names, and names released as soon as a service stops.
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from test_service import exactly, running, stats

import trioscope
from trioscope import (
    CallingSelfError,
    CallTimeoutError,
    MailboxFullError,
    Service,
    ServiceCrashedError,
    ServiceRef,
)

# -- 2. a caller's wrong arguments -------------------------------------------------


class Account(Service):
    def __init__(self, balance: int = 0) -> None:
        self.balance = balance

    async def deposit(self, amount: int) -> int:
        self.balance += amount
        return self.balance

    async def body_type_error(self) -> None:
        raise TypeError("raised by the handler's body")


async def test_arguments_that_do_not_bind_raise_type_error_in_the_caller() -> None:
    async with running() as host:
        ref = await host.start(Account.child_spec(balance=10, name="acct"))
        with pytest.raises(
            TypeError,
            match=exactly(
                "bad arguments for handler deposit() of service 'acct' (it did not run; "
                "the service is untouched): Account.deposit() got an unexpected keyword "
                "argument 'amont'"
            ),
        ) as info:
            await ref.call(Account.deposit, amont=1)  # type: ignore[call-arg]
        assert isinstance(info.value.__cause__, TypeError)
        with pytest.raises(TypeError, match="missing 1 required positional argument"):
            await trioscope.call("acct", Account.deposit)  # type: ignore[call-arg]
        # Untouched: same incarnation, same state, nothing counted as handled.
        assert await ref.call(Account.deposit, 5) == 15
        assert trioscope.whereis("acct") == ref
        assert stats(ref) == (0, 0, 1)
        assert ref.incarnation not in host.exits


async def test_a_cast_with_wrong_arguments_is_logged_and_the_service_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running() as host:
        ref = await host.start(Account.child_spec(balance=10, name="acct"))
        await ref.cast(Account.deposit, 1, 2)  # type: ignore[call-arg]
        assert await ref.call(Account.deposit, 1) == 11
        assert [r.getMessage() for r in caplog.records] == [
            "service 'acct' got a cast with bad arguments for deposit(1, 2) (it did not "
            "run): Account.deposit() takes 2 positional arguments but 3 were given"
        ]


async def test_a_type_error_raised_by_the_handler_body_is_still_a_crash() -> None:
    async with running() as host:
        ref = await host.start(Account.child_spec(name="acct"))
        with pytest.raises(ServiceCrashedError) as info:
            await ref.call(Account.body_type_error)
        assert isinstance(info.value.__cause__, TypeError)
        exit_ = await host.ended(ref)
        assert isinstance(exit_, TypeError)
        assert str(exit_) == "raised by the handler's body"


# -- 1. calling itself ------------------------------------------------------------------


class Selfish(Service):
    def __init__(self) -> None:
        self.ref: ServiceRef[Selfish] | None = None

    async def remember(self, ref: ServiceRef[Selfish]) -> None:
        self.ref = ref

    async def ping(self) -> str:
        return "pong"

    async def call_self_by_ref(self) -> str:
        assert self.ref is not None
        return await self.ref.with_timeout(math.inf).call(Selfish.ping)

    async def call_self_by_name(self) -> str:
        return await trioscope.call("selfish", Selfish.ping)

    async def cast_self(self, times: int) -> int:
        assert self.ref is not None
        sent = 0
        for _ in range(times):
            await self.ref.cast(Selfish.ping)
            sent += 1
        return sent


CALLING_SELF = (
    "handler {running}() of service 'selfish' called its own service (ping()): a "
    "service takes one message at a time, so the call could never be answered. "
    "Call the method directly (await self.ping(...)), or cast"
)


@pytest.mark.parametrize("how", ["call_self_by_ref", "call_self_by_name"])
async def test_a_handler_calling_its_own_service_fails_at_once(
    how: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with running() as host:
        ref = await host.start(Selfish.child_spec(name="selfish"))
        await ref.call(Selfish.remember, ref)
        start = trio.current_time()
        with pytest.raises(ServiceCrashedError) as info:
            await ref.call(getattr(Selfish, how))
        assert trio.current_time() == start
        cause = info.value.__cause__
        assert isinstance(cause, CallingSelfError)
        assert isinstance(cause, RuntimeError)
        assert str(cause) == CALLING_SELF.format(running=how)
        assert (cause.service, cause.handler, cause.caller) == ("'selfish'", "ping", how)


async def test_a_self_cast_into_a_full_mailbox_fails_at_once_instead_of_wedging() -> None:
    async with running() as host:
        ref = await host.start(Selfish.child_spec(name="selfish", mailbox_size=2))
        await ref.call(Selfish.remember, ref)
        assert await ref.call(Selfish.cast_self, 2) == 2
        with pytest.raises(ServiceCrashedError) as info:
            await ref.call(Selfish.cast_self, 3)
        assert isinstance(info.value.__cause__, MailboxFullError)


def test_the_timeout_message_mentions_call_cycles() -> None:
    assert str(CallTimeoutError("'a'", "get", 5.0)) == (
        "call to 'a' get() got no reply within 5 s; if the message was still queued it "
        "was withdrawn and will not run. Use ref.with_timeout(seconds) for a longer "
        "budget; a cycle of calls (A calls B, which calls A) also ends here"
    )
