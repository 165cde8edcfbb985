"""Many isolated test bodies at once, in one Trio run: ExUnit's ``async: true``, with proof.

::

    import trio, trio.testing
    from trioscope.foundation import Event, config, events
    from trioscope.testing._runner import run_concurrently

    kept = []  # a held registration, kept alive so the name stays registered

    async def tidy(scope) -> None:
        # Every body has its own foundation under the same names: no clash.
        assert await config.update("events.max_events", 500) == 1
        await events.store(Event("order.placed", {"by": scope.namespace}))

    async def leaky(scope) -> None:
        held = scope.registry.registered("forgotten", "value")
        held.__enter__()  # and never left
        kept.append(held)

    async def main() -> None:
        bodies = {"first": tidy, "second": tidy, "leaky": leaky}
        report = await run_concurrently(bodies, foundation=True)
        assert [r.outcome for r in report.results] == ["passed", "passed", "leaked"]
        assert [r.name for r in report.failed] == ["leaky"]
        try:
            report.raise_if_failed()
        except AssertionError as exc:
            first, second = str(exc).splitlines()[:2]
            assert first == "1 of 3 bodies run concurrently failed:"
            assert second.startswith("  - 'leaky' leaked: test scope 'leaky' leaked 1 thing")
        else:
            raise AssertionError("the leak was not reported")

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

`run_concurrently` runs each body in its own `open_test_scope` (an isolated
registry, optionally the whole foundation started in it), every body in its
own task of one nursery, all at once (or at most *max_concurrency* at once,
started in the order given). A body's failure is its own: it is recorded in
the `RunReport` and never cancels the others, so the report says exactly
which bodies passed, which raised (with the exception) and which leaked
(with the scope's `LeakError`). `RunReport.raise_if_failed` turns the report
into one `AssertionError` naming every failing body and why.

What is recorded, per body (a `BodyResult`, in the order given):

- ``"passed"``: the body returned and its scope found nothing left behind;
- ``"leaked"``: the body returned, and its scope raised `LeakError` (the
  body's own leaks only: another body's tasks run in another registry);
- ``"raised"``: the body raised (anything: an `AssertionError`, pytest's
  ``Failed``, an exception group), or its scope did while starting or
  stopping; leaks found too are added to that exception as a note, as
  `open_test_scope` does. A body that did not end within *timeout* (Trio's
  clock) raised `BodyTimeoutError`; its leaks are then not checked.

What is never recorded, but propagates from `run_concurrently`: a
`trio.Cancelled` while the runner itself is cancelled (the other bodies are
cancelled with it, and nothing is reported: there is no report), and
`KeyboardInterrupt` / `SystemExit` from any body (the others are cancelled;
it propagates bare when it is all that ended the run). A `trio.Cancelled`
that a body raises while nothing around the runner is cancelled (one it
carried out of the scope that caught it) is absorbed by its test scope's
nursery, as any Trio nursery absorbs it; one that still left the scope would
be recorded as what the body raised.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, TypeAlias

import attrs
import trio

from .._child_spec import _check_seconds, _is_int
from .._errors import TrioscopeError
from .._exits import describe, read_exit
from ._scope import LeakError, TestScope, open_test_scope

if sys.version_info < (3, 11):  # pragma: no cover - Trio brings the backport there
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "BodiesFailedError",
    "BodyOutcome",
    "BodyResult",
    "BodyTimeoutError",
    "RunReport",
    "ScopeBody",
    "run_concurrently",
]

ScopeBody: TypeAlias = Callable[[TestScope], Awaitable[object]]
"""A test body: an async function of the `TestScope` it runs in."""

BodyOutcome = Literal["passed", "raised", "leaked"]
"""How a body ended: ``"passed"``, ``"raised"`` (it raised, or its scope did), ``"leaked"``."""


class BodyTimeoutError(TrioscopeError, trio.TooSlowError):
    """A body (with its scope's setup and teardown) did not end within its timeout."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        """The body's name."""
        self.timeout = timeout
        """The timeout it exceeded, seconds on Trio's clock."""
        super().__init__(
            f"body {name!r} did not end within {timeout:g} s (Trio's clock): it was "
            "cancelled, and its leaks were not checked"
        )


@attrs.frozen
class BodyResult:
    """How one body ended."""

    name: str
    """The body's name (also its scope's namespace)."""
    outcome: BodyOutcome
    """``"passed"``, ``"raised"`` or ``"leaked"``."""
    error: BaseException | None = attrs.field(eq=False, repr=False)
    """What it raised, or its scope's `LeakError`; ``None`` when it passed."""
    elapsed_s: float
    """Seconds (Trio's clock) from opening its scope to the scope's end."""

    @property
    def passed(self) -> bool:
        """Whether the body passed."""
        return self.outcome == "passed"

    def describe(self) -> str:
        """One entry of `RunReport.raise_if_failed`'s message: the name, the outcome, why."""
        if self.error is None:
            return f"{self.name!r} {self.outcome}"
        if self.outcome == "leaked":
            return f"{self.name!r} leaked: {self.error}"
        return f"{self.name!r} raised " + "\n".join(_explain(self.error))


def _explain(error: BaseException) -> list[str]:
    """``Type: message``, its notes, and a group's exceptions below it, indented."""
    lines = describe(error).splitlines()
    for note in getattr(error, "__notes__", ()):
        lines.extend(str(note).splitlines())
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            first, *rest = _explain(inner)
            lines.append(f"  - {first}")
            lines.extend(f"    {line}" for line in rest)
    return lines


class BodiesFailedError(TrioscopeError, AssertionError):
    """Some bodies of a `run_concurrently` run raised or leaked.

    An `AssertionError` (a test runner reports a failed test); chained from
    the failing body's exception (one), or an `ExceptionGroup` of them (several).
    """

    def __init__(self, report: RunReport) -> None:
        self.report = report
        """The whole report."""
        failed = report.failed
        lines = [
            f"{len(failed)} of {len(report.results)} "
            f"{'body' if len(report.results) == 1 else 'bodies'} run concurrently failed:"
        ]
        for result in failed:
            first, *rest = result.describe().splitlines()
            lines.append(f"  - {first}")
            lines.extend(f"    {line}" for line in rest)
        super().__init__("\n".join(lines))


@attrs.frozen
class RunReport:
    """What `run_concurrently` found: every body's result, in the order given."""

    results: tuple[BodyResult, ...]
    """One per body, in the order the bodies were given."""
    elapsed_s: float
    """Seconds (Trio's clock) the whole run took."""

    @property
    def passed(self) -> tuple[BodyResult, ...]:
        """The bodies that passed, in the order given."""
        return tuple(r for r in self.results if r.outcome == "passed")

    @property
    def failed(self) -> tuple[BodyResult, ...]:
        """The bodies that did not pass (raised or leaked), in the order given."""
        return tuple(r for r in self.results if r.outcome != "passed")

    @property
    def leaked(self) -> tuple[BodyResult, ...]:
        """The bodies whose scope raised `LeakError`, in the order given."""
        return tuple(r for r in self.results if r.outcome == "leaked")

    def __getitem__(self, name: str) -> BodyResult:
        """The result of the body named *name*.

        Raises:
            KeyError: no body has that name.
        """
        for result in self.results:
            if result.name == name:
                return result
        known = ", ".join(repr(result.name) for result in self.results) or "none"
        raise KeyError(f"no body is named {name!r}; the bodies are: {known}")

    def raise_if_failed(self) -> None:
        """Do nothing if every body passed; else raise one error naming each failing body.

        Raises:
            BodiesFailedError: (an `AssertionError`) some bodies raised or leaked;
                the message has one entry per failing body, in the order given:
                its name, ``raised`` or ``leaked``, and the exception (with its
                notes) or the `LeakError`'s list of leaks.
        """
        errors = [r.error for r in self.failed if r.error is not None]
        if not errors:
            return
        cause: BaseException = (
            errors[0] if len(errors) == 1 else BaseExceptionGroup("failing bodies", errors)
        )
        raise BodiesFailedError(self) from cause


def _named(
    bodies: Mapping[str, ScopeBody] | Iterable[tuple[str, ScopeBody]],
) -> list[tuple[str, ScopeBody]]:
    items: list[object] = list(bodies.items()) if isinstance(bodies, Mapping) else list(bodies)
    named: list[tuple[str, ScopeBody]] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(
                f"run_concurrently: bodies must be a mapping of name -> body or (name, body) "
                f"pairs; item {index} is {item!r}"
            )
        name, body = item
        if not isinstance(name, str):
            raise TypeError(f"run_concurrently: body names must be str, got {name!r}")
        if not callable(body):
            raise TypeError(f"run_concurrently: body {name!r} is not callable: {body!r}")
        if name in seen:
            raise ValueError(
                f"run_concurrently: two bodies are named {name!r}; names must be unique"
            )
        seen.add(name)
        named.append((name, body))
    return named


async def run_concurrently(
    bodies: Mapping[str, ScopeBody] | Iterable[tuple[str, ScopeBody]],
    *,
    foundation: bool = False,
    max_concurrency: int | None = None,
    # Each body's own limit (ASYNC109): trio.fail_after around the call would
    # cancel every body at once, and report none.
    timeout: float | None = None,  # noqa: ASYNC109
    **foundation_kwargs: object,
) -> RunReport:
    """Run every body in its own leak-checked test scope, all at once, and report each.

    Each body is called as ``await body(scope)`` inside ``open_test_scope(name,
    foundation=foundation, **foundation_kwargs)``, in its own task: it sees
    its own isolated registry (and foundation) only. A body that raises or
    leaks is recorded as such (see the module docstring) and never disturbs
    the others. Returns when every body has ended; nothing is raised for a
    failing body: call `RunReport.raise_if_failed`.

    Args:
        bodies: ``{name: body}``, or ``(name, body)`` pairs; names must be
            unique (each is the body's scope namespace, and its name in the report).
        foundation: Start the whole foundation in every body's scope.
        max_concurrency: At most this many bodies at once (their scopes
            included), started in the order given; ``None``: all at once.
        timeout: Seconds (Trio's clock) each body may take, its scope's setup
            and teardown included; past it, it is cancelled and recorded as
            raising `BodyTimeoutError`. ``None``: no limit.
        **foundation_kwargs: Passed to every scope's ``open_foundation``
            (``values=``, ...); only with ``foundation=True``.

    Raises:
        TypeError: a body that is not ``(str, callable)``, a *max_concurrency*
            that is not an int, a *timeout* that is not a number, or
            *foundation_kwargs* without ``foundation=True``.
        ValueError: two bodies with one name, *max_concurrency* < 1, a
            negative or NaN *timeout*.
        trio.Cancelled: the runner was cancelled (every body is cancelled too).
        KeyboardInterrupt, SystemExit: raised in a body.
    """
    items = _named(bodies)
    if foundation_kwargs and not foundation:
        raise TypeError(
            f"run_concurrently: {', '.join(foundation_kwargs)} configure the foundation; "
            "pass foundation=True too"
        )
    if max_concurrency is not None:
        if not _is_int(max_concurrency):
            raise TypeError(
                f"max_concurrency must be an integer >= 1 or None, "
                f"got {type(max_concurrency).__name__}"
            )
        if max_concurrency < 1:
            raise ValueError(
                f"max_concurrency must be an integer >= 1 or None, got {max_concurrency}"
            )
    if timeout is not None:
        _check_seconds("timeout", timeout, allow_inf=True)
    limit = trio.Semaphore(max_concurrency) if max_concurrency is not None else None
    results: list[BodyResult | None] = [None] * len(items)

    async def run_one(index: int, name: str, body: ScopeBody) -> None:
        try:
            start = trio.current_time()
            returned = False
            try:
                with trio.move_on_after(math.inf if timeout is None else timeout) as deadline:
                    settings: dict[str, Any] = foundation_kwargs  # open_foundation's
                    async with open_test_scope(name, foundation=foundation, **settings) as scope:
                        await body(scope)
                        returned = True
            except BaseException as exc:
                ended = read_exit(exc)
                if ended.interrupt is not None:
                    raise
                # A Cancelled of the runner's (or of a scope around it) is not the
                # body's to keep: let it, and whatever came with it, through.
                if ended.cancelled is not None and trio.current_effective_deadline() == -math.inf:
                    raise
                is_leak = returned and isinstance(exc, LeakError) and exc.scope == name
                outcome: BodyOutcome = "leaked" if is_leak else "raised"
                error: BaseException | None = exc
            else:
                if deadline.cancelled_caught:
                    assert timeout is not None  # no other deadline is this scope's
                    outcome, error = "raised", BodyTimeoutError(name, timeout)
                else:
                    outcome, error = "passed", None
            results[index] = BodyResult(name, outcome, error, trio.current_time() - start)
        finally:
            if limit is not None:
                limit.release()

    start = trio.current_time()
    # Unwrap policy, as measure_concurrent_ops': only what a body must not keep
    # leaves its task. A group holding a Cancelled goes on whole (it belongs to
    # an enclosing scope); otherwise the first interrupt is raised bare.
    try:
        async with trio.open_nursery() as nursery:
            for index, (name, body) in enumerate(items):
                if limit is not None:
                    await limit.acquire()
                nursery.start_soon(run_one, index, name, body, name=f"run_concurrently:{name}")
            if not items:
                await trio.lowlevel.checkpoint()
    except BaseException as exc:
        ended = read_exit(exc)
        interrupt = ended.interrupt
        if ended.cancelled is not None or interrupt is None or interrupt is exc:
            raise
        context = interrupt.__context__
        try:
            raise interrupt
        finally:
            interrupt.__context__ = context
            del interrupt, context, ended
    done: list[BodyResult] = []
    for result in results:
        assert result is not None  # every task recorded its result, or raised
        done.append(result)
    return RunReport(tuple(done), trio.current_time() - start)
