"""The pytest examples of docs/testing.md (```py blocks) run as real test files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOC = Path(__file__).parent.parent.parent / "docs" / "testing.md"
BLOCK = re.compile(r"^```py\n# (test_\w+\.py)[^\n]*\n(.*?)^```", re.S | re.M)


def _blocks() -> dict[str, str]:
    return dict(BLOCK.findall(DOC.read_text()))


def _run(pytester: pytest.Pytester, name: str) -> pytest.RunResult:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(**{name.removesuffix(".py"): _blocks()[name]})
    return pytester.runpytest_inprocess("-p", "no:cacheprovider")


def test_the_docs_have_the_examples_these_tests_run() -> None:
    assert sorted(_blocks()) == [
        "test_kv_model.py",
        "test_kv_sequences.py",
        "test_leaky.py",
        "test_shop.py",
    ]


def test_the_shop_example_passes(pytester: pytest.Pytester) -> None:
    _run(pytester, "test_shop.py").assert_outcomes(passed=3)


def test_the_leaky_example_fails_naming_the_name_and_the_task(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "test_leaky.py")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*LeakError: test scope 'test_leaky.py::test_forgets_a_name_and_a_task' leaked 2 *",
            "*- name 'cache' in registry *: still registered, held by <object object at *>",
            "*- task 'leaky-worker'*started at test_forgets_a_name_and_a_task (*test_leaky.py:23) "
            "as worker (*test_leaky.py:7), now in worker*",
        ]
    )


def test_the_model_based_kv_example_passes(pytester: pytest.Pytester) -> None:
    _run(pytester, "test_kv_model.py").assert_outcomes(passed=1)


def test_the_operation_sequences_example_passes(pytester: pytest.Pytester) -> None:
    _run(pytester, "test_kv_sequences.py").assert_outcomes(passed=1)
