"""Step 7b (optional): search the serving settings by measurement, on this machine.

What triton-model-analyzer does for one model (instances x batching, measured with perf_analyzer), over the whole
ensemble instead: the tokenizer's instances, the model's instances per GPU, greedy vs preferred-size batching and
ragged batching, measured end to end (text in, embedding out) with the client on its own cores. Candidates are the
device's defaults and one change at a time from them (a one-factor search: each measured difference has one cause).

Every candidate is a copy of the variant's tokenizer, model and ensemble under a tag (<name>__c<k>; candidates with the
same tokenizer settings share one tokenizer), all on one server: one start for the whole search. Each candidate's
ensemble is measured by perf_analyzer at each load (texts per request x concurrency), with Triton's and the models' own
statistics (serving_stats). The chosen candidate has the best throughput over all loads (geometric mean of each load's
share of that load's best), counting a load whose p99 is over the budget as zero.

Writes logs/tune.json (every measurement and the choice) and logs/tune.md; `repository --tuned logs/tune.json`
generates the repository with the chosen settings.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from enc2triton.core import cli, host, io, markdown, spec, tools
from enc2triton.serve import mps as mpsd, repository, server
from enc2triton.measure import perf
from enc2triton.core.io import StageError
from enc2triton.core.texts import read_texts

DEFAULT_LOADS = ((16, 64), (1, 128))  # (texts per request, concurrency)
P99_BUDGET_MS = 50.0
PREFERRED = {"preferred_batch_sizes": spec.Serving.preferred_batch_sizes, "max_queue_delay_us": spec.Serving.max_queue_delay_us}


def candidates(device: str, gpus: int, instances: tuple[int, ...], tokenizer_instances: tuple[int, ...],
               cpus: int | None = None) -> list[dict]:
    """The device's defaults (for the server's `cpus` cores), then one change at a time: model instances, tokenizer
    instances, ragged batching off, and the other batching policy (greedy on a GPU, preferred sizes + delay on a CPU)."""
    base = spec.Serving.for_device(device, cpus, gpus=gpus)
    out = [{"changed": "defaults", "overrides": {}}]
    out += [{"changed": f"model_instances={n}", "overrides": {"model_instances": n}} for n in instances if n != base.model_instances]
    out += [{"changed": f"tokenizer_instances={n}", "overrides": {"tokenizer_instances": n}}
            for n in tokenizer_instances if n != base.tokenizer_instances]
    out.append({"changed": "ragged=off", "overrides": {"ragged": False}})
    greedy = not base.preferred_batch_sizes and not base.max_queue_delay_us
    other = dict(PREFERRED) if greedy else {"preferred_batch_sizes": (), "max_queue_delay_us": 0}
    out.append({"changed": "batching=" + ("preferred sizes + delay" if greedy else "greedy"), "overrides": other})
    for k, c in enumerate(out):
        c["id"] = f"c{k}"
        # the search drives ensembles: no fused copies (each would hold another CUDA context and its graphs)
        c["serving"] = spec.Serving.for_device(device, cpus, gpus=gpus, **c["overrides"], fused=False)
    return out


def _tokenizer_key(s: spec.Serving) -> str:
    return f"t{s.tokenizer_instances}{'p' if s.preferred_batch_sizes else 'g'}{s.max_queue_delay_us}"


def build(artifacts: Path, out: Path, variant: str, cands: list[dict], device: str, gpus: list[int]) -> list[str]:
    """One repository holding every candidate (written whole, then moved into place)."""
    manifest = io.load_manifest(artifacts)
    models, skipped = repository.plan(manifest, artifacts, device, [variant])
    if not models:
        raise StageError(f"{variant} cannot be served here: " + "; ".join(skipped))
    have = tools.backends(tools.find_tritonserver())
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = []
    for c in cands:
        s = c["serving"]
        names += repository.write_models(tmp, manifest, artifacts, models, s, device, gpus, have,
                                         tag=spec.TAG_SEP + c["id"], tokenizer_tag=spec.TAG_SEP + _tokenizer_key(s))
    io.write_json(tmp / "repository.json", {"models": names, "device": device, "model": manifest["model"], "tune": True})
    tmp.rename(out)
    return names


def score(cands: list[dict], loads, budget: float) -> list[str]:
    """Each candidate's `score`: geometric mean over loads of its throughput over the load's best (0 over budget or
    unstable). A load no candidate serves within the budget says nothing about them: it is left out of the score (and
    returned, to be reported), rather than zeroing every candidate."""
    best = {}
    for c in cands:
        for key, r in c["results"].items():
            ok = r.get("throughput") if (r.get("p99_ms") is not None and r["p99_ms"] <= budget
                                         and not r.get("unstable")) else 0.0
            r["within_budget"] = bool(ok)
            best[key] = max(best.get(key, 0.0), ok or 0.0)
    scored = [k for k in best if best[k]]
    for c in cands:
        shares = [(c["results"].get(k, {}).get("throughput", 0.0) if c["results"].get(k, {}).get("within_budget") else 0.0)
                  / best[k] for k in scored]
        c["score"] = round(math.exp(sum(math.log(max(x, 1e-9)) for x in shares) / len(shares)), 4) if shares else 0.0
    return [k for k in best if not best[k]]


def run(artifacts: Path = spec.ARTIFACTS, logs: Path = spec.LOGS, device: str = "gpu", gpus: list[int] | None = None,
        variant: str | None = None, loads=DEFAULT_LOADS, instances: tuple[int, ...] = (1, 2, 4),
        tokenizer_instances: tuple[int, ...] | None = None, settings: perf.Settings = perf.Settings(window_ms=2000, max_trials=6),
        client_cpus: str = "auto", budget: float = P99_BUDGET_MS, texts_path: Path = spec.EVALUATION_TEXTS,
        mps: str = spec.MPS) -> dict:
    logs = io.ensure_writable_dir(Path(logs))
    gpus = list(gpus or (host.visible_gpus() if device == "gpu" else []))
    if device == "gpu" and not gpus:
        raise StageError("--device gpu but nvidia-smi lists no GPU here")
    variant = variant or ("torch_fp16" if device == "gpu" else spec.REFERENCE)
    if variant not in spec.BY_NAME:
        raise StageError(f"unknown variant {variant!r}: known are {', '.join(spec.BY_NAME)}")
    server_cpus, pa_cpus = host.split_cpus(client_cpus)
    cpus = len(server_cpus) if server_cpus else None  # sized for the server's cores, as its defaults would be there
    base = spec.Serving.for_device(device, cpus, gpus=len(gpus) or 1)
    tok = tokenizer_instances or tuple(sorted({base.tokenizer_instances, max(2, base.tokenizer_instances // 2)}))
    cands = candidates(device, len(gpus) or 1, tuple(instances), tok, cpus)
    repo = logs / "tune_repository"
    build(Path(artifacts), repo, variant, cands, device, gpus)
    texts = read_texts(texts_path)
    data = io.write_text(logs / "perf_inputs" / "tune_texts.json", json.dumps(perf.text_input_data(texts)))
    tool = tools.find_perf_analyzer()
    result = {"status": "incomplete", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "variant": variant, "device": device,
              "gpus": gpus, "hardware": host.hardware(), "loads": [{"texts_per_request": b, "concurrency": c} for b, c in loads],
              "p99_budget_ms": budget, "settings": asdict(settings), "texts": io.rel(texts_path),
              "model": io.load_manifest(artifacts).get("model"), "candidates": []}
    out = logs / "tune.json"
    partial = logs / "tune.json.partial"  # progress; tune.json is only ever a complete search
    mlogs = logs / "tune"
    total, step = len(cands) * len(loads), [0]
    with server.running(repo, mlogs, cpus=server_cpus, timeout=900, mps=mps) as info:
        result["server"] = {"ready_seconds": info.ready_seconds, "pid": info.pid, "mps": mpsd.state(info.mps)}
        result["cores"] = {"server": host.process_cpus(info.pid), "client": host.format_cpus(pa_cpus), "rule": client_cpus}
        states = server.model_states(info) or {}
        for c in cands:
            ens = spec.ensemble_name(variant + spec.TAG_SEP + c["id"])
            rec = {k: v for k, v in c.items() if k != "serving"}
            rec["serving"] = asdict(c["serving"])
            rec["results"] = {}
            result["candidates"].append(rec)
            if (states.get(ens) or {}).get("state") != "READY":
                rec["error"] = f"{ens} not ready: {(states.get(ens) or {}).get('reason', 'missing')}"
                step[0] += len(loads)
                continue
            for b, conc in loads:
                entry: dict = {}
                perf.sweep(entry, ens, info, tool, "grpc", (conc,), b, data, mlogs, settings, step, total, len(texts), pa_cpus)
                row = (entry.get("rows") or [{}])[0]
                rec["results"][f"{b}x{conc}"] = {
                    "throughput": row.get("throughput"), "p50_ms": row.get("p50_ms"), "p99_ms": row.get("p99_ms"),
                    "unstable": row.get("unstable"),
                    "avg_ms": row.get("avg_ms"), "gpu": row.get("gpu"), "server_stats": row.get("server_stats"),
                    "failed": entry.get("failed") or None}
            io.write_json(partial, result)
    unscored = score(result["candidates"], loads, budget)
    if unscored:
        result["unscored_loads"] = unscored
        print(f"no candidate within p99 {budget:g} ms at {', '.join(unscored)} (texts per request x concurrency): "
              "left out of the choice; pick loads a server can meet the budget at", file=sys.stderr)
    chosen = max(result["candidates"], key=lambda c: c.get("score", 0.0))
    if not chosen.get("score"):
        result["status"] = "failed"
        io.write_json(partial, result)
        raise StageError(f"no candidate served within p99 {budget:g} ms at any load; measurements in {partial}")
    result["chosen"] = {"id": chosen["id"], "changed": chosen["changed"], "overrides": chosen["overrides"]}
    result["status"], result["finished"] = "complete", time.strftime("%Y-%m-%d %H:%M:%S")
    io.write_json(out, result)
    partial.unlink(missing_ok=True)
    io.write_text(logs / "tune.md", render(result))
    shutil.rmtree(repo, ignore_errors=True)  # hard links and copies; the results are in tune.json
    return result


def render(result: dict) -> str:
    loads = [f"{x['texts_per_request']}x{x['concurrency']}" for x in result["loads"]]
    head = ["candidate", "changed from the defaults", *[f"{k} texts/s (p99 ms)" for k in loads], "model batch (texts/exec)", "score"]
    rows = []
    for c in result["candidates"]:
        cells = []
        batch = []
        for k in loads:
            r = c["results"].get(k) or {}
            tput = r.get("throughput")
            per_req = int(k.split("x")[0])
            cells.append("failed" if tput is None else f"{tput:,.0f} ({r['p99_ms']:.1f})" + ("" if r.get("within_budget") else " unstable" if r.get("unstable") else " over budget"))
            model = next((s for n, s in (r.get("server_stats") or {}).items() if spec.kind_of(n) == "model"), None)
            batch.append(f"{model['items_per_execution']:.0f}" if model and model.get("items_per_execution") else "-")
        mark = " **chosen**" if result.get("chosen", {}).get("id") == c["id"] else ""
        rows.append([c["id"] + mark, c["changed"], *cells, " / ".join(batch), f"{c.get('score', 0):.3f}"])
    m, cores = result.get("model") or {}, result.get("cores") or {}
    where = (f"client on cores {cores['client']}, server on {cores['server']}" if cores.get("client")
             else "client and server on the same cores")
    lines = [f"# Serving-config search: {result['variant']} on {host.describe(result['hardware'])}", "",
             f"Model: {m.get('used', '?')}. Loads: texts per request x concurrency, real texts ({result['texts']}); perf_analyzer "
             f"over gRPC, {where}; p99 budget {result['p99_budget_ms']:g} ms. Throughput in texts/s (perf_analyzer's "
             "inferences/s: requests x texts per request).", "",
             *markdown.table(head, rows), ""]
    if result.get("unscored_loads"):
        lines += [f"No candidate within the budget at {', '.join(result['unscored_loads'])}: left out of the choice.", ""]
    if result.get("chosen"):
        lines.append(f"Chosen: {result['chosen']['id']} ({result['chosen']['changed']}); `python -m enc2triton.repository --tuned "
                     "logs/tune.json` serves with it.")
    return "\n".join(lines) + "\n"


def _loads(text: str):
    try:
        out = tuple(tuple(int(x) for x in item.split("x")) for item in text.split(",") if item.strip())
    except ValueError:
        out = ()
    if not out or any(len(x) != 2 or min(x) < 1 for x in out):
        raise argparse.ArgumentTypeError(f"loads: expected TEXTSxCONCURRENCY[,...] e.g. 16x64,1x128, got {text!r}")
    return out


def main(argv=None) -> int:
    ap = cli.parser("python -m enc2triton.tune", __doc__.split("\n\n")[0] + " Writes logs/tune.{json,md}.")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="gpu", help="(default %(default)s)")
    ap.add_argument("--gpus", type=cli.int_list("GPU ids", minimum=0), help="default: all visible")
    ap.add_argument("--variant", help="the variant whose ensemble is searched (default torch_fp16 on a GPU, onnx_fp32 on a CPU)")
    ap.add_argument("--loads", type=_loads, default=DEFAULT_LOADS,
                    help="TEXTSxCONCURRENCY,... texts per request and perf_analyzer concurrency (default 16x64,1x128)")
    ap.add_argument("--instances", type=cli.int_list("instances"), default=(1, 2, 4),
                    help="model instances per GPU to try (default 1,2,4)")
    ap.add_argument("--tokenizer-instances", type=cli.int_list("tokenizer instances"),
                    help="tokenizer instances to try (default: the device's default and half of it)")
    ap.add_argument("--window-ms", type=cli.at_least(100), default=2000, help="perf_analyzer time windows (default %(default)s)")
    ap.add_argument("--max-trials", type=cli.at_least(3), default=6, help="windows per level at most (default %(default)s)")
    ap.add_argument("--p99-budget-ms", type=cli.at_least(1, float), default=P99_BUDGET_MS, help="(default %(default)s)")
    ap.add_argument("--client-cpus", default="auto", help="cores for perf_analyzer (as run_tests.sh; default %(default)s)")
    ap.add_argument("--mps", choices=mpsd.MODES, default=spec.MPS, help="the server under CUDA MPS (serve.sh start --mps): "
                    "more GPU instances share the GPU instead of taking turns, so the search's best count can differ "
                    "(default %(default)s)")

    def body(a) -> int:
        try:
            host.split_cpus(a.client_cpus)
        except ValueError as e:
            ap.error(f"--client-cpus: {e}")
        r = run(a.artifacts, a.logs, a.device, a.gpus, a.variant, a.loads, a.instances, a.tokenizer_instances,
                perf.Settings(window_ms=a.window_ms, max_trials=a.max_trials), a.client_cpus, a.p99_budget_ms, mps=a.mps)
        print(render(r))
        return 0
    return cli.run(ap, body, argv)


if __name__ == "__main__":
    sys.exit(main())
