"""FP8 (E4M3) explicit Q/DQ graph: TensorRT's fp8 source (convert_to_trt.sh: `--stronglyTyped` on 10, as is on 11).

torch_fp8's scheme (torch_model.Fp8Linear) without its GPTQ-rounded weights and the few layers it keeps BF16: every
linear layer's MatMul (a 2-D weight initializer) gets its activation quantized with one static per-tensor scale (calibrated |max| / 448) and its
weight stored in FP8 with one scale per output channel (DequantizeLinear axis=1). Attention's activation x
activation MatMuls, LayerNorm, Softmax and the pooling stay FP32. FP8 Q/DQ needs opset 19: the graph is converted
with onnx.version_converter first. ONNX Runtime has no FP8 GEMM kernels (and its graph fusions refuse FP8 Q/DQ), so
the graph is measured with graph optimizations off: the arithmetic as written, which TensorRT implements.
"""
from __future__ import annotations

import numpy as np

from enc2triton.quantize.onnx_graph import drop_unused_initializers, toposort, weight_matmuls

E4M3_MAX = 448.0
OPSET = 19


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E4M3 weight, FP32 scale per output channel) of a [K, N] MatMul weight."""
    import ml_dtypes

    scale = (np.maximum(np.abs(w).max(axis=0), 1e-12) / E4M3_MAX).astype(np.float32)
    return (w / scale).astype(ml_dtypes.float8_e4m3fn), scale


def build(model, amax: dict[str, float]):
    """The FP8 Q/DQ copy of an FP32 graph; `amax`: calibrated |max| of each quantized MatMul's activation input."""
    import ml_dtypes
    from onnx import helper, numpy_helper, version_converter

    m = version_converter.convert_version(model, OPSET)  # a new model: `model` is left as it was
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    byname = {n.name: n for n in g.node}
    zero = np.array(0, dtype=ml_dtypes.float8_e4m3fn)
    new, done, matmuls = [], {}, weight_matmuls(m)
    for node, act, weight in matmuls:
        if act not in done:  # one Q/DQ pair per activation, shared by its readers (Q, K and V read one tensor)
            base = f"{act}_fp8"
            g.initializer.extend([numpy_helper.from_array(np.array(max(amax[act], 1e-12) / E4M3_MAX, np.float32), f"{base}_scale"),
                                  numpy_helper.from_array(zero, f"{base}_zero")])
            new += [helper.make_node("QuantizeLinear", [act, f"{base}_scale", f"{base}_zero"], [f"{base}_q"], name=f"{base}/QuantizeLinear"),
                    helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_scale", f"{base}_zero"], [f"{base}_dq"],
                                     name=f"{base}/DequantizeLinear")]
            done[act] = f"{base}_dq"
        w8, scale = quantize_weight(numpy_helper.to_array(inits[weight]).astype(np.float32))
        base = f"{weight}_fp8"
        g.initializer.extend([numpy_helper.from_array(w8, base), numpy_helper.from_array(scale, f"{base}_scale")])
        new.append(helper.make_node("DequantizeLinear", [base, f"{base}_scale"], [f"{base}_dq"], name=f"{base}/DequantizeLinear", axis=1))
        byname[node].input[0], byname[node].input[1] = done[act], f"{base}_dq"
    g.node.extend(new)
    drop_unused_initializers(g)  # the FP32 weights are no longer read
    toposort(g)
    return m, {"quantized_matmuls": len(matmuls), "activation_qdq": len(done), "opset": OPSET}
