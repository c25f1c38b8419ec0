"""Where a served request's time goes: Triton's statistics and the models' own phase metrics, per measured level.

Two scrapes of the running server, one before and one after a perf_analyzer level, and their difference:
- Triton's statistics extension (/v2/models/stats): per model the requests, executions (so the batches the dynamic
  batcher really formed, with their size histogram), and queue / compute input / infer / output time;
- the Python-backend models' own phases (/metrics, enc2triton_*; triton_models/stage_metrics.py): reading requests,
  tokenizing, the engine's host staging, copies and GPU time, writing responses.
`breakdown` turns one level's difference into "where the milliseconds of one request go" for an ensemble.
"""
from __future__ import annotations

import json
import re
import urllib.request

from enc2triton.core import spec

_METRIC = re.compile(r'^(enc2triton_\w+)\{([^}]*)\}\s+([0-9.eE+-]+)\s*$', re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')
PHASES = {  # the runner's and the tokenizer's phases, in the order a request meets them
    "tokenizer": ("read", "tokenize", "respond"),
    "model": ("read", "tokenize", "merge", "host_in", "h2d", "gpu", "d2h", "wait", "host_out", "engine", "respond"),
}


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def snapshot(http: str, metrics: str | None) -> dict:
    """Triton's statistics of every model and the enc2triton_* counters, now. http/metrics: host:port."""
    stats = {}
    for m in json.loads(_get(f"http://{http}/v2/models/stats")).get("model_stats", []):
        inf = m.get("inference_stats", {})
        stats[m["name"]] = {
            "inferences": int(m.get("inference_count", 0)), "executions": int(m.get("execution_count", 0)),
            **{k: (int(inf.get(k, {}).get("count", 0)), int(inf.get(k, {}).get("ns", 0)))
               for k in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")},
            "batches": {int(b["batch_size"]): int(b.get("compute_infer", {}).get("count", 0)) for b in m.get("batch_stats", [])},
        }
    phases: dict[str, dict[str, float]] = {}
    if metrics:
        try:
            text = _get(f"http://{metrics}/metrics").decode()
        except OSError:
            text = ""
        for name, labels, value in _METRIC.findall(text):
            lab = dict(_LABEL.findall(labels))
            key = lab.get("phase") if name == "enc2triton_seconds_total" else lab.get("item")
            if "model" in lab and key:
                kind = "seconds" if name == "enc2triton_seconds_total" else "items"
                phases.setdefault(lab["model"], {}).setdefault(kind, {})[key] = float(value)
    return {"models": stats, "phases": phases}


def delta(before: dict, after: dict) -> dict:
    """Per model that did something between the two snapshots: counts, ms per request and per execution, batches."""
    out = {}
    for name, a in after["models"].items():
        b = before["models"].get(name, {})
        requests = a["success"][0] - b.get("success", (0, 0))[0]
        if requests <= 0:
            continue
        execs = a["executions"] - b.get("executions", 0)
        inferences = a["inferences"] - b.get("inferences", 0)
        d = {"kind": spec.kind_of(name), "requests": requests, "inferences": inferences, "executions": execs,
             "items_per_execution": round(inferences / execs, 2) if execs else None,
             "requests_per_execution": round(requests / execs, 2) if execs else None}
        for k in ("queue", "compute_input", "compute_infer", "compute_output"):
            n, ns = (a[k][0] - b.get(k, (0, 0))[0]), (a[k][1] - b.get(k, (0, 0))[1])
            d[f"{k}_ms"] = round(ns / n / 1e6, 3) if n else 0.0
        hist = {s: c - b.get("batches", {}).get(s, 0) for s, c in a["batches"].items()}
        d["batch_sizes"] = {str(s): c for s, c in sorted(hist.items()) if c > 0}
        pa, pb = after["phases"].get(name, {}), before["phases"].get(name, {})
        if pa:
            secs = {k: v - pb.get("seconds", {}).get(k, 0.0) for k, v in pa.get("seconds", {}).items()}
            items = {k: v - pb.get("items", {}).get(k, 0.0) for k, v in pa.get("items", {}).items()}
            n_exec = items.get("executions") or 0
            if n_exec > 0:
                d["phase_ms_per_execution"] = {k: round(v / n_exec * 1e3, 3) for k, v in secs.items() if v > 0}
                d["phase_items"] = {k: round(v) for k, v in items.items() if v > 0}
        out[name] = d
    return out


def breakdown(level: dict, ensemble: str) -> dict | None:
    """Where one request of `ensemble` spends its time at this level: the client's average latency split into each
    composing model's queue and compute (Triton's statistics, per request) and what is left (client, network, gRPC and
    the ensemble's own scheduling); each Python-backend model's execution split into its phases."""
    stats = level.get("server_stats") or {}
    if ensemble not in stats:
        return None
    total = level.get("avg_ms") or level.get("p50_ms")
    tag = spec.TAG_SEP + ensemble.split(spec.TAG_SEP, 1)[1] if spec.TAG_SEP in ensemble else ""
    out = {"total_ms": total}
    # a fused model is its own tokenizer: one role, the model itself
    roles = (("model", ensemble),) if spec.kind_of(ensemble) == "fused" else (("tokenizer", None), ("model", spec.raw_model(ensemble)))
    for role, name in roles:
        if name is None:  # the tokenizer a tune candidate uses carries its own tag: the one that served requests
            name = next((n for n in stats if spec.kind_of(n) == "tokenizer" and (not tag or n != spec.TOKENIZER)), None)
        s = stats.get(name) if name else None
        if not s:
            continue
        phases = s.get("phase_ms_per_execution") or {}
        split = {p: phases[p] for p in PHASES[role] if p in phases}
        if "execute" in phases:  # Triton's compute infer beyond the model's own execute(): the Python backend's IPC
            split["python_backend"] = round(max(0.0, s["compute_infer_ms"] - phases["execute"]), 3)
            split["other"] = round(max(0.0, phases["execute"] - sum(v for k, v in split.items() if k != "python_backend")), 3)
        items = s.get("phase_items") or {}
        calls = items.get("graph_calls", items.get("engine_calls"))  # the engine's calls (one per CUDA-graph replay)
        out[role] = {"name": name, "queue_ms": s["queue_ms"],
                     "calls_per_execution": round(calls / items["executions"], 2) if calls and items.get("executions") else None,
                     "compute_ms": round(s["compute_input_ms"] + s["compute_infer_ms"] + s["compute_output_ms"], 3),
                     "items_per_execution": s["items_per_execution"], "requests_per_execution": s["requests_per_execution"],
                     "execution_ms": round(s["compute_infer_ms"], 3), "phases_ms": split, "batch_sizes": s["batch_sizes"]}
    if total is not None:
        used = sum(out[r]["queue_ms"] + out[r]["compute_ms"] for r in ("tokenizer", "model") if r in out)
        out["rest_ms"] = round(max(0.0, total - used), 3)
    return out
