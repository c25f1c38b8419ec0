"""Where an engine's time goes on the GPU: torch.profiler (CUPTI) over a few runs, kernels grouped by what they do.

CUPTI sees every kernel of the process, so this works for ONNX Runtime's CUDA EP as for PyTorch. Kernels are
grouped by name patterns (GEMM, attention, fused elementwise/normalisation from the compiler, copies)."""
from __future__ import annotations

import re

# first match wins; names as cuBLAS/CUTLASS/PyTorch/Triton/ONNX Runtime give them
# (seen on the H200: cuBLAS's nvjet_* GEMMs, cuDNN's fused SDPA, Inductor's triton_per/red/poi kernels)
GROUPS = (
    ("LayerNorm / reductions (compiled)", re.compile(r"^triton_(per|red)_", re.I)),
    ("fused pointwise (compiled: GELU, residual, quantize, casts)", re.compile(r"^triton_poi_", re.I)),
    ("attention", re.compile(r"fmha|flash|attention|efficient|sdpa|softmax", re.I)),
    # _qmm_kernel: our 8-bit GEMM (runtime/qgemm.py), the fused FFN1's too
    ("GEMM", re.compile(r"nvjet|gemm|cutlass|xmma|cublas|scaled_mm|matmul|wgmma|igemm|f8f8|s8s8|int_mm|_mm_|^_qmm", re.I)),
    ("LayerNorm / reductions", re.compile(r"layer_?norm|layernorm|reduce", re.I)),
    ("pointwise (GELU, residual, casts, gather)", re.compile(r"gelu|elementwise|vectorized|unrolled|gather|index|add|cast|mul", re.I)),
    ("copies / memset", re.compile(r"memcpy|memset|copy", re.I)),
)


def group_of(name: str) -> str:
    return next((g for g, rx in GROUPS if rx.search(name)), "other")


def kernel_breakdown(step, runs: int = 10, top: int = 12) -> dict:
    """Run step() `runs` times under the profiler; per group and per kernel: GPU ms per run and share of kernel time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            step()
        torch.cuda.synchronize()
    kernels: dict[str, list] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            k = kernels.setdefault(e.name, [0.0, 0])
            k[0] += e.time_range.elapsed_us()
            k[1] += 1
    total = sum(v[0] for v in kernels.values()) or 1.0
    groups: dict[str, float] = {}
    for name, (us, _) in kernels.items():
        groups[group_of(name)] = groups.get(group_of(name), 0.0) + us
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][0])
    return {"runs": runs, "kernel_ms_per_run": total / runs / 1e3,
            "groups": {g: {"ms_per_run": us / runs / 1e3, "share": us / total} for g, us in sorted(groups.items(), key=lambda kv: -kv[1])},
            "top_kernels": [{"name": n[:160], "group": group_of(n), "ms_per_run": us / runs / 1e3, "calls_per_run": c / runs,
                             "share": us / total} for n, (us, c) in ranked[:top]]}
