"""trioscope as a test harness for concurrent Trio code.

Installing trioscope registers its pytest plugin (the ``pytest11`` entry point
``trioscope``): a test asks for its own isolated, leak-checked scope by name
(the ``trioscope_scope`` fixture, or ``foundation`` for one with the whole
foundation started in it) or with the ``@pytest.mark.trioscope_scope``
marker. Nothing is autouse: a test that asks for no scope sees none.

Outside pytest, `open_test_scope` gives the same scope to any Trio code. The
helpers wait without polling and report exactly: `wait_for_service`,
`wait_for_restart`, `simulate_crash`, `assert_isolated`,
`measure_concurrent_ops`; `run_concurrently` runs many isolated bodies at
once in one Trio run (ExUnit's ``async: true``); a seeded `ChaosMonkey`
crashes services at a given rate and reports what it did.

Fault schedules (`FaultSchedule`, `Fault`) crash, hang, slow or stall a named
service at its k-th message, or jump the clock there; `fault_schedules` is the
Hypothesis strategy that draws and shrinks them, and `run_with_faults` replays
one exactly. `ServiceStateMachine` tests a `trioscope.Service` against a
plain-Python model under a real supervisor; `operations`,
`operation_sequences` and `check_against_model` do the same for drawn
sequences of calls. These last names need Hypothesis (``pip install
trioscope[testing]``) and are imported on first use, so the pytest plugin
never needs it. See docs/testing.md.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from .._fixup import fixup_module_metadata as _fixup
from ._chaos import ChaosMonkey as ChaosMonkey
from ._chaos import ChaosRecord as ChaosRecord
from ._faults import Fault as Fault
from ._faults import FaultKind as FaultKind
from ._faults import FaultRun as FaultRun
from ._faults import FaultSchedule as FaultSchedule
from ._faults import FiredFault as FiredFault
from ._faults import InjectedFault as InjectedFault
from ._faults import fault_schedules as fault_schedules
from ._faults import run_with_faults as run_with_faults
from ._helpers import DEFAULT_WAIT_S as DEFAULT_WAIT_S
from ._helpers import CrashAction as CrashAction
from ._helpers import CrashNotReachedError as CrashNotReachedError
from ._helpers import CrashOutcome as CrashOutcome
from ._helpers import OpsMeasurement as OpsMeasurement
from ._helpers import ServiceWaitTimeoutError as ServiceWaitTimeoutError
from ._helpers import SimulatedCrash as SimulatedCrash
from ._helpers import assert_isolated as assert_isolated
from ._helpers import measure_concurrent_ops as measure_concurrent_ops
from ._helpers import simulate_crash as simulate_crash
from ._helpers import wait_for_restart as wait_for_restart
from ._helpers import wait_for_service as wait_for_service
from ._runner import BodiesFailedError as BodiesFailedError
from ._runner import BodyOutcome as BodyOutcome
from ._runner import BodyResult as BodyResult
from ._runner import BodyTimeoutError as BodyTimeoutError
from ._runner import RunReport as RunReport
from ._runner import ScopeBody as ScopeBody
from ._runner import run_concurrently as run_concurrently
from ._scope import Leak as Leak
from ._scope import LeakError as LeakError
from ._scope import LeakKind as LeakKind
from ._scope import TestScope as TestScope
from ._scope import open_test_scope as open_test_scope

if _TYPE_CHECKING:
    from ._stateful import DEFAULT_OPERATION_TIMEOUT_S as DEFAULT_OPERATION_TIMEOUT_S
    from ._stateful import ModelMismatchError as ModelMismatchError
    from ._stateful import Operation as Operation
    from ._stateful import OperationResult as OperationResult
    from ._stateful import OperationTimeoutError as OperationTimeoutError
    from ._stateful import RestartRecord as RestartRecord
    from ._stateful import ServiceStateMachine as ServiceStateMachine
    from ._stateful import TraceEvent as TraceEvent
    from ._stateful import apply_operations as apply_operations
    from ._stateful import check_against_model as check_against_model
    from ._stateful import operation_sequences as operation_sequences
    from ._stateful import operations as operations

# Built on Hypothesis (a RuleBasedStateMachine): imported when first asked for.
_STATEFUL = (
    "DEFAULT_OPERATION_TIMEOUT_S",
    "ModelMismatchError",
    "Operation",
    "OperationResult",
    "OperationTimeoutError",
    "RestartRecord",
    "ServiceStateMachine",
    "TraceEvent",
    "apply_operations",
    "check_against_model",
    "operation_sequences",
    "operations",
)

__all__ = [
    "DEFAULT_OPERATION_TIMEOUT_S",
    "DEFAULT_WAIT_S",
    "BodiesFailedError",
    "BodyOutcome",
    "BodyResult",
    "BodyTimeoutError",
    "ChaosMonkey",
    "ChaosRecord",
    "CrashAction",
    "CrashNotReachedError",
    "CrashOutcome",
    "Fault",
    "FaultKind",
    "FaultRun",
    "FaultSchedule",
    "FiredFault",
    "InjectedFault",
    "Leak",
    "LeakError",
    "LeakKind",
    "ModelMismatchError",
    "Operation",
    "OperationResult",
    "OperationTimeoutError",
    "OpsMeasurement",
    "RestartRecord",
    "RunReport",
    "ScopeBody",
    "ServiceStateMachine",
    "ServiceWaitTimeoutError",
    "SimulatedCrash",
    "TestScope",
    "TraceEvent",
    "apply_operations",
    "assert_isolated",
    "check_against_model",
    "fault_schedules",
    "measure_concurrent_ops",
    "open_test_scope",
    "operation_sequences",
    "operations",
    "run_concurrently",
    "run_with_faults",
    "simulate_crash",
    "wait_for_restart",
    "wait_for_service",
]

_fixup(__name__, [n for n in __all__ if n not in _STATEFUL], globals())


def __getattr__(name: str) -> object:
    if name not in _STATEFUL:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import _stateful

    namespace = globals()
    for public in _STATEFUL:
        namespace[public] = getattr(_stateful, public)
    _fixup(__name__, _STATEFUL, namespace)
    return namespace[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
