"""trioscope: Erlang/OTP's fault-tolerance model for Trio.

Supervisors are nurseries with restart strategies, services talk over bounded
memory channels with backpressure, and registries are bound to ``async with``
scopes, so test isolation falls out of nesting scopes. Everything public is
re-exported here; the implementation lives in private modules.
"""

from . import telemetry as telemetry
from ._app import run as run
from ._app import serve as serve
from ._child_spec import DEFAULT_SHUTDOWN_S as DEFAULT_SHUTDOWN_S
from ._child_spec import Backoff as Backoff
from ._child_spec import ChildSpec as ChildSpec
from ._child_spec import Restart as Restart
from ._correlation import correlate as correlate
from ._correlation import current_correlation_id as current_correlation_id
from ._errors import AlreadyRegisteredError as AlreadyRegisteredError
from ._errors import CallingSelfError as CallingSelfError
from ._errors import CallTimeoutError as CallTimeoutError
from ._errors import ChildStateError as ChildStateError
from ._errors import MailboxFullError as MailboxFullError
from ._errors import MaxChildrenError as MaxChildrenError
from ._errors import NoRegistryError as NoRegistryError
from ._errors import Rejected as Rejected
from ._errors import RestartIntensityExceededError as RestartIntensityExceededError
from ._errors import ServiceCrashedError as ServiceCrashedError
from ._errors import ServiceUnavailableError as ServiceUnavailableError
from ._errors import StartError as StartError
from ._errors import SupervisorClosedError as SupervisorClosedError
from ._errors import TrioscopeError as TrioscopeError
from ._errors import UnknownChildError as UnknownChildError
from ._fixup import fixup_module_metadata
from ._monitor import Down as Down
from ._monitor import Monitor as Monitor
from ._monitor import monitor as monitor
from ._names import NameRef as NameRef
from ._names import by_name as by_name
from ._names import call as call
from ._names import cast as cast
from ._names import wait_for_service as wait_for_service
from ._names import whereis as whereis
from ._registry import Registry as Registry
from ._registry import current_registry as current_registry
from ._registry import open_registry as open_registry
from ._service import DEFAULT_CALL_TIMEOUT_S as DEFAULT_CALL_TIMEOUT_S
from ._service import DEFAULT_MAILBOX_SIZE as DEFAULT_MAILBOX_SIZE
from ._service import Deferred as Deferred
from ._service import Health as Health
from ._service import Service as Service
from ._service import ServiceRef as ServiceRef
from ._service import ServiceStatistics as ServiceStatistics
from ._service import Timer as Timer
from ._supervisor import ChildCounts as ChildCounts
from ._supervisor import ChildInfo as ChildInfo
from ._supervisor import Strategy as Strategy
from ._supervisor import Supervisor as Supervisor
from ._supervisor import dynamic_supervisor_spec as dynamic_supervisor_spec
from ._supervisor import open_dynamic_supervisor as open_dynamic_supervisor
from ._supervisor import open_supervisor as open_supervisor
from ._supervisor import supervisor_spec as supervisor_spec
from ._supervisor import whereis_supervisor as whereis_supervisor
from ._task_supervisor import TaskInfo as TaskInfo
from ._task_supervisor import TaskSupervisor as TaskSupervisor
from ._task_supervisor import open_task_supervisor as open_task_supervisor
from ._task_supervisor import task_supervisor_spec as task_supervisor_spec
from ._task_supervisor import whereis_task_supervisor as whereis_task_supervisor

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_CALL_TIMEOUT_S",
    "DEFAULT_MAILBOX_SIZE",
    "DEFAULT_SHUTDOWN_S",
    "AlreadyRegisteredError",
    "Backoff",
    "CallTimeoutError",
    "CallingSelfError",
    "ChildCounts",
    "ChildInfo",
    "ChildSpec",
    "ChildStateError",
    "Deferred",
    "Down",
    "Health",
    "MailboxFullError",
    "MaxChildrenError",
    "Monitor",
    "NameRef",
    "NoRegistryError",
    "Registry",
    "Rejected",
    "Restart",
    "RestartIntensityExceededError",
    "Service",
    "ServiceCrashedError",
    "ServiceRef",
    "ServiceStatistics",
    "ServiceUnavailableError",
    "StartError",
    "Strategy",
    "Supervisor",
    "SupervisorClosedError",
    "TaskInfo",
    "TaskSupervisor",
    "Timer",
    "TrioscopeError",
    "UnknownChildError",
    "by_name",
    "call",
    "cast",
    "correlate",
    "current_correlation_id",
    "current_registry",
    "dynamic_supervisor_spec",
    "monitor",
    "open_dynamic_supervisor",
    "open_registry",
    "open_supervisor",
    "open_task_supervisor",
    "run",
    "serve",
    "supervisor_spec",
    "task_supervisor_spec",
    "wait_for_service",
    "whereis",
    "whereis_supervisor",
    "whereis_task_supervisor",
]


fixup_module_metadata(__name__, __all__, globals())
del fixup_module_metadata
