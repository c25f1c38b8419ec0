"""Engine-level benchmark, no server: every ONNX variant (and TensorRT engine) of the manifest run directly.

Per (variant, batch) at a fixed sequence length: warmup, then timed runs until the time budget is spent
(at least --min-iters). Reports seq/s, latency (mean, p50, p99) and achieved FLOP/s = FLOPs per sequence
x seq/s; on a GPU listed in the roofline table (flops.GPUS) also the fraction of the precision's
compute roof. Inputs are real texts tokenized and padded/truncated to the sequence length.
Writes logs/bench_engine.json.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from enc2triton.core import cli, host, io, spec
from enc2triton.runtime import engines
from enc2triton.core.io import StageError
from enc2triton.core.texts import load_tokenizer, read_texts, tokenize

CPU_BATCHES = (1, 8, 32, 64)  # short on CPU: batch 64 x 128 tokens is ~2 s per run on 2 cores
GPU_BATCHES = tuple(2 ** i for i in range(9))  # 1..256


# ------------------------------------------------------------------------------------ FLOPs and roofline
def flops_per_sequence(logs: Path, manifest: dict, seq: int) -> tuple[float, str]:
    """fvcore's count from logs/flops.json when it is for this model and seq, else the analytic GEMM count."""
    fj = Path(logs) / "flops.json"
    if fj.exists():
        f = io.read_json(fj)
        if f.get("seq_len") == seq and f.get("model") == manifest["model"]["used"]:
            return float(f["flops_per_sequence"]), f"logs/flops.json (fvcore, seq {seq})"
    from enc2triton.export import flops

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

    from enc2triton.export import flops
    return {k: asdict(g) for k, g in flops.GPUS.items()}


def roof(gpu: dict | None, precision: str) -> tuple[str, float] | None:
    """(peak name, FLOP/s) of the precision's GEMM path on the GPU, None where there is none."""
    if not gpu:
        return None
    p = spec.PRECISIONS[precision].roof if precision in spec.PRECISIONS else "fp32"
    v = gpu.get(p)
    return (p, v * 1e12) if v else None


# ------------------------------------------------------------------------------------ engines
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
    return tokenize(tokenizer, chunk, names, seq, pad_to=seq)


def bench_engine(engine, tokenizer, texts, batches, seq, fps, gpu, precision, warmup, budget, min_iters,
                 cuda_graph: bool = False) -> list[dict]:
    rows = []
    for b in batches:
        try:
            feed = make_feed(tokenizer, texts, engine.inputs, b, seq)
            step = engine.prepare(feed, cuda_graph=cuda_graph)
            with host.GpuSampler() as util:
                t = time_point(step, warmup, budget, min_iters)
        except Exception as e:  # out of memory at a large batch: keep the smaller ones
            rows.append({"batch": b, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"})
            print(f"    batch {b:>4}: FAILED {rows[-1]['error']}", flush=True)
            break
        mean = float(t.mean())
        row = {"batch": b, "iters": len(t), "mean_ms": mean * 1e3, "p50_ms": float(np.percentile(t, 50)) * 1e3,
               "p99_ms": float(np.percentile(t, 99)) * 1e3, "seq_per_s": b / mean}
        row["gflops_per_s"] = fps * row["seq_per_s"] / 1e9
        if gpu_util := util.summary():
            row["gpu"] = gpu_util
        if gpu and gpu.get("fp16"):  # one yardstick for every engine: the FP16 tensor-core peak
            row["mfu_fp16"] = fps * row["seq_per_s"] / (gpu["fp16"] * 1e12)
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


def plan_jobs(manifest: dict, artifacts: Path, device: str, cuda_graph: bool, wanted: list[str] | None) -> tuple[list, list]:
    """(jobs, skip lines): one job (name, variant, artifact entry, CUDA graph) per registered variant with an artifact."""
    jobs, skipped = [], []
    for v in spec.VARIANTS:
        entry = ((manifest.get(v.family.section) or {}).get(v.precision.name) or {}).get(v.family.key)
        if not entry or (wanted and v.name not in wanted and v.precision.name not in wanted):
            continue
        skip = None
        if v.unserved:
            skip = f"not served, so not benchmarked: {v.unserved}"
        elif not io.is_valid(entry, artifacts):
            skip = f"{io.resolve(entry['path'], artifacts)} missing or changed since the manifest recorded it"
        elif v.family is spec.TRT and not tensorrt_version():
            skip = "the tensorrt Python module is not installed"
        elif v.family.gpu_only and device != "gpu":
            skip = f"{v.family.runtime} engines need --device gpu"
        if skip:
            skipped.append(f"{v.name}: skipped: {skip}")
            continue
        jobs.append((v.name, v, entry, v.family is spec.TORCH))  # the PyTorch engines serve through CUDA graphs
        if cuda_graph and device == "gpu" and v.family is spec.ONNX:
            jobs.append((v.name + "+cudagraph", v, entry, True))
    return jobs, skipped


def _measure(name: str, engine, result: dict, ctx: dict, precision: str, graph: bool, extra: dict) -> None:
    """Benchmark one engine over the batches into result["engines"][name] (+ its kernel profiles: at ctx["profile"]'s
    batches, or True: the largest)."""
    print(f"{name}: {engine.providers}", flush=True)
    rows = bench_engine(engine, ctx["tok"], ctx["texts"], ctx["batches"], ctx["seq"], ctx["fps"], ctx["gpu"], precision,
                        ctx["warmup"], ctx["budget"], ctx["min_iters"], graph)
    ok = [r for r in rows if "error" not in r]
    best = max(ok, key=lambda r: r["seq_per_s"]) if ok else None
    entry = {"precision": precision, "providers": engine.providers, "rows": rows,
             "best": {"batch": best["batch"], "seq_per_s": best["seq_per_s"]} if best else None, **extra}
    if getattr(engine, "compile_seconds", None):
        entry["compile_seconds_per_batch"] = engine.compile_seconds
    if ctx["profile"] and ok:
        from enc2triton.measure import profiling

        timed = sorted(r["batch"] for r in ok)
        wanted = [timed[-1]] if ctx["profile"] is True else [b for b in timed if b in ctx["profile"]]
        entry["profiles"] = []
        for b in sorted(wanted, reverse=True):  # the largest first: the report's headline profile
            try:  # the plain launch path (no CUDA graph): the profiler names every kernel
                entry["profiles"].append({"batch": b, **profiling.kernel_breakdown(engine.prepare(make_feed(
                    ctx["tok"], ctx["texts"], engine.inputs, b, ctx["seq"]), cuda_graph=False))})
            except Exception as e:  # a profile is a report, never a reason to lose the measurement
                entry["profiles"].append({"batch": b, "error": f"{type(e).__name__}: {e}"[:300]})
    result["engines"][name] = entry
    io.write_json(ctx["out"], result)  # keep what is measured if a later engine crashes


def _pick_peers(peers: bool | tuple[str, ...]) -> list[str]:
    """PEERS' names to measure, strongest first: all (True), none (False), or those named by name or mode."""
    from enc2triton.measure.peers import PEERS

    if peers is True or peers is False:
        return list(PEERS) if peers else []
    unknown = [p for p in peers if p not in PEERS and p not in {m for m, _ in PEERS.values()}]
    if unknown:
        raise StageError(f"unknown peer(s) {unknown}: choose from {', '.join(PEERS)} or their modes "
                         f"{', '.join(m for m, _ in PEERS.values())}")
    return [n for n, (m, _) in PEERS.items() if n in peers or m in peers]


def run(artifacts: Path = spec.ARTIFACTS, logs: Path = spec.LOGS, device: str = "cpu", batches=None, seq: int = 128,
        variants: list[str] | None = None, warmup: int = 2, budget: float = 2.0, min_iters: int = 3,
        threads: int | None = None, texts_path: Path = spec.EVALUATION_TEXTS, cuda_graph: bool = False,
        peers: bool | tuple[str, ...] = False, profile: bool | tuple[int, ...] = False) -> dict:
    import onnxruntime as ort

    artifacts, logs = Path(artifacts), io.ensure_writable_dir(Path(logs))
    if (peers or profile) and device != "gpu":
        raise StageError("--peers and --profile measure GPU engines: use them with --device gpu")
    manifest = io.load_manifest(artifacts)
    batches = tuple(batches or (GPU_BATCHES if device == "gpu" else CPU_BATCHES))
    tok = load_tokenizer(io.resolve(manifest["tokenizer_dir"], artifacts))
    texts = read_texts(texts_path)
    fps, fsrc = flops_per_sequence(logs, manifest, seq)
    hw = host.hardware()
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
              "texts": io.rel(texts_path), "flops_per_sequence": fps, "flops_source": fsrc,
              "roofline": {"gpu": gpu_key, "note": roof_note}, "engines": {}, "skipped": [],
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    ctx = {"tok": tok, "texts": texts, "batches": batches, "seq": seq, "fps": fps, "gpu": gpu, "warmup": warmup,
           "budget": budget, "min_iters": min_iters, "profile": profile, "out": logs / "bench_engine.json"}
    print(f"model {manifest['model']['used']}, seq {seq}, {fps / 1e9:.3f} GFLOP/seq ({fsrc}); {roof_note}")
    jobs, result["skipped"] = plan_jobs(manifest, artifacts, device, cuda_graph, variants)
    for line in result["skipped"]:
        print(line)
    peers_left = _pick_peers(peers)

    def measure_peers() -> None:
        from enc2triton.measure.peers import PEERS, TorchPeer

        for name in list(peers_left):
            mode, what = PEERS[name]
            peers_left.remove(name)
            _measure(name, TorchPeer(manifest["model"]["path"], list(manifest["inputs"]), mode), result, ctx, "fp16", False,
                     {"variant": None, "engine": "torch", "backend": what, "peer": True})

    for name, v, entry, graph in jobs:
        path = io.resolve(entry["path"], artifacts)
        try:
            engine = engines.open_engine(v.family.runtime, path, device, threads=threads)
        except Exception as e:  # one engine that cannot load costs its own row, not the others' measurements
            result["skipped"].append(f"{name}: FAILED to load: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
            print(result["skipped"][-1], flush=True)
        else:
            _measure(name, engine, result, ctx, v.precision.name, graph,
                     {"variant": v.name, "engine": v.family.runtime, "backend": v.family.name + ("-graph" if graph else ""),
                      "path": io.rel(path), "peer": False})
            del engine
        measure_peers()  # after our first job (a no-op later): a run cut short by its time limit still has a ratio
    measure_peers()  # no job at all
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    io.write_json(logs / "bench_engine.json", result)
    return result


def _peers_arg(value: str | None) -> bool | tuple[str, ...]:
    """--peers: absent (no peers), bare or "all" (every peer), or a comma-separated list of names or modes."""
    if value is None:
        return False
    if value == "all":
        return True
    return tuple(p.strip() for p in value.split(",") if p.strip())


def main(argv=None) -> int:
    ap = cli.parser("python -m enc2triton.bench", (
        "Step 8: engine-level benchmark without a server: each variant of artifacts/manifest.json (ONNX graphs, TensorRT engines "
        "where the tensorrt module is present) over batch sizes at a fixed sequence length. Reads logs/flops.json, "
        "writes logs/bench_engine.json."))
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="gpu: CUDAExecutionProvider with IO binding (default %(default)s)")
    ap.add_argument("--batches", type=cli.int_list("batch sizes"),
                    help=f"comma-separated (default cpu {','.join(map(str, CPU_BATCHES))}; gpu 1,2,4..256)")
    ap.add_argument("--seq-len", type=cli.at_least(1), default=128, help="tokens per sequence (default %(default)s)")
    ap.add_argument("--variants", help="comma-separated names or precisions (onnx_fp32, int8, ...; default: all)")
    ap.add_argument("--warmup", type=cli.at_least(0), default=2, help="untimed runs per point (default %(default)s)")
    ap.add_argument("--budget", type=cli.at_least(0, float), default=2.0, help="seconds of timed runs per point (default %(default)s)")
    ap.add_argument("--min-iters", type=cli.at_least(1), default=3, help="timed runs per point at least, beats the budget (default %(default)s)")
    ap.add_argument("--threads", type=cli.at_least(1), help="ONNX Runtime intra-op threads (default: its own choice)")
    ap.add_argument("--cuda-graph", action="store_true", help="gpu: also time each ONNX variant replayed as a CUDA graph (one per shape)")
    ap.add_argument("--peers", nargs="?", const="all", help="gpu: also measure what a user would run instead, in the same "
                    "process: the Hugging Face model in FP16, eager and under torch.compile; optionally only some, by name or "
                    "mode (e.g. --peers reduce-overhead,default: without eager)")
    ap.add_argument("--profile", action="store_true", help="gpu: per-kernel time breakdown (torch.profiler) of every engine "
                    "at the largest batch")
    ap.add_argument("--profile-batches", type=cli.int_list("batch sizes"), help="gpu: the same at these of the timed batches "
                    "(e.g. 8,256: where a small call's fixed cost goes beside the largest batch's)")

    def body(a) -> None:
        variants = [v.strip() for v in a.variants.split(",") if v.strip()] if a.variants else None
        run(a.artifacts, a.logs, a.device, a.batches, a.seq_len, variants, a.warmup, a.budget, a.min_iters, a.threads,
            cuda_graph=a.cuda_graph, peers=_peers_arg(a.peers), profile=tuple(a.profile_batches) if a.profile_batches else a.profile)
        print(f"wrote {Path(a.logs) / 'bench_engine.json'}")
    return cli.run(ap, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
