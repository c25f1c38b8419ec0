"""Every entry point: --help names itself and gives each option's default; nonsense is refused with one line, and a
failed run leaves no empty output folder behind."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io as stdio
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# each stage's module (in its stage's folder); its --help names the command that runs it
MODULES = {"export": "export.export", "quantize": "quantize.quantize", "optimize": "quantize.optimize",
           "torch_build": "torch_engines.torch_build", "trt": "trt.trt", "repository": "serve.repository",
           "server": "serve.server", "quality": "measure.quality", "perf": "measure.perf", "bench": "measure.bench",
           "report": "report.report", "soak": "measure.soak"}
PROGS = {"export": "torch2onnx.py", "trt": "convert_to_trt.sh", "server": "serve.sh", "quality": "client.py", "perf": "run_tests.sh"}


def parser_of(name: str) -> argparse.ArgumentParser:
    """The module's parser, caught where main() parses --help."""
    mod = importlib.import_module(f"enc2triton.{MODULES[name]}")
    seen = {}
    real = argparse.ArgumentParser.parse_args

    def grab(self, *a, **kw):
        seen["parser"] = self
        raise SystemExit(0)
    argparse.ArgumentParser.parse_args = grab
    try:
        with contextlib.redirect_stdout(stdio.StringIO()), pytest.raises(SystemExit):
            mod.main(["--help"])
    finally:
        argparse.ArgumentParser.parse_args = real
    return seen["parser"]


@pytest.mark.parametrize("name", MODULES)
def test_help_names_itself_and_every_default(name):
    ap = parser_of(name)
    assert ap.prog == PROGS.get(name, f"python -m enc2triton.{name}")
    for action in ap._actions:
        if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            continue
        assert action.help and "default" in action.help, (name, action.option_strings)


@pytest.mark.parametrize("cmd", [
    ["./run_tests.sh", "--batch-size", "-1"], ["./run_tests.sh", "--seq-len", "-3"], ["./run_tests.sh", "--concurrency", "0,2"],
    [sys.executable, "-m", "enc2triton.soak", "--minutes", "-1"], [sys.executable, "-m", "enc2triton.bench", "--batches", "0"],
    [sys.executable, "-m", "enc2triton.repository", "--instances", "-2"],
])
def test_nonsense_is_refused_in_one_line(cmd, tmp_path):
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src"), "ENC2TRITON_LOGS": str(tmp_path / "logs")})
    assert r.returncode == 2 and "Traceback" not in r.stderr and "error: argument" in r.stderr.splitlines()[-1]
    assert not (tmp_path / "logs").exists()


def test_missing_model_folder_is_named_and_nothing_is_left(tmp_path):
    r = subprocess.run([sys.executable, "torch2onnx.py", "--model", str(tmp_path / "no-such-model"), "--artifacts",
                        str(tmp_path / "a"), "--logs", str(tmp_path / "l")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == f"error: model folder {tmp_path / 'no-such-model'} does not exist " \
        "(a local model is a folder with config.json and the weights)"
    assert not (tmp_path / "a").exists() and not (tmp_path / "l").exists()


# what the Makefile, the README and the scripts run: the stage's module behind a shim at its old path (or a package's
# __main__.py), so each still starts and names itself the same way
COMMANDS = ("bench", "optimize", "quant_peers", "quant_peers_torch", "quantize", "report", "repository", "serving_peers", "torch_build", "soak",
            "tune", "perf", "server", "trt")


@pytest.mark.parametrize("name", COMMANDS)
def test_python_m_commands_still_start(name):
    r = subprocess.run([sys.executable, "-m", f"enc2triton.{name}", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0 and r.stdout.startswith("usage: "), r.stderr[-2000:]
