"""The ElixirScope Foundation layer on trioscope's core: config server, event store, telemetry.

Every client function resolves its service through the current registry
scope, so a test that opens an isolated scope and starts the foundation in it
talks only to its own instances, side effects included. The public names are
re-exported here; the implementation lives in private modules.
"""

from .._fixup import fixup_module_metadata
from . import config as config
from . import events as events
from . import telemetry as telemetry
from ._config import ConfigChange as ConfigChange
from ._config import ConfigServer as ConfigServer
from ._config import ConfigSnapshot as ConfigSnapshot
from ._config import ConfigStatus as ConfigStatus
from ._config import config_spec as config_spec
from ._errors import ConfigRejected as ConfigRejected
from ._errors import ConfigUpdateTimeoutError as ConfigUpdateTimeoutError
from ._errors import EventBufferFullError as EventBufferFullError
from ._errors import EventQueryRejected as EventQueryRejected
from ._errors import EventRejected as EventRejected
from ._errors import IncompatibleDatabaseError as IncompatibleDatabaseError
from ._errors import SubscriptionOverflowError as SubscriptionOverflowError
from ._errors import UnknownConfigPathError as UnknownConfigPathError
from ._event import JSON as JSON
from ._event import Backend as Backend
from ._event import Event as Event
from ._event import Recovered as Recovered
from ._events import EventBufferStatistics as EventBufferStatistics
from ._events import EventStore as EventStore
from ._events import EventStoreSettings as EventStoreSettings
from ._events import EventStoreStats as EventStoreStats
from ._events import event_store_spec as event_store_spec
from ._events import truncate_data as truncate_data
from ._foundation import FOUNDATION_SERVICES as FOUNDATION_SERVICES
from ._foundation import FoundationHealth as FoundationHealth
from ._foundation import foundation_spec as foundation_spec
from ._foundation import health as health
from ._foundation import open_foundation as open_foundation
from ._memory import MemoryBackend as MemoryBackend
from ._settings import ConfigSettings as ConfigSettings
from ._settings import EventsSettings as EventsSettings
from ._settings import FoundationConfig as FoundationConfig
from ._settings import TelemetrySettings as TelemetrySettings
from ._settings import setting as setting
from ._sqlite import SQLiteBackend as SQLiteBackend
from ._subscription import Subscription as Subscription
from ._subscription import SubscriptionStatistics as SubscriptionStatistics
from ._telemetry import DistributionSummary as DistributionSummary
from ._telemetry import Metric as Metric
from ._telemetry import MetricSnapshot as MetricSnapshot
from ._telemetry import MetricsSnapshot as MetricsSnapshot
from ._telemetry import SeriesSnapshot as SeriesSnapshot
from ._telemetry import TelemetryService as TelemetryService
from ._telemetry import TelemetryStatus as TelemetryStatus
from ._telemetry import telemetry_spec as telemetry_spec

__all__ = [
    "FOUNDATION_SERVICES",
    "JSON",
    "Backend",
    "ConfigChange",
    "ConfigRejected",
    "ConfigServer",
    "ConfigSettings",
    "ConfigSnapshot",
    "ConfigStatus",
    "ConfigUpdateTimeoutError",
    "DistributionSummary",
    "Event",
    "EventBufferFullError",
    "EventBufferStatistics",
    "EventQueryRejected",
    "EventRejected",
    "EventStore",
    "EventStoreSettings",
    "EventStoreStats",
    "EventsSettings",
    "FoundationConfig",
    "FoundationHealth",
    "IncompatibleDatabaseError",
    "MemoryBackend",
    "Metric",
    "MetricSnapshot",
    "MetricsSnapshot",
    "Recovered",
    "SQLiteBackend",
    "SeriesSnapshot",
    "Subscription",
    "SubscriptionOverflowError",
    "SubscriptionStatistics",
    "TelemetryService",
    "TelemetrySettings",
    "TelemetryStatus",
    "UnknownConfigPathError",
    "config",
    "config_spec",
    "event_store_spec",
    "events",
    "foundation_spec",
    "health",
    "open_foundation",
    "setting",
    "telemetry",
    "telemetry_spec",
    "truncate_data",
]


fixup_module_metadata(__name__, __all__, globals())
del fixup_module_metadata
