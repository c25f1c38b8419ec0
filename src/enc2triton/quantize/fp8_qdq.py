"""FP8 (E4M3) explicit Q/DQ graph: TensorRT's fp8 source (convert_to_trt.sh: `--stronglyTyped` on 10, as is on 11).

torch_fp8's scheme (torch_model.Fp8Linear), from the plan both share (fp8_plan.py): every linear layer's MatMul (a 2-D
weight initializer) in the plan gets its activation quantized with one static per-tensor scale (calibrated |max| / 448)
and its weight stored as the plan's E4M3 codes (GPTQ-rounded) with one scale per output channel (DequantizeLinear
axis=1); the layers the plan keeps out of FP8 stay FP32 MatMuls without Q/DQ. Attention's activation x activation
MatMuls, LayerNorm, Softmax and the pooling stay FP32. FP8 Q/DQ needs opset 19: the graph is converted with
onnx.version_converter first. ONNX Runtime has no FP8 GEMM kernels (and its graph fusions refuse FP8 Q/DQ), so the graph
is measured with graph optimizations off: the arithmetic as written, which TensorRT implements.
"""
from __future__ import annotations

import numpy as np

from enc2triton.core.io import StageError
from enc2triton.quantize.onnx_graph import drop_unused_initializers, toposort, weight_matmuls

E4M3_MAX = 448.0
OPSET = 19


def weight_scale(w: np.ndarray) -> np.ndarray:
    """FP32 scale per output channel of a [K, N] MatMul weight: its |max| / 448 (torch_model.fp8_weight_scale's)."""
    return (np.maximum(np.abs(w).max(axis=0), 1e-12) / E4M3_MAX).astype(np.float32)


def build(model, plan: dict[str, dict]):
    """The FP8 Q/DQ copy of an FP32 graph. `plan`: {MatMul node: {"amax": calibrated |max| of its activation input,
    "codes": E4M3 weight [K, N], "scale": [N]}} (fp8_plan.onnx_layers); a linear MatMul not in it stays FP32."""
    import ml_dtypes
    from onnx import helper, numpy_helper, version_converter

    m = version_converter.convert_version(model, OPSET)  # a new model: `model` is left as it was
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    byname = {n.name: n for n in g.node}
    zero = np.array(0, dtype=ml_dtypes.float8_e4m3fn)
    linear = weight_matmuls(m)
    matmuls = [x for x in linear if x[0] in plan]
    if missing := set(plan) - {node for node, _, _ in matmuls}:
        raise StageError(f"the FP8 plan names MatMuls this graph has no linear layer for: {sorted(missing)[:3]}")
    new, done = [], {}
    for node, act, weight in matmuls:
        p = plan[node]
        if act not in done:  # one Q/DQ pair per activation, shared by its readers (Q, K and V read one tensor)
            base = f"{act}_fp8"
            g.initializer.extend([numpy_helper.from_array(np.array(max(p["amax"], 1e-12) / E4M3_MAX, np.float32), f"{base}_scale"),
                                  numpy_helper.from_array(zero, f"{base}_zero")])
            new += [helper.make_node("QuantizeLinear", [act, f"{base}_scale", f"{base}_zero"], [f"{base}_q"], name=f"{base}/QuantizeLinear"),
                    helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_scale", f"{base}_zero"], [f"{base}_dq"],
                                     name=f"{base}/DequantizeLinear")]
            done[act] = f"{base}_dq"
        w = numpy_helper.to_array(inits[weight]).astype(np.float32)
        # the codes are on the grid of the weight they were rounded from: this graph's, or they mean nothing here
        if p["codes"].shape != w.shape or not np.allclose(p["scale"], weight_scale(w), rtol=1e-6, atol=0):
            raise StageError(f"{node}: the FP8 plan's weight is not this graph's (another checkpoint than the export?)")
        base = f"{weight}_fp8"
        g.initializer.extend([numpy_helper.from_array(np.asarray(p["codes"], ml_dtypes.float8_e4m3fn), base),
                              numpy_helper.from_array(np.asarray(p["scale"], np.float32), f"{base}_scale")])
        new.append(helper.make_node("DequantizeLinear", [base, f"{base}_scale"], [f"{base}_dq"], name=f"{base}/DequantizeLinear", axis=1))
        byname[node].input[0], byname[node].input[1] = done[act], f"{base}_dq"
    g.node.extend(new)
    drop_unused_initializers(g)  # the FP32 weights of the FP8 MatMuls are no longer read
    toposort(g)
    return m, {"quantized_matmuls": len(matmuls), "fp32_matmuls": len(linear) - len(matmuls),
               "activation_qdq": len(done), "opset": OPSET}
