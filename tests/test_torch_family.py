"""The PyTorch engine family on the CPU: our encoder vs Hugging Face, the FP8/INT8 linear layers' arithmetic, the INT8
plan taken from the ONNX search, the saved packages (CPU builds of the same code path) through TorchEngine and
through the real Triton server. The GPU-only parts (CUDA graphs, FP8 tensor cores) run on the GPU machine."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from enc2triton.core import io, spec
from enc2triton.runtime import engines, torch_model
from enc2triton.export import export
from enc2triton.quantize import fp8_plan, quantize
from enc2triton.torch_engines import torch_build
from enc2triton.serve import repository, server
from enc2triton.core.texts import tokenize

TEXTS = ["short one", "a somewhat longer sentence about the weather in spring", "Where is the station?"]
FAST = quantize.Int8Settings(held_out=32, sweep_texts=16, max_calib_texts=96, alphas=(None, 0.8))


def _hf(path: Path):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(str(path), attn_implementation="eager").eval(), AutoTokenizer.from_pretrained(str(path))


@pytest.mark.parametrize("arch", ["tiny_distilbert", "tiny_bert"])
def test_encoder_matches_hugging_face_fp32(arch, request):
    hf, tok = _hf(request.getfixturevalue(arch))
    enc = torch_model.from_hf(hf)
    names = [n for n in enc.input_names if n in tok.model_input_names]
    feed = {k: torch.from_numpy(v) for k, v in tokenize(tok, TEXTS, names, 64).items()}  # padded batch
    with torch.inference_mode():
        ref = hf(**feed).last_hidden_state
        hidden, pooled = enc(**feed)
    mask = feed["attention_mask"].bool()
    assert (hidden - ref)[mask].abs().max() < 1e-5
    m = mask[..., None].float()
    assert (pooled - (ref * m).sum(1) / m.sum(1)).abs().max() < 1e-5


def test_unsupported_architecture_is_a_clear_error():
    from transformers import BertConfig

    with pytest.raises(ValueError, match="activation 'relu'"):
        torch_model.EncoderConfig.from_hf(BertConfig(hidden_act="relu"))


def test_int8_linear_is_exact_w8a8_with_smoothing():
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    x = torch.randn(5, 16) * 3
    s = torch.rand(16) + 0.5
    clip = 4.0
    q = torch_model.Int8Linear(lin.weight, lin.bias, clip, s)
    # by hand: x / s quantized per tensor at clip/127, W * s per output channel, int32 accumulate
    xs = clip / 127
    xq = torch.round(x / s / xs).clamp(-127, 127)
    w = lin.weight.detach() * s
    ws = w.abs().amax(1) / 127
    wq = torch.round(w / ws[:, None]).clamp(-127, 127)
    expect = (xq @ wq.t()) * xs * ws + lin.bias.detach()
    assert torch.allclose(q(x), expect, atol=1e-5)
    assert q(x[:1]).shape == (1, 8)  # one row: padded to 32 rows for the int8 GEMM, sliced back


def test_qgemm_reference_is_what_the_int8_layer_computes():
    """The GPU kernel's reference (qgemm.reference: what gemm_bench.py checks the Triton kernel against on the GPU) is
    Int8Linear's own math on its buffers: codes [out, in], the dequantization and bias on the int32 accumulator."""
    from enc2triton.runtime import qgemm

    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 64)
    x = torch.randn(9, 32) * 2
    q = torch_model.Int8Linear(lin.weight, lin.bias, 5.0, torch.rand(32) + 0.5)
    assert q.weight.shape == (64, 32) and q.weight.is_contiguous()
    codes = torch.round(x * q.x_mult).clamp(-127, 127).to(torch.int8)
    ref = qgemm.reference(codes, q.weight, q.out_scale, q.bias, "fp16")
    assert ref.dtype == torch.float16 and torch.allclose(ref.float(), q(x), atol=1e-2, rtol=1e-3)


def test_qgemm_tiles_per_use_shape_and_file(tmp_path):
    """The kernel's settings: a shape's entry wins over its kind's and its use's; a bad table is refused before any
    launch; a measured file (ENC2TRITON_QGEMM_TILES) is what a fresh process runs with."""
    import json
    import os
    import subprocess
    import sys

    from enc2triton.runtime import qgemm

    saved = {k: dict(v) for k, v in qgemm.TILES.items()}
    wide = dict(qgemm.CONFIG, BLOCK_N=256, num_warps=8, num_stages=3)
    with qgemm.tiles_override({"qmm.int8.3072x768": wide, "qmm_gelu_q.fp8": dict(qgemm.CONFIG, FAST_GELU=False)}):
        assert qgemm.tiles_for("qmm", "int8", 3072, 768) == wide
        assert qgemm.tiles_for("qmm", "int8", 768, 2304) == qgemm.CONFIG  # no entry of its own: the use's
        assert qgemm.tiles_for("qmm_gelu_q", "fp8", 768, 3072)["FAST_GELU"] is False
        assert qgemm.tiles_for("qmm_gelu_q", "int8", 768, 3072) == saved["qmm_gelu_q.int8"]  # the kind's default
        assert qgemm.tiles_label(wide) == "128x256x64 w8 s3"
        with pytest.raises(ValueError, match="unknown uses"):
            qgemm.use_tiles({"matmul.int8": wide})
        with pytest.raises(ValueError, match="lack some"):
            qgemm.use_tiles({"qmm.int8": {"BLOCK_M": 64}})
    assert qgemm.TILES == saved  # the table as it was
    f = tmp_path / "tiles.json"
    f.write_text(json.dumps({"tiles": {"qmm.int8": wide}}))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, qgemm.TILES_ENV: str(f), "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    code = "from enc2triton.runtime import qgemm; print(qgemm.tiles_label(qgemm.tiles_for('qmm', 'int8', 1, 1)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.stdout.strip() == "128x256x64 w8 s3", r.stderr[-2000:]


def test_int8_codes_round_half_to_even_by_the_fp32_magic_number():
    """The kernel's INT8 epilogue rounds by adding and taking back 1.5 x 2^23 in FP32 (two adds instead of a floor and a
    tie fix-up): that is torch.round's half-to-even on every value the clamp lets through, ties included."""
    y = torch.cat([torch.arange(-127.5, 128.0, 0.5), torch.empty(100_000).uniform_(-127, 127),
                   torch.tensor([0.49999997, -0.49999997, 2.5000002, -126.50001])]).float()
    assert torch.equal((y + 12582912.0) - 12582912.0, torch.round(y))


def _e4m3(x: torch.Tensor, scale) -> torch.Tensor:
    return (x / scale).clamp(-448, 448).to(torch.float8_e4m3fn).float() * scale


def test_fp8_linear_is_e4m3_with_a_static_scale_and_per_channel_weights():
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 16)
    x = torch.randn(7, 32)
    amax = 2.5  # calibrated |max|: values past it clip to +-448 codes
    f = torch_model.Fp8Linear(lin.weight, lin.bias, amax=amax)
    assert f.x_scale.dtype == torch.float32 and f.x_scale.shape == () and float(f.x_scale) == pytest.approx(amax / 448)
    assert "x_scale" in f.state_dict()
    xq = _e4m3(x, amax / 448).clamp(-amax, amax)  # one scale for every token, constant (not from x)
    w = lin.weight.detach()
    wq = _e4m3(w, w.abs().amax(1, keepdim=True) / 448)
    expect = xq @ wq.t() + lin.bias.detach()
    assert torch.allclose(f(x).float(), expect, atol=3e-2, rtol=1e-2)  # BF16 epilogue
    assert f.weight.dtype == torch.float8_e4m3fn and f.w_scale.shape == (1, 16) and f(x).dtype == torch.bfloat16
    assert f(x[None]).shape == (1, 7, 16)
    assert torch.equal(f(x)[2], f(x[2:3])[0])  # a row's result does not depend on the other rows


def test_size_rows_folds_the_static_scale_and_saves_nothing_more():
    """size_rows (before compiling, after loading): the activation's static scale folded into the weight's for row-wise
    _scaled_mm with a view of ones as scale_a; the state dict and the dynamic layers unchanged; off the GPU the layer
    computes what it computed."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 16)
    x = torch.randn(7, 32)
    static, dynamic = torch_model.Fp8Linear(lin.weight, lin.bias, amax=2.5), torch_model.Fp8Linear(lin.weight, lin.bias)
    before, keys = static(x), set(static.state_dict())
    net = torch.nn.Sequential(static, torch.nn.Identity(), dynamic)
    assert torch_model.size_rows(net, 64) is net
    assert static.row_ones.shape == (64, 1) and bool((static.row_ones == 1).all())
    assert torch.equal(static.xw_scale, (static.x_scale * static.w_scale).float())
    assert set(static.state_dict()) == keys and not hasattr(dynamic, "row_ones")
    assert torch.equal(static(x), before)


def test_fp8_linear_without_a_scale_is_per_token_dynamic():
    """The optional mode (no amax: no x_scale buffer): each row its own scale, row |max| / 448, at run time."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 16)
    x = torch.randn(7, 32)
    f = torch_model.Fp8Linear(lin.weight, lin.bias)
    assert f.x_scale is None and "x_scale" not in f.state_dict()
    xq = _e4m3(x, x.abs().amax(1, keepdim=True) / 448)
    w = lin.weight.detach()
    expect = xq @ _e4m3(w, w.abs().amax(1, keepdim=True) / 448).t() + lin.bias.detach()
    assert torch.allclose(f(x).float(), expect, atol=3e-2, rtol=1e-2)


def test_fp8_static_scale_loses_small_tokens_to_an_outlier_token_per_token_keeps_them():
    """Why per-token dynamic scales exist, and what the static default gives up (and the sensitivity search, keeping
    the worst layers BF16, pays back): one token 10^5 times the others (a [SEP]-like outlier) sets the calibrated
    |max|; with that one scale the ordinary tokens fall into E4M3's subnormals, with a scale per token they keep their
    3 mantissa bits."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32).requires_grad_(False)
    x = torch.randn(16, 64)
    x[3] *= 1e5
    dynamic = torch_model.Fp8Linear(lin.weight, lin.bias)
    static = torch_model.Fp8Linear(lin.weight, lin.bias, amax=float(x.abs().max()))
    ws = lin.weight.detach().abs().amax(1, keepdim=True) / 448
    w = dynamic.weight.float() * ws
    exact = x @ w.t() + lin.bias.detach()  # the weight's rounding is the same in both: compare the activations' alone
    rows = torch.arange(16) != 3

    def err(y):
        return float(((y.float() - exact)[rows].norm() / exact[rows].norm()))

    assert err(dynamic(x)) < 0.04 and err(static(x)) > 4 * err(dynamic(x))


def test_fp8_gptq_rounds_the_weight_for_a_smaller_output_error():
    torch.manual_seed(0)
    lin = torch.nn.Linear(48, 24)
    x = torch.randn(512, 48) @ torch.randn(48, 48)  # correlated inputs: where GPTQ's error feedback pays
    w = lin.weight.detach()
    ws = torch_model.fp8_weight_scale(w)[:, None]
    codes = torch_model.fp8_gptq(w, x.double().t() @ x.double())
    assert codes.dtype == torch.float8_e4m3fn and codes.shape == w.shape
    nearest = (w / ws).to(torch.float8_e4m3fn).float() * ws

    def err(wq):
        return float((x @ (wq - w).t()).norm())

    assert err(codes.float() * ws) < 0.8 * err(nearest)
    f = torch_model.Fp8Linear(lin.weight, lin.bias, codes)
    assert torch.equal(f.weight.float(), codes.float())


def test_to_fp8_keeps_layers_bf16_and_restores_from_its_state_dict(tiny_distilbert):
    hf, tok = _hf(tiny_distilbert)
    enc = torch_model.from_hf(hf)
    feed = {k: torch.from_numpy(v) for k, v in tokenize(tok, TEXTS, list(enc.input_names), 64).items()}
    amax = torch_model.input_amax(enc, [{k: v.numpy() for k, v in feed.items()}])
    w = enc.layers[0].ffn1.weight.detach()
    codes = {(0, "ffn1"): torch_model.fp8_gptq(w, torch.eye(w.shape[1], dtype=torch.float64))}
    q = torch_model.to_fp8(enc, codes, keep=[(1, "qkv")], amax=amax).eval()
    kinds = torch_model.layout(q)
    assert kinds["layers.1.qkv"] == "dense" and list(kinds.values()).count("fp8") == len(kinds) - 1
    assert isinstance(q.layers[1].qkv, torch.nn.Linear) and q.layers[1].qkv.weight.dtype == torch.bfloat16
    assert torch.equal(q.layers[0].ffn1.weight.float(), codes[(0, "ffn1")].float())
    assert torch.equal(q.layers[0].ffn1.w_scale[0], torch_model.fp8_weight_scale(w))  # from the FP32 weight, as fp8_gptq's
    assert q.layers[0].ffn1.w_scale.dtype == torch.float32 and q.layers[0].ffn1.bias.dtype == torch.bfloat16
    xs = q.layers[0].ffn1.x_scale  # static: the calibrated |max| / 448, FP32 (not cast to BF16 with the model)
    assert xs.dtype == torch.float32 and float(xs) == pytest.approx(amax[(0, "ffn1")] / 448)
    back = torch_model.restore(q.cfg.as_dict(), "bfloat16", kinds, q.state_dict())
    assert torch.equal(back.layers[0].ffn1.x_scale, xs)
    with torch.inference_mode():
        assert torch.equal(back(**feed)[1], q(**feed)[1])
    dyn = torch_model.to_fp8(torch_model.from_hf(hf), codes).eval()  # no amax: the per-token mode, restored as such
    assert dyn.layers[0].ffn1.x_scale is None
    back = torch_model.restore(dyn.cfg.as_dict(), "bfloat16", torch_model.layout(dyn), dyn.state_dict())
    assert back.layers[0].ffn1.x_scale is None
    with torch.inference_mode():
        assert torch.equal(back(**feed)[1], dyn(**feed)[1])


@pytest.fixture(scope="module")
def torch_art(tmp_path_factory, tiny_distilbert):
    """The tiny DistilBERT exported, its ONNX variants (the INT8 search, the FP8 plan) and the CPU packages of every torch
    variant."""
    art = tmp_path_factory.mktemp("torch_art")
    export.run(model=str(tiny_distilbert), artifacts=art, shapes=spec.ShapeLimits(max_batch=8, opt_batch=4, max_seq=128, opt_seq=64))
    logs = tmp_path_factory.mktemp("torch_logs")
    quantize.run(art, logs, ("int8", "fp8"), measure_latency=False, progress=False, settings=FAST)
    res = torch_build.run(art, logs, device="cpu", compile_cache=False)  # eager: torch.compile on 2 CPU cores is slow
    return art, logs, res


def test_int8_plan_follows_the_onnx_search(torch_art, tmp_path):
    art, _, _ = torch_art
    m = io.load_manifest(art)
    enc = torch_model.from_hf(_hf(Path(m["model"]["path"]))[0])
    plan, info = torch_build.int8_plan(m, art, enc.cfg)
    assert info["linear_layers"] == 8 and info["linear_layers_quantized"] == 8 and not info["kept_fp16"]
    # the search keeping one of Q/K/V in FP32 keeps the fused QKV GEMM in FP16; another layer stays quantized
    search_path = torch_build.io.resolve(m["variants"]["int8"]["search_cache"], art)
    original = search_path.read_bytes()  # restored byte for byte: the int8 package records the search's hash
    search = io.read_json(search_path)
    q_node = next(n for n in search["quantized"] if "layer.1/attention/q_lin" in n)
    search["quantized"].remove(q_node)
    io.write_json(search_path, search)
    try:
        plan, info = torch_build.int8_plan(m, art, enc.cfg)
    finally:
        search_path.write_bytes(original)
    assert plan[(1, "qkv")] is None and plan[(1, "o")] is not None and info["kept_fp16"] == ["layers.1.qkv"]


def test_gelu_epilogue_is_a_recorded_choice_exact_off_the_gpu(tiny_distilbert):
    """FFN1's GELU in the GEMM epilogue is a custom op that torch.compile keeps whole; off a GPU (and in FP32) it is the
    exact GELU, so the CPU's numbers do not move; a package records the choice and restore() rebuilds it."""
    enc = torch_model.from_hf(_hf(tiny_distilbert)[0])
    feed = {"input_ids": torch.randint(5, 90, (3, 12)), "attention_mask": torch.ones(3, 12, dtype=torch.int64)}
    with torch.inference_mode():
        separate = enc(**feed)[1]
        fused = torch_model.set_gelu(enc, "epilogue")(**feed)[1]
        compiled = torch.compile(enc, dynamic=True)(**feed)[1]
    assert torch.equal(separate, fused) and torch.allclose(compiled, separate, atol=1e-5)
    back = torch_model.restore(enc.cfg.as_dict(), "float32", torch_model.layout(enc), enc.state_dict(), "epilogue")
    assert {layer.gelu for layer in back.layers} == {"epilogue"}
    with pytest.raises(ValueError, match="gelu 'fused'"):
        torch_model.set_gelu(enc, "fused")


def test_cpu_packages_built_checked_and_recorded(torch_art):
    art, logs, res = torch_art
    m = io.load_manifest(art)
    for p in torch_build.PRECISIONS:
        e = m["torch"][p]
        assert e["gelu"] == spec.TORCH_GELU == json.loads(io.resolve(e["extras"]["model.json"]["path"], art).read_text())["gelu"]
        assert io.is_valid(e["package"], art) and e["device"] == "cpu"
        assert set(e["extras"]) == {"model.json"} and io.is_valid(e["extras"]["model.json"], art)  # no compile cache asked
        assert e["quality"]["pass"], (p, e["quality"])  # tiny random weights: near-exact, but the floor is checked
        assert e["compiled"]["min_cos_vs_eager"] >= torch_build.GROSS and e["compiled"]["batch1_max_abs_diff"] < 1e-2
        assert e["quality"]["runtime"].startswith("torch") and set(e["quality_eager"]) == {"mean_cos", "min_cos", "top10"}
    assert res["verification"]["max_abs_diff"]["sentence_embedding"] < 1e-5
    md = (logs / "torch_build.md").read_text()
    assert "| torch_fp8 |" in md and "kept FP16: none" in md and "kept BF16: " in md
    plan = m["torch"]["fp8"]["plan"]
    assert plan["activations"].startswith("static per tensor") and "static scale per tensor" in m["torch"]["fp8"]["method"]
    assert plan["calibration_steps"][0]["kept"] == 0 and len(plan["sensitivity"]) == m["torch"]["fp8"]["linear_layers"] == 8
    assert len(m["torch"]["fp8"]["kept_bf16"]) == plan["calibration_steps"][-1]["kept"] <= 2  # at most a quarter


def test_fp8_reuses_the_onnx_fp8_plan(torch_art):
    """torch_fp8 is built from the plan the quantize stage wrote into the ONNX FP8 graph: the same GPTQ codes (read back
    from its E4M3 initializers, Q, K and V fused again), static scales and kept layers as the plan computed here; a new
    FP8 graph makes the package stale; without one it is not built."""
    import onnx

    art, _, _ = torch_art
    m = io.load_manifest(art)
    e, f8 = m["torch"]["fp8"], m["variants"]["fp8"]
    assert e["kept_bf16"] == f8["plan"]["kept"] and e["plan"] == f8["plan"] and e["onnx_fp8_sha256"] == f8["onnx"]["sha256"]
    enc = torch_model.from_hf(_hf(Path(m["model"]["path"]))[0])
    ctx = torch_build._context(m, art, "cpu", spec.CALIBRATION_TEXTS, spec.EVALUATION_TEXTS)
    codes, amax, keep, record = fp8_plan.fp8_plan(enc, ctx)  # the plan again, torch_build's calibration batches
    stored = fp8_plan.from_onnx(onnx.load(str(io.resolve(f8["onnx"]["path"], art))), enc)
    assert set(stored) == set(codes) - set(keep) and [fp8_plan.name(k) for k in keep] == f8["plan"]["kept"]
    assert all(torch.equal(stored[k].view(torch.uint8), codes[k].view(torch.uint8)) for k in stored)
    assert {fp8_plan.name(k): v for k, v in amax.items()} == f8["plan"]["amax"]
    sd = torch.load(io.resolve(e["package"]["path"], art), weights_only=True)["state_dict"]
    assert torch.equal(sd["layers.1.qkv.weight"].view(torch.uint8), stored[(1, "qkv")].view(torch.uint8))
    assert float(sd["layers.0.ffn2.x_scale"]) == pytest.approx(amax[(0, "ffn2")] / 448, rel=1e-6)
    assert torch_build._up_to_date(e, art, "cpu", m) and not torch_build._up_to_date({**e, "onnx_fp8_sha256": "0" * 64}, art, "cpu", m)
    bare = {**m, "variants": {k: v for k, v in m["variants"].items() if k != "fp8"}}
    with pytest.raises(torch_build.NotBuilt, match="run `python -m enc2triton.quantize` first"):
        torch_build.onnx_fp8_plan(bare, art, enc)


def test_fp8_layers_all_keeps_every_layer_fp8_without_a_search(torch_art):
    """--fp8-layers all (speed runs on random weights): GPTQ codes and static scales for every layer, none kept BF16."""
    art, _, _ = torch_art
    m = io.load_manifest(art)
    ctx = torch_build._context(m, art, "cpu", spec.CALIBRATION_TEXTS, spec.EVALUATION_TEXTS)
    ctx["fp8_layers"] = "all"
    enc = torch_model.from_hf(_hf(Path(m["model"]["path"]))[0])
    codes, amax, keep, record = fp8_plan.fp8_plan(enc, ctx)
    assert keep == [] and len(codes) == len(amax) == 8 and record["search"].startswith("none")
    module, info = torch_build.build_fp8(enc, {**ctx, "manifest": {}})  # needs no ONNX FP8 graph
    assert info["kept_bf16"] == [] and info["linear_layers_quantized"] == 8 and "onnx_fp8_sha256" not in info
    assert info["method"] == torch_build.FP8_METHOD_ALL and "ONNX" not in info["method"]  # says what was built
    assert set(torch_model.layout(module).values()) == {"fp8"}
    e = np.random.default_rng(0).normal(size=(300, 16))
    q = fp8_plan.calib_quality(e, e)  # top-10 over blocks of 128 texts
    assert q["top10"] == 1.0 and q["mean_cos"] == 1.0


def test_fp8_folded_is_recorded_rebuilt_and_sized_at_load(torch_art, tmp_path):
    """torch_build folds FP8's static scales by default (--no-fp8-folded turns it off, and toggling rebuilds): the
    package's sidecar says how many rows to size (max batch x max seq), the manifest records it, the engine sizes the
    layers at load; off the GPU the embeddings are unchanged."""
    src, _, _ = torch_art
    art = tmp_path / "art"
    shutil.copytree(src, art)
    m = io.load_manifest(art)
    assert m["torch"]["fp8"]["fp8_folded"] is True  # the fixture's default build
    plain = torch_build.run(art, tmp_path / "logs", ("fp8",), device="cpu", compile_cache=False, fp8_folded=False)
    assert "fp8_folded" not in plain["built"]["fp8"]
    plain_pkg = io.resolve(plain["built"]["fp8"]["package"]["path"], art)
    assert io.read_json(plain_pkg.with_suffix(".json"))["max_rows"] is None
    feed = tokenize(_hf(Path(m["model"]["path"]))[1], TEXTS, list(m["inputs"]), 128)
    before = engines.open_engine("torch", plain_pkg, "cpu").run(feed, ["sentence_embedding"])["sentence_embedding"]
    res = torch_build.run(art, tmp_path / "logs", ("fp8",), device="cpu", compile_cache=False)  # on again: rebuilt
    e = res["built"]["fp8"]
    assert e["fp8_folded"] is True
    meta = io.read_json(io.resolve(e["package"]["path"], art).with_suffix(".json"))
    assert meta["max_rows"] == m["shapes"]["max_batch"] * m["shapes"]["max_seq"] == 8 * 128
    eng = engines.open_engine("torch", io.resolve(e["package"]["path"], art), "cpu")
    static = [x for x in eng.model.modules() if isinstance(x, torch_model.Fp8Linear) and x.x_scale is not None]
    assert static and all(x.row_ones.shape == (8 * 128, 1) for x in static)
    assert np.array_equal(eng.run(feed, ["sentence_embedding"])["sentence_embedding"], before)


def test_torch_engine_pads_to_buckets_and_slices_back(torch_art):
    art, _, _ = torch_art
    m = io.load_manifest(art)
    path = io.resolve(m["torch"]["fp16"]["package"]["path"], art)
    eng = engines.open_engine("torch", path, "cpu")
    assert eng.bucket(3, 7) == (4, 16) and eng.bucket(9, 100) == (9, 112)  # past the largest batch bucket: as is
    hf, tok = _hf(Path(m["model"]["path"]))
    ref = torch_model.from_hf(hf).half()
    feed = tokenize(tok, TEXTS, eng.inputs, 128)
    out = eng.run(feed, ["last_hidden_state", "sentence_embedding"])
    assert out["last_hidden_state"].shape == (3, feed["input_ids"].shape[1], 32) and out["sentence_embedding"].shape == (3, 32)
    with torch.inference_mode():
        expect = ref(**{k: torch.from_numpy(v) for k, v in feed.items()})[1].float().numpy()
    assert np.abs(out["sentence_embedding"] - expect).max() < 2e-2
    step = eng.prepare({k: v[:2] for k, v in feed.items()})
    assert step()[1].shape == (2, 32)


def test_gpu_only_without_a_gpu(torch_art, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    art = tmp_path / "art"
    shutil.copytree(torch_art[0], art)
    res = torch_build.run(art, tmp_path / "logs", device="cuda")
    assert res["built"] == {} and set(res["skipped"]) == set(torch_build.PRECISIONS)
    assert io.load_manifest(art)["torch"]["fp8"] == {"package": None, "reason": torch_build.GPU_ONLY}
    models, skipped = repository.plan(io.load_manifest(art), art, "gpu")
    assert f"torch_fp16: skipped: {torch_build.GPU_ONLY}" in skipped
    assert "GPU only" in capsys.readouterr().out


def test_old_package_format_refused_and_a_new_int8_search_makes_the_int8_package_stale(torch_art, tmp_path):
    """A package of format 1 (INT8 weights [in, out]: a square one would load transposed without an error) is refused
    with what to do; torch_int8 is rebuilt when the ONNX INT8 search it follows changed."""
    art, _, _ = torch_art
    m = io.load_manifest(art)
    pkg = tmp_path / "model_int8.pt"
    shutil.copy(io.resolve(m["torch"]["int8"]["package"]["path"], art), pkg)
    meta = io.read_json(io.resolve(m["torch"]["int8"]["package"]["path"], art).with_suffix(".json"))
    io.write_json(pkg.with_suffix(".json"), {k: v for k, v in meta.items() if k != "format"})
    with pytest.raises(engines.EngineError, match="format 1.*rebuild it"):
        engines.open_engine("torch", pkg, "cpu")
    entry = m["torch"]["int8"]
    assert entry["format"] == torch_model.PACKAGE_FORMAT and torch_build._up_to_date(entry, art, "cpu", m)
    assert not torch_build._up_to_date({**entry, "format": 1}, art, "cpu", m)
    assert not torch_build._up_to_date({**entry, "search_sha256": "0" * 64}, art, "cpu", m)


def test_repository_refuses_a_package_for_another_device(torch_art):
    art, _, _ = torch_art
    models, skipped = repository.plan(io.load_manifest(art), art, "gpu")
    assert "torch_fp16: skipped: compiled for cpu, this repository is for gpu (torch_build --device)" in skipped
    names = [m["name"] for m in repository.plan(io.load_manifest(art), art, "cpu", only=["onnx_fp32", "torch_fp8"])[0]]
    assert names == ["onnx_fp32", "torch_fp8"]


@pytest.mark.server
@pytest.mark.slow
def test_torch_variant_served_by_the_runner(torch_art, tmp_path):
    """The Python-backend runner loads the package through TorchEngine in the real server; its ensemble agrees with
    onnx_fp32 as served."""
    import tritonclient.grpc as grpcclient

    from triton_helpers import embed

    art, _, _ = torch_art
    repo, logs = tmp_path / "repo", tmp_path / "logs"
    repository.generate(art, repo, device="cpu", only=["onnx_fp32", "torch_fp16", "torch_int8"])
    cfg = repository.read_config(repo / "torch_int8" / "config.pbtxt")
    assert cfg.backend == "python" and cfg.parameters["runtime"].string_value == "torch"
    files = {p.name for p in (repo / "torch_int8" / "1").iterdir()}
    assert {"model.pt", "model.json", "model.py", "enc2triton_engines.py", "enc2triton_torch_model.py", "enc2triton_qgemm.py"} <= files
    with server.running(repo, logs) as info:
        assert info.models["ensemble_torch_fp16"] == "READY" and info.ready_seconds is not None
        client = grpcclient.InferenceServerClient(info.grpc)
        texts = [t.encode() for t in TEXTS]
        ref = embed(client, grpcclient, texts)
        for v in ("torch_fp16", "torch_int8"):
            got = embed(client, grpcclient, texts, spec.ensemble_name(v))
            cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
            assert cos.min() > 0.999, (v, cos)
    log = (logs / "tritonserver.log").read_text()
    assert "torch_fp16" in log and "fp16 on cpu eager" in log


@pytest.mark.server
@pytest.mark.slow
def test_requests_of_every_width_run_as_one_planned_batch(torch_art, tmp_path, monkeypatch):
    """Requests of several widths in one execution (ragged batching, a long queue delay so all 8 wait together): the
    runner pads them to the widest and the engine plans its calls over all the rows (TorchEngine.length_groups), one run
    per execution instead of one per width; every request still gets its own text's embedding."""
    import concurrent.futures as cf

    import tritonclient.http as httpclient

    from enc2triton.serve import serving_stats
    from triton_helpers import raw_embed

    monkeypatch.setenv("ENC2TRITON_METRICS_FLUSH_S", "0")
    art, _, _ = torch_art
    m = io.load_manifest(art)
    serving = spec.Serving(max_queue_delay_us=2_000_000, preferred_batch_sizes=())
    repo, logs = repository.generate(art, tmp_path / "repo", device="cpu", only=["torch_fp16"], serving=serving), tmp_path / "logs"
    eng = engines.open_engine("torch", io.resolve(m["torch"]["fp16"]["package"]["path"], art), "cpu")
    rng = np.random.default_rng(0)
    feeds = [rng.integers(1000, 2000, size=(1, n)).astype(np.int64) for n in (8, 16, 8, 24, 16, 8, 24, 16)]

    info = server.start(repo, logs, timeout=180, quiet=True)
    try:
        before = serving_stats.snapshot(info.http, f"{info.host}:{info.metrics_port}")
        with cf.ThreadPoolExecutor(8) as pool:  # a client per request (one shared by threads can fail)
            got = list(pool.map(lambda ids: raw_embed(httpclient.InferenceServerClient(info.http), httpclient, m["inputs"], ids,
                                                      "torch_fp16"), feeds))
        after = serving_stats.snapshot(info.http, f"{info.host}:{info.metrics_port}")
    finally:
        server.stop(logs, quiet=True)
    for ids, out in zip(feeds, got):
        want = eng.run({"input_ids": ids, "attention_mask": np.ones_like(ids)}, ["sentence_embedding"])["sentence_embedding"]
        cos = (out * want).sum() / np.linalg.norm(out) / np.linalg.norm(want)
        assert out.shape == want.shape and cos > 0.9999, cos
    d = serving_stats.delta(before, after)["torch_fp16"]
    assert d["requests"] == 8 and d["executions"] <= 2  # two instances
    assert d["phase_items"]["engine_calls"] == d["executions"]  # one planned run per execution, not one per width


def test_a_served_cpu_instance_takes_its_share_of_the_cores(torch_art):
    """The repository gives a CPU instance cores / instances intra-op threads (intra_op_threads); a PyTorch engine takes
    them as ONNX Runtime does (two instances of all the cores each oversubscribe the machine)."""
    art, _, _ = torch_art
    m = io.load_manifest(art)
    before = torch.get_num_threads()
    try:
        engines.open_engine("torch", io.resolve(m["torch"]["fp16"]["package"]["path"], art), "cpu", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_sentence_embeddings_run_one_call_per_length_bucket(torch_art):
    """A merged batch padded to its longest text: each row runs trimmed to the smallest bucket holding its last real
    token, one engine call per bucket, the rows back in their order; the embeddings are those of the padded batch."""
    art, _, _ = torch_art
    m = io.load_manifest(art)
    eng = engines.open_engine("torch", io.resolve(m["torch"]["fp16"]["package"]["path"], art), "cpu")
    _, tok = _hf(Path(m["model"]["path"]))
    texts = ["short", "a rather longer sentence " * 6, "mid sized text here", "tiny", "x " * 60]
    feed = tokenize(tok, texts, eng.inputs, 128)
    feed = {n: np.pad(v, ((0, 0), (0, 128 - v.shape[1]))) for n, v in feed.items()}  # as the tokenizer pads a batch
    eng.call_tokens = 0  # calls free: one per length bucket
    groups = eng.length_groups(feed["attention_mask"])
    lengths = feed["attention_mask"].sum(axis=1)
    assert sorted(i for rows, _ in groups for i in rows) == list(range(len(texts)))
    for rows, length in groups:
        assert all(lengths[r] <= length for r in rows) and length in eng.meta["seq_buckets"] + [128]
    assert len(groups) >= 3
    grouped = eng.run(feed, ["sentence_embedding"])["sentence_embedding"]
    padded = eng._run_eager(feed, ["sentence_embedding"])["sentence_embedding"]
    cos = (grouped * padded).sum(1) / np.linalg.norm(grouped, axis=1) / np.linalg.norm(padded, axis=1)
    assert grouped.shape == padded.shape and cos.min() > 0.9999
    one = {n: v[:1, :16] for n, v in feed.items()}  # one bucket, already trimmed: a single call, as before
    [(rows, length)] = eng.length_groups(one["attention_mask"])
    assert list(rows) == [0] and length == 16


def test_length_groups_weigh_padding_against_the_cost_of_a_call(torch_art):
    """A call costs `call_tokens` tokens of work: a lone short row rides with the long ones when a call of its own costs
    more than its padding, and rows past a batch bucket split into buckets when that runs fewer tokens."""
    art, _, _ = torch_art
    m = io.load_manifest(art)
    eng = engines.open_engine("torch", io.resolve(m["torch"]["fp16"]["package"]["path"], art), "cpu")
    assert eng.meta["batch_buckets"] == [1, 2, 4, 8] and eng.call_tokens == spec.CALL_TOKENS["cpu"]
    mask = np.zeros((7, 128), np.int64)
    mask[:6] = 1  # six rows of 128 tokens
    mask[6, :10] = 1  # one of 10
    eng.call_tokens = 1024  # a GPU's: one call of 8 rows x 128 beats 6 -> 4 + 2 and a call for the short row
    assert [(list(r), n) for r, n in eng.length_groups(mask)] == [(list(range(7)), 128)]
    eng.call_tokens = 0  # free calls: the short row alone at 16, the six as 4 + 2 rather than padded to 8
    assert [(list(r), n) for r, n in eng.length_groups(mask)] == [([6], 16), ([0, 1, 2, 3], 128), ([4, 5], 128)]


def test_warm_up_captures_the_shapes_within_the_token_budget(torch_art):
    """At load an engine captures the serving buckets of at most spec.WARM_TOKENS tokens (larger ones on first use):
    its graph pool must not hold every shape up to max batch x 512 (18 instances of that did not fit an 80 GB H100)."""
    art, _, _ = torch_art
    m = io.load_manifest(art)
    eng = engines.open_engine("torch", io.resolve(m["torch"]["fp16"]["package"]["path"], art), "cpu")
    assert eng.meta["warm_tokens"] == spec.WARM_TOKENS and eng.meta["seq_buckets"] == [16, 32, 48, 64, 96, 128]
    everything = eng.warm_shapes()
    assert len(everything) == 4 * 6  # batch buckets 1, 2, 4, 8 x the sequence buckets: all under the budget here
    eng.meta["warm_tokens"] = 256
    shapes = eng.warm_shapes()
    assert (8, 32) in shapes and (2, 128) in shapes and (4, 128) not in shapes and all(b * s <= 256 for b, s in shapes)
    eng.meta.pop("warm_tokens")  # a package built before the budget: every shape, as then
    assert eng.warm_shapes() == everything


def test_compile_cache_round_trip(torch_art, tmp_path):
    """torch.compile once at build time, its portable cache saved; a fresh engine loads the cache and compiles from it."""
    import subprocess
    import sys

    art = tmp_path / "art"
    shutil.copytree(torch_art[0], art)
    torch_build.run(art, tmp_path / "logs", ("fp16",), device="cpu", force=True)
    e = io.load_manifest(art)["torch"]["fp16"]
    assert set(e["extras"]) == {"model.json", "model.cache"} and e["compiled"]["cache_bytes"] > 0
    path = io.resolve(e["package"]["path"], art)
    code = ("import numpy as np; from enc2triton.runtime import engines; "
            f"e = engines.open_engine('torch', r'{path}', 'cpu'); print(e.providers[0]); "
            "print(e.run({n: np.ones((2, 16), np.int64) for n in e.inputs}, ['sentence_embedding'])['sentence_embedding'].shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch.compile" in out.stdout and "no compile cache" not in out.stdout and "(2, 32)" in out.stdout


def test_gpu_sampler_reads_bare_numbers(fake_nvidia_smi):
    """Utilisation per GPU during a measurement, from nvidia-smi's unit-less CSV (the first H200 run lost it: '45 %')."""
    import time

    from enc2triton.core import host

    fake_nvidia_smi('case "$*" in\n  *nounits*) printf "0, 45, 1200\\n1, 55, 900\\n";;\n'
                    '  *) printf "0, 45 %%, 1200 MiB\\n1, 55 %%, 900 MiB\\n";;\nesac')
    with host.GpuSampler(interval=0.05) as s:
        time.sleep(0.3)
    got = s.summary()
    assert got["gpus"] == 2 and got["util_mean"] == [45.0, 55.0] and got["mem_max_mib"] == [1200.0, 900.0] and got["samples"] >= 2


def test_every_gpu_engine_family_gets_one_instance_group_per_gpu(torch_art):
    """ONNX Runtime, TensorRT and PyTorch models alike: one KIND_GPU group per GPU, the GPU serving defaults."""
    m = io.load_manifest(torch_art[0])
    serving = spec.Serving.for_device("gpu", cpus=32, gpus=2)
    for name in ("onnx_fp16", "trt_fp16", "torch_fp8"):
        cfg = repository.model_config(spec.BY_NAME[name], m, serving, native=False, kind="gpu", gpus=[0, 1])
        gpu = repository.mc.ModelInstanceGroup.KIND_GPU
        assert [(g.kind, list(g.gpus), g.count) for g in cfg.instance_group] == [(gpu, [0], spec.Serving.gpu_model_instances), (gpu, [1], spec.Serving.gpu_model_instances)], name
    assert serving.tokenizer_instances == 24


def test_fused_ffn_of_8bit_layers_is_the_separate_layers_with_a_tanh_gelu(tiny_distilbert, monkeypatch):
    """FFN1 -> GELU -> FFN2 of two 8-bit layers as one epilogue-fused GEMM writing FFN2's codes (the kernel's computation
    as qgemm.reference_gelu_q: on the GPU it is our Triton kernel) matches the layers run one by one."""
    from enc2triton.runtime import qgemm

    monkeypatch.setattr(qgemm, "qmm_gelu_q", qgemm.reference_gelu_q, raising=False)
    monkeypatch.setattr(torch_model, "INT8_FUSED_FFN", True)
    enc = torch_model.from_hf(_hf(tiny_distilbert)[0])
    amax = {(i, n): 4.0 for i, n, _ in torch_model.linears(enc)}
    for model in (torch_model.to_fp8(copy.deepcopy(enc), amax=amax),
                  torch_model.to_int8(copy.deepcopy(enc), {k: {"clip": 4.0} for k in amax})):
        layer = model.layers[0]
        assert torch_model._ffn_fusable(layer.ffn1, layer.ffn2)
        x = torch.randn(40, enc.cfg.hidden, dtype=next(layer.norm1.parameters()).dtype)
        with torch.inference_mode():
            fused = torch_model._ffn_fused(layer.ffn1, layer.ffn2, x).float()
            separate = layer.ffn2(F.gelu(layer.ffn1(x))).float()
        assert F.cosine_similarity(fused, separate).min() > 0.99, type(layer.ffn1).__name__
    dynamic = torch_model.to_fp8(copy.deepcopy(enc))  # per-token scales: FFN2's scale is not a constant, no fusion
    assert not torch_model._ffn_fusable(dynamic.layers[0].ffn1, dynamic.layers[0].ffn2)


@pytest.mark.skipif(__import__("importlib").util.find_spec("triton") is None, reason="Triton is not installed (GPU image)")
def test_qgemm_gelu_epilogue_in_tritons_interpreter():
    """The kernel's GELU + quantization epilogue, run by Triton's CPU interpreter, gives the reference's codes."""
    import subprocess
    import sys

    code = '''
import torch, triton
from enc2triton.runtime import qgemm
torch.manual_seed(0)
m, k, n = 64, 96, 160
for dt in ("int8", "fp8"):
    if dt == "int8":
        a = torch.randint(-127, 128, (m, k), dtype=torch.int8); b = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    else:
        a = (torch.randn(m, k) * 50).to(torch.float8_e4m3fn); b = (torch.randn(n, k) * 50).to(torch.float8_e4m3fn)
    scale, bias, qmult = torch.rand(n) * 1e-4, torch.randn(n) * 0.1, torch.rand(n) * 40 + 5
    for out in ("fp8", "int8"):
        c = torch.empty((m, n), dtype=torch.float32)  # the values before the cast: the interpreter's E4M3 cast truncates
        qgemm._qmm_kernel[(triton.cdiv(m, 32) * triton.cdiv(n, 32),)](
            a, b, c, scale, bias, qmult, m, n, k, a.stride(0), b.stride(0), c.stride(0), INT8=dt == "int8", GELU=True,
            QOUT=qgemm.QOUT_KINDS[out], BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2, FAST_GELU=False)
        ref = qgemm.reference_gelu_q(a, b, scale, bias, qmult, out)
        assert torch.equal(c.to(qgemm.CODE_DTYPES[out]).float(), ref.float()), (dt, out)
print("ok")
'''
    import os

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def test_qgemm_defaults_are_what_the_published_sweep_chose():
    """qgemm.TILES' defaults are gemm_bench.py's own choice (--write-tiles) replayed on the published timings of
    results/h100/2026-12-07d/ (CUDA-graph replays on an H100): the defaults change only with evidence."""
    import importlib.util
    import json

    from enc2triton.runtime import qgemm

    root = Path(__file__).resolve().parents[1]
    spec_ = importlib.util.spec_from_file_location("gemm_bench", root / "scripts" / "gemm_bench.py")
    gb = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(gb)
    logged = json.loads((root / "results" / "h100" / "2026-12-07d" / "tiles" / "gemm_bench.json").read_text())
    times = {}
    for k, v in logged["timings_ms"].items():
        key, m = k.split(" M=")
        times[(key, int(m))] = {label: (ms, label) for label, ms in v.items()}
    keys = {key for key, _ in times if key.startswith(("qmm.int8.", "qmm_gelu_q."))}
    chosen = gb.choose(times, {key: [32768, 8192, 2048] for key in keys})
    merged = {("qmm.int8", (key, m)): got for (key, m), got in times.items() if key.startswith("qmm.int8.")}
    chosen.update(gb.choose(merged, {"qmm.int8": [size for _, size in merged]}))
    assert {key: label for key, (label, _) in chosen.items()} == {key: v["label"] for key, v in logged["chosen"].items()}
    for key, (label, _) in chosen.items():
        op, kind, *shape = key.split(".")
        k, n = (int(x) for x in shape[0].split("x")) if shape else (0, 0)
        assert qgemm.tiles_label(qgemm.tiles_for(op, kind, k, n)) == label, key
