"""Quality of every served variant, through the real server, against the FP32 references.

Each ensemble (TEXT -> sentence_embedding) gets the evaluation texts; embeddings are compared with
PyTorch FP32 (the model itself) and with onnx_fp32 as served. Floors come from spec.FLOORS.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from enc2triton.core import cli, io, markdown, metrics, spec
from enc2triton.core.texts import load_tokenizer, read_texts, texts_sha256, tokenize
from enc2triton.core.io import StageError

BATCH = 16
# A fused model runs the ensemble's tokenizer and engine: batches differ (so the padding a GPU engine trims), not numbers.
FUSED_MIN_COS = 0.99999


def client_for(info, protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as client
    else:
        import tritonclient.http as client
    return client, client.InferenceServerClient(info.url(protocol))


def embed_remote(client_mod, client, model: str, texts: list[str], batch: int = BATCH) -> np.ndarray:
    out = []
    for i in range(0, len(texts), batch):
        chunk = np.array([[t.encode("utf-8")] for t in texts[i:i + batch]], dtype=object)
        inp = client_mod.InferInput(spec.TEXT_INPUT, list(chunk.shape), "BYTES")
        inp.set_data_from_numpy(chunk)
        res = client.infer(model, [inp], outputs=[client_mod.InferRequestedOutput("sentence_embedding")])
        out.append(res.as_numpy("sentence_embedding"))
    return np.concatenate(out)


def embed_torch(manifest: dict, artifacts: Path, texts: list[str], batch: int = BATCH) -> np.ndarray:
    import torch

    from enc2triton.export import models

    encoder, _, info = models.load(manifest["model"]["path"], allow_fallback=False)
    if info.config_sha256 != manifest["model"]["config_sha256"]:
        raise StageError("the model on disk differs from the exported one (config hash): rerun `python torch2onnx.py`")
    tok = load_tokenizer(io.resolve(manifest["tokenizer_dir"], artifacts))
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            feed = tokenize(tok, texts[i:i + batch], encoder.input_names, manifest["shapes"]["max_seq"])
            out.append(encoder(**{k: torch.from_numpy(v) for k, v in feed.items()})[1].numpy())
    return np.concatenate(out)


def to_markdown(result: dict) -> str:
    m = result["model"]
    lines = [f"# Quality through Triton: {m['used']}", "",
             f"Model: {m['used']} ({m['source']}){' — FALLBACK: the requested ' + repr(m['requested']) + ' was not available' if m.get('fallback') else ''}.",
             f"{result['n_texts']} evaluation texts ({result['texts']}), protocol {result['protocol']}, server {result['server']}.", ""]
    kept, rows = result.get("kept_from_earlier_runs") or {}, []
    for name, row in result["variants"].items():
        for ref in ("pytorch_fp32", "onnx_fp32"):
            r = row.get(ref)
            if not r:
                continue
            floor = row["floor"]
            label = f"{name} (earlier run, {kept[name]})" if name in kept else name
            rows.append([label, ref, f"{r['mean_cos']:.6f}", f"{r['min_cos']:.6f}", f"{r['max_abs']:.3g}", f"{r['rel_l2']:.3g}",
                         f"{r['top10']:.3f}", metrics.floor_text(floor), "yes" if row["pass"] else "NO"])
    lines += markdown.table(["variant", "vs", "mean cos", "min cos", "max abs", "rel L2", "top-10 agreement", "floor", "pass"], rows)
    fused = [(name, row["fused"]) for name, row in result["variants"].items() if row.get("fused")]
    if fused:  # the same tokenizer and engine in one model: checked against the ensemble's embeddings of the same texts
        lines += ["", "Fused models (tokenizer and engine in one model) against their ensemble, same texts:", ""]
        lines += markdown.table(["fused model", "vs ensemble: mean cos", "min cos", "max abs", "same"],
                                [[f["model"], f"{f['vs_ensemble']['mean_cos']:.7f}", f"{f['vs_ensemble']['min_cos']:.7f}",
                                  f"{f['vs_ensemble']['max_abs']:.3g}", "yes" if f["same"] else "NO"] for _, f in fused])
    if result.get("status") != "complete":
        lines += ["", f"**INCOMPLETE**: {result.get('error')}"]
    return "\n".join(lines) + "\n"


def run(artifacts: Path = spec.ARTIFACTS, repository: Path = spec.REPOSITORY, logs: Path = spec.LOGS,
        texts_path: Path = spec.EVALUATION_TEXTS, protocol: str = "grpc", only: list[str] | None = None) -> dict:
    from enc2triton.serve import server

    manifest = io.load_manifest(artifacts)
    repo_info = Path(repository) / "repository.json"
    if not repo_info.exists():
        raise StageError(f"{repository} has no repository.json: run `make repository`")
    served_models = io.read_json(repo_info)["models"]
    ensembles = served_ensembles = [m for m in served_models if spec.kind_of(m) == "ensemble"]
    fused = {spec.ensemble_name(spec.raw_model(m)): m for m in served_models if spec.kind_of(m) == "fused"}
    if only:
        unknown = [m for m in only if m not in ensembles and spec.ensemble_name(m) not in ensembles]
        if unknown:
            raise StageError(f"not served by {repository}: {', '.join(unknown)}; variants there: "
                             + ", ".join(spec.raw_model(e) for e in ensembles))
        ensembles = [e for e in ensembles if e in only or spec.raw_model(e) in only]
    texts = read_texts(texts_path)
    print(f"reference: PyTorch FP32 on {len(texts)} texts ({manifest['model']['used']})")
    ref = embed_torch(manifest, Path(artifacts), texts)
    result = {"model": manifest["model"], "texts": io.rel(texts_path), "n_texts": len(texts),
              "texts_sha256": texts_sha256(texts), "protocol": protocol,
              "variants": {}, "status": "incomplete", "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    logs = io.ensure_writable_dir(Path(logs))
    out, progress = logs / "quality.json", logs / "quality.json.partial"
    earlier = kept_variants(out, result, [spec.raw_model(e) for e in served_ensembles])
    failures = []
    step = "starting the server"
    try:
        with server.running(repository, logs) as info:
            result["server"] = info.url(protocol)
            result["server_ready_seconds"] = info.ready_seconds
            io.write_json(progress, result)
            mod, client = client_for(info, protocol)
            served = {}
            for ens in sorted(ensembles, key=lambda e: (e != spec.ensemble_name(spec.REFERENCE), e)):
                step = f"{ens}: inference"
                t0 = time.perf_counter()
                served[ens] = embed_remote(mod, client, ens, texts, batch=min(BATCH, manifest["shapes"]["max_batch"]))
                step = f"{ens}: comparison"
                model = spec.raw_model(ens)
                floor = spec.variant_of(ens).floor
                row = {"floor": floor, "pytorch_fp32": metrics.compare(ref, served[ens]), "seconds": time.perf_counter() - t0,
                       "measured": result["started"]}
                base = served.get(spec.ensemble_name(spec.REFERENCE))
                if base is not None and ens != spec.ensemble_name(spec.REFERENCE):
                    row["onnx_fp32"] = metrics.compare(base, served[ens])
                row["pass"] = metrics.passes(row["pytorch_fp32"], floor)
                result["variants"][model] = row
                io.write_json(progress, result)  # progress survives a crash; quality.json is swapped in at the end
                r = row["pytorch_fp32"]
                print(f"  {model:<10} mean cos {r['mean_cos']:.6f}  min {r['min_cos']:.6f}  top-10 {r['top10']:.3f}  "
                      f"{'ok' if row['pass'] else 'BELOW FLOOR'} (floor {metrics.floor_text(floor)})")
                if not row["pass"]:
                    failures.append(f"{model}: mean cos {r['mean_cos']:.6f} / min {r['min_cos']:.6f} / top-10 {r['top10']:.3f} "
                                    f"under the floor ({metrics.floor_text(floor)})")
                if ens in fused:  # the same tokenizer and engine in one model: the same embeddings, or it is wrong output
                    step = f"{fused[ens]}: inference"
                    got = embed_remote(mod, client, fused[ens], texts, batch=min(BATCH, manifest["shapes"]["max_batch"]))
                    same = metrics.compare(served[ens], got)
                    row["fused"] = {"model": fused[ens], "vs_ensemble": same, "pytorch_fp32": metrics.compare(ref, got),
                                    "same": same["min_cos"] >= FUSED_MIN_COS}
                    io.write_json(progress, result)
                    print(f"  {fused[ens]}: vs {ens} min cos {same['min_cos']:.7f} {'same' if row['fused']['same'] else 'DIFFERENT'}")
                    if not row["fused"]["same"]:
                        failures.append(f"{fused[ens]}: min cos {same['min_cos']:.7f} against {ens} (the same tokenizer and engine)")
        result["status"] = "complete"
    except KeyboardInterrupt:
        result["error"] = f"{step}: interrupted"
        print(f"quality run interrupted at {result['error']}; {finish(result, earlier, out, progress)[1]}", file=sys.stderr)
        raise
    except Exception as e:  # server gone or an inference error: say where, keep what was measured, mark incomplete
        result["error"] = f"{step}: {io.first_line(e)}"
        raise StageError(f"quality run failed at {result['error']}; {finish(result, earlier, out, progress)[1]}") from e
    merged, where = finish(result, earlier, out, progress)
    if merged is None:  # a repository without ensembles: never write an empty result
        raise StageError(f"quality run measured nothing (no ensemble in {repository}); {where}")
    if failures:
        raise StageError("quality floors not met:\n  " + "\n  ".join(failures))
    return merged


def kept_variants(path: Path, result: dict, variants: list[str]) -> dict:
    """The rows of the quality.json at `path` for `variants` (those the repository serves) when it was measured the
    same way: the same model (config hash), the same texts (content) and protocol."""
    prev = io.read_earlier(path, "variants")
    if prev is None:
        return {}

    def config(d: dict) -> str | None:
        return d["model"].get("config_sha256") if isinstance(d.get("model"), dict) else None
    if (config(prev) is None or config(prev) != config(result) or prev.get("texts_sha256") != result["texts_sha256"]
            or prev.get("n_texts") != result["n_texts"] or prev.get("protocol") != result["protocol"]):
        return {}
    return {v: {**row, "measured": row.get("measured", prev.get("started"))} for v, row in prev["variants"].items()
            if v in variants and isinstance(row, dict)}


def finish(result: dict, earlier: dict, out: Path, progress: Path) -> tuple[dict | None, str]:
    """End of a run, however it ended: when it measured any variant, the variants it did not measure keep their
    earlier rows (measured the same way) and the result is swapped in as quality.json (and quality.md); else
    quality.json is left as it is and the progress file says what failed. Returns (what was written or None, where)."""
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if not result["variants"]:
        result["result"] = f"nothing measured: {out.name} left as it was"
        io.write_json(progress, result)
        return None, f"nothing was measured: {out} left as it was; what failed: {progress}"
    new = result["variants"]
    kept = {v: row for v, row in earlier.items() if v not in new}
    if kept:
        order = sorted(set(new) | set(kept), key=lambda v: (v != spec.REFERENCE, v))  # as measured: the reference first
        result["variants"] = {v: new[v] if v in new else kept[v] for v in order}
        result["kept_from_earlier_runs"] = {v: row["measured"] for v, row in kept.items()}
    io.write_json(progress, result)
    os.replace(progress, out)  # the swap: quality.json is only ever a whole result
    io.write_text(out.with_suffix(".md"), to_markdown(result))
    where = (f"results in {out} (status {result['status']}"
             + (f"; earlier results kept for {', '.join(kept)}" if kept else "") + ")")
    return result, where


def main(argv=None) -> int:
    ap = cli.parser("client.py", (
        "Step 6: send the evaluation texts through every ensemble on the Triton server and measure each precision "
        "against the FP32 references (PyTorch and onnx_fp32 as served). Writes logs/quality.{json,md}; "
        "exits non-zero when a variant is under its floor. Starts a server if none is running for the repository."))
    ap.add_argument("--protocol", choices=("http", "grpc"), default="grpc", help="(default %(default)s)")
    ap.add_argument("--models", default="", help="comma-separated variants or ensembles, e.g. onnx_int8 (default: all served)")
    ap.add_argument("--texts", type=Path, default=spec.EVALUATION_TEXTS, help="one text per line (default %(default)s)")
    ap.add_argument("--repository", type=Path, default=spec.REPOSITORY, help="the model repository (default %(default)s)")

    def body(a) -> None:
        run(a.artifacts, a.repository, a.logs, a.texts, a.protocol, [m.strip() for m in a.models.split(",") if m.strip()])
    return cli.run(ap, body, argv)
