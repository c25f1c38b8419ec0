"""Serving performance, where a request's time goes, what each precision buys through the server, the serving peer,
the quantization peer and the serving-config search."""
from __future__ import annotations

from pathlib import Path

from enc2triton.core import spec
from enc2triton.serve import mps as mpsd, serving_stats
from enc2triton.report.common import (
    Ctx, P99_BUDGET_MS, SERVED_FP8_TARGET, S_MPS, S_PEER, S_PERF, S_PRECISION, S_QPEER, S_TUNE, S_WHERE, _absent, _cos,
    _incomplete, _link, _load, _machine, _num, _path, _span, _v, fmt, provenance, table,
)
from enc2triton.report.plots import plot_perf


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
    mps = ", CUDA MPS" if mpsd.recorded(p) == "on" else ""  # the GPU models' processes share the GPU
    return (f"{per} {what} per request" if per > 1 else f"1 {what[:-1] if what == 'texts' else what} per request") + \
        (f" ({folder}/{mps})" if folder else f" ({mps[2:]})" if mps else "")


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
                              model["requests_per_execution"], model.get("calls_per_execution"), model["execution_ms"],
                              ph.get("gpu", ph.get("engine")), copies,
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
                "model's execute(): the inter-process messages and copies between server and stub). Engine calls: the "
                "engine's calls per execution (CUDA-graph replays, one per length group the engine planned).", ""]
        out += table(["ensemble", "load", "concurrency", "texts / execution", "requests / execution", "engine calls",
                      "execution ms", "GPU",
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


def _load_key(p: dict) -> tuple:
    """What makes two sweeps the same load: requests, inputs, measurement rule and the server's cores."""
    from enc2triton.measure.perf import measured_rule

    inp = p.get("inputs") or {}
    return (p.get("protocol"), p.get("batch_size"), inp.get("seq_len"), inp.get("passage_tokens"), inp.get("texts"),
            tuple(sorted((k, str(v)) for k, v in measured_rule(p).items())), (p.get("cores") or {}).get("server"))


def mps_section(ctx: Ctx) -> list[str]:
    """Every model at every concurrency measured on a server without and on one with CUDA MPS, at the same load (the
    same requests, inputs, windows and server cores): what sharing the GPU between the instances' processes buys."""
    sweeps = [(f, p) for f, p in [("logs/", ctx.get("perf"))] + [(f"{k}/", v) for k, v in ctx.loads.items()] if p]
    under = [(f, p) for f, p in sweeps if mpsd.recorded(p) == "on"]
    rows = []
    for f_on, on in under:
        base = next(((f, p) for f, p in sweeps if mpsd.recorded(p) == "off" and _load_key(p) == _load_key(on)), None)
        for n, e in (on.get("models") or {}).items() if base else ():
            theirs = {r["concurrency"]: r for r in (base[1].get("models", {}).get(n) or {}).get("rows") or []}
            for r in e.get("rows") or []:
                b = theirs.get(r["concurrency"])
                if b and b.get("throughput") and r.get("throughput"):
                    mark = " †" if r.get("unstable") or b.get("unstable") else ""
                    rows.append([n, _load_name({**on, "server": {}}, None), r["concurrency"],
                                 f"{fmt(b['throughput'])} (p99 {fmt(b.get('p99_ms'))})",
                                 f"{fmt(r['throughput'])} (p99 {fmt(r.get('p99_ms'))})",
                                 f"{r['throughput'] / b['throughput']:.2f}x{mark}", f"{base[0]} vs {f_on}"])
    if not rows:
        return []
    first = under[0][1]
    out = ["## " + S_MPS, ""]
    out += provenance(ctx, "logs/perf_summary.json and logs/*/perf_summary.json (each server's `mps` in its `server` entry)",
                      _span(first.get("started"), first.get("finished")), _machine(first.get("hardware")), first.get("started"))
    out += ["Texts (or rows) per second and p99 in ms of each model on a server without CUDA MPS and on one with it (`serve.sh "
            "start --mps on`: the GPU instances' processes share the GPU instead of taking turns), at the same load and "
            "concurrency, one after the other on the same machine († an unstable level).", ""]
    out += table(["model", "load", "concurrency", "without MPS", "with MPS", "with / without", "folders"], rows) + [""]
    return out


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
                if not e.get("rows"):  # never measured (it failed to load, say): not "none within the budget"
                    why = ((e.get("failed") or [{}])[0].get("error") or e.get("status") or "-").split(":")[0]
                    rows.append([n, load, f"not measured ({e.get('status', 'failed')}: {why})", "-"])
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
    """Our INT8/FP8 beside NVIDIA ModelOpt's PTQ on the same checkpoint and texts: ONNX (logs/quant_peers.json, python -m
    enc2triton.quant_peers) and PyTorch (logs/quant_peers_torch.json, python -m enc2triton.quant_peers_torch); absent
    when both logs are (an unreadable one counts as absent)."""
    onnx_part, torch_part = _quant_peer_onnx(ctx), _quant_peer_torch(ctx)
    if not onnx_part and not torch_part:
        return []
    return ["## " + S_QPEER, ""] + onnx_part + torch_part


def _quant_peer_torch(ctx: Ctx) -> list[str]:
    d = _load(ctx.dir, "quant_peers_torch.json")
    if not d or "_unreadable" in d:
        return []
    from enc2triton.measure.quant_peers_torch import intro, table_rows

    out = ["### PyTorch: ModelOpt's mtq beside our torch_int8 / torch_fp8", ""]
    out += provenance(ctx, "logs/quant_peers_torch.json (python -m enc2triton.quant_peers_torch)",
                      _span(d.get("started"), d.get("finished")), _machine(d.get("hardware")), d.get("started"))
    head, rows = table_rows(d)
    return out + [intro(d), ""] + table(head, rows) + [""]


def _quant_peer_onnx(ctx: Ctx) -> list[str]:
    d = _load(ctx.dir, "quant_peers.json")
    if not d or "_unreadable" in d:
        return []
    from enc2triton.measure.quant_peers import table_rows

    mo = d.get("modelopt") or {}
    v = mo.get("versions") or {}
    cal, ev = d.get("calibration") or {}, d.get("evaluation") or {}
    out = provenance(ctx, "logs/quant_peers.json (python -m enc2triton.quant_peers)",
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
