"""Precision variants of the verified fp32 ONNX export: fp16, int8 (explicit symmetric Q/DQ) and best.

- fp16: FP16 compute, FP32 inputs/outputs; LayerNormalization, Softmax (and the mask Add feeding it), any
  ReduceMean/Pow/Sqrt LayerNorm decomposition and the whole mean-pooling tail stay FP32 (fp16.py).
- int8: explicit QuantizeLinear/DequantizeLinear, SYMMETRIC int8 (zero point 0) for activations and
  per-channel weights, as TensorRT requires. Q/DQ sits on MatMul inputs only (never on a MatMul output or
  on the residual stream). Ranges come from data/calibration.txt; which range method each kind of tensor
  uses and which MatMuls stay FP32 are chosen by measuring the sentence-embedding cosine (and, for the MatMuls
  kept FP32, top-10 agreement) on a held-out slice of the calibration set (evaluation.txt is never looked at while
  choosing anything): int8_search.py, with calibration.py (ranges) and smoothquant.py (outlier channels moved into
  the weights). The search computes in float64 with the Q/DQ arithmetic written out (exact.py): the same int8
  graph on every CPU.
- best: the int8 graph with FP16 wherever no Q/DQ sits (TensorRT 10 `--best`; the strongly typed graph
  TensorRT 11 needs). Q/DQ scales stay FP32; the same sensitive ops stay FP32.
- fp8: explicit FP8 (E4M3) Q/DQ on the linear layers' MatMuls (fp8_qdq.py) from the plan torch_fp8 shares
  (fp8_plan.py, computed here on the CPU from data/calibration.txt): per-tensor static activation scales, per-channel
  GPTQ-rounded weights, the layers a sensitivity search ranks worst kept FP32: TensorRT's fp8 source. ONNX Runtime has
  no FP8 kernels, so it is measured with graph optimizations off and not served (spec: onnx_fp8 is unserved).

This module is the stage: one builder per precision (BUILDERS; adding a precision = its entry in spec plus a builder
here) and the manifest records; logs/quantize.{json,md} are written by quantize_log.py. Every variant is measured
against the fp32 export on the evaluation texts (variant_quality.py). Search results are cached in
artifacts/quantize_cache by hash of the fp32 ONNX, the calibration texts and the settings, so a rerun is instant.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from enc2triton.core import cli, io, spec
from enc2triton.quantize.calibration import split_calibration
from enc2triton.quantize.fp16 import to_fp16
from enc2triton.quantize.int8_search import METHOD_VERSION, Int8Settings, build_int8, search_int8
from enc2triton.core.io import StageError
from enc2triton.quantize.onnx_graph import QDQ_OPS, load, qdq_summary, save_checked
from enc2triton.quantize.quantize_log import _mb, write_logs
from enc2triton.core.texts import load_tokenizer, read_calibration, read_texts, texts_sha256
from enc2triton.quantize.variant_quality import cache_reference, quality

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
    entry["held_out_quality_ort"] = {k: v for k, v in q.items() if k in ("mean_cos", "min_cos", "top10")}
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
    from enc2triton.quantize import fp8_plan, fp8_qdq
    from enc2triton.core.texts import length_batches

    entry, path = st.recorded("fp8"), st.paths["fp8"]
    calib = read_calibration(st.calibration, st.evaluation)  # all of them, as torch_fp8's plan always took
    sources = {"source_sha256": st.fp32_sha, "calibration_sha256": texts_sha256(calib), "plan_version": fp8_plan.VERSION}
    if not st.force and io.variant_up_to_date(entry, st.artifacts, **sources):
        print("fp8: up to date")
        return entry
    t0 = time.perf_counter()
    enc = fp8_plan.checkpoint_encoder(st.manifest["model"])
    order, feeds = length_batches(st.tokenizer, calib, st.inputs, st.max_length, 16)  # torch_build's calibration batches
    if st.progress:
        print(f"fp8: the plan on the CPU ({len(calib)} calibration texts: GPTQ, static scales, sensitivity search)", flush=True)
    codes, amax, keep, plan = fp8_plan.fp8_plan(enc, {"calib_feeds": feeds, "calib_order": order, "device": "cpu"})
    model = st.fp32_model()
    q, info = fp8_qdq.build(model, fp8_plan.onnx_layers(model, enc, codes, amax, keep))
    save_checked(q, path)
    entry = {"onnx": io.artifact_entry(path, st.artifacts),
             "method": "FP8 E4M3 Q/DQ on the linear layers' MatMuls: activations per tensor (calibrated |max| / 448), weights "
                       "per output channel (DequantizeLinear axis 1) rounded by GPTQ on the calibration inputs; the layers a "
                       "sensitivity search on the calibration texts ranks worst (as few as reach the floor plus a margin "
                       "there) stay FP32 without Q/DQ; attention, LayerNorm, Softmax and pooling FP32; opset 19 (TensorRT 10 "
                       "--stronglyTyped, TensorRT 11 as is). The plan (quantize/fp8_plan.py) is torch_fp8's too",
             **sources,
             "calibration": {"data": io.rel(st.calibration), "samples": len(calib),
                             "tokens": int(sum(f["attention_mask"].sum() for f in feeds)),
                             "statistic": "|max| and X^T X over real tokens (padding excluded), then sentence-embedding "
                                          "cosine vs FP32 (sensitivity, layers kept)"},
             "plan": plan, "kept_fp32": plan["kept"], **info, "seconds": round(time.perf_counter() - t0, 1)}
    st.measure(entry, path, optimized=False)
    _record(st.artifacts, "fp8", entry)
    st.built["fp8"] = entry
    print(f"fp8: wrote {path} ({_mb(path)} MB), {info['quantized_matmuls']} MatMuls in FP8, kept FP32: "
          f"{', '.join(plan['kept']) or 'none'} ({entry['seconds']} s)")
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
    write_logs(logs, st, result, measure_latency, NOT_BUILT)
    return result


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
