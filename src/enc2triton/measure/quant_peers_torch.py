"""Quantization peer, PyTorch side: NVIDIA ModelOpt's PyTorch PTQ (modelopt.torch.quantization, `mtq.quantize`) beside
our PyTorch 8-bit engines (torch_int8, torch_fp8: torch_build.py), on the same checkpoint, the same calibration texts
and the same held-out evaluation texts, its quality measured by the same code.

- Checkpoint: the Hugging Face folder the export recorded (manifest `model.path`; its config hash checked as
  torch_build checks it), loaded by ModelOpt's venv with transformers (eager attention, FP32).
- Calibration: the texts quant_peers.py (the ONNX peer) and quantize.py calibrate on (data/calibration.txt, the same
  seeded split, its held-out slice left out), tokenized and length-batched the same way (texts.length_batches: at most
  16 texts of similar length, natural lengths); mtq.quantize's forward_loop runs the model over those batches.
- Configurations: ModelOpt's own INT8_SMOOTHQUANT_CFG, INT8_DEFAULT_CFG and FP8_DEFAULT_CFG as shipped; two diagnostics
  with LayerNorm inputs left unquantized (ModelOpt's defaults quantize them; ours quantize linear layers only).
- Quality: torch_build's definitions: sentence embeddings (mask-weighted mean pooling) of the evaluation texts vs our
  FP32 encoder (torch_build.load_reference, = Hugging Face FP32 within 1e-4; the same reference torch_build measures
  torch_int8/torch_fp8 against), metrics.compare (mean / min cosine, top-10 agreement), spec's floors. The FP32 model
  ModelOpt's venv loads is checked against that reference first (same weights, tokens and pooling).
- Ours: the manifest's `torch` section as torch_build wrote it (quality of the engine's output on its device).

Where it runs: `--device cpu` (default): ModelOpt's fake quantization on the CPU (quantize -> dequantize around FP32
ops: the numerics of its recipe, not an 8-bit kernel). `--device gpu`: the same on a CUDA GPU; written, not run where
this was written (no GPU there); without a GPU it fails, it never falls back to the CPU.

ModelOpt runs in .venv-modelopt (`make modelopt`; requirements-modelopt.txt pins its transformers) as a subprocess
(modelopt_torch_runner.py, standalone); ENC2TRITON_MODELOPT_PYTHON names another interpreter that has it. Writes
logs/quant_peers_torch.{json,md}; the report renders it in the section "Quantization peer (NVIDIA ModelOpt)".
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from enc2triton.core import cli, host, io, metrics, spec
from enc2triton.core.io import StageError
from enc2triton.core.markdown import table as md_table
from enc2triton.core.texts import in_order, length_batches, load_tokenizer, read_calibration, read_texts, texts_sha256
from enc2triton.measure import quant_peers
from enc2triton.measure.quant_peers import (
    INSTALL, PACKAGE, _c, _shown, add_peer_args, modelopt_python, write_calibration,
)
from enc2triton.quantize.calibration import split_calibration
from enc2triton.quantize.int8_search import Int8Settings

RUNNER = Path(__file__).with_name("modelopt_torch_runner.py")
LOG = "quant_peers_torch"
VERIFY_ATOL = 1e-4  # ModelOpt's venv's FP32 model vs our FP32 reference (torch_build.VERIFY_ATOL)
DEVICES = {"cpu": "cpu", "gpu": "cuda"}


@dataclass(frozen=True)
class Config:
    name: str
    base: str          # the mtq config it starts from
    precision: str     # whose floor it is judged by
    about: str
    linear_only: bool = False  # LayerNorm quantizers off


CONFIGS = {c.name: c for c in (
    Config("int8_smoothquant", "INT8_SMOOTHQUANT_CFG", "int8", "mtq.INT8_SMOOTHQUANT_CFG: W8A8, per-channel weights, "
           "per-tensor activations, SmoothQuant, max calibration"),
    Config("int8_default", "INT8_DEFAULT_CFG", "int8", "mtq.INT8_DEFAULT_CFG: W8A8, per-channel weights, per-tensor "
           "activations, max calibration"),
    Config("fp8_default", "FP8_DEFAULT_CFG", "fp8", "mtq.FP8_DEFAULT_CFG: E4M3 weights and activations, per-tensor, "
           "max calibration"),
    Config("int8_smoothquant_linear_only", "INT8_SMOOTHQUANT_CFG", "int8", "INT8_SMOOTHQUANT_CFG with LayerNorm inputs "
           "unquantized (a diagnostic: ours quantize linear layers only)", True),
    Config("int8_default_linear_only", "INT8_DEFAULT_CFG", "int8", "INT8_DEFAULT_CFG with LayerNorm inputs unquantized "
           "(a diagnostic: SmoothQuant's share)", True),
    Config("fp8_default_linear_only", "FP8_DEFAULT_CFG", "fp8", "FP8_DEFAULT_CFG with LayerNorm inputs unquantized "
           "(a diagnostic)", True),
)}
DEFAULT_CONFIGS = tuple(CONFIGS)
OURS = ("int8", "fp8")  # the manifest's torch engines beside them


def packages(python: str) -> dict:
    """Versions in ModelOpt's interpreter; a one-line StageError when it cannot run it, lacks nvidia-modelopt or cannot
    import modelopt.torch.quantization and transformers."""
    return quant_peers.packages(python, RUNNER, "modelopt.torch.quantization or transformers")


def run_modelopt(python: str, model_dir: str, configs, calib: list[dict], evals: list[dict], device: str, work: Path,
                 timeout: float = 3600) -> tuple[dict, dict]:
    """(the runner's record, its embeddings per batch: key `<config or fp32>/<batch>`)."""
    work.mkdir(parents=True, exist_ok=True)
    req = {"model_dir": model_dir, "calibration": str(write_calibration(work / "calibration.npz", calib)),
           "evaluation": str(write_calibration(work / "evaluation.npz", evals)), "device": DEVICES[device],
           "configs": {c: {"base": CONFIGS[c].base, "linear_only": CONFIGS[c].linear_only} for c in configs},
           "output": str(work / "embeddings.npz"), "record": str(work / "record.json")}
    for stale in (work / "record.json", work / "embeddings.npz"):
        stale.unlink(missing_ok=True)
    try:
        p = quant_peers.call_runner(python, RUNNER, req, work, timeout)
    except subprocess.TimeoutExpired:
        raise StageError(f"ModelOpt did not finish within {timeout:g} s") from None
    if not (work / "record.json").exists():
        raise StageError(f"ModelOpt's runner exited {p.returncode} without a record: "
                         + ((p.stderr or p.stdout).strip().splitlines() or ["no output"])[-1][:300])
    rec = io.read_json(work / "record.json")
    if rec.get("error"):
        raise StageError(f"ModelOpt's runner failed: {rec['error']} (log: {work / 'modelopt.log'})")
    with np.load(work / "embeddings.npz") as z:
        emb = {k: z[k] for k in z.files}
    return rec, emb


def _gather(emb: dict, key: str, n: int, order) -> np.ndarray:
    return in_order([emb[f"{key}/{i}"] for i in range(n)], order)


def _quality(ref: np.ndarray, got: np.ndarray, precision: str) -> dict:
    q = {k: v for k, v in metrics.compare(ref, got).items() if k in ("mean_cos", "min_cos", "top10", "rel_l2")}
    return {**q, "pass": metrics.passes(q, spec.FLOORS[precision])}


def our_rows(manifest: dict) -> list[dict]:
    """torch_int8 / torch_fp8 as torch_build recorded them (quality of the engine's output vs our FP32 encoder)."""
    rows = []
    for p in OURS:
        e = (manifest.get("torch") or {}).get(p) or {}
        row = {"who": "ours", "name": f"ours torch_{p}", "precision": p}
        if not e.get("package") or not e.get("quality"):
            rows.append({**row, "note": f"not built ({e.get('reason') or 'no manifest entry'}): python -m enc2triton.torch_build "
                                        "--device cpu (or on a GPU)"})
            continue
        q = e["quality"]
        kept = e.get("kept_fp16") or e.get("kept_bf16") or []
        rows.append({**row, "device": e.get("device"), "runtime": q.get("runtime"),
                     **{k: q.get(k) for k in ("mean_cos", "min_cos", "top10", "rel_l2", "pass")},
                     "placement": f"{e.get('linear_layers_quantized')} of {e.get('linear_layers')} linear layers (QKV one GEMM)"
                                  + (f", {len(kept)} kept {'FP16' if p == 'int8' else 'BF16'}" if kept else ""),
                     "method": e.get("method")})
    return rows


def _placement(quantizers: dict) -> str:
    lin = quantizers.get("QuantLinear.input_quantizer", 0)
    ln = sum(v for k, v in quantizers.items() if "LayerNorm" in k and not k.startswith("pooler "))
    other = {k: v for k, v in quantizers.items() if not k.startswith(("QuantLinear.", "pooler ")) and "LayerNorm" not in k}
    return ", ".join([f"{lin} linear layers (Q, K, V apart)", *([f"{ln} LayerNorm inputs"] if ln else []),
                      *(f"{v} {k}" for k, v in other.items())]) + ("; the unused pooler too" if any(k.startswith("pooler ") for k in quantizers) else "")


def run(artifacts: Path | None = None, logs: Path | None = None, configs=DEFAULT_CONFIGS, calibration: Path = spec.CALIBRATION_TEXTS,
        evaluation: Path = spec.EVALUATION_TEXTS, device: str = "cpu", python: str | None = None, progress: bool = True) -> dict:
    from enc2triton.quantize.fp8_plan import embed
    from enc2triton.torch_engines.torch_build import load_reference

    artifacts = Path(artifacts or spec.ARTIFACTS)
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise StageError(f"unknown configuration(s) {unknown}: choose from {', '.join(CONFIGS)}")
    if device not in DEVICES:
        raise StageError(f"unknown device {device!r}: cpu or gpu")
    python = python or modelopt_python()
    found = packages(python)  # before any work: a missing ModelOpt is one line
    if device == "gpu" and not __import__("torch").cuda.is_available():
        raise StageError("--device gpu: torch sees no CUDA GPU here (this peer never falls back to the CPU: --device cpu)")
    logs = io.ensure_writable_dir(Path(logs or spec.LOGS))
    manifest = io.load_manifest(artifacts)
    inputs, max_length = list(manifest["inputs"]), int(manifest["shapes"]["max_seq"])
    tokenizer = load_tokenizer(io.resolve(manifest["tokenizer_dir"], artifacts))
    s = Int8Settings()
    calib, _held = split_calibration(read_calibration(calibration, evaluation), s)
    eval_texts = read_texts(evaluation)
    _, calib_feeds = length_batches(tokenizer, calib, inputs, max_length, s.batch_size)
    order, eval_feeds = length_batches(tokenizer, eval_texts, inputs, max_length, 16)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    torch_device = DEVICES[device]
    hf, enc32 = load_reference(manifest, torch_device)  # our FP32 encoder: the reference torch_build measures against
    del hf
    ref = embed(enc32, eval_feeds, order, torch_device)
    if progress:
        print(f"modelopt torch: {', '.join(configs)} on {device} ({len(calib)} calibration texts, {len(eval_texts)} evaluation texts) ...", flush=True)
    t0 = time.perf_counter()
    rec, emb = run_modelopt(python, manifest["model"]["path"], configs, calib_feeds, eval_feeds, device, artifacts / "quant_peers_torch")
    fp32 = _gather(emb, "fp32", len(eval_feeds), order)
    check = {"max_abs_diff": float(np.abs(fp32 - ref).max()), "min_cos": float(metrics.cosine_rows(fp32, ref).min()), "atol": VERIFY_ATOL}
    if check["max_abs_diff"] > VERIFY_ATOL:
        raise StageError(f"ModelOpt's FP32 model is not our FP32 reference (max abs diff {check['max_abs_diff']:.3g} > "
                         f"{VERIFY_ATOL:g}): not the same checkpoint, tokens or pooling")
    rows = our_rows(manifest)
    for name in configs:
        cfg, r = CONFIGS[name], rec["configs"][name]
        row = {"who": "modelopt", "name": f"ModelOpt {name}", "config": name, "precision": cfg.precision, "about": cfg.about,
               "base": cfg.base, "linear_only": cfg.linear_only, "algorithm": r.get("algorithm"), "seconds": r.get("seconds")}
        if r.get("error"):
            rows.append({**row, "error": r["error"]})
            print(f"modelopt torch {name}: failed: {r['error']}", flush=True)
            continue
        row.update(_quality(ref, _gather(emb, name, len(eval_feeds), order), cfg.precision))
        row["quantizers"], row["placement"] = r["quantizers"], _placement(r["quantizers"])
        rows.append(row)
        if progress:
            print(f"modelopt torch {name}: mean / min cos {row['mean_cos']:.6f} / {row['min_cos']:.6f}, top-10 {row['top10']:.3f} "
                  f"({r.get('seconds')} s)", flush=True)
    m = manifest["model"]
    result = {
        "model": m.get("used"), "checkpoint": {"used": m.get("used"), "source": m.get("source"), "config_sha256": m.get("config_sha256")},
        "host": host.describe(), "hardware": host.hardware(), "device": device, "gpu": rec.get("gpu"),
        "started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.perf_counter() - t0, 1),
        "calibration": {"data": io.rel(Path(calibration)), "texts": len(calib), "data_sha256": texts_sha256(calib),
                        "batches": len(calib_feeds), "split": f"quantize.py's: seed {s.seed}, {s.held_out} texts held out, "
                        f"at most {s.max_calib_texts} calibrated on", "batching": f"texts.length_batches: at most {s.batch_size} "
                        "texts of similar length a batch, natural lengths (padded tokens included in ModelOpt's ranges)"},
        "evaluation": {"data": io.rel(Path(evaluation)), "texts": len(eval_texts), "data_sha256": texts_sha256(eval_texts)},
        "quality_method": "torch_build's: sentence embeddings (mask-weighted mean pooling) vs our FP32 encoder on the run's device, "
                          "metrics.compare (mean / min cosine, top-10 nearest-neighbour agreement among the texts)",
        "reference_check": check,
        "modelopt": {"python": _shown(python), "versions": found, "runner_versions": rec.get("versions"),
                     "how": "mtq.quantize(copy of the FP32 model, the config, forward_loop over the calibration batches); "
                            f"fake quantization on {device}", "configs": {n: asdict(CONFIGS[n]) for n in configs}},
        "floors": {p: spec.FLOORS.get(p) for p in OURS},
        "rows": rows,
    }
    io.write_json(logs / f"{LOG}.json", result)
    io.write_text(logs / f"{LOG}.md", render(result))
    print(f"logs: {logs / (LOG + '.json')}, {logs / (LOG + '.md')}")
    return result


# ------------------------------------------------------------------------------------ Markdown (the log and the report)
def _g(x) -> str:
    return f"{x:.2g}" if isinstance(x, float) else "-"


def table_rows(d: dict) -> tuple[list[str], list[list]]:
    head = ["quantizer", "precision", "mean / min cos", "top-10", "quantized", "floor"]
    rows = []
    for r in d.get("rows") or []:
        if r.get("error") or r.get("note"):
            rows.append([r.get("name"), r.get("precision"), "-", "-", "-", "failed: " + r["error"] if r.get("error") else r["note"]])
            continue
        fl = r.get("pass")
        rows.append([r.get("name"), r.get("precision"), f"{_c(r.get('mean_cos'))} / {_c(r.get('min_cos'))}",
                     f"{r['top10']:.3f}" if isinstance(r.get("top10"), float) else "-", r.get("placement") or "-",
                     "-" if fl is None else ("pass" if fl else "FAIL")])
    return head, rows


def intro(d: dict) -> str:
    mo = d.get("modelopt") or {}
    v = mo.get("versions") or {}
    cal, ev = d.get("calibration") or {}, d.get("evaluation") or {}
    return (f"NVIDIA ModelOpt {v.get('nvidia-modelopt')} PyTorch PTQ (`mtq.quantize`, torch {v.get('torch')}, transformers "
            f"{v.get('transformers')}), fake quantization on {d.get('device')}"
            + (f" ({d['gpu']})" if d.get("gpu") else "") + f", calibrated on {cal.get('texts')} texts of {cal.get('data')} "
            f"({cal.get('split')}, batched as ours), measured on the {ev.get('texts')} held-out texts of {ev.get('data')} as "
            "torch_build measures our torch_int8/torch_fp8: sentence embeddings vs our FP32 encoder (ModelOpt's own FP32 model "
            f"matched it: max abs diff {_g((d.get('reference_check') or {}).get('max_abs_diff'))}).")


def render(d: dict) -> str:
    head, rows = table_rows(d)
    mo = d.get("modelopt") or {}
    L = ["# Quantization peer, PyTorch (NVIDIA ModelOpt mtq)", "",
         f"Model: {d.get('model')}. Machine: {d.get('host')}. {d.get('started')} to {d.get('finished')}.", "", intro(d), "",
         *md_table(head, rows), "",
         "- floors (spec.py): " + "; ".join(f"{p} {metrics.floor_text(f)}" for p, f in (d.get("floors") or {}).items() if f),
         f"- ModelOpt's interpreter: {mo.get('python')}; {mo.get('how')}"]
    for r in d.get("rows") or []:
        if r.get("who") == "modelopt":
            L.append(f"- {r['name']}: {r.get('about')}; {r.get('seconds')} s in mtq.quantize"
                     + (f"; failed: {r['error']}" if r.get("error") else f"; enabled quantizers {json.dumps(r.get('quantizers'))}"))
        elif r.get("method"):
            L.append(f"- {r['name']} (torch_build, {r.get('device')}, {r.get('runtime')}): {r['method']}")
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------------------------ CLI
def main(argv=None) -> int:
    ap = cli.parser("python -m enc2triton.quant_peers_torch", (
        "The quantization peer, PyTorch side: NVIDIA ModelOpt's PyTorch PTQ (mtq.quantize, in its own venv .venv-modelopt: "
        "make modelopt) on the checkpoint the export used, calibrated on the texts our int8/fp8 calibrate on, measured as "
        "torch_build measures our torch_int8/torch_fp8 (vs our FP32 encoder on the evaluation texts), beside them. Writes "
        "logs/quant_peers_torch.{json,md}; ModelOpt's inputs, embeddings and log go to ARTIFACTS/quant_peers_torch/."))
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"comma-separated subset of {','.join(CONFIGS)} "
                    "(default %(default)s)")
    ap.add_argument("--device", choices=tuple(DEVICES), default="cpu", help="cpu (default %(default)s): ModelOpt's fake "
                    "quantization on the CPU; gpu: the same on a CUDA GPU (written, not yet run on one; no GPU is an error, "
                    "never a CPU fallback)")
    add_peer_args(ap)

    def body(a) -> None:
        run(a.artifacts, a.logs, tuple(c.strip() for c in a.configs.split(",") if c.strip()), a.calibration, a.evaluation,
            a.device, a.python)
    return cli.run(ap, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
