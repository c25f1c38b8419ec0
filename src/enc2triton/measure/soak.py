"""Reliability benchmarks against the real server: a load soak and an overload probe.

Soak (`python -m enc2triton.soak --minutes 10 --concurrency 64 --model ensemble_onnx_fp32`): keeps
`concurrency` gRPC requests in flight (real texts from data/evaluation.txt) for a fixed time, samples
the server's memory (RSS summed over tritonserver and its Python-backend stub processes, from /proc)
and reports, after a warm-up (the first 20% of the run): requests, failures by error message,
throughput, latency percentiles and RSS growth. Writes logs/soak.{json,md}; exits 1 when a target
fails (any failed request, RSS growth >= 10%, the server restarted or gone).

Overload (`python -m enc2triton.soak --overload`): generates a repository with a small queue
(max_queue_size, REJECT), floods it, and shows that requests beyond the queue are rejected at once
("Exceeds maximum queue size") instead of waiting without bound, and that a normal request succeeds
once the flood stops. Writes logs/overload.json; exits 1 when a target fails.

Both are bounded: in time (a request timeout and a hard deadline) and in count (--max-requests);
they talk to loopback only and stop by themselves.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from enc2triton.core import cli, io, spec
from enc2triton.core.texts import read_texts
from enc2triton.core.io import StageError

REJECTED = "Exceeds maximum queue size"  # Triton's message for a request over max_queue_size
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- memory of the server: the whole process tree, from /proc -------------------------------------

def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (the Python backend stubs are tritonserver's children)."""
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the (comm)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in tree or (pid != root and pid not in parent):
            continue
        tree.append(pid)
        todo.extend(p for p, pp in parent.items() if pp == pid)
    return tree


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0  # gone between listing and reading


def tree_rss(root: int) -> tuple[int, int]:
    """(RSS summed over the process tree in bytes, number of processes)."""
    pids = process_tree(root)
    return sum(rss_bytes(p) for p in pids), len(pids)


class RssSampler(threading.Thread):
    """Samples tree_rss(pid) every `interval` seconds: [(seconds since t0, bytes, processes)]."""

    def __init__(self, pid: int, interval: float, t0: float):
        super().__init__(daemon=True, name="rss-sampler")
        self.pid, self.interval, self.t0 = pid, interval, t0
        self.samples: list[tuple[float, int, int]] = []
        self._halt = threading.Event()

    def sample(self) -> tuple[float, int, int]:
        total, n = tree_rss(self.pid)
        s = (time.perf_counter() - self.t0, total, n)
        self.samples.append(s)
        return s

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sample()  # a last one at the end of the load


# --- load -------------------------------------------------------------------------------------------

def error_key(e: BaseException) -> str:
    """The first line of an error, which is what failures are counted by."""
    return io.first_line(e)[:240]


def text_inputs(texts: list[str], batch: int) -> list:
    """One ready InferInput per request window of `batch` texts (built once, reused read-only)."""
    import tritonclient.grpc as grpcclient

    out = []
    for i in range(0, len(texts), batch):
        chunk = texts[i:i + batch]
        if len(chunk) < batch:
            chunk = chunk + texts[:batch - len(chunk)]
        arr = np.array([[t.encode("utf-8")] for t in chunk], dtype=object)
        inp = grpcclient.InferInput(spec.TEXT_INPUT, list(arr.shape), "BYTES")
        inp.set_data_from_numpy(arr)
        out.append(inp)
    return out


STATUS_EVERY = 30.0  # seconds between status lines of a long run


async def drive(url: str, model: str, inputs: list, concurrency: int, seconds: float, max_requests: int,
                timeout: float, output: str = "sentence_embedding",
                status=None) -> tuple[list[tuple[float, float, str | None]], float]:
    """Keep `concurrency` requests in flight for `seconds`: [(start offset, latency s, error or None)], t0.
    status(elapsed s, records) is called every STATUS_EVERY seconds while it runs."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as aioclient

    client = aioclient.InferenceServerClient(url)
    outputs = [grpcclient.InferRequestedOutput(output)]
    records: list[tuple[float, float, str | None]] = []
    issued = 0
    t0 = time.perf_counter()
    end = t0 + seconds

    async def worker() -> None:
        nonlocal issued
        while time.perf_counter() < end and issued < max_requests:
            inp = inputs[issued % len(inputs)]
            issued += 1
            start = time.perf_counter()
            try:
                res = await client.infer(model, [inp], outputs=outputs, client_timeout=timeout)
                got = res.as_numpy(output)
                if got is None or got.shape[0] != inp.shape()[0]:
                    err = f"bad response shape {None if got is None else got.shape}"
                else:
                    err = None if np.isfinite(got).all() else "non-finite values in the response"
            except Exception as e:  # counted by message, the run goes on
                err = error_key(e)
            records.append((start - t0, time.perf_counter() - start, err))

    async def reporter() -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY)
            status(time.perf_counter() - t0, records)

    tick = asyncio.ensure_future(reporter()) if status else None
    try:
        # hard deadline: the run, plus one request timeout for the last ones, plus a margin
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), seconds + timeout + 30)
    except asyncio.TimeoutError:
        records.append((seconds, timeout, "client: run did not finish within its deadline"))
    finally:
        if tick:
            tick.cancel()
        await client.close()
    return records, t0


def percentiles(values, qs=(50, 90, 99)) -> dict:
    if not len(values):
        return {f"p{q}_ms": None for q in qs}
    arr = np.asarray(values) * 1e3
    return {f"p{q}_ms": round(float(np.percentile(arr, q)), 3) for q in qs} | {"max_ms": round(float(arr.max()), 3)}


def model_ready(info, model: str) -> None:
    from enc2triton.serve import server

    states = server.model_states(info) or {}
    state = states.get(model, {})
    if state.get("state") != "READY":
        ready = sorted(n for n, s in states.items() if s.get("state") == "READY")
        raise StageError(f"model {model} is not ready on the server ({state.get('state', 'not in the repository')}"
                         f"{': ' + state['reason'] if state.get('reason') else ''}); ready: {', '.join(ready) or 'none'}")


# --- soak -------------------------------------------------------------------------------------------

GROWTH_RULE = ("median of the last quarter of the samples after warm-up vs median of the first quarter (peaks "
               "are reported, not judged)")


def rss_growth(rss: list[int]) -> dict:
    """Median of the first quarter vs median of the last. ONNX Runtime's arena grows with a large batch and is
    shrunk after the run, so single peaks come and go (one 10-minute soak: peaks +10.2%, medians +0.4%, floor
    +0.6%); a leak or an arena that never gives memory back lifts the whole later quarter, and so its median."""
    q = max(1, len(rss) // 4)
    early, late = rss[:q], rss[-q:]
    first, last = statistics.median(early), statistics.median(late)
    return {"early_median": first, "late_median": last, "early_peak": max(early), "late_peak": max(late),
            "growth_pct": (last - first) / first * 100 if first else float("nan")}


def status_printer(sampler: RssSampler, seconds: float):
    """The soak's status line (every STATUS_EVERY seconds): progress, failures, recent rate, server memory."""
    # Each call reads only the records appended since the previous one (it runs inside the load loop): calls are at
    # least STATUS_EVERY apart, so a request started in the last STATUS_EVERY seconds finished after the previous call.
    seen = {"records": 0, "failed": 0}

    def status(elapsed: float, recs: list) -> None:
        new = recs[seen["records"]:]
        seen["records"], seen["failed"] = len(recs), seen["failed"] + sum(r[2] is not None for r in new)
        recent = sum(r[0] >= elapsed - STATUS_EVERY for r in new)
        last = sampler.samples[-1] if sampler.samples else (0, 0, 0)
        print(f"soak: {elapsed:.0f}/{seconds:.0f} s, {len(recs):,} requests, {seen['failed']} failed, "
              f"{recent / STATUS_EVERY:.1f} req/s in the last {STATUS_EVERY:.0f} s, server RSS {last[1] / 2**20:,.0f} MiB",
              flush=True)
    return status


def soak(model: str = spec.ensemble_name(spec.REFERENCE), seconds: float = 600.0, concurrency: int = 64,
         repository: Path = spec.REPOSITORY, logs: Path = spec.LOGS, texts_path: Path = spec.EVALUATION_TEXTS,
         batch: int = 1, warmup: float = 0.2, sample_every: float | None = None, max_requests: int = 10_000_000,
         timeout: float = 30.0, max_growth_pct: float = 10.0, quiet: bool = False) -> dict:
    """Run the soak and write logs/soak.{json,md}; the result's "pass" says whether every target held."""
    from enc2triton.serve import server

    logs = io.ensure_writable_dir(Path(logs))
    texts = read_texts(texts_path)  # refuses an empty file
    interval = sample_every or max(1.0, min(5.0, seconds / 30))
    with server.running(repository, logs, quiet=quiet) as info:
        model_ready(info, model)
        inputs = text_inputs(texts, batch)
        if not quiet:
            print(f"soak: {model} at concurrency {concurrency} for {seconds:.0f}s on {info.grpc} "
                  f"(server pid {info.pid}); RSS of its process tree every {interval:g}s")
        started, t0, load0 = time.strftime("%Y-%m-%d %H:%M:%S"), time.perf_counter(), os.getloadavg()
        sampler = RssSampler(info.pid, interval, t0)
        sampler.sample()
        sampler.start()
        records, t_load = asyncio.run(drive(info.grpc, model, inputs, concurrency, seconds, max_requests, timeout,
                                            status=None if quiet else status_printer(sampler, seconds)))
        sampler.stop()
        pid_after = server.status(logs)
        ready_after = server.is_ready(info)
    offset = t_load - t0  # the sampler's clock vs the load's clock
    warm = warmup * seconds
    post = [r for r in records if r[0] >= warm]
    ok_post = [r[1] for r in post if r[2] is None]
    errors = collections.Counter(r[2] for r in records if r[2] is not None)
    window = max(1e-9, max((r[0] + r[1] for r in post), default=warm) - warm)
    samples = sampler.samples
    at_warm = next((s for s in samples if s[0] >= warm + offset), samples[-1])
    at_end = samples[-1]
    post_s = [s for s in samples if s[0] >= warm + offset] or samples[-1:]
    g = rss_growth([b for _, b, _ in post_s])
    same_server = bool(pid_after and pid_after.pid == info.pid and ready_after)
    result = {
        "kind": "soak", "model": model, "server": info.grpc, "server_pid": info.pid, "repository": io.rel(info.repository),
        "seconds": seconds, "concurrency": concurrency, "batch": batch, "texts": io.rel(texts_path), "n_texts": len(texts),
        "warmup_seconds": round(warm, 1),
        "total": {"requests": len(records), "failed": sum(errors.values())},
        "after_warmup": {
            "requests": len(post), "ok": len(ok_post), "failed": len(post) - len(ok_post),
            "throughput_rps": round(len(ok_post) / window, 2), "texts_per_s": round(len(ok_post) * batch / window, 2),
            "latency": percentiles([r for r in ok_post])},
        "errors": dict(errors.most_common()),
        "rss": {"at_warmup_end_mb": round(at_warm[1] / 2**20, 1), "at_end_mb": round(at_end[1] / 2**20, 1),
                **{f"{k}_mb": round(v / 2**20, 1) for k, v in g.items() if k != "growth_pct"},
                "growth": GROWTH_RULE, "growth_pct": round(g["growth_pct"], 2), "processes": at_end[2], "max_growth_pct": max_growth_pct,
                "samples": [(round(t - offset, 1), round(b / 2**20, 1), n) for t, b, n in samples]},
        "server_same_pid_and_ready": same_server,
        "started": started,
        # the client shares the machine: how busy it was (1-minute load average) tells how to read the figures
        "host": {"cpus": os.cpu_count(), "loadavg_1m_start": round(load0[0], 2), "loadavg_1m_end": round(os.getloadavg()[0], 2)},
    }
    failures = []
    if result["total"]["failed"]:
        failures.append(f"{result['total']['failed']} failed requests: " + "; ".join(f"{n}x {m}" for m, n in errors.most_common(3)))
    if not ok_post:
        failures.append("no successful request after warm-up")
    if not g["growth_pct"] < max_growth_pct:
        failures.append(f"server RSS grew {g['growth_pct']:.1f}% after warm-up (limit {max_growth_pct}%)")
    if not same_server:
        failures.append("the server is gone or was restarted during the soak")
    result["failures"], result["pass"] = failures, not failures
    io.write_json(logs / "soak.json", result)
    io.write_text(logs / "soak.md", soak_markdown(result))
    if not quiet:
        print(soak_markdown(result))
    return result


def soak_markdown(r: dict) -> str:
    a, lat, rss = r["after_warmup"], r["after_warmup"]["latency"], r["rss"]
    lines = [f"# Soak: {r['model']}", "",
             f"{r['seconds']:.0f} s at concurrency {r['concurrency']} (batch {r['batch']}, {r['n_texts']} texts from {r['texts']}), "
             f"server {r['server']} pid {r['server_pid']}; figures after a {r['warmup_seconds']:.0f} s warm-up.", "",
             "| metric | value |", "|---|---|",
             f"| requests (whole run) | {r['total']['requests']} |",
             f"| failed (whole run) | {r['total']['failed']} |",
             f"| requests after warm-up | {a['requests']} |",
             f"| throughput | {a['throughput_rps']} req/s ({a['texts_per_s']} texts/s) |",
             f"| latency p50 / p90 / p99 / max | {lat['p50_ms']} / {lat['p90_ms']} / {lat['p99_ms']} / {lat.get('max_ms')} ms |",
             f"| server RSS at warm-up end | {rss['at_warmup_end_mb']} MiB ({rss['processes']} processes) |",
             f"| server RSS at end | {rss['at_end_mb']} MiB |",
             f"| RSS median, first / last quarter after warm-up | {rss['early_median_mb']} / {rss['late_median_mb']} MiB |",
             f"| RSS peak, first / last quarter after warm-up | {rss['early_peak_mb']} / {rss['late_peak_mb']} MiB |",
             f"| RSS growth (median to median) | {rss['growth_pct']} % (limit {rss['max_growth_pct']} %) |",
             f"| same server, still ready | {'yes' if r['server_same_pid_and_ready'] else 'NO'} |",
             f"| host | {r['host']['cpus']} CPUs, load average {r['host']['loadavg_1m_start']} -> {r['host']['loadavg_1m_end']} (client and server share it) |"]
    if r["errors"]:
        lines += ["", "Errors by message:", ""] + [f"- {n} x `{m}`" for m, n in r["errors"].items()]
    lines += ["", f"**{'PASS' if r['pass'] else 'FAIL'}**" + ("" if r["pass"] else ": " + "; ".join(r["failures"]))]
    return "\n".join(lines) + "\n"


# --- overload ---------------------------------------------------------------------------------------

def _sequential(url: str, model: str, inp, n: int, timeout: float) -> list[tuple[float, str | None]]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    out = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            try:
                client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput("sentence_embedding")], client_timeout=timeout)
                out.append((time.perf_counter() - t, None))
            except Exception as e:
                out.append((time.perf_counter() - t, error_key(e)))
    finally:
        client.close()
    return out


def overload(artifacts: Path = spec.ARTIFACTS, logs: Path = spec.LOGS, model: str = spec.ensemble_name(spec.REFERENCE),
             queue_size: int = 4, queue_delay_us: int = spec.Serving.max_queue_delay_us, seconds: float = 15.0,
             concurrency: int = 64, texts_path: Path = spec.EVALUATION_TEXTS, repository: Path | None = None,
             timeout: float = 30.0, max_requests: int = 2_000_000, baseline_requests: int = 20, recovery_requests: int = 10,
             quiet: bool = False) -> dict:
    """Flood a small-queue server; writes logs/overload.json. `repository`: use this one (already
    generated with a small queue) instead of generating one from `artifacts`."""
    from enc2triton.serve import repository as repo_mod
    from enc2triton.serve import server

    logs = io.ensure_writable_dir(Path(logs))
    texts = read_texts(texts_path)
    work = Path(tempfile.mkdtemp(prefix="enc2triton-overload-"))
    try:
        if repository is None:
            repository = work / "model_repository"
            serving = spec.Serving(max_queue_size=queue_size, max_queue_delay_us=queue_delay_us)
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                repo_mod.generate(artifacts, repository, serving)
        cfg = repo_mod.read_config(Path(repository) / "tokenizer" / "config.pbtxt")
        queue_size = cfg.dynamic_batching.default_queue_policy.max_queue_size
        queue_delay_us = cfg.dynamic_batching.max_queue_delay_microseconds
        # a server of its own (state in the work folder): never the one serve.sh manages
        info = server.start(repository, work / "server", timeout=300, quiet=True)
        try:
            model_ready(info, model)
            single = text_inputs(texts[:1], 1)[0]
            _sequential(info.grpc, model, single, 3, timeout)  # warm
            base = _sequential(info.grpc, model, single, baseline_requests, timeout)
            if not quiet:
                print(f"overload: {model}, queue {queue_size} (REJECT), max queue delay {queue_delay_us} us; "
                      f"flooding at concurrency {concurrency} for {seconds:.0f}s")
            records, _ = asyncio.run(drive(info.grpc, model, text_inputs(texts, 1), concurrency, seconds, max_requests, timeout))
            recovery = _sequential(info.grpc, model, single, recovery_requests, timeout)
            ready_after = server.is_ready(info) and (server.status(work / "server") or info).pid == info.pid
        finally:
            shutil.copy2(info.log, logs / "overload_tritonserver.log")
            server.stop(work / "server", quiet=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = [lat for _, lat, err in records if err is None]
    rejected = [lat for _, lat, err in records if err is not None and REJECTED in err]
    other = collections.Counter(err for _, _, err in records if err is not None and REJECTED not in err)
    base_lat = percentiles([lat for lat, err in base if err is None])
    result = {
        "kind": "overload", "model": model, "queue_size": queue_size, "queue_delay_us": queue_delay_us,
        "concurrency": concurrency, "seconds": seconds, "server_pid": info.pid,
        "baseline": {"requests": len(base), "failed": sum(err is not None for _, err in base), "latency": base_lat},
        "flood": {"requests": len(records), "ok": len(ok), "rejected": len(rejected), "other_errors": sum(other.values()),
                  "ok_latency": percentiles(ok), "rejection_latency": percentiles(rejected),
                  "goodput_rps": round(len(ok) / seconds, 2), "offered_rps": round(len(records) / seconds, 1),
                  "errors": dict(other.most_common()), "rejection_message": REJECTED if rejected else None},
        "recovery": {"requests": len(recovery), "ok": sum(err is None for _, err in recovery),
                     "errors": sorted({err for _, err in recovery if err}),
                     "latency": percentiles([lat for lat, err in recovery if err is None])},
        "server_same_pid_and_ready": ready_after,
    }
    f = result["flood"]
    failures = []
    if not rejected:
        failures.append(f"no request was rejected: the flood (concurrency {concurrency}) never filled the queue of {queue_size}")
    if other:
        failures.append(f"{sum(other.values())} errors other than the queue rejection: " + "; ".join(other))
    if rejected and ok and not f["rejection_latency"]["p50_ms"] <= 0.5 * f["ok_latency"]["p50_ms"]:
        failures.append(f"rejections are not fast: p50 {f['rejection_latency']['p50_ms']} ms vs accepted p50 {f['ok_latency']['p50_ms']} ms")
    if result["recovery"]["ok"] != len(recovery):
        failures.append(f"after the flood {len(recovery) - result['recovery']['ok']}/{len(recovery)} normal requests failed")
    if not ready_after:
        failures.append("the server is gone or not ready after the flood")
    result["failures"], result["pass"] = failures, not failures
    io.write_json(logs / "overload.json", result)
    if not quiet:
        rl, ol = f["rejection_latency"], f["ok_latency"]
        print(f"  baseline (one at a time): p50 {base_lat['p50_ms']} ms, p99 {base_lat['p99_ms']} ms")
        print(f"  flood: {f['requests']} requests, {f['ok']} ok (p50 {ol['p50_ms']} ms, p99 {ol['p99_ms']} ms), "
              f"{f['rejected']} rejected '{REJECTED}' (p50 {rl['p50_ms']} ms, p99 {rl['p99_ms']} ms), {f['other_errors']} other errors")
        print(f"  recovery: {result['recovery']['ok']}/{len(recovery)} ok, p50 {result['recovery']['latency']['p50_ms']} ms")
        print(f"  {'PASS' if result['pass'] else 'FAIL: ' + '; '.join(failures)}  ({logs / 'overload.json'})")
    return result


def main(argv=None) -> int:
    ap = cli.parser("python -m enc2triton.soak", (
        "Load soak (default) or overload probe (--overload) against the real Triton server, loopback only. "
        "Soak: writes logs/soak.{json,md}; overload: logs/overload.json. Exits 1 when a target fails."))
    ap.add_argument("--model", default=spec.ensemble_name(spec.REFERENCE), help="the ensemble to drive, TEXT in (default %(default)s)")
    ap.add_argument("--minutes", type=cli.at_least(0.05, float), default=10.0, help="soak length (default %(default)s; overload: see --seconds)")
    ap.add_argument("--concurrency", type=cli.at_least(1), help="requests in flight, retried at once when rejected (default 64)")
    ap.add_argument("--batch", type=cli.at_least(1), default=1, help="texts per request (default %(default)s)")
    ap.add_argument("--warmup", type=cli.at_least(0, float), default=0.2, help="fraction of the run excluded from the figures (default %(default)s)")
    ap.add_argument("--sample-every", type=cli.at_least(0.1, float), help="seconds between RSS samples (default: run/30, 1..5 s)")
    ap.add_argument("--max-requests", type=cli.at_least(1), default=10_000_000, help="stop after this many requests (default %(default)s)")
    ap.add_argument("--timeout", type=cli.at_least(0.1, float), default=30.0, help="seconds before one request counts as failed (default %(default)s)")
    ap.add_argument("--max-growth", type=cli.at_least(0, float), default=10.0, help="RSS growth limit after warm-up, %% (default %(default)s)")
    ap.add_argument("--texts", type=Path, default=spec.EVALUATION_TEXTS, help="one text per line (default %(default)s)")
    ap.add_argument("--repository", type=Path, help="soak: the repository to serve (default model_repository/); "
                    "overload: an already generated small-queue repository (default: generate one from --artifacts)")
    ap.add_argument("--overload", action="store_true", help="overload probe instead of the soak")
    ap.add_argument("--queue-size", type=cli.at_least(1), default=4, help="overload: max_queue_size of the generated repository (default %(default)s)")
    ap.add_argument("--queue-delay-us", type=cli.at_least(0), default=spec.Serving.max_queue_delay_us,
                    help="overload: max_queue_delay of the generated repository (default %(default)s)")
    ap.add_argument("--seconds", type=cli.at_least(1, float), default=15.0, help="overload: flood length (default %(default)s)")

    def body(a) -> int:
        if a.warmup >= 1:
            raise StageError(f"--warmup is a fraction of the run, below 1; got {a.warmup}")
        if a.overload:
            r = overload(a.artifacts, a.logs, a.model, a.queue_size, a.queue_delay_us, a.seconds, a.concurrency or 64,
                         a.texts, a.repository, a.timeout, a.max_requests)
        else:
            r = soak(a.model, a.minutes * 60, a.concurrency or 64, a.repository or spec.REPOSITORY, a.logs, a.texts, a.batch,
                     a.warmup, a.sample_every, a.max_requests, a.timeout, a.max_growth)
        return 0 if r["pass"] else 1
    return cli.run(ap, body, argv)


if __name__ == "__main__":
    sys.exit(main())
