"""Triton Python-backend runner for one precision variant: ONNX Runtime (CUDA EP on a GPU instance,
CPU EP otherwise) or a TensorRT engine through the TensorRT Python runtime.

Used where the server lacks the native `onnxruntime_onnx` / `tensorrt_plan` backends (the PyPI
tritonserver has only the Python backend). Self-contained: copied as <model>/1/model.py.
"""
import json
import os
import sys

for _p in os.environ.get("ENC2TRITON_SYS_PATH", "").split(os.pathsep):
    if _p and _p not in sys.path:
        sys.path.append(_p)

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:
    pb_utils = None


class OrtRunner:
    def __init__(self, path, use_gpu, device_id=0, threads=0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        self.run_options = ort.RunOptions()
        if not use_gpu:
            # Every (batch, length bucket) the batcher forms is a new shape, and ORT's CPU arena keeps each new
            # high-water mark: a long-running server's memory climbed in steps (+18% over a 10-minute soak).
            # Shrinking the arena after every run returns it and keeps most of the arena's speed (no arena at
            # all cost up to 28% on the INT8 graph, shrinking ~10%: scripts/arena_ab.py, results/cpu_arena/).
            opts.enable_mem_pattern = False
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        providers = ["CPUExecutionProvider"]
        if use_gpu:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("instance kind is GPU but this onnxruntime has no CUDAExecutionProvider "
                                   "(install onnxruntime-gpu in the server's Python)")
            providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(path, opts, providers=providers)
        self.providers = self.session.get_providers()
        if use_gpu and self.providers[0] != "CUDAExecutionProvider":
            raise RuntimeError(f"CUDA EP requested but the session got {self.providers}")
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, feed, output_names):
        return dict(zip(output_names, self.session.run(output_names, feed, self.run_options)))


class TrtRunner:
    """Deserializes a plan and runs it with torch CUDA tensors (torch ships in NVIDIA's containers)."""

    def __init__(self, path, device_id=0):
        import tensorrt as trt
        import torch

        self.torch, self.device = torch, torch.device("cuda", device_id)
        logger = trt.Logger(trt.Logger.WARNING)
        with open(path, "rb") as f:
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {path}: built by another TensorRT version or for another GPU?")
        self.context = self.engine.create_execution_context()
        self.providers = [f"TensorRT {trt.__version__}"]
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.dtypes = {n: getattr(torch, np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))).name) for n in names}

    def __call__(self, feed, output_names):
        torch = self.torch
        keep = []
        for name in self.input_names:
            t = torch.from_numpy(feed[name]).to(self.device, self.dtypes[name])
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        out = {}
        for name in output_names:
            t = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name], device=self.device)
            out[name] = t
            self.context.set_tensor_address(name, t.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {n: t.float().cpu().numpy() for n, t in out.items()}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.dirname(os.path.abspath(__file__))
        use_gpu = args.get("model_instance_kind") == "GPU"
        device_id = int(args.get("model_instance_device_id") or 0)
        artifact = os.path.join(here, params["artifact"])
        if params.get("runtime") == "tensorrt":
            self.runner = TrtRunner(artifact, device_id)
        else:
            self.runner = OrtRunner(artifact, use_gpu, device_id, int(params.get("intra_op_threads", "0")))
        self.input_names = [i["name"] for i in config["input"]]
        self.vocab_size = int(params.get("vocab_size", "0")) or None
        self.max_length = int(params.get("max_length", "0")) or None
        self.output_names = [o["name"] for o in config["output"]]
        self.output_dtypes = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]}
        # The model log shows which provider really runs (a CPU fallback is otherwise silent).
        print(f"[{args['model_name']}] {params.get('runtime', 'onnxruntime')} providers: {self.runner.providers}", flush=True)

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

    def _run(self, feeds, idx, names, responses):
        merged = {n: np.concatenate([feeds[i][n] for i in idx]) if len(idx) > 1 else feeds[idx[0]][n] for n in self.input_names}
        out = self.runner(merged, list(names))
        start = 0
        for i in idx:
            size = feeds[i][self.input_names[0]].shape[0]
            tensors = [pb_utils.Tensor(n, out[n][start:start + size].astype(self.output_dtypes[n], copy=False)) for n in names]
            responses[i] = pb_utils.InferenceResponse(tensors)
            start += size

    def execute(self, requests):
        # Requests merged by the dynamic batcher share one shape (the tokenizer buckets lengths), so
        # they run as one batch; different shapes or requested outputs run as separate groups.
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
            key = (tuple(feed[n].shape[1:] for n in self.input_names), self._wanted(request))
            groups.setdefault(key, []).append(i)
        for (_, names), idx in groups.items():
            try:
                self._run(feeds, idx, names, responses)
            except Exception:  # rerun one by one: only the culprit fails, the model stays up
                for i in idx:
                    try:
                        self._run(feeds, [i], names, responses)
                    except Exception as e:
                        responses[i] = _error(f"inference failed: {e}", "INTERNAL")
        return responses


def _error(message, kind):
    code = getattr(pb_utils.TritonError, kind, None)
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message))
