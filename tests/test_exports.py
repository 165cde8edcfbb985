"""The public namespace: sorted, complete, and reporting public module paths."""

from __future__ import annotations

import inspect
import subprocess
import sys
import types

import trioscope

# The contract's names (shared/DESIGN.md sections 1-4): other code relies on them.
CONTRACT = [
    "open_registry",
    "current_registry",
    "Registry",
    "NoRegistryError",
    "AlreadyRegisteredError",
    "Service",
    "ServiceRef",
    "whereis",
    "call",
    "cast",
    "Health",
    "ServiceStatistics",
    "CallTimeoutError",
    "ServiceUnavailableError",
    "ServiceCrashedError",
    "MailboxFullError",
    "Rejected",
    "TrioscopeError",
    "ChildSpec",
    "Restart",
    "Strategy",
    "open_supervisor",
    "supervisor_spec",
    "StartError",
    "RestartIntensityExceededError",
    "ChildInfo",
    "ChildCounts",
    "Backoff",
    "monitor",
    "Down",
    "open_dynamic_supervisor",
    "MaxChildrenError",
    "open_task_supervisor",
    "run",
]


def _isort_key(name: str) -> tuple[int, str]:
    # Constants, then classes, then functions: the order ruff's RUF022 keeps.
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_all_is_sorted_and_unique() -> None:
    assert trioscope.__all__ == sorted(set(trioscope.__all__), key=_isort_key)


def test_all_lists_every_public_name_and_only_those() -> None:
    public = {
        name
        for name, value in vars(trioscope).items()
        if not name.startswith(("_", "@")) and not inspect.ismodule(value)
    }
    assert public == set(trioscope.__all__)


def test_contract_names_are_exported() -> None:
    assert set(CONTRACT) <= set(trioscope.__all__)


def test_public_classes_and_functions_report_the_public_module() -> None:
    for name in trioscope.__all__:
        value = getattr(trioscope, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ == "trioscope", name


def test_errors_derive_from_trioscope_error() -> None:
    errors = [
        value
        for name in trioscope.__all__
        if name.endswith("Error") and isinstance(value := getattr(trioscope, name), type)
    ]
    assert errors
    for error in errors:
        assert issubclass(error, trioscope.TrioscopeError), error
    assert not issubclass(trioscope.Rejected, trioscope.TrioscopeError)


def test_telemetry_all_is_sorted_complete_and_reports_its_module() -> None:
    from trioscope import telemetry

    assert telemetry.__all__ == sorted(set(telemetry.__all__), key=_isort_key)
    public = {
        name
        for name, value in vars(telemetry).items()
        if not name.startswith(("_", "@")) and not inspect.ismodule(value)
    }
    assert public == set(telemetry.__all__)
    for name in telemetry.__all__:
        value = getattr(telemetry, name)
        if isinstance(value, types.GenericAlias):
            continue  # a type alias (EventName: tuple[str, ...]); a class on 3.10's inspect
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ == "trioscope.telemetry", name


def test_testing_all_is_sorted_complete_and_reports_its_module() -> None:
    import trioscope.testing as testing

    assert testing.__all__ == sorted(set(testing.__all__), key=_isort_key)
    for name in testing.__all__:
        getattr(testing, name)  # the Hypothesis-based names load on first use
    public = {
        name
        for name, value in vars(testing).items()
        if not name.startswith(("_", "@")) and not inspect.ismodule(value)
    }
    assert public == set(testing.__all__)
    for name in testing.__all__:
        value = getattr(testing, name)
        if isinstance(value, types.GenericAlias):
            continue
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ == "trioscope.testing", name
        if name.endswith("Error") and isinstance(value, type):
            assert issubclass(value, trioscope.TrioscopeError), name


def test_foundation_all_is_sorted_complete_and_reports_public_modules() -> None:
    import trioscope.foundation as foundation

    assert foundation.__all__ == sorted(set(foundation.__all__), key=_isort_key)
    # "@py_builtins": pytest rewrites the asserts of its plugins' package, trioscope included.
    public = {name for name in vars(foundation) if not name.startswith(("_", "@"))} - {"attrs"}
    assert public == set(foundation.__all__)
    for name in foundation.__all__:
        value = getattr(foundation, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ == "trioscope.foundation", name
        if name.endswith("Error") and isinstance(value, type):
            assert issubclass(value, trioscope.TrioscopeError), name
    # The client modules re-export only.
    for module in (foundation.config, foundation.events):
        assert module.__all__ == sorted(set(module.__all__), key=_isort_key)


def test_type_hints_of_public_classes_resolve_after_the_module_rewrite() -> None:
    """cattrs (and any user) reads annotations through typing.get_type_hints, which
    looks names up in the module ``__module__`` names: the public one, after the rewrite."""
    import typing

    import trioscope.foundation as foundation
    import trioscope.testing

    for module in (trioscope, foundation, trioscope.telemetry, trioscope.testing):
        for name in module.__all__:
            value = getattr(module, name)
            if not isinstance(value, type):
                continue
            if all(c.__module__.startswith(("trioscope", "builtins")) for c in value.__mro__):
                typing.get_type_hints(value)  # raises NameError if not resolved
            else:  # a base from another library (Hypothesis's): the class's own
                inspect.get_annotations(value, eval_str=True)


def test_the_testing_package_and_its_plugin_import_without_hypothesis() -> None:
    # The pytest plugin loads for every project that installs trioscope: only
    # the names built on Hypothesis may need it, and only when asked for.
    code = (
        "import sys\n"
        "class NoHypothesis:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'hypothesis' or name.startswith('hypothesis.'):\n"
        "            raise ImportError('no hypothesis here')\n"
        "sys.meta_path.insert(0, NoHypothesis())\n"
        "import trioscope.testing, trioscope.testing._plugin\n"
        "assert 'hypothesis' not in sys.modules\n"
        "print(trioscope.testing.FaultSchedule(()))\n"
        "try:\n"
        "    trioscope.testing.ServiceStateMachine\n"
        "except ImportError as exc:\n"
        "    print('ImportError', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "FaultSchedule(())\nImportError no hypothesis here\n"
