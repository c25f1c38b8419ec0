"""Serving peers: request bodies, perf_analyzer's openai CSV (captured from a real run), and the real infinity-emb
started on the CPU, checked against the PyTorch reference and driven by the real perf_analyzer."""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from enc2triton.core import tools
from enc2triton.measure import perf, serving_peers as sp
from enc2triton.core.io import StageError

FIX = Path(__file__).parent / "fixtures"


def test_requests_take_consecutive_texts_like_batch_size():
    texts = [f"t{i}" for i in range(6)]
    assert sp.groups(texts, 1) == [[t] for t in texts]
    assert sp.groups(texts, 3) == [["t0", "t1", "t2"], ["t3", "t4", "t5"]]
    # 6 texts, 4 a request: wrapped until every request is full and each text is sent equally often (twice)
    assert sp.groups(texts, 4) == [["t0", "t1", "t2", "t3"], ["t4", "t5", "t0", "t1"], ["t2", "t3", "t4", "t5"]]
    data = sp.openai_input_data(texts, 3, "m")
    assert data == {"data": [{"payload": [{"model": "m", "input": ["t0", "t1", "t2"]}]},
                             {"payload": [{"model": "m", "input": ["t3", "t4", "t5"]}]}]}


def test_parse_real_openai_csv_counts_texts():
    # perf_analyzer 2.51 --service-kind openai --verbose-csv: infinity-emb, all-MiniLM-L6-v2, 16 texts a request, c=1
    (row,) = sp.parse_csv((FIX / "perf_analyzer_openai_x16.csv").read_text(), per_request=16)
    assert row["requests_per_second"] == pytest.approx(0.911429)
    assert row["throughput"] == pytest.approx(0.911429 * 16)  # texts/s, as perf's throughput at -b 16
    assert row["avg_ms"] == pytest.approx(1094.858) and row["p99_ms"] == pytest.approx(2778.150)
    # Little's law at concurrency 1: perf_analyzer's infer/s are requests, not texts
    assert row["requests_per_second"] * row["avg_ms"] / 1000 == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="p50 latency"):
        sp.parse_csv("Concurrency,Inferences/Second\n1,9.9\n")


def test_perf_command_is_openai_async(tmp_path):
    h = sp.PeerServer("infinity", 1, "127.0.0.1", 8000, "m", "/x", "cpu", "0.0.78", {}, "", "", "", {})
    cmd = sp.perf_command(tools.Tool(Path("pa")), h, 4, tmp_path / "d.json", tmp_path / "c.csv", perf.Settings(), cycle=8)
    s = " ".join(cmd)
    assert "--service-kind openai --endpoint v1/embeddings -i http -u 127.0.0.1:8000 -m m --async" in s
    assert "--concurrency-range 4 " in s and "--measurement-request-count 104" in s  # whole passes over 8 bodies


def test_missing_peer_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("ENC2TRITON_PEER_PYTHON", sys.executable)  # the project's venv: no infinity-emb in it
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(StageError, match=r"infinity-emb is not installed for .*make peers"):
        sp.start("infinity", tmp_path, logs=tmp_path / "logs")
    with pytest.raises(StageError, match="unknown serving peer 'nope'"):
        sp.get("nope")


def _infinity_problem() -> str | None:
    try:
        sp.packages(sp.PEERS["infinity"])
    except StageError as e:
        return str(e)
    return None


@pytest.mark.server
@pytest.mark.skipif(_infinity_problem() is not None, reason=f"{_infinity_problem()}")
def test_real_infinity_matches_reference_and_perf_analyzer_drives_it(tiny_distilbert, tmp_path):
    logs = tmp_path / "logs"
    texts = [ln for ln in (Path(perf.spec.EVALUATION_TEXTS).read_text().splitlines()) if ln.strip()][:32]
    # a start that gives up (the same path as Ctrl-C during the warm-up) leaves no process behind
    with pytest.raises(StageError, match="not serving"):
        sp.start("infinity", tiny_distilbert, logs=logs, timeout=0.5)
    with sp.start("infinity", tiny_distilbert, logs=logs, served_name="tiny", batch_size=16) as h:
        assert h.version == "0.0.78" and h.alive() and h.settings["batch_size"] == 16 and h.settings["dtype"] == "float32"
        assert "--no-vector-disk-cache" in h.command and h.record()["normalizes"] is True
        q = sp.quality(h, texts)
        assert q["mean_cos"] > 0.99999 and q["min_cos"] > 0.9999  # the masked mean, as ours
        assert q["peer_norm_min"] == pytest.approx(1.0, abs=1e-5) and q["peer_norm_max"] == pytest.approx(1.0, abs=1e-5)
        fast = perf.Settings(window_requests=20, stability=200, max_trials=6, timeout=120)
        e = sp.sweep(h, texts, 16, (1,), fast, logs)
        assert e["status"] == "complete" and e["window_cycle"] == 2, e
        (row,) = e["rows"]
        assert row["throughput"] == pytest.approx(16 * row["requests_per_second"])
        assert 0.6 < row["requests_per_second"] * row["avg_ms"] / 1000 <= 1.05  # concurrency 1: one request in flight
        assert (logs / "perf_peer_infinity_x16.csv").exists() and "--service-kind openai" in e["commands"][0]
        body = json.loads((logs / "perf_inputs" / "peer_infinity_x16.json").read_text())["data"]
        assert [d["payload"][0]["input"] for d in body] == [texts[:16], texts[16:]]
        pid, port = h.pid, h.port
    assert not os.path.exists(f"/proc/{pid}")
    with pytest.raises(ConnectionRefusedError):  # nobody listens there (a bind test would trip over TIME_WAIT)
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert not sp._LIVE
