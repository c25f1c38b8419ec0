"""Serving benchmark: the real perf_analyzer against every model of the repository, over a concurrency range.

Per model: logs/perf_<model>.csv (perf_analyzer's own CSV, one row per concurrency), the raw
perf_analyzer output in logs/perf_<model>.log, and one entry in logs/perf_summary.json. A sweep that
fails part-way leaves logs/perf_<model>.csv.incomplete and status "incomplete", never a complete-looking CSV.

A run never loses an earlier result: its progress goes to logs/perf_summary.json.partial and is swapped in as
perf_summary.json at the end only when the run measured something. Every model it did not measure successfully
keeps its entry (and its CSV) from the summary it replaces when that was measured the same way (kept_entries);
a run that measured nothing leaves perf_summary.json as it was and says in the .partial file what failed.

One perf_analyzer run per concurrency level: its --concurrency-range only does arithmetic steps,
and one run per level tells exactly which level failed. The stability settings are explained in
perf_analyzer.STABILITY (recorded in perf_summary.json too); that module drives the tool, this one the sweep.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path


from enc2triton.core import cli, host, io, spec, tools
from enc2triton.serve import mps as mpsd, server, serving_stats
from enc2triton.core.io import StageError
from enc2triton.core.texts import passages, read_texts, token_stats
from enc2triton.measure.perf_analyzer import (  # noqa: F401 (callers use them as perf.<name>)
    CSV_FIELDS, ENSEMBLE_NOTE, LevelError, MAX_CYCLE, STABILITY, Settings, WINDOW_PER_CONCURRENCY, model_inputs,
    pa_command, pa_version, parse_composing, parse_csv, repo_models, repo_tokenizer, run_level, server_version,
    text_input_data, token_input_data,
)

CONCURRENCY = (1, 2, 4, 8, 16, 32)
FULL = tuple(range(1, 33))


def _best(rows: list[dict]) -> dict | None:
    """The fastest level; a level measured without a stable window only where no level was stable."""
    pool = [r for r in rows if not r.get("unstable")] or rows
    if not pool:
        return None
    b = max(pool, key=lambda r: r["throughput"])
    return {"concurrency": b["concurrency"], "throughput": b["throughput"], "p99_ms": b["p99_ms"],
            **({"unstable": True} if b.get("unstable") else {})}


def _fix_ensemble(row: dict, composing: dict) -> None:
    if not composing:
        return
    row["composing"] = composing
    q = sum(c.get("queue_ms", 0.0) for c in composing.values())
    row["network_ms"] = round(max(0.0, row["network_ms"] + row["server_queue_ms"] - q), 3)
    row["server_queue_ms"] = round(q, 3)


class ServerGone(StageError):
    pass


def _server_stats(info: server.ServerInfo) -> dict | None:
    try:
        return serving_stats.snapshot(info.http, f"{info.host}:{info.metrics_port}")
    except (OSError, ValueError, KeyError):  # a measurement aid: a level is not lost for it
        return None


def sweep(entry: dict, model: str, info: server.ServerInfo, tool: tools.Tool, protocol: str, levels, batch: int,
          data: Path, logs: Path, settings: Settings, step: list[int], total: int, cycle: int | None = None,
          client_cpus: list[int] | None = None) -> dict:
    """All concurrency levels of one model into `entry` (its summary entry). Writes its CSV (or .incomplete) and log."""
    entry.update({"kind": spec.kind_of(model), "status": "incomplete", "input_data": io.rel(data), "window_cycle": cycle,
                  "rows": [], "failed": [], "commands": []})
    header, lines, log = None, [], []
    url = info.url(protocol)
    try:
        for c in levels:
            step[0] += 1
            print(f"[{step[0]}/{total}] {model}  concurrency {c} ...", flush=True)
            t0 = time.perf_counter()
            try:
                before = _server_stats(info)
                with host.GpuSampler() as gpu:
                    row, text = run_level(tool, lambda s, p: pa_command(tool, model, url, protocol, c, batch, data, p, s, cycle),
                                          settings, log, entry["commands"], client_cpus, concurrency=c, cycle=cycle)
                if gpu_util := gpu.summary():
                    row["gpu"] = gpu_util
                after = _server_stats(info)
                if before and after:  # the whole perf_analyzer run, warm-up and every window
                    row["server_stats"] = serving_stats.delta(before, after)
            except LevelError as e:
                alive = server.alive(info.pid) and server.is_ready(info)
                entry["failed"].append({"concurrency": c, "error": str(e) + ("" if alive else "; the server is gone")})
                print(f"      FAILED: {model} at concurrency {c}: {entry['failed'][-1]['error']}", file=sys.stderr, flush=True)
                if not alive:
                    raise ServerGone(f"server pid {info.pid} died during {model} at concurrency {c}; log: {info.log}")
                break  # a hard error (timeout, crash, bad input) would repeat at every level; noise does not get here
            if spec.kind_of(model) == "ensemble":
                _fix_ensemble(row, parse_composing(log[-1]).get(c, {}))
            entry["rows"].append(row)
            if row.get("unstable"):
                entry.setdefault("unstable", []).append(c)
            csv_lines = [ln for ln in text.splitlines() if ln.strip()]
            header = header or csv_lines[0]
            if csv_lines[0] != header:
                raise StageError(f"{model}: perf_analyzer CSV header changed between levels")
            lines += csv_lines[1:]
            util = (row.get("gpu") or {}).get("util_mean")
            print(f"      {row['throughput']:.1f} infer/s  p50 {row['p50_ms']:.1f} ms  p99 {row['p99_ms']:.1f} ms  "
                  + (f"GPU util {util} %  " if util else "") + ("UNSTABLE  " if row.get("unstable") else "")
                  + f"({time.perf_counter() - t0:.0f}s)", flush=True)
        else:
            entry["status"] = "incomplete" if entry["failed"] else "complete"
    finally:
        entry["best"] = _best(entry["rows"])
        final, partial = logs / f"perf_{model}.csv", logs / f"perf_{model}.csv.incomplete"
        body = "\n".join(([header] if header else []) + lines) + "\n"
        done = entry["status"] == "complete"
        io.write_text(final if done else partial, body)
        if done:
            partial.unlink(missing_ok=True)
        # a failed sweep leaves an earlier complete perf_<model>.csv alone: run() keeps it when it was measured the
        # same way (its summary entry is kept too), and removes it only when it swaps in a summary that does not name it
        entry["csv"] = io.rel(final if done else partial)
        io.write_text(logs / f"perf_{model}.log", "\n".join(log))
    return entry


def run(repository_dir: Path = spec.REPOSITORY, logs: Path = spec.LOGS, artifacts: Path = spec.ARTIFACTS,
        models: list[str] | None = None, levels=CONCURRENCY, protocol: str = "grpc", batch: int = 1,
        seq_len: int = 128, texts_path: Path = spec.EVALUATION_TEXTS, settings: Settings = Settings(),
        client_cpus: str = "auto", passage_tokens: int = 0, mps: str = spec.MPS) -> dict:
    repo, logs = Path(repository_dir), io.ensure_writable_dir(Path(logs))
    if not (repo / "tokenizer").is_dir() and not (repo / "repository.json").exists():
        raise StageError(f"{repo} is not a generated model repository: run `make repository` first")
    order = names = repo_models(repo)  # order: the repository's, which the summary keeps
    if models:
        unknown = [m for m in models if m not in names]
        if unknown:
            raise StageError(f"not in {repo}: {unknown}; models there: {names}")
        names = [n for n in names if n in models]
    tool = tools.find_perf_analyzer()
    texts = read_texts(texts_path)
    tok = repo_tokenizer(repo, artifacts)
    if passage_tokens:  # document-length load: consecutive texts joined into passages of up to passage_tokens tokens
        texts = passages(tok, texts, passage_tokens)
    model_info = (io.read_json(repo / "repository.json").get("model") if (repo / "repository.json").exists() else None) \
        or io.load_manifest(artifacts, required=False).get("model")
    data_dir = io.ensure_writable_dir(logs / "perf_inputs")
    inputs, cycles = {}, {}
    for n in names:  # input data per model, from the inputs its config declares
        ins = model_inputs(repo, n)
        if all(t == "TYPE_STRING" for _, t in ins):
            data = text_input_data(texts, ins[0][0])
            cycles[n] = len(texts)  # texts differ in cost; token tensors all have seq_len tokens
        else:
            data = token_input_data(tok, texts, [i for i, _ in ins], seq_len)
        inputs[n] = io.write_text(data_dir / f"{n}.json", json.dumps(data))
    summary = {
        "status": "incomplete", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "model": model_info,
        "repository": io.rel(repo.resolve()), "protocol": protocol, "batch_size": batch, "concurrency": list(levels),
        "settings": {**asdict(settings), "window_per_concurrency": WINDOW_PER_CONCURRENCY, "max_cycle": MAX_CYCLE,
                     "why": STABILITY},
        "inputs": {"texts": io.rel(texts_path), "n_texts": len(texts), "text_tokens": token_stats(tok, texts), "seq_len": seq_len,
                   "passage_tokens": passage_tokens or None},
        "hardware": host.hardware(),
        "perf_analyzer": {"path": str(tool.path), "version": pa_version(tool), "source": tool.source},
        "notes": [ENSEMBLE_NOTE, "throughput counts inferences (requests x batch size); latencies are per request",
                  "perf_analyzer and the server run on this machine: see 'cores' for which cores each had"],
        "models": {}, "errors": [],
    }
    out, progress = logs / "perf_summary.json", logs / "perf_summary.json.partial"
    earlier = {n: e for n, e in kept_entries(out, summary).items() if n in order}
    others = [n for n in earlier if n not in names]
    if others:
        print(f"keeping earlier results for {', '.join(others)} (same repository and settings); sweeping {', '.join(names)}")
    total, step = len(names) * len(levels), [0]
    server_cpus, pa_cpus = host.split_cpus(client_cpus)
    try:
        with server.running(repo, logs, cpus=server_cpus, mps=mps) as info:
            summary["server"] = {"version": server_version(info), "binary": info.binary, "url": info.url(protocol),
                                 "pid": info.pid, "ready_seconds": info.ready_seconds, "mps": mpsd.state(info.mps)}
            before = mpsd.recorded(io.read_earlier(out, "models")) if earlier else None
            if earlier and before != summary["server"]["mps"]:
                print(f"not keeping earlier results for {', '.join(earlier)}: measured with CUDA MPS {before}, this server "
                      f"runs with it {summary['server']['mps']}")
                earlier.clear()
            # a separate client machine, approximated: perf_analyzer and the server on their own cores (when pinned)
            summary["cores"] = {"server": host.process_cpus(info.pid), "client": host.format_cpus(pa_cpus) or host.process_cpus(os.getpid()),
                                "rule": client_cpus}
            io.write_json(progress, summary)
            states = server.model_states(info) or {}
            for n in names:
                st = states.get(n, {})
                if st.get("state") != "READY":
                    err = f"not ready on the server: {st.get('state', 'missing')} {st.get('reason', '')}".strip()
                    summary["models"][n] = {"kind": spec.kind_of(n), "status": "failed", "rows": [], "best": None,
                                            "failed": [{"concurrency": None, "error": err}]}
                    summary["errors"].append(f"{n}: {err}")
                    print(f"skip {n}: {err}", file=sys.stderr)
                    step[0] += len(levels)
                    continue
                entry = summary["models"][n] = {"measured": summary["started"]}
                sweep(entry, n, info, tool, protocol, levels, batch, inputs[n], logs, settings, step, total, cycles.get(n), pa_cpus)
                summary["errors"] += [f"{n}: failed at concurrency {f['concurrency']}: {f['error']}" for f in entry["failed"]]
                io.write_json(progress, summary)  # progress survives a crash of the next model; the result is swapped in at the end
    except KeyboardInterrupt:
        summary["errors"].append("interrupted")
        print(_finish(summary, earlier, names, order, out, progress)[1], file=sys.stderr)
        raise
    except Exception as e:
        summary["errors"].append(io.first_line(e))
        where = _finish(summary, earlier, names, order, out, progress)[1]
        if isinstance(e, StageError):  # one line from the CLI: what failed, then where the results are
            e.args = (f"{e}; {where}",)
        else:
            print(where, file=sys.stderr)
        raise
    merged, where = _finish(summary, earlier, names, order, out, progress)
    if merged is None:
        raise StageError(where)
    return merged


def _finish(summary: dict, earlier: dict, names: list[str], order: list[str], out: Path, progress: Path) -> tuple[dict | None, str]:
    """End of a run, however it ended: merge this run's entries with the earlier summary's and swap the result in
    when this run measured anything; else leave perf_summary.json as it is and say in the progress file what failed.
    Returns (the summary written or None, one line saying where the results are)."""
    summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    summary["hardware"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    measured = [n for n, e in summary["models"].items() if e.get("rows")]
    if not measured:
        summary["result"] = f"nothing measured: {out.name} left as it was"
        io.write_json(progress, summary)
        errors = summary["errors"] or ["no model was measured"]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return None, (f"nothing was measured ({errors[0]}{more}): {out} left as it was; what failed: {progress}")
    done_here = not summary["errors"] and all(n in summary["models"] for n in names)
    models, kept, errors = {}, {}, []
    for n in order:  # the repository's order
        new, old = summary["models"].get(n), earlier.get(n)
        if new is not None and (new.get("status") == "complete" or old is None or old.get("status") != "complete"):
            models[n] = new
            if new.get("status") != "complete":  # an earlier complete CSV of other settings would pass for this one's
                (out.parent / f"perf_{n}.csv").unlink(missing_ok=True)
        elif old is not None:
            models[n] = kept_entry = dict(old)
            kept[n] = old["measured"]
            if new is not None:  # re-measured and failed: the earlier complete entry and its CSV stay
                kept_entry["rerun_failed"] = {"measured": summary["started"], "status": new.get("status"),
                                              "failed": new.get("failed"), "csv": new.get("csv")}
                errors.append(f"{n}: re-measurement failed; the earlier complete result ({old['measured']}) is kept")
                print(f"{n}: re-measurement failed; keeping the earlier complete result ({old['measured']})", file=sys.stderr)
            elif old.get("status") != "complete":
                errors.append(f"{n}: {old.get('status')} in an earlier run ({old['measured']}); rerun it with --models {n}")
    summary["models"] = models
    summary["errors"] += errors
    if kept:
        summary["kept_from_earlier_runs"] = kept
    if done_here and all(e.get("status") == "complete" for e in models.values()):
        summary["status"] = "complete"
    unstable = [f"{n} at concurrency {c}" for n, e in models.items() for c in e.get("unstable") or []]
    if unstable:  # measured, but not to the stability rule: marked wherever the numbers are shown
        summary["unstable"] = unstable
    io.write_json(progress, summary)
    os.replace(progress, out)  # the swap: perf_summary.json is only ever a whole result
    where = f"results in {out}" + (f" (earlier results kept for {', '.join(kept)})" if kept else "")
    return summary, where


def measured_rule(summary: dict) -> dict:
    """How a summary's levels were measured (its settings): the explanation and the hang guard do not change the numbers."""
    return {k: v for k, v in (summary.get("settings") or {}).items() if k not in ("why", "timeout")}


def kept_entries(path: Path, summary: dict) -> dict:
    """The entries of the summary at `path` when it measured the same repository the same way
    (settings included): a run keeps them for every model it does not measure successfully, so rerunning one failed
    model, or a run that fails part-way, does not cost the others."""
    prev = io.read_earlier(path, "models")
    if prev is None:
        return {}
    same = ("repository", "protocol", "batch_size", "model")

    if (any(prev.get(k) != summary.get(k) for k in same) or measured_rule(prev) != measured_rule(summary)
            or any((prev.get("inputs") or {}).get(k) != summary["inputs"].get(k) for k in ("seq_len", "passage_tokens"))):
        return {}
    return {n: {**e, "measured": e.get("measured", prev.get("started"))} for n, e in prev["models"].items()
            if isinstance(e, dict)}


def main(argv=None) -> int:
    ap = cli.parser("run_tests.sh", (
        "Step 7: run the real perf_analyzer against every model of the Triton repository (raw variants, ensembles and the "
        "tokenizer alone) over a concurrency range. Writes logs/perf_<model>.csv and logs/perf_summary.json. "
        "Starts the server when none runs for the repository (and stops it afterwards)."))
    ap.add_argument("--repository", type=Path, default=spec.REPOSITORY, help="the model repository (default %(default)s)")
    ap.add_argument("--models", help="comma-separated subset (default: every model in the repository); "
                    "perf_summary.json keeps the other models' earlier results (and those of models whose sweep fails) "
                    "when they were measured the same way (same repository, model, protocol, batch size, sequence length "
                    "and windows), so a failed model can be rerun alone")
    ap.add_argument("--concurrency", type=cli.int_list("concurrency levels"),
                    help=f"comma-separated levels (default {','.join(map(str, CONCURRENCY))})")
    ap.add_argument("--full", action="store_true", help="concurrency 1..32 step 1 (default: the levels above)")
    ap.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="(default %(default)s)")
    ap.add_argument("--batch-size", type=cli.at_least(1), default=1,
                    help="items per request (default %(default)s: concurrency drives the dynamic batcher)")
    ap.add_argument("--seq-len", type=cli.at_least(1), default=128, help="token length of the raw models' inputs (default %(default)s)")
    ap.add_argument("--texts", type=Path, default=spec.EVALUATION_TEXTS, help="one text per line (default %(default)s)")
    ap.add_argument("--passage-tokens", type=cli.at_least(0), default=0,
                    help="send passages instead of sentences: consecutive texts joined into passages of up to this many tokens "
                    "(documents, as a retrieval index embeds them; default %(default)s: the texts as they are)")
    ap.add_argument("--window-requests", type=cli.at_least(1), default=Settings.window_requests,
                    help="count_windows: requests per window at least (default %(default)s)")
    ap.add_argument("--window-ms", type=cli.at_least(1), help="use time windows of this length instead of count windows")
    ap.add_argument("--stability", type=cli.at_least(0.1, float), default=Settings.stability,
                    help="allowed %% spread of the last 3 windows (default %(default)s)")
    ap.add_argument("--max-trials", type=cli.at_least(3), default=Settings.max_trials,
                    help="windows per level at most before it counts as unstable (default %(default)s)")
    ap.add_argument("--timeout", type=cli.at_least(1, float), default=Settings.timeout,
                    help="seconds per perf_analyzer run (default %(default)s)")
    ap.add_argument("--client-cpus", default="auto", help="cores for perf_analyzer, e.g. 12-15; the server it starts gets the "
                    "others (a separate client machine, approximated). 'auto': the last quarter of the cores on machines with "
                    "8 or more, nobody pinned on smaller ones; 'none': no pinning (default %(default)s)")
    ap.add_argument("--mps", choices=mpsd.MODES, default=spec.MPS, help="CUDA MPS for the server this run starts "
                    "(serve.sh start --mps says what it does; a running server keeps its own) (default %(default)s)")

    def body(a) -> int:
        if a.full and a.concurrency:
            ap.error("--full and --concurrency exclude each other")
        levels = FULL if a.full else a.concurrency or CONCURRENCY
        settings = Settings(a.window_requests, a.window_ms, a.stability, a.max_trials, a.timeout)
        try:
            host.split_cpus(a.client_cpus)
        except ValueError as e:
            ap.error(f"--client-cpus: {e}")
        models = [m.strip() for m in a.models.split(",") if m.strip()] if a.models else None

        def _interrupt(signum, frame):  # SIGTERM like Ctrl-C: mark partial results, stop the server we started
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _interrupt)
        try:
            s = run(a.repository, a.logs, a.artifacts, models, levels, a.protocol, a.batch_size, a.seq_len, a.texts, settings,
                    a.client_cpus, a.passage_tokens, a.mps)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)  # run() said where what was measured went
            return 130
        kept = s.get("kept_from_earlier_runs") or {}
        print(f"\n{'model':<24} {'best infer/s':>12} {'at c':>5} {'p99 ms':>8}  status")
        for n, e in s["models"].items():
            b = e.get("best") or {}
            print(f"{n:<24} {b.get('throughput', float('nan')):>12.1f} {b.get('concurrency', '-'):>5} "
                  f"{b.get('p99_ms', float('nan')):>8.1f}  {e['status']}" + (f" (earlier run, {kept[n]})" if n in kept else "")
                  + (f" (unstable at c={','.join(map(str, e['unstable']))})" if e.get("unstable") else ""))
        print(f"summary: {Path(a.logs) / 'perf_summary.json'}")
        if s.get("unstable"):
            print("UNSTABLE (measured once over a fixed request count, marked in the summary and report; rerun on a "
                  "quieter machine for clean numbers):\n  " + "\n  ".join(s["unstable"]), file=sys.stderr)
        if s["status"] != "complete":
            print("INCOMPLETE:\n  " + "\n  ".join(s["errors"]), file=sys.stderr)
            return 1
        return 0
    return cli.run(ap, body, argv)


if __name__ == "__main__":
    sys.exit(main())
