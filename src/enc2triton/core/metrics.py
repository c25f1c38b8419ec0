"""Embedding quality metrics (pure numpy), shared by the quantization stage and the Triton client."""
from __future__ import annotations

import numpy as np


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def topk_neighbours(emb: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k nearest other rows by cosine (self excluded)."""
    x = np.asarray(emb, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def topk_agreement(ref: np.ndarray, got: np.ndarray, k: int = 10) -> float:
    """Mean overlap of each text's k nearest neighbours, variant vs reference (1.0 = same retrieval)."""
    k = min(k, len(ref) - 1)
    if k < 1:
        return 1.0
    a, b = topk_neighbours(ref, k), topk_neighbours(got, k)
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
    return result["mean_cos"] >= floor["mean_cos"] and result["min_cos"] >= floor["min_cos"]
