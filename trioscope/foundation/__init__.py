"""The ElixirScope Foundation layer on trioscope's core: config server and event store.

Every client function resolves its service through the current registry
scope, so a test that opens an isolated scope and starts the foundation in it
talks only to its own instances, side effects included. The public names are
re-exported here; the implementation lives in private modules.
"""

from ._errors import ConfigRejected as ConfigRejected
from ._errors import ConfigUpdateTimeoutError as ConfigUpdateTimeoutError
from ._errors import EventBufferFullError as EventBufferFullError
from ._errors import EventRejected as EventRejected
from ._errors import SubscriptionOverflowError as SubscriptionOverflowError
from ._errors import UnknownConfigPathError as UnknownConfigPathError
from ._event import JSON as JSON
from ._event import Backend as Backend
from ._event import Event as Event
from ._event import Recovered as Recovered
from ._subscription import Subscription as Subscription
from ._subscription import SubscriptionStatistics as SubscriptionStatistics

__all__ = [
    "JSON",
    "Backend",
    "ConfigRejected",
    "ConfigUpdateTimeoutError",
    "Event",
    "EventBufferFullError",
    "EventRejected",
    "Recovered",
    "Subscription",
    "SubscriptionOverflowError",
    "SubscriptionStatistics",
    "UnknownConfigPathError",
]


def _fixup_module_metadata() -> None:
    # Tracebacks and reprs say trioscope.foundation.Event, not ..._event.Event.
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("trioscope.foundation._"):
            try:
                obj.__module__ = __name__
            except (AttributeError, TypeError):
                continue
            if isinstance(obj, type):
                obj.__qualname__ = name


_fixup_module_metadata()
del _fixup_module_metadata
