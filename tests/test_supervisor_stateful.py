"""Model-based test of supervisors: random operations against a plain-Python model.

Hypothesis draws a `Scenario`: a restart strategy, an intensity limit, maybe a
backoff (with jitter, from a seeded random source), an ``auto_shutdown`` mode
and a pool of children: plain Trio children, `Service` children (some slow to
stop, with their own shutdown budget) and nested supervisors, with every
restart type, some significant. Then, inside one `trio.run` on a
`trio.testing.MockClock`, it draws operations one at a time, aware of the state
so far: crashes, normal exits, several exits in the same instant, a crash
racing ``terminate_child`` (requested before, or after, the crash report),
``terminate_child`` / ``restart_child`` / ``start_child`` / ``delete_child``,
start failures, clock jumps, a control call (or ``delete_child``, or shutdown)
made while a child's restart attempt is in progress and keeps failing, a
``start_child`` whose caller is cancelled while the child's start blocks
(shielded or not), and shutdown at any point (leaving the block, or cancelling
it from outside), also while children wait to restart. Services also end
themselves: ``self.stop()`` (a normal exit), ``self.stop(reason)`` (a crash),
each with a call queued behind it, and an owned task (``self.start_soon``)
that raises; they start owned tasks that idle and ``send_after`` timers, and
hold deferred calls (``self.defer()``) that another message answers later,
whose caller gives up first, or that the incarnation leaves unanswered when it
ends (a crash, a stop, a strategy's restart, the tree's end). Each operation is
applied to the real supervisor and to `Model`, a sequential simulation of
DESIGN.md section 3 and of the supervisor's manager loop, and after every
operation (and after the tree closes) the test checks that:

- every child the model says runs has exactly one live incarnation and no
  other child has any (a service must also hold its name in the registry and
  answer a call from the incarnation the harness saw start; a nested
  supervisor must run its grandchild, with the model's restart count);
- ``which_children`` lists the model's ids in start order with the same
  status, restart count, kind, started value and backoff deadline (also in
  the middle of a restart attempt); ``count_children`` agrees;
- the exact sequence of starts, failed starts, own exits and supervisor stops
  equals the model's (so: which children a strategy stops, in reverse start
  order, and restarts, in start order);
- a service that stops itself normally is a normal exit (a ``TRANSIENT`` one
  is not restarted, a significant one ends the tree, a ``PERMANENT`` one is
  restarted; monitors see ``"normal"``); ``stop(reason)`` and an owned task's
  error are crashes (restart types, intensity, the reason as ``__cause__``
  when the supervisor gives up); the call queued behind a stop never runs
  (`ServiceUnavailableError`);
- a deferred caller gets the reply another message gave, or
  `ServiceUnavailableError` once its incarnation ended unanswered; a caller
  that gave up is never answered (``reply`` returns ``False`` and
  ``abandoned`` is true);
- a timer fires exactly when the model says, into the incarnation that armed
  it and never into the next; owned tasks run only while their incarnation
  does;
- every control call answers what the model says (also calls queued behind a
  restart attempt, and calls refused because the supervisor stops);
- no public call waits longer than the budgets allow: time only moves when the
  test says so, so a call must take exactly the time its stops take:
  ``terminate_child`` of a slow service ``min(linger, shutdown)``, leaving or
  cancelling the block the sum of that over the running children (they stop
  one after another), everything else no time at all (a cancelled
  ``start_child`` caller returns at once);
- the supervisor gives up (``RestartIntensityExceededError``, the failure as
  ``__cause__``) at exactly the operation where the model sees more than
  ``max_restarts`` restarts within a sliding ``max_seconds`` window, a nested
  supervisor's giving up is its parent's child crashing (escalation), and
  ``auto_shutdown`` ends the block without error exactly when the model says;
- after the block nothing is alive, nothing is registered, and nothing starts
  again even when the clock runs on.

Time only moves when an operation jumps the mock clock or waits for slow
stops, and Hypothesis seeds Trio's scheduler, so every example is
deterministic: failures shrink and replay. Every exit and restart happens at a
sum of dyadic times and no ``max_seconds`` is such a sum, so no restart lands
exactly on a window's edge (that edge, inclusive as in OTP, has its own test
in test_supervisor.py).

The model follows the supervisor's manager, as OTP's supervisor handles its
mailbox: child exits, restart attempts and control calls are handled one at a
time, in the order they arrive, and control calls waiting in the mailbox are
handled before the next restart attempt. Where the contract leaves a choice
open, the model follows the implementation: ``restart_child`` counts as a
restart of the child (even when it fails to start) but not towards intensity;
a failed restart attempt counts towards intensity; children a strategy
restarts together wait for the failed child's backoff delay; a child that
exited but whose exit the supervisor has not handled yet (status ``exited``)
and that a strategy or ``terminate_child`` stops is finished without a restart
of its own (its exit is dropped, as OTP drops the EXIT of a replaced child),
so a ``terminate_child`` requested before the crash is reported wins, while a
crash already reported is handled first (restart decided) and the
``terminate_child`` then stops the child (status ``restarting`` is a restart
due now or being attempted, ``backoff`` one waiting with ``restart_at``);
``terminate_child`` of a child waiting to restart stops the waiting (with
REST_FOR_ONE, also of the children after it); temporary children a strategy
stops are gone at once; a significant child ends the tree when it ends for
good by itself (a normal exit of a TRANSIENT one, any exit of a TEMPORARY one),
with ``all_significant`` once no significant child is running or waiting to
restart.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import trio
import trio.testing
from hypothesis import Phase, event, given, settings
from hypothesis import strategies as st

import trioscope
from trioscope import Backoff, ChildSpec, Restart, Strategy
from trioscope.testing import open_test_scope

IDS = ("a", "b", "c", "d", "e")
JUMPS = (0.25, 0.5, 1.0, 2.0, 4.0)
# Not a difference of sums of JUMPS: no restart sits exactly on a window edge.
MAX_SECONDS = (0.3, 1.1, 2.3, 5.3)
NESTED_MAX_SECONDS = 1.1
MAX_STEPS = 40
# A service's orderly stop: its terminate() takes LINGER seconds (while the
# test lets time run), cut off at its SHUTDOWN budget.
LINGER = (0.0, 0.25, 1.0, 4.0)
SHUTDOWN = (0.5, 2.0, math.inf)
# Not dyadic: a timer never fires in the same instant as a jump ends or a stop ends.
TIMER_DELAYS = (0.3, 1.3, 2.7)
NO_TIME = 10_000.0  # MockClock autojump threshold while time must not move

# "nested": a supervisor (`supervisor_spec`) of one permanent plain grandchild
# that stands for it in the harness: crashing the grandchild too often makes the
# nested supervisor give up, which its parent sees as that child's crash.
Kind = Literal["plain", "service", "nested"]
Status = Literal["running", "stopped", "restarting", "backoff", "exited"]
Event = tuple[str, str]  # ("start" | "start_failed" | "exit" | "stop", child id)
Call = Literal["terminate", "restart", "start", "delete", "leave", "cancel"]


class Boom(Exception):
    """A child's crash."""


class StartBoom(Exception):
    """A child's failed start."""


# -- scenarios and operations ----------------------------------------------------


@dataclass(frozen=True)
class ChildDesc:
    id: str
    kind: Kind
    restart: Restart
    significant: bool
    backoff: Backoff | None
    nested_max_restarts: int = 0  # the nested supervisor's own limit
    linger: float = 0.0  # a service's terminate() on an orderly stop
    shutdown: float = 5.0  # a service's budget

    @property
    def stop_time(self) -> float:
        """How long an orderly stop takes while time runs."""
        return min(self.linger, self.shutdown) if self.kind == "service" else 0.0


@dataclass(frozen=True)
class Scenario:
    strategy: Strategy
    max_restarts: int
    max_seconds: float
    backoff: Backoff | None
    auto_shutdown: Literal["never", "any_significant", "all_significant"]
    seed: int  # of the supervisor's jitter source (the model has its own copy)
    pool: tuple[ChildDesc, ...]
    initial: int  # the first `initial` children of the pool are the supervisor's children


@dataclass(frozen=True)
class Crash:
    id: str


@dataclass(frozen=True)
class Exit:
    """A normal exit (plain children only: a service cannot return on its own)."""

    id: str


@dataclass(frozen=True)
class Terminate:
    """``terminate_child``; a running service lingers in its terminate(), time runs."""

    id: str


@dataclass(frozen=True)
class RestartChild:
    id: str


@dataclass(frozen=True)
class Delete:
    id: str


@dataclass(frozen=True)
class StartChild:
    id: str


@dataclass(frozen=True)
class FailNextStarts:
    """The next *times* start attempts of this child id fail."""

    id: str
    times: int


@dataclass(frozen=True)
class Jump:
    seconds: float


@dataclass(frozen=True)
class Together:
    """Several plain children exit in the same instant (``True``: crash, ``False``: return).

    They run in an order Trio picks (seeded by Hypothesis); the supervisor
    handles their exits in that order, so the model reads it from the harness.
    """

    exits: tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class CrashThenTerminate:
    """A plain child crashes and ``terminate_child`` is called for it.

    *reported*: after the supervisor has handled the crash (its restart
    decision, and the restart if one is due at once), then the stop; else
    before the child even ran (the terminate wins: no restart, and the crash
    does not count).
    """

    id: str
    reported: bool


@dataclass(frozen=True)
class CallDuringRestart:
    """Child *id* crashes; its next *fails* start attempts fail, and the first of
    its restart attempts blocks: meanwhile *call* is made on *target*."""

    id: str
    fails: int
    call: Call
    target: str


@dataclass(frozen=True)
class CancelledStart:
    """``start_child`` whose caller is cancelled while the child's start blocks
    (*shield*: in a shielded section, so the child lingers until it is let go)."""

    id: str
    shield: bool


@dataclass(frozen=True)
class SelfStop:
    """A service's handler calls ``self.stop()`` (*reason*: ``self.stop(Boom())``), while
    a call queued behind it waits (it never runs: `ServiceUnavailableError`)."""

    id: str
    reason: bool


@dataclass(frozen=True)
class OwnedCrash:
    """A task the service started with ``self.start_soon`` raises."""

    id: str


@dataclass(frozen=True)
class Own:
    """A service starts an owned task that idles, and a ``send_after`` timer of *delay*."""

    id: str
    delay: float


@dataclass(frozen=True)
class Defer:
    """A call to a service is deferred: held until `Answer`, or until the incarnation ends.

    *then* ``"answer"``: `Answer` follows at once; ``"give_up"``: `GiveUp`, then `Answer`.
    """

    id: str
    then: Literal["wait", "answer", "give_up"]


@dataclass(frozen=True)
class GiveUp:
    """The oldest deferred caller of a service still waiting is cancelled."""

    id: str


@dataclass(frozen=True)
class Answer:
    """Another message answers the service's deferred calls (reply() says who still waited)."""

    id: str


@dataclass(frozen=True)
class Shutdown:
    """Leave the block by cancelling it from outside (``None`` leaves it normally)."""


Op = (
    Crash
    | Exit
    | Terminate
    | RestartChild
    | Delete
    | StartChild
    | FailNextStarts
    | Jump
    | Together
    | CrashThenTerminate
    | CallDuringRestart
    | CancelledStart
    | SelfStop
    | OwnedCrash
    | Own
    | Defer
    | GiveUp
    | Answer
    | Shutdown
)

backoffs = st.builds(
    Backoff,
    initial=st.sampled_from([0.25, 0.5, 1.0]),
    maximum=st.sampled_from([1.0, 2.0]),
    multiplier=st.sampled_from([1.0, 2.0, 3.0]),
    jitter=st.sampled_from([0.0, 0.5]),
    reset_after=st.sampled_from([0.5, 1.0, 4.0]),
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    pool = []
    for cid in IDS[: draw(st.integers(1, len(IDS)))]:
        kind: Kind = draw(st.sampled_from(["plain", "service", "nested", "plain", "service"]))
        restart = draw(st.sampled_from(list(Restart)))
        significant = (
            kind != "nested"
            and restart is not Restart.PERMANENT
            and draw(st.sampled_from([False, False, True]))
        )
        backoff = draw(st.none() | st.none() | st.none() | backoffs)
        nested_max_restarts = draw(st.integers(0, 2)) if kind == "nested" else 0
        linger, shutdown = 0.0, 5.0
        if kind == "service":
            linger = draw(st.sampled_from(LINGER))
            shutdown = draw(st.sampled_from(SHUTDOWN))
        pool.append(
            ChildDesc(
                cid, kind, restart, significant, backoff, nested_max_restarts, linger, shutdown
            )
        )
    modes: list[Literal["never", "any_significant", "all_significant"]] = [
        "any_significant",
        "all_significant",
    ]
    # Significant children need a mode; "never" then is the ValueError path (rarely).
    auto = draw(
        st.sampled_from(
            [*modes, *modes, "never"]
            if any(d.significant for d in pool)
            else ["never", "never", *modes]
        )
    )
    return Scenario(
        strategy=draw(st.sampled_from(list(Strategy))),
        max_restarts=draw(st.integers(0, 5)),
        max_seconds=draw(st.sampled_from(MAX_SECONDS)),
        backoff=draw(st.none() | backoffs),
        auto_shutdown=auto,
        seed=draw(st.integers(0, 2**32 - 1)),
        pool=tuple(pool),
        # Mostly all of them (and shrinking goes there); start_child adds the rest.
        initial=len(pool) - draw(st.sampled_from([0, 0, 0, *range(len(pool) + 1)])),
    )


def next_op(model: Model, ids: tuple[str, ...]) -> st.SearchStrategy[Op | None]:
    """An operation that mostly makes sense in the model's state (``None``: stop)."""
    children = model.children.items()
    return _next_op(
        tuple(cid for cid, c in children if c.status == "running"),
        tuple(cid for cid, c in children if c.status in ("running", "backoff")),
        tuple(cid for cid, c in children if c.status == "running" and c.desc.kind == "plain"),
        tuple(cid for cid, c in children if c.status == "stopped"),
        tuple(cid for cid in ids if cid not in model.children),
        tuple(
            cid
            for cid, c in children
            if c.status == "running"
            and c.desc.kind != "nested"
            and (c.desc.backoff or model.backoff) is None
        ),
        tuple(cid for cid in ids if model.descs[cid].kind == "plain"),
        tuple(cid for cid, c in children if c.status == "running" and c.desc.kind == "service"),
        tuple(cid for cid, calls in model.deferred.items() if calls),
        ids,
    )


@functools.cache
def _next_op(
    running: tuple[str, ...],
    active: tuple[str, ...],  # running or in backoff
    plain: tuple[str, ...],
    stopped: tuple[str, ...],
    absent: tuple[str, ...],
    quick: tuple[str, ...],  # running, not nested, restarted without delay
    plain_ids: tuple[str, ...],
    services: tuple[str, ...],  # running services
    holding: tuple[str, ...],  # running services holding deferred calls
    ids: tuple[str, ...],
) -> st.SearchStrategy[Op | None]:
    any_id = st.sampled_from(ids)

    def among(candidates: tuple[str, ...]) -> st.SearchStrategy[str]:
        return st.sampled_from(candidates) if candidates else any_id

    # Any operation on any id, for the error paths (unknown child, wrong state).
    on_id: list[Callable[[str], Op]] = [Crash, Exit, Terminate, RestartChild, Delete, StartChild]
    anything = st.sampled_from(on_id).flatmap(lambda op: st.builds(op, any_id))
    calls: list[Call] = ["terminate", "terminate", "restart", "start", "delete", "leave", "cancel"]
    weighted: list[tuple[int, Callable[[], st.SearchStrategy[Op]]]] = [
        (2, lambda: st.builds(Jump, st.sampled_from(JUMPS))),
        (4, lambda: st.builds(Crash, among(running))),
        (1, lambda: st.builds(Exit, among(running))),
        (2, lambda: st.builds(Terminate, among(active))),
        (1, lambda: st.builds(RestartChild, among(stopped))),
        (1, lambda: st.builds(StartChild, among(absent))),
        (1, lambda: st.builds(Delete, among(stopped))),
        (1, lambda: st.builds(FailNextStarts, any_id, st.integers(1, 3))),
        (1, lambda: anything),
    ]
    if plain:
        weighted.append(
            (1, lambda: st.builds(CrashThenTerminate, st.sampled_from(plain), st.booleans()))
        )
    if len(plain) >= 2:
        weighted.append((2, lambda: together(plain)))
    if quick:
        weighted.append(
            (
                4,
                lambda: st.builds(
                    CallDuringRestart,
                    st.sampled_from(quick),
                    st.integers(0, 3),
                    st.sampled_from(calls),
                    any_id,
                ),
            )
        )
    if services:
        service = st.sampled_from(services)
        weighted += [
            (3, lambda: st.builds(SelfStop, service, st.booleans())),
            (2, lambda: st.builds(OwnedCrash, service)),
            (3, lambda: st.builds(Own, service, st.sampled_from(TIMER_DELAYS))),
            (4, lambda: st.builds(Defer, service, st.sampled_from(["wait", "answer", "give_up"]))),
            (1, lambda: st.builds(GiveUp, service)),
            (1, lambda: st.builds(Answer, service)),
        ]
    if holding:
        held = st.sampled_from(holding)
        weighted += [(2, lambda: st.builds(GiveUp, held)), (3, lambda: st.builds(Answer, held))]
    if plain_ids:
        absent_plain = tuple(cid for cid in absent if cid in plain_ids)
        weighted.append(
            (
                1,
                lambda: st.builds(
                    CancelledStart, st.sampled_from(absent_plain or plain_ids), st.booleans()
                ),
            )
        )
    # one_of drops a repeated strategy object, so weigh with separate ones.
    ops: st.SearchStrategy[Op | None] = st.one_of(
        [make() for weight, make in weighted for _ in range(weight)]
    )
    # About one draw in 80 leaves the block early (shrinking goes there), one
    # in 80 cancels it from outside.
    return st.integers(0, 79).flatmap(
        lambda go: st.none() if not go else st.just(Shutdown()) if go == 40 else ops
    )


def together(plain: tuple[str, ...]) -> st.SearchStrategy[Together]:
    exits = st.lists(
        st.tuples(st.sampled_from(plain), st.booleans()),
        min_size=2,
        max_size=3,
        unique_by=lambda exit: exit[0],
    )
    return st.builds(Together, exits.map(tuple))


# -- the model -----------------------------------------------------------------


@dataclass
class MChild:
    desc: ChildDesc
    status: Status = "stopped"
    restarts: int = 0
    attempt: int = 0  # consecutive backoff restarts
    started_at: float = 0.0
    restart_at: float | None = None  # when it is due to restart
    nested: Model | None = None  # the nested supervisor of a running "nested" child
    generation: int = 0  # counts its incarnations


@dataclass(eq=False)
class DeferredCall:
    """A call a service deferred: what the model expects, and what the caller got."""

    cid: str
    expect: Literal["pending", "answered", "unavailable", "gave_up"] = "pending"
    got: tuple[str, object] | None = None  # (what, the answer) once the caller is done
    inc: Incarnation | None = None  # the incarnation it called
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


@dataclass(frozen=True)
class MTimer:
    """A pending ``send_after`` of one incarnation (*generation*) of a service."""

    tid: int
    cid: str
    generation: int
    due: float


Snapshot = list[tuple[str, str, int, float | None]]


@dataclass
class Model:
    """DESIGN.md section 3 as a sequential simulation: no tasks, no time but `now`.

    As the supervisor's manager, `_serve` takes the control calls waiting in
    `inbox` first, then the due restart attempts, one at a time, in start order.
    """

    strategy: Strategy
    max_restarts: int
    max_seconds: float
    backoff: Backoff | None
    rng: random.Random
    auto_shutdown: str = "never"
    descs: dict[str, ChildDesc] = field(default_factory=dict)
    children: dict[str, MChild] = field(default_factory=dict)  # in start order
    waiting: list[str] = field(default_factory=list)  # to restart
    restart_times: list[float] = field(default_factory=list)
    fail_starts: Counter[str] = field(default_factory=Counter)
    events: list[Event] = field(default_factory=list)
    now: float = 0.0
    # None while running; else ("shutdown",) or ("gave_up", child id, cause type).
    terminal: tuple[Any, ...] | None = None
    # Control calls queued for the manager: (call, child id, where its answer goes).
    inbox: list[tuple[Call, str, list[type[Exception] | None]]] = field(default_factory=list)
    # The next start attempt of this child blocks; meanwhile the callback acts.
    hold: tuple[str, Callable[[], None]] | None = None
    snapshot: Snapshot | None = None  # which_children while the held start blocks
    leaving: bool = False  # the block is being left (during a held start)
    # Deferred calls held by each running service's incarnation, in order.
    deferred: dict[str, list[DeferredCall]] = field(default_factory=dict)
    timers: list[MTimer] = field(default_factory=list)  # pending
    fired: set[int] = field(default_factory=set)  # timers that must have fired
    maybe: set[int] = field(default_factory=set)  # fired in the instant their service stopped
    timer_ids: Iterator[int] = field(default_factory=itertools.count)

    # -- helpers

    def statuses(self) -> Snapshot:
        return [
            (cid, c.status, c.restarts, c.restart_at if c.status == "backoff" else None)
            for cid, c in self.children.items()
        ]

    def _start(self, cid: str) -> bool:
        """One start attempt of a known child; True if it runs."""
        child = self.children[cid]
        if self.hold is not None and self.hold[0] == cid:
            action = self.hold[1]
            self.hold = None
            self.snapshot = self.statuses()
            action()
            if self.leaving:
                return False  # given up by the shutdown: it never gets further
        child.restart_at = None
        if child.desc.kind == "nested":
            # A nested supervisor starts if its grandchild does; events and
            # start failures are shared, under the same id.
            child.nested = Model(
                Strategy.ONE_FOR_ONE,
                child.desc.nested_max_restarts,
                NESTED_MAX_SECONDS,
                None,
                self.rng,
                events=self.events,
                fail_starts=self.fail_starts,
                now=self.now,
            )
            grandchild = ChildDesc(cid, "plain", Restart.PERMANENT, False, None)
            child.nested.children[cid] = MChild(grandchild)
            started = child.nested._start(cid)
        elif self.fail_starts[cid]:
            self.fail_starts[cid] -= 1
            self.events.append(("start_failed", cid))
            started = False
        else:
            self.events.append(("start", cid))
            started = True
        if not started:
            child.status = "stopped"
            return False
        child.status = "running"
        child.started_at = self.now
        child.generation += 1
        return True

    def _ended(self, cid: str) -> None:
        """A running incarnation ends: its deferred calls fail, its timers are cancelled."""
        for call in self.deferred.pop(cid, []):
            if call.expect == "pending":
                call.expect = "unavailable"
        self.timers = [t for t in self.timers if t.cid != cid]

    def _stop(self, cid: str) -> None:
        child = self.children[cid]
        if child.status == "running":
            self._ended(cid)
            if child.nested is not None:
                child.nested.close()  # a nested supervisor stops its own children
            else:
                self.events.append(("stop", cid))
        child.status = "stopped"
        child.restart_at = None
        if cid in self.waiting:
            self.waiting.remove(cid)

    def _finish(self, terminal: tuple[Any, ...]) -> None:
        self.terminal = terminal
        self.close()

    def _auto_shutdown_due(self) -> bool:
        if self.auto_shutdown == "any_significant":
            return True
        alive = ("running", "exited", "restarting", "backoff")
        return self.auto_shutdown == "all_significant" and not any(
            c.desc.significant and c.status in alive for c in self.children.values()
        )

    def _on_exit(self, cid: str, cause: type[BaseException] | None) -> None:
        """A child exited on its own: with *cause*, or normally (``None``)."""
        child = self.children[cid]
        desc = child.desc
        ran_for = self.now - child.started_at
        child.status = "stopped"
        restart = desc.restart is Restart.PERMANENT or (
            desc.restart is Restart.TRANSIENT and cause is not None
        )
        if restart:
            self._on_failure(cid, cause, ran_for)
            return
        # It ended for good, by itself.
        if desc.restart is Restart.TEMPORARY:
            del self.children[cid]
        if desc.significant and self._auto_shutdown_due():
            self._finish(("shutdown",))

    def _on_failure(
        self, cid: str, cause: type[BaseException] | None, ran_for: float | None
    ) -> None:
        """*cid* must restart; *ran_for* is how long it ran (``None``: it failed to start)."""
        now = self.now
        self.restart_times = [t for t in self.restart_times if now - t <= self.max_seconds]
        self.restart_times.append(now)
        if len(self.restart_times) > self.max_restarts:
            self._finish(("gave_up", cid, cause))
            return
        group = [cid]
        if self.strategy is not Strategy.ONE_FOR_ONE:
            order = list(self.children)
            members = order if self.strategy is Strategy.ONE_FOR_ALL else order[order.index(cid) :]
            group = [m for m in members if m == cid or self.children[m].status != "stopped"]
            for other in reversed(group):
                if other != cid:
                    self._stop(other)
            # Temporary children stopped by a strategy are not restarted: they go.
            for other in group:
                if other != cid and self.children[other].desc.restart is Restart.TEMPORARY:
                    del self.children[other]
            group = [m for m in group if m in self.children]
        child = self.children[cid]
        backoff = child.desc.backoff or self.backoff
        delay = 0.0
        if backoff is not None:
            # "A child that ran for at least reset_after seconds before failing
            # starts again from initial"; a failed start did not run at all.
            if ran_for is not None and ran_for >= backoff.reset_after:
                child.attempt = 0
            delay = min(backoff.maximum, backoff.initial * backoff.multiplier**child.attempt)
            if backoff.jitter:
                delay *= 1.0 - backoff.jitter * self.rng.random()
            child.attempt += 1
        for member in group:
            self.children[member].status = "backoff" if delay > 0 else "restarting"
            self.children[member].restart_at = now + delay
            if member in self.waiting:
                self.waiting.remove(member)
            self.waiting.append(member)

    def _restart(self, cid: str) -> None:
        """One restart attempt: one step of the manager."""
        self.waiting.remove(cid)
        child = self.children[cid]
        child.status = "restarting"
        child.restarts += 1
        if self._start(cid) or self.leaving:
            return
        nested = child.desc.kind == "nested"
        self._on_failure(cid, trioscope.StartError if nested else StartBoom, None)

    def _serve(self) -> None:
        """The manager: queued control calls first, then due restarts in start order."""
        while self.terminal is None and not self.leaving:
            if self.inbox:
                call, cid, answer = self.inbox.pop(0)
                if call == "terminate":
                    answer.append(self._terminate(cid))
                elif call == "restart":
                    answer.append(self._restart_child(cid))
                else:
                    answer.append(self._start_child(self.descs[cid]))
                continue
            due = [cid for cid in self.waiting if self._restart_at(cid) <= self.now]
            if not due:
                return
            order = list(self.children)
            self._restart(min(due, key=order.index))

    def _restart_at(self, cid: str) -> float:
        restart_at = self.children[cid].restart_at
        assert restart_at is not None
        return restart_at

    def _terminate(self, cid: str) -> type[Exception] | None:
        child = self.children.get(cid)
        if child is None:
            return trioscope.UnknownChildError
        if child.status in ("restarting", "backoff") and self.strategy is Strategy.REST_FOR_ONE:
            # It stops waiting, and so do the children after it.
            order = list(self.children)
            for other in list(self.waiting):
                if order.index(other) > order.index(cid):
                    self._stop(other)
        self._stop(cid)
        return None

    def _restart_child(self, cid: str) -> type[Exception] | None:
        child = self.children.get(cid)
        if child is None:
            return trioscope.UnknownChildError
        if child.status != "stopped":
            return trioscope.ChildStateError
        child.restarts += 1
        return None if self._start(cid) else trioscope.StartError

    def _start_child(self, desc: ChildDesc) -> type[Exception] | None:
        if desc.id in self.children:
            return ValueError
        if desc.significant and self.auto_shutdown == "never":
            return ValueError
        self.children[desc.id] = MChild(desc)
        if self._start(desc.id):
            return None
        del self.children[desc.id]
        return trioscope.StartError

    # -- operations; those that call the supervisor return the error it should raise

    def open(self, descs: tuple[ChildDesc, ...]) -> None:
        for desc in descs:
            self.children[desc.id] = MChild(desc)
            assert self._start(desc.id)

    def exit(self, cid: str, *, error: bool) -> bool:
        """Whether the real child should act: it must be running (and, to exit normally, plain)."""
        child = self.children.get(cid)
        if child is None or child.status != "running":
            return False
        if not error and child.desc.kind == "service":
            return False
        if child.desc.kind == "service":
            self._ended(cid)
        if child.nested is not None:
            # The grandchild exits; if its supervisor gives up, that is our child's crash.
            child.nested.now = self.now
            child.nested.exit(cid, error=error)
            if child.nested.terminal is not None:
                self._on_exit(cid, trioscope.RestartIntensityExceededError)
                self._serve()
            return True
        self.events.append(("exit", cid))
        self._on_exit(cid, Boom if error else None)
        self._serve()
        return True

    def service_exit(self, cid: str, cause: type[BaseException] | None) -> bool:
        """A running service ends itself (stop(), stop(reason), an owned task's crash)."""
        child = self.children.get(cid)
        if child is None or child.status != "running" or child.desc.kind != "service":
            return False
        self._ended(cid)
        self.events.append(("exit", cid))
        self._on_exit(cid, cause)
        self._serve()
        return True

    def running_service(self, cid: str) -> bool:
        child = self.children.get(cid)
        return child is not None and child.status == "running" and child.desc.kind == "service"

    def defer(self, cid: str) -> DeferredCall | None:
        if not self.running_service(cid):
            return None
        call = DeferredCall(cid)
        self.deferred.setdefault(cid, []).append(call)
        return call

    def give_up(self, cid: str) -> DeferredCall | None:
        waiting = [c for c in self.deferred.get(cid, []) if c.expect == "pending"]
        if not waiting:
            return None
        waiting[0].expect = "gave_up"
        return waiting[0]

    def answer(self, cid: str) -> list[bool] | None:
        """What each reply() returns: whether its caller still waited."""
        if not self.running_service(cid):
            return None
        calls = self.deferred.pop(cid, [])
        for call in calls:
            if call.expect == "pending":
                call.expect = "answered"
        return [call.expect == "answered" for call in calls]

    def own(self, cid: str, delay: float) -> int | None:
        if not self.running_service(cid):
            return None
        tid = next(self.timer_ids)
        self.timers.append(MTimer(tid, cid, self.children[cid].generation, self.now + delay))
        return tid

    def exits_together(self, order: list[tuple[str, bool]]) -> None:
        """Children exited at once, in this order; their reports are handled in it."""
        for cid, _ in order:
            self.events.append(("exit", cid))
            self.children[cid].status = "exited"
        for cid, error in order:
            child = self.children.get(cid)
            if self.terminal is not None or child is None or child.status != "exited":
                continue  # the tree stopped, or a strategy already restarted (or dropped) it
            self._on_exit(cid, Boom if error else None)
        self._serve()

    def crash_then_terminate(self, cid: str, *, reported: bool) -> type[Exception] | None:
        self.events.append(("exit", cid))
        if not reported:
            self.children[cid].status = "stopped"  # the crash is dropped
            return None
        self._on_exit(cid, Boom)
        # The harness lets the supervisor settle before it calls terminate_child:
        # a restart that is due happens first.
        self._serve()
        if self.terminal is not None:
            return trioscope.SupervisorClosedError
        error = self._terminate(cid)
        self._serve()
        return error

    def call_during_restart(self, op: CallDuringRestart) -> tuple[bool, list[Any]]:
        """Whether the held start was reached, and the call's answer (once known)."""
        answer: list[Any] = []

        def act() -> None:
            if op.call == "delete":
                answer.append(self.delete_child(op.target))
            elif op.call in ("leave", "cancel"):
                self.leaving = True
            else:
                self.inbox.append((op.call, op.target, answer))

        self.fail_starts[op.id] += op.fails
        self.hold = (op.id, act)
        assert self.exit(op.id, error=True)
        held = self.hold is None
        self.hold = None
        return held, answer

    def cancelled_start(self, desc: ChildDesc, *, shield: bool) -> type[Exception] | None:
        """A start_child whose caller is cancelled while the start blocks."""
        if desc.id in self.children or (desc.significant and self.auto_shutdown == "never"):
            return ValueError
        if shield:  # the start goes on once let go, then the child is stopped
            if self.fail_starts[desc.id]:
                self.fail_starts[desc.id] -= 1
                self.events.append(("start_failed", desc.id))
            else:
                self.events += [("start", desc.id), ("stop", desc.id)]
        return None

    def jump(self, seconds: float) -> None:
        self.now += seconds
        due = [t for t in self.timers if t.due <= self.now]
        self.timers = [t for t in self.timers if t.due > self.now]
        self._serve()
        for timer in due:
            # The clock jumps at once: a timer and a restart that stops its service
            # (a failed restart attempt's strategy) are due in the same instant.
            child = self.children.get(timer.cid)
            still = child is not None and child.status == "running"
            if still and child is not None and child.generation == timer.generation:
                self.fired.add(timer.tid)
            else:
                self.maybe.add(timer.tid)

    def fire_while_stopping(self) -> None:
        """The timers that fire while the running children stop one after another."""
        at = self.now
        for cid in reversed(list(self.children)):
            child = self.children[cid]
            if child.status == "running":
                self.fired |= {
                    t.tid
                    for t in self.timers
                    if t.cid == cid and t.generation == child.generation and t.due < at
                }
                at += child.desc.stop_time

    def terminate_child(self, cid: str) -> type[Exception] | None:
        error = self._terminate(cid)
        self._serve()
        return error

    def restart_child(self, cid: str) -> type[Exception] | None:
        error = self._restart_child(cid)
        self._serve()
        return error

    def delete_child(self, cid: str) -> type[Exception] | None:
        child = self.children.get(cid)
        if child is None:
            return trioscope.UnknownChildError
        if child.status != "stopped":
            return trioscope.ChildStateError
        del self.children[cid]
        return None

    def start_child(self, desc: ChildDesc) -> type[Exception] | None:
        error = self._start_child(desc)
        self._serve()
        return error

    def stop_time(self) -> float:
        """How long stopping the running children one after another takes."""
        return sum(c.desc.stop_time for c in self.children.values() if c.status == "running")

    def close(self) -> None:
        """Stop every child in reverse start order; queued calls are refused."""
        for cid in reversed(list(self.children)):
            self._stop(cid)
        for _, _, answer in self.inbox:
            answer.append(trioscope.SupervisorClosedError)
        self.inbox.clear()


# -- the real children -----------------------------------------------------------


class Incarnation:
    """One run of one child, as the harness sees it."""

    _numbers = itertools.count(1)

    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.number = next(self._numbers)
        self.crash = False
        self.wake = trio.Event()

    def __repr__(self) -> str:
        return f"<Incarnation {self.cid}#{self.number}>"


class Hold:
    """The next start of a child blocks until `release` (maybe in a shielded section)."""

    def __init__(self, *, shield: bool = False) -> None:
        self.release = trio.Event()
        self.shield = shield
        self.hit = False
        self.on_block: Callable[[], object] | None = None


class Harness:
    """What the real children record: live incarnations and the event log."""

    def __init__(self) -> None:
        self.live: defaultdict[str, list[Incarnation]] = defaultdict(list)
        self.events: list[Event] = []
        self.fail_starts: Counter[str] = Counter()
        self.holds: dict[str, Hold] = {}
        self.linger = False  # services take their time to stop (time runs)
        self.closed = False
        self.started_after_close: list[str] = []
        self.owned: list[Incarnation] = []  # whose owned tasks are running
        self.ticks: list[int] = []  # timers that fired
        self.stale_ticks: list[int] = []  # fired into another incarnation

    async def enter(self, cid: str) -> Incarnation:
        if self.closed:
            self.started_after_close.append(cid)
        hold = self.holds.pop(cid, None)
        if hold is not None:
            hold.hit = True
            if hold.on_block is not None:
                hold.on_block()
            with trio.CancelScope(shield=hold.shield):
                await hold.release.wait()
        if self.fail_starts[cid]:
            self.fail_starts[cid] -= 1
            self.events.append(("start_failed", cid))
            raise StartBoom(cid)
        inc = Incarnation(cid)
        self.live[cid].append(inc)
        self.events.append(("start", cid))
        return inc

    def leave(self, inc: Incarnation, how: Literal["exit", "stop"]) -> None:
        self.live[inc.cid].remove(inc)
        self.events.append((how, inc.cid))


async def plain_child(
    harness: Harness, cid: str, *, task_status: trio.TaskStatus[Incarnation]
) -> None:
    inc = await harness.enter(cid)
    try:
        task_status.started(inc)
        await inc.wake.wait()
    except trio.Cancelled:
        harness.leave(inc, "stop")
        raise
    harness.leave(inc, "exit")
    if inc.crash:
        raise Boom(f"{inc!r} crashed")


class Worker(trioscope.Service):
    def __init__(self, harness: Harness, cid: str, linger: float) -> None:
        self.harness = harness
        self.cid = cid
        self.linger = linger
        self.inc: Incarnation | None = None
        self.stopped_self = False
        self.held: list[trioscope.Deferred[Incarnation | None]] = []

    async def init(self) -> None:
        self.inc = await self.harness.enter(self.cid)

    async def terminate(self, reason: BaseException | None) -> None:
        assert self.inc is not None
        own_exit = reason is not None or self.stopped_self
        self.harness.leave(self.inc, "exit" if own_exit else "stop")
        if reason is None and self.harness.linger:
            await trio.sleep(self.linger)  # cut off at the shutdown budget

    async def whoami(self) -> Incarnation | None:
        return self.inc

    async def crash(self) -> None:
        raise Boom(f"{self.inc!r} crashed")

    async def stop_self(self, reason: bool) -> Incarnation | None:
        self.stopped_self = True
        self.stop(Boom(f"{self.inc!r} stopped itself") if reason else None)
        return self.inc

    async def spawn_crash(self) -> None:
        self.start_soon(self._crash_soon)

    async def _crash_soon(self) -> None:
        await trio.lowlevel.checkpoint()
        raise Boom(f"an owned task of {self.inc!r} crashed")

    async def own(self, delay: float, tid: int) -> None:
        self.start_soon(self._idle)
        self.send_after(delay, Worker.tick, tid, self.inc)

    async def _idle(self) -> None:
        assert self.inc is not None
        self.harness.owned.append(self.inc)
        try:
            await trio.sleep_forever()
        finally:
            self.harness.owned.remove(self.inc)

    async def tick(self, tid: int, armed_by: Incarnation | None) -> None:
        self.harness.ticks.append(tid)
        if armed_by is not self.inc:
            self.harness.stale_ticks.append(tid)

    async def hold(self) -> trioscope.Deferred[Incarnation | None]:
        deferred: trioscope.Deferred[Incarnation | None] = self.defer()
        self.held.append(deferred)
        return deferred

    async def answer(self) -> list[bool]:
        waited = []
        for deferred in self.held:
            abandoned = deferred.abandoned
            waited.append(deferred.reply(self.inc))
            assert abandoned == (not waited[-1])
            assert deferred.answered
        self.held.clear()
        return waited


def service_name(cid: str) -> str:
    return f"svc-{cid}"


def make_spec(desc: ChildDesc, harness: Harness) -> ChildSpec:
    if desc.kind == "nested":
        grandchild = ChildSpec("g", functools.partial(plain_child, harness, desc.id))
        return trioscope.supervisor_spec(
            [grandchild],
            id=desc.id,
            max_restarts=desc.nested_max_restarts,
            max_seconds=NESTED_MAX_SECONDS,
            restart=desc.restart,
            child_backoff=desc.backoff,
        )
    if desc.kind == "service":
        return Worker.child_spec(
            harness=harness,
            cid=desc.id,
            linger=desc.linger,
            name=service_name(desc.id),
            id=desc.id,
            restart=desc.restart,
            significant=desc.significant,
            backoff=desc.backoff,
            shutdown=desc.shutdown,
        )
    return ChildSpec(
        desc.id,
        functools.partial(plain_child, harness, desc.id),
        restart=desc.restart,
        significant=desc.significant,
        backoff=desc.backoff,
    )


# -- driving and checking -------------------------------------------------------

FROZEN = 1.0  # autojump threshold (real seconds) while time must not move: only a
# deadlock lets it move, and then the time a call took gives it away


@contextlib.contextmanager
def expect(error: type[Exception] | None) -> Iterator[None]:
    if error is None:
        yield
    else:
        with pytest.raises(error):
            yield


@contextlib.contextmanager
def takes(seconds: float) -> Iterator[None]:
    """The budget invariant: what is inside takes exactly *seconds* of (mock) time."""
    before = trio.current_time()
    yield
    assert trio.current_time() - before == seconds, "a public call waited longer than allowed"


@contextlib.contextmanager
def time_runs(clock: trio.testing.MockClock, harness: Harness) -> Iterator[None]:
    """Services linger in terminate() and the clock jumps to the next deadline at once."""
    harness.linger = True
    clock.autojump_threshold = 0
    try:
        yield
    finally:
        harness.linger = False
        clock.autojump_threshold = FROZEN


@dataclass
class Run:
    """One example: the real tree, the harness its children report to, and the model."""

    scenario: Scenario
    clock: trio.testing.MockClock
    harness: Harness
    model: Model
    descs: dict[str, ChildDesc]
    specs: dict[str, ChildSpec]
    reg: trioscope.Registry
    bg: trio.Nursery
    sup: trioscope.Supervisor | None = None
    # Calls made in the background: the model's answer, and (error, seconds) taken.
    calls: list[tuple[list[Any], list[Any]]] = field(default_factory=list)
    deferred_calls: list[DeferredCall] = field(default_factory=list)

    def ref(self, cid: str) -> trioscope.ServiceRef[Worker]:
        ref = self.reg.lookup(service_name(cid))
        assert isinstance(ref, trioscope.ServiceRef)
        return ref

    async def deferred_caller(self, ref: trioscope.ServiceRef[Worker], call: DeferredCall) -> None:
        with call.scope:
            try:
                value = await ref.with_timeout(math.inf).call(Worker.hold)
            except trioscope.ServiceUnavailableError as exc:
                call.got = ("unavailable", exc)
            else:
                call.got = ("answered", value)
            return
        call.got = ("gave_up", None)

    async def service_ends(self, op: SelfStop | OwnedCrash) -> None:
        """A service stops itself, or an owned task crashes it; monitors see why."""
        if not self.model.running_service(op.id):
            return
        ref = self.ref(op.id)
        [inc] = self.harness.live[op.id]
        normal = isinstance(op, SelfStop) and not op.reason
        self.model.service_exit(op.id, None if normal else Boom)
        late: list[BaseException] = []

        async def late_call() -> None:
            # Sent once the stop_self call is in the mailbox: it never runs.
            with pytest.raises(trioscope.ServiceUnavailableError) as info:
                await ref.call(Worker.whoami)
            late.append(info.value)

        async with trioscope.monitor(ref) as down:
            with takes(0.0):
                if isinstance(op, SelfStop):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(late_call)
                        assert await ref.call(Worker.stop_self, op.reason) is inc
                    assert len(late) == 1
                else:
                    await ref.call(Worker.spawn_crash)
                reason = (await down.wait()).reason
        if normal:
            assert reason == "normal"
        else:
            assert isinstance(reason, Boom), reason

    def give_up(self, cid: str) -> None:
        call = self.model.give_up(cid)
        if call is not None:
            call.scope.cancel()

    async def answer(self, cid: str) -> None:
        waited = self.model.answer(cid)
        if waited is not None:
            with takes(0.0):
                assert await self.ref(cid).call(Worker.answer) == waited

    def check_services(self) -> None:
        """Deferred calls got what the model says; timers fired in their own incarnation
        (never into the next); owned tasks run only in live incarnations."""
        model, harness = self.model, self.harness
        for call in self.deferred_calls:
            assert (call.got[0] if call.got else "pending") == call.expect, call
            if call.expect == "answered":
                assert call.got is not None
                assert call.got[1] is call.inc
        ticks = set(harness.ticks)
        assert len(ticks) == len(harness.ticks), "a timer fired twice"
        assert model.fired <= ticks, "a timer did not fire"
        assert ticks <= model.fired | model.maybe, "a timer fired after its incarnation ended"
        assert harness.stale_ticks == [], "a timer fired into another incarnation"
        for inc in harness.owned:
            assert inc in harness.live[inc.cid], f"an owned task of {inc!r} outlived it"

    def started_value_ok(self, value: object, cid: str) -> None:
        live = self.harness.live[cid]
        assert len(live) == 1
        kind = self.descs[cid].kind
        if kind == "service":
            assert isinstance(value, trioscope.ServiceRef)
            assert self.reg.lookup(service_name(cid)) == value
        elif kind == "nested":
            assert isinstance(value, trioscope.Supervisor)
            assert value.which_children()[0].value is live[0]
        else:
            assert value is live[0]

    async def crash(self, cid: str, *, error: bool = True) -> None:
        live = list(self.harness.live[cid])
        assert len(live) == 1
        if self.descs[cid].kind != "service":  # plain, or a nested grandchild
            live[0].crash = error
            live[0].wake.set()
        else:
            assert error
            ref = self.reg.lookup(service_name(cid))
            assert isinstance(ref, trioscope.ServiceRef)
            with takes(0.0), pytest.raises(trioscope.ServiceCrashedError):
                await ref.call(Worker.crash)

    async def call_in_background(self, call: Call, target: str, got: list[Any]) -> None:
        sup = self.sup
        assert sup is not None
        before = trio.current_time()
        error: Exception | None = None
        try:
            if call == "terminate":
                await sup.terminate_child(target)
            elif call == "restart":
                await sup.restart_child(target)
            else:
                await sup.start_child(self.specs[target])
        except Exception as exc:
            error = exc
        got += [error, trio.current_time() - before]

    def check_calls(self) -> None:
        for answer, got in self.calls:
            [expected] = answer
            error, seconds = got
            assert seconds == 0.0, "a call queued behind a restart attempt waited"
            if expected is None:
                assert error is None, error
            else:
                assert isinstance(error, expected), (expected, error)

    async def apply(self, op: Op) -> Callable[[], None] | Call | None:
        """Apply *op* to the tree and, unless it returns a callback that does it once
        the tree has settled (even if the tree stops), to the model; or return how
        to leave the block."""
        sup, model, harness = self.sup, self.model, self.harness
        assert sup is not None
        if isinstance(op, (Crash, Exit)):
            if not model.exit(op.id, error=isinstance(op, Crash)):
                return None
            await self.crash(op.id, error=isinstance(op, Crash))
        elif isinstance(op, Together):
            already = len(harness.events)
            for cid, crash in op.exits:
                [inc] = harness.live[cid]
                inc.crash = crash
                inc.wake.set()

            def settle() -> None:
                new = harness.events[already:]
                crashes = dict(op.exits)
                order = [(cid, crashes[cid]) for how, cid in new if how == "exit"]
                assert sorted(order) == sorted(op.exits), new
                model.exits_together(order)

            return settle
        elif isinstance(op, CrashThenTerminate):
            already = len(harness.events)
            error = model.crash_then_terminate(op.id, reported=op.reported)
            [inc] = harness.live[op.id]
            inc.crash = True
            inc.wake.set()
            if op.reported:
                # Let the supervisor handle the crash (and a restart that is due)
                # first: whether its manager or this task runs first after the
                # crash is Trio's choice, so settle instead of racing it.
                while ("exit", op.id) not in harness.events[already:]:
                    await trio.lowlevel.checkpoint()
                await trio.testing.wait_all_tasks_blocked()
            # (If the crash made the tree stop, the body may be cancelled here instead.)
            with takes(0.0), expect(error):
                await sup.terminate_child(op.id)
        elif isinstance(op, CallDuringRestart):
            return await self.call_during_restart(op)
        elif isinstance(op, CancelledStart):
            await self.cancelled_start(op)
        elif isinstance(op, (SelfStop, OwnedCrash)):
            await self.service_ends(op)
        elif isinstance(op, Own):
            tid = model.own(op.id, op.delay)
            if tid is not None:
                with takes(0.0):
                    await self.ref(op.id).call(Worker.own, op.delay, tid)
        elif isinstance(op, Defer):
            call = model.defer(op.id)
            if call is None:
                return None
            [call.inc] = harness.live[op.id]
            self.deferred_calls.append(call)
            self.bg.start_soon(self.deferred_caller, self.ref(op.id), call)
            await trio.testing.wait_all_tasks_blocked()  # the service holds the call
            assert call.got is None
            if op.then == "give_up":
                self.give_up(op.id)
                await trio.testing.wait_all_tasks_blocked()
            if op.then != "wait":
                await self.answer(op.id)
        elif isinstance(op, GiveUp):
            self.give_up(op.id)
        elif isinstance(op, Answer):
            await self.answer(op.id)
        elif isinstance(op, Shutdown):
            return "cancel"
        elif isinstance(op, Jump):
            model.jump(op.seconds)
            self.clock.jump(op.seconds)
        elif isinstance(op, FailNextStarts):
            model.fail_starts[op.id] += op.times
            harness.fail_starts[op.id] += op.times
        elif isinstance(op, Terminate):
            child = model.children.get(op.id)
            seconds = child.desc.stop_time if child and child.status == "running" else 0.0
            error = model.terminate_child(op.id)
            timing = time_runs(self.clock, harness) if seconds else contextlib.nullcontext()
            with timing, takes(seconds), expect(error):
                await sup.terminate_child(op.id)
            model.jump(seconds)  # restarts that came due meanwhile happen now
        elif isinstance(op, Delete):
            with expect(model.delete_child(op.id)):
                sup.delete_child(op.id)
        elif isinstance(op, RestartChild):
            error = model.restart_child(op.id)
            with takes(0.0), expect(error):
                value = await sup.restart_child(op.id)
            if error is None:
                self.started_value_ok(value, op.id)
        elif isinstance(op, StartChild):
            error = model.start_child(self.descs[op.id])
            with takes(0.0), expect(error):
                value = await sup.start_child(self.specs[op.id])
            if error is None:
                self.started_value_ok(value, op.id)
        else:  # pragma: no cover
            raise AssertionError(op)
        return None

    async def call_during_restart(self, op: CallDuringRestart) -> Call | None:
        sup, model, harness = self.sup, self.model, self.harness
        assert sup is not None
        held, answer = model.call_during_restart(op)
        snapshot, model.snapshot = model.snapshot, None
        harness.fail_starts[op.id] += op.fails
        hold = harness.holds[op.id] = Hold()
        await self.crash(op.id)
        # The manager is now inside the restart attempt, blocked (or the tree stopped).
        await trio.testing.wait_all_tasks_blocked()
        harness.holds.pop(op.id, None)
        assert hold.hit == held
        event(f"call during restart: {op.call if held else 'not reached'}")
        if not held:
            return None
        # Between the crash and the attempt's end: the model's state at that point.
        assert [(i.id, i.status, i.restarts, i.restart_at) for i in sup.which_children()] == (
            snapshot
        )
        if op.call == "delete":
            with expect(answer[0]):
                sup.delete_child(op.target)
        elif op.call in ("leave", "cancel"):
            return op.call  # the attempt in progress is given up
        else:
            got: list[Any] = []
            self.calls.append((answer, got))
            self.bg.start_soon(self.call_in_background, op.call, op.target, got)
            await trio.testing.wait_all_tasks_blocked()  # the call waits in the mailbox
            assert got == []
        hold.release.set()
        return None

    async def cancelled_start(self, op: CancelledStart) -> None:
        sup, harness = self.sup, self.harness
        assert sup is not None
        error = self.model.cancelled_start(self.descs[op.id], shield=op.shield)
        hold = harness.holds[op.id] = Hold(shield=op.shield)
        before = trio.current_time()
        with trio.CancelScope() as caller:
            hold.on_block = caller.cancel
            with expect(error):
                await sup.start_child(self.specs[op.id])
                raise AssertionError("start_child returned although its caller was cancelled")
        assert trio.current_time() == before, "a cancelled start_child caller waited"
        harness.holds.pop(op.id, None)
        assert hold.hit == caller.cancelled_caught == (error is None)
        if error is None:
            await trio.testing.wait_all_tasks_blocked()
            # Given up: gone at once, or stopping until its shielded section ends.
            statuses = [info.status for info in sup.which_children() if info.id == op.id]
            assert statuses == (["stopping"] if op.shield else [])
            hold.release.set()

    async def check(self) -> None:
        sup, model, harness, reg = self.sup, self.model, self.harness, self.reg
        assert sup is not None
        assert harness.events == model.events
        assert trio.current_time() == model.now
        infos = sup.which_children()
        assert [info.id for info in infos] == list(model.children)
        for info in infos:
            child = model.children[info.id]
            restart_at = child.restart_at if child.status == "backoff" else None
            assert (info.id, info.status, info.restarts, info.restart_at) == (
                info.id,
                child.status,
                child.restarts,
                restart_at,
            )
            assert info.kind == ("supervisor" if child.desc.kind == "nested" else "worker")
            live = harness.live[info.id]
            if child.status == "running":
                assert len(live) == 1, f"child {info.id!r} should run exactly once: {live}"
                if child.desc.kind == "plain":
                    assert info.value is live[0]
                elif child.nested is not None:
                    assert isinstance(info.value, trioscope.Supervisor)
                    [inner] = info.value.which_children()
                    restarts = child.nested.children[info.id].restarts
                    assert (inner.id, inner.status, inner.restarts) == ("g", "running", restarts)
                    assert inner.value is live[0]
                else:
                    ref = reg.lookup(service_name(info.id))
                    assert isinstance(ref, trioscope.ServiceRef)
                    assert info.value == ref
                    assert await ref.call(Worker.whoami) is live[0]
            else:
                assert live == [], f"child {info.id!r} should not run: {live}"
                assert info.value is None
        for cid in IDS:
            if cid not in model.children:
                assert harness.live[cid] == [], f"{cid!r} is gone but runs: {harness.live[cid]}"
        assert sorted(reg.names()) == sorted(
            service_name(cid)
            for cid, child in model.children.items()
            if child.desc.kind == "service" and child.status == "running"
        )
        running = sum(1 for child in model.children.values() if child.status == "running")
        nested = sum(1 for child in model.children.values() if child.desc.kind == "nested")
        assert sup.count_children() == trioscope.ChildCounts(
            specs=len(model.children),
            active=running,
            supervisors=nested,
            workers=len(model.children) - nested,
        )
        self.check_services()


async def run_scenario(sc: Scenario, data: st.DataObject, clock: trio.testing.MockClock) -> None:
    harness = Harness()
    descs = {desc.id: desc for desc in sc.pool}
    model = Model(
        sc.strategy,
        sc.max_restarts,
        sc.max_seconds,
        sc.backoff,
        random.Random(sc.seed),
        auto_shutdown=sc.auto_shutdown,
        descs=descs,
    )
    ids = tuple(desc.id for desc in sc.pool)
    initial = sc.pool[: sc.initial]
    gave_up: trioscope.RestartIntensityExceededError | None = None
    body_done = False
    step = 0
    terminal_at: int | None = None
    how: Call = "leave"
    left_at: float | None = None
    stop_time = 0.0
    async with trioscope.open_registry() as reg, trio.open_nursery() as bg:
        run = Run(
            sc,
            clock,
            harness,
            model,
            descs=descs,
            specs={desc.id: make_spec(desc, harness) for desc in sc.pool},
            reg=reg,
            bg=bg,
        )

        def open_it() -> Any:
            return trioscope.open_supervisor(
                [run.specs[desc.id] for desc in initial],
                strategy=sc.strategy,
                max_restarts=sc.max_restarts,
                max_seconds=sc.max_seconds,
                backoff=sc.backoff,
                auto_shutdown=sc.auto_shutdown,
                rng=random.Random(sc.seed),
                id="root",
            )

        if sc.auto_shutdown == "never" and any(desc.significant for desc in initial):
            with pytest.raises(ValueError, match="significant"):
                async with open_it():
                    raise AssertionError("opened with a significant child and no auto_shutdown")
            assert harness.events == []
            return

        with trio.CancelScope() as outer:
            try:
                async with open_it() as run.sup:
                    model.open(initial)
                    await run.check()
                    for step in range(1, MAX_STEPS + 1):
                        op = data.draw(next_op(model, ids), label=f"step {step}")
                        if op is None:
                            break
                        settle: Callable[[], None] | Call | None = None
                        try:
                            event(f"op {type(op).__name__}")
                            settle = await run.apply(op)
                            if isinstance(settle, str):
                                how = settle
                                break
                            # Let the supervisor react; if the tree stops, the body is
                            # cancelled here (or already in the operation).
                            await trio.testing.wait_all_tasks_blocked()
                        finally:
                            if callable(settle):
                                settle()
                            if model.terminal is not None:
                                terminal_at = step
                        assert model.terminal is None, (
                            f"the model expected the tree to stop ({model.terminal}) at step "
                            f"{step}, but the body is still running"
                        )
                        await run.check()
                    body_done = True
                    # Leave (or be cancelled) at once: the running children stop in
                    # reverse order, each taking what its stop takes within its budget.
                    stop_time = model.stop_time()
                    model.fire_while_stopping()
                    model.close()
                    harness.linger = True
                    clock.autojump_threshold = 0
                    left_at = trio.current_time()
                    if how == "cancel":
                        outer.cancel()
                        await trio.lowlevel.checkpoint()
            except trioscope.RestartIntensityExceededError as exc:
                gave_up = exc
        assert outer.cancelled_caught == (how == "cancel")
        if left_at is not None:
            assert trio.current_time() - left_at == stop_time, (
                "leaving the block took longer than the running children's stops"
            )
        harness.linger = False
        clock.autojump_threshold = FROZEN

        event(f"ended: {model.terminal[0] if model.terminal else how}")
        if stop_time:
            event("leaving waited for slow stops")
        # The tree is closed.
        if model.terminal is None:
            assert body_done, f"the body was cancelled at step {step}; the model expected not"
            assert gave_up is None
        else:
            assert not body_done
            assert step == terminal_at, "the tree stopped at another step than the model's"
            if model.terminal[0] == "shutdown":
                assert gave_up is None, "auto_shutdown must not be an error"
            else:
                _, cid, cause = model.terminal
                assert gave_up is not None, "the model expected RestartIntensityExceededError"
                assert gave_up.child_id == cid
                assert gave_up.max_restarts == sc.max_restarts
                assert gave_up.max_seconds == sc.max_seconds
                if cause is None:  # a permanent child's normal exit
                    assert gave_up.__cause__ is None
                else:
                    assert isinstance(gave_up.__cause__, cause)
        await trio.testing.wait_all_tasks_blocked()
        run.check_calls()
        run.check_services()
        for call in run.deferred_calls:
            event(f"deferred call: {call.expect}")
        if model.fired:
            event("a timer fired")
        assert harness.owned == []
        assert all(call.got is not None for call in run.deferred_calls)
        assert harness.events == model.events
        assert all(not live for live in harness.live.values()), dict(harness.live)
        assert reg.names() == []
        with pytest.raises(trioscope.SupervisorClosedError):
            await run.sup.terminate_child(ids[0])

        # Nothing runs after the tree is closed, however long we wait.
        harness.closed = True
        clock.jump(1000)
        await trio.testing.wait_all_tasks_blocked()
        assert harness.started_after_close == []
        assert harness.events == model.events
        run.check_services()
        assert all(not live for live in harness.live.values())


@settings(max_examples=150, phases=[p for p in Phase if p is not Phase.explain])
@given(sc=scenarios(), data=st.data())
def test_supervisor_matches_model(sc: Scenario, data: st.DataObject) -> None:
    # Time moves only with Jump steps and while slow stops are awaited. The
    # autojump threshold and the outer deadline only turn a deadlock into a
    # failure instead of a hang.
    clock = trio.testing.MockClock(autojump_threshold=FROZEN)

    async def main() -> None:
        # Each example in its own leak-checked scope: nothing it started outlives it.
        with trio.fail_after(1_000_000):
            async with open_test_scope("test_supervisor_matches_model"):
                await run_scenario(sc, data, clock)

    trio.run(main, clock=clock)
