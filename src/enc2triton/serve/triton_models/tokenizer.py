"""Triton Python-backend tokenizer: TEXT (BYTES, one string per batch item) -> the encoder's inputs.

Self-contained: copied into the model repository as tokenizer/1/model.py next to the tokenizer files.
A bad request (invalid UTF-8) fails alone. The texts of one execute are padded to the longest,
rounded up to a length bucket: the model's dynamic batcher can only merge requests of equal shape.
"""
import itertools
import json
import os
import sys
import time

# The stub runs Python in isolated mode (PYTHONPATH ignored): the launcher passes extra paths here.
for _p in os.environ.get("ENC2TRITON_SYS_PATH", "").split(os.pathsep):
    if _p and _p not in sys.path:
        sys.path.append(_p)

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Instances are the parallelism: one Rust thread pool per instance process on every core would oversubscribe them.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # unit tests import this module without a server
    pb_utils = None

try:
    from enc2triton_stage_metrics import StageMetrics  # in a Triton model folder
except ImportError:
    from enc2triton.serve.triton_models.stage_metrics import StageMetrics


class InputError(ValueError):
    """The request's input is unusable; the message goes back to the client."""


class TextTokenizer:
    """The Hugging Face fast tokenizer run through the `tokenizers` library directly: the same Rust
    code and files as transformers' AutoTokenizer, without importing transformers (or torch) in the
    server's Python."""

    def __init__(self, tokenizer_dir, output_names, max_length, buckets=()):
        from tokenizers import Tokenizer

        # Never network: the files were copied into the model directory.
        self.tok = Tokenizer.from_file(os.path.join(str(tokenizer_dir), "tokenizer.json"))
        with open(os.path.join(str(tokenizer_dir), "tokenizer_config.json")) as f:
            pad_token = json.load(f).get("pad_token") or "[PAD]"
        self.pad_token_id = self.tok.token_to_id(pad_token)
        if self.pad_token_id is None:
            raise ValueError(f"pad token {pad_token!r} is not in the vocabulary of {tokenizer_dir}")
        self.max_length = int(max_length)
        self.tok.enable_truncation(self.max_length)
        self.tok.no_padding()
        self.output_names = list(output_names)
        self.buckets = sorted(int(b) for b in buckets if int(b) <= self.max_length)
        self._encode = _batch_encoder(self.tok)
        self.ascii = _AsciiPath.of(self.tok)

    def encode(self, texts):
        """Encodings of `texts`, in order: plain ASCII texts through the normalizer-free copy (when the tokenizer has
        one), the rest through the full tokenizer."""
        fast = self.ascii
        if fast is None:
            return self._encode(texts)
        ready = [fast.prepare(t) for t in texts]
        plain = [i for i, r in enumerate(ready) if r is not None]
        if len(plain) == len(texts):
            return fast.encode(ready)
        out = [None] * len(texts)
        if plain:
            for i, e in zip(plain, fast.encode([ready[i] for i in plain])):
                out[i] = e
        rest = [i for i, r in enumerate(ready) if r is None]
        for i, e in zip(rest, self._encode([texts[i] for i in rest])):
            out[i] = e
        return out

    def decode(self, raw):
        """BYTES tensor items -> list of str; invalid UTF-8 is an error, not silently replaced."""
        flat = np.asarray(raw, dtype=object).reshape(-1)
        if flat.size == 0:
            raise InputError("TEXT is empty: send at least one string")
        texts = []
        for i, item in enumerate(flat):
            if isinstance(item, str):
                texts.append(item)
                continue
            try:
                texts.append(bytes(item).decode("utf-8"))
            except UnicodeDecodeError as e:
                raise InputError(f"TEXT item {i} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
        return texts

    def pad_length(self, longest):
        for b in self.buckets:
            if b >= longest:
                return b
        return min(max(longest, 1), self.max_length)

    def __call__(self, texts):
        """One Rust batch call for all texts, padded to the longest rounded up to a bucket. The rows are written in one
        numpy scatter per output (a Python loop over rows cost ~15% of a 256-text batch), the mask from the lengths."""
        encs = self.encode(texts)
        ids = [e.ids for e in encs]
        lengths = np.fromiter(map(len, ids), np.int64, len(ids))
        real = np.arange(self.pad_length(int(lengths.max())))[None, :] < lengths[:, None]
        total = int(lengths.sum())
        out = {}
        for name in self.output_names:
            if name == "attention_mask":  # no padding inside the encodings: every token is real
                out[name] = real.astype(np.int64)
                continue
            rows = ids if name == "input_ids" else [e.type_ids for e in encs]
            a = np.full(real.shape, self.pad_token_id if name == "input_ids" else 0, dtype=np.int64)
            a[real] = np.fromiter(itertools.chain.from_iterable(rows), np.int64, total)  # row-major: each row's tokens in order
            out[name] = a
        return out


def _batch_encoder(tok):
    """The same ids without character offsets (tokenizers >= 0.21): a third less time per batch, measured."""
    return getattr(tok, "encode_batch_fast", tok.encode_batch)


class _AsciiPath:
    """BERT's normalizer done in Python for ASCII texts, then the same tokenizer without it: the same ids, about 30% less
    tokenizing time (BertNormalizer tracks character alignments in Rust for every text; 226 real texts on one core:
    7.1 -> 4.9 ms). On ASCII its accent stripping and CJK spacing do nothing; what is left is str.lower() and clean_text's
    table (NUL, DEL and the control characters dropped, tab / newline / carriage return to a space). Only for a plain
    BertNormalizer, and only for texts without an added token's text in them ([CLS], [UNK]...: those are matched before
    normalizing, in their own case); every other text takes the full path."""

    CLEAN = {**{c: None for c in range(32)}, 9: " ", 10: " ", 13: " ", 127: None}

    def __init__(self, tok, lowercase: bool, clean: bool, added: tuple[str, ...]):
        self.encode = _batch_encoder(tok)
        self.lowercase, self.table, self.added = lowercase, self.CLEAN if clean else None, added

    @classmethod
    def of(cls, tok):
        text = tok.to_str()
        spec = json.loads(text)
        norm = spec.get("normalizer") or {}
        if norm.get("type") != "BertNormalizer":
            return None
        from tokenizers import Tokenizer

        bare = Tokenizer.from_str(text)  # truncation and padding settings come along
        bare.normalizer = None
        added = tuple(t["content"].lower() for t in spec.get("added_tokens", ()) if t.get("content"))
        return cls(bare, bool(norm.get("lowercase", True)), bool(norm.get("clean_text", True)), added)

    def prepare(self, text: str) -> str | None:
        """What BertNormalizer makes of `text`, or None where this path does not apply."""
        if not text.isascii():
            return None
        low = text.lower()
        if any(a in low for a in self.added):
            return None
        text = low if self.lowercase else text
        return text.translate(self.table) if self.table is not None else text


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.dirname(os.path.abspath(__file__))
        self.output_names = [o["name"] for o in config["output"]]
        self.tokenizer = TextTokenizer(
            os.path.join(here, params.get("tokenizer_dir", "tokenizer")),
            self.output_names,
            int(params["max_length"]),
            [b for b in params.get("buckets", "").split(",") if b],
        )
        self.input_name = config["input"][0]["name"]
        self.metrics = StageMetrics(args["model_name"])

    def execute(self, requests):
        # All valid requests of this execute are tokenized together and padded to one length, so the
        # model's dynamic batcher can merge every one of them; a bad request fails alone.
        t0 = time.perf_counter()
        responses = [None] * len(requests)
        texts, spans = [], []
        for i, request in enumerate(requests):
            try:
                raw = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
                if raw.ndim != 2 or raw.shape[1] != 1:
                    raise InputError(f"TEXT must have shape [batch, 1], got {list(raw.shape)}")
                items = self.tokenizer.decode(raw)
                spans.append((i, len(texts), len(texts) + len(items)))
                texts.extend(items)
            except InputError as e:
                responses[i] = self._error(str(e))
        t1 = time.perf_counter()
        m = self.metrics
        if texts:
            feed = self.tokenizer(texts)
            t2 = time.perf_counter()
            for i, a, b in spans:
                responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor(n, feed[n][a:b]) for n in self.output_names])
            m.time("tokenize", t2 - t1)
            m.time("respond", time.perf_counter() - t2)
            m.count("texts", len(texts))
            m.count("tokens", feed[self.output_names[0]].size)
        m.time("read", t1 - t0)
        m.time("execute", time.perf_counter() - t0)
        m.count("executions")
        m.count("requests", len(requests))
        m.tick()
        return responses

    def finalize(self):
        self.metrics.flush()

    @staticmethod
    def _error(message):
        code = getattr(pb_utils.TritonError, "INVALID_ARG", None)  # -> HTTP 400 where supported
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message))
