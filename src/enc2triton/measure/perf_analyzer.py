"""perf_analyzer, the tool: its measurement settings (count windows, stability, retries), its command line, one
concurrency level's run, its CSV and output parsed, and the input-data files it sends."""
from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from enc2triton.core import host, io, spec, tools
from enc2triton.serve import repository, server
from enc2triton.core.texts import load_tokenizer, tokenize


# perf_analyzer CSV header -> summary key. Latencies and times are microseconds in the CSV, ms in the summary.
CSV_FIELDS = {
    "Inferences/Second": "throughput", "Client Send": "client_send_ms", "Network+Server Send/Recv": "network_ms",
    "Server Queue": "server_queue_ms", "Server Compute Input": "compute_input_ms",
    "Server Compute Infer": "compute_infer_ms", "Server Compute Output": "compute_output_ms",
    "Client Recv": "client_recv_ms", "p50 latency": "p50_ms", "p90 latency": "p90_ms",
    "p95 latency": "p95_ms", "p99 latency": "p99_ms",
}
OPTIONAL_FIELDS = {"Avg latency": "avg_ms"}  # --verbose-csv only
STABILITY = (
    "count_windows: each window holds at least N requests (default 100) and at least 10 x the concurrency (so it spans "
    "many dynamic-batcher executions), rounded up to whole passes over the input texts for text models (texts differ in "
    "cost, so a window of 160 of 128 texts holds a different mix each time and never settles), so p99 always rests on a real sample "
    "(perf_analyzer merges the 3 stable windows: >= 300 requests, p99 ~ the 3rd-slowest) and slow and fast models get "
    "the same statistical weight rather than the same wall time. Stability is judged on average latency and "
    "throughput (no --percentile): p99 over ~100 requests is the noisiest statistic there is and stabilising on it "
    "mostly burns trials; p50..p99 are read from the CSV either way. 15% instead of perf_analyzer's 10%: on a small "
    "CPU box client and server share the cores and window-to-window noise of ~10% is the floor. At most 8 windows "
    "(a slow model at 5 infer/s then takes <= 160 s per level); an unstable level is retried once with windows twice as "
    "long and twice as many of them; still unstable, it is measured once over a fixed number of requests "
    "(--request-count, as many as the 3 windows perf_analyzer would merge) and recorded with unstable: its spread "
    "between windows, marked in the summary and the report, never a clean number and never a failure of the run.")
UNSTABLE = "Failed to obtain stable measurement"
FIXED_MIN_TIMEOUT = 60.0  # seconds: the least a fixed-count run (an unstable level's last try) is given
WINDOW_PER_CONCURRENCY = 10  # count windows hold at least 10 x concurrency requests
MAX_CYCLE = 1024  # text inputs up to this many entries: windows are whole passes over them
ENSEMBLE_NOTE = ("ensembles: perf_analyzer's CSV counts the composing models' queue time in 'Network+Server Send/Recv' "
                 "and its 'Server Queue' is the ensemble's own (~0); server_queue_ms here is the sum of the composing "
                 "models' queue times from perf_analyzer's output, network_ms is reduced by the same amount")


@dataclass(frozen=True)
class Settings:
    window_requests: int = 100      # count_windows: requests per window
    window_ms: int | None = None    # time_windows instead, when set
    stability: float = 15.0         # max/min of the last 3 windows, % (latency and throughput)
    max_trials: int = 8
    timeout: float = 600.0          # seconds per perf_analyzer run (a hung server must not hang the sweep)
    factor: int = 1                 # the retry of an unstable level doubles the windows
    request_count: int | None = None  # the last resort of an unstable level: one fixed-size measurement

    def doubled(self) -> "Settings":
        # longer windows alone do not help where the noise is slow (2-core box, ensembles at c=4: window means of
        # 34-63 ms at 128 and at 256 requests); more windows give 3 consecutive calm ones more chances (probes
        # with 16 windows of 128: 3 of 5 settled)
        return replace(self, factor=self.factor * 2, window_ms=self.window_ms and self.window_ms * 2,
                       max_trials=self.max_trials * 2, timeout=self.timeout * 2)

    def fixed(self, concurrency: int = 1, cycle: int | None = None) -> "Settings":
        # as many requests as the 3 windows perf_analyzer merges into a stable result, with no stability check
        return replace(self, request_count=3 * self.window_count(concurrency, cycle))

    def window_count(self, concurrency: int = 1, cycle: int | None = None) -> int:
        # a window must span many batcher cycles: at concurrency c the server merges up to c requests per
        # execution, so a fixed 100 requests at c=32 holds ~3 executions and never looks stable
        count = max(self.window_requests, WINDOW_PER_CONCURRENCY * concurrency) * self.factor
        # texts of different lengths cost different time: a window that is not a whole number of passes over
        # the input data holds a different mix every time (160 of 128 texts at c=16: unstable twice in 8 windows,
        # 256: stable in 4, twice each; the 2-core CPU box, ensemble_onnx_best)
        if cycle and cycle <= MAX_CYCLE:
            count = -(-count // cycle) * cycle
        return count

    def flags(self, concurrency: int = 1, cycle: int | None = None) -> list[str]:
        if self.request_count:
            return ["--request-count", str(self.request_count)]
        count = self.window_count(concurrency, cycle)
        mode = (["--measurement-mode", "time_windows", "--measurement-interval", str(self.window_ms)] if self.window_ms
                else ["--measurement-mode", "count_windows", "--measurement-request-count", str(count)])
        return mode + ["--stability-percentage", f"{self.stability:g}", "--max-trials", str(self.max_trials)]


# ------------------------------------------------------------------------------------ parsing
def parse_csv(text: str, fields: dict | None = None, optional: dict | None = None, rate: str = "throughput") -> list[dict]:
    """Rows of a perf_analyzer CSV, by header name (`fields` required, `optional` when present: header -> key; default
    the Triton CSV's); ms for times, the `rate` key as it is. Raises ValueError on a foreign CSV."""
    fields = CSV_FIELDS if fields is None else fields
    optional = OPTIONAL_FIELDS if optional is None else optional
    lines = [ln for ln in text.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.startswith("Concurrency,")), None)
    if start is None:
        raise ValueError("no 'Concurrency,...' header: not a perf_analyzer concurrency CSV")
    reader = csv.DictReader(lines[start:])
    missing = [h for h in fields if h not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"perf_analyzer CSV lacks columns {missing}; header: {reader.fieldnames}")
    rows = []
    for r in reader:
        row = {"concurrency": int(r["Concurrency"])}
        for h, k in {**fields, **optional}.items():
            if h in r and r[h] not in (None, ""):
                v = float(r[h])
                row[k] = v if k == rate else round(v / 1000.0, 3)
        rows.append(row)
    return rows


_CONC = re.compile(r"^Request concurrency: (\d+)", re.M)
_MODEL = re.compile(r"^\s+(\S+), version: (\S+)\s*$")
_BREAKDOWN = re.compile(r"Avg request latency: (\d+) usec \((.*)\)")


def parse_composing(stdout: str) -> dict[int, dict[str, dict]]:
    """{concurrency: {composing model: {latency, overhead, queue, compute_* in ms}}} from an ensemble run's output."""
    out: dict[int, dict[str, dict]] = {}
    marks = list(_CONC.finditer(stdout))
    for i, m in enumerate(marks):
        block = stdout[m.end():marks[i + 1].start() if i + 1 < len(marks) else len(stdout)]
        if "Composing models:" not in block:
            continue
        models, current = {}, None
        for line in block.split("Composing models:", 1)[1].splitlines():
            if (mm := _MODEL.match(line)):
                current = mm.group(1)
            elif current and (bm := _BREAKDOWN.search(line)):
                parts = {"latency_ms": int(bm.group(1)) / 1000.0}
                for p in bm.group(2).split("+"):
                    if (pm := re.match(r"\s*(.+?) (\d+) usec", p)):
                        parts[pm.group(1).strip().replace(" ", "_") + "_ms"] = int(pm.group(2)) / 1000.0
                models[current] = parts
                current = None
        out[int(m.group(1))] = models
    return out


# ------------------------------------------------------------------------------------ input data
def text_input_data(texts: list[str], name: str = spec.TEXT_INPUT) -> dict:
    """perf_analyzer JSON input data: one step per text, BYTES as a string, shape [1] (a batch-1 request)."""
    return {"data": [{name: [t]} for t in texts]}


def token_input_data(tokenizer, texts: list[str], input_names: list[str], seq_len: int) -> dict:
    """One step per text: the tokenizer's tensors padded/truncated to exactly seq_len (so every request batches)."""
    feed = tokenize(tokenizer, texts, input_names, seq_len, pad_to=seq_len)
    return {"data": [{n: {"content": feed[n][i].tolist(), "shape": [seq_len]} for n in input_names} for i in range(len(texts))]}


def model_inputs(repo: Path, model: str) -> list[tuple[str, str]]:
    """(name, Triton data type) of the model's inputs, from its config.pbtxt (what the server serves)."""
    cfg = repository.read_config(Path(repo) / model / "config.pbtxt")
    return [(i.name, repository.mc.DataType.Name(i.data_type)) for i in cfg.input]


def repo_models(repo: Path) -> list[str]:
    """Models in repository.json order (else every folder with a config): tokenizer, raw models, ensembles, fused."""
    info = Path(repo) / "repository.json"
    names = io.read_json(info)["models"] if info.exists() else sorted(p.name for p in Path(repo).iterdir() if (p / "config.pbtxt").exists())
    order = {"tokenizer": 0, "model": 1, "ensemble": 2, "fused": 3}
    return sorted(names, key=lambda n: order[spec.kind_of(n)])


def repo_tokenizer(repo: Path, artifacts: Path):
    """The tokenizer the repository serves (else the manifest's)."""
    d = Path(repo) / spec.TOKENIZER / "1" / "tokenizer"
    if d.is_dir():
        return load_tokenizer(d)
    return load_tokenizer(io.resolve(io.load_manifest(artifacts)["tokenizer_dir"], artifacts))


# ------------------------------------------------------------------------------------ environment
def pa_version(tool: tools.Tool) -> str:
    out = host.command_output([str(tool.path), "--version"], env=tool.environ())
    m = re.search(r"Version (\S+)", out)
    return m.group(1) if m else out or "unknown"


def server_version(info: server.ServerInfo) -> str:
    try:
        with urllib.request.urlopen(f"http://{info.http}/v2", timeout=5) as r:
            return json.loads(r.read()).get("version", "unknown")
    except (OSError, ValueError):
        return "unknown"


# ------------------------------------------------------------------------------------ running
def pa_command(tool: tools.Tool, model: str, url: str, protocol: str, concurrency: int, batch: int,
               data: Path, csv_path: Path, settings: Settings, cycle: int | None = None) -> list[str]:
    return [str(tool.path), "-m", model, "-u", url, "-i", protocol, "-b", str(batch),
            "--concurrency-range", str(concurrency), "--input-data", str(data), *settings.flags(concurrency, cycle),
            "-f", str(csv_path), "--verbose-csv"]


class LevelError(RuntimeError):
    pass


def _run_once(tool: tools.Tool, cmd_for, s: Settings, attempt: int, log: list[str], commands: list[str],
              cpus: list[int] | None) -> tuple[int, str, str | None, float]:
    """One perf_analyzer run: (exit code, its output, the CSV's text if it wrote one, seconds it took)."""
    with tempfile.TemporaryDirectory(prefix="pa-") as tmp:
        csv_path = Path(tmp) / "level.csv"
        cmd = cmd_for(s, csv_path) + (["-v"] if attempt == 1 else [])  # the retry prints every window's numbers
        commands.append(shlex.join(cmd))
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=tool.environ(), timeout=s.timeout,
                               preexec_fn=host.pinned(cpus))
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            log.append(out)
            raise
        out = p.stdout + p.stderr
        log.append(f"$ {shlex.join(cmd)}\n{out}")
        return p.returncode, out, csv_path.read_text() if csv_path.exists() else None, time.monotonic() - t0


def run_level(tool: tools.Tool, cmd_for, settings: Settings, log: list[str], commands: list[str],
              cpus: list[int] | None = None, parse=None, concurrency: int = 1, cycle: int | None = None) -> tuple[dict, str]:
    """One concurrency level; an unstable level is retried once with twice as many windows twice as long, then
    measured once over a fixed number of requests and returned with row["unstable"] (the windows' spread).
    parse: the CSV's reader (default parse_csv; serving_peers.parse_csv for perf_analyzer's openai CSV)."""
    windows, took = [], None
    for attempt, s in enumerate((settings, settings.doubled(), settings.doubled().fixed(concurrency, cycle))):
        tries = 1
        if s.request_count and took is not None:
            # fewer requests than the retry just sent, so 3x its time is ample. perf_analyzer 2.60 once sat idle for
            # 15 minutes in a --request-count run while the server answered (CI, 2026-12-07): bound it, try it twice
            s, tries = replace(s, timeout=min(s.timeout, max(FIXED_MIN_TIMEOUT, 3 * took))), 2
        for t in range(tries):
            try:
                code, out, csv_text, took = _run_once(tool, cmd_for, s, attempt, log, commands, cpus)
                break
            except subprocess.TimeoutExpired:
                if t + 1 == tries:
                    raise LevelError(f"perf_analyzer timed out after {s.timeout:.0f}s") from None
                print(f"      perf_analyzer gave no result in {s.timeout:.0f}s; once more", flush=True)
        if code == 0 and csv_text is not None:
            row = (parse or parse_csv)(csv_text)[0]
            if s.request_count:
                row["unstable"] = unstable_note(windows, s.request_count)
            return row, csv_text
        if code < 0:
            raise LevelError(f"perf_analyzer killed by signal {-code}")
        if UNSTABLE in out and not s.request_count:
            windows += window_throughputs(out)
            print("      unstable; " + ("retrying with twice as many windows twice as long" if attempt == 0 else
                                       "measuring once over a fixed number of requests (recorded as unstable)"),
                  flush=True)
            continue
        tail = [ln for ln in out.strip().splitlines() if ln.strip()][-3:]
        raise LevelError(f"perf_analyzer exit {code}: " + " | ".join(tail))
    raise AssertionError("unreachable")


_PASS = re.compile(r"Pass \[\d+\] throughput: ([\d.]+) ")


def window_throughputs(out: str) -> list[float]:
    """The throughput of every measurement window perf_analyzer printed (its 'Pass [n] throughput: ...' lines)."""
    return [float(m) for m in _PASS.findall(out)]


def unstable_note(windows: list[float], requests: int) -> dict:
    """What marks a level measured without a stable window: how far apart its windows were."""
    note = {"windows": len(windows), "measured_over_requests": requests,
            "why": "no 3 consecutive windows within the stability band in two tries: one fixed-count measurement"}
    if windows and min(windows) > 0:
        note["window_spread_pct"] = round(100.0 * (max(windows) / min(windows) - 1.0), 1)
    return note
