"""One wrapper per inference runtime, shared by the Triton runner and the engine benchmark.

Every engine has `inputs`, `outputs` and `providers` (what really runs, for logs), `run(feed, outputs)` for
serving (numpy in, numpy out) and `prepare(feed)` for timing (inputs placed on the device once; returns a
step to call repeatedly). Standalone on purpose: numpy and the runtime's own package only, no enc2triton
imports, because the repository generator copies this file next to the runner's model.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class EngineError(RuntimeError):
    """The engine cannot run as asked (missing provider, unreadable engine, wrong GPU); the message says why."""


def ort_session(model, providers=None, threads: int | None = None, optimize: bool = True, options=None):
    """An ONNX Runtime session on a path or an in-memory ModelProto, quiet (warnings off).

    optimize=False runs the graph exactly as written (no fusions); `options` are extra SessionOptions attributes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for k, v in (options or {}).items():
        setattr(opts, k, v)
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, opts, providers=providers or ["CPUExecutionProvider"])


class OrtEngine:
    """ONNX Runtime: CUDA EP on a GPU (inputs bound on the device for timing), CPU EP otherwise.

    serving=True sets what a long-running CPU server needs: every (batch, length bucket) the batcher forms is a new
    shape, and ORT's CPU arena keeps each new high-water mark (+18% RSS over a 10-minute soak). Shrinking the arena
    after every run returns it and keeps most of its speed (no arena at all cost up to 28% on the INT8 graph:
    scripts/arena_ab.py, results/cpu_arena/)."""

    def __init__(self, path: Path, device: str = "cpu", device_id: int = 0, threads: int | None = None, serving: bool = False):
        import onnxruntime as ort

        self.ort, self.path, self.device, self.device_id, self.threads = ort, str(path), device, device_id, threads
        self.run_options = ort.RunOptions()
        options = {}
        if serving and device != "gpu":
            options["enable_mem_pattern"] = False
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        if device == "gpu" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EngineError(f"a GPU was asked for but onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                              f"(has {ort.get_available_providers()}): install onnxruntime-gpu")
        self.session = ort_session(self.path, self._providers(), threads, options=options)
        self.providers = self.session.get_providers()
        if device == "gpu" and self.providers[0] != "CUDAExecutionProvider":
            raise EngineError(f"CUDA EP requested but the session got {self.providers}")
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def _providers(self, **cuda_options):
        if self.device != "gpu":
            return ["CPUExecutionProvider"]
        return [("CUDAExecutionProvider", {"device_id": self.device_id, **cuda_options}), "CPUExecutionProvider"]

    def run(self, feed: dict, outputs) -> dict:
        return dict(zip(outputs, self.session.run(list(outputs), {n: feed[n] for n in self.inputs}, self.run_options)))

    def prepare(self, feed: dict, cuda_graph: bool = False):
        feed = {n: feed[n] for n in self.inputs}
        if self.device != "gpu":
            return lambda: self.session.run(self.outputs, feed)
        sess = ort_session(self.path, self._providers(enable_cuda_graph="1"), self.threads) if cuda_graph else self.session
        binding = sess.io_binding()
        keep = [self.ort.OrtValue.ortvalue_from_numpy(feed[n], "cuda", self.device_id) for n in self.inputs]
        for n, v in zip(self.inputs, keep):
            binding.bind_ortvalue_input(n, v)
        b, s = feed[self.inputs[0]].shape
        for o in sess.get_outputs():
            if cuda_graph:  # a CUDA graph needs every output at a fixed address: preallocated, one session per shape
                shape = [{"batch": b, "sequence": s}.get(d, d) if isinstance(d, str) else d for d in o.shape]
                v = self.ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", self.device_id)
                keep.append(v)
                binding.bind_ortvalue_output(o.name, v)
            else:
                binding.bind_output(o.name, "cuda", self.device_id)
        if cuda_graph:
            sess.run_with_iobinding(binding)  # captures

        def step():
            sess.run_with_iobinding(binding)
            binding.synchronize_outputs()
            return keep, sess
        return step


class TrtEngine:
    """A TensorRT plan run with torch CUDA tensors (torch ships in NVIDIA's containers)."""

    def __init__(self, path: Path, device_id: int = 0):
        import tensorrt as trt
        import torch

        self.torch, self.device = torch, torch.device("cuda", device_id)
        with open(path, "rb") as f:
            self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise EngineError(f"TensorRT {trt.__version__} cannot deserialize {path}: built by another TensorRT version or for another GPU?")
        self.context = self.engine.create_execution_context()
        self.providers = [f"TensorRT {trt.__version__}"]
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: getattr(torch, np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))).name) for n in names}

    def _bind(self, feed: dict, outputs) -> dict:
        torch = self.torch
        bufs = {n: torch.from_numpy(feed[n]).to(self.device, self.dtypes[n]) for n in self.inputs}
        for n, t in bufs.items():
            self.context.set_input_shape(n, tuple(t.shape))
        for n in outputs:
            bufs[n] = torch.empty(tuple(self.context.get_tensor_shape(n)), dtype=self.dtypes[n], device=self.device)
        for n, t in bufs.items():
            self.context.set_tensor_address(n, t.data_ptr())
        return bufs

    def _execute(self) -> None:
        stream = self.torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineError("TensorRT execution failed")
        stream.synchronize()

    def run(self, feed: dict, outputs) -> dict:
        bufs = self._bind(feed, self.outputs)  # TensorRT wants an address for every output
        self._execute()
        return {n: bufs[n].float().cpu().numpy() for n in outputs}

    def prepare(self, feed: dict):
        bufs = self._bind(feed, self.outputs)

        def step():
            self._execute()
            return bufs
        return step


def open_engine(runtime: str, path: Path, device: str = "cpu", device_id: int = 0, threads: int | None = None,
                serving: bool = False):
    """The engine for a family's runtime name (spec.Family.runtime)."""
    if runtime == "onnxruntime":
        return OrtEngine(path, device, device_id, threads, serving)
    if runtime == "tensorrt":
        if device != "gpu":
            raise EngineError("TensorRT engines need a GPU")
        return TrtEngine(path, device_id)
    raise EngineError(f"unknown runtime {runtime!r}")
