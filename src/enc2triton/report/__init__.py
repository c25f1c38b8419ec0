"""REPORT.md from a logs folder alone, PNG plots beside the logs.

It opens with one summary table: every registered variant x quality vs FP32, this run's speed and the published GPU
run's speed, each cell linked to the section behind it. Then one section per log: model, environment, FLOPs and
roofline, quality through Triton, the ONNX precision variants (the INT8 and FP8 graphs in words), the quantization peer
(NVIDIA ModelOpt, when logs/quant_peers.json or logs/quant_peers_torch.json exists), the PyTorch engines,
serving performance, the engine benchmark (peers, MFU, where the GPU time goes), the published GPU benchmark, served vs
engine throughput, and load/overload.

Every section names the log and the run behind it (date, machine), says when that log is older than this run's export
(model.json `exported_at`) and why a log is incomplete. Paths from the logs are printed relative to the repository root
(or as their last two parts), never absolute.

Deterministic: the same logs give the same bytes (no clock reads; PNGs carry no date or software tag).
A missing log gives a section that says which make target produces it.

Layout: common.py (titles, formats, the logs context), plots.py, then one module per group of sections in the report's
order (summary.py: summary, model, environment, FLOPs; variants.py: quality, ONNX variants, PyTorch engines;
serving.py: serving performance, where the time goes, precisions, peers, tune; bench.py: engine benchmark, fusion
A/B, published benchmark, served vs engine; reliability.py: load and overload), and report.py: render() and main(). A new section:
a function `xxx_section(ctx) -> list[str]` in the module of its neighbours, listed in report.render().
This package re-exports what callers use (render, main, the section titles, fmt, ...).
"""
from __future__ import annotations

from enc2triton.report.common import (  # noqa: F401
    Ctx, FP8_METHOD, LOG_FILES, NO_FINISH, P99_BUDGET_MS, PLOTS, PUBLISHED, RAW_TARGET, SERVED_FP8_TARGET, S_BENCH,
    S_ENV, S_FLOPS, S_FP8, S_FUSION, S_INT8, S_LOAD, S_MODEL, S_MPS, S_PEER, S_PERF, S_PRECISION, S_PUBLISHED, S_QPEER, S_QUALITY,
    S_SUMMARY, S_TARGET, S_TORCH, S_TUNE, S_VARIANTS, S_WHERE, TARGET, _slug, fmt, missing, provenance, table,
)
from enc2triton.report.plots import _thousands, plot_bench, plot_perf  # noqa: F401
from enc2triton.report.serving import UNSTABLE_MARK, UNSTABLE_NOTE, _within  # noqa: F401
from enc2triton.report.report import LONG_LINE, WRAP, main, render, wrap_prose  # noqa: F401
