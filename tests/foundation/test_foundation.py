"""The foundation as one unit: supervision order, and isolation of many scopes at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
import trio.testing

import trioscope
from trioscope.foundation import (
    ConfigChange,
    Event,
    config,
    config_spec,
    event_store_spec,
    events,
    foundation_spec,
    health,
    open_foundation,
    telemetry,
)

pytestmark = pytest.mark.trioscope_scope

SCOPES = 50


async def test_fifty_scopes_at_once_keep_every_update_event_and_subscription_to_themselves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each scope runs its own config server and event store under the same names;
    every scope updates, stores and subscribes concurrently, then each checks that
    its stores and subscribers hold exactly its own traffic (the ElixirScope
    original sent test-scope side effects to the production instances)."""
    written = 0
    all_written = trio.Event()
    checked: dict[int, tuple[list[tuple[str, object]], list[int]]] = {}

    async def one_scope(i: int) -> None:
        nonlocal written
        async with (
            trioscope.open_registry(namespace=f"scope-{i}", isolated=True),
            open_foundation(),
            config.subscribe() as changes,
            events.subscribe(type="order") as orders,
        ):
            version = await config.update("events.max_events", 1_000 + i)
            ids = [
                await events.store(Event("order", {"scope": i, "n": n}, correlation_id=f"c{i}"))
                for n in range(3)
            ]
            written += 1
            if written == SCOPES:
                all_written.set()
            await all_written.wait()
            # Side effects (the config change's event) are flushed asynchronously: let them land.
            await trio.testing.wait_all_tasks_blocked()

            assert version == 1
            assert config.get("events.max_events") == 1_000 + i
            assert await changes.receive() == ConfigChange(
                "events.max_events", 100_000, 1_000 + i, 1
            )
            assert changes.statistics().buffered == 0
            received = [await orders.receive() for _ in range(3)]
            assert [e.id for e in received] == ids
            assert orders.statistics().buffered == 0

            stored = await events.query()
            checked[i] = (
                [(e.type, e.data.get("scope", e.data.get("new"))) for e in stored],
                [e.id for e in stored],
            )
            assert (await config.status()).updates_applied == 1
            # Telemetry counts this scope's traffic only.
            snap = await telemetry.snapshot()
            updates = snap.metric("trioscope.config.update.count").get(path="events.max_events")
            assert updates is not None
            assert updates.value == 1
            stored_sum = snap.metric("trioscope.events.store.count").get()
            assert stored_sum is not None
            assert stored_sum.value == 4

    async with trio.open_nursery() as nursery:
        for i in range(SCOPES):
            nursery.start_soon(one_scope, i)

    assert sorted(checked) == list(range(SCOPES))
    for i, (contents, ids) in checked.items():
        assert sorted(contents, key=repr) == sorted(
            [("order", i), ("order", i), ("order", i), ("config.updated", 1_000 + i)], key=repr
        )
        assert ids == sorted(ids)
        assert len(set(ids)) == 4


async def test_foundation_spec_nests_config_events_telemetry_rest_for_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([foundation_spec()]) as root,
    ):
        foundation = root.which_children()[0].value
        assert isinstance(foundation, trioscope.Supervisor)
        assert [c.id for c in foundation.which_children()] == ["config", "events", "telemetry"]
        assert foundation.strategy is trioscope.Strategy.REST_FOR_ONE
        await config.update("events.max_age_s", 10.0)
        await trio.testing.wait_all_tasks_blocked()  # the store follows config changes
        assert (await events.stats()).settings.max_age_s == 10.0
        assert foundation.count_children().supervisors == 3


async def test_custom_specs_are_used_as_given(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        trioscope.open_registry(isolated=True),
        open_foundation(
            config=config_spec(values={"events": {"max_events": 7}}),
            events=event_store_spec(),
        ),
    ):
        assert config.get("events.max_events") == 7
        assert (await events.stats()).settings.max_events == 7


@pytest.mark.no_trioscope_scope("checks what the clients do outside every registry scope")
async def test_outside_a_registry_the_clients_say_how_to_open_one() -> None:
    with pytest.raises(trioscope.NoRegistryError):
        config.get("events.max_events")
    with pytest.raises(trioscope.NoRegistryError):
        await events.store(Event("nowhere"))
    with pytest.raises(trioscope.NoRegistryError):
        await health()


async def test_one_mapping_configures_the_whole_foundation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    values = {"events": {"max_events": 7}, "telemetry": {"window_s": 12.0}}
    async with trioscope.open_registry(isolated=True), open_foundation(values=values):
        assert (await events.stats()).settings.max_events == 7
        assert (await telemetry.snapshot()).window_s == 12.0


async def test_one_toml_file_configures_the_whole_foundation(tmp_path: Path) -> None:
    toml = tmp_path / "foundation.toml"
    toml.write_text("[events]\nmax_events = 9\n\n[telemetry]\nwindow_s = 3.5\n")
    spec = foundation_spec(toml=toml)
    async with trioscope.open_registry(isolated=True), trioscope.open_supervisor([spec]):
        assert (await events.stats()).settings.max_events == 9
        assert (await telemetry.snapshot()).window_s == 3.5


def test_a_config_spec_and_values_for_the_default_one_are_refused() -> None:
    message = (
        "foundation_spec: give either config= (a config_spec) or values=/toml= "
        "(for the default config_spec), not both"
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        foundation_spec(config=config_spec(), values={})
    with pytest.raises(TypeError, match=re.escape(message)):
        foundation_spec(config=config_spec(), toml="x.toml")


async def test_health_reports_all_three_and_the_worst_status(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trioscope.open_registry(isolated=True), open_foundation() as foundation:
        summary = await health()
        assert summary.status == "healthy"
        assert {name: h.status for name, h in summary.services.items()} == {
            "config": "healthy",
            "events": "healthy",
            "telemetry": "healthy",
        }
        await foundation.terminate_child("telemetry")
        summary = await health()
        assert summary.status == "unavailable"
        assert summary.services["telemetry"].status == "unavailable"
        assert summary.services["telemetry"].detail == {
            "error": "no service 'telemetry' is running in this scope"
        }
        assert summary.services["events"].status == "healthy"
