"""An 8-bit GEMM with its dequantization and bias in the epilogue, in one Triton kernel, for the PyTorch engines.

    out[m, n] = acc[m, n] * scale[n] + bias[n]     acc: int32 (int8 x int8) or fp32 (e4m3 x e4m3); out FP16/BF16

Why our own kernel (scripts/gemm_bench.py, DistilBERT-base's GEMMs at 256 x 128 tokens; results/h100/2026-12-07/, an
H100): cuBLASLt's int8 GEMM (torch._int_mm) runs 513-690 TOPS with B column-major (~120 with B row-major), about FP16's
622-665 TFLOP/s, and returns int32 products that a second pass dequantizes; this kernel runs 627-949 TOPS (1.1-1.4x)
with the dequantization done on the accumulator. At M = 2,048 it still matches or leads cuBLASLt on three of the four
GEMMs (qkv 379 vs 369 TOPS, o 216 vs 209, ffn1 476 vs 410; ffn2 394 vs 415), whose figures leave out the int32 pass that
dequantizes them, so Int8Linear takes it from MIN_ROWS = 2,048 rows; below, its 128-row tiles leave SMs idle. Timed as
CUDA-graph replays (results/h100/2026-12-07d/) it leads on all four at 2,048 (498 vs 452, 355 vs 320, 637 vs 503, 639
vs 492). For E4M3 cuBLASLt (torch._scaled_mm, 844-1,099
TFLOP/s) is faster than this kernel at every shape measured (633-980), so Fp8Linear keeps it; the kernel takes E4M3 too,
for that comparison. inductor's max-autotune int_mm templates: 247 TOPS on FFN1.

`qmm_gelu_q` is the same kernel with FFN1's tanh GELU and FFN2's input quantization in the epilogue (E4M3 or INT8 codes
out), for torch_model's fused FFN: the [tokens, 3072] activation is written once, in 8 bits, and never read back in 16.
The GELU is 0.5 y (1 + tanh u) with tanh.approx.f32 (FAST_GELU, the default), else y * sigmoid(2u) with one exp2 (an
erf GELU here, an earlier session on an H200, dropped FFN1 from 574 to 340 TOPS). scripts/fusion_ab.py, DistilBERT-base
at 256 x 128 on an H100 (results/h100/2026-12-07b/): every layer FP8, 43,200 seq/s with cuBLASLt's FFN1 and a separate
GELU + quantize pass, 48,911 with this (1.13x). With the fast GELU and TILES' settings (2026-12-07d) the fused FFN1 runs
702 TFLOP/s on E4M3 (595 before; cuBLASLt's plain FFN1 814) and the FP8 engine 50,836 seq/s (48,216 before).

`qmm` and `qmm_gelu_q` are torch custom ops (torch.library.triton_op), so torch.compile keeps the kernel in its graph, its compile
cache and the CUDA graphs; `reference` and `reference_gelu_q` are their computations in torch ops. Operands: `a` [M, K] row-major codes, `b`
[N, K] row-major codes (the nn.Linear layout: K-major tiles, what Hopper's 8-bit tensor-core instructions read). No
Triton (a CPU machine): `ENABLED` is False and the layers use torch's GEMMs.
"""
from __future__ import annotations

import contextlib
import os

import torch

# One tile shape per use (a choice per M would put more guards on the dynamic batch in the compiled graph): the fastest
# of gemm_bench.py's candidates at M = 32,768 on three of DistilBERT's four GEMMs (H100; FFN2 6% faster at 128x256x128).
CONFIG = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 4}
# The kernel's settings per use: "qmm.int8" (Int8Linear's GEMMs), "qmm_gelu_q.fp8" and "qmm_gelu_q.int8" (the fused
# FFN1). A key with the GEMM's shape, "qmm.int8.3072x768" (K x N), wins over its use's. FAST_GELU: tanh.approx.f32 (one
# MUFU op, abs. error ~5e-4 in tanh) for the exact tanh GELU's exp2 and IEEE division, which cost the epilogue more
# than the E4M3/INT8 rounding after it can see. `gemm_bench.py --write-tiles F` measures them on a GPU;
# ENC2TRITON_QGEMM_TILES=F makes a process use F's, torch_build records the ones an engine was built with in its
# model.json, and the engine applies them at load (its compile cache was made with them).
# Measured (gemm_bench.py, CUDA-graph replays, an H100, 2026-12-07d; results/h100/2026-12-07d/): the fused FFN1 with the
# fast GELU at 128x128x128, 8 warps, 3 stages (FP8) and 128x128x64, 8 warps, 4 stages (INT8); DistilBERT-base's INT8
# FFN2 at BLOCK_K 128. In the engine (fusion_ab.py, 256 x 128 tokens) FP8 went from 48,216 to 50,836 seq/s with them.
TILES: dict[str, dict] = {
    "qmm": dict(CONFIG), "qmm.int8.3072x768": dict(CONFIG, BLOCK_K=128),
    "qmm_gelu_q": dict(CONFIG, FAST_GELU=False),
    "qmm_gelu_q.fp8": dict(CONFIG, BLOCK_K=128, num_warps=8, num_stages=3, FAST_GELU=True),
    "qmm_gelu_q.int8": dict(CONFIG, num_warps=8, num_stages=4, FAST_GELU=True)}
TILES_ENV = "ENC2TRITON_QGEMM_TILES"
# Rows (tokens) from which Int8Linear runs this kernel instead of cuBLASLt's (H100, gemm_bench.py): at 8,192 it leads on
# every GEMM, at 2,048 on three of four before cuBLASLt's separate dequantization pass. It was 8,192 until served INT8
# (results/h100/2026-12-07c/: 16 short texts per request, ~7,500 tokens a batch) spent 2.5x FP16's GPU time per batch.
MIN_ROWS = 2048
OUT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CODE_DTYPES = {"fp8": torch.float8_e4m3fn, "int8": torch.int8}  # qmm_gelu_q's outputs: the next GEMM's input codes
QOUT_KINDS = {"fp8": 1, "int8": 2}

try:  # the GPU image's torch brings Triton; a CPU machine has none
    import triton
    import triton.language as tl
    from torch.library import triton_op, wrap_triton
    _TRITON = True
except ImportError:
    _TRITON = False

# The layers take the kernel for CUDA inputs when Triton is here and nobody switched it off (ENC2TRITON_QGEMM=torch:
# torch's own GEMMs, for A/B measurements). A module constant, so torch.compile reads it as one.
ENABLED = _TRITON and os.environ.get("ENC2TRITON_QGEMM", "triton") != "torch"


def use_tiles(tiles: dict) -> None:
    """Take these settings (a `TILES`-shaped dict: a measured file's, an engine's model.json's) over the defaults."""
    unknown = [k for k in tiles if k.split(".")[0] not in ("qmm", "qmm_gelu_q")]
    if unknown:
        raise ValueError(f"qgemm tiles for unknown uses {unknown}: the keys are qmm[.kind[.KxN]], qmm_gelu_q[.kind[.KxN]]")
    partial = [k for k, v in tiles.items() if set(CONFIG) - set(v)]
    if partial:
        raise ValueError(f"qgemm tiles {partial} lack some of {sorted(CONFIG)}")
    TILES.update({k: dict(v) for k, v in tiles.items()})


@contextlib.contextmanager
def tiles_override(tiles: dict):
    """`use_tiles(tiles)` for the block, the table as it was afterwards (benchmarks and A/Bs try settings in turn)."""
    saved = {k: dict(v) for k, v in TILES.items()}
    try:
        use_tiles(tiles)
        yield
    finally:
        TILES.clear()
        TILES.update(saved)


def tiles_for(op: str, kind: str, k: int, n: int) -> dict:
    """The settings one launch takes: its shape's, its kind's, else its use's."""
    return TILES.get(f"{op}.{kind}.{k}x{n}") or TILES.get(f"{op}.{kind}") or TILES[op]


if os.environ.get(TILES_ENV) and os.path.exists(os.environ[TILES_ENV]):
    import json as _json
    with open(os.environ[TILES_ENV]) as _f:
        use_tiles(_json.load(_f)["tiles"])


def name() -> str:
    """What the INT8 layers run on a GPU, for logs and sidecars."""
    if not ENABLED:
        return "torch._int_mm (cuBLASLt)"
    return f"our Triton kernel (triton {triton.__version__}, runtime/qgemm.py) from {MIN_ROWS} rows, torch._int_mm below"


def tiles_label(cfg: dict) -> str:
    """'128x128x64 w4 s4' (+ ' fast-gelu'): a setting as logs name it."""
    return ("{BLOCK_M}x{BLOCK_N}x{BLOCK_K} w{num_warps} s{num_stages}".format(**cfg)
            + (" fast-gelu" if cfg.get("FAST_GELU") else ""))


def reference(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, out: str) -> torch.Tensor:
    """What the kernel computes, in torch ops (FP32; the int8 accumulation exact)."""
    acc = a.double() @ b.double().t() if a.dtype == torch.int8 else a.float() @ b.float().t()
    return (acc.float() * scale.float() + bias.float()).to(OUT_DTYPES[out])


def reference_gelu_q(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, qmult: torch.Tensor,
                     out: str) -> torch.Tensor:
    """What qmm_gelu_q computes, in torch ops: tanh GELU of the dequantized product, then the next GEMM's codes."""
    acc = a.double() @ b.double().t() if a.dtype == torch.int8 else a.float() @ b.float().t()
    y = torch.nn.functional.gelu(acc.float() * scale.float() + bias.float(), approximate="tanh") * qmult.float()
    if out == "int8":
        return torch.round(y).clamp(-127, 127).to(torch.int8)
    return y.clamp(-448.0, 448.0).to(torch.float8_e4m3fn)


if _TRITON:
    @triton.jit
    def _qmm_kernel(a_ptr, b_ptr, c_ptr, scale_ptr, bias_ptr, qmult_ptr, M, N, K, stride_am, stride_bn, stride_cm,
                    INT8: tl.constexpr, GELU: tl.constexpr, QOUT: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, FAST_GELU: tl.constexpr):
        # grouped tile order: GROUP_M row tiles share their column tiles of B while they are in L2
        pid = tl.program_id(0)
        n_m, n_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
        group = pid // (GROUP_M * n_n)
        first_m = group * GROUP_M
        size_m = min(n_m - first_m, GROUP_M)
        pid_m = first_m + (pid % (GROUP_M * n_n)) % size_m
        pid_n = (pid % (GROUP_M * n_n)) // size_m
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        a_ptrs = a_ptr + (offs_m % M)[:, None] * stride_am + offs_k[None, :]
        b_ptrs = b_ptr + (offs_n % N)[None, :] * stride_bn + offs_k[:, None]  # a [BLOCK_K, BLOCK_N] tile, K contiguous
        if INT8:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            left = K - k * BLOCK_K
            if INT8:
                a = tl.load(a_ptrs, mask=offs_k[None, :] < left, other=0)
                b = tl.load(b_ptrs, mask=offs_k[:, None] < left, other=0)
                acc = tl.dot(a, b, acc, out_dtype=tl.int32)
            else:
                a = tl.load(a_ptrs, mask=offs_k[None, :] < left, other=0.0)
                b = tl.load(b_ptrs, mask=offs_k[:, None] < left, other=0.0)
                acc = tl.dot(a, b, acc)
            a_ptrs += BLOCK_K
            b_ptrs += BLOCK_K
        in_n = offs_n < N
        y = acc.to(tl.float32) * tl.load(scale_ptr + offs_n, mask=in_n, other=0.0)[None, :] \
            + tl.load(bias_ptr + offs_n, mask=in_n, other=0.0)[None, :]
        if GELU and FAST_GELU:  # 0.5 y (1 + tanh u), the tanh one MUFU instruction (sm_75+; not in the interpreter)
            u = y * (0.7978845608028654 + 0.035677408136300125 * y * y)
            t = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [u], dtype=tl.float32, is_pure=True, pack=1)
            h = 0.5 * y
            y = h + h * t
        elif GELU:  # tanh GELU as x * sigmoid(2u): one exp2 a value (erf here cost the tile its registers)
            u = 1.5957691216057308 * (y + 0.044715 * y * y * y)
            y = y / (1.0 + tl.exp2(-1.4426950408889634 * u))
        if QOUT == 1:  # the next GEMM's E4M3 codes: y times its input multiplier (1 / static scale), clamped
            y = tl.minimum(tl.maximum(y * tl.load(qmult_ptr + offs_n, mask=in_n, other=0.0)[None, :], -448.0), 448.0)
        if QOUT == 2:  # the next GEMM's INT8 codes: its multiplier (1 / (smoothing x scale)), rounded half to even
            y = tl.minimum(tl.maximum(y * tl.load(qmult_ptr + offs_n, mask=in_n, other=0.0)[None, :], -127.0), 127.0)
            # adding and taking back 1.5 x 2^23 leaves FP32 no fraction bits: its own round-half-to-even, as torch.round
            y = (y + 12582912.0) - 12582912.0
        c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :]
        tl.store(c_ptrs, y.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & in_n[None, :])

    def _launch(a, b, c, scale, bias, qmult, gelu: bool, qout: int) -> torch.Tensor:
        m, k = a.shape
        n = b.shape[0]
        cfg = tiles_for("qmm_gelu_q" if gelu else "qmm", "int8" if a.dtype == torch.int8 else "fp8", k, n)
        # every constexpr passed (torch.compile's wrapper of a user kernel takes no defaults: 2026-12-07d)
        tiles = {key: cfg[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")}

        def grid(meta):
            return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

        wrap_triton(_qmm_kernel)[grid](a, b, c, scale, bias, qmult, m, n, k, a.stride(0), b.stride(0), c.stride(0),
                                       INT8=a.dtype == torch.int8, GELU=gelu, QOUT=qout, num_warps=cfg["num_warps"],
                                       num_stages=cfg["num_stages"], FAST_GELU=bool(gelu and cfg.get("FAST_GELU")), **tiles)
        return c

    def _qmm(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, out: str) -> torch.Tensor:
        """`reference`'s computation in one kernel. a [M, K], b [N, K] codes (int8 or E4M3); scale, bias [N] FP32."""
        c = torch.empty((a.shape[0], b.shape[0]), device=a.device, dtype=OUT_DTYPES[out])
        return _launch(a, b, c, scale, bias, scale, False, 0)

    def _qmm_gelu_q(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, qmult: torch.Tensor,
                    out: str) -> torch.Tensor:
        """`reference_gelu_q`'s computation in one kernel: the GEMM, bias, tanh GELU and the next GEMM's input
        quantization (qmult [N]) in its epilogue; that GEMM's codes [M, N] out ("fp8": E4M3, "int8")."""
        c = torch.empty((a.shape[0], b.shape[0]), device=a.device, dtype=CODE_DTYPES[out])
        return _launch(a, b, c, scale, bias, qmult, True, QOUT_KINDS[out])

    # one registration per process: this file is imported as enc2triton.runtime.qgemm and, in a Triton model folder,
    # as enc2triton_qgemm
    qmm = torch.ops.enc2triton.qmm if hasattr(torch.ops.enc2triton, "qmm") else triton_op("enc2triton::qmm", mutates_args={})(_qmm)
    qmm_gelu_q = (torch.ops.enc2triton.qmm_gelu_q if hasattr(torch.ops.enc2triton, "qmm_gelu_q")
                  else triton_op("enc2triton::qmm_gelu_q", mutates_args={})(_qmm_gelu_q))
