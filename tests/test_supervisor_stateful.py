"""Model-based test of supervisors: random operations against a plain-Python model.

Hypothesis draws a `Scenario`: a restart strategy, an intensity limit, maybe a
backoff (with jitter, from a seeded random source), and a pool of children:
plain Trio children, `Service` children and nested supervisors, with every
restart type, some significant. Then, inside one `trio.run` on a
`trio.testing.MockClock`, it draws operations one at a time, aware of the state
so far: crashes, normal exits, several exits in the same instant, a crash
racing ``terminate_child``, ``terminate_child`` / ``restart_child`` /
``start_child`` / ``delete_child``, start failures and clock jumps. Each
operation is applied to the real supervisor and to `Model`, a sequential
simulation of DESIGN.md section 3, and after every operation (and after the
tree closes) the test checks that:

- every child the model says runs has exactly one live incarnation and no
  other child has any (a service must also hold its name in the registry and
  answer a call from the incarnation the harness saw start; a nested
  supervisor must run its grandchild, with the model's restart count);
- ``which_children`` lists the model's ids in start order with the same
  status, restart count, kind, started value and backoff deadline;
  ``count_children`` agrees;
- the exact sequence of starts, failed starts, own exits and supervisor stops
  equals the model's (so: which children a strategy stops, in reverse start
  order, and restarts, in start order);
- the supervisor gives up (``RestartIntensityExceededError``, the failure as
  ``__cause__``) at exactly the operation where the model sees more than
  ``max_restarts`` restarts within a sliding ``max_seconds`` window, a nested
  supervisor's giving up is its parent's child crashing (escalation), and a
  significant child's normal exit ends the block without error;
- after the block nothing is alive, nothing is registered, and nothing starts
  again even when the clock runs on.

Time only moves when an operation jumps the mock clock, and Hypothesis seeds
Trio's scheduler, so every example is deterministic: failures shrink and
replay. Every exit and restart happens at a sum of the (dyadic) jumps and no
``max_seconds`` is such a sum, so no restart lands exactly on a window's edge
(that edge, inclusive as in OTP, has its own test in test_supervisor.py).

Where the contract leaves a choice open, the model follows the implementation:
``restart_child`` counts as a restart of the child (even when it fails to start)
but not towards intensity; children a strategy restarts together wait for the
failed child's backoff delay; a child that exited but whose exit the supervisor
has not handled yet is stopped and restarted with the others of its group (its
own exit is then dropped, as OTP drops the EXIT of a replaced child); and a
``terminate_child`` that comes before the supervisor has handled a crash wins.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import trio
import trio.testing
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import trioscope
from trioscope import Backoff, ChildSpec, Restart, Strategy

IDS = ("a", "b", "c", "d", "e")
JUMPS = (0.25, 0.5, 1.0, 2.0, 4.0)
# Not a difference of sums of JUMPS: no restart sits exactly on a window edge.
MAX_SECONDS = (0.3, 1.1, 2.3, 5.3)
NESTED_MAX_SECONDS = 1.1
MAX_STEPS = 60

# "nested": a supervisor (`supervisor_spec`) of one permanent plain grandchild
# that stands for it in the harness: crashing the grandchild too often makes the
# nested supervisor give up, which its parent sees as that child's crash.
Kind = Literal["plain", "service", "nested"]
Status = Literal["running", "stopped", "backoff", "exited"]  # "exited": not yet handled
Event = tuple[str, str]  # ("start" | "start_failed" | "exit" | "stop", child id)


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


@dataclass(frozen=True)
class Scenario:
    strategy: Strategy
    max_restarts: int
    max_seconds: float
    backoff: Backoff | None
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
    """A plain child crashes and ``terminate_child`` is called for it before the
    supervisor has handled the crash: it stays stopped, and the crash is not a restart."""

    id: str


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
        kind: Kind = draw(st.sampled_from(["plain", "service", "nested", "plain"]))
        restart = draw(st.sampled_from(list(Restart)))
        significant = (
            kind == "plain"
            and restart is not Restart.PERMANENT
            and draw(st.sampled_from([False, False, False, True]))
        )
        backoff = draw(st.none() | st.none() | st.none() | backoffs)
        nested_max_restarts = draw(st.integers(0, 2)) if kind == "nested" else 0
        pool.append(ChildDesc(cid, kind, restart, significant, backoff, nested_max_restarts))
    return Scenario(
        strategy=draw(st.sampled_from(list(Strategy))),
        max_restarts=draw(st.integers(0, 5)),
        max_seconds=draw(st.sampled_from(MAX_SECONDS)),
        backoff=draw(st.none() | backoffs),
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
        ids,
    )


@functools.cache
def _next_op(
    running: tuple[str, ...],
    active: tuple[str, ...],  # running or in backoff
    plain: tuple[str, ...],
    stopped: tuple[str, ...],
    absent: tuple[str, ...],
    ids: tuple[str, ...],
) -> st.SearchStrategy[Op | None]:
    any_id = st.sampled_from(ids)

    def among(candidates: tuple[str, ...]) -> st.SearchStrategy[str]:
        return st.sampled_from(candidates) if candidates else any_id

    # Any operation on any id, for the error paths (unknown child, wrong state).
    on_id: list[Callable[[str], Op]] = [Crash, Exit, Terminate, RestartChild, Delete, StartChild]
    anything = st.sampled_from(on_id).flatmap(lambda op: st.builds(op, any_id))
    weighted: list[tuple[int, Callable[[], st.SearchStrategy[Op]]]] = [
        (2, lambda: st.builds(Jump, st.sampled_from(JUMPS))),
        (4, lambda: st.builds(Crash, among(running))),
        (1, lambda: st.builds(Exit, among(running))),
        (1, lambda: st.builds(Terminate, among(active))),
        (1, lambda: st.builds(RestartChild, among(stopped))),
        (1, lambda: st.builds(StartChild, among(absent))),
        (1, lambda: st.builds(Delete, among(stopped))),
        (1, lambda: st.builds(FailNextStarts, any_id, st.integers(1, 3))),
        (1, lambda: anything),
    ]
    if plain:
        weighted.append((1, lambda: st.builds(CrashThenTerminate, st.sampled_from(plain))))
    if len(plain) >= 2:
        weighted.append((2, lambda: together(plain)))
    # one_of drops a repeated strategy object, so weigh with separate ones.
    ops: st.SearchStrategy[Op | None] = st.one_of(
        [make() for weight, make in weighted for _ in range(weight)]
    )
    stop: st.SearchStrategy[Op | None] = st.none()
    # About one draw in 64 stops the run early; shrinking goes towards stopping.
    return st.integers(0, 63).flatmap(lambda go: ops if go else stop)


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
    restart_at: float | None = None
    nested: Model | None = None  # the nested supervisor of a running "nested" child


@dataclass
class Model:
    """DESIGN.md section 3 as a sequential simulation: no tasks, no time but `now`."""

    strategy: Strategy
    max_restarts: int
    max_seconds: float
    backoff: Backoff | None
    rng: random.Random
    children: dict[str, MChild] = field(default_factory=dict)  # in start order
    waiting: list[str] = field(default_factory=list)  # in backoff
    restart_times: list[float] = field(default_factory=list)
    fail_starts: Counter[str] = field(default_factory=Counter)
    events: list[Event] = field(default_factory=list)
    now: float = 0.0
    # None while running; else ("shutdown",) or ("gave_up", child id, cause type).
    terminal: tuple[Any, ...] | None = None

    # -- helpers

    def _start(self, cid: str) -> bool:
        """One start attempt of a known child; True if it runs."""
        child = self.children[cid]
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
        return True

    def _stop(self, cid: str) -> None:
        child = self.children[cid]
        if child.status == "running":
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

    def _on_exit(self, cid: str, cause: type[BaseException] | None) -> None:
        """A child exited on its own: with *cause*, or normally (``None``)."""
        child = self.children[cid]
        desc = child.desc
        ran_for = self.now - child.started_at
        child.status = "stopped"
        if cause is None and desc.significant:
            self._finish(("shutdown",))
            return
        restart = desc.restart is Restart.PERMANENT or (
            desc.restart is Restart.TRANSIENT and cause is not None
        )
        if not restart:
            if desc.restart is Restart.TEMPORARY:
                del self.children[cid]
            return
        self._on_failure(cid, cause, ran_for)
        self._restart_due()

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
            self.children[member].status = "backoff"
            self.children[member].restart_at = now + delay
            if member in self.waiting:
                self.waiting.remove(member)
            self.waiting.append(member)

    def _restart_at(self, cid: str) -> float:
        restart_at = self.children[cid].restart_at
        assert restart_at is not None
        return restart_at

    def _restart_due(self) -> None:
        while self.waiting and self.terminal is None:
            order = list(self.children)
            due = [cid for cid in self.waiting if self._restart_at(cid) <= self.now]
            if not due:
                return
            for cid in sorted(due, key=order.index):
                self.waiting.remove(cid)
                self.children[cid].restarts += 1
                if not self._start(cid):
                    nested = self.children[cid].desc.kind == "nested"
                    self._on_failure(cid, trioscope.StartError if nested else StartBoom, None)
                    break

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
        if child.nested is not None:
            # The grandchild exits; if its supervisor gives up, that is our child's crash.
            child.nested.now = self.now
            child.nested.exit(cid, error=error)
            if child.nested.terminal is not None:
                self._on_exit(cid, trioscope.RestartIntensityExceededError)
            return True
        self.events.append(("exit", cid))
        self._on_exit(cid, Boom if error else None)
        return True

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

    def crash_then_terminate(self, cid: str) -> None:
        self.events.append(("exit", cid))
        self.children[cid].status = "stopped"

    def jump(self, seconds: float) -> None:
        self.now += seconds
        self._restart_due()

    def terminate_child(self, cid: str) -> type[Exception] | None:
        if cid not in self.children:
            return trioscope.UnknownChildError
        self._stop(cid)
        return None

    def restart_child(self, cid: str) -> type[Exception] | None:
        child = self.children.get(cid)
        if child is None:
            return trioscope.UnknownChildError
        if child.status != "stopped":
            return trioscope.ChildStateError
        child.restarts += 1
        return None if self._start(cid) else trioscope.StartError

    def delete_child(self, cid: str) -> type[Exception] | None:
        child = self.children.get(cid)
        if child is None:
            return trioscope.UnknownChildError
        if child.status != "stopped":
            return trioscope.ChildStateError
        del self.children[cid]
        return None

    def start_child(self, desc: ChildDesc) -> type[Exception] | None:
        if desc.id in self.children:
            return ValueError
        self.children[desc.id] = MChild(desc)
        if self._start(desc.id):
            return None
        del self.children[desc.id]
        return trioscope.StartError

    def close(self) -> None:
        """Stop every child in reverse start order."""
        for cid in reversed(list(self.children)):
            self._stop(cid)


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


class Harness:
    """What the real children record: live incarnations and the event log."""

    def __init__(self) -> None:
        self.live: defaultdict[str, list[Incarnation]] = defaultdict(list)
        self.events: list[Event] = []
        self.fail_starts: Counter[str] = Counter()
        self.closed = False
        self.started_after_close: list[str] = []

    def enter(self, cid: str) -> Incarnation:
        if self.closed:
            self.started_after_close.append(cid)
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
    inc = harness.enter(cid)
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
    def __init__(self, harness: Harness, cid: str) -> None:
        self.harness = harness
        self.cid = cid
        self.inc: Incarnation | None = None

    async def init(self) -> None:
        self.inc = self.harness.enter(self.cid)

    async def terminate(self, reason: BaseException | None) -> None:
        assert self.inc is not None
        self.harness.leave(self.inc, "stop" if reason is None else "exit")

    async def whoami(self) -> Incarnation | None:
        return self.inc

    async def crash(self) -> None:
        raise Boom(f"{self.inc!r} crashed")


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
            name=service_name(desc.id),
            id=desc.id,
            restart=desc.restart,
            significant=desc.significant,
            backoff=desc.backoff,
        )
    return ChildSpec(
        desc.id,
        functools.partial(plain_child, harness, desc.id),
        restart=desc.restart,
        significant=desc.significant,
        backoff=desc.backoff,
    )


# -- driving and checking -------------------------------------------------------


@contextlib.contextmanager
def expect(error: type[Exception] | None) -> Iterator[None]:
    if error is None:
        yield
    else:
        with pytest.raises(error):
            yield


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
    sup: trioscope.Supervisor | None = None

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

    async def apply(self, op: Op) -> Callable[[], None] | None:
        """Apply *op* to the tree and, unless it returns a callback that does it once
        the tree has settled (even if the tree stops), to the model."""
        sup, model, harness = self.sup, self.model, self.harness
        assert sup is not None
        if isinstance(op, (Crash, Exit)):
            live = list(harness.live[op.id])
            if not model.exit(op.id, error=isinstance(op, Crash)):
                return None
            assert len(live) == 1
            if self.descs[op.id].kind != "service":  # plain, or a nested grandchild
                live[0].crash = isinstance(op, Crash)
                live[0].wake.set()
            else:
                ref = self.reg.lookup(service_name(op.id))
                assert isinstance(ref, trioscope.ServiceRef)
                with pytest.raises(trioscope.ServiceCrashedError):
                    await ref.call(Worker.crash)
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
            [inc] = harness.live[op.id]
            inc.crash = True
            inc.wake.set()
            model.crash_then_terminate(op.id)
            await sup.terminate_child(op.id)
        elif isinstance(op, Jump):
            model.jump(op.seconds)
            self.clock.jump(op.seconds)
        elif isinstance(op, FailNextStarts):
            model.fail_starts[op.id] += op.times
            harness.fail_starts[op.id] += op.times
        elif isinstance(op, Terminate):
            with expect(model.terminate_child(op.id)):
                await sup.terminate_child(op.id)
        elif isinstance(op, Delete):
            with expect(model.delete_child(op.id)):
                sup.delete_child(op.id)
        elif isinstance(op, RestartChild):
            error = model.restart_child(op.id)
            with expect(error):
                value = await sup.restart_child(op.id)
            if error is None:
                self.started_value_ok(value, op.id)
        elif isinstance(op, StartChild):
            error = model.start_child(self.descs[op.id])
            with expect(error):
                value = await sup.start_child(self.specs[op.id])
            if error is None:
                self.started_value_ok(value, op.id)
        else:  # pragma: no cover
            raise AssertionError(op)
        return None

    async def check(self) -> None:
        sup, model, harness, reg = self.sup, self.model, self.harness, self.reg
        assert sup is not None
        assert harness.events == model.events
        assert trio.current_time() == model.now
        infos = sup.which_children()
        assert [info.id for info in infos] == list(model.children)
        for info in infos:
            child = model.children[info.id]
            assert (info.id, info.status, info.restarts, info.restart_at) == (
                info.id,
                child.status,
                child.restarts,
                child.restart_at,
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


async def run_scenario(sc: Scenario, data: st.DataObject, clock: trio.testing.MockClock) -> None:
    harness = Harness()
    model = Model(sc.strategy, sc.max_restarts, sc.max_seconds, sc.backoff, random.Random(sc.seed))
    ids = tuple(desc.id for desc in sc.pool)
    initial = sc.pool[: sc.initial]
    gave_up: trioscope.RestartIntensityExceededError | None = None
    body_done = False
    step = 0
    terminal_at: int | None = None
    async with trioscope.open_registry() as reg:
        run = Run(
            sc,
            clock,
            harness,
            model,
            descs={desc.id: desc for desc in sc.pool},
            specs={desc.id: make_spec(desc, harness) for desc in sc.pool},
            reg=reg,
        )
        try:
            async with trioscope.open_supervisor(
                [run.specs[desc.id] for desc in initial],
                strategy=sc.strategy,
                max_restarts=sc.max_restarts,
                max_seconds=sc.max_seconds,
                backoff=sc.backoff,
                rng=random.Random(sc.seed),
                id="root",
            ) as run.sup:
                model.open(initial)
                await run.check()
                for step in range(1, MAX_STEPS + 1):
                    op = data.draw(next_op(model, ids), label=f"step {step}")
                    if op is None:
                        break
                    settle = await run.apply(op)
                    try:
                        # Let the supervisor react; if the tree stops, the body is cancelled here.
                        await trio.testing.wait_all_tasks_blocked()
                    finally:
                        if settle is not None:
                            settle()
                        if model.terminal is not None:
                            terminal_at = step
                    assert model.terminal is None, (
                        f"the model expected the tree to stop ({model.terminal}) at step "
                        f"{step}, but the body is still running"
                    )
                    await run.check()
                body_done = True
                model.close()
        except trioscope.RestartIntensityExceededError as exc:
            gave_up = exc

        # The tree is closed.
        if model.terminal is None:
            assert body_done, f"the body was cancelled at step {step}; the model expected not"
            assert gave_up is None
        else:
            assert not body_done
            assert step == terminal_at, "the tree stopped at another step than the model's"
            if model.terminal[0] == "shutdown":
                assert gave_up is None, "a significant child's normal exit must not be an error"
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
        assert harness.events == model.events
        assert all(not live for live in harness.live.values()), dict(harness.live)
        assert reg.names() == []

        # Nothing runs after the tree is closed, however long we wait.
        harness.closed = True
        clock.jump(1000)
        await trio.testing.wait_all_tasks_blocked()
        assert harness.started_after_close == []
        assert harness.events == model.events
        assert all(not live for live in harness.live.values())


@settings(max_examples=300, phases=[p for p in Phase if p is not Phase.explain])
@given(sc=scenarios(), data=st.data())
def test_supervisor_matches_model(sc: Scenario, data: st.DataObject) -> None:
    # Time moves only with Jump steps. The autojump threshold and the outer
    # deadline only turn a deadlock into a failure instead of a hang.
    clock = trio.testing.MockClock(autojump_threshold=1.0)

    async def main() -> None:
        with trio.fail_after(1_000_000):
            await run_scenario(sc, data, clock)

    trio.run(main, clock=clock)
