"""Quality vs the FP32 reference, the ONNX precision variants (the INT8 and FP8 graphs in words) and the PyTorch
engines."""
from __future__ import annotations

import re

from enc2triton.core import spec
from enc2triton.report.common import (
    Ctx, FP8_METHOD, S_FP8, S_INT8, S_QUALITY, S_TORCH, S_VARIANTS, _absent, _cos, _cos_pair, _host, _incomplete,
    _minute, _num, _path, _span, _top, _v, _verdict, fmt, provenance, table,
)


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
    meets = _num(held.get("mean_cos")) and all(_num(held.get(k)) and held[k] >= x for k, x in target.items())
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
            f"min cos {_cos(held.get('min_cos'))} (target >= {_v(target.get('min_cos'))})"
            + (f", top-10 {_top(held.get('top10'))} (target >= {_v(target['top10'])})" if "top10" in target else "") + ": "
            f"{'meets the target' if meets else 'BELOW the target'}"
            + (f"; ONNX Runtime CPU on the same slice: {_cos_pair(ort)}" if ort else "")
            + (f", top-10 {_top(ort['top10'])}" if _num(ort.get("top10")) else "") + ".",
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
                         " / ".join(str(_v(fl[k])) for k in ("mean_cos", "min_cos", "top10") if k in fl) or "-",
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
    out += table(["variant", "mean / min cos vs FP32", "top-10", "floor mean / min (/ top-10)", "pass", "compile s", "load s", "MB",
                  "compiled vs eager"], rows) + [""]
    return out + notes + [""]
