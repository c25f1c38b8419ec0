"""The GPU-serving machinery on the CPU: ragged batching, the phase metrics, core pinning, passages, the config search."""
from __future__ import annotations

import concurrent.futures as cf
import os

import numpy as np
import pytest
import tritonclient.http as httpclient

from enc2triton.core import host, io, spec
from enc2triton.serve import repository, server, serving_stats
from enc2triton.measure import perf, tune
from enc2triton.core.texts import load_tokenizer, passages, read_texts, tokenize
from triton_helpers import local_embed, raw_embed  # noqa: F401


@pytest.mark.server
@pytest.mark.parametrize("ragged", [True, False])
def test_ragged_batching_merges_requests_of_different_lengths(tiny_artifacts, tmp_path, ragged, monkeypatch):
    """With ragged batching the batcher hands the runner requests of any length in one execution (it groups them);
    without it only equal shapes merge. A long queue delay makes the batcher wait for all 8 requests."""
    monkeypatch.setenv("ENC2TRITON_METRICS_FLUSH_S", "0")  # the phase metrics of every execution, at once
    serving = spec.Serving(max_queue_delay_us=2_000_000, preferred_batch_sizes=(), ragged=ragged)
    repo = repository.generate(tiny_artifacts, tmp_path / "r", serving=serving)
    cfg = repository.read_config(repo / "onnx_fp32" / "config.pbtxt")
    assert all(i.allow_ragged_batch == ragged for i in cfg.input)
    assert [o.name for o in cfg.output] == ["sentence_embedding"]  # last_hidden_state is opt-in
    m = io.load_manifest(tiny_artifacts)
    from enc2triton.runtime.engines import ort_session
    sess = ort_session(tiny_artifacts / "onnx" / "model_fp32.onnx")
    rng = np.random.default_rng(0)
    feeds = [rng.integers(1000, 2000, size=(1, n)).astype(np.int64) for n in (8, 16, 8, 24, 16, 8, 24, 16)]
    logs = tmp_path / "logs"
    info = server.start(repo, logs, timeout=180, quiet=True)
    try:
        before = serving_stats.snapshot(info.http, f"{info.host}:{info.metrics_port}")
        # a client per request: one geventhttpclient client shared by threads can fail ("Cannot switch to a different thread")
        with cf.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda ids: raw_embed(httpclient.InferenceServerClient(info.http), httpclient, m["inputs"], ids),
                                feeds))
        after = serving_stats.snapshot(info.http, f"{info.host}:{info.metrics_port}")
    finally:
        server.stop(logs, quiet=True)
    for ids, out in zip(feeds, got):
        want = sess.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        np.testing.assert_allclose(out, want, atol=1e-5)
    d = serving_stats.delta(before, after)["onnx_fp32"]
    assert d["requests"] == 8
    if ragged:  # 8 requests of 3 lengths: one execution per instance at most (2), one engine call per length in each
        assert d["executions"] <= 2 and d["phase_items"]["engine_calls"] <= 6
    else:  # equal shapes only: at least one execution per length
        assert d["executions"] >= 3


def test_serving_stats_delta_and_breakdown():
    def snap(n, execs, ns):
        stat = {"inferences": n, "executions": execs, "success": (n, ns), "fail": (0, 0), "queue": (n, ns // 4),
                "compute_input": (n, 0), "compute_infer": (n, ns // 2), "compute_output": (n, 0), "batches": {4: execs}}
        return {"models": {"tokenizer": stat, "torch_fp16": stat, "ensemble_torch_fp16": stat},
                "phases": {"torch_fp16": {"seconds": {"gpu": execs * 2e-4, "execute": execs * 3e-4}, "items": {"executions": execs}}}}
    d = serving_stats.delta(snap(0, 0, 0), snap(40, 10, 40_000_000))
    assert d["torch_fp16"]["items_per_execution"] == 4 and d["torch_fp16"]["queue_ms"] == 0.25
    assert d["torch_fp16"]["phase_ms_per_execution"] == {"gpu": 0.2, "execute": 0.3} and d["torch_fp16"]["batch_sizes"] == {"4": 10}
    bd = serving_stats.breakdown({"avg_ms": 2.0, "server_stats": d}, "ensemble_torch_fp16")
    # Triton's 0.5 ms of compute per execution: 0.3 in the model's execute() (0.2 of it GPU), 0.2 in the Python backend
    assert bd["model"]["phases_ms"] == {"gpu": 0.2, "python_backend": 0.2, "other": 0.1}
    assert bd["rest_ms"] == 0.5  # 2 x (0.25 + 0.5) = 1.5 ms of 2.0 is queue + compute


def test_core_split_and_lists(monkeypatch):
    assert host.parse_cpus("0-3,6") == [0, 1, 2, 3, 6] and host.format_cpus([0, 1, 2, 3, 6]) == "0-3,6"
    with pytest.raises(ValueError):
        host.parse_cpus("a-b")
    monkeypatch.setattr(host, "usable_cpus", lambda: list(range(16)))
    assert host.split_cpus("auto") == (list(range(12)), [12, 13, 14, 15])
    assert host.split_cpus("14-15") == (list(range(14)), [14, 15]) and host.split_cpus("none") == (None, None)
    monkeypatch.setattr(host, "usable_cpus", lambda: [0, 1])
    assert host.split_cpus("auto") == (None, None)  # a 2-core box is not halved
    with pytest.raises(ValueError):
        host.split_cpus("0-1")


def test_passages_are_real_texts_up_to_a_token_budget(tiny_artifacts):
    tok = load_tokenizer(tiny_artifacts / "tokenizer")
    texts = read_texts(spec.EVALUATION_TEXTS)
    ps = passages(tok, texts, 128)
    assert " ".join(ps) == " ".join(texts)  # every text, in order, once
    lens = [len(x) for x in tok(ps)["input_ids"]]
    single = max(len(x) for x in tok(texts)["input_ids"])
    assert all(n <= max(128, single) for n in lens) and np.median(lens) > 64


@pytest.mark.server
def test_tune_measures_candidates_and_repository_applies_the_choice(tiny_artifacts, tmp_path, capsys):
    logs = tmp_path / "logs"
    r = tune.run(tiny_artifacts, logs, device="cpu", loads=((2, 2),), instances=(2,), tokenizer_instances=(2,),
                 settings=perf.Settings(window_ms=300, max_trials=4, stability=100), budget=5000)
    assert r["status"] == "complete" and (logs / "tune.md").exists() and not (logs / "tune_repository").exists()
    assert r["server"]["mps"] == "off"  # recorded: under CUDA MPS (--mps) more GPU instances may win
    assert [c["changed"] for c in r["candidates"]] == ["defaults", "ragged=off", "batching=greedy"]
    for c in r["candidates"]:
        res = c["results"]["2x2"]
        assert res["throughput"] > 0 and "ensemble_onnx_fp32" + spec.TAG_SEP + c["id"] in res["server_stats"]
    out = tmp_path / "repo"
    assert repository.main(["--artifacts", str(tiny_artifacts), "--out", str(out), "--tuned", str(logs / "tune.json")]) == 0
    chosen = next(c for c in r["candidates"] if c["id"] == r["chosen"]["id"])
    cfg = repository.read_config(out / "onnx_fp32" / "config.pbtxt")
    assert all(i.allow_ragged_batch == chosen["serving"]["ragged"] for i in cfg.input)
    assert repository.main(["--artifacts", str(tiny_artifacts), "--out", str(tmp_path / "g"), "--device", "gpu", "--gpus", "0",
                            "--tuned", str(logs / "tune.json")]) == 1
    assert "measured for --device cpu" in capsys.readouterr().err


def test_tune_score_leaves_out_a_load_nobody_meets():
    """A load every candidate serves over the budget says nothing about them; an unstable level is not within it."""
    from enc2triton.measure import tune
    cands = [{"results": {"16x64": {"throughput": 19000, "p99_ms": 80}, "1x128": {"throughput": 7600, "p99_ms": 30}}},
             {"results": {"16x64": {"throughput": 16000, "p99_ms": 90}, "1x128": {"throughput": 9100, "p99_ms": 35}}},
             {"results": {"16x64": {"throughput": 17000, "p99_ms": 95}, "1x128": {"throughput": 9900, "p99_ms": 20,
                                                                                  "unstable": {"windows": 8}}}}]
    assert tune.score(cands, None, 50.0) == ["16x64"]
    assert [c["score"] for c in cands] == [round(7600 / 9100, 4), 1.0, round(1e-9, 4)]


@pytest.mark.server
def test_fused_model_serves_the_ensembles_embeddings_in_one_hop(tiny_artifacts, tmp_path, monkeypatch):
    """fused_<variant>: TEXT in, the same embeddings as the ensemble (same tokenizer, same engine), requests of any
    length merged into one execution and tokenized together; bad requests fail alone and the model stays up."""
    from tritonclient.utils import InferenceServerException
    from triton_helpers import embed

    monkeypatch.setenv("ENC2TRITON_METRICS_FLUSH_S", "0")
    serving = spec.Serving(max_queue_delay_us=2_000_000, preferred_batch_sizes=(), fused=True, fused_tokenizer_threads=2)
    repo = repository.generate(tiny_artifacts, tmp_path / "r", serving=serving, only=["onnx_fp32"])
    assert "fused_onnx_fp32" in io.read_json(repo / "repository.json")["models"]
    cfg = repository.read_config(repo / "fused_onnx_fp32" / "config.pbtxt")
    assert [(i.name, i.data_type) for i in cfg.input] == [(spec.TEXT_INPUT, repository.mc.TYPE_STRING)]
    assert cfg.parameters["token_inputs"].string_value == ",".join(io.load_manifest(tiny_artifacts)["inputs"])
    assert spec.kind_of("fused_onnx_fp32") == "fused" and spec.variant_of("fused_onnx_fp32").name == "onnx_fp32"
    texts = ["short", "a somewhat longer sentence about serving", "x " * 40, "Mixed: 日本語 café 😀", "two words",
             "the quick brown fox jumps over the lazy dog", "", "one more line of text here"]
    logs = tmp_path / "logs"
    info = server.start(repo, logs, timeout=180, quiet=True)
    try:
        c = httpclient.InferenceServerClient(info.http)
        before = serving_stats.snapshot(info.http, f"{info.host}:{info.metrics_port}")
        with cf.ThreadPoolExecutor(8) as pool:  # a client per thread (geventhttpclient)
            got = list(pool.map(lambda t: embed(httpclient.InferenceServerClient(info.http), httpclient, [t.encode()],
                                                "fused_onnx_fp32"), texts))
        after = serving_stats.snapshot(info.http, f"{info.host}:{info.metrics_port}")
        ens = embed(c, httpclient, [t.encode() for t in texts], "ensemble_onnx_fp32")
        many = embed(c, httpclient, [t.encode() for t in texts], "fused_onnx_fp32")
        with pytest.raises(InferenceServerException, match="not valid UTF-8"):
            embed(c, httpclient, [b"fine", b"\xff\xfe broken"], "fused_onnx_fp32")
        with pytest.raises(InferenceServerException):  # more strings than the model's max batch
            embed(c, httpclient, [b"a"] * (io.load_manifest(tiny_artifacts)["shapes"]["max_batch"] + 1), "fused_onnx_fp32")
        assert server.is_ready(info)
        again = embed(c, httpclient, [b"still right"], "fused_onnx_fp32")
    finally:
        server.stop(logs, quiet=True)
    np.testing.assert_allclose(np.concatenate(got), ens, atol=1e-5)
    np.testing.assert_allclose(many, ens, atol=1e-5)
    np.testing.assert_allclose(again, local_embed(tiny_artifacts, ["still right"]), atol=1e-5)
    d = serving_stats.delta(before, after)["fused_onnx_fp32"]
    assert d["requests"] == len(texts) and d["executions"] <= 2  # merged: one execution per instance at most
    assert d["phase_items"]["texts"] == len(texts) and d["phase_items"]["engine_calls"] <= 2
    bd = serving_stats.breakdown({"server_stats": {"fused_onnx_fp32": d}, "avg_ms": 5.0}, "fused_onnx_fp32")
    assert "tokenizer" not in bd and "tokenize" in bd["model"]["phases_ms"]


def test_tokenizer_fast_batch_gives_the_ids_of_the_full_encoding(tiny_artifacts):
    """The served tokenizer skips character offsets (encode_batch_fast): the same ids, masks and padding."""
    from enc2triton.serve.triton_models.tokenizer import TextTokenizer

    tok = TextTokenizer(tiny_artifacts / "tokenizer", ["input_ids", "attention_mask"], 128, [16, 32, 64, 128])
    texts = read_texts(spec.EVALUATION_TEXTS) + ["", "Mixed: 日本語 العربية 😀 café", "word " * 400]
    fast = tok(texts)
    tok.encode = tok.tok.encode_batch
    np.testing.assert_array_equal(fast["input_ids"], tok(texts)["input_ids"])
    np.testing.assert_array_equal(fast["attention_mask"], tok(texts)["attention_mask"])


def test_tokenizer_ascii_path_gives_the_full_tokenizers_ids(tmp_path):
    """Plain ASCII texts skip BertNormalizer (done in Python, then the same tokenizer without it): the full tokenizer's
    ids and token types for real texts, random ASCII (control characters included), the special tokens' texts in any
    case, mixed batches; a cased BertNormalizer too; any other normalizer has no ASCII path."""
    import json
    import random
    import shutil

    from tokenizers import Tokenizer

    from enc2triton.export import models
    from enc2triton.serve.triton_models.tokenizer import TextTokenizer

    rng = random.Random(7)
    pieces = ["a", "B", " ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x00", "\x7f", ".", "'", "##", "Hello", "WORLD",
              "[CLS]", "[unk]", "[Pad]", "[MASK]", "1", "é", "日", "\u00a0"]
    texts = (read_texts(spec.EVALUATION_TEXTS) + ["", " ", "word " * 400, "[UNK] x", "X" * 150]
             + ["".join(chr(rng.randrange(128)) for _ in range(rng.randrange(60))) for _ in range(1500)]
             + ["".join(rng.choice(pieces) for _ in range(rng.randrange(30))) for _ in range(1500)])
    src = models.bundled_model_dir()
    for case in ("uncased", "cased", "other"):
        d = tmp_path / case
        d.mkdir()
        shutil.copy(src / "tokenizer_config.json", d)
        cfg = json.loads((src / "tokenizer.json").read_text())
        if case == "cased":
            cfg["normalizer"]["lowercase"] = False
        if case == "other":
            cfg["normalizer"] = {"type": "Lowercase"}
        (d / "tokenizer.json").write_text(json.dumps(cfg))
        tok = TextTokenizer(d, ["input_ids", "attention_mask"], 128)
        if case == "other":
            assert tok.ascii is None
            continue
        assert tok.ascii is not None
        ref = Tokenizer.from_file(str(d / "tokenizer.json"))
        ref.enable_truncation(128)
        ref.no_padding()
        got, want = tok.encode(texts), ref.encode_batch(texts)
        bad = [t for t, g, w in zip(texts, got, want) if (g.ids, g.type_ids) != (w.ids, w.type_ids)]
        assert not bad, f"{case}: {len(bad)} texts differ, e.g. {bad[:3]!r}"
        assert sum(tok.ascii.prepare(t) is not None for t in texts) > len(texts) // 2  # the path is really taken


def test_tokenizer_batch_equals_the_libraries_own_padding():
    """The served tokenizer's arrays (one scatter per output) are what `tokenizers` pads itself, token types included
    (the bundled BERT has them), for empty, non-ASCII and truncated texts."""
    from tokenizers import Tokenizer

    from enc2triton.export import models
    from enc2triton.serve.triton_models.tokenizer import TextTokenizer

    d = models.bundled_model_dir()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    tok = TextTokenizer(d, names, 128, [16, 32, 64, 128])
    texts = read_texts(spec.EVALUATION_TEXTS)[:40] + ["", "Mixed: 日本語 العربية 😀 café", "word " * 400]
    got = tok(texts)
    ref = Tokenizer.from_file(str(d / "tokenizer.json"))
    ref.enable_truncation(128)
    ref.enable_padding(pad_id=tok.pad_token_id, length=got["input_ids"].shape[1])
    encs = ref.encode_batch(texts)
    assert got["input_ids"].shape == (len(texts), 128)  # the truncated text sets the width
    for name, field in zip(names, ("ids", "attention_mask", "type_ids")):
        np.testing.assert_array_equal(got[name], np.array([getattr(e, field) for e in encs], np.int64))
