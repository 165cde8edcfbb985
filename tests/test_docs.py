"""Every code example users read runs: README, docs/*.md, and module docstrings."""

from __future__ import annotations

import importlib
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
MODULES = [
    "trioscope._registry",
    "trioscope._service",
    "trioscope._names",
    "trioscope._child_spec",
    "trioscope._supervisor",
    "trioscope._monitor",
    "trioscope._task_supervisor",
    "trioscope._app",
    "trioscope._correlation",
    "trioscope.telemetry",
    "trioscope.testing._faults",
    "trioscope.testing._stateful",
    "trioscope.foundation._config",
    "trioscope.foundation._event",
    "trioscope.foundation._events",
    "trioscope.foundation._foundation",
    "trioscope.foundation._home",
    "trioscope.foundation._memory",
    "trioscope.foundation._settings",
    "trioscope.foundation._sqlite",
    "trioscope.foundation._subscription",
    "trioscope.foundation.config",
    "trioscope.foundation.events",
    "trioscope.foundation._telemetry",
    "trioscope.foundation.telemetry",
    "trioscope.testing._scope",
    "trioscope.testing._plugin",
    "trioscope.testing._helpers",
    "trioscope.testing._runner",
    "trioscope.testing._chaos",
]


def _markdown_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, match in enumerate(FENCE.finditer(path.read_text()), start=1):
            blocks.append((f"{path.relative_to(ROOT)}#{number}", match.group(1)))
    return blocks


def _docstring_example(module: str) -> str:
    doc = importlib.import_module(module).__doc__ or ""
    _, sep, rest = doc.partition("::\n\n")
    assert sep, f"{module}'s docstring should open with a runnable example"
    lines = []
    for line in rest.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def _run(source: str, name: str) -> None:
    # dont_inherit: run as a script would, without this module's `from __future__` flags.
    code = compile(source, name, "exec", dont_inherit=True)
    exec(code, {"__name__": "__docs__"})


@pytest.mark.parametrize(("where", "source"), _markdown_blocks(), ids=lambda v: v[:40])
def test_markdown_example_runs(where: str, source: str) -> None:
    _run(source, where)


@pytest.mark.parametrize("module", MODULES)
def test_module_docstring_example_runs(module: str) -> None:
    _run(_docstring_example(module), module)
