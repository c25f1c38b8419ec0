"""One instance vs two per batched model, measured: why spec.Serving.model_instances is 2.

Triton 2.51's dynamic batcher can miss its wake-up when a request arrives after the previous
response but before the single instance is released; the request then waits out the batcher's
500 ms idle timeout. This sweeps the same tiny repository (random DistilBERT-shaped model, the test
suite's) with 1 and with 2 instances, a few times each, with perf_analyzer, and writes the rows.

    .venv/bin/python scripts/instances_ab.py --out results/cpu_instances [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from enc2triton.core import io, spec
from enc2triton.export import export, models
from enc2triton.serve import repository
from enc2triton.measure import perf  # noqa: E402

# the test suite's loose settings: this shows stalls of 500 ms, not fine differences
SETTINGS = perf.Settings(window_requests=30, stability=200, max_trials=6, timeout=120)
SWEPT = ["onnx_fp32", "ensemble_onnx_fp32"]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("results/cpu_instances"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--concurrency", default="1,2,4")
    a = ap.parse_args(argv)
    levels = tuple(int(c) for c in a.concurrency.split(","))
    rows = []
    with tempfile.TemporaryDirectory(prefix="instances-ab-") as tmp:
        tmp = Path(tmp)
        art = tmp / "artifacts"
        export.run(model=str(models.make_tiny(tmp / "tiny", "distilbert")), artifacts=art,
                   shapes=spec.ShapeLimits(max_batch=8, opt_batch=4, max_seq=128, opt_seq=64))
        for instances in (1, 2):
            repo = repository.generate(art, tmp / f"repo{instances}" / "model_repository",
                                       serving=spec.Serving(model_instances=instances))
            for rep in range(a.repeats):
                s = perf.run(repo, tmp / f"logs{instances}_{rep}", art, models=SWEPT, levels=levels, settings=SETTINGS)
                for name, e in s["models"].items():
                    for r in e["rows"]:
                        rows.append({"instances": instances, "repeat": rep, "model": name, "concurrency": r["concurrency"],
                                     "throughput": round(r["throughput"], 1), "p50_ms": round(r["p50_ms"], 2),
                                     "p99_ms": round(r["p99_ms"], 2)})
                    for f in e.get("failed", []):
                        rows.append({"instances": instances, "repeat": rep, "model": name, "concurrency": f["concurrency"],
                                     "failed": f.get("error", "failed").split(" | ")[-1].strip()})
    result = {"what": "perf_analyzer sweeps, tiny random DistilBERT (2 layers x 32), 128-token raw inputs and real texts",
              "command": "python scripts/instances_ab.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "hardware": {"cpu": cpu_name(), "cores": os.cpu_count(), "load_avg": os.getloadavg()},
              "settings": SETTINGS.flags(), "rows": rows}
    a.out.mkdir(parents=True, exist_ok=True)
    io.write_json(a.out / "instances_ab.json", result)
    lines = [f"# One vs two instances per model ({result['hardware']['cpu']}, {os.cpu_count()} cores)", "",
             f"`{result['command']}`; perf_analyzer {' '.join(SETTINGS.flags())}", "",
             "| instances | repeat | model | concurrency | infer/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['instances']} | {r['repeat']} | {r['model']} | {r['concurrency']} | failed: {r['failed']} | | |")
        else:
            lines.append(f"| {r['instances']} | {r['repeat']} | {r['model']} | {r['concurrency']} | {r['throughput']:.1f} "
                         f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    io.write_text(a.out / "instances_ab.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
