"""REPORT.md from real logs (captured into tests/fixtures), determinism, and missing/incomplete logs.

Fixture folders (tests/fixtures/README.md): logs/ (an early CPU run: onnx_fp32 only), cpu_logs/ (the full CPU run of
every ONNX variant), gpu_logs/ (the H200 run with DistilBERT-base shapes: our engines and the peers, kernel profiles,
PyTorch engines), gpu_minilm_logs/ (all-MiniLM-L6-v2 on the H200: quality through Triton, two PyTorch engines that
failed their check)."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from enc2triton import report
from enc2triton.report import plots as report_plots
from enc2triton.core import io, spec

FIXTURES = Path(__file__).parent / "fixtures"
FIX = FIXTURES / "logs"
GPU_BENCH = FIXTURES / "gpu_logs" / "bench_engine.json"
ABSOLUTE = re.compile(r"(?<![\w.])/(work|tmp|home|usr|root|opt|var)/")


@pytest.fixture(autouse=True)
def _no_plots(request, monkeypatch):
    """PNGs take most of a render's time: only the tests that ask for `plots` draw them."""
    if "plots" not in request.fixturenames:
        monkeypatch.setattr(report_plots, "_plt", lambda: None)


@pytest.fixture
def plots() -> bool:
    return True


def _copy(tmp_path: Path, name: str) -> Path:
    # a copy: the report writes its PNGs into the logs folder
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


@pytest.fixture
def logs(tmp_path) -> Path:
    return _copy(tmp_path, "logs")


@pytest.fixture
def cpu_logs(tmp_path) -> Path:
    return _copy(tmp_path, "cpu_logs")


@pytest.fixture
def gpu_logs(tmp_path) -> Path:
    return _copy(tmp_path, "gpu_logs")


def _render(folder: Path, tmp_path: Path, published: Path | None = None, name: str = "REPORT.md") -> str:
    return report.render(folder, tmp_path / name, published=published)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.png"))}


def _section(text: str, title: str) -> str:
    """The body of the '## title' section (up to the next '## ')."""
    start = text.index(f"## {title}\n")
    nxt = text.find("\n## ", start + 3)
    return text[start:nxt if nxt >= 0 else len(text)]


def _summary_row(text: str, variant: str) -> str:
    return next(ln for ln in _section(text, report.S_SUMMARY).splitlines() if ln.startswith(f"| {variant}"))


# ------------------------------------------------------------------------------------ the early CPU run
def test_report_from_real_logs(logs, tmp_path, plots):
    out = tmp_path / "REPORT.md"
    text = report.render(logs, out, published=None)
    assert out.read_text() == text
    perf, bench = io.read_json(logs / "perf_summary.json"), io.read_json(logs / "bench_engine.json")
    model = io.read_json(logs / "model.json")
    assert model["fallback"] and "FALLBACK MODEL USED" in text and model["used"] in text.splitlines()[0]
    assert f"Triton server: {perf['server']['version']}" in text
    assert f"ONNX Runtime: {bench['onnxruntime']}" in text and "TensorRT: not available" in text
    assert "GFLOP per sequence" in text and "| H100 SXM | fp16 |" in text
    assert "| onnx_fp32 | pytorch_fp32 |" in text  # quality table, from quality.json
    assert "_not run yet: make variants_" in text  # no quantize.json among these fixtures
    for name in perf["models"]:
        assert f"### {name}" in text
    assert "onnx_fp32 queue/compute ms" in text  # the ensemble's per-composing-model breakdown
    assert "| onnx_fp32 | 8 |" in text  # engine table
    for png in report.PLOTS.values():
        assert (logs / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({Path('logs') / png})" in text
    assert text.index("## Summary") < text.index("## Model")  # the summary comes first
    # no published run asked for: no published columns or section; the PyTorch family is GPU only on this machine
    assert "(published)" not in text and f"## {report.S_PUBLISHED}" not in text
    assert "| torch_fp16, torch_fp8, torch_int8 | GPU only |" in text


def test_target_leads_with_the_like_for_like_ratio(logs, tmp_path):
    text = _render(logs, tmp_path)
    perf, bench = io.read_json(logs / "perf_summary.json"), io.read_json(logs / "bench_engine.json")
    rows = bench["engines"]["onnx_fp32"]["rows"]

    def ratio(model):
        best = perf["models"][model]["best"]
        eff = best["concurrency"] * perf["batch_size"]
        nb = min((r["batch"] for r in rows), key=lambda b: (abs(b - eff), b))
        return best["throughput"] / next(r["seq_per_s"] for r in rows if r["batch"] == nb), nb

    raw, nb = ratio("onnx_fp32")
    verdict = "PASS" if raw >= report.RAW_TARGET else "FAIL"
    head = f"**Like for like: onnx_fp32 served through Triton reaches {100 * raw:.1f}% of the raw onnx_fp32 engine ({verdict} against the 80% target)**"
    assert head in text and f"engine at batch {nb}" in text and "(the same sequence length)" in text
    ens, _ = ratio("ensemble_onnx_fp32")
    later = f"Served ensembles vs the same engines (not like for like): ensemble_onnx_fp32 reaches {100 * ens:.1f}%"
    assert later in text and text.index(head) < text.index(later)
    assert "median 22.0 tokens" in _section(text, report.S_TARGET)


def test_missing_logs(tmp_path):
    empty = tmp_path / "logs"
    empty.mkdir()
    text = _render(empty, tmp_path)
    for target in ("export", "quality", "variants", "perf", "bench"):
        assert f"not run yet: make {target}" in text
    assert "None" not in text
    assert not list(empty.glob("*.png"))
    assert report.main(["--logs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "R.md")]) == 1


def test_partial_and_incomplete_logs(logs, tmp_path):
    (logs / "bench_engine.json").unlink()
    (logs / "quality.json").unlink()
    perf = io.read_json(logs / "perf_summary.json")
    perf["status"], perf["errors"] = "incomplete", ["onnx_fp32: failed at concurrency 32: perf_analyzer killed by signal 9"]
    io.write_json(logs / "perf_summary.json", perf)
    text = _render(logs, tmp_path)
    assert "**INCOMPLETE**: onnx_fp32: failed at concurrency 32: perf_analyzer killed by signal 9" in text
    assert "_not run yet: make bench_" in text and "_not run yet: make quality_" in text
    assert "Triton server: 2.51.0" in text  # environment still from perf_summary.json
    assert not (logs / report.PLOTS["bench"]).exists()


def test_interrupted_logs_say_why_and_never_none(logs, tmp_path):
    perf = io.read_json(logs / "perf_summary.json")
    perf["status"], perf["errors"] = "incomplete", []
    del perf["finished"]
    io.write_json(logs / "perf_summary.json", perf)
    bench = io.read_json(logs / "bench_engine.json")
    del bench["finished"]
    io.write_json(logs / "bench_engine.json", bench)
    quality = io.read_json(logs / "quality.json")
    quality["status"], quality["error"] = "incomplete", "server gone after onnx_fp32"
    io.write_json(logs / "quality.json", quality)
    text = _render(logs, tmp_path)
    assert "None" not in text
    for title in (report.S_PERF, report.S_BENCH):
        body = _section(text, title)
        assert f"**INCOMPLETE**: {report.NO_FINISH}" in body
        assert f"started {perf['started'][:16] if title == report.S_PERF else bench['started'][:16]}, {report.NO_FINISH}" in body
    assert "**INCOMPLETE**: server gone after onnx_fp32" in _section(text, report.S_QUALITY)


def test_quality_keys_rendered_as_present(logs, tmp_path):
    # a client that writes flat per-variant metrics (no reference sub-dicts) still gets a table
    io.write_json(logs / "quality.json", {"variants": {"int8": {"mean_cos": 0.991, "min_cos": 0.975, "top10": 0.9,
                                                                  "floor": {"mean_cos": 0.99, "min_cos": 0.97}, "pass": True}}})
    text = _render(logs, tmp_path)
    assert "| variant | vs | mean_cos | min_cos | top10 | floor | pass |" in text
    assert "| int8 | reference | 0.991000 | 0.975000 | 0.900000 | mean_cos 0.99 / min_cos 0.97 | pass |" in text


def test_gpu_bench_shows_the_roofline_fraction(logs, tmp_path):
    # a real bench_engine.json from the H100 (tiny BERT, CUDA EP with IO binding)
    shutil.copy(FIXTURES / "bench_engine_gpu.json", logs / "bench_engine.json")
    text = _render(logs, tmp_path)
    b = io.read_json(logs / "bench_engine.json")
    r = b["engines"]["onnx_fp32"]["rows"][-1]
    assert "compute roof of H100 SXM" in text and "| of roof |" in text
    assert f"{100 * r['roof_fraction']:.2f}% of fp32" in text
    # perf ran on the CPU box, this bench on the H100: the report says so
    assert "- engine benchmark ran elsewhere: Intel(R) Xeon(R) Processor, 16 cores; GPU NVIDIA H100 80GB HBM3 (driver 580.159.04" in text


def test_soak_and_overload_are_reported(logs, tmp_path):
    soak, over = io.read_json(logs / "soak.json"), io.read_json(logs / "overload.json")
    text = _render(logs, tmp_path)
    assert f"**Soak PASS** ({soak['started']}): ensemble_onnx_fp32 at concurrency 64 for 600 s" in text
    assert f"| {soak['total']['requests']:,} | 0 |" in text and "peaks are reported, not judged" in text
    assert f"{over['flood']['rejected']:,} of {over['flood']['requests']:,} requests rejected" in text
    assert f"_From logs/soak.json: {soak['started'][:16]}, on 2 CPUs shared by client and server._" in text
    (logs / "soak.json").write_text("{ cut short")  # an interrupted writer's leftover is named, not skipped
    assert "soak.json is not valid JSON" in _render(logs, tmp_path, name="R1.md")
    (logs / "soak.json").unlink(), (logs / "overload.json").unlink()
    assert "_not run yet_: `python -m enc2triton.soak --minutes 10`" in _render(logs, tmp_path, name="R2.md")


def test_kept_models_and_window_rule_are_stated(logs, tmp_path):
    perf = io.read_json(logs / "perf_summary.json")
    first, *rest = list(perf["models"])
    perf["kept_from_earlier_runs"] = {n: "2026-01-02 03:04:05" for n in rest}
    perf["settings"]["window_per_concurrency"] = 10
    perf["settings"]["max_cycle"] = 1024
    io.write_json(logs / "perf_summary.json", perf)
    text = " ".join(_render(logs, tmp_path).split())  # prose is wrapped: compare words
    assert f"Measured in this run: {first}; kept from earlier runs of the same repository and inputs: {rest[0]} (2026-01-02 03:04:05)" in text
    assert (f"count windows of max({perf['settings']['window_requests']}, 10 x concurrency) requests (for text inputs "
            f"rounded up to whole passes over the {perf['inputs']['n_texts']} texts)") in text


# ------------------------------------------------------------------------------------ the full CPU run
def test_summary_lists_every_variant_with_linked_cells(cpu_logs, tmp_path):
    text = _render(cpu_logs, tmp_path, published=GPU_BENCH)
    summary = _section(text, report.S_SUMMARY)
    for v in spec.VARIANTS:
        assert re.search(rf"^\| [^|]*\b{v.name}\b", summary, re.M), v.name
    # every link in the report lands on a heading
    anchors = {report._slug(ln.lstrip("#")) for ln in text.splitlines() if ln.startswith("#")}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links and links <= anchors, links - anchors
    quality, perf = io.read_json(cpu_logs / "quality.json"), io.read_json(cpu_logs / "perf_summary.json")
    for name, q in quality["variants"].items():  # served: quality through Triton, speed from perf, both linked
        row = _summary_row(text, name)
        m = q["pytorch_fp32"]
        assert f"[{m['mean_cos']:.6f} / {m['min_cos']:.6f}](#{report._slug(report.S_QUALITY)})" in row
        assert f"[{m['top10']:.3f}](#{report._slug(report.S_QUALITY)})" in row and "| Triton |" in row
        assert f"[{report.fmt(perf['models']['ensemble_' + name]['best']['throughput'])}](#ensemble_{name})" in row
        assert "](#engine-benchmark)" in row
    # onnx_fp8: quality from quantize.json (its build), below its floor, not served
    fp8 = io.read_json(cpu_logs / "quantize.json")["variants_table"]["fp8"]
    row = _summary_row(text, "onnx_fp8")
    assert f"[{fp8['mean_cos']:.6f} / {fp8['min_cos']:.6f}](#fp8-onnx-graph)" in row and "[FAIL](#fp8-onnx-graph)" in row
    assert "| build |" in row and "[not served](#fp8-onnx-graph)" in row
    # no TensorRT here: one short cell for the whole family; the PyTorch family only in the published columns
    assert "| trt_fp32, trt_fp16, trt_int8, trt_best, trt_fp8 | not built: TensorRT not found |" in summary
    pub = io.read_json(GPU_BENCH)["engines"]["torch_fp8"]["rows"]
    row = _summary_row(text, "torch_fp8")
    assert "| GPU only |" in row and f"[{report.fmt(pub[-1]['seq_per_s'])}](#published-gpu-benchmark)" in row
    assert f"[{report.fmt(pub[0]['mean_ms'])}](#published-gpu-benchmark)" in row
    assert "H200 seq/s, batch 256 (published)" in summary and "H200 ms, batch 1 (published)" in summary
    assert "distilbert-base-uncased shapes (6 layers, hidden 768, random weights)" in summary
    assert "a published run on Intel(R) Xeon(R) Processor, 32 cores, 2 x NVIDIA H200" in summary


def test_int8_and_fp8_sections_are_written_for_people(cpu_logs, tmp_path):
    text = _render(cpu_logs, tmp_path)
    qz = io.read_json(cpu_logs / "quantize.json")
    int8 = text[text.index(f"### {report.S_INT8}"):text.index(f"### {report.S_FP8}")]
    assert "variants_table" not in text and "int8_search" not in text and '["/model' not in text and "{\"" not in int8
    assert "| tensor role | ONNX input (layer.# = every layer) | tensors | range method |" in int8
    assert "| FFN down-projection: input (after GELU) | `layer.#/output/dense/MatMul:0` | 6 | mse |" in int8
    assert f"**SmoothQuant alpha**: {qz['int8']['smoothquant']['alpha']}, on 24 MatMul input tensors" in int8
    assert "**Calibration data**: data/calibration.txt: 504 texts, 15,672 tokens" in int8
    assert "**Kept in FP32**: 4 of 48 MatMuls: layer 0: FFN down-projection (`layer.0/output/dense/MatMul`)" in int8
    assert "(target >= 0.993)" in int8 and "meets the target" in int8
    assert "**Search cost**: 102 held-out evaluations in 78.6 s" in int8
    assert "stays in logs/quantize.json" in int8
    fp8 = _section(text, report.S_VARIANTS)[_section(text, report.S_VARIANTS).index(f"### {report.S_FP8}"):]
    assert "**Method**: FP8 E4M3" in fp8 and "**Calibration**: the INT8 calibration texts (data/calibration.txt, 504 texts)" in fp8
    assert "0.997547 / 0.995715" in fp8 and ": FAIL (" in fp8 and "**Not served**" in fp8 and "TensorRT's fp8 source" in fp8


def test_int8_top10_target_is_shown_and_judged(cpu_logs, tmp_path):
    """A search with a top-10 target (METHOD_VERSION 8) says it and judges the held-out slice on it too; the fixture's
    log (before it) still renders, judged on the cosines it had (test above)."""
    qz = io.read_json(cpu_logs / "quantize.json")
    i8 = qz["int8"]
    i8["target_held_out"] = {**i8["target_held_out"], "top10": 0.98}
    i8["held_out_quality"] = {**i8["held_out_quality"], "top10": 0.975}
    i8["held_out_quality_ort"] = {**i8["held_out_quality_ort"], "top10": 0.9766}
    io.write_json(cpu_logs / "quantize.json", qz)
    int8 = (t := _render(cpu_logs, tmp_path))[t.index(f"### {report.S_INT8}"):t.index(f"### {report.S_FP8}")]
    assert ", top-10 0.975 (target >= 0.98): BELOW the target" in int8 and ", top-10 0.977." in int8
    i8["held_out_quality"]["top10"] = 0.9828
    io.write_json(cpu_logs / "quantize.json", qz)
    int8 = (t := _render(cpu_logs, tmp_path))[t.index(f"### {report.S_INT8}"):t.index(f"### {report.S_FP8}")]
    assert ", top-10 0.983 (target >= 0.98): meets the target" in int8


def test_torch_floor_shows_its_top10_where_logged(gpu_logs, tmp_path):
    tb = io.read_json(gpu_logs / "torch_build.json")
    tb["built"]["fp8"]["quality"]["floor"] = spec.FLOORS["fp8"]
    io.write_json(gpu_logs / "torch_build.json", tb)
    torch = _section(_render(gpu_logs, tmp_path), report.S_TORCH)
    assert "| torch_fp8 | 0.999033 / 0.998732 | 0.970 | 0.999 / 0.995 / 0.97 | pass |" in torch
    assert "| torch_fp16 | " in torch and " | 0.9999 / 0.999 | pass |" in torch  # logged without one: as it was


def test_no_absolute_paths(cpu_logs, gpu_logs, tmp_path):
    for folder, pub in ((cpu_logs, GPU_BENCH), (gpu_logs, GPU_BENCH), (FIXTURES / "gpu_minilm_logs", GPU_BENCH), (FIX, None)):
        src = folder if folder.is_relative_to(tmp_path) else _copy(tmp_path, folder.name)
        text = _render(src, tmp_path, published=pub, name=f"{folder.name}.md")
        assert not ABSOLUTE.search(text), ABSOLUTE.search(text)
        assert "/work/" not in text and "/tmp/" not in text
    assert "data/evaluation.txt" in text


def test_provenance_per_section_and_older_than_this_run(cpu_logs, tmp_path):
    model = io.read_json(cpu_logs / "model.json")
    model["exported_at"] = "2026-11-29 12:00:00"  # after quality (11:19) and bench (11:31), before soak and perf
    io.write_json(cpu_logs / "model.json", model)
    text = _render(cpu_logs, tmp_path, published=GPU_BENCH)
    for title in (report.S_MODEL, report.S_ENV, report.S_FLOPS, report.S_QUALITY, report.S_VARIANTS, report.S_PERF,
                  report.S_BENCH, report.S_PUBLISHED, report.S_TARGET, report.S_LOAD):
        assert "\n_From " in _section(text, title), title
    assert "_From logs/model.json: exported 2026-11-29 12:00._" in text
    assert "**From an earlier run** (2026-11-29 11:19, before this run's export of 2026-11-29 12:00)" in _section(text, report.S_QUALITY)
    assert "**From an earlier run** (2026-11-29 11:31, before this run's export of 2026-11-29 12:00)" in _section(text, report.S_BENCH)
    assert "_From logs/perf_summary.json (Triton + perf_analyzer): 2026-11-29 12:38 to 12:53, on AMD EPYC, 2 cores, no GPU._\n" in text
    for title in (report.S_PERF, report.S_LOAD, report.S_PUBLISHED):
        assert "earlier run" not in _section(text, title)
    assert ("Older than this run's export (2026-11-29 12:00): logs/quality.json (2026-11-29 11:19), "
            "logs/bench_engine.json (2026-11-29 11:31)") in _section(text, report.S_SUMMARY)
    assert "_From logs/quantize.json: date not recorded, on AMD EPYC, 2 cores._" in text  # the host from quantize.json's note


def test_deterministic(cpu_logs, tmp_path, plots):
    a, b = tmp_path / "a" / "REPORT.md", tmp_path / "a" / "REPORT2.md"
    a.parent.mkdir()
    report.render(cpu_logs, a, published=GPU_BENCH)
    first = _digest(cpu_logs)
    report.render(cpu_logs, b, published=GPU_BENCH)
    assert a.read_bytes() == b.read_bytes()
    assert _digest(cpu_logs) == first and len(first) == 3


# ------------------------------------------------------------------------------------ the H200 runs
def test_gpu_report_shows_peers_mfu_and_kernels(gpu_logs, tmp_path, plots):
    bench = io.read_json(gpu_logs / "bench_engine.json")
    text = _render(gpu_logs, tmp_path, published=GPU_BENCH)
    assert f"## {report.S_PUBLISHED}" not in text  # the published run is this run's own benchmark: quoted once
    body = _section(text, report.S_BENCH)
    assert "| engine | ours / peer | precision | seq/s, batch 1 | seq/s, batch 8 | seq/s, batch 64 | seq/s, batch 256 | ms per call, batch 1 | MFU (FP16 roof), batch 256 |" in body
    for n, e in bench["engines"].items():
        mfu = next(r for r in e["rows"] if r["batch"] == 256)["mfu_fp16"]
        assert re.search(rf"^\| {re.escape(n)} \| {'peer' if e['peer'] else 'ours'} \| .*\| {100 * mfu:.1f}% \|", body, re.M), n
    assert "- peer_torch_eager_fp16 (peer): PyTorch eager FP16, SDPA attention (Hugging Face model)" in body
    kern = body[body.index("### Where the GPU time goes (batch 256)"):]
    assert ("| kernel group | our fastest FP16: torch_fp16 ms (share) | our fastest FP8: torch_fp8 ms (share) | "
            "fastest FP16 peer: peer_torch_compile_fp16 ms (share) |") in kern
    g = bench["engines"]["torch_fp8"]["profile"]["groups"]["GEMM"]
    assert f"| GEMM | 4.09 (63%) | {report.fmt(g['ms_per_run'])} ({100 * g['share']:.0f}%) |" in kern
    assert "`nvjet_sm90_qqtst_128x128_128x6_1x1_h_bz_coopA_algo2_ovscale_bias_TNT`" in kern
    assert "GPU util" not in body  # no utilisation in these rows
    torch = _section(text, report.S_TORCH)
    assert "| torch_fp8 | 0.999033 / 0.998732 | 0.970 | 0.999 / 0.995 | pass | 11.0 | 0.490 | 90.5 |" in torch
    assert "_From logs/torch_build.json: 2026-11-30 03:07 to 03:08, on Intel(R) Xeon(R) Processor, 32 cores, 2 x NVIDIA H200._" in torch
    assert "every model ready 41.1 s after launch" in _section(text, report.S_PERF)
    assert "No raw model was measured through Triton in this run" in _section(text, report.S_TARGET)
    assert "| onnx_fp16 | - | - | - | - | [7,316](#ensemble_onnx_fp16) | [34,289 (batch 256)](#engine-benchmark) |" in text
    png = gpu_logs / report.PLOTS["bench"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profiles_at_several_batches_each_get_a_table(gpu_logs, tmp_path):
    """bench --profile-batches 8,256: one table per profiled batch, the largest first, each engine's pick by its speed
    at that batch; an engine without a profile at a batch is left out of that table only."""
    bench = io.read_json(gpu_logs / "bench_engine.json")
    for n, e in bench["engines"].items():
        big = e.pop("profile")
        small = {**big, "batch": 8, "kernel_ms_per_run": 0.5}
        e["profiles"] = [big] + ([small] if n != "torch_fp8" else [])
    io.write_json(gpu_logs / "bench_engine.json", bench)
    body = _section(_render(gpu_logs, tmp_path), report.S_BENCH)
    big, small = body.index("### Where the GPU time goes (batch 256)"), body.index("### Where the GPU time goes (batch 8)")
    assert big < small
    assert "our fastest FP8: torch_fp8" in body[big:small] and "our fastest FP8" not in body[small:]
    assert "| **all kernels** | **0.500** |" in body[small:]


def test_gpu_utilisation_is_shown_when_recorded(gpu_logs, tmp_path):
    bench = io.read_json(gpu_logs / "bench_engine.json")
    for e in bench["engines"].values():  # what bench.py records per point where nvidia-smi answers
        for r in e["rows"]:
            r["gpu"] = {"gpus": 1, "samples": 12, "util_mean": [93.5], "util_max": [100], "mem_max_mib": [4096]}
    io.write_json(gpu_logs / "bench_engine.json", bench)
    perf = io.read_json(gpu_logs / "perf_summary.json")
    perf["models"]["ensemble_torch_fp16"]["rows"][0]["gpu"] = {"gpus": 1, "util_mean": [41.0], "util_max": [77]}
    io.write_json(gpu_logs / "perf_summary.json", perf)
    text = _render(gpu_logs, tmp_path)
    assert "GPU util %, batch 256" in text and "93.5 (max 100)" in _section(text, report.S_BENCH)
    assert "| GPU util % mean (max) |" in text and "41.0 (max 77)" in text


def test_gpu_minilm_failures_and_quality_through_triton(tmp_path):
    folder = _copy(tmp_path, "gpu_minilm_logs")
    text = _render(folder, tmp_path, published=GPU_BENCH)
    tb = io.read_json(folder / "torch_build.json")
    assert "[build FAILED its check](#pytorch-engines)" in _summary_row(text, "torch_fp8")
    for p, why in tb["failed"].items():
        assert f"- torch_{p}: **build FAILED**: {why}" in _section(text, report.S_TORCH)
    row = _summary_row(text, "torch_fp16")
    assert f"](#{report._slug(report.S_QUALITY)})" in row and "| Triton |" in row  # served: quality through Triton
    assert "the server had every model ready 19.1 s after launch" in _section(text, report.S_QUALITY)
    assert "[FAIL](#fp8-onnx-graph)" in _summary_row(text, "onnx_fp8")
    assert "This run: no speed measured" in text


def test_published_option(cpu_logs, tmp_path):
    out = tmp_path / "R.md"
    assert report.main(["--logs", str(cpu_logs), "--out", str(out), "--published", "none"]) == 0
    assert "(published)" not in out.read_text()
    assert report.main(["--logs", str(cpu_logs), "--out", str(out), "--published", str(GPU_BENCH)]) == 0
    assert "H200 seq/s, batch 256 (published)" in out.read_text() and "tests/fixtures/gpu_logs/bench_engine.json" in out.read_text()
    assert report.main(["--logs", str(cpu_logs), "--out", str(out), "--published", str(tmp_path / "nope.json")]) == 1


def test_axis_ticks_between_integers_keep_their_decimals():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    report._thousands(plt, ax)
    fmt = ax.yaxis.get_major_formatter()
    assert [fmt(y, 0) for y in (0, 2.5, 7.5, 20, 12500)] == ["0", "2.5", "7.5", "20", "12,500"]  # 2.5 once read "2"
    plt.close(fig)


def test_unstable_levels_are_marked_and_left_out_of_budgets(logs, tmp_path):
    """A level measured without a stable window shows with its mark and note, and never as a best-within-budget."""
    s = io.read_json(logs / "perf_summary.json")
    name, e = next(iter(s["models"].items()))
    row = e["rows"][0]
    row["unstable"] = {"windows": 6, "measured_over_requests": 384, "window_spread_pct": 21.0}
    e["unstable"], s["unstable"] = [row["concurrency"]], [f"{name} at concurrency {row['concurrency']}"]
    io.write_json(logs / "perf_summary.json", s)
    text = _render(logs, tmp_path)
    assert report.UNSTABLE_MARK in text and "unstable at concurrency" in text and "Not a clean number" in text
    assert report._within([row]) is None


def test_no_prose_line_over_600_characters(cpu_logs, tmp_path):
    """The stability paragraph alone was 1,326 characters: prose is wrapped, tables are left whole."""
    text = _render(cpu_logs, tmp_path)
    long = [ln[:80] for ln in text.splitlines() if len(ln) > report.LONG_LINE and not ln.startswith("|")]
    assert not long, long
    assert "Stability settings used:" in text


def test_quantization_peer_section_from_its_log(cpu_logs, tmp_path):
    # quant_peers.json: python -m enc2triton.quant_peers on the bundled all-MiniLM-L6-v2 (results/cpu_modelopt/)
    assert f"## {report.S_QPEER}" not in _render(cpu_logs, tmp_path)  # no log: no section, nothing about it
    d = io.read_json(FIXTURES / "quant_peers.json")
    shutil.copy(FIXTURES / "quant_peers.json", cpu_logs / "quant_peers.json")
    text = _render(cpu_logs, tmp_path)
    body = _section(text, report.S_QPEER)
    assert body.startswith(f"## {report.S_QPEER}\n\n_From logs/quant_peers.json (python -m enc2triton.quant_peers): ")
    assert f"NVIDIA ModelOpt {d['modelopt']['versions']['nvidia-modelopt']} (`modelopt.onnx.quantization.quantize`" in body
    assert "| quantizer | precision | MB | mean / min cos (ORT default) |" in body
    rows = {r["name"]: r for r in d["rows"]}
    ours, mo = rows["ours int8"], rows["ModelOpt int8_max"]
    assert f"| ours int8 | int8 | {ours['mb']} | {ours['mean_cos']:.6f} / {ours['min_cos']:.6f} | {ours['top10']:.3f} |" in body
    assert f"| ModelOpt int8_max | int8 | {mo['mb']} | {mo['mean_cos']:.6f} / {mo['min_cos']:.6f} |" in body
    assert "| ModelOpt fp8_max | fp8 |" in body and "- (no FP8 kernels)" in body
    dflt = rows["ModelOpt int8_entropy"]
    assert f"INT8, ORT default: ours {ours['mean_cos']:.6f} mean" in body
    assert f"ModelOpt's default (int8_entropy) {dflt['mean_cos']:.6f} / {dflt['min_cos']:.6f} in {dflt['mb']} MB, its best here" in body
    assert not ABSOLUTE.search(text) and "None" not in body
    (cpu_logs / "quant_peers.json").write_text("{not json")
    assert f"## {report.S_QPEER}" not in _render(cpu_logs, tmp_path)  # unreadable: left out, the rest renders


def test_precision_section_compares_each_model_with_its_highest_precision_sibling(cpu_logs, tmp_path):
    """What a lower precision buys once served: the ratio at every common concurrency, the sibling of the same kind."""
    perf = io.read_json(cpu_logs / "perf_summary.json")
    body = _section(_render(cpu_logs, tmp_path), report.S_PRECISION)
    mine = {r["concurrency"]: r["throughput"] for r in perf["models"]["ensemble_onnx_int8"]["rows"]}
    base = {r["concurrency"]: r["throughput"] for r in perf["models"]["ensemble_onnx_fp32"]["rows"]}
    c = min(set(mine) & set(base))
    row = next(ln for ln in body.splitlines() if ln.startswith("| ensemble_onnx_int8 |"))
    assert "| ensemble_onnx_fp32 |" in row and f"{c}: {mine[c] / base[c]:.2f}x" in row
    assert not any(ln.startswith("| onnx_fp32 |") or ln.startswith("| ensemble_onnx_fp32 |") for ln in body.splitlines())
    assert "target for FP8" not in body  # no FP8 model served on this CPU run


def test_peer_section_says_a_model_that_never_loaded_was_not_measured(tmp_path):
    """results/h100/2026-12-07: fused_torch_fp8 ran out of GPU memory at load. The peer table must say it was not
    measured, not that it had no level within the p99 budget."""
    logs = tmp_path / "logs"
    shutil.copytree(spec.ROOT / "results" / "h100" / "2026-12-07" / "distil" / "logs", logs)
    body = _section(_render(logs, tmp_path), report.S_PEER)
    assert "| fused_torch_fp8 | 1 text per request | not measured (failed: not ready on the server) | - |" in body
    assert "| fused_torch_fp16 | 16 texts per request | 43,105 (c=64, p99 39.7 ms) | - |" in body
    assert "| infinity 0.0.78 | 16 texts per request | none within p99 50 ms | - |" in body


def test_fusion_ab_section_from_a_published_gpu_run(tmp_path):
    """results/h100/2026-12-07b ran scripts/fusion_ab.py: its variants, each against the same precision without the
    change and against the FP16 peer; a variant that failed says so; an interrupted run is marked."""
    logs = tmp_path / "logs"
    shutil.copytree(spec.ROOT / "results" / "h100" / "2026-12-07b" / "distil" / "logs", logs)
    f = json.loads((logs / "fusion_ab.json").read_text())
    f["variants"]["int8_ffn_fused"] = {"error": "CompilationError: boom"}
    f["finished"] = "2026-12-07 13:09:00"  # the published file predates the field
    (logs / "fusion_ab.json").write_text(json.dumps(f))
    text = report.render(logs, tmp_path / "REPORT.md", published=None)
    sec = text.split(f"## {report.S_FUSION}")[1].split("\n## ")[0]
    assert "| gelu_epilogue | 6.24 | 40,998 | 1.10x | 1.17x | 1.000000 vs dynamic |" in sec
    assert "| fp8_ffn_fused | 5.23 | 48,911 | 1.13x | 1.39x | 0.999923 vs fp8_dynamic |" in sec
    assert "| peer_static | 7.28 | 35,174 |  | 1.00x |" in sec and "failed: CompilationError: boom" in sec
    assert "INCOMPLETE" not in sec and "NVIDIA H100" in sec
    f["hardware"] = "Intel Xeon, 16 cores, NVIDIA H100 80GB HBM3"  # 2026-12-07c's fusion_ab.py wrote host.describe()'s line
    (logs / "fusion_ab.json").write_text(json.dumps(f))
    sec = report.render(logs, tmp_path / "REPORT.md", published=None).split(f"## {report.S_FUSION}")[1].split("\n## ")[0]
    assert "on Intel Xeon, 16 cores, NVIDIA H100 80GB HBM3" in sec
    del f["finished"]
    (logs / "fusion_ab.json").write_text(json.dumps(f))
    assert "INCOMPLETE" in report.render(logs, tmp_path / "REPORT.md", published=None).split(f"## {report.S_FUSION}")[1].split("\n## ")[0]


def test_fusion_ab_names_the_reference_it_really_had(tmp_path):
    """results/h100/2026-12-07d ran the fused FFN with the measured kernel settings beside the old ones, without the
    unfused graphs: its log says "vs fp8_dynamic" (fusion_ab.py named the base it did not run), the report names the
    variant that was the reference, and the old settings' speed against it."""
    logs = tmp_path / "logs"
    shutil.copytree(spec.ROOT / "results" / "h100" / "2026-12-07d" / "build" / "distil" / "logs", logs)
    sec = report.render(logs, tmp_path / "REPORT.md", published=None).split(f"## {report.S_FUSION}")[1].split("\n## ")[0]
    assert "| fp8_ffn_fused | 5.04 | 50,836 |  | 1.48x | 1.000000 vs fp8_ffn_fused |" in sec
    assert "| fp8_ffn_fused@128x128x64w4s4 | 5.31 | 48,216 | 0.95x | 1.40x | 0.999942 vs fp8_ffn_fused |" in sec
    assert "| int8_ffn_fused@128x128x64w4s4 | 5.57 | 45,983 | 0.97x | 1.34x | 0.999888 vs int8_ffn_fused |" in sec
    assert "vs fp8_dynamic" not in sec


def test_engine_call_cost_from_the_two_smallest_batches():
    """Each PyTorch engine's fixed cost per call (a line through its two smallest batches' times) beside the one
    spec.CALL_TOKENS the length planner counts; peers and engines with one point are left out."""
    from enc2triton.report import bench as report_bench

    rows = lambda *pts: [{"batch": b, "mean_ms": t, "seq_per_s": b / t * 1e3} for b, t in pts]  # noqa: E731
    b = {"device": "gpu", "seq_len": 128, "engines": {
        "torch_fp8": {"precision": "fp8", "rows": rows((1, 0.330), (8, 0.440), (256, 5.13))},
        "torch_fp16": {"precision": "fp16", "rows": rows((256, 6.35))},
        "peer_torch_compile_fp16": {"precision": "fp16", "peer": True, "rows": rows((1, 1.75), (8, 2.21))}}}
    text = "\n".join(report_bench._call_cost(b))
    # 0.11 ms over 7 x 128 tokens: 0.123 us a token; 0.330 - 128 x that = 0.314 ms, 2,560 tokens
    assert f"| torch_fp8 | 1 and 8 | 0.314 | 0.123 | 2,560 | {spec.CALL_TOKENS['cuda']:,} |" in text
    assert "torch_fp16 |" not in text and "peer_" not in text
    assert report_bench._call_cost({**b, "engines": {}}) == []


def test_mps_section_sets_the_same_load_without_and_with_it_side_by_side(tmp_path):
    """gpu_h200.sh serve with MPS_AB=1 measures the 16-per-request load again on a server under CUDA MPS (mps_batch16/):
    the report puts each model's levels side by side, only against the sweep of the same load without MPS. Here the
    published H100 run's batch16/ sweep stands in for both servers (its copy marked as run under MPS, throughput x1.2)."""
    logs = tmp_path / "logs"
    shutil.copytree(spec.ROOT / "results" / "h100" / "2026-12-07e" / "serving" / "distil" / "logs", logs)
    assert report.S_MPS not in _render(logs, tmp_path)  # no sweep under MPS: no section
    on = io.read_json(logs / "batch16" / "perf_summary.json")
    on["server"]["mps"] = "on"
    for e in on["models"].values():
        for r in e["rows"]:
            r["throughput"] *= 1.2
    (logs / "mps_batch16").mkdir()
    io.write_json(logs / "mps_batch16" / "perf_summary.json", on)
    text = _render(logs, tmp_path)
    body = _section(text, report.S_MPS)
    assert "| ensemble_torch_fp16 | 16 texts per request | 64 | 36,222 (p99 58.2) | 43,467 (p99 58.2) | 1.20x | batch16/ vs mps_batch16/ |" in body
    assert body.count("| 1.20x |") == 5  # the five models of that sweep; the sentence and raw sweeps have no MPS twin
    assert "16 texts per request (mps_batch16/, CUDA MPS)" in _section(text, report.S_WHERE)


def test_where_section_counts_the_engine_calls_per_execution(tmp_path):
    """results/h100/2026-12-07e: with one text per request the ensemble's engine was handed requests of ~4 widths per
    execution and ran one planned batch per width (4.33 CUDA-graph calls per execution), the fused model, tokenizing
    all its texts at once, 2.05: the column that shows what runner._one_width changes."""
    logs = tmp_path / "logs"
    shutil.copytree(spec.ROOT / "results" / "h100" / "2026-12-07e" / "serving" / "distil" / "logs", logs)
    body = _section(_render(logs, tmp_path), report.S_WHERE)
    assert "| ensemble_torch_fp16 | 1 text per request | 256 | 78.0 | 78.0 | 4.33 | 14.0 |" in body
    assert "| fused_torch_fp16 | 1 text per request | 256 | 40.2 | 40.2 | 2.05 | 11.0 |" in body
