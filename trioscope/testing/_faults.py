"""Deterministic fault schedules: crash, hang, slow down or stall the k-th message of a service.

::

    import trio, trio.testing, trioscope
    from trioscope.testing._faults import Fault, FaultSchedule, InjectedFault, FiredFault
    from trioscope.testing._scope import open_test_scope

    class Counter(trioscope.Service):
        def __init__(self) -> None:
            self.value = 0

        async def incr(self) -> int:
            self.value += 1
            return self.value

    async def main() -> None:
        schedule = FaultSchedule((Fault("crash", "counter", 2),))
        async with open_test_scope("faults"), schedule.apply() as run:
            async with trioscope.open_supervisor([Counter.child_spec(name="counter")]):
                assert await trioscope.call("counter", Counter.incr) == 1
                try:
                    await trioscope.call("counter", Counter.incr)  # the 2nd message
                except trioscope.ServiceCrashedError as exc:
                    assert isinstance(exc.__cause__, InjectedFault)
                assert await trioscope.call("counter", Counter.incr) == 1  # restarted
        assert run.fired == (FiredFault(Fault("crash", "counter", 2), 1, 0.0),)
        assert run.pending == ()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

A `FaultSchedule` is a set of `Fault` values, each "do *this* at the *k*-th
message of the service named *so*"; ``async with schedule.apply() as run``
applies it to the services of the current registry scope while the block runs,
and `FaultRun` records what fired and when. Faults act at message boundaries
of the service loop, so under `trio.testing.MockClock` the same schedule over
the same test body does the same thing at the same times, every run.
`fault_schedules` is a Hypothesis strategy of schedules that shrinks towards
fewer, earlier, shorter and simpler faults, and `run_with_faults` runs one
body under one schedule in a fresh Trio run, so a property test that fails
prints a minimal schedule that replays exactly.

Erlang/OTP has no such thing built in: fault injection there is a tool around
the system (``:erlang.exit/2`` from a test, or chaos tools killing processes at
random); here the faults are values, placed at the exact message where they
hurt, and shrunk by Hypothesis to the fewest that still break the test.
"""

from __future__ import annotations

import math
import random
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, final

import attrs
import trio
import trio.testing

from .._child_spec import _is_int, _is_number
from .._registry import Registry, _current_registry_or_none, _faults, _no_registry_error
from .._service import _QUEUED, _RUNNING_S, _Incarnation, _Message
from .._supervisor import JITTER_RANDOM
from ._helpers import SimulatedCrash, _simulated_crash
from ._scope import _add_note, open_test_scope

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

T = TypeVar("T")

FaultKind = Literal["crash", "hang", "slow", "stall", "jump"]
"""What a `Fault` does: see `Fault.kind`."""

_KINDS: Final[tuple[FaultKind, ...]] = ("crash", "hang", "slow", "stall", "jump")
"""Every kind, simplest first: the order `fault_schedules` shrinks towards."""

_TIMED: Final = frozenset({"slow", "stall", "jump"})
"""The kinds that take seconds."""

_APPLY_ORDER: Final = {"jump": 0, "stall": 1, "slow": 2, "hang": 3, "crash": 4}
"""The order in which the faults due at one message act (see `FaultSchedule`)."""

_AT_TAKE: Final = frozenset({"jump", "stall"})
"""The kinds that act when the service takes the message from its mailbox."""

_AT_HANDLER: Final = frozenset({"slow", "hang", "crash"})
"""The kinds that act at the message's handler."""


# -- values --------------------------------------------------------------------------


def _kinds_text() -> str:
    return ", ".join(repr(k) for k in _KINDS)


@final
@attrs.frozen(repr=False)
class Fault:
    """One fault: do *kind* at the *at*-th message the service named *service* runs.

    Its repr is the call that builds it (``Fault('slow', 'kv', 3, 2.5)``), so a
    printed schedule replays.

    Raises:
        TypeError: *service* is not a string, *at* not an int, *seconds* not a number.
        ValueError: an unknown *kind*, an empty *service*, *at* < 1, *seconds* not
            finite and > 0 for ``"slow"``, ``"stall"`` and ``"jump"``, or not 0 for
            ``"crash"`` and ``"hang"``.
    """

    kind: FaultKind
    """What happens, once, at that message:

    - ``"crash"``: its handler raises `InjectedFault` instead of running, exactly
      as if the handler had raised it: the caller gets
      `trioscope.ServiceCrashedError` (whose ``__cause__`` is the fault) and the
      supervisor acts (restarts the service, backs off or gives up).
    - ``"hang"``: its handler never returns (it does not run; the service waits
      forever instead): the caller's timeout, a kill or the end of the scope
      ends it; messages behind it wait.
    - ``"slow"``: its handler starts ``seconds`` later. The message is already
      running: a caller that gives up meanwhile abandons it, and it still runs.
    - ``"stall"``: the service holds the message ``seconds`` before looking at
      it. It is still queued: a caller that gives up meanwhile withdraws it and
      it never runs (the next message is then the *at*-th); the mailbox keeps
      filling meanwhile.
    - ``"jump"``: just before the service looks at the message, Trio's clock
      jumps ``seconds`` ahead (`trio.testing.MockClock.jump`) and the service
      checkpoints once. Before it looks at the message, every deadline the
      jump passed has expired (Trio expires them before it runs the next batch
      of tasks): so a caller whose call timed out has withdrawn its message,
      synchronously, as for a stall (if that was this message, it never runs
      and the next message is the *at*-th). The tasks that time woke (timers,
      the timed-out callers themselves, backoffs) are runnable in the same
      scheduler batch as the service, in Trio's order (seeded under
      Hypothesis and `run_with_faults`, so the same every run): some may run
      only after the service has begun handling the message. The clock is the
      whole Trio run's: a jump moves it for every scope in the run.
    """
    service: str
    """The name the service is registered under (unnamed services get no faults)."""
    at: int
    """Which message (1 for the first): the *at*-th message of that service whose
    handler is reached (calls and casts alike) after the schedule is applied,
    counted across its incarnations (a restart does not reset the count).

    The count is per name, for the whole schedule: two services of one name in
    two registries the schedule reaches (siblings nested in its scope, neither
    isolated) share one count, so the *at*-th message is the *at*-th to reach
    either of them, and the fault fires once, at whichever that is (apply a
    schedule in each registry to count them apart). The harness's own private
    messages are not counted and no fault acts at them: `simulate_crash`'s (a
    crash the test asked for, not a message of the code under test) and the
    no-op `trioscope.testing.ServiceStateMachine.cast` queues behind a cast."""
    seconds: float = 0.0
    """Seconds of Trio's clock, for ``"slow"``, ``"stall"`` and ``"jump"`` (finite
    and > 0); 0 for ``"crash"`` and ``"hang"``."""

    def __attrs_post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Fault kind must be one of {_kinds_text()}, got {self.kind!r}")
        service: object = self.service
        if not isinstance(service, str):
            raise TypeError(
                f"Fault service must be a service name (str), got {type(service).__name__}"
            )
        if not service:
            raise ValueError("Fault service must be a non-empty service name, got ''")
        if not _is_int(self.at):
            raise TypeError(
                "Fault at must be an int (the k-th message, 1 for the first), "
                f"got {type(self.at).__name__}"
            )
        if self.at < 1:
            raise ValueError(f"Fault at must be >= 1 (1 is the first message), got {self.at}")
        seconds: object = self.seconds
        if not _is_number(seconds):
            raise TypeError(f"Fault seconds must be a number, got {type(seconds).__name__}")
        if self.kind in _TIMED:
            if not (math.isfinite(self.seconds) and self.seconds > 0):
                raise ValueError(
                    f"a {self.kind!r} fault's seconds must be finite and > 0, got {self.seconds!r}"
                )
        elif self.seconds != 0:
            raise ValueError(
                f"a {self.kind!r} fault takes no seconds (they are for 'slow', 'stall' and "
                f"'jump'), got {self.seconds!r}"
            )
        object.__setattr__(self, "seconds", float(self.seconds))

    def __repr__(self) -> str:
        seconds = f", {self.seconds!r}" if self.kind in _TIMED else ""
        return f"Fault({self.kind!r}, {self.service!r}, {self.at!r}{seconds})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints attrs classes field by field unless told otherwise.
        printer.text(repr(self))


def _canonical(faults: Iterable[Fault]) -> tuple[Fault, ...]:
    """*faults* as a tuple in the schedule's order: by service, message, then acting order."""
    given: object = faults
    if isinstance(given, (Fault, str)) or not isinstance(given, Iterable):
        raise TypeError(
            f"FaultSchedule takes a sequence of Fault values, got {type(given).__name__} "
            "(one fault is FaultSchedule((fault,)))"
        )
    items = tuple(faults)
    for item in items:
        if not isinstance(item, Fault):
            raise TypeError(f"FaultSchedule takes Fault values only, got {item!r}")
    seen: dict[tuple[str, str, int], Fault] = {}
    for fault in items:
        key = (fault.kind, fault.service, fault.at)
        if key in seen:
            raise ValueError(
                f"FaultSchedule has two {fault.kind!r} faults at message {fault.at} of "
                f"{fault.service!r} ({seen[key]!r} and {fault!r}): each fires once, at "
                "that message, so one of them would never fire"
            )
        seen[key] = fault
    return tuple(sorted(items, key=lambda f: (f.service, f.at, _APPLY_ORDER[f.kind])))


@final
@attrs.frozen(repr=False)
class FaultSchedule:
    """Faults to inject into the services of one registry scope.

    ``async with schedule.apply() as run:`` applies it (see `apply`). Its repr
    is the call that builds it, ``FaultSchedule((Fault('crash', 'kv', 3),))``:
    print a failing schedule, paste it, and it replays.

    The faults are kept sorted by service, then message, then the order in
    which faults due at the same message act: ``"jump"``, ``"stall"`` (both
    before the service looks at the message), then ``"slow"``, ``"hang"``,
    ``"crash"`` (at its handler). So a slow crash starts its handler later and
    then crashes it; a crash behind a hang never fires (the hang never ends),
    and stays in `FaultRun.pending`. Two faults of the same kind at the same
    message of the same service are refused: the second could never fire.

    Raises:
        TypeError: *faults* is not a sequence of `Fault` values.
        ValueError: two faults of one kind at one message of one service.
    """

    faults: tuple[Fault, ...] = attrs.field(default=(), converter=_canonical)
    """The faults, in the order described above."""

    def __repr__(self) -> str:
        return f"FaultSchedule({self.faults!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints attrs classes field by field unless told otherwise.
        printer.text(repr(self))

    def apply(self) -> AbstractAsyncContextManager[FaultRun]:
        """Apply the schedule to the current registry scope while the block runs.

        ``async with schedule.apply() as run:`` makes every service registered
        by name in the current registry, or in a registry nested in it with
        no isolated registry in between, subject to the faults naming it,
        counting messages from here (`Fault.at`), until the block exits,
        however it exits (an error, cancellation). An isolated registry
        (``open_registry(..., isolated=True)``, and so every nested
        `open_test_scope`) stops it as it stops name lookups: its services, and
        those of every registry nested in it, get none of these faults. A
        schedule applied in one scope never touches another scope's services,
        even under the same names; in a registry nested in the scope, a
        schedule applied there takes precedence. One schedule may be
        applied several times, one after the other (each with a fresh
        `FaultRun`).

        Raises:
            NoRegistryError: no registry is open around the task (open a test
                scope first: `open_test_scope`).
            RuntimeError: a schedule is already applied to the current registry;
                or the schedule has ``"jump"`` faults and the Trio run's clock is
                not a `trio.testing.MockClock` (only a mock clock can jump).
        """
        return _apply(self)


@attrs.frozen
class FiredFault:
    """A fault that fired, as `FaultRun.fired` records it."""

    fault: Fault
    """The fault."""
    incarnation: int
    """Which incarnation of the service it hit: they are numbered 1, 2, ... in the
    order they took their first message while the schedule was applied (so 2 is
    the one after the first restart that ran anything). Per name, as `Fault.at`
    counts: incarnations of same-named services in two registries share one
    numbering."""
    at_time: float
    """When it took effect (Trio's clock, seconds): for a jump, the time before
    the jump; for a stall or slow handler, when the delay began; for a crash, when
    the handler raised; for a hang, when it began."""


class InjectedFault(SimulatedCrash):
    """What a ``"crash"`` `Fault` makes a handler raise; ``fault`` is that fault."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        super().__init__(
            f"injected fault {fault!r}: the handler of message {fault.at} of service "
            f"{fault.service!r} crashed before running"
        )


@final
class FaultRun:
    """What one application of a `FaultSchedule` did so far (`FaultSchedule.apply`)."""

    __slots__ = ("_fired", "_incarnations", "_messages", "_pending", "registry", "schedule")

    schedule: FaultSchedule
    """The schedule applied."""
    registry: Registry
    """The registry it is applied to."""

    def __init__(self, schedule: FaultSchedule, registry: Registry) -> None:
        self.schedule = schedule
        self.registry = registry
        self._fired: list[FiredFault] = []
        # Not fired yet, by (service, message), each list in acting order.
        self._pending: dict[tuple[str, int], list[Fault]] = {}
        for fault in schedule.faults:
            self._pending.setdefault((fault.service, fault.at), []).append(fault)
        self._messages: dict[str, int] = {}
        # Per service name: incarnation number (core.number) -> 1, 2, ...
        self._incarnations: dict[str, dict[int, int]] = {}

    def __repr__(self) -> str:
        return (
            f"<FaultRun {len(self._fired)} fired, {len(self.pending)} pending of {self.schedule!r}>"
        )

    @property
    def fired(self) -> tuple[FiredFault, ...]:
        """The faults that fired, in the order they did."""
        return tuple(self._fired)

    @property
    def pending(self) -> tuple[Fault, ...]:
        """The faults that have not fired (their message was never reached), in
        the schedule's order. ``()`` once every fault fired."""
        return tuple(
            f for f in self.schedule.faults if f in self._pending.get((f.service, f.at), ())
        )

    @property
    def messages(self) -> dict[str, int]:
        """How many messages reached each named service's handler while the
        schedule was applied (the count `Fault.at` refers to: one per name); a copy."""
        return dict(self._messages)

    # -- the service loop's side --

    def _incarnation(self, core: _Incarnation, name: str) -> int:
        seen = self._incarnations.setdefault(name, {})
        number = seen.get(core.number)
        if number is None:
            number = seen[core.number] = len(seen) + 1
        return number

    def _due(self, name: str, at: int, kinds: frozenset[str]) -> list[Fault]:
        faults = self._pending.get((name, at))
        if not faults:
            return []
        return [f for f in faults if f.kind in kinds]

    def _fire(self, fault: Fault, incarnation: int) -> None:
        faults = self._pending[(fault.service, fault.at)]
        faults.remove(fault)
        self._fired.append(FiredFault(fault, incarnation, trio.current_time()))


async def _after_cast(service: object) -> None:
    """A private no-op handler: `ServiceStateMachine.cast` queues it behind a cast
    and waits for its reply. Fault schedules neither count it nor act at it."""


_PRIVATE: Final = frozenset({_after_cast, _simulated_crash})
"""The harness's own messages: fault schedules neither count them nor act at them."""


def _find(registry: Registry | None) -> FaultRun | None:
    """The schedule applied where *registry* looks names up (as `Registry.lookup` walks)."""
    reg = registry
    while reg is not None:
        run = reg._faults
        if run is not None:
            assert isinstance(run, FaultRun)
            return run
        if reg.isolated:
            return None
        reg = reg.parent
    return None


async def _at_message(core: _Incarnation, msg: _Message) -> None:
    """The service took *msg* from its mailbox: stall it, or jump the clock, if due."""
    name = core.name
    if name is None or msg.fn in _PRIVATE:
        return
    run = _find(core.registry)
    if run is None:
        return
    incarnation = run._incarnation(core, name)
    # The message the service would run next is the (count + 1)-th; a message
    # already withdrawn (or a service stopping) would not run, so it is not that one.
    for fault in run._due(name, run._messages.get(name, 0) + 1, _AT_TAKE):
        if msg.state != _QUEUED or core.status != _RUNNING_S:
            return  # withdrawn meanwhile: the next message taken is the k-th
        run._fire(fault, incarnation)
        # Killed meanwhile: the service loop answers the message it holds as never run.
        if fault.kind == "jump":
            clock = trio.lowlevel.current_clock()
            assert isinstance(clock, trio.testing.MockClock)  # checked by apply()
            clock.jump(fault.seconds)
            # Let whatever that time woke (a caller's timeout among them) act
            # before the service looks at the message.
            await trio.lowlevel.checkpoint()
        else:
            await trio.sleep(fault.seconds)


def _wrap(
    core: _Incarnation, msg: _Message, coro: Coroutine[Any, Any, Any]
) -> Coroutine[Any, Any, Any]:
    """*msg*'s handler coroutine, or one that delays, hangs or crashes it, if due."""
    name = core.name
    if name is None or msg.fn in _PRIVATE:
        return coro
    run = _find(core.registry)
    if run is None:
        return coro
    at = run._messages[name] = run._messages.get(name, 0) + 1
    due = run._due(name, at, _AT_HANDLER)
    if not due:
        return coro
    return _faulty(run, run._incarnation(core, name), due, coro)


async def _faulty(
    run: FaultRun, incarnation: int, faults: list[Fault], coro: Coroutine[Any, Any, Any]
) -> Any:
    try:
        for fault in faults:
            run._fire(fault, incarnation)
            if fault.kind == "slow":
                await trio.sleep(fault.seconds)
            elif fault.kind == "hang":
                await trio.sleep_forever()
            else:
                raise InjectedFault(fault)
    except BaseException:
        coro.close()  # never to run: no "never awaited" warning
        raise
    return await coro


_faults.at_message = _at_message
_faults.wrap = _wrap


@asynccontextmanager
async def _apply(schedule: FaultSchedule) -> AsyncIterator[FaultRun]:
    registry = _current_registry_or_none()
    if registry is None:
        raise _no_registry_error("FaultSchedule.apply()")
    if registry._faults is not None:
        raise RuntimeError(
            f"a fault schedule is already applied to registry {registry.namespace!r} "
            f"({registry._faults!r}): leave its block first, or open a nested scope"
        )
    jumps = [f for f in schedule.faults if f.kind == "jump"]
    clock = trio.lowlevel.current_clock()
    if jumps and not isinstance(clock, trio.testing.MockClock):
        raise RuntimeError(
            f"the fault schedule jumps Trio's clock ({jumps[0]!r}), which only a "
            "trio.testing.MockClock can do; this run's clock is "
            f"{type(clock).__qualname__} (run with trio.run(..., "
            "clock=trio.testing.MockClock()), or pytest-trio's autojump_clock fixture)"
        )
    run = FaultRun(schedule, registry)
    registry._faults = run
    _faults.installed += 1
    try:
        yield run
    finally:
        registry._faults = None
        _faults.installed -= 1


# -- Hypothesis ------------------------------------------------------------------------


def fault_schedules(
    services: Sequence[str],
    *,
    kinds: Iterable[FaultKind] = _KINDS,
    max_faults: int = 3,
    max_at: int = 20,
    max_seconds: float = 10.0,
) -> SearchStrategy[FaultSchedule]:
    """A Hypothesis strategy of `FaultSchedule` values over the named services.

    Each schedule holds 0 to *max_faults* faults (never two of one kind at one
    message of one service), each of a kind among *kinds*, at a service among
    *services*, at message 1 to *max_at*, and, for ``"slow"``, ``"stall"`` and
    ``"jump"``, a whole number of quarter seconds from 0.25 to *max_seconds*
    (so printed schedules stay short). A failing schedule shrinks towards fewer
    faults, earlier messages, fewer seconds, the first service given, and
    simpler kinds: ``"crash"``, ``"hang"``, ``"slow"``, ``"stall"``, ``"jump"``
    in that order, whatever the order of *kinds*.

    Needs Hypothesis (imported here, not by ``trioscope.testing``).

    Raises:
        TypeError: *services* is not a sequence of strings (a bare string is
            refused), *max_faults* or *max_at* not an int, *max_seconds* not a
            number.
        ValueError: *services* or *kinds* empty, an unknown kind, an empty name,
            *max_faults* < 0, *max_at* < 1, *max_seconds* < 0.25 or not finite.
    """
    from hypothesis import strategies as st

    given: object = services
    if isinstance(given, str) or not isinstance(given, Sequence):
        raise TypeError(
            f"services must be a sequence of service names, got {type(given).__name__}"
            + (f" (for one service: [{given!r}])" if isinstance(given, str) else "")
        )
    names = tuple(services)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"services must hold service names (str), got {name!r}")
        if not name:
            raise ValueError("services must hold non-empty service names, got ''")
    if not names:
        raise ValueError("services must name at least one service")
    wanted = tuple(kinds)
    for kind in wanted:
        if kind not in _KINDS:
            raise ValueError(f"kinds must be among {_kinds_text()}, got {kind!r}")
    if not wanted:
        raise ValueError(f"kinds must hold at least one of {_kinds_text()}")
    ordered = tuple(k for k in _KINDS if k in wanted)
    if not _is_int(max_faults):
        raise TypeError(f"max_faults must be an int, got {type(max_faults).__name__}")
    if max_faults < 0:
        raise ValueError(f"max_faults must be >= 0, got {max_faults}")
    if not _is_int(max_at):
        raise TypeError(f"max_at must be an int, got {type(max_at).__name__}")
    if max_at < 1:
        raise ValueError(f"max_at must be >= 1 (1 is the first message), got {max_at}")
    if not _is_number(max_seconds):
        raise TypeError(f"max_seconds must be a number, got {type(max_seconds).__name__}")
    if not (math.isfinite(max_seconds) and max_seconds >= 0.25):
        raise ValueError(
            f"max_seconds must be finite and >= 0.25 (seconds come in quarters), "
            f"got {max_seconds!r}"
        )

    kind_st = st.sampled_from(ordered)
    service_st = st.sampled_from(names)
    at_st = st.integers(1, max_at)
    quarters_st = st.integers(1, math.floor(max_seconds * 4))

    @st.composite
    def faults(draw: st.DrawFn) -> Fault:
        kind = draw(kind_st)
        service = draw(service_st)
        at = draw(at_st)
        seconds = draw(quarters_st) / 4 if kind in _TIMED else 0.0
        return Fault(kind, service, at, seconds)

    return st.lists(
        faults(), max_size=max_faults, unique_by=lambda f: (f.kind, f.service, f.at)
    ).map(FaultSchedule)


# -- one run per schedule ----------------------------------------------------------------


@contextmanager
def _deterministic_trio() -> Iterator[None]:
    """Trio's scheduler and the supervisors' backoff jitter, seeded alike for each run.

    Trio shuffles each batch of runnable tasks with its own ``random.Random``,
    in task-creation order first once Hypothesis is imported (Trio's Hypothesis
    plugin sets that flag and registers the Random, which Hypothesis then seeds
    per example). Seeding both here (and setting the flag for this run, if
    Hypothesis has not) makes every run of one schedule schedule the same way,
    inside a Hypothesis example or not: a replay outside the property runs what
    the property ran. Private to Trio: skipped where a Trio lacks them.
    """
    import trio._core._run as trio_run

    rng = getattr(trio_run, "_r", None)
    state = rng.getstate() if isinstance(rng, random.Random) else None
    flag = getattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", None)
    jitter = JITTER_RANDOM.getstate()
    try:
        if isinstance(rng, random.Random):
            rng.seed(0)
        if flag is False:
            setattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", True)  # noqa: B010
        JITTER_RANDOM.seed(0)
        yield
    finally:
        JITTER_RANDOM.setstate(jitter)
        if flag is False:
            setattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", False)  # noqa: B010
        if isinstance(rng, random.Random) and state is not None:
            rng.setstate(state)


def run_with_faults(
    body: Callable[[FaultRun], Awaitable[T]],
    schedule: FaultSchedule,
    *,
    foundation: bool = False,
    **scope_settings: object,
) -> T:
    """Run ``await body(run)`` in a fresh Trio run under *schedule*; return what it returned.

    For property tests (synchronous, so a Hypothesis test calls it directly):
    one `trio.run` with a fresh ``trio.testing.MockClock(autojump_threshold=0)``,
    a leak-checked `open_test_scope` (with the foundation if *foundation*,
    configured by *scope_settings*), the schedule applied in it
    (`FaultSchedule.apply`), and *body* called with the `FaultRun`. Trio's
    scheduler is seeded the same way for every run, so the same schedule over
    the same body runs the same way every time.

    If anything raises (the body, a leak), the exception propagates with a
    note: the schedule, what fired, and one line that replays it.

    Raises:
        TypeError: *schedule* is not a `FaultSchedule`.
        LeakError: the body left something behind in its scope.
    """
    checked: object = schedule
    if not isinstance(checked, FaultSchedule):
        raise TypeError(f"schedule must be a FaultSchedule, got {type(checked).__name__}")
    runs: list[FaultRun] = []
    settings: dict[str, Any] = dict(scope_settings)  # open_foundation's keywords

    async def main() -> T:
        async with (
            open_test_scope("run_with_faults", foundation=foundation, **settings),
            schedule.apply() as run,
        ):
            runs.append(run)
            return await body(run)

    with _deterministic_trio():
        try:
            return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        except BaseException as exc:
            given = {"foundation": True, **settings} if foundation else settings
            extra = "".join(f", {key}={value!r}" for key, value in given.items())
            fired = runs[0].fired if runs else ()
            what = getattr(body, "__qualname__", None) or repr(body)
            _add_note(
                exc,
                f"fault schedule: {schedule!r}\n"
                f"fired: {list(fired)!r}\n"
                f"replay: run_with_faults({what}, {schedule!r}{extra})",
            )
            raise
