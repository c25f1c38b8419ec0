"""Export the encoder to ONNX (dynamic batch and sequence axes) and verify it against PyTorch.

Export and verification are one step: an ONNX file is only recorded in the manifest after ONNX
Runtime reproduced PyTorch within tolerance on real sentences at several shapes, padded batches included.
"""
from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from enc2triton.core import cli, host, io, spec
from enc2triton.export import models
from enc2triton.runtime.engines import ort_session
from enc2triton.core.io import StageError
from enc2triton.core.texts import read_texts, tokenize

# (batch, pad-to length or None for "longest in batch"): short, padded, fixed 128, long.
VERIFY_SHAPES = ((1, None), (4, None), (8, 128), (2, 384))
ATOL = 1e-4


class VerificationError(StageError):
    """ONNX Runtime disagreed with PyTorch beyond tolerance; the message has the numbers."""


def export_onnx(encoder: models.Encoder, tokenizer, onnx_path: Path) -> None:
    names = encoder.input_names
    sample = {k: torch.from_numpy(v) for k, v in tokenize(tokenizer, ["export sample", "a second, longer sample sentence"], names, 64).items()}
    dyn = {n: {0: "batch", 1: "sequence"} for n in names}
    dyn["last_hidden_state"] = {0: "batch", 1: "sequence"}
    dyn["sentence_embedding"] = {0: "batch"}
    with io.atomic_path(onnx_path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        # export a copy: tracing leaves the module altered (its eager outputs drift afterwards)
        torch.onnx.export(copy.deepcopy(encoder), tuple(sample[n] for n in names), str(tmp), input_names=list(names),
                          output_names=list(spec.OUTPUTS), dynamic_axes=dyn, opset_version=spec.OPSET,
                          do_constant_folding=True, dynamo=False)
        import onnx
        onnx.checker.check_model(str(tmp))


def verify(encoder: models.Encoder, tokenizer, onnx_path: Path, texts: list[str], max_length: int,
           atol: float = ATOL, shapes=VERIFY_SHAPES) -> list[dict]:
    """One row per (shape, output); raises VerificationError naming the worst difference."""
    sess = ort_session(onnx_path)
    rows = []
    for i, (batch, pad_to) in enumerate(shapes):
        chunk = [texts[(i * 7 + j) % len(texts)] for j in range(batch)]
        if pad_to and pad_to > 128:  # make the long shape really long, not just padding
            chunk = [" ".join(texts[(j + k) % len(texts)] for k in range(12)) for j in range(batch)]
        feed = tokenize(tokenizer, chunk, encoder.input_names, max_length, pad_to)
        with torch.inference_mode():
            ref = [t.numpy() for t in encoder(**{k: torch.from_numpy(v) for k, v in feed.items()})]
        got = sess.run(list(spec.OUTPUTS), feed)
        for name, r, g in zip(spec.OUTPUTS, ref, got):
            if r.shape != g.shape:
                raise VerificationError(f"{name}: shape {g.shape} from ONNX Runtime, {r.shape} from PyTorch")
            diff = float(np.abs(r - g).max())
            row = {"batch": batch, "seq": int(feed["input_ids"].shape[1]), "output": name, "max_abs_diff": diff, "ok": diff <= atol}
            print(f"  verify batch={batch:<2} seq={row['seq']:<4} {name:<19} max|diff|={diff:.2e} {'ok' if row['ok'] else 'FAIL'} (atol {atol:g})")
            rows.append(row)
    bad = [r for r in rows if not r["ok"]]
    if bad:
        worst = max(bad, key=lambda r: r["max_abs_diff"])
        raise VerificationError(f"ONNX export does not match PyTorch: {worst['output']} max abs diff {worst['max_abs_diff']:.3e} "
                                f"> {atol:g} at batch {worst['batch']} seq {worst['seq']}")
    return rows


def run(model: str = spec.DEFAULT_MODEL, artifacts: Path | None = None, texts_path: Path = spec.EVALUATION_TEXTS,
        shapes: spec.ShapeLimits | None = None, allow_fallback: bool | None = None, force: bool = True):
    """Export + verify + manifest. Returns (encoder, tokenizer, info, manifest) for later steps in-process."""
    encoder, tokenizer, info = models.load(model, allow_fallback)
    artifacts = io.ensure_writable_dir(Path(artifacts or spec.ARTIFACTS))  # only once there is something to write
    shapes = shapes or spec.ShapeLimits(max_seq=min(spec.ShapeLimits().max_seq, info.max_length))
    if shapes.max_seq > info.max_length:
        raise StageError(f"max_seq {shapes.max_seq} exceeds the model's maximum length {info.max_length}")
    print(f"model: {info.used} ({info.source}), {info.model_type}, {info.num_layers} layers x {info.hidden_size}, inputs {list(encoder.input_names)}")
    onnx_path = artifacts / "onnx" / "model_fp32.onnx"
    manifest = io.load_manifest(artifacts, required=False)
    same = (manifest.get("model", {}).get("config_sha256") == info.config_sha256 and manifest.get("shapes") == shapes.as_dict()
            and manifest.get("model", {}).get("used") == info.used)
    if not force and same and io.is_valid(manifest.get("variants", {}).get("fp32", {}).get("onnx"), artifacts):
        print(f"fp32 export: up to date ({onnx_path}, hash checked); --force to redo")
        return encoder, tokenizer, info, manifest
    tok_dir = artifacts / "tokenizer"
    tokenizer.save_pretrained(tok_dir)
    t0 = time.perf_counter()
    export_onnx(encoder, tokenizer, onnx_path)
    print(f"exported {onnx_path} in {time.perf_counter() - t0:.1f}s; verifying against PyTorch")
    rows = verify(encoder, tokenizer, onnx_path, read_texts(texts_path), shapes.max_seq)
    stale = not same
    variants = {} if stale else manifest.get("variants", {})  # a new model invalidates every derived variant
    variants["fp32"] = {"onnx": io.artifact_entry(onnx_path, artifacts), "method": "torch.onnx.export (TorchScript), verified vs PyTorch"}
    # the sections the export owns; a new model also drops every other family's engines (built from the old one)
    manifest = io.update_manifest_sections({
        "model": info.as_dict(),
        "inputs": list(encoder.input_names),
        "outputs": list(spec.OUTPUTS),
        "shapes": shapes.as_dict(),
        "tokenizer_dir": "tokenizer",
        "export": {"opset": spec.OPSET, "attention": "eager", "torch": torch.__version__, "atol": ATOL, "verification": rows,
                   "exported_at": time.strftime("%Y-%m-%d %H:%M:%S")},
        "variants": variants,
    }, artifacts, drop=tuple(f.section for f in spec.FAMILIES.values() if f.section != "variants") if stale else ())
    print(f"manifest: {io.manifest_path(artifacts)}")
    return encoder, tokenizer, info, manifest


def flops_report(encoder: models.Encoder, tokenizer, info: models.ModelInfo, logs: Path, batch: int, seq: int,
                 machine: str | None = None) -> dict:
    from enc2triton.export import flops

    texts = [f"padding sample {i}" for i in range(batch)]
    feed = tokenize(tokenizer, texts, encoder.input_names, seq, pad_to=seq)
    inputs = {k: torch.from_numpy(v) for k, v in feed.items()}
    result = flops.analyze(encoder, inputs, encoder.model.config, info.used)
    result["model_info"] = info.as_dict()
    result["generated_at"], result["host"] = time.strftime("%Y-%m-%d %H:%M:%S"), machine or host.describe()
    json_path, md_path = flops.write_reports(result, logs)
    print(f"FLOPs: {result['flops_per_sequence'] / 1e9:.3f} GFLOP per sequence at seq {seq} "
          f"(analytic {result['analytic_flops_per_sequence'] / 1e9:.3f}); {json_path}, {md_path}")
    return result


def main(argv=None) -> int:
    ap = cli.parser("torch2onnx.py", (
        "Step 1: export a Hugging Face encoder to ONNX (dynamic batch and sequence), verify it against PyTorch, "
        "count FLOPs with fvcore and derive a roofline analysis. Writes artifacts/ and logs/flops.{json,md}."))
    ap.add_argument("--model", default=spec.DEFAULT_MODEL, help="hub id, local folder or random:<architecture> (default %(default)s; "
                    "offline, the default falls back to the bundled all-MiniLM-L6-v2, loudly)")
    ap.add_argument("--no-fallback", action="store_true", help="fail instead of falling back to the bundled model (default: fall back)")
    ap.add_argument("--max-batch", type=cli.at_least(1), default=spec.ShapeLimits.max_batch,
                    help="largest batch served: Triton, TensorRT profile (default %(default)s)")
    ap.add_argument("--max-seq", type=cli.at_least(1), default=spec.ShapeLimits.max_seq,
                    help="longest sequence, capped at the model's maximum (default %(default)s)")
    ap.add_argument("--flops-batch", type=cli.at_least(1), default=1, help="batch of the fvcore FLOP count (default %(default)s)")
    ap.add_argument("--flops-seq", type=cli.at_least(1), default=128, help="sequence length of the FLOP count (default %(default)s)")
    ap.add_argument("--skip-flops", action="store_true", help="no FLOP count or roofline (default: count)")
    ap.add_argument("--force", action="store_true", help="redo the export even when a verified one matches the model (default: resume)")

    def body(a) -> None:
        custom = a.max_seq != spec.ShapeLimits.max_seq or a.max_batch != spec.ShapeLimits.max_batch
        try:
            limits = spec.ShapeLimits(max_batch=a.max_batch, opt_batch=min(spec.ShapeLimits.opt_batch, a.max_batch),
                                      max_seq=a.max_seq, opt_seq=min(spec.ShapeLimits.opt_seq, a.max_seq))
        except ValueError as e:
            raise StageError(str(e)) from None
        encoder, tokenizer, info, manifest = run(a.model, a.artifacts, shapes=limits if custom else None,
                                                 allow_fallback=False if a.no_fallback else None, force=a.force)
        io.ensure_writable_dir(a.logs)
        machine = host.describe()  # nvidia-smi and /proc/cpuinfo: read once for both logs
        # when the export was made (not this invocation, which may have found it up to date): the report calls a log
        # older than this one a log of an earlier run
        io.write_json(a.logs / "model.json", {**info.as_dict(), "exported_at": manifest.get("export", {}).get("exported_at"),
                                              "host": machine})
        if not a.skip_flops:
            flops_report(encoder, tokenizer, info, a.logs, a.flops_batch, a.flops_seq, machine)
    return cli.run(ap, body, argv)
