"""Engine-level benchmark, no server: every ONNX variant (and TensorRT engine) of the manifest run directly.

Per (variant, batch) at a fixed sequence length: warmup, then timed runs until the time budget is spent
(at least --min-iters). Reports seq/s, latency (mean, p50, p99) and achieved FLOP/s = FLOPs per sequence
x seq/s; on a GPU listed in the roofline table (flops.GPUS) also the fraction of the precision's
compute roof. Inputs are real texts tokenized and padded/truncated to the sequence length.
Writes logs/bench_engine.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import export, io, spec, tools
from .io import StageError

CPU_BATCHES = (1, 8, 32, 64)  # short on CPU: batch 64 x 128 tokens is ~2 s per run on 2 cores
GPU_BATCHES = tuple(2 ** i for i in range(9))  # 1..256
# Roof used per variant precision; "best" mixes INT8 with FP16 fallbacks, so its upper roof is INT8's.
ROOF = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "best": "int8", "fp8": "fp8"}


# ------------------------------------------------------------------------------------ environment
def command_output(cmd: list[str], **kw) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def hardware() -> dict:
    """CPU model and cores; GPUs and driver from nvidia-smi where present."""
    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    except OSError:
        pass
    gpus = [dict(zip(("name", "driver", "memory"), row)) for row in tools.query_gpus("name", "driver_version", "memory.total")]
    return {"cpu": cpu or platform.processor() or "unknown", "cores": os.cpu_count(), "machine": platform.machine(),
            "os": platform.platform(), "gpus": gpus, "loadavg": [round(x, 2) for x in os.getloadavg()]}


# ------------------------------------------------------------------------------------ FLOPs and roofline
def flops_per_sequence(logs: Path, manifest: dict, seq: int) -> tuple[float, str]:
    """fvcore's count from logs/flops.json when it is for this model and seq, else the analytic GEMM count."""
    fj = Path(logs) / "flops.json"
    if fj.exists():
        f = io.read_json(fj)
        if f.get("seq_len") == seq and f.get("model") == manifest["model"]["used"]:
            return float(f["flops_per_sequence"]), f"logs/flops.json (fvcore, seq {seq})"
    from . import flops

    m = manifest["model"]
    dims = {"hidden_size": m["hidden_size"], "num_hidden_layers": m["num_layers"],
            "intermediate_size": m["intermediate_size"], "num_attention_heads": m["num_heads"]}
    return flops.analytic_flops(dims, seq), f"analytic encoder GEMMs from the manifest's model dimensions (seq {seq})"


def match_gpu(name: str, table: dict) -> str | None:
    """Key of the roofline table entry for an nvidia-smi name ("NVIDIA H100 80GB HBM3" -> "H100-SXM")."""
    tokens = set(re.split(r"[^A-Z0-9]+", name.upper())) - {""}
    if "H100" in tokens and "HBM3" in tokens:
        tokens.add("SXM")  # the SXM part is the HBM3 one; PCIe reports "PCIe"
    hits = []
    for key, g in table.items():
        want = [t for t in re.split(r"[^A-Z0-9]+", g["name"].upper()) if t]
        # "SXM" matches "SXM4"/"SXM5"; model numbers ("L4", "4090") must match whole
        if all(t in tokens or (t.isalpha() and any(x.startswith(t) and x[len(t):].isdigit() for x in tokens)) for t in want):
            hits.append((len(want), key))
    return max(hits)[1] if hits else None


def gpu_table(logs: Path) -> dict:
    fj = Path(logs) / "flops.json"
    if fj.exists() and io.read_json(fj).get("gpus"):
        return io.read_json(fj)["gpus"]
    from dataclasses import asdict

    from . import flops
    return {k: asdict(g) for k, g in flops.GPUS.items()}


def roof(gpu: dict | None, precision: str) -> tuple[str, float] | None:
    """(peak name, FLOP/s) of the precision's GEMM path on the GPU, None where there is none."""
    if not gpu:
        return None
    p = ROOF.get(precision, "fp32")
    v = gpu.get(p)
    return (p, v * 1e12) if v else None


# ------------------------------------------------------------------------------------ runners
class OrtEngine:
    """ONNX Runtime session; on the GPU inputs live on the device (IO binding), so timings exclude copies."""

    def __init__(self, path: Path, device: str, threads: int | None = None, cuda_graph: bool = False, hidden: int = 0):
        import onnxruntime as ort

        self.ort, self.device, self.path, self.threads = ort, device, path, threads
        self.cuda_graph, self.hidden = cuda_graph and device == "gpu", hidden
        if device == "gpu":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise StageError(f"--device gpu but onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                                 f"(has {ort.get_available_providers()}): install onnxruntime-gpu")
            self.sess = export.ort_session(path, [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"], threads)
            if self.sess.get_providers()[0] != "CUDAExecutionProvider":
                raise StageError(f"CUDA EP requested but the session got {self.sess.get_providers()}")
        else:
            self.sess = export.ort_session(path, ["CPUExecutionProvider"], threads)
        self.providers = self.sess.get_providers()
        self.inputs = [i.name for i in self.sess.get_inputs()]
        self.outputs = [o.name for o in self.sess.get_outputs()]

    def prepare(self, feed: dict[str, np.ndarray]):
        feed = {n: feed[n] for n in self.inputs}
        if self.cuda_graph:
            return self._prepare_graph(feed)
        if self.device != "gpu":
            return lambda: self.sess.run(self.outputs, feed)
        binding = self.sess.io_binding()
        keep = [self.ort.OrtValue.ortvalue_from_numpy(feed[n], "cuda", 0) for n in self.inputs]
        for n, v in zip(self.inputs, keep):
            binding.bind_ortvalue_input(n, v)
        for n in self.outputs:
            binding.bind_output(n, "cuda", 0)

        def step():
            self.sess.run_with_iobinding(binding)
            binding.synchronize_outputs()
            return keep
        return step


    def _prepare_graph(self, feed):
        """CUDA graph: captured on the first run for one fixed shape, then replayed with one launch.
        Needs every input and output at a fixed device address, so one session per shape."""
        ort = self.ort
        sess = export.ort_session(self.path, [("CUDAExecutionProvider", {"device_id": 0, "enable_cuda_graph": "1"}), "CPUExecutionProvider"], self.threads)
        b, s = feed[self.inputs[0]].shape
        shapes = {"last_hidden_state": (b, s, self.hidden), "sentence_embedding": (b, self.hidden)}
        binding = sess.io_binding()
        keep = [ort.OrtValue.ortvalue_from_numpy(feed[n], "cuda", 0) for n in self.inputs]
        for n, v in zip(self.inputs, keep):
            binding.bind_ortvalue_input(n, v)
        for n in self.outputs:
            v = ort.OrtValue.ortvalue_from_shape_and_type(shapes[n], np.float32, "cuda", 0)
            keep.append(v)
            binding.bind_ortvalue_output(n, v)
        sess.run_with_iobinding(binding)  # capture

        def step():
            sess.run_with_iobinding(binding)
            binding.synchronize_outputs()
            return keep, sess
        return step


class TrtEngine:
    """A TensorRT plan run with torch CUDA tensors (as the Triton runner does)."""

    def __init__(self, path: Path):
        import tensorrt as trt
        import torch

        self.torch = torch
        with open(path, "rb") as f:
            self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise StageError(f"TensorRT {trt.__version__} cannot deserialize {path} (other TensorRT version or GPU?)")
        self.ctx = self.engine.create_execution_context()
        self.providers = [f"TensorRT {trt.__version__}"]
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: getattr(torch, np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))).name) for n in names}

    def prepare(self, feed: dict[str, np.ndarray]):
        torch, dev = self.torch, self.torch.device("cuda", 0)
        bufs = {n: torch.from_numpy(feed[n]).to(dev, self.dtypes[n]) for n in self.inputs}
        for n, t in bufs.items():
            self.ctx.set_input_shape(n, tuple(t.shape))
        for n in self.outputs:
            bufs[n] = torch.empty(tuple(self.ctx.get_tensor_shape(n)), dtype=self.dtypes[n], device=dev)
        for n, t in bufs.items():
            self.ctx.set_tensor_address(n, t.data_ptr())
        stream = torch.cuda.current_stream(dev)

        def step():
            if not self.ctx.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            stream.synchronize()
        return step


def tensorrt_version() -> str | None:
    try:
        import tensorrt
        return tensorrt.__version__
    except ImportError:
        return None


# ------------------------------------------------------------------------------------ timing
def time_point(step, warmup: int, budget: float, min_iters: int, max_iters: int = 10000) -> np.ndarray:
    """Seconds per run: `warmup` untimed runs, then runs until `budget` seconds and `min_iters` are reached."""
    for _ in range(warmup):
        step()
    times, start = [], time.perf_counter()
    while len(times) < min_iters or (time.perf_counter() - start < budget and len(times) < max_iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return np.array(times)


def make_feed(tokenizer, texts: list[str], names: list[str], batch: int, seq: int) -> dict[str, np.ndarray]:
    chunk = [texts[i % len(texts)] for i in range(batch)]
    return export.tokenize(tokenizer, chunk, names, seq, pad_to=seq)


def bench_engine(engine, tokenizer, texts, batches, seq, fps, gpu, precision, warmup, budget, min_iters) -> list[dict]:
    rows = []
    for b in batches:
        try:
            t = time_point(engine.prepare(make_feed(tokenizer, texts, engine.inputs, b, seq)), warmup, budget, min_iters)
        except Exception as e:  # out of memory at a large batch: keep the smaller ones
            rows.append({"batch": b, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"})
            print(f"    batch {b:>4}: FAILED {rows[-1]['error']}", flush=True)
            break
        mean = float(t.mean())
        row = {"batch": b, "iters": len(t), "mean_ms": mean * 1e3, "p50_ms": float(np.percentile(t, 50)) * 1e3,
               "p99_ms": float(np.percentile(t, 99)) * 1e3, "seq_per_s": b / mean}
        row["gflops_per_s"] = fps * row["seq_per_s"] / 1e9
        r = roof(gpu, precision)
        if r:
            row["roof"], row["roof_fraction"] = r[0], fps * row["seq_per_s"] / r[1]
            if r[0] == "fp32" and gpu.get("tf32"):  # ONNX Runtime's CUDA EP may run fp32 GEMMs as TF32 (tensor cores)
                row["tf32_roof_fraction"] = fps * row["seq_per_s"] / (gpu["tf32"] * 1e12)
        rows.append(row)
        print(f"    batch {b:>4}: {row['seq_per_s']:9.1f} seq/s  mean {row['mean_ms']:8.2f} ms  p50 {row['p50_ms']:8.2f}  "
              f"p99 {row['p99_ms']:8.2f}  {row['gflops_per_s']:8.1f} GFLOP/s"
              + (f"  {100 * row['roof_fraction']:.1f}% of {r[0]} roof" if r else "") + f"  ({len(t)} runs)", flush=True)
    return rows


def run(artifacts: Path = spec.ARTIFACTS, logs: Path = spec.LOGS, device: str = "cpu", batches=None, seq: int = 128,
        variants: list[str] | None = None, warmup: int = 2, budget: float = 2.0, min_iters: int = 3,
        threads: int | None = None, texts_path: Path = spec.EVALUATION_TEXTS, cuda_graph: bool = False) -> dict:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    artifacts, logs = Path(artifacts), io.ensure_writable_dir(Path(logs))
    manifest = io.load_manifest(artifacts)
    batches = tuple(batches or (GPU_BATCHES if device == "gpu" else CPU_BATCHES))
    tok = AutoTokenizer.from_pretrained(str(io.resolve(manifest["tokenizer_dir"], artifacts)), local_files_only=True)
    texts = export.read_texts(texts_path)
    fps, fsrc = flops_per_sequence(logs, manifest, seq)
    hw = hardware()
    table = gpu_table(logs)
    gpu_key = match_gpu(hw["gpus"][0]["name"], table) if device == "gpu" and hw["gpus"] else None
    gpu = table.get(gpu_key) if gpu_key else None
    if device == "gpu":
        roof_note = (f"compute roof of {gpu['name']} (dense tensor-core peak per precision; fp32 = CUDA cores)" if gpu else
                     f"no roofline: {hw['gpus'][0]['name'] if hw['gpus'] else 'the GPU'} is not in the flops GPU table")
    else:
        roof_note = "no CPU roofline (the table holds GPUs only): achieved GFLOP/s only"
    result = {"device": device, "hardware": hw, "model": manifest["model"], "onnxruntime": ort.__version__,
              "tensorrt": tensorrt_version() or "not available", "seq_len": seq, "batches": list(batches),
              "timing": {"warmup": warmup, "budget_s": budget, "min_iters": min_iters, "threads": threads or "onnxruntime default"},
              "texts": str(texts_path), "flops_per_sequence": fps, "flops_source": fsrc,
              "roofline": {"gpu": gpu_key, "note": roof_note}, "engines": {}, "skipped": [],
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"model {manifest['model']['used']}, seq {seq}, {fps / 1e9:.3f} GFLOP/seq ({fsrc}); {roof_note}")
    jobs = []
    for p in spec.PRECISIONS + spec.OPTIONAL_PRECISIONS:
        onnx = ((manifest.get("variants") or {}).get(p) or {}).get("onnx")
        if onnx:
            jobs.append((spec.model_name("onnx", p), p, onnx, "onnx"))
            if cuda_graph and device == "gpu":
                jobs.append((spec.model_name("onnx", p) + "+cudagraph", p, onnx, "onnx-graph"))
        eng = ((manifest.get("trt") or {}).get(p) or {}).get("engine")
        if eng:
            jobs.append((spec.model_name("trt", p), p, eng, "trt"))
    for name, p, entry, backend in jobs:
        if variants and name.split("+")[0] not in variants and p not in variants:
            continue
        skip = None
        if not io.is_valid(entry, artifacts):
            skip = f"{io.resolve(entry['path'], artifacts)} missing or changed since the manifest recorded it"
        elif backend == "trt" and not tensorrt_version():
            skip = "the tensorrt Python module is not installed"
        elif backend == "trt" and device != "gpu":
            skip = "TensorRT engines need --device gpu"
        if skip:
            result["skipped"].append(f"{name}: skipped: {skip}")
            print(f"{name}: skipped: {skip}")
            continue
        path = io.resolve(entry["path"], artifacts)
        engine = TrtEngine(path) if backend == "trt" else OrtEngine(path, device, threads, backend == "onnx-graph", manifest["model"]["hidden_size"])
        print(f"{name}: {path.name} on {engine.providers}", flush=True)
        rows = bench_engine(engine, tok, texts, batches, seq, fps, gpu, p, warmup, budget, min_iters)
        ok = [r for r in rows if "error" not in r]
        best = max(ok, key=lambda r: r["seq_per_s"]) if ok else None
        result["engines"][name] = {"precision": p, "backend": backend, "path": str(path), "providers": engine.providers,
                                   "rows": rows, "best": {"batch": best["batch"], "seq_per_s": best["seq_per_s"]} if best else None}
        io.write_json(logs / "bench_engine.json", result)  # keep what is measured if a later variant crashes
        del engine
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    io.write_json(logs / "bench_engine.json", result)
    return result


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be >= 1")
    return vals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m enc2triton.bench", description=(
        "Engine-level benchmark without a server: each ONNX variant of artifacts/manifest.json (and TensorRT engine, "
        "where the tensorrt module is present) over batch sizes at a fixed sequence length. Writes logs/bench_engine.json."))
    ap.add_argument("--artifacts", type=Path, default=spec.ARTIFACTS)
    ap.add_argument("--logs", type=Path, default=spec.LOGS, help="reads flops.json, writes bench_engine.json")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="gpu: CUDAExecutionProvider with IO binding")
    ap.add_argument("--batches", type=_ints, help=f"comma-separated (default cpu {','.join(map(str, CPU_BATCHES))}; gpu 1,2,4..256)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--variants", help="comma-separated names or precisions (onnx_fp32, int8, ...)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per point")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timed runs per point")
    ap.add_argument("--min-iters", type=int, default=3, help="timed runs per point at least (beats the budget)")
    ap.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: its own choice)")
    ap.add_argument("--cuda-graph", action="store_true", help="gpu: also time each ONNX variant replayed as a CUDA graph (one per shape)")
    a = ap.parse_args(argv)
    variants = [v.strip() for v in a.variants.split(",") if v.strip()] if a.variants else None
    try:
        res = run(a.artifacts, a.logs, a.device, a.batches, a.seq_len, variants, a.warmup, a.budget, a.min_iters, a.threads,
                  cuda_graph=a.cuda_graph)
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {Path(a.logs) / 'bench_engine.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
