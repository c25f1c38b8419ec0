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


# The instruction sets that decide CPU engine speed: without AVX-512 VNNI (or AVX-VNNI/AMX) ONNX Runtime's INT8 GEMMs
# are no faster than FP32, and x86 has no FP16 GEMM kernels at all. Recorded so two CPU runs can be told apart.
CPU_ISA = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8")


def _cpuinfo() -> dict:
    info = {}
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = ln.partition(":")
            info.setdefault(key.strip(), value.strip())  # the first core speaks for all
    except OSError:
        pass
    return info


def hardware() -> dict:
    """CPU model, family, the instruction sets that matter and cores; GPUs and driver from nvidia-smi where present."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    family = f"family {info['cpu family']} model {info['model']}" if "cpu family" in info and "model" in info else ""
    gpus = [dict(zip(("name", "driver", "memory"), row)) for row in query_gpus("name", "driver_version", "memory.total")]
    return {"cpu": info.get("model name") or platform.processor() or "unknown", "cpu_family": family,
            "cpu_isa": [f for f in CPU_ISA if f in flags], "cores": os.cpu_count(), "machine": platform.machine(),
            "os": platform.platform(), "gpus": gpus, "loadavg": [round(x, 2) for x in os.getloadavg()]}


def describe(hw: dict | None = None) -> str:
    """One line naming the machine, for logs: 'AMD EPYC (family 23 model 1; avx2 fma), 2 cores' (+ the GPUs)."""
    hw = hw or hardware()
    gpus = ", ".join(g["name"] for g in hw.get("gpus") or [])
    detail = "; ".join(x for x in (hw.get("cpu_family"), " ".join(hw.get("cpu_isa") or [])) if x)
    cpu = f"{hw.get('cpu')} ({detail})" if detail else f"{hw.get('cpu')}"
    return f"{cpu}, {hw.get('cores')} cores" + (f", {gpus}" if gpus else "")


def has_nvidia_gpu() -> bool:
    """An NVIDIA GPU device node is here (without asking nvidia-smi, which takes a second)."""
    return Path("/dev/nvidia0").exists()


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


# ------------------------------------------------------------------------------------------ cores
def parse_cpus(text: str) -> list[int]:
    """'0-11,14' -> [0, ..., 11, 14]; ValueError on anything else."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"not a CPU list: {text!r} (e.g. 0-11,14)")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return sorted(cpus)


def format_cpus(cpus: list[int] | None) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    if not cpus:
        return ""
    runs, start = [], cpus[0]
    for a, b in zip(cpus, cpus[1:] + [None]):
        if b != a + 1:
            runs.append(f"{start}-{a}" if a != start else f"{a}")
            start = b
    return ",".join(runs)


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def split_cpus(client: str = "auto") -> tuple[list[int] | None, list[int] | None]:
    """(server cores, client cores) for a load test on one machine, standing in for a separate client machine.
    'auto': with 8 or more usable cores the client (perf_analyzer) gets the last quarter (at least 2) and the server
    the rest; with fewer, nobody is pinned (halving a small machine would measure the halving). 'none': no pinning.
    A CPU list: the client gets those cores, the server the others."""
    cpus = usable_cpus()
    if client == "none":
        return None, None
    if client == "auto":
        if len(cpus) < 8:
            return None, None
        mine = cpus[-max(2, len(cpus) // 4):]
    else:
        mine = [c for c in parse_cpus(client) if c in cpus]
        if not mine or len(mine) == len(cpus):
            raise ValueError(f"client cores {client!r} must be some, not all, of the usable cores {format_cpus(cpus)}")
    return [c for c in cpus if c not in mine], mine


def pinned(cpus: list[int] | None):
    """A preexec_fn that pins a child process (and everything it starts) to `cpus`; None when not pinning."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def process_cpus(pid: int) -> str:
    """The cores a running process may use ('0-15'), '' when unknown."""
    try:
        return format_cpus(sorted(os.sched_getaffinity(pid)))
    except OSError:
        return ""
