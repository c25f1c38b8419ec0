"""The quantization peer: NVIDIA ModelOpt's real ONNX PTQ (in its own venv .venv-modelopt) on the tiny random
DistilBERT, measured by the project's quality code beside our variants; and the one-line error without ModelOpt."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from enc2triton import report
from enc2triton.core import io
from enc2triton.quantize import quantize
from enc2triton.measure import quant_peers as qp
from enc2triton.core.io import StageError


def test_missing_venv_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("ENC2TRITON_MODELOPT_PYTHON", raising=False)
    monkeypatch.setattr(qp, "MODELOPT_VENV", tmp_path / ".venv-modelopt")
    with pytest.raises(StageError, match=r"the ModelOpt venv .* does not exist: make modelopt .*requirements-modelopt.txt"):
        qp.modelopt_python()
    logs = tmp_path / "logs"
    assert qp.main(["--artifacts", str(tmp_path / "art"), "--logs", str(logs)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the ModelOpt venv") and "make modelopt" in err[0]
    assert not logs.exists()  # nothing left behind that looks like a result
    # an interpreter without modelopt (the project's own venv) says the same, naming it
    monkeypatch.setenv("ENC2TRITON_MODELOPT_PYTHON", sys.executable)
    with pytest.raises(StageError, match=r"nvidia-modelopt is not installed for .*: make modelopt"):
        qp.packages()
    with pytest.raises(StageError, match="unknown configuration"):
        qp.run(tmp_path, logs, configs=("int3",))


def test_calibration_batches_round_trip(tmp_path):
    import numpy as np

    feeds = [{"input_ids": np.ones((2, 5)), "attention_mask": np.ones((2, 5))}, {"input_ids": np.zeros((1, 7)), "attention_mask": np.ones((1, 7))}]
    path = qp.write_calibration(tmp_path / "c.npz", feeds)
    from enc2triton.measure.modelopt_runner import Batches  # the runner's reader (standalone: stdlib and numpy at import)

    b = Batches(str(path))
    assert len(b) == 2 and b.get_first()["input_ids"].shape == (2, 5)
    assert [x["input_ids"].shape for x in iter(b.get_next, None)] == [(2, 5), (1, 7)]
    b.rewind()
    assert b.get_next()["input_ids"].dtype == np.int64


@pytest.fixture(scope="module")
def modelopt_python() -> str:
    try:
        return qp.modelopt_python() if qp.packages() else ""
    except StageError as e:
        pytest.skip(str(e))


@pytest.mark.slow
def test_real_modelopt_beside_ours_on_tiny_model(modelopt_python, tiny_artifacts, tmp_path):
    art = Path(shutil.copytree(tiny_artifacts, tmp_path / "art"))  # the session's artifacts stay untouched
    logs = tmp_path / "logs"
    quantize.run(art, logs, precisions=("fp8",), measure_latency=False, progress=False)  # ours: fp8 only (int8's search is slow)
    fp32 = io.fp32_export(io.load_manifest(art), art)
    d = qp.run(art, logs, configs=("int8_max", "fp8_max"), progress=False)  # entropy: the same path, another method
    assert io.is_valid(fp32, art)  # ModelOpt rewrote a copy, never the export
    assert d["modelopt"]["versions"]["nvidia-modelopt"] == "0.47.0"
    rows = {r["name"]: r for r in d["rows"]}
    assert rows["ours int8"]["note"].startswith("not built") and rows["ours fp8"]["exact_mean_cos"] > 0.9
    for name in ("int8_max", "fp8_max"):
        r = rows[f"ModelOpt {name}"]
        assert not r.get("error"), r
        assert r["settings"]["high_precision_dtype"] == "fp32" and r["settings"]["calibration_eps"] == ["cpu"]
        g = r["graph"]
        assert g["quantized_matmuls"] > 0 and g["zero_points_all_zero"] and g["quantize_linear"] > 0
        assert g["quantized_types"] == (["int8"] if name.startswith("int8") else ["float8_e4m3fn"])
        assert 0.5 < r["exact_mean_cos"] <= 1.0 + 1e-9 and r["exact_min_cos"] <= r["exact_mean_cos"]
        assert 0.0 <= r["exact_top10"] <= 1.0
        assert ("mean_cos" in r) == name.startswith("int8")  # fp8: as written only
        assert (art / r["onnx"]["path"]).exists() and r["mb"] > 0
    assert d["calibration"]["texts"] > 100 and d["evaluation"]["texts"] > 100
    saved = json.loads((logs / "quant_peers.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(d["rows"]))
    md = (logs / "quant_peers.md").read_text()
    assert md.startswith("# " + qp.TITLE) and "| ModelOpt int8_max | int8 |" in md
    # a rerun of no configuration refreshes our rows and keeps ModelOpt's (same export and texts)
    again = qp.run(art, logs, configs=(), progress=False)
    assert [r["name"] for r in again["rows"]] == [r["name"] for r in d["rows"]]
    assert json.loads((logs / "quant_peers.json").read_text())["rows"][-1]["exact_mean_cos"] == d["rows"][-1]["exact_mean_cos"]
    # the report renders it
    body = report.render(logs, tmp_path / "REPORT.md", published=None)
    assert "## " + qp.TITLE in body and "ModelOpt fp8_max" in body


def test_help_names_every_default(capsys):
    with pytest.raises(SystemExit) as e:
        qp.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("usage: python -m enc2triton.quant_peers")
    for opt in ("--artifacts", "--logs", "--configs", "--calibration", "--evaluation", "--python"):
        assert opt in out
    flat = " ".join(out.split())  # argparse wraps the text
    assert flat.count("(default") >= 5 and "make modelopt" in flat
