"""Instructions per call and per restart, counted by valgrind: two source trees compared.

    python bench/instructions.py                      # HEAD against 1a31f91 (before telemetry)
    python bench/instructions.py --revs HEAD 8ff278e  # any two (or more) revisions
    python bench/instructions.py --revs . 1a31f91     # "." is the working tree as it is
    python bench/instructions.py --scenarios by_name --modes none,service

Wall-clock figures on the 2-CPU VM this project is measured on drift by
±20-50% between runs, so a 5% limit cannot be judged by them. Instructions
do not depend on load: each scenario runs under ``valgrind --tool=cachegrind
--cache-sim=no`` twice, with N=500 and N=2,500 operations, and the
difference of the two counts divided by 2,000 is the instructions one
operation costs (start-up, imports and setup cancel out).

Scenarios (the loops of ``bench/scope.py`` without their clocks):

- ``by_name``: ``await trioscope.call("echo", Echo.echo, i)`` to a service
  under ``open_supervisor`` (what docs/performance.md counted for issue 9:
  160,180 instructions per call at 1a31f91 with Python 3.11);
- ``call``: ``await ref.call(Echo.echo, i)``;
- ``restart``: a named service under a ``ONE_FOR_ONE`` supervisor is cast a
  message that crashes it, and the loop waits until the new incarnation's
  ``init`` ran (trioscope's log records to a ``NullHandler``, as the bench).

Modes (a tree without ``trioscope.telemetry`` runs ``none`` only):

- ``none``: no telemetry handler attached anywhere;
- ``elsewhere``: a no-op handler attached to the core's events in a sibling
  registry scope only (the global counter is non-zero; nothing is found);
- ``handler``: that no-op handler attached in the scope itself (every event
  dispatched to it: the cost of the emit points, without a consumer's);
- ``service``: the TelemetryService (``trioscope.foundation.telemetry.telemetry_spec()``)
  running in the scope (skipped where that module does not exist).

Each revision is checked out with ``git worktree add --detach /tmp/wt-<sha>``
(kept for the next run) and imported through ``PYTHONPATH``; the child
checks that it imported trioscope from there. ``PYTHONHASHSEED=0`` keeps
dict and set layouts, and so the counts, reproducible.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("by_name", "call", "restart")
MODES = ("none", "elsewhere", "handler", "service")
BEFORE_TELEMETRY = "1a31f91"

# The program each valgrind run executes: argv = scenario, mode, N, tree.
CHILD = r"""
import logging, sys
from pathlib import Path

scenario, mode, n, tree = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

import trio
import trio.testing
import trioscope

here = Path(trioscope.__file__).resolve()
if Path(tree).resolve() not in here.parents:
    raise SystemExit(f"imported trioscope from {here}, not from {tree}")
logger = logging.getLogger("trioscope")
logger.handlers[:] = [logging.NullHandler()]
logger.propagate = False


class Echo(trioscope.Service):
    async def echo(self, value):
        return value


class Round:
    ready = None


class Victim(trioscope.Service):
    async def init(self):
        if Round.ready is not None:
            Round.ready.set()

    async def crash(self):
        raise RuntimeError("boom (benchmark crash)")


def noop(event_name, measurements, metadata):
    pass


def core_events():
    names = [
        ("trioscope", kind, what)
        for kind in ("call", "cast")
        for what in ("start", "stop", "exception")
    ]
    names += [("trioscope", "child", what) for what in ("start", "exit", "restart", "backoff")]
    return names


async def sibling(task_status=trio.TASK_STATUS_IGNORED):
    from trioscope import telemetry

    async with trioscope.open_registry():
        with telemetry.attached("elsewhere", core_events(), noop):
            task_status.started()
            await trio.sleep_forever()


async def attach(nursery):
    if mode == "elsewhere":
        await nursery.start(sibling)
    elif mode == "handler":
        from trioscope import telemetry

        telemetry.attach("here", core_events(), noop)
    elif mode == "service":
        from trioscope.foundation import telemetry as ft

        await nursery.start(ft.telemetry_spec().start)


async def main():
    async with trioscope.open_registry() as reg, trio.open_nursery() as nursery:
        await attach(nursery)
        if scenario == "restart":
            async with trioscope.open_supervisor(
                [Victim.child_spec(name="victim")],
                strategy=trioscope.Strategy.ONE_FOR_ONE,
                max_restarts=10**9,
                max_seconds=1.0,
            ):
                await trio.testing.wait_all_tasks_blocked()
                for _ in range(n):
                    ref = reg.lookup("victim")
                    Round.ready = trio.Event()
                    await ref.cast(Victim.crash)
                    await Round.ready.wait()
                    await trio.testing.wait_all_tasks_blocked()
        else:
            async with trioscope.open_supervisor([Echo.child_spec(name="echo")]):
                await trio.testing.wait_all_tasks_blocked()
                if scenario == "by_name":
                    for i in range(n):
                        await trioscope.call("echo", Echo.echo, i)
                else:
                    ref = reg.lookup("echo")
                    for i in range(n):
                        await ref.call(Echo.echo, i)
        nursery.cancel_scope.cancel()


trio.run(main)
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def tree_of(rev: str) -> tuple[str, Path]:
    """(label, source tree) for *rev*: a kept worktree at /tmp/wt-<sha>, or "." as it is."""
    if rev == ".":
        dirty = " (with uncommitted changes)" if git("status", "--porcelain", "trioscope") else ""
        return f"working tree at {git('rev-parse', '--short', 'HEAD')}{dirty}", ROOT
    sha = git("rev-parse", "--short", f"{rev}^{{commit}}")
    path = Path(f"/tmp/wt-{sha}")
    if not (path / "trioscope" / "__init__.py").exists():
        log(f"git worktree add --detach {path} {sha}")
        git("worktree", "add", "--detach", str(path), sha)
    return (sha if rev == sha else f"{rev} ({sha})"), path


def count(python: str, script: Path, tree: Path, scenario: str, mode: str, n: int) -> int:
    """Instructions the whole process executed (valgrind's ``I refs``)."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONHASHSEED="0")
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    cmd += [python, str(script), scenario, mode, str(n), str(tree)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{scenario}/{mode} N={n} in {tree} failed:\n{tail}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--revs",
        nargs="+",
        default=["HEAD", BEFORE_TELEMETRY],
        help=f"git revisions to compare, the first against the others ('.': the working "
        f"tree; default: HEAD {BEFORE_TELEMETRY})",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter (default: this one)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated")
    parser.add_argument("--small", type=int, default=500, help="operations in the small run")
    parser.add_argument("--large", type=int, default=2500, help="operations in the large run")
    parser.add_argument("--jobs", type=int, default=2, help="valgrind runs at once")
    parser.add_argument("--json", type=Path, help="write the counts here too")
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    for name, chosen, allowed in (("scenario", scenarios, SCENARIOS), ("mode", modes, MODES)):
        bad = [c for c in chosen if c not in allowed]
        if bad:
            parser.error(f"unknown {name}(s) {bad}; choose from {', '.join(allowed)}")

    trees = [tree_of(rev) for rev in args.revs]
    version = subprocess.run(
        [args.python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    jobs: list[tuple[str, Path, str, str]] = []
    skipped: list[str] = []
    needs = {
        "elsewhere": "trioscope/telemetry",
        "handler": "trioscope/telemetry",
        "service": "trioscope/foundation/telemetry",
    }
    for label, tree in trees:
        for mode in modes:
            if mode in needs and not (tree / f"{needs[mode]}.py").exists():
                skipped.append(f"{label}: mode {mode} (no {needs[mode]}.py)")
                continue
            jobs += [(label, tree, scenario, mode) for scenario in scenarios]
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "instructions_child.py"
        script.write_text(CHILD)
        runs = [(job, n) for job in jobs for n in (args.small, args.large)]
        log(f"{len(runs)} valgrind runs, {args.jobs} at a time (Python {version}) ...")

        def one(run: tuple[tuple[str, Path, str, str], int]) -> int:
            (label, tree, scenario, mode), n = run
            got = count(args.python, script, tree, scenario, mode, n)
            log(f"  {label} {scenario}/{mode} N={n}: {got:,} instructions")
            return got

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            counts = list(pool.map(one, runs))
    per_op: dict[tuple[str, str, str], float] = {}
    for i, (label, _, scenario, mode) in enumerate(jobs):
        small, large = counts[2 * i], counts[2 * i + 1]
        per_op[(label, scenario, mode)] = (large - small) / (args.large - args.small)

    first = trees[0][0]
    print(
        f"Instructions per operation, (N={args.large:,} - N={args.small:,}) / "
        f"{args.large - args.small:,}, valgrind --tool=cachegrind --cache-sim=no, "
        f"Python {version}, PYTHONHASHSEED=0"
    )
    print()
    others = [label for label, _ in trees[1:]]
    header = [first, *others, *(f"{first} ÷ {other}" for other in others)]
    print("| Scenario | Mode | " + " | ".join(header) + " |")
    print("|---|---|" + "---|" * len(header))
    for scenario in scenarios:
        for mode in modes:
            mine = per_op.get((first, scenario, mode))
            if mine is None:
                continue
            cells = [f"{mine:,.0f}"]
            ratios = []
            for other in others:
                same = per_op.get((other, scenario, mode))
                cells.append("—" if same is None else f"{same:,.0f}")
                # A tree without telemetry compares with its only figure, the plain one.
                theirs = same if same is not None else per_op.get((other, scenario, "none"))
                suffix = "" if same is not None else " (vs its none)"
                ratios.append(
                    "—"
                    if theirs is None
                    else f"{mine / theirs:.4f} ({mine / theirs - 1:+.2%}){suffix}"
                )
            print(f"| {scenario} | {mode} | " + " | ".join(cells + ratios) + " |")
    for line in skipped:
        print(f"- skipped: {line}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "python": version,
                    "small": args.small,
                    "large": args.large,
                    "trees": [label for label, _ in trees],
                    "per_op": [
                        {"tree": t, "scenario": s, "mode": m, "instructions": v}
                        for (t, s, m), v in per_op.items()
                    ],
                    "counts": [
                        {"tree": job[0], "scenario": job[2], "mode": job[3], "n": n, "total": c}
                        for (job, n), c in zip(runs, counts, strict=True)
                    ],
                    "skipped": skipped,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
