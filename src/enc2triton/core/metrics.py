"""Embedding quality metrics (pure numpy), shared by the quantization stage and the Triton client."""
from __future__ import annotations

import numpy as np


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def topk_neighbours(emb: np.ndarray, k: int, decimals: int | None = None) -> np.ndarray:
    """Indices of each row's k nearest other rows by cosine (self excluded; equal cosines: the lower index first).
    decimals: cosines rounded to that many decimals first, so float noise below them cannot reorder near-ties."""
    x = np.asarray(emb, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    if decimals is not None:
        sim = np.round(sim, decimals)
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def topk_agreement(ref: np.ndarray, got: np.ndarray, k: int = 10, decimals: int | None = None) -> float:
    """Mean overlap of each text's k nearest neighbours among the texts, variant vs reference (1.0 = same retrieval).
    It depends on how many texts there are (k of 64 is a larger share than k of 128). decimals: topk_neighbours'."""
    k = min(k, len(ref) - 1)
    if k < 1:
        return 1.0
    a, b = topk_neighbours(ref, k, decimals), topk_neighbours(got, k, decimals)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


def compare(ref: np.ndarray, got: np.ndarray, k: int = 10) -> dict:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.shape != got.shape:
        raise ValueError(f"embedding shapes differ: reference {ref.shape}, variant {got.shape}")
    cos = cosine_rows(ref, got)
    return {
        "n": int(len(ref)),
        "mean_cos": float(cos.mean()),
        "min_cos": float(cos.min()),
        "max_abs": float(np.abs(ref - got).max()),
        "rel_l2": float(np.linalg.norm(ref - got) / max(np.linalg.norm(ref), 1e-12)),
        f"top{k}": topk_agreement(ref, got, k),
    }


def passes(result: dict, floor: dict) -> bool:
    """Mean and min cosine at or above the floor's, and top-10 agreement where the floor sets one and the result has it
    (results logged before there was a top-10 floor have none: judged on the cosines, as they were)."""
    ok = result["mean_cos"] >= floor["mean_cos"] and result["min_cos"] >= floor["min_cos"]
    return ok and (floor.get("top10") is None or result.get("top10") is None or result["top10"] >= floor["top10"])


def floor_text(floor: dict) -> str:
    """'mean >= 0.99, min >= 0.97, top-10 >= 0.97' (the parts the floor sets)."""
    names = {"mean_cos": "mean", "min_cos": "min", "top10": "top-10"}
    return ", ".join(f"{names.get(k, k)} >= {v}" for k, v in floor.items())
