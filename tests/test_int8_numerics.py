"""The int8 numeric core on its own: range methods on known distributions (calibration.py), the SmoothQuant rewrite
(smoothquant.py) and the switchable fake-quant graph the search evaluates (int8_search.switch_model). Fast, no server."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from enc2triton.core import io, spec
from enc2triton.quantize import calibration, exact
from enc2triton.quantize.calibration import QMAX, calibrate, clip_value, log_histogram, quant_points
from enc2triton.runtime.engines import ort_session
from enc2triton.quantize.int8_search import switch_model
from enc2triton.quantize.smoothquant import smooth_groups, smooth_model, smoothing_factors
from enc2triton.core.texts import length_batches, load_tokenizer, read_texts

BIN = 10 ** ((calibration.LOG_HI - calibration.LOG_LO) / calibration.NBINS) - 1  # relative width of a histogram bin (~0.73%)


def _sample(kind: str) -> np.ndarray:
    """|x| of a known distribution: uniform on [0, 1), or a standard Gaussian with five huge outliers (|x| ~ 1000)."""
    rng = np.random.default_rng(0)
    if kind == "uniform":
        return rng.uniform(0.0, 1.0, 1_000_000)
    return np.abs(np.concatenate([rng.standard_normal(1_000_000), [1000.0, -900.0, 800.0, 950.0, -1000.0]]))


@pytest.mark.parametrize("kind", ["uniform", "gaussian_outliers"])
def test_range_methods_on_known_distributions(kind):
    a = _sample(kind)
    h, amax = log_histogram(a), float(a.max())
    assert h.sum() == a.size
    assert clip_value("max", h, amax) == amax
    for p in (99.0, 99.9, 99.99):  # the histogram's percentile is the sample's, up to one bin
        got, want = clip_value(f"p{p}", h, amax), float(np.percentile(a, p))
        assert abs(got / want - 1) <= BIN, (p, got, want)
        assert got <= amax
    for m in ("mse", "entropy"):
        c = clip_value(m, h, amax)
        assert 0 < c <= amax, (m, c)
        if kind == "gaussian_outliers":  # five values in a million should not set the range
            assert c < amax, (m, c)
    if kind == "gaussian_outliers":
        assert clip_value("p99.99", h, amax) < 5.0  # the outliers are far beyond the 99.99th percentile (~3.9)


def test_range_methods_edge_cases():
    zeros = np.zeros(1000)
    h = log_histogram(zeros)
    for m in calibration.RANGE_METHODS:
        assert clip_value(m, h, 0.0) == 1.0, m  # an all-zero tensor gets scale 1/QMAX, not 0
    with pytest.raises(ValueError, match="unknown range method"):
        clip_value("median", log_histogram(_sample("uniform")), 1.0)


# ------------------------------------------------------------------------------------------ graph rewrites
@pytest.fixture(scope="module")
def tiny_fp32(tiny_artifacts):
    """(fp32 model, a few feeds of calibration texts at natural lengths) of the tiny DistilBERT."""
    m = io.load_manifest(tiny_artifacts)
    model = onnx.load(str(io.resolve(m["variants"]["fp32"]["onnx"]["path"], tiny_artifacts)))
    tok = load_tokenizer(tiny_artifacts / m.get("tokenizer_dir", "tokenizer"))
    texts = read_texts(spec.CALIBRATION_TEXTS)[:24]
    _, feeds = length_batches(tok, texts, m["inputs"], 128, batch_size=8)
    return model, feeds


def _outputs(model, feeds, **extra) -> list[list[np.ndarray]]:
    """[last_hidden_state, sentence_embedding] per feed."""
    sess = ort_session(model)
    return [sess.run(["last_hidden_state", "sentence_embedding"], {**f, **extra}) for f in feeds]


def _max_diff(a, b) -> float:
    return max(float(np.abs(x - y).max()) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def test_smooth_model_is_exact_in_fp32(tiny_fp32):
    model, feeds = tiny_fp32
    groups = smooth_groups(model)
    _, acts, _ = quant_points(model)
    cal = calibrate(model, acts, feeds, progress=False, channel_tensors=set(groups))
    factors = smoothing_factors(model, cal["chmax"], 0.8)
    assert set(factors) == set(groups) and all(np.abs(f - 1).max() > 0.1 for f in factors.values())  # real rescaling
    before = model.SerializeToString()
    sm = smooth_model(model, factors)
    assert model.SerializeToString() == before  # the input graph is left alone
    onnx.checker.check_model(sm)
    assert sum(n.name.endswith("/SmoothQuant/Mul") for n in sm.graph.node) == len(factors)
    assert _max_diff(_outputs(model, feeds), _outputs(sm, feeds)) < 1e-5


def test_switch_model_gates(tiny_fp32):
    model, feeds = tiny_fp32
    nodes, acts, points = quant_points(model)
    cal = calibrate(model, acts, feeds, progress=False, exact=True)
    scales = (np.array([cal["absmax"][t] for t in acts]) / QMAX).astype(np.float32).astype(np.float64)
    sw = switch_model(model, acts, points)
    ref64 = [[o.astype(np.float64) for o in r] for r in _outputs(exact.to_double(model), feeds)]  # float64, as written
    sess = exact.session(sw)

    def run(gated, qscale=scales):
        gate = np.zeros(len(points), bool)
        gate[list(gated)] = True
        return [sess.run(["last_hidden_state", "sentence_embedding"], {**f, "qgate": gate, "qscale": qscale}) for f in feeds]

    assert _max_diff(run([]), ref64) == 0.0  # all gates off: the float64 graph, bit for bit
    assert _max_diff(run([], scales * 1e-3), ref64) == 0.0  # ... whatever the activation scales
    assert _max_diff(ref64, _outputs(model, feeds)) < 1e-5  # and that is the fp32 graph up to float32 rounding
    ffn = next(n for n in nodes if "ffn" in n)
    mine = [p for p, pt in enumerate(points) if pt[0] == ffn]
    assert len(mine) == 2  # its activation input and its weight
    one = run(mine)
    assert _max_diff(one, ref64) > 1e-5  # gated: this MatMul is fake-quantized
    act = next(p for p in mine if points[p][2] == "act")
    others = scales.copy()
    others[[i for i, t in enumerate(acts) if t != points[act][3]]] *= 1e-3  # other activations' scales: ignored while ungated
    assert _max_diff(run(mine, others), one) == 0.0
    coarse = scales.copy()
    coarse[acts.index(points[act][3])] *= 8  # its own scale matters once gated
    assert _max_diff(run(mine, coarse), one) > 1e-5


def test_switch_model_is_the_int8_graphs_qdq_arithmetic(tiny_fp32):
    """One MatMul gated in the float64 switch model = the same MatMul with real QuantizeLinear/DequantizeLinear
    (ORT, optimizations off, float32) up to float32 rounding: the written-out Q/DQ is the int8 graph's."""
    from onnx import helper, numpy_helper

    model, feeds = tiny_fp32
    nodes, acts, points = quant_points(model)
    cal = calibrate(model, acts, feeds, progress=False, exact=True)
    ffn = next(n for n in nodes if "ffn" in n)
    (pa, (_, slot, _, t)), = [(p, pt) for p, pt in enumerate(points) if pt[0] == ffn and pt[2] == "act"]
    s = np.float32(cal["absmax"][t] / QMAX / 4)  # a clip below |max|: saturation at -128/127 is exercised too
    qdq = onnx.ModelProto()
    qdq.CopyFrom(model)
    g = qdq.graph
    g.initializer.extend([numpy_helper.from_array(np.array(s, np.float32), "t_s"), numpy_helper.from_array(np.array(0, np.int8), "t_zp")])
    node = next(n for n in g.node if n.name == ffn)
    g.node.extend([helper.make_node("QuantizeLinear", [t, "t_s", "t_zp"], ["t_q"]), helper.make_node("DequantizeLinear", ["t_q", "t_s", "t_zp"], ["t_dq"])])
    node.input[slot] = "t_dq"
    from enc2triton.quantize.onnx_graph import toposort
    toposort(g)
    want = [ort_session(qdq, optimize=False).run(["sentence_embedding"], f)[0] for f in feeds]
    gate = np.zeros(len(points), bool)
    gate[pa] = True
    qs = np.full(len(acts), 1.0)
    qs[acts.index(t)] = float(s)
    sess = exact.session(switch_model(model, acts, points))
    got = [sess.run(["sentence_embedding"], {**f, "qgate": gate, "qscale": qs})[0] for f in feeds]
    assert _max_diff([[w] for w in want], [[x] for x in got]) < 1e-5
    plain = [o[1] for o in _outputs(model, feeds)]
    assert _max_diff([[w] for w in want], [[x] for x in plain]) > 1e-4  # the quantization itself is far larger


def test_float64_erf():
    import math

    x = np.concatenate([np.linspace(-30, 30, 600001), [0.0, -0.0, 1e-300, 40.0, -40.0, np.inf, -np.inf]])
    got = exact.erf_reference(x)
    want = np.array([math.erf(v) for v in x])
    assert np.abs(got - want).max() < 4e-9
    from onnx import TensorProto, helper  # the float64 graph computes the same function
    g = helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "erf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])])
    m = exact.to_double(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    y = exact.session(m).run(["y"], {"x": x})[0]
    assert y.dtype == np.float64 and np.abs(y - got).max() < 1e-15
