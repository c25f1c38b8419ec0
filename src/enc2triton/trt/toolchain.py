"""The TensorRT toolchain on this machine: its version (trtexec's, or the Python package's), trtexec's path, the
GPU's name and compute capability."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import NamedTuple

from enc2triton.core import host
from enc2triton.core.io import StageError


# ----------------------------------------------------------------------------------------------- versions
SUPPORTED_MAJORS = (10, 11)
TRTEXEC_CANDIDATES = ("/usr/src/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec")  # NVIDIA containers
_CODE = re.compile(r"\[TensorRT v(\d{4,6})\]")  # `&&&& RUNNING TensorRT.trtexec [TensorRT v100300] ...`
_LINE = re.compile(r"TensorRT version:\s*(\d+)\.(\d+)\.(\d+)")  # `[I] TensorRT version: 10.3.0`
_BARE = re.compile(r"^\s*v?(\d+)\.(\d+)\.(\d+)")  # tensorrt.__version__ = "10.3.0.26", or "10.8.0"


class TrtVersion(NamedTuple):
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @classmethod
    def parse(cls, text: str) -> TrtVersion:
        """From trtexec output (banner code or `TensorRT version:` line) or `tensorrt.__version__`."""
        if m := _CODE.search(text):
            n = int(m[1])
            # NV_TENSORRT_VERSION: major*10000+minor*100+patch since 10.0, major*1000+minor*100+patch before.
            return cls(n // 10000, n // 100 % 100, n % 100) if n >= 100000 else cls(n // 1000, n // 100 % 10, n % 100)
        if m := _LINE.search(text) or _BARE.search(text):
            return cls(*map(int, m.groups()))
        head = text.strip().splitlines()[0][:120] if text.strip() else "<empty>"
        raise StageError(f"could not find a TensorRT version in {head!r}")

    def check(self) -> TrtVersion:
        if self.major < 10:
            raise StageError(f"TensorRT {self} is not supported: TensorRT 8 and 9 are not supported, install 10.x or 11.x")
        if self.major not in SUPPORTED_MAJORS:
            raise StageError(f"TensorRT {self} is not supported yet (10.x and 11.x are): its flags are unknown here")
        return self


# ---------------------------------------------------------------------------------------------- toolchain
@dataclass(frozen=True)
class Toolchain:
    kind: str | None  # "trtexec" | "python" | None
    version: TrtVersion | None = None
    path: str | None = None
    reason: str | None = None  # why kind is None


def find_trtexec() -> str | None:
    """$TRTEXEC (if set, it alone counts), then PATH, then the NVIDIA container locations."""
    if env := os.environ.get("TRTEXEC"):
        return env if os.path.isfile(env) and os.access(env, os.X_OK) else None
    if hit := shutil.which("trtexec"):
        return hit
    return next((p for p in TRTEXEC_CANDIDATES if os.path.isfile(p) and os.access(p, os.X_OK)), None)


def trtexec_version(path: str) -> TrtVersion:
    # `--version` is no real option in 10.x (prints the banner, then fails), so the exit status is ignored;
    # `--help` prints the same banner and exits 0.
    errors = []
    for arg in ("--version", "--help"):
        try:
            r = subprocess.run([path, arg], capture_output=True, text=True, errors="replace", timeout=120)
            return TrtVersion.parse(r.stdout + r.stderr)
        except (OSError, subprocess.TimeoutExpired, StageError) as e:
            errors.append(f"{arg}: {e}")
    raise StageError(f"{path} did not report a TensorRT version ({'; '.join(errors)})")


def detect() -> Toolchain:
    """trtexec if present and supported, else the `tensorrt` Python module, else why neither."""
    why = []
    if path := find_trtexec():
        try:
            return Toolchain("trtexec", trtexec_version(path).check(), path)
        except StageError as e:
            why.append(str(e))
    elif env := os.environ.get("TRTEXEC"):
        why.append(f"$TRTEXEC={env} is not an executable file")
    else:
        why.append(f"no trtexec on PATH or in {', '.join(TRTEXEC_CANDIDATES)}")
    try:
        import tensorrt  # noqa: PLC0415

        return Toolchain("python", TrtVersion.parse(tensorrt.__version__).check(), tensorrt.__file__)
    except ImportError:
        why.append("no `tensorrt` Python module")
    except Exception as e:  # a broken install (missing libnvinfer) or an unsupported version
        why.append(f"`import tensorrt` unusable: {e}")
    return Toolchain(None, reason="TensorRT not found (" + "; ".join(why) + ")")


def gpu_info() -> tuple[str, str] | None:
    """(name, compute capability) of GPU 0 (the one trtexec builds on) from nvidia-smi, or None."""
    rows = host.query_gpus("name", "compute_cap")
    if not rows:
        return None
    name, cc = rows[0]
    try:
        _cc(cc)
    except ValueError:
        return None
    return name, cc


def _cc(value: str | float) -> tuple[int, int]:
    major, minor = str(value).strip().split(".")
    return int(major), int(minor)
