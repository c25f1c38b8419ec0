"""Engine benchmark on the tiny model (real ONNX Runtime), FLOPs source choice, GPU-name matching."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from enc2triton.core import host, io
from enc2triton.export import flops
from enc2triton.measure import bench


def test_bench_tiny_cpu(tiny_artifacts, tmp_path, capsys):
    res = bench.run(tiny_artifacts, tmp_path, "cpu", batches=(1, 2), seq=32, warmup=1, budget=0.2, min_iters=3)
    assert res == io.read_json(tmp_path / "bench_engine.json")
    eng = res["engines"]["onnx_fp32"]
    assert eng["providers"][0] == "CPUExecutionProvider"
    assert [r["batch"] for r in eng["rows"]] == [1, 2]
    for r in eng["rows"]:
        assert r["iters"] >= 3 and r["seq_per_s"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"]
        assert r["seq_per_s"] == pytest.approx(r["batch"] / (r["mean_ms"] / 1e3))
        assert r["gflops_per_s"] == pytest.approx(res["flops_per_sequence"] * r["seq_per_s"] / 1e9)
        assert "roof_fraction" not in r  # no CPU roofline
    # no logs/flops.json here: the analytic count from the manifest's dimensions (tiny: 2 layers x 32 wide)
    assert res["flops_source"].startswith("analytic")
    dims = {"hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64, "num_attention_heads": 2}
    assert res["flops_per_sequence"] == flops.analytic_flops(dims, 32)
    assert "no CPU roofline" in res["roofline"]["note"]
    assert res["model"] == io.load_manifest(tiny_artifacts)["model"] and res["onnxruntime"]
    assert res["hardware"]["cores"] >= 1
    # the instruction sets that decide CPU INT8/FP16 speed are recorded, so two CPU runs can be told apart
    assert set(res["hardware"]["cpu_isa"]) <= set(host.CPU_ISA) and "cpu_family" in res["hardware"]
    assert "onnx_fp32" in capsys.readouterr().out


def test_flops_json_used_when_it_matches(tiny_artifacts, tmp_path):
    m = io.load_manifest(tiny_artifacts)
    io.write_json(tmp_path / "flops.json", {"model": m["model"]["used"], "seq_len": 32, "flops_per_sequence": 123.0})
    assert bench.flops_per_sequence(tmp_path, m, 32) == (123.0, "logs/flops.json (fvcore, seq 32)")
    assert bench.flops_per_sequence(tmp_path, m, 64)[1].startswith("analytic")  # another seq: not reused


def test_trt_engine_without_tensorrt_is_a_skip_line(tiny_artifacts, tmp_path, capsys):
    if bench.tensorrt_version():
        pytest.skip("tensorrt is installed here")
    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    plan = art / "engines" / "trt_fp16.plan"
    plan.parent.mkdir()
    plan.write_bytes(b"not an engine: never opened without tensorrt")
    io.update_manifest("trt", {"fp16": {"status": "built", "engine": io.artifact_entry(plan, art)}}, art)
    res = bench.run(art, tmp_path / "logs", "cpu", batches=(1,), seq=16, warmup=0, budget=0.0, min_iters=1)
    assert res["skipped"] == ["trt_fp16: skipped: the tensorrt Python module is not installed"]
    assert res["tensorrt"] == "not available" and "trt_fp16" not in res["engines"]
    assert "trt_fp16: skipped" in capsys.readouterr().out


@pytest.mark.parametrize("name,key", [
    ("NVIDIA H100 80GB HBM3", "H100-SXM"), ("NVIDIA H100 PCIe", "H100-PCIe"), ("NVIDIA A100-SXM4-80GB", "A100-SXM-80GB"),
    ("NVIDIA L4", "L4"), ("Tesla T4", "T4"), ("NVIDIA GeForce RTX 4090", "RTX-4090"), ("NVIDIA L40S", None),
])
def test_match_gpu(name, key):
    table = bench.gpu_table(Path("/nonexistent"))
    assert bench.match_gpu(name, table) == key


def test_help():
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0


def test_unserved_and_unloadable_engines_cost_only_their_own_row(tiny_artifacts, tmp_path):
    """The FP8 ONNX graph (TensorRT's source; ONNX Runtime's fusions cannot run it) is named as not benchmarked, and an
    engine file ONNX Runtime cannot load fails its own row while the others are measured."""
    from enc2triton.quantize import quantize

    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    quantize.run(art, tmp_path / "q", ("fp16", "fp8"), measure_latency=False, progress=False)
    fp16 = io.resolve(io.load_manifest(art)["variants"]["fp16"]["onnx"]["path"], art)
    fp16.write_bytes(b"not an onnx file")
    io.update_manifest("variants", {**io.load_manifest(art)["variants"]["fp16"], "onnx": io.artifact_entry(fp16, art)}, art, key="fp16")
    res = bench.run(art, tmp_path / "logs", "cpu", batches=(1,), seq=16, warmup=0, budget=0.0, min_iters=1)
    assert any(s.startswith("onnx_fp8: skipped: not served, so not benchmarked") for s in res["skipped"])
    assert any(s.startswith("onnx_fp16: FAILED to load: ") for s in res["skipped"])
    assert set(res["engines"]) == {"onnx_fp32"}


def test_machine_line_names_family_and_instruction_sets():
    hw = {"cpu": "AMD EPYC", "cpu_family": "family 23 model 1", "cpu_isa": ["avx2", "fma"], "cores": 2, "gpus": []}
    assert host.describe(hw) == "AMD EPYC (family 23 model 1; avx2 fma), 2 cores"
    assert host.describe({"cpu": "Xeon", "cores": 4, "gpus": [{"name": "H200"}]}) == "Xeon, 4 cores, H200"  # older logs


def test_gpu_kernels_are_grouped_by_what_they_do():
    """Kernel names of the H100 profiles (results/h100/2026-12-07c/): cuBLASLt's, our 8-bit GEMM (the fused FFN's too),
    inductor's and cuDNN's."""
    from enc2triton.measure import profiling

    assert profiling.group_of("nvjet_sm90_qqtst_128x128_128x6_1x1_h_bz_coopA_algo2_ovscale_bias_TNT") == "GEMM"
    assert profiling.group_of("_qmm_kernel") == "GEMM"
    assert profiling.group_of("triton_per_fused__to_copy_add_clamp_native_layer_norm_4").startswith("LayerNorm")
    assert profiling.group_of("triton_poi_fused__scaled_mm__to_copy_clamp_gelu_5").startswith("fused pointwise")
    assert profiling.group_of("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16") == "attention"


def test_peers_are_picked_strongest_first_by_name_or_mode():
    """--peers alone measures every peer, the CUDA-graph one first (a run cut short keeps the ratio's peer); a list picks
    some by name or mode; an unknown one is an error before anything is measured."""
    from enc2triton.measure.peers import PEERS

    assert bench._pick_peers(bench._peers_arg("all")) == list(PEERS)
    assert list(PEERS)[0] == "peer_torch_compile_cudagraphs_fp16"
    assert bench._pick_peers(bench._peers_arg(None)) == []
    assert bench._pick_peers(bench._peers_arg("eager,reduce-overhead")) == [
        "peer_torch_compile_cudagraphs_fp16", "peer_torch_eager_fp16"]
    assert bench._pick_peers(("peer_torch_compile_fp16",)) == ["peer_torch_compile_fp16"]
    with pytest.raises(io.StageError, match="unknown peer"):
        bench._pick_peers(("fastest",))
