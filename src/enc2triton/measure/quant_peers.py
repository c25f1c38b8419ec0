"""Quantization peer: NVIDIA ModelOpt's ONNX post-training quantization beside ours, on the same checkpoint, the same
calibration texts and the same held-out evaluation texts, its quality measured by the same code.

What a user would run instead of our INT8 search (SmoothQuant, a range method per tensor role, sensitive MatMuls
kept FP32: int8_search.py) and our FP8 Q/DQ (fp8_qdq.py): `modelopt.onnx.quantization.quantize` on the fp32 export.

- Input: the manifest's fp32 ONNX export, copied first (ModelOpt rewrites its input in place, shape inference, and
  writes its intermediate files beside it): one folder per configuration under artifacts/quant_peers/.
- Calibration: the texts quantize.py calibrates its int8 ranges and its fp8 scales on (data/calibration.txt, the same
  seeded split: its held-out slice is left out here as there), tokenized and length-batched as the project does
  (texts.length_batches: at most 16 texts of similar length a batch, at their natural lengths), handed to ModelOpt as
  an onnxruntime CalibrationDataReader over those batches.
- ModelOpt's settings: calibration on the CPU execution provider and high_precision_dtype fp32 (its default fp16 turns
  the rest of the graph to FP16 for TensorRT; ONNX Runtime has no x86 FP16 kernels and on the CPU that gave cosine
  0.52, shared/notes/quantization-measured.md); everything else its defaults (which ops get Q/DQ, MHA rules, passes).
  Configurations: INT8 with max and with entropy calibration (ModelOpt's default method), FP8 (E4M3) likewise.
- Quality: variant_quality.quality, as quantize.py measures ours: sentence embeddings vs the fp32 export on
  data/evaluation.txt, ONNX Runtime CPU with default optimizations (its x86 int8 kernels) and as written (graph
  optimizations off: the Q/DQ arithmetic TensorRT implements); FP8 as written only (ONNX Runtime has no FP8 kernels).
  Ours come from the manifest's int8 / best / fp8 entries, measured by quantize.py on the same texts the same way.

ModelOpt cannot share the project's venv (requirements-modelopt.txt says why): it runs in .venv-modelopt (`make
modelopt`) as a subprocess (modelopt_runner.py, standalone); ENC2TRITON_MODELOPT_PYTHON names another interpreter that
has it. Writes logs/quant_peers.{json,md}; the report renders the JSON (section "Quantization peer (NVIDIA ModelOpt)").
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from enc2triton.core import cli, host, io, metrics, spec
from enc2triton.quantize.calibration import split_calibration
from enc2triton.quantize.int8_search import Int8Settings
from enc2triton.core.io import StageError
from enc2triton.core.markdown import table as md_table
from enc2triton.quantize.onnx_graph import QDQ_OPS, load
from enc2triton.core.texts import length_batches, load_tokenizer, read_calibration, read_texts, texts_sha256
from enc2triton.quantize.variant_quality import cache_reference, quality

MODELOPT_VENV = spec.ROOT / ".venv-modelopt"
RUNNER = Path(__file__).with_name("modelopt_runner.py")
PACKAGE = "nvidia-modelopt"
INSTALL = ("make modelopt (its own venv .venv-modelopt from requirements-modelopt.txt), or set ENC2TRITON_MODELOPT_PYTHON "
           "to a Python that has nvidia-modelopt")
TITLE = "Quantization peer (NVIDIA ModelOpt)"


@dataclass(frozen=True)
class Config:
    name: str
    mode: str     # ModelOpt quantize_mode
    method: str   # ModelOpt calibration_method
    about: str
    extra: tuple = ()  # more quantize() arguments, (name, value) pairs (a diagnostic configuration's change)

    def settings(self) -> dict:
        """What modelopt.onnx.quantization.quantize gets besides the paths and the calibration reader."""
        return {"quantize_mode": self.mode, "calibration_method": self.method, "calibration_eps": ["cpu"],
                "high_precision_dtype": "fp32", "log_level": "WARNING", **{k: list(v) if isinstance(v, tuple) else v for k, v in self.extra}}


CONFIGS = {c.name: c for c in (
    Config("int8_max", "int8", "max", "INT8, max calibration (symmetric |max| per tensor)"),
    Config("int8_entropy", "int8", "entropy", "INT8, entropy calibration (ModelOpt's default method)"),
    Config("fp8_max", "fp8", "max", "FP8 E4M3, max calibration"),
    Config("fp8_entropy", "fp8", "entropy", "FP8 E4M3, entropy calibration (ModelOpt's default method)"),
    # diagnostic: ModelOpt's INT8 default also puts Q/DQ on both inputs of every residual Add (TensorRT fuses an int8
    # residual add); this one keeps Q/DQ on MatMul inputs only, where ours puts them
    Config("int8_max_matmul_only", "int8", "max", "INT8, max calibration, Q/DQ on MatMul inputs only "
           "(op_types_to_quantize ['MatMul']: a diagnostic, ours quantizes only there too)", (("op_types_to_quantize", ("MatMul",)),)),
    Config("int8_entropy_matmul_only", "int8", "entropy", "INT8, entropy calibration, Q/DQ on MatMul inputs only (diagnostic)",
           (("op_types_to_quantize", ("MatMul",)),)),
)}
DEFAULT_CONFIGS = ("int8_max", "int8_entropy", "fp8_max", "fp8_entropy")
OURS = ("int8", "best", "fp8")  # the manifest's variants ModelOpt is compared with
FLOOR_OF = {"int8": "int8", "fp8": "fp8"}  # a ModelOpt mode -> the floor of our precision it stands beside


# ------------------------------------------------------------------------------------ its Python
def modelopt_python() -> str:
    """The interpreter that runs ModelOpt: ENC2TRITON_MODELOPT_PYTHON, else .venv-modelopt; a one-line StageError when
    neither exists (the project's venv does not have modelopt)."""
    if os.environ.get("ENC2TRITON_MODELOPT_PYTHON"):
        return os.environ["ENC2TRITON_MODELOPT_PYTHON"]
    venv = MODELOPT_VENV / "bin" / "python"
    if not venv.exists():
        raise StageError(f"the ModelOpt venv {io.rel(MODELOPT_VENV)} does not exist: {INSTALL}")
    return str(venv)


def peer_env() -> dict:
    """Ours without our PYTHONPATH (the project's packages must not shadow ModelOpt's onnx/onnxruntime)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}


def packages(python: str | None = None, runner: Path = RUNNER, needs: str = "modelopt.onnx.quantization") -> dict:
    """Versions in ModelOpt's interpreter (modelopt, onnx, onnxruntime, ...) as `runner --probe` reports them; a one-line
    StageError when it cannot run, lacks nvidia-modelopt or cannot import what the runner `needs`."""
    python = python or modelopt_python()
    try:
        p = subprocess.run([python, str(runner), "--probe"], capture_output=True, text=True, env=peer_env(), timeout=300)
        found = json.loads(p.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as e:
        raise StageError(f"cannot run ModelOpt's Python {python}: {io.first_line(e)}; {INSTALL}") from None
    if not found.get(PACKAGE):
        raise StageError(f"{PACKAGE} is not installed for {python}: {INSTALL}")
    if found.get("import_error"):
        raise StageError(f"{needs} does not import in {python} ({found['import_error']}): {INSTALL}")
    return found


# ------------------------------------------------------------------------------------ one ModelOpt run
def write_calibration(path: Path, feeds: list[dict]) -> Path:
    """The calibration batches for the runner: key `<batch>/<input>`, int64 arrays as the project tokenized them."""
    arrays = {f"{i}/{name}": np.asarray(a, np.int64) for i, f in enumerate(feeds) for name, a in f.items()}
    np.savez(path, **arrays)
    return path


def call_runner(python: str, runner: Path, request: dict, folder: Path, timeout: float) -> subprocess.CompletedProcess:
    """`runner --request folder/request.json` in ModelOpt's interpreter, its output kept in folder/modelopt.log (both
    peers' runners take a request this way); subprocess.TimeoutExpired goes to the caller."""
    (folder / "request.json").write_text(json.dumps(request, indent=1))
    p = subprocess.run([python, str(runner), "--request", str(folder / "request.json")], capture_output=True, text=True,
                       env=peer_env(), timeout=timeout)
    (folder / "modelopt.log").write_text(p.stdout + p.stderr)
    return p


def run_modelopt(python: str, cfg: Config, fp32: Path, calib_npz: Path, work: Path, timeout: float = 3600) -> dict:
    """Quantize a fresh copy of `fp32` with `cfg` in ModelOpt's interpreter; the runner's record (error included)."""
    folder = work / cfg.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    src = folder / "model_fp32_copy.onnx"
    shutil.copyfile(fp32, src)
    out = folder / f"model_modelopt_{cfg.name}.onnx"
    req = {"onnx": str(src), "output": str(out), "calibration": str(calib_npz), "record": str(folder / "record.json"),
           "settings": cfg.settings()}
    t0 = time.perf_counter()
    try:
        p = call_runner(python, RUNNER, req, folder, timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"ModelOpt did not finish within {timeout:g} s", "seconds": round(time.perf_counter() - t0, 1)}
    rec_path = folder / "record.json"
    rec = json.loads(rec_path.read_text()) if rec_path.exists() else {
        "error": f"the runner exited {p.returncode} without a record: " + io.first_line(RuntimeError((p.stderr or p.stdout).strip()[-300:] or "no output"))}
    if not rec.get("error") and not out.exists():
        rec["error"] = "ModelOpt returned without writing its output graph"
    rec["log"] = str(folder / "modelopt.log")
    src.unlink(missing_ok=True)  # the rewritten copy: not needed any more (90 MB)
    for extra in folder.glob("*.onnx"):
        if extra != out:
            extra.unlink()
    return rec


def graph_summary(path: Path) -> dict:
    """Where the Q/DQ pairs sit: quantized consumers by op type (a node with a DequantizeLinear input, Shape aside), Q/DQ counts,
    the quantized element type and whether every zero point is 0 (symmetric)."""
    from onnx import numpy_helper

    m = load(path)
    g = m.graph
    dq_out = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    inits = {i.name: i for i in g.initializer}
    by_op: dict[str, int] = {}
    adds = {1: 0, 2: 0}  # Adds by how many of their inputs come through Q/DQ (residual Adds: 1 = the shared residual input)
    for n in g.node:
        # Shape reads only a tensor's dimensions: a DequantizeLinear output it also reads is no quantized input
        if n.op_type not in (*QDQ_OPS, "Shape") and any(x in dq_out for x in n.input):
            by_op[n.op_type] = by_op.get(n.op_type, 0) + 1
            if n.op_type == "Add":
                k = min(2, sum(x in dq_out for x in n.input))
                adds[k] += 1
    zps, qtypes = [], set()
    for n in g.node:
        if n.op_type in QDQ_OPS and len(n.input) > 2 and n.input[2] in inits:
            z = numpy_helper.to_array(inits[n.input[2]])
            zps.append(z)
            qtypes.add(str(z.dtype))
    matmuls = sum(n.op_type == "MatMul" for n in g.node)
    return {"quantize_linear": sum(n.op_type == "QuantizeLinear" for n in g.node),
            "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in g.node),
            "quantized_ops": dict(sorted(by_op.items())), "matmuls": matmuls, "quantized_matmuls": by_op.get("MatMul", 0),
            "adds_one_input_qdq": adds[1], "adds_both_inputs_qdq": adds[2],
            "zero_points_all_zero": bool(all(np.all(np.asarray(z, np.float32) == 0) for z in zps)),
            "quantized_types": sorted(qtypes), "opset": max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=None)}


def _shown(python: str) -> str:
    """An interpreter's path for a log: relative to the checkout when inside it (a venv's python is a symlink out of it:
    io.rel, which resolves, would print it absolute), else as given."""
    try:
        return str(Path(python).relative_to(spec.ROOT))
    except ValueError:
        return python


# ------------------------------------------------------------------------------------ rows
def _mb(nbytes) -> float | None:
    return round(nbytes / 1e6, 1) if isinstance(nbytes, (int, float)) else None


def _q(q: dict | None, prefix: str = "") -> dict:
    q = q or {}
    return {f"{prefix}mean_cos": q.get("mean_cos"), f"{prefix}min_cos": q.get("min_cos"), f"{prefix}top10": q.get("top10"),
            f"{prefix}rel_l2": q.get("rel_l2")} if q else {}


def _pass(row: dict, precision: str) -> bool | None:
    fl = spec.FLOORS.get(precision)
    if not fl:
        return None
    pre = "exact_" if row.get("mean_cos") is None else ""  # FP8: as written only
    q = {k: row.get(pre + k) for k in ("mean_cos", "min_cos", "top10")}
    return metrics.passes(q, fl) if q["mean_cos"] is not None and q["min_cos"] is not None else None


def our_rows(manifest: dict) -> list[dict]:
    """Our int8 / best / fp8 as quantize.py recorded them in the manifest (quality on the evaluation texts)."""
    rows = []
    variants = manifest.get("variants") or {}
    for p in OURS:
        e = variants.get(p) or {}
        row = {"who": "ours", "name": f"ours {p}", "variant": p, "precision": {"fp8": "fp8", "best": "int8 + fp16"}.get(p, "int8")}
        if not e.get("onnx"):
            rows.append({**row, "note": "not built: run python -m enc2triton.quantize"})
            continue
        row["mb"] = _mb(e["onnx"].get("bytes"))
        if p == "fp8":  # measured as written only (ONNX Runtime has no FP8 kernels)
            row.update(_q(e.get("quality"), "exact_"))
            kept = e.get("kept_fp32") or []
            row["placement"] = (f"{e.get('quantized_matmuls', '-')} MatMuls ({e.get('fp32_matmuls')} FP32: {len(kept)} layers kept)"
                                if kept else f"{e.get('quantized_matmuls', '-')} MatMuls (the linear layers)")
        else:
            row.update(_q(e.get("quality")))
            row.update(_q(e.get("quality_graph_exact"), "exact_"))
            kept = e.get("excluded_nodes") or []
            # best records no candidate count of its own: its int8 graph's (the same Q/DQ placement)
            total = e.get("candidate_count") or (variants.get("int8") or {}).get("candidate_count") or "-"
            row["placement"] = f"{e.get('quantized_count', '-')} of {total} MatMuls" + (f", {len(kept)} kept FP32" if kept else "")
        row["method"] = {"int8": "SmoothQuant + range method per tensor role + measured sensitivity search",
                         "best": "the int8 graph, FP16 wherever no Q/DQ sits (TensorRT --best)",
                         "fp8": "GPTQ-rounded per-channel weights, static per-tensor activations, the most sensitive "
                                "layers kept FP32 (fp8_plan)" if e.get("plan") else
                                "per-tensor |max| activations, per-channel weights, linear layers only"}[p]
        row["pass"] = _pass(row, p)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ the stage
def run(artifacts: Path | None = None, logs: Path | None = None, configs=DEFAULT_CONFIGS, calibration: Path = spec.CALIBRATION_TEXTS,
        evaluation: Path = spec.EVALUATION_TEXTS, work: Path | None = None, python: str | None = None, progress: bool = True) -> dict:
    artifacts = Path(artifacts or spec.ARTIFACTS)
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise StageError(f"unknown configuration(s) {unknown}: choose from {', '.join(CONFIGS)}")
    python = python or modelopt_python()
    found = packages(python)  # before any work: a missing ModelOpt is one line
    logs = io.ensure_writable_dir(Path(logs or spec.LOGS))
    manifest = io.load_manifest(artifacts)
    fp32 = io.fp32_export(manifest, artifacts)
    fp32_path = io.resolve(fp32["path"], artifacts)
    inputs = list(manifest["inputs"])
    max_length = int(manifest.get("shapes", {}).get("max_seq", 512))
    tokenizer = load_tokenizer(artifacts / manifest.get("tokenizer_dir", "tokenizer"))
    s = Int8Settings()
    calib, _held = split_calibration(read_calibration(calibration, evaluation), s)
    eval_texts = read_texts(evaluation)
    _, feeds = length_batches(tokenizer, calib, inputs, max_length, s.batch_size)
    work = Path(work or artifacts / "quant_peers")
    work.mkdir(parents=True, exist_ok=True)
    calib_npz = write_calibration(work / "calibration.npz", feeds)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    args = (eval_texts, tokenizer, inputs, max_length)
    cache_reference(fp32_path, *args)
    rows = our_rows(manifest)
    for name in configs:
        cfg = CONFIGS[name]
        if progress:
            print(f"modelopt {name}: quantizing ({cfg.about}) ...", flush=True)
        rec = run_modelopt(python, cfg, fp32_path, calib_npz, work)
        row = {"who": "modelopt", "name": f"ModelOpt {name}", "config": name, "precision": cfg.mode, "about": cfg.about,
               "settings": cfg.settings(), "seconds": rec.get("seconds"), "log": io.rel(Path(rec["log"]), artifacts) if rec.get("log") else None}
        if rec.get("error"):
            row["error"] = rec["error"]
            rows.append(row)
            print(f"modelopt {name}: failed: {rec['error']}", flush=True)
            continue
        out = Path(rec["output"])
        row["onnx"] = io.artifact_entry(out, artifacts)
        row["mb"] = _mb(out.stat().st_size)
        row["graph"] = graph_summary(out)
        t0 = time.perf_counter()
        if cfg.mode == "int8":
            row.update(_q(quality(fp32_path, out, *args, graph_optimizations=True)))
        row.update(_q(quality(fp32_path, out, *args, graph_optimizations=False), "exact_"))
        row["measure_seconds"] = round(time.perf_counter() - t0, 1)
        gs = row["graph"]
        others = {k: v for k, v in gs["quantized_ops"].items() if k not in ("MatMul", "Add")}
        adds = [f"{gs[k]} Add reading {w}" for k, w in (("adds_both_inputs_qdq", "both inputs through Q/DQ"),
                                                        ("adds_one_input_qdq", "one input through Q/DQ")) if gs[k]]
        row["placement"] = ", ".join([f"{gs['quantized_matmuls']} of {gs['matmuls']} MatMuls", *adds,
                                      *(f"{v} {k}" for k, v in others.items())])
        row["pass"] = _pass(row, FLOOR_OF[cfg.mode])
        rows.append(row)
        if progress:
            shown = row.get("mean_cos", row.get("exact_mean_cos"))
            print(f"modelopt {name}: {row['mb']} MB, mean cos {shown:.6f} ({rec.get('seconds')} s)", flush=True)
    result = {
        "model": (manifest.get("model") or {}).get("used"), "host": host.describe(), "hardware": host.hardware(),
        "started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "fp32": {"path": fp32["path"], "sha256": fp32["sha256"], "mb": _mb(fp32.get("bytes"))},
        "calibration": {"data": io.rel(Path(calibration)), "texts": len(calib), "data_sha256": texts_sha256(calib),
                        "batches": len(feeds), "tokens": int(sum(int(f[inputs[0]].size) for f in feeds)),
                        "split": f"quantize.py's: seed {s.seed}, {s.held_out} texts held out, at most {s.max_calib_texts} calibrated on",
                        "batching": f"texts.length_batches: at most {s.batch_size} texts of similar length a batch, natural lengths "
                                    "(padded tokens included in ModelOpt's ranges; ours mask them out)"},
        "evaluation": {"data": io.rel(Path(evaluation)), "texts": len(eval_texts), "data_sha256": texts_sha256(eval_texts)},
        "quality_method": "variant_quality.quality: sentence embeddings vs the fp32 export, ONNX Runtime CPU; 'default' = default "
                          "graph optimizations (x86 int8 kernels), 'as written' = graph optimizations off (the Q/DQ arithmetic); "
                          "FP8 as written only (no FP8 kernels in ONNX Runtime); top-10 = nearest-neighbour agreement among the texts",
        "modelopt": {"python": _shown(python), "versions": found,
                     "common_settings": {"calibration_eps": ["cpu"], "high_precision_dtype": "fp32",
                                         "calibration_data_reader": "the project's length batches (above)",
                                         "everything else": "ModelOpt's defaults"},
                     "configs": {n: asdict(CONFIGS[n]) for n in configs}},
        "floors": {p: spec.FLOORS.get(p) for p in ("int8", "best", "fp8")},
        "rows": rows,
    }
    # a rerun of some configurations keeps the others' rows from the previous log of the same export and texts
    old_path = logs / "quant_peers.json"
    old = io.read_json(old_path) if old_path.exists() else {}
    if (old.get("fp32") or {}).get("sha256") == fp32["sha256"] and (old.get("calibration") or {}).get("data_sha256") == \
            result["calibration"]["data_sha256"] and (old.get("evaluation") or {}).get("data_sha256") == result["evaluation"]["data_sha256"]:
        kept = [r for r in old.get("rows") or [] if r.get("who") == "modelopt" and r.get("config") not in configs]
        if kept:
            result["rows"] = [r for r in rows if r.get("who") != "modelopt"] + sorted(
                kept + [r for r in rows if r.get("who") == "modelopt"], key=lambda r: list(CONFIGS).index(r["config"]) if r["config"] in CONFIGS else 99)
            result["modelopt"]["configs"] = {**(old.get("modelopt") or {}).get("configs", {}), **result["modelopt"]["configs"]}
            result["started_first"] = old.get("started_first") or old.get("started")
            print(f"kept from the previous log: {', '.join(r['config'] for r in kept)}")
    io.write_json(logs / "quant_peers.json", result)
    io.write_text(logs / "quant_peers.md", render(result))
    print(f"logs: {logs / 'quant_peers.json'}, {logs / 'quant_peers.md'}")
    return result


# ------------------------------------------------------------------------------------ Markdown (the log and the report)
def _c(x) -> str:
    return f"{x:.6f}" if isinstance(x, float) else "-"


def _t(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else "-"


def table_rows(d: dict) -> tuple[list[str], list[list]]:
    head = ["quantizer", "precision", "MB", "mean / min cos (ORT default)", "top-10 (ORT default)", "mean / min cos (as written)",
            "top-10 (as written)", "Q/DQ on", "floor"]
    rows = []
    for r in d.get("rows") or []:
        if r.get("error") or r.get("note"):
            rows.append([r.get("name"), r.get("precision"), "-", "-", "-", "-", "-", "-", "failed: " + r["error"] if r.get("error") else r["note"]])
            continue
        dflt = f"{_c(r.get('mean_cos'))} / {_c(r.get('min_cos'))}" if r.get("mean_cos") is not None else "- (no FP8 kernels)"
        fl = r.get("pass")
        rows.append([r.get("name"), r.get("precision"), r.get("mb"), dflt, _t(r.get("top10")),
                     f"{_c(r.get('exact_mean_cos'))} / {_c(r.get('exact_min_cos'))}", _t(r.get("exact_top10")),
                     r.get("placement") or "-", "-" if fl is None else ("pass" if fl else "FAIL")])
    return head, rows


def render(d: dict) -> str:
    head, rows = table_rows(d)
    mo = d.get("modelopt") or {}
    v = mo.get("versions") or {}
    cal, ev = d.get("calibration") or {}, d.get("evaluation") or {}
    L = ["# " + TITLE, "",
         f"Model: {d.get('model')}. Machine: {d.get('host')}. {d.get('started')} to {d.get('finished')}.", "",
         *md_table(head, rows), "",
         f"- ModelOpt: nvidia-modelopt {v.get('nvidia-modelopt')} (onnx {v.get('onnx')}, onnxruntime {v.get('onnxruntime')}, "
         f"Python {v.get('python')}) in {mo.get('python')}; settings: {json.dumps(mo.get('common_settings'))}; per configuration "
         + "; ".join(f"{n}: quantize_mode {c['mode']}, calibration_method {c['method']}" for n, c in (mo.get("configs") or {}).items()),
         f"- calibration: {cal.get('data')}, {cal.get('texts')} texts ({cal.get('split')}), {cal.get('batches')} batches, "
         f"{cal.get('tokens')} token slots; {cal.get('batching')}",
         f"- evaluation: {ev.get('data')}, {ev.get('texts')} texts (never used to calibrate or choose anything)",
         f"- quality: {d.get('quality_method')}",
         "- floors (ours, spec.py): " + "; ".join(f"{p} {metrics.floor_text(f)}" for p, f in (d.get("floors") or {}).items() if f)
         + " (FP8 rows checked on the as-written numbers)", ""]
    for r in d.get("rows") or []:
        if r.get("who") == "modelopt" and r.get("seconds") is not None:
            L.append(f"- {r['name']}: {r.get('about')}; {r.get('seconds')} s in ModelOpt" + (f"; failed: {r['error']}" if r.get("error") else
                     f"; graph: {r['graph']['quantize_linear']} QuantizeLinear, {r['graph']['dequantize_linear']} DequantizeLinear, "
                     f"types {', '.join(r['graph']['quantized_types'])}, zero points all 0: {r['graph']['zero_points_all_zero']}, opset {r['graph']['opset']}"))
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------------------------ CLI
def add_peer_args(ap) -> None:
    """The texts and ModelOpt's interpreter: both peers (this one and quant_peers_torch) take them alike."""
    ap.add_argument("--calibration", type=Path, default=spec.CALIBRATION_TEXTS, help="calibration texts (default %(default)s)")
    ap.add_argument("--evaluation", type=Path, default=spec.EVALUATION_TEXTS, help="evaluation texts (default %(default)s)")
    ap.add_argument("--python", default=None, help="ModelOpt's interpreter (default: $ENC2TRITON_MODELOPT_PYTHON, else "
                    ".venv-modelopt/bin/python)")


def main(argv=None) -> int:
    ap = cli.parser("python -m enc2triton.quant_peers", (
        "The quantization peer: NVIDIA ModelOpt's ONNX PTQ (modelopt.onnx.quantization.quantize, in its own venv "
        ".venv-modelopt: make modelopt) on a copy of the manifest's fp32 export, calibrated on the texts our int8/fp8 "
        "calibrate on, measured with ONNX Runtime CPU on the evaluation texts beside our int8/best/fp8 variants. Writes "
        "logs/quant_peers.{json,md}; ModelOpt's graphs go to ARTIFACTS/quant_peers/."))
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                    help=f"comma-separated subset of {','.join(CONFIGS)} (default %(default)s); a rerun keeps the previous "
                         "log's rows of the configurations not rerun (same export and texts); 'none': rerun none, "
                         "only our rows (from the manifest) and the Markdown are refreshed")
    add_peer_args(ap)

    def body(a) -> None:
        configs = () if a.configs.strip().lower() == "none" else tuple(c.strip() for c in a.configs.split(",") if c.strip())
        run(a.artifacts, a.logs, configs, a.calibration, a.evaluation,
            python=a.python)
    return cli.run(ap, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
