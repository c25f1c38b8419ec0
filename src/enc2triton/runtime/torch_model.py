"""The PyTorch engine family's model: the checkpoint's weights in a lean BERT/DistilBERT forward for GPU serving.

Why our own forward and not the Hugging Face module: Q, K and V are one GEMM (their input is read once, one launch
instead of three), the mask is built once per batch, and the linear layers can be swapped for calibrated FP8 or
INT8 GEMMs (`Fp8Linear`, `Int8Linear`) before the whole graph is exported and compiled ahead of time. It is checked
against the Hugging Face model in FP32 at build time (torch_build.verify_against_hf), like the ONNX export.

Numerics of the quantized layers:
- Fp8Linear: activations E4M3 with one static scale per tensor (the layer input's |max| over the calibration texts,
  measured on the FP32 model, / 448: a constant, so the quantization is pointwise, x / scale, clamp, cast, and the
  compiler fuses it into the LayerNorm/GELU/attention kernel that produces the activation; a per-token dynamic scale,
  row |max| / 448, is kept as an option (no scale given) but not built: its row reduction cost more than FP8 gained),
  weights E4M3 per output channel rounded by GPTQ on the calibration inputs (fp8_gptq: an offline choice of codes,
  the same GEMM), `torch._scaled_mm` with row-wise scales (scale_a [M, 1], the static scale expanded; scale_b [1, N])
  and a BF16 epilogue (bias fused); the model is BF16. to_fp8 can keep layers BF16: the FP8 plan (quantize/fp8_plan.py,
  shared with the ONNX FP8 graph) keeps the ones a sensitivity search on the calibration texts ranks worst, as few as
  reach the quality floor there.
- Int8Linear: symmetric W8A8, activations per tensor (the clip the ONNX INT8 search chose), weights per output
  channel (stored [out, in]: cuBLASLt's int8 GEMM runs 4.5x faster with B column-major than row-major on an H100),
  int32 accumulate, the dequantization and bias in the epilogue; SmoothQuant factors from the ONNX search fold into the
  activation multiplier (x / s) and the weights (W * s). On a GPU from qgemm.MIN_ROWS rows the GEMM is our Triton
  kernel (qgemm.py: the dequantization on the accumulator), below it torch._int_mm.

FFN1's GELU (`gelu="epilogue"`, the default the build records in the package): an FP16/BF16 FFN1 on a GPU runs its
bias and GELU in cuBLASLt's GEMM epilogue (torch._addmm_activation; cuBLASLt's GELU is the tanh formula, within FP16's
rounding of the exact one) instead of writing the [tokens, ffn] product and reading it back in a GELU pass: that pass
was 19% of torch_fp16's kernel time at batch 256 on an H100. It is a custom op, so torch.compile keeps it whole.
An 8-bit FFN pair (FP8 with static scales, INT8; INT8_FUSED_FFN switches INT8's off) on a GPU from FUSED_FFN_MIN_ROWS tokens runs
FFN1 in our Triton kernel with bias, tanh GELU and FFN2's input quantization in its epilogue (qgemm.qmm_gelu_q): FFN2
reads the 8-bit codes and no 16-bit [tokens, ffn] tensor is written (FP8 at batch 256: 1.13x the engine, H100). Below
that such a pair runs the same tanh GELU as a separate pass, so a text's embedding barely depends on the batch it came
in (by the rounding of FFN1's BF16 output, which the fused kernel skips). FP32 and CPU runs, and FFN1 layers kept in 16
bits beside an 8-bit FFN2, keep the exact GELU as a separate op.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

try:
    import enc2triton_qgemm as qgemm  # in a Triton model folder
except ImportError:
    from enc2triton.runtime import qgemm

# The saved package's format (model_<p>.json "format"): 2 since INT8 weights are stored [out, in]. A package of another
# format is refused (a square INT8 weight would load transposed without an error): rebuild it.
PACKAGE_FORMAT = 2
FP8_MAX = 448.0  # largest finite float8_e4m3fn
INT8_MAX = 127.0
ROLES = ("q", "k", "v", "o", "ffn1", "ffn2")
GELU_MODES = ("separate", "epilogue")  # where FFN1's GELU runs: its own op, or FFN1's GEMM epilogue (16-bit, GPU)
# Hugging Face module path (below the model) of each linear layer, per architecture; {i} is the layer index.
HF_LINEARS = {
    "distilbert": ("transformer.layer.{i}.", {"q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin",
                                             "o": "attention.out_lin", "ffn1": "ffn.lin1", "ffn2": "ffn.lin2"}),
    "bert": ("encoder.layer.{i}.", {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                                   "o": "attention.output.dense", "ffn1": "intermediate.dense", "ffn2": "output.dense"}),
}
HF_NORMS = {"distilbert": ("sa_layer_norm", "output_layer_norm"), "bert": ("attention.output.LayerNorm", "output.LayerNorm")}


@dataclass(frozen=True)
class EncoderConfig:
    arch: str  # "bert" | "distilbert"
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int  # 0: no token_type_ids (DistilBERT)
    eps: float

    @classmethod
    def from_hf(cls, config) -> EncoderConfig:
        arch = config.model_type
        if arch not in HF_LINEARS:
            raise ValueError(f"the PyTorch engine family supports {', '.join(HF_LINEARS)}, not {arch!r}")
        act = getattr(config, "activation", None) or getattr(config, "hidden_act", None)
        if act != "gelu":
            raise ValueError(f"{arch} with activation {act!r}: only exact GELU is implemented")
        if arch == "distilbert":
            if getattr(config, "sinusoidal_pos_embds", False):
                raise ValueError("distilbert with sinusoidal position embeddings is not supported")
            return cls(arch, config.dim, config.n_layers, config.n_heads, config.hidden_dim, config.vocab_size,
                       config.max_position_embeddings, 0, 1e-12)
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError("bert with relative position embeddings is not supported")
        return cls(arch, config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
                   config.vocab_size, config.max_position_embeddings, config.type_vocab_size, config.layer_norm_eps)

    def as_dict(self) -> dict:
        return asdict(self)


class Fp8Linear(nn.Module):
    """E4M3 x E4M3 GEMM, weights per output channel. `amax`: the input's calibrated |max|, one static activation scale
    (amax / 448, the buffer x_scale); None: a dynamic scale per token at run time (row |max| / 448; no x_scale).
    `codes`: the weight's E4M3 values on that per-channel grid, already rounded (fp8_gptq); None rounds to nearest."""

    kind = "fp8"  # layout()'s name for it, the key of FUSED_FFN_MIN_ROWS and qgemm's code kinds

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, codes: torch.Tensor | None = None,
                 amax: float | None = None):
        super().__init__()
        w = weight.detach().float()
        ws = fp8_weight_scale(w)
        if codes is None:
            codes = (w / ws[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        self.register_buffer("weight", codes.to(device=w.device, dtype=torch.float8_e4m3fn))
        self.register_buffer("w_scale", ws[None, :].contiguous())  # [1, out]: row-wise scale of the weight
        x_scale = None if amax is None else torch.tensor(max(float(amax), 1e-12) / FP8_MAX, device=w.device)
        self.register_buffer("x_scale", x_scale)  # float32 scalar; None (not in the state dict): per-token dynamic
        self.register_buffer("bias", bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        if self.x_scale is not None:  # static: pointwise (fused into the producer kernel)
            return self.from_codes(self.codes(x2)).reshape(*x.shape[:-1], -1)
        # per-token scale [M, 1] (float32, contiguous: what row-wise _scaled_mm wants): a row reduction per call
        x2 = x2.float()
        scale_a = x2.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FP8_MAX
        q = (x2 / scale_a).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        return self.from_codes(q, scale_a).reshape(*x.shape[:-1], -1)

    def codes(self, x2: torch.Tensor) -> torch.Tensor:
        """The input [M, in] as E4M3 codes at the static scale."""
        return (x2.float() / self.x_scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)

    def from_codes(self, q: torch.Tensor, scale_a: torch.Tensor | None = None) -> torch.Tensor:
        """The GEMM on input codes [M, in] (E4M3 at the static scale, or at the per-row `scale_a`): BF16 [M, out]."""
        scale_b, ones = self.w_scale, getattr(self, "row_ones", None)
        if scale_a is None and q.is_cuda and ones is not None and q.shape[0] <= ones.shape[0]:
            # the static scale folded into the weight's (size_rows): scale_a is a view of ones, no kernel per call
            scale_a, scale_b = ones[:q.shape[0]], self.xw_scale
        elif scale_a is None:  # row-wise scaling wants both scales as vectors: [M, 1] materialized (for M = 1,
            # expand().contiguous() would keep the zero strides, which _scaled_mm refuses)
            scale_a = self.x_scale.expand(q.shape[0], 1).clone(memory_format=torch.contiguous_format)
        if q.is_cuda:
            return torch._scaled_mm(q, self.weight.t(), scale_a=scale_a, scale_b=scale_b, bias=self.bias,
                                    out_dtype=torch.bfloat16)
        # the same product in FP32 (E4M3 products are exact there): torch 2.11's CPU _scaled_mm is per-tensor only
        return (F.linear(q.float(), self.weight.float()) * scale_a * self.w_scale + self.bias.float()).to(torch.bfloat16)

    def epilogue(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale [out], bias [out]) FP32 that turn this GEMM's accumulator into its output (qgemm's epilogue)."""
        return (self.x_scale * self.w_scale[0]).float(), self.bias.float()

    def input_mult(self, n: int) -> torch.Tensor:
        """[n] FP32: what multiplies this layer's input before the E4M3 cast (1 / the static scale)."""
        return (1.0 / self.x_scale).float().expand(n).contiguous()


def fp8_weight_scale(w: torch.Tensor) -> torch.Tensor:
    """Per output channel: |max| / 448 (FP32), computed on the CPU wherever `w` lives: CUDA divides by a scalar as a
    multiply by its reciprocal, one ulp off the CPU's quotient, and the FP8 graph's codes (made on the CPU) are on this
    grid exactly (fp8_plan.from_onnx checks it bit for bit)."""
    return (w.detach().float().cpu().abs().amax(dim=1).clamp(min=1e-12) / FP8_MAX).to(w.device)


@torch.no_grad()
def fp8_gptq(weight: torch.Tensor, hessian: torch.Tensor, damp: float = 0.01, block: int = 128) -> torch.Tensor:
    """E4M3 codes of `weight` [out, in] on its per-output-channel grid (fp8_weight_scale), rounded by GPTQ (Frantar et
    al., 2022) instead of to nearest: column by column, in decreasing order of the input's energy (act order), each
    column's rounding error is pushed onto the columns not yet rounded, weighted by the inverse of `hessian`
    (X^T X of the layer's calibration inputs), so the layer's output error on inputs like those is smallest.
    Offline only: the GEMM is the same."""
    w0 = weight.detach().double()
    ws = fp8_weight_scale(w0).double()[:, None]
    h = hessian.detach().double().to(w0.device).clone()
    perm = torch.argsort(torch.diag(h), descending=True)
    w, h = w0[:, perm].clone(), h[perm][:, perm]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes = torch.empty_like(w)
    for i1 in range(0, w.shape[1], block):
        i2 = min(i1 + block, w.shape[1])
        w1, hi = w[:, i1:i2].clone(), hinv[i1:i2, i1:i2]
        err = torch.zeros_like(w1)
        for j in range(i2 - i1):
            c = (w1[:, j:j + 1] / ws).clamp(-FP8_MAX, FP8_MAX).float().to(torch.float8_e4m3fn).double()
            codes[:, i1 + j:i1 + j + 1] = c
            e = (w1[:, j:j + 1] - c * ws) / hi[j, j]
            w1[:, j:] -= e @ hi[j:j + 1, j:]
            err[:, j:j + 1] = e
        w[:, i2:] -= err @ hinv[i1:i2, i2:]
    return codes[:, torch.argsort(perm)].float().to(torch.float8_e4m3fn)


class Int8Linear(nn.Module):
    kind = "int8"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, clip: float, smooth: torch.Tensor | None = None):
        super().__init__()
        w = weight.detach().float()
        s = smooth.to(w.device).float() if smooth is not None else torch.ones(w.shape[1], device=w.device)
        w = w * s[None, :]  # SmoothQuant: the weight carries the activation's outlier channels
        ws = w.abs().amax(dim=1).clamp(min=1e-12) / INT8_MAX
        # [out, in] as nn.Linear: K-major, what the int8 tensor cores read (torch._int_mm gets its transpose)
        self.register_buffer("weight", torch.round(w / ws[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8).contiguous())
        x_scale = max(float(clip), 1e-12) / INT8_MAX
        self.register_buffer("x_mult", (1.0 / (s * x_scale)).float())  # x / s / x_scale in one multiply
        self.register_buffer("out_scale", (x_scale * ws).float())
        self.register_buffer("bias", bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_codes(self.codes(x.reshape(-1, x.shape[-1])), x.dtype).reshape(*x.shape[:-1], -1)

    def codes(self, x2: torch.Tensor) -> torch.Tensor:
        """The input [M, in] as INT8 codes (smoothed, at the static scale)."""
        return torch.round(x2.float() * self.x_mult).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)

    def from_codes(self, q: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The GEMM on input codes [M, in], dequantized: [M, out] in `dtype`."""
        m = q.shape[0]
        if qgemm.ENABLED and q.is_cuda and m >= qgemm.MIN_ROWS:  # our kernel: int8 tensor cores, dequantized in its epilogue
            return qgemm.qmm(q, self.weight, self.out_scale, self.bias, "fp16" if dtype == torch.float16 else "bf16")
        q = F.pad(q, (0, 0, 0, (-m) % 32))  # cuBLASLt's int8 GEMM wants more than 16 rows: round up to 32s
        return (torch._int_mm(q, self.weight.t())[:m].float() * self.out_scale + self.bias).to(dtype)

    def epilogue(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale [out], bias [out]) FP32 that turn this GEMM's accumulator into its output (qgemm's epilogue)."""
        return self.out_scale, self.bias

    def input_mult(self, n: int) -> torch.Tensor:
        """[n] FP32: what multiplies this layer's input before rounding (1 / (smoothing x scale))."""
        return self.x_mult


def _ffn_fused(ffn1, ffn2, x2: torch.Tensor) -> torch.Tensor:
    """FFN2(GELU(FFN1(x2))) for a pair of 8-bit layers, FFN1 in our kernel with bias, tanh GELU and FFN2's input
    quantization in its epilogue: FFN2 reads the codes, the [tokens, ffn] activation is written once, in 8 bits."""
    scale, bias = ffn1.epilogue()
    codes = qgemm.qmm_gelu_q(ffn1.codes(x2), ffn1.weight, scale, bias, ffn2.input_mult(ffn1.weight.shape[0]), ffn1.kind)
    return ffn2.from_codes(codes, x2.dtype) if ffn2.kind == "int8" else ffn2.from_codes(codes)


# INT8 pairs take the fused FFN too (the same kernel with an int32 accumulator and INT8 codes out, rounded half to even as
# torch.round; checked in Triton's CPU interpreter): scripts/fusion_ab.py's int8_dynamic / int8_ffn_fused are its A/B.
INT8_FUSED_FFN = True
# Tokens from which a fusable pair takes the fused FFN, per kind. FP8: 1,024, the smallest size measured (8 texts x 128
# tokens: the fused FFN 1.16x the unfused engine on an H100, scripts/fusion_ab.py --fused-min-rows 1, results/h100/
# 2026-12-07g/; 1.05x at 64 x 32 in 2026-12-07c). INT8: qgemm's, where its other GEMMs leave cuBLASLt for our kernel too.
FUSED_FFN_MIN_ROWS = {"fp8": 1024, "int8": qgemm.MIN_ROWS}


def _ffn_fusable(ffn1, ffn2) -> bool:
    """Both FFN layers 8-bit of one kind (FP8 with static scales: the epilogue quantizes at FFN2's constant scale)."""
    if isinstance(ffn1, Fp8Linear) and isinstance(ffn2, Fp8Linear):
        return ffn1.x_scale is not None and ffn2.x_scale is not None
    return INT8_FUSED_FFN and isinstance(ffn1, Int8Linear) and isinstance(ffn2, Int8Linear)


def _linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """gelu(x @ weight.T + bias) for x [M, K]: one cuBLASLt GEMM with a bias+GELU (tanh) epilogue for 16-bit CUDA
    tensors, the exact GELU after the GEMM otherwise."""
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
        return torch._addmm_activation(bias, x, weight.t(), use_gelu=True)
    return F.gelu(F.linear(x, weight, bias))


# one registration per process: this file is imported as enc2triton.runtime.torch_model and, in a Triton model folder,
# as enc2triton_torch_model
if hasattr(torch.ops.enc2triton, "linear_gelu"):
    linear_gelu = torch.ops.enc2triton.linear_gelu
else:
    linear_gelu = torch.library.custom_op("enc2triton::linear_gelu", mutates_args=())(_linear_gelu)

    @linear_gelu.register_fake
    def _(x, weight, bias):
        return x.new_empty(x.shape[0], weight.shape[0])


class Layer(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        h = cfg.hidden
        self.heads = cfg.heads
        self.gelu = "separate"  # GELU_MODES; set_gelu
        self.qkv, self.o = nn.Linear(h, 3 * h), nn.Linear(h, h)
        self.ffn1, self.ffn2 = nn.Linear(h, cfg.ffn), nn.Linear(cfg.ffn, h)
        self.norm1, self.norm2 = nn.LayerNorm(h, eps=cfg.eps), nn.LayerNorm(h, eps=cfg.eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        qkv = self.qkv(x).view(b, s, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        ctx = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask_bias)
        x = self.norm1(x + self.o(ctx.transpose(1, 2).reshape(b, s, h)).to(x.dtype))
        fusable = self.gelu == "epilogue" and qgemm.ENABLED and x.is_cuda and _ffn_fusable(self.ffn1, self.ffn2)
        if self.gelu == "epilogue" and type(self.ffn1) is nn.Linear:
            a = linear_gelu(x.reshape(b * s, h), self.ffn1.weight, self.ffn1.bias).view(b, s, -1)
        elif fusable and b * s >= FUSED_FFN_MIN_ROWS[self.ffn1.kind]:
            return self.norm2(x + _ffn_fused(self.ffn1, self.ffn2, x.reshape(b * s, h)).view(b, s, h).to(x.dtype))
        else:  # below FUSED_FFN_MIN_ROWS a fusable pair takes the fused kernel's tanh GELU too: one formula at every size
            a = F.gelu(self.ffn1(x), approximate="tanh" if fusable else "none")
        return self.norm2(x + self.ffn2(a).to(x.dtype))


class Encoder(nn.Module):
    """(last_hidden_state, sentence_embedding) in FP32, computed in `dtype`; the pooling as in the ONNX graph."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.word = nn.Embedding(cfg.vocab, cfg.hidden)
        self.position = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.token_type = nn.Embedding(cfg.type_vocab, cfg.hidden) if cfg.type_vocab else None
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("input_ids", "attention_mask", "token_type_ids") if self.token_type is not None else ("input_ids", "attention_mask")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word(input_ids) + self.position(pos)[None]
        if self.token_type is not None:
            x = x + self.token_type(token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids))
        x = self.norm(x)
        # additive mask as Hugging Face builds it: a fully padded row attends uniformly instead of giving NaN
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, mask_bias)
        hidden = x.float()
        m = attention_mask[..., None].float()
        return hidden, (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def from_hf(hf_model) -> Encoder:
    """An FP32 Encoder with the Hugging Face model's weights (Q, K, V concatenated into one layer)."""
    cfg = EncoderConfig.from_hf(hf_model.config)
    sd = hf_model.state_dict()
    enc = Encoder(cfg)
    emb = "embeddings."
    state = {"word.weight": sd[emb + "word_embeddings.weight"], "position.weight": sd[emb + "position_embeddings.weight"],
             "norm.weight": sd[emb + "LayerNorm.weight"], "norm.bias": sd[emb + "LayerNorm.bias"]}
    if cfg.type_vocab:
        state["token_type.weight"] = sd[emb + "token_type_embeddings.weight"]
    prefix, names = HF_LINEARS[cfg.arch]
    for i in range(cfg.layers):
        p = prefix.format(i=i)
        for part in ("weight", "bias"):
            state[f"layers.{i}.qkv.{part}"] = torch.cat([sd[f"{p}{names[r]}.{part}"] for r in ("q", "k", "v")])
            for ours in ("o", "ffn1", "ffn2"):
                state[f"layers.{i}.{ours}.{part}"] = sd[f"{p}{names[ours]}.{part}"]
            for ours, theirs in zip(("norm1", "norm2"), HF_NORMS[cfg.arch]):
                state[f"layers.{i}.{ours}.{part}"] = sd[f"{p}{theirs}.{part}"]
    enc.load_state_dict(state)
    return enc.eval()


def hf_linear_path(arch: str, layer: int, role: str) -> str:
    """The Hugging Face module path of one linear layer (what the ONNX export names its MatMul after)."""
    prefix, names = HF_LINEARS[arch]
    return prefix.format(i=layer) + names[role]


def linears(enc: Encoder):
    """(layer index, our name, module) of every linear layer, in graph order."""
    for i, layer in enumerate(enc.layers):
        for name in ("qkv", "o", "ffn1", "ffn2"):
            yield i, name, getattr(layer, name)


def _linear_inputs(enc: Encoder, feeds, device: str, update) -> None:
    """Run the feeds through `enc`, calling update((layer, name), x) with every linear layer's input over the real
    tokens of the batch (padding excluded), in graph order."""
    current: list[torch.Tensor] = []

    def hook(key):
        def fn(_module, args):
            update(key, args[0][current[0]])
        return fn

    handles = [m.register_forward_pre_hook(hook((i, n))) for i, n, m in linears(enc)]
    try:
        for feed in feeds:
            t = {k: torch.as_tensor(v, device=device) for k, v in feed.items()}
            current[:] = [t["attention_mask"].bool()]
            enc(**t)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def input_amax(enc: Encoder, feeds, device: str = "cpu") -> dict[tuple[int, str], float]:
    """|max| of every linear layer's input over the calibration feeds, padding tokens excluded."""
    amax: dict[tuple[int, str], float] = {}

    def update(key, x):
        amax[key] = max(amax.get(key, 0.0), float(x.abs().max()) if x.numel() else 0.0)
    _linear_inputs(enc, feeds, device, update)
    return amax


@torch.no_grad()
def input_hessians(enc: Encoder, feeds, device: str = "cpu") -> dict[tuple[int, str], torch.Tensor]:
    """X^T X (float64, [in, in]) of every linear layer's input over the calibration feeds, padding tokens excluded."""
    hess: dict[tuple[int, str], torch.Tensor] = {}

    def update(key, x):
        x = x.double()
        hess[key] = hess[key] + x.t() @ x if key in hess else x.t() @ x
    _linear_inputs(enc, feeds, device, update)
    return hess


def layout(enc: Encoder) -> dict[str, str]:
    """Which linear layers are quantized, and how: {"layers.0.qkv": "fp8" | "int8" | "dense"} (saved beside the weights)."""
    return {f"layers.{i}.{n}": getattr(m, "kind", "dense") for i, n, m in linears(enc)}


def set_gelu(enc: Encoder, mode: str) -> Encoder:
    """Where every layer's FFN1 GELU runs (GELU_MODES)."""
    if mode not in GELU_MODES:
        raise ValueError(f"gelu {mode!r}: one of {', '.join(GELU_MODES)}")
    for layer in enc.layers:
        layer.gelu = mode
    return enc


def size_rows(enc: nn.Module, rows: int) -> nn.Module:
    """Give every statically scaled Fp8Linear a view of one [rows, 1] tensor of ones and its weight scale times its
    activation scale (non-persistent buffers, after the scales are loaded): row-wise _scaled_mm then takes ones[:M] as
    the activation's scale, a view, where materializing the static scale as [M, 1] costs a kernel per GEMM per call
    (at 1,024 tokens on an H100: 24 launches, 25 us of kernel time, of the 84 us FP8's pointwise kernels take per call
    against FP16's 1; results/h100/2026-12-07f/; folded, 1.04x at 32 x 128 in 2026-12-07g). torch_build (--fp8-folded,
    the default) calls it before compiling and records max_rows, the engine after loading, so the compile cache
    matches; M past `rows` takes the materializing path."""
    static = [m for m in enc.modules() if isinstance(m, Fp8Linear) and m.x_scale is not None]
    if not static:
        return enc
    ones = torch.ones(rows, 1, dtype=torch.float32, device=static[0].weight.device)
    for m in static:
        m.register_buffer("row_ones", ones, persistent=False)
        m.register_buffer("xw_scale", (m.x_scale * m.w_scale).float().contiguous(), persistent=False)
    return enc


def restore(config: dict, dtype: str, kinds: dict[str, str], state: dict, gelu: str = "separate") -> Encoder:
    """The module a build saved: the architecture, its dtype, the quantized layers' places, where GELU runs, then the
    saved tensors."""
    enc = set_gelu(Encoder(EncoderConfig(**config)).to(getattr(torch, dtype)), gelu)
    for i, name, lin in list(linears(enc)):
        kind = kinds[f"layers.{i}.{name}"]
        if kind == "fp8":  # placeholders of the right shapes (a static scale where one was saved); load_state_dict fills them
            static = f"layers.{i}.{name}.x_scale" in state
            setattr(enc.layers[i], name, Fp8Linear(lin.weight, lin.bias, amax=1.0 if static else None))
        elif kind == "int8":
            setattr(enc.layers[i], name, Int8Linear(lin.weight, lin.bias, 1.0))
    enc.load_state_dict(state)
    return enc.eval()


def to_fp8(enc: Encoder, codes: dict[tuple[int, str], torch.Tensor] | None = None, keep=(),
           amax: dict[tuple[int, str], float] | None = None) -> Encoder:
    """BF16 encoder whose linear layers are Fp8Linear (row-wise scaled FP8 GEMMs need a BF16 epilogue), with the weight
    codes in `codes` (fp8_gptq; a layer not there rounds to nearest) and the static activation scales from `amax`
    (input_amax; None: per-token dynamic scales); the layers in `keep` stay BF16 nn.Linear. The weight scales come from
    the weights as given (FP32 from from_hf), as fp8_gptq's do, not from their BF16 copy."""
    keep, codes = set(keep), codes or {}
    fp8 = {(i, name): Fp8Linear(lin.weight, lin.bias, codes.get((i, name)), None if amax is None else amax[(i, name)])
           for i, name, lin in linears(enc) if (i, name) not in keep}
    out = enc.to(torch.bfloat16)  # before the Fp8Linear go in: .to(dtype) would cast their E4M3 and FP32 buffers too
    for (i, name), f in fp8.items():
        setattr(out.layers[i], name, f)
    return out


def to_int8(enc: Encoder, plan: dict[tuple[int, str], dict | None]) -> Encoder:
    """FP16 encoder whose linear layers in `plan` are Int8Linear ({"clip": c, "smooth": tensor | None}); None keeps FP16."""
    out = enc.half()
    for i, name, lin in list(linears(out)):
        p = plan.get((i, name))
        if p is not None:
            setattr(out.layers[i], name, Int8Linear(lin.weight, lin.bias, p["clip"], p.get("smooth")))
    return out
