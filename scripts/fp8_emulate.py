"""Emulate torch_fp8's numerics on the CPU and measure candidate FP8 schemes against the FP32 reference.

The bundled real model (all-MiniLM-L6-v2, the offline fallback) is loaded, our FP32 encoder (torch_model.from_hf) is the
reference, and each candidate's sentence embeddings of data/evaluation.txt are compared with it (metrics.compare:
mean/min cosine, top-10 neighbour agreement). Calibration (|max|, SmoothQuant statistics, sensitivity search) uses
data/calibration.txt only.

FP8 GEMMs are emulated exactly: E4M3 values dequantized (q.float() * scale) and multiplied in FP32 (FP8 tensor cores
accumulate in FP32), the bias added in FP32, the result rounded to the GEMM's output dtype.

    PYTHONPATH=src python scripts/fp8_emulate.py [--candidates NAME,...] [--project] [--json out.json]

Candidates (CANDIDATES below): act tensor = one static scale per tensor (calibrated |max| / 448), token = per-token
dynamic scale; gptq = weights rounded by GPTQ (--natural-order or act order), gptaq = sequential asymmetric GPTQ;
sqA = SmoothQuant with alpha A; keepK = the K layers a sensitivity search on the first --sens-texts calibration texts
ranks worst kept dense; fp16_* = the model in FP16 instead of BF16 (GEMM output still rounded to BF16 unless out16).
--project runs the project's own FP8 plan (quantize/fp8_plan.py, what torch_fp8 and the ONNX FP8 graph ship: static
per-tensor activations, GPTQ weights, its own sensitivity ranking per weight on all calibration texts) through
torch_model.to_fp8 the same way; tensor_gptq_keepK is the same scheme with
this script's ranking (raw error, first --sens-texts texts).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from enc2triton.core import metrics, spec
from enc2triton.runtime import torch_model
from enc2triton.export import models
from enc2triton.core.texts import length_batches, load_tokenizer, read_calibration, read_texts
from enc2triton.quantize.fp8_plan import embed

FP8 = torch.float8_e4m3fn
MAX = torch_model.FP8_MAX


def q8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """E4M3 round trip of x / scale, back in FP32 units (x's scale)."""
    return (x / scale).clamp(-MAX, MAX).to(FP8).float() * scale


class EmuLinear(nn.Module):
    """One linear layer in a configurable FP8 scheme (FP32 math after dequantization)."""

    def __init__(self, weight, bias, amax, act="tensor", weights=True, out=torch.bfloat16, smooth=None, wq=None):
        super().__init__()
        w = weight.detach().float()
        self.smooth = smooth  # per input channel: x / s, W * s
        if smooth is not None:
            w = w * smooth[None, :]
        ws = w.abs().amax(1, keepdim=True).clamp(min=1e-12) / MAX
        self.w = (wq if wq is not None else q8(w, ws)) if weights else w
        self.b = bias.detach().float()
        self.act, self.out = act, out
        self.x_scale = torch.tensor(max(float(amax), 1e-12) / MAX)

    def forward(self, x):
        x2 = x.reshape(-1, x.shape[-1]).float()
        if self.smooth is not None:
            x2 = x2 / self.smooth
        if self.act == "tensor":
            x2 = q8(x2, self.x_scale)
        elif self.act == "token":
            x2 = q8(x2, x2.abs().amax(1, keepdim=True).clamp(min=1e-12) / MAX)
        y = x2 @ self.w.t() + self.b
        return y.to(self.out).to(x.dtype).reshape(*x.shape[:-1], -1)


class Collect:
    """Per linear layer over the calibration feeds (real tokens only): per-channel |max| and X^T X, optionally."""

    def __init__(self, enc, feeds, hessian=False):
        self.amax, self.cmax, self.H, self.n = {}, {}, {}, {}
        cur = []

        def hook(key):
            def fn(_m, args):
                x = args[0][cur[0]].float()
                self.amax[key] = max(self.amax.get(key, 0.0), float(x.abs().max()))
                c = x.abs().amax(0)
                self.cmax[key] = torch.maximum(self.cmax[key], c) if key in self.cmax else c
                if hessian:
                    self.H[key] = self.H.get(key, 0) + x.t().double() @ x.double()
                    self.n[key] = self.n.get(key, 0) + x.shape[0]
            return fn

        hs = [m.register_forward_pre_hook(hook((i, n))) for i, n, m in torch_model.linears(enc)]
        with torch.inference_mode():
            for f in feeds:
                t = {k: torch.as_tensor(v) for k, v in f.items()}
                cur[:] = [t["attention_mask"].bool()]
                enc(**t)
        for h in hs:
            h.remove()


def gptq_fp8(w: torch.Tensor, H: torch.Tensor, damp=0.01, block=128, act_order=False) -> torch.Tensor:
    """GPTQ (Frantar et al.) onto the per-output-channel E4M3 grid: dequantized weight, FP32. act_order: columns
    in decreasing diag(H) order (the scales stay those of the unpermuted weight)."""
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        inv = torch.argsort(perm)
        return _gptq(w[:, perm], H[perm][:, perm], damp, block, scale=w.abs().amax(1, keepdim=True))[:, inv]
    return _gptq(w, H, damp, block, scale=w.abs().amax(1, keepdim=True))


def _gptq(w, H, damp, block, scale):  # noqa: the loop of gptq_fp8
    w = w.double().clone()
    ws = scale.double().clamp(min=1e-12) / MAX
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    w[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    q = torch.zeros_like(w)
    k = w.shape[1]
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].clone()
        err = torch.zeros_like(w1)
        hi = Hinv[i1:i2, i1:i2]
        for j in range(i2 - i1):
            col = w1[:, j:j + 1]
            qc = (col / ws).clamp(-MAX, MAX).float().to(FP8).double() * ws
            q[:, i1 + j:i1 + j + 1] = qc
            e = (col - qc) / hi[j, j]
            w1[:, j:] -= e @ hi[j:j + 1, j:]
            err[:, j:j + 1] = e
        w[:, i2:] -= err @ Hinv[i1:i2, i2:]
    return q.float()


class _Stop(Exception):
    pass


def layer_inputs(enc, key, feeds):
    """Yield the input rows (real tokens, FP32) of linear `key` in `enc`, per calibration feed; the forward stops there."""
    mod = dict(((i, n), m) for i, n, m in torch_model.linears(enc))[key]
    got = []

    def fn(_m, args):
        got.append(args[0])
        raise _Stop

    h = mod.register_forward_pre_hook(fn)
    try:
        with torch.inference_mode():
            for f in feeds:
                t = {k: torch.as_tensor(v) for k, v in f.items()}
                got.clear()
                try:
                    enc(**t)
                except _Stop:
                    pass
                yield got[0][t["attention_mask"].bool()].float()
    finally:
        h.remove()


def gptaq(enc32, cand: dict, feeds, damp=0.01) -> dict:
    """Sequential asymmetric GPTQ: each linear layer, in graph order, gets the E4M3 weight Q that minimizes
    ||X~ Q^T - X W^T|| over the calibration tokens, X the FP32 model's input of the layer and X~ the input the
    FP8 model (earlier layers already quantized) feeds it after its own E4M3 rounding: W' = W (X^T X~)(X~^T X~)^-1,
    then GPTQ of W' with H = X~^T X~ (both damped). Returns {key: dequantized weight}."""
    wq = {}
    keys = [(i, n) for i, n, _ in torch_model.linears(enc32)]
    act = cand.get("act", "tensor")
    for key in keys:
        enc = build(enc32, {**cand, "keep": [k for k in keys if k not in wq]}, None, wq, amax=cand["_amax"])
        W = dict(((i, n), m) for i, n, m in torch_model.linears(enc32))[key].weight.detach().double()
        A = B = 0
        xs = cand["_amax"][key] / MAX
        for x, xt in zip(layer_inputs(enc32, key, feeds), layer_inputs(enc, key, feeds)):
            if act == "token":
                xt = q8(xt, xt.abs().amax(1, keepdim=True).clamp(min=1e-12) / MAX)
            elif act == "tensor":
                xt = q8(xt, torch.tensor(xs))
            xt, x = xt.double(), x.double()
            A = A + xt.t() @ xt
            B = B + xt.t() @ (xt if cand.get("gptq") == "seq" else x)
        lam = damp * torch.mean(torch.diag(A))
        eye = torch.eye(A.shape[0], dtype=A.dtype)
        # ridge toward W, not toward 0: argmin ||X~ Q^T - X W^T||^2 + lam ||Q - W||^2 = W (B^T + lam I)(A + lam I)^-1
        Wp = W @ torch.linalg.solve(A + lam * eye, B + lam * eye).t()
        wq[key] = gptq_fp8(Wp.float(), A, damp)
    return wq


def build(enc32, cand: dict, stats: Collect, wq=None, amax=None):
    """A copy of the FP32 encoder in the candidate's dtype with EmuLinear layers."""
    import copy

    amax_all = amax
    enc = copy.deepcopy(enc32).to(cand.get("dtype", torch.bfloat16))
    keep = set(cand.get("keep", ()))
    for i, n, lin in list(torch_model.linears(enc)):
        if (i, n) in keep or cand.get("dense"):
            continue
        smooth = None
        if cand.get("alpha") is not None:
            wmax = lin.weight.detach().float().abs().amax(0).clamp(min=1e-5)
            smooth = (stats.cmax[(i, n)].clamp(min=1e-5) ** cand["alpha"] / wmax ** (1 - cand["alpha"])).clamp(min=1e-5)
        amax = (stats.amax if amax_all is None else amax_all)[(i, n)] if smooth is None else float((stats.cmax[(i, n)] / smooth).max())
        setattr(enc.layers[i], n, EmuLinear(lin.weight, lin.bias, amax, cand.get("act", "tensor"), cand.get("weights", True),
                                            cand.get("out", torch.bfloat16), smooth, None if wq is None else wq.get((i, n))))
    return enc.eval()


CANDIDATES = {
    "bf16_dense": {"dense": True},
    "fp16_dense": {"dense": True, "dtype": torch.float16},
    "current": {},  # per-tensor static activations, per-channel weights, BF16
    "weights_only": {"act": "none"},
    "acts_only": {"weights": False},
    "token": {"act": "token"},
    "fp16_tensor": {"dtype": torch.float16},
    "fp16_token": {"dtype": torch.float16, "act": "token"},
    "fp16_token_out16": {"dtype": torch.float16, "act": "token", "out": torch.float16},
    "token_out32": {"act": "token", "out": torch.float32},
    "token_sq0.5": {"act": "token", "alpha": 0.5},
    "fp16_token_sq0.5": {"dtype": torch.float16, "act": "token", "alpha": 0.5},
    "token_gptq": {"act": "token", "gptq": True},
    "fp16_token_gptq": {"dtype": torch.float16, "act": "token", "gptq": True},
    "tensor_gptq": {"gptq": True},
    "token_acts_only": {"act": "token", "weights": False},
    "weights_only_gptq": {"act": "none", "gptq": True},
    "token_gptaq": {"act": "token", "gptq": "aq"},
    "token_gptq_seq": {"act": "token", "gptq": "seq"},  # sequential GPTQ: H from the FP8 model's own (quantized) inputs
    "tensor_gptaq": {"gptq": "aq"},
    "fp16_token_gptaq": {"dtype": torch.float16, "act": "token", "gptq": "aq"},
}
for _k in (1, 2, 3, 4, 5, 6):  # the k layers the calibration sensitivity search ranks worst kept dense (model dtype)
    CANDIDATES[f"token_gptq_keep{_k}"] = {"act": "token", "gptq": True, "keep_top": _k}
    CANDIDATES[f"current_keep{_k}"] = {"keep_top": _k}
    CANDIDATES[f"tensor_gptq_keep{_k}"] = {"gptq": True, "keep_top": _k}  # torch_fp8's scheme, this script's ranking
    CANDIDATES[f"fp16_token_gptq_keep{_k}"] = {"dtype": torch.float16, "act": "token", "gptq": True, "keep_top": _k}

DEFAULT = ("bf16_dense", "fp16_dense", "current", "weights_only", "acts_only", "token", "token_acts_only", "fp16_tensor",
           "fp16_token", "token_out32", "token_sq0.5", "weights_only_gptq", "tensor_gptq", "token_gptq", "fp16_token_gptq",
           "token_gptaq", "token_gptq_keep1", "token_gptq_keep2", "token_gptq_keep3", "token_gptq_keep4")


def sensitivity(enc32, base: dict, stats, wq, feeds) -> list[tuple[float, tuple[int, str]]]:
    """(1 - mean cosine vs FP32 on the calibration feeds with only that layer quantized, layer), worst first."""
    ref = embed(enc32, feeds, range(sum(len(f["input_ids"]) for f in feeds)), "cpu")
    keys = [(i, n) for i, n, _ in torch_model.linears(enc32)]
    out = []
    for k in keys:
        enc = build(enc32, {**base, "keep": [x for x in keys if x != k]}, stats, wq)
        out.append((1 - float(metrics.cosine_rows(ref, embed(enc, feeds, range(len(ref)), "cpu")).mean()), k))
    return sorted(out, reverse=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/fp8_emulate.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", default=",".join(DEFAULT), help="comma-separated, of: " + ", ".join(CANDIDATES)
                    + " (default %(default)s)")
    ap.add_argument("--max-length", type=int, default=128, help="tokenizer max length (default %(default)s)")
    ap.add_argument("--calib-limit", type=int, default=0, help="use only the first N calibration texts (0: all)")
    ap.add_argument("--check-real", action="store_true", help="also run torch_model.to_fp8 itself with nearest-rounded "
                    "weights, nothing kept (torch._scaled_mm on the CPU), per-token (no amax: must match the 'token' "
                    "candidate) and static (calibrated amax: must match 'current')")
    ap.add_argument("--sens-texts", type=int, default=128, help="calibration texts the sensitivity search uses (default %(default)s)")
    ap.add_argument("--damp", type=float, default=0.01, help="GPTQ dampening, fraction of mean diag(H) (default %(default)s)")
    ap.add_argument("--natural-order", action="store_true", help="GPTQ columns in their natural order (default: act order, "
                    "decreasing diag(H), as torch_model.fp8_gptq)")
    ap.add_argument("--project", action="store_true", help="also run the project's FP8 plan (fp8_plan.fp8_plan, torch._scaled_mm "
                    "on the CPU) on the calibration texts and measure its torch_model.to_fp8 module")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    hf, tok, info = models.load(spec.DEFAULT_MODEL)
    print(f"model: {info.used} ({info.source})", flush=True)
    names = list(hf.input_names)
    enc32 = torch_model.from_hf(hf.model)
    calib = read_calibration(spec.CALIBRATION_TEXTS, spec.EVALUATION_TEXTS)
    if a.calib_limit:
        calib = calib[:a.calib_limit]
    calib_order, calib_feeds = length_batches(tok, calib, names, a.max_length, 16)
    order, eval_feeds = length_batches(tok, read_texts(spec.EVALUATION_TEXTS), names, a.max_length, 16)
    ref = embed(enc32, eval_feeds, order, "cpu")
    chosen = [c.strip() for c in a.candidates.split(",") if c.strip()]
    need_h = any(CANDIDATES[c].get("gptq") is True for c in chosen)
    t0 = time.perf_counter()
    stats = Collect(enc32, calib_feeds, hessian=need_h)
    print(f"calibration: {len(calib)} texts, {time.perf_counter() - t0:.1f} s", flush=True)
    wq = None
    if need_h:
        t0 = time.perf_counter()
        wq = {(i, n): gptq_fp8(m.weight.detach().float(), stats.H[(i, n)], a.damp, act_order=not a.natural_order)
              for i, n, m in torch_model.linears(enc32)}
        print(f"gptq: {time.perf_counter() - t0:.1f} s", flush=True)
    results = {}
    if a.check_real:
        import copy
        for label, amax in (("real_to_fp8_nearest", None), ("real_to_fp8_static", stats.amax)):
            real = torch_model.to_fp8(copy.deepcopy(enc32), amax=amax).eval()
            r = results[label] = metrics.compare(ref, embed(real, eval_feeds, order, "cpu"))
            print(f"{label:20s} mean {r['mean_cos']:.6f} min {r['min_cos']:.6f} top10 {r['top10']:.3f}", flush=True)
    if a.project:
        import copy

        from enc2triton.quantize import fp8_plan
        t0 = time.perf_counter()
        codes, amax, keep, plan = fp8_plan.fp8_plan(enc32, {"calib_feeds": calib_feeds, "calib_order": calib_order, "device": "cpu"})
        enc = torch_model.to_fp8(copy.deepcopy(enc32), codes, keep, amax)
        results["project_build_fp8"] = {**metrics.compare(ref, embed(enc.eval(), eval_feeds, order, "cpu")),
                                        "kept_bf16": plan["kept"], "plan": plan}
        r = results["project_build_fp8"]
        print(f"{'project_build_fp8':20s} mean {r['mean_cos']:.6f} min {r['min_cos']:.6f} top10 {r['top10']:.3f} "
              f"kept {plan['kept']} ({plan['kept_weight_share']:.1%} of the weights) steps {plan['calibration_steps']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    ranks = {}
    for c in chosen:
        cand = CANDIDATES[c]
        if cand.get("keep_top"):
            base = {k: v for k, v in cand.items() if k != "keep_top"}
            key = json.dumps(base, default=str, sort_keys=True)
            if key not in ranks:
                t0 = time.perf_counter()
                _, sfeeds = length_batches(tok, calib[:a.sens_texts], names, a.max_length, 16)
                ranks[key] = sensitivity(enc32, base, stats, wq if base.get("gptq") else None, sfeeds)
                print(f"sensitivity ({time.perf_counter() - t0:.0f} s): " + ", ".join(f"{i}.{n} {e:.2e}" for e, (i, n) in ranks[key]), flush=True)
            cand = {**base, "keep": [k for _, k in ranks[key][:cand["keep_top"]]]}
            results.setdefault("_kept", {})[c] = [f"layers.{i}.{n}" for i, n in cand["keep"]]
        w = wq if cand.get("gptq") is True else None
        if cand.get("gptq") in ("aq", "seq"):
            t0 = time.perf_counter()
            w = gptaq(enc32, {**cand, "_amax": stats.amax}, calib_feeds)
            print(f"gptaq: {time.perf_counter() - t0:.0f} s", flush=True)
        enc = build(enc32, cand, stats, w)
        r = metrics.compare(ref, embed(enc, eval_feeds, order, "cpu"))
        results[c] = r
        print(f"{c:20s} mean {r['mean_cos']:.6f} min {r['min_cos']:.6f} top10 {r['top10']:.3f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
