"""SmoothQuant (Xiao et al. 2023): move activation outlier channels into the per-channel weight scales with a
per-channel Mul(1/s) before the weight MatMuls and weights scaled by s (an exact rewrite in fp32)."""
from __future__ import annotations

import copy

import numpy as np

from enc2triton.quantize.onnx_graph import drop_unused_initializers, toposort, weight_matmuls


def smooth_groups(model) -> dict[str, list[str]]:
    """Activation tensor -> the weight MatMuls that read it as their left input with a 2-D weight (Q/K/V share one)."""
    groups: dict[str, list[str]] = {}
    for node, act, _ in weight_matmuls(model):
        groups.setdefault(act, []).append(node)
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
        base = smoothed_name(t)
        g.initializer.append(numpy_helper.from_array((1.0 / sj).astype(np.float32), f"{base}_inv_scale"))
        g.node.append(helper.make_node("Mul", [t, f"{base}_inv_scale"], [base], name=f"{t}/SmoothQuant/Mul"))
        for c in groups[t]:
            node = byname[c]
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            name = f"{node.input[1]}_smoothquant_{k}"
            g.initializer.append(numpy_helper.from_array((w * sj[:, None]).astype(np.float32), name))
            node.input[0], node.input[1] = base, name
    drop_unused_initializers(g)  # the unscaled weights are no longer read
    toposort(g)
    return m


SUFFIX = "_smoothquant"


def smoothed_name(tensor: str) -> str:
    """The smoothed copy (X / s) of activation `tensor` that its MatMuls read instead."""
    return tensor + SUFFIX


def smoothed_source(tensor: str) -> str:
    """The original activation a smoothed MatMul input (`X_smoothquant`) was made from (itself otherwise)."""
    return tensor.removesuffix(SUFFIX)
