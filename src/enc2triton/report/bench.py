"""The engine benchmark (peers, MFU, where the GPU time goes), the engine fusions A/B (scripts/fusion_ab.py), the
published GPU benchmark and served vs engine throughput."""
from __future__ import annotations

from enc2triton.core import spec
from enc2triton.report.common import (
    Ctx, RAW_TARGET, S_BENCH, S_FUSION, S_PUBLISHED, S_TARGET, TARGET, _absent, _incomplete, _machine, _minute, _num, _ok,
    _path, _pct, _span, _v, fmt, provenance, table,
)
from enc2triton.report.plots import plot_bench
from enc2triton.report.summary import _published_model
from enc2triton.report.serving import _util, nearest


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


def _call_cost(b: dict) -> list[str]:
    """Each PyTorch engine's fixed cost per call, from its two smallest batches (a straight line through their times):
    what TorchEngine.length_groups should count a call as, against the one spec.CALL_TOKENS it counts for every engine."""
    seq, planner = b.get("seq_len"), spec.CALL_TOKENS.get("cuda" if b.get("device") == "gpu" else "cpu")
    if not seq:
        return []
    rows = []
    for n, e in (b.get("engines") or {}).items():
        pts = sorted((r["batch"], r["mean_ms"]) for r in _ok(e) if r.get("mean_ms"))
        if e.get("peer") or not n.startswith("torch_") or len(pts) < 2:
            continue
        (b1, t1), (b2, t2) = pts[:2]
        per_token = (t2 - t1) / ((b2 - b1) * seq)  # ms
        if per_token <= 0:
            continue
        fixed = t1 - b1 * seq * per_token
        rows.append([n, f"{b1} and {b2}", fmt(fixed), f"{1e3 * per_token:.3f}", round(fixed / per_token), planner])
    if not rows:
        return []
    return [f"Fixed cost of one call (seq {seq}; a line through the two smallest batches' times): the length planner "
            "(runtime/engines.py, TorchEngine.length_groups) counts every call of every engine as spec.CALL_TOKENS tokens.", ""] + \
        table(["engine", "batches", "fixed ms per call", "us per token", "fixed cost in tokens", "spec.CALL_TOKENS"], rows) + [""]


def _profiles(e: dict) -> dict[int, dict]:
    """An engine's kernel profiles by batch ("profiles"; logs before 2026-12-08 hold one "profile", the largest batch)."""
    got = e.get("profiles") or ([e["profile"]] if e.get("profile") else [])
    return {p["batch"]: p for p in got if p.get("groups")}


def _profile_picks(b: dict, batch: int) -> list[tuple[str, str, dict]]:
    """(label, engine, profile): our fastest FP16 and FP8 engines and the fastest FP16 peer at `batch`, among those
    profiled there."""
    engines = b.get("engines") or {}
    prof = {n: p[batch] for n, p in ((n, _profiles(e)) for n, e in engines.items()) if batch in p}
    speed = lambda n: next((r["seq_per_s"] for r in _ok(engines[n]) if r["batch"] == batch), 0.0)  # noqa: E731
    picks, seen = [], set()
    for label, peer, prec in (("our fastest FP16", False, "fp16"), ("our fastest FP8", False, "fp8"), ("fastest FP16 peer", True, "fp16")):
        cands = [(speed(n), n) for n in prof if bool(engines[n].get("peer")) == peer and engines[n].get("precision") == prec]
        if cands:
            _, n = max(cands)
            if n not in seen:
                seen.add(n)
                picks.append((label, n, prof[n]))
    return picks


def _kernels(b: dict) -> list[str]:
    batches = sorted({x for e in (b.get("engines") or {}).values() for x in _profiles(e)}, reverse=True)
    return [line for batch in batches for line in _kernels_at(b, batch)]


def _kernels_at(b: dict, batch: int) -> list[str]:
    picks = _profile_picks(b, batch)
    if not picks:
        return []
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
    out += _incomplete(b) + _bench_intro(b) + _bench_overview(b) + _call_cost(b) + _kernels(b) + _bench_detail(b)
    out += [f"- {s}" for s in b.get("skipped", [])] + ([""] if b.get("skipped") else [])
    plots = plot_bench(b, ctx.dir)
    return out + [f"![{x}]({ctx.rel}/{x})" for x in plots] + ([""] if plots else [])


def _precision(variant: str) -> str:
    """A fusion_ab.py variant's precision: its fp8_ / int8_ prefix, else FP16."""
    head = variant.split("_")[0]
    return head if head in ("fp8", "int8") else "fp16"


def fusion_section(ctx: Ctx) -> list[str]:
    """scripts/fusion_ab.py's variants (GPU runs that ran it): each against the same precision without the change and
    against the FP16 peer, all in one process."""
    f = ctx.get("fusion")
    if not f or not f.get("variants"):
        return []
    v = f["variants"]
    peer = (v.get("peer_static") or {}).get("seq_per_s")
    rows = []
    for name, r in v.items():
        if "error" in r:
            rows.append([name, "-", "-", "-", "-", "failed: " + r["error"][:160]])
            continue
        # the variant it was compared with, as fusion_ab.py recorded it: cos_min_vs_<base>
        base, cos = next(((k.removeprefix("cos_min_vs_"), x) for k, x in r.items() if k.startswith("cos_min_vs_")),
                         (name, None))
        if base not in v:  # a log from before 2026-12-07d named the absent base: the run's first of that precision was it
            base = next((n for n in v if _precision(n) == _precision(base)), base)
        b = (v.get(base) or {}).get("seq_per_s")
        vs = f"{r['seq_per_s'] / b:.2f}x" if b and base != name else ""
        rows.append([name, r["ms"], r["seq_per_s"], vs, f"{r['seq_per_s'] / peer:.2f}x" if peer else "-",
                     "" if cos is None else f"{cos:.6f} vs {base}"])
    out = ["## " + S_FUSION, ""]
    out += provenance(ctx, "logs/fusion_ab.json (scripts/fusion_ab.py)", _span(f.get("started"), f.get("finished")),
                      _machine(f.get("hardware")) or f.get("device"), f.get("started"))
    out += _incomplete(f)
    out += [f"DistilBERT-base shapes, batch {f.get('batch')} x {f.get('seq')} tokens, each variant compiled and replayed as "
            "a CUDA graph (median of 5 timings); the variants are named in the script's help. An 8-bit variant is compared "
            "with the same precision's dynamic graph, an FP16 one with `dynamic` (FFN1's GELU a separate pass); where that "
            "graph is not in the run, with the run's first variant of its precision.", ""]
    return out + table(["variant", "ms per batch", "seq/s", "vs the same precision without", "vs the FP16 peer",
                        "min cosine of the embeddings"], rows) + [""]


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
