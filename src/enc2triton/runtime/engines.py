"""One wrapper per inference runtime, shared by the Triton runner and the engine benchmark.

Every engine has `inputs`, `outputs` and `providers` (what really runs, for logs), `run(feed, outputs)` for
serving (numpy in, numpy out) and `prepare(feed)` for timing (inputs placed on the device once; returns a
step to call repeatedly). Standalone on purpose: numpy and the runtime's own package only, no enc2triton
imports, because the repository generator copies this file next to the runner's model.py.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

# How a served PyTorch engine call waits for its GPU work: "block" (the thread sleeps until the copy out is done) or
# "spin" (CUDA's default for a process with one context: a core busy-polls the whole GPU time). A Triton server on a GPU
# is host-bound (tokenizing, the Python backend's messages) and each instance is a process of its own, so a spinning
# wait takes a core from the tokenizers and the other instances; the engine benchmark's timing steps are not affected.
GPU_WAIT = os.environ.get("ENC2TRITON_GPU_WAIT", "block")


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

    def prepare(self, feed: dict, cuda_graph: bool = False):
        bufs = self._bind(feed, self.outputs)

        def step():
            self._execute()
            return bufs
        return step


class TorchEngine:
    """A PyTorch engine of torch_build.py: the saved weights rebuilt into our encoder (torch_model.py, copied beside
    this file as enc2triton_torch_model.py), compiled with torch.compile after loading the portable compile cache the
    build saved (so a start pays a trace and cache hits, not a compilation). Serving shapes are padded up to buckets
    (batch buckets x sequence multiples of 16, as the tokenizer pads) and each bucket is replayed as a CUDA graph: one
    launch per request batch instead of hundreds.

    model.json beside the weights says the architecture, dtype, quantized layers, inputs and buckets."""

    def __init__(self, path: Path, device: str = "gpu", device_id: int = 0, threads: int | None = None):
        import json
        import time

        import torch

        if threads and device == "cpu":  # a served CPU instance is a process of its own: its share of the cores, as ORT's
            torch.set_num_threads(threads)

        t0 = time.perf_counter()
        self.torch, path = torch, Path(path)
        self.meta = json.loads(path.with_suffix(".json").read_text())
        if device == "gpu" and not torch.cuda.is_available():
            raise EngineError(f"{path} is a GPU engine but torch {torch.__version__} sees no GPU")
        if (self.meta.get("device") == "cuda") != (device == "gpu"):
            raise EngineError(f"{path} was built for {self.meta.get('device')}, asked to run on {device}")
        self.device = torch.device("cuda", device_id) if device == "gpu" else torch.device("cpu")
        try:
            import enc2triton_torch_model as torch_model  # in a Triton model folder
        except ImportError:
            from enc2triton.runtime import torch_model
        if self.meta.get("format", 1) != torch_model.PACKAGE_FORMAT:
            raise EngineError(f"{path} is a package of format {self.meta.get('format', 1)}, this code reads format "
                              f"{torch_model.PACKAGE_FORMAT}: rebuild it (python -m enc2triton.torch_build --force)")
        if self.meta.get("qgemm_tiles") and device == "gpu":  # the 8-bit kernel's settings it was built (and cached) with
            torch_model.qgemm.use_tiles(self.meta["qgemm_tiles"])
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]  # restore() builds on the CPU: one copy to the device
        module = torch_model.restore(self.meta["config"], self.meta["dtype"], self.meta["layout"], state,
                                     self.meta.get("gelu", "separate")).to(self.device)
        if self.meta.get("max_rows"):  # torch_build --fp8-folded: as it did before compiling
            torch_model.size_rows(module, self.meta["max_rows"])
        self.model, compiled = module, False
        cache = path.with_suffix(".cache")
        if self.meta.get("compile"):
            if cache.exists():
                torch.compiler.load_cache_artifacts(cache.read_bytes())
            self.model, compiled = torch.compile(module, dynamic=True), True
        self.cuda_graphs = device == "gpu"
        self.call_tokens = self.meta.get("call_tokens", 0)  # one engine call's fixed cost, in tokens (length_groups)
        self.inputs = list(self.meta["inputs"])
        self.outputs = ["last_hidden_state", "sentence_embedding"]
        self.providers = [f"torch {torch.__version__} {self.meta['precision']} on {self.device}"
                          + (" torch.compile" + ("" if cache.exists() else " (no compile cache: compiles here)") if compiled else " eager")
                          + (" + CUDA graphs" if self.cuda_graphs else "") + self._kernel_note(torch_model.qgemm, device)]
        self.graphs: dict = {}
        if self.cuda_graphs:
            with torch.cuda.device(self.device):
                self.pool = torch.cuda.graph_pool_handle()
        self.load_seconds = round(time.perf_counter() - t0, 2)

    def _kernel_note(self, qgemm, device: str) -> str:
        """The fused FFN1's kernel settings an 8-bit GPU engine runs, for its providers line (logs, benchmarks)."""
        if not (self.meta.get("qgemm_tiles") and device == "gpu" and self.meta.get("gelu") == "epilogue"):
            return ""
        return ", fused FFN1 kernel " + qgemm.tiles_label(qgemm.tiles_for("qmm_gelu_q", self.meta["precision"], 0, 0))

    # ---- shapes
    def bucket(self, batch: int, seq: int) -> tuple[int, int]:
        """The compiled shape a request runs at: the smallest batch bucket that holds it (or the batch itself past
        the largest), and the sequence rounded up to the multiple the package was compiled for."""
        m = self.meta
        b = next((x for x in m["batch_buckets"] if x >= batch), batch)
        s = -(-seq // m["seq_multiple"]) * m["seq_multiple"]
        return max(b, m["min_batch"]), max(s, m["min_seq"])

    def _padded(self, feed: dict, b: int, s: int) -> dict:
        out = {}
        for n in self.inputs:
            a = np.zeros((b, s), np.int64)  # padding rows/tokens: id 0 ([PAD]), mask 0
            x = feed[n]
            a[:x.shape[0], :x.shape[1]] = x
            out[n] = self.torch.from_numpy(a).to(self.device)
        return out

    # ---- running
    def _graph(self, b: int, s: int, hidden: bool = True):
        """(replay, static inputs, static outputs, pinned host buffers) for one shape, captured on first use. Without
        `hidden` the graph keeps only the sentence embedding as its output: last_hidden_state ([b, s, hidden], 2.3 GB
        over DistilBERT-base's 140 serving shapes) goes back to the pool the graphs share."""
        key = (b, s, hidden)
        if key in self.graphs:
            return self.graphs[key]
        torch = self.torch
        static = self._padded({n: np.zeros((b, s), np.int64) for n in self.inputs}, b, s)
        static["attention_mask"].fill_(1)
        # page-locked staging: copies in both directions run as DMA, asynchronously, without a pageable bounce
        host = {n: torch.zeros((b, s), dtype=torch.int64, pin_memory=True) for n in self.inputs}
        with torch.inference_mode(), torch.cuda.device(self.device):  # capture on this engine's GPU, not GPU 0
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm up outside the capture (allocator, cuBLAS workspaces)
                    self.model(*[static[n] for n in self.inputs])
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                outs = self.model(*[static[n] for n in self.inputs])
        if not hidden:  # its memory is free for the next capture; only this graph's replay writes it
            outs = (None, outs[1])
        self.graphs[key] = (graph, static, outs, host)
        return self.graphs[key]

    def warm_shapes(self) -> list[tuple[int, int]]:
        """The serving buckets captured at load: sentence-embedding graphs of at most `warm_tokens` tokens (a larger
        shape, or one asked for last_hidden_state, is captured on first use: each instance's pool holds the largest
        graph's activations, and 18 instances of 140 graphs up to 256 x 512 did not fit an 80 GB H100)."""
        limit = self.meta.get("warm_tokens") or float("inf")
        return sorted({self.bucket(b, s) for b in self.meta["batch_buckets"] for s in self.meta["seq_buckets"] if b * s <= limit})

    def warmup(self, hidden: bool = False) -> int:
        """Compile (from the cache) and capture the usual serving buckets up front, at model load, not on the first
        unlucky request (with `hidden`, the graphs that also return last_hidden_state too); how many CUDA graphs."""
        if not self.cuda_graphs:  # no graphs to capture: trigger the compile (from the cache) once, if any
            if self.meta.get("compile"):
                for b in (1, 2):
                    self._forward({n: np.ones((b, 16), np.int64) for n in self.inputs})
            return 0
        for b, s in self.warm_shapes():
            for h in {False, hidden}:
                self._graph(b, s, h)
        return len(self.graphs)

    def _forward(self, feed: dict):
        torch = self.torch
        b, s = feed[self.inputs[0]].shape
        pb, ps = self.bucket(b, s)
        with torch.inference_mode():
            if not self.cuda_graphs:
                outs = self.model(*[v for v in self._padded(feed, pb, ps).values()])
            else:
                graph, static, outs, _ = self._graph(pb, ps)
                for n in self.inputs:
                    static[n].zero_()
                    static[n][:b, :s].copy_(torch.from_numpy(np.ascontiguousarray(feed[n])))
                graph.replay()
        return dict(zip(self.outputs, outs)), b, s

    def run(self, feed: dict, outputs) -> dict:
        one = self._run_graph if self.cuda_graphs else self._run_eager
        if "last_hidden_state" in outputs or "attention_mask" not in feed:
            return one(feed, outputs)
        return self._run_by_length(feed, outputs, one)

    def _run_eager(self, feed: dict, outputs) -> dict:
        res, b, s = self._forward({n: feed[n] for n in self.inputs})
        got = {}
        for n in outputs:
            t = res[n][:b, :s] if n == "last_hidden_state" else res[n][:b]
            got[n] = t.float().cpu().numpy()
        return got

    def length_groups(self, mask: np.ndarray) -> list[tuple[np.ndarray, int]]:
        """(rows, length) per engine call: every row trimmed to a sequence bucket that holds its last real token, the
        calls chosen to run the fewest padded tokens, counting each call's fixed cost as `call_tokens` more. A merged
        batch arrives padded to its longest text (the tokenizer pads a whole execution, the runner merges requests):
        16 texts of ~33 tokens padded to 196 cost the GPU 6x the tokens they hold. But a call has a price too (a graph
        launch, its copies, a wait): two rows of 16 tokens are not worth a call of their own next to 100 rows of 128,
        and 170 rows run cheaper as 128 + 48 than padded to the 192 bucket."""
        s = mask.shape[1]
        real = mask != 0
        lengths = np.where(real.any(axis=1), s - np.argmax(real[:, ::-1], axis=1), 1)
        cuts = np.array([c for c in self.meta["seq_buckets"] if c < s] + [s])
        group = np.searchsorted(cuts, lengths)  # the smallest cut >= the row's length
        present = np.unique(group)
        counts = [int((group == g).sum()) for g in present]
        # best[j]: the cheapest plan for the first j length groups; a segment of neighbouring groups runs at its longest
        best, start = [0.0], []
        for j in range(1, len(present) + 1):
            c, i = min((best[i] + self._rows_cost(sum(counts[i:j]), int(cuts[present[j - 1]]))[0], i) for i in range(j))
            best.append(c)
            start.append(i)
        segments, j = [], len(present)
        while j:
            segments.append((start[j - 1], j))
            j = start[j - 1]
        plan = []
        for i, j in reversed(segments):
            rows, length = np.flatnonzero(np.isin(group, present[i:j])), int(cuts[present[j - 1]])
            plan += [(rows[lo:hi], length) for lo, hi in self._rows_cost(len(rows), length)[1]]
        return plan

    def _rows_cost(self, n: int, length: int) -> tuple[float, list[tuple[int, int]]]:
        """(cost in tokens, [(start, end) per call]) of n rows at one length: one call padded to its batch bucket, or
        the largest bucket below n filled and the rest on its own (whichever runs fewer tokens, call costs counted)."""
        pad = self.bucket(n, length)[0]
        one = (pad * length + self.call_tokens, [(0, n)])
        below = [b for b in self.meta["batch_buckets"] if b < n]
        if pad == n or not below:
            return one
        rest, calls = self._rows_cost(n - below[-1], length)
        split = (below[-1] * length + self.call_tokens + rest, [(0, below[-1])] + [(below[-1] + a, below[-1] + b) for a, b in calls])
        return min(one, split, key=lambda x: x[0])

    def _run_by_length(self, feed: dict, outputs, one) -> dict:
        """Sentence embeddings only (trailing padding changes nothing in them): the engine calls length_groups plans."""
        groups = self.length_groups(feed["attention_mask"])
        if len(groups) == 1 and groups[0][1] == feed["attention_mask"].shape[1]:
            return one(feed, outputs)
        b = feed["attention_mask"].shape[0]
        got, timing = {}, {}
        for rows, length in groups:
            part = one({n: np.ascontiguousarray(feed[n][rows, :length]) for n in self.inputs}, outputs)
            for n, v in part.items():
                if n not in got:
                    got[n] = np.empty((b,) + v.shape[1:], v.dtype)
                got[n][rows] = v
            for k, v in (getattr(self, "timing", None) or {}).items():
                timing[k] = timing.get(k, 0) + v
            self.timing = None
        if timing:
            self.timing = {**timing, "calls": len(groups)}
        return got

    def _run_graph(self, feed: dict, outputs) -> dict:
        """The serving path: the batch written into pinned buffers of its bucket, one async copy in, one graph replay,
        async copies out of only the asked-for outputs, one wait. Phase times (CUDA events) in self.timing."""
        torch = self.torch
        b, s = feed[self.inputs[0]].shape
        pb, ps = self.bucket(b, s)
        graph, static, outs, host = self._graph(pb, ps, hidden="last_hidden_state" in outputs)
        t0 = time.perf_counter()
        for n in self.inputs:
            h = host[n].numpy()
            h[:b, :s] = feed[n]
            h[:b, s:] = 0  # padding tokens: id 0 ([PAD]), mask 0; padding rows likewise
            h[b:] = 0
        stream = torch.cuda.current_stream(self.device)
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
        ev.append(torch.cuda.Event(enable_timing=True, blocking=GPU_WAIT != "spin"))  # the one waited on (GPU_WAIT)
        with torch.cuda.device(self.device):
            ev[0].record(stream)
            for n in self.inputs:
                static[n].copy_(host[n], non_blocking=True)
            ev[1].record(stream)
            graph.replay()
            ev[2].record(stream)
            res = dict(zip(self.outputs, outs))
            for n in outputs:
                if n not in host:  # only outputs someone asks for get a staging buffer (last_hidden_state is large)
                    host[n] = torch.empty(res[n].shape, dtype=res[n].dtype, pin_memory=True)
                host[n].copy_(res[n], non_blocking=True)
            ev[3].record(stream)
        t1 = time.perf_counter()
        ev[3].synchronize()
        t2 = time.perf_counter()
        got = {n: (host[n].numpy()[:b, :s] if n == "last_hidden_state" else host[n].numpy()[:b]).copy() for n in outputs}
        self.timing = {"host_in": t1 - t0, "h2d": ev[0].elapsed_time(ev[1]) / 1e3, "gpu": ev[1].elapsed_time(ev[2]) / 1e3,
                       "d2h": ev[2].elapsed_time(ev[3]) / 1e3, "wait": t2 - t1, "host_out": time.perf_counter() - t2,
                       "rows": pb, "tokens": pb * ps}
        return got

    def prepare(self, feed: dict, cuda_graph: bool = False):
        """Timing: the inputs stay on the device; with CUDA graphs one replay per step (captured at this exact shape)."""
        torch = self.torch
        b, s = feed[self.inputs[0]].shape
        if self.cuda_graphs and cuda_graph:
            graph, static, outs, _ = self._graph(b, s)
            for n in self.inputs:
                static[n].copy_(torch.from_numpy(feed[n]))

            def step():
                graph.replay()
                torch.cuda.synchronize(self.device)
                return outs
            return step
        dev = {n: torch.from_numpy(feed[n]).to(self.device) for n in self.inputs}

        def step():
            with torch.inference_mode():
                out = self.model(*[dev[n] for n in self.inputs])
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return out
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
    if runtime == "torch":
        return TorchEngine(path, device, device_id, threads)
    raise EngineError(f"unknown runtime {runtime!r}")
