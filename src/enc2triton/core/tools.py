"""Where tritonserver and perf_analyzer live, and the environment each needs.

A system install (NVIDIA's containers: /opt/tritonserver, perf_analyzer on PATH) is preferred; else
the PyPI ones: tritonserver 2.51 from nvidia-pytriton (Python backend only) and perf_analyzer from
the tritonclient wheel.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from enc2triton.core.io import StageError

SYSTEM_TRITON = Path("/opt/tritonserver")
VENV_TRITON = Path(sys.prefix) / "triton"  # prepared by `make setup`: backends dir and lib links


def _site() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _join(*parts: str) -> str:
    return os.pathsep.join(p for p in parts if p)


@dataclass
class Tool:
    path: Path
    env: dict = field(default_factory=dict)
    backend_dir: Path | None = None
    source: str = ""

    def environ(self) -> dict:
        env = dict(os.environ)
        for k, v in self.env.items():
            env[k] = _join(v, env.get(k, "")) if k in ("LD_LIBRARY_PATH", "PATH") else v
        return env


def backends(tool: Tool) -> set[str]:
    d = tool.backend_dir
    return {p.name for p in d.iterdir() if p.is_dir()} if d and d.is_dir() else set()


def _pytriton_root() -> Path:
    """Where nvidia-pytriton is installed (a venv, or a --target folder on PYTHONPATH)."""
    import importlib.util

    spec_ = importlib.util.find_spec("pytriton")  # located, not imported: its own imports need more packages
    if spec_ is None or not spec_.origin:
        raise StageError("no tritonserver found: run `make setup` (installs nvidia-pytriton) or use NVIDIA's Triton container")
    return Path(spec_.origin).resolve().parent


def _cuda_lib_dirs() -> list[str]:
    """CUDA libraries shipped as pip packages (nvidia-*), for ONNX Runtime's CUDA EP inside the stub."""
    try:
        import nvidia
    except ImportError:
        return []
    return sorted(str(p) for base in nvidia.__path__ for p in Path(base).glob("*/lib") if p.is_dir())


def stub_env() -> dict:
    """Environment that makes the Python backend stub run in this interpreter's environment.

    The stub embeds Python in isolated mode (PYTHONPATH ignored) and finds its prefix by searching
    PATH for `python3`: with this venv's bin first it becomes this venv (numpy<2, transformers,
    onnxruntime). Without that it takes the base interpreter's site-packages, whose numpy 2 breaks
    the 2.51 stub's BYTES tensors. ENC2TRITON_SYS_PATH is a second line of defence the models read.
    """
    stub_bin = os.environ.get("ENC2TRITON_STUB_PYTHON_BIN") or str(Path(sys.prefix) / "bin")
    return {"PATH": stub_bin, "ENC2TRITON_SYS_PATH": _join(str(_site()), os.environ.get("PYTHONPATH", ""))}


def stub_numpy_problem() -> str | None:
    """Triton 2.51's Python backend stub corrupts BYTES tensors under numpy 2 (seen: the tokenizer's
    input unreadable). Say so before a confusing failure."""
    if os.environ.get("ENC2TRITON_STUB_PYTHON_BIN"):
        return None
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        return (f"numpy {numpy.__version__} in {sys.prefix}: the PyPI tritonserver 2.51 Python backend stub needs numpy<2. "
                "Use `make setup` (pins numpy 1.26), or point ENC2TRITON_STUB_PYTHON_BIN at the bin/ of an environment with numpy<2")
    return None


def prepare_pytriton_backends(dest: Path = VENV_TRITON / "backends") -> Path:
    """Python backend plus the stub built for this interpreter's version, in a folder we own."""
    ts = _pytriton_root() / "tritonserver"
    stub = ts / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
    if not stub.exists():
        raise StageError(f"nvidia-pytriton has no Python backend stub for Python {sys.version_info[:2]}: {stub}")
    py = dest / "python"
    if not (py / "triton_python_backend_stub").exists():
        shutil.rmtree(py, ignore_errors=True)
        shutil.copytree(ts / "backends" / "python", py)
        shutil.copy2(stub, py / "triton_python_backend_stub")
    for exe in (py / "triton_python_backend_stub", ts / "bin" / "tritonserver"):
        exe.chmod(exe.stat().st_mode | 0o111)
    return dest


def find_tritonserver() -> Tool:
    env = stub_env()
    system = shutil.which("tritonserver") or (str(SYSTEM_TRITON / "bin" / "tritonserver") if (SYSTEM_TRITON / "bin" / "tritonserver").exists() else None)
    if system and not os.environ.get("ENC2TRITON_PYPI_TRITON"):
        return Tool(Path(system), env, SYSTEM_TRITON / "backends", "system")
    root = _pytriton_root()
    ts = root / "tritonserver" / "bin" / "tritonserver"
    if not ts.exists():
        raise StageError(f"nvidia-pytriton at {root} has no tritonserver binary")
    problem = stub_numpy_problem()
    if problem:
        print(f"WARNING: {problem}", file=sys.stderr)
    env["LD_LIBRARY_PATH"] = _join(str(root.parent / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or "", *_cuda_lib_dirs())
    return Tool(ts, env, prepare_pytriton_backends(), "nvidia-pytriton")


def find_perf_analyzer() -> Tool:
    system = shutil.which("perf_analyzer")
    venv_pa = Path(sys.prefix) / "bin" / "perf_analyzer"
    if system and Path(system).resolve() != venv_pa.resolve():
        return Tool(Path(system), {}, None, "system")
    if not venv_pa.exists():
        raise StageError("no perf_analyzer found: run `make setup` (installs tritonclient) or use NVIDIA's SDK container")
    libs = [str(_site() / "nvidia" / "cuda_runtime" / "lib"), str(VENV_TRITON / "lib")]
    return Tool(venv_pa, {"LD_LIBRARY_PATH": _join(*libs)}, None, "tritonclient wheel")


def link_libb64() -> str:
    """perf_analyzer links libb64.so.0d. Debian's libb64-0d provides it; without root, link the copy
    that nvidia-pytriton vendors (same library, renamed by auditwheel)."""
    found = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    if "libb64.so.0d" in found:
        return "system libb64-0d"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        r = subprocess.run(["apt-get", "install", "-y", "-q", "libb64-0d"], capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            r = subprocess.run(["apt-get", "install", "-y", "-q", "libb64-0d"], capture_output=True, text=True)
        if r.returncode == 0:
            return "apt-get install libb64-0d"
    else:
        print("note: not root; to use Debian's copy run: sudo apt-get install -y libb64-0d", file=sys.stderr)
    vendored = sorted((_pytriton_root().parent / "nvidia_pytriton.libs").glob("libb64-*.so.0d"))
    if not vendored:
        raise StageError("libb64.so.0d missing: sudo apt-get install -y libb64-0d")
    lib = VENV_TRITON / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    link = lib / "libb64.so.0d"
    if not link.exists():
        link.symlink_to(vendored[0])
    return f"linked {vendored[0].name}"
