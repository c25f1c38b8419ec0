"""The int8 search and build: measured choices on a held-out slice of the calibration texts, then the Q/DQ graph.

All on CPU and bounded (a fixed number of evaluations, no open-ended loops), and machine-independent: every number
a decision rests on is computed in float64 with the graph run as written and the Q/DQ arithmetic written out
(exact.py), and every cosine is rounded to exact.COS_DECIMALS before it is compared (top-10 agreement ranks
neighbours on cosines rounded so, equal ones in text order, and is rounded too), so which kernels ONNX Runtime picks
on a CPU (AVX2, AVX-512, VNNI, its fusions, its threads) cannot change a choice or the graph's bytes:
1. a calibration pass (float64 graph + extra outputs) records |max|, per-channel |max| and a log-spaced histogram
   of |x| for every MatMul input (calibration.calibrate; |max| kept as float32);
2. a "switchable" float64 fake-quant copy of the graph (switch_model) takes per-point gates and activation scales
   as inputs, so one ONNX Runtime session evaluates any mix of quantized/unquantized MatMuls and any range choice;
3. alpha_search: SmoothQuant alpha (None = off, 0.5 .. 1.0), everything quantized, each alpha scored; the best is
   kept and the smoothed graph recalibrated;
4. range_methods_by_role: per tensor role pick the range method with the smallest score;
5. sensitivity: each MatMul quantized alone; score = the larger share of the cosine floors' budgets it uses;
6. greedy_exclusion: quantize everything, keep the highest-scoring MatMuls in FP32 until the held-out slice meets
   the floor plus a margin (mean and min cosine, top-10 agreement), then try to re-quantize each excluded node;
7. build_int8: onnxruntime.quantization.quantize_static (QDQ, per-channel, symmetric) from the chosen ranges
   (deterministic given them).
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from enc2triton.core import cli, io, metrics, spec
from enc2triton.quantize import exact
from enc2triton.quantize.calibration import QMAX, RANGE_METHODS, calibrate, clip_value, quant_points, split_calibration, tensor_roles
from enc2triton.core.io import StageError
from enc2triton.quantize.onnx_graph import QUANT_OP_TYPES, dedicate_qdq, load, qdq_summary, toposort
from enc2triton.quantize.smoothquant import smooth_groups, smooth_model, smoothed_source, smoothing_factors
from enc2triton.core.texts import in_order, length_batches

METHOD_VERSION = 8  # bump when the search changes: invalidates cached search results


@dataclass
class Int8Settings:
    """Everything that changes the int8 result (hashed into the search cache key)."""

    seed: int = 0  # order of the calibration texts before the held-out split
    # calibration texts held out to measure sensitivity/acceptance (not calibrated on). 128 = the evaluation texts'
    # count: top-10 agreement depends on how many texts the neighbours are drawn from, so the floor's top10 (over
    # the 128 evaluation texts) and the acceptance target's are comparable only at that count
    held_out: int = 128
    sweep_texts: int = 64  # the first of them score the range-method and sensitivity sweeps (speed)
    max_calib_texts: int = 504
    batch_size: int = 16
    search_max_length: int = 512  # sweep texts are truncated to this (long texts are where int8 hurts most: keep them)
    methods: tuple[str, ...] = RANGE_METHODS
    alphas: tuple = (None, 0.5, 0.7, 0.8, 0.9, 1.0)  # SmoothQuant migration strengths tried (None = off)
    margin_mean: float = 0.003  # held-out targets: floor + margin (the evaluation texts are other sentences)
    margin_min: float = 0.02  # the min is set by a few long texts and moves more between text sets
    margin_top10: float = 0.01  # near-tied neighbours swap: top-10 moves between text sets too
    floor: dict = field(default_factory=lambda: dict(spec.FLOORS["int8"]))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["methods"] = list(self.methods)
        d["alphas"] = list(self.alphas)
        return d


def score(q: dict, floor: dict) -> float:
    """The larger share of a floor's budget used: (1 - mean) / (1 - floor mean) vs (1 - min) / (1 - floor min).
    Top-10 is left out: a coarse count (steps of 1/640 on the 64-text sweep slice) that, added here, ranked worse on
    the bundled model (17 MatMuls kept FP32 for the same held-out targets instead of 15); greedy_exclusion checks it."""
    return max((1.0 - q["mean_cos"]) / (1.0 - floor["mean_cos"]), (1.0 - q["min_cos"]) / (1.0 - floor["min_cos"]))


# ------------------------------------------------------------------------------------------ the switch model
def switch_model(model, acts: list[str], points):
    """A float64 fake-quant copy of `model` (exact.to_double) with two extra inputs: qgate[P] (bool, True = quantize
    point p) and qscale[A] (activation scales, float64 holding the float32 scales the int8 graph stores). Weights are
    quantized per output channel, symmetric, in numpy (float32 scales; q * s is exact in float64); activations as
    the int8 graph's QuantizeLinear/DequantizeLinear define it, written out: Round(x / s) (half to even), Clip to
    [-128, 127], times s. One session then evaluates any subset/range choice without rebuilding the graph."""
    from onnx import TensorProto, helper, numpy_helper

    m = exact.to_double(model)
    g = m.graph
    inits = {i.name: i for i in model.graph.initializer}  # the float32 weights, as the int8 graph quantizes them
    byname = {n.name: n for n in g.node}
    a_idx = {t: i for i, t in enumerate(acts)}
    g.input.append(helper.make_tensor_value_info("qgate", TensorProto.BOOL, [len(points)]))
    g.input.append(helper.make_tensor_value_info("qscale", TensorProto.DOUBLE, [len(acts)]))
    g.initializer.extend([numpy_helper.from_array(np.array(-128.0), "sw_qmin"), numpy_helper.from_array(np.array(127.0), "sw_qmax")])
    new = []
    for p, (node, slot, kind, t) in enumerate(points):
        pre = f"sw{p}"
        g.initializer.append(numpy_helper.from_array(np.array(p, np.int64), f"{pre}_gi"))
        new.append(helper.make_node("Gather", ["qgate", f"{pre}_gi"], [f"{pre}_g"]))
        if kind == "weight":
            w = numpy_helper.to_array(inits[t]).astype(np.float32)
            s = (np.maximum(np.abs(w).max(axis=-2, keepdims=True), 1e-12) / QMAX if w.ndim >= 2
                 else np.float32(max(np.abs(w).max(), 1e-12) / QMAX)).astype(np.float32)
            wq = np.clip(np.round(w / s), -QMAX, QMAX).astype(np.float64) * s.astype(np.float64)
            g.initializer.append(numpy_helper.from_array(wq, f"{pre}_wq"))
            new.append(helper.make_node("Where", [f"{pre}_g", f"{pre}_wq", t], [f"{pre}_out"]))
        else:
            g.initializer.append(numpy_helper.from_array(np.array(a_idx[t], np.int64), f"{pre}_si"))
            qdq = helper.make_graph([helper.make_node("Div", [t, f"{pre}_s"], [f"{pre}_x"]),
                                     helper.make_node("Round", [f"{pre}_x"], [f"{pre}_r"]),
                                     helper.make_node("Clip", [f"{pre}_r", "sw_qmin", "sw_qmax"], [f"{pre}_q"]),
                                     helper.make_node("Mul", [f"{pre}_q", f"{pre}_s"], [f"{pre}_dq"])],
                                    f"{pre}_qdq", [], [helper.make_tensor_value_info(f"{pre}_dq", TensorProto.DOUBLE, None)])
            keep = helper.make_graph([helper.make_node("Identity", [t], [f"{pre}_id"])], f"{pre}_keep", [],
                                     [helper.make_tensor_value_info(f"{pre}_id", TensorProto.DOUBLE, None)])
            # an If, not a Where: an ungated activation costs one copy, not the whole Q/DQ
            new += [helper.make_node("Gather", ["qscale", f"{pre}_si"], [f"{pre}_s"]),
                    helper.make_node("If", [f"{pre}_g"], [f"{pre}_out"], then_branch=qdq, else_branch=keep)]
        byname[node].input[slot] = f"{pre}_out"
    g.node.extend(new)
    toposort(g)
    return m


class Evaluator:
    """Embeds a held-out calibration slice through the switch model for given gates/scales."""

    def __init__(self, sess, ref: np.ndarray, order, feeds, n_points: int):
        self.sess = sess
        self.ref, self.order, self.feeds, self.n_points = ref, order, feeds, n_points
        self.calls = 0

    def __call__(self, gate_points, scales: np.ndarray) -> dict:
        """{mean_cos, min_cos, top10} vs the float64 reference embeddings with the points `gate_points` quantized at
        `scales` (float32, as the int8 graph stores them), each rounded to exact.COS_DECIMALS, top10 ranked on cosines
        rounded so (metrics.topk_agreement): what the search compares."""
        gate = np.zeros(self.n_points, bool)
        gate[list(gate_points)] = True
        qs = np.asarray(scales, np.float32).astype(np.float64)
        got = in_order(exact.run_batches(self.sess, "sentence_embedding", self.feeds, {"qgate": gate, "qscale": qs}), self.order)
        self.calls += 1
        cos = metrics.cosine_rows(self.ref, got)
        top = metrics.topk_agreement(self.ref, got, 10, exact.COS_DECIMALS)
        return {"mean_cos": exact.round_cos(cos.mean()), "min_cos": exact.round_cos(cos.min()), "top10": exact.round_cos(top)}


class References:
    """The float64 graph's embeddings of each held-out slice (computed once per slice size and length) and the
    Evaluators that compare a switch-model session with them."""

    def __init__(self, model, tokenizer, input_names, batch_size: int):
        self.fp64 = exact.session(exact.to_double(model))
        self.tokenizer, self.input_names, self.batch_size = tokenizer, input_names, batch_size
        self.cache: dict[tuple, tuple] = {}

    def evaluator(self, sess, texts: list[str], n_points: int, max_len: int) -> Evaluator:
        key = (len(texts), max_len)
        if key not in self.cache:
            order, feeds = length_batches(self.tokenizer, texts, self.input_names, max_len, self.batch_size)
            ref = in_order(exact.run_batches(self.fp64, "sentence_embedding", feeds), order)
            self.cache[key] = (ref, order, feeds)
        ref, order, feeds = self.cache[key]
        return Evaluator(sess, ref, order, feeds, n_points)


class _Phases:
    """Seconds per named phase, each measured from the end of the previous one."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._t, 1)
        self._t = now


# ------------------------------------------------------------------------------------------ the search steps
def smoothed_absmax(tensor: str, cal: dict, factors: dict) -> float:
    """|max| of a MatMul input of the smoothed graph, from the fp32 calibration: X/s's follows from X's per-channel maxima."""
    src = smoothed_source(tensor)
    return float((cal["chmax"][src] / factors[src]).max()) if src in factors else cal["absmax"][src]


def alpha_search(model, cal0: dict, refs: References, texts: list[str], max_len: int, s: Int8Settings,
                 progress: bool = True) -> list[dict]:
    """Step 3, one row per SmoothQuant alpha in s.alphas: everything quantized with 'max' ranges, scored on `texts`."""
    table = []
    for alpha in cli.progress(s.alphas, desc="int8 smoothquant alpha", enabled=progress):
        factors = smoothing_factors(model, cal0["chmax"], alpha) if alpha is not None else {}
        sm = smooth_model(model, factors)
        _, acts, points = quant_points(sm)
        amax = [smoothed_absmax(t, cal0, factors) for t in acts]
        ev = refs.evaluator(exact.session(switch_model(sm, acts, points)), texts, len(points), max_len)
        q = ev(range(len(points)), np.array(amax) / QMAX)
        table.append({"alpha": alpha, **q, "score": score(q, s.floor)})
        del ev, sm
    return table


def range_candidates(cal: dict, acts: list[str], methods) -> dict[str, np.ndarray]:
    """{method: clip value of every activation tensor (in `acts` order)}, as float32 (what the int8 graph's ranges
    hold: a last-bit difference of libm's pow/log between CPUs cannot reach the record or the graph)."""
    return {m: np.array([clip_value(m, cal["hist"][t], cal["absmax"][t]) for t in acts], np.float32).astype(np.float64)
            for m in methods}


def range_methods_by_role(evaluate: Evaluator, clips: dict, acts: list[str], points, roles: dict, s: Int8Settings,
                          progress: bool = True) -> tuple[dict, np.ndarray]:
    """Step 4: per role, quantize every activation of that role (alone) with each range method; keep the lowest
    score (ties: the earlier method). Returns (the role table, the chosen clip per activation)."""
    role_names = sorted(set(roles.values()))
    a_index = {t: i for i, t in enumerate(acts)}
    role_table, chosen = {}, np.array(clips["max"])
    bar = cli.progress(total=len(role_names) * len(s.methods), desc="int8 range methods", enabled=progress)
    for r in role_names:
        tens = [t for t in acts if roles[t] == r]
        pts = [p for p, (_, _, kind, t) in enumerate(points) if kind == "act" and roles.get(t) == r]
        row = {}
        for m in s.methods:
            q = evaluate(pts, clips[m] / QMAX)
            row[m] = {**q, "score": score(q, s.floor)}
            bar.update()
        best = min(s.methods, key=lambda m: (row[m]["score"], s.methods.index(m)))
        for t in tens:
            chosen[a_index[t]] = clips[best][a_index[t]]
        role_table[r] = {"method": best, "tensors": len(tens), **{m: round(row[m]["mean_cos"], 6) for m in s.methods}}
    bar.close()
    return role_table, chosen


def sensitivity(evaluate: Evaluator, nodes: list[str], node_points: dict, scales: np.ndarray, floor: dict,
                progress: bool = True) -> list[dict]:
    """Step 5: one MatMul (its activation input(s) and weight) quantized at a time. Ranked by score, not by the mean
    drop alone: attention-probability MatMuls barely move the mean but hurt the worst (long) texts."""
    sens = []
    for n in cli.progress(nodes, desc="int8 sensitivity", enabled=progress):
        q = evaluate(node_points[n], scales)
        sens.append({"node": n, "drop": 1.0 - q["mean_cos"], **q, "score": score(q, floor)})
    return sens


def _quantized_except(evaluate: Evaluator, nodes: list[str], node_points: dict, scales: np.ndarray, excluded) -> dict:
    return evaluate([p for n in nodes if n not in excluded for p in node_points[n]], scales)


def greedy_exclusion(evaluate: Evaluator, nodes: list[str], node_points: dict, scales: np.ndarray, ranking: list[str],
                     target: dict, progress: bool = True) -> tuple[list[str], list[dict], dict]:
    """Step 6: exclude MatMuls in `ranking` order until the slice meets `target`, then re-quantize each excluded one
    (last added first, that one excepted) that still fits. Returns (excluded in graph order, trace, final quality)."""
    def meets(q):
        return all(q[k] >= v for k, v in target.items())

    excluded, trace = [], []
    bar = cli.progress(total=len(nodes) + 1, desc="int8 greedy", enabled=progress)
    q = _quantized_except(evaluate, nodes, node_points, scales, excluded)
    trace.append({"step": "all quantized", "excluded": 0, **q})
    bar.update()
    while not meets(q) and len(excluded) < len(nodes):
        excluded.append(ranking[len(excluded)])
        q = _quantized_except(evaluate, nodes, node_points, scales, excluded)
        trace.append({"step": f"exclude {excluded[-1]}", "excluded": len(excluded), **q})
        bar.update()
    bar.close()
    for n in list(reversed(excluded[:-1])):  # the last one added was needed; retry the others
        trial = [x for x in excluded if x != n]
        q2 = _quantized_except(evaluate, nodes, node_points, scales, trial)
        ok = meets(q2)
        trace.append({"step": f"re-quantize {n}", "excluded": len(trial), **q2, "kept": ok})
        if ok:
            excluded, q = trial, q2
    return [n for n in nodes if n in excluded], trace, q


def search_int8(model, tokenizer, input_names, max_length: int, texts: list[str], s: Int8Settings,
                progress: bool = True) -> dict:
    """Calibrate, choose the SmoothQuant alpha, the range method per tensor role and the MatMuls kept FP32.
    Returns the search record (JSON-ready) that build_int8 turns into the Q/DQ graph."""
    t_start = time.perf_counter()
    nodes, acts, points = quant_points(model)
    if not nodes:
        raise StageError("the fp32 graph has no MatMul to quantize")
    calib, held = split_calibration(texts, s)
    _, cfeeds = length_batches(tokenizer, calib, input_names, max_length, s.batch_size)
    groups = smooth_groups(model)
    phases = _Phases()
    cal0 = calibrate(model, acts, cfeeds, progress, channel_tensors=set(groups), desc="int8 calibration (float64)", exact=True)
    phases.done("calibration_fp32")
    refs = References(model, tokenizer, input_names, s.batch_size)
    sweep_len, sweep_held = min(max_length, s.search_max_length), held[: s.sweep_texts]
    alpha_table = alpha_search(model, cal0, refs, sweep_held, sweep_len, s, progress)
    phases.done("alpha_search")
    alpha = min(alpha_table, key=lambda r: r["score"])["alpha"]
    factors = smoothing_factors(model, cal0["chmax"], alpha) if alpha is not None else {}
    model = smooth_model(model, factors)
    nodes, acts, points = quant_points(model)
    roles = tensor_roles(model, points)
    cal = calibrate(model, acts, cfeeds, progress, desc="int8 calibration (smoothed, float64)", exact=True) if factors else cal0
    t_cal = time.perf_counter() - t_start
    phases.done("calibration_smoothed")
    clips = range_candidates(cal, acts, s.methods)
    sw = exact.session(switch_model(model, acts, points))
    ev = refs.evaluator(sw, held, len(points), max_length)  # acceptance (greedy): natural lengths
    fast = refs.evaluator(sw, sweep_held, len(points), sweep_len)  # range methods + sensitivity sweep
    phases.done("range_candidates_and_switch_model")
    node_points = {n: [p for p, pt in enumerate(points) if pt[0] == n] for n in nodes}
    role_table, chosen = range_methods_by_role(fast, clips, acts, points, roles, s, progress)
    scales = chosen / QMAX
    phases.done("range_method_search")
    sens = sensitivity(fast, nodes, node_points, scales, s.floor, progress)
    ranking = [r["node"] for r in sorted(sens, key=lambda r: (-r["score"], r["node"]))]
    phases.done("sensitivity")
    margins = {"mean_cos": s.margin_mean, "min_cos": s.margin_min, "top10": s.margin_top10}
    target = {k: round(v + margins[k], 6) for k, v in s.floor.items()}  # ev's slice: as many texts as the floor's
    excluded, trace, held_out = greedy_exclusion(ev, nodes, node_points, scales, ranking, target, progress)
    phases.done("greedy")
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
        "held_out": held_out,
        "evaluations": len(alpha_table) + ev.calls + fast.calls,
        "sweep_texts": len(fast.ref), "acceptance_texts": len(ev.ref),
        "seconds": round(time.perf_counter() - t_start, 1),
        "phase_seconds": phases.seconds,
    }


# ------------------------------------------------------------------------------------------ the Q/DQ graph
def build_int8(model, search: dict, out: Path) -> dict:
    """Write the Q/DQ graph with onnxruntime.quantization.quantize_static from the searched ranges."""
    import onnx
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
        q = load(tmp)
        rewired = dedicate_qdq(q, set(quantized))
        s = qdq_summary(q)
        if not s["zero_points_all_zero"]:
            raise StageError("int8 graph has non-zero zero points: TensorRT only supports symmetric int8 Q/DQ")
        onnx.save(q, str(tmp))
        onnx.checker.check_model(str(tmp))
    return {**s, "rewired_float_consumers": rewired, "extra_options": extra}


def search_record(int8_entry: dict, artifacts: Path) -> Path | None:
    """The search record an int8 manifest entry names, where it is now: recorded relative to the artifacts folder
    (runs before 2026-11-30: to the project root they ran in; the file keeps its name under quantize_cache/)."""
    name = int8_entry.get("search_cache")
    if not name:
        return None
    where = (io.resolve(name, artifacts), spec.ROOT / name, Path(artifacts) / "quantize_cache" / Path(name).name)
    return next((c for c in where if c.exists()), None)
