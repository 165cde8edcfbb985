"""The example programs run as written and show what their docstrings promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_supervised_app_demo_recovers_from_a_crash() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "supervised_app.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    answers = [line.split("< ", 1)[1] for line in lines if "< " in line]
    assert answers == [
        "HELLO (#1)",
        "SUPERVISED (#2)",
        "rejected: empty line",
        "error: the worker crashed (asked to crash); it is being restarted",
        "WORLD (#1)",  # a fresh incarnation: its count started over
    ]
    assert "worker 'upper' is running after 1 restart(s)" in lines
    assert lines[-1] == "stopped in order; bye"
    # The crash was reported by the service and by its supervisor, once each.
    assert result.stderr.count("crashed in convert('crash')") == 1
    assert result.stderr.count("child 'upper' exited with RuntimeError") == 1


def _foundation_app(*args: str) -> list[str]:
    return _quiet_example("foundation_app.py", *args)


def _quiet_example(name: str, *args: str) -> list[str]:
    """Run examples/*name* (no TRIOSCOPE__ settings); it must exit 0 and write no stderr."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRIOSCOPE__")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def test_foundation_app_changes_config_and_queries_correlated_events() -> None:
    assert _foundation_app() == [
        "events kept: up to 100000",
        "  config v1: events.max_events 100000 -> 50000",
        "order-1, cause before effect:",
        "  #1 order.placed {'items': ['tea', 'cups']} (parent None)",
        "  #2 item.reserved {'item': 'tea'} (parent 1)",
        "  #3 item.reserved {'item': 'cups'} (parent 2)",
        "  #4 order.paid {} (parent 3)",
        "latest payment: order-2",
        "recorded change: events.max_events = 50000",
        "events stored: 8, kept up to 50000",
        "stopped in order; bye",
    ]


def test_foundation_app_with_sqlite_finds_the_previous_runs_events(tmp_path: Path) -> None:
    db = str(tmp_path / "events.db")
    _foundation_app("--db", db)
    lines = _foundation_app("--db", db)
    assert lines[1] == "orders from earlier runs: 2"
    assert lines[3:5] == [
        "order-3, cause before effect:",
        "  #9 order.placed {'items': ['tea', 'cups']} (parent None)",
    ]
    assert lines[-2] == "events stored: 16, kept up to 50000"


def test_observed_app_prints_the_crash_trail_of_one_request_and_the_metrics() -> None:
    lines = _quiet_example("observed_app.py")
    start = lines.index("crash trail of order-2:")
    end = lines.index("metrics:")
    trail = [line.split(" ", 3)[3] for line in lines[start + 1 : end]]
    # The ids follow the store's order: 1-4 are order-1's events.
    assert [line.split(" ", 3)[2] for line in lines[start + 1 : end]] == [
        f"#{n}" for n in range(5, 13)
    ]
    paths = [
        # The stock service's crash and its supervisor's restart...
        [
            "order.placed: {'items': ['kettle', 'teapot']}",
            "item.reserved: {'item': 'kettle', 'left': 0}",
            "trioscope.crash: 'stock'.reserve raised builtins.KeyError",
            "trioscope.child.exit: warehouse/stock exited",
            "trioscope.child.restart: warehouse restarts stock",
        ],
        # ...and, concurrently, the caller it took down with it.
        [
            "trioscope.crash: 'stock'.reserve raised builtins.KeyError",
            "trioscope.crash: 'orders'.place raised trioscope.ServiceCrashedError",
            "trioscope.child.exit: shop/orders exited",
            "trioscope.child.restart: shop restarts orders",
        ],
    ]
    assert sorted(trail) == sorted(set(paths[0] + paths[1]))
    for path in paths:
        positions = [trail.index(step) for step in path]
        assert positions == sorted(positions)
    assert lines[:start] == [
        "order-1 placed",
        "config changed at run time: events.max_events = 50000",
        "order-2 failed: service 'orders' crashed in handler place() while handling this call "
        "(the original error is the __cause__); its supervisor decides whether it restarts",
        "order-3 placed: the tree recovered",
    ]
    assert lines[end:] == [
        "metrics:",
        "  trioscope.call.stop.count{name=orders, handler=place} = 2",
        "  trioscope.call.stop.count{name=stock, handler=reserve} = 4",
        "  trioscope.call.exception.count{name=orders, handler=place, kind=crash} = 1",
        "  trioscope.call.exception.count{name=stock, handler=reserve, kind=crash} = 1",
        "  trioscope.child.restart.count{supervisor=shop, child=orders} = 1",
        "  trioscope.child.restart.count{supervisor=warehouse, child=stock} = 1",
        "  trioscope.config.update.count{path=events.max_events} = 1",
        "  orders.place calls: 2 (p50/p99 in the Prometheus text)",
        "foundation health: healthy (config healthy, events healthy, telemetry healthy)",
        "prometheus sample:",
        '  trioscope_child_restart_count_total{supervisor="shop",child="orders"} 1',
        '  trioscope_child_restart_count_total{supervisor="warehouse",child="stock"} 1',
        "stopped in order; bye",
    ]
