"""trioscope benchmarks against the raw-Trio floor and triotp 0.3.1, in one run.

    python bench/run.py            # the full run (3 to 4 minutes on 2 cores)
    python bench/run.py --quick    # a smoke run with small sizes (under half a minute)
    python bench/run.py --only restart            # one section (or several, comma-separated)
    python bench/run.py --only telemetry          # issue 10's figures (about 2 minutes)
    python bench/run.py --baseline bench/baseline-7af780f.json   # and compare with a previous run
    nox -s bench                   # the full run, in a Python 3.13 venv with triotp==0.3.1
    nox -s bench -- --quick        # arguments after -- go to run.py

Other flags: ``--json PATH`` (raw results; default ``bench/.results/*.json``),
``--render JSON`` (reprint a saved run; with ``--baseline``, compare it),
``--skip-triotp``, ``--triotp-100k`` (run triotp above its cap too) and
``--no-gc`` (diagnosis only: the cyclic garbage collector off everywhere).
The table goes to stdout as markdown; progress goes to stderr.

``--baseline FILE`` takes the JSON of a previous run (what ``--json`` wrote)
or a file of the same shape holding only some figures, such as
``bench/baseline-7af780f.json`` (the figures of docs/performance.md at
7af780f, whose raw JSON was not kept), and adds a table of per-row changes,
flagging call, cast, restart and idle service memory when one is more than
5% worse.

What is measured (see docs/performance.md for the interpretation):

1. Floors, written in plain Trio: request/response over memory channels with a
   fresh ``open_memory_channel(1)`` per reply and with one persistent reply
   channel; one-way send throughput; memory of an idle task; the cost of
   spawning (``start_soon`` and ``nursery.start``) and cancelling tasks; and a
   minimal hand-rolled one-for-one restart loop, in two forms: the manager
   ``nursery.start``s the new worker, or (leaner) ``start_soon``s it.
2. trioscope: ``ref.call``, ``trioscope.call`` by name, ``ref.cast``, registry
   lookups, idle service memory.
3. Restart latency under ``ONE_FOR_ONE``, with few and with 10k other names,
   twice in the same run: with trioscope's logging disabled (its logger above
   CRITICAL) and with its crash reports going to a ``NullHandler``.
4. ``open_dynamic_supervisor`` with 10k and 100k children: start, memory, teardown.
5. triotp 0.3.1 beside each.
6. The foundation (issue 9, ``bench/foundation.py``): config reads, updates with a
   subscriber, single event stores (calls and buffered), batches of 100 in
   memory and on SQLite, correlation queries at 10k and 1M stored events, p50/p99
   under concurrent load, and the memory of a store under an endless stream;
   each beside a plain-Trio (or plain-Python, plain-``sqlite3``) floor from
   the same run, with the ElixirScope seeds' figures as the floor to beat.
   About 2 minutes on its own: ``--only foundation``.
7. Telemetry (issue 10, ``bench/telemetry.py``): ``telemetry.execute`` with no
   handler anywhere, with one only in a sibling scope, with one no-op handler
   in scope and with the TelemetryService, beside a plain Python call of the
   handler's signature; ``ref.call`` and call by name, and restart latency,
   with the same attachments, beside the request/reply and restart floors.
   The TelemetryService rows run once ``trioscope.foundation.telemetry``
   exists. ``bench/instructions.py`` counts the instructions of the same
   calls and restarts (valgrind), which judge the 5% limit. ``--only telemetry``.

Method: rate benchmarks are interleaved (every repetition runs each
benchmark once, in a rotating order, each in a fresh ``trio.run``) after a
warm-up, and the median is reported, so drift on a shared machine hits all
sides alike; ratios compare figures from the same run. Memory is measured
with tracemalloc in separate runs from any timing. The scale benchmarks run
each in a fresh interpreter (``--scenario``) so that one heap does not
carry over into the next.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import raw
import report
import scope
import trio
from common import fmt_seconds, median, percentile, silence_logging

import trioscope

HERE = Path(__file__).resolve().parent

try:
    import otp
except ImportError as exc:  # triotp missing, or a Python older than 3.13 (triotp 0.3.1 needs it)
    otp = None  # type: ignore[assignment]
    OTP_MISSING = f"triotp unavailable ({type(exc).__name__}: {exc})"
else:
    OTP_MISSING = ""

# -- sizes ------------------------------------------------------------------------

FULL = {
    "rate_n": 20_000,  # operations per timed repetition
    "rate_reps": 7,
    "lookup_n": 500_000,
    "names": 10_000,  # names registered for lookups and for restart (b)
    "mem_n": 10_000,
    "mem_reps": 3,
    "restart_samples": 2_000,  # per scenario, in `restart_chunks` interleaved chunks
    "restart_chunks": 4,
    "restart_warmup": 50,  # per chunk, discarded
    "scale_ns": [10_000, 100_000],
    "scale_reps": {10_000: 3, 100_000: 3},
    "otp_scale_cap": 10_000,
    "foundation": {
        "calls_n": 10_000,  # config updates, single stores (call and buffered), floors
        "reads_n": 1_000_000,  # config reads and their floor
        "batch_n": 100_000,  # events per repetition, batches of 100, memory
        "sqlite_n": 30_000,  # events per repetition, batches of 100, SQLite
        "sqlite_writers": 8,  # concurrent batch writers in the group-commit row
        "build_n": 200_000,  # Event(...) constructions
        "reps": 7,
        "query_sizes": [10_000, 1_000_000],  # stored events, each in a fresh interpreter
        "queries": 2_000,
        "load_ops": 300,  # per task: 50 writers, 5 batch writers, 1 updater
        "stream_total": 1_000_000,  # events written into a store keeping stream_max
        "stream_max": 10_000,
        "stream_every": 50_000,  # one reading per this many events
    },
    "telemetry": {
        "execute_n": 300_000,  # telemetry.execute per repetition, and its floor
        "calls_n": 10_000,  # round trips per repetition, and the floors
        "reps": 7,
        "restart_samples": 2_000,  # per scenario, in `restart_chunks` interleaved chunks
        "restart_chunks": 4,
        "restart_warmup": 50,
    },
}
QUICK = {
    "rate_n": 2_000,
    "rate_reps": 3,
    "lookup_n": 50_000,
    "names": 2_000,
    "mem_n": 1_000,
    "mem_reps": 1,
    "restart_samples": 200,
    "restart_chunks": 2,
    "restart_warmup": 10,
    "scale_ns": [1_000, 5_000],
    "scale_reps": {1_000: 1, 5_000: 1},
    "otp_scale_cap": 5_000,
    "foundation": {
        "calls_n": 1_000,
        "reads_n": 100_000,
        "batch_n": 10_000,
        "sqlite_n": 3_000,
        "sqlite_writers": 8,
        "build_n": 20_000,
        "reps": 3,
        "query_sizes": [1_000, 20_000],
        "queries": 300,
        "load_ops": 40,
        "stream_total": 100_000,
        "stream_max": 2_000,
        "stream_every": 10_000,
    },
    "telemetry": {
        "execute_n": 30_000,
        "calls_n": 2_000,
        "reps": 3,
        "restart_samples": 200,
        "restart_chunks": 2,
        "restart_warmup": 10,
    },
}

# -- running ----------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_trio(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    gc.collect()
    return trio.run(fn, *args)


def interleaved(
    benches: dict[str, Callable[[int], Any]], n: int, reps: int, warmup_n: int
) -> dict[str, list[float]]:
    """Run every benchmark *reps* times, one repetition of each per round."""
    keys = list(benches)
    for key in keys:
        benches[key](warmup_n)
    samples: dict[str, list[float]] = {key: [] for key in keys}
    for rep in range(reps):
        order = keys[rep % len(keys) :] + keys[: rep % len(keys)]
        for key in order:
            samples[key].append(benches[key](n))
    return samples


def rates(cfg: dict[str, Any], with_otp: bool) -> dict[str, Any]:
    log("rates: request/response, one-way, calls, casts ...")
    benches: dict[str, Callable[[int], Any]] = {
        "floor_fresh": lambda n: run_trio(raw.pingpong_fresh, n),
        "floor_persistent": lambda n: run_trio(raw.pingpong_persistent, n),
        "floor_oneway": lambda n: run_trio(raw.oneway, n),
        "scope_call": lambda n: run_trio(scope.call, n),
        "scope_call_by_name": lambda n: run_trio(scope.call_by_name, n),
        "scope_cast": lambda n: run_trio(scope.cast, n),
    }
    if with_otp:
        benches["otp_call"] = lambda n: run_trio(otp.call, n)
        benches["otp_cast"] = lambda n: run_trio(otp.cast, n)
    n = cfg["rate_n"]
    samples = interleaved(benches, n, cfg["rate_reps"], max(n // 5, 100))
    out: dict[str, Any] = {}
    for key, elapsed in samples.items():
        per_op = [e / n for e in elapsed]
        out[key] = {"per_op": median(per_op), "samples": per_op, "n": n}
    return out


def lookups(cfg: dict[str, Any], with_otp: bool) -> dict[str, Any]:
    log("rates: registry lookups, building child specs ...")
    names = [f"service-{i}" for i in range(cfg["names"])]
    benches: dict[str, Callable[[int], Any]] = {
        "floor_dict_get": lambda n: raw.dict_lookups(n, names),
        "scope_whereis": lambda n: run_trio(scope.lookups, n, names, "whereis"),
        "scope_lookup": lambda n: run_trio(scope.lookups, n, names, "lookup"),
    }
    if with_otp:
        benches["otp_resolve"] = lambda n: run_trio(otp.lookups, n, names)
    n = cfg["lookup_n"]
    samples = interleaved(benches, n, cfg["rate_reps"], n // 10)
    out = {
        key: {"per_op": median([e / n for e in v]), "n": n, "names": len(names)}
        for key, v in samples.items()
    }
    specs: dict[str, Callable[[int], Any]] = {"scope_child_spec": scope.child_specs}
    if with_otp:
        specs["otp_child_spec"] = otp.child_specs
    n = cfg["rate_n"] // 4
    samples = interleaved(specs, n, cfg["rate_reps"], n // 5)
    out.update({key: {"per_op": median([e / n for e in v]), "n": n} for key, v in samples.items()})
    return out


def memory(cfg: dict[str, Any], with_otp: bool) -> dict[str, Any]:
    log("memory: idle task / service / gen_server ...")
    n = cfg["mem_n"]
    benches: dict[str, Callable[[int], Any]] = {
        "floor_idle_task": lambda n: run_trio(raw.idle_task_memory, n),
        "scope_idle_service": lambda n: run_trio(scope.idle_service_memory, n),
    }
    if with_otp:
        benches["otp_idle_server"] = lambda n: run_trio(otp.idle_server_memory, n)
    samples = interleaved(benches, n, cfg["mem_reps"], max(n // 10, 10))
    return {key: {"bytes": median(v), "samples": v, "n": n} for key, v in samples.items()}


def restarts(cfg: dict[str, Any], with_otp: bool) -> dict[str, Any]:
    log("restart latency: few names / many names ...")
    # Keys are "<impl>_<variant>"; an impl name has no underscore.
    impls: dict[str, Callable[[int, int], Awaitable[tuple[list[float], int]]]] = {
        "floor-soon": raw.restart_latency_soon,  # manager start_soon()s the new worker
        "floor": raw.restart_latency,  # manager nursery.start()s it
        "scope-nolog": scope.restart_latency_nolog,  # trioscope's logger above CRITICAL
        "scope": scope.restart_latency,  # trioscope's records to a NullHandler
    }
    if with_otp:
        impls["otp"] = otp.restart_latency
    chunks = cfg["restart_chunks"]
    per_chunk = cfg["restart_samples"] // chunks
    warm = cfg["restart_warmup"]
    variants = {"few": 0, "many": cfg["names"]}
    durations: dict[str, list[float]] = {f"{impl}_{v}": [] for impl in impls for v in variants}
    # Young-generation garbage collections while restarting (setup excluded): a
    # restart that leaves reference cycles behind makes the cyclic GC run,
    # which shows up in the tail.
    collections = dict.fromkeys(durations, 0)
    keys = list(durations)
    for chunk in range(chunks):
        order = keys[chunk % len(keys) :] + keys[: chunk % len(keys)]
        for key in order:
            impl, variant = key.rsplit("_", 1)
            got, gc_runs = run_trio(impls[impl], per_chunk + warm, variants[variant])
            collections[key] += gc_runs
            durations[key].extend(got[warm:])
    return {
        key: {
            "median": median(v),
            "p99": percentile(v, 99),
            "p90": percentile(v, 90),
            "samples": len(v),
            "extra_names": variants[key.rsplit("_", 1)[1]],
            "gc_per_1k": collections[key] * 1000 / (chunks * (per_chunk + warm)),
        }
        for key, v in durations.items()
    }


def foundation_section(cfg: dict[str, Any]) -> dict[str, Any]:
    """The foundation's benchmarks (issue 9), each beside its floor from the same run.

    Imported here, not at the top, so that the other sections run without it.
    """
    import foundation as fb

    f = cfg["foundation"]
    reps = f["reps"]
    out: dict[str, Any] = {}

    def per_op(samples: dict[str, list[float]], n: int) -> dict[str, Any]:
        return {
            key: {"per_op": median([e / n for e in v]), "samples": [e / n for e in v], "n": n}
            for key, v in samples.items()
        }

    log("foundation: config reads ...")
    n = f["reads_n"]
    reads: dict[str, Callable[[int], Any]] = {
        "floor_config_read": lambda n: run_trio(fb.floor_config_read, n),
        "config_read": lambda n: run_trio(fb.config_read, n),
    }
    out["reads"] = per_op(interleaved(reads, n, reps, n // 10), n)

    log("foundation: config updates, single stores (call / buffered) ...")
    n = f["calls_n"]
    calls: dict[str, Callable[[int], Any]] = {
        "floor_fresh": lambda n: run_trio(raw.pingpong_fresh, n),
        "floor_persistent": lambda n: run_trio(raw.pingpong_persistent, n),
        "floor_oneway": lambda n: run_trio(raw.oneway, n),
        "config_update": lambda n: run_trio(fb.config_update, n),
        "store_call": lambda n: run_trio(fb.store_call, n),
        "store_nowait": lambda n: run_trio(fb.store_nowait, n),
    }
    out["calls"] = per_op(interleaved(calls, n, reps, max(n // 5, 100)), n)

    log("foundation: batches of 100 (memory, SQLite) ...")
    writers = f["sqlite_writers"]
    mem_batches: dict[str, Callable[[int], Any]] = {
        "floor_batch_memory": lambda n: run_trio(fb.floor_batch_memory, n),
        "batch_memory": lambda n: run_trio(fb.batch_memory, n),
    }
    n = f["batch_n"]
    out["batches"] = per_op(interleaved(mem_batches, n, reps, n // 10), n)
    sql_batches: dict[str, Callable[[int], Any]] = {
        "floor_batch_sqlite": lambda n: run_trio(fb.floor_batch_sqlite, n),
        "batch_sqlite": lambda n: run_trio(fb.batch_sqlite, n),
        "batch_sqlite_concurrent": lambda n: run_trio(fb.batch_sqlite, n, writers),
    }
    n = f["sqlite_n"]
    out["batches"].update(per_op(interleaved(sql_batches, n, reps, n // 10), n))
    out["batches"]["batch_sqlite_concurrent"]["writers"] = writers
    n = f["build_n"]
    out["event_build"] = median([fb.event_build(n) / n for _ in range(reps)])

    out["query"] = {}
    for size in f["query_sizes"]:
        log(f"foundation: correlation queries at {size:,} stored events (fresh interpreter) ...")
        out["query"][str(size)] = spawn_scenario("foundation-query", size, str(f["queries"]), None)

    log("foundation: latency under concurrent load ...")
    out["load"] = run_trio(fb.under_load, f["load_ops"])

    log(
        f"foundation: memory under an endless stream ({f['stream_total']:,} events, "
        f"max_events={f['stream_max']:,}; fresh interpreter) ..."
    )
    mode = f"{f['stream_max']}/{f['stream_every']}"
    out["stream"] = spawn_scenario("foundation-stream", f["stream_total"], mode, None)
    out["seed"] = fb.SEED
    return out


def _per_op(samples: dict[str, list[float]], n: int) -> dict[str, Any]:
    return {
        key: {"per_op": median([e / n for e in v]), "samples": [e / n for e in v], "n": n}
        for key, v in samples.items()
    }


def telemetry_section(cfg: dict[str, Any]) -> dict[str, Any]:
    """Telemetry (issue 10): `execute`, and instrumented calls and restarts, beside their floors.

    The TelemetryService rows run when ``trioscope.foundation.telemetry``
    exists; otherwise the report says they were skipped.
    """
    import telemetry as tb

    t = cfg["telemetry"]
    reps = t["reps"]
    missing = tb.service_missing()
    modes = [m for m in tb.MODES if m != "service" or missing is None]
    if missing:
        log(f"telemetry: the TelemetryService rows are skipped: {missing}")
    out: dict[str, Any] = {"service_missing": missing, "modes": modes}

    log("telemetry: execute throughput ...")
    n = t["execute_n"]
    execs: dict[str, Callable[[int], Any]] = {"floor_call": tb.floor_call}
    for mode in modes:
        execs[f"execute_{mode}"] = functools.partial(run_trio, tb.execute_in, mode)
    if missing is None:
        execs["execute_service_e2e"] = lambda n: run_trio(
            functools.partial(tb.execute_service, end_to_end=True), n
        )
    out["execute"] = _per_op(interleaved(execs, n, reps, n // 10), n)

    log("telemetry: calls (ref.call, call by name) with each kind of attachment ...")
    n = t["calls_n"]
    calls: dict[str, Callable[[int], Any]] = {
        "floor_fresh": lambda n: run_trio(raw.pingpong_fresh, n),
        "floor_persistent": lambda n: run_trio(raw.pingpong_persistent, n),
    }
    for mode in modes:
        calls[f"call_{mode}"] = functools.partial(run_trio, tb.calls_in, mode, scope.call)
        calls[f"by_name_{mode}"] = functools.partial(
            run_trio, tb.calls_in, mode, scope.call_by_name
        )
    out["calls"] = _per_op(interleaved(calls, n, reps, max(n // 5, 100)), n)

    log("telemetry: restart latency with and without handlers ...")
    impls: dict[str, Callable[[int, int], Awaitable[tuple[list[float], int]]]] = {
        "floor-soon": raw.restart_latency_soon,
        "floor": raw.restart_latency,
    }
    for mode in modes:
        if mode != "handler":
            impls[f"scope-{mode}"] = functools.partial(tb.restarts_in, mode, scope.restart_latency)
    chunks = t["restart_chunks"]
    per_chunk = t["restart_samples"] // chunks
    warm = t["restart_warmup"]
    durations: dict[str, list[float]] = {key: [] for key in impls}
    keys = list(impls)
    for chunk in range(chunks):
        for key in keys[chunk % len(keys) :] + keys[: chunk % len(keys)]:
            got, _ = run_trio(impls[key], per_chunk + warm, 0)
            durations[key].extend(got[warm:])
    out["restart"] = {
        key: {
            "median": median(v),
            "p90": percentile(v, 90),
            "p99": percentile(v, 99),
            "samples": len(v),
        }
        for key, v in durations.items()
    }
    out["dropped"] = sum(tb.dropped)
    return out


# -- scale scenarios, each in a fresh interpreter -------------------------------------

SCENARIOS: dict[str, Callable[[int, str], Awaitable[dict[str, Any]]]] = {}


def _scenario(name: str) -> Callable[[Any], Any]:
    def register(fn: Any) -> Any:
        SCENARIOS[name] = fn
        return fn

    return register


@_scenario("floor-start_soon")
async def _floor_start_soon(n: int, mode: str) -> dict[str, float]:
    if mode == "memory":
        return {"memory": await raw.idle_task_memory(n)}
    return await raw.spawn_scale(n, "start_soon")


@_scenario("floor-start")
async def _floor_start(n: int, mode: str) -> dict[str, float]:
    return await raw.spawn_scale(n, "start")


@_scenario("scope-dynamic")
async def _scope_dynamic(n: int, mode: str) -> dict[str, float]:
    return await scope.dynamic_scale(n, mode == "memory")


@_scenario("otp-dynamic")
async def _otp_dynamic(n: int, mode: str) -> dict[str, float]:
    return await otp.dynamic_scale(n, mode == "memory")


@_scenario("foundation-query")
async def _foundation_query(n: int, mode: str) -> dict[str, Any]:
    import foundation as fb

    return await fb.correlation_query(n, int(mode))


@_scenario("foundation-stream")
async def _foundation_stream(n: int, mode: str) -> dict[str, Any]:
    import foundation as fb

    max_events, every = (int(part) for part in mode.split("/"))
    return await fb.endless_stream(n, max_events, every)


def run_scenario(name: str, n: int, mode: str, no_gc: bool) -> None:
    silence_logging()
    gc.collect()
    if no_gc:
        gc.disable()
    result = trio.run(SCENARIOS[name], n, mode)
    print(json.dumps(result))


def spawn_scenario(name: str, n: int, mode: str, timeout: float | None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--scenario", name]
    cmd += ["--n", str(n), "--mode", mode]
    if not gc.isenabled():
        cmd.append("--no-gc")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:g} s (cap)"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        return {"error": f"exit {proc.returncode}: {tail[0]}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - t0
    return result


def scale(cfg: dict[str, Any], with_otp: bool, otp_100k: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cap = cfg["otp_scale_cap"]
    for n in cfg["scale_ns"]:
        reps = cfg["scale_reps"][n]
        names = ["floor-start_soon", "floor-start", "scope-dynamic"]
        run_otp = with_otp and (n <= cap or otp_100k)
        if run_otp:
            names.append("otp-dynamic")
        log(f"scale: N={n:,} ({reps} timing rep(s) + 1 memory run each) ...")
        timings: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for rep in range(reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                timeout = 900.0 if name.startswith("otp") else None
                timings[name].append(spawn_scenario(name, n, "time", timeout))
        entry: dict[str, Any] = {}
        for name, runs in timings.items():
            errors = [r["error"] for r in runs if "error" in r]
            if errors:
                entry[name] = {"error": errors[0]}
                continue
            entry[name] = {
                "start": median([r["start"] for r in runs]),
                "teardown": median([r["teardown"] for r in runs]),
                "reps": len(runs),
            }
        for name in ["floor-start_soon", "scope-dynamic"] + (["otp-dynamic"] if run_otp else []):
            if "error" in entry[name]:
                continue
            got = spawn_scenario(name, n, "memory", 900.0 if name.startswith("otp") else None)
            if "error" in got:
                entry[name]["memory_error"] = got["error"]
            else:
                entry[name]["memory"] = got["memory"]
        if with_otp and not run_otp:
            entry["otp-dynamic"] = {"skipped": True}
        out[str(n)] = entry
    return out


def source_digest() -> str:
    """A digest of the trioscope sources being measured, to notice edits during a run."""
    h = hashlib.sha256()
    root = Path(trioscope.__file__).parent
    for path in sorted(root.rglob("*.py")):  # the foundation's modules too
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def busy_cpu_seconds() -> float | None:
    """CPU-seconds all processes have used (from /proc/stat), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def header(args: argparse.Namespace) -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        otp_version = version("triotp")
    except Exception:
        otp_version = "not installed"
    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    only = f" --only {','.join(args.only)}" if args.only else ""
    return [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}"
        + (f"; source tree at `{commit}`" if commit else ""),
        f"- command: `python bench/run.py{' --quick' if args.quick else ''}"
        f"{' --no-gc' if args.no_gc else ''}{only}`",
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}; "
        f"load average at start {os.getloadavg()[0]:.2f}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"trio {trio.__version__}, trioscope {trioscope.__version__} "
        f"(sources sha256 {source_digest()}), triotp {otp_version}",
    ]


SECTIONS: dict[str, Callable[[dict[str, Any], bool, argparse.Namespace], Any]] = {
    "rates": lambda cfg, with_otp, args: rates(cfg, with_otp),
    "lookups": lambda cfg, with_otp, args: lookups(cfg, with_otp),
    "memory": lambda cfg, with_otp, args: memory(cfg, with_otp),
    "restart": lambda cfg, with_otp, args: restarts(cfg, with_otp),
    "scale": lambda cfg, with_otp, args: scale(cfg, with_otp, args.triotp_100k),
    "foundation": lambda cfg, with_otp, args: foundation_section(cfg),
    "telemetry": lambda cfg, with_otp, args: telemetry_section(cfg),
}


def parse_sections(value: str) -> list[str]:
    chosen = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}"
        )
    return chosen


def load_baseline(path: Path) -> tuple[dict[str, Any], str]:
    """A previous run's JSON (or a file of the same shape) and a line saying what it is."""
    base: dict[str, Any] = json.loads(path.read_text())
    what = base.get("provenance") or next(
        (line.removeprefix("- ") for line in base.get("header", [])), "a previous run"
    )
    return base, f"`{path}` ({what})"


def render(res: dict[str, Any], baseline: tuple[dict[str, Any], str] | None = None) -> str:
    """The markdown report for one run's results (as saved in the JSON file)."""
    others = ""
    if "other_cpus_busy" in res:
        others = f"; other processes kept {res['other_cpus_busy']:.2f} CPUs busy on average"
    changed = []
    if res.get("digest") != res.get("digest_end"):
        changed = [
            "- **WARNING: trioscope's source files changed during this run; the figures mix "
            "versions. Run it again.**"
        ]
    parts = [
        report.floors_table(res),
        report.main_table(res, res["with_otp"]),
        report.restart_table(res, res["with_otp"]),
        report.foundation_tables(res),
        report.telemetry_tables(res),
    ]
    if baseline is not None:
        parts.append(report.baseline_table(res, *baseline))
    out = res["header"] + [
        f"- load average at end {res['load_end']:.2f}; "
        f"wall time of this run: {fmt_seconds(res['wall_seconds'])}{others}",
        *changed,
    ]
    for part in parts:
        if len(part) > 2:  # more than a table's header
            out += ["", *part]
    out += ["", *report.notes(res, res["config"], res["with_otp"], res["otp_missing"])]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--skip-triotp", action="store_true", help="leave triotp out")
    parser.add_argument(
        "--triotp-100k",
        action="store_true",
        help="also run triotp's dynamic supervisor above the cap (slow: quadratic teardown)",
    )
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="diagnosis only: disable the cyclic garbage collector everywhere",
    )
    parser.add_argument(
        "--only",
        type=parse_sections,
        metavar="SECTIONS",
        help=f"run only these sections, comma-separated: {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--json", type=Path, help="where to write raw results (JSON)")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="print the report of a saved run, run nothing"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="JSON",
        help="compare with a previous run's JSON (e.g. bench/baseline-7af780f.json): "
        "per-row change, flagging call, cast, restart and idle memory if over 5%% worse",
    )
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="time", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        run_scenario(args.scenario, args.n, args.mode, args.no_gc)
        return
    baseline = load_baseline(args.baseline) if args.baseline else None
    if args.render:
        print(render(json.loads(args.render.read_text()), baseline))
        return
    if args.no_gc:
        gc.disable()

    silence_logging()
    cfg = QUICK if args.quick else FULL
    with_otp = otp is not None and not args.skip_triotp
    t0 = time.perf_counter()
    busy0, own0 = busy_cpu_seconds(), own_cpu_seconds()
    res: dict[str, Any] = {"config": cfg, "header": header(args), "digest": source_digest()}
    sections = args.only or list(SECTIONS)
    for section in sections:
        res[section] = SECTIONS[section](cfg, with_otp, args)
    res["sections"] = sections
    res["wall_seconds"] = wall = time.perf_counter() - t0
    res["load_end"] = os.getloadavg()[0]
    res["digest_end"] = source_digest()
    busy1, own1 = busy_cpu_seconds(), own_cpu_seconds()
    if busy0 is not None and busy1 is not None:
        # CPU the rest of the machine used meanwhile: timings are only as good as this is small.
        res["other_cpus_busy"] = max(0.0, (busy1 - busy0) - (own1 - own0)) / wall
    res["with_otp"] = with_otp
    res["otp_missing"] = OTP_MISSING
    print(render(res, baseline))

    stem = ("quick" if args.quick else "full") + ("-nogc" if args.no_gc else "")
    if args.only:
        stem += "-" + "-".join(sections)
    path = args.json or HERE / ".results" / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2, default=str))
    log(f"raw results: {path}")


if __name__ == "__main__":
    main()
