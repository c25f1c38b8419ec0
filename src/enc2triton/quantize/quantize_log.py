"""logs/quantize.{json,md} of the precision-variants stage (quantize.py): one row per variant (size, quality vs
the fp32 export and its floor, CPU latency), the int8 variant's record and its search, the fp8 graph's plan, in JSON
and Markdown."""
from __future__ import annotations

import time
from pathlib import Path

from enc2triton.core import host, io, metrics, spec
from enc2triton.quantize.int8_search import Int8Settings, search_record
from enc2triton.core.markdown import table as md_table
from enc2triton.quantize.variant_quality import latency_ms


def _mb(path: Path) -> float:
    return round(Path(path).stat().st_size / 1e6, 1)


def _variants_table(st, result: dict, old_table: dict, measure_latency: bool, not_built: dict) -> dict:
    """One row per variant (fp32 first): size, quality vs fp32 and its floor, CPU latency (measured now, or kept from
    the previous log without measure_latency), the not-built precisions with their reason."""
    table = dict(old_table)
    rows = {"fp32": {"path": str(st.fp32_path)}}
    for p, e in result["variants"].items():
        if e.get("onnx"):
            rows[p] = {"path": str(io.resolve(e["onnx"]["path"], st.artifacts)), "entry": e}
    for p, r in rows.items():
        e = r.get("entry", {})
        q, qe = e.get("quality") or {}, e.get("quality_graph_exact") or {}
        ref = 1.0 if p == "fp32" else None
        row = {"mb": _mb(r["path"]), "mean_cos": q.get("mean_cos", ref), "min_cos": q.get("min_cos", ref),
               "max_abs": q.get("max_abs"), "rel_l2": q.get("rel_l2"), "top10": q.get("top10", ref),
               "exact_mean_cos": qe.get("mean_cos"), "exact_min_cos": qe.get("min_cos"), "exact_top10": qe.get("top10")}
        fl = spec.FLOORS.get(p)
        row["floor"] = metrics.floor_text(fl) if fl else None
        row["pass"] = metrics.passes(row, fl) if fl and row["mean_cos"] is not None else None
        unserved = spec.variant("onnx", p).unserved
        if e.get("fused"):
            row["note"] = "fused GPU graph (enc2triton.optimize): not measured on CPU"
        elif unserved:  # a graph ONNX Runtime does not serve (FP8: TensorRT's source) has no CPU latency to measure
            row["note"] = f"not served: {unserved}; no CPU latency, quality as written"
        elif p in table and not measure_latency:
            row["cpu_ms_b8_s128"] = table[p].get("cpu_ms_b8_s128")
            row["cpu_ms_b8_s128_min"] = table[p].get("cpu_ms_b8_s128_min")
        table[p] = row
    timed = [p for p, r in rows.items() if not r.get("entry", {}).get("fused") and "note" not in table[p]]
    if measure_latency and timed:
        lat = latency_ms({p: rows[p]["path"] for p in timed}, st.tokenizer, st.inputs, st.eval_texts or ["latency sample sentence"])
        for p in timed:
            table[p]["cpu_ms_b8_s128"], table[p]["cpu_ms_b8_s128_min"] = lat[p]["median"], lat[p]["min"]
    for p, reason in not_built.items():
        table[p] = {"mb": None, "pass": None, "note": "not built: " + reason}
    return table


def _search_log(search: dict) -> dict:
    return {
        "calibration": search["calibration"], "target_on_held_out": search["target"], "held_out": search["held_out"],
        "evaluations": search["evaluations"], "seconds": search["seconds"],
        "range_methods_by_role": search["roles"],
        "sensitivity": [{"node": r["node"], "drop": round(r["drop"], 7), "min_cos": round(r["min_cos"], 5), "top10": r.get("top10"),
                         "score": round(r["score"], 4),
                         "kept_fp32": r["node"] in search["excluded"]} for r in search["sensitivity"]],
        "greedy": search["greedy"],
    }


def write_logs(logs: Path, st, result: dict, measure_latency: bool, not_built: dict) -> None:
    """logs/quantize.json (merged with the previous run's for variants not rebuilt) and logs/quantize.md."""
    json_path = logs / "quantize.json"
    old = io.read_json(json_path) if json_path.exists() else {}
    table = _variants_table(st, result, old.get("variants_table") or {}, measure_latency, not_built)
    int8 = result["variants"].get("int8") or (old.get("int8") or {})
    search = st.search
    if search is None and (cp := search_record(int8, st.artifacts)):
        search = io.read_json(cp)
    machine = host.describe()
    out = {
        "model": result["model"], "evaluation_texts": result["evaluation_texts"], "host": machine,
        "started": result["started"], "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "note": "quality = sentence embeddings vs the fp32 ONNX export on the evaluation texts (never used to choose anything); "
                "latency = ONNX Runtime CPU, batch 8 x 128 tokens, median (and min) of 10 round-robin runs on "
                f"{machine} (noisy where other processes share the machine; "
                "x86 ORT has no FP16 kernels, so fp16/best are not faster here)",
        "variants_table": table,
        "int8": {k: v for k, v in int8.items() if k not in ("quantized_nodes",)} if int8 else {},
        "fp8": result["variants"].get("fp8") or old.get("fp8") or {},  # method, calibration, quality of TensorRT's fp8 graph
    }
    if search:
        out["int8_search"] = _search_log(search)
    io.write_json(json_path, out)
    io.write_text(logs / "quantize.md", _markdown(out, st.settings, not_built))
    print(f"logs: {json_path}, {logs / 'quantize.md'}")


def _f(x, nd=6):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _md_variants(d: dict, not_built: dict) -> list[str]:
    head = ["variant", "MB", "mean cos", "min cos", "top-10 agreement", "rel L2", "graph-exact mean / min cos, top-10",
            "CPU ms (8x128) median / min", "floor", "pass"]
    rows = []
    for p, r in d["variants_table"].items():
        if p in not_built:
            continue
        exact = (f"{_f(r.get('exact_mean_cos'))} / {_f(r.get('exact_min_cos'))}, {_f(r.get('exact_top10'), 3)}"
                 if r.get("exact_mean_cos") is not None else "-")
        rows.append([p, _f(r.get("mb"), 1), _f(r.get("mean_cos")), _f(r.get("min_cos")), _f(r.get("top10"), 3),
                     _f(r.get("rel_l2"), 4), exact, f"{_f(r.get('cpu_ms_b8_s128'), 1)} / {_f(r.get('cpu_ms_b8_s128_min'), 1)}",
                     r.get("floor") or "-", r.get("pass")])
    return md_table(head, rows) + [
        "", "Quality columns: ONNX Runtime CPU with default optimizations (its x86 int8 kernels; what the floors are checked "
        "on). Graph-exact: the same graph with ORT graph optimizations off, i.e. the Q/DQ arithmetic as written (what "
        "TensorRT implements with int32 accumulation and fused epilogues).", "",
        *(f"{p}: {reason}" for p, reason in not_built.items()), ""]


def _md_int8(i8: dict) -> list[str]:
    cal = i8.get("calibration", {})
    sq = i8.get("smoothquant") or {}
    return ["## INT8", "", f"- method: {i8.get('method')}",
            f"- SmoothQuant alpha: {sq.get('alpha')} on {len(sq.get('tensors') or [])} MatMul input tensors "
            "(alpha search, everything quantized, max ranges, sweep slice: "
            + ", ".join(f"{r['alpha']}: {r['mean_cos']:.5f}/{r['min_cos']:.4f}" for r in sq.get("alpha_search") or []) + ")",
            f"- calibration: {cal.get('data')} ({cal.get('samples')} texts, {cal.get('tokens')} tokens; {cal.get('held_out_samples')} more "
            f"held out for the search; seed {cal.get('seed')}); {cal.get('batching')}",
            f"- range method: {cal.get('method')}",
            f"- MatMuls quantized: {i8.get('quantized_count')} of {i8.get('candidate_count')}; Q/DQ nodes: "
            f"{i8.get('quantize_linear')} QuantizeLinear, {i8.get('dequantize_linear')} DequantizeLinear; zero points all 0: "
            f"{i8.get('zero_points_all_zero')}",
            f"- kept FP32 (excluded): {', '.join(i8.get('excluded_nodes') or []) or 'none'}",
            f"- held-out calibration slice: switch-model estimate {i8.get('held_out_quality')}, ORT CPU {i8.get('held_out_quality_ort')}, "
            f"target {i8.get('target_held_out')}",
            f"- time: {i8.get('seconds')} s (search cached: {i8.get('search_cached')})", ""]


def _md_search(srch: dict, methods) -> list[str]:
    L = ["### Range method per tensor role (sweep-slice mean cosine with that role quantized alone; chosen by the "
         "same score as the sensitivity table)", ""]
    L += md_table(["role", "tensors", "chosen", *methods],
                  [[f"`{r}`", v["tensors"], v["method"], *(_f(v.get(m)) for m in methods)] for r, v in srch["range_methods_by_role"].items()])
    L += ["", "### Sensitivity (each MatMul quantized alone on the sweep slice; drop = 1 - mean cosine; score = the larger "
          "share of the floor budgets used: max(drop / (1 - floor mean), (1 - min cos) / (1 - floor min)); greedy order; "
          "top-10 among the sweep texts, shown, not scored)", ""]
    L += md_table(["node", "drop", "min cos", "top-10", "score", "kept FP32"],
                  [[f"`{r['node']}`", f"{r['drop']:.6f}", f"{r['min_cos']:.5f}", _f(r.get("top10"), 4), f"{r['score']:.4f}",
                    "yes" if r["kept_fp32"] else ""]
                   for r in sorted(srch["sensitivity"], key=lambda r: -r["score"])])
    L += ["", "### Greedy search (the held-out slice; until it meets the target)", ""]
    L += md_table(["step", "excluded", "mean cos", "min cos", "top-10"],
                  [[f"{t['step']}{'' if t.get('kept', True) else ' (rejected)'}", t["excluded"], f"{t['mean_cos']:.6f}", f"{t['min_cos']:.5f}",
                    _f(t.get("top10"), 4)]
                   for t in srch["greedy"]])
    return L + ["", f"{srch['evaluations']} held-out evaluations, search {srch['seconds']} s "
                    f"(calibration pass {srch['calibration']['seconds']} s).", ""]


def _md_fp8(f8: dict) -> list[str]:
    """The FP8 graph's plan (fp8_plan.py, shared with torch_fp8): what stays FP32 and the search that chose it."""
    plan, cal = f8.get("plan") or {}, f8.get("calibration") or {}
    L = ["## FP8", "", f"- method: {f8.get('method')}",
         f"- calibration: {cal.get('data')} ({cal.get('samples')} texts, {cal.get('tokens')} tokens)",
         f"- MatMuls in FP8: {f8.get('quantized_matmuls')}, kept FP32: {f8.get('fp32_matmuls')}, the linear layers "
         f"{', '.join(plan.get('kept') or []) or 'none'} ({_f(plan.get('kept_weight_share'), 4)} of the linear weights)",
         f"- time: {f8.get('seconds')} s (the plan {plan.get('seconds')} s)", ""]
    if plan.get("calibration_steps"):
        L += [f"### Search on the calibration texts (target {metrics.floor_text(plan['calibration_target'])}; top-10 over blocks of "
              f"{plan.get('top10_block')} texts; layers kept in order of sensitivity per weight)", ""]
        ranked = list(plan.get("sensitivity") or {})
        L += md_table(["layers kept", "last one kept", "mean cos", "min cos", "top-10"],
                      [[t["kept"], ranked[t["kept"] - 1] if t["kept"] else "-", _f(t.get("mean_cos")),
                        _f(t.get("min_cos")), _f(t.get("top10"), 4)] for t in plan["calibration_steps"]])
        L += ["", f"Target reached: {plan.get('target_reached')}. BF16 alone: 1 - mean cos {plan.get('bf16_error')}.", ""]
    return L


def _markdown(d: dict, s: Int8Settings, not_built: dict) -> str:
    L = ["# Precision variants (quantize.py)", "", f"Model: {d['model']}. {d['note']}.", ""] + _md_variants(d, not_built)
    if d.get("int8"):
        L += _md_int8(d["int8"])
    if d.get("int8_search"):
        L += _md_search(d["int8_search"], s.methods)
    if d.get("fp8"):
        L += _md_fp8(d["fp8"])
    return "\n".join(L) + "\n"
