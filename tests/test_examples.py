"""The example programs run as written and show what their docstrings promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_supervised_app_demo_recovers_from_a_crash() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "supervised_app.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    answers = [line.split("< ", 1)[1] for line in lines if "< " in line]
    assert answers == [
        "HELLO (#1)",
        "SUPERVISED (#2)",
        "rejected: empty line",
        "error: the worker crashed (asked to crash); it is being restarted",
        "WORLD (#1)",  # a fresh incarnation: its count started over
    ]
    assert "worker 'upper' is running after 1 restart(s)" in lines
    assert lines[-1] == "stopped in order; bye"
    # The crash was reported by the service and by its supervisor, once each.
    assert result.stderr.count("crashed in convert('crash')") == 1
    assert result.stderr.count("child 'upper' exited with RuntimeError") == 1
