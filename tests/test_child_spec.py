"""`ChildSpec`, `Restart` and `Backoff`: validation and the delay formula."""

from __future__ import annotations

import math
import random
import re

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import trioscope
from trioscope import Backoff, ChildSpec, Restart

pytestmark = pytest.mark.trioscope_scope


async def _noop(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()


class Worker(trioscope.Service):
    async def ping(self) -> str:
        return "pong"


# -- ChildSpec ------------------------------------------------------------------


def test_defaults() -> None:
    spec = ChildSpec("a", _noop)
    assert spec.restart is Restart.PERMANENT
    assert spec.shutdown == trioscope.DEFAULT_SHUTDOWN_S == 5.0
    assert spec.significant is False
    assert spec.backoff is None
    assert spec.kind == "worker"


def test_is_frozen() -> None:
    spec = ChildSpec("a", _noop)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spec.id = "b"  # type: ignore[misc]


@pytest.mark.parametrize("shutdown", [-1, -0.5, -math.inf])
def test_negative_shutdown_is_a_value_error(shutdown: float) -> None:
    message = f"ChildSpec.shutdown must be >= 0 (math.inf allowed), got {shutdown!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ChildSpec("a", _noop, shutdown=shutdown)


def test_nan_shutdown_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^ChildSpec.shutdown must be >= 0 \(math.inf allowed\)"):
        ChildSpec("a", _noop, shutdown=math.nan)


@pytest.mark.parametrize("shutdown", ["5", True, None])
def test_non_number_shutdown_is_a_type_error(shutdown: object) -> None:
    message = f"ChildSpec.shutdown must be a number of seconds, got {type(shutdown).__name__}"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        ChildSpec("a", _noop, shutdown=shutdown)  # type: ignore[arg-type]


@pytest.mark.parametrize("shutdown", [0, 0.25, 5, math.inf])
def test_valid_shutdowns(shutdown: float) -> None:
    assert ChildSpec("a", _noop, shutdown=shutdown).shutdown == shutdown


def test_non_callable_start_is_a_type_error() -> None:
    message = "ChildSpec.start must be an async callable taking task_status=..., got int: 5"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        ChildSpec("a", 5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("child_id", "error", "message"),
    [
        ("", ValueError, "ChildSpec.id must not be empty"),
        (1, TypeError, "ChildSpec.id must be a str, got int: 1"),
        (None, TypeError, "ChildSpec.id must be a str, got NoneType: None"),
    ],
)
def test_bad_id(child_id: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        ChildSpec(child_id, _noop)  # type: ignore[arg-type]


def test_restart_must_be_a_restart() -> None:
    message = "ChildSpec.restart must be a trioscope.Restart, got 'permanent'"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        ChildSpec("a", _noop, restart="permanent")  # type: ignore[arg-type]


def test_backoff_must_be_a_backoff() -> None:
    message = "ChildSpec.backoff must be a trioscope.Backoff or None, got 1.0"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        ChildSpec("a", _noop, backoff=1.0)  # type: ignore[arg-type]


def test_significant_must_be_a_bool() -> None:
    message = "ChildSpec.significant must be a bool, got 1"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        ChildSpec("a", _noop, restart=Restart.TRANSIENT, significant=1)  # type: ignore[arg-type]


def test_significant_permanent_is_a_value_error() -> None:
    message = (
        "child 'a': a significant child must be TRANSIENT or TEMPORARY "
        "(a PERMANENT child is always restarted, so it can never end its supervisor)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ChildSpec("a", _noop, significant=True)


@pytest.mark.parametrize("restart", [Restart.TRANSIENT, Restart.TEMPORARY])
def test_significant_transient_or_temporary_is_fine(restart: Restart) -> None:
    assert ChildSpec("a", _noop, restart=restart, significant=True).significant


def test_duplicate_id_in_one_supervisor_is_a_value_error() -> None:
    message = (
        "duplicate child id 'a': ids must be unique in a supervisor; "
        "pass id= to child_spec (or ChildSpec) to tell the children apart"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        trioscope.supervisor_spec([ChildSpec("a", _noop), ChildSpec("a", _noop)], id="sup")


async def test_duplicate_id_in_open_supervisor_is_a_value_error() -> None:
    message = (
        "duplicate child id 'a': ids must be unique in a supervisor; "
        "pass id= to child_spec (or ChildSpec) to tell the children apart"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        async with trioscope.open_supervisor([ChildSpec("a", _noop), ChildSpec("a", _noop)]):
            pytest.fail("the body must not run")  # pragma: no cover


def test_the_same_id_in_two_supervisors_is_fine() -> None:
    trioscope.supervisor_spec([ChildSpec("a", _noop)], id="one")
    trioscope.supervisor_spec([ChildSpec("a", _noop)], id="two")


def test_kind() -> None:
    assert ChildSpec("a", _noop).kind == "worker"
    assert Worker.child_spec(id="w").kind == "worker"
    assert trioscope.supervisor_spec([], id="s").kind == "supervisor"


def test_supervisor_spec_defaults() -> None:
    spec = trioscope.supervisor_spec([], id="s")
    assert spec.id == "s"
    assert spec.restart is Restart.PERMANENT
    assert spec.shutdown == math.inf  # a nested supervisor stops its own children first
    assert spec.backoff is None


# -- Backoff --------------------------------------------------------------------


def test_backoff_defaults() -> None:
    assert Backoff() == Backoff(
        initial=0.1, maximum=10.0, multiplier=2.0, jitter=0.1, reset_after=30.0
    )


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"initial": -1}, ValueError, "Backoff.initial must be finite and >= 0, got -1"),
        ({"initial": math.inf}, ValueError, "Backoff.initial must be finite and >= 0, got inf"),
        ({"initial": "1"}, TypeError, "Backoff.initial must be a number of seconds, got str"),
        ({"maximum": -1}, ValueError, "Backoff.maximum must be finite and >= 0, got -1"),
        ({"maximum": math.inf}, ValueError, "Backoff.maximum must be finite and >= 0, got inf"),
        (
            {"initial": 2.0, "maximum": 1.0},
            ValueError,
            "Backoff.maximum (1.0) must be >= Backoff.initial (2.0)",
        ),
        (
            {"reset_after": -1},
            ValueError,
            "Backoff.reset_after must be >= 0 (math.inf allowed), got -1",
        ),
        ({"multiplier": 0.5}, ValueError, "Backoff.multiplier must be finite and >= 1, got 0.5"),
        (
            {"multiplier": math.inf},
            ValueError,
            "Backoff.multiplier must be finite and >= 1, got inf",
        ),
        (
            {"multiplier": math.nan},
            ValueError,
            "Backoff.multiplier must be finite and >= 1, got nan",
        ),
        ({"multiplier": True}, TypeError, "Backoff.multiplier must be a number, got True"),
        ({"jitter": -0.1}, ValueError, "Backoff.jitter must be between 0 and 1, got -0.1"),
        ({"jitter": 1.5}, ValueError, "Backoff.jitter must be between 0 and 1, got 1.5"),
        ({"jitter": math.nan}, ValueError, "Backoff.jitter must be between 0 and 1, got nan"),
        ({"jitter": "0"}, TypeError, "Backoff.jitter must be a number, got '0'"),
    ],
)
def test_backoff_validation(
    options: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        Backoff(**options)  # type: ignore[arg-type]


def test_backoff_edges_are_valid() -> None:
    Backoff(initial=0, maximum=0, multiplier=1, jitter=0, reset_after=0)
    Backoff(jitter=1, reset_after=math.inf)


def test_backoff_delay_without_jitter() -> None:
    backoff = Backoff(initial=1.0, maximum=10.0, multiplier=2.0, jitter=0.0)
    rng = random.Random(0)
    assert [backoff.delay(n, rng) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_delay_never_overflows() -> None:
    backoff = Backoff(initial=1.0, maximum=60.0, multiplier=10.0, jitter=0.0)
    assert backoff.delay(10**9, random.Random(0)) == 60.0


def test_backoff_jitter_takes_off_a_seeded_fraction() -> None:
    backoff = Backoff(initial=1.0, maximum=100.0, multiplier=3.0, jitter=0.5)
    draws = random.Random(7)
    expected = [min(100.0, 3.0**n) * (1 - 0.5 * draws.random()) for n in range(5)]
    rng = random.Random(7)
    assert [backoff.delay(n, rng) for n in range(5)] == expected


@given(
    initial=st.floats(0, 100),
    extra=st.floats(0, 100),
    multiplier=st.floats(1, 10),
    jitter=st.floats(0, 1),
    attempt=st.integers(0, 10**6),
    seed=st.integers(0, 2**32),
)
def test_backoff_delay_bounds(
    initial: float, extra: float, multiplier: float, jitter: float, attempt: int, seed: int
) -> None:
    backoff = Backoff(
        initial=initial, maximum=initial + extra, multiplier=multiplier, jitter=jitter
    )
    steady = attrs.evolve(backoff, jitter=0.0)
    rng = random.Random(seed)
    base = steady.delay(attempt, rng)
    assert initial <= base <= steady.delay(attempt + 1, rng) <= backoff.maximum
    delay = backoff.delay(attempt, random.Random(seed))
    assert base * (1 - jitter) <= delay <= base


async def test_a_single_spec_instead_of_a_list_says_to_wrap_it() -> None:
    message = (
        "children must be a list of ChildSpec values, got a single ChildSpec ('a'): "
        "wrap it in a list, [spec]"
    )
    spec = ChildSpec("a", _noop)
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        async with trioscope.open_supervisor(spec):  # type: ignore[arg-type]
            pytest.fail("the body must not run")  # pragma: no cover
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        trioscope.supervisor_spec(spec, id="sup")  # type: ignore[arg-type]
