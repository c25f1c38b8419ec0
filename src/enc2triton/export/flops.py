"""FLOPs of the encoder (fvcore, per operator and per module) and a roofline analysis per GPU and precision.

Convention: fvcore counts one multiply-add (MAC) as one "flop". Everything here reports both, with
FLOPs = 2 x MACs. Elementwise/normalization ops (which fvcore skips by default) get handles that count
plain FLOPs per output element (table `EW_FLOPS`) and hand fvcore FLOPs / 2 as "MACs", so the
relation FLOPs = 2 x MACs holds for every row and every total.

Roofline model: bytes moved by an op = (its tensor inputs + outputs) x element size of the precision
(fp32/tf32 4, fp16 2, int8/fp8 1): every op reads its inputs from and writes its output to DRAM (no
fusion, no cache reuse), weights are read once per batch, activations scale linearly with batch.
GEMMs (linear, matmul, bmm, sdpa) are held against the precision's dense tensor-core peak; other ops
run on CUDA cores and are held against the fp32 CUDA-core peak (a lower ridge, so "memory-bound"
there is the robust verdict).
"""
from __future__ import annotations

import inspect
import math
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from enc2triton.core import io, markdown, spec

CONVENTION = ("fvcore counts one multiply-add as one flop (its 'flops' are MACs); here FLOPs = 2 x MACs. "
              "Elementwise/normalization ops are counted as plain FLOPs per element (MACs = FLOPs / 2).")

# FLOPs per output element (per input element for reductions). Estimates, see comments.
EW_FLOPS = {
    "add": 1, "add_": 1, "sub": 1, "rsub": 1, "mul": 1, "mul_": 1, "div": 1, "div_": 1,
    "softmax": 5,     # max, subtract, exp, sum, divide
    "layer_norm": 8,  # mean 1, variance 3 (sub, square, add), normalize 2, affine 2
    "gelu": 8,        # erf/tanh form: ~8 arithmetic ops per element
    "tanh": 1, "erf": 1, "exp": 1, "sqrt": 1, "rsqrt": 1, "pow": 1,
    "sum": 1, "mean": 1,  # reductions: per input element
    "embedding": 0,   # pure gather: no arithmetic, but real memory traffic
}
GEMM_OPS = {"linear", "matmul", "mm", "bmm", "addmm", "einsum", "scaled_dot_product_attention"}
_FLOAT = {"Float", "Half", "BFloat16", "Double"}


# ------------------------------------------------------------------------------------------ GPUs
@dataclass(frozen=True)
class GPU:
    """Dense (no 2:4 sparsity) peaks in TFLOP/s (TOPS for int8) and DRAM bandwidth in GB/s."""

    name: str
    fp32: float          # CUDA cores, no tensor cores
    tf32: float | None   # tensor cores (fp32 inputs rounded to TF32); what TensorRT uses for "fp32" by default
    fp16: float          # tensor cores, fp32 accumulate
    int8: float          # tensor cores, TOPS
    fp8: float | None    # tensor cores, where the GPU has FP8 (cc >= 8.9)
    bw: float            # GB/s
    source: str

    def peak(self, precision: str) -> float | None:
        """FLOP/s of the precision's GEMM path (None where the GPU has none)."""
        v = getattr(self, precision)
        return None if v is None else v * 1e12

    def ridge(self, precision: str) -> float | None:
        """FLOP per byte where the roofline bends: peak / bandwidth."""
        p = self.peak(precision)
        return None if p is None else p / (self.bw * 1e9)


GPUS = {
    # NVIDIA H100 Tensor Core GPU datasheet (sparse figures halved) / Hopper whitepaper: FP32 67, TF32 989/2,
    # FP16 1979/2, FP8 and INT8 3958/2, HBM3 3.35 TB/s.
    "H100-SXM": GPU("H100 SXM", 67.0, 494.5, 989.5, 1979.0, 1979.0, 3350.0, "NVIDIA H100 datasheet (SXM5)"),
    # NVIDIA H200 datasheet (SXM): the H100's tensor-core rates (FP16 1979/2, FP8 and INT8 3958/2), HBM3e 4.8 TB/s.
    "H200": GPU("H200", 67.0, 494.5, 989.5, 1979.0, 1979.0, 4800.0, "NVIDIA H200 datasheet (SXM)"),
    # Same datasheet, PCIe column: FP32 51, TF32 756/2, FP16 1513/2, FP8/INT8 3026/2, HBM2e 2 TB/s.
    "H100-PCIe": GPU("H100 PCIe", 51.0, 378.0, 756.5, 1513.0, 1513.0, 2000.0, "NVIDIA H100 datasheet (PCIe)"),
    # NVIDIA A100 Tensor Core GPU datasheet: FP32 19.5, TF32 156, FP16 312, INT8 624 dense; 80GB SXM 2,039 GB/s.
    "A100-SXM-80GB": GPU("A100 SXM 80GB", 19.5, 156.0, 312.0, 624.0, None, 2039.0, "NVIDIA A100 datasheet"),
    # NVIDIA L4 Tensor Core GPU datasheet (sparse figures halved): FP32 30.3, TF32 120/2, FP16 242/2,
    # FP8 and INT8 485/2, GDDR6 300 GB/s.
    "L4": GPU("L4", 30.3, 60.0, 121.0, 242.5, 242.5, 300.0, "NVIDIA L4 datasheet"),
    # NVIDIA T4 Tensor Core GPU datasheet (Turing: no TF32, no FP8, no sparsity): FP32 8.1,
    # mixed FP16/FP32 65, INT8 130, GDDR6 320 GB/s.
    "T4": GPU("T4", 8.1, None, 65.0, 130.0, None, 320.0, "NVIDIA T4 datasheet"),
    # NVIDIA Ada GPU Architecture whitepaper, GeForce RTX 4090 column: FP32 82.6, TF32 82.6, FP16 tensor with
    # FP32 accumulate 165.2 (330.3 with FP16 accumulate; we use FP32 accumulate), INT8 660.6,
    # FP8 with FP32 accumulate 330.3 (660.6 with FP16 accumulate), GDDR6X 1008 GB/s.
    "RTX-4090": GPU("RTX 4090", 82.6, 82.6, 165.2, 660.6, 330.3, 1008.0, "NVIDIA Ada Lovelace architecture whitepaper"),
}


# ------------------------------------------------------------------------------------ counting
def _shape(v) -> list[int] | None:
    return v.type().sizes() if v.isCompleteTensor() else None


def _is_float(v) -> bool:
    return v.isCompleteTensor() and v.type().scalarType() in _FLOAT


def _is_weight(v) -> bool:
    # Parameters are graph inputs (prim::Param) of a float type; the model inputs are integer token tensors.
    return _is_float(v) and v.node().kind() == "prim::Param"


def _ew_handle(op: str):
    per = EW_FLOPS[op]

    def handle(inputs, outputs):
        out = outputs[0]
        if not _is_float(out):  # integer/bool index bookkeeping (position ids, masks): not model FLOPs
            return 0
        n = math.prod(_shape(inputs[0])) if op in ("sum", "mean") else math.prod(_shape(out))
        return per * n / 2  # fvcore's unit is a MAC; FLOPs = 2 x this
    return handle


def _sdpa_handle(inputs, outputs):
    q, k = _shape(inputs[0]), _shape(inputs[1])  # [..., s_q, d], [..., s_k, d]
    rows, s_k, d = math.prod(q[:-1]), k[-2], q[-1]
    return 2 * rows * s_k * d + EW_FLOPS["softmax"] * rows * s_k / 2  # QK^T and PV MACs + softmax


def _record(rows: list, op: str, fn):
    """Wrap a handle: also keep the scope, shapes and weight/activation elements of each call."""

    def handle(inputs, outputs):
        macs = float(fn(inputs, outputs))
        if macs == 0 and op != "embedding":  # skipped integer ops
            return 0
        tensors = [v for v in inputs if v.isCompleteTensor() and _shape(v)] + [o for o in outputs if _shape(o)]
        w = sum(math.prod(_shape(v)) for v in tensors if _is_weight(v))
        a = sum(math.prod(_shape(v)) for v in tensors if not _is_weight(v))
        if op == "embedding":  # a gather reads only the selected rows (= output size), not the whole table
            w, a = 0, a + math.prod(_shape(outputs[0]))
        rows.append({"scope": outputs[0].node().scopeName().split("/")[-1], "op": op, "macs": macs,
                     "w_elems": w, "a_elems": a, "in": [_shape(v) for v in inputs if _shape(v)],
                     "out": _shape(outputs[0])})
        return macs
    return handle


def _role(scope: str, op: str) -> str:
    """Module group of an op, for both DistilBERT and BERT module names."""
    leaf = scope.rsplit(".", 1)[-1]
    if op == "layer_norm":
        return "layernorm"
    if op == "embedding" or "embeddings" in scope:
        return "embeddings"
    if op in ("softmax", "gelu"):
        return op
    if op == "linear":
        if leaf in ("q_lin", "k_lin", "v_lin", "query", "key", "value"):
            return "attn_qkv_linear"
        if "attention" in scope:
            return "attn_out_linear"
        if leaf == "lin1" or "intermediate" in scope:
            return "ffn_in_linear"
        return "ffn_out_linear" if leaf == "lin2" or scope.endswith("output.dense") else "other_linear"
    if op in GEMM_OPS:
        return "attn_matmul"
    return "pooling" if scope == "" else "elementwise"


def _group(rows: list, batch: int) -> list[dict]:
    """Merge the per-layer copies of an op into one row: name = scope with layer indices as '*' + op (+ #k)."""
    seen, merged = Counter(), {}
    for r in rows:
        seen[(r["scope"], r["op"])] += 1
        k = seen[(r["scope"], r["op"])]
        scope = re.sub(r"\.\d+(?=\.|$)", ".*", r["scope"]) or "<model>"
        name = f"{scope}:{r['op']}" + (f"#{k}" if k > 1 else "")
        m = merged.setdefault(name, {"name": name, "op": r["op"], "role": _role(r["scope"], r["op"]),
                                     "gemm": r["op"] in GEMM_OPS, "count": 0, "macs": 0.0, "w_elems": 0,
                                     "a_elems": 0, "in": r["in"], "out": r["out"]})
        m["count"] += 1
        for f in ("macs", "w_elems", "a_elems"):
            m[f] += r[f]
    out = list(merged.values())
    for m in out:
        m["flops"] = 2 * m["macs"]
        m["flops_per_item"] = m["flops"] / batch
        m["a_per_item"] = m["a_elems"] / batch  # activations scale with batch, weights do not
    return out


def _num(x: float):
    return int(x) if float(x).is_integer() else float(x)


def count_flops(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict:
    """fvcore FLOPs of `model(**inputs)` at the batch/seq of the inputs: per op type, per op, per module."""
    with warnings.catch_warnings():  # fvcore.nn applies torch.jit.script at import: deprecation noise
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

    params = list(inspect.signature(model.forward).parameters)
    names = params[:len(inputs)]  # fvcore passes positionally: the inputs must be a prefix of forward()'s
    if set(names) != set(inputs):
        raise ValueError(f"inputs {sorted(inputs)} are not the leading parameters of forward{tuple(params)}")
    args = tuple(inputs[n] for n in names)
    batch, seq = args[0].shape[:2]
    rows: list = []
    handles = {k: v for k, v in _DEFAULT_SUPPORTED_OPS.items() if k.split("::")[1] in GEMM_OPS}
    handles.update({f"aten::{op}": _ew_handle(op) for op in EW_FLOPS})  # replaces fvcore's layer_norm (5/elem)
    handles["aten::scaled_dot_product_attention"] = _sdpa_handle
    was_training = model.training
    model.eval()
    try:
        fa = FlopCountAnalysis(model, args)
        fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        for kind, fn in handles.items():
            fa.set_op_handle(kind, _record(rows, kind.split("::")[1], fn))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit deprecation notes from tracing
            macs = fa.total()
        by_mod, unsupported = fa.by_module(), fa.unsupported_ops()
    finally:
        model.train(was_training)
    ops = _group(rows, batch)
    groups, by_op = defaultdict(float), defaultdict(float)  # from the rows: fvcore's Counters drop zero counts
    for r in ops:
        groups[r["role"]] += r["flops"]
        by_op[r["op"]] += r["macs"]
    return {
        "batch_size": int(batch), "seq_len": int(seq),
        "total_macs": _num(macs), "total_flops": _num(2 * macs),
        "by_operator": {k: {"macs": _num(v), "flops": _num(2 * v)} for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
        "modules": {k: {"macs": _num(v), "flops": _num(2 * v)} for k, v in by_mod.items() if v},
        "groups": {k: _num(v) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "rows": ops,
        "unsupported": dict(unsupported),
    }


# ------------------------------------------------------------------------------------ analytic
def _dims(config) -> tuple[int, int, int, int]:
    """(hidden, layers, intermediate, heads) from a DistilBERT or BERT config (object or dict)."""
    def get(*names):
        for n in names:
            v = config.get(n) if isinstance(config, dict) else getattr(config, n, None)
            if v is not None:
                return int(v)
        raise ValueError(f"config has none of {names}")
    return (get("dim", "hidden_size"), get("n_layers", "num_hidden_layers"),
            get("hidden_dim", "intermediate_size"), get("n_heads", "num_attention_heads"))


def analytic_flops(config, seq_len: int) -> float:
    """Closed-form GEMM FLOPs per sequence of the encoder stack (no embeddings, no elementwise ops)."""
    h, layers, i, _ = _dims(config)
    s = seq_len
    per_layer = 4 * 2 * s * h * h + 2 * 2 * s * s * h + 2 * 2 * s * h * i  # QKV+out, scores+context, FFN
    return float(layers * per_layer)


# ------------------------------------------------------------------------------------ roofline
def ridge_batch(ridge: float, flops_item: float, fixed_bytes: float, bytes_item: float) -> int | str:
    """Smallest integer B with B*F / (W + B*A) >= ridge, or "never" when the asymptote F/A stays below it."""
    if fixed_bytes == 0:  # no weights: intensity F/A is the same at every batch
        return 1 if flops_item >= ridge * bytes_item > 0 else "never"
    if flops_item <= ridge * bytes_item:  # intensity rises towards F/A but never reaches the ridge
        return "never"
    b = max(1, math.ceil(ridge * fixed_bytes / (flops_item - ridge * bytes_item)))
    while b > 1 and (b - 1) * flops_item >= ridge * (fixed_bytes + (b - 1) * bytes_item):
        b -= 1  # float guard: step to the exact smallest integer
    while b * flops_item < ridge * (fixed_bytes + b * bytes_item):
        b += 1
    return b


def linear_ridge_batch(ridge: float, seq_len: int, k: int, n: int, elt: int) -> int | str:
    """GEMM [B*s, k] x [k, n]: intensity(B) = 2*B*s*k*n / (elt*(B*s*k + k*n + B*s*n)); bias ignored."""
    return ridge_batch(ridge, 2 * seq_len * k * n, elt * k * n, elt * seq_len * (k + n))


def _op_at(row: dict, batch: int, p: str) -> tuple[float, float]:
    """(FLOPs, bytes) of a grouped row at `batch` and precision p."""
    return batch * row["flops_per_item"], spec.ROOF_BYTES[p] * (row["w_elems"] + batch * row["a_per_item"])


def roofline(rows: list[dict], config, seq_len: int, batch: int, gpus: dict = GPUS,
             precisions=("fp32", "fp16", "int8")) -> dict:
    """Per-op intensity and bound at `batch`, and the batch where linears / the model cross each ridge."""
    h, _, i, heads = _dims(config)
    s, d = seq_len, h // heads
    shapes = {"h->h": (h, h), "h->i": (h, i), "i->h": (i, h)}
    ops, raw = [], {}
    for r in rows:
        fb = {p: _op_at(r, batch, p) for p in precisions}
        raw[r["name"]] = {p: f / b for p, (f, b) in fb.items()}
        ops.append({"name": r["name"], "role": r["role"], "gemm": r["gemm"], "count": r["count"],
                    "flops": _num(fb[precisions[0]][0]), "bytes": {p: _num(b) for p, (_, b) in fb.items()},
                    "intensity": {p: round(v, 3) for p, v in raw[r["name"]].items()}})
    # Attention scores [s,d]x[d,s] and context [s,s]x[s,d] per head: no weights, so intensity ignores batch.
    attn = {p: 2 * s * s * d / (spec.ROOF_BYTES[p] * (2 * s * d + s * s)) for p in precisions}
    gemm = [r for r in rows if r["gemm"]]
    whole = {"model": rows, "model_gemm": gemm}  # unfused (every op hits DRAM) vs elementwise fused into GEMMs
    bound, mem, ridge, rb = {}, {}, {}, {}
    for g, gpu in gpus.items():
        bound[g], mem[g], ridge[g], rb[g] = {}, {}, {}, {}
        for p in precisions:
            rg = gpu.ridge(p)
            ridge[g][p] = None if rg is None else round(rg, 2)
            if rg is None:
                continue
            cuda = gpu.ridge("fp32")
            bound[g][p] = {o["name"]: "compute" if raw[o["name"]][p] >= (rg if o["gemm"] else cuda) else "memory"
                           for o in ops}
            mem[g][p] = [n for n, v in bound[g][p].items() if v == "memory"]
            e = spec.ROOF_BYTES[p]
            rb[g][p] = {k: linear_ridge_batch(rg, s, kk, nn, e) for k, (kk, nn) in shapes.items()}
            rb[g][p]["attention"] = 1 if attn[p] >= rg else "never"
            for k, rs in whole.items():
                rb[g][p][k] = ridge_batch(rg, sum(r["flops_per_item"] for r in rs),
                                          e * sum(r["w_elems"] for r in rs), e * sum(r["a_per_item"] for r in rs))
    return {
        "batch": batch, "seq_len": s, "precisions": list(precisions), "operators": ops, "bound": bound,
        "memory_bound": mem, "ridge": ridge, "ridge_batch": rb,
        "linear_shapes": {k: {"k": kk, "n": nn, "rows_per_item": s,
                              "asymptote": {p: round(2 * kk * nn / (spec.ROOF_BYTES[p] * (kk + nn)), 2) for p in precisions}}
                          for k, (kk, nn) in shapes.items()},
        "attention_intensity": {p: round(v, 2) for p, v in attn.items()},
        "notes": {
            "linear": "GEMM [B*s,k]x[k,n]: intensity(B)=2*B*s*k*n/(bytes*(B*s*k+k*n+B*s*n)); 'never' when "
                      "the asymptote 2*k*n/(bytes*(k+n)) stays below the ridge.",
            "attention": "score/context matmuls have no weights: intensity 2*s*s*d/(bytes*(2*s*d+s*s)) does not "
                         "depend on batch, so they are compute- or memory-bound at every batch (1 or 'never').",
            "model": "model: total FLOPs / (weights + every op's activations, unfused); model_gemm: GEMMs only, "
                     "as if elementwise ops were fused into GEMM epilogues.",
            "peaks": "GEMMs vs the precision's dense tensor peak (fp32 = CUDA cores; pass 'tf32' for tensor-core "
                     "fp32); other ops vs the fp32 CUDA-core peak.",
        },
    }


# ------------------------------------------------------------------------------------ analysis
def analyze(model: torch.nn.Module, inputs: dict[str, torch.Tensor], config, model_name: str,
            gpus: dict = GPUS, precisions=("fp32", "fp16", "int8")) -> dict:
    """FLOPs (fvcore) + analytic check + roofline at batch 1, as one JSON-able dict."""
    c = count_flops(model, inputs)
    b, s = c["batch_size"], c["seq_len"]
    rf = roofline(c["rows"], config, s, 1, gpus, precisions)
    at_b = roofline(c["rows"], config, s, b, {}, precisions)["operators"] if b != 1 else rf["operators"]
    for o, r in zip(at_b, c["rows"]):
        o["in"], o["out"] = r["in"], r["out"]
    return {
        "model": model_name, "batch_size": b, "seq_len": s,
        "total_flops": c["total_flops"], "total_macs": c["total_macs"],
        "flops_per_sequence": c["total_flops"] / b,
        "gemm_flops_per_sequence": sum(r["flops"] for r in c["rows"] if r["gemm"]) / b,
        "analytic_flops_per_sequence": analytic_flops(config, s),
        "convention": CONVENTION,
        "by_operator": c["by_operator"], "operators": at_b, "modules": c["modules"], "groups": c["groups"],
        "unsupported_ops": c["unsupported"],
        "memory_bound_at_batch1": rf["memory_bound"], "ridge": rf["ridge"], "ridge_batch": rf["ridge_batch"],
        "operators_batch1": rf["operators"],
        "linear_shapes": rf["linear_shapes"], "attention_intensity": rf["attention_intensity"], "notes": rf["notes"],
        "gpus": {k: asdict(g) for k, g in gpus.items()},
    }


# ------------------------------------------------------------------------------------ reports
def _fmt(x) -> str:
    if isinstance(x, str) or x is None:
        return x or "n/a"
    return f"{x:,}" if isinstance(x, int) else f"{x:,.4g}" if abs(x) >= 1 else f"{x:.3g}"


def _table(head: list[str], rows: list[list]) -> list[str]:
    return markdown.table(head, rows, _fmt)


def _summary(res: dict) -> str:
    """The 'why not a fixed batch threshold' text, built from the numbers in `res`."""
    s, rb, G, lin = res["seq_len"], res["ridge_batch"], res["gpus"], ("h->h", "h->i", "i->h")
    cross, bullets = {}, []
    for g, per in rb.items():
        parts = []
        for p, v in per.items():
            nv = [k for k in lin if v[k] == "never"]
            cross[g, p] = "never" if nv else max(v[k] for k in lin)
            parts.append(f"{p} never ({', '.join(nv)})" if nv else f"{p} from B={cross[g, p]}")
        bullets.append(f"- {G[g]['name']}: " + ", ".join(parts))
    name = lambda gp: f"{G[gp[0]]['name']} {gp[1]}"
    early = [v for v in cross.values() if v != "never" and v < 32]
    late = [name(gp) for gp, v in cross.items() if v != "never" and v > 32]
    never = [name(gp) for gp, v in cross.items() if v == "never"]
    attn = [f"{G[g]['name']} {p}" for g, per in rb.items() for p in per if per[p]["attention"] == 1]
    ew = [o for o in res["operators_batch1"] if not o["gemm"] and o["flops"]]
    top = max((v for o in ew for v in o["intensity"].values()), default=0.0)
    low = min((gp["fp32"] for gp in res["ridge"].values() if gp.get("fp32")), default=0.0)
    text = [
        f"With seq {s} each batch item already contributes {s} rows to every linear-layer GEMM "
        f"([{s}*B, k] x [k, n]), so the weight traffic is amortised from the first item on. Batch from which "
        "all three linear shapes are compute-bound:", "", *bullets, "",
        f"So a fixed \"compute-bound from batch 32\" rule is too late for {len(early)} of {len(cross)} "
        f"GPU x precision pairs (linears compute-bound from B={min(early, default=0)} to B={max(early, default=0)})"
        + (f", too early for {', '.join(late)}" if late else "")
        + (f", and wrong at any batch for {', '.join(never)}, where the asymptote 2kn/(bytes(k+n)) of some "
           "linear stays below the ridge" if never else "") + ". "
        f"The attention score/context matmuls carry no weights: their intensity "
        f"({', '.join(f'{p} {v:g}' for p, v in res['attention_intensity'].items())} FLOP/B) does not move with "
        f"batch, so they are compute-bound at every batch on {', '.join(attn) or 'none of these'} and memory-bound "
        f"at every batch elsewhere. Softmax, layer_norm, gelu and the other elementwise ops reach at most "
        f"{top:.3g} FLOP/B (their bytes grow with batch exactly as their FLOPs do), "
        + (f"below the lowest CUDA-core ridge here ({low:.3g} FLOP/B): memory-bound at any batch on every GPU listed."
           if top < low else f"which is not below every ridge here (lowest {low:.3g} FLOP/B)."),
    ]
    return "\n".join(text)


def write_reports(result: dict, logs_dir: Path | None = None) -> tuple[Path, Path]:
    """logs/flops.json (everything) and logs/flops.md (tables + the generated explanation)."""
    logs = Path(logs_dir or spec.LOGS)
    jp = io.write_json(logs / "flops.json", result)
    r, G = result, result["gpus"]
    ps = list(next(iter(r["ridge"].values())).keys()) if r["ridge"] else ["fp32", "fp16", "int8"]
    md = [f"# FLOPs and roofline: {r['model']}", "",
          f"batch {r['batch_size']}, seq {r['seq_len']}: total {r['total_flops'] / 1e9:.4g} GFLOP "
          f"({r['total_macs'] / 1e9:.4g} GMAC), {r['flops_per_sequence'] / 1e9:.4g} GFLOP per sequence "
          f"(GEMMs {r['gemm_flops_per_sequence'] / 1e9:.4g}); analytic encoder GEMMs "
          f"{r['analytic_flops_per_sequence'] / 1e9:.4g} GFLOP per sequence.", "", f"Convention: {r['convention']}", "",
          "## GPUs (dense peaks, TFLOP/s or TOPS; bandwidth GB/s; ridge FLOP/byte)", ""]
    md += _table(["GPU", "fp32", "tf32", "fp16", "int8", "fp8", "GB/s"] + [f"ridge {p}" for p in ps] + ["source"],
                 [[g["name"], g["fp32"], g["tf32"], g["fp16"], g["int8"], g["fp8"], g["bw"]]
                  + [r["ridge"][k][p] for p in ps] + [g["source"]] for k, g in G.items()])
    md += ["", f"## Operators (batch {r['batch_size']}; intensity = FLOPs / bytes moved, unfused)", ""]
    tot = r["total_flops"] or 1
    md += _table(["op", "x", "GFLOP", "share"] + [f"I {p}" for p in ps],
                 [[o["name"], o["count"], o["flops"] / 1e9, f"{100 * o['flops'] / tot:.2f}%"]
                  + [o["intensity"].get(p) for p in ps] for o in r["operators"]])
    md += ["", "## Module groups", ""]
    md += _table(["group", "GFLOP", "share"], [[k, v / 1e9, f"{100 * v / tot:.2f}%"] for k, v in r["groups"].items()])
    md += ["", "## Memory-bound at batch 1 (precisions where the op is below the ridge)", ""]
    names = [o["name"] for o in r["operators_batch1"]]
    mb = r["memory_bound_at_batch1"]
    md += _table(["op"] + [G[k]["name"] for k in mb],
                 [[n] + [" ".join(p for p in mb[k] if n in mb[k][p]) or "-" for k in mb] for n in names])
    md += ["", "## Batch at which each part crosses the ridge point (smallest B; 'never' = stays memory-bound)", ""]
    cols = ["h->h", "h->i", "i->h", "attention", "model", "model_gemm"]
    ls = r["linear_shapes"]
    md += _table(["GPU", "precision", "ridge"] + [f"{c} ({ls[c]['k']}x{ls[c]['n']})" if c in ls else c for c in cols],
                 [[G[k]["name"], p, r["ridge"][k][p]] + [v[c] for c in cols]
                  for k, per in r["ridge_batch"].items() for p, v in per.items()])
    md += ["", *(f"- {v}" for v in r["notes"].values()), "", "## Why a derived threshold", "", _summary(r), ""]
    mp = io.write_text(logs / "flops.md", "\n".join(md))
    return jp, mp
