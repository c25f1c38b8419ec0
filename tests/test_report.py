"""REPORT.md from real logs (captured into tests/fixtures/logs), determinism, and missing/incomplete logs."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from enc2triton import io, report

FIX = Path(__file__).parent / "fixtures" / "logs"


@pytest.fixture
def logs(tmp_path) -> Path:
    # a copy: the report writes its PNGs into the logs folder
    return Path(shutil.copytree(FIX, tmp_path / "logs"))


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.png"))}


def test_report_from_real_logs(logs, tmp_path):
    out = tmp_path / "REPORT.md"
    text = report.render(logs, out)
    assert out.read_text() == text
    perf, bench = io.read_json(logs / "perf_summary.json"), io.read_json(logs / "bench_engine.json")
    model = io.read_json(logs / "model.json")
    assert model["fallback"] and "FALLBACK MODEL USED" in text and model["used"] in text.splitlines()[0]
    assert f"Triton server: {perf['server']['version']}" in text
    assert f"ONNX Runtime: {bench['onnxruntime']}" in text and "TensorRT: not available" in text
    assert "GFLOP per sequence" in text and "| H100 SXM | fp16 |" in text
    assert "| onnx_fp32 | pytorch_fp32 |" in text  # quality table, from quality.json
    assert "_not run yet: make variants_" in text  # no quantize.json among the fixtures
    for name in perf["models"]:
        assert f"### {name}" in text
    assert "onnx_fp32 queue/compute ms" in text  # the ensemble's per-composing-model breakdown
    assert "| onnx_fp32 | 8 |" in text  # engine table
    for png in report.PLOTS.values():
        assert (logs / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({Path('logs') / png})" in text


def test_target_ratio_matches_the_logs(logs, tmp_path):
    text = report.render(logs, tmp_path / "REPORT.md")
    perf, bench = io.read_json(logs / "perf_summary.json"), io.read_json(logs / "bench_engine.json")
    best = perf["models"]["ensemble_onnx_fp32"]["best"]
    rows = bench["engines"]["onnx_fp32"]["rows"]
    eff = best["concurrency"] * perf["batch_size"]
    nb = min((r["batch"] for r in rows), key=lambda b: (abs(b - eff), b))
    ratio = best["throughput"] / next(r["seq_per_s"] for r in rows if r["batch"] == nb)
    verdict = "PASS" if ratio >= report.TARGET else "FAIL"
    assert f"**ensemble_onnx_fp32: {100 * ratio:.1f}% of the raw onnx_fp32 engine ({verdict} against the 70% target)**" in text
    assert f"engine measured at batch {nb}" in text
    assert "Not like for like" in text and "Like for like, the raw models through Triton" in text


def test_deterministic(logs, tmp_path):
    a, b = tmp_path / "a" / "REPORT.md", tmp_path / "a" / "REPORT2.md"
    a.parent.mkdir()
    report.render(logs, a)
    first = _digest(logs)
    report.render(logs, b)
    assert a.read_bytes() == b.read_bytes()
    assert _digest(logs) == first and len(first) == 3


def test_missing_logs(tmp_path):
    empty = tmp_path / "logs"
    empty.mkdir()
    text = report.render(empty, tmp_path / "REPORT.md")
    for target in ("export", "quality", "variants", "perf", "bench"):
        assert f"not run yet: make {target}" in text
    assert not list(empty.glob("*.png"))
    assert report.main(["--logs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "R.md")]) == 1


def test_partial_and_incomplete_logs(logs, tmp_path):
    (logs / "bench_engine.json").unlink()
    (logs / "quality.json").unlink()
    perf = io.read_json(logs / "perf_summary.json")
    perf["status"], perf["errors"] = "incomplete", ["onnx_fp32: failed at concurrency 32: perf_analyzer killed by signal 9"]
    io.write_json(logs / "perf_summary.json", perf)
    text = report.render(logs, tmp_path / "REPORT.md")
    assert "**INCOMPLETE**: onnx_fp32: failed at concurrency 32: perf_analyzer killed by signal 9" in text
    assert "_not run yet: make bench_" in text and "_not run yet: make quality_" in text
    assert "Triton server: 2.51.0" in text  # environment still from perf_summary.json
    assert not (logs / report.PLOTS["bench"]).exists()


def test_quality_keys_rendered_as_present(logs, tmp_path):
    # a client that writes flat per-variant metrics (no reference sub-dicts) still gets a table
    io.write_json(logs / "quality.json", {"variants": {"int8": {"mean_cos": 0.991, "min_cos": 0.975, "top10": 0.9,
                                                                  "floor": {"mean_cos": 0.99, "min_cos": 0.97}, "pass": True}}})
    text = report.render(logs, tmp_path / "REPORT.md")
    assert "| variant | vs | mean_cos | min_cos | top10 | floor | pass |" in text
    assert "| int8 | reference | 0.991000 | 0.975000 | 0.900000 | mean_cos 0.99 / min_cos 0.97 | pass |" in text


def test_gpu_bench_shows_the_roofline_fraction(logs, tmp_path):
    # a real bench_engine.json from the H100 (tiny BERT, CUDA EP with IO binding)
    shutil.copy(FIX.parent / "bench_engine_gpu.json", logs / "bench_engine.json")
    text = report.render(logs, tmp_path / "REPORT.md")
    b = io.read_json(logs / "bench_engine.json")
    r = b["engines"]["onnx_fp32"]["rows"][-1]
    assert "compute roof of H100 SXM" in text and "| of roof |" in text
    assert f"{100 * r['roof_fraction']:.2f}% of fp32" in text
    # perf ran on the CPU box, this bench on the H100: the report says so
    assert "- engine benchmark ran elsewhere: Intel(R) Xeon(R) Processor, 16 cores; GPU NVIDIA H100 80GB HBM3 (driver 580.159.04" in text


def test_soak_and_overload_are_reported(logs, tmp_path):
    soak, over = io.read_json(logs / "soak.json"), io.read_json(logs / "overload.json")
    text = report.render(logs, tmp_path / "REPORT.md")
    assert f"**Soak PASS** ({soak['started']}): ensemble_onnx_fp32 at concurrency 64 for 600 s" in text
    assert f"| {soak['total']['requests']:,} | 0 |" in text and "peaks are reported, not judged" in text
    assert f"{over['flood']['rejected']:,} of {over['flood']['requests']:,} requests rejected" in text
    (logs / "soak.json").write_text("{ cut short")  # an interrupted writer's leftover is named, not skipped
    assert "soak.json is not valid JSON" in report.render(logs, tmp_path / "R1.md")
    (logs / "soak.json").unlink(), (logs / "overload.json").unlink()
    assert "_not run yet_: `python -m enc2triton.soak --minutes 10`" in report.render(logs, tmp_path / "R2.md")


def test_kept_models_and_window_rule_are_stated(logs, tmp_path):
    perf = io.read_json(logs / "perf_summary.json")
    first, *rest = list(perf["models"])
    perf["kept_from_earlier_runs"] = {n: "2026-01-02 03:04:05" for n in rest}
    perf["settings"]["window_per_concurrency"] = 10
    perf["settings"]["max_cycle"] = 1024
    io.write_json(logs / "perf_summary.json", perf)
    text = report.render(logs, tmp_path / "REPORT.md")
    assert f"({first}); kept from earlier runs of the same repository and inputs: {rest[0]} (2026-01-02 03:04:05)" in text
    assert (f"count windows of max({perf['settings']['window_requests']}, 10 x concurrency) requests (for text inputs "
            f"rounded up to whole passes over the {perf['inputs']['n_texts']} texts)") in text
