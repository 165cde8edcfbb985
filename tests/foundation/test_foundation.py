"""The foundation as one unit: supervision order, and isolation of many scopes at once."""

from __future__ import annotations

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
    open_foundation,
)

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


async def test_foundation_spec_nests_config_before_events_rest_for_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        trioscope.open_registry(isolated=True),
        trioscope.open_supervisor([foundation_spec()]) as root,
    ):
        foundation = root.which_children()[0].value
        assert isinstance(foundation, trioscope.Supervisor)
        assert [c.id for c in foundation.which_children()] == ["config", "events"]
        await config.update("events.max_age_s", 10.0)
        await trio.testing.wait_all_tasks_blocked()  # the store follows config changes
        assert (await events.stats()).settings.max_age_s == 10.0
        assert foundation.count_children().supervisors == 2


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


async def test_outside_a_registry_the_clients_say_how_to_open_one() -> None:
    with pytest.raises(trioscope.NoRegistryError):
        config.get("events.max_events")
    with pytest.raises(trioscope.NoRegistryError):
        await events.store(Event("nowhere"))
