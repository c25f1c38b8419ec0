"""Seeded fuzz of the real server (tiny model): 2,000 requests, every one answered or clearly refused.

Ensemble (TEXT): random byte strings (invalid UTF-8, NUL bytes, up to 100 kB), random batch shapes
and dtypes. Raw model (onnx_fp32): random dtypes, ranks, batch and sequence sizes, token ids
(negative, out of vocabulary, 10**9) and masks. Oracle: what must succeed succeeds (and matches ONNX
Runtime run locally on a sample), what must fail fails with a clear error; the server never crashes
(same PID, still ready) and a correct request afterwards returns the right embedding.
"""
from __future__ import annotations

import collections
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from enc2triton.core import io, spec
from enc2triton.serve import repository, server
from enc2triton.measure import soak
from enc2triton.core.texts import read_texts, tokenize
from enc2triton.runtime.engines import ort_session
from triton_helpers import stub_count

pytestmark = [pytest.mark.server, pytest.mark.slow]
SEED = 20240611
N_TEXT, N_SHAPE, N_RAW = 1100, 200, 700  # 2,000 cases
THREADS = 8
# what a crash or a dead stub looks like from the client side: never acceptable
CRASH_SIGNS = ("Stub process", "unhealthy", "Socket closed", "failed to connect", "Connection reset", "Deadline Exceeded",
               "Broken pipe", "not ready", "Cancelled")


@pytest.fixture(scope="module")
def fuzz_server(tiny_artifacts, tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    repo = repository.generate(tiny_artifacts, base / "model_repository")
    info = server.start(repo, base / "logs", timeout=180, quiet=True)
    yield info, base / "logs"
    server.stop(base / "logs", quiet=True)


class Local:
    """The tiny model run by ONNX Runtime here: what the server must return."""

    def __init__(self, art: Path):
        self.manifest = io.load_manifest(art)
        self.tok = __import__("transformers").AutoTokenizer.from_pretrained(str(art / "tokenizer"))
        self.sess = ort_session(art / "onnx" / "model_fp32.onnx")

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.concatenate([self.sess.run(["sentence_embedding"], tokenize(self.tok, [t], self.manifest["inputs"], 128))[0]
                               for t in texts])


# --- case generators (seeded) -------------------------------------------------------------------

ALPHABET = [chr(c) for c in range(32, 127)] + list("\t\n\r\x00\x01\x7f\u00e9\u00df\u4e2d\u6587\u0627\u0644\u05d0\u0301\u200b\ufeff\U0001f600\U0001f680\u202e")
WORDS = read_texts(spec.EVALUATION_TEXTS)


def rand_text_item(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.03:  # huge, valid: up to 100 kB of words
        n = rng.randint(20_000, 100_000)
        s = " ".join(rng.choice(WORDS) for _ in range(n // 60 + 1))
        return s.encode()[:n].decode("utf-8", "ignore").encode()
    if r < 0.05:  # huge random bytes (almost surely invalid UTF-8)
        return rng.randbytes(rng.randint(20_000, 100_000))
    if r < 0.25:
        return rng.randbytes(rng.randint(1, 64))  # random bytes
    if r < 0.32:  # valid text with one invalid sequence in it
        s = rng.choice(WORDS).encode()
        at = rng.randint(0, len(s))
        return s[:at] + rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80", b"\x80"]) + s[at:]
    if r < 0.40:
        return rng.choice([b"", b"\x00", b"\x00" * rng.randint(1, 300), b" \t\n ", b"\xef\xbb\xbf", "\u202e\u200b".encode()])
    if r < 0.70:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 400))).encode()
    return rng.choice(WORDS).encode()


def valid_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def text_case(rng: random.Random, max_batch: int) -> dict:
    items = [rand_text_item(rng) for _ in range(rng.randint(1, max_batch))]
    if rng.random() < 0.5:  # half the requests all valid UTF-8, so the success path gets fuzzed as much
        items = [b if valid_utf8(b) else b.decode("utf-8", "replace").encode() for b in items]
    ok = all(valid_utf8(b) for b in items)
    return {"kind": "text", "array": np.array([[b] for b in items], dtype=object), "dtype": "BYTES",
            "expect": "ok" if ok else "utf8", "items": items}


def shape_case(rng: random.Random, max_batch: int) -> dict:
    """TEXT tensors of the wrong shape or type: all must be refused."""
    n = rng.randint(1, max_batch)
    what = rng.choice(["empty", "over", "rank1", "wide", "rank3", "int64", "fp32", "empty_inner"])
    item = lambda: rand_text_item(rng) if rng.random() < 0.5 else b"ok"  # noqa: E731
    if what == "empty":
        arr = np.zeros((0, 1), dtype=object)
    elif what == "over":
        arr = np.array([[item()] for _ in range(max_batch + rng.randint(1, 40))], dtype=object)
    elif what == "rank1":
        arr = np.empty((n,), dtype=object)
        arr[:] = [item() for _ in range(n)]
    elif what == "wide":
        arr = np.array([[item(), item()] for _ in range(n)], dtype=object)
    elif what == "rank3":
        arr = np.empty((n, 1, 1), dtype=object)
        arr[...] = b"abc"
    elif what == "empty_inner":
        arr = np.zeros((n, 0), dtype=object)
    else:
        arr = (np.arange(n).reshape(n, 1)).astype(np.int64 if what == "int64" else np.float32)
    dtype = {"int64": "INT64", "fp32": "FP32"}.get(what, "BYTES")
    return {"kind": "shape", "what": what, "array": arr, "dtype": dtype, "expect": "error"}


def raw_case(rng: random.Random, max_batch: int, vocab: int, max_seq: int = 512) -> dict:
    """Raw model inputs; expect: ok | error | any (garbage in, garbage or an error out)."""
    expect = "ok"
    batch = rng.choice([rng.randint(1, max_batch)] * 8 + [0, max_batch + rng.randint(1, 8)])
    seq = rng.choice([rng.randint(1, 140)] * 8 + [0, rng.randint(513, 600)])
    if batch == 0 and seq == 0:  # never answered by tritonserver 2.51: test_empty_batch_is_answered
        seq = rng.randint(1, 140)
    if batch == 0 or batch > max_batch or seq == 0 or seq > max_seq:  # the served limit, refused by the runner
        expect = "error"
    ids = np.array([[rng.randrange(vocab) for _ in range(seq)] for _ in range(batch)], dtype=np.int64).reshape(batch, seq)
    kind = rng.random()
    ids_kind = "valid"
    if kind < 0.12 and ids.size:  # out of vocabulary: must be an error
        ids.flat[rng.randrange(ids.size)] = rng.choice([vocab, vocab + 7, 10**9, 2**62, -(vocab + 1), -10**9])
        expect, ids_kind = "error", "oov"
    elif kind < 0.2 and ids.size:  # negative within [-vocab, -1]: ORT would wrap these around; the runner refuses
        ids.flat[rng.randrange(ids.size)] = -rng.randint(1, vocab)
        expect, ids_kind = "error", "negative"
    mask = np.ones_like(ids)
    r = rng.random()
    if r < 0.15:
        mask = np.array([rng.randint(0, 1) for _ in range(ids.size)], dtype=np.int64).reshape(ids.shape)
        expect = "error" if expect == "error" else "any"
    elif r < 0.22:
        mask = np.array([rng.randint(-5, 5) for _ in range(ids.size)], dtype=np.int64).reshape(ids.shape)
        expect = "error" if expect == "error" else "any"
    inputs = {"input_ids": (ids, "INT64"), "attention_mask": (mask, "INT64")}
    r = rng.random()
    if r < 0.08:  # mismatched sequence lengths
        inputs["attention_mask"] = (np.ones((batch, seq + rng.randint(1, 5)), np.int64), "INT64")
        expect = "error"
    elif r < 0.2:  # wrong dtype
        dt = rng.choice(["INT32", "FP32", "BYTES", "FP16", "UINT8"])
        conv = {"INT32": np.int32, "FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8}
        name = rng.choice(["input_ids", "attention_mask"])
        a = inputs[name][0]
        with np.errstate(over="ignore"):
            inputs[name] = (a.astype(object) if dt == "BYTES" else a.astype(conv[dt]), dt)
        if dt == "BYTES":
            inputs[name] = (np.vectorize(lambda v: str(v).encode(), otypes=[object])(a) if a.size else a.astype(object), dt)
        expect = "error"
    elif r < 0.3:  # wrong rank
        name = rng.choice(["input_ids", "attention_mask"])
        a = inputs[name][0]
        inputs[name] = (a.reshape(-1) if rng.random() < 0.5 else a.reshape(batch, seq, 1), "INT64")
        expect = "error"
    elif r < 0.34:
        del inputs[rng.choice(["input_ids", "attention_mask"])]
        expect = "error"
    elif r < 0.37:
        inputs["token_type_ids"] = (np.zeros_like(ids), "INT64")
        expect = "error"
    return {"kind": "raw", "inputs": inputs, "expect": expect, "ids": ids_kind, "batch": batch, "seq": seq}


def make_cases(manifest: dict) -> list[dict]:
    rng = random.Random(SEED)
    mb, vocab = manifest["shapes"]["max_batch"], manifest["model"]["vocab_size"]
    cases = [text_case(rng, mb) for _ in range(N_TEXT)] + [shape_case(rng, mb) for _ in range(N_SHAPE)]
    rng.shuffle(cases)
    return cases + [raw_case(rng, mb, vocab, manifest["shapes"]["max_seq"]) for _ in range(N_RAW)]


# --- running and judging ----------------------------------------------------------------------------

def send(client, case: dict) -> tuple[str, object]:
    """('ok', outputs) | ('error', (status, message))."""
    try:
        if case["kind"] == "raw":
            ins = []
            for name, (a, dt) in case["inputs"].items():
                i = grpcclient.InferInput(name, list(a.shape), dt)
                i.set_data_from_numpy(a)
                ins.append(i)
            res = client.infer("onnx_fp32", ins, client_timeout=60)
        else:
            i = grpcclient.InferInput(spec.TEXT_INPUT, list(case["array"].shape), case["dtype"])
            i.set_data_from_numpy(case["array"])
            res = client.infer("ensemble_onnx_fp32", [i], outputs=[grpcclient.InferRequestedOutput("sentence_embedding")], client_timeout=60)
        return "ok", res.as_numpy("sentence_embedding")
    except InferenceServerException as e:
        return "error", (str(e.status()), str(e))
    except Exception as e:  # the client library refused to build the request: also a clear error, ours
        return "client", (type(e).__name__, str(e))


def judge(case: dict, outcome: str, value, hidden: int) -> str | None:
    """None when the outcome is acceptable, else what is wrong."""
    if outcome == "error":
        status, msg = value
        if any(s.lower() in msg.lower() for s in CRASH_SIGNS) or "UNAVAILABLE" in status:
            return f"crash-like error: {status} {msg[:200]}"
        if not msg.strip():
            return "error without a message"
    if case["expect"] == "ok":
        if outcome != "ok":
            return f"expected a result, got {outcome}: {str(value)[:300]}"
        n = case["array"].shape[0] if case["kind"] != "raw" else case["batch"]
        if value is None or value.shape != (n, hidden) or not np.isfinite(value).all():
            return f"bad result {None if value is None else value.shape}"
    elif case["expect"] == "utf8":
        if outcome != "error" or "not valid UTF-8" not in value[1]:
            return f"expected the UTF-8 error, got {outcome}: {str(value)[:200]}"
    elif case["expect"] == "error":
        if outcome == "ok":
            return "expected an error, got a result"
        if case.get("ids") == "oov" and outcome == "error" and "INVALID_ARG" not in value[1] and "out of" not in value[1]:
            return f"out-of-vocabulary id without a clear message: {value[1][:200]}"
    return None


def test_fuzz_2000_cases(fuzz_server, tiny_artifacts):
    info, logs = fuzz_server
    manifest = io.load_manifest(tiny_artifacts)
    hidden = manifest["model"]["hidden_size"]
    cases = make_cases(manifest)
    assert len(cases) == 2000
    local_clients = threading.local()

    def run(case):
        if not hasattr(local_clients, "c"):
            local_clients.c = grpcclient.InferenceServerClient(info.grpc)
        return send(local_clients.c, case)

    t0 = time.perf_counter()
    ensemble = [c for c in cases if c["kind"] != "raw"]
    with ThreadPoolExecutor(THREADS) as pool:  # TEXT cases concurrently (the dynamic batcher merges them)
        results = list(pool.map(run, ensemble))
    # raw-model cases one at a time: a bad request merged with good ones fails them all
    # (test_bad_token_ids_do_not_fail_their_batch_neighbours), which would blur the verdict per case
    c = grpcclient.InferenceServerClient(info.grpc)
    raw = [x for x in cases if x["kind"] == "raw"]
    results += [send(c, x) for x in raw]
    elapsed = time.perf_counter() - t0
    cases = ensemble + raw

    problems = []
    tally = collections.Counter()
    for case, (outcome, value) in zip(cases, results):
        tally[(case["kind"], case.get("what") or case.get("ids") or case["expect"], outcome)] += 1
        why = judge(case, outcome, value, hidden)
        if why:
            problems.append({"kind": case["kind"], "expect": case["expect"], "why": why})
    # the embeddings are the right ones, not just well-formed: a sample against ONNX Runtime here
    local = Local(tiny_artifacts)
    ok_text = [(case, v) for case, (o, v) in zip(cases, results) if case["kind"] == "text" and o == "ok"]
    sample = random.Random(SEED).sample(ok_text, min(60, len(ok_text)))
    for case, got in sample:
        texts = [b.decode() for b in case["items"]]
        if sum(len(t) for t in texts) > 20_000:
            continue
        want = local.embed(texts)
        if not np.allclose(got, want, atol=1e-4):
            problems.append({"kind": "text", "why": f"embedding differs from ONNX Runtime by {np.abs(got - want).max():.3g}"})
    negative_accepted = sum(1 for case, (o, _) in zip(cases, results) if case.get("ids") == "negative" and o == "ok")
    print(f"\nfuzz: {len(cases)} cases in {elapsed:.1f}s; outcomes: {dict(sorted(tally.items()))}; "
          f"negative token ids answered with a result (not an error): {negative_accepted}")
    assert not problems, problems[:20]
    # the server never crashed: same process, ready, every model ready, and still right
    assert server.status(logs).pid == info.pid and server.is_ready(info)
    assert {n: s["state"] for n, s in server.model_states(info).items()} == {"tokenizer": "READY", "onnx_fp32": "READY", "ensemble_onnx_fp32": "READY"}
    stubs = [p for p in soak.process_tree(info.pid) if p != info.pid]
    assert len(stubs) == stub_count(logs.parent / "model_repository")  # no stub died and was replaced
    text = ["A correct request after the fuzz.", "And a second sentence."]
    got = send(c, {"kind": "text", "array": np.array([[t.encode()] for t in text], dtype=object), "dtype": "BYTES"})
    assert got[0] == "ok"
    np.testing.assert_allclose(got[1], local.embed(text), atol=1e-5)
    assert elapsed < 150, f"fuzz took {elapsed:.0f}s"


def test_negative_token_ids_are_refused(fuzz_server):
    info, _ = fuzz_server
    c = grpcclient.InferenceServerClient(info.grpc)
    ids = np.array([[101, -5, 2054, 102]], dtype=np.int64)
    outcome, value = send(c, {"kind": "raw", "inputs": {"input_ids": (ids, "INT64"), "attention_mask": (np.ones_like(ids), "INT64")}})
    assert outcome == "error" and "token id" in value[1]


def test_bad_token_ids_do_not_fail_their_batch_neighbours(fuzz_server):
    """Occupy the model instances, then send 1 bad + 7 good requests of one shape: they queue and merge."""
    info, _ = fuzz_server
    local_clients = threading.local()
    good = np.random.RandomState(0).randint(1000, 2000, (1, 16)).astype(np.int64)

    def go(kind):
        if not hasattr(local_clients, "c"):
            local_clients.c = grpcclient.InferenceServerClient(info.grpc)
        ids = {"slow": np.ones((8, 512), np.int64), "bad": np.where(np.arange(16) == 3, 10**9, good), "good": good}[kind]
        return kind, send(local_clients.c, {"kind": "raw", "inputs": {"input_ids": (ids, "INT64"), "attention_mask": (np.ones_like(ids), "INT64")}})

    ref = go("good")[1][1]
    failed_good = 0
    with ThreadPoolExecutor(16) as pool:
        for _ in range(8):
            futs = [pool.submit(go, "slow") for _ in range(3)]
            time.sleep(0.005)
            futs += [pool.submit(go, "bad")] + [pool.submit(go, "good") for _ in range(7)]
            for kind, (outcome, value) in (f.result() for f in futs):
                if kind == "good":
                    if outcome != "ok":
                        failed_good += 1
                    else:
                        np.testing.assert_allclose(value, ref, atol=1e-5)  # merged, still each its own row
                if kind == "bad":
                    assert outcome == "error"
    assert failed_good == 0, f"{failed_good} good requests failed because a neighbour in their batch was bad"


@pytest.mark.xfail(strict=True, reason="tritonserver 2.51 (Python backend): a request whose batch is 0 and whose inputs are all "
                   "empty ([0, 0]) is never answered: the client waits until its own timeout and the server keeps ~25 kB per "
                   "such request (upstream; only the raw-model endpoints take INT64 inputs, the TEXT ensembles refuse batch 0)")
def test_empty_batch_is_answered(fuzz_server):
    info, _ = fuzz_server
    c = grpcclient.InferenceServerClient(info.grpc)
    empty = np.zeros((0, 0), np.int64)
    ins = []
    for name in ("input_ids", "attention_mask"):
        i = grpcclient.InferInput(name, [0, 0], "INT64")
        i.set_data_from_numpy(empty)
        ins.append(i)
    t = time.perf_counter()
    with pytest.raises(InferenceServerException) as e:
        c.infer("onnx_fp32", ins, client_timeout=2)
    assert "Deadline" not in str(e.value), f"no answer within {time.perf_counter() - t:.1f}s"
