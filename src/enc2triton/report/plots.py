"""The report's PNG plots (serving throughput and latency, the engine benchmark), written beside the logs; deterministic
(no date or software tag in the files)."""
from __future__ import annotations

from pathlib import Path

from enc2triton.core import io, spec
from enc2triton.report.common import PLOTS, _ok, _v


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
