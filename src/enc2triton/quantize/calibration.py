"""int8 calibration: which MatMul inputs can be quantized, their |max| / per-channel |max| / |x| histograms over the
calibration texts, and the range methods that turn a histogram into a symmetric clip value (max, percentile,
MSE-optimal, KL entropy)."""
from __future__ import annotations

import copy
import re

import numpy as np

from enc2triton.runtime.engines import ort_session
from enc2triton.core.io import StageError
from enc2triton.quantize.onnx_graph import QUANT_OP_TYPES

QMAX = 127  # symmetric int8: [-127, 127], zero point 0
RANGE_METHODS = ("max", "p99.999", "p99.99", "mse", "entropy")
# log10|x| histogram used for every range method (relative bin width 0.7%)
LOG_LO, LOG_HI, NBINS = -8.0, 5.0, 4096
HIST_SAMPLES = 1 << 18  # per tensor per batch (strided subsample); |max| always uses every element
CENTERS = 10 ** (LOG_LO + (np.arange(NBINS + 1) + 0.5) * (LOG_HI - LOG_LO) / NBINS)  # bin centres (last: overflow)


def split_calibration(texts: list[str], s) -> tuple[list[str], list[str]]:
    """(calibrate on, held out): a fixed permutation (s.seed), the first `s.held_out` texts held out, at most
    `s.max_calib_texts` calibrated on (s: int8_search.Int8Settings)."""
    if len(texts) < 8:
        raise StageError(f"calibration needs at least 8 texts, got {len(texts)}")
    perm = np.random.default_rng(s.seed).permutation(len(texts))
    n_held = min(s.held_out, len(texts) // 4)
    held = [texts[i] for i in perm[:n_held]]
    calib = [texts[i] for i in perm[n_held:]][: s.max_calib_texts]
    return calib, held


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


def log_histogram(a: np.ndarray) -> np.ndarray:
    """Counts of |a| (already absolute, flat) in the log10 bins; values above 10**LOG_HI land in the last bin."""
    idx = ((np.log10(np.maximum(a, 1e-30)) - LOG_LO) * (NBINS / (LOG_HI - LOG_LO))).astype(np.int64)
    return np.bincount(np.clip(idx, 0, NBINS), minlength=NBINS + 1)


def calibrate(model, tensors: list[str], feeds, progress: bool = True, channel_tensors=(), desc: str = "int8 calibration",
              exact: bool = False) -> dict:
    """|max| and a log10|x| histogram per tensor over the calibration batches (padding tokens masked out of
    [batch, seq, hidden] tensors); per-channel |max| (last axis) for `channel_tensors`. exact=True runs the graph
    in float64 as written (exact.py: the same statistics on every machine, whichever kernels ORT picks)."""
    from onnx import TensorProto, helper
    from enc2triton.quantize import exact as exact_mod
    from enc2triton.core.cli import progress as bar

    aug = copy.deepcopy(model)
    have = {o.name for o in aug.graph.output}
    for t in tensors:
        if t not in have:
            aug.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    if exact:  # batches side by side, at most exact.workers() in flight; statistics gathered in feed order
        sess = exact_mod.session(exact_mod.to_double(aug))
        outputs = exact_mod.iter_batches(sess, tensors, feeds)
    else:
        sess = ort_session(aug)
        outputs = (sess.run(tensors, f) for f in feeds)
    absmax = {t: 0.0 for t in tensors}
    hist = {t: np.zeros(NBINS + 1, np.int64) for t in tensors}
    chmax: dict[str, np.ndarray] = {}
    n_tokens = 0
    for f, out in zip(bar(feeds, desc=desc, enabled=progress), outputs):
        mask = f["attention_mask"].astype(bool)
        n_tokens += int(mask.sum())
        for t, a in zip(tensors, out):
            if a.ndim == 3 and a.shape[:2] == mask.shape:
                a = a[mask]
            if t in channel_tensors:
                c = np.abs(a.reshape(-1, a.shape[-1])).max(axis=0)
                chmax[t] = np.maximum(chmax[t], c) if t in chmax else c
            a = np.abs(a.reshape(-1))
            absmax[t] = max(absmax[t], float(a.max()) if a.size else 0.0)
            if a.size > HIST_SAMPLES:
                a = a[:: a.size // HIST_SAMPLES]
            hist[t] += log_histogram(a)
    if exact:  # float64 statistics stored as float32 (what the int8 graph keeps): kernel noise (~1e-16) stays below
        absmax = {t: float(np.float32(v)) for t, v in absmax.items()}
        chmax = {t: c.astype(np.float32) for t, c in chmax.items()}
    return {"absmax": absmax, "hist": hist, "chmax": chmax, "tokens": n_tokens, "batches": len(feeds)}


# ------------------------------------------------------------------------------------------ range methods
def percentile_clip(h: np.ndarray, amax: float, p: float) -> float:
    """Upper edge of the bin holding the p-th percentile of |x| (at most amax)."""
    c = np.cumsum(h)
    k = int(np.searchsorted(c, c[-1] * p / 100.0))
    return float(min(10 ** (LOG_LO + (k + 1) * (LOG_HI - LOG_LO) / NBINS), amax))


def mse_clip(h: np.ndarray, amax: float) -> float:
    """Clip minimizing rounding noise (s^2/12 inside) + clipping error ((|x|-c)^2 outside)."""
    cs = np.geomspace(amax / 64, amax, 256)
    x = np.minimum(CENTERS, amax)
    best, best_err = amax, np.inf
    for c in cs:
        s = c / QMAX
        inside = x <= c
        err = h[inside].sum() * s * s / 12 + (h[~inside] * (x[~inside] - c) ** 2).sum()
        if err < best_err:
            best, best_err = float(c), err
    return best


def entropy_clip(h: np.ndarray, amax: float, nbins: int = 2048, nquant: int = 128, step: int = 16) -> float:
    """TensorRT's entropy calibration (min KL(P||Q)) on a linear re-binning of the |x| histogram."""
    x = np.minimum(CENTERS, amax)
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
    """The symmetric clip of a tensor with |x| histogram `h` and |max| `amax` under a range method
    ('max', 'p<percentile>', 'mse', 'entropy'); 1.0 for an all-zero tensor."""
    if amax <= 0:
        return 1.0
    if method == "max":
        return amax
    if method.startswith("p"):
        return percentile_clip(h, amax, float(method[1:]))
    if method == "mse":
        return mse_clip(h, amax)
    if method == "entropy":
        return entropy_clip(h, amax)
    raise ValueError(f"unknown range method {method!r}")
