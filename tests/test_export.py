"""Export + verification, model loading (offline fallback), manifest, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from enc2triton.core import io, spec
from enc2triton.export import export, models
from enc2triton.core.texts import tokenize
from enc2triton.runtime.engines import ort_session
from enc2triton.core.io import StageError

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_distilbert_export_manifest(tiny_artifacts, tiny_distilbert):
    m = io.load_manifest(tiny_artifacts)
    assert m["inputs"] == ["input_ids", "attention_mask"]  # DistilBERT: no token_type_ids
    assert m["outputs"] == list(spec.OUTPUTS)
    assert m["model"]["model_type"] == "distilbert" and not m["model"]["fallback"]
    assert m["model"]["source"] == "local folder" and len(m["model"]["config_sha256"]) == 64
    assert m["shapes"]["max_batch"] == 8 and m["shapes"]["max_seq"] == 128
    fp32 = m["variants"]["fp32"]["onnx"]
    assert io.is_valid(fp32, tiny_artifacts)
    ver = m["export"]["verification"]
    assert {(r["output"]) for r in ver} == set(spec.OUTPUTS) and all(r["ok"] and r["max_abs_diff"] <= 1e-4 for r in ver)
    assert any(r["batch"] > 1 for r in ver)  # padded batches verified


def test_dynamic_axes_and_names(tiny_artifacts):
    model = onnx.load(str(tiny_artifacts / "onnx" / "model_fp32.onnx"))
    assert model.opset_import[0].version >= 17
    for inp in model.graph.input:
        dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"], inp.name
    outs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert outs["sentence_embedding"][0] == "batch" and outs["last_hidden_state"][:2] == ["batch", "sequence"]


def test_bert_with_token_type_ids(tiny_bert, tmp_path):
    _, _, _, m = export.run(model=str(tiny_bert), artifacts=tmp_path, shapes=spec.ShapeLimits(max_seq=128, opt_seq=64))
    assert m["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]


def test_pooling_ignores_padding(tiny_artifacts):
    """The sentence embedding of a text is the same alone and padded inside a batch."""
    m = io.load_manifest(tiny_artifacts)
    sess = ort_session(tiny_artifacts / "onnx" / "model_fp32.onnx")
    tok = __import__("transformers").AutoTokenizer.from_pretrained(str(tiny_artifacts / "tokenizer"))
    alone = sess.run(["sentence_embedding"], tokenize(tok, ["short"], m["inputs"], 128))[0]
    padded = sess.run(["sentence_embedding"], tokenize(tok, ["short", "a much longer sentence with many more tokens"], m["inputs"], 128))[0]
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)


@pytest.mark.slow
def test_bundled_real_model_export(real_artifacts):
    m = io.load_manifest(real_artifacts)
    assert m["model"]["model_type"] == "bert" and m["model"]["hidden_size"] == 384
    assert max(r["max_abs_diff"] for r in m["export"]["verification"]) <= 1e-4


def test_offline_fallback_is_loud_and_recorded(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path, used, source, fallback = models.resolve(spec.DEFAULT_MODEL)
    assert fallback and used == "sentence-transformers/all-MiniLM-L6-v2" and "bundled" in source
    assert Path(path) == models.bundled_model_dir()
    assert "FALLING BACK" in capsys.readouterr().err


def test_unknown_model_offline_names_what_was_tried(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StageError) as e:
        models.resolve("no-such-org/no-such-model")
    assert "hub cache" in str(e.value) and "hub (" in str(e.value)


def test_no_fallback_flag(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StageError):
        models.resolve(spec.DEFAULT_MODEL, allow_fallback=False)


def test_unwritable_output_dir(tmp_path, tiny_distilbert):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root ignores permissions: use a path under a file instead
        ro = tmp_path / "a_file"
        ro.write_text("x")
    with pytest.raises(StageError, match="not writable"):
        export.run(model=str(tiny_distilbert), artifacts=ro / "artifacts")


def test_verification_failure_has_numbers(tiny_artifacts, tiny_distilbert):
    enc, tok, _ = models.load(str(tiny_distilbert))
    with pytest.raises(export.VerificationError, match=r"max abs diff .* > 1e-12"):
        export.verify(enc, tok, tiny_artifacts / "onnx" / "model_fp32.onnx", ["some text here", "and more"], 128, atol=1e-12)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_cli_help():
    r = subprocess.run([sys.executable, str(ROOT / "torch2onnx.py"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--model" in r.stdout


def test_interrupted_export_leaves_nothing_complete(tmp_path, tiny_distilbert):
    """SIGINT mid-run: no model_fp32.onnx and no manifest appear."""
    art = tmp_path / "art"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.Popen([sys.executable, str(ROOT / "torch2onnx.py"), "--model", str(tiny_distilbert), "--artifacts", str(art),
                          "--logs", str(tmp_path / "logs"), "--skip-flops"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (art / "tokenizer").exists():  # the export has begun
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    p.wait(60)
    if p.returncode == 0:  # finished before the signal landed: then everything must be complete and valid
        assert io.is_valid(io.load_manifest(art)["variants"]["fp32"]["onnx"], art)
    else:
        assert not (art / "manifest.json").exists()
        assert not (art / "onnx" / "model_fp32.onnx").exists()


def test_rerun_resumes_from_valid_export(tmp_path, tiny_distilbert, capsys):
    art = tmp_path / "art"
    export.run(model=str(tiny_distilbert), artifacts=art, force=False)
    first = io.load_manifest(art)["variants"]["fp32"]["onnx"]["sha256"]
    capsys.readouterr()
    export.run(model=str(tiny_distilbert), artifacts=art, force=False)
    assert "up to date" in capsys.readouterr().out
    onnx_file = art / "onnx" / "model_fp32.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-10])  # damaged: the hash check catches it, export redone
    export.run(model=str(tiny_distilbert), artifacts=art, force=False)
    assert io.load_manifest(art)["variants"]["fp32"]["onnx"]["sha256"] == first  # deterministic export


def test_new_model_drops_every_family_built_from_the_old_one(tiny_distilbert, tiny_bert, tmp_path):
    """Engines of another model are never served: a re-export of a different model drops the TensorRT and PyTorch
    sections (and derived ONNX variants); the same model keeps them."""
    art = tmp_path / "art"
    limits = spec.ShapeLimits(max_batch=8, opt_batch=4, max_seq=128, opt_seq=64)
    export.run(model=str(tiny_distilbert), artifacts=art, shapes=limits)
    io.update_manifest_sections({"trt": {"fp16": {"engine": None}}, "torch": {"fp16": {"package": {"path": "x"}}},
                                 "variants": {**io.load_manifest(art)["variants"], "fp16": {"onnx": {"path": "y"}}}}, art)
    export.run(model=str(tiny_distilbert), artifacts=art, shapes=limits, force=True)
    m = io.load_manifest(art)
    assert {"trt", "torch"} <= set(m) and "fp16" in m["variants"]
    export.run(model=str(tiny_bert), artifacts=art, shapes=limits)
    m = io.load_manifest(art)
    assert "trt" not in m and "torch" not in m and set(m["variants"]) == {"fp32"} and m["model"]["model_type"] == "bert"
