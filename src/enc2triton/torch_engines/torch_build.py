"""Step 2b (GPU): the PyTorch engine family, GPU engines without TensorRT: torch_fp16, torch_fp8, torch_int8.

From the checkpoint the export used (the manifest records it; its config hash is checked):
1. our encoder (torch_model.py) in FP32 is verified against the Hugging Face model, like the ONNX export;
2. each precision is built from it: fp16 as is; fp8 with the plan the ONNX FP8 graph was built from (quantize.py,
   quantize/fp8_plan.py): static per-tensor activation scales (calibrated |max|), per-channel weights rounded by GPTQ on
   data/calibration.txt (read back from the graph's E4M3 initializers), the layers a sensitivity search there ranks
   worst kept BF16; int8 with the SmoothQuant factors, activation clips and quantized layers the ONNX INT8 search
   chose (quantize.py), so both INT8 graphs and both FP8 graphs quantize the same way;
3. each is measured against the FP32 reference on the evaluation texts (floors from spec);
4. its weights are saved (artifacts/torch/model_<p>.pt, with model_<p>.json saying the architecture, dtype and which
   layers are quantized), and torch.compile (dynamic batch and sequence) compiles it once here: the compiled kernels are
   saved as torch.compiler's portable cache (model_<p>.cache), which the server loads before compiling, so a server
   start pays a trace and cache hits, not a compilation. The engine captures CUDA graphs per serving shape. The
   package is checked through the engine against the eager module it came from.
Writes the manifest's `torch` section and logs/torch_build.{json,md}.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np

from enc2triton.core import cli, host, io, markdown, metrics, spec
from enc2triton.core.io import StageError
from enc2triton.quantize import fp8_plan
from enc2triton.quantize.fp8_plan import embed
from enc2triton.quantize.int8_search import search_record
from enc2triton.quantize.smoothquant import smoothed_name
from enc2triton.core.texts import length_batches, load_tokenizer, read_calibration, read_texts

PRECISIONS = spec.family_precisions("torch")
PACKAGES = "torch"  # folder under artifacts/
VERIFY_ATOL = 1e-4
GROSS = 0.99  # engine vs eager module below this cosine: a wrong engine, not rounding (see check_engine)
GPU_ONLY = ("GPU only: the PyTorch engines are compiled for an NVIDIA GPU (`make variants DEVICE=gpu` there; "
            "`python -m enc2triton.torch_build --device cpu` builds CPU packages for tests)")


class NotBuilt(StageError):
    """This precision cannot be built from what is here; recorded with the reason, not an error."""


# ------------------------------------------------------------------------------------------ the reference
def load_reference(manifest: dict, device: str):
    """(Hugging Face model, our FP32 encoder) from the checkpoint the export recorded, on `device`."""
    from enc2triton.runtime import torch_model
    from enc2triton.export import models

    m = manifest["model"]
    hf, _, info = models.load(m["path"], allow_fallback=False)
    if info.config_sha256 != m["config_sha256"]:
        raise StageError("the checkpoint on disk differs from the exported one (config hash): rerun `python torch2onnx.py`")
    try:
        enc = torch_model.from_hf(hf.model)
    except ValueError as e:
        raise NotBuilt(str(e)) from None
    return hf.to(device), enc.to(device)


def verify_against_hf(hf, enc, tokenizer, names, texts: list[str], max_length: int, device: str) -> dict:
    """Our FP32 forward vs the Hugging Face model (mean pooling as in the export) on real texts at natural lengths."""
    import torch

    order, feeds = length_batches(tokenizer, texts[:64], names, max_length, 16)
    worst = {"last_hidden_state": 0.0, "sentence_embedding": 0.0}
    with torch.inference_mode():
        for f in feeds:
            t = {k: torch.as_tensor(v, device=device) for k, v in f.items()}
            for name, a, b in zip(spec.OUTPUTS, hf(**t), enc(**t)):
                mask = t["attention_mask"].bool()
                diff = (a - b)[mask] if name == "last_hidden_state" else a - b
                worst[name] = max(worst[name], float(diff.abs().max()))
    if max(worst.values()) > VERIFY_ATOL:
        raise StageError(f"our PyTorch encoder disagrees with the Hugging Face model: max abs diff {worst} > {VERIFY_ATOL:g}")
    return {"max_abs_diff": worst, "atol": VERIFY_ATOL, "texts": len(texts[:64])}


# ------------------------------------------------------------------------------------------ precisions
def build_fp16(enc, ctx: dict) -> tuple[object, dict]:
    return enc.half(), {"method": "FP16 weights and activations; SDPA attention, LayerNorm with FP32 statistics; FP32 outputs"}


def _calibrate(enc, ctx: dict) -> tuple[dict, dict]:
    """(|max| of every linear layer's input over the calibration texts, the calibration record with its time)."""
    from enc2triton.runtime import torch_model

    t0 = time.perf_counter()
    amax = torch_model.input_amax(enc, ctx["calib_feeds"], ctx["device"])
    return amax, {**ctx["calibration"], "seconds": round(time.perf_counter() - t0, 1)}


_FP8_BASE = ("E4M3 activations (one static scale per tensor: the input's |max| over the calibration texts / 448) and "
             "E4M3 weights (per output channel, rounded by GPTQ on the calibration inputs), torch._scaled_mm with row-wise "
             "scales; BF16 elsewhere")
# --fp8-layers all (speed runs on random weights): no layer kept, no ONNX plan
FP8_METHOD_ALL = _FP8_BASE + "; every linear layer FP8, its codes and scales computed here (no sensitivity search)"
FP8_METHOD = (_FP8_BASE + " and in the layers kept BF16: the ONNX FP8 graph's plan (quantize/fp8_plan.py: its codes, "
              "scales and kept layers), whose sensitivity search on the calibration texts ranks the layers by FP8 error per "
              "weight (GEMM FLOPs) and keeps the best-ranked prefix that brings the model to "
              + ", ".join(f"{k} {v}" for k, v in fp8_plan.FP8_CALIB_TARGET.items())
              + f" there (at most {fp8_plan.FP8_MAX_KEPT:.0%} of them)")


def fp8_method(layers: str) -> str:
    return FP8_METHOD_ALL if layers == "all" else FP8_METHOD


def build_fp8(enc, ctx: dict) -> tuple[object, dict]:
    from enc2triton.runtime import torch_model

    layers = ctx.get("fp8_layers", "search")
    if layers == "all":  # speed runs on random weights: its own GPTQ codes and scales, no search
        codes, amax, keep, plan = fp8_plan.fp8_plan(enc, ctx)
        source = {}
    else:
        codes, amax, keep, plan, source = onnx_fp8_plan(ctx["manifest"], ctx["artifacts"], enc)
    calibration = {**ctx["calibration"], "statistic": "|max| (static activation scales) and X^T X (GPTQ) of every linear "
                   "layer's input over real tokens, then sentence-embedding cosine vs FP32 (sensitivity, layers kept)"}
    info = {"method": fp8_method(layers), "layers_chosen": layers, "calibration": calibration, "plan": plan,
            **source, "linear_layers_quantized": len(amax) - len(keep), "linear_layers": len(amax),
            "kept_bf16": [fp8_plan.name(k) for k in keep]}
    return torch_model.to_fp8(enc, codes, keep, amax), info


def onnx_fp8_plan(manifest: dict, artifacts: Path, enc) -> tuple[dict, dict, list, dict, dict]:
    """(codes, |max|, kept layers, the plan's record, its source) of the ONNX FP8 graph the quantize stage built: the
    codes from its weight initializers, the rest from its manifest entry. Computed there once on the CPU (torch._scaled_mm
    in BF16, as here), reused here like the INT8 search: TensorRT's fp8 source and this engine quantize the same way."""
    import onnx

    from enc2triton.runtime import torch_model

    f8 = (manifest.get("variants") or {}).get("fp8") or {}
    if not f8.get("onnx") or "kept" not in (f8.get("plan") or {}):
        raise NotBuilt("torch_fp8 reuses the ONNX FP8 graph's plan (GPTQ codes, static scales, layers kept BF16): run "
                       "`python -m enc2triton.quantize` first (or --fp8-layers all: every layer FP8, no search)")
    if not io.is_valid(f8["onnx"], artifacts) or f8.get("source_sha256") != manifest["variants"]["fp32"]["onnx"]["sha256"]:
        raise NotBuilt("the ONNX FP8 graph is missing, changed or built from another export: rerun `python -m enc2triton.quantize`")
    path = io.resolve(f8["onnx"]["path"], artifacts)
    codes = fp8_plan.from_onnx(onnx.load(str(path)), enc)
    keep = [fp8_plan.key(k) for k in f8["plan"]["kept"]]
    if set(codes) | set(keep) != {(i, n) for i, n, _ in torch_model.linears(enc)}:
        raise StageError(f"{path.name}: its FP8 layers and its plan's kept layers are not this model's linear layers")
    amax = {fp8_plan.key(k): v for k, v in f8["plan"]["amax"].items()}
    return codes, amax, keep, f8["plan"], {"onnx_fp8": io.rel(path, artifacts), "onnx_fp8_sha256": f8["onnx"]["sha256"]}


def build_int8(enc, ctx: dict) -> tuple[object, dict]:
    from enc2triton.runtime import torch_model

    if ctx.get("int8_ranges") == "max":
        amax, calibration = _calibrate(enc, ctx)
        plan = {k: {"clip": v} for k, v in amax.items()}
        info = {"method": "W8A8 symmetric, every linear layer, activation clip = calibrated |max| per tensor, no SmoothQuant: "
                          "the same kernels as the searched plan, for speed measurements on random weights (--int8-ranges max)",
                "calibration": calibration,
                "linear_layers_quantized": len(plan), "linear_layers": len(plan), "kept_fp16": []}
    else:
        plan, info = int8_plan(ctx["manifest"], ctx["artifacts"], enc.cfg)
    return torch_model.to_int8(enc, plan), info


BUILDERS = {"fp16": build_fp16, "fp8": build_fp8, "int8": build_int8}


def int8_plan(manifest: dict, artifacts: Path, cfg) -> tuple[dict, dict]:
    """Per linear layer the ONNX INT8 search's decision: quantized or not, its activation clip and SmoothQuant factors.
    Q, K and V are one GEMM here: quantized only when the search quantized all three."""
    import onnx
    import torch

    i8 = (manifest.get("variants") or {}).get("int8") or {}
    if not i8.get("onnx") or not i8.get("search_cache"):
        raise NotBuilt("torch_int8 reuses the ONNX INT8 search (SmoothQuant factors, ranges, excluded layers): "
                       "run `python -m enc2triton.quantize` first")
    cache = search_record(i8, artifacts)
    if cache is None:
        raise NotBuilt(f"the ONNX INT8 search record {io.resolve(i8['search_cache'], artifacts)} is gone: "
                       "rerun `python -m enc2triton.quantize --force`")
    search = io.read_json(cache)
    fp32 = onnx.load(str(io.resolve(manifest["variants"]["fp32"]["onnx"]["path"], artifacts)), load_external_data=False)
    inputs = {n.name: n.input[0] for n in fp32.graph.node if n.op_type == "MatMul"}
    factors, clips, quantized = search["smoothquant"].get("factors") or {}, search["clip"], set(search["quantized"])
    plan, kept = {}, []
    for (i, ours), names in fp8_plan.matmul_names(fp32, cfg).items():
        if not all(n in quantized for n in names):
            plan[(i, ours)] = None
            kept.append(fp8_plan.name((i, ours)))
            continue
        t = inputs[names[0]]
        smooth = torch.tensor(factors[t]) if t in factors else None
        plan[(i, ours)] = {"clip": clips[smoothed_name(t) if t in factors else t], "smooth": smooth}
    info = {"method": "W8A8 symmetric: activations per tensor with the ONNX search's clip, weights per output channel, "
                      "int32 accumulate (on a GPU from qgemm.MIN_ROWS rows our Triton kernel, runtime/qgemm.py, with the "
                      "dequantization and bias in its epilogue; torch._int_mm below); SmoothQuant factors from the same "
                      "search; attention, LayerNorm and the layers the search kept FP32 in FP16",
            "search": io.rel(cache), "search_sha256": io.sha256_file(cache), "smoothquant_alpha": search["smoothquant"].get("alpha"),
            "linear_layers_quantized": sum(p is not None for p in plan.values()), "linear_layers": len(plan),
            "kept_fp16": kept,
            "onnx_excluded_nodes": search.get("excluded")}
    return plan, info


# ------------------------------------------------------------------------------------------ package and compile cache
def warm_shapes(manifest: dict) -> list[tuple[int, int]]:
    """Shapes that make torch.compile build every graph serving needs: dynamic batch and sequence, plus the batch-1
    specialisation (the compiler treats a size-1 dimension apart)."""
    return [(1, 16), (2, 16), (min(64, manifest["shapes"]["max_batch"]), min(128, manifest["shapes"]["max_seq"]))]


def save_package(module, names: list[str], out: Path, device: str, compile_cache: bool, shapes) -> dict:
    """The weights (state dict, loadable with weights_only) and, with `compile_cache`, torch.compile's portable cache
    (torch.compiler.save_cache_artifacts: Inductor's compiled kernels), warmed on `shapes`; written atomically."""
    import torch

    t0 = time.perf_counter()
    with io.atomic_path(out) as tmp:
        torch.save({"state_dict": module.state_dict()}, tmp)
    info = {"compile": compile_cache}
    if compile_cache:
        torch._dynamo.reset()
        fn = torch.compile(module, dynamic=True)
        with torch.inference_mode():
            for b, s in shapes:
                fn(*[torch.ones(b, s, dtype=torch.int64, device=device) for _ in names])
        blob = torch.compiler.save_cache_artifacts()
        if blob is None:
            raise StageError("torch.compile produced no cache artifacts (is the FX graph cache disabled?)")
        with io.atomic_path(out.with_suffix(".cache")) as tmp:
            tmp.write_bytes(blob[0])
        info.update({"compile_seconds": round(time.perf_counter() - t0, 1), "warm_shapes": [list(x) for x in shapes],
                     "cache_bytes": len(blob[0])})
    return info


def check_engine(path: Path, eager: np.ndarray, ctx: dict) -> tuple[np.ndarray, dict]:
    """The saved package through the serving engine (compiled, padded to buckets, CUDA graphs on a GPU) on the evaluation
    texts: its embeddings (what the server returns) and how far they are from the eager module's. Two quantized runs
    differ by rounding flips (an FP8/INT8 step where a BF16 value moved by one ulp: on all-MiniLM-L6-v2 min cosine
    0.997 between the compiled and the eager FP8 module), so the floors are judged on the engine's own output against
    FP32; this check only catches a wrong engine (cosine < GROSS)."""
    from enc2triton.runtime.engines import TorchEngine
    from enc2triton.core.texts import in_order

    eng = TorchEngine(path, "gpu" if ctx["device"] == "cuda" else "cpu")
    got = in_order([eng.run(f, ["sentence_embedding"])["sentence_embedding"] for f in ctx["eval_feeds"]], ctx["eval_order"])
    one = eng.run({k: v[:1] for k, v in ctx["eval_feeds"][0].items()}, ["sentence_embedding"])["sentence_embedding"]
    cos = metrics.cosine_rows(got, eager)
    info = {"engine": eng.providers[0], "load_seconds": eng.load_seconds, "min_cos_vs_eager": float(cos.min()),
            "mean_cos_vs_eager": float(cos.mean()), "max_abs_diff_vs_eager": float(np.abs(got - eager).max()),
            "batch1_max_abs_diff": float(np.abs(one[0] - got[ctx["eval_order"][0]]).max())}
    if cos.min() < GROSS or not np.isfinite(got).all():
        raise StageError(f"{path.name}: the engine's embeddings are not the eager module's: min cosine {cos.min():.6f} < {GROSS}")
    return got, info


# ------------------------------------------------------------------------------------------ stage
def _context(manifest: dict, artifacts: Path, device: str, calibration: Path, evaluation: Path) -> dict:
    tok = load_tokenizer(io.resolve(manifest["tokenizer_dir"], artifacts))
    names, max_seq = list(manifest["inputs"]), int(manifest["shapes"]["max_seq"])
    calib = read_calibration(calibration, evaluation)
    evals = read_texts(evaluation)
    calib_order, calib_feeds = length_batches(tok, calib, names, max_seq, 16)
    order, eval_feeds = length_batches(tok, evals, names, max_seq, 16)
    return {"manifest": manifest, "artifacts": artifacts, "device": device, "tokenizer": tok, "names": names, "max_seq": max_seq,
            "calib_feeds": calib_feeds, "calib_order": calib_order, "eval_feeds": eval_feeds, "eval_order": order, "eval_texts": evals,
            "calibration": {"data": io.rel(calibration), "texts": len(calib), "batching": "length-sorted batches of 16, natural lengths",
                            "statistic": "|max| over real tokens (padding excluded)"},
            "evaluation": {"data": io.rel(evaluation), "texts": len(evals)}}


def max_rows(manifest: dict) -> int:
    """The most token rows one engine call holds (torch_model.size_rows): the served batch and sequence limits."""
    return manifest["shapes"]["max_batch"] * manifest["shapes"]["max_seq"]


def sidecar(precision: str, manifest: dict, names: list[str], device: str, module, compiled: dict,
            rows: int | None = None) -> dict:
    import torch

    from enc2triton.runtime import qgemm, torch_model

    shapes = manifest["shapes"]
    gemms = qgemm.name() if device == "cuda" and precision in ("fp8", "int8") else None
    tiles = {k: dict(v) for k, v in qgemm.TILES.items()} if gemms else None  # what the compile cache was made with
    return {"precision": precision, "format": torch_model.PACKAGE_FORMAT, "gemm_kernel": gemms, "qgemm_tiles": tiles, "inputs": names, "outputs": list(spec.OUTPUTS), "device": device,
            "config": module.cfg.as_dict(), "dtype": str(next(module.norm.parameters()).dtype).removeprefix("torch."),
            "layout": torch_model.layout(module), "gelu": module.layers[0].gelu,
            "hidden_size": manifest["model"]["hidden_size"], "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
            "batch_buckets": list(spec.batch_buckets(shapes["max_batch"])),
            "seq_buckets": [b for b in spec.ENGINE_SEQ_BUCKETS if b <= shapes["max_seq"]],
            "seq_multiple": spec.SEQ_BUCKETS[0], "min_batch": 1, "min_seq": 1, "call_tokens": spec.CALL_TOKENS[device],
            "warm_tokens": spec.WARM_TOKENS, "max_rows": rows,  # torch_model.size_rows at load (--fp8-folded)
            **compiled}


def build_one(p: str, enc32, ref: np.ndarray, ctx: dict) -> dict:
    """Build, measure, compile and check one precision; the manifest entry."""
    from enc2triton.runtime import torch_model

    art, device = ctx["artifacts"], ctx["device"]
    t0 = time.perf_counter()
    module, info = BUILDERS[p](copy.deepcopy(enc32), ctx)
    torch_model.set_gelu(module.eval(), ctx["gelu"])
    rows = max_rows(ctx["manifest"]) if p == "fp8" and ctx.get("fp8_folded") else None
    if rows:  # as the engine does at load (the sidecar's max_rows): the compile cache matches
        torch_model.size_rows(module, rows)
    eager = embed(module, ctx["eval_feeds"], ctx["eval_order"], device)
    out = io.ensure_writable_dir(art / PACKAGES) / f"model_{p}.pt"
    compiled = save_package(module, ctx["names"], out, device, ctx["compile"], warm_shapes(ctx["manifest"]))
    meta = sidecar(p, ctx["manifest"], ctx["names"], device, module, compiled, rows)
    io.write_json(out.with_suffix(".json"), meta)
    served, check = check_engine(out, eager, ctx)
    extras = {spec.TORCH.extras[0]: io.artifact_entry(out.with_suffix(".json"), art)}
    if compiled["compile"]:
        extras[spec.TORCH.extras[1]] = io.artifact_entry(out.with_suffix(".cache"), art)
    floor, q = spec.FLOORS[p], metrics.compare(ref, served)
    return {"package": io.artifact_entry(out, art), "extras": extras, "format": meta["format"], "gelu": meta["gelu"],
            "device": device, "torch": meta["torch"], "gpu": meta["gpu"], **info, **({"fp8_folded": True} if rows else {}),
            "quality": {**q, **ctx["evaluation"], "reference": "our FP32 encoder (= Hugging Face FP32)", "runtime": check["engine"],
                        "floor": floor, "pass": metrics.passes(q, floor)},
            "quality_eager": {k: v for k, v in metrics.compare(ref, eager).items() if k in ("mean_cos", "min_cos", "top10")},
            "compiled": {**compiled, **check}, "source_config_sha256": ctx["manifest"]["model"]["config_sha256"],
            "seconds": round(time.perf_counter() - t0, 1)}


def run(artifacts: Path = spec.ARTIFACTS, logs: Path = spec.LOGS, precisions=PRECISIONS, device: str = "cuda",
        calibration: Path = spec.CALIBRATION_TEXTS, evaluation: Path = spec.EVALUATION_TEXTS, force: bool = False,
        int8_ranges: str = "search", compile_cache: bool = True, fp8_layers: str = "search", gelu: str = spec.TORCH_GELU,
        fp8_folded: bool = True) -> dict:
    import torch

    artifacts, logs = Path(artifacts), Path(logs)
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise StageError(f"unknown precision(s) {unknown}: choose from {', '.join(PRECISIONS)}")
    manifest = io.load_manifest(artifacts)
    if device == "cuda" and not torch.cuda.is_available():
        for p in precisions:
            io.update_manifest("torch", {"package": None, "reason": GPU_ONLY}, artifacts, key=p)
        print(f"torch_*: not built: {GPU_ONLY}")
        return {"built": {}, "skipped": {p: GPU_ONLY for p in precisions}}
    ctx = _context(manifest, artifacts, device, calibration, evaluation)
    ctx["int8_ranges"], ctx["compile"], ctx["fp8_layers"], ctx["gelu"] = int8_ranges, compile_cache, fp8_layers, gelu
    ctx["fp8_folded"] = fp8_folded
    hf, enc32 = load_reference(manifest, device)
    result = {"model": manifest["model"], "device": device, "host": host.describe(), "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
              "verification": verify_against_hf(hf, enc32, ctx["tokenizer"], ctx["names"], ctx["eval_texts"], ctx["max_seq"], device),
              "built": {}, "skipped": {}, "failed": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"torch: our FP32 encoder matches Hugging Face (max abs diff {result['verification']['max_abs_diff']})")
    del hf
    ref = embed(enc32, ctx["eval_feeds"], ctx["eval_order"], device)
    for p in precisions:
        entry = (manifest.get("torch") or {}).get(p) or {}
        if not force and _up_to_date(entry, artifacts, device, manifest) and entry.get("gelu", "separate") == gelu and (
                p != "fp8" or (entry.get("method") == fp8_method(fp8_layers) and entry.get("layers_chosen") == fp8_layers
                               and bool(entry.get("fp8_folded")) == fp8_folded)):
            print(f"torch_{p}: up to date")
            result["built"][p] = entry
            continue
        try:
            entry = build_one(p, enc32, ref, ctx)
        except StageError as e:  # not buildable here, or failed its check: the other precisions still build
            failed = not isinstance(e, NotBuilt)
            io.update_manifest("torch", {"package": None, "reason": ("FAILED: " if failed else "") + str(e)}, artifacts, key=p)
            result["failed" if failed else "skipped"][p] = str(e)
            print(f"torch_{p}: {'FAILED' if failed else 'not built'}: {e}", flush=True)
            continue
        io.update_manifest("torch", entry, artifacts, key=p)
        result["built"][p] = entry
        q = entry["quality"]
        c = entry["compiled"]
        print(f"torch_{p}: {entry['package']['path']} ({entry['package']['bytes'] / 1e6:.1f} MB), mean/min cos "
              f"{q['mean_cos']:.6f}/{q['min_cos']:.6f} ({'meets' if q['pass'] else 'UNDER'} the floor); compiled in "
              f"{c.get('compile_seconds', '- (no compile cache)')} s, loads in {c['load_seconds']} s", flush=True)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_logs(result, logs)
    if result["failed"]:
        raise StageError("torch engines failed: " + "; ".join(f"torch_{p}: {e}" for p, e in result["failed"].items()))
    return result


def _up_to_date(entry: dict, artifacts: Path, device: str, manifest: dict) -> bool:
    from enc2triton.runtime import torch_model

    if entry.get("search_sha256"):  # torch_int8 follows the ONNX INT8 search: a new search makes a new plan
        cache = search_record((manifest.get("variants") or {}).get("int8") or {}, artifacts)
        if cache is None or io.sha256_file(cache) != entry["search_sha256"]:
            return False
    if entry.get("onnx_fp8_sha256"):  # torch_fp8 follows the ONNX FP8 graph's plan: a new graph makes a new engine
        if entry["onnx_fp8_sha256"] != ((((manifest.get("variants") or {}).get("fp8") or {}).get("onnx")) or {}).get("sha256"):
            return False
    return (bool(entry.get("package")) and entry.get("device") == device and io.is_valid(entry["package"], artifacts)
            and entry.get("format") == torch_model.PACKAGE_FORMAT and entry.get("torch") == __import__("torch").__version__
            and all(io.is_valid(e, artifacts) for e in (entry.get("extras") or {}).values())
            and entry.get("source_config_sha256") == manifest["model"]["config_sha256"])


def write_logs(result: dict, logs: Path) -> None:
    io.ensure_writable_dir(logs)
    io.write_json(logs / "torch_build.json", result)
    rows = []
    for p, e in result["built"].items():
        q, c = e["quality"], e["compiled"]
        rows.append([f"torch_{p}", f"{q['mean_cos']:.6f}", f"{q['min_cos']:.6f}", f"{q['top10']:.3f}",
                     metrics.floor_text(q["floor"]), "yes" if q["pass"] else "NO",
                     f"{e['package']['bytes'] / 1e6:.1f}", c.get("compile_seconds", "-"), c.get("load_seconds"),
                     f"{c['min_cos_vs_eager']:.6f}"])
    lines = [f"# PyTorch engines (torch_build.py): {result['model']['used']}", "",
             f"{result['host']}; torch {result['torch']}, device {result['device']}"
             + (f" ({result['gpu']})" if result.get("gpu") else "") + f"; {result['started']} to {result.get('finished')}.", "",
             f"Our FP32 encoder vs Hugging Face: max abs diff {json.dumps(result['verification']['max_abs_diff'])}.", ""]
    lines += markdown.table(["variant", "mean cos", "min cos", "top-10", "floor", "pass", "MB", "compile s", "load s", "min cos vs eager"], rows)
    lines += [""] + [f"- torch_{p}: not built: {why}" for p, why in result["skipped"].items()]
    lines += [f"- torch_{p}: FAILED: {why}" for p, why in result.get("failed", {}).items()] + [""]
    for p, e in result["built"].items():
        kept = "".join(f"; kept {d}: {', '.join(e[f'kept_{d.lower()}']) or 'none'}" for d in ("FP16", "BF16") if f"kept_{d.lower()}" in e)
        lines.append(f"- torch_{p}: {e['method']}{kept}")
    io.write_text(logs / "torch_build.md", "\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = cli.parser("python -m enc2triton.torch_build", (
        "Step 2b (GPU): build the PyTorch engines (torch_fp16, torch_fp8, torch_int8) from the checkpoint the export used, "
        "measure them against FP32, compile each once with torch.compile and save its portable cache beside the weights in "
        "artifacts/torch/, record them in the manifest. torch_int8 and torch_fp8 reuse the ONNX INT8 search and the ONNX FP8 "
        "plan: python -m enc2triton.quantize first."))
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated subset (default %(default)s)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cuda (default): the GPU engines; cpu: CPU packages, for tests of the same code path")
    ap.add_argument("--calibration", type=Path, default=spec.CALIBRATION_TEXTS, help="calibration texts (default %(default)s)")
    ap.add_argument("--evaluation", type=Path, default=spec.EVALUATION_TEXTS, help="texts for the quality numbers (default %(default)s)")
    ap.add_argument("--force", action="store_true", help="rebuild even when a package matches the checkpoint (default: resume)")
    ap.add_argument("--no-compile-cache", action="store_true", help="save the weights only: the engine then runs eager "
                    "(default: torch.compile once here and save its cache, so the server loads compiled kernels)")
    ap.add_argument("--int8-ranges", choices=("search", "max"), default="search",
                    help="search (default): the ONNX INT8 search's plan; max: every layer at its calibrated |max|, no search "
                    "(the same kernels, for speed runs on random weights)")
    ap.add_argument("--fp8-layers", choices=("search", "all"), default="search",
                    help="search (default): the ONNX FP8 graph's plan (python -m enc2triton.quantize first): its GPTQ codes, "
                    "static scales and the layers its sensitivity search on the calibration texts keeps BF16 until the floor "
                    "(plus a margin) is met there; all: every linear layer FP8 with GPTQ codes computed here, no search "
                    "(speed runs on random weights, whose embeddings have no neighbours worth keeping)")
    ap.add_argument("--gelu", choices=("epilogue", "separate"), default=spec.TORCH_GELU,
                    help="where FFN1 runs its GELU on a GPU: epilogue (default %(default)s): in its GEMM's epilogue, the "
                    "tanh formula (cuBLASLt's for 16-bit layers; for an 8-bit FFN pair our Triton kernel, which also writes "
                    "FFN2's 8-bit input); separate: torch.compile's own exact-GELU pass")

    ap.add_argument("--fp8-folded", action=argparse.BooleanOptionalAction, default=True,
                    help="torch_fp8 on a GPU: each static activation scale folded into its weight's, the row-wise GEMM's "
                    "activation scale a view of ones (torch_model.size_rows) instead of a [tokens, 1] tensor a kernel "
                    "writes per GEMM per call (default: on; 1.04x at 32 x 128 tokens on an H100, results/h100/2026-12-07g/)")

    def body(a) -> None:
        run(a.artifacts, a.logs, tuple(p.strip() for p in a.precisions.split(",") if p.strip()), a.device,
            a.calibration, a.evaluation, a.force, a.int8_ranges, not a.no_compile_cache, a.fp8_layers, a.gelu, a.fp8_folded)
    return cli.run(ap, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
