"""A seeded chaos monkey: crashes services in a scope at a given rate, and says what it did.

::

    import trio, trio.testing, trioscope
    from trioscope.testing._chaos import ChaosMonkey

    class Counter(trioscope.Service):
        def __init__(self) -> None:
            self.value = 0

        async def incr(self) -> int:
            self.value += 1
            return self.value

    async def main() -> None:
        async with trioscope.open_registry(isolated=True):
            async with trioscope.open_supervisor(
                [Counter.child_spec(name="counter")], max_restarts=100
            ):
                async with ChaosMonkey(7, rate_per_s=0.5, max_crashes=3) as monkey:
                    await trio.sleep(60)
        assert [r.name for r in monkey.crashes] == ["counter"] * 3
        assert all(r.outcome is not None and r.outcome.action == "restarted"
                   for r in monkey.crashes)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

Everything the monkey does is drawn from one ``random.Random(seed)`` and
timed on Trio's clock, so under `trio.testing.MockClock` the same seed and the
same service tree give the same crashes at the same times.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import final

import attrs
import trio

from .._child_spec import _check_seconds, _is_int, _is_number
from .._errors import ServiceUnavailableError
from .._registry import Registry, _current_registry_or_none, _no_registry_error
from .._service import ServiceRef
from ._helpers import (
    DEFAULT_WAIT_S,
    CrashNotReachedError,
    CrashOutcome,
    SimulatedCrash,
    simulate_crash,
)

if sys.version_info < (3, 11):  # pragma: no cover - Trio brings the backport there
    from exceptiongroup import BaseExceptionGroup


@attrs.frozen
class ChaosRecord:
    """One thing a `ChaosMonkey` did: a crash, or a crash it skipped.

    Three kinds, told apart by ``outcome`` and ``skipped_reason``:

    - a crash whose supervisor acted: ``outcome`` is set, ``skipped_reason`` is ``None``;
    - a skip (nothing was crashed): ``outcome`` is ``None``, ``skipped_reason`` says why;
    - a crash that ran, cut off by the end of the monkey's block before its
      supervisor acted (only ever the last record): both are ``None``.
    """

    at_s: float
    """When the monkey chose the victim and sent the crash (Trio's clock, seconds)."""
    name: str
    """The victim's name; ``""`` for a skip because no service was registered at all."""
    outcome: CrashOutcome | None
    """What the victim's supervisor did (see `simulate_crash`)."""
    skipped_reason: str | None
    """Why nothing was crashed, for a skip; else ``None``."""

    @property
    def crashed(self) -> bool:
        """Whether the service did crash (``skipped_reason is None``)."""
        return self.skipped_reason is None


@final
class ChaosMonkey:
    """Crash services in the current registry scope at random, while a block runs.

    ``async with ChaosMonkey(seed, rate_per_s=...) as monkey:`` starts a
    background task that, until the block ends, repeats:

    1. sleep ``rng.expovariate(rate_per_s)`` seconds of Trio's clock (mean
       ``1 / rate_per_s``), ``rng`` being ``random.Random(seed)``;
    2. choose the victim with ``rng.choice`` among *names* (in the order given)
       or, without *names*, among the names of every `trioscope.ServiceRef`
       registered in the registry current at ``async with`` (that registry
       itself, not the scopes around it), sorted, at that moment;
    3. crash it with `simulate_crash`, **waiting until its supervisor has
       acted** before drawing the next interval: intervals run from the end of
       one crash to the next, so a restart that takes time (a backoff does not:
       ``simulate_crash`` returns at the decision) lowers the realized rate.

    A victim not registered as a service right now (or stopping, or whose
    incarnation ended before the crash reached it) is not crashed: the monkey
    records a skip and goes on. Skips do not count toward *max_crashes*; after
    *max_crashes* crashes the monkey stops (the block goes on).

    When the block ends, the monkey's task is cancelled; a crash in progress
    that has not run is withdrawn (it never happens later); one that ran but
    whose supervisor had not acted yet is recorded with ``outcome=None``.
    Errors of the monkey (a crash not done within *timeout*) cancel the block
    and propagate from ``async with``; the block's own exception propagates
    unchanged (the very object).

    A monkey is used once. `crashes` can be read at any time.

    Args:
        seed: Seeds the monkey's ``random.Random``.
        rate_per_s: Crashes per second of Trio's clock (the mean interval is
            ``1 / rate_per_s`` seconds); finite and > 0.
        names: The services to choose victims from; ``None`` for every service
            registered in the scope's registry at each draw.
        max_crashes: Stop after this many crashes (>= 0); ``None``: never stop.
        timeout: Seconds of Trio's clock each crash may take (see
            `simulate_crash`).

    Raises:
        TypeError: *seed* or *max_crashes* is not an int, *rate_per_s* or
            *timeout* not a number, *names* not a sequence of strings.
        ValueError: *rate_per_s* <= 0 or not finite, *max_crashes* < 0,
            *names* empty, *timeout* negative or NaN.
    """

    def __init__(
        self,
        seed: int,
        *,
        rate_per_s: float,
        names: Sequence[str] | None = None,
        max_crashes: int | None = None,
        timeout: float = DEFAULT_WAIT_S,
    ) -> None:
        if not _is_int(seed):
            raise TypeError(f"ChaosMonkey: seed must be an int, got {type(seed).__name__}")
        if not _is_number(rate_per_s):
            raise TypeError(
                f"ChaosMonkey: rate_per_s must be a number of crashes per second, "
                f"got {type(rate_per_s).__name__}"
            )
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError(
                f"ChaosMonkey: rate_per_s must be finite and > 0 (crashes per second "
                f"of Trio's clock), got {rate_per_s!r}"
            )
        if max_crashes is not None:
            if not _is_int(max_crashes):
                raise TypeError(
                    "ChaosMonkey: max_crashes must be an int >= 0 or None, "
                    f"got {type(max_crashes).__name__}"
                )
            if max_crashes < 0:
                raise ValueError(f"ChaosMonkey: max_crashes must be >= 0, got {max_crashes}")
        chosen: tuple[str, ...] | None = None
        if names is not None:
            checked: object = names
            if isinstance(checked, (str, bytes)) or not isinstance(checked, Sequence):
                raise TypeError(
                    f"ChaosMonkey: names must be a sequence of service names, got {names!r}"
                )
            chosen = tuple(names)
            for name in chosen:
                if not isinstance(name, str):
                    raise TypeError(f"ChaosMonkey: names must be strings, got {name!r}")
            if not chosen:
                raise ValueError(
                    "ChaosMonkey: names is empty; pass None to choose among every "
                    "registered service"
                )
        _check_seconds("timeout", timeout, allow_inf=True)
        self.seed = seed
        """The seed of the monkey's ``random.Random``."""
        self.rate_per_s = float(rate_per_s)
        """Mean crashes per second of Trio's clock."""
        self.names = chosen
        """The names victims are chosen from, or ``None`` for every registered service."""
        self.max_crashes = max_crashes
        """The monkey stops after this many crashes; ``None``: never."""
        self.timeout = timeout
        """Seconds of Trio's clock each crash may take."""
        self._records: list[ChaosRecord] = []
        self._cm: AbstractAsyncContextManager[ChaosMonkey] | None = None
        self._used = False

    def __repr__(self) -> str:
        return (
            f"<ChaosMonkey seed={self.seed} rate_per_s={self.rate_per_s:g} "
            f"{len(self._records)} records>"
        )

    @property
    def crashes(self) -> tuple[ChaosRecord, ...]:
        """Everything the monkey did so far, in order: crashes and skips."""
        return tuple(self._records)

    def report(self) -> tuple[ChaosRecord, ...]:
        """The same as `crashes`."""
        return self.crashes

    async def __aenter__(self) -> ChaosMonkey:
        if self._used:
            raise RuntimeError("a ChaosMonkey is used once: make a new one")
        registry = _current_registry_or_none()
        if registry is None:
            await trio.lowlevel.checkpoint()
            raise _no_registry_error("ChaosMonkey")
        self._used = True
        self._cm = self._open(registry)
        return await self._cm.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._cm is not None
        cm, self._cm = self._cm, None
        return await cm.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _open(self, registry: Registry) -> AsyncIterator[ChaosMonkey]:
        body_error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run, registry, name=f"ChaosMonkey(seed={self.seed})")
                try:
                    yield self
                except BaseException as exc:
                    body_error = exc  # raised again, the very object, below
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            real = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
            if isinstance(body_error, trio.Cancelled) and real:
                body_error = None  # cancelled because the monkey failed
            if body_error is not None and real:
                raise BaseExceptionGroup(
                    "a ChaosMonkey's block and the monkey failed", [body_error, *real]
                ) from None
            if body_error is None:
                if len(real) != 1:
                    raise
                raise real[0] from None
        if body_error is not None:
            raise body_error

    async def _run(self, registry: Registry) -> None:
        rng = random.Random(self.seed)
        done = 0
        while self.max_crashes is None or done < self.max_crashes:
            await trio.sleep(rng.expovariate(self.rate_per_s))
            if await self._strike(registry, rng):
                done += 1
        await trio.lowlevel.checkpoint()

    def _candidates(self, registry: Registry) -> list[str]:
        if self.names is not None:
            return list(self.names)
        return sorted(
            n for n in registry.names() if isinstance(registry.lookup_here(n), ServiceRef)
        )

    async def _strike(self, registry: Registry, rng: random.Random) -> bool:
        """One draw: crash a victim or record a skip; whether something crashed."""
        at = trio.current_time()
        candidates = self._candidates(registry)
        if not candidates:
            await trio.lowlevel.checkpoint()
            self._skip(at, "", "no service is registered in the scope's registry")
            return False
        name = rng.choice(candidates)
        value = registry.lookup(name)
        if not isinstance(value, ServiceRef):
            await trio.lowlevel.checkpoint()
            why = (
                "not registered in the visible registry scopes right now"
                if value is None
                else f"registered to {value!r}, which is not a service"
            )
            self._skip(at, name, why)
            return False
        error = SimulatedCrash(
            f"ChaosMonkey(seed={self.seed}) draw #{len(self._records) + 1}: crash of {name!r}"
        )
        try:
            outcome = await simulate_crash(name, error, timeout=self.timeout)
        except (ServiceUnavailableError, CrashNotReachedError) as exc:
            self._skip(at, name, str(exc))
            return False
        except trio.Cancelled:
            if error.__traceback__ is not None:  # it was raised: the service crashed
                self._records.append(ChaosRecord(at, name, None, None))
            raise
        self._records.append(ChaosRecord(at, name, outcome, None))
        return True

    def _skip(self, at: float, name: str, reason: str) -> None:
        self._records.append(ChaosRecord(at, name, None, reason))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
