"""ONNX graph utilities the precision variants share: node order, the fp16 converter's duplicate Casts, the nodes
that stay FP32, checked saving, and the Q/DQ summary and rewiring of an int8 graph."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from enc2triton.core import io
from enc2triton.core.io import StageError

QUANT_OP_TYPES = ("MatMul",)  # the exporter emits MatMul (+Add bias), never Gemm
SENSITIVE_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def weight_matmuls(model) -> list[tuple[str, str, str]]:
    """(node name, activation input, weight initializer) of every linear layer's MatMul: its right input a 2-D weight
    initializer, its left input an activation."""
    inits = {i.name: i for i in model.graph.initializer}
    return [(n.name, n.input[0], n.input[1]) for n in model.graph.node
            if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2 and n.input[0] not in inits]


def drop_unused_initializers(graph) -> None:
    """Remove the initializers no node reads any more (weights a rewrite replaced)."""
    used = {x for n in graph.node for x in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _needs(node) -> list[str]:
    """The tensors a node reads: its inputs and what its subgraphs (If/Loop bodies) read from the outer scope."""
    out = list(node.input)
    for a in node.attribute:
        for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            inner = {i.name for i in sub.initializer} | {i.name for i in sub.input} | {o for n in sub.node for o in n.output}
            out += [x for n in sub.node for x in _needs(n) if x not in inner]
    return out


def toposort(graph) -> None:
    """Order graph.node topologically (the float16 converter can leave Casts out of order)."""
    produced = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {""}
    order, pending = [], list(graph.node)
    while pending:
        rest = []
        for n in pending:
            if all(x in produced for x in _needs(n)):
                order.append(n)
                produced.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise StageError(f"graph has a cycle or a dangling input near node {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(order)


def dedupe_casts(graph) -> None:
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


def ancestors(graph, tensor: str) -> set[str]:
    """Names of the nodes `tensor` depends on (its producer and everything upstream)."""
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
        names |= ancestors(graph, "sentence_embedding") - ancestors(graph, "last_hidden_state")
    prod = {o: n for n in graph.node for o in n.output}
    for n in graph.node:
        if n.op_type == "Softmax" and n.input[0] in prod and prod[n.input[0]].op_type == "Add":
            names.add(prod[n.input[0]].name)
    return sorted(x for x in names if x)


def save_checked(model, path: Path) -> None:
    """Write `model` atomically, only once onnx.checker accepts the written file."""
    import onnx

    with io.atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp))


def load(path: Path):
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
