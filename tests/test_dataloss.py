"""Failed or interrupted runs never lose or silently mix results: the merge and swap rules of perf_summary.json and
quality.json, a truncated server.json, refused command lines. No server here (test_perf.py and test_reliability.py
run the same against the real one)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from enc2triton.core import io
from enc2triton.serve import repository, server
from enc2triton.measure import perf, quality
from triton_helpers import fake_dead_server_with_stub

ROOT = Path(__file__).resolve().parents[1]


# --- perf_summary.json -----------------------------------------------------------------------------

def summary(started: str, models: dict, errors=(), seq_len: int = 128) -> dict:
    return {"status": "incomplete", "started": started, "model": {"config_sha256": "abc"}, "repository": "/repo",
            "protocol": "grpc", "batch_size": 1, "concurrency": [1], "settings": {**asdict(perf.Settings()), "why": "x"},
            "inputs": {"seq_len": seq_len}, "hardware": {}, "models": models, "errors": list(errors)}


def entry(status: str, measured: str, rows: int = 1) -> dict:
    return {"measured": measured, "kind": "model", "status": status, "failed": [] if status == "complete" else [{"concurrency": 2, "error": "x"}],
            "rows": [{"concurrency": c + 1, "throughput": 10.0, "p99_ms": 1.0} for c in range(rows)], "csv": "perf.csv"}


ORDER = ["tokenizer", "a", "b", "c"]


def finish(logs: Path, new: dict, names: list[str]):
    out, progress = logs / "perf_summary.json", logs / "perf_summary.json.partial"
    earlier = perf.kept_entries(out, new)
    return perf._finish(new, earlier, names, ORDER, out, progress)


def test_failed_remeasurement_keeps_the_earlier_complete_entry_and_csv(tmp_path):
    old = summary("t0", {n: entry("complete", "t0") for n in ("a", "b", "c")})
    old["status"] = "complete"
    io.write_json(tmp_path / "perf_summary.json", old)
    for n in "abc":
        (tmp_path / f"perf_{n}.csv").write_text(f"complete {n}\n")
    new = summary("t1", {"a": entry("complete", "t1"), "b": entry("incomplete", "t1", rows=1)},
                  errors=["b: failed at concurrency 2: x"])
    merged, where = finish(tmp_path, new, ["a", "b", "c"])  # c never reached (say the server died)
    assert merged == io.read_json(tmp_path / "perf_summary.json") and not (tmp_path / "perf_summary.json.partial").exists()
    assert merged["status"] == "incomplete" and list(merged["models"]) == ["a", "b", "c"]
    assert merged["models"]["a"]["measured"] == "t1"
    assert {k: v for k, v in merged["models"]["b"].items() if k != "rerun_failed"} == old["models"]["b"]
    assert merged["models"]["b"]["rerun_failed"]["status"] == "incomplete"
    assert merged["models"]["c"] == old["models"]["c"]
    assert merged["kept_from_earlier_runs"] == {"b": "t0", "c": "t0"}
    assert merged["errors"] == ["b: failed at concurrency 2: x", "b: re-measurement failed; the earlier complete result (t0) is kept"]
    assert [(tmp_path / f"perf_{n}.csv").read_text() for n in "bc"] == ["complete b\n", "complete c\n"]
    assert "earlier results kept for b, c" in where


def test_nothing_measured_leaves_the_summary_alone(tmp_path):
    old = summary("t0", {"a": entry("complete", "t0")})
    io.write_json(tmp_path / "perf_summary.json", old)
    before = (tmp_path / "perf_summary.json").read_bytes()
    new = summary("t1", {"a": entry("failed", "t1", rows=0), "b": entry("incomplete", "t1", rows=0)},
                  errors=["a: not ready on the server: UNAVAILABLE", "b: failed at concurrency 1: x"])
    merged, where = finish(tmp_path, new, ["a", "b"])
    assert merged is None and (tmp_path / "perf_summary.json").read_bytes() == before
    assert where.startswith("nothing was measured (a: not ready on the server: UNAVAILABLE (and 1 more)): ")
    assert "\n" not in where
    partial = io.read_json(tmp_path / "perf_summary.json.partial")
    assert partial["errors"] == new["errors"] and partial["result"].startswith("nothing measured")


def test_other_settings_are_not_merged_and_their_stale_csv_goes(tmp_path):
    io.write_json(tmp_path / "perf_summary.json", summary("t0", {n: entry("complete", "t0") for n in "abc"}, seq_len=64))
    for n in "abc":
        (tmp_path / f"perf_{n}.csv").write_text("seq 64\n")
    new = summary("t1", {"a": entry("complete", "t1"), "b": entry("incomplete", "t1")}, errors=["b: failed"])
    merged, _ = finish(tmp_path, new, ["a", "b", "c"])
    assert list(merged["models"]) == ["a", "b"] and "kept_from_earlier_runs" not in merged
    assert merged["models"]["b"]["status"] == "incomplete"
    assert not (tmp_path / "perf_b.csv").exists()  # a complete-looking CSV of other settings next to an incomplete entry


def test_an_earlier_incomplete_entry_is_kept_with_a_rerun_hint(tmp_path):
    io.write_json(tmp_path / "perf_summary.json", summary("t0", {"a": entry("incomplete", "t0"), "b": entry("complete", "t0")}))
    merged, _ = finish(tmp_path, summary("t1", {"b": entry("complete", "t1")}), ["b"])
    assert merged["status"] == "incomplete" and merged["models"]["a"]["status"] == "incomplete"
    assert merged["errors"] == ["a: incomplete in an earlier run (t0); rerun it with --models a"]
    # a complete rerun of a: complete again
    merged, _ = finish(tmp_path, summary("t2", {"a": entry("complete", "t2")}), ["a"])
    assert merged["status"] == "complete" and merged["kept_from_earlier_runs"] == {"b": "t1"}


@pytest.mark.parametrize("data", [b'{"pid": 999999', b"[1, 2]", b'{"models": [1]}', b"\xff"])
def test_unreadable_earlier_summary_keeps_nothing(tmp_path, data):
    (tmp_path / "perf_summary.json").write_bytes(data)
    assert perf.kept_entries(tmp_path / "perf_summary.json", summary("t1", {})) == {}


# --- quality.json -----------------------------------------------------------------------------------

def qresult(started: str, variants: dict, texts="abc", protocol="grpc", config="cfg") -> dict:
    return {"model": {"used": "m", "source": "s", "config_sha256": config}, "texts": "t.txt", "n_texts": 3,
            "texts_sha256": texts, "protocol": protocol, "server": "127.0.0.1:1", "variants": variants,
            "status": "incomplete", "started": started}


def qrow(measured: str) -> dict:
    r = {"mean_cos": 0.99, "min_cos": 0.98, "max_abs": 0.1, "rel_l2": 0.01, "top10": 1.0}
    return {"floor": {"mean_cos": 0.9, "min_cos": 0.8}, "pytorch_fp32": r, "pass": True, "measured": measured}


def qfinish(logs: Path, new: dict):
    out, progress = logs / "quality.json", logs / "quality.json.partial"
    return quality.finish(new, quality.kept_variants(out, new, ["onnx_fp32", "onnx_int8", "onnx_fp16"]), out, progress)


def test_quality_failure_mid_run_keeps_earlier_variants(tmp_path):
    old = qresult("t0", {v: qrow("t0") for v in ("onnx_fp32", "onnx_fp16", "onnx_int8", "gone_variant")})
    old["status"] = "complete"
    io.write_json(tmp_path / "quality.json", old)
    new = qresult("t1", {"onnx_fp32": qrow("t1")})
    new["error"] = "ensemble_onnx_fp16: inference: the server is gone"
    merged, where = qfinish(tmp_path, new)
    assert merged == io.read_json(tmp_path / "quality.json") and not (tmp_path / "quality.json.partial").exists()
    assert merged["status"] == "incomplete" and merged["error"].startswith("ensemble_onnx_fp16: inference")
    assert list(merged["variants"]) == ["onnx_fp32", "onnx_fp16", "onnx_int8"]  # not served any more: not kept
    assert merged["variants"]["onnx_fp32"]["measured"] == "t1" and merged["variants"]["onnx_int8"] == old["variants"]["onnx_int8"]
    assert merged["kept_from_earlier_runs"] == {"onnx_fp16": "t0", "onnx_int8": "t0"}
    md = (tmp_path / "quality.md").read_text()
    assert "INCOMPLETE" in md and "| onnx_int8 (earlier run, t0) | pytorch_fp32 |" in md
    assert "earlier results kept for onnx_fp16, onnx_int8" in where


@pytest.mark.parametrize("change", [{"texts": "other"}, {"protocol": "http"}, {"config": "other"}])
def test_quality_measured_another_way_is_not_merged(tmp_path, change):
    io.write_json(tmp_path / "quality.json", qresult("t0", {"onnx_int8": qrow("t0")}))
    merged, _ = qfinish(tmp_path, qresult("t1", {"onnx_fp32": qrow("t1")}, **change))
    assert list(merged["variants"]) == ["onnx_fp32"] and "kept_from_earlier_runs" not in merged


def test_quality_nothing_measured_leaves_quality_json_alone(tmp_path):
    io.write_json(tmp_path / "quality.json", qresult("t0", {"onnx_int8": qrow("t0")}))
    before = (tmp_path / "quality.json").read_bytes()
    new = qresult("t1", {})
    new["error"] = "starting the server: tritonserver exited with code 1"
    merged, where = qfinish(tmp_path, new)
    assert merged is None and (tmp_path / "quality.json").read_bytes() == before and not (tmp_path / "quality.md").exists()
    assert io.read_json(tmp_path / "quality.json.partial")["error"] == new["error"]
    assert where.startswith("nothing was measured")


# --- server.json --------------------------------------------------------------------------------------

def test_truncated_server_json_of_a_dead_server_is_stale_state(tmp_path, capsys):
    region = f"triton_python_backend_shm_region_enc2triton-test-{os.getpid()}"
    pid, stub = fake_dead_server_with_stub(region)
    try:
        (tmp_path / "server.json").write_text(f'{{"pid": {pid}')
        (tmp_path / "tritonserver.pid").write_text(f"{pid}\n")
        assert server.status(tmp_path) is None
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith(f"note: {tmp_path / 'server.json'} is unreadable (") and "the server it described is gone" in err[0]
        assert err[1:] == [f"note: killed 1 Python backend stub(s) left behind by the dead server (pid {pid}): [{stub}]"]
        assert not (tmp_path / "server.json").exists() and not (tmp_path / "tritonserver.pid").exists()
        assert server.orphans(pid) == [] and not (Path("/dev/shm") / region).exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stub, signal.SIGKILL)
        (Path("/dev/shm") / region).unlink(missing_ok=True)


@pytest.mark.parametrize("data", [b"", b'{"pid": 999999}', b'{"pid": "x", "host": 1}', b"[1]", b"\xff\xfe", None])
def test_unreadable_server_json_is_stale_state(tmp_path, capsys, data):
    if data is None:
        (tmp_path / "server.json").mkdir()  # not even a file
    else:
        (tmp_path / "server.json").write_bytes(data)
    (tmp_path / "tritonserver.pid").write_text("999999\n")
    assert server.status(tmp_path) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "server.json is unreadable" in err[0], err
    assert not (tmp_path / "tritonserver.pid").exists() and (data is None or not (tmp_path / "server.json").exists())


def test_serve_sh_status_with_a_truncated_server_json(tmp_path):
    (tmp_path / "server.json").write_text('{"pid": 999999')
    r = subprocess.run([str(ROOT / "serve.sh"), "status", "--logs", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and r.stdout == "not running\n"
    assert len(r.stderr.splitlines()) == 1 and "server.json is unreadable" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


# --- refused command lines write nothing ----------------------------------------------------------

@pytest.fixture(scope="module")
def repo(tiny_artifacts, tmp_path_factory) -> Path:
    return repository.generate(tiny_artifacts, tmp_path_factory.mktemp("dataloss") / "model_repository")


@pytest.mark.parametrize("command", ["client.py", "run_tests.sh"])
def test_missing_texts_file_is_one_line_and_writes_nothing(command, repo, tiny_artifacts, tmp_path):
    exe = [sys.executable, str(ROOT / "client.py")] if command == "client.py" else [str(ROOT / "run_tests.sh")]
    logs = tmp_path / "logs"
    r = subprocess.run(exe + ["--artifacts", str(tiny_artifacts), "--repository", str(repo), "--logs", str(logs),
                              "--texts", "/nonexistent"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr == "error: texts file /nonexistent not found\n" and r.stdout == ""
    assert not logs.exists()  # a fresh --logs folder is not even left behind


@pytest.mark.parametrize("command", ["client.py", "run_tests.sh"])
def test_unknown_models_are_refused_and_results_untouched(command, repo, tiny_artifacts, tmp_path):
    exe = [sys.executable, str(ROOT / "client.py")] if command == "client.py" else [str(ROOT / "run_tests.sh")]
    logs = tmp_path / "logs"
    logs.mkdir()
    result = logs / ("quality.json" if command == "client.py" else "perf_summary.json")
    result.write_text(json.dumps({"status": "complete", "variants": {}, "models": {}}))
    before = result.read_bytes()
    r = subprocess.run(exe + ["--artifacts", str(tiny_artifacts), "--repository", str(repo), "--logs", str(logs),
                              "--models", "nosuch"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and "nosuch" in r.stderr and r.stderr.startswith("error: ")
    assert result.read_bytes() == before and list(logs.iterdir()) == [result]
