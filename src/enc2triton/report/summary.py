"""The summary table (every variant x quality, this run's speed, the published run's speed), and the model,
environment and FLOPs sections."""
from __future__ import annotations

from pathlib import Path

from enc2triton.core import host, spec
from enc2triton.report.common import (
    Ctx, LOG_FILES, S_BENCH, S_ENV, S_FLOPS, S_FP8, S_INT8, S_MODEL, S_PUBLISHED, S_QUALITY, S_SUMMARY, S_TORCH,
    S_VARIANTS, _absent, _cos_pair, _link, _machine, _minute, _num, _ok, _path, _stale, _top, _v, _verdict, fmt,
    missing, provenance, table,
)


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
            f"{_link('PyTorch engines', S_TORCH)}). Floor: the precision's minimum mean / min cosine and, for the "
            "8-bit ones, top-10 agreement (spec.FLOORS; pass as the log recorded it).",
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
