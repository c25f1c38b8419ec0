"""Machine-independent evaluation for the int8 search: the fp32 graph rewritten in float64, run as written.

The int8 search compares candidates whose cosines differ in the 4th-6th decimal (thresholds, rankings, minima). In
float32, ONNX Runtime's kernels (which GEMM micro-kernel the CPU gets: AVX2/FMA, AVX-512, VNNI; its graph fusions;
the thread split) change results in the last bits, and near a rounding boundary of a fake-quantized tensor that
moves a value by a whole quantization step: the same model and texts gave different int8 graphs on two CPUs.

Here every float tensor of the graph (its weights exactly as stored in float32, its activations) becomes float64,
the graph runs with ORT's optimizations off, and the Q/DQ arithmetic is written out (Div, Round half-to-even,
Clip to [-128, 127], Mul) instead of QuantizeLinear/DequantizeLinear, which have no float64 kernels. Kernel noise
is then ~1e-16 relative, and the search rounds every cosine to COS_DECIMALS before it compares anything, so no
kernel difference can flip a decision. ORT has no float64 Erf: GELU's erf is written out with a fitted
approximation (|error| < 4e-9 on all reals, below float32's resolution), the same on every machine.
"""
from __future__ import annotations

import numpy as np

COS_DECIMALS = 8  # cosines are rounded to this many decimals before the search compares them

# erfc(x) = t * exp(-x^2 + P(2t - 1)), t = 2 / (2 + x), x >= 0: P fitted (degree 12, least squares on Python's
# math.erfc over [0, 26]); erf(x) = sign(x) * (1 - erfc(|x|)), |error| < 4e-9 everywhere
_ERFC_POLY = (-0.6717940839053093, 0.672643213013062, 0.047343284477208404, -0.04689518846355289,
              -0.009872284407883444, 0.008820178167134101, 0.0017570261705471253, -0.002322363201404833,
              -0.0001461673377126825, 0.0006170323251210567, -7.681984258661242e-05, -0.00010750922482857896,
              3.367879436819604e-05)


def erf_reference(x: np.ndarray) -> np.ndarray:
    """The erf the float64 graph computes, in numpy (tests compare it with math.erf)."""
    a = np.abs(x)
    t = 2.0 / (2.0 + a)
    u = 2.0 * t - 1.0
    p = np.zeros_like(a)
    for c in reversed(_ERFC_POLY):
        p = p * u + c
    return np.sign(x) * (1.0 - t * np.exp(-a * a + p))


def _erf_nodes(x: str, y: str, pre: str, consts: dict) -> list:
    """Nodes computing y = erf(x) in float64 with the fitted approximation (constants added to `consts`)."""
    from onnx import helper

    def c(v):
        name = f"exact_c{len(consts)}"
        consts[name] = float(v)
        return name

    nodes = [helper.make_node("Abs", [x], [f"{pre}_a"]),
             helper.make_node("Add", [f"{pre}_a", c(2.0)], [f"{pre}_d"]),
             helper.make_node("Div", [c(2.0), f"{pre}_d"], [f"{pre}_t"]),
             helper.make_node("Mul", [f"{pre}_t", c(2.0)], [f"{pre}_t2"]),
             helper.make_node("Sub", [f"{pre}_t2", c(1.0)], [f"{pre}_u"])]
    acc = c(_ERFC_POLY[-1])
    for k, coef in enumerate(reversed(_ERFC_POLY[:-1])):
        nodes += [helper.make_node("Mul", [acc, f"{pre}_u"], [f"{pre}_m{k}"]),
                  helper.make_node("Add", [f"{pre}_m{k}", c(coef)], [f"{pre}_p{k}"])]
        acc = f"{pre}_p{k}"
    nodes += [helper.make_node("Mul", [f"{pre}_a", f"{pre}_a"], [f"{pre}_aa"]),
              helper.make_node("Sub", [acc, f"{pre}_aa"], [f"{pre}_e"]),
              helper.make_node("Exp", [f"{pre}_e"], [f"{pre}_x"]),
              helper.make_node("Mul", [f"{pre}_t", f"{pre}_x"], [f"{pre}_erfc"]),
              helper.make_node("Sub", [c(1.0), f"{pre}_erfc"], [f"{pre}_abs"]),
              helper.make_node("Sign", [x], [f"{pre}_s"]),
              helper.make_node("Mul", [f"{pre}_s", f"{pre}_abs"], [y])]
    return nodes


def to_double(model):
    """A copy of `model` computing in float64: float32 initializers, constants, inputs, outputs and Casts become
    float64 (their float32 values are exact in float64), Erf is written out (_erf_nodes). The graph's other ops
    (MatMul, Add, LayerNormalization, Softmax, ...) have float64 kernels in ONNX Runtime's CPU provider."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from enc2triton.quantize.onnx_graph import toposort

    F, D = TensorProto.FLOAT, TensorProto.DOUBLE
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph

    def conv(t):
        if t.data_type == F:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))

    for t in g.initializer:
        conv(t)
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.tensor_type.elem_type == F:
            vi.type.tensor_type.elem_type = D
    consts: dict[str, float] = {}
    nodes = []
    for i, n in enumerate(g.node):
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                conv(a.t)
            elif n.op_type == "Cast" and a.name == "to" and a.i == F:
                a.i = D
        if n.op_type == "Erf":
            nodes += _erf_nodes(n.input[0], n.output[0], f"exact_erf{i}", consts)
        else:
            nodes.append(n)
    for name, v in consts.items():
        g.initializer.append(numpy_helper.from_array(np.array(v, np.float64), name))
    del g.node[:]
    g.node.extend(nodes)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in nodes):
        raise ValueError("to_double: the graph already has Q/DQ nodes (no float64 kernels); convert the float graph")
    toposort(g)
    return m


def session(model, threads: int | None = 1):
    """An ONNX Runtime session that runs the float64 graph exactly as written (graph optimizations off); one intra-op
    thread: run_batches runs batches side by side instead."""
    from enc2triton.runtime.engines import ort_session

    return ort_session(model, threads=threads, optimize=False)


def round_cos(x: float) -> float:
    """A cosine as the search compares it: rounded to COS_DECIMALS (float64 kernel noise is ~1e-13 at most)."""
    return round(float(x), COS_DECIMALS)


def workers() -> int:
    """Batches run concurrently, one ORT thread each (float64 elementwise ops barely use ORT's intra-op threads).
    The results do not depend on it: each batch is computed alone, in the same order, whichever thread runs it."""
    import os

    return max(1, min(4, os.cpu_count() or 1))


def run_batches(sess, output: str, feeds: list[dict], extra: dict | None = None) -> list[np.ndarray]:
    """`output` of `sess` for every feed (with `extra` inputs added), in feed order, `workers()` batches at a time."""
    from concurrent.futures import ThreadPoolExecutor

    extra = extra or {}
    n = min(workers(), len(feeds))
    if n <= 1:
        return [sess.run([output], {**f, **extra})[0] for f in feeds]
    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(lambda f: sess.run([output], {**f, **extra})[0], feeds))


def iter_batches(sess, outputs: list[str], feeds: list[dict]):
    """`outputs` of `sess` for each feed, yielded in feed order, with at most `workers()` batches in flight (bounded
    memory: the calibration pass returns every MatMul input of a batch)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    n = min(workers(), len(feeds))
    if n <= 1:
        for f in feeds:
            yield sess.run(outputs, f)
        return
    with ThreadPoolExecutor(n) as ex:
        pending = deque()
        for f in feeds:
            pending.append(ex.submit(sess.run, outputs, f))
            if len(pending) >= n:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def reordered_sums(model):
    """Every MatMul A @ B rewritten as A[..., :h] @ B[..., :h, :] + A[..., h:] @ B[..., h:, :] (h = K // 2): the same
    product summed in another order, as another CPU's GEMM kernels (other blocking, FMA or not) would sum it."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    g.initializer.extend([numpy_helper.from_array(np.array([v], np.int64), n) for n, v in
                          (("ks_m1", -1), ("ks_m2", -2), ("ks_0", 0), ("ks_2", 2), ("ks_big", 1 << 62))])
    nodes = []
    for i, n in enumerate(g.node):
        if n.op_type != "MatMul":
            nodes.append(n)
            continue
        a, b, p = n.input[0], n.input[1], f"ks{i}"
        nodes += [helper.make_node("Shape", [b], [f"{p}_sh"]), helper.make_node("Gather", [f"{p}_sh", "ks_m2"], [f"{p}_k"]),
                  helper.make_node("Div", [f"{p}_k", "ks_2"], [f"{p}_h"]),
                  helper.make_node("Slice", [a, "ks_0", f"{p}_h", "ks_m1"], [f"{p}_a1"]),
                  helper.make_node("Slice", [a, f"{p}_h", "ks_big", "ks_m1"], [f"{p}_a2"]),
                  helper.make_node("Slice", [b, "ks_0", f"{p}_h", "ks_m2"], [f"{p}_b1"]),
                  helper.make_node("Slice", [b, f"{p}_h", "ks_big", "ks_m2"], [f"{p}_b2"]),
                  helper.make_node("MatMul", [f"{p}_a1", f"{p}_b1"], [f"{p}_c1"]),
                  helper.make_node("MatMul", [f"{p}_a2", f"{p}_b2"], [f"{p}_c2"]),
                  helper.make_node("Add", [f"{p}_c1", f"{p}_c2"], list(n.output))]
    del g.node[:]
    g.node.extend(nodes)
    return m
