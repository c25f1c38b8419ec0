"""GEMM rates at the encoder's shapes on this GPU: FP16, FP8 (torch._scaled_mm, row-wise scales), INT8 through
cuBLASLt (torch._int_mm) and INT8 through inductor's Triton templates (torch.compile max-autotune picks the fastest
of cuBLAS and its own kernels). The question it answers: can INT8 beat FP16 on Hopper with a kernel we can reach?

    python3 scripts/gemm_bench.py --out DIR [--tokens 32768] [--no-autotune]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tokens", type=int, default=32768, help="M: batch x sequence (256 x 128)")
    ap.add_argument("--no-autotune", action="store_true", help="skip the inductor max-autotune INT8 kernels (slow to compile)")
    ap.add_argument("--autotune-gemms", default="ffn1", help="which GEMMs get the (slow) autotuned INT8 kernel (default %(default)s)")
    a = ap.parse_args()
    import torch
    from triton.testing import do_bench

    torch.manual_seed(0)
    dev = "cuda"
    m = a.tokens
    shapes = {"qkv": (768, 2304), "o": (768, 768), "ffn1": (768, 3072), "ffn2": (3072, 768)}  # (K, N), DistilBERT-base
    rows = []

    def rate(ms, k, n):
        return 2 * m * k * n / ms / 1e9  # TFLOP/s (TOPS for int8)

    int_mm_tuned = None
    if not a.no_autotune:
        int_mm_tuned = torch.compile(lambda x, w: torch._int_mm(x, w), mode="max-autotune-no-cudagraphs", dynamic=False)
    for name, (k, n) in shapes.items():
        x16 = torch.randn(m, k, device=dev, dtype=torch.float16)
        w16 = torch.randn(k, n, device=dev, dtype=torch.float16)
        x8 = x16.to(torch.float8_e4m3fn)
        w8 = w16.t().contiguous().to(torch.float8_e4m3fn).t()  # column-major B, as _scaled_mm wants
        sa = torch.rand(m, 1, device=dev) + 0.5
        sb = torch.rand(1, n, device=dev) + 0.5
        xi = torch.randint(-127, 128, (m, k), device=dev, dtype=torch.int8)
        wi = torch.randint(-127, 128, (k, n), device=dev, dtype=torch.int8)
        r = {"gemm": name, "M": m, "K": k, "N": n}
        r["fp16_tflops"] = rate(do_bench(lambda: x16 @ w16, return_mode="median"), k, n)
        r["fp8_tflops"] = rate(do_bench(lambda: torch._scaled_mm(x8, w8, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16),
                                        return_mode="median"), k, n)
        r["int8_int_mm_tops"] = rate(do_bench(lambda: torch._int_mm(xi, wi), return_mode="median"), k, n)
        if int_mm_tuned is not None and name in a.autotune_gemms.split(","):
            t0 = time.time()
            ref = torch._int_mm(xi, wi)
            got = int_mm_tuned(xi, wi)
            r["int8_autotune_compile_s"] = round(time.time() - t0, 1)
            r["int8_autotune_exact"] = bool(torch.equal(ref, got))
            r["int8_autotune_tops"] = rate(do_bench(lambda: int_mm_tuned(xi, wi), return_mode="median"), k, n)
        rows.append({k2: round(v, 1) if isinstance(v, float) else v for k2, v in r.items()})
        print(json.dumps(rows[-1]), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gemm_bench.json").write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                                      "rows": rows}, indent=1))
    keys = [k for k in rows[0] if k not in ("gemm", "M", "K", "N")]
    print("| gemm | " + " | ".join(keys) + " |")
    for r in rows:
        print(f"| {r['gemm']} | " + " | ".join(str(r.get(k)) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
