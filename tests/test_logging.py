"""`trioscope._logging.wants`: each branch, checked against what stdlib logging really does.

Most tests build a private logger hierarchy (its own `logging.Manager` and
root), so that the handlers pytest puts on the real root logger do not leak
in; the caplog tests use the real hierarchy on purpose.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import pytest

from trioscope._logging import wants

Hierarchy = Callable[[str], logging.Logger]


@pytest.fixture
def manager() -> logging.Manager:
    root = logging.RootLogger(logging.WARNING)
    mgr = logging.Manager(root)
    root.manager = mgr
    return mgr


@pytest.fixture
def get_logger(manager: logging.Manager) -> Hierarchy:
    """``getLogger`` for the private hierarchy; ``""`` is its root."""

    def get(name: str) -> logging.Logger:
        return manager.root if name == "" else manager.getLogger(name)

    return get


class Recorder(logging.Handler):
    """A real handler: keeps what it is given."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class CountingFilter(logging.Filter):
    """A filter with a side effect; drops every record unless told otherwise."""

    def __init__(self, allow: bool = False) -> None:
        super().__init__()
        self.calls = 0
        self.allow = allow

    def filter(self, record: logging.LogRecord) -> bool:
        self.calls += 1
        return self.allow


def quiet_library(get_logger: Hierarchy) -> logging.Logger:
    """``lib.child`` under ``lib``, which has only a NullHandler and does not propagate."""
    lib = get_logger("lib")
    lib.addHandler(logging.NullHandler())
    lib.propagate = False
    return get_logger("lib.child")


# -- isEnabledFor --------------------------------------------------------------------


def test_false_below_the_effective_level(get_logger: Hierarchy) -> None:
    logger = get_logger("lib")
    logger.addHandler(Recorder())
    logger.setLevel(logging.ERROR)
    assert not wants(logger, logging.WARNING)
    assert wants(logger, logging.ERROR)


def test_false_when_the_logger_is_disabled(get_logger: Hierarchy) -> None:
    logger = get_logger("lib")
    logger.addHandler(Recorder())
    logger.disabled = True
    assert not wants(logger, logging.CRITICAL)


def test_false_under_logging_disable(manager: logging.Manager, get_logger: Hierarchy) -> None:
    logger = get_logger("lib")
    logger.addHandler(Recorder())
    manager.disable = logging.ERROR  # what logging.disable(ERROR) sets, before any lookup
    assert not wants(logger, logging.ERROR)
    assert wants(logger, logging.CRITICAL)


def test_level_check_comes_before_the_logger_filters(get_logger: Hierarchy) -> None:
    logger = get_logger("lib")
    spy = CountingFilter()
    logger.addFilter(spy)
    logger.setLevel(logging.ERROR)
    assert not wants(logger, logging.WARNING)
    logger.warning("dropped by level")
    assert spy.calls == 0  # stdlib never runs the filter either


# -- filters on the logger -------------------------------------------------------------


def test_true_when_the_logger_has_filters_even_if_only_null_handlers(
    get_logger: Hierarchy,
) -> None:
    logger = quiet_library(get_logger)
    spy = CountingFilter(allow=False)
    logger.addFilter(spy)
    assert wants(logger, logging.ERROR)  # conservative: the filter runs on every record
    logger.error("seen by the filter")
    assert spy.calls == 1


def test_filters_on_parent_loggers_are_ignored_as_stdlib_ignores_them(
    get_logger: Hierarchy,
) -> None:
    logger = quiet_library(get_logger)
    spy = CountingFilter(allow=True)
    get_logger("lib").addFilter(spy)
    assert not wants(logger, logging.ERROR)
    logger.error("propagated past the parent's filter")
    assert spy.calls == 0


# -- handlers along the chain ------------------------------------------------------------


def test_false_with_only_a_null_handler_that_does_not_propagate(get_logger: Hierarchy) -> None:
    logger = quiet_library(get_logger)
    get_logger("").addHandler(Recorder())  # not reached: lib does not propagate
    assert not wants(logger, logging.ERROR)


def test_false_with_null_handlers_all_the_way_up(get_logger: Hierarchy) -> None:
    get_logger("lib").addHandler(logging.NullHandler())
    get_logger("").addHandler(logging.NullHandler())
    assert not wants(get_logger("lib.child"), logging.CRITICAL)


def test_true_with_a_real_handler_on_the_logger_itself(get_logger: Hierarchy) -> None:
    logger = get_logger("lib")
    logger.addHandler(logging.NullHandler())
    logger.addHandler(Recorder())
    logger.propagate = False
    assert wants(logger, logging.ERROR)


def test_true_with_a_stream_handler_on_the_root(get_logger: Hierarchy) -> None:
    get_logger("lib").addHandler(logging.NullHandler())  # propagates
    stream = io.StringIO()
    get_logger("").addHandler(logging.StreamHandler(stream))
    logger = get_logger("lib.child")
    assert wants(logger, logging.ERROR)
    logger.error("reaches the root")
    assert "reaches the root" in stream.getvalue()


def test_propagate_false_in_the_middle_stops_the_walk(
    get_logger: Hierarchy, capsys: pytest.CaptureFixture[str]
) -> None:
    on_root = Recorder()
    get_logger("").addHandler(on_root)
    get_logger("a.b").propagate = False
    logger = get_logger("a.b.c")
    logger.setLevel(logging.DEBUG)
    # No handler on a.b.c or a.b: the root's is never reached, so lastResort decides.
    assert wants(logger, logging.WARNING)
    assert not wants(logger, logging.INFO)
    logger.info("nowhere")
    logger.warning("to lastResort")
    assert on_root.records == []
    assert capsys.readouterr().err == "to lastResort\n"
    get_logger("a.b").addHandler(logging.NullHandler())
    assert not wants(logger, logging.WARNING)
    get_logger("a").addHandler(Recorder())  # above the stop: never reached
    assert not wants(logger, logging.WARNING)
    get_logger("a.b").propagate = True
    assert wants(logger, logging.WARNING)


def test_handler_levels_are_respected(get_logger: Hierarchy) -> None:
    logger = get_logger("lib")
    logger.setLevel(logging.DEBUG)
    recorder = Recorder(level=logging.ERROR)
    logger.addHandler(recorder)
    assert wants(logger, logging.ERROR)  # equal to the handler's level: admitted
    assert wants(logger, logging.CRITICAL)
    assert not wants(logger, logging.WARNING)
    assert not wants(logger, logging.DEBUG)
    logger.warning("below the handler")
    assert recorder.records == []


def test_a_handler_above_the_level_hides_last_resort(
    get_logger: Hierarchy, capsys: pytest.CaptureFixture[str]
) -> None:
    # A handler was found, so callHandlers does not fall back to lastResort,
    # even though that handler does not take the record.
    logger = get_logger("lib")
    logger.addHandler(Recorder(level=logging.CRITICAL))
    assert not wants(logger, logging.WARNING)
    logger.warning("goes nowhere")
    assert capsys.readouterr().err == ""


def test_a_notset_handler_takes_every_level(get_logger: Hierarchy) -> None:
    logger = get_logger("lib")
    logger.setLevel(1)
    logger.addHandler(Recorder())
    assert wants(logger, 1)


def test_a_level_filtered_real_handler_next_to_a_null_handler(get_logger: Hierarchy) -> None:
    logger = get_logger("lib")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(logging.NullHandler())
    get_logger("").addHandler(Recorder(level=logging.WARNING))
    assert not wants(logger, logging.INFO)
    assert wants(logger, logging.WARNING)


# -- what counts as a NullHandler ----------------------------------------------------------


def test_a_null_handler_subclass_that_keeps_its_handle_does_nothing(get_logger: Hierarchy) -> None:
    class Quiet(logging.NullHandler):
        def emit(self, record: logging.LogRecord) -> None:
            raise AssertionError("never called: NullHandler.handle is a stub")

    logger = get_logger("lib")
    logger.addHandler(Quiet())
    assert not wants(logger, logging.ERROR)
    logger.error("dropped")


def test_a_null_handler_subclass_that_overrides_handle_counts(get_logger: Hierarchy) -> None:
    seen: list[logging.LogRecord] = []

    class Loud(logging.NullHandler):
        def handle(self, record: logging.LogRecord) -> bool:
            seen.append(record)
            return True

    logger = get_logger("lib")
    logger.addHandler(Loud())
    assert wants(logger, logging.ERROR)
    logger.error("kept")
    assert len(seen) == 1


def test_filters_on_a_null_handler_never_run_so_they_do_not_count(get_logger: Hierarchy) -> None:
    logger = get_logger("lib")
    handler = logging.NullHandler()
    spy = CountingFilter(allow=True)
    handler.addFilter(spy)
    logger.addHandler(handler)
    assert not wants(logger, logging.ERROR)
    logger.error("dropped")
    assert spy.calls == 0


def test_a_real_handler_whose_filter_drops_everything_still_counts(get_logger: Hierarchy) -> None:
    logger = get_logger("lib")
    recorder = Recorder()
    spy = CountingFilter(allow=False)
    recorder.addFilter(spy)
    logger.addHandler(recorder)
    assert wants(logger, logging.ERROR)  # conservative: the filter has to see the record
    logger.error("filtered")
    assert (spy.calls, recorder.records) == (1, [])


# -- no handler at all: logging.lastResort ---------------------------------------------------


def test_no_handlers_warning_and_above_go_to_last_resort(
    get_logger: Hierarchy, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = get_logger("lib.child")
    logger.setLevel(logging.DEBUG)
    assert logging.lastResort is not None
    assert logging.lastResort.level == logging.WARNING
    assert wants(logger, logging.WARNING)
    assert wants(logger, logging.ERROR)
    assert not wants(logger, logging.INFO)
    logger.info("not written")
    logger.warning("written by lastResort")
    assert capsys.readouterr().err == "written by lastResort\n"


def test_no_handlers_with_a_stricter_last_resort(
    get_logger: Hierarchy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging, "lastResort", Recorder(level=logging.ERROR))
    logger = get_logger("lib")
    assert not wants(logger, logging.WARNING)
    assert wants(logger, logging.ERROR)


def test_no_handlers_and_a_null_last_resort(
    get_logger: Hierarchy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging, "lastResort", logging.NullHandler())
    assert not wants(get_logger("lib"), logging.CRITICAL)


def test_no_handlers_and_no_last_resort_until_the_one_off_message(
    get_logger: Hierarchy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logging, "lastResort", None)
    monkeypatch.setattr(logging, "raiseExceptions", True)
    logger = get_logger("lib")
    assert wants(logger, logging.WARNING)  # the one-off message is still to be written
    logger.warning("not written itself")
    assert capsys.readouterr().err == 'No handlers could be found for logger "lib"\n'
    assert not wants(logger, logging.WARNING)
    logger.warning("nothing at all now")
    assert capsys.readouterr().err == ""


def test_no_handlers_no_last_resort_and_raise_exceptions_off(
    get_logger: Hierarchy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging, "lastResort", None)
    monkeypatch.setattr(logging, "raiseExceptions", False)
    assert not wants(get_logger("lib"), logging.CRITICAL)


# -- pytest's caplog, on the real hierarchy ------------------------------------------------------


def test_caplog_counts_as_a_real_handler(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.test_logging.caplog")
    with caplog.at_level(logging.INFO, logger=logger.name):
        assert wants(logger, logging.INFO)
        logger.info("captured")
    assert [r.getMessage() for r in caplog.records] == ["captured"]


def test_caplog_is_not_reached_past_propagate_false(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.test_logging.quiet")
    null = logging.NullHandler()
    logger.addHandler(null)
    logger.propagate = False
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            assert not wants(logger, logging.ERROR)
            logger.addHandler(caplog.handler)
            try:
                assert wants(logger, logging.ERROR)
            finally:
                logger.removeHandler(caplog.handler)
    finally:
        logger.removeHandler(null)
        logger.propagate = True
