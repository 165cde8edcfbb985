"""The config client: ``from trioscope.foundation import config``.

::

    import trio, trioscope
    from trioscope.foundation import config

    async def main() -> None:
        async with trioscope.open_registry(isolated=True), trioscope.open_supervisor(
            [config.config_spec(env={"TRIOSCOPE__EVENTS__MAX_EVENTS": "5000"})]
        ):
            assert config.get("events.max_events") == 5_000
            assert await config.update("events.max_age_s", 60.0) == 1
            assert config.snapshot().config.events.max_age_s == 60.0

    trio.run(main)

Every function resolves the config server (and its home) through the current
registry scope on every call: nothing is global, nothing cached across
scopes. See `trioscope.foundation._config` for the sources, their order and
the update rules.
"""

from ._config import DEFAULT_SUBSCRIBER_BUFFER as DEFAULT_SUBSCRIBER_BUFFER
from ._config import RETRY_RANDOM as RETRY_RANDOM
from ._config import ConfigChange as ConfigChange
from ._config import ConfigServer as ConfigServer
from ._config import ConfigSnapshot as ConfigSnapshot
from ._config import ConfigStatus as ConfigStatus
from ._config import config_spec as config_spec
from ._config import get as get
from ._config import reset as reset
from ._config import snapshot as snapshot
from ._config import status as status
from ._config import subscribe as subscribe
from ._config import updatable_paths as updatable_paths
from ._config import update as update
from ._settings import DEFAULT_ENV_PREFIX as DEFAULT_ENV_PREFIX
from ._settings import DEFAULT_ENV_SEPARATOR as DEFAULT_ENV_SEPARATOR
from ._settings import ConfigSettings as ConfigSettings
from ._settings import EventsSettings as EventsSettings
from ._settings import FoundationConfig as FoundationConfig
from ._settings import TelemetrySettings as TelemetrySettings
from ._settings import setting as setting

__all__ = [
    "DEFAULT_ENV_PREFIX",
    "DEFAULT_ENV_SEPARATOR",
    "DEFAULT_SUBSCRIBER_BUFFER",
    "RETRY_RANDOM",
    "ConfigChange",
    "ConfigServer",
    "ConfigSettings",
    "ConfigSnapshot",
    "ConfigStatus",
    "EventsSettings",
    "FoundationConfig",
    "TelemetrySettings",
    "config_spec",
    "get",
    "reset",
    "setting",
    "snapshot",
    "status",
    "subscribe",
    "updatable_paths",
    "update",
]
