"""Precision variants (quantize.py): fp16 / int8 (symmetric Q/DQ) / best on a tiny DistilBERT (fast), floors on the
bundled all-MiniLM-L6-v2 (slow)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from enc2triton.core import host, io, metrics, spec
from enc2triton.export import export
from enc2triton.quantize import int8_search, quantize
from enc2triton.core.texts import read_texts, tokenize
from enc2triton.runtime.engines import ort_session

# small search for the random tiny model: same code path, fewer texts and alphas
FAST = quantize.Int8Settings(held_out=32, sweep_texts=16, max_calib_texts=96, alphas=(None, 0.8))
TEXTS = ["short one", "a somewhat longer sentence about the weather in spring", "Where is the station?"]


def _run(art: Path, logs: Path, **kw):
    kw.setdefault("settings", FAST)
    return quantize.run(art, logs, measure_latency=False, progress=False, **kw)


@pytest.fixture(scope="module")
def tiny_q(tmp_path_factory, tiny_distilbert):
    """A private export of the tiny DistilBERT (not the shared tiny_artifacts: this adds variants) + one run."""
    art = tmp_path_factory.mktemp("tiny_q_artifacts")
    export.run(model=str(tiny_distilbert), artifacts=art, shapes=spec.ShapeLimits(max_batch=8, opt_batch=4, max_seq=128, opt_seq=64))
    shutil.copytree(art, tmp_path_factory.getbasetemp() / "tiny_q_fp32_only")  # pristine copy for the determinism test
    logs = tmp_path_factory.mktemp("tiny_q_logs")
    t0 = time.perf_counter()
    _run(art, logs)
    return art, logs, time.perf_counter() - t0


def _variant(art: Path, p: str) -> Path:
    entry = io.load_manifest(art)["variants"][p]["onnx"]
    assert io.is_valid(entry, art), p
    return io.resolve(entry["path"], art)


def _feed(art: Path):
    from transformers import AutoTokenizer

    m = io.load_manifest(art)
    tok = AutoTokenizer.from_pretrained(str(art / "tokenizer"))
    return tokenize(tok, TEXTS, m["inputs"], 128), tok, m["inputs"]


def test_variants_exist_check_and_run(tiny_q):
    art, logs, _ = tiny_q
    feed, _, _ = _feed(art)
    ref = ort_session(_variant(art, "fp32")).run(None, feed)
    for p in ("fp16", "int8", "best", "fp8"):
        path = _variant(art, p)
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path))
        for v in [*model.graph.input, *model.graph.output]:  # FP32 IO (token ids int64) for every variant
            assert v.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.INT64), (p, v.name)
        out = ort_session(path, optimize=p != "fp8").run(None, feed)  # ORT's fusions have no FP8 kernels
        assert [o.shape for o in out] == [r.shape for r in ref] and all(np.isfinite(o).all() for o in out), p
        cos = metrics.cosine_rows(ref[1], out[1])
        if p == "fp16":  # held to its floor: fp16 is meaningful even on random weights
            assert metrics.passes({"mean_cos": cos.mean(), "min_cos": cos.min()}, spec.FLOORS["fp16"]), (p, cos)
        else:  # int8 of a random tiny model means little: only that it runs and stays close
            assert cos.min() > 0.9, (p, cos)
    fp8 = io.load_manifest(art)["variants"]["fp8"]
    kept = sum(3 if k.endswith("qkv") else 1 for k in fp8["plan"]["kept"])  # a kept fused QKV: three MatMuls stay FP32
    assert fp8["opset"] == 19 and fp8["quantized_matmuls"] == 12 - kept and fp8["fp32_matmuls"] == kept
    assert fp8["quality"]["runtime"].endswith("optimizations disabled") and fp8["plan"]["calibration_steps"][0]["kept"] == 0
    assert (logs / "quantize.md").exists() and (logs / "quantize.json").exists()
    log = io.read_json(logs / "quantize.json")
    assert "sensitivity" in log["int8_search"]
    assert host.describe() in log["note"]  # latency is said to come from this machine, whichever it is


def test_fp8_graph_is_explicit_e4m3_qdq(tiny_q):
    """TensorRT's fp8 source: E4M3 weights with a scale per output channel, E4M3 Q/DQ on the linear layers' inputs only,
    the attention MatMuls and everything else FP32."""
    art, _, _ = tiny_q
    model = onnx.load(str(_variant(art, "fp8")))
    entry = io.load_manifest(art)["variants"]["fp8"]
    n8 = entry["quantized_matmuls"]  # of 2 layers x (q, k, v, out, ffn1, ffn2), the plan's FP8 ones
    inits = {i.name: i for i in model.graph.initializer}
    e4m3 = [i for i in inits.values() if i.data_type == TensorProto.FLOAT8E4M3FN]
    assert len([i for i in e4m3 if len(i.dims) == 2]) == n8 >= 6
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2]
    assert len(dq) == n8 and all(a.name == "axis" and a.i == 1 for n in dq for a in n.attribute)
    for n in dq:  # one FP32 scale per output channel
        w, s = inits[n.input[0]], inits[n.input[1]]
        assert s.data_type == TensorProto.FLOAT and list(s.dims) == [w.dims[1]]
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert q and all(inits[n.input[2]].data_type == TensorProto.FLOAT8E4M3FN for n in q)
    # the static scales are the plan's |max| / 448 (torch_fp8's x_scale)
    scales = {float(np.float32(max(v, 1e-12) / 448)) for v in entry["plan"]["amax"].values()}
    assert {float(numpy_helper.to_array(inits[n.input[1]])) for n in q} <= scales
    weight_dq = {n.output[0] for n in dq}
    attention = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in weight_dq]
    produced_by_dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert len(attention) == 4 and not any(i in produced_by_dq for n in attention for i in n.input)  # 2 layers x (QK, PV)


def test_fp8_plan_goes_into_the_graph_with_qkv_split_and_kept_layers_fp32(tiny_q):
    """fp8_plan.onnx_layers: the fused QKV's codes split into the q, k and v MatMuls' E4M3 weights (from_onnx fuses them
    back bit for bit), a kept layer's MatMuls (all three for QKV) read their FP32 weight and raw activation; codes from
    another checkpoint than the export's are refused."""
    import copy

    import torch

    from enc2triton.core.io import StageError
    from enc2triton.quantize import fp8_plan, fp8_qdq
    from enc2triton.runtime import torch_model

    art, _, _ = tiny_q
    m = io.load_manifest(art)
    model = onnx.load(str(_variant(art, "fp32")))
    enc = fp8_plan.checkpoint_encoder(m["model"])
    codes = {(i, n): (lin.weight / torch_model.fp8_weight_scale(lin.weight)[:, None]).to(torch.float8_e4m3fn)
             for i, n, lin in torch_model.linears(enc)}
    amax = {k: 2.0 + k[0] for k in codes}
    names = fp8_plan.matmul_names(model, enc.cfg)
    assert names[(1, "qkv")] == [f"/model/transformer/layer.1/attention/{r}_lin/MatMul" for r in "qkv"]
    plan = fp8_plan.onnx_layers(model, enc, codes, amax, keep=[(1, "qkv")])
    assert set(plan) == {n for k, ns in names.items() if k != (1, "qkv") for n in ns}
    assert plan[names[(0, "qkv")][1]]["codes"].shape == (32, 32) and plan[names[(0, "ffn2")][0]]["codes"].shape == (64, 32)
    q, info = fp8_qdq.build(model, plan)
    assert (info["quantized_matmuls"], info["fp32_matmuls"], info["activation_qdq"]) == (9, 3, 7)
    back = fp8_plan.from_onnx(q, enc)
    assert set(back) == set(codes) - {(1, "qkv")}
    assert all(torch.equal(back[k].view(torch.uint8), codes[k].view(torch.uint8)) for k in back)
    producer = {o: n.op_type for n in q.graph.node for o in n.output}
    inits = {i.name: i for i in q.graph.initializer}
    for node in (n for n in q.graph.node if n.name in names[(1, "qkv")]):
        assert node.input[0] not in producer or producer[node.input[0]] != "DequantizeLinear"
        assert inits[node.input[1]].data_type == TensorProto.FLOAT
    other = copy.deepcopy(enc)
    with torch.no_grad():
        other.layers[0].o.weight.mul_(1.01)
    with pytest.raises(StageError, match="not this graph's"):
        fp8_qdq.build(model, fp8_plan.onnx_layers(model, other, codes, amax, ()))
    with pytest.raises(StageError, match="not this checkpoint's"):
        fp8_plan.from_onnx(q, other)


def test_fp16_keeps_sensitive_ops_fp32(tiny_q):
    art, _, _ = tiny_q
    model = onnx.load(str(_variant(art, "fp16")))
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)  # the weights are fp16
    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.value_info}
    sensitive = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert sensitive
    for n in sensitive:
        assert types.get(n.output[0], TensorProto.FLOAT) == TensorProto.FLOAT, n.name
    entry = io.load_manifest(art)["variants"]["fp16"]
    assert "/Div" in entry["fp32_nodes"]  # the pooling division


def test_int8_is_symmetric_qdq(tiny_q):
    art, _, _ = tiny_q
    for p in ("int8", "best"):
        model = onnx.load(str(_variant(art, p)))
        ops = [n.op_type for n in model.graph.node]
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops, p
        inits = {i.name: i for i in model.graph.initializer}
        for n in model.graph.node:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                assert len(n.input) == 3 and n.input[2] in inits, (p, n.name)
                zp = inits[n.input[2]]
                assert zp.data_type == TensorProto.INT8 and not numpy_helper.to_array(zp).any(), (p, n.name)  # TensorRT: symmetric
                assert inits[n.input[1]].data_type == TensorProto.FLOAT, (p, n.name)  # fp32 scales, also in best
    entry = io.load_manifest(art)["variants"]["int8"]
    assert entry["zero_points_all_zero"] and entry["quantized_count"] >= 1
    assert set(entry["quantized_nodes"]).isdisjoint(entry["excluded_nodes"])
    assert entry["calibration"]["data"].endswith("calibration.txt") and entry["calibration"]["samples"] > 0
    # Q/DQ only on MatMul inputs: every DequantizeLinear feeds MatMuls only (never the residual Add)
    model = onnx.load(str(_variant(art, "int8")))
    dq_out = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    consumers = {n.op_type for n in model.graph.node for t in n.input if t in dq_out}
    assert consumers == {"MatMul"}


def test_calibration_is_deterministic(tiny_q, tmp_path_factory):
    art, _, _ = tiny_q
    other = tmp_path_factory.mktemp("tiny_q_again") / "art"
    shutil.copytree(tmp_path_factory.getbasetemp() / "tiny_q_fp32_only", other)
    _run(other, other / "logs", precisions=("int8",))
    assert io.sha256_file(_variant(other, "int8")) == io.sha256_file(_variant(art, "int8"))


def test_resume_does_not_rebuild(tiny_q, capsys):
    art, logs, first = tiny_q
    before = {p: _variant(art, p).stat().st_mtime_ns for p in ("fp16", "int8", "best")}
    capsys.readouterr()
    t0 = time.perf_counter()
    _run(art, logs)
    out = capsys.readouterr().out
    for p in ("fp16", "int8", "best"):
        assert f"{p}: up to date" in out
        assert _variant(art, p).stat().st_mtime_ns == before[p]
    assert time.perf_counter() - t0 < first


def test_interrupted_build_leaves_nothing(tiny_q, tmp_path, monkeypatch):
    art, _, _ = tiny_q
    work = tmp_path / "art"
    shutil.copytree(art, work)
    (work / "onnx" / "model_int8.onnx").unlink()  # the recorded int8 is now invalid: it must be rebuilt

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(int8_search, "dedicate_qdq", boom)  # dies after quantize_static wrote the temp file
    with pytest.raises(KeyboardInterrupt):
        _run(work, tmp_path / "logs", precisions=("int8",))
    assert not (work / "onnx" / "model_int8.onnx").exists()
    assert not list((work / "onnx").glob("*.partial"))
    assert not io.is_valid(io.load_manifest(work)["variants"]["int8"]["onnx"], work)


def test_quality_helper_and_metrics(tiny_q):
    art, _, _ = tiny_q
    _, tok, names = _feed(art)
    texts = read_texts(spec.EVALUATION_TEXTS)[:24]
    same = quantize.quality(_variant(art, "fp32"), _variant(art, "fp32"), texts, tok, names, 128)
    assert same["mean_cos"] > 0.99999 and same["top10"] == 1.0 and same["rel_l2"] < 1e-6
    q = quantize.quality(_variant(art, "fp32"), _variant(art, "int8"), texts, tok, names, 128)
    assert {"mean_cos", "min_cos", "max_abs", "rel_l2", "top10"} <= set(q) and 0 < q["min_cos"] <= q["mean_cos"] <= 1
    a = np.random.default_rng(0).standard_normal((12, 8))
    assert metrics.topk_agreement(a, a, 10) == 1.0 and metrics.topk_agreement(a, a[::-1], 10) < 1.0


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        quantize.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0 and "--precisions" in out
    assert "(default fp16,int8,best,fp8)" in out and f"(default {quantize.Int8Settings.held_out})" in out


def test_cli_error_is_one_line(tmp_path, capsys):
    assert quantize.main(["--artifacts", str(tmp_path), "--logs", str(tmp_path / "logs"), "--precisions", "fp4"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown precision(s) ['fp4']") and len(err.strip().splitlines()) == 1


def test_every_onnx_precision_has_a_builder_or_a_reason():
    """Adding an ONNX precision to spec needs its builder here (or the reason it is not built)."""
    built, not_built = set(quantize.BUILDERS), set(quantize.NOT_BUILT)
    assert built.isdisjoint(not_built)
    assert built | not_built == set(spec.family_precisions("onnx")) - {"fp32"}
    assert all(q in quantize.BUILDERS for reqs in quantize.REQUIRES.values() for q in reqs)


@pytest.mark.slow
def test_real_model_meets_floors(real_artifacts, tmp_path_factory):
    """all-MiniLM-L6-v2: the floors on data/evaluation.txt (never used by the searches); fp8 as written (TensorRT's
    source) with the plan torch_fp8 shares."""
    logs = tmp_path_factory.mktemp("real_q_logs")
    cache = os.environ.get("ENC2TRITON_QUANT_CACHE")  # optional persistent search cache (key = fp32 hash + settings)
    t0 = time.perf_counter()
    quantize.run(real_artifacts, logs, measure_latency=False, progress=False, cache_dir=Path(cache) if cache else None)
    took = time.perf_counter() - t0
    m = io.load_manifest(real_artifacts)
    lines = []
    for p in ("fp16", "int8", "best", "fp8"):
        q = m["variants"][p]["quality"]
        assert q["n"] == len(read_texts(spec.EVALUATION_TEXTS))
        lines.append(f"{p}: mean {q['mean_cos']:.6f} min {q['min_cos']:.6f} top-10 {q['top10']:.3f}")
        assert metrics.passes(q, spec.FLOORS[p]), lines[-1]
    i8 = m["variants"]["int8"]
    print(f"\n{took:.0f}s; " + "; ".join(lines) + f"; int8 kept FP32: {i8['excluded_nodes']} "
          f"({i8['quantized_count']}/{i8['candidate_count']} MatMuls quantized); fp8 kept FP32: {m['variants']['fp8']['kept_fp32']}")
    assert i8["quantized_count"] >= i8["candidate_count"] // 2  # mostly int8, not fp32 in disguise


def _search_and_build(art: Path, out: Path) -> tuple[dict, str]:
    """The int8 search on the tiny model (FAST settings) and the Q/DQ graph built from it: (the record, its sha256)."""
    from enc2triton.core.texts import load_tokenizer, read_calibration

    m = io.load_manifest(art)
    model = onnx.load(str(io.resolve(m["variants"]["fp32"]["onnx"]["path"], art)))
    tok = load_tokenizer(art / m.get("tokenizer_dir", "tokenizer"))
    texts = read_calibration(spec.CALIBRATION_TEXTS, spec.EVALUATION_TEXTS)
    search = int8_search.search_int8(model, tok, m["inputs"], 128, texts, FAST, progress=False)
    int8_search.build_int8(model, search, out)
    return search, io.sha256_file(out)


def _choices(search: dict) -> dict:
    return {k: v for k, v in search.items() if k not in ("seconds", "phase_seconds", "calibration")} | {
        "calibration": {k: v for k, v in search["calibration"].items() if k != "seconds"}}


def test_int8_search_does_not_depend_on_ort_kernels(tiny_q, tmp_path, tmp_path_factory, monkeypatch):
    """The search's decisions and the int8 graph come from exact Q/DQ arithmetic (float64 graphs run as written, every
    cosine rounded before a comparison: exact.py), not from how ONNX Runtime's kernels sum. Run again with every
    MatMul summed in another order (exact.reordered_sums), ORT's graph optimizations on, two intra-op threads and one batch at a
    time, the search chooses the same and writes the same bytes."""
    from enc2triton.quantize import exact

    pristine = tmp_path_factory.getbasetemp() / "tiny_q_fp32_only"
    fp32 = lambda: onnx.load(str(io.resolve(io.load_manifest(pristine)["variants"]["fp32"]["onnx"]["path"], pristine)))
    a, sha_a = _search_and_build(pristine, tmp_path / "a.onnx")

    def other_session(model, threads=None):
        return ort_session(exact.reordered_sums(model), threads=2, optimize=True)

    feed, _, _ = _feed(pristine)
    x64 = exact.to_double(fp32())
    x, y = exact.session(x64).run(None, feed), other_session(x64).run(None, feed)
    assert any(not np.array_equal(u, v) for u, v in zip(x, y))  # the perturbation is real: other float64 bits
    monkeypatch.setattr(exact, "session", other_session)
    monkeypatch.setattr(exact, "workers", lambda: 1)
    b, sha_b = _search_and_build(pristine, tmp_path / "b.onnx")
    assert _choices(a) == _choices(b)
    assert sha_a == sha_b
    # quantize_static is deterministic given the ranges: the same record builds the same bytes again
    int8_search.build_int8(fp32(), a, tmp_path / "c.onnx")
    assert io.sha256_file(tmp_path / "c.onnx") == sha_a
