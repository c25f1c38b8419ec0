"""REPORT.md from logs/ alone: environment, model, FLOPs/roofline, quality, INT8, serving and engine
performance, the serving-vs-engine target check, and PNG plots in logs/.

Deterministic: the same logs give the same bytes (no clock reads; PNGs carry no date or software tag).
A missing log gives a section that says which make target produces it.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from . import cli, io, markdown, spec
from .io import StageError

TARGET = 0.70  # ensemble throughput / raw engine throughput at the same effective batch
PLOTS = {"throughput": "perf_throughput.png", "latency": "perf_latency.png", "bench": "bench_throughput.png"}


# ------------------------------------------------------------------------------------ helpers
def _load(logs: Path, name: str) -> dict | None:
    p = Path(logs) / name
    if not p.exists():
        return None
    try:
        return io.read_json(p)
    except ValueError as e:
        return {"_unreadable": f"{name} is not valid JSON ({e})"}


def fmt(x, nd: int = 3) -> str:
    """Numbers with `nd` significant digits (thousands separated), booleans as yes/NO, None as '-'."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        if x == 0:
            return "0"
        if abs(x) < 1e-3:
            return f"{x:.{nd - 1}e}"
        if abs(x) >= 10 ** nd:
            return f"{x:,.0f}"
        digits = max(0, nd - 1 - int(math.floor(math.log10(abs(x)))))
        return f"{x:.{digits}f}"
    if isinstance(x, (list, tuple)):
        return ", ".join(fmt(v, nd) for v in x)
    return str(x).replace("|", "\\|").replace("\n", " ")


def table(head: list[str], rows: list[list]) -> list[str]:
    return markdown.table(head, rows, fmt)


def missing(target: str, what: str) -> list[str]:
    return [f"_not run yet: make {target}_ ({what} missing)", ""]


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def generic(d, depth: int = 0) -> list[str]:
    """Unknown-shape JSON as Markdown: scalars as bullets, dicts of dicts as tables, one level of nesting."""
    out, scalars = [], []
    for k, v in d.items():
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            cols = list(dict.fromkeys(c for x in v.values() for c, y in x.items() if not isinstance(y, (dict, list))))
            out += ["", f"**{k}**", ""] + table(["", *cols], [[n, *(x.get(c) for c in cols)] for n, x in v.items()])
        elif isinstance(v, dict) and depth < 1:
            out += ["", f"**{k}**", ""] + generic(v, depth + 1)
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            cols = list(dict.fromkeys(c for x in v for c, y in x.items() if not isinstance(y, (dict, list))))
            out += ["", f"**{k}**", ""] + table(cols, [[x.get(c) for c in cols] for x in v])
        else:
            scalars.append(f"- {k}: {fmt(v) if not isinstance(v, dict) else json.dumps(v, sort_keys=True)}")
    return scalars + out


# ------------------------------------------------------------------------------------ plots
def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def _save(plt, fig, path: Path) -> None:
    with io.atomic_path(path) as tmp:
        # no Software/date tags: the same data gives the same bytes
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def _log2_ticks(plt, ax, values) -> None:
    """Log-2 x axis labelled with exactly the measured values (at most ~12 labels)."""
    ticks = sorted(values)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks[::max(1, len(ticks) // 12)] if len(ticks) > 12 else ticks)
    ax.xaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())


def plot_perf(perf: dict, logs: Path) -> list[str]:
    plt = _plt()
    models = {n: e for n, e in perf.get("models", {}).items() if e.get("rows")}
    if plt is None or not models:
        return []
    fig, ax = plt.subplots(figsize=(8, 5))
    for n, e in models.items():
        r = e["rows"]
        ax.plot([x["concurrency"] for x in r], [x["throughput"] for x in r], marker="o", label=n)
    ax.set(yscale="log", xlabel="concurrency (requests in flight)", ylabel="inferences / s",
           title=f"Triton throughput vs concurrency (batch {perf.get('batch_size')}, {perf.get('protocol')})")
    _log2_ticks(plt, ax, {x["concurrency"] for e in models.values() for x in e["rows"]})
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(plt, fig, logs / PLOTS["throughput"])
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (n, e) in enumerate(models.items()):
        r, color = e["rows"], f"C{i}"
        ax.plot([x["throughput"] for x in r], [x["p50_ms"] for x in r], "--", marker=".", color=color, label=f"{n} p50")
        ax.plot([x["throughput"] for x in r], [x["p99_ms"] for x in r], "-", marker="o", color=color, label=f"{n} p99")
    ax.set(xscale="log", yscale="log", xlabel="inferences / s", ylabel="latency (ms)", title="Latency percentiles vs throughput")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    _save(plt, fig, logs / PLOTS["latency"])
    return [PLOTS["throughput"], PLOTS["latency"]]


def plot_bench(bench: dict, logs: Path) -> list[str]:
    plt = _plt()
    engines = {n: [r for r in e["rows"] if "error" not in r] for n, e in bench.get("engines", {}).items()}
    engines = {n: r for n, r in engines.items() if r}
    if plt is None or not engines:
        return []
    fig, ax = plt.subplots(figsize=(8, 5))
    for n, rows in engines.items():
        ax.plot([r["batch"] for r in rows], [r["seq_per_s"] for r in rows], marker="o", label=n)
    ax.set(xlabel="batch size", ylabel="sequences / s",
           title=f"Engine throughput vs batch (seq {bench.get('seq_len')}, {bench.get('device')}, no server)")
    _log2_ticks(plt, ax, {r["batch"] for rows in engines.values() for r in rows})
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(plt, fig, logs / PLOTS["bench"])
    return [PLOTS["bench"]]


# ------------------------------------------------------------------------------------ sections
def used_model(logs: dict) -> dict | None:
    """The model record (what export actually loaded) from whichever log has it."""
    cands = [logs["model"], (logs["perf"] or {}).get("model"), (logs["bench"] or {}).get("model"),
             (logs["flops"] or {}).get("model_info"), (logs["quality"] or {}).get("model")]
    return next((m for m in cands if m), None)


def model_section(logs: dict) -> list[str]:
    m = used_model(logs)
    if m is None:
        return ["## Model", ""] + missing("export", "logs/model.json")
    out = ["## Model", ""]
    if m.get("fallback"):
        out += [f"> **FALLBACK MODEL USED.** The requested model `{m.get('requested')}` could not be loaded; every number "
                f"in this report is for **`{m.get('used')}`** ({m.get('source')}).", ""]
    out += [f"- used: **{m.get('used')}** ({m.get('source')}); requested: `{m.get('requested')}`",
            f"- {m.get('model_type')}: {m.get('num_layers')} layers, hidden {m.get('hidden_size')}, {m.get('num_heads')} heads, "
            f"FFN {m.get('intermediate_size')}, vocab {m.get('vocab_size')}, max length {m.get('max_length')}", ""]
    return out


def _gpus(hw: dict) -> str:
    return ", ".join(f"{g.get('name')} (driver {g.get('driver')}, {g.get('memory')})" for g in hw.get("gpus") or []) or "none"


def env_section(logs: dict) -> list[str]:
    perf, bench = logs["perf"] or {}, logs["bench"] or {}
    hw = perf.get("hardware") or bench.get("hardware")
    out = ["## Environment", ""]
    if not hw:
        return out + ["_not run yet: make perf, make bench_ (the hardware is recorded by both)", ""]
    gpus = _gpus(hw)
    trt_logs = sorted(p.name for p in Path(logs["dir"]).glob("trt_build_*.log"))
    out += [f"- CPU: {hw.get('cpu')}, {hw.get('cores')} cores ({hw.get('machine')}; {hw.get('os')})",
            f"- GPU: {gpus}",
            f"- Triton server: {(perf.get('server') or {}).get('version', 'not run yet: make perf')}",
            f"- perf_analyzer: {(perf.get('perf_analyzer') or {}).get('version', 'not run yet: make perf')}",
            f"- ONNX Runtime: {bench.get('onnxruntime', 'not run yet: make bench')}"
            + (f" (providers used: {', '.join(sorted({p for e in bench.get('engines', {}).values() for p in e.get('providers', [])}))})" if bench.get("engines") else ""),
            f"- TensorRT: {bench.get('tensorrt', 'not available')}" + (f"; build logs: {', '.join(trt_logs)}" if trt_logs else "")]
    bhw = bench.get("hardware") or {}
    if perf.get("hardware") and bhw and (bhw.get("cpu"), bhw.get("gpus")) != (hw.get("cpu"), hw.get("gpus")):
        out.append(f"- engine benchmark ran elsewhere: {bhw.get('cpu')}, {bhw.get('cores')} cores; GPU {_gpus(bhw)}")
    for name, src in (("perf", perf), ("bench", bench)):
        la = (src.get("hardware") or {}).get("loadavg")
        if la:
            end = (src.get("hardware") or {}).get("loadavg_end")
            out.append(f"- load average during {name}: {fmt(la)} at the start" + (f", {fmt(end)} at the end" if end else "")
                       + f" ({hw.get('cores')} cores: a load above that means other work competed for the CPU)")
    return out + [""]


def flops_section(f: dict | None) -> list[str]:
    out = ["## FLOPs and roofline", ""]
    if not f:
        return out + missing("export", "logs/flops.json")
    out += [f"{f['model']}, seq {f['seq_len']}: **{f['flops_per_sequence'] / 1e9:.3f} GFLOP per sequence** "
            f"(GEMMs {f['gemm_flops_per_sequence'] / 1e9:.3f}; analytic encoder GEMMs {f['analytic_flops_per_sequence'] / 1e9:.3f}). "
            f"{f.get('convention', '')} Details: logs/flops.md.", ""]
    rb, ridge, gpus = f.get("ridge_batch", {}), f.get("ridge", {}), f.get("gpus", {})
    rows = [[gpus.get(g, {}).get("name", g), p, ridge.get(g, {}).get(p), v.get("h->h"), v.get("h->i"), v.get("i->h"),
             v.get("attention"), v.get("model"), v.get("model_gemm")] for g, per in rb.items() for p, v in per.items()]
    if rows:
        out += ["Ridge point (FLOP/byte) and the smallest batch at which each part becomes compute-bound ('never' = memory-bound at any batch):", ""]
        out += table(["GPU", "precision", "ridge", "h->h", "h->i", "i->h", "attention", "model", "model GEMMs"], rows) + [""]
    return out


def quality_section(q: dict | None) -> list[str]:
    out = ["## Quality vs the FP32 reference", ""]
    if not q:
        return out + missing("quality", "logs/quality.json")
    if "_unreadable" in q:
        return out + [q["_unreadable"], ""]
    if q.get("status") not in (None, "complete"):
        out += [f"**INCOMPLETE**: {q.get('error', 'status ' + str(q.get('status')))}", ""]
    variants = q.get("variants") or {}
    if not variants:
        return out + ["no variant measured", ""]
    rows, cols = [], []
    for name, v in variants.items():
        refs = {k: x for k, x in v.items() if k != "floor" and isinstance(x, dict) and x and all(_num(y) for y in x.values())}
        flat = {k: x for k, x in v.items() if _num(x) and k != "seconds"}
        if flat:
            refs = {"reference": flat, **refs}
        for ref, metrics in refs.items():
            cols += [c for c in metrics if c not in cols and c != "n"]
            rows.append((name, ref, metrics, v))
    head = ["variant", "vs", *cols, "floor", "pass"]
    body = []
    for name, ref, metrics, v in rows:
        floor = v.get("floor") or {}
        ok = v.get("pass")
        floor_txt = " / ".join(f"{k} {x:g}" if _num(x) else f"{k} {x}" for k, x in floor.items()) or "-"
        body.append([name, ref, *(fmt(metrics.get(c), 6) for c in cols), floor_txt,
                     ("pass" if ok else "FAIL") if isinstance(ok, bool) else ok])
    out += [f"{q.get('n_texts', '?')} texts ({q.get('texts', '?')}), protocol {q.get('protocol', '?')}. "
            "Floors are on the comparison with PyTorch FP32.", ""]
    return out + table(head, body) + [""]


def quantize_section(qz: dict | None) -> list[str]:
    out = ["## INT8 details", ""]
    if not qz:
        return out + missing("variants", "logs/quantize.json")
    return out + generic(qz) + [""]


def nearest(batches: list[int], eff: int) -> int:
    return min(batches, key=lambda b: (abs(b - eff), b))


def _compute(d: dict) -> float:
    return sum(d.get(k, 0.0) for k in ("compute_input_ms", "compute_infer_ms", "compute_output_ms"))


def perf_section(p: dict | None, logs: Path, rel: str) -> list[str]:
    out = ["## Serving performance (Triton + perf_analyzer)", ""]
    if not p:
        return out + missing("perf", "logs/perf_summary.json")
    if p.get("status") != "complete":
        out += ["**INCOMPLETE**: " + "; ".join(p.get("errors") or ["status " + str(p.get("status"))]), ""]
    inp, s = p.get("inputs", {}), p.get("settings", {})
    tt = inp.get("text_tokens") or {}
    per_c = s.get("window_per_concurrency")
    mode = (f"time windows of {s['window_ms']} ms" if s.get("window_ms") else
            f"count windows of max({s.get('window_requests')}, {per_c} x concurrency) requests"
            + (f" (for text inputs rounded up to whole passes over the {inp.get('n_texts')} texts)" if s.get("max_cycle") else "")
            if per_c else
            f"count windows of {s.get('window_requests')} requests")
    kept = p.get("kept_from_earlier_runs") or {}
    when = f"measured {p.get('started')} to {p.get('finished')}"
    if kept:
        when += (f" ({', '.join(n for n in p.get('models', {}) if n not in kept)}); kept from earlier runs of the same "
                 f"repository and inputs: " + ", ".join(f"{n} ({t})" for n, t in kept.items()))
    out += [f"perf_analyzer {p.get('perf_analyzer', {}).get('version')} over {p.get('protocol')}, batch {p.get('batch_size')} per request, "
            f"concurrency {fmt(p.get('concurrency'))}; {when}.",
            f"Ensembles and the tokenizer: {inp.get('n_texts')} real texts ({tt.get('min')}-{tt.get('max')} tokens, median {fmt(tt.get('median'))}); "
            f"raw models: token tensors of length {inp.get('seq_len')}.",
            f"Stability settings used: {mode}, {fmt(s.get('stability'))}% spread, at most {s.get('max_trials')} windows. "
            f"Why the defaults: {s.get('why', '')}", ""]
    for n in p.get("notes", []):
        out.append(f"- {n}")
    out += ["", "### Best throughput per model", ""]
    out += table(["model", "kind", "best infer/s", "at concurrency", "p99 ms there", "status"],
                 [[n, e.get("kind"), (e.get("best") or {}).get("throughput"), (e.get("best") or {}).get("concurrency"),
                   (e.get("best") or {}).get("p99_ms"),
                   e.get("status") + "".join(f"; failed at concurrency {f.get('concurrency')}: {f.get('error')}" for f in e.get("failed") or [])]
                  for n, e in p.get("models", {}).items()]) + [""]
    for n, e in p.get("models", {}).items():
        if not e.get("rows"):
            continue
        out += [f"### {n}", ""]
        comp = sorted({c for r in e["rows"] for c in (r.get("composing") or {})})
        head = ["concurrency", "infer/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "queue ms", "compute ms"]
        head += [f"{c} queue/compute ms" for c in comp]
        rows = []
        for r in e["rows"]:
            cells = [r["concurrency"], r["throughput"], r["p50_ms"], r["p90_ms"], r["p95_ms"], r["p99_ms"],
                     r.get("server_queue_ms"), _compute(r)]
            for c in comp:
                x = (r.get("composing") or {}).get(c) or {}
                cells.append(f"{fmt(x.get('queue_ms'))} / {fmt(_compute(x))}")
            rows.append(cells)
        out += table(head, rows) + ["", f"CSV: {Path(e.get('csv', '')).name}", ""]
    plots = plot_perf(p, logs)
    out += [f"![{x}]({rel}/{x})" for x in plots] + ([""] if plots else [])
    return out


def _roof_cell(r: dict) -> str:
    if "roof_fraction" not in r:
        return "-"
    tf32 = f" ({100 * r['tf32_roof_fraction']:.2f}% of tf32)" if "tf32_roof_fraction" in r else ""
    return f"{100 * r['roof_fraction']:.2f}% of {r['roof']}{tf32}"


def bench_section(b: dict | None, logs: Path, rel: str) -> list[str]:
    out = ["## Engine benchmark (ONNX Runtime / TensorRT, no server)", ""]
    if not b:
        return out + missing("bench", "logs/bench_engine.json")
    out += [f"{b.get('device')}, seq {b.get('seq_len')}, {b['flops_per_sequence'] / 1e9:.3f} GFLOP per sequence ({b.get('flops_source')}); "
            f"{b.get('roofline', {}).get('note')}. Timing: {b.get('timing', {}).get('warmup')} warmup runs, then "
            f"{fmt(b.get('timing', {}).get('budget_s'))} s per point (at least {b.get('timing', {}).get('min_iters')} runs); "
            f"measured {b.get('started')} to {b.get('finished', '(unfinished)')}.", ""]
    has_roof = any("roof_fraction" in r for e in b.get("engines", {}).values() for r in e["rows"])
    rows = []
    for n, e in b.get("engines", {}).items():
        for r in e["rows"]:
            if "error" in r:
                rows.append([n, r["batch"], "FAILED: " + r["error"], None, None, None, None, None] + ([None] if has_roof else []))
                continue
            rows.append([n, r["batch"], r["seq_per_s"], r["mean_ms"], r["p50_ms"], r["p99_ms"], r["gflops_per_s"], r["iters"]]
                        + ([_roof_cell(r)] if has_roof else []))
    out += table(["engine", "batch", "seq/s", "mean ms", "p50 ms", "p99 ms", "GFLOP/s", "runs"] + (["of roof"] if has_roof else []), rows)
    out += [""] + [f"- {s}" for s in b.get("skipped", [])] + ([""] if b.get("skipped") else [])
    plots = plot_bench(b, logs)
    out += [f"![{x}]({rel}/{x})" for x in plots] + ([""] if plots else [])
    return out


def _vs_engine(p: dict, b: dict, kind: str) -> list[tuple]:
    """(model, best, effective batch, engine name, nearest engine batch, engine row, ratio) per served model of `kind`."""
    out = []
    for n, e in p.get("models", {}).items():
        if e.get("kind") != kind or not e.get("best"):
            continue
        raw = spec.raw_model(n)
        ok = [r for r in (b.get("engines", {}).get(raw) or {}).get("rows", []) if "error" not in r]
        if not ok:
            continue
        eff = e["best"]["concurrency"] * int(p.get("batch_size") or 1)
        nb = nearest([r["batch"] for r in ok], eff)
        er = next(r for r in ok if r["batch"] == nb)
        out.append((n, e["best"], eff, raw, nb, er, e["best"]["throughput"] / er["seq_per_s"]))
    return out


def _ratio_table(rows: list[tuple], first: str) -> list[str]:
    return table([first, "best infer/s", "at concurrency", "effective batch", "engine", "engine batch", "engine seq/s", "ratio",
                  f"vs {100 * TARGET:.0f}%"],
                 [[n, best["throughput"], best["concurrency"], eff, raw, nb if nb == eff else f"{nb} (nearest to {eff})",
                   er["seq_per_s"], f"{100 * ratio:.1f}%", "pass" if ratio >= TARGET else "FAIL"]
                  for n, best, eff, raw, nb, er, ratio in rows])


def target_section(p: dict | None, b: dict | None) -> list[str]:
    out = ["## Target: served ensemble >= 70% of the raw engine", ""]
    if not p or not b:
        need = [t for t, x in (("perf", p), ("bench", b)) if not x]
        return out + [f"_not run yet: make {' and make '.join(need)}_", ""]
    ens = _vs_engine(p, b, "ensemble")
    if not ens:
        return out + ["no ensemble with a matching engine measurement (need ensemble_<variant> in perf and <variant> in bench)", ""]
    head = next((r for r in ens if r[3] == spec.REFERENCE), None)
    if head:
        n, _, eff, raw, nb, _, ratio = head
        out += [f"**{n}: {100 * ratio:.1f}% of the raw {raw} engine ({'PASS' if ratio >= TARGET else 'FAIL'} against the "
                f"{100 * TARGET:.0f}% target)** at its best concurrency (effective batch {eff}); engine measured at batch {nb}"
                + (" (the nearest measured batch)" if nb != eff else "") + ".", ""]
    tt = (p.get("inputs") or {}).get("text_tokens") or {}
    out += _ratio_table(ens, "ensemble")
    out += ["", f"Effective batch = concurrency x batch per request ({p.get('batch_size')}). Not like for like: the ensemble "
            f"tokenizes real texts (median {fmt(tt.get('median'))} tokens, each request padded to a length bucket) while the engine "
            f"runs {b.get('seq_len')} tokens per sequence; the ensemble also pays the tokenizer, (de)serialisation and the "
            "dynamic batcher's queue delay, and on a small CPU the client competes with the server for cores.", ""]
    raw = _vs_engine(p, b, "model")
    if raw:
        same = (p.get("inputs") or {}).get("seq_len") == b.get("seq_len")
        out += ["Like for like, the raw models through Triton (token tensors of length "
                f"{(p.get('inputs') or {}).get('seq_len')}) against the same engine"
                + (f" (same sequence length):" if same else f" (engine seq {b.get('seq_len')}: not the same length):"), ""]
        out += _ratio_table(raw, "served model") + [""]
    return out


def reliability_section(soak: dict | None, over: dict | None) -> list[str]:
    out = ["## Load and overload", ""]
    if not soak and not over:
        return out + ["_not run yet_: `python -m enc2triton.soak --minutes 10` and `python -m enc2triton.soak --overload` "
                      "(logs/soak.json, logs/overload.json missing)", ""]
    for d in (soak, over):
        if d and "_unreadable" in d:
            out += [d["_unreadable"], ""]
    if soak and "_unreadable" not in soak:
        a, r = soak.get("after_warmup") or {}, soak.get("rss") or {}
        lat = a.get("latency") or {}
        out += [f"**Soak {'PASS' if soak.get('pass') else 'FAIL'}** ({soak.get('started')}): {soak.get('model')} at concurrency "
                f"{soak.get('concurrency')} for {fmt(soak.get('seconds'))} s, figures after a {fmt(soak.get('warmup_seconds'))} s "
                f"warm-up; {', '.join(soak.get('failures') or []) or 'no target missed'}.", ""]
        out += table(["requests", "failed", "req/s", "p50 ms", "p99 ms", "max ms", "RSS median first / last quarter MiB",
                      "RSS peak first / last MiB", "growth % (limit)", "same server"],
                     [[(soak.get("total") or {}).get("requests"), (soak.get("total") or {}).get("failed"), a.get("throughput_rps"),
                       lat.get("p50_ms"), lat.get("p99_ms"), lat.get("max_ms"),
                       f"{fmt(r.get('early_median_mb'))} / {fmt(r.get('late_median_mb'))}",
                       f"{fmt(r.get('early_peak_mb'))} / {fmt(r.get('late_peak_mb'))}",
                       f"{fmt(r.get('growth_pct'))} ({fmt(r.get('max_growth_pct'))})",
                       soak.get("server_same_pid_and_ready")]]) + [""]
        out += [f"Growth: {r.get('growth')}. Host: {(soak.get('host') or {}).get('cpus')} CPUs shared by client and server.", ""]
    if over and "_unreadable" not in over:
        f, b, rec = over.get("flood") or {}, (over.get("baseline") or {}).get("latency") or {}, over.get("recovery") or {}
        rl, ol = f.get("rejection_latency") or {}, f.get("ok_latency") or {}
        out += [f"**Overload {'PASS' if over.get('pass') else 'FAIL'}**: {over.get('model')} with a queue of "
                f"{over.get('queue_size')} (REJECT), flooded at concurrency {over.get('concurrency')} for {fmt(over.get('seconds'))} s: "
                f"{fmt(f.get('rejected'))} of {fmt(f.get('requests'))} requests rejected (\"{f.get('rejection_message')}\") in p50 "
                f"{fmt(rl.get('p50_ms'))} / p99 {fmt(rl.get('p99_ms'))} ms, {fmt(f.get('ok'))} served (p99 {fmt(ol.get('p99_ms'))} ms), "
                f"{fmt(f.get('other_errors'))} other errors; afterwards {fmt(rec.get('ok'))}/{fmt(rec.get('requests'))} ok at p50 "
                f"{fmt((rec.get('latency') or {}).get('p50_ms'))} ms (before: {fmt(b.get('p50_ms'))} ms), same server: "
                f"{fmt(over.get('server_same_pid_and_ready'))}.", ""]
    return out


def render(logs_dir: Path = spec.LOGS, out: Path = spec.ROOT / "REPORT.md") -> str:
    logs_dir, out = Path(logs_dir), Path(out)
    logs = {"dir": logs_dir, "model": _load(logs_dir, "model.json"), "flops": _load(logs_dir, "flops.json"),
            "quality": _load(logs_dir, "quality.json"), "quantize": _load(logs_dir, "quantize.json"),
            "perf": _load(logs_dir, "perf_summary.json"), "bench": _load(logs_dir, "bench_engine.json"),
            "soak": _load(logs_dir, "soak.json"), "overload": _load(logs_dir, "overload.json")}
    rel = os.path.relpath(logs_dir.resolve(), out.resolve().parent)
    name = (used_model(logs) or {}).get("used")
    lines = [f"# enc2triton report{': ' + name if name else ''}", "",
             "Generated by `python -m enc2triton.report` from logs/ only; the same logs give the same file.", ""]
    lines += model_section(logs) + env_section(logs) + flops_section(logs["flops"]) + quality_section(logs["quality"])
    lines += quantize_section(logs["quantize"]) + perf_section(logs["perf"], logs_dir, rel) + bench_section(logs["bench"], logs_dir, rel)
    lines += target_section(logs["perf"], logs["bench"]) + reliability_section(logs["soak"], logs["overload"])
    text = "\n".join(lines).rstrip() + "\n"
    io.write_text(out, text)
    return text


def main(argv=None) -> int:
    ap = cli.parser("python -m enc2triton.report", (
        "Step 9: write REPORT.md (and PNG plots in the logs folder) from the logs alone; deterministic."), artifacts=False)
    ap.add_argument("--out", type=Path, default=spec.ROOT / "REPORT.md", help="the report file (default %(default)s)")

    def body(a) -> None:
        if not a.logs.is_dir():
            raise StageError(f"logs folder {a.logs} not found: run `make all` (or the stages you need) first")
        render(a.logs, a.out)
        print(f"wrote {a.out}")
    return cli.run(ap, body, argv)


if __name__ == "__main__":
    sys.exit(main())
