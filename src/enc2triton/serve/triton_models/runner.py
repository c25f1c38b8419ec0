"""Triton Python-backend runner for one variant: the engine named by the config's `runtime` parameter
(ONNX Runtime with the CUDA EP on a GPU instance and the CPU EP otherwise, a TensorRT engine, or a
PyTorch package), through the project's engine interface.

Used where the server lacks the native `onnxruntime_onnx` / `tensorrt_plan` backends (the PyPI
tritonserver has only the Python backend). Copied as <model>/1/model.py, with the engine module beside
it as enc2triton_engines.py: the model folder is self-contained. Its phases (reading requests, the engine's copies and
GPU time, writing responses) are custom metrics on the server's /metrics (enc2triton_stage_metrics.py).

A fused model (config input TEXT) is the same runner with the tokenizer in front (enc2triton_tokenizer.py beside it):
the texts of every request in the dynamic batch are tokenized in one Rust call and run in the same execute, so a
request crosses the server and the stub once, not twice as through an ensemble.
"""
import json
import os
import sys
import time

for _p in os.environ.get("ENC2TRITON_SYS_PATH", "").split(os.pathsep):
    if _p and _p not in sys.path:
        sys.path.append(_p)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np

import enc2triton_engines as engines
try:
    from enc2triton_stage_metrics import StageMetrics  # in a Triton model folder
except ImportError:
    from enc2triton.serve.triton_models.stage_metrics import StageMetrics

try:
    import triton_python_backend_utils as pb_utils
except ImportError:
    pb_utils = None


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.dirname(os.path.abspath(__file__))
        use_gpu = args.get("model_instance_kind") == "GPU"
        device_id = int(args.get("model_instance_device_id") or 0)
        artifact = os.path.join(here, params["artifact"])
        self.runner = engines.open_engine(params.get("runtime", "onnxruntime"), artifact, "gpu" if use_gpu else "cpu", device_id,
                                          int(params.get("intra_op_threads", "0")) or None, serving=True)
        self.input_names = [i["name"] for i in config["input"]]
        self.token_inputs = [n for n in params.get("token_inputs", "").split(",") if n] or self.input_names
        self.vocab_size = int(params.get("vocab_size", "0")) or None
        self.max_length = int(params.get("max_length", "0")) or None
        self.output_names = [o["name"] for o in config["output"]]
        self.output_dtypes = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]}
        self.metrics = StageMetrics(args["model_name"])
        # the engine plans its calls by each row's real length (sentence embeddings): requests of any width merge
        self.plans_by_length = hasattr(self.runner, "length_groups") and "attention_mask" in self.input_names
        self.tokenizer = self._tokenizer(config, params, here) if config["input"][0]["data_type"] == "TYPE_STRING" else None
        # The model log shows which provider really runs (a CPU fallback is otherwise silent).
        print(f"[{args['model_name']}] {params.get('runtime', 'onnxruntime')} providers: {self.runner.providers}", flush=True)
        if hasattr(self.runner, "warmup"):  # CUDA graphs for the usual serving shapes, before the first request
            t0 = time.perf_counter()
            # token models can be asked for last_hidden_state (perf_analyzer asks for every output); text models never are
            n = self.runner.warmup(hidden=self.tokenizer is None and "last_hidden_state" in self.output_names)
            print(f"[{args['model_name']}] warm-up: {n} CUDA graphs in {time.perf_counter() - t0:.1f} s", flush=True)

    @staticmethod
    def _tokenizer(config, params, here):
        """The fused model's tokenizer. Its instances are few (each holds a CUDA context), so each tokenizes a batch on
        several Rust threads; set before `tokenizers` is imported, which reads them once."""
        threads = int(params.get("tokenizer_threads", "1"))
        if threads > 1:
            os.environ["TOKENIZERS_PARALLELISM"] = "true"
            os.environ["RAYON_NUM_THREADS"] = str(threads)
        from enc2triton_tokenizer import TextTokenizer

        return TextTokenizer(os.path.join(here, params.get("tokenizer_dir", "tokenizer")), params["token_inputs"].split(","),
                             int(params["max_length"]), [b for b in params.get("buckets", "").split(",") if b])

    def _wanted(self, request):
        """Only the outputs the caller asked for: last_hidden_state is large and often unwanted."""
        try:
            names = set(request.requested_output_names())
        except AttributeError:  # older Python backend
            names = set()
        return tuple(n for n in self.output_names if n in names) or tuple(self.output_names)

    def check(self, feed):
        """Refuse what ONNX Runtime would silently get wrong (negative ids wrap around) or fail on."""
        shapes = {feed[n].shape for n in self.input_names}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"inputs must be [batch, sequence] of one shape, got {[list(feed[n].shape) for n in self.input_names]}")
        seq = feed[self.input_names[0]].shape[1]
        if seq < 1 or (self.max_length and seq > self.max_length):
            raise ValueError(f"sequence length {seq} outside 1..{self.max_length}")
        ids = feed.get("input_ids")
        if ids is not None and ids.size and self.vocab_size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids (input_ids) must be in 0..{self.vocab_size - 1}, got {ids.min()}..{ids.max()}")
        mask = feed.get("attention_mask")
        if mask is not None and mask.size and (mask.min() < 0 or mask.max() > 1):
            raise ValueError("attention_mask must hold 0 and 1 only")

    def _run(self, feeds, idx, names, responses, merged=None):
        """Requests `idx` as one engine batch (`merged`: their feeds already as one, in this order), a response each."""
        t0 = time.perf_counter()
        if merged is None:
            merged = {n: np.concatenate([feeds[i][n] for i in idx]) if len(idx) > 1 else feeds[idx[0]][n] for n in self.token_inputs}
        t1 = time.perf_counter()
        out = self.runner.run(merged, list(names))
        t2 = time.perf_counter()
        start = 0
        for i in idx:
            size = feeds[i][self.token_inputs[0]].shape[0]
            tensors = [pb_utils.Tensor(n, out[n][start:start + size].astype(self.output_dtypes[n], copy=False)) for n in names]
            responses[i] = pb_utils.InferenceResponse(tensors)
            start += size
        m = self.metrics
        m.time("merge", t1 - t0)
        m.time("respond", time.perf_counter() - t2)
        timing = getattr(self.runner, "timing", None)
        if timing:  # the engine's own split: host staging, copies and GPU (CUDA events), the wait for them
            self.runner.timing = None
            for phase in ("host_in", "h2d", "gpu", "d2h", "wait", "host_out"):
                m.time(phase, timing[phase])
            m.count("padded_rows", timing["rows"])
            m.count("padded_tokens", timing["tokens"])
            m.count("graph_calls", timing.get("calls", 1))  # one per length bucket of the batch
        else:
            m.time("engine", t2 - t1)
        rows, seq = merged[self.token_inputs[0]].shape
        m.count("engine_calls")
        m.count("rows", rows)
        m.count("tokens", rows * seq)

    def _read_texts(self, requests, responses):
        """Each valid request's texts tokenized together (one Rust call over the whole batch, padded to the longest's
        bucket), then cut back into one feed per request: the engine path below is the token model's."""
        tok, texts, spans = self.tokenizer, [], []
        for i, request in enumerate(requests):
            try:
                raw = pb_utils.get_input_tensor_by_name(request, self.input_names[0]).as_numpy()
                if raw.ndim != 2 or raw.shape[1] != 1:
                    raise ValueError(f"{self.input_names[0]} must have shape [batch, 1], got {list(raw.shape)}")
                items = tok.decode(raw)
            except ValueError as e:  # InputError included: an empty request or broken UTF-8 fails alone
                responses[i] = _error(str(e), "INVALID_ARG")
                continue
            spans.append((i, len(texts), len(texts) + len(items)))
            texts.extend(items)
        if not texts:
            return {}, None, 0.0
        t0 = time.perf_counter()
        feed = tok(texts)
        seconds = time.perf_counter() - t0
        self.metrics.time("tokenize", seconds)
        self.metrics.count("texts", len(texts))
        return {i: {n: feed[n][a:b] for n in self.token_inputs} for i, a, b in spans}, feed, seconds

    def execute(self, requests):
        if self.tokenizer is not None:
            return self._execute_texts(requests)
        # Requests of one length run as one batch; with ragged batching (the default) the dynamic batcher also merges
        # requests of different lengths, which run as one group per length; different requested outputs likewise. An
        # engine that plans its calls by each row's length takes the sentence-embedding requests of every length as one.
        t_start = time.perf_counter()
        responses = [None] * len(requests)
        groups, feeds = {}, {}
        for i, request in enumerate(requests):
            try:
                feed = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}
                self.check(feed)
            except ValueError as e:
                responses[i] = _error(str(e), "INVALID_ARG")
                continue
            feeds[i] = feed
            names = self._wanted(request)
            any_width = self.plans_by_length and "last_hidden_state" not in names
            key = (None if any_width else tuple(feed[n].shape[1:] for n in self.input_names), names)
            groups.setdefault(key, []).append(i)
        self.metrics.time("read", time.perf_counter() - t_start)
        for (shape, _), idx in groups.items():
            if shape is None:
                self._one_width(feeds, idx)
        self._run_groups(feeds, [(names, idx) for (_, names), idx in groups.items()], responses)
        return self._done(t_start, requests, responses)

    def _one_width(self, feeds, idx):
        """Requests `idx` padded to the widest of them (pad id 0, mask 0), to run as one batch: an engine that trims every
        row to its own length bucket (TorchEngine.length_groups) then plans its calls over all the rows at once, not once
        per width. Through an ensemble the tokenizer pads each of its executions to a width of its own, so one engine
        execution of a dozen requests held several widths, each run on its own (H100, 16 texts per request: 1.8 runs and
        4.3 graph calls per execution)."""
        width = max(feeds[i][self.token_inputs[0]].shape[1] for i in idx)
        for i in idx:
            w = feeds[i][self.token_inputs[0]].shape[1]
            if w < width:
                feeds[i] = {n: np.pad(v, ((0, 0), (0, width - w))) for n, v in feeds[i].items()}

    def _execute_texts(self, requests):
        t_start = time.perf_counter()
        responses = [None] * len(requests)
        feeds, whole, tokenizing = self._read_texts(requests, responses)
        groups = {}
        for i in feeds:  # one shape (the tokenizer padded them all alike); grouped by the outputs asked for
            groups.setdefault(self._wanted(requests[i]), []).append(i)
        self.metrics.time("read", time.perf_counter() - t_start - tokenizing)
        # one group (the usual case) is the whole tokenized batch as it is: no cutting up and merging back
        self._run_groups(feeds, list(groups.items()), responses, whole if len(groups) == 1 else None)
        return self._done(t_start, requests, responses)

    def _run_groups(self, feeds, groups, responses, merged=None):
        for names, idx in groups:
            try:
                self._run(feeds, idx, names, responses, merged)
            except Exception:  # rerun one by one: only the culprit fails, the model stays up
                for i in idx:
                    try:
                        self._run(feeds, [i], names, responses)
                    except Exception as e:
                        responses[i] = _error(f"inference failed: {e}", "INTERNAL")

    def _done(self, t_start, requests, responses):
        self.metrics.time("execute", time.perf_counter() - t_start)
        self.metrics.count("executions")
        self.metrics.count("requests", len(requests))
        self.metrics.tick()
        return responses

    def finalize(self):
        self.metrics.flush()


def _error(message, kind):
    code = getattr(pb_utils.TritonError, kind, None)
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message))
