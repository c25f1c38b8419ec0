"""8-bit GEMM rates at the encoder's shapes on this GPU, beside FP16, and our kernel checked against its reference.

Per GEMM of DistilBERT-base at M tokens (default 256 x 128): FP16 (cuBLAS), FP8 through cuBLASLt (torch._scaled_mm,
row-wise scales), INT8 through cuBLASLt (torch._int_mm, B row-major as the old layers had it, and column-major),
INT8 through inductor's Triton templates (torch.compile max-autotune, optional), and our Triton kernel
(enc2triton.runtime.qgemm: dequantization and bias in the epilogue) on int8 and E4M3 at a few tile shapes, checked
against its reference; FFN1 also as the fused FFN runs it (qmm_gelu_q: bias, tanh GELU and FFN2's input codes in the
epilogue), with the exact and the fast GELU. Then the compile check: a small INT8 encoder through
torch.compile(dynamic=True) with the kernel in the graph (above qgemm.MIN_ROWS rows), against eager, and the compile
cache saved.

--write-tiles F: the settings that were fastest over the --tokens sizes (geometric mean of each one's time over the
best's at every size) for each use the engines make of the kernel (qgemm.TILES' keys: INT8 GEMMs per shape and
overall, the fused FFN1 per kind), as a file for ENC2TRITON_QGEMM_TILES. The fast GELU is a candidate only where its
codes differ from the reference's in at most MAX_EXTRA_MISMATCH more places than the exact GELU's, by no more steps.
Every time is a CUDA graph's replay (the engines' way), so the host's launch path is not in it.

    python3 scripts/gemm_bench.py --out DIR [--tokens 32768,8192,2048] [--autotune-gemms ffn1] [--configs all|default]
        [--write-tiles F] [--no-compile-check]
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SHAPES = {"qkv": (768, 2304), "o": (768, 768), "ffn1": (768, 3072), "ffn2": (3072, 768)}  # (K, N), DistilBERT-base
CONFIGS = [dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, num_warps=w, num_stages=st)
           for bm, bn, bk, (w, st) in itertools.product((128,), (128, 256), (64, 128), ((4, 4), (8, 3), (8, 4)))
           if not (bn == 256 and bk == 128 and st == 4)]  # over the shared memory
MAX_EXTRA_MISMATCH = 0.005


def code_check(qgemm, torch, a, b, scale, bias, qmult, kind) -> dict:
    """The fused FFN1's codes against reference_gelu_q's: how many differ, and by how many steps at most."""
    got = qgemm.qmm_gelu_q(a, b, scale, bias, qmult, kind).float()
    ref = qgemm.reference_gelu_q(a, b, scale, bias, qmult, kind).float()
    diff = (got - ref).abs()
    # one step: 1 for INT8 codes; for E4M3, 2^-3 of the value (its 3 mantissa bits), 2^-9 at the subnormal bottom
    step = torch.ones_like(ref) if kind == "int8" else torch.maximum(ref.abs() * 0.125, torch.full_like(ref, 2.0 ** -9))
    return {"mismatch_fraction": float((diff > 0).float().mean()), "max_steps": float((diff / step).max())}


def choose(times: dict, keys_of: dict) -> dict:
    """{TILES key: (settings, score)}: per key, the candidate with the lowest geometric mean of its time over the best
    time at each size it was timed at (candidates that failed anywhere are out)."""
    out = {}
    for key, per_size in keys_of.items():
        best = {size: min(t for t, _ in times[(key, size)].values()) for size in per_size}
        labels = set.intersection(*(set(times[(key, size)]) for size in per_size))
        scored = []
        for label in labels:
            ratios = [times[(key, size)][label][0] / best[size] for size in per_size]
            scored.append((math.exp(sum(math.log(r) for r in ratios) / len(ratios)), label))
        if scored:
            score, label = min(scored)
            out[key] = (times[(key, per_size[0])][label][1], round(score, 4))
    return out


def compile_check(torch, qgemm, torch_model) -> dict:
    """A 2-layer encoder in INT8 (the kernel from MIN_ROWS rows) and FP8, compiled with dynamic shapes: against eager,
    and cacheable."""
    cfg = torch_model.EncoderConfig(arch="distilbert", vocab=1000, hidden=256, heads=4, ffn=1024, layers=2, max_positions=128,
                                    type_vocab=0, eps=1e-12)
    out = {}
    for kind in ("int8", "fp8"):
        torch.manual_seed(0)
        enc = torch_model.Encoder(cfg).eval()
        if kind == "int8":
            q = torch_model.to_int8(enc, {(i, n): {"clip": 4.0} for i, n, _ in torch_model.linears(enc)})
        else:
            q = torch_model.to_fp8(enc, amax={(i, n): 4.0 for i, n, _ in torch_model.linears(enc)})
        q = q.cuda()
        torch._dynamo.reset()
        fn = torch.compile(q, dynamic=True)
        rows = []
        t0 = time.time()
        with torch.inference_mode():
            for b, s in ((1, 16), (2, 16), (8, 64), (64, 128), (96, 112)):
                ids = torch.randint(1, 1000, (b, s), device="cuda")
                mask = torch.ones_like(ids)
                e = q(ids, mask)[1]
                c = fn(ids, mask)[1]
                cos = torch.nn.functional.cosine_similarity(e.float(), c.float()).min().item()
                rows.append({"shape": [b, s], "min_cos_compiled_vs_eager": round(cos, 6)})
        blob = torch.compiler.save_cache_artifacts()
        out[kind] = {"rows": rows, "compile_s": round(time.time() - t0, 1), "cache_bytes": len(blob[0]) if blob else None,
                     "ok": all(r["min_cos_compiled_vs_eager"] > 0.999 for r in rows) and blob is not None}
        print(kind, json.dumps(out[kind]), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tokens", default="32768,8192,2048", help="M values: batch x sequence (256 x 128, 64 x 128, 64 x 32)")
    ap.add_argument("--autotune-gemms", default="", help="GEMMs that also get inductor's max-autotune INT8 kernel (slow), e.g. ffn1")
    ap.add_argument("--configs", choices=("all", "default"), default="all", help="tile shapes of our kernel to time")
    ap.add_argument("--write-tiles", type=Path, help="write the fastest settings per use here (for ENC2TRITON_QGEMM_TILES)")
    ap.add_argument("--no-compile-check", action="store_true", help="leave out the compiled small encoders' check")
    a = ap.parse_args()
    import torch
    from triton.testing import do_bench_cudagraph

    def do_bench(fn, return_mode="median"):
        """ms per call, replayed as a CUDA graph as the engines run: eager timing of a 10-60 us kernel measured this
        host's launch path instead (2026-12-07d, an H100: 13-73 us for one GEMM under ten tile shapes)."""
        return do_bench_cudagraph(fn, rep=50, return_mode=return_mode)

    from enc2triton.runtime import qgemm, torch_model

    torch.manual_seed(0)
    dev = "cuda"
    rows, checks = [], []
    int_mm_tuned = None
    if a.autotune_gemms:
        int_mm_tuned = torch.compile(lambda x, w: torch._int_mm(x, w), mode="max-autotune-no-cudagraphs", dynamic=False)
    default = {k: dict(v) for k, v in qgemm.TILES.items()}
    configs = CONFIGS if a.configs == "all" else [dict(qgemm.CONFIG)]
    sizes = [int(t) for t in a.tokens.split(",")]
    times: dict = {}  # (TILES key, M) -> {label: (ms, settings)}
    fast_ok = {}

    def sweep(key: str, m: int, candidates, call) -> tuple:
        """Time `call` under each candidate setting for `key`: ((label, (ms, settings)) of the fastest, the default's ms)."""
        got = times.setdefault((key, m), {})
        for cfg in candidates:
            try:
                with qgemm.tiles_override({key: cfg}):
                    got[qgemm.tiles_label(cfg)] = (do_bench(call, return_mode="median"), cfg)
            except Exception as e:  # a tile shape this GPU cannot hold (shared memory), a GELU it cannot compile
                print(f"  {key} M={m} {qgemm.tiles_label(cfg)}: {type(e).__name__}: {str(e)[:160]}", flush=True)
        op, kind = key.split(".")[:2]
        base = qgemm.tiles_label(default.get(key) or default.get(f"{op}.{kind}") or default[op])
        best = min(got.items(), key=lambda kv: kv[1][0]) if got else None
        return best, got.get(base, (None,))[0]

    for m in sizes:
        for name, (k, n) in SHAPES.items():
            def rate(ms):
                return round(2 * m * k * n / ms / 1e9, 1) if ms else None  # TFLOP/s (TOPS for int8)

            x16 = torch.randn(m, k, device=dev, dtype=torch.float16)
            w16 = torch.randn(n, k, device=dev, dtype=torch.float16)
            x8 = (x16 * 50).clamp(-448, 448).to(torch.float8_e4m3fn)
            w8 = (w16 * 50).clamp(-448, 448).to(torch.float8_e4m3fn)  # [N, K]: .t() is the column-major B _scaled_mm wants
            sa, sb = torch.full((m, 1), 0.02, device=dev), torch.full((1, n), 0.02, device=dev)
            xi = torch.randint(-127, 128, (m, k), device=dev, dtype=torch.int8)
            wi = torch.randint(-127, 128, (n, k), device=dev, dtype=torch.int8)
            wi_kn = wi.t().contiguous()
            scale = torch.rand(n, device=dev) * 1e-3
            bias = torch.randn(n, device=dev)
            r = {"gemm": name, "M": m, "K": k, "N": n}
            r["fp16_cublas"] = rate(do_bench(lambda: x16 @ w16.t(), return_mode="median"))
            r["fp8_scaled_mm"] = rate(do_bench(lambda: torch._scaled_mm(x8, w8.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16),
                                               return_mode="median"))
            r["int8_int_mm_b_rowmajor"] = rate(do_bench(lambda: torch._int_mm(xi, wi_kn), return_mode="median"))
            r["int8_int_mm_b_colmajor"] = rate(do_bench(lambda: torch._int_mm(xi, wi.t()), return_mode="median"))
            if int_mm_tuned is not None and name in a.autotune_gemms.split(",") and m == sizes[0]:
                t0 = time.time()
                got = int_mm_tuned(xi, wi_kn)
                r["int8_inductor_autotune_compile_s"] = round(time.time() - t0, 1)
                r["int8_inductor_autotune_exact"] = bool(torch.equal(torch._int_mm(xi, wi_kn), got))
                r["int8_inductor_autotune"] = rate(do_bench(lambda: int_mm_tuned(xi, wi_kn), return_mode="median"))
            for kind, xa, wb in (("int8", xi, wi), ("fp8", x8, w8)):
                best, base = sweep(f"qmm.{kind}.{k}x{n}", m, configs, lambda: qgemm.qmm(xa, wb, scale, bias, "bf16"))
                r[f"{kind}_ours_default"] = rate(base)
                if best:
                    r[f"{kind}_ours_best"], r[f"{kind}_ours_best_config"] = rate(best[1][0]), best[0]
                for out in ("bf16", "fp16"):  # against the reference, both output types
                    got = qgemm.qmm(xa, wb, scale, bias, out).float()
                    ref = qgemm.reference(xa, wb, scale, bias, out).float()
                    diff = (got - ref).abs()
                    checks.append({"kind": kind, "gemm": name, "M": m, "out": out, "max_abs_diff": float(diff.max()),
                                   "mismatch_fraction": float((diff > 0).float().mean()), "ref_abs_max": float(ref.abs().max())})
                if name != "ffn1":
                    continue
                # FFN1 as the fused FFN runs it: GELU and the next GEMM's codes in the epilogue; exact and fast GELU
                # a GELU input of std ~2 and codes that mostly stay inside the 8-bit range, as calibration sets them
                acc_std = float((xa[:256].float() @ wb.float().t()).std())
                gscale = torch.full((n,), 2.0 / acc_std, device=dev)
                qmult = torch.rand(n, device=dev) * (10 if kind == "int8" else 40) + (15 if kind == "int8" else 30)
                key = f"qmm_gelu_q.{kind}"
                for fast in (False, True):
                    try:
                        with qgemm.tiles_override({key: dict(default["qmm_gelu_q"], FAST_GELU=fast)}):
                            c = code_check(qgemm, torch, xa, wb, gscale, bias, qmult, kind)
                    except Exception as e:
                        c = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                    checks.append({"kind": kind, "gemm": "ffn1_gelu_q", "M": m, "fast_gelu": fast, **c})
                    if not fast:
                        exact = c
                    else:  # the fast GELU's codes may differ from the reference's little more than the exact one's do
                        fast_ok[kind] = fast_ok.get(kind, True) and "error" not in c and "error" not in exact \
                            and c["mismatch_fraction"] <= exact["mismatch_fraction"] + MAX_EXTRA_MISMATCH \
                            and c["max_steps"] <= max(exact["max_steps"], 1.0)
                candidates = [dict(cfg, FAST_GELU=f) for cfg in configs for f in ((False, True) if fast_ok[kind] else (False,))]
                best, base = sweep(key, m, candidates, lambda: qgemm.qmm_gelu_q(xa, wb, gscale, bias, qmult, kind))
                r[f"{kind}_gelu_q_default"] = rate(base)
                if best:
                    r[f"{kind}_gelu_q_best"], r[f"{kind}_gelu_q_best_config"] = rate(best[1][0]), best[0]
            rows.append(r)
            print(json.dumps(r), flush=True)
    for c in checks:
        print("check", json.dumps(c))
    # what the engines use: INT8 GEMMs per shape and over all shapes, the fused FFN1 per kind
    keys_of = {f"qmm.int8.{k}x{n}": sizes for k, n in SHAPES.values()}
    keys_of.update({f"qmm_gelu_q.{kind}": sizes for kind in ("int8", "fp8")})
    chosen = choose(times, keys_of)
    # qmm.int8 (any other shape): the setting with the best geometric mean over every shape and size
    merged = {("qmm.int8", (key, m)): got for (key, m), got in times.items() if key.startswith("qmm.int8.")}
    if merged:
        chosen.update(choose(merged, {"qmm.int8": [size for _, size in merged]}))
    tiles = {key: cfg for key, (cfg, _) in chosen.items()}
    print("chosen", json.dumps({key: [qgemm.tiles_label(cfg), score] for key, (cfg, score) in chosen.items()}), flush=True)
    compiled = None if a.no_compile_check else compile_check(torch, qgemm, torch_model)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gemm_bench.json").write_text(json.dumps({
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "kernel": qgemm.name(), "default_config": default,
        "rows": rows, "checks": checks, "compile_check": compiled, "fast_gelu_ok": fast_ok,
        "chosen": {key: {"settings": cfg, "label": qgemm.tiles_label(cfg), "score": score} for key, (cfg, score) in chosen.items()},
        "timings_ms": {f"{key} M={m}": {label: round(ms, 5) for label, (ms, _) in got.items()} for (key, m), got in times.items()}},
        indent=1))
    if a.write_tiles:
        a.write_tiles.parent.mkdir(parents=True, exist_ok=True)
        a.write_tiles.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                             "sizes": sizes, "source": "scripts/gemm_bench.py --write-tiles",
                                             "tiles": tiles}, indent=1))
        print(f"tiles -> {a.write_tiles}")
    keys = [k for k in rows[0] if k not in ("gemm", "M", "K", "N")]
    print("| gemm | M | " + " | ".join(keys) + " |")
    for r in rows:
        print(f"| {r['gemm']} | {r['M']} | " + " | ".join(str(r.get(k)) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
