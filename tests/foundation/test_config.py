"""The ConfigServer: sources and their order, paths, updates, reset, subscriptions, restarts."""

from __future__ import annotations

import math
import random
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from _guards import checkpoints_even_when_raising

import trioscope
from trioscope.foundation import (
    ConfigRejected,
    ConfigUpdateTimeoutError,
    SubscriptionOverflowError,
    UnknownConfigPathError,
    config,
    events,
)
from trioscope.foundation import _config as config_module
from trioscope.foundation._events import event_store_spec
from trioscope.foundation._home import find_home
from trioscope.foundation._settings import EventsSettings, at_least, converter, setting

pytestmark = pytest.mark.trioscope_scope


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


@attrs.frozen
class Limits:
    """An application's own schema, with a cross-field rule."""

    low: int = setting(1, updatable=True, validator=at_least(0))
    high: int = setting(10, updatable=True, validator=at_least(0))
    name: str = setting("app")
    debug: bool = setting(False, updatable=True)

    def __attrs_post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")


class Crashable(config.ConfigServer):
    async def crash(self) -> None:
        raise RuntimeError("boom")

    async def hold(self, until: trio.Event) -> None:
        await until.wait()


@asynccontextmanager
async def running(
    spec: trioscope.ChildSpec[Any] | None = None, *more: trioscope.ChildSpec[Any]
) -> AsyncIterator[trioscope.Supervisor]:
    """An isolated scope with the config child (and *more*) under a supervisor."""
    children = [spec if spec is not None else config.config_spec(env={}), *more]
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor(children, max_restarts=10) as sup,
    ):
        yield sup


def inner(sup: trioscope.Supervisor) -> trioscope.Supervisor:
    """The config child's own supervisor (home, then server)."""
    value = sup.which_children()[0].value
    assert isinstance(value, trioscope.Supervisor)
    return value


# -- sources -----------------------------------------------------------------


async def test_sources_in_order_defaults_values_toml_environment(tmp_path: Path) -> None:
    toml = tmp_path / "app.toml"
    toml.write_text(
        "[events]\nmax_age_s = 10\nprune_interval_s = 5.5\n[telemetry]\nwindow_s = 30.0\n"
    )
    spec = config.config_spec(
        values={"events": {"max_events": 7, "max_age_s": 1.0}, "telemetry.window_s": 2.0},
        toml=toml,
        env={
            "TRIOSCOPE__TELEMETRY__WINDOW_S": "45.5",
            "TRIOSCOPE__EVENTS__BACKEND": "sqlite",
            "TRIOSCOPE_UNRELATED": "x",  # one underscore: not under the prefix
            "PATH": "/bin",
        },
    )
    async with running(spec):
        assert config.get("events.max_events") == 7  # values
        assert config.get("events.max_age_s") == 10.0  # TOML over values, int read as float
        assert isinstance(config.get("events.max_age_s"), float)
        assert config.get("events.prune_interval_s") == 5.5  # TOML
        assert config.get("telemetry.window_s") == 45.5  # environment over everything
        assert config.get("events.backend") == "sqlite"
        assert config.get("events.client_buffer") == 10_000  # default
        assert config.get("events") == config.snapshot().config.events
        snap = config.snapshot(config.FoundationConfig)
        assert snap.version == 0
        assert snap.config.telemetry.window_s == 45.5


async def test_a_later_section_replaces_what_earlier_sources_set_inside_it() -> None:
    spec = config.config_spec(
        Limits,
        values={"low": 2, "high": 3},
        env={"APP__HIGH": "20", "APP__DEBUG": "yes"},
        env_prefix="APP",
    )
    async with running(spec):
        assert config.snapshot(Limits).config == Limits(low=2, high=20, debug=True)


@pytest.mark.parametrize(
    ("env", "error", "message"),
    [
        (
            {"TRIOSCOPE__EVENTS__MAX_EVNTS": "5"},
            UnknownConfigPathError,
            "no configuration path 'events.max_evnts' (from the environment variable "
            "TRIOSCOPE__EVENTS__MAX_EVNTS); did you mean 'events.max_events', "
            "'events.max_age_s', 'events.max_data_bytes'?",
        ),
        (
            {"TRIOSCOPE__EVENTS__MAX_EVENTS": "5.0"},
            ConfigRejected,
            "cannot set events.max_events to '5.0' (from the environment variable "
            "TRIOSCOPE__EVENTS__MAX_EVENTS): must be an int",
        ),
        (
            {"TRIOSCOPE__EVENTS__MAX_EVENTS": "0"},
            ConfigRejected,
            "cannot set events.max_events to 0: must be >= 1",
        ),
        (
            {"TRIOSCOPE__EVENTS__BACKEND": "disk"},
            ConfigRejected,
            "cannot set events.backend to 'disk' (from the environment variable "
            "TRIOSCOPE__EVENTS__BACKEND): must be one of 'memory', 'sqlite'",
        ),
        (
            {"TRIOSCOPE__EVENTS__BACKEND": "sqlite", "TRIOSCOPE__EVENTS__SQLITE_PATH": ""},
            ConfigRejected,
            "cannot set events.sqlite_path to '': must not be empty when backend is 'sqlite'",
        ),
    ],
)
async def test_a_bad_environment_fails_the_start(
    env: Mapping[str, str], error: type[Exception], message: str
) -> None:
    async with trioscope.open_registry(isolated=True):
        with pytest.raises(trioscope.StartError) as info:
            async with trioscope.open_supervisor([config.config_spec(env=env)]):
                pass  # pragma: no cover - never started
    cause: BaseException | None = info.value
    while isinstance(cause, trioscope.StartError):
        cause = cause.__cause__
    assert isinstance(cause, error)
    assert str(cause) == message


async def test_unknown_values_and_bad_toml_fail_the_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[events\n")
    cases: list[tuple[trioscope.ChildSpec[Any], str]] = [
        (
            config.config_spec(values={"event": {"max_events": 1}}, env={}),
            "no configuration path 'event'; did you mean 'events'?",
        ),
        (
            config.config_spec(values={"events": 3}, env={}),
            "cannot set events to 3: must be a mapping of its settings (or a EventsSettings)",
        ),
        (
            config.config_spec(toml=bad, env={}),
            f"cannot set the configuration to '{bad}': not valid TOML "
            "(Expected ']' at the end of a table declaration (at line 1, column 8))",
        ),
    ]
    for spec, message in cases:
        async with trioscope.open_registry(isolated=True):
            with pytest.raises(trioscope.StartError) as info:
                async with trioscope.open_supervisor([spec]):
                    pass  # pragma: no cover - never started
        cause = info.value.__cause__
        assert isinstance(cause, trioscope.StartError)
        assert str(cause.__cause__) == message


async def test_the_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIOSCOPE__CONFIG__RETRY_MAX_S", "3")
    async with running(config.config_spec()):
        assert config.get("config.retry_max_s") == 3.0
    async with running(config.config_spec(env_prefix=None)):
        assert config.get("config.retry_max_s") == 2.0


def test_config_spec_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match=r"^a configuration schema must be an attrs class"):
        config.config_spec(dict)
    with pytest.raises(ValueError, match=exactly("config_spec: env_separator must not be empty")):
        config.config_spec(env_separator="")


# -- reading -----------------------------------------------------------------


async def test_unknown_paths_name_the_nearest_ones() -> None:
    async with running():
        with pytest.raises(
            UnknownConfigPathError,
            match=exactly(
                "no configuration path 'events.max_event'; did you mean "
                "'events.max_events', 'events.max_age_s', 'events.backend'?"
            ),
        ) as info:
            config.get("events.max_event")
        assert isinstance(info.value, KeyError)
        assert info.value.nearest == ("events.max_events", "events.max_age_s", "events.backend")
        with pytest.raises(
            UnknownConfigPathError,
            match=exactly("no configuration path 'zzz'; see the schema for the valid paths"),
        ):
            config.get("zzz")
        assert config.updatable_paths() == frozenset(
            {"events.max_events", "events.max_age_s", "telemetry.window_s"}
        )


@pytest.mark.no_trioscope_scope("checks what the clients do outside every registry scope")
async def test_outside_a_scope_and_without_a_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(trioscope.NoRegistryError):
        config.get("events.max_events")
    with pytest.raises(trioscope.NoRegistryError):
        await config.update("events.max_events", 1)
    async with trioscope.open_registry(isolated=True):
        unavailable = (
            "service 'config' is unavailable: no config server runs in this registry scope "
            "(nothing is registered as 'config.home'); start "
            "trioscope.foundation.config.config_spec() under a supervisor in this scope"
        )
        with pytest.raises(trioscope.ServiceUnavailableError, match=exactly(unavailable)):
            config.get("events.max_events")
        start = trio.current_time()
        with pytest.raises(trioscope.ServiceUnavailableError, match=exactly(unavailable)):
            await config.update("events.max_events", 1, timeout_s=2)
        assert trio.current_time() - start == 2


# -- updating ------------------------------------------------------------------


async def test_updates_bump_the_version_and_publish_a_snapshot() -> None:
    async with running():
        before = config.snapshot()
        assert await config.update("events.max_events", 5) == 1
        assert await config.update("telemetry.window_s", 2) == 2
        after = config.snapshot()
        assert before.version == 0
        assert before.config.events.max_events == 100_000  # a snapshot never changes
        assert (after.version, after.config.events.max_events) == (2, 5)
        assert config.get("telemetry.window_s") == 2.0
        assert isinstance(config.get("telemetry.window_s"), float)
        status = await config.status()
        assert (status.version, status.updates_applied, status.resets) == (2, 2, 0)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "events.backend",
            "sqlite",
            "cannot set events.backend to 'sqlite': not updatable at run time (updatable: "
            "events.max_age_s, events.max_events, telemetry.window_s)",
        ),
        ("events.max_events", 0, "cannot set events.max_events to 0: must be >= 1"),
        ("events.max_events", "5", "cannot set events.max_events to '5': must be an int"),
        ("events.max_events", True, "cannot set events.max_events to True: must be an int"),
        (
            "telemetry.window_s",
            float("inf"),
            "cannot set telemetry.window_s to inf: must be finite and > 0 seconds",
        ),
        (
            "events.max_age_s",
            float("nan"),
            "cannot set events.max_age_s to nan: must be > 0 seconds, or inf for no limit",
        ),
    ],
)
async def test_rejected_updates_change_nothing(path: str, value: object, message: str) -> None:
    async with running(), config.subscribe() as changes:
        before = config.snapshot()
        with pytest.raises(ConfigRejected, match=exactly(message)) as info:
            await config.update(path, value)
        assert isinstance(info.value, ValueError)
        assert (info.value.path, info.value.value) == (path, value)
        assert config.snapshot() is before
        assert changes.statistics().buffered == 0
        assert (await config.status()).updates_applied == 0


async def test_a_cross_field_rule_is_checked_against_the_whole_config() -> None:
    async with running(config.config_spec(Limits, env={})):
        with pytest.raises(
            ConfigRejected, match=exactly("cannot set low to 11: low (11) must be <= high (10)")
        ):
            await config.update("low", 11)
        assert config.snapshot().version == 0
        assert await config.update("high", 20) == 1
        assert await config.update("low", 11) == 2
        with pytest.raises(
            ConfigRejected, match=exactly("cannot set high to 5: low (11) must be <= high (5)")
        ):
            await config.update("high", 5)
        assert config.snapshot(Limits).config == Limits(low=11, high=20)
        with pytest.raises(UnknownConfigPathError):
            await config.update("hgh", 5)


async def test_reset_returns_to_the_loaded_config_as_one_change() -> None:
    spec = config.config_spec(values={"events.max_events": 50}, env={})
    async with running(spec), config.subscribe() as changes:
        loaded = config.snapshot().config
        await config.update("events.max_events", 60)
        await config.update("events.max_age_s", 5)
        assert await config.reset() == 3
        assert config.snapshot().config == loaded
        assert config.get("events.max_events") == 50  # loaded, not the default
        received = [await changes.receive() for _ in range(3)]
        assert [c.path for c in received] == ["events.max_events", "events.max_age_s", ""]
        assert received[2].new == loaded
        assert received[2].old == attrs.evolve(
            loaded, events=attrs.evolve(loaded.events, max_events=60, max_age_s=5.0)
        )
        assert received[2].version == 3
        status = await config.status()
        assert (status.updates_applied, status.resets) == (2, 1)


# -- subscriptions -------------------------------------------------------------


async def test_every_subscriber_sees_every_change_in_order() -> None:
    async with running(), config.subscribe() as one, config.subscribe() as two:
        for n in range(1, 6):
            await config.update("events.max_events", n)
        expected = [config.ConfigChange("events.max_events", 100_000, 1, 1)] + [
            config.ConfigChange("events.max_events", n - 1, n, n) for n in range(2, 6)
        ]
        assert [await one.receive() for _ in range(5)] == expected
        assert [await two.receive() for _ in range(5)] == expected
        assert (await config.status()).subscribers == 2


async def test_a_slow_subscriber_is_cut_off_and_nobody_else_stalls() -> None:
    async with (
        running(),
        config.subscribe(buffer=2) as slow,
        config.subscribe(buffer=100) as fast,
    ):
        versions = [await config.update("events.max_events", n) for n in range(1, 11)]
        assert versions == list(range(1, 11))  # the server never waited for anyone
        assert [(await slow.receive()).version for _ in range(2)] == [1, 2]
        with pytest.raises(
            SubscriptionOverflowError,
            match=exactly(
                "subscription to config changes cut off after 2 items: its buffer of 2 was "
                "full when the next one came (the subscriber is too slow); subscribe again, "
                "with a larger buffer or a faster consumer"
            ),
        ):
            await slow.receive()
        assert [(await fast.receive()).version for _ in range(10)] == versions
        assert (await config.status()).subscribers == 1


async def test_resubscribing_after_a_cut_off_loses_nothing() -> None:
    async with running():
        seen: dict[int, object] = {}
        async with config.subscribe(buffer=1) as changes:
            await config.update("events.max_events", 1)
            await config.update("events.max_events", 2)
            seen[(await changes.receive()).version] = 1
            with pytest.raises(SubscriptionOverflowError):
                await changes.receive()
        async with config.subscribe(buffer=10) as changes:
            snap = config.snapshot()
            await config.update("events.max_events", 3)
            change = await changes.receive()
        # The snapshot bridges the gap: every version is accounted for.
        assert (snap.version, snap.get("events.max_events")) == (2, 2)
        assert change.version == snap.version + 1
        assert change.old == 2


async def test_a_crashed_subscriber_leaves_nothing_behind() -> None:
    async with running():

        async def subscriber() -> None:
            async with config.subscribe():
                raise RuntimeError("subscriber bug")

        with pytest.raises(RuntimeError, match=r"^subscriber bug$"):
            await subscriber()
        assert (await config.status()).subscribers == 0
        assert await config.update("events.max_events", 1) == 1


async def test_subscriptions_end_when_the_config_child_stops() -> None:
    async with running() as sup, config.subscribe() as changes:
        await config.update("events.max_events", 1)
        await sup.terminate_child("config")
        assert (await changes.receive()).version == 1
        with pytest.raises(trio.EndOfChannel):
            await changes.receive()


# -- restarts ------------------------------------------------------------------


async def test_readers_keep_the_snapshot_and_updates_wait_for_the_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as sup, config.subscribe() as changes:
        await config.update("events.max_events", 1)
        config_sup = inner(sup)
        await config_sup.terminate_child("config")
        assert config.get("events.max_events") == 1  # the home keeps the snapshot
        results: list[int] = []

        async def updater(n: int) -> None:
            results.append(await config.update("events.max_events", n, timeout_s=60))

        async with trio.open_nursery() as nursery:
            for n in (2, 3, 4):
                nursery.start_soon(updater, n)
                await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(10)
            assert config.snapshot().version == 1  # nothing applied while it is away
            await config_sup.restart_child("config")
        assert results == [2, 3, 4]
        assert config.get("events.max_events") == 4
        assert [(await changes.receive()).new for _ in range(4)] == [1, 2, 3, 4]
        status = await config.status()
        assert (status.version, status.restarts, status.pending_updates) == (4, 1, 0)


async def test_an_update_not_applied_by_its_deadline_is_withdrawn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as sup:
        config_sup = inner(sup)
        await config_sup.terminate_child("config")
        start = trio.current_time()
        with pytest.raises(
            ConfigUpdateTimeoutError,
            match=exactly(
                "update of events.max_events to 7 was not acknowledged within 1.5 s (the config "
                "server was away or busy); it was withdrawn and will not be applied: retry later "
                "or give a longer timeout_s"
            ),
        ) as info:
            await config.update("events.max_events", 7, timeout_s=1.5)
        assert trio.current_time() - start == 1.5
        assert info.value.applied is False
        assert isinstance(info.value, trio.TooSlowError)
        await config_sup.restart_child("config")
        await trio.sleep(5)
        assert config.snapshot().version == 0
        assert config.get("events.max_events") == 100_000
        assert (await config.status()).pending_updates == 0


async def test_updates_queued_behind_a_crash_are_retried_on_the_next_incarnation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = random.Random(1)
    async with running(config.config_spec(env={}, server=Crashable, rng=rng)):
        release = trio.Event()
        results: dict[int, int] = {}

        async def updater(n: int) -> None:
            results[n] = await config.update("events.max_events", n)

        async def crash() -> None:
            with pytest.raises(trioscope.ServiceCrashedError):
                await trioscope.call("config", Crashable.crash)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trioscope.call, "config", Crashable.hold, release)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(crash)
            await trio.testing.wait_all_tasks_blocked()
            for n in (1, 2):  # queued in the mailbox behind the crash: they never run there
                nursery.start_soon(updater, n)
                await trio.testing.wait_all_tasks_blocked()
            release.set()
        assert sorted(results.values()) == [1, 2]
        last = max(results, key=results.__getitem__)
        assert config.get("events.max_events") == last
        status = await config.status()
        assert (status.version, status.restarts) == (2, 1)


async def test_an_update_queued_in_a_busy_mailbox_past_its_deadline_never_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(config.config_spec(env={}, server=Crashable)):
        release = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trioscope.call, "config", Crashable.hold, release)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ConfigUpdateTimeoutError):
                await config.update("events.max_events", 9, timeout_s=1)
            release.set()
        assert await config.update("events.max_events", 10) == 1
        assert config.get("events.max_events") == 10


# -- isolation and side effects ----------------------------------------------------


async def test_sibling_scopes_each_have_their_own_config() -> None:
    seen: dict[str, list[object]] = {}

    async def scope(name: str, value: int, ready: trio.Event, go: trio.Event) -> None:
        async with running(), config.subscribe() as changes:
            ready.set()
            await go.wait()
            await config.update("events.max_events", value)
            await trio.testing.wait_all_tasks_blocked()
            seen[name] = [
                (await changes.receive()).new for _ in range(changes.statistics().buffered)
            ]
            assert config.get("events.max_events") == value
            assert config.snapshot().version == 1

    go = trio.Event()
    async with trio.open_nursery() as nursery:
        readies = []
        for name, value in (("a", 1), ("b", 2)):
            ready = trio.Event()
            readies.append(ready)
            nursery.start_soon(scope, name, value, ready, go)
        for ready in readies:
            await ready.wait()
        go.set()
    assert seen == {"a": [1], "b": [2]}


async def test_changes_are_recorded_in_the_scope_event_store() -> None:
    spec = config.config_spec(values={"events.max_events": 50}, env={})
    async with running(spec, event_store_spec()):
        version = await config.update("events.max_events", 60)
        await config.reset()
        await trio.testing.wait_all_tasks_blocked()
        updated = await events.query(type="config.updated")
        assert [e.data for e in updated] == [
            {"path": "events.max_events", "old": 50, "new": 60, "version": version}
        ]
        (reset,) = await events.query(type="config.reset")
        assert reset.data["path"] == ""
        assert reset.data["version"] == 2
        assert reset.data["new"] == converter.unstructure(config.snapshot().config)
        assert reset.data["old"] == converter.unstructure(
            attrs.evolve(config.snapshot().config, events=EventsSettings(max_events=60))
        )
        status = await config.status()
        assert (status.events_recorded, status.events_not_recorded) == (2, 0)


async def test_without_an_event_store_changes_are_counted_as_not_recorded() -> None:
    async with running():
        await config.update("events.max_events", 60)
        status = await config.status()
        assert (status.events_recorded, status.events_not_recorded) == (0, 1)


async def test_status_reports_uptime_and_subscribers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(), config.subscribe():
        await trio.sleep(3)
        status = await config.status()
        assert status == config.ConfigStatus(
            uptime_s=3.0,
            version=0,
            updates_applied=0,
            resets=0,
            subscribers=1,
            pending_updates=0,
            restarts=0,
            events_recorded=0,
            events_not_recorded=0,
        )


class RecordingRandom(random.Random):
    """Jitter of 0.5 (a delay of 3/4 of the nominal one), recording when it was asked."""

    def __init__(self) -> None:
        super().__init__(0)
        self.asked: list[float] = []

    def random(self) -> float:
        self.asked.append(trio.current_time())
        return 0.5


async def test_retries_back_off_exponentially_with_jitter_up_to_the_maximum(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = RecordingRandom()
    spec = config.config_spec(values={"config.retry_max_s": 1.0}, env={}, rng=rng)
    async with running(spec) as sup:
        await inner(sup).terminate_child("config")
        start = trio.current_time()
        with pytest.raises(ConfigUpdateTimeoutError):
            await config.update("events.max_events", 1, timeout_s=4)
        # The first retry is asked for at once; each later one after the previous delay:
        # nominal 0.05, 0.1, 0.2, 0.4, 0.8, then 1.0 (the maximum), each times 0.75.
        assert rng.asked[0] == start
        delays = [b - a for a, b in zip(rng.asked, rng.asked[1:], strict=False)]
        assert delays == pytest.approx([0.0375, 0.075, 0.15, 0.3, 0.6, 0.75, 0.75, 0.75])
        assert trio.current_time() - start == 4


async def test_a_home_crash_restarts_home_and_server_from_the_sources(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(config.config_spec(values={"events.max_events": 50}, env={})) as sup:
        home = config_home()
        await config.update("events.max_events", 60)
        await inner(sup).terminate_child("config")
        results: list[BaseException] = []

        async def queued() -> None:
            try:
                await config.update("events.max_events", 70, timeout_s=60)
            except trioscope.ServiceUnavailableError as exc:
                results.append(exc)

        async def fail() -> None:
            raise RuntimeError("home task failed")

        async with config.subscribe() as changes, trio.open_nursery() as nursery:
            nursery.start_soon(queued)
            await trio.testing.wait_all_tasks_blocked()
            home.start_soon(fail)  # a supervised task of the home: the home crashes
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.EndOfChannel):
                await changes.receive()
        assert [str(e) for e in results] == [
            "service 'config' is unavailable: the config child stopped before this update "
            "was applied; it was withdrawn and will not be applied"
        ]
        assert config_home() is not home
        assert trioscope.whereis("config") is None  # a terminated child stays so
        await inner(sup).restart_child("config")
        assert config.snapshot().version == 0  # loaded again: a new history begins
        assert config.get("events.max_events") == 50
        assert await config.update("events.max_events", 80) == 1


def config_home() -> config_module.ConfigHome:
    home = find_home(config_module.HOME_NAME, config_module.ConfigHome)
    assert home is not None
    return home


async def test_a_cancelled_update_is_withdrawn(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as sup:
        await inner(sup).terminate_child("config")
        with trio.move_on_after(1):
            await config.update("events.max_events", 5, timeout_s=60)
        await inner(sup).restart_child("config")
        await trio.sleep(5)
        assert config.snapshot().version == 0
        assert (await config.status()).pending_updates == 0


async def test_snapshot_checks_the_schema_and_config_spec_the_server_class() -> None:
    async with running(config.config_spec(Limits, env={})):
        assert config.snapshot(Limits).config == Limits()
        with pytest.raises(
            TypeError,
            match=exactly(
                "the config server of this scope runs schema Limits, not FoundationConfig"
            ),
        ):
            config.snapshot(config.FoundationConfig)
    with pytest.raises(
        TypeError, match=exactly("config_spec: server must be a ConfigServer subclass, got 'x'")
    ):
        config.config_spec(server="x")  # type: ignore[arg-type]


@attrs.frozen
class Window:
    size: int = setting(3, validator=at_least(1))
    step: int = setting(1, validator=at_least(1))


@attrs.frozen
class App:
    window: Window = setting(factory=Window, updatable=True)  # noqa: RUF009 (attrs, not a dataclass)
    limits: Limits = attrs.field(factory=Limits)


async def test_a_section_declared_updatable_is_updated_whole_or_in_part() -> None:
    async with running(config.config_spec(App, env={})), config.subscribe() as changes:
        assert config.updatable_paths() == frozenset(
            {"window", "window.size", "window.step", "limits.low", "limits.high", "limits.debug"}
        )
        assert await config.update("window", {"size": 5}) == 1
        assert config.get("window") == Window(size=5, step=1)
        assert await config.update("window.step", 2) == 2
        assert config.snapshot(App).config.window == Window(size=5, step=2)
        with pytest.raises(
            ConfigRejected,
            match=exactly("cannot set window to {'size': 0}: size must be >= 1, got 0"),
        ):
            await config.update("window", {"size": 0})
        with pytest.raises(
            ConfigRejected,
            match=exactly("cannot set window to {'sise': 2}: extra fields found (sise)"),
        ):
            await config.update("window", {"sise": 2})
        first = await changes.receive()
        assert (first.path, first.old, first.new) == ("window", Window(), Window(size=5))
        values = config.snapshot().values
        assert values["window.size"] == 5
        with pytest.raises(TypeError):
            values["window.size"] = 6  # type: ignore[index]


async def test_a_section_value_names_the_setting_that_does_not_fit() -> None:
    async with running(config.config_spec(App, env={})):
        with pytest.raises(
            ConfigRejected,
            match=exactly(
                "cannot set window to {'size': '2'}: invalid value for type, expected int @ $.size"
            ),
        ):
            await config.update("window", {"size": "2"})


async def test_a_subscription_under_a_path_gets_its_changes_and_resets() -> None:
    async with running(), config.subscribe(under="events") as changes:
        await config.update("telemetry.window_s", 5)
        await config.update("events.max_events", 5)
        await config.reset()
        assert [(c.path, c.version) for c in [await changes.receive() for _ in range(2)]] == [
            ("events.max_events", 2),
            ("", 3),
        ]
        assert changes.statistics().buffered == 0
    async with running():
        with pytest.raises(UnknownConfigPathError):
            async with config.subscribe(under="event"):
                pass  # pragma: no cover - never entered


@pytest.mark.no_trioscope_scope("checks what the clients do outside every registry scope")
async def test_update_and_subscribe_checkpoint_outside_every_scope() -> None:
    with checkpoints_even_when_raising(), pytest.raises(trioscope.NoRegistryError):
        await config.update("events.max_events", 1)
    with checkpoints_even_when_raising(), pytest.raises(trioscope.NoRegistryError):
        async with config.subscribe():
            pass  # pragma: no cover - never entered


async def test_update_checkpoints_on_every_path(autojump_clock: trio.testing.MockClock) -> None:
    async with trioscope.open_registry(isolated=True):
        with checkpoints_even_when_raising(), pytest.raises(trioscope.ServiceUnavailableError):
            await config.update("events.max_events", 1, timeout_s=0)
    async with running():
        for path, value, error in [
            ("nope", 1, UnknownConfigPathError),
            ("events.backend", "sqlite", ConfigRejected),
            ("events.max_events", 0, ConfigRejected),
        ]:
            with checkpoints_even_when_raising(), pytest.raises(error):
                await config.update(path, value)
        with checkpoints_even_when_raising():
            await config.update("events.max_events", 1)
        with checkpoints_even_when_raising():
            await config.reset()
    with pytest.raises(
        ValueError, match=exactly("timeout_s must be >= 0 (math.inf allowed), got -1")
    ):
        await config.update("events.max_events", 1, timeout_s=-1)


# -- review fixes: nested scopes, ancestors of `under`, checkpoints, no age limit --


async def test_a_nested_scope_update_waits_for_its_own_server_not_the_parent_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While the inner scope's server is away, its updates wait for it: a namesake in
    the parent scope (visible through lookup) must never receive them."""
    async with running():
        async with (
            trioscope.open_registry(),
            trioscope.open_supervisor([config.config_spec(env={})]) as sup,
        ):
            await inner(sup).terminate_child("config")
            with pytest.raises(ConfigUpdateTimeoutError):
                await config.update("events.max_events", 7, timeout_s=1)
            assert config.get("events.max_events") == 100_000
            async with trio.open_nursery() as nursery:
                versions: list[int] = []

                async def submit() -> None:
                    versions.append(await config.update("events.max_events", 8, timeout_s=5))

                nursery.start_soon(submit)
                await trio.sleep(3)  # queued and retried meanwhile, never in the parent
                assert versions == []
                await inner(sup).restart_child("config")
            assert versions == [1]
            assert config.get("events.max_events") == 8
            assert (await config.status()).pending_updates == 0
        assert config.get("events.max_events") == 100_000
        assert config.snapshot().version == 0


async def test_status_in_a_nested_scope_never_answers_with_the_parent_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running():
        await config.update("events.max_events", 9)  # the parent's server: version 1
        async with (
            trioscope.open_registry(),
            trioscope.open_supervisor([config.config_spec(env={})]) as sup,
        ):
            assert (await config.status()).version == 0  # the inner server
            await inner(sup).terminate_child("config")
            with pytest.raises(trioscope.ServiceUnavailableError):
                await config.status()
            assert trio.current_time() == trioscope.DEFAULT_CALL_TIMEOUT_S


async def test_a_server_without_a_home_in_its_own_scope_does_not_start() -> None:
    async with running(), trioscope.open_registry():
        with pytest.raises(trioscope.StartError) as info:
            async with trioscope.open_supervisor([config.ConfigServer.child_spec(name="config")]):
                pass  # pragma: no cover - never entered
        assert repr(info.value.__cause__) == repr(
            RuntimeError(
                "ConfigServer found no 'config.home' in its registry scope: start it with "
                "trioscope.foundation.config.config_spec(), which starts its home first"
            )
        )


async def test_changes_are_never_recorded_in_a_parent_scope_event_store() -> None:
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([event_store_spec()]),
    ):
        async with (
            trioscope.open_registry(),
            trioscope.open_supervisor([config.config_spec(env={})]),
        ):
            await config.update("events.max_events", 60)
            status = await config.status()
            assert (status.events_recorded, status.events_not_recorded) == (0, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert await events.query(type="config.updated") == []


async def test_a_subscription_under_a_setting_gets_updates_of_its_sections() -> None:
    async with (
        running(config.config_spec(App, env={})),
        config.subscribe(under="window.size") as changes,
    ):
        await config.update("limits.low", 2)
        await config.update("window", {"size": 5})
        await config.update("window.step", 2)
        await config.update("window.size", 6)
        received = [await changes.receive() for _ in range(changes.statistics().buffered)]
        assert [(c.path, c.new, c.version) for c in received] == [
            ("window", Window(size=5), 2),
            ("window.size", 6, 4),
        ]


async def test_subscribe_checkpoints_when_it_raises(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trioscope.open_registry(isolated=True):
        with checkpoints_even_when_raising(), pytest.raises(trioscope.ServiceUnavailableError):
            async with config.subscribe():
                pass  # pragma: no cover - never entered
    async with running():
        with checkpoints_even_when_raising(), pytest.raises(UnknownConfigPathError):
            async with config.subscribe(under="nope"):
                pass  # pragma: no cover - never entered
        with (
            checkpoints_even_when_raising(),
            pytest.raises(ValueError, match=r"^buffer must be >= 1, got 0$"),
        ):
            async with config.subscribe(buffer=0):
                pass  # pragma: no cover - never entered


async def test_events_max_age_s_may_be_infinite_for_no_age_limit() -> None:
    spec = config.config_spec(values={"events.max_age_s": math.inf}, env={})
    async with running(spec, event_store_spec()):
        assert config.get("events.max_age_s") == math.inf
        await config.update("events.max_age_s", 60)
        assert await config.update("events.max_age_s", math.inf) == 2
        assert config.get("events.max_age_s") == math.inf
        await trio.testing.wait_all_tasks_blocked()
        recorded = await events.query(type="config.updated")
        assert [(e.data["old"], e.data["new"]) for e in recorded] == [("inf", 60.0), (60.0, "inf")]
        for value, rule in [
            (math.nan, "must be > 0 seconds, or inf for no limit"),
            (0.0, "must be > 0 seconds, or inf for no limit"),
            (-math.inf, "must be > 0 seconds, or inf for no limit"),
        ]:
            with pytest.raises(
                ConfigRejected,
                match=exactly(f"cannot set events.max_age_s to {value!r}: {rule}"),
            ):
                await config.update("events.max_age_s", value)


async def test_events_max_age_s_from_the_environment_may_be_inf() -> None:
    async with running(config.config_spec(env={"TRIOSCOPE__EVENTS__MAX_AGE_S": "inf"})):
        assert config.get("events.max_age_s") == math.inf
