"""TensorRT stage without TensorRT: exact commands, version parsing, skip path, compat checks, CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enc2triton.core import io, spec
from enc2triton.trt import trt
from enc2triton.core.io import StageError
from enc2triton.trt.trt import TrtVersion

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ["input_ids", "attention_mask"]
SHAPES = spec.ShapeLimits()  # 1/32/64 x 1/128/512
V10, V11 = TrtVersion(10, 8, 0), TrtVersion(11, 0, 0)
NO_TRT = trt.Toolchain(None, reason="TensorRT not found (test)")
REMOVED_IN_11 = ("--fp16", "--int8", "--best", "--calib", "--bf16", "--fp8", "--int4")


def argv(precision: str, version: TrtVersion, **kw) -> list[str]:
    return trt.build_command(precision, Path("/a/m.onnx"), Path("/a/engines/trt_x.plan"), INPUTS, SHAPES, version, **kw)


def tail(version: TrtVersion) -> list[str]:
    return ["--memPoolSize=workspace:4096M", "--skipInference", "--profilingVerbosity=detailed",
            "--exportLayerInfo=/a/engines/trt_x.layers.json", f"--timingCacheFile=/a/engines/timing_trt{version}.cache"]


HEAD = ["trtexec", "--onnx=/a/m.onnx", "--saveEngine=/a/engines/trt_x.plan",
        "--minShapes=input_ids:1x1,attention_mask:1x1", "--optShapes=input_ids:32x128,attention_mask:32x128",
        "--maxShapes=input_ids:64x512,attention_mask:64x512"]


# ------------------------------------------------------------------------------------------ exact commands
@pytest.mark.parametrize("version,precision,flags", [
    (V10, "fp32", []), (V10, "fp16", ["--fp16"]), (V10, "int8", ["--int8"]), (V10, "best", ["--best"]),
    (V10, "fp8", ["--stronglyTyped"]),
    (V11, "fp32", []), (V11, "fp16", []), (V11, "int8", []), (V11, "best", []), (V11, "fp8", []),
])
def test_exact_argv(version, precision, flags):
    assert argv(precision, version) == HEAD + flags + tail(version)


def test_argv_options():
    got = trt.build_command("fp16", "m.onnx", Path("e/trt_fp16.plan"), ["input_ids"], spec.ShapeLimits(2, 4, 8, 16, 32, 64),
                            V10, ("--verbose",), trtexec="/usr/src/tensorrt/bin/trtexec", workspace_mb=1024,
                            layers_path=Path("l.json"), timing_cache=Path("t.cache"))
    assert got == ["/usr/src/tensorrt/bin/trtexec", "--onnx=m.onnx", "--saveEngine=e/trt_fp16.plan",
                   "--minShapes=input_ids:2x16", "--optShapes=input_ids:4x32", "--maxShapes=input_ids:8x64", "--fp16",
                   "--memPoolSize=workspace:1024M", "--skipInference", "--profilingVerbosity=detailed",
                   "--exportLayerInfo=l.json", "--timingCacheFile=t.cache", "--verbose"]


@pytest.mark.parametrize("version", [TrtVersion(11, 0, 0), TrtVersion(11, 4, 1)])
@pytest.mark.parametrize("precision", trt.ALL)
def test_trt11_never_uses_removed_flags(version, precision):
    assert not [a for a in argv(precision, version) if a.split("=")[0] in REMOVED_IN_11]


@pytest.mark.parametrize("precision", trt.ALL)
def test_trt10_strongly_typed_never_with_weak_precision_flags(precision):
    a = argv(precision, V10)
    assert not ("--stronglyTyped" in a and {"--fp16", "--int8", "--best"} & set(a))


def test_source_variant_table():
    assert {p: trt.source_variant(p, 10) for p in trt.ALL} == \
        {"fp32": "fp32", "fp16": "fp32", "int8": "int8", "best": "int8", "fp8": "fp8"}
    assert {p: trt.source_variant(p, 11) for p in trt.ALL} == {p: p for p in trt.ALL}
    # --int8/--best on TensorRT 10 only ever see a Q/DQ graph (else TensorRT uses dummy ranges).
    for p in trt.ALL:
        if {"--int8", "--best"} & set(trt.FLAGS[10][p]):
            assert trt.source_variant(p, 10) in trt.QDQ_VARIANTS


@pytest.mark.parametrize("call,match", [
    (lambda: trt.source_variant("int4", 10), "unknown precision"),
    (lambda: trt.source_variant("fp16", 9), "not supported"),
    (lambda: argv("bf16", V11), "unknown precision"),
    (lambda: trt.build_command("fp16", "m", "e.plan", [], SHAPES, V10), "no input names"),
])
def test_build_command_rejects(call, match):
    with pytest.raises(StageError, match=match):
        call()


# ---------------------------------------------------------------------------------------------- versions
BANNER_10_3 = """\
&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # /usr/src/tensorrt/bin/trtexec --onnx=model.onnx --fp16
[08/08/2024-10:00:00] [I] === Model Options ===
[08/08/2024-10:00:00] [I] Format: ONNX
[08/08/2024-10:00:00] [I]
[08/08/2024-10:00:01] [I] TensorRT version: 10.3.0
"""
BANNER_10_5_HELP = "&&&& RUNNING TensorRT.trtexec [TensorRT v100500] [b18] # trtexec --help\n=== Model Options ===\n"
VERSION_10_3 = """\
&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --version
[08/08/2026-09:12:01] [E] Model missing or format not recognized
&&&& FAILED TensorRT.trtexec [TensorRT v100300] # trtexec --version
"""


@pytest.mark.parametrize("text,want", [
    (BANNER_10_3, (10, 3, 0)),
    (BANNER_10_5_HELP, (10, 5, 0)),
    (VERSION_10_3, (10, 3, 0)),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v101100] # trtexec", (10, 11, 0)),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v110000] # trtexec --onnx=a.onnx", (11, 0, 0)),
    ("&&&& PASSED TensorRT.trtexec [TensorRT v101302] # trtexec", (10, 13, 2)),
    ("[03/08/2025-02:41:10] [I] TensorRT version: 10.8.0\n", (10, 8, 0)),
    ("TensorRT version: 11.2.1", (11, 2, 1)),
    ("10.3.0.26", (10, 3, 0)),  # tensorrt.__version__
    ("11.0.0.114", (11, 0, 0)),
    ("10.8.0", (10, 8, 0)),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec", (8, 6, 1)),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v8501] # /opt/TensorRT-8.5.1.7/bin/trtexec", (8, 5, 1)),
])
def test_parse_version(text, want):
    assert TrtVersion.parse(text) == want


def test_version_str_and_supported():
    assert str(TrtVersion.parse(BANNER_10_3).check()) == "10.3.0"
    assert TrtVersion.parse("11.4.1").check() == (11, 4, 1)


@pytest.mark.parametrize("text,match", [
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec", "TensorRT 8 and 9 are not supported"),
    ("9.3.0.1", "TensorRT 8 and 9 are not supported"),
    ("12.0.0", "not supported yet"),
])
def test_unsupported_versions(text, match):
    with pytest.raises(StageError, match=match):
        TrtVersion.parse(text).check()


@pytest.mark.parametrize("text", ["", "trtexec: command not found", "Usage: something 10.x"])
def test_unparseable_versions(text):
    with pytest.raises(StageError, match="could not find a TensorRT version"):
        TrtVersion.parse(text)


# ------------------------------------------------------------------------------------- toolchain detection
def stub_trtexec(tmp_path: Path, rc: int = 1, version: str = "v100800") -> Path:
    """A trtexec stand-in that prints a real-looking banner and builds nothing (never an engine)."""
    path = tmp_path / "bin" / "trtexec"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""#!/usr/bin/env bash
echo "&&&& RUNNING TensorRT.trtexec [TensorRT {version}] # trtexec $*"
if [[ "$1" == --version ]]; then echo "[E] Model missing or format not recognized"; exit 1; fi
echo "[I] TensorRT version: 10.8.0"
echo "[E] stub: no GPU here" >&2
exit {rc}
""")
    path.chmod(0o755)
    return path


@pytest.fixture
def no_python_trt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError


def test_find_trtexec_order(tmp_path, monkeypatch):
    stub = stub_trtexec(tmp_path)
    monkeypatch.delenv("TRTEXEC", raising=False)
    monkeypatch.setenv("PATH", str(stub.parent))
    assert trt.find_trtexec() == str(stub)
    monkeypatch.setenv("TRTEXEC", str(tmp_path / "nope"))  # explicit beats PATH, even when wrong
    assert trt.find_trtexec() is None


def test_detect_trtexec(tmp_path, monkeypatch):
    monkeypatch.setenv("TRTEXEC", str(stub_trtexec(tmp_path)))
    tc = trt.detect()
    assert (tc.kind, tc.version, tc.reason) == ("trtexec", (10, 8, 0), None)


def test_detect_rejects_trt8(tmp_path, monkeypatch, no_python_trt):
    monkeypatch.setenv("TRTEXEC", str(stub_trtexec(tmp_path, version="v8601")))
    tc = trt.detect()
    assert tc.kind is None and "TensorRT 8 and 9 are not supported" in tc.reason


def test_detect_nothing(tmp_path, monkeypatch, no_python_trt):
    monkeypatch.setenv("TRTEXEC", str(tmp_path / "missing"))
    tc = trt.detect()
    assert tc.kind is None and "TensorRT not found" in tc.reason and "$TRTEXEC" in tc.reason


# -------------------------------------------------------------------------------------------- skip path
def make_manifest(artifacts: Path, variants: dict[str, Path] | None = None) -> dict:
    artifacts.mkdir(parents=True, exist_ok=True)
    m = {"inputs": INPUTS, "shapes": SHAPES.as_dict(),
         "variants": {k: {"onnx": io.artifact_entry(p, artifacts)} for k, p in (variants or {}).items()}}
    io.write_json(io.manifest_path(artifacts), {"version": io.MANIFEST_VERSION, **m})
    return io.load_manifest(artifacts)


def tiny_onnx(path: Path, qdq: bool) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    nodes = ([helper.make_node("QuantizeLinear", ["x", "s"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s"], ["y"])]
             if qdq else [helper.make_node("Identity", ["x"], ["y"])])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [s])), str(path))
    return path


def test_skip_path(tmp_path, capsys):
    arts, logs = tmp_path / "artifacts", tmp_path / "logs"
    manifest = make_manifest(arts, {"fp32": tiny_onnx(arts / "onnx/model.onnx", qdq=False)})
    section = trt.build_engines(manifest, arts, logs, trt.ALL, toolchain=NO_TRT)
    out = capsys.readouterr().out.splitlines()
    assert out == [", ".join(f"trt_{p}" for p in trt.ALL) + ": skipped: TensorRT not found (test)"]  # said once
    on_disk = io.load_manifest(arts)["trt"]
    assert on_disk == section == {p: {"status": "skipped", "engine": None, "reason": "TensorRT not found (test)"}
                                  for p in trt.ALL}
    assert not (arts / "engines").exists() and not logs.exists()


def test_skip_keeps_other_precisions(tmp_path, capsys):
    arts = tmp_path / "a"
    make_manifest(arts)
    io.update_manifest("trt", {"fp32": {"status": "skipped", "engine": None, "reason": "earlier"}}, arts)
    trt.build_engines(io.load_manifest(arts), arts, tmp_path / "l", ["fp16"], toolchain=NO_TRT)
    assert capsys.readouterr().out == "trt_fp16: skipped: TensorRT not found (test)\n"
    assert set(io.load_manifest(arts)["trt"]) == {"fp32", "fp16"}


def test_main_skip_exit_0(tmp_path, monkeypatch, capsys):
    arts = tmp_path / "a"
    make_manifest(arts)
    monkeypatch.setattr(trt, "detect", lambda: NO_TRT)
    assert trt.main(["--artifacts", str(arts), "--logs", str(tmp_path / "l"), "--precision", "int8",
                     "--precision", "fp16", "--precision", "int8"]) == 0
    assert capsys.readouterr().out.splitlines() == ["trt_int8, trt_fp16: skipped: TensorRT not found (test)"]


def test_main_without_manifest(tmp_path, capsys):
    assert trt.main(["--artifacts", str(tmp_path / "empty"), "--logs", str(tmp_path / "l")]) == 1
    assert "torch2onnx" in capsys.readouterr().err


# ------------------------------------------------------------------ build path with a stub (no engine made)
def stub_toolchain(tmp_path: Path, rc: int) -> trt.Toolchain:
    return trt.Toolchain("trtexec", V10, str(stub_trtexec(tmp_path, rc=rc)))


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(trt, "gpu_info", lambda: None)


@pytest.mark.parametrize("rc,reason", [(1, "trtexec exited with 1"), (0, "wrote no engine")])
def test_failed_build_leaves_no_engine(tmp_path, capsys, no_gpu, rc, reason):
    arts, logs = tmp_path / "a", tmp_path / "logs"
    manifest = make_manifest(arts, {"fp32": tiny_onnx(arts / "model.onnx", qdq=False)})
    section = trt.build_engines(manifest, arts, logs, ["fp16"], toolchain=stub_toolchain(tmp_path, rc))
    assert section["fp16"]["status"] == "failed" and reason in section["fp16"]["reason"]
    assert capsys.readouterr().out.startswith("trt_fp16: FAILED: ")
    assert list((arts / "engines").iterdir()) == []  # no engine, no .partial, no metadata
    log = (logs / "trt_build_fp16.log").read_text()
    assert "--fp16" in log.splitlines()[0] and "[TensorRT v100800]" in log and "stub: no GPU here" in log


@pytest.mark.parametrize("precision", ["int8", "best"])
def test_trt10_int8_refuses_graph_without_qdq(tmp_path, capsys, no_gpu, precision):
    arts = tmp_path / "a"
    manifest = make_manifest(arts, {"int8": tiny_onnx(arts / "int8.onnx", qdq=False)})
    section = trt.build_engines(manifest, arts, tmp_path / "l", [precision], toolchain=stub_toolchain(tmp_path, 0))
    assert section[precision]["status"] == "failed" and "no QuantizeLinear" in section[precision]["reason"]
    assert not (tmp_path / "l").exists()  # refused before trtexec ran


def test_has_qdq(tmp_path):
    assert trt.has_qdq(tiny_onnx(tmp_path / "q.onnx", qdq=True))
    assert not trt.has_qdq(tiny_onnx(tmp_path / "p.onnx", qdq=False))


def test_missing_variant_and_fp8_gating(tmp_path, capsys, monkeypatch):
    arts = tmp_path / "a"
    manifest = make_manifest(arts, {"fp8": tiny_onnx(arts / "fp8.onnx", qdq=True)})
    monkeypatch.setattr(trt, "gpu_info", lambda: ("NVIDIA A100-SXM4-80GB", "8.0"))
    section = trt.build_engines(manifest, arts, tmp_path / "l", ["fp16", "fp8"], toolchain=stub_toolchain(tmp_path, 1))
    assert section["fp16"]["status"] == section["fp8"]["status"] == "skipped"
    assert "no 'fp32' ONNX variant" in section["fp16"]["reason"]
    assert section["fp8"]["reason"] == "fp8 needs compute capability >= 8.9; NVIDIA A100-SXM4-80GB has 8.0"


def test_changed_onnx_is_refused(tmp_path, capsys, no_gpu):
    arts = tmp_path / "a"
    onnx_path = tiny_onnx(arts / "m.onnx", qdq=False)
    manifest = make_manifest(arts, {"fp32": onnx_path})
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")
    section = trt.build_engines(manifest, arts, tmp_path / "l", ["fp32"], toolchain=stub_toolchain(tmp_path, 1))
    assert "changed since the manifest" in section["fp32"]["reason"]


# ------------------------------------------------------------------------------------------ engine compat
META = {"precision": "fp16", "engine": "engines/trt_fp16.plan", "tensorrt": "10.8.0",
        "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}}


@pytest.mark.parametrize("runtime,gpu", [
    (TrtVersion(10, 8, 0), ("NVIDIA H100 80GB HBM3", "9.0")),
    (TrtVersion(10, 8, 0), ("NVIDIA H100 PCIe", "9.0")),  # same version, same architecture
    (None, None),  # unknown: nothing to check
    ((10, 8, 0), None),
])
def test_compat_ok(runtime, gpu):
    assert trt.check_engine_compat(META, runtime, gpu) is None


def test_compat_patch_mismatch_refused():
    with pytest.raises(StageError, match="10.8.1"):
        trt.check_engine_compat(META, TrtVersion(10, 8, 1), ("NVIDIA H100 80GB HBM3", "9.0"))


def test_compat_version_mismatch():
    with pytest.raises(StageError) as e:
        trt.check_engine_compat(META, TrtVersion(10, 3, 0), ("NVIDIA H100 80GB HBM3", "9.0"))
    assert str(e.value) == (
        "TensorRT engine engines/trt_fp16.plan cannot run here: it was built with TensorRT 10.8.0 but this runtime "
        "is TensorRT 10.3.0 (an engine only runs on the exact version that built it). Rebuild it on this machine: `./convert_to_trt.sh --precision fp16`")


def test_compat_gpu_and_version_mismatch():
    with pytest.raises(StageError) as e:
        trt.check_engine_compat({**META, "precision": "int8", "engine": "engines/trt_int8.plan"},
                                TrtVersion(11, 0, 0), ("NVIDIA L4", "8.9"))
    msg = str(e.value)
    assert "TensorRT 10.8.0 but this runtime is TensorRT 11.0.0" in msg
    assert "built on NVIDIA H100 80GB HBM3 (compute capability 9.0) but this GPU is NVIDIA L4 (compute capability 8.9)" in msg
    assert msg.endswith("`./convert_to_trt.sh --precision int8`")


def test_compat_meta_without_version():
    with pytest.raises(StageError, match="records no TensorRT version"):
        trt.check_engine_compat({"precision": "fp32"}, V10, None)


# ------------------------------------------------------------------------------------------------ dry run
def test_dry_run(tmp_path, capsys):
    arts = tmp_path / "a"
    make_manifest(arts, {v: tiny_onnx(arts / f"onnx/{v}.onnx", qdq=v != "fp32") for v in ("fp32", "int8")})
    assert trt.main(["--dry-run", "--assume-version", "10.8.0", "--artifacts", str(arts), "--logs", str(tmp_path / "l"),
                     "--precision", "fp16", "--precision", "best", "--precision", "fp8"]) == 0
    out = capsys.readouterr().out.splitlines()
    eng = arts / "engines"
    assert out == [
        "# TensorRT 10.8.0: commands convert_to_trt.sh would run (dry run, nothing is built)",
        "# trt_fp16: from ONNX variant 'fp32'",
        " ".join(["trtexec", f"--onnx={arts}/onnx/fp32.onnx", f"--saveEngine={eng}/trt_fp16.plan", *HEAD[3:], "--fp16",
                  "--memPoolSize=workspace:4096M", "--skipInference", "--profilingVerbosity=detailed",
                  f"--exportLayerInfo={eng}/trt_fp16.layers.json", f"--timingCacheFile={eng}/timing_trt10.8.0.cache"]),
        "# trt_best: from ONNX variant 'int8'",
        " ".join(["trtexec", f"--onnx={arts}/onnx/int8.onnx", f"--saveEngine={eng}/trt_best.plan", *HEAD[3:], "--best",
                  "--memPoolSize=workspace:4096M", "--skipInference", "--profilingVerbosity=detailed",
                  f"--exportLayerInfo={eng}/trt_best.layers.json", f"--timingCacheFile={eng}/timing_trt10.8.0.cache"]),
        "# trt_fp8: skipped: no 'fp8' ONNX variant in the manifest (TensorRT 10.x builds fp8 from it): export it first",
    ]
    assert not eng.exists() and not (tmp_path / "l").exists() and "trt" not in io.load_manifest(arts)


def test_dry_run_trt11(tmp_path, capsys):
    arts = tmp_path / "a"
    make_manifest(arts, {v: tiny_onnx(arts / f"{v}.onnx", qdq=v in trt.QDQ_VARIANTS) for v in trt.ALL})
    assert trt.main(["--dry-run", "--assume-version", "11.0.0", "--artifacts", str(arts), "--workspace-mb", "2048"]) == 0
    out = capsys.readouterr().out.splitlines()
    cmds = [line for line in out if line.startswith("trtexec ")]
    assert len(cmds) == len(trt.ALL)
    for p, cmd in zip(trt.ALL, cmds):
        assert f"--onnx={arts}/{p}.onnx" in cmd and "--memPoolSize=workspace:2048M" in cmd
        assert not [a for a in cmd.split() if a.split("=")[0] in REMOVED_IN_11 + ("--stronglyTyped",)]


def test_dry_run_needs_a_version(tmp_path, monkeypatch, capsys):
    arts = tmp_path / "a"
    make_manifest(arts)
    monkeypatch.setattr(trt, "detect", lambda: NO_TRT)
    assert trt.main(["--dry-run", "--artifacts", str(arts)]) == 1
    assert "--assume-version" in capsys.readouterr().err
    assert trt.main(["--dry-run", "--assume-version", "8.6.1", "--artifacts", str(arts)]) == 1
    assert "TensorRT 8 and 9 are not supported" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        trt.main(["--assume-version", "10.8.0", "--artifacts", str(arts)])
    assert e.value.code == 2


# ------------------------------------------------------------------------------------------- end to end
def run_script(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENC2TRITON_ARTIFACTS": str(tmp_path / "env-artifacts"),
           "ENC2TRITON_LOGS": str(tmp_path / "env-logs"), "TRTEXEC": str(tmp_path / "no-trtexec")}
    return subprocess.run(["bash", str(ROOT / "convert_to_trt.sh"), *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)


def test_script_help(tmp_path):
    r = run_script("--help", tmp_path=tmp_path)
    assert r.returncode == 0 and "--precision" in r.stdout and "--dry-run" in r.stdout


def test_script_skip_path(tmp_path):
    arts, logs = tmp_path / "artifacts", tmp_path / "logs"
    make_manifest(arts)
    r = run_script("--artifacts", str(arts), "--logs", str(logs), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(", ".join(f"trt_{p}" for p in trt.ALL) + ": skipped: TensorRT not found")
    section = json.loads((arts / "manifest.json").read_text())["trt"]
    assert all(section[p]["engine"] is None and section[p]["reason"] for p in trt.ALL)
    assert not (arts / "engines").exists()
    assert not (tmp_path / "env-artifacts").exists() and not (tmp_path / "env-logs").exists()


def test_unrunnable_trtexec_is_a_failure(tmp_path, capsys, no_gpu):
    arts = tmp_path / "a"
    manifest = make_manifest(arts, {"fp32": tiny_onnx(arts / "m.onnx", qdq=False)})
    tc = trt.Toolchain("trtexec", V10, str(tmp_path / "gone" / "trtexec"))
    section = trt.build_engines(manifest, arts, tmp_path / "l", ["fp32"], toolchain=tc)
    assert section["fp32"]["status"] == "failed" and "cannot run" in section["fp32"]["reason"]


@pytest.mark.parametrize("names,plan,reason", [
    (["input_ids", "attention_mask"], None, "failed to build the fp16 engine"),
    (["input_ids"], None, "has inputs ['input_ids'], the manifest says"),
])
def test_python_builder_path(tmp_path, capsys, monkeypatch, no_gpu, names, plan, reason):
    """Walks _build_python against a stand-in `tensorrt` module (catches Python-level mistakes only)."""
    import types
    from unittest import mock

    fake = mock.MagicMock()
    fake.ILogger = type("ILogger", (), {"__init__": lambda self: None})
    builder = fake.Builder.return_value
    network = builder.create_network.return_value
    network.num_inputs = len(names)
    network.get_input.side_effect = lambda i: types.SimpleNamespace(name=names[i])
    fake.OnnxParser.return_value.parse_from_file.return_value = True
    builder.build_serialized_network.return_value = plan
    monkeypatch.setitem(sys.modules, "tensorrt", fake)

    arts, logs = tmp_path / "a", tmp_path / "l"
    manifest = make_manifest(arts, {"fp32": tiny_onnx(arts / "m.onnx", qdq=False)})
    section = trt.build_engines(manifest, arts, logs, ["fp16"], toolchain=trt.Toolchain("python", V10, "tensorrt"))
    assert section["fp16"]["status"] == "failed" and reason in section["fp16"]["reason"]
    assert list((arts / "engines").iterdir()) == []
    if plan is None and len(names) == 2:
        config = builder.create_builder_config.return_value
        config.set_flag.assert_called_once_with(fake.BuilderFlag.FP16)
        builder.create_network.assert_called_once_with(0)  # weakly typed on 10 for fp16
        fake.Builder.return_value.create_optimization_profile.return_value.set_shape.assert_any_call(
            "input_ids", (1, 1), (32, 128), (64, 512))


def test_gpu_queries_share_one_nvidia_smi_parser(fake_nvidia_smi):
    fake_nvidia_smi('case "$1" in\n  *compute_cap*) echo "NVIDIA H100 80GB HBM3, 9.0";;\n'
                    '  *index*) printf "0\\n1\\n";;\n  *) echo "NVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB";;\nesac')
    from enc2triton.core import host

    assert trt.gpu_info() == ("NVIDIA H100 80GB HBM3", "9.0")
    assert host.visible_gpus() == [0, 1]
    assert host.hardware()["gpus"] == [{"name": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "memory": "81559 MiB"}]
