"""Helpers for async tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio


def _only_cancelled(exc: BaseException) -> bool:
    """Whether *exc* is a `trio.Cancelled`, or an exception group of nothing else."""
    if isinstance(exc, trio.Cancelled):
        return True
    inner = getattr(exc, "exceptions", None)  # an exception group, on any Python version
    return isinstance(inner, tuple) and bool(inner) and all(_only_cancelled(e) for e in inner)


@contextmanager
def no_stray_cancel() -> Iterator[None]:
    """Fail the test if only cancellation leaves the block.

    pytest-trio cancels the scope around a test in a ``finally``, which absorbs a
    `trio.Cancelled` (or a group of them) escaping the test function: the test
    would pass without running its remaining assertions. Wrap blocks that end
    by cancelling their own body.
    """
    try:
        yield
    except BaseException as exc:
        if _only_cancelled(exc):
            pytest.fail(f"cancellation escaped the block: {exc!r}")
        raise


@contextmanager
def checkpoints_even_when_raising() -> Iterator[None]:
    """`trio.testing.assert_checkpoints`, except that raising does not excuse the block.

    Reads the same per-task counters Trio's helper does: a cancel point and a
    schedule point must both have happened, on the error path too.
    """
    task = trio.lowlevel.current_task()
    cancel_points, schedule_points = task._cancel_points, task._schedule_points
    try:
        yield
    finally:
        assert task._cancel_points > cancel_points, "no cancel point"
        assert task._schedule_points > schedule_points, "no schedule point"
