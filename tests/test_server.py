"""The generated repository on a real tritonserver: configs, inference, bad input, lifecycle."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from enc2triton.core import io, spec
from enc2triton.export import export
from enc2triton.serve import repository, server
from triton_helpers import embed, local_embed, texts_input  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def repo(tiny_artifacts, tmp_path_factory) -> Path:
    return repository.generate(tiny_artifacts, tmp_path_factory.mktemp("repo") / "model_repository")


@pytest.fixture(scope="module")
def live(repo, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    info = server.start(repo, logs, timeout=180)
    yield info, logs
    server.stop(logs, quiet=True)


def test_configs_parse_back_and_follow_the_manifest(repo, tiny_artifacts):
    m = io.load_manifest(tiny_artifacts)
    names = io.read_json(repo / "repository.json")["models"]
    assert {"tokenizer", "onnx_fp32", "ensemble_onnx_fp32"} <= set(names)
    for name in names:
        cfg = repository.read_config(repo / name / "config.pbtxt")
        assert cfg.name == name and cfg.max_batch_size == m["shapes"]["max_batch"]
    tok = repository.read_config(repo / "tokenizer" / "config.pbtxt")
    assert [o.name for o in tok.output] == m["inputs"]
    assert tok.dynamic_batching.default_queue_policy.max_queue_size == spec.Serving.max_queue_size
    model = repository.read_config(repo / "onnx_fp32" / "config.pbtxt")
    assert [i.name for i in model.input] == m["inputs"]
    assert [(o.name, list(o.dims)) for o in model.output] == [("sentence_embedding", [m["model"]["hidden_size"]])]
    assert all(i.allow_ragged_batch for i in model.input)  # the Python-backend runner groups lengths itself
    assert all(b <= m["shapes"]["max_batch"] for b in model.dynamic_batching.preferred_batch_size)
    ens = repository.read_config(repo / "ensemble_onnx_fp32" / "config.pbtxt")
    assert [s.model_name for s in ens.ensemble_scheduling.step] == ["tokenizer", "onnx_fp32"]
    assert (repo / "tokenizer" / "1" / "tokenizer" / "tokenizer_config.json").exists()


def test_every_batched_model_has_two_instances(repo):
    # one instance lets Triton 2.51's dynamic batcher sleep 500 ms on a missed wake-up (spec.Serving)
    for name in io.read_json(repo / "repository.json")["models"]:
        cfg = repository.read_config(repo / name / "config.pbtxt")
        if cfg.HasField("dynamic_batching"):
            assert sum(g.count for g in cfg.instance_group) >= 2, name
    model = repository.read_config(repo / "onnx_fp32" / "config.pbtxt")
    threads = int(model.parameters["intra_op_threads"].string_value)
    assert threads * model.instance_group[0].count <= max(2, os.cpu_count() or 1)  # instances share the cores


def test_cli_batching_and_instances(tiny_artifacts, tmp_path, capsys):
    out = tmp_path / "r"
    assert repository.main(["--artifacts", str(tiny_artifacts), "--out", str(out), "--instances", "3",
                            "--preferred-batch-sizes", "8,2,4", "--max-queue-delay-us", "100"]) == 0
    cfg = repository.read_config(out / "onnx_fp32" / "config.pbtxt")
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    # a size over the export's max batch (8) is refused, not silently dropped; nothing is written
    assert repository.main(["--artifacts", str(tiny_artifacts), "--out", str(tmp_path / "big"), "--preferred-batch-sizes", "8,64"]) == 1
    assert "--preferred-batch-sizes 64 exceed the export's max batch 8" in capsys.readouterr().err and not (tmp_path / "big").exists()
    # --device gpu where nvidia-smi lists no GPU: an error, not KIND_GPU with zero GPUs
    if not __import__("enc2triton.core.host", fromlist=["x"]).visible_gpus():
        assert repository.main(["--artifacts", str(tiny_artifacts), "--out", str(tmp_path / "gpu"), "--device", "gpu"]) == 1
        assert "lists no GPU here" in capsys.readouterr().err
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100 and cfg.instance_group[0].count == 3
    for bad in (["--preferred-batch-sizes", "8,x"], ["--preferred-batch-sizes", "0"], ["--instances", "0"], ["--instances", "-1"]):
        with pytest.raises(SystemExit) as e:
            repository.main(["--artifacts", str(tiny_artifacts), "--out", str(tmp_path / "bad"), *bad])
        assert e.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_if_stale_follows_settings_not_only_the_manifest(tiny_artifacts, tmp_path, capsys):
    out = tmp_path / "r"
    base = ["--artifacts", str(tiny_artifacts), "--out", str(out), "--if-stale"]
    assert repository.main(base) == 0 and "model repository" in capsys.readouterr().out
    assert repository.main(base) == 0 and "up to date" in capsys.readouterr().out
    # an older repository (one instance, no recorded settings) is regenerated, not kept
    info = io.read_json(out / "repository.json")
    io.write_json(out / "repository.json", {k: v for k, v in info.items() if k != "settings"})
    assert repository.main(base) == 0 and "up to date" not in capsys.readouterr().out
    for change in (["--instances", "3"], ["--device", "gpu", "--gpus", "0"], ["--max-queue-delay-us", "100"]):
        assert repository.main(base + change) == 0 and "up to date" not in capsys.readouterr().out, change
        assert repository.main(base + change) == 0 and "up to date" in capsys.readouterr().out, change
    assert repository.read_config(out / "onnx_fp32" / "config.pbtxt").dynamic_batching.max_queue_delay_microseconds == 100


def test_gpu_instance_groups_one_per_gpu(tiny_artifacts, tmp_path):
    out = repository.generate(tiny_artifacts, tmp_path / "r", device="gpu", gpus=[0, 1], native=False)
    groups = repository.read_config(out / "onnx_fp32" / "config.pbtxt").instance_group
    assert [(g.kind, list(g.gpus)) for g in groups] == [(groups[0].KIND_GPU, [0]), (groups[0].KIND_GPU, [1])]
    assert all(g.count == spec.Serving.gpu_model_instances for g in groups)
    tok = repository.read_config(out / "tokenizer" / "config.pbtxt").instance_group
    assert tok[0].kind == tok[0].KIND_CPU and tok[0].count == spec.Serving.for_device("gpu").tokenizer_instances
    # a GPU repository also serves the fused text model (one hop per request) on the same GPUs; a CPU one does not
    fused = repository.read_config(out / "fused_onnx_fp32" / "config.pbtxt")
    assert [list(g.gpus) for g in fused.instance_group] == [[0], [1]] and fused.input[0].name == spec.TEXT_INPUT
    assert all(g.count == spec.Serving.gpu_fused_instances for g in fused.instance_group)
    assert int(fused.parameters["tokenizer_threads"].string_value) == spec.Serving.for_device("gpu", gpus=2).fused_tokenizer_threads
    assert (out / "fused_onnx_fp32" / "1" / "enc2triton_tokenizer.py").exists() and (out / "fused_onnx_fp32" / "1" / "tokenizer").is_dir()
    cpu = repository.generate(tiny_artifacts, tmp_path / "c")
    assert not any(spec.kind_of(n) == "fused" for n in io.read_json(cpu / "repository.json")["models"])


def test_serving_defaults_per_device():
    assert spec.Serving.for_device("cpu") == spec.Serving()
    gpu16 = spec.Serving.for_device("gpu", cpus=16)
    assert (gpu16.model_instances, gpu16.tokenizer_instances) == (spec.Serving.gpu_model_instances, 12)
    assert gpu16.preferred_batch_sizes == () and gpu16.max_queue_delay_us == 0  # greedy batchers on a GPU
    assert spec.Serving.for_device("gpu", cpus=2).tokenizer_instances == 2 and spec.Serving.for_device("gpu", cpus=64).tokenizer_instances == 12
    assert spec.Serving.for_device("gpu", cpus=16, model_instances=None, tokenizer_instances=3).tokenizer_instances == 3
    # two GPUs on the 32-core machine: the tokenizer gets 12 instances per GPU, within 3/4 of the cores
    assert spec.Serving.for_device("gpu", cpus=32, gpus=2).tokenizer_instances == 24 and spec.Serving.for_device("gpu", cpus=32).tokenizer_instances == 12
    # fused models: four instances per GPU sharing 3/4 of the cores for their tokenizer threads
    assert (gpu16.fused, gpu16.fused_instances, gpu16.fused_tokenizer_threads) == (True, 4, 3)
    assert spec.Serving.for_device("gpu", cpus=16, fused_instances=2).fused_tokenizer_threads == 6
    assert spec.Serving.for_device("gpu", cpus=16, fused_tokenizer_threads=5).fused_tokenizer_threads == 5
    assert not spec.Serving.for_device("cpu").fused
    # sized for the cores this process may use (the server's, when generated under its pinning), not the machine's
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, sorted(before)[:1])
        one = spec.Serving.for_device("gpu")
        assert (one.tokenizer_instances, one.fused_tokenizer_threads) == (spec.Serving.tokenizer_instances, 1)
    finally:
        os.sched_setaffinity(0, before)


def test_native_backends_when_present(tiny_artifacts, tmp_path):
    out = repository.generate(tiny_artifacts, tmp_path / "r", native=True)
    cfg = repository.read_config(out / "onnx_fp32" / "config.pbtxt")
    assert cfg.platform == "onnxruntime_onnx" and cfg.default_model_filename == "model.onnx"
    assert not (out / "onnx_fp32" / "1" / "model.py").exists()


def test_server_json_and_loopback(live):
    info, logs = live
    data = io.read_json(logs / "server.json")
    assert data["host"] == "127.0.0.1" and data["http_port"] == info.http_port
    assert server.is_ready(info) and server.status(logs).pid == info.pid


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_ensemble_matches_onnx_runtime(live, tiny_artifacts, protocol):
    info, _ = live
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(info.url(protocol))
    texts = ["Triton serves models.", "A second, somewhat longer sentence to pad the batch."]
    got = embed(client, mod, [t.encode() for t in texts])
    np.testing.assert_allclose(got, local_embed(tiny_artifacts, texts), atol=1e-5)


def test_bad_input_is_contained(live, tiny_artifacts):
    info, _ = live
    c = httpclient.InferenceServerClient(info.http)
    odd = ["", "   \t\n ", "x" * 100_000, "word " * 20_000, "Mixed: 日本語 العربية Ελληνικά 😀🚀 café"]
    out = embed(c, httpclient, [t.encode() for t in odd])
    assert out.shape[0] == len(odd) and np.isfinite(out).all()  # long texts truncated, not an error
    with pytest.raises(InferenceServerException, match="not valid UTF-8"):
        embed(c, httpclient, [b"fine", b"\xff\xfe\xfd broken"])
    # raw model: wrong dtype, wrong rank, batch over max_batch_size
    m = io.load_manifest(tiny_artifacts)

    def raw(arrays):
        inputs = []
        for name, a in zip(m["inputs"], arrays):
            i = httpclient.InferInput(name, list(a.shape), "FP32" if a.dtype == np.float32 else "INT64")
            i.set_data_from_numpy(a)
            inputs.append(i)
        return c.infer("onnx_fp32", inputs)

    for arrays in ([np.ones((1, 8), np.float32)] * 2, [np.ones((1, 8, 2), np.int64)] * 2,
                   [np.ones((m["shapes"]["max_batch"] + 1, 8), np.int64)] * 2):
        with pytest.raises(InferenceServerException):
            raw(arrays)
    with pytest.raises(InferenceServerException):  # too many strings for the ensemble
        embed(c, httpclient, [b"a"] * (m["shapes"]["max_batch"] + 1))
    # still up and still right
    assert server.is_ready(info)
    np.testing.assert_allclose(embed(c, httpclient, [b"still right"]), local_embed(tiny_artifacts, ["still right"]), atol=1e-5)


def test_second_start_refused_and_busy_port(live, repo, tmp_path):
    info, logs = live
    with pytest.raises(io.StageError, match="already running"):
        server.start(repo, logs)
    with pytest.raises(io.StageError, match="busy"):
        server.start(repo, tmp_path / "other", http_port=info.http_port)


def test_stale_pid_and_broken_model(repo, tmp_path, capsys):
    """A dead server's state files are cleaned; a model that fails to load is reported, the rest serve."""
    logs = tmp_path / "logs"
    logs.mkdir()
    io.write_json(logs / "server.json", {"pid": 999_999, "host": "127.0.0.1", "http_port": 1, "grpc_port": 2, "metrics_port": 3,
                                         "repository": str(repo), "log": "", "binary": ""})
    (logs / "tritonserver.pid").write_text("999999\n")
    assert server.status(logs) is None and not (logs / "server.json").exists()
    broken = tmp_path / "repo"
    shutil.copytree(repo, broken)
    (broken / "onnx_fp32" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    info = server.start(broken, logs, timeout=180)
    try:
        assert info.models["onnx_fp32"] != "READY" and info.models["tokenizer"] == "READY"
        err = capsys.readouterr().err  # the user sees which model failed and why (the server log's reason)
        assert "MODEL FAILED TO LOAD: onnx_fp32:" in err and "INVALID_PROTOBUF" in err
        assert "MODEL FAILED TO LOAD: ensemble_onnx_fp32: not loaded: a model it depends on failed" in err
        c = httpclient.InferenceServerClient(info.http)
        assert c.is_model_ready("tokenizer") and not c.is_model_ready("onnx_fp32")
    finally:
        server.stop(logs, quiet=True)
    assert not (logs / "server.json").exists()


def test_serve_sh_status_when_stopped(tmp_path):
    r = subprocess.run([str(ROOT / "serve.sh"), "status", "--logs", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 3 and "not running" in r.stdout


# A stand-in for nvidia-cuda-mps-control (the real one needs an NVIDIA GPU and driver): `-f` runs until told to quit,
# otherwise one command read from stdin, answered only while the daemon runs.
FAKE_MPS = """#!/usr/bin/env bash
d="$CUDA_MPS_PIPE_DIRECTORY"
if [ "$1" = "-f" ]; then
    [ -n "$FAKE_MPS_FAIL" ] && { echo "$FAKE_MPS_FAIL"; exit 3; }
    echo $$ > "$d/daemon"; while [ ! -f "$d/quit" ]; do sleep 0.05; done; rm -f "$d/daemon"; exit 0
fi
[ -f "$d/daemon" ] || { echo "cannot connect to the MPS control daemon"; exit 1; }
read cmd
case "$cmd" in get_server_list) echo 4242 ;; quit) touch "$d/quit" ;; esac
"""


def test_mps_modes_and_where_it_cannot_start(tiny_artifacts, repo, tmp_path, capsys):
    """--mps: off touches nothing; auto stays off with a note where MPS cannot run (here: no GPU, no control binary);
    on is a clear error there, before tritonserver starts, leaving no server state behind."""
    from enc2triton.serve import mps

    gpu = repository.generate(tiny_artifacts, tmp_path / "g", device="gpu", gpus=[0, 1], native=False)
    assert mps.gpu_processes(repo) == 0
    # per GPU: the raw model's instances and the fused model's (every GPU instance is a stub process of its own)
    variants = [n for n in io.read_json(gpu / "repository.json")["models"] if spec.kind_of(n) == "model"]
    assert variants and mps.gpu_processes(gpu) == 2 * len(variants) * (spec.Serving.gpu_model_instances + spec.Serving.gpu_fused_instances)
    assert mps.start("off", gpu) is None and mps.start("auto", repo) is None and not capsys.readouterr().err
    assert mps.start("auto", gpu) is None and "serving without CUDA MPS" in capsys.readouterr().err
    with pytest.raises(io.StageError, match="MPS mode must be"):
        mps.start("yes", gpu)
    logs = tmp_path / "logs"
    with pytest.raises(io.StageError, match="--mps on: CUDA MPS did not start"):
        server.start(repo, logs, mps="on", timeout=60)
    assert not (logs / "server.json").exists() and not (logs / "tritonserver.pid").exists()


def test_mps_daemon_lifecycle(tiny_artifacts, tmp_path, monkeypatch, capsys):
    """The daemon's process handling, against the stand-in control binary: started in the foreground of its own process
    group, asked for its MPS servers, quit and its folders removed; one that dies at once is a clear error (on) or a
    note (auto), and leaves nothing behind."""
    from enc2triton.serve import mps

    gpu = repository.generate(tiny_artifacts, tmp_path / "g", device="gpu", gpus=[0], native=False)
    earlier = set(Path(tempfile.gettempdir()).glob("e2t-mps-*"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / mps.CONTROL).write_text(FAKE_MPS)
    (bin_dir / mps.CONTROL).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(mps.host, "has_nvidia_gpu", lambda: True)
    real_probe = mps._probe
    monkeypatch.setattr(mps, "_probe", lambda state: None)  # a CUDA context through the daemon needs the real driver
    state = mps.start("auto", gpu)
    root = Path(state["pipe_dir"]).parent
    assert state["gpu_processes"] >= 2 and mps.env(state)["CUDA_MPS_PIPE_DIRECTORY"] == state["pipe_dir"]
    assert len(str(Path(state["pipe_dir"]) / "control")) < 100  # a Unix socket's path limit
    assert mps.servers(state) == [4242] and host_alive(state["pid"])
    # the probe itself, for real: without the driver's libcuda a client cannot connect, and it says so
    assert "a CUDA client could not connect: OSError: libcuda.so.1" in real_probe(state)
    mps.stop(state, keep_logs=tmp_path)
    assert not host_alive(state["pid"]) and not root.exists()
    assert (tmp_path / "mps_daemon.log").exists()  # the daemon's own output, kept beside the server's log
    monkeypatch.setenv("FAKE_MPS_FAIL", "MPS is not supported on this GPU")
    with pytest.raises(io.StageError, match="exited with code 3: MPS is not supported on this GPU"):
        mps.start("on", gpu)
    assert mps.start("auto", gpu) is None and "MPS is not supported" in capsys.readouterr().err
    monkeypatch.delenv("FAKE_MPS_FAIL")
    monkeypatch.setattr(mps, "_probe", real_probe)  # a daemon that starts but cannot serve a client: off again, cleaned up
    assert mps.start("auto", gpu) is None and "a CUDA client could not connect" in capsys.readouterr().err
    assert set(Path(tempfile.gettempdir()).glob("e2t-mps-*")) == earlier


def host_alive(pid: int) -> bool:
    from enc2triton.core import host

    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return host.pid_alive(pid)
