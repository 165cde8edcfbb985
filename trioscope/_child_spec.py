"""How to start a child: `ChildSpec`, `Restart`, `Backoff`.

::

    import functools, trio, trioscope

    async def handler(stream: trio.SocketStream) -> None:
        await stream.send_all(await stream.receive_some())

    echo = trioscope.ChildSpec("echo", functools.partial(trio.serve_tcp, handler, 0))

``start`` is any async callable following Trio's `trio.Nursery.start` protocol:
``await start(task_status=...)``, calling ``task_status.started(value)`` when
ready. Services and supervisors also know how to stop gracefully; a plain Trio
child can only be cancelled.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol

import attrs
import trio

if TYPE_CHECKING:
    # A default (PEP 696) keeps an unparameterized ``ChildSpec`` usable under --strict.
    from typing_extensions import TypeVar

    T_co = TypeVar("T_co", covariant=True, default=Any)
else:
    from typing import TypeVar

    T_co = TypeVar("T_co", covariant=True)

DEFAULT_SHUTDOWN_S: Final = 5.0
"""Seconds a child that can stop gracefully gets before it is cancelled."""


class Restart(enum.Enum):
    """When a supervisor restarts a child that exited."""

    PERMANENT = "permanent"
    """Always restarted."""
    TRANSIENT = "transient"
    """Restarted only after an abnormal exit (an exception)."""
    TEMPORARY = "temporary"
    """Never restarted; removed from its supervisor when it exits on its own."""


def _is_int(value: object) -> bool:
    """An int, and not a bool (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """An int or a float, and not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_seconds(name: str, value: float, *, allow_inf: bool) -> None:
    if not _is_number(value):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if math.isnan(value) or value < 0 or (math.isinf(value) and not allow_inf):
        rule = ">= 0 (math.inf allowed)" if allow_inf else "finite and >= 0"
        raise ValueError(f"{name} must be {rule}, got {value!r}")


@attrs.frozen
class Backoff:
    """Delays before restarting a child, growing while it keeps failing.

    The *n*-th consecutive restart (counting from 0) waits
    ``min(maximum, initial * multiplier**n)``, shortened by up to ``jitter`` of
    itself at random: ``delay * (1 - jitter * random())``. A child that ran for
    at least ``reset_after`` seconds before failing starts again from ``initial``.
    """

    initial: float = 0.1
    """Seconds before the first restart."""
    maximum: float = 10.0
    """Cap on the delay, in seconds."""
    multiplier: float = 2.0
    """Growth factor per consecutive failure (>= 1)."""
    jitter: float = 0.1
    """Fraction (0 to 1) of the delay that may be taken off at random."""
    reset_after: float = 30.0
    """Seconds of stable running after which the sequence starts over."""

    def __attrs_post_init__(self) -> None:
        _check_seconds("Backoff.initial", self.initial, allow_inf=False)
        _check_seconds("Backoff.maximum", self.maximum, allow_inf=False)
        _check_seconds("Backoff.reset_after", self.reset_after, allow_inf=True)
        if self.maximum < self.initial:
            raise ValueError(
                f"Backoff.maximum ({self.maximum!r}) must be >= Backoff.initial ({self.initial!r})"
            )
        if not _is_number(self.multiplier):
            raise TypeError(f"Backoff.multiplier must be a number, got {self.multiplier!r}")
        if not 1 <= self.multiplier < math.inf:
            raise ValueError(f"Backoff.multiplier must be finite and >= 1, got {self.multiplier!r}")
        if not _is_number(self.jitter):
            raise TypeError(f"Backoff.jitter must be a number, got {self.jitter!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Backoff.jitter must be between 0 and 1, got {self.jitter!r}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The delay in seconds before restart number *attempt* (0-based)."""
        try:
            base = min(self.maximum, self.initial * self.multiplier**attempt)
        except OverflowError:
            # A long failure streak grew past any float long ago: the cap applies.
            base = self.maximum if self.initial else 0.0
        if self.jitter:
            base *= 1.0 - self.jitter * rng.random()
        return base


def _check_id(_inst: object, _attr: object, value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"ChildSpec.id must be a str, got {type(value).__name__}: {value!r}")
    if not value:
        raise ValueError("ChildSpec.id must not be empty")


def _check_start(_inst: object, _attr: object, value: object) -> None:
    if isinstance(value, type):
        # Calling a class makes an instance (or, for a service, fails on task_status).
        hint = (
            f"use {value.__qualname__}.child_spec(...) to make a service's ChildSpec"
            if callable(getattr(value, "child_spec", None))
            else "(calling it would make an instance, not run a task)"
        )
        sep = ": " if hint.startswith("use") else " "
        raise TypeError(
            "ChildSpec.start must be an async callable taking task_status=..., "
            f"got the class {value.__qualname__}{sep}{hint}"
        )
    if not callable(value):
        raise TypeError(
            f"ChildSpec.start must be an async callable taking task_status=..., "
            f"got {type(value).__name__}: {value!r}"
        )


def _check_shutdown(_inst: object, _attr: object, value: float) -> None:
    _check_seconds("ChildSpec.shutdown", value, allow_inf=True)


def _check_restart(_inst: object, _attr: object, value: Restart) -> None:
    if not isinstance(value, Restart):
        raise TypeError(f"ChildSpec.restart must be a trioscope.Restart, got {value!r}")


def _check_backoff(_inst: object, _attr: object, value: Backoff | None) -> None:
    if value is not None and not isinstance(value, Backoff):
        raise TypeError(f"ChildSpec.backoff must be a trioscope.Backoff or None, got {value!r}")


class _StartFn(Protocol[T_co]):
    """An async callable following Trio's `nursery.start` protocol, started with a *T_co*."""

    def __call__(self, *, task_status: trio.TaskStatus[T_co]) -> Awaitable[object]: ...


@attrs.frozen
class ChildSpec(Generic[T_co]):
    """What a supervisor needs to start, stop and restart one child.

    Generic in the value the child passes to ``task_status.started()``:
    ``ChildSpec("echo", echo)`` is a ``ChildSpec[int]`` when ``echo`` takes
    ``task_status: trio.TaskStatus[int]``, and ``await sup.start_child(spec)``
    is then an ``int``. A bare ``ChildSpec`` means ``ChildSpec[Any]``.
    """

    id: str = attrs.field(validator=_check_id)
    """Unique among the children of one supervisor."""
    start: _StartFn[T_co] = attrs.field(validator=_check_start)
    """``await start(task_status=...)`` runs the child (Trio's `nursery.start` protocol)."""
    restart: Restart = attrs.field(
        default=Restart.PERMANENT, kw_only=True, validator=_check_restart
    )
    """When to restart the child after it exits."""
    shutdown: float = attrs.field(
        default=DEFAULT_SHUTDOWN_S, kw_only=True, validator=_check_shutdown
    )
    """Seconds to stop gracefully before being cancelled; 0 cancels at once, inf waits."""
    significant: bool = attrs.field(default=False, kw_only=True)
    """If true, the child exiting normally stops its supervisor."""
    backoff: Backoff | None = attrs.field(default=None, kw_only=True, validator=_check_backoff)
    """Delays before restarts; ``None`` uses the supervisor's."""

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.significant, bool):
            raise TypeError(f"ChildSpec.significant must be a bool, got {self.significant!r}")
        if self.significant and self.restart is Restart.PERMANENT:
            raise ValueError(
                f"child {self.id!r}: a significant child must be TRANSIENT or TEMPORARY "
                "(a PERMANENT child is always restarted, so it can never end its supervisor)"
            )

    @property
    def kind(self) -> str:
        """``"supervisor"`` for a nested supervisor, else ``"worker"``."""
        start = self.start
        return start.kind if isinstance(start, _Startable) else "worker"


class _ChildHandle:
    """What a supervisor hands a child it runs: its restart count and a stop request."""

    __slots__ = (
        "_on_deadline",
        "_on_stop",
        "deadline",
        "origin",
        "restarts",
        "shutdown",
        "stop_requested",
        "supervision",
    )

    def __init__(self, restarts: int = 0, shutdown: float = DEFAULT_SHUTDOWN_S) -> None:
        self.restarts = restarts
        self.shutdown = shutdown
        self.stop_requested = False
        # When the supervisor cancels the child: the end of its shutdown budget, set
        # when it is stopped. A nested supervisor stops its own children by then.
        self.deadline = math.inf
        self._on_stop: Callable[[], None] | None = None
        self._on_deadline: Callable[[], None] | None = None
        # Set by a service that crashed: (label, handler, correlation id).
        self.origin: tuple[str, str, str | None] | None = None
        # Set by the supervisor that runs the child: (supervisor id, child id,
        # restart type, the supervisor's registry), for introspection (trioscope.testing).
        self.supervision: tuple[str, str, Restart, object] | None = None

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call *callback* (synchronously) when a graceful stop is requested."""
        self._on_stop = callback
        if self.stop_requested:
            callback()

    def on_deadline(self, callback: Callable[[], None]) -> None:
        """Call *callback* (synchronously) whenever the supervisor sets `deadline`.

        A nested supervisor passes a shorter budget (or a kill, ``-inf``) on to
        its own children at once, through their shields.
        """
        self._on_deadline = callback

    def set_deadline(self, deadline: float) -> None:
        self.deadline = deadline
        if self._on_deadline is not None:
            self._on_deadline()

    def request_stop(self) -> None:
        if self.stop_requested:
            return
        self.stop_requested = True
        if self._on_stop is not None:
            self._on_stop()


class _Startable(Generic[T_co]):
    """A child that can stop gracefully (services, supervisors), started with a *T_co*.

    Calling it follows the plain `nursery.start` protocol; a supervisor calls
    `run` instead, passing a handle through which it requests a graceful stop.
    """

    __slots__ = ()
    kind: str = "worker"

    async def run(self, task_status: trio.TaskStatus[T_co], handle: _ChildHandle) -> None:
        raise NotImplementedError

    def __call__(
        self, *, task_status: trio.TaskStatus[T_co] = trio.TASK_STATUS_IGNORED
    ) -> Coroutine[Any, Any, None]:
        return self.run(task_status, _ChildHandle())
