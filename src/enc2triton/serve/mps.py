"""CUDA MPS (the Multi-Process Service) under the Triton server's GPU models.

Every Python-backend instance is a process of its own with a CUDA context of its own, and a GPU runs one context at a time:
the fused models' instances and the ensembles' engines take turns on it (time-slicing, a context switch each turn), however
little each one's kernels fill it. Under MPS the processes' work goes through one server context and their kernels can run
side by side. The daemon here is the Triton server's own: started just before it (in the foreground of a process of its
own, so its PID is known) with pipe and log folders of its own, no root and no system-wide daemon touched; told to quit
once the server has stopped.

Modes: off; on (an error where MPS cannot start); auto (on where the repository runs GPU work in two or more processes and
MPS starts, otherwise a note and off).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from enc2triton.core import host
from enc2triton.core.io import StageError
from enc2triton.serve.repository import mc, read_config

CONTROL = "nvidia-cuda-mps-control"
MODES = ("off", "on", "auto")


def gpu_processes(repository: Path) -> int:
    """How many model instances of the repository run on a GPU (each a Python-backend process of its own)."""
    n = 0
    for path in Path(repository).glob("*/config.pbtxt"):
        try:
            cfg = read_config(path)
        except Exception:  # a broken config fails the model's load, with Triton's own message; it runs nothing
            continue
        n += sum(max(g.count, 1) * max(len(g.gpus), 1) for g in cfg.instance_group if g.kind == mc.ModelInstanceGroup.KIND_GPU)
    return n


def state(daemon: dict | None) -> str:
    """What a log records of a server's MPS: 'on' when its GPU models run under the daemon (an MPS server attached to
    it), else 'off'."""
    return "on" if daemon and daemon.get("servers") else "off"


def recorded(summary: dict | None) -> str:
    """The MPS state a perf or tune summary recorded of its server ('off' where it predates it)."""
    return ((summary or {}).get("server") or {}).get("mps") or "off"


def env(state: dict) -> dict:
    """What a client process of this daemon (the server, its stubs) needs in its environment."""
    return {"CUDA_MPS_PIPE_DIRECTORY": state["pipe_dir"], "CUDA_MPS_LOG_DIRECTORY": state["log_dir"]}


def command(state: dict, what: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """One control command (`get_server_list`, `quit`, ...) sent to this daemon."""
    return subprocess.run([state["control"]], input=what + "\n", env={**os.environ, **env(state)}, capture_output=True,
                          text=True, timeout=timeout)


def _answers(state: dict) -> bool:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        return command(state, "get_server_list", timeout=5).returncode == 0
    return False


def start(mode: str, repository: Path, wait: float = 15.0) -> dict | None:
    """The daemon for a server about to start on `repository`, or None (off): {mode, control, pid, pipe_dir, log_dir,
    gpu_processes}, which server.json keeps so that a later `stop` (another process) can end it."""
    if mode not in MODES:
        raise StageError(f"MPS mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return None
    gpus = gpu_processes(repository)
    if mode == "auto" and gpus < 2:
        return None  # one GPU process or none: nothing to share
    control = shutil.which(CONTROL)
    problem = None if control else f"{CONTROL} is not on PATH (it comes with the NVIDIA driver's utilities)"
    if not problem and not host.has_nvidia_gpu():
        problem = "no NVIDIA GPU on this machine (/dev/nvidia0 is missing)"
    state = None
    if not problem:
        # a short path: the pipe folder holds Unix sockets, whose whole path must fit in ~107 bytes
        root = Path(tempfile.mkdtemp(prefix="e2t-mps-"))
        state = {"mode": mode, "control": control, "pid": None, "pipe_dir": str(root / "pipe"), "log_dir": str(root / "log"),
                 "gpu_processes": gpus}
        for d in ("pipe_dir", "log_dir"):
            Path(state[d]).mkdir()
        problem = _launch(state, wait) or _probe(state)
        if problem:
            stop(state)
    if problem:
        if mode == "on":
            raise StageError(f"--mps on: CUDA MPS did not start: {problem}")
        print(f"note: --mps auto: serving without CUDA MPS ({problem})", file=sys.stderr)
        return None
    return state


def _launch(state: dict, wait: float) -> str | None:
    """Start the daemon (-f: in the foreground of its own process group); None once it answers, else what went wrong."""
    out = Path(state["log_dir"]) / "daemon.out"  # its stdout; the daemon writes control.log and server.log beside it
    try:
        with open(out, "wb") as log:
            proc = subprocess.Popen([state["control"], "-f"], stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **env(state)}, start_new_session=True)
    except OSError as e:
        return f"`{CONTROL} -f` could not run: {e}"
    state["pid"] = proc.pid
    deadline = time.time() + wait
    while time.time() < deadline:
        if proc.poll() is not None:
            return f"`{CONTROL} -f` exited with code {proc.returncode}: {out.read_text(errors='replace').strip()[-300:]}"
        if _answers(state):
            return None
        time.sleep(0.2)
    return f"`{CONTROL}` did not answer within {wait:.0f} s"


# A CUDA client of the daemon, as a stub will be: a context created through the driver API (no torch needed), so a daemon
# that starts but cannot serve clients (a container without its IPC, a GPU that refuses MPS) is found before the models
# load, where `auto` can still fall back to serving without it.
_PROBE = """import ctypes, sys
cuda = ctypes.CDLL("libcuda.so.1")
dev, ctx = ctypes.c_int(), ctypes.c_void_p()
for step, rc in (("cuInit", lambda: cuda.cuInit(0)), ("cuDeviceGet", lambda: cuda.cuDeviceGet(ctypes.byref(dev), 0)),
                 ("cuCtxCreate", lambda: cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev))):
    code = rc()
    if code:
        name = ctypes.c_char_p()
        cuda.cuGetErrorName(code, ctypes.byref(name))
        sys.exit(f"{step}: {(name.value or b'?').decode()} ({code})")
cuda.cuCtxDestroy_v2(ctx)
"""


def _probe(state: dict, timeout: float = 60.0) -> str | None:
    """None when a CUDA context can be made through the daemon and its MPS server runs, else what went wrong."""
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], env={**os.environ, **env(state)}, capture_output=True, text=True,
                           timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"a CUDA client could not connect: {e}"
    if r.returncode:
        lines = (r.stderr or r.stdout).strip().splitlines()
        return f"a CUDA client could not connect: {lines[-1] if lines else f'exit code {r.returncode}'}"[:300]
    return None if servers(state) else "a CUDA client ran, but no MPS server started for it"


def servers(state: dict) -> list[int]:
    """PIDs of the MPS servers the daemon runs: one appears once the first CUDA client (a stub) has connected, so an
    empty list after the models loaded on a GPU means they run without MPS."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        return [int(x) for x in command(state, "get_server_list").stdout.split() if x.isdigit()]
    return []


def stop(state: dict | None, grace: float = 10.0, keep_logs: Path | None = None) -> None:
    """Quit the daemon (once its clients, the server and its stubs, are gone), then end it outright if it lingers; its
    folders are removed, its logs first copied into `keep_logs` (the server's logs folder: mps_*.log)."""
    if not state:
        return
    pid = state.get("pid")
    if pid and host.pid_alive(pid):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            command(state, "quit", timeout=grace)
        deadline = time.time() + grace
        while host.pid_alive(pid) and time.time() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # our child: reap it, or it stays a zombie that looks alive
            time.sleep(0.1)
        if host.pid_alive(pid):  # it lingers: end it, and its MPS server with it (the same process group)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    if keep_logs:
        for f in Path(state["log_dir"]).glob("*"):
            with contextlib.suppress(OSError):
                shutil.copyfile(f, Path(keep_logs) / f"mps_{f.stem}.log")
    shutil.rmtree(Path(state["pipe_dir"]).parent, ignore_errors=True)
