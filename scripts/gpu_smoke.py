"""The PyTorch engine's GPU serving path checked on a tiny model, with only the GPU image's own packages.

Run first on a fresh GPU machine (before the long runs depend on it): exports a tiny random DistilBERT, builds its
torch_fp16, torch_fp8 and torch_int8 engines (eager: no compile, the same CUDA-graph serving path), then checks TorchEngine.run
(pinned staging, one CUDA graph per bucket, async copies, the CUDA-event phase timing) against the eager module at
shapes that hit exact buckets, padded buckets and a batch past the largest bucket.

    python3 scripts/gpu_smoke.py --tiny DIR --work /tmp/smoke
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", type=Path, required=True, help="a tiny model folder (models.make_tiny)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/smoke"))
    a = ap.parse_args()
    art, logs = a.work / "artifacts", a.work / "logs"
    py = sys.executable
    for cmd in ([py, "torch2onnx.py", "--model", str(a.tiny), "--artifacts", str(art), "--logs", str(logs), "--skip-flops",
                 "--max-batch", "64"],
                [py, "-m", "enc2triton.torch_build", "--artifacts", str(art), "--logs", str(logs), "--precisions", "fp16,fp8,int8",
                 "--no-compile-cache", "--int8-ranges", "max", "--fp8-layers", "all"]):  # no ONNX searches here
        t0 = time.time()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
        print(f"$ {' '.join(cmd[1:3])} -> {r.returncode} ({time.time() - t0:.0f} s)")
        if r.returncode:
            print(r.stdout[-3000:], r.stderr[-3000:])
            return 1
    import torch

    from enc2triton.core import io
    from enc2triton.runtime import engines

    manifest = io.load_manifest(art)
    bad = 0
    for p in ("fp16", "fp8", "int8"):
        entry = manifest["torch"][p]
        if not entry.get("package"):
            print(f"torch_{p}: not built: {entry.get('reason')}")
            bad += 1
            continue
        eng = engines.TorchEngine(io.resolve(entry["package"]["path"], art), "gpu", 0)
        t0 = time.time()
        n = eng.warmup()
        print(f"torch_{p}: {eng.providers[0]}; {n} CUDA graphs in {time.time() - t0:.1f} s")
        rng = np.random.default_rng(0)
        for b, s in ((1, 16), (3, 16), (5, 32), (17, 40), (64, 128), (80, 64)):
            ids = rng.integers(1000, 5000, size=(b, s)).astype(np.int64)
            mask = np.ones_like(ids)
            mask[0, s // 2:] = 0  # one padded row
            feed = {"input_ids": ids, "attention_mask": mask}
            out = eng.run(feed, ["sentence_embedding", "last_hidden_state"])
            with torch.inference_mode():
                ref = eng.model(*[torch.from_numpy(feed[k]).cuda() for k in eng.inputs])
            e_ref, h_ref = ref[1].float().cpu().numpy(), ref[0].float().cpu().numpy()
            cos = (out["sentence_embedding"] * e_ref).sum(1) / np.linalg.norm(out["sentence_embedding"], axis=1) / np.linalg.norm(e_ref, axis=1)
            ok = out["sentence_embedding"].shape == (b, e_ref.shape[1]) and out["last_hidden_state"].shape == h_ref.shape \
                and np.isfinite(out["sentence_embedding"]).all() and cos.min() > 0.999
            bad += not ok
            t = eng.timing or {}
            t0 = time.perf_counter()
            for _ in range(50):
                eng.run(feed, ["sentence_embedding"])
            per = (time.perf_counter() - t0) / 50 * 1e3
            print(f"  {b:>3} x {s:<3} bucket {eng.bucket(b, s)}  min cos {cos.min():.6f}  {'ok' if ok else 'WRONG'}  "
                  f"run {per:.3f} ms  (h2d {1e3 * t.get('h2d', 0):.3f}, gpu {1e3 * t.get('gpu', 0):.3f}, d2h {1e3 * t.get('d2h', 0):.3f},"
                  f" host in/out {1e3 * t.get('host_in', 0):.3f}/{1e3 * t.get('host_out', 0):.3f} ms)")
        # a merged batch padded to its longest text: sentence embeddings run one CUDA graph per length bucket
        lengths = rng.integers(5, 128, size=48)
        ids = rng.integers(1000, 5000, size=(48, 128)).astype(np.int64)
        mask = (np.arange(128)[None, :] < lengths[:, None]).astype(np.int64)
        feed = {"input_ids": ids * mask, "attention_mask": mask}
        got = eng.run(feed, ["sentence_embedding"])["sentence_embedding"]
        t = eng.timing or {}
        with torch.inference_mode():
            ref = eng.model(*[torch.from_numpy(feed[k]).cuda() for k in eng.inputs])[1].float().cpu().numpy()
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        ok = got.shape == ref.shape and cos.min() > 0.999 and t.get("calls", 1) == len(eng.length_groups(mask))
        bad += not ok
        print(f"   48 x 128 by length: {t.get('calls')} graph calls, {t.get('tokens')} tokens run of {48 * 128}  "
              f"min cos {cos.min():.6f}  {'ok' if ok else 'WRONG'}")
    print("SMOKE", "OK" if not bad else f"FAILED ({bad})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
