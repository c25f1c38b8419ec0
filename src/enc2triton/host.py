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


def query_gpus(*fields: str, units: bool = True) -> list[list[str]]:
    """One row of stripped values per GPU from `nvidia-smi --query-gpu=...`; [] without a usable nvidia-smi.
    units=False: bare numbers ("45", not "45 %")."""
    try:
        r = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader" + ("" if units else ",nounits")],
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


class GpuSampler:
    """Per-GPU utilisation and memory, sampled from nvidia-smi in a background thread while a measurement runs:
    `with GpuSampler() as s: ...` then s.summary() -> {"gpus": n, "util_mean": [...], "util_max": [...], "mem_max_mib": [...]}
    ({} without a GPU). Tells whether every GPU was busy, or the host side was the bottleneck."""

    def __init__(self, interval: float = 0.5):
        import threading

        self.interval, self.samples, self._stop = interval, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = query_gpus("index", "utilization.gpu", "memory.used", units=False)
            if not rows:
                return
            try:
                self.samples.append([(int(i), float(u), float(m)) for i, u, m in rows])
            except ValueError:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "GpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> dict:
        if not self.samples:
            return {}
        n = len(self.samples[0])
        util = [[s[g][1] for s in self.samples if len(s) == n] for g in range(n)]
        mem = [[s[g][2] for s in self.samples if len(s) == n] for g in range(n)]
        return {"gpus": n, "samples": len(self.samples), "util_mean": [round(sum(u) / len(u), 1) for u in util],
                "util_max": [max(u) for u in util], "mem_max_mib": [max(m) for m in mem]}
