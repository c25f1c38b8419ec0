"""A/B of engine fusions on DistilBERT-base shapes (random weights), each variant compiled and replayed as a CUDA graph
the way runtime/engines.py serves it: which change makes torch_fp16 / torch_fp8 / torch_int8 faster at batch 256 x 128
tokens. Results: results/h100/2026-12-07b/ (the GELU epilogues became the engines' default, spec.TORCH_GELU).

    python scripts/fusion_ab.py --out logs/fusion_ab.json [--batch 256 --seq 128]

Variants (FP16 unless named):
  dynamic        torch.compile(dynamic=True), FFN1's GELU a separate pass (torch_build --gelu separate)
  static         torch.compile(dynamic=False): the same graph specialised to this one shape
  gelu_epilogue  FFN1's bias and GELU in cuBLASLt's GEMM epilogue (torch_model.set_gelu(enc, "epilogue"): the
                 custom op enc2triton::linear_gelu over torch._addmm_activation, the tanh GELU), dynamic=True
  gelu_epilogue_static
  gelu_tanh      inductor's GELU pass with the tanh formula (is erf the pointwise kernel's cost?), dynamic=True
  autotune_static  torch.compile(mode="max-autotune-no-cudagraphs"): inductor's Triton GEMM templates with the
                 pointwise epilogues fused, one shape
  peer_static    the engine benchmark's best FP16 peer: Hugging Face DistilBertModel, torch.compile, CUDA graph
  fp8_ffn_fused  fp8_dynamic with FFN1 in our Triton kernel, bias + tanh GELU + FFN2's E4M3 quantization in its epilogue
                 (torch_model.set_gelu(enc, "epilogue") on an 8-bit model: qgemm.qmm_gelu_q)
  int8_dynamic / int8_ffn_fused   the same two for every linear layer INT8 (clip 8)
  fp8_dynamic / fp8_static   every linear layer E4M3 (static activation scales), as torch_fp8 with --fp8-layers all
  <fp8 variant>_folded   the static activation scales folded into the weights' (torch_model.size_rows: torch_build
                 --fp8-folded), no [tokens, 1] scale written per GEMM per call; e.g. fp8_ffn_fused_folded
  <variant>@128x256x64w8s3   the variant with the fused FFN1's settings (qgemm.TILES["qmm_gelu_q..."]: BLOCK_M x
                 BLOCK_N x BLOCK_K, warps, stages; a trailing "f": the fast GELU) set to these, the others as the process
                 has them (ENC2TRITON_QGEMM_TILES): another tile shape or GELU form, at the engine's level
Each: time per batch (CUDA events over replays), sequences/s, its GPU kernels (profiling.kernel_breakdown, grouped as
the engine benchmark groups them), and the max |difference| of the sentence embedding from `dynamic` (FP16),
`fp8_dynamic` or `int8_dynamic`. GPU only.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from enc2triton.core import host
from enc2triton.measure import profiling
from enc2triton.runtime import qgemm
from enc2triton.runtime import torch_model as tm

DISTIL = tm.EncoderConfig("distilbert", 768, 6, 12, 3072, 30522, 512, 0, 1e-12)


def forward_gelu_tanh(self, x, mask_bias):
    b, s, h = x.shape
    qkv = self.qkv(x).view(b, s, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
    ctx = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask_bias)
    x = self.norm1(x + self.o(ctx.transpose(1, 2).reshape(b, s, h)).to(x.dtype))
    return self.norm2(x + self.ffn2(F.gelu(self.ffn1(x), approximate="tanh")).to(x.dtype))


class HFPeer(torch.nn.Module):
    """The FP16 peer of the engine benchmark: Hugging Face's DistilBertModel (SDPA attention), mean pooled."""

    def __init__(self):
        super().__init__()
        from transformers import DistilBertConfig, DistilBertModel
        cfg = DistilBertConfig(attn_implementation="sdpa")
        self.hf = DistilBertModel(cfg).eval()

    def forward(self, ids, mask):
        h = self.hf(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        m = mask[..., None].float()
        return h, (h * m).sum(1) / m.sum(1)


def model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind.startswith("peer"):
        return HFPeer().half().cuda()
    enc = tm.Encoder(DISTIL).eval()
    for p in enc.parameters():  # BERT-like magnitudes: N(0, 0.02) weights
        p.data.normal_(0, 0.02) if p.dim() > 1 else None
    if kind.startswith("fp8"):
        enc = tm.to_fp8(enc, amax={(i, n): 8.0 for i, n, _ in tm.linears(enc)})
    elif kind.startswith("int8"):
        enc = tm.to_int8(enc, {(i, n): {"clip": 8.0} for i, n, _ in tm.linears(enc)})
    else:
        enc = enc.half()
    enc = enc.cuda()
    if "gelu_epilogue" in kind:
        tm.set_gelu(enc, "epilogue")
    if kind.removesuffix("_folded").endswith("ffn_fused"):  # the engines' default: FFN1's GELU in its GEMM's epilogue
        tm.set_gelu(enc, "epilogue")
        tm.INT8_FUSED_FFN = True  # (the engines' default; set here so the A/B holds if that default changes)
    if kind.startswith("fp8") and kind.endswith("_folded"):
        tm.size_rows(enc, 256 * 512)  # DistilBERT-base's served limits (torch_build: max batch x max seq)
    if kind == "gelu_tanh":
        for layer in enc.layers:
            layer.forward = forward_gelu_tanh.__get__(layer)
    return enc


INT8_FUSED_DEFAULT = tm.INT8_FUSED_FFN


def tiles(text: str) -> dict:
    """'128x256x64w8s3f' -> qgemm.TILES' entries for the fused FFN1 (both kinds); "f": the fast GELU."""
    fast = text.endswith("f")
    dims, rest = text.removesuffix("f").split("w")
    bm, bn, bk = (int(v) for v in dims.split("x"))
    warps, stages = (int(v) for v in rest.split("s"))
    cfg = dict(qgemm.CONFIG, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages, FAST_GELU=fast)
    return {key: dict(cfg) for key in ("qmm_gelu_q", "qmm_gelu_q.fp8", "qmm_gelu_q.int8")}


def measure(variant: str, batch: int, seq: int, iters: int) -> dict:
    """One variant ("kind" or "kind@settings"), with the fused FFN1's settings it names for its duration."""
    kind, _, config = variant.partition("@")
    # the tiles are constants of the kernel call, which inductor's FX graph cache did not tell apart: 2026-12-07c's three
    # tile shapes timed within 0.4% of the default's, a reused compile by the look of it; compile these afresh
    torch._inductor.config.force_disable_caches = bool(config)
    with qgemm.tiles_override(tiles(config) if config else {}):
        r = _measure(kind, batch, seq, iters)
        r["qgemm_tiles"] = {k: qgemm.tiles_label(v) for k, v in qgemm.TILES.items()}
    return r


def _measure(kind: str, batch: int, seq: int, iters: int) -> dict:
    tm.INT8_FUSED_FFN = INT8_FUSED_DEFAULT
    torch._dynamo.reset()  # each variant compiles afresh (one Encoder class: its recompile limit would drop to eager)
    enc = model(kind)
    if kind == "autotune_static":
        fn = torch.compile(enc, dynamic=False, mode="max-autotune-no-cudagraphs")
    else:
        fn = torch.compile(enc, dynamic="static" not in kind)
    ids = torch.randint(1000, 30000, (batch, seq), device="cuda")
    mask = torch.ones_like(ids)
    t0 = time.perf_counter()
    with torch.inference_mode():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn(ids, mask)
        torch.cuda.current_stream().wait_stream(stream)
        compile_s = time.perf_counter() - t0
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(ids, mask)
        for _ in range(20):
            graph.replay()
        times = []
        for _ in range(5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / iters)
        kernels = profiling.kernel_breakdown(graph.replay, runs=5, top=8)  # the engine benchmark's grouping
    ms = sorted(times)[len(times) // 2]
    emb = out[1].float().clone()
    del graph, fn, enc
    torch.cuda.empty_cache()
    return {"ms": round(ms, 4), "seq_per_s": round(batch / ms * 1e3), "ms_runs": [round(t, 4) for t in times],
            "compile_s": round(compile_s, 1), "kernels": kernels, "emb": emb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--fused-min-rows", type=int, default=None,
                    help="tokens from which the 8-bit FFN pairs take the fused FFN (default: torch_model's, "
                    "FUSED_FFN_MIN_ROWS): lower it to measure the fused FFN at short texts' batch sizes")
    ap.add_argument("--variants", default="dynamic,gelu_epilogue,peer_static,fp8_dynamic,fp8_ffn_fused,int8_dynamic,int8_ffn_fused,static,gelu_tanh,autotune_static")
    a = ap.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    if a.fused_min_rows is not None:
        tm.FUSED_FFN_MIN_ROWS = dict.fromkeys(tm.FUSED_FFN_MIN_ROWS, a.fused_min_rows)
    res = {"device": torch.cuda.get_device_name(), "hardware": host.hardware(), "torch": torch.__version__, "batch": a.batch,
           "seq": a.seq, "fused_ffn_min_rows": tm.FUSED_FFN_MIN_ROWS, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "variants": {}}
    ref = {}
    for kind in a.variants.split(","):
        try:
            r = measure(kind, a.batch, a.seq, a.iters)
        except Exception as e:  # one variant failing must not hide the others' numbers
            res["variants"][kind] = {"error": f"{type(e).__name__}: {e}"[:500]}
            print(kind, "FAILED", res["variants"][kind]["error"], flush=True)
            a.out.write_text(json.dumps(res, indent=1))
            continue
        base = "fp8_dynamic" if kind.startswith("fp8") else "int8_dynamic" if kind.startswith("int8") else "peer_static" if kind.startswith("peer") else "dynamic"
        emb = r.pop("emb")
        # against the base variant, or the first of its precision measured when the base is not in this run
        first, emb0 = ref.setdefault(base, (kind, emb))
        r["max_abs_diff_vs_" + first] = float((emb - emb0).abs().max())
        r["cos_min_vs_" + first] = float(F.cosine_similarity(emb, emb0).min())
        res["variants"][kind] = r
        print(kind, json.dumps(r), flush=True)
        a.out.write_text(json.dumps(res, indent=1))  # after each variant: a timeout keeps what was measured
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
