"""Turn the raw results of ``run.py`` into markdown tables.

Conventions: a ``time`` ratio is cost per operation divided by the floor's
(lower is better); a ``rate`` ratio is throughput divided by the floor's
(higher is better); a memory ratio is bytes divided by an idle task's.
"""

from __future__ import annotations

from typing import Any

from common import fmt_bytes, fmt_rate, fmt_seconds, fmt_us

NA = "n/a"


def per_op(seconds: float) -> str:
    return f"{fmt_us(seconds)} ({fmt_rate(1 / seconds)})"


def yes_no(ok: bool) -> str:
    return "yes" if ok else "**no**"


class Table:
    def __init__(self, *columns: str) -> None:
        self.lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        self.width = len(columns)

    def row(self, *cells: str) -> None:
        assert len(cells) == self.width, cells
        self.lines.append("| " + " | ".join(cells) + " |")


def floors_table(res: dict[str, Any]) -> list[str]:
    r, lk, mem, rs, sc = res["rates"], res["lookups"], res["memory"], res["restart"], res["scale"]
    t = Table("Raw-Trio floor", "Figure")
    t.row(
        "Ping-pong, fresh `open_memory_channel(1)` reply channel per request",
        per_op(r["floor_fresh"]["per_op"]),
    )
    t.row("Ping-pong, one persistent reply channel", per_op(r["floor_persistent"]["per_op"]))
    t.row("One-way `send`, until the server has received all", per_op(r["floor_oneway"]["per_op"]))
    t.row(
        f"Idle task parked on a shared channel (N={mem['floor_idle_task']['n']:,})",
        f"{fmt_bytes(mem['floor_idle_task']['bytes'])} per task",
    )
    for n, entry in sc.items():
        soon, start = entry["floor-start_soon"], entry["floor-start"]
        if "error" in soon or "error" in start:
            continue
        t.row(
            f"N={int(n):,} tasks: spawn with `start_soon` (until all parked) / "
            "`await nursery.start` one by one / cancel them all",
            f"{fmt_us(soon['start'])} / {fmt_us(start['start'])} / "
            f"{fmt_us(soon['teardown'])} per task",
        )
    for variant in ("few", "many"):
        f = rs[f"floor_{variant}"]
        t.row(
            "Hand-rolled one-for-one restart (wrapper + manager + `nursery.start`), "
            f"{f'{n:,}' if (n := f['extra_names']) else 'no'} other names in a dict: "
            "median / p99",
            f"{fmt_us(f['median'])} / {fmt_us(f['p99'])}",
        )
    d = lk["floor_dict_get"]
    t.row(f"`dict.get` over {d['names']:,} names (plain Python)", fmt_rate(1 / d["per_op"]))
    return t.lines


def main_table(res: dict[str, Any], with_otp: bool) -> list[str]:
    r, lk, mem, rs, sc = res["rates"], res["lookups"], res["memory"], res["restart"], res["scale"]
    t = Table(
        "Measurement",
        "Raw-Trio floor",
        "trioscope",
        "trioscope ÷ floor",
        "Target",
        "Met",
        "triotp 0.3.1",
        "triotp ÷ floor",
    )

    def otp(key_fn: Any) -> tuple[str, str]:
        if not with_otp:
            return NA, NA
        return key_fn()

    # -- messaging
    fresh = r["floor_fresh"]["per_op"]
    call = r["scope_call"]["per_op"]
    o = otp(
        lambda: (
            f"{per_op(r['otp_call']['per_op'])} `gen_server.call`",
            f"{r['otp_call']['per_op'] / fresh:.2f}x time",
        )
    )
    t.row(
        "`ref.call` round trip",
        f"{per_op(fresh)} fresh reply channel",
        per_op(call),
        f"{call / fresh:.2f}x time",
        "≤ 1.2x (aim 1.0x)",
        yes_no(call / fresh <= 1.2),
        *o,
    )
    byname = r["scope_call_by_name"]["per_op"]
    o = otp(lambda: ("(triotp's call above already resolves the name)", "—"))
    t.row(
        "`trioscope.call(name, ...)` round trip",
        per_op(fresh),
        per_op(byname),
        f"{byname / fresh:.2f}x time",
        "—",
        "—",
        *o,
    )
    oneway = r["floor_oneway"]["per_op"]
    cast = r["scope_cast"]["per_op"]
    o = otp(
        lambda: (
            f"{per_op(r['otp_cast']['per_op'])} `gen_server.cast`",
            f"{oneway / r['otp_cast']['per_op']:.2f}x rate",
        )
    )
    t.row(
        "`ref.cast` throughput",
        f"{per_op(oneway)} one-way send",
        per_op(cast),
        f"{oneway / cast:.2f}x rate",
        "≥ 0.8x rate",
        yes_no(oneway / cast >= 0.8),
        *o,
    )
    # -- registry
    dget = lk["floor_dict_get"]["per_op"]
    for key, label in (("scope_whereis", "`trioscope.whereis`"), ("scope_lookup", "`reg.lookup`")):
        v = lk[key]["per_op"]
        o = otp(
            lambda: (
                f"{fmt_rate(1 / lk['otp_resolve']['per_op'])} (`mailbox._resolve`)",
                f"{lk['otp_resolve']['per_op'] / dget:.2f}x time",
            )
        )
        t.row(
            f"Registry lookups, {label}, {lk[key]['names']:,} names registered",
            f"{fmt_rate(1 / dget)} `dict.get`",
            fmt_rate(1 / v),
            f"{v / dget:.2f}x time",
            "—",
            "—",
            *o,
        )
    # -- memory
    task_b = mem["floor_idle_task"]["bytes"]
    svc_b = mem["scope_idle_service"]["bytes"]
    o = otp(
        lambda: (
            f"{fmt_bytes(mem['otp_idle_server']['bytes'])} "
            f"(+{fmt_bytes(mem['otp_idle_server']['bytes'] - task_b)})",
            f"{mem['otp_idle_server']['bytes'] / task_b:.2f}x",
        )
    )
    t.row(
        f"Idle service memory, unnamed, N={mem['scope_idle_service']['n']:,}",
        f"{fmt_bytes(task_b)} idle task",
        f"{fmt_bytes(svc_b)} (+{fmt_bytes(svc_b - task_b)})",
        f"{svc_b / task_b:.2f}x",
        "≤ idle task + 2 KiB",
        yes_no(svc_b - task_b <= 2048),
        *o,
    )
    # -- restarts
    for variant in ("few", "many"):
        f, s = rs[f"floor_{variant}"], rs[f"scope_{variant}"]
        names = s["extra_names"]
        others = f"{names:,}" if names else "no"
        ok = s["median"] <= 100e-6
        target = "≤ 100 µs"
        if variant == "many":
            few = rs["scope_few"]["median"]
            ok = ok and s["median"] <= 1.2 * few
            target = f"≤ 100 µs, same as with no other names ({s['median'] / few:.2f}x)"
        o = otp(
            lambda variant=variant, f=f: (
                f"{fmt_us(rs[f'otp_{variant}']['median'])} / {fmt_us(rs[f'otp_{variant}']['p99'])}",
                f"{rs[f'otp_{variant}']['median'] / f['median']:.2f}x median",
            )
        )
        t.row(
            f"Restart, ONE_FOR_ONE, crash to new incarnation ready, {others} other names: "
            "median / p99",
            f"{fmt_us(f['median'])} / {fmt_us(f['p99'])} hand-rolled",
            f"{fmt_us(s['median'])} / {fmt_us(s['p99'])}",
            f"{s['median'] / f['median']:.2f}x median",
            target,
            yes_no(ok),
            *o,
        )
    # -- dynamic supervisor scale
    spec = lk["scope_child_spec"]["per_op"]
    o = otp(lambda: (f"{fmt_us(lk['otp_child_spec']['per_op'])} `supervisor.child_spec`", "—"))
    t.row(
        "Build a child spec: `Idle.child_spec(name=...)` (included in `start_child` below)",
        "—",
        fmt_us(spec),
        "—",
        "—",
        "—",
        *o,
    )
    growth = _growth(sc)
    for n, entry in sc.items():
        nn = int(n)
        fstart, fsoon, s = entry["floor-start"], entry["floor-start_soon"], entry["scope-dynamic"]
        oe = entry.get("otp-dynamic", {})
        if "error" in s:
            t.row(f"Dynamic supervisor, N={nn:,}", "", f"error: {s['error']}", "", "", "", "", "")
            continue

        def otp_scale(
            field: str, fmt: Any, floor_v: float, oe: dict[str, Any] = oe
        ) -> tuple[str, str]:
            if not with_otp:
                return NA, NA
            if oe.get("skipped"):
                return "not run (capped, see notes)", "—"
            if "error" in oe:
                return str(oe["error"]), "—"
            if field not in oe:
                return str(oe.get("memory_error", NA)), "—"
            return fmt(oe[field]), f"{oe[field] / floor_v:.2f}x"

        def total(v: float, nn: int = nn) -> str:
            return f"{fmt_us(v)} ({fmt_seconds(v * nn)} total)"

        t.row(
            f"Dynamic supervisor, N={nn:,}: `await sup.start_child(spec)` per child",
            f"{fmt_us(fstart['start'])} `nursery.start`",
            total(s["start"]),
            f"{s['start'] / fstart['start']:.2f}x time",
            "linear in N",
            growth.get(("start", nn), "see largest N"),
            *otp_scale("start", total, fstart["start"]),
        )
        if "memory" in s and "memory" in fsoon:
            mb = fsoon["memory"]
            t.row(
                f"Dynamic supervisor, N={nn:,}: memory per child (named)",
                f"{fmt_bytes(mb)} idle task",
                fmt_bytes(s["memory"]),
                f"{s['memory'] / mb:.2f}x",
                "≤ 6 KB",
                yes_no(s["memory"] <= 6000),
                *otp_scale("memory", fmt_bytes, mb),
            )
        t.row(
            f"Dynamic supervisor, N={nn:,}: teardown (leaving the block) per child",
            f"{fmt_us(fsoon['teardown'])} cancel a nursery",
            total(s["teardown"]),
            f"{s['teardown'] / fsoon['teardown']:.2f}x time",
            "linear in N",
            growth.get(("teardown", nn), "see largest N"),
            *otp_scale("teardown", total, fsoon["teardown"]),
        )
    return t.lines


def _growth(sc: dict[str, Any]) -> dict[tuple[str, int], str]:
    """For the largest N: per-child cost there ÷ at the smallest N, trioscope and floor."""
    ns = [int(n) for n in sc]
    out: dict[tuple[str, int], str] = {}
    if len(ns) < 2:
        return out
    lo, hi = str(min(ns)), str(max(ns))
    for field, floor_name in (("start", "floor-start"), ("teardown", "floor-start_soon")):
        try:
            s = sc[hi]["scope-dynamic"][field] / sc[lo]["scope-dynamic"][field]
            f = sc[hi][floor_name][field] / sc[lo][floor_name][field]
        except KeyError:
            continue
        out[(field, int(hi))] = (
            f"{yes_no(s <= max(1.5, 1.25 * f))}: per child {s:.2f}x the N={int(lo):,} "
            f"figure (floor {f:.2f}x)"
        )
    return out


def notes(res: dict[str, Any], cfg: dict[str, Any], with_otp: bool, otp_missing: str) -> list[str]:
    lines = []
    if not with_otp:
        why = otp_missing or "triotp left out (--skip-triotp)"
        lines.append(f"- {why}: triotp columns are n/a.")
    sc = res["scale"]
    cap = cfg["otp_scale_cap"]
    for n, entry in sc.items():
        if not entry.get("otp-dynamic", {}).get("skipped"):
            continue
        small = sc.get(str(cap), {}).get("otp-dynamic", {})
        extra = ""
        if "teardown" in small:
            k = int(n) / cap
            est = small["teardown"] * cap * k * k
            extra = (
                f" At N={cap:,} its teardown took {fmt_seconds(small['teardown'] * cap)}; "
                f"quadratic growth puts N={int(n):,} near {fmt_seconds(est)}."
            )
        lines.append(
            f"- triotp's dynamic supervisor is capped at N={cap:,}: each gen_server exit "
            "scans the whole name registry (`mailbox.unregister_all`), so tearing down N "
            f"named children is quadratic.{extra} `--triotp-100k` runs it anyway (15 min cap)."
        )
    rs = res["restart"]
    gcs = ", ".join(
        f"{label} {rs[f'{key}_few']['gc_per_1k']:.0f} / {rs[f'{key}_many']['gc_per_1k']:.0f}"
        for key, label in (("floor", "hand-rolled"), ("scope", "trioscope"), ("otp", "triotp"))
        if f"{key}_few" in rs
    )
    lines += [
        f"- Young-generation GC runs per 1,000 restarts (no / many other names): {gcs}. "
        "A crash that leaves reference cycles behind, or a restart that allocates many "
        "GC-tracked objects, makes the cyclic GC run inside the restart: that is the p99.",
        "- `time` ratios are cost per operation ÷ the floor's (lower is better); `rate` ratios "
        "are throughput ÷ the floor's (higher is better); memory ratios are ÷ an idle task.",
        "- Medians over interleaved repetitions; restart latency over "
        f"{cfg['restart_samples']:,} crashes per scenario; scale runs in fresh interpreters "
        f"({', '.join(f'{int(k):,}: {v} timing run(s)' for k, v in cfg['scale_reps'].items())}, "
        "plus one tracemalloc run each).",
        "- Both libraries' log records are discarded (stdlib `NullHandler` for trioscope, "
        "logbook `NullHandler` for triotp, as `triotp.node.run` does by default).",
    ]
    return lines
