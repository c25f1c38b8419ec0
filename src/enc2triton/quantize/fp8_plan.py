"""The FP8 plan both FP8 builds share: the ONNX FP8 graph (TensorRT's fp8 source, quantize.build_fp8) and the PyTorch
FP8 engine (torch_fp8, torch_build.build_fp8).

On the checkpoint's FP32 encoder (runtime/torch_model.py, Q, K and V fused) and the calibration texts, per linear layer:
E4M3 weight codes on a per-output-channel grid rounded by GPTQ on X^T X of the layer's inputs, one static activation
scale (the input's |max| / 448), and a sensitivity search that keeps the worst-ranked layers out of FP8 until the floor
plus a margin is met on the calibration texts (fp8_plan). Every candidate runs torch_model.Fp8Linear in BF16
(torch._scaled_mm, which runs on the CPU too), as the engine does. The quantize stage computes it on the CPU and writes
it into the ONNX graph (the codes as weight initializers, the scales in the Q/DQ, the kept layers' MatMuls without Q/DQ:
onnx_layers) and the manifest (kept layers, |max|, the search's steps); torch_build reads it back (from_onnx) instead of
searching again, so TensorRT's fp8 engine and torch_fp8 quantize the same way.
"""
from __future__ import annotations

import copy
import time

import numpy as np

from enc2triton.core import metrics, spec
from enc2triton.core.io import StageError

# what the FP8 model must reach on the calibration texts before no more layers are kept BF16: the floor (spec) plus a margin
# for the held-out texts and the compiled engine's rounding; at most FP8_MAX_KEPT of the linear layers are kept. On the
# bundled MiniLM (CPU emulation, scripts/fp8_emulate.py --project) cosines reach theirs with 6 of 24 layers kept, top-10
# needs 12 (0.967 on the calibration texts with 6, 0.976 with 12; evaluation texts 0.968 and 0.975)
FP8_MARGIN = {"mean_cos": 0.0001, "min_cos": 0.0, "top10": 0.005}
FP8_CALIB_TARGET = {k: round(v + FP8_MARGIN.get(k, 0.0), 6) for k, v in spec.FLOORS["fp8"].items()}
FP8_MAX_KEPT = 0.5
# top-10 agreement among N texts depends on N (more texts, closer neighbours): the calibration texts are scored in blocks
# of the evaluation set's size, in file order
TOP10_BLOCK = 128
VERSION = 1  # bump when the plan changes: the ONNX FP8 graph recorded with another is rebuilt
# our linear layers -> the Hugging Face roles they hold (torch_model.HF_LINEARS): Q, K and V are one GEMM here
ROLES = {"qkv": ("q", "k", "v"), "o": ("o",), "ffn1": ("ffn1",), "ffn2": ("ffn2",)}


def name(key: tuple[int, str]) -> str:
    return f"layers.{key[0]}.{key[1]}"


def key(name_: str) -> tuple[int, str]:
    _, i, n = name_.split(".")
    return int(i), n


def embed(module, feeds, order, device: str) -> np.ndarray:
    """sentence_embedding of every text (FP32 numpy, in the texts' order)."""
    import torch

    from enc2triton.core.texts import in_order

    out = []
    with torch.inference_mode():
        for f in feeds:
            out.append(module(**{k: torch.as_tensor(v, device=device) for k, v in f.items()})[1].float().cpu().numpy())
    return in_order(out, order)


def calib_quality(ref: np.ndarray, got: np.ndarray) -> dict:
    """mean/min cosine over all calibration texts, top-10 agreement averaged over blocks of TOP10_BLOCK texts."""
    q = metrics.compare(ref, got)
    blocks = range(0, max(len(ref) - TOP10_BLOCK + 1, 1), TOP10_BLOCK)
    q["top10"] = float(np.mean([metrics.topk_agreement(ref[i:i + TOP10_BLOCK], got[i:i + TOP10_BLOCK]) for i in blocks]))
    return q


def _candidate(enc, codes, keep, amax):
    from enc2triton.runtime import torch_model

    return torch_model.to_fp8(copy.deepcopy(enc), codes, keep, amax).eval()


def fp8_plan(enc, ctx: dict) -> tuple[dict, dict, list, dict]:
    """(GPTQ weight codes, static activation |max| per layer, layers kept BF16, the record). The codes come from X^T X
    of each layer's FP32 inputs over the calibration texts, the |max| from the same inputs (input_amax, FP32 model:
    GPTQ moves later layers' inputs only slightly); every candidate below uses both, as the engine does. Each layer's
    sensitivity is 1 - mean cosine vs FP32 on the calibration texts with only that layer FP8, less the same figure
    with none FP8 (BF16's own share); layers are ranked by sensitivity per weight (what keeping one costs: its GEMM's
    FLOPs at BF16 speed), and the shortest prefix of that ranking that, kept BF16, brings the model to FP8_CALIB_TARGET
    on the calibration texts is kept (at most FP8_MAX_KEPT of the layers). ctx: calib_feeds, calib_order, device and
    fp8_layers ("all": every layer FP8, no search)."""
    from enc2triton.runtime import torch_model

    t0 = time.perf_counter()
    feeds, device, order = ctx["calib_feeds"], ctx["device"], ctx["calib_order"]
    amax = torch_model.input_amax(enc, feeds, device)
    hess = torch_model.input_hessians(enc, feeds, device)
    mods = {(i, n): m for i, n, m in torch_model.linears(enc)}
    codes = {k: torch_model.fp8_gptq(m.weight, hess[k]) for k, m in mods.items()}
    del hess
    record = {"activations": "static per tensor (calibrated |max| / 448)", "gptq": {"damp": 0.01, "order": "decreasing diag(X^T X)"},
              "amax": {name(k): v for k, v in amax.items()}}
    if ctx.get("fp8_layers") == "all":  # speed runs on random weights: every layer FP8, no search
        return codes, amax, [], {**record, "kept": [], "search": "none (--fp8-layers all)", "seconds": round(time.perf_counter() - t0, 1)}
    ref = embed(enc, feeds, order, device)
    keys = list(mods)

    def error(keep) -> float:
        return 1.0 - float(metrics.cosine_rows(ref, embed(_candidate(enc, codes, keep, amax), feeds, order, device)).mean())

    base = error(keys)
    sens = {k: error([x for x in keys if x != k]) - base for k in keys}
    ranked = sorted(keys, key=lambda k: (-sens[k] / mods[k].weight.numel(), keys.index(k)))
    steps = []
    for n_keep in range(int(FP8_MAX_KEPT * len(keys)) + 1):
        q = calib_quality(ref, embed(_candidate(enc, codes, ranked[:n_keep], amax), feeds, order, device))
        steps.append({"kept": n_keep, **{k: round(q[k], 6) for k in FP8_CALIB_TARGET}})
        if metrics.passes(q, FP8_CALIB_TARGET):
            break
    keep = ranked[:steps[-1]["kept"]]
    record.update({"kept": [name(k) for k in keep], "bf16_error": float(f"{base:.3e}"),
                   "sensitivity": {name(k): float(f"{sens[k]:.3e}") for k in ranked},
                   "calibration_target": FP8_CALIB_TARGET, "calibration_steps": steps,
                   "target_reached": metrics.passes(steps[-1], FP8_CALIB_TARGET), "top10_block": TOP10_BLOCK,
                   "kept_weight_share": round(sum(mods[k].weight.numel() for k in keep) / sum(m.weight.numel() for m in mods.values()), 4),
                   "seconds": round(time.perf_counter() - t0, 1)})
    return codes, amax, keep, record


def checkpoint_encoder(model_entry: dict):
    """Our FP32 encoder (CPU) with the weights of the checkpoint the manifest's `model` entry names (the export's)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from enc2triton.runtime import torch_model

    hf_logging.disable_progress_bar()  # "Loading weights" bars redrawn into the logs
    try:
        hf = AutoModel.from_pretrained(model_entry["path"], attn_implementation="eager",
                                       local_files_only=model_entry.get("source") != "hub")
        return torch_model.from_hf(hf.eval())
    except (OSError, ValueError) as e:
        raise StageError(f"the FP8 plan needs the exported checkpoint ({model_entry.get('used')}): {e}") from None


def matmul_names(model, cfg) -> dict[tuple[int, str], list[str]]:
    """(layer, our linear) -> the exported graph's MatMul node(s) it is: the exporter names a linear layer's MatMul
    after its module, /model/<module path with / for .>/MatMul; Q, K and V are three."""
    from enc2triton.runtime import torch_model

    by_path = {n.name.removeprefix("/model/").removesuffix("/MatMul").replace("/", "."): n.name
               for n in model.graph.node if n.op_type == "MatMul"}
    out = {}
    for i in range(cfg.layers):
        for ours, roles in ROLES.items():
            paths = [torch_model.hf_linear_path(cfg.arch, i, r) for r in roles]
            missing = [p for p in paths if p not in by_path]
            if missing:
                raise StageError(f"the ONNX graph has no MatMul for {missing[0]}: it does not match this model")
            out[(i, ours)] = [by_path[p] for p in paths]
    return out


def onnx_layers(model, enc, codes: dict, amax: dict, keep) -> dict[str, dict]:
    """The plan per MatMul of the exported graph (fp8_qdq.build's input): {node: {"amax", "codes" E4M3 [in, out],
    "scale" [out]}} for every FP8 layer; a kept layer's MatMuls are not there (Q, K and V: all three). The fused QKV
    codes split back into Q, K and V rows."""
    import ml_dtypes
    import torch

    from enc2triton.runtime import torch_model

    nodes, keep = matmul_names(model, enc.cfg), set(keep)
    out = {}
    for i, ours, lin in torch_model.linears(enc):
        if (i, ours) in keep:
            continue
        names = nodes[(i, ours)]
        scales = torch_model.fp8_weight_scale(lin.weight).chunk(len(names))
        for node, c, s in zip(names, codes[(i, ours)].chunk(len(names)), scales):
            out[node] = {"amax": amax[(i, ours)], "scale": s.cpu().numpy(),
                         "codes": np.ascontiguousarray(c.t().cpu().view(torch.uint8).numpy()).view(ml_dtypes.float8_e4m3fn)}
    return out


def from_onnx(model, enc) -> dict[tuple[int, str], object]:
    """The GPTQ codes an FP8 graph (fp8_qdq.build from onnx_layers) carries, per FP8 layer of `enc` ([out, in]
    float8_e4m3fn tensors, Q, K and V rows fused again); the kept layers have none. Each weight scale in the graph must
    be the one Fp8Linear derives from `enc`'s weight: the codes are on that grid only."""
    import torch
    from onnx import numpy_helper

    from enc2triton.runtime import torch_model

    inits = {i.name: i for i in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    matmuls = {n.name: n for n in model.graph.node if n.op_type == "MatMul"}
    out = {}
    for (i, ours), names in matmul_names(model, enc.cfg).items():
        weights = [dq.get(matmuls[n].input[1]) for n in names]
        if all(w is None for w in weights):  # no E4M3 weight: a kept layer
            continue
        if any(w is None for w in weights):
            raise StageError(f"the FP8 graph quantizes only some of {names}: not a plan of fused Q, K and V")
        c = np.concatenate([numpy_helper.to_array(inits[w.input[0]]).T for w in weights])
        s = np.concatenate([numpy_helper.to_array(inits[w.input[1]]) for w in weights])
        lin = getattr(enc.layers[i], ours)
        if c.shape != tuple(lin.weight.shape) or not np.array_equal(s, torch_model.fp8_weight_scale(lin.weight).cpu().numpy()):
            raise StageError(f"the FP8 graph's weights for {name((i, ours))} are not this checkpoint's: rerun "
                             "`python -m enc2triton.quantize --precisions fp8 --force`")
        out[(i, ours)] = torch.from_numpy(np.ascontiguousarray(c).view(np.uint8)).view(torch.float8_e4m3fn)
    return out
