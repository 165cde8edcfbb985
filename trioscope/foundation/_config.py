"""The ConfigServer: a typed configuration tree, read without a round trip, updated by one server.

::

    import trio, trioscope
    from trioscope.foundation import config

    async def main() -> None:
        async with trioscope.open_registry(isolated=True), trioscope.open_supervisor(
            [config.config_spec(values={"events": {"max_events": 5_000}}, env={})]
        ):
            assert config.get("events.max_events") == 5_000      # no message round trip
            async with config.subscribe() as changes:
                version = await config.update("events.max_events", 10_000)
                change = await changes.receive()
                assert (change.path, change.old, change.new) == ("events.max_events", 5_000, 10_000)
                assert change.version == version == config.snapshot().version
            await config.reset()                                  # back to the loaded config
            assert config.get("events.max_events") == 5_000

    trio.run(main)

**Sources**, later wins: the schema's defaults < the *values* mapping < the
*toml* file < the environment (``TRIOSCOPE__EVENTS__MAX_EVENTS=5000`` sets
``events.max_events``: the prefix, then the path's parts upper-cased, joined
by the separator ``__``). They are read each time the config child starts. A
key or variable (under the prefix) that names no path, or a value that does
not fit, fails the start: the supervisor raises `trioscope.StartError`, whose
cause is the `UnknownConfigPathError` or `ConfigRejected`.

**Where things live.** `config_spec` is a small `REST_FOR_ONE` supervisor of
two children: the *home* (`ConfigHome`, registered as ``"config.home"``)
holds the loaded configuration, the published snapshot, the subscription hub
and the queue of updates waiting for the server; the server (`ConfigServer`,
registered as ``"config"``) applies updates one at a time. Readers read the
home's snapshot, so they keep the last one while the server restarts; a
restart of the server loses nothing (versions go on). If the home itself
fails (a bug in its retry task), the supervisor restarts both: the sources
are read again, versions start again at 0, subscriptions end, and queued
updates fail with `trioscope.ServiceUnavailableError` (never applied).

**Updates** are checked at once in the caller (path, updatable, type), then
applied by the server against the whole configuration (validators and
cross-field rules), atomically: the snapshot, the version, the change record
for subscribers and the ``config.updated`` event for the scope's EventStore
(its own scope's only; ``inf`` and NaN values are recorded as the strings
``"inf"``, ``"nan"``: event data is JSON) all follow from one step. While the
server is away, an update waits in the home's queue; a supervised task of the
home retries the queue in order (when the server is back, or after an
exponential backoff with jitter, ``config.retry_initial_s`` doubling up to
``config.retry_max_s``) until it is applied or its caller's deadline passes.
Exactly one of two things is then true: `update` returned the version that
includes it, or it raised and the update was never (and will never be) applied.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar, cast, overload

import attrs
import trio

from .._child_spec import ChildSpec, _check_seconds
from .._errors import (
    CallTimeoutError,
    NoRegistryError,
    ServiceCrashedError,
    ServiceUnavailableError,
)
from .._registry import _current_registry_or_none, current_registry
from .._service import DEFAULT_CALL_TIMEOUT_S, DEFAULT_MAILBOX_SIZE, Service
from .._supervisor import Strategy, Supervisor, supervisor_spec
from . import _events
from ._errors import (
    ConfigRejected,
    ConfigUpdateTimeoutError,
    EventBufferFullError,
    EventRejected,
    SubscriptionOverflowError,
    UnknownConfigPathError,
)
from ._event import Event
from ._home import Home, find_home, home_spec, own_home
from ._settings import (
    DEFAULT_ENV_PREFIX,
    DEFAULT_ENV_SEPARATOR,
    FoundationConfig,
    Overrides,
    Schema,
    converter,
    from_env,
    from_mapping,
    load,
    parse_toml,
    replace,
    schema_of,
    structure,
)
from ._subscription import Hub, Subscription
from ._telemetry import CONFIG_RESET, CONFIG_UPDATE, emit_count

C = TypeVar("C")

SERVER_NAME: Final = "config"
"""The name the `ConfigServer` registers."""
HOME_NAME: Final = "config.home"
"""The name the `ConfigHome` registers."""
DEFAULT_SUBSCRIBER_BUFFER: Final = 1_000
"""Changes a subscription buffers (when the schema has no ``config.subscriber_buffer``)."""
DEFAULT_RETRY_INITIAL_S: Final = 0.05
"""First retry delay, seconds (when the schema has no ``config.retry_initial_s``)."""
DEFAULT_RETRY_MAX_S: Final = 2.0
"""Longest retry delay, seconds (when the schema has no ``config.retry_max_s``)."""

RETRY_RANDOM: Final = random.Random()
"""The jitter source of update retries (`config_spec`'s default *rng*).

Tests register it with ``hypothesis.register_random`` so that failures replay.
"""


# -- values ----------------------------------------------------------------


@attrs.frozen
class ConfigSnapshot(Generic[C]):
    """One published configuration: immutable, with its version."""

    config: C
    """The typed configuration (an instance of the schema)."""
    version: int
    """0 for the configuration as loaded; each applied update or reset adds 1."""
    _flat: Mapping[str, object] = attrs.field(repr=False, eq=False, alias="flat")
    # Every path (sections and settings) -> its value; never mutated once published.

    @property
    def values(self) -> Mapping[str, object]:
        """Every path (sections and settings) mapped to its value (read-only)."""
        return MappingProxyType(self._flat)

    def get(self, path: str) -> object:
        """The value at *path* in this snapshot.

        Raises:
            KeyError: no such path.
        """
        return self._flat[path]


@attrs.frozen
class ConfigChange:
    """One applied change, as subscribers receive it."""

    path: str
    """The path that changed; ``""`` for a reset (the whole tree)."""
    old: object
    """The value before."""
    new: object
    """The value after (structured to the setting's type)."""
    version: int
    """The version this change produced: consecutive, from 1 after loading."""


@attrs.frozen
class ConfigStatus:
    """What `status` reports."""

    uptime_s: float
    """Seconds the current server incarnation has run (Trio clock)."""
    version: int
    """The published snapshot's version."""
    updates_applied: int
    """Updates applied since the configuration was loaded (resets not counted)."""
    resets: int
    """Resets applied since the configuration was loaded."""
    subscribers: int
    """Live subscriptions."""
    pending_updates: int
    """Updates waiting in the home's queue for the server."""
    restarts: int
    """Times the server restarted since the configuration was loaded."""
    events_recorded: int
    """Changes handed to the scope's EventStore."""
    events_not_recorded: int
    """Changes not recorded: no EventStore ran, or its buffer refused them."""


# -- updates waiting for the server --------------------------------------------

_WAITING: Final = 0
_APPLIED: Final = 1
_FAILED: Final = 2
_WITHDRAWN: Final = 3


class _Ticket:
    """One update (or reset) on its way to the server; its state is the truth.

    The server applies it only while it is waiting, in one step without a
    checkpoint; the caller withdraws it, also without a checkpoint, as soon
    as it stops waiting. So it is applied or withdrawn, never both.
    """

    __slots__ = ("_done", "error", "path", "raw", "scope", "state", "value", "version")

    def __init__(self, path: str, value: object, raw: object) -> None:
        self.path = path
        self.value = value  # structured
        self.raw = raw  # as the caller gave it, for messages
        self.state = _WAITING
        self.version = 0
        self.error: BaseException | None = None
        self._done: trio.Event | None = None  # made when queued: the fast path needs none
        self.scope: trio.CancelScope | None = None  # the retry task's attempt

    def __repr__(self) -> str:
        state = ("waiting", "applied", "failed", "withdrawn")[self.state]
        return f"<config update {self.path or '(reset)'}={self.raw!r} {state}>"

    def waiting(self) -> bool:
        return self.state == _WAITING

    def done(self) -> trio.Event:
        """Set once applied, failed or withdrawn."""
        if self._done is None:
            self._done = trio.Event()
            if not self.waiting():
                self._done.set()
        return self._done

    def applied(self, version: int) -> None:
        self.state, self.version = _APPLIED, version
        if self._done is not None:
            self._done.set()

    def fail(self, error: BaseException) -> None:
        self.state, self.error = _FAILED, error
        self._stop()

    def withdraw(self) -> None:
        self.state = _WITHDRAWN
        self._stop()

    def _stop(self) -> None:
        if self._done is not None:
            self._done.set()
        if self.scope is not None:
            self.scope.cancel()


# -- the home ------------------------------------------------------------------


class ConfigHome(Home):
    """What outlives a server incarnation: snapshot, hub, queued updates, counters.

    Created (and the sources read) at every start of the ``"config.home"``
    child; registered as ``"config.home"``.
    """

    name = HOME_NAME

    def __init__(
        self,
        schema: Schema,
        *,
        values: Mapping[str, object] | None,
        toml: str | os.PathLike[str] | None,
        env: Mapping[str, str] | None,
        env_prefix: str | None,
        env_separator: str,
        rng: random.Random,
    ) -> None:
        self.schema = schema
        self._values = values
        self._toml = toml
        self._env = env
        self._env_prefix = env_prefix
        self._env_separator = env_separator
        self._rng = rng
        self.hub: Hub[ConfigChange] = Hub(what="config changes")
        self.pending: deque[_Ticket] = deque()
        self._wakeup = trio.Event()
        self.updates_applied = 0
        self.resets = 0
        self.server_starts = 0
        self.events_recorded = 0
        self.events_not_recorded = 0

    def __repr__(self) -> str:
        snapshot = getattr(self, "snapshot", None)
        version = snapshot.version if snapshot is not None else "-"
        return (
            f"<ConfigHome {self.schema.cls.__qualname__} version {version} "
            f"pending {len(self.pending)} subscribers {len(self.hub)}>"
        )

    async def started(self) -> None:
        """Read the sources (later wins: values < TOML < environment) and publish version 0."""
        schema = self.schema
        overrides: Overrides = {}
        if self._values is not None:
            from_mapping(schema, self._values, overrides)
        if self._toml is not None:
            text = await trio.Path(self._toml).read_text(encoding="utf-8")
            from_mapping(schema, parse_toml(text, os.fspath(self._toml)), overrides)
        if self._env_prefix is not None:
            env = os.environ if self._env is None else self._env
            from_env(schema, env, self._env_prefix, self._env_separator, overrides)
        self.loaded: object = load(schema, overrides)
        self.loaded_flat = schema.flat(self.loaded)
        self.snapshot: ConfigSnapshot[Any] = ConfigSnapshot(self.loaded, 0, self.loaded_flat)
        self.start_soon(self._retry)

    async def aclose(self) -> None:
        """End the subscriptions; fail the updates still queued (never applied)."""
        self.hub.close()
        while self.pending:
            ticket = self.pending.popleft()
            if ticket.waiting():
                ticket.fail(
                    ServiceUnavailableError(
                        repr(SERVER_NAME),
                        "the config child stopped before this update was applied; "
                        "it was withdrawn and will not be applied",
                    )
                )

    # -- what the server calls --

    def commit(self, snapshot: ConfigSnapshot[Any], change: ConfigChange) -> None:
        """Publish *snapshot* and tell subscribers and the event store (never raises)."""
        self.snapshot = snapshot
        if change.path:
            self.updates_applied += 1
        else:
            self.resets += 1
        self.hub.publish(change)
        if change.path:
            emit_count(CONFIG_UPDATE, 1, {"path": change.path, "version": change.version})
        else:
            emit_count(CONFIG_RESET, 1, {"version": change.version})
        self._record(change)

    def _record(self, change: ConfigChange) -> None:
        # Only the event store of this home's own scope, never a parent's:
        # store_nowait (which never waits: the events home buffers and flushes in
        # order) resolves through the current scope, so it is used only when that
        # finds this scope's events home.
        store = self.registry.lookup_here(_events.EVENTS_HOME_NAME)
        if not isinstance(store, _events.EventsHome) or store is not find_home(
            _events.EVENTS_HOME_NAME, _events.EventsHome
        ):
            self.events_not_recorded += 1  # no event store in this scope
            return
        kind = "config.updated" if change.path else "config.reset"
        data = {
            "path": change.path,
            "old": _json_safe(converter.unstructure(change.old)),
            "new": _json_safe(converter.unstructure(change.new)),
            "version": change.version,
        }
        try:
            _events.store_nowait(Event(kind, data))
        except (ServiceUnavailableError, EventBufferFullError, EventRejected):
            # No store in this scope, or its buffer is full (it counts that as
            # overflow too), or a value too large for it: counted, not hidden.
            self.events_not_recorded += 1
        else:
            self.events_recorded += 1

    # -- queued updates --

    def enqueue(self, ticket: _Ticket) -> trio.Event:
        """Queue *ticket* for the retry task; return the event set once it is settled."""
        done = ticket.done()
        self.pending.append(ticket)
        self._wakeup.set()
        return done

    def pending_count(self) -> int:
        return sum(1 for t in self.pending if t.waiting())

    def _setting(self, path: str, default: float) -> float:
        value = self.snapshot._flat.get(path, default)
        return float(value) if isinstance(value, (int, float)) else default

    async def _retry(self) -> None:
        """Hand the queued updates to the server in order (a supervised task of the home)."""
        failures = 0
        while True:
            if not self.pending:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                continue
            ticket = self.pending[0]
            if not ticket.waiting():
                self.pending.popleft()
                failures = 0
                continue
            # The server of the home's own scope only: while it is away, a
            # namesake in an enclosing scope must not receive this scope's updates.
            ref = self.service(SERVER_NAME, ConfigServer)
            if ref is not None:
                ticket.scope = trio.CancelScope()
                with ticket.scope:
                    try:
                        await ref.with_timeout(math.inf).call(ConfigServer.apply, ticket)
                    except ServiceUnavailableError:
                        pass  # it never ran there: try again
                    except ConfigRejected:
                        pass  # the ticket carries it to its caller
                    except ServiceCrashedError as exc:
                        # Crashed applying it (before its commit): not applied.
                        if ticket.waiting():
                            ticket.fail(exc)
                ticket.scope = None
                if not ticket.waiting():
                    continue
            initial = self._setting("config.retry_initial_s", DEFAULT_RETRY_INITIAL_S)
            longest = self._setting("config.retry_max_s", DEFAULT_RETRY_MAX_S)
            delay = min(longest, initial * 2.0 ** min(failures, 64))
            delay *= 0.5 + 0.5 * self._rng.random()  # "equal jitter": half fixed, half random
            failures += 1
            # Retry when the server is (re)registered or after the delay; move on
            # at once if the caller withdraws it meanwhile.
            ticket.scope = trio.move_on_after(delay)
            with ticket.scope:
                await self.wait_service(SERVER_NAME, ConfigServer, after=ref)
            ticket.scope = None


# -- the server ----------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """*value* with infinite and NaN floats as the strings ``"inf"``, ``"-inf"``, ``"nan"``.

    Event data is JSON, which has none of them; ``events.max_age_s`` may be ``inf``.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


class ConfigServer(Service):
    """Applies updates to the configuration of its home, one at a time.

    Use the module functions (`update`, `reset`, `status`); `apply` is their
    handler. Start it with `config_spec`, which starts its home first.
    """

    def __init__(self) -> None:
        self._started = 0.0

    async def init(self) -> None:
        """Find the home (started just before it, in the same supervisor)."""
        home = own_home(
            HOME_NAME, ConfigHome, "ConfigServer", "trioscope.foundation.config.config_spec()"
        )
        self._home = home
        home.server_starts += 1
        self._started = trio.current_time()

    async def health(self) -> Mapping[str, object]:
        """The version and how many updates wait."""
        home = self._home
        return {"version": home.snapshot.version, "pending_updates": home.pending_count()}

    async def apply(self, ticket: _Ticket) -> int | None:
        """Apply a queued update or reset, if its caller still waits; return the version.

        No checkpoint between the check and the commit: atomic, and never
        applied after its caller gave up.

        Raises:
            ConfigRejected: a validator or cross-field rule refused; nothing changed.
        """
        if not ticket.waiting():
            return None
        home = self._home
        old = home.snapshot
        path = ticket.path
        if path:
            try:
                config = replace(home.schema, old.config, path, ticket.value)
            except ConfigRejected as exc:
                ticket.fail(exc)
                raise
            flat = home.schema.flat_after(old._flat, config, path)
            before, after = old._flat[path], flat[path]
        else:
            config, flat = home.loaded, home.loaded_flat
            before, after = old.config, config
        version = old.version + 1
        home.commit(
            ConfigSnapshot(config, version, flat), ConfigChange(path, before, after, version)
        )
        ticket.applied(version)
        return version

    async def status(self) -> ConfigStatus:
        """Counters of the server and its home."""
        home = self._home
        return ConfigStatus(
            uptime_s=trio.current_time() - self._started,
            version=home.snapshot.version,
            updates_applied=home.updates_applied,
            resets=home.resets,
            subscribers=len(home.hub),
            pending_updates=home.pending_count(),
            restarts=home.server_starts - 1,
            events_recorded=home.events_recorded,
            events_not_recorded=home.events_not_recorded,
        )


# -- the spec -------------------------------------------------------------------


def config_spec(
    schema: type[Any] = FoundationConfig,
    *,
    values: Mapping[str, object] | None = None,
    toml: str | os.PathLike[str] | None = None,
    env_prefix: str | None = DEFAULT_ENV_PREFIX,
    env: Mapping[str, str] | None = None,
    env_separator: str = DEFAULT_ENV_SEPARATOR,
    rng: random.Random | None = None,
    mailbox_size: int = DEFAULT_MAILBOX_SIZE,
    server: type[ConfigServer] | None = None,
    id: str = SERVER_NAME,
) -> ChildSpec[Supervisor]:
    """A `ChildSpec` running the config home and the `ConfigServer`, `REST_FOR_ONE`.

    Sources, later wins: *schema*'s defaults < *values* < the *toml* file <
    the environment. They are read (and checked) at every start of the home.

    Args:
        schema: The attrs class of the configuration (every field with a default,
            or set by a source); `FoundationConfig` by default.
        values: Nested mappings by section (``{"events": {"max_events": 10}}``),
            dotted keys (``{"events.max_events": 10}``), or both.
        toml: A TOML file whose tables are the sections.
        env_prefix: Variables named ``<prefix><separator><PATH>`` set *PATH*
            (``TRIOSCOPE__EVENTS__MAX_EVENTS=5000``); ``None`` reads none.
            A variable under the prefix naming no path fails the start.
        env: The environment to read (default: `os.environ`, at each start).
        env_separator: Between the prefix and the path's parts.
        rng: The jitter source for retries (default `RETRY_RANDOM`).
        mailbox_size: The server's mailbox bound.
        server: A `ConfigServer` subclass to run instead (with handlers of its own).
        id: The supervisor's child id.

    Raises:
        TypeError: *schema* is not an attrs class, or *server* not a `ConfigServer` subclass.
        ValueError: an empty *env_prefix* or *env_separator*.
    """
    compiled = schema_of(schema)
    if env_prefix is not None and not env_prefix:
        raise ValueError("config_spec: env_prefix must not be empty (None reads no variables)")
    if not env_separator:
        raise ValueError("config_spec: env_separator must not be empty")
    chosen: object = ConfigServer if server is None else server
    if not (isinstance(chosen, type) and issubclass(chosen, ConfigServer)):
        raise TypeError(f"config_spec: server must be a ConfigServer subclass, got {chosen!r}")
    source = RETRY_RANDOM if rng is None else rng

    def make_home() -> ConfigHome:
        return ConfigHome(
            compiled,
            values=values,
            toml=toml,
            env=env,
            env_prefix=env_prefix,
            env_separator=env_separator,
            rng=source,
        )

    return supervisor_spec(
        [
            home_spec(make_home, id=HOME_NAME),
            chosen.child_spec(name=SERVER_NAME, mailbox_size=mailbox_size),
        ],
        id=id,
        strategy=Strategy.REST_FOR_ONE,
    )


# -- client functions (each resolves through the current registry scope) ---------------


def _home() -> ConfigHome:
    home = find_home(HOME_NAME, ConfigHome)
    if home is None:
        raise _no_server()
    return home


def _no_server() -> ServiceUnavailableError:
    return ServiceUnavailableError(
        repr(SERVER_NAME),
        f"no config server runs in this registry scope (nothing is registered as "
        f"{HOME_NAME!r}); start trioscope.foundation.config.config_spec() under a "
        "supervisor in this scope",
    )


def get(path: str) -> object:
    """The value at *path* in the latest snapshot: no message, no wait.

    A section's path gives the section (an attrs instance).

    Raises:
        UnknownConfigPathError: no such path (the message names the nearest ones).
        trioscope.ServiceUnavailableError: no config server runs in this scope.
        trioscope.NoRegistryError: outside every registry scope.
    """
    home = _home()
    try:
        return home.snapshot._flat[path]
    except (KeyError, TypeError):
        raise home.schema.unknown(path) from None


@overload
def snapshot() -> ConfigSnapshot[Any]: ...
@overload
def snapshot(schema: type[C]) -> ConfigSnapshot[C]: ...
def snapshot(schema: type[Any] | None = None) -> ConfigSnapshot[Any]:
    """The latest published snapshot (no message, no wait); typed for *schema* if given.

    Raises:
        TypeError: the server's schema is not *schema*.
        trioscope.ServiceUnavailableError: no config server runs in this scope.
        trioscope.NoRegistryError: outside every registry scope.
    """
    home = _home()
    if schema is not None and home.schema.cls is not schema:
        raise TypeError(
            f"the config server of this scope runs schema {home.schema.cls.__qualname__}, "
            f"not {schema.__qualname__}"
        )
    return home.snapshot


def updatable_paths() -> frozenset[str]:
    """The paths `update` accepts (settings, and sections declared updatable).

    Raises:
        trioscope.ServiceUnavailableError: no config server runs in this scope.
        trioscope.NoRegistryError: outside every registry scope.
    """
    return _home().schema.updatable


async def update(path: str, value: object, *, timeout_s: float | None = None) -> int:
    """Set *path* to *value*; return the version that includes it.

    Checked here first (the path exists and is updatable, the value has its
    type), then applied by the server against the whole configuration. If
    the server is restarting, the update waits in the home's queue and is
    retried in order (see the module docstring) until *timeout_s* passes.

    Args:
        timeout_s: Seconds to wait for the update to be applied (default
            `trioscope.DEFAULT_CALL_TIMEOUT_S`), also for the config child to
            appear in this scope.

    Raises:
        UnknownConfigPathError: no such path.
        ConfigRejected: not updatable, the wrong type, or a validator or
            cross-field rule refused; nothing changed.
        ConfigUpdateTimeoutError: not applied within *timeout_s*; withdrawn,
            it will never be applied.
        trioscope.ServiceUnavailableError: no config child appeared in this
            scope within *timeout_s*, or it stopped with the update queued.
        trioscope.ServiceCrashedError: the server crashed applying it (not applied).
        trioscope.NoRegistryError: outside every registry scope.
    """
    return await _submit(path, value, timeout_s)


async def reset(*, timeout_s: float | None = None) -> int:
    """Return to the configuration as loaded (not the bare defaults), as one change.

    Subscribers get one `ConfigChange` with path ``""``; the EventStore a
    ``config.reset`` event. Queued and retried like `update`.

    Raises:
        ConfigUpdateTimeoutError, trioscope.ServiceUnavailableError,
        trioscope.NoRegistryError: as `update`.
    """
    return await _submit(None, None, timeout_s)


async def _submit(path: str | None, value: object, timeout_s: float | None) -> int:
    timeout = DEFAULT_CALL_TIMEOUT_S if timeout_s is None else timeout_s
    _check_seconds("timeout_s", timeout, allow_inf=True)
    try:
        registry = current_registry()
    except NoRegistryError:
        await trio.lowlevel.checkpoint()  # a waiting call checkpoints on every path
        raise
    deadline = trio.current_time() + timeout
    home = find_home(HOME_NAME, ConfigHome)
    if home is None:
        with trio.move_on_at(deadline):
            while home is None:
                await registry.wait_for(HOME_NAME)
                home = find_home(HOME_NAME, ConfigHome)
        if home is None:
            raise _no_server()
    try:
        ticket = _ticket(home, path, value)
    except (UnknownConfigPathError, ConfigRejected):
        await trio.lowlevel.checkpoint()  # a waiting call checkpoints on every path
        raise
    try:
        # The common case: the server runs and nothing is queued before this
        # update. One call, bounded by the caller's deadline. Only the server of
        # the home's own scope: never a parent scope's namesake (see ConfigHome._retry).
        ref = home.service(SERVER_NAME, ConfigServer) if not home.pending else None
        if ref is not None:
            try:
                left = max(0.0, deadline - trio.current_time())
                await ref.with_timeout(left).call(ConfigServer.apply, ticket)
            except ServiceUnavailableError:
                pass  # it never ran: queue it for the next incarnation
            except CallTimeoutError:
                pass  # withdrawn from the mailbox unrun (the ticket says if it ran)
            except ServiceCrashedError:
                if ticket.state != _APPLIED:
                    raise  # crashed before its commit: not applied
                # Crashed after its commit (not in this module's code): it is applied.
        if ticket.waiting() and trio.current_time() < deadline:
            with trio.move_on_at(deadline):
                await home.enqueue(ticket).wait()
    finally:
        if ticket.waiting():
            ticket.withdraw()  # no checkpoint since the last look: never applied now
    if ticket.state == _APPLIED:
        return ticket.version
    if ticket.state == _FAILED:
        assert ticket.error is not None
        raise ticket.error
    raise ConfigUpdateTimeoutError(ticket.path, ticket.raw, timeout)


def _ticket(home: ConfigHome, path: str | None, value: object) -> _Ticket:
    if path is None:
        return _Ticket("", home.loaded, "(the loaded configuration)")
    schema = home.schema
    node = schema.node(path)
    if path not in schema.updatable:
        listed = ", ".join(sorted(schema.updatable)) or "none"
        raise ConfigRejected(path, value, f"not updatable at run time (updatable: {listed})")
    return _Ticket(path, structure(node, value), value)


@contextlib.asynccontextmanager
async def subscribe(
    *, buffer: int | None = None, under: str | None = None
) -> AsyncIterator[Subscription[ConfigChange]]:
    """Receive every change applied from now on, in order, while the block lasts.

    Changes arrive in version order with no gap and no duplicate. A
    subscriber whose *buffer* is full when a change comes is cut off: it
    receives what was buffered, then `SubscriptionOverflowError` (subscribe
    again and read `snapshot`: changes with a version above the snapshot's
    are the ones it lacks). The subscription lives in the home, so it rides
    through server restarts; it ends (end of iteration) when the config
    child stops.

    Args:
        buffer: Changes that may wait for this subscriber (default:
            ``config.subscriber_buffer``, else `DEFAULT_SUBSCRIBER_BUFFER`).
        under: Only changes of this path, inside it, or of a section around
            it, and resets (``under="events"``: ``events``, ``events.max_events``,
            ``""``...; ``under="window.size"``: ``window.size`` and ``window``).
            Versions then skip the others: check against `snapshot` after a cut-off.

    Raises:
        trioscope.ServiceUnavailableError: no config server runs in this scope.
        trioscope.NoRegistryError: outside every registry scope.
        ValueError, TypeError: a buffer that is not an int >= 1.
        UnknownConfigPathError: *under* is not a path of the schema.
    """
    try:
        home = _home()
        accept = None if under is None else _under(home.schema.node(under).path)
    except (ServiceUnavailableError, NoRegistryError, TypeError, UnknownConfigPathError):
        await trio.lowlevel.checkpoint()  # a waiting call checkpoints on every path
        raise
    if buffer is None:
        configured = home.snapshot._flat.get("config.subscriber_buffer")
        buffer = configured if isinstance(configured, int) else DEFAULT_SUBSCRIBER_BUFFER
    async with home.hub.subscribe(buffer=buffer, accept=accept) as changes:
        yield changes


async def follow(
    section: str,
    reload: Callable[[], object],
    changed: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Keep a service's settings in step with *section* of its scope's configuration.

    For a service's own task (the event store, the telemetry service): calls
    *reload* now and after every change under *section*, then awaits
    *changed* (if given) after each change. It follows the config home of the
    scope across its restarts (waiting for the next one while it is away),
    reads everything again after being cut off for lagging, and returns when
    the scope's schema has no such section.
    """
    registry = current_registry()
    while True:
        home = registry.lookup(HOME_NAME)
        try:
            async with subscribe(under=section) as changes:
                reload()  # anything missed before (re)subscribing
                async for _ in changes:
                    reload()
                    if changed is not None:
                        await changed()
        except SubscriptionOverflowError:
            continue  # too slow once: read everything again and resubscribe
        except ServiceUnavailableError:
            pass  # the config home is between two incarnations
        except UnknownConfigPathError:
            return  # an application schema without this section: nothing to follow
        # The subscription ended with its home: wait for the next one.
        await registry.wait_for(HOME_NAME, after=home)


def _under(path: str) -> Callable[[ConfigChange], bool]:
    inside = path + "."

    def accept(change: ConfigChange) -> bool:
        # The path itself, inside it, or a section around it (updating the
        # section "window" may change "window.size"); a reset ("") is around all.
        changed = change.path
        return (
            changed == path
            or not changed
            or changed.startswith(inside)
            or path.startswith(changed + ".")
        )

    return accept


async def status() -> ConfigStatus:
    """The server's `ConfigStatus` (a call by name: rides through a restart).

    Raises:
        trioscope.ServiceUnavailableError: no config server took the call in time.
        trioscope.NoRegistryError: outside every registry scope.
    """
    from .._names import _call, call

    registry = _current_registry_or_none()
    home = registry.lookup_here(HOME_NAME) if registry is not None else None
    if isinstance(home, ConfigHome):
        # The server of this very scope: while it restarts, an enclosing scope's
        # namesake must not answer for it.
        return cast(
            ConfigStatus,
            await _call(
                SERVER_NAME,
                ConfigServer,
                DEFAULT_CALL_TIMEOUT_S,
                ConfigServer.status,
                (),
                {},
                here=home.registry,
            ),
        )
    return await call(SERVER_NAME, ConfigServer.status)
