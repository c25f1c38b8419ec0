"""Shared fixtures: tiny random encoders (fast) and the bundled real model, exported once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from enc2triton.core import spec
from enc2triton.export import export, models  # noqa: E402


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> Path:
    return models.make_tiny(tmp_path_factory.mktemp("tiny_distilbert"), "distilbert")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return models.make_tiny(tmp_path_factory.mktemp("tiny_bert"), "bert")


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, tiny_distilbert) -> Path:
    """A verified ONNX export of the tiny DistilBERT with its manifest."""
    art = tmp_path_factory.mktemp("tiny_artifacts")
    export.run(model=str(tiny_distilbert), artifacts=art, shapes=spec.ShapeLimits(max_batch=8, opt_batch=4, max_seq=128, opt_seq=64))
    return art


@pytest.fixture(scope="session")
def real_artifacts(tmp_path_factory) -> Path:
    """The bundled all-MiniLM-L6-v2 exported (what users get offline)."""
    art = tmp_path_factory.mktemp("real_artifacts")
    export.run(model=str(models.bundled_model_dir()), artifacts=art)
    return art


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    """Put a shell script named nvidia-smi first on PATH: fake_nvidia_smi('case "$*" in ... esac')."""
    def install(body: str) -> Path:
        smi = tmp_path / "nvidia-smi"
        smi.write_text("#!/bin/sh\n" + body + "\n")
        smi.chmod(0o755)
        monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
        return smi
    return install
