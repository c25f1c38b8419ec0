"""Triton Python-backend tokenizer: TEXT (BYTES, one string per batch item) -> the encoder's inputs.

Self-contained: copied into the model repository as tokenizer/1/model.py next to the tokenizer files.
Each request is tokenized on its own, so a bad request (invalid UTF-8) fails alone. A request's batch
is padded to its longest item, rounded up to a length bucket: the model's dynamic batcher can only
merge requests of equal shape, and buckets make that common.
"""
import json
import os
import sys

# The stub runs Python in isolated mode (PYTHONPATH ignored): the launcher passes extra paths here.
for _p in os.environ.get("ENC2TRITON_SYS_PATH", "").split(os.pathsep):
    if _p and _p not in sys.path:
        sys.path.append(_p)

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # unit tests import this module without a server
    pb_utils = None


class InputError(ValueError):
    """The request's input is unusable; the message goes back to the client."""


class TextTokenizer:
    def __init__(self, tokenizer_dir, output_names, max_length, buckets=()):
        from transformers import AutoTokenizer

        # Never network: the files were copied into the model directory.
        self.tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        self.output_names = list(output_names)
        self.max_length = int(max_length)
        self.buckets = sorted(int(b) for b in buckets if int(b) <= self.max_length)

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
        enc = self.tok(texts, truncation=True, max_length=self.max_length)
        longest = max(len(ids) for ids in enc["input_ids"])
        enc = self.tok.pad(enc, padding="max_length", max_length=self.pad_length(longest))
        return {n: np.asarray(enc[n], dtype=np.int64) for n in self.output_names}


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

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                raw = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
                batch = raw.shape[0]
                feed = self.tokenizer(self.tokenizer.decode(raw))
                if feed["input_ids"].shape[0] != batch:
                    raise InputError(f"TEXT must hold one string per batch item, got shape {list(raw.shape)}")
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, feed[n]) for n in self.output_names]))
            except InputError as e:
                code = getattr(pb_utils.TritonError, "INVALID_ARG", None)  # -> HTTP 400 where supported
                err = pb_utils.TritonError(str(e), code) if code is not None else pb_utils.TritonError(str(e))
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=err))
        return responses
