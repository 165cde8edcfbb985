"""The public API's types: calls through a ref are checked against the handler.

Runs mypy on every file here named ``*_pass.py`` or ``service_calls.py``, which
must pass under --strict (with assert_type proving the inferred types), and on
every ``*_errors.py``, in which every line marked ``# E:`` must be an error,
and no other line may be.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api", reason="the typing tests run in `nox -s typecheck`")

HERE = Path(__file__).parent


def _mypy(path: Path) -> tuple[str, int]:
    stdout, stderr, status = api.run(
        [
            "--strict",
            "--python-version",
            "3.11",
            "--no-incremental",
            "--cache-dir",
            "/dev/null",
            "--show-error-codes",
            "--no-error-summary",
            str(path),
        ]
    )
    return stdout + stderr, status


PASSING = sorted([HERE / "service_calls.py", *HERE.glob("*_pass.py")])
FAILING = sorted(HERE.glob("*_errors.py"))


@pytest.mark.parametrize("path", PASSING, ids=lambda p: p.name)
def test_well_typed_code_passes_strict(path: Path) -> None:
    output, status = _mypy(path)
    assert status == 0, output


@pytest.mark.parametrize("path", FAILING, ids=lambda p: p.name)
def test_ill_typed_code_errs_on_exactly_the_marked_lines(path: Path) -> None:
    output, status = _mypy(path)
    assert status == 1, output
    expected = {
        number
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "# E:" in line
    }
    reported = {
        int(m.group(1)) for m in re.finditer(rf"{re.escape(path.name)}:(\d+): error:", output)
    }
    assert reported == expected, output
