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
crashes services at a given rate and reports what it did. See docs/testing.md.
"""

from .._fixup import fixup_module_metadata
from ._chaos import ChaosMonkey as ChaosMonkey
from ._chaos import ChaosRecord as ChaosRecord
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

__all__ = [
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
    "Leak",
    "LeakError",
    "LeakKind",
    "OpsMeasurement",
    "RunReport",
    "ScopeBody",
    "ServiceWaitTimeoutError",
    "SimulatedCrash",
    "TestScope",
    "assert_isolated",
    "measure_concurrent_ops",
    "open_test_scope",
    "run_concurrently",
    "simulate_crash",
    "wait_for_restart",
    "wait_for_service",
]

fixup_module_metadata(__name__, __all__, globals())
del fixup_module_metadata
