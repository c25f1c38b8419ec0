"""REPORT.md from a logs folder alone, PNG plots beside the logs.

It opens with one summary table: every registered variant x quality vs FP32, this run's speed and the published GPU
run's speed, each cell linked to the section behind it. Then one section per log: model, environment, FLOPs and
roofline, quality through Triton, the ONNX precision variants (the INT8 and FP8 graphs in words), the quantization peer
(NVIDIA ModelOpt, when logs/quant_peers.json exists), the PyTorch engines,
serving performance, the engine benchmark (peers, MFU, where the GPU time goes), the published GPU benchmark, served vs
engine throughput, and load/overload.

Every section names the log and the run behind it (date, machine), says when that log is older than this run's export
(model.json `exported_at`) and why a log is incomplete. Paths from the logs are printed relative to the repository root
(or as their last two parts), never absolute.

Deterministic: the same logs give the same bytes (no clock reads; PNGs carry no date or software tag).
A missing log gives a section that says which make target produces it.
"""
from __future__ import annotations

import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from enc2triton.core import cli, host, io, markdown, spec
from enc2triton.serve import serving_stats
from enc2triton.core.io import StageError

TARGET = 0.70  # served ensemble throughput / raw engine throughput at the same effective batch
RAW_TARGET = 0.80  # a raw model through Triton / the same engine alone, same batch and tokens (issue 18)
PLOTS = {"throughput": "perf_throughput.png", "latency": "perf_latency.png", "bench": "bench_throughput.png"}
# The published GPU benchmark the summary quotes (ours and the peers, DistilBERT-base shapes on an H200)
PUBLISHED = spec.ROOT / "results" / "h200" / "distil" / "bench_engine.json"
LOG_FILES = {"model": "model.json", "flops": "flops.json", "quality": "quality.json", "quantize": "quantize.json",
             "torch": "torch_build.json", "perf": "perf_summary.json", "bench": "bench_engine.json",
             "soak": "soak.json", "overload": "overload.json"}
STAMPED = ("quality", "torch", "perf", "bench", "soak", "overload")  # logs with a `started` time
NO_FINISH = "no finish time recorded: interrupted or still running"
# As quantize.build_fp8 builds it (for quantize.json files that record no method of their own)
FP8_METHOD = ("FP8 E4M3 Q/DQ on the linear layers' MatMuls: activations per tensor (calibrated |max| / 448), weights per "
              "output channel; attention, LayerNorm, Softmax and pooling stay FP32; opset 19")

# Section titles (their Markdown anchors are what the summary links to)
S_SUMMARY, S_MODEL, S_ENV, S_FLOPS = "Summary", "Model", "Environment", "FLOPs and roofline"
S_QUALITY, S_VARIANTS, S_INT8, S_FP8 = "Quality vs the FP32 reference", "ONNX precision variants", "INT8 ONNX graph", "FP8 ONNX graph"
S_TORCH, S_PERF, S_BENCH = "PyTorch engines", "Serving performance", "Engine benchmark"
S_PUBLISHED, S_TARGET, S_LOAD = "Published GPU benchmark", "Served vs engine throughput", "Load and overload"
S_WHERE = "Where a request's time goes"
S_PEER, S_TUNE = "Serving peer", "Serving-config search"
S_PRECISION = "What each precision buys through the server"
SERVED_FP8_TARGET = 1.15  # the FP8 text endpoint / the FP16 one at the same load (issue 18)
S_QPEER = "Quantization peer (NVIDIA ModelOpt)"
P99_BUDGET_MS = 50.0  # the serving targets' latency bound


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


def _v(x):
    """A value from a log for prose: '-' where the log has none (never 'None')."""
    return "-" if x is None else x


def _cos(x) -> str:
    return f"{x:.6f}" if _num(x) else "-"


def _cos_pair(d: dict, prefix: str = "") -> str:
    """'mean / min' cosine of a quality record (prefix "exact_": the graph-as-written pair of a variants row)."""
    return f"{_cos(d.get(prefix + 'mean_cos'))} / {_cos(d.get(prefix + 'min_cos'))}"


def _verdict(ok, other="-"):
    """pass / FAIL of a recorded floor check; `other` where none was recorded."""
    return ("pass" if ok else "FAIL") if isinstance(ok, bool) else other


def _top(x) -> str:
    return f"{x:.3f}" if _num(x) else "-"


def _pct(x, nd: int = 1) -> str:
    return f"{100 * x:.{nd}f}%" if _num(x) else "-"


def table(head: list[str], rows: list[list]) -> list[str]:
    return markdown.table(head, rows, fmt)


def missing(target: str, what: str) -> list[str]:
    return [f"_not run yet: make {target}_ ({what} missing)", ""]


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _slug(title: str) -> str:
    """The anchor GitHub (and most renderers) give a heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _link(text: str, section: str) -> str:
    return f"[{text}](#{_slug(section)})"


def _path(p) -> str:
    """A path from a log, for print: relative to the repository root, else its last two parts (never absolute)."""
    if not p:
        return "-"
    p = Path(str(p))
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.relative_to(spec.ROOT).as_posix()
    except ValueError:
        return "/".join(p.parts[-2:]) if len(p.parts) > 2 else p.name


def _counted(names: list[str]) -> str:
    """'A, A, B' -> '2 x A, B' (order kept)."""
    out: dict[str, int] = {}
    for n in names:
        out[n] = out.get(n, 0) + 1
    return ", ".join(f"{c} x {n}" if c > 1 else n for n, c in out.items())


def _machine(hw: dict | None) -> str | None:
    if not hw:
        return None
    gpus = [str(g.get("name")) for g in hw.get("gpus") or []]
    return f"{_v(hw.get('cpu'))}, {_v(hw.get('cores'))} cores, " + (_counted(gpus) if gpus else "no GPU")


def _host(s: str | None) -> str | None:
    """host.describe()'s line with repeated GPUs counted."""
    return _counted([x.strip() for x in s.split(",")]) if s else None


def _minute(t: str | None) -> str | None:
    return t[:16] if isinstance(t, str) else None


def _span(start: str | None, end: str | None) -> str:
    if not start:
        return "date not recorded"
    if not end:
        return f"started {_minute(start)}, {NO_FINISH}"
    s, e = _minute(start), _minute(end)
    return f"{s} to {e[11:] if e[:10] == s[:10] else e}"


def _errors(d: dict) -> list[str]:
    e = d.get("errors") or d.get("error")
    if isinstance(e, dict):
        return [f"{k}: {v}" for k, v in e.items()]
    if isinstance(e, (list, tuple)):
        return [str(x) for x in e]
    return [str(e)] if e else []


def _incomplete(d: dict, needs_finish: bool = True) -> list[str]:
    """'**INCOMPLETE**: why' for a log whose writer did not finish (empty for a finished one)."""
    status, finished = d.get("status"), d.get("finished")
    if status in (None, "complete") and (finished or not needs_finish):
        return []
    why = "; ".join(_errors(d)) or (NO_FINISH if needs_finish and not finished else f"status {status}")
    return [f"**INCOMPLETE**: {why}", ""]


def _ok(e: dict) -> list[dict]:
    return [r for r in e.get("rows") or [] if "error" not in r]


# ------------------------------------------------------------------------------------ context
@dataclass
class Ctx:
    dir: Path
    rel: str  # the logs folder relative to the report (image links)
    logs: dict = field(default_factory=dict)
    loads: dict = field(default_factory=dict)  # more perf sweeps: logs/<load>/perf_summary.json by folder name
    published: dict | None = None
    published_path: Path | None = None

    def get(self, key: str) -> dict | None:
        d = self.logs.get(key)
        return None if d is None or "_unreadable" in d else d

    @property
    def exported_at(self) -> str | None:
        return (self.get("model") or {}).get("exported_at")

    @property
    def has_gpu(self) -> bool:
        hws = [(self.get(k) or {}).get("hardware") or {} for k in ("perf", "bench")]
        return bool(self.get("torch")) or any(hw.get("gpus") for hw in hws)


def _absent(ctx: Ctx, key: str, target: str) -> list[str]:
    d = ctx.logs.get(key)
    if d is not None and "_unreadable" in d:
        return [d["_unreadable"], ""]
    return missing(target, f"logs/{LOG_FILES[key]}")


def _older(ctx: Ctx, start: str | None) -> str:
    if not (ctx.exported_at and start and start < ctx.exported_at):
        return ""
    return f" **From an earlier run** ({_minute(start)}, before this run's export of {_minute(ctx.exported_at)})."


def provenance(ctx: Ctx, source: str, when: str | None, machine: str | None = None, start: str | None = None) -> list[str]:
    """The line under a section heading: which log, when, on what machine; older than this run's export or not."""
    line = f"_From {source}: {when or 'date not recorded'}" + (f", on {machine}" if machine else "") + "._"
    return [line + _older(ctx, start), ""]


def _stale(ctx: Ctx) -> list[str]:
    return [f"logs/{LOG_FILES[k]} ({_minute(ctx.get(k)['started'])})" for k in STAMPED
            if ctx.get(k) and ctx.get(k).get("started") and _older(ctx, ctx.get(k)["started"])]


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


# one hue per precision; ONNX dark, TensorRT light, PyTorch its own; peers grey/olive and dashed
_HUES = {"fp32": ("#1f77b4", "#aec7e8"), "fp16": ("#ff7f0e", "#ffbb78"), "int8": ("#2ca02c", "#98df8a"),
         "best": ("#d62728", "#ff9896"), "fp8": ("#9467bd", "#c5b0d5")}
_TORCH_HUES = {"fp16": "#8c564b", "fp8": "#e377c2", "int8": "#17becf"}
_PEER_HUES = ("#7f7f7f", "#bcbd22", "#393b79", "#637939", "#843c39")
_MARKERS = {"onnx": "o", "trt": "s", "torch": "^"}


def _style(name: str, peer_index: int | None = None) -> dict:
    """Colour, marker and line style of one model/engine, the same in every plot."""
    if peer_index is not None:
        return {"color": _PEER_HUES[peer_index % len(_PEER_HUES)], "marker": "x", "linestyle": "--"}
    v = spec.variant_of(name.split("+")[0])
    if v is None:
        return {"color": "black", "marker": "D", "linestyle": "-"}
    hue = _TORCH_HUES.get(v.precision.name, "#8c564b") if v.family is spec.TORCH else _HUES[v.precision.name][v.family is spec.TRT]
    return {"color": hue, "marker": _MARKERS[v.family.name], "linestyle": ":" if "+" in name else "-"}


def _legend_outside(ax, handles=None) -> None:
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)


def _perf_groups(perf: dict) -> list[tuple[str, str, dict]]:
    """(panel title, throughput unit, models) per kind that has rows: ensembles, raw models, the tokenizer."""
    models = {n: e for n, e in perf.get("models", {}).items() if e.get("rows")}
    seq = (perf.get("inputs") or {}).get("seq_len")
    kinds = (("ensemble", "ensembles (texts in, embeddings out)", "texts / s"),
             ("fused", "fused models (texts in, tokenizer and engine in one model)", "texts / s"),
             ("model", f"raw models (token tensors of length {seq})", "sequences / s"),
             ("tokenizer", "tokenizer", "texts / s"))
    out = []
    for kind, title, unit in kinds:
        group = {n: e for n, e in models.items() if (e.get("kind") or spec.kind_of(n)) == kind}
        if group:
            out.append((title, unit, group))
    return out


def _log_y(plt, ax) -> None:
    """Log y axis labelled 1, 2, 5, 10, ... in plain numbers."""
    tk = plt.matplotlib.ticker
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(tk.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(tk.FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(tk.NullFormatter())


def _thousands(plt, ax) -> None:
    """Thousands separated; a tick between integers (2.5 on a 0-20 axis) keeps its decimals instead of reading "2"."""
    ax.yaxis.set_major_formatter(plt.matplotlib.ticker.FuncFormatter(
        lambda y, _: f"{y:,.0f}" if float(y).is_integer() else f"{y:,.2f}".rstrip("0")))


def _perf_figure(plt, perf: dict, draw, ylabel, title: str, name: str, logs: Path, keys: tuple = ()) -> None:
    """One panel per kind of model (ensembles, raw models, tokenizer), concurrency on x, legends outside the data."""
    groups = _perf_groups(perf)
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 0.6 + 3.4 * len(groups)), squeeze=False,
                             layout="constrained")
    for ax, (group, unit, models) in zip(axes[:, 0], groups):
        handles = [h for n, e in models.items() for h in draw(ax, n, e["rows"], _style(n))]
        handles += [plt.matplotlib.lines.Line2D([], [], color="grey", linestyle=ls, label=lab) for ls, lab in keys]
        if ax.get_yscale() == "linear":
            ax.set_ylim(bottom=0)
        ax.set(xlabel="concurrency (requests in flight)", ylabel=ylabel(unit), title=group)
        _log2_ticks(plt, ax, {x["concurrency"] for e in models.values() for x in e["rows"]})
        ax.grid(True, which="both", alpha=0.3)
        _legend_outside(ax, handles)
    fig.suptitle(f"{title} (batch {_v(perf.get('batch_size'))} per request, {_v(perf.get('protocol'))})")
    _save(plt, fig, logs / name)


def plot_perf(perf: dict, logs: Path) -> list[str]:
    plt = _plt()
    if plt is None or not _perf_groups(perf):
        return []

    def throughput(ax, n, rows, st):
        _thousands(plt, ax)
        return ax.plot([x["concurrency"] for x in rows], [x["throughput"] for x in rows], label=n, **st)

    def latency(ax, n, rows, st):
        _log_y(plt, ax)
        c = [x["concurrency"] for x in rows]
        ax.plot(c, [x["p50_ms"] for x in rows], **{**st, "linestyle": "--", "marker": "."})
        return ax.plot(c, [x["p99_ms"] for x in rows], label=n, **{**st, "linestyle": "-"})

    _perf_figure(plt, perf, throughput, lambda unit: unit, "Triton throughput vs concurrency", PLOTS["throughput"], logs)
    _perf_figure(plt, perf, latency, lambda unit: "latency per request (ms)", "Latency p50 / p99 vs concurrency",
                 PLOTS["latency"], logs, (("-", "p99 (solid)"), ("--", "p50 (dashed)")))
    return [PLOTS["throughput"], PLOTS["latency"]]


def plot_bench(bench: dict, logs: Path) -> list[str]:
    plt = _plt()
    engines = {n: (e, _ok(e)) for n, e in bench.get("engines", {}).items() if _ok(e)}
    if plt is None or not engines:
        return []
    fig, ax = plt.subplots(figsize=(10, 5), layout="constrained")
    peers = [n for n, (e, _) in engines.items() if e.get("peer")]
    for n, (e, rows) in engines.items():
        st = _style(n, peers.index(n) if n in peers else None)
        ax.plot([r["batch"] for r in rows], [r["seq_per_s"] for r in rows], label=n + (" (peer)" if n in peers else ""), **st)
    ax.set(xlabel="batch size (sequences per call)", ylabel=f"sequences / s (seq {_v(bench.get('seq_len'))})",
           title=f"Engine throughput vs batch ({_v(bench.get('device'))}, no server{'; peers dashed' if peers else ''})")
    ax.set_ylim(bottom=0)
    _thousands(plt, ax)
    _log2_ticks(plt, ax, {r["batch"] for _, rows in engines.values() for r in rows})
    ax.grid(True, which="both", alpha=0.3)
    _legend_outside(ax)
    _save(plt, fig, logs / PLOTS["bench"])
    return [PLOTS["bench"]]


# ------------------------------------------------------------------------------------ summary
def _onnx_section(v: spec.Variant) -> str:
    return {"int8": S_INT8, "best": S_INT8, "fp8": S_FP8}.get(v.precision.name, S_VARIANTS)


def _quality_of(ctx: Ctx, v: spec.Variant) -> dict | None:
    """Quality vs FP32 of one variant: through Triton where served, else from its build log."""
    q = ((ctx.get("quality") or {}).get("variants") or {}).get(v.name)
    if q:
        m = q.get("pytorch_fp32") if isinstance(q.get("pytorch_fp32"), dict) else q
        if _num(m.get("mean_cos")):
            return {"m": m, "pass": q.get("pass"), "from": "Triton", "at": S_QUALITY}
    if v.family is spec.TORCH:
        m = ((((ctx.get("torch") or {}).get("built") or {}).get(v.precision.name)) or {}).get("quality") or {}
        if _num(m.get("mean_cos")):
            return {"m": m, "pass": m.get("pass"), "from": "build", "at": S_TORCH}
    if v.family is spec.ONNX and v.name != spec.REFERENCE:
        m = ((ctx.get("quantize") or {}).get("variants_table") or {}).get(v.precision.name) or {}
        if _num(m.get("mean_cos")):
            return {"m": m, "pass": m.get("pass"), "from": "build", "at": _onnx_section(v)}
    return None


def _engine_variant(name: str, e: dict) -> str:
    return e.get("variant") or spec.raw_model(name.split("+")[0])


def _ours(b: dict | None, v: spec.Variant) -> list[tuple[str, dict]]:
    return [(n, e) for n, e in ((b or {}).get("engines") or {}).items() if not e.get("peer") and _engine_variant(n, e) == v.name]


def _largest(e: dict) -> dict | None:
    ok = _ok(e)
    return max(ok, key=lambda r: r["batch"]) if ok else None


def _served_cell(ctx: Ctx, v: spec.Variant) -> str | None:
    if v.unserved:
        return _link("not served", _onnx_section(v))
    best = (((ctx.get("perf") or {}).get("models") or {}).get(v.ensemble) or {}).get("best")
    return _link(fmt(best["throughput"]), v.ensemble) if best else None


def _engine_cell(ctx: Ctx, v: spec.Variant) -> str | None:
    best = max(((r["seq_per_s"], r["batch"]) for _, e in _ours(ctx.get("bench"), v) for r in _ok(e)), default=None)
    return _link(f"{fmt(best[0])} (batch {best[1]})", S_BENCH) if best else None


def _why(ctx: Ctx, v: spec.Variant) -> str:
    """One short cell for a variant with nothing measured here."""
    p = v.precision.name
    if v.family is spec.TORCH:
        tb = ctx.get("torch") or {}
        if p in (tb.get("failed") or {}):
            return _link("build FAILED its check", S_TORCH)
        if p in (tb.get("skipped") or {}):
            return _link("not built", S_TORCH)
        return "not built" if ctx.has_gpu else "GPU only"
    if v.family is spec.TRT:
        b = ctx.get("bench") or {}
        if not list(ctx.dir.glob(f"trt_build_{p}.log")) and b.get("tensorrt", "not available") == "not available":
            return "not built: TensorRT not found"
        return "not measured"
    row = ((ctx.get("quantize") or {}).get("variants_table") or {}).get(p) or {}
    return _link("not built", S_VARIANTS) if str(row.get("note", "")).startswith("not built") else "not measured"


def _published_cells(ctx: Ctx, v: spec.Variant, big: int) -> list[str]:
    cands = [(n, e) for n, e in _ours(ctx.published, v) if _largest(e)]
    if not cands:
        return ["-", "-"]
    _, e = max(cands, key=lambda ne: (_largest(ne[1])["batch"], _largest(ne[1])["seq_per_s"]))
    top, one = _largest(e), next((r for r in _ok(e) if r["batch"] == 1), None)
    seq = fmt(top["seq_per_s"]) + ("" if top["batch"] == big else f" (batch {top['batch']})")
    return [_link(seq, S_PUBLISHED), _link(fmt(one["mean_ms"]), S_PUBLISHED) if one else "-"]


def _summary_cells(ctx: Ctx, v: spec.Variant, big: int | None) -> list[str]:
    q = _quality_of(ctx, v)
    local = [None] * 4
    if q:
        m, at = q["m"], q["at"]
        ok = q["pass"]
        local = [_link(_cos_pair(m), at),
                 _link(_top(m.get("top10")), at) if _num(m.get("top10")) else None,
                 _link(_verdict(ok), at) if isinstance(ok, bool) else None, q["from"]]
    if v.name == spec.REFERENCE and not q:
        local = ["reference", None, None, None]
    local += [_served_cell(ctx, v), _engine_cell(ctx, v)]
    if all(c is None for i, c in enumerate(local) if not (i == 4 and v.unserved)):
        local = [_why(ctx, v)] + [""] * 5
    cells = [c if c is not None else "-" for c in local]
    return cells + (_published_cells(ctx, v, big) if big else [])


def _summary_rows(ctx: Ctx, big: int | None) -> list[list]:
    """One row per variant, family by family; a family with nothing anywhere collapses to one row."""
    rows = []
    for fam in spec.FAMILIES.values():
        fam_rows = [[v.name, *_summary_cells(ctx, v, big)] for v in spec.variants(fam.name)]
        if len(fam_rows) > 1 and all(r[1:] == fam_rows[0][1:] for r in fam_rows):
            fam_rows = [[", ".join(r[0] for r in fam_rows), *fam_rows[0][1:]]]
        rows += fam_rows
    return rows


def _this_run(ctx: Ctx) -> str:
    perf, bench = ctx.get("perf"), ctx.get("bench")
    if not perf and not bench:
        return "no speed measured (logs/perf_summary.json and logs/bench_engine.json missing: make perf, make bench)"
    m = _machine((perf or {}).get("hardware") or (bench or {}).get("hardware")) or "machine not recorded"
    when = "; ".join(f"{k} {_minute(d['started'])}" for k, d in (("perf", perf), ("bench", bench)) if d and d.get("started"))
    out = m + (f" ({when})" if when else "")
    if perf:
        out += (f". Served: the best ensemble throughput over the concurrency sweep (real texts, {_v(perf.get('batch_size', '?'))} "
                "per request)")
    if bench:
        out += f". Engine: the engine alone, no server, {_v(bench.get('seq_len', '?'))}-token sequences, at its best batch"
    return out


def _published_model(b: dict) -> str:
    m = b.get("model") or {}
    name = str(m.get("used", "?"))
    shapes = f"{name.removeprefix('random:')} shapes ({_v(m.get('num_layers'))} layers, hidden {_v(m.get('hidden_size'))}"
    return shapes + (", random weights)" if name.startswith("random:") else ")") + f", seq {_v(b.get('seq_len'))}"


def _published_desc(ctx: Ctx) -> str:
    b = ctx.published
    here = [(ctx.get(k) or {}).get("hardware") for k in ("perf", "bench")]
    model = (ctx.get("model") or {}).get("used")
    same_machine = any(_machine(h) == _machine(b.get("hardware")) for h in here if h)
    same_model = model is not None and model == (b.get("model") or {}).get("used")
    differs = [w for w, same in (("machine", same_machine), ("model", same_model)) if not same]
    return (f"a published run on {_machine(b.get('hardware'))} ({_minute(b.get('started')) or 'date not recorded'}; "
            f"{_path(ctx.published_path)}) with {_published_model(b)}"
            + (f": not this run's {' or '.join(differs)}" if differs else ": this run's machine and model, another run"))


def summary_section(ctx: Ctx) -> list[str]:
    pub = ctx.published
    big = max((r["batch"] for e in pub["engines"].values() for r in _ok(e)), default=None) if pub else None
    gpu = ((pub or {}).get("roofline") or {}).get("gpu") or "GPU"
    head = ["variant", "mean / min cos vs FP32", "top-10 agreement", "floor", "quality from",
            "served texts/s (this run)", "engine seq/s (this run)"]
    head += [f"{gpu} seq/s, batch {big} (published)", f"{gpu} ms, batch 1 (published)"] if big else []
    out = ["## " + S_SUMMARY, ""] + table(head, _summary_rows(ctx, big)) + [""]
    evaluation = (ctx.get("quality") or {}).get("texts") or (ctx.get("quantize") or {}).get("evaluation_texts")
    out += [f"- Quality: sentence embeddings vs FP32 over the evaluation texts{f' ({_path(evaluation)})' if evaluation else ''}. _Triton_: the served variant "
            f"through the server vs PyTorch FP32 ({_link('quality', S_QUALITY)}); _build_: measured when it was built (ONNX "
            f"graphs vs the FP32 ONNX export: {_link('variants', S_VARIANTS)}; PyTorch engines vs our FP32 encoder: "
            f"{_link('PyTorch engines', S_TORCH)}). Floor: the precision's minimum mean / min cosine (spec.FLOORS).",
            f"- This run: {_this_run(ctx)}."]
    if pub:
        out.append(f"- Published: {_published_desc(ctx)}; seq/s at batch {big} and ms per call at batch 1 of our engine "
                   f"(its fastest configuration at batch {big}); {_link('peers and kernels', S_PUBLISHED)}.")
    stale = _stale(ctx)
    if stale:
        out.append(f"- Older than this run's export ({_minute(ctx.exported_at)}): {', '.join(stale)}.")
    return out + [""]


# ------------------------------------------------------------------------------------ model, environment, FLOPs
def used_model(ctx: Ctx) -> dict | None:
    """The model record (what export actually loaded) from whichever log has it."""
    cands = [ctx.get("model"), (ctx.get("perf") or {}).get("model"), (ctx.get("bench") or {}).get("model"),
             (ctx.get("flops") or {}).get("model_info"), (ctx.get("quality") or {}).get("model"),
             (ctx.get("torch") or {}).get("model")]
    return next((m for m in cands if m), None)


def model_section(ctx: Ctx) -> list[str]:
    m = used_model(ctx)
    out = ["## " + S_MODEL, ""]
    if m is None:
        return out + missing("export", "logs/model.json")
    src = "logs/model.json" if ctx.get("model") else "the model record in the other logs (logs/model.json missing)"
    out += provenance(ctx, src, f"exported {_minute(ctx.exported_at)}" if ctx.exported_at else "export time not recorded")
    if m.get("fallback"):
        out += [f"> **FALLBACK MODEL USED.** The requested model `{_v(m.get('requested'))}` could not be loaded; every number "
                f"in this report is for **`{_v(m.get('used'))}`** ({_v(m.get('source'))}).", ""]
    out += [f"- used: **{_v(m.get('used'))}** ({_v(m.get('source'))}); requested: `{_v(m.get('requested'))}`",
            f"- {_v(m.get('model_type'))}: {_v(m.get('num_layers'))} layers, hidden {_v(m.get('hidden_size'))}, {_v(m.get('num_heads'))} heads, "
            f"FFN {_v(m.get('intermediate_size'))}, vocab {_v(m.get('vocab_size'))}, max length {_v(m.get('max_length'))}", ""]
    return out


def _gpus(hw: dict) -> str:
    return ", ".join(f"{_v(g.get('name'))} (driver {_v(g.get('driver'))}, {_v(g.get('memory'))})" for g in hw.get("gpus") or []) or "none"


def env_section(ctx: Ctx) -> list[str]:
    perf, bench, tb = ctx.get("perf") or {}, ctx.get("bench") or {}, ctx.get("torch") or {}
    hw = perf.get("hardware") or bench.get("hardware")
    out = ["## " + S_ENV, ""]
    if not hw:
        return out + ["_not run yet: make perf, make bench_ (the hardware is recorded by both)", ""]
    runs = [(f"logs/{LOG_FILES[k]}", f"{k} {_minute(d.get('started')) or '(date not recorded)'}")
            for k, d in (("perf", perf), ("bench", bench)) if d.get("hardware")]
    out += provenance(ctx, " and ".join(s for s, _ in runs) + " (the hardware each recorded)", ", ".join(w for _, w in runs),
                      _machine(hw))
    trt_logs = sorted(p.name for p in Path(ctx.dir).glob("trt_build_*.log"))
    server = perf.get("server") or {}
    providers = sorted({p for e in bench.get("engines", {}).values() if e.get("engine", "onnxruntime") == "onnxruntime"
                        for p in e.get("providers", [])})
    isa = (f"; {hw['cpu_family']}" if hw.get("cpu_family") else "") + (
        f"; instruction sets: {' '.join(hw['cpu_isa']) or 'none of ' + ' '.join(host.CPU_ISA)}" if "cpu_isa" in hw else "")
    out += [f"- CPU: {_v(hw.get('cpu'))}, {_v(hw.get('cores'))} cores ({_v(hw.get('machine'))}; {_v(hw.get('os'))}{isa})",
            f"- GPU: {_gpus(hw)}",
            f"- Triton server: {_v(server.get('version', 'not run yet: make perf'))}"
            + (f" (all models ready {fmt(server['ready_seconds'])} s after launch)" if _num(server.get("ready_seconds")) else ""),
            f"- perf_analyzer: {(perf.get('perf_analyzer') or {}).get('version', 'not run yet: make perf')}",
            f"- ONNX Runtime: {_v(bench.get('onnxruntime', 'not run yet: make bench'))}"
            + (f" (providers used: {', '.join(providers)})" if providers else ""),
            f"- TensorRT: {_v(bench.get('tensorrt', 'not available'))}" + (f"; build logs: {', '.join(trt_logs)}" if trt_logs else "")]
    if tb.get("torch"):
        out.append(f"- PyTorch: {tb['torch']} ({_v(tb.get('device'))}{', ' + tb['gpu'] if tb.get('gpu') else ''})")
    bhw = bench.get("hardware") or {}
    if perf.get("hardware") and bhw and (bhw.get("cpu"), bhw.get("cpu_isa"), bhw.get("gpus")) != (hw.get("cpu"), hw.get("cpu_isa"), hw.get("gpus")):
        out.append(f"- engine benchmark ran elsewhere: {_v(bhw.get('cpu'))}, {_v(bhw.get('cores'))} cores; GPU {_gpus(bhw)}")
    for name, src in (("perf", perf), ("bench", bench)):
        la = (src.get("hardware") or {}).get("loadavg")
        if la:
            end = (src.get("hardware") or {}).get("loadavg_end")
            cores = (src.get("hardware") or {}).get("cores")
            out.append(f"- load average during {name}: {fmt(la)} at the start" + (f", {fmt(end)} at the end" if end else "")
                       + f" ({cores} cores: a load above that means other work competed for the CPU)")
    return out + [""]


def flops_section(ctx: Ctx) -> list[str]:
    out = ["## " + S_FLOPS, ""]
    f = ctx.get("flops")
    if not f:
        return out + _absent(ctx, "flops", "export")
    out += provenance(ctx, "logs/flops.json", "written by the export (no date of its own)")
    out += [f"{_v(f.get('model'))}, seq {_v(f.get('seq_len'))}: **{fmt(f.get('flops_per_sequence', 0) / 1e9, 4)} GFLOP per sequence** "
            f"(GEMMs {fmt(f.get('gemm_flops_per_sequence', 0) / 1e9, 4)}; analytic encoder GEMMs "
            f"{fmt(f.get('analytic_flops_per_sequence', 0) / 1e9, 4)}). {_v(f.get('convention', ''))} Details: logs/flops.md.", ""]
    rb, ridge, gpus = f.get("ridge_batch", {}), f.get("ridge", {}), f.get("gpus", {})
    rows = [[gpus.get(g, {}).get("name", g), p, ridge.get(g, {}).get(p), v.get("h->h"), v.get("h->i"), v.get("i->h"),
             v.get("attention"), v.get("model"), v.get("model_gemm")] for g, per in rb.items() for p, v in per.items()]
    if rows:
        out += ["Ridge point (FLOP/byte) and the smallest batch at which each part becomes compute-bound ('never' = memory-bound at any batch):", ""]
        out += table(["GPU", "precision", "ridge", "h->h", "h->i", "i->h", "attention", "model", "model GEMMs"], rows) + [""]
    return out


# ------------------------------------------------------------------------------------ quality
def quality_section(ctx: Ctx) -> list[str]:
    out = ["## " + S_QUALITY, ""]
    q = ctx.get("quality")
    if q is None:
        return out + _absent(ctx, "quality", "quality")
    out += provenance(ctx, "logs/quality.json", _minute(q.get("started")), start=q.get("started"))
    out += _incomplete(q, needs_finish=False)
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
    body = []
    for name, ref, metrics, v in rows:
        floor, ok = v.get("floor") or {}, v.get("pass")
        floor_txt = " / ".join(f"{k} {x:g}" if _num(x) else f"{k} {x}" for k, x in floor.items()) or "-"
        body.append([name, ref, *(fmt(metrics.get(c), 6) for c in cols), floor_txt,
                     _verdict(ok, ok)])
    ready = q.get("server_ready_seconds")
    out += [f"{_v(q.get('n_texts', '?'))} texts ({_path(q.get('texts'))}) through Triton over {_v(q.get('protocol', '?'))}"
            + (f"; the server had every model ready {fmt(ready)} s after launch" if _num(ready) else "")
            + ". Floors are on the comparison with PyTorch FP32.", ""]
    return out + table(["variant", "vs", *cols, "floor", "pass"], body) + [""]


# ------------------------------------------------------------------------------------ ONNX variants (quantize.json)
def _quantize_host(qz: dict) -> str | None:
    """The machine quantize.json was written on: its `host` (logs before 2026-11-30 name it only inside the note)."""
    m = re.search(r"runs on (.+?) \(", qz.get("note") or "")
    return _host(qz.get("host") or (m.group(1) if m else None))


def variants_section(ctx: Ctx) -> list[str]:
    out = ["## " + S_VARIANTS, ""]
    qz = ctx.get("quantize")
    if qz is None:
        return out + _absent(ctx, "quantize", "variants")
    out += provenance(ctx, "logs/quantize.json", _minute(qz.get("started")), _quantize_host(qz), qz.get("started"))
    out += [f"{_v(qz.get('model'))}: every graph's sentence embeddings vs the FP32 ONNX export over "
            f"{_path(qz.get('evaluation_texts'))}; graph-exact = ONNX Runtime with graph optimizations off (the Q/DQ "
            "arithmetic as written, what TensorRT implements); CPU ms = ONNX Runtime CPU, batch 8 x 128 tokens, median / "
            "min of 10 runs.", ""]
    rows, notes = [], []
    for p, r in (qz.get("variants_table") or {}).items():
        name = f"onnx_{p}"
        if str(r.get("note", "")).startswith("not built"):
            rows.append([name, "not built (below)"] + [""] * 6)
        else:
            exact = _cos_pair(r, "exact_") if _num(r.get("exact_mean_cos")) else "-"
            ms = f"{fmt(r.get('cpu_ms_b8_s128'))} / {fmt(r.get('cpu_ms_b8_s128_min'))}" if _num(r.get("cpu_ms_b8_s128")) else "-"
            rows.append([name, r.get("mb"), _cos_pair(r), _top(r.get("top10")), exact, ms, r.get("floor"), _verdict(r.get("pass"))])
        if r.get("note"):
            notes.append(f"- {name}: {r['note']}")
    out += table(["variant", "MB", "mean / min cos", "top-10", "graph-exact mean / min cos", "CPU ms median / min",
                  "floor", "pass"], rows) + [""] + notes + ([""] if notes else [])
    return out + int8_section(qz) + fp8_section(qz)


# Tensor roles of the INT8 search, in words (BERT and DistilBERT ONNX export names; first match wins)
_WHAT = ((r"query|key|value|[qkv]_lin", "Q/K/V projections", ("input",)),
         (r"attention/(self/)?MatMul$", "attention scores Q x K^T", ("Q", "K^T")),
         (r"attention/(self/)?MatMul_[#\d]+$", "attention-weighted values P x V", ("P", "V")),
         (r"attention/output/dense|out_lin", "attention output projection", ("input",)),
         (r"intermediate/dense|ffn/lin1", "FFN up-projection", ("input",)),
         (r"output/dense|ffn/lin2", "FFN down-projection", ("input (after GELU)",)))


def _what(name: str) -> str:
    """'/model/encoder/layer.#/attention/self/MatMul:0' -> 'attention scores Q x K^T: Q' (the raw name if unknown)."""
    base, _, slot = name.partition(":")
    for rx, label, sides in _WHAT:
        if re.search(rx, base):
            side = sides[int(slot)] if slot.isdigit() and int(slot) < len(sides) else ""
            return label + (f": {side}" if side else "")
    return name


def _short(name: str) -> str:
    """Tensor/node name without the encoder prefix: 'layer.#/attention/self/MatMul:0'."""
    return re.sub(r"^.*?(?=layer\.)", "", name)


def _layer(node: str) -> str:
    m = re.search(r"layer\.(\d+)", node)
    return f"layer {m.group(1)}: " if m else ""


def _role_table(srch: dict) -> list[str]:
    rows = []
    for role, r in (srch.get("range_methods_by_role") or {}).items():
        parts = role.split("|")
        what = "; ".join(dict.fromkeys(_what(x) for x in parts))
        rows.append([what, ", ".join(f"`{_short(x)}`" for x in parts), r.get("tensors"), r.get("method"),
                     fmt(r.get(r.get("method")), 6), fmt(r.get("max"), 6)])
    if not rows:
        return []
    return (["Range method per tensor role (the range each activation is clipped to; held-out mean cosine with only that "
             "role quantized):", ""]
            + table(["tensor role", "ONNX input (layer.# = every layer)", "tensors", "range method", "mean cos, chosen",
                     "mean cos, plain max"], rows) + [""])


def int8_section(qz: dict) -> list[str]:
    out = ["### " + S_INT8, ""]
    i8, srch = qz.get("int8") or {}, qz.get("int8_search") or {}
    if not i8:
        return out + ["_no INT8 graph in this log (make variants builds it)_", ""]
    cal, sq = i8.get("calibration") or {}, i8.get("smoothquant") or {}
    alphas = "; ".join(f"{'off' if a.get('alpha') is None else a['alpha']}: {a['mean_cos']:.5f} / {a['min_cos']:.4f}"
                       for a in sq.get("alpha_search") or [])
    held, target, ort = i8.get("held_out_quality") or {}, i8.get("target_held_out") or {}, i8.get("held_out_quality_ort") or {}
    meets = _num(held.get("mean_cos")) and held["mean_cos"] >= target.get("mean_cos", 0) and held["min_cos"] >= target.get("min_cos", 0)
    excl = i8.get("excluded_nodes") or []
    q, qe, sec = i8.get("quality") or {}, i8.get("quality_graph_exact") or {}, i8.get("seconds") or {}
    out += ["onnx_int8, and onnx_best (the same Q/DQ graph with FP16 wherever no Q/DQ sits).", "",
            f"- **Method**: {_v(i8.get('method'))}.",
            f"- **Calibration data**: {_path(cal.get('data'))}: {fmt(cal.get('samples'))} texts, {fmt(cal.get('tokens'))} tokens "
            f"({fmt(cal.get('held_out_samples'))} more texts held out to score every choice; {_v(cal.get('batching'))}).",
            f"- **SmoothQuant alpha**: {_v(sq.get('alpha', 'off'))}, on {len(sq.get('tensors') or [])} MatMul input tensors; "
            f"chosen by held-out mean / min cosine with everything quantized ({alphas or 'no search recorded'}).",
            f"- **Kept in FP32**: {len(excl)} of {fmt(i8.get('candidate_count'))} MatMuls"
            + (": " + "; ".join(f"{_layer(n)}{_what(n)} (`{_short(n)}`)" for n in excl) if excl else "") + ".",
            f"- **Held-out quality vs target**: mean cos {_cos(held.get('mean_cos'))} (target >= {_v(target.get('mean_cos'))}), "
            f"min cos {_cos(held.get('min_cos'))} (target >= {_v(target.get('min_cos'))}): "
            f"{'meets the target' if meets else 'BELOW the target'}"
            + (f"; ONNX Runtime CPU on the same slice: {_cos_pair(ort)}" if ort else "") + ".",
            f"- **Evaluation texts** (never used to choose): mean / min cos {_cos_pair(q)}, "
            f"top-10 {fmt(q.get('top10'))} (ONNX Runtime CPU); graph as written {_cos_pair(qe)}.",
            f"- **Search cost**: {fmt(srch.get('evaluations'))} held-out evaluations in {fmt(srch.get('seconds'))} s "
            f"(calibration pass {fmt((srch.get('calibration') or {}).get('seconds'))} s); the whole INT8 build "
            f"{fmt(sec.get('total'))} s{' (search result reused from the cache)' if i8.get('search_cached') else ''}.", ""]
    out += _role_table(srch)
    return out + ["The raw data (every MatMul's sensitivity, the greedy search trace, the SmoothQuant tensor list, Q/DQ "
                  "counts) stays in logs/quantize.json (and logs/quantize.md).", ""]


def fp8_section(qz: dict) -> list[str]:
    out = ["### " + S_FP8, ""]
    row = (qz.get("variants_table") or {}).get("fp8")
    if not row:
        return out + ["_no FP8 graph in this log (make variants builds it)_", ""]
    if str(row.get("note", "")).startswith("not built"):
        return out + [f"onnx_fp8: {row['note']}", ""]
    e, i8cal = qz.get("fp8") or {}, (qz.get("int8") or {}).get("calibration") or {}
    cal = e.get("calibration") or {}
    if cal:
        calib = f"{_path(cal.get('data'))}: {fmt(cal.get('samples'))} texts, {fmt(cal.get('tokens'))} tokens ({_v(cal.get('statistic', '|max|'))})"
    else:
        calib = (f"the INT8 calibration texts ({_path(i8cal.get('data') or 'data/calibration.txt')}, "
                 f"{fmt(i8cal.get('samples'))} texts), |max| per activation over real tokens")
    v = spec.BY_NAME.get("onnx_fp8")
    ok = row.get("pass")
    out += [f"- **Method**: {e.get('method') or FP8_METHOD}" + ("" if e.get("method") else " (as quantize.build_fp8 builds it)") + ".",
            f"- **Calibration**: {calib}.",
            f"- **Quality** vs the FP32 ONNX export: mean / min cos {_cos_pair(row)}, "
            f"top-10 {fmt(row.get('top10'))}; floor {_v(row.get('floor'))}: "
            f"{_verdict(ok)} ({_v(row.get('note', 'measured on the CPU'))}).",
            f"- **Size**: {fmt(row.get('mb'))} MB.",
            f"- **Not served**: {v.unserved if v and v.unserved else 'TensorRT source only'}.", ""]
    return out


# ------------------------------------------------------------------------------------ PyTorch engines
def torch_section(ctx: Ctx) -> list[str]:
    out = ["## " + S_TORCH, ""]
    tb = ctx.get("torch")
    if tb is None:
        if ctx.logs.get("torch") is None and not ctx.has_gpu:
            return out + [f"_{spec.TORCH.missing}_ (logs/torch_build.json missing; this run's machine has no GPU)", ""]
        return out + _absent(ctx, "torch", "variants DEVICE=gpu")
    out += provenance(ctx, "logs/torch_build.json", _span(tb.get("started"), tb.get("finished")), _host(tb.get("host")),
                      tb.get("started"))
    out += _incomplete(tb)
    ver = tb.get("verification") or {}
    diff = ", ".join(f"{fmt(x)} ({k})" for k, x in (ver.get("max_abs_diff") or {}).items())
    out += [f"torch {_v(tb.get('torch'))} on {_v(tb.get('device'))}{' (' + tb['gpu'] + ')' if tb.get('gpu') else ''}. Our FP32 "
            f"encoder vs Hugging Face: max abs diff {diff or '-'} over {fmt(ver.get('texts'))} texts. Quality: sentence "
            "embeddings vs that FP32 encoder; compile s: torch.compile once at build (its cache ships with the weights); "
            "load s: loading the compiled engine.", ""]
    rows, notes = [], []
    for p in spec.family_precisions("torch"):
        name, built = f"torch_{p}", (tb.get("built") or {}).get(p)
        if built:
            q, c = built.get("quality") or {}, built.get("compiled") or {}
            fl = q.get("floor") or {}
            rows.append([name, _cos_pair(q), _top(q.get("top10")),
                         f"{_v(fl.get('mean_cos'))} / {_v(fl.get('min_cos'))}" if fl else "-",
                         _verdict(q.get("pass")),
                         c.get("compile_seconds"), c.get("load_seconds"), (built.get("package") or {}).get("bytes", 0) / 1e6,
                         f"min cos {_cos(c['min_cos_vs_eager'])}" if _num(c.get("min_cos_vs_eager"))
                         else f"max abs diff {fmt(c.get('max_abs_diff_vs_eager'))}"])
            notes.append(f"- {name}: {_v(built.get('method'))}" + "".join(
                f"; kept {d}: {', '.join(built[f'kept_{d.lower()}']) or 'none'}" for d in ("FP16", "BF16") if f"kept_{d.lower()}" in built))
        elif p in (tb.get("failed") or {}):
            rows.append([name, "build FAILED (below)"] + [""] * 7)
            notes.append(f"- {name}: **build FAILED**: {tb['failed'][p]}")
        elif p in (tb.get("skipped") or {}):
            rows.append([name, "not built (below)"] + [""] * 7)
            notes.append(f"- {name}: not built: {tb['skipped'][p]}")
    out += table(["variant", "mean / min cos vs FP32", "top-10", "floor mean / min", "pass", "compile s", "load s", "MB",
                  "compiled vs eager"], rows) + [""]
    return out + notes + [""]


# ------------------------------------------------------------------------------------ serving performance
def nearest(batches: list[int], eff: int) -> int:
    return min(batches, key=lambda b: (abs(b - eff), b))


def _compute(d: dict) -> float:
    return sum(d.get(k, 0.0) for k in ("compute_input_ms", "compute_infer_ms", "compute_output_ms"))


def _util(r: dict) -> str | None:
    g = r.get("gpu") or {}
    if not g.get("util_mean"):
        return None
    return f"{fmt(g['util_mean'])} (max {fmt(g.get('util_max'))})"


def _perf_intro(ctx: Ctx, p: dict) -> list[str]:
    inp, s = p.get("inputs", {}), p.get("settings", {})
    tt = inp.get("text_tokens") or {}
    per_c = s.get("window_per_concurrency")
    mode = (f"time windows of {s['window_ms']} ms" if s.get("window_ms") else
            f"count windows of max({_v(s.get('window_requests'))}, {per_c} x concurrency) requests"
            + (f" (for text inputs rounded up to whole passes over the {_v(inp.get('n_texts'))} texts)" if s.get("max_cycle") else "")
            if per_c else f"count windows of {_v(s.get('window_requests'))} requests")
    kept = p.get("kept_from_earlier_runs") or {}
    kept_txt = (f" Measured in this run: {', '.join(n for n in p.get('models', {}) if n not in kept)}; kept from earlier runs of "
                "the same repository and inputs: " + ", ".join(f"{n} ({t})" for n, t in kept.items()) + "." if kept else "")
    ready = (p.get("server") or {}).get("ready_seconds")
    out = [f"perf_analyzer {_v((p.get('perf_analyzer') or {}).get('version'))} over {_v(p.get('protocol'))}, batch {_v(p.get('batch_size'))} "
           f"per request, concurrency {fmt(p.get('concurrency'))}; Triton {(p.get('server') or {}).get('version', '?')}"
           + (f", every model ready {fmt(ready)} s after launch" if _num(ready) else "") + "." + kept_txt,
           f"Ensembles and the tokenizer: {_v(inp.get('n_texts'))} real texts from {_path(inp.get('texts'))} "
           f"({_v(tt.get('min'))}-{_v(tt.get('max'))} tokens, median {fmt(tt.get('median'))}); raw models: token tensors of length "
           f"{_v(inp.get('seq_len'))}.",
           f"Stability settings used: {mode}, {fmt(s.get('stability'))}% spread, at most {_v(s.get('max_trials'))} windows. "
           f"Why the defaults: {_v(s.get('why', ''))}", ""]
    return out + [f"- {n}" for n in p.get("notes", [])] + [""]


UNSTABLE_MARK = "†"
UNSTABLE_NOTE = (f"{UNSTABLE_MARK} unstable: no 3 consecutive windows within the stability band in two tries; measured "
                 "once over a fixed request count (perf_summary.json: the windows' spread). Not a clean number: left out "
                 "of every best-within-budget comparison; rerun on a quieter machine.")


def _mark(value, row: dict):
    return f"{fmt(value)} {UNSTABLE_MARK}" if row.get("unstable") else value


def _perf_levels(e: dict) -> list[str]:
    comp = sorted({c for r in e["rows"] for c in (r.get("composing") or {})})
    util = any(_util(r) for r in e["rows"])
    head = ["concurrency", "infer/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "queue ms", "compute ms"]
    head += [f"{c} queue/compute ms" for c in comp] + (["GPU util % mean (max)"] if util else [])
    rows = []
    for r in e["rows"]:
        cells = [_mark(r["concurrency"], r), _mark(r["throughput"], r), r["p50_ms"], r["p90_ms"], r["p95_ms"], r["p99_ms"],
                 r.get("server_queue_ms"), _compute(r)]
        for c in comp:
            x = (r.get("composing") or {}).get(c) or {}
            cells.append(f"{fmt(x.get('queue_ms'))} / {fmt(_compute(x))}")
        rows.append(cells + ([_util(r)] if util else []))
    note = [UNSTABLE_NOTE, ""] if any(r.get("unstable") for r in e["rows"]) else []
    return table(head, rows) + [""] + note + [f"CSV: {Path(str(e.get('csv') or '-')).name}", ""]


def perf_section(ctx: Ctx) -> list[str]:
    out = ["## " + S_PERF, ""]
    p = ctx.get("perf")
    if p is None:
        return out + _absent(ctx, "perf", "perf")
    out += provenance(ctx, "logs/perf_summary.json (Triton + perf_analyzer)", _span(p.get("started"), p.get("finished")),
                      _machine(p.get("hardware")), p.get("started"))
    out += _incomplete(p) + _perf_intro(ctx, p)
    out += ["### Best throughput per model", ""]
    rows = []
    for n, e in p.get("models", {}).items():
        best = e.get("best") or {}
        fails = "".join(f"; failed at concurrency {_v(f.get('concurrency'))}: {_v(f.get('error'))}" for f in e.get("failed") or [])
        name = _link(n, n) if e.get("rows") else n
        shaky = f"; unstable at concurrency {fmt(e['unstable'])}" if e.get("unstable") else ""
        rows.append([name, e.get("kind"), _mark(best.get("throughput"), best), best.get("concurrency"), best.get("p99_ms"),
                     str(e.get("status", "-")) + shaky + fails])
    out += table(["model", "kind", "best infer/s", "at concurrency", "p99 ms there", "status"], rows) + [""]
    if p.get("unstable"):
        out += [UNSTABLE_NOTE, ""]
    for n, e in p.get("models", {}).items():
        if e.get("rows"):
            out += [f"### {n}", ""] + _perf_levels(e)
    plots = plot_perf(p, ctx.dir)
    return out + [f"![{x}]({ctx.rel}/{x})" for x in plots] + ([""] if plots else [])


# ------------------------------------------------------------------------------------ where the time goes
def _load_name(p: dict, folder: str | None) -> str:
    inp = p.get("inputs") or {}
    what = f"passages of up to {inp['passage_tokens']} tokens" if inp.get("passage_tokens") else "texts"
    per = int(p.get("batch_size") or 1)
    return (f"{per} {what} per request" if per > 1 else f"1 {what[:-1] if what == 'texts' else what} per request") + \
        (f" ({folder}/)" if folder else "")


def _breakdown_rows(p: dict, folder: str | None) -> tuple[list[list], list[list]]:
    """(time per request, model execution split) rows: every ensemble at every measured level."""
    per_req, split = [], []
    for n, e in p.get("models", {}).items():
        if (e.get("kind") or spec.kind_of(n)) not in spec.TEXT_KINDS:
            continue
        for r in e.get("rows") or []:
            bd = serving_stats.breakdown(r, n)
            if not bd:
                continue
            tok, model = bd.get("tokenizer") or {}, bd.get("model") or {}
            per_req.append([n, _load_name(p, folder), r["concurrency"], r["throughput"], bd["total_ms"], tok.get("queue_ms"),
                            tok.get("compute_ms"), model.get("queue_ms"), model.get("compute_ms"), bd.get("rest_ms")])
            if model:
                ph = model["phases_ms"]
                copies = sum(ph.get(k, 0.0) for k in ("h2d", "d2h")) if any(k in ph for k in ("h2d", "d2h")) else None
                host_side = sum(ph.get(k, 0.0) for k in ("read", "tokenize", "merge", "host_in", "host_out", "respond"))
                split.append([n, _load_name(p, folder), r["concurrency"], model["items_per_execution"],
                              model["requests_per_execution"], model["execution_ms"], ph.get("gpu", ph.get("engine")), copies,
                              host_side, ph.get("wait"), ph.get("python_backend"), ph.get("other")])
    return per_req, split


def where_section(ctx: Ctx) -> list[str]:
    """Per ensemble and level: the client's average latency split over the composing models (Triton's statistics) and
    each model execution split over its phases (the models' own metrics)."""
    sweeps = [(None, ctx.get("perf"))] + list(ctx.loads.items())
    rows = [(_breakdown_rows(p, f), p) for f, p in sweeps if p]
    per_req = [r for (a, _), _ in rows for r in a]
    split = [r for (_, b), _ in rows for r in b]
    if not per_req:
        return []
    out = ["## " + S_WHERE, ""]
    first = next(p for _, p in sweeps if p)
    out += provenance(ctx, "server_stats in logs/perf_summary.json" + (" and logs/*/perf_summary.json" if ctx.loads else "")
                      + " (Triton's statistics and the models' enc2triton_* metrics, scraped before and after each level)",
                      _span(first.get("started"), first.get("finished")), _machine(first.get("hardware")), first.get("started"))
    cores = first.get("cores") or {}
    pinned = (f"client on cores {cores['client']}, server on {cores.get('server')}" if cores.get("rule") not in (None, "none")
              and cores.get("client") and cores.get("server") and cores["client"] != cores["server"] else "client and server on the same cores")
    out += [f"Per request, averaged over each level's whole perf_analyzer run ({pinned}). Queue and compute are Triton's own figures per request of each "
            "composing model; the last column is what is left of the client's average latency: the client, the network, gRPC "
            "(de)serialisation and the ensemble scheduler.", ""]
    out += table(["ensemble", "load", "concurrency", "texts/s", "avg ms", "tokenizer queue", "tokenizer compute", "model queue",
                  "model compute", "client, network, gRPC, ensemble"], per_req) + [""]
    if split:
        out += ["One model execution (a dynamic batch), ms: the GPU work (CUDA events; `engine` where the engine has no "
                "split), host-device copies, the host side of the runner (reading requests, merging, staging, writing "
                "responses), waiting for the GPU, and the Python backend's own share (Triton's compute time beyond the "
                "model's execute(): the inter-process messages and copies between server and stub).", ""]
        out += table(["ensemble", "load", "concurrency", "texts / execution", "requests / execution", "execution ms", "GPU",
                      "copies", "host side", "wait", "Python backend", "other"], split) + [""]
    return out


def _precision_rows(p: dict, folder: str | None) -> list[list]:
    """Per served model with a higher-precision sibling (same kind, same engine family) in the same sweep: its
    throughput over the highest-precision sibling's (FP32 where measured, else FP16) at every concurrency both measured, and at their best levels within the p99 budget."""
    models = {n: e for n, e in (p.get("models") or {}).items() if e.get("rows") and spec.variant_of(n)}
    order = list(spec.PRECISIONS)
    rows = []
    for n, e in models.items():
        v, kind = spec.variant_of(n), e.get("kind") or spec.kind_of(n)
        sibs = [(m, spec.variant_of(m)) for m, f in models.items() if (f.get("kind") or spec.kind_of(m)) == kind
                and spec.variant_of(m).family is v.family and spec.untagged(m) != spec.untagged(n)]
        higher = [(m, w) for m, w in sibs if order.index(w.precision.name) < order.index(v.precision.name)
                  and w.precision.name in ("fp32", "fp16")]
        if not higher:
            continue
        base, w = min(higher, key=lambda x: order.index(x[1].precision.name))  # the highest measured: fp32, else fp16
        mine = {r["concurrency"]: r for r in e["rows"]}
        theirs = {r["concurrency"]: r for r in models[base]["rows"]}
        per = [f"{c}: {mine[c]['throughput'] / theirs[c]['throughput']:.2f}x" + (" †" if mine[c].get("unstable") or theirs[c].get("unstable") else "")
               for c in sorted(set(mine) & set(theirs)) if theirs[c].get("throughput")]
        a, b = _within(e["rows"]), _within(models[base]["rows"])
        rows.append([n, _load_name(p, folder), base, ", ".join(per) or "-",
                     f"{a['throughput'] / b['throughput']:.2f}x ({fmt(a['throughput'])} vs {fmt(b['throughput'])})" if a and b else "-"])
    return rows


def precision_section(ctx: Ctx) -> list[str]:
    """What a lower precision buys once served: each model against its higher-precision sibling at the same load."""
    sweeps = [(None, ctx.get("perf"))] + list(ctx.loads.items())
    rows = [r for f, p in sweeps if p for r in _precision_rows(p, f)]
    if not rows:
        return []
    first = next(p for _, p in sweeps if p)
    out = ["## " + S_PRECISION, ""]
    out += provenance(ctx, "logs/perf_summary.json" + (" and logs/*/perf_summary.json" if ctx.loads else ""),
                      _span(first.get("started"), first.get("finished")), _machine(first.get("hardware")), first.get("started"))
    out += ["Throughput of each served model over its highest-precision sibling (same kind of endpoint, same engine family, "
            "same sweep and client): at every concurrency both measured († an unstable level), and at each one's best level "
            f"within p99 {P99_BUDGET_MS:g} ms. The engines alone are in the engine benchmark; a lower precision that buys "
            "nothing here is held by what the server does around the engine."
            + (f" The project's target for FP8 on a GPU: {SERVED_FP8_TARGET:.2f}x FP16." if any("fp8" in r[0] for r in rows) else ""), ""]
    out += table(["model", "load", "vs", "ratio per concurrency", f"best within p99 {P99_BUDGET_MS:g} ms"], rows) + [""]
    return out


def _within(rows: list[dict], budget: float = P99_BUDGET_MS) -> dict | None:
    """The fastest stable level whose p99 is within the budget (None: none is)."""
    ok = [r for r in rows or [] if r.get("p99_ms") is not None and r["p99_ms"] <= budget and r.get("throughput")
          and not r.get("unstable")]  # an unstable level is not a clean number
    return max(ok, key=lambda r: r["throughput"]) if ok else None


def _cell(r: dict | None) -> str:
    return f"{fmt(r['throughput'])} (c={r['concurrency']}, p99 {fmt(r['p99_ms'])} ms)" if r else f"none within p99 {P99_BUDGET_MS:g} ms"


def peer_section(ctx: Ctx) -> list[str]:
    """Ours beside what a user would deploy instead, driven by the same client with the same texts and concurrency."""
    found = [(None, _load(ctx.dir, "perf_peers.json"))] + [(d.name, _load(d, "perf_peers.json")) for d in
                                                           sorted(p for p in ctx.dir.iterdir() if p.is_dir())]
    found = [(f, x) for f, x in found if x and "_unreadable" not in x]
    if not found:
        return []
    out = ["## " + S_PEER, ""]
    sweeps = [(None, ctx.get("perf"))] + list(ctx.loads.items())
    rows = []
    for folder, peers in found:
        peer = peers.get("peer") or {}
        for k, run in (peers.get("runs") or {}).items():
            mine = next((p for _, p in sweeps if p and int(p.get("batch_size") or 1) == int(k)
                         and (p.get("inputs") or {}).get("passage_tokens") == peers.get("passage_tokens")), None)
            load = _load_name(mine or {"batch_size": k, "inputs": {"passage_tokens": peers.get("passage_tokens")}}, folder)
            theirs = _within(run.get("rows"))
            rows.append([f"{peer.get('peer', 'peer')} {peer.get('version', '')}".strip(), load, _cell(theirs), "-"])
            for n, e in ((mine or {}).get("models") or {}).items():
                if (e.get("kind") or spec.kind_of(n)) not in spec.TEXT_KINDS:
                    continue
                ours = _within(e.get("rows"))
                ratio = f"{ours['throughput'] / theirs['throughput']:.2f}x" if ours and theirs else "-"
                rows.append([n, load, _cell(ours), ratio])
    first = found[0][1]
    peer = first.get("peer") or {}
    out += provenance(ctx, "logs/perf_peers.json" + (" and logs/*/perf_peers.json" if len(found) > 1 else ""),
                      _span(first.get("started"), first.get("finished")), _machine(first.get("hardware")), first.get("started"))
    q = first.get("quality") or {}
    out += [f"The peer: {_v(peer.get('peer'))} {_v(peer.get('version'))} ({', '.join(f'{k} {v}' for k, v in (peer.get('settings') or {}).items() if k in ('engine', 'dtype', 'batch_size', 'device', 'compile'))}), on the same GPU and "
            "checkpoint, driven by the same perf_analyzer (its OpenAI embeddings endpoint: `--service-kind openai`) with the "
            "same texts grouped the same way per request, at the same concurrency levels and client cores"
            + (f"; its embeddings vs our PyTorch FP32 reference: mean cosine {fmt(q.get('mean_cos'), 6)}" if q else "") + ". "
            f"Each cell: the best texts/s among the levels whose p99 is within {P99_BUDGET_MS:g} ms; ratio: ours / the peer's.", ""]
    return out + table(["server", "load", f"best texts/s within p99 {P99_BUDGET_MS:g} ms", "vs the peer"], rows) + [""]


def quant_peer_section(ctx: Ctx) -> list[str]:
    """Our INT8/FP8 Q/DQ graphs beside NVIDIA ModelOpt's ONNX PTQ on the same checkpoint and texts (logs/quant_peers.json,
    python -m enc2triton.quant_peers); absent when that log is."""
    d = _load(ctx.dir, "quant_peers.json")
    if not d or "_unreadable" in d:
        return []
    from enc2triton.measure.quant_peers import table_rows

    mo = d.get("modelopt") or {}
    v = mo.get("versions") or {}
    cal, ev = d.get("calibration") or {}, d.get("evaluation") or {}
    out = ["## " + S_QPEER, ""] + provenance(ctx, "logs/quant_peers.json (python -m enc2triton.quant_peers)",
                                             _span(d.get("started"), d.get("finished")), _machine(d.get("hardware")), d.get("started"))
    configs = "; ".join(f"{n}: {c.get('about')}" for n, c in (mo.get("configs") or {}).items())
    out += [f"NVIDIA ModelOpt {_v(v.get('nvidia-modelopt'))} (`modelopt.onnx.quantization.quantize`, onnxruntime "
            f"{_v(v.get('onnxruntime'))}) on a copy of the same FP32 export, calibrated on the texts our INT8 ranges and FP8 scales "
            f"come from ({_v(cal.get('texts'))} texts of {_path(cal.get('data'))}, tokenized and batched as ours), on the CPU "
            "execution provider with high_precision_dtype fp32 and its defaults otherwise ({configs}). Every row is measured the "
            f"same way on the same {_v(ev.get('texts'))} held-out texts of {_path(ev.get('data'))}: sentence embeddings vs the FP32 "
            "export on ONNX Runtime CPU, with its default optimizations (x86 int8 kernels) and as written (the Q/DQ arithmetic; "
            "FP8 only so, ONNX Runtime has no FP8 kernels).".format(configs=configs or "-"), ""]
    head, rows = table_rows(d)
    out += table(head, rows) + [""]
    by = {r.get("name"): r for r in d.get("rows") or []}
    ours = by.get("ours int8") or {}
    theirs = [r for r in d.get("rows") or [] if r.get("who") == "modelopt" and r.get("precision") == "int8" and _num(r.get("mean_cos"))]
    if _num(ours.get("mean_cos")) and theirs:
        top = max(theirs, key=lambda r: r["mean_cos"])
        dflt = next((r for r in theirs if r.get("config") == "int8_entropy"), None)  # ModelOpt's default INT8 recipe
        shown = [("ModelOpt's default (int8_entropy)", dflt)] if dflt else []
        shown += [] if top is dflt else [(f"{'its' if dflt else 'ModelOpt' + chr(39) + 's'} best here ({top.get('config')})", top)]
        out += [f"INT8, ORT default: ours {_cos(ours.get('mean_cos'))} mean / {_cos(ours.get('min_cos'))} min cosine in "
                f"{fmt(ours.get('mb'))} MB; " + ", ".join(f"{k} {_cos(r.get('mean_cos'))} / {_cos(r.get('min_cos'))} in "
                                                                f"{fmt(r.get('mb'))} MB" for k, r in shown) + ".", ""]
    return out


def tune_section(ctx: Ctx) -> list[str]:
    t = _load(ctx.dir, "tune.json")
    if not t or "_unreadable" in t or t.get("status") != "complete":
        return []
    from enc2triton.measure.tune import render as tune_table

    body = tune_table(t).splitlines()[2:]  # its own heading replaced by the section's
    return ["## " + S_TUNE, ""] + provenance(ctx, "logs/tune.json (python -m enc2triton.tune)", _span(t.get("started"), t.get("finished")),
                                             _machine(t.get("hardware")), t.get("started")) + body + [""]


# ------------------------------------------------------------------------------------ engine benchmark
def _roof_cell(r: dict | None) -> str:
    if not r or "roof_fraction" not in r:
        return "-"
    tf32 = f" ({100 * r['tf32_roof_fraction']:.2f}% of tf32)" if "tf32_roof_fraction" in r else ""
    return f"{100 * r['roof_fraction']:.2f}% of {r['roof']}{tf32}"


def _bench_columns(b: dict) -> dict[str, bool]:
    """Which optional columns any measured point has: MFU, the roofline fraction, GPU utilisation."""
    rows = [r for e in (b.get("engines") or {}).values() for r in _ok(e)]
    return {"mfu": any("mfu_fp16" in r for r in rows), "roof": any("roof_fraction" in r for r in rows),
            "util": any(_util(r) for r in rows)}


def _bench_intro(b: dict) -> list[str]:
    t = b.get("timing") or {}
    gflop = f"{b['flops_per_sequence'] / 1e9:.3f} GFLOP per sequence ({_v(b.get('flops_source'))})" if _num(b.get("flops_per_sequence")) else "FLOPs not recorded"
    mfu = _bench_columns(b)["mfu"]
    return [f"{_v(b.get('device'))}, seq {_v(b.get('seq_len'))}, {gflop}; {(b.get('roofline') or {}).get('note', 'no roofline')}. "
            f"Timing: {_v(t.get('warmup'))} warmup runs, then {fmt(t.get('budget_s'))} s per point (at least {_v(t.get('min_iters'))} "
            "runs)." + (" MFU = achieved FLOP/s over the GPU's dense FP16 tensor-core peak, one yardstick for every "
                        "precision; 'of own roof' uses the peak of the engine's own precision." if mfu else ""), ""]


def _bench_overview(b: dict) -> list[str]:
    """One row per engine (ours, then peers): seq/s at every batch, latency at the smallest, MFU / roof / GPU use at the largest."""
    engines = b.get("engines") or {}
    batches = sorted({r["batch"] for e in engines.values() for r in _ok(e)})
    if not batches:
        return ["no engine measured", ""]
    lo, hi = batches[0], batches[-1]
    at = lambda e, x: next((r for r in _ok(e) if r["batch"] == x), None)  # noqa: E731
    cols = list(_bench_columns(b).items())
    head = ["engine", "ours / peer", "precision", *(f"seq/s, batch {x}" for x in batches), f"ms per call, batch {lo}"]
    head += [h for h, (_, on) in zip((f"MFU (FP16 roof), batch {hi}", f"of own roof, batch {hi}", f"GPU util %, batch {hi}"), cols) if on]
    order = sorted(engines.items(), key=lambda ne: bool(ne[1].get("peer")))
    rows = []
    for n, e in order:
        cells = [n, "peer" if e.get("peer") else "ours", e.get("precision"), *((at(e, x) or {}).get("seq_per_s") for x in batches),
                 (at(e, lo) or {}).get("mean_ms")]
        big = at(e, hi)
        extra = {"mfu": _pct((big or {}).get("mfu_fp16")), "roof": _roof_cell(big), "util": _util(big or {})}
        rows.append(cells + [extra[k] for k, on in cols if on])
    peers = [f"- {n} (peer): {_v(e.get('backend'))}" for n, e in order if e.get("peer")]
    intro = (["Peers are reference implementations of the same model run in the same process and loop (not served):", ""]
             + peers + [""]) if peers else []
    return table(head, rows) + [""] + intro


def _bench_detail(b: dict) -> list[str]:
    shown = _bench_columns(b)
    has_roof, has_mfu, has_util = shown["roof"], shown["mfu"], shown["util"]
    has_peer = any(e.get("peer") for e in (b.get("engines") or {}).values())
    head = ["engine", *(["peer"] if has_peer else []), "batch", "seq/s", "mean ms", "p50 ms", "p99 ms", "GFLOP/s", "runs"]
    head += (["MFU (FP16)"] if has_mfu else []) + (["of roof"] if has_roof else []) + (["GPU util %"] if has_util else [])
    rows = []
    for n, e in (b.get("engines") or {}).items():
        peer = ["peer" if e.get("peer") else ""] if has_peer else []
        for r in e.get("rows") or []:
            if "error" in r:
                rows.append([n, *peer, r["batch"], "FAILED: " + str(r["error"])] + [None] * (len(head) - 3 - len(peer)))
                continue
            rows.append([n, *peer, r["batch"], r["seq_per_s"], r["mean_ms"], r["p50_ms"], r["p99_ms"], r.get("gflops_per_s"),
                         r.get("iters")] + ([_pct(r.get("mfu_fp16"))] if has_mfu else [])
                        + ([_roof_cell(r)] if has_roof else []) + ([_util(r)] if has_util else []))
    return ["Every point:", ""] + table(head, rows) + [""]


def _profile_picks(b: dict) -> list[tuple[str, str, dict]]:
    """(label, engine, profile): our fastest FP16 and FP8 engines and the fastest FP16 peer at the profiled (largest) batch."""
    def speed(e):
        prof = e["profile"]
        return next((r["seq_per_s"] for r in _ok(e) if r["batch"] == prof.get("batch")), 0.0)
    prof = {n: e for n, e in (b.get("engines") or {}).items() if (e.get("profile") or {}).get("groups")}
    picks, seen = [], set()
    for label, peer, prec in (("our fastest FP16", False, "fp16"), ("our fastest FP8", False, "fp8"), ("fastest FP16 peer", True, "fp16")):
        cands = [(speed(e), n) for n, e in prof.items() if bool(e.get("peer")) == peer and e.get("precision") == prec]
        if cands:
            _, n = max(cands)
            if n not in seen:
                seen.add(n)
                picks.append((label, n, prof[n]["profile"]))
    return picks


def _kernels(b: dict) -> list[str]:
    picks = _profile_picks(b)
    if not picks:
        return []
    batch = picks[0][2].get("batch")
    groups = list(dict.fromkeys(g for _, _, p in picks for g in p["groups"]))
    head = ["kernel group", *(f"{label}: {n} ms (share)" for label, n, _ in picks)]
    cell = lambda p, g: f"{fmt(p['groups'][g]['ms_per_run'])} ({_pct(p['groups'][g]['share'], 0)})" if g in p["groups"] else "-"  # noqa: E731
    rows = [[g, *(cell(p, g) for _, _, p in picks)] for g in groups]
    rows.append(["**all kernels**", *(f"**{fmt(p.get('kernel_ms_per_run'))}**" for _, _, p in picks)])
    out = [f"### Where the GPU time goes (batch {batch})", "",
           f"GPU kernel time per call at batch {batch} (torch.profiler over {_v(picks[0][2].get('runs'))} calls, launched without "
           "CUDA graphs so every kernel is named), grouped by what the kernels do:", ""]
    out += table(head, rows) + ["", "Top kernels:", ""]
    top = [[n, f"`{k['name'][:70]}{'...' if len(k['name']) > 70 else ''}`", k.get("group"), k.get("ms_per_run"),
            k.get("calls_per_run"), _pct(k.get("share"), 0)] for _, n, p in picks for k in (p.get("top_kernels") or [])[:5]]
    return out + table(["engine", "kernel", "group", "ms per call", "launches per call", "share"], top) + [""]


def bench_section(ctx: Ctx) -> list[str]:
    out = ["## " + S_BENCH, ""]
    b = ctx.get("bench")
    if b is None:
        return out + _absent(ctx, "bench", "bench")
    out += provenance(ctx, "logs/bench_engine.json (ONNX Runtime / TensorRT / PyTorch engines, no server)",
                      _span(b.get("started"), b.get("finished")), _machine(b.get("hardware")), b.get("started"))
    out += _incomplete(b) + _bench_intro(b) + _bench_overview(b) + _kernels(b) + _bench_detail(b)
    out += [f"- {s}" for s in b.get("skipped", [])] + ([""] if b.get("skipped") else [])
    plots = plot_bench(b, ctx.dir)
    return out + [f"![{x}]({ctx.rel}/{x})" for x in plots] + ([""] if plots else [])


def published_section(ctx: Ctx) -> list[str]:
    b = ctx.published
    if not b:
        return []
    out = ["## " + S_PUBLISHED, ""]
    out += provenance(ctx, _path(ctx.published_path), _span(b.get("started"), b.get("finished")), _machine(b.get("hardware")))
    out += [f"Not this run: a published run with {_published_model(b)}, on another machine than this run's; quoted for the "
            "GPU picture (the summary's published columns).", ""]
    return out + _bench_intro(b) + _bench_overview(b) + _kernels(b)


# ------------------------------------------------------------------------------------ served vs engine
def _vs_engine(p: dict, b: dict, kinds: tuple[str, ...]) -> list[tuple]:
    """(model, best, effective batch, engine name, nearest engine batch, engine row, ratio) per served model of `kinds`."""
    out = []
    for n, e in p.get("models", {}).items():
        if (e.get("kind") or spec.kind_of(n)) not in kinds or not e.get("best"):
            continue
        raw = spec.raw_model(n)
        ok = _ok((b.get("engines") or {}).get(raw) or {})
        if not ok:
            continue
        eff = e["best"]["concurrency"] * int(p.get("batch_size") or 1)
        best_row = next((r for r in e.get("rows") or [] if r["concurrency"] == e["best"]["concurrency"]), {})
        runs = n if spec.kind_of(n) == "fused" else raw  # the model whose executions ran the engine
        ran = ((best_row.get("server_stats") or {}).get(runs) or {}).get("items_per_execution")
        if ran:  # the batch the server really ran (Triton's statistics), not the most it could have merged
            eff = round(ran)
        nb = nearest([r["batch"] for r in ok], eff)
        er = next(r for r in ok if r["batch"] == nb)
        out.append((n, e["best"], eff, raw, nb, er, e["best"]["throughput"] / er["seq_per_s"]))
    return out


def _ratio_table(rows: list[tuple], first: str, target: float = TARGET) -> list[str]:
    return table([first, "best infer/s", "at concurrency", "effective batch", "engine", "engine batch", "engine seq/s", "ratio",
                  f"vs {100 * target:.0f}%"],
                 [[n, best["throughput"], best["concurrency"], eff, raw, nb if nb == eff else f"{nb} (nearest to {eff})",
                   er["seq_per_s"], f"{100 * ratio:.1f}%", "pass" if ratio >= target else "FAIL"]
                  for n, best, eff, raw, nb, er, ratio in rows])


def _headline(rows: list[tuple]) -> tuple:
    return next((r for r in rows if r[3] == spec.REFERENCE), rows[0])


def target_section(ctx: Ctx) -> list[str]:
    out = ["## " + S_TARGET, ""]
    p, b = ctx.get("perf"), ctx.get("bench")
    if not p or not b:
        need = [t for t, x in (("perf", p), ("bench", b)) if not x]
        return out + [f"_not run yet: make {' and make '.join(need)}_", ""]
    out += provenance(ctx, "logs/perf_summary.json and logs/bench_engine.json", f"perf {_minute(p.get('started')) or '?'}, "
                      f"bench {_minute(b.get('started')) or '?'}", start=min(filter(None, (p.get("started"), b.get("started"))), default=None))
    seq_b = b.get("seq_len")
    # raw models may have been measured in a load folder of their own (e.g. logs/raw64/: 64 sequences per request)
    raw_p = next((x for x in [p, *ctx.loads.values()] if _vs_engine(x, b, ("model",))), p)
    seq_p = (raw_p.get("inputs") or {}).get("seq_len")
    raw, ens = _vs_engine(raw_p, b, ("model",)), _vs_engine(p, b, spec.TEXT_KINDS)
    if raw:
        n, _, eff, eng, nb, _, ratio = _headline(raw)
        same = "the same sequence length" if seq_p == seq_b else f"NOT the same length (engine seq {seq_b})"
        out += [f"**Like for like: {n} served through Triton reaches {100 * ratio:.1f}% of the raw {eng} engine "
                f"({'PASS' if ratio >= RAW_TARGET else 'FAIL'} against the {100 * RAW_TARGET:.0f}% target)**: token tensors of "
                f"length {seq_p} on both sides ({same}), {_v(raw_p.get('batch_size'))} sequences per request, served at its best "
                f"concurrency (the server ran batches of {eff}), engine at batch {nb}"
                + (" (the nearest measured batch)" if nb != eff else "") + ".", ""]
        out += _ratio_table(raw, "served model", RAW_TARGET) + [""]
    else:
        out += ["No raw model was measured through Triton in this run (perf measured ensembles only), so there is no like-for-like "
                "ratio; `./run_tests.sh --models <variant>` measures one.", ""]
    if ens:
        n, _, eff, eng, nb, _, ratio = _headline(ens)
        tt = (p.get("inputs") or {}).get("text_tokens") or {}
        out += [f"Served ensembles vs the same engines (not like for like): {n} reaches {100 * ratio:.1f}% of the raw {eng} "
                f"engine at effective batch {eff} (engine batch {nb}). The ensemble tokenizes real texts (median "
                f"{fmt(tt.get('median'))} tokens, each request padded to a length bucket) while the engine runs {seq_b} tokens "
                "per sequence, so the ensemble does less model work per text; it also pays the tokenizer, (de)serialisation "
                "and the dynamic batcher's queue delay, and on a small machine the client competes with the server for cores. "
                f"Effective batch = concurrency x batch per request ({_v(p.get('batch_size'))}).", ""]
        out += _ratio_table(ens, "ensemble") + [""]
    elif not raw:
        out += ["no served model with a matching engine measurement (need <variant> or ensemble_<variant> in perf and "
                "<variant> in bench)", ""]
    return out


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


# ------------------------------------------------------------------------------------ the report
def _published(path: Path | None, bench: dict | None) -> dict | None:
    """The published benchmark, unless it is missing, unreadable or this run's own bench log."""
    if path is None or not Path(path).is_file():
        return None
    try:
        d = io.read_json(path)
    except ValueError:
        return None
    return None if d == bench or not isinstance(d, dict) or not d.get("engines") else d


LONG_LINE = 600  # prose past this does not read in a terminal or a diff
WRAP = 120


def wrap_prose(lines: list[str]) -> list[str]:
    """Long prose lines wrapped at WRAP characters (Markdown joins them back into one paragraph); tables, headings
    and code blocks as they are."""
    out, code = [], False
    for line in lines:
        for ln in line.split("\n"):
            code ^= ln.startswith("```")
            if len(ln) <= LONG_LINE or code or ln.lstrip().startswith(("|", "#")):
                out.append(ln)
                continue
            lead = ln[:len(ln) - len(ln.lstrip())]
            bullet = "- " if ln.lstrip().startswith("- ") else ""
            out += textwrap.wrap(ln.strip(), WRAP, initial_indent=lead, subsequent_indent=lead + " " * len(bullet),
                                 break_long_words=False, break_on_hyphens=False)
    return out


def render(logs_dir: Path = spec.LOGS, out: Path = spec.ROOT / "REPORT.md", published: Path | None = PUBLISHED) -> str:
    """Write the report for `logs_dir` to `out` (PNGs into `logs_dir`); `published`: the GPU benchmark the summary quotes
    (None: none). Returns the text."""
    logs_dir, out = Path(logs_dir), Path(out)
    ctx = Ctx(logs_dir, os.path.relpath(logs_dir.resolve(), out.resolve().parent),
              {k: _load(logs_dir, f) for k, f in LOG_FILES.items()},
              {d.name: x for d in sorted(p for p in logs_dir.iterdir() if p.is_dir())
               if (x := _load(d, LOG_FILES["perf"])) is not None and "_unreadable" not in x})
    ctx.published = _published(published, ctx.get("bench"))
    ctx.published_path = Path(published) if ctx.published else None
    name = (used_model(ctx) or {}).get("used")
    lines = [f"# enc2triton report{': ' + name if name else ''}", "",
             "Generated by `python -m enc2triton.report` from the logs folder only; the same logs give the same file. "
             "Each section says which log and run it comes from.", ""]
    for section in (summary_section, model_section, env_section, flops_section, quality_section, variants_section,
                    quant_peer_section, torch_section, perf_section, where_section, precision_section, peer_section, tune_section, bench_section, published_section, target_section,
                    reliability_section):
        lines += section(ctx)
    text = "\n".join(wrap_prose(lines)).rstrip() + "\n"
    io.write_text(out, text)
    return text


def main(argv=None) -> int:
    ap = cli.parser("python -m enc2triton.report", (
        "Step 9: write REPORT.md (and PNG plots in the logs folder) from the logs alone; deterministic."), artifacts=False)
    ap.add_argument("--out", type=Path, default=spec.ROOT / "REPORT.md", help="the report file (default %(default)s)")
    ap.add_argument("--published", default=None, help="the published GPU benchmark (a bench_engine.json) the summary quotes; "
                    f"'none' for none (default {_path(PUBLISHED)} when it exists)")

    def body(a) -> None:
        if not a.logs.is_dir():
            raise StageError(f"logs folder {a.logs} not found: run `make all` (or the stages you need) first")
        published = PUBLISHED if a.published is None else None if a.published.lower() == "none" else Path(a.published)
        if a.published is not None and published is not None and not published.is_file():  # 'none' in any case: none
            raise StageError(f"--published {a.published}: no such file")
        render(a.logs, a.out, published)
        print(f"wrote {a.out}")
    return cli.run(ap, body, argv)


if __name__ == "__main__":
    sys.exit(main())
