"""How a precision variant compares with the fp32 graph on ONNX Runtime CPU: sentence embeddings, their agreement
(metrics.compare), with the fp32 reference embeddings cached across variants, and a round-robin latency."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from enc2triton.core import metrics
from enc2triton.runtime.engines import ort_session
from enc2triton.core.texts import in_order, length_batches, texts_sha256, tokenize


def embed(path_or_session, texts, tokenizer, input_names, max_length: int, batch_size: int = 16) -> np.ndarray:
    """sentence_embedding for every text, in the texts' order."""
    sess = ort_session(path_or_session) if isinstance(path_or_session, (str, Path)) else path_or_session
    order, feeds = length_batches(tokenizer, texts, input_names, max_length, batch_size)
    return in_order([sess.run(["sentence_embedding"], f)[0] for f in feeds], order)


def quality(ref_path, variant_path, texts, tokenizer, input_names, max_length: int, k: int = 10,
            batch_size: int = 16, graph_optimizations: bool = True) -> dict:
    """Sentence-embedding agreement of a variant with the reference (ONNX Runtime CPU): mean/min cosine, max abs
    error, relative L2 error and top-k retrieval agreement among the texts (metrics.compare).

    graph_optimizations=False runs the variant exactly as written (Q/DQ as float ops: the arithmetic TensorRT
    implements with int32 accumulation); True is what a CPU user gets (ORT fuses Q/DQ into its x86 int8 kernels)."""
    ref = _REF_CACHE.get(_ref_key(ref_path, texts, max_length, batch_size)) if isinstance(ref_path, (str, Path)) else None
    if ref is None:
        ref = embed(ref_path, texts, tokenizer, input_names, max_length, batch_size)
    got = embed(ort_session(variant_path, optimize=graph_optimizations), texts, tokenizer, input_names, max_length, batch_size)
    return metrics.compare(ref, got, k)


_REF_CACHE: dict = {}  # cache_reference fills it with the fp32 embeddings needed several times (same file, same texts)


def _ref_key(ref_path, texts, max_length: int, batch_size: int) -> tuple:
    st = Path(ref_path).stat()
    return str(Path(ref_path).resolve()), st.st_mtime_ns, st.st_size, texts_sha256(list(texts)), max_length, batch_size


def cache_reference(ref_path: Path, texts, tokenizer, input_names, max_length: int, batch_size: int = 16) -> None:
    """Embed `texts` with the reference once; quality() then reuses them while the file is unchanged (one entry kept)."""
    key = _ref_key(ref_path, texts, max_length, batch_size)
    if key not in _REF_CACHE:
        _REF_CACHE.clear()
        _REF_CACHE[key] = embed(ref_path, texts, tokenizer, input_names, max_length, batch_size)


def latency_ms(paths: dict, tokenizer, input_names, texts, batch: int = 8, seq: int = 128, runs: int = 10) -> dict:
    """ONNX Runtime CPU latency of one batch x seq request per model, {name: {"median": ms, "min": ms}}. The models
    take turns (round robin) so that load from other processes on a shared machine hits them alike."""
    sessions = {k: ort_session(v) for k, v in paths.items()}
    feed = tokenize(tokenizer, [texts[i % len(texts)] for i in range(batch)], input_names, seq, pad_to=seq)
    times: dict[str, list] = {k: [] for k in sessions}
    for sess in sessions.values():
        sess.run(None, feed)  # warm-up
    for _ in range(runs):
        for k, sess in sessions.items():
            t0 = time.perf_counter()
            sess.run(None, feed)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median": round(float(np.median(v)), 1), "min": round(float(np.min(v)), 1)} for k, v in times.items()}
