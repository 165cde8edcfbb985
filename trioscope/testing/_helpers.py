"""Test helpers with exact semantics and no polling: waits, crashes, isolation, load.

::

    import trio, trio.testing, trioscope
    from trioscope.testing._helpers import simulate_crash, wait_for_service

    class Counter(trioscope.Service):
        def __init__(self) -> None:
            self.value = 0

        async def incr(self) -> int:
            self.value += 1
            return self.value

    async def main() -> None:
        async with trioscope.open_registry(isolated=True):
            async with trioscope.open_supervisor([Counter.child_spec(name="counter")]):
                ref = await wait_for_service("counter", timeout=1.0)
                assert await ref.call(Counter.incr) == 1
                outcome = await simulate_crash("counter")
                assert outcome.action == "restarted" and outcome.ref is not None
                assert await outcome.ref.call(Counter.incr) == 1  # fresh state

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

Everything waits on Trio's clock (so `trio.testing.MockClock` makes it exact)
and on the events the core already has (a registry's waiters, an
incarnation's end, the supervisors' telemetry events): nothing sleeps to look
again. Every waiting helper is a checkpoint on every path and lets
`trio.Cancelled` through.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import math
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, Literal, final

import attrs
import trio

from .._child_spec import Restart, _check_seconds, _is_int
from .._errors import Rejected, ServiceUnavailableError, TrioscopeError
from .._exits import describe, read_exit
from .._names import wait_for_service as _wait_for_service
from .._registry import Registry, _current, _current_registry_or_none, _no_registry_error
from .._service import Service, ServiceRef, _Incarnation, _Message, _reason_text
from .._supervisor import _CHILD_BACKOFF, _CHILD_EXIT, _CHILD_RESTART, _CHILD_START, _GIVE_UP
from .._telemetry import Measurements, Metadata, _detach_exactly, attach

if sys.version_info < (3, 11):  # pragma: no cover - Trio brings the backport there
    from exceptiongroup import BaseExceptionGroup

DEFAULT_WAIT_S: Final = 5.0
"""Seconds (Trio's clock) the waiting helpers wait by default."""

CrashAction = Literal["restarted", "backoff", "gave_up", "not_restarted", "not_supervised"]
"""What a supervisor did about a simulated crash (see `CrashOutcome.action`)."""

_CRASH_EVENTS: Final = (_CHILD_EXIT, _CHILD_RESTART, _CHILD_BACKOFF, _GIVE_UP, _CHILD_START)
_handler_ids = itertools.count(1)


# -- errors --------------------------------------------------------------------------


class SimulatedCrash(Exception):
    """What `simulate_crash` makes a service's handler raise unless told otherwise."""


class ServiceWaitTimeoutError(TrioscopeError, trio.TooSlowError):
    """A testing helper waited its whole timeout (Trio's clock) for a service.

    ``service`` is the name waited for, ``timeout`` the seconds waited,
    ``detail`` what was known when the wait gave up (a supervisor's backoff or
    restart in progress, a name never registered, how far a crash had got).
    """

    def __init__(self, service: str, what: str, timeout: float, detail: str) -> None:
        self.service = service
        self.timeout = timeout
        self.detail = detail
        super().__init__(f"{what} within {timeout:g} s (Trio clock): {detail}")


class CrashNotReachedError(TrioscopeError):
    """`simulate_crash`'s message never ran: the incarnation ended before reaching it.

    A message queued ahead of it crashed the service, or the service stopped;
    the queued crash was dropped with the rest of its mailbox. ``reason`` says
    how that incarnation ended.
    """

    def __init__(self, service: str, reason: str) -> None:
        self.service = service
        self.reason = reason
        super().__init__(
            f"the simulated crash of service {service} never ran: that incarnation "
            f"{reason} before reaching it (the crash was dropped with its mailbox)"
        )


# -- values --------------------------------------------------------------------------


@attrs.frozen
class CrashOutcome:
    """What `simulate_crash` saw the crashed service's supervisor do."""

    action: CrashAction
    """``"restarted"`` (``ref`` is the new incarnation), ``"backoff"`` (the restart
    waits until ``restart_at``), ``"gave_up"`` (restart intensity exceeded: the
    supervisor stops and fails), ``"not_restarted"`` (a ``TEMPORARY`` child: its
    supervisor forgot it) or ``"not_supervised"`` (started by ``nursery.start``:
    the incarnation just ended, its crash raised in whatever runs it)."""
    supervisor: str | None
    """The supervisor's id; ``None`` when not supervised."""
    child: str | None
    """The child id in that supervisor; ``None`` when not supervised."""
    ref: ServiceRef[Any] | None
    """The new incarnation, for ``"restarted"``; else ``None``."""
    restart_at: float | None
    """When the restart is due (Trio's clock, seconds), for ``"backoff"``; else ``None``."""


@attrs.frozen
class OpsMeasurement:
    """What `measure_concurrent_ops` measured; times in seconds on Trio's clock.

    An operation's latency runs from its start until *fn* returned or raised
    (failed operations count too). Percentiles are nearest-rank: of the ``N``
    latencies sorted ascending, the p-th percentile is the one at 1-based rank
    ``ceil(p * N / 100)`` (always one of the measured values).
    """

    count: int
    """Operations run (each either returned or raised)."""
    errors: int
    """Operations whose *fn* raised an `Exception` (counted, not re-raised)."""
    elapsed_s: float
    """Seconds from the first operation's start to the last one's end."""
    throughput_per_s: float
    """``count / elapsed_s``; ``math.inf`` when no time passed on Trio's clock."""
    p50_s: float
    """Median latency (nearest-rank), seconds."""
    p95_s: float
    """95th-percentile latency (nearest-rank), seconds."""
    p99_s: float
    """99th-percentile latency (nearest-rank), seconds."""
    max_s: float
    """Largest latency, seconds."""
    first_error: Exception | None = attrs.field(default=None, eq=False)
    """The error of the first operation to fail (by completion), for diagnosis."""


# -- waiting for services --------------------------------------------------------------


# The timeout parameters (ASYNC109): a helper's own limit is what lets its error say
# what was known when it gave up (a backoff, a typo), which a fail_after around it cannot.
async def wait_for_service(name: str, timeout: float = DEFAULT_WAIT_S) -> ServiceRef[Any]:  # noqa: ASYNC109
    """The service registered as *name*, visible from the current scope, waiting for it.

    Waits on the registry (no polling) at most *timeout* seconds of Trio's
    clock; returns at once (after a checkpoint) when one is registered.

    Raises:
        ServiceWaitTimeoutError: nothing was registered in time; the message says
            what is known (a supervisor backing off or restarting it, until when;
            a name registered earlier and gone; a likely typo).
        NoRegistryError: no registry is open around the task, or it closed.
        TypeError: *name* holds something that is not a service; *timeout* is
            not a number.
        ValueError: *timeout* is negative or NaN.
    """
    return await _wait(name, None, timeout, f"no service was registered as {name!r}")


async def wait_for_restart(
    name: str,
    after: ServiceRef[Any],
    timeout: float = DEFAULT_WAIT_S,  # noqa: ASYNC109
) -> ServiceRef[Any]:
    """The next incarnation registered as *name* after *after* (typically one that crashed).

    Same rules as `wait_for_service`: an incarnation other than *after*'s,
    waited for on the registry at most *timeout* seconds of Trio's clock.

    Raises:
        ServiceWaitTimeoutError: no other incarnation was registered in time.
        NoRegistryError, TypeError, ValueError: as `wait_for_service`.
    """
    if not isinstance(after, ServiceRef):
        raise TypeError(f"after must be a trioscope.ServiceRef, got {type(after).__name__}")
    what = f"no incarnation of {name!r} after #{after.incarnation} was registered"
    return await _wait(name, after, timeout, what)


async def _wait(
    name: str, after: ServiceRef[Any] | None, timeout_s: float, what: str
) -> ServiceRef[Any]:
    _check_seconds("timeout", timeout_s, allow_inf=True)
    registry = _current_registry_or_none()
    if registry is None:
        await trio.lowlevel.checkpoint()
        raise _no_registry_error(f"wait_for_service({name!r})")
    found = registry.lookup(name)
    if isinstance(found, ServiceRef) and (
        after is None or found._core.service is not after._core.service
    ):
        await trio.lowlevel.checkpoint()  # already there: found whatever the timeout
        return found
    with trio.move_on_after(timeout_s):
        return await _wait_for_service(name, after=after)
    raise ServiceWaitTimeoutError(name, what, timeout_s, _known(registry, name, after))


def _known(registry: Registry, name: str, after: ServiceRef[Any] | None) -> str:
    """What *registry* knows about *name* now, for a wait that gave up."""
    expected = registry._expectation(name)
    if expected is not None:
        status, restart_at = expected
        if restart_at is not None:
            left = restart_at - trio.current_time()
            return (
                f"its supervisor has it in backoff, restarting at {restart_at:g} on the "
                f"Trio clock ({left:g} s from now); wait longer than that"
            )
        return f"its supervisor is {status} it (the new incarnation's init has not finished)"
    held = registry.lookup(name)
    if held is not None and after is not None and isinstance(held, ServiceRef) and held == after:
        return f"incarnation #{after.incarnation} is still registered: it has not ended"
    known = registry._known_names()
    if name in known:
        return (
            "it was registered recently in the visible registry scopes, and no supervisor "
            "says it will start again (stopped, TEMPORARY, or its supervisor gave up)"
        )
    matches = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {' or '.join(map(repr, matches))}?" if matches else ""
    return f"nothing has been registered under that name in the visible registry scopes{hint}"


# -- crashing services ------------------------------------------------------------------


@final
class _Crash:
    """The argument of the private crash message: the error, and whether it ran."""

    __slots__ = ("error", "ran", "withdrawn")

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.ran = False
        self.withdrawn = False  # the helper gave up: if it runs after all, it does nothing

    def __repr__(self) -> str:
        return repr(self.error)


async def _simulated_crash(service: Service, crash: _Crash) -> None:
    # Run by the service loop as a handler (the handler check is in the public
    # call/cast API only): the crash is exactly a handler raising.
    if crash.withdrawn:
        return
    crash.ran = True
    raise crash.error


_simulated_crash.__name__ = "simulate_crash"  # what crash reports and telemetry call it


def _supervision(core: _Incarnation) -> tuple[str, str, Restart, Registry | None] | None:
    """(supervisor id, child id, restart type, supervisor's registry) of *core*'s
    supervisor, or ``None`` if no supervisor runs it (started by ``nursery.start``)."""
    supervision = core.supervision
    if supervision is None:
        return None
    sup_id, child_id, restart, registry = supervision
    assert registry is None or isinstance(registry, Registry)
    return sup_id, child_id, restart, registry


@final
class _CrashWatch:
    """Reads a supervisor's telemetry events about one crashed child, in order.

    Phases: the child's exit, then the supervisor's decision (backoff, give-up,
    or a restart attempt), then, after a restart, the child's start (or the
    next decision, when the attempt failed).
    """

    __slots__ = (
        "child",
        "crash",
        "done",
        "error",
        "label",
        "name",
        "outcome",
        "phase",
        "registry",
        "restart",
        "supervisor",
    )

    def __init__(
        self,
        supervision: tuple[str, str, Restart, Registry | None],
        crash: _Crash,
        name: str,
        label: str,
    ) -> None:
        self.supervisor, self.child, self.restart, self.registry = supervision
        self.crash = crash
        self.name = name
        self.label = label
        self.phase = "exit"
        self.done = trio.Event()
        self.outcome: CrashOutcome | None = None
        self.error: Exception | None = None

    def finish(self, action: CrashAction, *, ref: Any = None, at: float | None = None) -> None:
        self.outcome = CrashOutcome(action, self.supervisor, self.child, ref, at)
        self.done.set()

    def on_event(self, event: tuple[str, ...], measurements: Measurements, meta: Metadata) -> None:
        if self.done.is_set() or _current.get() is not self.registry:
            return  # events of supervisors in nested scopes are not ours
        if meta.get("supervisor") != self.supervisor or meta.get("child") != self.child:
            return
        if self.phase == "exit":
            if event != _CHILD_EXIT:
                return
            if not self.crash.ran:
                reason = meta.get("reason")
                how = (
                    f"crashed with {describe(reason)}"
                    if isinstance(reason, BaseException)
                    else "exited normally"
                )
                self.error = CrashNotReachedError(self.label, how)
                self.done.set()
            elif self.restart is Restart.TEMPORARY:
                self.finish("not_restarted")
            else:
                self.phase = "decide"
        elif event == _CHILD_BACKOFF:
            self.finish("backoff", at=float(measurements["restart_at"]))
        elif event == _GIVE_UP:
            self.finish("gave_up")
        elif event == _CHILD_RESTART:
            self.phase = "starting"
        elif event == _CHILD_START and self.phase == "starting":
            ref = self.registry.lookup_here(self.name) if self.registry is not None else None
            self.finish("restarted", ref=ref)

    def pending(self) -> str:
        """How far the crash had got, for a timeout."""
        if not self.crash.ran:
            return (
                "the crash message had not run yet (still queued behind other messages); "
                "it was withdrawn"
            )
        return {
            "exit": f"the service crashed, but supervisor {self.supervisor!r} had not "
            f"handled child {self.child!r}'s exit",
            "decide": f"supervisor {self.supervisor!r} had not decided about child "
            f"{self.child!r} (stopping its siblings?)",
            "starting": f"supervisor {self.supervisor!r} was restarting child {self.child!r}: "
            "the new incarnation was not up (its init still running?)",
        }[self.phase]


@contextmanager
def _attached_in(
    registry: Registry, handler: Callable[[tuple[str, ...], Measurements, Metadata], None]
) -> Iterator[None]:
    """`trioscope.telemetry.attached` in *registry* (a scope enclosing this one, maybe)."""
    handler_id = f"trioscope.testing.simulate_crash#{next(_handler_ids)}"
    token = _current.set(registry)
    try:
        attach(handler_id, _CRASH_EVENTS, handler)
    finally:
        _current.reset(token)
    try:
        yield
    finally:
        _detach_exactly(registry, handler_id, handler)


async def simulate_crash(
    name: str,
    error: BaseException | None = None,
    *,
    timeout: float = DEFAULT_WAIT_S,  # noqa: ASYNC109
) -> CrashOutcome:
    """Crash the service registered as *name* at its next message, and say what followed.

    A private message goes to the end of its mailbox (waiting for space, like a
    cast): messages queued before it run first, then it crashes the service
    exactly as a handler raising *error* would (default: a `SimulatedCrash`).
    Returns once the supervisor has acted, learned from its telemetry events
    (no polling): ``"restarted"`` once the new incarnation is up (``ref``),
    ``"backoff"`` with ``restart_at``, ``"gave_up"``, or ``"not_restarted"``
    for a ``TEMPORARY`` child. A service started by ``nursery.start`` (no
    supervisor) just ends: ``"not_supervised"``, once it has (its crash is
    raised in whatever runs it; run it where that is expected).

    A supervisor that gives up cancels the body of its ``async with`` block:
    to see ``"gave_up"``, call this from outside that block (another task, or
    a scope around a nested supervisor).

    Under ``ONE_FOR_ALL`` or ``REST_FOR_ONE`` it returns once the *crashed*
    child is up again: siblings restarted with it may still be starting (the
    supervisor restarts a group one child per step). Wait for each with
    `wait_for_restart` before calling it.

    Args:
        timeout: Seconds of Trio's clock for all of it (mailbox space, the
            crash, the supervisor's decision, the new incarnation's start).
            Timed out or cancelled before the crash ran, the crash is
            withdrawn: it never happens later.

    Raises:
        ServiceWaitTimeoutError: not done within *timeout*; says how far it got.
        CrashNotReachedError: the incarnation ended before the crash ran.
        ServiceUnavailableError: nothing is registered as *name*, or it is stopping.
        TypeError: *error* is not an exception, or is a `trio.Cancelled`,
            `KeyboardInterrupt` or `SystemExit` (not crashes); *name* holds
            something that is not a service.
        NoRegistryError: no registry is open around the task.
    """
    checked: object = error  # callers without type checking can pass anything
    if error is None:
        error = SimulatedCrash(f"simulated crash of service {name!r}")
    elif not isinstance(checked, BaseException) or isinstance(
        checked, (trio.Cancelled, KeyboardInterrupt, SystemExit, Rejected)
    ):
        raise TypeError(
            "error must be an exception a handler could crash with (not a Cancelled, "
            "KeyboardInterrupt or SystemExit, nor a trioscope.Rejected, which a service "
            f"answers without crashing), got {error!r}"
        )
    _check_seconds("timeout", timeout, allow_inf=True)
    registry = _current_registry_or_none()
    if registry is None:
        await trio.lowlevel.checkpoint()
        raise _no_registry_error(f"simulate_crash({name!r})")
    value = registry.lookup(name)
    if value is not None and not isinstance(value, ServiceRef):
        raise TypeError(f"name {name!r} is registered to {value!r}, which is not a service")
    if value is None:
        await trio.lowlevel.checkpoint()
        raise ServiceUnavailableError(
            repr(name),
            "nothing is registered under that name in the visible registry scopes "
            "(wait_for_service() first)",
        )
    core = value._core
    crash = _Crash(error)
    msg = _Message(core, _simulated_crash, (crash,), {}, None)  # task=None: a cast
    try:
        return await _crash_and_watch(name, core, crash, msg, timeout)
    finally:
        if not crash.ran:
            # Timed out or cancelled before it ran: it must not happen later.
            crash.withdrawn = True
            core.mailbox.withdraw(msg)


async def _crash_and_watch(
    name: str, core: _Incarnation, crash: _Crash, msg: _Message, timeout_s: float
) -> CrashOutcome:
    supervision = _supervision(core)
    if supervision is None or supervision[3] is None:
        with trio.move_on_after(timeout_s):
            await _send(core, msg)
            await core.ended().wait()
            if not crash.ran:
                raise CrashNotReachedError(core.label, _reason_text(core.reason))
            return CrashOutcome("not_supervised", None, None, None, None)
        raise ServiceWaitTimeoutError(
            name,
            f"simulate_crash({name!r}) was not done",
            timeout_s,
            "the crash message had not run yet (still queued behind other messages); "
            "it was withdrawn"
            if not crash.ran
            else "the service had not ended",
        )
    registry = supervision[3]
    watch = _CrashWatch(supervision, crash, name, core.label)
    with _attached_in(registry, watch.on_event):
        with trio.move_on_after(timeout_s):
            await _send(core, msg)
            await watch.done.wait()
        if watch.error is not None:
            raise watch.error
        if watch.outcome is not None:
            return watch.outcome
    raise ServiceWaitTimeoutError(
        name, f"simulate_crash({name!r}) was not done", timeout_s, watch.pending()
    )


async def _send(core: _Incarnation, msg: _Message) -> None:
    try:
        await core.mailbox.send(msg)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await trio.lowlevel.cancel_shielded_checkpoint()
        raise core.unavailable(ServiceUnavailableError) from None


# -- isolation ----------------------------------------------------------------------------


def assert_isolated(name: str, *others: Registry, here: Registry | None = None) -> None:
    """Assert that what *others* hold as *name* is unreachable from *here*.

    *here* is the current registry scope unless given. For each registry in
    *others*, the value it holds itself as *name* must be unreachable from
    *here*: the registry is not on *here*'s visible chain (the registries a
    lookup walks, up to an isolated one), a lookup of *name* from *here*
    (what `trioscope.whereis` answers) does not find it, and no registry on
    that chain holds it under any name.

    Two sibling scopes, each opened with ``isolated=True`` in its own task,
    cannot see each other when both ``assert_isolated(name, b, here=a)`` and
    ``assert_isolated(name, a, here=b)`` pass (the *here* form works from any
    task, so one test body can check both directions).

    Raises:
        AssertionError: something of theirs is reachable; the message names the
            registries, the name and the value.
        TypeError: no registries given, or one that is not a `trioscope.Registry`.
        NoRegistryError: *here* not given and no registry is open around the task.
    """
    if not others:
        raise TypeError("assert_isolated needs at least one other registry to check against")
    for other in others:
        if not isinstance(other, Registry):
            raise TypeError(f"expected trioscope.Registry objects, got {other!r}")
    if here is None:
        here = _current_registry_or_none()
        if here is None:
            raise _no_registry_error(f"assert_isolated({name!r})")
    chain = list(here._visible_chain())
    found = here.lookup(name)
    where = f"registry {here.namespace!r}"
    for other in others:
        theirs = other.lookup_here(name)
        if theirs is None:
            raise AssertionError(
                f"registry {other.namespace!r} holds nothing as {name!r}: there is no "
                "value of its to check isolation against"
            )
        if other is here:
            raise AssertionError(
                f"{where} is itself one of the registries to be isolated from: "
                f"{name!r} ({theirs!r}) is registered right here"
            )
        if other in chain:
            raise AssertionError(
                f"registry {other.namespace!r}, holding {name!r} as {theirs!r}, is on the "
                f"visible chain of {where}: lookups walk outward into it (open the inner "
                "scope with isolated=True)"
            )
        if found is not None and _same(found, theirs):
            raise AssertionError(
                f"whereis({name!r}) from {where} finds {found!r}, the value registry "
                f"{other.namespace!r} holds as {name!r}"
            )
        for reg in chain:
            for key, value in reg._entries.items():
                if _same(value, theirs):
                    raise AssertionError(
                        f"registry {reg.namespace!r}, visible from {where}, holds "
                        f"{value!r} as {key!r}: the value registry {other.namespace!r} "
                        f"holds as {name!r}"
                    )


def _same(a: object, b: object) -> bool:
    # Two refs to one incarnation are the same service (with_timeout makes copies).
    return a is b or (isinstance(a, ServiceRef) and a == b)


# -- load --------------------------------------------------------------------------------


def _nearest_rank(ordered: list[float], percent: int) -> float:
    """The nearest-rank *percent*-th percentile of non-empty, ascending *ordered*."""
    rank = -(-percent * len(ordered) // 100)  # ceil(percent * N / 100), exactly
    return ordered[max(rank, 1) - 1]


async def measure_concurrent_ops(
    fn: Callable[[], Awaitable[object]], n: int, concurrency: int
) -> OpsMeasurement:
    """Run ``await fn()`` *n* times, at most *concurrency* at once, and time each run.

    ``min(n, concurrency)`` worker tasks take the operations in turn, so
    exactly *concurrency* run at once while enough remain. Times are read from
    Trio's clock (`trio.testing.MockClock` makes them exact).

    An `Exception` raised by *fn* is counted in ``errors`` and kept (the first,
    by completion) as ``first_error``; it is not re-raised, and the other
    operations go on: check ``errors == 0`` where every operation must succeed.
    Anything else (`trio.Cancelled`, `KeyboardInterrupt`, pytest's ``Failed``)
    stops the measurement: the other operations are cancelled and it is
    raised, bare.

    Raises:
        TypeError: *n* or *concurrency* is not an integer, or *fn* not callable.
        ValueError: *n* or *concurrency* is below 1.
    """
    if not callable(fn):
        raise TypeError(f"fn must be an async callable taking no arguments, got {fn!r}")
    for label, number in (("n", n), ("concurrency", concurrency)):
        if not _is_int(number):
            raise TypeError(f"{label} must be an integer >= 1, got {type(number).__name__}")
        if number < 1:
            raise ValueError(f"{label} must be an integer >= 1, got {number}")
    latencies: list[float] = []
    failures: list[Exception] = []
    remaining = iter(range(n))

    async def worker() -> None:
        for _ in remaining:
            t0 = trio.current_time()
            awaitable = fn()
            if not inspect.isawaitable(awaitable):
                raise TypeError(
                    f"fn must be an async callable taking no arguments: {fn!r} returned "
                    f"{type(awaitable).__name__}, which cannot be awaited"
                )
            try:
                await awaitable
            except Exception as exc:
                failures.append(exc)
            latencies.append(trio.current_time() - t0)

    start = trio.current_time()
    # Unwrap policy: workers raise only what is not an Exception. A group
    # holding a Cancelled goes on whole (it belongs to an enclosing scope);
    # otherwise the first other exception is raised bare, its context kept.
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(min(n, concurrency)):
                nursery.start_soon(worker)
    except BaseException as exc:
        ended = read_exit(exc)
        error = ended.interrupt if ended.interrupt is not None else ended.error
        if ended.cancelled is not None or error is None or error is exc:
            raise
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        context = error.__context__
        try:
            raise error
        finally:
            error.__context__ = context
            del error, context, ended
    elapsed = trio.current_time() - start
    ordered = sorted(latencies)
    return OpsMeasurement(
        count=n,
        errors=len(failures),
        elapsed_s=elapsed,
        throughput_per_s=n / elapsed if elapsed > 0 else math.inf,
        p50_s=_nearest_rank(ordered, 50),
        p95_s=_nearest_rank(ordered, 95),
        p99_s=_nearest_rank(ordered, 99),
        max_s=ordered[-1],
        first_error=failures[0] if failures else None,
    )
