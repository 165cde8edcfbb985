"""Whether a log record would do anything, so that crash reports are built only then.

Supervisors and services report every crash and every restart: the record
carries the child's id, the request that failed (formatted) and the
exception, whose traceback keeps the crashed frames alive until the record
is gone. `logging.Logger.isEnabledFor` only looks at levels, and the usual
way for a library's user to silence it, a `logging.NullHandler` (with
``propagate = False``), leaves every level enabled: stdlib `logging` then
builds each `logging.LogRecord` (and runs the caller's formatting) only to
hand it to a handler that throws it away. On a restart that was about 15 µs
of 85 µs (docs/performance.md). `wants` answers the question `Logger.callHandlers`
would answer by doing the work, without doing it, so a caller can write::

    if wants(_log, logging.ERROR):
        _log.error("child %r crashed: %s", child_id, describe(request), exc_info=exc)
"""

from __future__ import annotations

import logging

__all__ = ["wants"]

# NullHandler.handle is a stub that neither filters, locks nor emits (unlike
# Handler.handle); a handler whose class keeps it does nothing at all.
_NULL_HANDLE = logging.NullHandler.handle


def wants(logger: logging.Logger, level: int) -> bool:
    """Whether a record at *level* logged on *logger* would reach a handler that does anything.

    It follows what ``logger.log(level, ...)`` does (`Logger.isEnabledFor`,
    `Logger.handle`, `Logger.callHandlers`), answering:

    - ``False`` if ``logger.isEnabledFor(level)`` is false (its effective
      level, `logging.disable` and ``logger.disabled``);
    - ``True`` if *logger* itself has filters: they run on every record it
      handles and may have side effects (count, enrich, forward), so the
      record must be built (conservative even when a filter would drop it);
    - otherwise it walks the handlers of *logger*, then of its parents while
      ``propagate`` is true: ``True`` at the first handler whose level admits
      *level* and that is not a `logging.NullHandler` (any class that keeps
      NullHandler's ``handle``, which does nothing, not even run the handler's
      filters). Such a handler's own filters do not change the answer: it is
      ``True`` even if they would drop the record (conservative). Filters on
      parent loggers are ignored, as stdlib `logging` ignores them for
      records propagated from a child;
    - ``False`` if handlers were found but none of them qualifies (all are
      NullHandlers, or their levels are above *level*);
    - if no handler at all was found, what `Logger.callHandlers` does then:
      with `logging.lastResort` (by default a handler that writes WARNING and
      above to stderr), ``True`` exactly when *level* reaches its level;
      with ``logging.lastResort = None``, ``True`` while the one-off "No
      handlers could be found" message is still to be written.

    pytest's ``caplog`` (a ``LogCaptureHandler`` on the root logger) counts as
    a real handler.

    It is cheap next to the record it saves (about 15 µs of a restart). Best
    of 7 `timeit` repeats of ``wants(logging.getLogger("trioscope.supervisor"),
    logging.ERROR)`` on CPython 3.11 and 3.13 (2-CPU VM; ``python
    bench/timeit_wants.py``), ``isEnabledFor`` alone being 70 ns:

    - about 0.1 µs (105-115 ns) when ``trioscope`` is set above ERROR;
    - about 0.3 µs (295-335 ns) with a NullHandler on ``trioscope`` and
      ``propagate = False`` (what a quiet application configures);
    - about 0.4 µs (370-420 ns) with a StreamHandler on the root logger;
    - about 0.5 µs (460-525 ns) with no handlers anywhere (lastResort).
    """
    if not logger.isEnabledFor(level):
        return False
    if logger.filters:
        return True
    found = False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            found = True
            if level >= handler.level and type(handler).handle is not _NULL_HANDLE:
                return True
        if not current.propagate:
            break
        current = current.parent
    if found:
        return False
    last = logging.lastResort
    if last is None:
        return logging.raiseExceptions and not logger.manager.emittedNoHandlerWarning
    return level >= last.level and type(last).handle is not _NULL_HANDLE
