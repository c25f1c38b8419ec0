"""FP16 copy of an fp32 graph: FP16 compute, FP32 inputs/outputs; LayerNormalization, Softmax (and the mask Add
feeding it), any ReduceMean/Pow/Sqrt LayerNorm decomposition and the whole mean-pooling tail stay FP32."""
from __future__ import annotations

import copy

from enc2triton.quantize.onnx_graph import SENSITIVE_OPS, dedupe_casts, fp32_nodes, toposort


def to_fp16(model, extra_block_ops=()):
    """FP16 copy of `model` with FP32 IO; sensitive ops, pooling and `extra_block_ops` kept FP32.
    Returns (model, {"op_block_list": the op types blocked besides ORT's defaults, "fp32_nodes": node names})."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    block_ops = list(dict.fromkeys([*DEFAULT_OP_BLOCK_LIST, *SENSITIVE_OPS, *extra_block_ops]))
    keep = fp32_nodes(model.graph)
    m16 = convert_float_to_float16(copy.deepcopy(model), keep_io_types=True, op_block_list=block_ops, node_block_list=keep)
    dedupe_casts(m16.graph)
    toposort(m16.graph)
    return m16, {"op_block_list": [o for o in block_ops if o not in DEFAULT_OP_BLOCK_LIST], "fp32_nodes": keep}
