"""REPORT.md's shared pieces: section titles and targets, number and path formats, the logs context (Ctx) and each
section's provenance line."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from enc2triton.core import io, markdown, spec

TARGET = 0.70  # served ensemble throughput / raw engine throughput at the same effective batch
RAW_TARGET = 0.80  # a raw model through Triton / the same engine alone, same batch and tokens (issue 18)
PLOTS = {"throughput": "perf_throughput.png", "latency": "perf_latency.png", "bench": "bench_throughput.png"}
# The published GPU benchmark the summary quotes: the latest with every engine (ours and the peers, DistilBERT-base shapes)
PUBLISHED = spec.ROOT / "results" / "h100" / "2026-12-07c" / "engines" / "distil" / "logs" / "bench_engine.json"
LOG_FILES = {"model": "model.json", "flops": "flops.json", "quality": "quality.json", "quantize": "quantize.json",
             "torch": "torch_build.json", "perf": "perf_summary.json", "bench": "bench_engine.json",
             "soak": "soak.json", "overload": "overload.json", "fusion": "fusion_ab.json"}
STAMPED = ("quality", "torch", "perf", "bench", "soak", "overload")  # logs with a `started` time
NO_FINISH = "no finish time recorded: interrupted or still running"
# How quantize.build_fp8 built it before it recorded its method (quantize.json files of then; since, each says its own)
FP8_METHOD = ("FP8 E4M3 Q/DQ on the linear layers' MatMuls: activations per tensor (calibrated |max| / 448), weights per "
              "output channel; attention, LayerNorm, Softmax and pooling stay FP32; opset 19")

# Section titles (their Markdown anchors are what the summary links to)
S_SUMMARY, S_MODEL, S_ENV, S_FLOPS = "Summary", "Model", "Environment", "FLOPs and roofline"
S_QUALITY, S_VARIANTS, S_INT8, S_FP8 = "Quality vs the FP32 reference", "ONNX precision variants", "INT8 ONNX graph", "FP8 ONNX graph"
S_TORCH, S_PERF, S_BENCH = "PyTorch engines", "Serving performance", "Engine benchmark"
S_PUBLISHED, S_TARGET, S_LOAD = "Published GPU benchmark", "Served vs engine throughput", "Load and overload"
S_WHERE = "Where a request's time goes"
S_FUSION = "Engine fusions (A/B)"
S_PEER, S_TUNE = "Serving peer", "Serving-config search"
S_PRECISION = "What each precision buys through the server"
S_MPS = "CUDA MPS: the same load without and with it"
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


def _machine(hw: dict | str | None) -> str | None:
    """host.hardware()'s dict in a line; a log that recorded host.describe()'s line instead keeps it."""
    if not hw:
        return None
    if isinstance(hw, str):
        return _host(hw)
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
