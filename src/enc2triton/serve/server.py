"""Run the real tritonserver on a model repository: start (until every model is ready), stop, status.

State lives in logs/: tritonserver.pid, tritonserver.log and server.json (addresses that tools and
tests read). Binds 127.0.0.1 unless asked otherwise; no runtime model control unless asked.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from enc2triton.core import cli, io, spec, tools
from enc2triton.core import host as hostinfo  # `host` is the bind address here
from enc2triton.core.io import StageError
from enc2triton.serve import mps as mpsd


@dataclass
class ServerInfo:
    pid: int
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    repository: str
    log: str
    binary: str
    started: float = field(default_factory=time.time)
    models: dict = field(default_factory=dict)
    ready_seconds: float | None = None  # from launch until every model was ready (or had failed)
    cpus: str = ""  # the cores it was pinned to ('' = not pinned)
    # its stubs' /dev/shm regions, recorded once ready: stubs with custom metrics exit without removing theirs when the
    # server is SIGKILLed, and by the next start they are gone, so their command lines can no longer name them
    regions: list = field(default_factory=list)
    mps: dict | None = None  # the server's own CUDA MPS daemon (serve/mps.py), when it runs under one

    @property
    def http(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def url(self, protocol: str = "http") -> str:
        return self.http if protocol == "http" else self.grpc


def _paths(logs: Path) -> tuple[Path, Path, Path]:
    logs = Path(logs)
    return logs / "tritonserver.pid", logs / "tritonserver.log", logs / "server.json"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_busy(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return False
        except OSError:
            return True


def alive(pid: int) -> bool:
    """True only for a live tritonserver process: a stale PID reused by something else is not ours."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text().split()
    except OSError:
        return False
    return b"tritonserver" in cmd and stat[2] != "Z"


def _get(url: str, timeout: float = 2.0, data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def model_states(info: ServerInfo) -> dict[str, dict] | None:
    """Per-model state from the repository index; None while the server does not answer."""
    code, body = _get(f"http://{info.http}/v2/repository/index", data=b"{}")
    if code != 200:
        return None
    return {m["name"]: m for m in json.loads(body)}


def is_ready(info: ServerInfo) -> bool:
    return _get(f"http://{info.http}/v2/health/ready")[0] == 200


def log_errors(log: Path, limit: int = 12) -> list[str]:
    if not Path(log).exists():
        return []
    lines = Path(log).read_text(errors="replace").splitlines()
    return [ln for ln in lines if ln.startswith("E") or "error" in ln.lower() or "failed" in ln.lower()][-limit:]


STUB = b"triton_python_backend_stub"


def orphans(pid: int) -> list[int]:
    """Python backend stubs in the process group of tritonserver `pid` (the group is the server's
    own: start_new_session); once the server is dead, they are orphans. A SIGKILLed server can
    leave one blocked for good."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == pid:
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[2]) == pid and fields[0] != "Z" and STUB in cmd.split(b"\0")[0]:
            found.append(int(d))
    return found


def stub_regions(stubs: list[int]) -> list[str]:
    """The /dev/shm regions of these stubs (named on their command lines)."""
    regions = []
    for p in stubs:
        with contextlib.suppress(OSError):
            regions += [a.decode() for a in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0") if a.startswith(b"triton_python_backend_shm_region_")]
    return regions


def remove_regions(regions: list[str]) -> None:
    """A stub removes its region when it exits cleanly; one killed (SIGKILL) leaves it in /dev/shm."""
    for r in regions:
        name = Path(str(r)).name
        if name.startswith("triton_python_backend_shm_region_"):  # a region of a stub, never anything else in /dev/shm
            with contextlib.suppress(OSError):
                (Path("/dev/shm") / name).unlink()


def clean_orphans(pid: int, grace: float = 2.0) -> list[int]:
    """Kill the stubs a dead server left behind (those still there after `grace` seconds) and remove
    their shared-memory regions."""
    regions = stub_regions(orphans(pid))  # now: a stub that exits during the grace period may not remove its own
    deadline = time.time() + grace
    while (stubs := orphans(pid)) and time.time() < deadline:
        time.sleep(0.1)
    regions += stub_regions(stubs)
    for p in stubs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    deadline = time.time() + 5
    while time.time() < deadline and orphans(pid):
        time.sleep(0.05)
    remove_regions(regions)
    if stubs:
        print(f"note: killed {len(stubs)} Python backend stub(s) left behind by the dead server (pid {pid}): {stubs}", file=sys.stderr)
    return stubs


def _read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def _read_info(json_file: Path) -> ServerInfo:
    """logs/server.json as written by start(); ValueError when it is not that (truncated, edited, another format)."""
    try:
        data = io.read_json(json_file)
        info = ServerInfo(**data)
    except (ValueError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors; TypeError: wrong keys
        raise ValueError(io.first_line(e)) from None
    if not isinstance(info.pid, int) or isinstance(info.pid, bool) or info.pid <= 0:
        raise ValueError(f"pid {info.pid!r} is not a process id")
    return info


def status(logs: Path = spec.LOGS) -> ServerInfo | None:
    """The server described by logs/server.json if it is alive; cleans stale state files (and the
    stubs a killed server left behind). An unreadable server.json (truncated, edited) is stale state too:
    one line on stderr says so, the state files are removed and None is returned."""
    pid_file, _, json_file = _paths(logs)
    if not json_file.exists():
        if pid_file.exists():
            pid = _read_pid(pid_file)
            if pid and not alive(pid):
                clean_orphans(pid)
            pid_file.unlink(missing_ok=True)
        return None
    try:
        info = _read_info(json_file)
    except (OSError, ValueError) as e:
        # the addresses are lost, so the server (if any) cannot be used; the pid file still says whose stubs to clean
        pid = _read_pid(pid_file)
        live = pid is not None and alive(pid)
        what = (f"tritonserver pid {pid} still runs and is left alone (stop it with `kill {pid}`)" if live
                else "the server it described is gone")
        print(f"note: {json_file} is unreadable ({e}): stale server state, cleaned; {what}", file=sys.stderr)
        if pid is not None and not live:
            clean_orphans(pid)
        for f in (pid_file, json_file):
            with contextlib.suppress(OSError):
                f.unlink(missing_ok=True)
        return None
    if alive(info.pid):
        return info
    clean_orphans(info.pid)
    remove_regions(info.regions)
    mpsd.stop(info.mps)
    pid_file.unlink(missing_ok=True)
    json_file.unlink(missing_ok=True)
    return None


# Never handed to tritonserver: the server needs no hub access (tokenizer and weights are local files),
# and a model's code or a crash dump must not be able to leak a credential into a log.
_SECRET = re.compile(r"(TOKEN$|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|CREDENTIAL)", re.I)


def server_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if not _SECRET.search(k)}


def start(repository: Path = spec.REPOSITORY, logs: Path = spec.LOGS, host: str = spec.Serving.host,
          http_port: int | None = None, grpc_port: int | None = None, metrics_port: int | None = None,
          model_control: bool = False, timeout: float = 300.0, quiet: bool = False, cpus: list[int] | None = None,
          mps: str = spec.MPS) -> ServerInfo:
    repository = Path(repository).resolve()
    logs = io.ensure_writable_dir(Path(logs))
    if not repository.is_dir():
        raise StageError(f"model repository {repository} not found: run `make repository` first")
    pid_file, log_file, json_file = _paths(logs)
    stale = json_file.exists() or pid_file.exists()
    running = status(logs)
    if running:
        raise StageError(f"a server is already running (pid {running.pid}, http {running.http}): `./serve.sh stop` first")
    if stale and not quiet:
        print(f"note: the previous server is gone (killed or crashed); its state files were cleaned, its log kept as {log_file.with_suffix('.prev.log')}", file=sys.stderr)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"WARNING: binding {host}: Triton has no authentication; anyone who reaches this address can infer", file=sys.stderr)
    ports = {}
    for name, port in (("http", http_port), ("grpc", grpc_port), ("metrics", metrics_port)):
        if port and port_busy(host, port):
            raise StageError(f"{name} port {port} on {host} is busy: pick another (--{name}-port) or stop what uses it")
        ports[name] = port or free_port(host)
    tool = tools.find_tritonserver()
    cmd = [str(tool.path), f"--model-repository={repository}", f"--http-address={host}", f"--http-port={ports['http']}",
           f"--grpc-address={host}", f"--grpc-port={ports['grpc']}", f"--metrics-port={ports['metrics']}",
           # one model failing to load must not take the others down; readiness is checked per model
           "--exit-on-error=false", "--strict-readiness=false", "--log-verbose=0", "--exit-timeout-secs=10",
           f"--model-control-mode={'explicit' if model_control else 'none'}"]
    if model_control:
        cmd.append("--load-model=*")
        print("WARNING: runtime model control is on: clients can load and unload models", file=sys.stderr)
    if tool.backend_dir:
        cmd.append(f"--backend-directory={tool.backend_dir}")
    if not hostinfo.has_nvidia_gpu():
        cmd.append("--allow-gpu-metrics=false")
    if log_file.exists() and log_file.stat().st_size:  # the last run's log (why it died) survives one restart
        log_file.replace(log_file.with_suffix(".prev.log"))
    daemon = mpsd.start(mps, repository)
    try:
        with open(log_file, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env=server_env({**tool.environ(), **(mpsd.env(daemon) if daemon else {})}),
                                    preexec_fn=hostinfo.pinned(cpus))  # its stubs inherit the cores
    except BaseException:
        mpsd.stop(daemon)
        raise
    info = ServerInfo(proc.pid, host, ports["http"], ports["grpc"], ports["metrics"], str(repository), str(log_file), str(tool.path),
                      cpus=hostinfo.format_cpus(cpus), mps=daemon)
    io.write_text(pid_file, f"{proc.pid}\n")
    expected = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").exists())
    deadline = time.time() + timeout
    settled_since = None
    try:
        while True:
            if proc.poll() is not None:
                raise StageError(f"tritonserver exited with code {proc.returncode} while starting:\n  "
                                 + "\n  ".join(log_errors(log_file)) + f"\nfull log: {log_file}")
            states = model_states(info)
            done = {n: s for n, s in (states or {}).items() if s.get("state") in ("READY", "UNAVAILABLE")}
            if states is not None and all(n in done for n in expected):
                break
            # an ensemble over a model that failed is never attempted, so it never shows up in the
            # index: once nothing has been loading for a while, count the missing ones as failed
            settled = states is not None and any(s.get("state") == "UNAVAILABLE" for s in done.values()) \
                and not any(s.get("state") == "LOADING" for s in states.values())
            settled_since = (settled_since or time.time()) if settled else None
            if settled_since and time.time() - settled_since > 3:
                for n in expected:
                    done.setdefault(n, {"state": "UNAVAILABLE", "reason": "not loaded: a model it depends on failed"})
                break
            if time.time() > deadline:
                raise StageError(f"tritonserver not ready after {timeout:.0f}s; models: "
                                 + ", ".join(f"{n}={(states or {}).get(n, {}).get('state', '?')}" for n in expected) + f"; log: {log_file}")
            time.sleep(0.5)
    except BaseException:
        _terminate(proc.pid)
        mpsd.stop(daemon)
        pid_file.unlink(missing_ok=True)
        raise
    info.models = {n: s.get("state") for n, s in done.items()}
    info.regions = stub_regions(orphans(info.pid))
    info.ready_seconds = round(time.time() - info.started, 1)
    if daemon:  # its MPS server starts with the first client: none means the GPU models run without it
        daemon["servers"] = mpsd.servers(daemon)
    failed = {n: s.get("reason", "") for n, s in done.items() if s.get("state") != "READY"}
    io.write_json(json_file, asdict(info))
    if not quiet:
        print(f"tritonserver pid {info.pid} ({tool.source}) ready: HTTP {info.http}  gRPC {info.grpc}  metrics {host}:{info.metrics_port}"
              + (f"  cores {info.cpus}" if info.cpus else ""))
        print(f"  {len(done) - len(failed)}/{len(done)} models ready in {info.ready_seconds} s; log {log_file}")
        if daemon:
            print(f"  CUDA MPS ({daemon['mode']}): daemon pid {daemon['pid']}, MPS server pid(s) "
                  f"{', '.join(map(str, daemon['servers'])) or 'none'} for {daemon['gpu_processes']} GPU instances")
    if daemon and not daemon["servers"]:
        print("WARNING: CUDA MPS was started but no model attached to it: the GPU models run without it", file=sys.stderr)
    for name, reason in failed.items():  # the reason's first line; its traceback is in the log
        lines = (reason or "no reason given").strip().splitlines()
        more = f" (traceback in {log_file})" if len(lines) > 1 else ""
        print(f"  MODEL FAILED TO LOAD: {name}: {lines[0]}{more}", file=sys.stderr)
    return info


def _terminate(pid: int, grace: float = 30.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.time() + grace
    while time.time() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not our child: poll /proc
            if not alive(pid):
                return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop(logs: Path = spec.LOGS, quiet: bool = False) -> bool:
    pid_file, _, json_file = _paths(logs)
    info = status(logs)
    if info is None:
        if not quiet:
            print("no server running")
        return False
    regions = stub_regions(orphans(info.pid))
    _terminate(info.pid)
    clean_orphans(info.pid, grace=10)
    remove_regions(regions + list(info.regions))  # those of stubs the escalation to SIGKILL ended
    mpsd.stop(info.mps, keep_logs=logs)  # after its clients: the daemon waits for them
    pid_file.unlink(missing_ok=True)
    json_file.unlink(missing_ok=True)
    if not quiet:
        print(f"stopped tritonserver pid {info.pid}")
    return True


@contextlib.contextmanager
def running(repository: Path = spec.REPOSITORY, logs: Path = spec.LOGS, **kwargs):
    """Use the server already running on this repository, or start one and stop it afterwards."""
    info = status(logs)
    if info and Path(info.repository) == Path(repository).resolve():
        yield info
        return
    info = start(repository, logs, **kwargs)
    try:
        yield info
    finally:
        stop(logs, quiet=True)


def smoke_start() -> str:
    """Start on an empty repository and stop: proves the binary, its libraries and backends load."""
    with tempfile.TemporaryDirectory() as tmp:
        repo, logs = Path(tmp) / "repo", Path(tmp) / "logs"
        repo.mkdir()
        info = start(repo, logs, quiet=True, timeout=120)
        stop(logs, quiet=True)
        return f"{info.binary}, started and stopped"


def main(argv=None) -> int:
    ap = cli.parser("serve.sh", "Step 5 (optional: client.py and run_tests.sh start and stop a server themselves): start, "
                    "stop or inspect the Triton server for the generated model repository.", artifacts=False)
    ap.add_argument("action", choices=("start", "stop", "status", "restart"))
    ap.add_argument("--repository", type=Path, default=spec.REPOSITORY, help="the model repository (default %(default)s)")
    ap.add_argument("--host", default=spec.Serving.host, help="bind address (default %(default)s; others warn)")
    ap.add_argument("--http-port", type=cli.at_least(1), help="default: a free port")
    ap.add_argument("--grpc-port", type=cli.at_least(1), help="default: a free port")
    ap.add_argument("--metrics-port", type=cli.at_least(1), help="default: a free port")
    ap.add_argument("--model-control", action="store_true", help="allow clients to load/unload models (default: off)")
    ap.add_argument("--timeout", type=cli.at_least(1, float), default=300.0, help="seconds to wait for every model (default %(default)s)")
    ap.add_argument("--cpus", type=cli.cpu_list, help="pin the server (and its Python-backend stubs) to these cores, e.g. 0-11 "
                    "(default: not pinned)")
    ap.add_argument("--mps", choices=mpsd.MODES, default=spec.MPS, help="run the GPU models under a CUDA MPS daemon of the "
                    "server's own, so that their processes' kernels share the GPU instead of taking turns: on, off, or auto "
                    "(on where two or more GPU instances run and MPS can start) (default %(default)s)")

    def body(a) -> int:
        if a.action in ("stop", "restart"):
            stop(a.logs)
        if a.action in ("start", "restart"):
            start(a.repository, a.logs, a.host, a.http_port, a.grpc_port, a.metrics_port, a.model_control, a.timeout, cpus=a.cpus,
                  mps=a.mps)
        if a.action == "status":
            info = status(a.logs)
            if not info:
                print("not running")
                return 3
            states = model_states(info) or {}
            print(f"running: pid {info.pid}, HTTP {info.http}, gRPC {info.grpc}, ready={is_ready(info)}"
                  + (f", CUDA MPS daemon pid {info.mps['pid']}" if info.mps else ""))
            for n, s in sorted(states.items()):
                print(f"  {n}: {s.get('state')} {s.get('reason', '')}")
        return 0
    return cli.run(ap, body, argv)


if __name__ == "__main__":
    sys.exit(main())
