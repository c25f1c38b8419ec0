"""Precision variants of the verified fp32 ONNX export: fp16, int8 (explicit symmetric Q/DQ) and best.

- fp16: FP16 compute, FP32 inputs/outputs; LayerNormalization, Softmax (and the mask Add feeding it), any
  ReduceMean/Pow/Sqrt LayerNorm decomposition and the whole mean-pooling tail stay FP32.
- int8: explicit QuantizeLinear/DequantizeLinear, SYMMETRIC int8 (zero point 0) for activations and
  per-channel weights, as TensorRT requires. Q/DQ sits on MatMul inputs only (never on a MatMul output or
  on the residual stream). Ranges come from data/calibration.txt; which range method each kind of tensor
  uses and which MatMuls stay FP32 are chosen by measuring the sentence-embedding cosine on a held-out
  slice of the calibration set (evaluation.txt is never looked at while choosing anything).
- best: the int8 graph with FP16 wherever no Q/DQ sits (TensorRT 10 `--best`; the strongly typed graph
  TensorRT 11 needs). Q/DQ scales stay FP32; the same sensitive ops stay FP32.
- fp8: not buildable here (needs ModelOpt and a GPU with compute capability >= 8.9); recorded with the reason.

How the int8 search works (all on CPU, bounded: a fixed number of evaluations, no open-ended loops):
1. a calibration pass (fp32 graph + extra outputs) records |max|, per-channel |max| and a log-spaced histogram
   of |x| for every MatMul input, over calibration texts at their natural lengths (length-sorted batches);
2. a "switchable" fake-quant copy of the graph takes per-point gates and activation scales as inputs, so one
   ONNX Runtime session evaluates any mix of quantized/unquantized MatMuls and any range choice;
3. SmoothQuant alpha (None = off, 0.5 .. 1.0): this model's LayerNorm outputs and GELU outputs have outlier
   channels (|x| up to 30 where most are < 2) that a per-tensor symmetric int8 scale cannot cover; a
   per-channel Mul(1/s) before the weight MatMuls (weights scaled by s, exact in fp32) moves them into the
   per-channel weight scales. Everything quantized, each alpha scored; the best is kept and recalibrated;
4. per tensor role (e.g. "FFN2 input", "Q/K/V input", "attention probabilities") pick the range method
   (max, 99.999/99.99 percentile, MSE-optimal, KL entropy) with the smallest cosine drop;
5. per MatMul sensitivity: quantize that node alone; score = the larger share of the floors' budgets it uses
   (mean drop / (1 - floor mean), min drop / (1 - floor min));
6. greedy: quantize everything, keep the highest-scoring MatMuls in FP32 until the held-out slice meets the
   floor plus a margin, then try to re-quantize each excluded node (keeps as many quantized as possible);
7. the final graph is written by onnxruntime.quantization.quantize_static (QDQ, per-channel, symmetric)
   from the chosen ranges (passed as its calibration cache), Q/DQ made dedicated to the MatMuls, checked,
   run and measured.
Search results are cached in artifacts/quantize_cache by hash of the fp32 ONNX, the calibration texts and the
settings, so a rerun is instant.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import io, metrics, spec
from .texts import read_texts, tokenize
from .io import StageError

METHOD_VERSION = 6  # bump when the search changes: invalidates cached search results
VARIANTS = ("fp16", "int8", "best")
QUANT_OP_TYPES = ("MatMul",)  # the exporter emits MatMul (+Add bias), never Gemm
SENSITIVE_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
RANGE_METHODS = ("max", "p99.999", "p99.99", "mse", "entropy")
FP8_REASON = ("FP8 (E4M3) Q/DQ needs NVIDIA ModelOpt calibration and a GPU with FP8 tensor cores (compute capability "
              ">= 8.9: Ada, Hopper or newer) to build and run; this CPU-only machine has neither. Build it on the GPU "
              "machine (modelopt.onnx.quantization --quantize_mode fp8), then TensorRT builds it from the Q/DQ graph.")
# log10|x| histogram used for every range method (relative bin width 0.7%)
_LOG_LO, _LOG_HI, _NBINS = -8.0, 5.0, 4096
_HIST_SAMPLES = 1 << 18  # per tensor per batch (strided subsample); |max| always uses every element
QMAX = 127  # symmetric int8: [-127, 127], zero point 0

@dataclass
class Int8Settings:
    """Everything that changes the int8 result (hashed into the search cache key)."""

    seed: int = 0  # order of the calibration texts before the held-out split
    held_out: int = 128  # calibration texts held out to measure sensitivity/acceptance (not calibrated on)
    sweep_texts: int = 64  # the first of them score the range-method and sensitivity sweeps (speed)
    max_calib_texts: int = 504
    batch_size: int = 16
    search_max_length: int = 512  # sweep texts are truncated to this (long texts are where int8 hurts most: keep them)
    methods: tuple[str, ...] = RANGE_METHODS
    alphas: tuple = (None, 0.5, 0.7, 0.8, 0.9, 1.0)  # SmoothQuant migration strengths tried (None = off)
    margin_mean: float = 0.003  # held-out targets: floor + margin (the evaluation texts are other sentences)
    margin_min: float = 0.02  # the min is set by a few long texts and moves more between text sets
    floor: dict = field(default_factory=lambda: dict(spec.FLOORS["int8"]))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["methods"] = list(self.methods)
        d["alphas"] = list(self.alphas)
        return d


# ------------------------------------------------------------------------------------------ data helpers
def length_batches(tokenizer, texts: list[str], input_names, max_length: int, batch_size: int = 16,
                   max_tokens: int = 2048):
    """Deterministic batches of similar-length texts at their natural lengths (sorted by length, at most
    `batch_size` texts and about `max_tokens` padded tokens each, so long texts don't pad short ones).
    Returns (order, feeds): feeds[i] holds texts order[...] in sequence."""
    lens = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (lens[i], i))
    groups, cur = [], []
    for j in order:
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * lens[j] > max_tokens):
            groups.append(cur)
            cur = []
        cur.append(j)
    if cur:
        groups.append(cur)
    feeds = [tokenize(tokenizer, [texts[j] for j in g], input_names, max_length) for g in groups]
    return order, feeds


def _embed(run_batch, order, feeds) -> np.ndarray:
    out = np.concatenate([run_batch(f) for f in feeds])
    emb = np.empty_like(out)
    emb[np.asarray(order)] = out
    return emb


def embed(path_or_session, texts, tokenizer, input_names, max_length: int, batch_size: int = 16) -> np.ndarray:
    """sentence_embedding for every text, in the texts' order."""
    sess = _session(path_or_session) if isinstance(path_or_session, (str, Path)) else path_or_session
    order, feeds = length_batches(tokenizer, texts, input_names, max_length, batch_size)
    return _embed(lambda f: sess.run(["sentence_embedding"], f)[0], order, feeds)


def quality(ref_path, variant_path, texts, tokenizer, input_names, max_length: int, k: int = 10,
            batch_size: int = 16, graph_optimizations: bool = True) -> dict:
    """Sentence-embedding agreement of a variant with the reference (ONNX Runtime CPU): mean/min cosine, max abs
    error, relative L2 error and top-k retrieval agreement among the texts (metrics.compare).

    graph_optimizations=False runs the variant exactly as written (Q/DQ as float ops: the arithmetic TensorRT
    implements with int32 accumulation); True is what a CPU user gets (ORT fuses Q/DQ into its x86 int8 kernels)."""
    ref = _REF_CACHE.get(_ref_key(ref_path, texts, max_length, batch_size)) if isinstance(ref_path, (str, Path)) else None
    if ref is None:
        ref = embed(ref_path, texts, tokenizer, input_names, max_length, batch_size)
    got = embed(_session(variant_path, graph_optimizations), texts, tokenizer, input_names, max_length, batch_size)
    return metrics.compare(ref, got, k)


_REF_CACHE: dict = {}  # run() fills it with the fp32 embeddings it needs several times (same file, same texts)


def _ref_key(ref_path, texts, max_length: int, batch_size: int) -> tuple:
    st = Path(ref_path).stat()
    return str(Path(ref_path).resolve()), st.st_mtime_ns, st.st_size, _sha_text(list(texts)), max_length, batch_size


def _cache_ref(ref_path: Path, texts, tokenizer, input_names, max_length: int, batch_size: int = 16) -> None:
    key = _ref_key(ref_path, texts, max_length, batch_size)
    if key not in _REF_CACHE:
        _REF_CACHE.clear()
        _REF_CACHE[key] = embed(ref_path, texts, tokenizer, input_names, max_length, batch_size)


def latency_ms(paths: dict, tokenizer, input_names, texts, batch: int = 8, seq: int = 128, runs: int = 10) -> dict:
    """ONNX Runtime CPU latency of one batch x seq request per model, {name: {"median": ms, "min": ms}}. The models
    take turns (round robin) so that load from other processes on a shared machine hits them alike."""
    sessions = {k: _session(v) for k, v in paths.items()}
    feed = tokenize(tokenizer, [texts[i % len(texts)] for i in range(batch)], input_names, seq, pad_to=seq)
    times: dict[str, list] = {k: [] for k in sessions}
    for sess in sessions.values():
        sess.run(None, feed)  # warm-up
    for _ in range(runs):
        for k, sess in sessions.items():
            t0 = time.perf_counter()
            sess.run(None, feed)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median": round(float(np.median(v)), 1), "min": round(float(np.min(v)), 1)} for k, v in times.items()}


def _sha_text(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def split_calibration(texts: list[str], s: Int8Settings) -> tuple[list[str], list[str]]:
    """(calibrate on, held out): a fixed permutation (seed), the first `held_out` texts held out."""
    if len(texts) < 8:
        raise StageError(f"calibration needs at least 8 texts, got {len(texts)}")
    perm = np.random.default_rng(s.seed).permutation(len(texts))
    n_held = min(s.held_out, len(texts) // 4)
    held = [texts[i] for i in perm[:n_held]]
    calib = [texts[i] for i in perm[n_held:]][: s.max_calib_texts]
    return calib, held


# ------------------------------------------------------------------------------------------ graph helpers
def _session(model, graph_optimizations: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not graph_optimizations:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def toposort(graph) -> None:
    """Order graph.node topologically (the float16 converter can leave Casts out of order)."""
    produced = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {""}
    order, pending = [], list(graph.node)
    while pending:
        rest = []
        for n in pending:
            if all(x in produced for x in n.input):
                order.append(n)
                produced.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise StageError(f"graph has a cycle or a dangling input near node {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(order)


def _dedupe_casts(graph) -> None:
    """The float16 converter emits one identical Cast per blocked consumer of a tensor, all with the same
    output name (not SSA): keep the first."""
    seen, keep = {}, []
    for n in graph.node:
        if n.output and n.output[0] in seen:
            prev = seen[n.output[0]]
            if not (prev.op_type == n.op_type == "Cast" and list(prev.input) == list(n.input)):
                raise StageError(f"tensor {n.output[0]!r} is produced twice by different nodes")
            continue
        for o in n.output:
            seen[o] = n
        keep.append(n)
    del graph.node[:]
    graph.node.extend(keep)


def _ancestors(graph, tensor: str) -> set[str]:
    prod = {o: n for n in graph.node for o in n.output}
    seen, stack = set(), [tensor]
    while stack:
        n = prod.get(stack.pop())
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        stack.extend(n.input)
    return seen


def fp32_nodes(graph) -> list[str]:
    """Nodes that stay FP32 besides the sensitive op types: the mean-pooling tail (everything only the
    sentence embedding depends on: mask cast, multiply, sums, clamp, division) and the attention-mask Add
    feeding each Softmax."""
    names = set()
    outs = {o.name for o in graph.output}
    if {"sentence_embedding", "last_hidden_state"} <= outs:
        names |= _ancestors(graph, "sentence_embedding") - _ancestors(graph, "last_hidden_state")
    prod = {o: n for n in graph.node for o in n.output}
    for n in graph.node:
        if n.op_type == "Softmax" and n.input[0] in prod and prod[n.input[0]].op_type == "Add":
            names.add(prod[n.input[0]].name)
    return sorted(x for x in names if x)


def to_fp16(model, extra_block_ops=()):
    """FP16 copy of `model` with FP32 IO; sensitive ops, pooling and `extra_block_ops` kept FP32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    block_ops = list(dict.fromkeys([*DEFAULT_OP_BLOCK_LIST, *SENSITIVE_OPS, *extra_block_ops]))
    keep = fp32_nodes(model.graph)
    m16 = convert_float_to_float16(copy.deepcopy(model), keep_io_types=True, op_block_list=block_ops, node_block_list=keep)
    _dedupe_casts(m16.graph)
    toposort(m16.graph)
    return m16, {"op_block_list": [o for o in block_ops if o not in DEFAULT_OP_BLOCK_LIST], "fp32_nodes": keep}


def _save_checked(model, path: Path) -> None:
    import onnx

    with io.atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp))


def _load(path: Path):
    import onnx

    return onnx.load(str(path))


def qdq_summary(model) -> dict:
    """Counts and the symmetric check of a Q/DQ graph."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    zps, scale_types = [], set()
    for n in model.graph.node:
        if n.op_type in QDQ_OPS:
            if len(n.input) > 2 and n.input[2] in inits:
                zps.append(numpy_helper.to_array(inits[n.input[2]]))
            if n.input[1] in inits:
                scale_types.add(int(inits[n.input[1]].data_type))
    return {
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in model.graph.node),
        "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in model.graph.node),
        "zero_points_all_zero": bool(all(np.all(z == 0) for z in zps)),
        "zero_point_dtypes": sorted({str(z.dtype) for z in zps}),
        "scales_fp32": scale_types <= {1},
    }


# ------------------------------------------------------------------------------------------ int8: calibration
def quant_points(model):
    """(candidate MatMul names, activation tensors in first-use order, points). A point is one quantizable
    MatMul input: (node, slot, 'act', tensor) or (node, slot, 'weight', initializer)."""
    inits = {i.name for i in model.graph.initializer}
    nodes, acts, points = [], [], []
    for n in model.graph.node:
        if n.op_type not in QUANT_OP_TYPES:
            continue
        nodes.append(n.name)
        for slot, t in enumerate(n.input[:2]):
            if t in inits:
                points.append((n.name, slot, "weight", t))
            else:
                points.append((n.name, slot, "act", t))
                if t not in acts:
                    acts.append(t)
    return nodes, acts, points


def tensor_roles(model, points) -> dict[str, str]:
    """Role of each activation tensor: its consumers' names with layer numbers removed, e.g.
    '/model/encoder/layer.#/output/dense/MatMul:0' (the FFN2 input of every layer)."""
    uses: dict[str, set] = {}
    for node, slot, kind, t in points:
        if kind == "act":
            uses.setdefault(t, set()).add(f"{re.sub(r'[0-9]+', '#', node)}:{slot}")
    return {t: "|".join(sorted(u)) for t, u in uses.items()}


def calibrate(model, tensors: list[str], feeds, progress: bool = True, channel_tensors=(), desc: str = "int8 calibration") -> dict:
    """|max| and a log10|x| histogram per tensor over the calibration batches (padding tokens masked out of
    [batch, seq, hidden] tensors); per-channel |max| (last axis) for `channel_tensors`."""
    from onnx import TensorProto, helper
    from tqdm import tqdm

    aug = copy.deepcopy(model)
    have = {o.name for o in aug.graph.output}
    for t in tensors:
        if t not in have:
            aug.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    sess = _session(aug)
    absmax = {t: 0.0 for t in tensors}
    hist = {t: np.zeros(_NBINS + 1, np.int64) for t in tensors}
    chmax: dict[str, np.ndarray] = {}
    n_tokens = 0
    for f in tqdm(feeds, desc=desc, unit="batch", disable=not progress, file=sys.stdout):
        mask = f["attention_mask"].astype(bool)
        n_tokens += int(mask.sum())
        for t, a in zip(tensors, sess.run(tensors, f)):
            if a.ndim == 3 and a.shape[:2] == mask.shape:
                a = a[mask]
            if t in channel_tensors:
                c = np.abs(a.reshape(-1, a.shape[-1])).max(axis=0)
                chmax[t] = np.maximum(chmax[t], c) if t in chmax else c
            a = np.abs(a.reshape(-1))
            absmax[t] = max(absmax[t], float(a.max()) if a.size else 0.0)
            if a.size > _HIST_SAMPLES:
                a = a[:: a.size // _HIST_SAMPLES]
            idx = ((np.log10(np.maximum(a, 1e-30)) - _LOG_LO) * (_NBINS / (_LOG_HI - _LOG_LO))).astype(np.int64)
            hist[t] += np.bincount(np.clip(idx, 0, _NBINS), minlength=_NBINS + 1)
    return {"absmax": absmax, "hist": hist, "chmax": chmax, "tokens": n_tokens, "batches": len(feeds)}


_CENTERS = 10 ** (_LOG_LO + (np.arange(_NBINS + 1) + 0.5) * (_LOG_HI - _LOG_LO) / _NBINS)


def _percentile_clip(h: np.ndarray, amax: float, p: float) -> float:
    c = np.cumsum(h)
    k = int(np.searchsorted(c, c[-1] * p / 100.0))
    return float(min(10 ** (_LOG_LO + (k + 1) * (_LOG_HI - _LOG_LO) / _NBINS), amax))


def _mse_clip(h: np.ndarray, amax: float) -> float:
    """Clip minimizing rounding noise (s^2/12 inside) + clipping error ((|x|-c)^2 outside)."""
    cs = np.geomspace(amax / 64, amax, 256)
    x = np.minimum(_CENTERS, amax)
    best, best_err = amax, np.inf
    for c in cs:
        s = c / QMAX
        inside = x <= c
        err = h[inside].sum() * s * s / 12 + (h[~inside] * (x[~inside] - c) ** 2).sum()
        if err < best_err:
            best, best_err = float(c), err
    return best


def _entropy_clip(h: np.ndarray, amax: float, nbins: int = 2048, nquant: int = 128, step: int = 16) -> float:
    """TensorRT's entropy calibration (min KL(P||Q)) on a linear re-binning of the |x| histogram."""
    x = np.minimum(_CENTERS, amax)
    lin = np.bincount(np.minimum((x / amax * nbins).astype(np.int64), nbins - 1), weights=h, minlength=nbins)
    best, best_kl = amax, np.inf
    for i in range(nquant, nbins + 1, step):
        p = lin[:i].copy()
        p[-1] += lin[i:].sum()
        nz = lin[:i] > 0
        edges = np.linspace(0, i, nquant + 1).astype(np.int64)
        sums = np.add.reduceat(lin[:i], edges[:-1])
        cnts = np.add.reduceat(nz.astype(np.float64), edges[:-1])
        q = np.repeat(np.where(cnts > 0, sums / np.maximum(cnts, 1), 0.0), np.diff(edges)) * nz
        if p.sum() == 0 or q.sum() == 0:
            continue
        p_n, q_n = p / p.sum(), q / q.sum()
        m = p_n > 0
        kl = float(np.sum(p_n[m] * np.log(p_n[m] / np.maximum(q_n[m], 1e-12))))
        if kl < best_kl:
            best, best_kl = (i + 0.5) * amax / nbins, kl
    return float(min(best, amax))


def clip_value(method: str, h: np.ndarray, amax: float) -> float:
    if amax <= 0:
        return 1.0
    if method == "max":
        return amax
    if method.startswith("p"):
        return _percentile_clip(h, amax, float(method[1:]))
    if method == "mse":
        return _mse_clip(h, amax)
    if method == "entropy":
        return _entropy_clip(h, amax)
    raise ValueError(f"unknown range method {method!r}")


# ------------------------------------------------------------------------------------------ int8: smoothing
def smooth_groups(model) -> dict[str, list[str]]:
    """Activation tensor -> the weight MatMuls that read it as their left input with a 2-D weight (Q/K/V share one)."""
    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2 and n.input[0] not in inits:
            groups.setdefault(n.input[0], []).append(n.name)
    return groups


def smoothing_factors(model, chmax: dict[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
    """SmoothQuant (Xiao et al. 2023): s_j = max|X_j|^alpha / max|W_j,:|^(1-alpha) per input channel j, so that
    X/s has no outlier channels and W*s carries them (per-channel weight quantization absorbs that)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    byname = {n.name: n for n in model.graph.node}
    out = {}
    for t, cons in smooth_groups(model).items():
        if t not in chmax:
            continue
        wmax = np.max([np.abs(numpy_helper.to_array(inits[byname[c].input[1]])).max(axis=1) for c in cons], axis=0)
        sj = np.power(np.maximum(chmax[t], 1e-5), alpha) / np.power(np.maximum(wmax, 1e-5), 1 - alpha)
        out[t] = np.clip(sj, 1e-2, 1e2).astype(np.float32)
    return out


def smooth_model(model, factors: dict[str, np.ndarray]):
    """Equivalent fp32 graph: X -> Mul(1/s) -> the MatMuls, whose weights become W*s (rows). The other readers
    of X (the residual Add) keep X. TensorRT fuses the per-channel Mul into the neighbouring kernels."""
    from onnx import helper, numpy_helper

    if not factors:
        return model
    m = copy.deepcopy(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    byname = {n.name: n for n in g.node}
    groups = smooth_groups(m)
    for k, (t, sj) in enumerate(factors.items()):
        base = f"{t}_smoothquant"
        g.initializer.append(numpy_helper.from_array((1.0 / sj).astype(np.float32), f"{base}_inv_scale"))
        g.node.append(helper.make_node("Mul", [t, f"{base}_inv_scale"], [base], name=f"{t}/SmoothQuant/Mul"))
        for c in groups[t]:
            node = byname[c]
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            name = f"{node.input[1]}_smoothquant_{k}"
            g.initializer.append(numpy_helper.from_array((w * sj[:, None]).astype(np.float32), name))
            node.input[0], node.input[1] = base, name
    used = {x for n in g.node for x in n.input}
    keep = [i for i in g.initializer if i.name in used]  # the unscaled weights are no longer read
    del g.initializer[:]
    g.initializer.extend(keep)
    toposort(g)
    return m


# ------------------------------------------------------------------------------------------ int8: search
def switch_model(model, acts: list[str], points):
    """A fake-quant copy of `model` with two extra inputs: qgate[P] (1 = quantize point p) and qscale[A]
    (activation scales). Weights are fake-quantized per output channel, symmetric. One session then
    evaluates any subset/range choice without rebuilding the graph."""
    from onnx import TensorProto, helper, numpy_helper

    m = copy.deepcopy(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    byname = {n.name: n for n in g.node}
    a_idx = {t: i for i, t in enumerate(acts)}
    g.input.append(helper.make_tensor_value_info("qgate", TensorProto.FLOAT, [len(points)]))
    g.input.append(helper.make_tensor_value_info("qscale", TensorProto.FLOAT, [len(acts)]))
    g.initializer.append(numpy_helper.from_array(np.array(0, np.int8), "sw_zp"))
    new = []
    for p, (node, slot, kind, t) in enumerate(points):
        pre = f"sw{p}"
        g.initializer.append(numpy_helper.from_array(np.array(p, np.int64), f"{pre}_gi"))
        new.append(helper.make_node("Gather", ["qgate", f"{pre}_gi"], [f"{pre}_g"]))
        if kind == "weight":
            w = numpy_helper.to_array(inits[t]).astype(np.float32)
            s = np.maximum(np.abs(w).max(axis=-2, keepdims=True), 1e-12) / QMAX if w.ndim >= 2 else max(np.abs(w).max(), 1e-12) / QMAX
            dw = (np.clip(np.round(w / s), -QMAX, QMAX) * s).astype(np.float32) - w
            g.initializer.append(numpy_helper.from_array(dw, f"{pre}_dw"))
            new += [helper.make_node("Mul", [f"{pre}_g", f"{pre}_dw"], [f"{pre}_gdw"]),
                    helper.make_node("Add", [t, f"{pre}_gdw"], [f"{pre}_out"])]
        else:
            g.initializer.append(numpy_helper.from_array(np.array(a_idx[t], np.int64), f"{pre}_si"))
            new += [helper.make_node("Gather", ["qscale", f"{pre}_si"], [f"{pre}_s"]),
                    helper.make_node("QuantizeLinear", [t, f"{pre}_s", "sw_zp"], [f"{pre}_q"]),
                    helper.make_node("DequantizeLinear", [f"{pre}_q", f"{pre}_s", "sw_zp"], [f"{pre}_dq"]),
                    helper.make_node("Sub", [f"{pre}_dq", t], [f"{pre}_d"]),
                    helper.make_node("Mul", [f"{pre}_d", f"{pre}_g"], [f"{pre}_gd"]),
                    helper.make_node("Add", [t, f"{pre}_gd"], [f"{pre}_out"])]
        byname[node].input[slot] = f"{pre}_out"
    g.node.extend(new)
    toposort(g)
    return m


class _Evaluator:
    """Embeds a held-out calibration slice through the switch model for given gates/scales."""

    def __init__(self, sess, ref: np.ndarray, order, feeds, n_points: int):
        self.sess = sess
        self.ref, self.order, self.feeds, self.n_points = ref, order, feeds, n_points
        self.calls = 0

    def __call__(self, gate_points, scales: np.ndarray) -> tuple[float, float]:
        gate = np.zeros(self.n_points, np.float32)
        gate[list(gate_points)] = 1.0
        qs = scales.astype(np.float32)
        got = _embed(lambda f: self.sess.run(["sentence_embedding"], {**f, "qgate": gate, "qscale": qs})[0], self.order, self.feeds)
        self.calls += 1
        cos = metrics.cosine_rows(self.ref, got)
        return float(cos.mean()), float(cos.min())


def search_int8(model, tokenizer, input_names, max_length: int, texts: list[str], s: Int8Settings,
                progress: bool = True) -> dict:
    """Calibrate, choose the SmoothQuant alpha, the range method per tensor role and the MatMuls kept FP32.
    Returns the search record (JSON-ready) that build_int8 turns into the Q/DQ graph."""
    from tqdm import tqdm

    t_start = time.perf_counter()
    nodes, acts, points = quant_points(model)
    if not nodes:
        raise StageError("the fp32 graph has no MatMul to quantize")
    calib, held = split_calibration(texts, s)
    _, cfeeds = length_batches(tokenizer, calib, input_names, max_length, s.batch_size)
    groups = smooth_groups(model)
    phases = {}
    tp = time.perf_counter()

    def phase(name):
        nonlocal tp
        now = time.perf_counter()
        phases[name] = round(now - tp, 1)
        tp = now

    cal0 = calibrate(model, acts, cfeeds, progress, channel_tensors=set(groups), desc="int8 calibration (fp32)")
    phase("calibration_fp32")
    fp32 = _session(model)
    ref_cache: dict[tuple, tuple] = {}
    budget_mean, budget_min = 1.0 - s.floor["mean_cos"], 1.0 - s.floor["min_cos"]

    def score(mean: float, mn: float) -> float:
        """The larger share of a floor's budget used: (1 - mean) / (1 - floor mean) vs (1 - min) / (1 - floor min)."""
        return max((1.0 - mean) / budget_mean, (1.0 - mn) / budget_min)


    def evaluator(sess, texts_, n_points, max_len):
        key = (len(texts_), max_len)
        if key not in ref_cache:
            order, feeds = length_batches(tokenizer, texts_, input_names, max_len, s.batch_size)
            ref_cache[key] = (_embed(lambda f: fp32.run(["sentence_embedding"], f)[0], order, feeds), order, feeds)
        ref, order, feeds = ref_cache[key]
        return _Evaluator(sess, ref, order, feeds, n_points)

    sweep_len = min(max_length, s.search_max_length)
    sweep_held = held[: s.sweep_texts]
    # 3. SmoothQuant alpha: everything quantized, 'max' ranges (|max| of X/s follows from the per-channel maxima)
    alpha_table, n_evals = [], 0
    for alpha in tqdm(s.alphas, desc="int8 smoothquant alpha", disable=not progress, file=sys.stdout):
        factors = smoothing_factors(model, cal0["chmax"], alpha) if alpha is not None else {}
        sm = smooth_model(model, factors)
        _, acts_a, points_a = quant_points(sm)
        amax = []
        for t in acts_a:
            src = t[: -len("_smoothquant")] if t.endswith("_smoothquant") else t
            amax.append(float((cal0["chmax"][src] / factors[src]).max()) if src in factors else cal0["absmax"][src])
        ev_a = evaluator(_session(switch_model(sm, acts_a, points_a)), sweep_held, len(points_a), sweep_len)
        mean, mn = ev_a(range(len(points_a)), np.array(amax) / QMAX)
        n_evals += 1
        alpha_table.append({"alpha": alpha, "mean_cos": mean, "min_cos": mn, "score": score(mean, mn)})
        del ev_a, sm
    phase("alpha_search")
    best_a = min(alpha_table, key=lambda r: r["score"])
    alpha = best_a["alpha"]
    factors = smoothing_factors(model, cal0["chmax"], alpha) if alpha is not None else {}
    model = smooth_model(model, factors)
    nodes, acts, points = quant_points(model)
    roles = tensor_roles(model, points)
    cal = calibrate(model, acts, cfeeds, progress, desc="int8 calibration (smoothed)") if factors else cal0
    t_cal = time.perf_counter() - t_start
    phase("calibration_smoothed")

    clips = {m: np.array([clip_value(m, cal["hist"][t], cal["absmax"][t]) for t in acts]) for m in s.methods}
    sw = _session(switch_model(model, acts, points))
    ev = evaluator(sw, held, len(points), max_length)  # acceptance (greedy): natural lengths
    fast = evaluator(sw, sweep_held, len(points), sweep_len)  # range methods + sensitivity sweep
    phase("range_candidates_and_switch_model")
    node_points = {n: [p for p, pt in enumerate(points) if pt[0] == n] for n in nodes}
    a_index = {t: i for i, t in enumerate(acts)}

    # 4. range method per role: quantize every tensor of the role (activations only), try each method
    role_names = sorted(set(roles.values()))
    role_table, chosen = {}, np.array(clips["max"])
    bar = tqdm(total=len(role_names) * len(s.methods), desc="int8 range methods", disable=not progress, file=sys.stdout)
    for r in role_names:
        tens = [t for t in acts if roles[t] == r]
        pts = [p for p, (_, _, kind, t) in enumerate(points) if kind == "act" and roles.get(t) == r]
        row = {}
        for m in s.methods:
            mean, mn = fast(pts, clips[m] / QMAX)
            row[m] = {"mean_cos": mean, "min_cos": mn, "score": score(mean, mn)}
            bar.update()
        best = min(s.methods, key=lambda m: (row[m]["score"], s.methods.index(m)))
        for t in tens:
            chosen[a_index[t]] = clips[best][a_index[t]]
        role_table[r] = {"method": best, "tensors": len(tens), **{m: round(row[m]["mean_cos"], 6) for m in s.methods}}
    bar.close()
    scales = chosen / QMAX
    phase("range_method_search")

    # 5. sensitivity: one MatMul (its activation input(s) and weight) quantized at a time. Ranked by score, not by
    # the mean drop alone: attention-probability MatMuls barely move the mean but hurt the worst (long) texts
    sens = []
    for n in tqdm(nodes, desc="int8 sensitivity", disable=not progress, file=sys.stdout):
        mean, mn = fast(node_points[n], scales)
        sens.append({"node": n, "drop": 1.0 - mean, "mean_cos": mean, "min_cos": mn,
                     "score": score(mean, mn)})
    ranking = [r["node"] for r in sorted(sens, key=lambda r: (-r["score"], r["node"]))]
    phase("sensitivity")

    # 6. greedy exclusion until the held-out slice meets floor + margin, then re-quantize what still fits
    target = {"mean_cos": s.floor["mean_cos"] + s.margin_mean, "min_cos": s.floor["min_cos"] + s.margin_min}

    def evaluate(excluded):
        pts = [p for n in nodes if n not in excluded for p in node_points[n]]
        return ev(pts, scales)

    excluded, trace = [], []
    bar = tqdm(total=len(nodes) + 1, desc="int8 greedy", disable=not progress, file=sys.stdout)
    mean, mn = evaluate(excluded)
    trace.append({"step": "all quantized", "excluded": 0, "mean_cos": mean, "min_cos": mn})
    bar.update()
    while not (mean >= target["mean_cos"] and mn >= target["min_cos"]) and len(excluded) < len(nodes):
        excluded.append(ranking[len(excluded)])
        mean, mn = evaluate(excluded)
        trace.append({"step": f"exclude {excluded[-1]}", "excluded": len(excluded), "mean_cos": mean, "min_cos": mn})
        bar.update()
    bar.close()
    for n in list(reversed(excluded[:-1])):  # the last one added was needed; retry the others
        trial = [x for x in excluded if x != n]
        m2, n2 = evaluate(trial)
        ok = m2 >= target["mean_cos"] and n2 >= target["min_cos"]
        trace.append({"step": f"re-quantize {n}", "excluded": len(trial), "mean_cos": m2, "min_cos": n2, "kept": ok})
        if ok:
            excluded, mean, mn = trial, m2, n2
    excluded = [n for n in nodes if n in excluded]  # graph order
    phase("greedy")
    return {
        "settings": s.as_dict(),
        "smoothquant": {"alpha": alpha, "tensors": sorted(factors), "alpha_search": alpha_table,
                        "factors": {t: [float(x) for x in f] for t, f in factors.items()}},
        "calibration": {"texts": len(calib), "held_out_texts": len(held), "tokens": cal["tokens"], "batches": cal["batches"],
                        "batching": f"length-sorted batches of {s.batch_size}, padded to the longest in the batch (natural lengths, max {max_length})",
                        "seconds": round(t_cal, 1)},
        "roles": role_table,
        "clip": {t: float(chosen[i]) for i, t in enumerate(acts)},
        "absmax": {t: float(cal["absmax"][t]) for t in acts},
        "sensitivity": sens,
        "target": target,
        "greedy": trace,
        "excluded": excluded,
        "quantized": [n for n in nodes if n not in excluded],
        "held_out": {"mean_cos": mean, "min_cos": mn},
        "evaluations": n_evals + ev.calls + fast.calls,
        "sweep_texts": len(fast.ref), "acceptance_texts": len(ev.ref),
        "seconds": round(time.perf_counter() - t_start, 1),
        "phase_seconds": phases,
    }


def build_int8(model, search: dict, out: Path) -> dict:
    """Write the Q/DQ graph with onnxruntime.quantization.quantize_static from the searched ranges."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    quantized = search["quantized"]
    if not quantized:
        raise StageError("the int8 search kept every MatMul in FP32: no int8 graph to write")
    factors = {t: np.array(f, np.float32) for t, f in (search.get("smoothquant") or {}).get("factors", {}).items()}
    model = smooth_model(model, factors)
    ranges = {t: TensorData(lowest=np.array(-c, np.float32), highest=np.array(c, np.float32)) for t, c in search["clip"].items()}
    extra = {
        "ActivationSymmetric": True, "WeightSymmetric": True,  # TensorRT: int8 Q/DQ must be symmetric (zero point 0)
        "OpTypesToExcludeOutputQuantization": list(QUANT_OP_TYPES),  # Q/DQ on GEMM inputs only
        "QDQKeepRemovableActivations": True,
    }
    with tempfile.TemporaryDirectory(prefix="enc2triton-int8-") as d, io.atomic_path(out) as tmp:
        cache = Path(d) / "ranges.json"
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, ranges), cache)
        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.ERROR))  # ORT logs "consider pre-processing" warnings on the root logger
        try:
            quantize_static(model, str(tmp), None, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANT_OP_TYPES),
                            per_channel=True, reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_quantize=list(quantized), calibrate_method=CalibrationMethod.MinMax,
                            extra_options=extra, calibration_cache_path=str(cache))
        finally:
            root.setLevel(level)
        q = _load(tmp)
        rewired = dedicate_qdq(q, set(quantized))
        import onnx  # noqa: PLC0415

        s = qdq_summary(q)
        if not s["zero_points_all_zero"]:
            raise StageError("int8 graph has non-zero zero points: TensorRT only supports symmetric int8 Q/DQ")
        onnx.save(q, str(tmp))
        onnx.checker.check_model(str(tmp))
    return {**s, "rewired_float_consumers": rewired, "extra_options": extra}


def dedicate_qdq(model, quantized: set[str]) -> int:
    """ORT's QDQ pass feeds the DequantizeLinear output to EVERY consumer of a quantized tensor, residual Adds
    included (the residual stream would be quantized too). Give non-quantized consumers the float tensor back."""
    g = model.graph
    q_in = {n.output[0]: n.input[0] for n in g.node if n.op_type == "QuantizeLinear"}
    dq_src = {n.output[0]: q_in[n.input[0]] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in q_in}
    outputs = {o.name for o in g.output}
    count = 0
    for n in g.node:
        if n.op_type in QDQ_OPS or n.name in quantized:
            continue
        for i, t in enumerate(n.input):
            if t in dq_src and t not in outputs:
                n.input[i] = dq_src[t]
                count += 1
    return count


# ------------------------------------------------------------------------------------------ stage
def _cache_key(fp32_sha: str, texts: list[str], s: Int8Settings, max_length: int, model_cfg: str | None) -> str:
    import onnxruntime

    blob = json.dumps({"fp32": fp32_sha, "texts": _sha_text(texts), "settings": s.as_dict(), "max_length": max_length,
                       "config": model_cfg, "version": METHOD_VERSION, "onnxruntime": onnxruntime.__version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _mb(path: Path) -> float:
    return round(Path(path).stat().st_size / 1e6, 1)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(spec.ROOT))
    except ValueError:
        return str(path)


def _record(artifacts: Path, precision: str, entry: dict) -> None:
    manifest = io.load_manifest(artifacts)  # reload: other stages may have written meanwhile
    variants = manifest.get("variants") or {}
    variants[precision] = entry
    io.update_manifest("variants", variants, artifacts)


def _up_to_date(entry: dict | None, artifacts: Path, **sources: str) -> bool:
    return bool(entry) and io.is_valid(entry.get("onnx"), artifacts) and all(entry.get(k) == v for k, v in sources.items())


def run(artifacts: Path | None = None, logs: Path | None = None, precisions=VARIANTS, force: bool = False,
        calibration: Path = spec.CALIBRATION_TEXTS, evaluation: Path | None = spec.EVALUATION_TEXTS,
        settings: Int8Settings | None = None, measure_latency: bool = True, progress: bool = True,
        no_cache: bool = False, cache_dir: Path | None = None) -> dict:
    """Build the requested variants from the manifest's fp32 export (resuming: a variant whose file still
    has its recorded hash and whose recorded source hash matches is not rebuilt); record them in the manifest;
    write logs/quantize.md and logs/quantize.json. Returns the log dict."""
    from transformers import AutoTokenizer

    artifacts = Path(artifacts or spec.ARTIFACTS)
    logs = io.ensure_writable_dir(Path(logs or spec.LOGS))
    s = settings or Int8Settings()
    unknown = [p for p in precisions if p not in VARIANTS + ("fp8",)]
    if unknown:
        raise StageError(f"unknown precision(s) {unknown}: choose from {', '.join(VARIANTS + ('fp8',))}")
    manifest = io.load_manifest(artifacts)
    fp32_entry = (manifest.get("variants") or {}).get("fp32", {}).get("onnx")
    if not io.is_valid(fp32_entry, artifacts):
        raise StageError("the fp32 ONNX export is missing or changed since it was recorded: run `python torch2onnx.py` first")
    fp32_path, fp32_sha = io.resolve(fp32_entry["path"], artifacts), fp32_entry["sha256"]
    inputs = list(manifest["inputs"])
    max_length = int(manifest.get("shapes", {}).get("max_seq", 512))
    tokenizer = AutoTokenizer.from_pretrained(str(artifacts / manifest.get("tokenizer_dir", "tokenizer")))
    onnx_dir = artifacts / "onnx"
    paths = {p: onnx_dir / f"model_{p}.onnx" for p in VARIANTS}
    eval_texts = read_texts(evaluation) if evaluation and Path(evaluation).exists() else None
    model = None
    result = {"model": manifest.get("model", {}).get("used"), "fp32": {"path": fp32_entry["path"], "sha256": fp32_sha,
              "mb": _mb(fp32_path)}, "evaluation_texts": _rel(evaluation) if eval_texts else None, "variants": {}}
    built = {}

    def fp32_model():
        nonlocal model
        if model is None:
            model = _load(fp32_path)
        return model

    def measure(entry: dict, path: Path, exact: bool = False) -> None:
        if eval_texts:
            _cache_ref(fp32_path, eval_texts, tokenizer, inputs, max_length)
            q = quality(fp32_path, path, eval_texts, tokenizer, inputs, max_length)
            entry["quality"] = {**q, "texts": _rel(evaluation), "reference": "onnx fp32", "runtime": "onnxruntime CPU, default optimizations"}
            if exact:  # the graph's own arithmetic, without ORT's x86 int8 kernel fusions
                qe = quality(fp32_path, path, eval_texts, tokenizer, inputs, max_length, graph_optimizations=False)
                entry["quality_graph_exact"] = {**qe, "runtime": "onnxruntime CPU, graph optimizations disabled"}

    variants = manifest.get("variants") or {}
    # ---- fp16
    if "fp16" in precisions:
        entry = variants.get("fp16")
        if not force and _up_to_date(entry, artifacts, source_sha256=fp32_sha):
            print("fp16: up to date" + (" (fused GPU graph from enc2triton.optimize; --force rebuilds the portable one)" if entry.get("fused") else ""))
        else:
            t0 = time.perf_counter()
            m16, info = to_fp16(fp32_model())
            _save_checked(m16, paths["fp16"])
            entry = {"onnx": io.artifact_entry(paths["fp16"], artifacts),
                     "method": "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True) on the standard-op graph "
                               "(portable: ONNX Runtime CPU/CUDA and TensorRT strongly typed)",
                     "source_sha256": fp32_sha, "keep_io_types": True, **info, "seconds": round(time.perf_counter() - t0, 1)}
            measure(entry, paths["fp16"])
            _record(artifacts, "fp16", entry)
            built["fp16"] = entry
            print(f"fp16: wrote {paths['fp16']} ({_mb(paths['fp16'])} MB)")
        result["variants"]["fp16"] = entry

    # ---- int8
    calib_texts = None
    if "int8" in precisions or "best" in precisions:
        variants = io.load_manifest(artifacts).get("variants") or {}
        entry = variants.get("int8")
        if not Path(calibration).exists():
            raise StageError(f"calibration texts {calibration} not found (int8 needs them; never the evaluation texts)")
        if evaluation and Path(evaluation).exists() and Path(calibration).resolve() == Path(evaluation).resolve():
            raise StageError("refusing to calibrate on the evaluation texts")
        calib_texts = read_texts(calibration)
        key = _cache_key(fp32_sha, calib_texts, s, max_length, manifest.get("model", {}).get("config_sha256"))
        if not force and _up_to_date(entry, artifacts, source_sha256=fp32_sha, search_key=key):
            print("int8: up to date")
        else:
            t0 = time.perf_counter()
            cache_path = Path(cache_dir or artifacts / "quantize_cache") / f"int8-search-{key[:16]}.json"
            search = io.read_json(cache_path) if cache_path.exists() and not no_cache else None
            cached = search is not None and search.get("key") == key
            if cached:
                print(f"int8: search results from cache {cache_path}")
            else:
                search = search_int8(fp32_model(), tokenizer, inputs, max_length, calib_texts, s, progress)
                search["key"] = key
                io.write_json(cache_path, search)
            t1 = time.perf_counter()
            info = build_int8(fp32_model(), search, paths["int8"])
            t2 = time.perf_counter()
            roles = {r: v["method"] for r, v in search["roles"].items()}
            entry = {
                "onnx": io.artifact_entry(paths["int8"], artifacts),
                "method": "SmoothQuant migration (per-channel Mul before the weight MatMuls, weights rescaled; exact in fp32) + "
                          "onnxruntime.quantization.quantize_static, QuantFormat.QDQ, QInt8 activations and weights, symmetric "
                          "(zero point 0, TensorRT-compatible), per-channel weights, Q/DQ on MatMul inputs only; "
                          "sensitive MatMuls kept FP32 by a measured greedy search",
                "source_sha256": fp32_sha, "search_key": key,
                "smoothquant": {k: v for k, v in search["smoothquant"].items() if k != "factors"},
                "calibration": {"data": _rel(calibration), "data_sha256": _sha_text(calib_texts),
                                "samples": search["calibration"]["texts"], "held_out_samples": search["calibration"]["held_out_texts"],
                                "tokens": search["calibration"]["tokens"], "batching": search["calibration"]["batching"],
                                "seed": s.seed, "method": "per tensor role, the range method with the lowest score (largest share of the floor "
                                "budgets used, measured on the held-out calibration slice) among " + ", ".join(s.methods)
                                + "; ranges computed from |max| and a |x| histogram of the calibration activations",
                                "role_methods": roles},
                "quantized_nodes": search["quantized"], "excluded_nodes": search["excluded"],
                "quantized_count": len(search["quantized"]), "candidate_count": len(search["quantized"]) + len(search["excluded"]),
                "held_out_quality": search["held_out"], "target_held_out": search["target"],
                "search_cache": _rel(cache_path), "search_cached": cached,
                "seconds": {"search": round(t1 - t0, 1), "build": round(t2 - t1, 1)},
                **{k: v for k, v in info.items() if k != "extra_options"}, "extra_options": info["extra_options"],
            }
            # what ORT CPU (fused int8 kernels) gives on the same held-out slice
            calib, held = split_calibration(calib_texts, s)
            entry["held_out_quality_ort"] = {k: v for k, v in quality(fp32_path, paths["int8"], held, tokenizer, inputs, max_length).items()
                                             if k in ("mean_cos", "min_cos")}
            measure(entry, paths["int8"], exact=True)
            entry["seconds"]["total"] = round(time.perf_counter() - t0, 1)
            _record(artifacts, "int8", entry)
            built["int8"] = entry
            built["_search"] = search
            print(f"int8: wrote {paths['int8']} ({_mb(paths['int8'])} MB), {entry['quantized_count']}/{entry['candidate_count']} MatMuls "
                  f"quantized, kept FP32: {search['excluded'] or 'none'} ({entry['seconds']['total']}s)")
        if "int8" in precisions:
            result["variants"]["int8"] = entry

    # ---- best
    if "best" in precisions:
        variants = io.load_manifest(artifacts).get("variants") or {}
        i8 = variants.get("int8")
        if not _up_to_date(i8, artifacts, source_sha256=fp32_sha):
            raise StageError("best needs a valid int8 variant: run with int8")
        entry = variants.get("best")
        if not force and "int8" not in built and _up_to_date(entry, artifacts, source_sha256=fp32_sha, int8_sha256=i8["onnx"]["sha256"]):
            print("best: up to date")
        else:
            t0 = time.perf_counter()
            q = _load(io.resolve(i8["onnx"]["path"], artifacts))
            mb, info = to_fp16(q, extra_block_ops=QDQ_OPS)
            _save_checked(mb, paths["best"])
            summ = qdq_summary(mb)
            if not (summ["zero_points_all_zero"] and summ["scales_fp32"]):
                raise StageError(f"best graph lost symmetric fp32-scale Q/DQ: {summ}")
            entry = {"onnx": io.artifact_entry(paths["best"], artifacts),
                     "method": "int8 Q/DQ graph + convert_float_to_float16(keep_io_types=True): FP16 wherever no Q/DQ sits "
                               "(TensorRT 10 --best; strongly typed graph for TensorRT 11); Q/DQ and their scales stay FP32",
                     "source_sha256": fp32_sha, "int8_sha256": i8["onnx"]["sha256"], "keep_io_types": True, **info, **summ,
                     "excluded_nodes": i8.get("excluded_nodes"), "quantized_count": i8.get("quantized_count"),
                     "seconds": round(time.perf_counter() - t0, 1)}
            measure(entry, paths["best"], exact=True)
            _record(artifacts, "best", entry)
            built["best"] = entry
            print(f"best: wrote {paths['best']} ({_mb(paths['best'])} MB)")
        result["variants"]["best"] = entry

    # ---- fp8 (recorded, not built)
    variants = io.load_manifest(artifacts).get("variants") or {}
    if not (variants.get("fp8") or {}).get("onnx"):
        _record(artifacts, "fp8", {"onnx": None, "reason": FP8_REASON})
    result["variants"]["fp8"] = {"onnx": None, "reason": FP8_REASON}

    _write_logs(logs, artifacts, result, built, fp32_path, tokenizer, inputs, eval_texts, s, measure_latency)
    return result


# ------------------------------------------------------------------------------------------ logs
def _write_logs(logs: Path, artifacts: Path, result: dict, built: dict, fp32_path: Path, tokenizer, inputs, eval_texts,
                s: Int8Settings, measure_latency: bool) -> None:
    """logs/quantize.json (merged with the previous run's for variants not rebuilt) and logs/quantize.md."""
    json_path = logs / "quantize.json"
    old = io.read_json(json_path) if json_path.exists() else {}
    table = dict(old.get("variants_table") or {})
    texts = eval_texts or ["latency sample sentence"]
    rows = {"fp32": {"path": str(fp32_path)}}
    for p, e in result["variants"].items():
        if e.get("onnx"):
            rows[p] = {"path": str(io.resolve(e["onnx"]["path"], artifacts)), "entry": e}
    for p, r in rows.items():
        e = r.get("entry", {})
        q, qe = e.get("quality") or {}, e.get("quality_graph_exact") or {}
        row = {"mb": _mb(r["path"]), "mean_cos": q.get("mean_cos", 1.0 if p == "fp32" else None),
               "min_cos": q.get("min_cos", 1.0 if p == "fp32" else None), "max_abs": q.get("max_abs"), "rel_l2": q.get("rel_l2"),
               "top10": q.get("top10", 1.0 if p == "fp32" else None),
               "exact_mean_cos": qe.get("mean_cos"), "exact_min_cos": qe.get("min_cos"), "exact_top10": qe.get("top10")}
        fl = spec.FLOORS.get(p)
        row["floor"] = f"mean >= {fl['mean_cos']}, min >= {fl['min_cos']}" if fl else None
        row["pass"] = metrics.passes(row, fl) if fl and row["mean_cos"] is not None else None
        if e.get("fused"):
            row["note"] = "fused GPU graph (enc2triton.optimize): not measured on CPU"
        elif p in table and not measure_latency:
            row["cpu_ms_b8_s128"] = table[p].get("cpu_ms_b8_s128")
            row["cpu_ms_b8_s128_min"] = table[p].get("cpu_ms_b8_s128_min")
        table[p] = row
    timed = [p for p, r in rows.items() if not r.get("entry", {}).get("fused")]
    if measure_latency and timed:
        lat = latency_ms({p: rows[p]["path"] for p in timed}, tokenizer, inputs, texts)
        for p in timed:
            table[p]["cpu_ms_b8_s128"], table[p]["cpu_ms_b8_s128_min"] = lat[p]["median"], lat[p]["min"]
    table["fp8"] = {"mb": None, "pass": None, "note": "not built: " + FP8_REASON}
    int8 = result["variants"].get("int8") or (old.get("int8") or {})
    search = built.get("_search")
    if search is None and int8.get("search_cache"):
        cp = Path(int8["search_cache"])
        cp = cp if cp.is_absolute() else spec.ROOT / cp
        search = io.read_json(cp) if cp.exists() else None
    out = {
        "model": result["model"], "evaluation_texts": result["evaluation_texts"],
        "note": "quality = sentence embeddings vs the fp32 ONNX export on the evaluation texts (never used to choose anything); "
                "latency = ONNX Runtime CPU, batch 8 x 128 tokens, median (and min) of 10 round-robin runs on a shared 2-core machine (noisy; "
                "x86 ORT has no FP16 kernels, so fp16/best are not faster here)",
        "variants_table": table,
        "int8": {k: v for k, v in int8.items() if k not in ("quantized_nodes",)} if int8 else {},
    }
    if search:
        out["int8_search"] = {
            "calibration": search["calibration"], "target_on_held_out": search["target"], "held_out": search["held_out"],
            "evaluations": search["evaluations"], "seconds": search["seconds"],
            "range_methods_by_role": search["roles"],
            "sensitivity": [{"node": r["node"], "drop": round(r["drop"], 7), "min_cos": round(r["min_cos"], 5), "score": round(r["score"], 4),
                             "kept_fp32": r["node"] in search["excluded"]} for r in search["sensitivity"]],
            "greedy": search["greedy"],
        }
    io.write_json(json_path, out)
    io.write_text(logs / "quantize.md", _markdown(out, s))
    print(f"logs: {json_path}, {logs / 'quantize.md'}")


def _f(x, nd=6):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _markdown(d: dict, s: Int8Settings) -> str:
    L = ["# Precision variants (quantize.py)", "", f"Model: {d['model']}. {d['note']}.", "",
         "| variant | MB | mean cos | min cos | top-10 agreement | rel L2 | graph-exact mean / min cos, top-10 | CPU ms (8x128) median / min | floor | pass |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for p, r in d["variants_table"].items():
        if p == "fp8":
            continue
        exact = (f"{_f(r.get('exact_mean_cos'))} / {_f(r.get('exact_min_cos'))}, {_f(r.get('exact_top10'), 3)}"
                 if r.get("exact_mean_cos") is not None else "-")
        L.append(f"| {p} | {_f(r.get('mb'), 1)} | {_f(r.get('mean_cos'))} | {_f(r.get('min_cos'))} | {_f(r.get('top10'), 3)} | "
                 f"{_f(r.get('rel_l2'), 4)} | {exact} | {_f(r.get('cpu_ms_b8_s128'), 1)} / {_f(r.get('cpu_ms_b8_s128_min'), 1)} | "
                 f"{r.get('floor') or '-'} | {r.get('pass')} |")
    L += ["", "Quality columns: ONNX Runtime CPU with default optimizations (its x86 int8 kernels; what the floors are checked "
          "on). Graph-exact: the same graph with ORT graph optimizations off, i.e. the Q/DQ arithmetic as written (what "
          "TensorRT implements with int32 accumulation and fused epilogues).", "", f"fp8: {FP8_REASON}", ""]
    i8, srch = d.get("int8") or {}, d.get("int8_search")
    if i8:
        cal = i8.get("calibration", {})
        sq = i8.get("smoothquant") or {}
        L += ["## INT8", "", f"- method: {i8.get('method')}",
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
    if srch:
        L += ["### Range method per tensor role (sweep-slice mean cosine with that role quantized alone; chosen by the "
              "same score as the sensitivity table)", "",
              "| role | tensors | chosen | " + " | ".join(s.methods) + " |", "|---|---|---|" + "---|" * len(s.methods)]
        for r, v in srch["range_methods_by_role"].items():
            L.append(f"| `{r}` | {v['tensors']} | {v['method']} | " + " | ".join(_f(v.get(m)) for m in s.methods) + " |")
        L += ["", "### Sensitivity (each MatMul quantized alone on the sweep slice; drop = 1 - mean cosine; score = the larger "
              "share of the floor budgets used: max(drop / (1 - floor mean), (1 - min cos) / (1 - floor min)); greedy order)", "",
              "| node | drop | min cos | score | kept FP32 |", "|---|---|---|---|---|"]
        for r in sorted(srch["sensitivity"], key=lambda r: -r["score"]):
            L.append(f"| `{r['node']}` | {r['drop']:.6f} | {r['min_cos']:.5f} | {r['score']:.4f} | {'yes' if r['kept_fp32'] else ''} |")
        L += ["", "### Greedy search", "", "| step | excluded | mean cos | min cos |", "|---|---|---|---|"]
        for t in srch["greedy"]:
            L.append(f"| {t['step']}{'' if t.get('kept', True) else ' (rejected)'} | {t['excluded']} | {t['mean_cos']:.6f} | {t['min_cos']:.5f} |")
        L += ["", f"{srch['evaluations']} held-out evaluations, search {srch['seconds']} s "
                  f"(calibration pass {srch['calibration']['seconds']} s).", ""]
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------------------------------ CLI
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m enc2triton.quantize", description=(
        "Build the fp16, int8 (symmetric Q/DQ, TensorRT-compatible) and best (int8 + fp16) ONNX variants from the "
        "manifest's fp32 export, record them in the manifest and write logs/quantize.{md,json}. Resumes: variants "
        "whose files and sources are unchanged are not rebuilt."))
    ap.add_argument("--artifacts", type=Path, default=spec.ARTIFACTS)
    ap.add_argument("--logs", type=Path, default=spec.LOGS)
    ap.add_argument("--precisions", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    ap.add_argument("--force", action="store_true", help="rebuild the files even if up to date (the int8 search cache is still used)")
    ap.add_argument("--no-cache", action="store_true", help="redo the int8 search instead of reading its cache")
    ap.add_argument("--calibration", type=Path, default=spec.CALIBRATION_TEXTS, help="calibration texts, one per line")
    ap.add_argument("--evaluation", type=Path, default=spec.EVALUATION_TEXTS, help="texts for the final quality numbers only")
    ap.add_argument("--held-out", type=int, default=Int8Settings.held_out, help="calibration texts held out for the search")
    ap.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement in the logs")
    a = ap.parse_args(argv)
    try:
        run(a.artifacts, a.logs, tuple(p.strip() for p in a.precisions.split(",") if p.strip()), a.force, a.calibration,
            a.evaluation, Int8Settings(held_out=a.held_out), measure_latency=not a.no_latency, no_cache=a.no_cache)
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
