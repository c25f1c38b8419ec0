"""What machine this is: CPU, cores, GPUs (nvidia-smi), and whether a process is alive. Imports nothing above it."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def command_output(cmd: list[str], **kw) -> str:
    """stdout + stderr of a short command, '' when it cannot run."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def query_gpus(*fields: str) -> list[list[str]]:
    """One row of stripped values per GPU from `nvidia-smi --query-gpu=...`; [] without a usable nvidia-smi."""
    try:
        r = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if r.returncode != 0:
        return []
    rows = [[v.strip() for v in ln.split(",")] for ln in r.stdout.splitlines() if ln.strip()]
    return [row for row in rows if len(row) == len(fields)]


def visible_gpus() -> list[int]:
    try:
        return [int(row[0]) for row in query_gpus("index")]
    except ValueError:
        return []


def hardware() -> dict:
    """CPU model and cores; GPUs and driver from nvidia-smi where present."""
    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    except OSError:
        pass
    gpus = [dict(zip(("name", "driver", "memory"), row)) for row in query_gpus("name", "driver_version", "memory.total")]
    return {"cpu": cpu or platform.processor() or "unknown", "cores": os.cpu_count(), "machine": platform.machine(),
            "os": platform.platform(), "gpus": gpus, "loadavg": [round(x, 2) for x in os.getloadavg()]}


def describe(hw: dict | None = None) -> str:
    """One line naming the machine, for logs: 'AMD EPYC ..., 2 cores' (+ the GPUs)."""
    hw = hw or hardware()
    gpus = ", ".join(g["name"] for g in hw.get("gpus") or [])
    return f"{hw.get('cpu')}, {hw.get('cores')} cores" + (f", {gpus}" if gpus else "")


def pid_alive(pid: int) -> bool:
    """A process with this PID exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
