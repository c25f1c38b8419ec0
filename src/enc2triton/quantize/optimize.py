"""GPU FP16 graph: ONNX Runtime's transformer optimizer fuses the encoder, then FP16 with FP32 IO.

Fusions (measured on the H100 for DistilBERT-base, see README): EmbedLayerNormalization, Attention
per layer, SkipLayerNormalization, BiasGelu. Attention only fuses on an eager-attention export
(export.py exports eager). The fused ops' FP16 kernels exist for CUDA only: on CPU use the portable
fp16 variant from quantize.py.
"""
from __future__ import annotations

from pathlib import Path

from enc2triton.core import cli, io

ATTENTION_MASK_FORMAT = 0  # MaskIndexEnd: right-padded masks become lengths, which the fused MHA kernels take


def fused_fp16(src: Path, dst: Path, num_heads: int, hidden_size: int, gelu_approximation: bool = False) -> dict:
    """Write the fused FP16 graph to dst (atomically); return fused-operator counts and options."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    opts = FusionOptions("bert")
    opts.enable_gelu_approximation = gelu_approximation  # FastGelu (tanh): faster, not bit-faithful
    opts.attention_mask_format = ATTENTION_MASK_FORMAT
    model = optimizer.optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                                     optimization_options=opts, use_gpu=True, opt_level=0)
    stats = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    # LayerNorm-like fused ops keep FP32 internally in ORT's kernels; IO stays FP32 for clients.
    model.convert_float_to_float16(keep_io_types=True)
    with io.atomic_path(dst) as tmp:
        model.save_model_to_file(str(tmp))
    return {"fused_ops": stats, "gelu_approximation": gelu_approximation, "attention_mask_format": ATTENTION_MASK_FORMAT,
            "tool": "onnxruntime.transformers.optimizer (model_type=bert) + convert_float_to_float16(keep_io_types=True)"}


def run(artifacts: Path, gelu_approximation: bool = False, force: bool = False) -> dict:
    """Build artifacts/onnx/model_fp16_fused.onnx from the verified fp32 export; record it as the fp16 variant."""
    manifest = io.load_manifest(artifacts)
    fp32 = io.fp32_export(manifest, artifacts)
    entry = (manifest.get("variants") or {}).get("fp16") or {}
    if not force and io.variant_up_to_date(entry, artifacts, source_sha256=fp32["sha256"], fused=True):
        print("fp16 (fused, GPU): up to date")
        return entry
    m = manifest["model"]
    dst = Path(artifacts) / "onnx" / "model_fp16_fused.onnx"
    info = fused_fp16(io.resolve(fp32["path"], artifacts), dst, m["num_heads"], m["hidden_size"], gelu_approximation)
    entry = {"onnx": io.artifact_entry(dst, artifacts), "method": info["tool"], "fused": True, "device": "gpu",
             "source_sha256": fp32["sha256"], **info}
    io.update_manifest("variants", entry, artifacts, key="fp16")
    print(f"fp16 (fused, GPU): {dst} fused {info['fused_ops']}")
    return entry


def main(argv=None) -> int:
    ap = cli.parser("python -m enc2triton.optimize", (
        "Build the fused FP16 graph for NVIDIA GPUs (ONNX Runtime transformer optimizer) and record it as the fp16 variant. "
        "Its fused FP16 kernels exist on CUDA only; on CPU use `python -m enc2triton.quantize` (portable fp16)."), logs=False)
    ap.add_argument("--gelu-approximation", action="store_true", help="FastGelu (tanh) instead of exact Gelu (default: exact)")
    ap.add_argument("--force", action="store_true", help="rebuild even when the fused graph matches the fp32 export (default: resume)")

    def body(a) -> None:
        run(a.artifacts, a.gelu_approximation, a.force)
    return cli.run(ap, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
