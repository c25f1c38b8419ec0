"""Precision variants of the verified fp32 ONNX export: fp16, int8 (explicit symmetric Q/DQ) and best.

- fp16: FP16 compute, FP32 inputs/outputs; LayerNormalization, Softmax (and the mask Add feeding it), any
  ReduceMean/Pow/Sqrt LayerNorm decomposition and the whole mean-pooling tail stay FP32 (fp16.py).
- int8: explicit QuantizeLinear/DequantizeLinear, SYMMETRIC int8 (zero point 0) for activations and
  per-channel weights, as TensorRT requires. Q/DQ sits on MatMul inputs only (never on a MatMul output or
  on the residual stream). Ranges come from data/calibration.txt; which range method each kind of tensor
  uses and which MatMuls stay FP32 are chosen by measuring the sentence-embedding cosine on a held-out
  slice of the calibration set (evaluation.txt is never looked at while choosing anything): int8_search.py,
  with calibration.py (ranges) and smoothquant.py (outlier channels moved into the weights). The search computes in
  float64 with the Q/DQ arithmetic written out (exact.py): the same int8 graph on every CPU.
- best: the int8 graph with FP16 wherever no Q/DQ sits (TensorRT 10 `--best`; the strongly typed graph
  TensorRT 11 needs). Q/DQ scales stay FP32; the same sensitive ops stay FP32.
- fp8: explicit FP8 (E4M3) Q/DQ on the linear layers' MatMuls, per-tensor activation scales calibrated on
  data/calibration.txt, per-channel weights (fp8_qdq.py): TensorRT's fp8 source. ONNX Runtime has no FP8 kernels,
  so it is measured with graph optimizations off and not served (spec: onnx_fp8 is unserved).

This module is the stage: one builder per precision (BUILDERS; adding a precision = its entry in spec plus a
builder here), the manifest records, and logs/quantize.{json,md}. Every variant is measured against the fp32
export on the evaluation texts (variant_quality.py). Search results are cached in artifacts/quantize_cache by
hash of the fp32 ONNX, the calibration texts and the settings, so a rerun is instant.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import cli, host, io, metrics, spec
from .calibration import split_calibration
from .fp16 import to_fp16
from .int8_search import METHOD_VERSION, Int8Settings, build_int8, search_int8, search_record
from .io import StageError
from .markdown import table as md_table
from .onnx_graph import QDQ_OPS, load, qdq_summary, save_checked, weight_matmuls
from .texts import load_tokenizer, read_calibration, read_texts, texts_sha256
from .variant_quality import cache_reference, latency_ms, quality

__all__ = ["BUILDERS", "NOT_BUILT", "VARIANTS", "Int8Settings", "quality", "run", "main"]

NOT_BUILT: dict[str, str] = {}  # ONNX precisions of spec recorded with the reason they are not built here


# ------------------------------------------------------------------------------------------ what builders share
@dataclass
class Stage:
    """One run's options, the manifest's fp32 export and tokenizer, and what this run built (builders read it)."""

    artifacts: Path
    manifest: dict
    settings: Int8Settings
    calibration: Path
    evaluation: Path | None
    force: bool = False
    progress: bool = True
    no_cache: bool = False
    cache_dir: Path | None = None
    built: dict = field(default_factory=dict)  # precision -> entry written by this run
    search: dict | None = None  # the int8 search record, when this run built int8
    # from the manifest (__post_init__)
    fp32_entry: dict = field(init=False)
    fp32_path: Path = field(init=False)
    fp32_sha: str = field(init=False)
    inputs: list = field(init=False)
    max_length: int = field(init=False)
    tokenizer: object = field(init=False)
    paths: dict = field(init=False)  # precision -> its ONNX file
    eval_texts: list | None = field(init=False)
    _model: object = field(init=False, default=None)

    def __post_init__(self):
        fp32 = io.fp32_export(self.manifest, self.artifacts)
        self.fp32_entry, self.fp32_path, self.fp32_sha = fp32, io.resolve(fp32["path"], self.artifacts), fp32["sha256"]
        self.inputs = list(self.manifest["inputs"])
        self.max_length = int(self.manifest.get("shapes", {}).get("max_seq", 512))
        self.tokenizer = load_tokenizer(self.artifacts / self.manifest.get("tokenizer_dir", "tokenizer"))
        self.paths = {p: self.artifacts / "onnx" / f"model_{p}.onnx" for p in BUILDERS}
        ev = self.evaluation
        self.eval_texts = read_texts(ev) if ev and Path(ev).exists() else None

    def fp32_model(self):
        if self._model is None:
            self._model = load(self.fp32_path)
        return self._model

    def recorded(self, precision: str) -> dict | None:
        """The manifest's entry for `precision` as on disk now (another stage may have written meanwhile)."""
        return (io.load_manifest(self.artifacts).get("variants") or {}).get(precision)

    def measure(self, entry: dict, path: Path, exact: bool = False, optimized: bool = True) -> None:
        """entry["quality"] (ORT CPU, default optimizations) vs fp32 on the evaluation texts; with `exact` also the
        graph's own arithmetic, without ORT's x86 int8 kernel fusions (entry["quality_graph_exact"]). optimized=False:
        a graph ORT's fusions cannot run (FP8 Q/DQ) is measured as written only."""
        if not self.eval_texts:
            return
        args = (self.eval_texts, self.tokenizer, self.inputs, self.max_length)
        cache_reference(self.fp32_path, *args)
        q = quality(self.fp32_path, path, *args, graph_optimizations=optimized)
        entry["quality"] = {**q, "texts": io.rel(self.evaluation), "reference": "onnx fp32",
                            "runtime": "onnxruntime CPU, " + ("default optimizations" if optimized else "graph optimizations disabled")}
        if exact and optimized:
            qe = quality(self.fp32_path, path, *args, graph_optimizations=False)
            entry["quality_graph_exact"] = {**qe, "runtime": "onnxruntime CPU, graph optimizations disabled"}


def _mb(path: Path) -> float:
    return round(Path(path).stat().st_size / 1e6, 1)


def _record(artifacts: Path, precision: str, entry: dict) -> None:
    io.update_manifest("variants", entry, artifacts, key=precision)


# ------------------------------------------------------------------------------------------ builders
def build_fp16(st: Stage) -> dict:
    entry, path = st.recorded("fp16"), st.paths["fp16"]
    if not st.force and io.variant_up_to_date(entry, st.artifacts, source_sha256=st.fp32_sha):
        print("fp16: up to date" + (" (fused GPU graph from enc2triton.optimize; --force rebuilds the portable one)" if entry.get("fused") else ""))
        return entry
    t0 = time.perf_counter()
    m16, info = to_fp16(st.fp32_model())
    save_checked(m16, path)
    entry = {"onnx": io.artifact_entry(path, st.artifacts),
             "method": "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True) on the standard-op graph "
                       "(portable: ONNX Runtime CPU/CUDA and TensorRT strongly typed)",
             "source_sha256": st.fp32_sha, "keep_io_types": True, **info, "seconds": round(time.perf_counter() - t0, 1)}
    st.measure(entry, path)
    _record(st.artifacts, "fp16", entry)
    st.built["fp16"] = entry
    print(f"fp16: wrote {path} ({_mb(path)} MB)")
    return entry


def _cache_key(fp32_sha: str, texts: list[str], s: Int8Settings, max_length: int, model_cfg: str | None) -> str:
    import onnxruntime

    blob = json.dumps({"fp32": fp32_sha, "texts": texts_sha256(texts), "settings": s.as_dict(), "max_length": max_length,
                       "config": model_cfg, "version": METHOD_VERSION, "onnxruntime": onnxruntime.__version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _cached_search(st: Stage, calib_texts: list[str], key: str) -> tuple[dict, Path, bool]:
    """(the int8 search record, its cache file, whether it came from there): read when cached, else searched and saved."""
    cache_path = Path(st.cache_dir or st.artifacts / "quantize_cache") / f"int8-search-{key[:16]}.json"
    search = io.read_json(cache_path) if cache_path.exists() and not st.no_cache else None
    cached = search is not None and search.get("key") == key
    if cached:
        print(f"int8: search results from cache {cache_path}")
    else:
        search = search_int8(st.fp32_model(), st.tokenizer, st.inputs, st.max_length, calib_texts, st.settings, st.progress)
        search["key"] = key
        io.write_json(cache_path, search)
    return search, cache_path, cached


def _int8_entry(st: Stage, search: dict, info: dict, key: str, calib_texts: list[str], cache_path: Path, cached: bool,
                seconds: dict) -> dict:
    s = st.settings
    roles = {r: v["method"] for r, v in search["roles"].items()}
    cal = search["calibration"]
    return {
        "onnx": io.artifact_entry(st.paths["int8"], st.artifacts),
        "method": "SmoothQuant migration (per-channel Mul before the weight MatMuls, weights rescaled; exact in fp32) + "
                  "onnxruntime.quantization.quantize_static, QuantFormat.QDQ, QInt8 activations and weights, symmetric "
                  "(zero point 0, TensorRT-compatible), per-channel weights, Q/DQ on MatMul inputs only; "
                  "sensitive MatMuls kept FP32 by a measured greedy search",
        "source_sha256": st.fp32_sha, "search_key": key,
        "smoothquant": {k: v for k, v in search["smoothquant"].items() if k != "factors"},
        "calibration": {"data": io.rel(st.calibration), "data_sha256": texts_sha256(calib_texts),
                        "samples": cal["texts"], "held_out_samples": cal["held_out_texts"],
                        "tokens": cal["tokens"], "batching": cal["batching"],
                        "seed": s.seed, "method": "per tensor role, the range method with the lowest score (largest share of the floor "
                        "budgets used, measured on the held-out calibration slice) among " + ", ".join(s.methods)
                        + "; ranges computed from |max| and a |x| histogram of the calibration activations",
                        "role_methods": roles},
        "quantized_nodes": search["quantized"], "excluded_nodes": search["excluded"],
        "quantized_count": len(search["quantized"]), "candidate_count": len(search["quantized"]) + len(search["excluded"]),
        "held_out_quality": search["held_out"], "target_held_out": search["target"],
        "search_cache": io.rel(cache_path, st.artifacts), "search_cached": cached,
        "seconds": seconds,
        **{k: v for k, v in info.items() if k != "extra_options"}, "extra_options": info["extra_options"],
    }


def build_int8_variant(st: Stage) -> dict:
    entry, path = st.recorded("int8"), st.paths["int8"]
    calib_texts = read_calibration(st.calibration, st.evaluation)
    key = _cache_key(st.fp32_sha, calib_texts, st.settings, st.max_length, st.manifest.get("model", {}).get("config_sha256"))
    if not st.force and io.variant_up_to_date(entry, st.artifacts, source_sha256=st.fp32_sha, search_key=key):
        print("int8: up to date")
        return entry
    t0 = time.perf_counter()
    search, cache_path, cached = _cached_search(st, calib_texts, key)
    t1 = time.perf_counter()
    info = build_int8(st.fp32_model(), search, path)
    t2 = time.perf_counter()
    entry = _int8_entry(st, search, info, key, calib_texts, cache_path, cached,
                        {"search": round(t1 - t0, 1), "build": round(t2 - t1, 1)})
    # what ORT CPU (fused int8 kernels) gives on the same held-out slice
    _, held = split_calibration(calib_texts, st.settings)
    q = quality(st.fp32_path, path, held, st.tokenizer, st.inputs, st.max_length)
    entry["held_out_quality_ort"] = {k: v for k, v in q.items() if k in ("mean_cos", "min_cos")}
    st.measure(entry, path, exact=True)
    entry["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    _record(st.artifacts, "int8", entry)
    st.built["int8"], st.search = entry, search
    print(f"int8: wrote {path} ({_mb(path)} MB), {entry['quantized_count']}/{entry['candidate_count']} MatMuls "
          f"quantized, kept FP32: {search['excluded'] or 'none'} ({entry['seconds']['total']}s)")
    return entry


def build_best(st: Stage) -> dict:
    i8, entry, path = st.recorded("int8"), st.recorded("best"), st.paths["best"]
    if not io.variant_up_to_date(i8, st.artifacts, source_sha256=st.fp32_sha):
        raise StageError("best needs a valid int8 variant: run with int8")
    i8_sha = i8["onnx"]["sha256"]
    if not st.force and "int8" not in st.built and io.variant_up_to_date(entry, st.artifacts, source_sha256=st.fp32_sha, int8_sha256=i8_sha):
        print("best: up to date")
        return entry
    t0 = time.perf_counter()
    mb, info = to_fp16(load(io.resolve(i8["onnx"]["path"], st.artifacts)), extra_block_ops=QDQ_OPS)
    save_checked(mb, path)
    summ = qdq_summary(mb)
    if not (summ["zero_points_all_zero"] and summ["scales_fp32"]):
        raise StageError(f"best graph lost symmetric fp32-scale Q/DQ: {summ}")
    entry = {"onnx": io.artifact_entry(path, st.artifacts),
             "method": "int8 Q/DQ graph + convert_float_to_float16(keep_io_types=True): FP16 wherever no Q/DQ sits "
                       "(TensorRT 10 --best; strongly typed graph for TensorRT 11); Q/DQ and their scales stay FP32",
             "source_sha256": st.fp32_sha, "int8_sha256": i8_sha, "keep_io_types": True, **info, **summ,
             "excluded_nodes": i8.get("excluded_nodes"), "quantized_count": i8.get("quantized_count"),
             "seconds": round(time.perf_counter() - t0, 1)}
    st.measure(entry, path, exact=True)
    _record(st.artifacts, "best", entry)
    st.built["best"] = entry
    print(f"best: wrote {path} ({_mb(path)} MB)")
    return entry


def build_fp8(st: Stage) -> dict:
    from . import fp8_qdq
    from .calibration import calibrate
    from .texts import length_batches

    entry, path = st.recorded("fp8"), st.paths["fp8"]
    calib, _ = split_calibration(read_calibration(st.calibration, st.evaluation), st.settings)  # the texts int8 calibrates on
    if not st.force and io.variant_up_to_date(entry, st.artifacts, source_sha256=st.fp32_sha, calibration_sha256=texts_sha256(calib)):
        print("fp8: up to date")
        return entry
    t0 = time.perf_counter()
    model = st.fp32_model()
    acts = list(dict.fromkeys(a for _, a, _ in weight_matmuls(model)))
    _, feeds = length_batches(st.tokenizer, calib, st.inputs, st.max_length, st.settings.batch_size)
    cal = calibrate(model, acts, feeds, st.progress, desc="fp8 calibration")
    q, info = fp8_qdq.build(model, cal["absmax"])
    save_checked(q, path)
    entry = {"onnx": io.artifact_entry(path, st.artifacts),
             "method": "FP8 E4M3 Q/DQ on the linear layers' MatMuls: activations per tensor (calibrated |max| / 448), weights "
                       "per output channel (DequantizeLinear axis 1); attention, LayerNorm, Softmax and pooling FP32; opset 19 "
                       "(TensorRT 10 --stronglyTyped, TensorRT 11 as is)",
             "source_sha256": st.fp32_sha, "calibration_sha256": texts_sha256(calib),
             "calibration": {"data": io.rel(st.calibration), "samples": len(calib), "tokens": cal["tokens"],
                             "statistic": "|max| over real tokens (padding excluded)"},
             **info, "seconds": round(time.perf_counter() - t0, 1)}
    st.measure(entry, path, optimized=False)
    _record(st.artifacts, "fp8", entry)
    st.built["fp8"] = entry
    print(f"fp8: wrote {path} ({_mb(path)} MB), {info['quantized_matmuls']} MatMuls in FP8")
    return entry


# precision -> its builder, in build order; REQUIRES: what a precision is built from (brought up to date first)
BUILDERS: dict[str, Callable[[Stage], dict]] = {"fp16": build_fp16, "int8": build_int8_variant, "best": build_best,
                                                "fp8": build_fp8}
REQUIRES = {"best": ("int8",)}
VARIANTS = tuple(BUILDERS)


# ------------------------------------------------------------------------------------------ the stage
def run(artifacts: Path | None = None, logs: Path | None = None, precisions=VARIANTS, force: bool = False,
        calibration: Path = spec.CALIBRATION_TEXTS, evaluation: Path | None = spec.EVALUATION_TEXTS,
        settings: Int8Settings | None = None, measure_latency: bool = True, progress: bool = True,
        no_cache: bool = False, cache_dir: Path | None = None) -> dict:
    """Build the requested variants from the manifest's fp32 export (resuming: a variant whose file still
    has its recorded hash and whose recorded source hash matches is not rebuilt); record them in the manifest;
    write logs/quantize.md and logs/quantize.json. Returns the log dict."""
    artifacts = Path(artifacts or spec.ARTIFACTS)
    logs = io.ensure_writable_dir(Path(logs or spec.LOGS))
    s = settings or Int8Settings()
    known = VARIANTS + tuple(NOT_BUILT)
    unknown = [p for p in precisions if p not in known]
    if unknown:
        raise StageError(f"unknown precision(s) {unknown}: choose from {', '.join(known)}")
    st = Stage(artifacts, io.load_manifest(artifacts), s, calibration, evaluation, force, progress, no_cache, cache_dir)
    result = {"model": st.manifest.get("model", {}).get("used"),
              "fp32": {"path": st.fp32_entry["path"], "sha256": st.fp32_sha, "mb": _mb(st.fp32_path)},
              "evaluation_texts": io.rel(evaluation) if st.eval_texts else None, "variants": {},
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for p, build in BUILDERS.items():
        if p in precisions or any(p in REQUIRES.get(q, ()) for q in precisions):
            entry = build(st)
            if p in precisions:
                result["variants"][p] = entry
    for p, reason in NOT_BUILT.items():  # recorded, not built
        if not (st.recorded(p) or {}).get("onnx"):
            _record(artifacts, p, {"onnx": None, "reason": reason})
        result["variants"][p] = {"onnx": None, "reason": reason}
    _write_logs(logs, st, result, measure_latency)
    return result


# ------------------------------------------------------------------------------------------ logs
def _variants_table(st: Stage, result: dict, old_table: dict, measure_latency: bool) -> dict:
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
        row["floor"] = f"mean >= {fl['mean_cos']}, min >= {fl['min_cos']}" if fl else None
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
    for p, reason in NOT_BUILT.items():
        table[p] = {"mb": None, "pass": None, "note": "not built: " + reason}
    return table


def _search_log(search: dict) -> dict:
    return {
        "calibration": search["calibration"], "target_on_held_out": search["target"], "held_out": search["held_out"],
        "evaluations": search["evaluations"], "seconds": search["seconds"],
        "range_methods_by_role": search["roles"],
        "sensitivity": [{"node": r["node"], "drop": round(r["drop"], 7), "min_cos": round(r["min_cos"], 5), "score": round(r["score"], 4),
                         "kept_fp32": r["node"] in search["excluded"]} for r in search["sensitivity"]],
        "greedy": search["greedy"],
    }


def _write_logs(logs: Path, st: Stage, result: dict, measure_latency: bool) -> None:
    """logs/quantize.json (merged with the previous run's for variants not rebuilt) and logs/quantize.md."""
    json_path = logs / "quantize.json"
    old = io.read_json(json_path) if json_path.exists() else {}
    table = _variants_table(st, result, old.get("variants_table") or {}, measure_latency)
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
    io.write_text(logs / "quantize.md", _markdown(out, st.settings))
    print(f"logs: {json_path}, {logs / 'quantize.md'}")


def _f(x, nd=6):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _md_variants(d: dict) -> list[str]:
    head = ["variant", "MB", "mean cos", "min cos", "top-10 agreement", "rel L2", "graph-exact mean / min cos, top-10",
            "CPU ms (8x128) median / min", "floor", "pass"]
    rows = []
    for p, r in d["variants_table"].items():
        if p in NOT_BUILT:
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
        *(f"{p}: {reason}" for p, reason in NOT_BUILT.items()), ""]


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
          "share of the floor budgets used: max(drop / (1 - floor mean), (1 - min cos) / (1 - floor min)); greedy order)", ""]
    L += md_table(["node", "drop", "min cos", "score", "kept FP32"],
                  [[f"`{r['node']}`", f"{r['drop']:.6f}", f"{r['min_cos']:.5f}", f"{r['score']:.4f}", "yes" if r["kept_fp32"] else ""]
                   for r in sorted(srch["sensitivity"], key=lambda r: -r["score"])])
    L += ["", "### Greedy search", ""]
    L += md_table(["step", "excluded", "mean cos", "min cos"],
                  [[f"{t['step']}{'' if t.get('kept', True) else ' (rejected)'}", t["excluded"], f"{t['mean_cos']:.6f}", f"{t['min_cos']:.5f}"]
                   for t in srch["greedy"]])
    return L + ["", f"{srch['evaluations']} held-out evaluations, search {srch['seconds']} s "
                    f"(calibration pass {srch['calibration']['seconds']} s).", ""]


def _markdown(d: dict, s: Int8Settings) -> str:
    L = ["# Precision variants (quantize.py)", "", f"Model: {d['model']}. {d['note']}.", ""] + _md_variants(d)
    if d.get("int8"):
        L += _md_int8(d["int8"])
    if d.get("int8_search"):
        L += _md_search(d["int8_search"], s.methods)
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------------------------------ CLI
def main(argv=None) -> int:
    ap = cli.parser("python -m enc2triton.quantize", (
        "Step 2: build the fp16, int8 (symmetric Q/DQ, TensorRT-compatible), best (int8 + fp16) and fp8 (E4M3 Q/DQ, TensorRT's "
        "fp8 source) ONNX variants from the "
        "manifest's fp32 export, record them in the manifest and write logs/quantize.{md,json}. Resumes: variants "
        "whose files and sources are unchanged are not rebuilt."))
    ap.add_argument("--precisions", default=",".join(VARIANTS),
                    help=f"comma-separated subset of {','.join(VARIANTS)} (default %(default)s)")
    ap.add_argument("--force", action="store_true", help="rebuild the files even if up to date (the int8 search cache is still used)")
    ap.add_argument("--no-cache", action="store_true", help="redo the int8 search instead of reading its cache")
    ap.add_argument("--calibration", type=Path, default=spec.CALIBRATION_TEXTS,
                    help="calibration texts, one per line (default %(default)s)")
    ap.add_argument("--evaluation", type=Path, default=spec.EVALUATION_TEXTS,
                    help="texts for the final quality numbers only (default %(default)s)")
    ap.add_argument("--held-out", type=int, default=Int8Settings.held_out,
                    help="calibration texts held out for the search (default %(default)s)")
    ap.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement in the logs")

    def body(a) -> None:
        run(a.artifacts, a.logs, tuple(p.strip() for p in a.precisions.split(",") if p.strip()), a.force, a.calibration,
            a.evaluation, Int8Settings(held_out=a.held_out), measure_latency=not a.no_latency, no_cache=a.no_cache)
    return cli.run(ap, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
