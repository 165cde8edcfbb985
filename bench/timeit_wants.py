"""What `trioscope._logging.wants` costs in the usual logging set-ups (timeit).

    python bench/timeit_wants.py

Each case configures the stdlib loggers of this process, then times
``wants(logging.getLogger("trioscope.supervisor"), logging.ERROR)`` (best of
several repeats, ns per call), beside ``isEnabledFor`` alone. The figures are
quoted in the docstring of `trioscope._logging.wants`.
"""

from __future__ import annotations

import io
import logging
import platform
import timeit
from collections.abc import Callable

from trioscope._logging import wants

LOGGER = logging.getLogger("trioscope.supervisor")
LIBRARY = logging.getLogger("trioscope")
ROOT = logging.getLogger()


def reset() -> None:
    for logger in (LOGGER, LIBRARY, ROOT):
        logger.handlers[:] = []
        logger.propagate = True
        logger.filters[:] = []
    LOGGER.setLevel(logging.NOTSET)
    LIBRARY.setLevel(logging.NOTSET)
    ROOT.setLevel(logging.WARNING)


def disabled_by_level() -> None:
    LIBRARY.setLevel(logging.CRITICAL + 1)


def null_handler() -> None:
    LIBRARY.addHandler(logging.NullHandler())
    LIBRARY.propagate = False


def no_handlers() -> None:
    pass  # logging.lastResort: ERROR goes to stderr


def stream_on_root() -> None:
    ROOT.addHandler(logging.StreamHandler(io.StringIO()))


CASES: dict[str, tuple[Callable[[], None], bool]] = {
    "logging disabled by level (isEnabledFor false)": (disabled_by_level, False),
    "a NullHandler on 'trioscope', propagate = False": (null_handler, False),
    "no handlers anywhere (logging.lastResort)": (no_handlers, True),
    "a StreamHandler on the root logger": (stream_on_root, True),
}


def best_ns(stmt: str, number: int = 200_000, repeat: int = 7) -> float:
    names = {"wants": wants, "logger": LOGGER, "level": logging.ERROR}
    return min(timeit.repeat(stmt, number=number, repeat=repeat, globals=names)) / number * 1e9


def main() -> None:
    print(f"CPython {platform.python_version()}, {platform.machine()}; ns per call, best of 7")
    for label, (setup, expected) in CASES.items():
        reset()
        setup()
        assert wants(LOGGER, logging.ERROR) is expected, label
        enabled = best_ns("logger.isEnabledFor(level)")
        took = best_ns("wants(logger, level)")
        print(f"- {label}: wants {took:.0f} ns (isEnabledFor alone {enabled:.0f} ns)")
    reset()


if __name__ == "__main__":
    main()
