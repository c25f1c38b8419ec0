"""Texts in, token tensors out: the one place stages read text files and tokenize them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from enc2triton.core.io import StageError


def read_texts(path: Path) -> list[str]:
    """Non-empty stripped lines of a UTF-8 file; a clear error for a missing, unreadable or empty file."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StageError(f"texts file {path} not found") from None
    except IsADirectoryError:
        raise StageError(f"texts file {path} is a folder, not a file") from None
    except UnicodeDecodeError as e:
        raise StageError(f"texts file {path} is not UTF-8 ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise StageError(f"cannot read texts file {path}: {e.strerror or e}") from None
    texts = [ln for ln in (x.strip() for x in raw.splitlines()) if ln]
    if not texts:
        raise StageError(f"texts file {path} holds no text (one text per line expected)")
    return texts


def read_calibration(calibration: Path, evaluation: Path | None) -> list[str]:
    """The calibration texts: present, and never the evaluation texts (what a variant is judged on)."""
    calibration = Path(calibration)
    if not calibration.exists():
        raise StageError(f"calibration texts {calibration} not found (quantization needs them; never the evaluation texts)")
    if evaluation and Path(evaluation).exists() and calibration.resolve() == Path(evaluation).resolve():
        raise StageError("refusing to calibrate on the evaluation texts")
    return read_texts(calibration)


def texts_sha256(texts: list[str]) -> str:
    """The digest a log or cache records of the texts it measured on (joined by newlines, UTF-8)."""
    import hashlib

    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


def tokenize(tokenizer, texts: list[str], input_names, max_length: int, pad_to: int | None = None) -> dict[str, np.ndarray]:
    """int64 feeds for `input_names`: padded to the longest text (or exactly `pad_to`), truncated at max_length."""
    enc = tokenizer(texts, padding="max_length" if pad_to else "longest", truncation=True,
                    max_length=min(pad_to or max_length, max_length), return_tensors="np")
    return {n: enc[n].astype(np.int64) for n in input_names}


def length_batches(tokenizer, texts: list[str], input_names, max_length: int, batch_size: int = 16,
                   max_tokens: int = 2048):
    """Deterministic batches of similar-length texts at their natural lengths (sorted by length, at most
    `batch_size` texts and about `max_tokens` padded tokens each, so long texts don't pad short ones).
    Returns (order, feeds): feeds[i] holds texts order[...] in sequence."""
    lens = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (lens[i], i))
    groups, cur = [], []
    for j in order:
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * lens[j] > max_tokens):
            groups.append(cur)
            cur = []
        cur.append(j)
    if cur:
        groups.append(cur)
    feeds = [tokenize(tokenizer, [texts[j] for j in g], input_names, max_length) for g in groups]
    return order, feeds


def in_order(outputs: list[np.ndarray], order) -> np.ndarray:
    """Rows of per-batch outputs (of length_batches' feeds) put back in the texts' order."""
    out = np.concatenate(outputs)
    res = np.empty_like(out)
    res[np.asarray(order)] = out
    return res


def token_stats(tokenizer, texts: list[str]) -> dict:
    n = np.array([len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"]])
    return {"min": int(n.min()), "median": float(np.median(n)), "mean": round(float(n.mean()), 2), "max": int(n.max())}


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def passages(tokenizer, texts: list[str], max_tokens: int) -> list[str]:
    """Consecutive texts joined (with a space) into passages of at most `max_tokens` tokens each, as full as the next
    text allows: document-length inputs (a retrieval index embeds passages, not sentences) made of real sentences."""
    lens = [len(ids) - 2 for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]  # without [CLS]/[SEP]
    out, cur, n = [], [], 2
    for text, k in zip(texts, lens):
        if cur and n + k > max_tokens:
            out.append(" ".join(cur))
            cur, n = [], 2
        cur.append(text)
        n += k
    return out + ([" ".join(cur)] if cur else [])
