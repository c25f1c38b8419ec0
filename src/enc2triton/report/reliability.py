"""Load and overload (logs/soak.json, logs/overload.json)."""
from __future__ import annotations

from enc2triton.core import host
from enc2triton.report.common import Ctx, S_LOAD, _minute, _v, fmt, provenance, table


# ------------------------------------------------------------------------------------ load and overload
def _soak_lines(ctx: Ctx, soak: dict) -> list[str]:
    a, r = soak.get("after_warmup") or {}, soak.get("rss") or {}
    lat, host = a.get("latency") or {}, soak.get("host") or {}
    out = provenance(ctx, "logs/soak.json", _minute(soak.get("started")),
                     f"{host['cpus']} CPUs shared by client and server" if host.get("cpus") else None, soak.get("started"))
    out += [f"**Soak {'PASS' if soak.get('pass') else 'FAIL'}** ({_v(soak.get('started', 'date not recorded'))}): {_v(soak.get('model'))} at "
            f"concurrency {_v(soak.get('concurrency'))} for {fmt(soak.get('seconds'))} s, figures after a {fmt(soak.get('warmup_seconds'))} s "
            f"warm-up; {', '.join(soak.get('failures') or []) or 'no target missed'}.", ""]
    out += table(["requests", "failed", "req/s", "p50 ms", "p99 ms", "max ms", "RSS median first / last quarter MiB",
                  "RSS peak first / last MiB", "growth % (limit)", "same server"],
                 [[(soak.get("total") or {}).get("requests"), (soak.get("total") or {}).get("failed"), a.get("throughput_rps"),
                   lat.get("p50_ms"), lat.get("p99_ms"), lat.get("max_ms"),
                   f"{fmt(r.get('early_median_mb'))} / {fmt(r.get('late_median_mb'))}",
                   f"{fmt(r.get('early_peak_mb'))} / {fmt(r.get('late_peak_mb'))}",
                   f"{fmt(r.get('growth_pct'))} ({fmt(r.get('max_growth_pct'))})",
                   soak.get("server_same_pid_and_ready")]]) + [""]
    return out + [f"Growth: {_v(r.get('growth', '-'))}.", ""]


def _overload_lines(ctx: Ctx, over: dict) -> list[str]:
    f, b, rec = over.get("flood") or {}, (over.get("baseline") or {}).get("latency") or {}, over.get("recovery") or {}
    rl, ol = f.get("rejection_latency") or {}, f.get("ok_latency") or {}
    out = provenance(ctx, "logs/overload.json", _minute(over.get("started")), start=over.get("started"))
    return out + [f"**Overload {'PASS' if over.get('pass') else 'FAIL'}**: {_v(over.get('model'))} with a queue of "
                  f"{_v(over.get('queue_size'))} (REJECT), flooded at concurrency {_v(over.get('concurrency'))} for {fmt(over.get('seconds'))} s: "
                  f"{fmt(f.get('rejected'))} of {fmt(f.get('requests'))} requests rejected (\"{_v(f.get('rejection_message'))}\") in p50 "
                  f"{fmt(rl.get('p50_ms'))} / p99 {fmt(rl.get('p99_ms'))} ms, {fmt(f.get('ok'))} served (p99 {fmt(ol.get('p99_ms'))} ms), "
                  f"{fmt(f.get('other_errors'))} other errors; afterwards {fmt(rec.get('ok'))}/{fmt(rec.get('requests'))} ok at p50 "
                  f"{fmt((rec.get('latency') or {}).get('p50_ms'))} ms (before: {fmt(b.get('p50_ms'))} ms), same server: "
                  f"{fmt(over.get('server_same_pid_and_ready'))}.", ""]


def reliability_section(ctx: Ctx) -> list[str]:
    out = ["## " + S_LOAD, ""]
    soak, over = ctx.logs.get("soak"), ctx.logs.get("overload")
    if not soak and not over:
        return out + ["_not run yet_: `python -m enc2triton.soak --minutes 10` and `python -m enc2triton.soak --overload` "
                      "(logs/soak.json, logs/overload.json missing)", ""]
    for d in (soak, over):
        if d and "_unreadable" in d:
            out += [d["_unreadable"], ""]
    if ctx.get("soak"):
        out += _soak_lines(ctx, soak)
    if ctx.get("overload"):
        out += _overload_lines(ctx, over)
    return out
