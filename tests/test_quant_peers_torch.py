"""The PyTorch quantization peer: NVIDIA ModelOpt's real mtq.quantize (in its own venv .venv-modelopt, fake quantization
on the CPU) on the tiny random DistilBERT, measured by torch_build's definitions beside our torch_fp8; the one-line
errors without ModelOpt or without a GPU; the report's rendering of the published log."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from enc2triton import report
from enc2triton.core import io
from enc2triton.core.io import StageError
from enc2triton.measure import quant_peers as qp
from enc2triton.measure import quant_peers_torch as qpt
from enc2triton.quantize import quantize
from enc2triton.torch_engines import torch_build

FIXTURES = Path(__file__).parent / "fixtures"


def test_missing_modelopt_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("ENC2TRITON_MODELOPT_PYTHON", raising=False)
    monkeypatch.setattr(qp, "MODELOPT_VENV", tmp_path / ".venv-modelopt")
    logs = tmp_path / "logs"
    assert qpt.main(["--artifacts", str(tmp_path / "art"), "--logs", str(logs)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the ModelOpt venv") and "make modelopt" in err[0]
    assert not logs.exists()
    # an interpreter without modelopt (the project's own venv) says so, naming it
    with pytest.raises(StageError, match=r"nvidia-modelopt is not installed for .*: make modelopt"):
        qpt.packages(sys.executable)
    with pytest.raises(StageError, match="unknown configuration"):
        qpt.run(tmp_path, logs, configs=("int3_magic",))


def test_help_names_every_default_and_the_untested_gpu(capsys):
    with pytest.raises(SystemExit) as e:
        qpt.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("usage: python -m enc2triton.quant_peers_torch")
    flat = " ".join(out.split())
    for opt in ("--artifacts", "--logs", "--configs", "--device", "--calibration", "--evaluation", "--python"):
        assert opt in flat
    assert flat.count("(default") >= 6 and "not yet run on one" in flat and "make modelopt" in flat


@pytest.fixture(scope="module")
def modelopt_python() -> str:
    try:
        python = qp.modelopt_python()
        qpt.packages(python)
        return python
    except StageError as e:
        pytest.skip(str(e))


def test_gpu_without_a_gpu_is_an_error_not_a_cpu_run(modelopt_python, tiny_artifacts, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(StageError, match="--device gpu: torch sees no CUDA GPU"):
        qpt.run(tiny_artifacts, tmp_path / "logs", configs=("fp8_default",), device="gpu", progress=False)
    assert not (tmp_path / "logs" / "quant_peers_torch.json").exists()


@pytest.mark.slow
def test_real_mtq_beside_ours_on_tiny_model(modelopt_python, tiny_artifacts, tmp_path):
    art = Path(shutil.copytree(tiny_artifacts, tmp_path / "art"))
    logs = tmp_path / "logs"
    # ours: torch_fp8 on the CPU from the ONNX FP8 plan (torch_int8 needs the INT8 search: slow, left unbuilt here)
    quantize.run(art, logs, precisions=("fp8",), measure_latency=False, progress=False)
    torch_build.run(art, logs, precisions=("fp8",), device="cpu", compile_cache=False)
    d = qpt.run(art, logs, progress=False)
    assert d["modelopt"]["versions"]["nvidia-modelopt"] == "0.47.0" and d["device"] == "cpu"
    assert d["reference_check"]["max_abs_diff"] < 1e-4  # ModelOpt's venv loaded the same model, tokens and pooling
    rows = {r["name"]: r for r in d["rows"]}
    assert rows["ours torch_int8"]["note"].startswith("not built")
    ours = rows["ours torch_fp8"]
    built = io.load_manifest(art)["torch"]["fp8"]["quality"]
    assert ours["mean_cos"] == built["mean_cos"] and ours["top10"] == built["top10"]  # torch_build's numbers, as recorded
    for name, cfg in qpt.CONFIGS.items():
        r = rows[f"ModelOpt {name}"]
        assert not r.get("error"), r
        assert 0.5 < r["mean_cos"] <= 1.0 + 1e-9 and r["min_cos"] <= r["mean_cos"] and 0.0 <= r["top10"] <= 1.0
        assert isinstance(r["pass"], bool)
        q = r["quantizers"]
        assert q["QuantLinear.input_quantizer"] == q["QuantLinear.weight_quantizer"] == 12  # 2 layers x 6 linear
        assert any("LayerNorm" in k for k in q) != cfg.linear_only  # ModelOpt's defaults quantize LayerNorm inputs too
    assert rows["ModelOpt int8_smoothquant"]["algorithm"] == "smoothquant"
    saved = json.loads((logs / "quant_peers_torch.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(d["rows"]))
    md = (logs / "quant_peers_torch.md").read_text()
    assert "| ModelOpt int8_smoothquant | int8 |" in md and "| ours torch_fp8 | fp8 |" in md
    body = report.render(logs, tmp_path / "REPORT.md", published=None)
    assert "## " + qp.TITLE in body and "### PyTorch: ModelOpt's mtq" in body and "| ModelOpt fp8_default | fp8 |" in body


def test_report_renders_the_published_log_beside_the_onnx_peer(tmp_path):
    """quant_peers_torch.json: python -m enc2triton.quant_peers_torch on the bundled all-MiniLM-L6-v2 (results/cpu_modelopt/2026-12-07b)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    d = io.read_json(FIXTURES / "quant_peers_torch.json")
    shutil.copy(FIXTURES / "quant_peers_torch.json", logs / "quant_peers_torch.json")
    text = report.render(logs, tmp_path / "REPORT.md", published=None)
    assert f"## {report.S_QPEER}" in text
    body = text.split(f"## {report.S_QPEER}", 1)[1].split("\n## ", 1)[0]
    assert body.lstrip().startswith("### PyTorch: ModelOpt's mtq beside our torch_int8 / torch_fp8")
    assert "_From logs/quant_peers_torch.json (python -m enc2triton.quant_peers_torch): " in body
    for r in d["rows"]:
        if r.get("mean_cos") is not None:
            assert f"| {r['name']} | {r['precision']} | {r['mean_cos']:.6f} / {r['min_cos']:.6f} | {r['top10']:.3f} |" in body
    shutil.copy(FIXTURES / "quant_peers.json", logs / "quant_peers.json")  # both: one section, the ONNX table first
    text = report.render(logs, tmp_path / "REPORT.md", published=None)
    body = text.split(f"## {report.S_QPEER}", 1)[1].split("\n## ", 1)[0]
    assert text.count(f"## {report.S_QPEER}") == 1
    assert body.index("_From logs/quant_peers.json") < body.index("### PyTorch: ModelOpt's mtq")
    assert "None" not in body and "/work/" not in body and "/tmp/" not in body
