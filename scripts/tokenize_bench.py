"""The served tokenizer's time for one execution's texts: the full Hugging Face tokenizer vs its plain-ASCII path
(serve/triton_models/tokenizer.py: BERT's normalizer done in Python, the same tokenizer without it), on one thread and
on the Rust thread pool, with the ids checked equal. On a GPU the fused model's host side is mostly this
(results/h100/2026-12-07e/: 8.9 ms of a 19.9 ms execution of 226 texts).

    python scripts/tokenize_bench.py --out logs/tokenize_bench.json [--texts 226] [--model DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def best_ms(fn, rounds: int = 7, per_round: int = 8) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(per_round):
            fn()
        times.append((time.perf_counter() - t0) / per_round * 1e3)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the JSON log to write")
    ap.add_argument("--texts", type=int, default=226, help="texts per batch (default 226: a fused execution at 16 per request)")
    ap.add_argument("--model", type=Path, help="a folder with tokenizer.json (default: the bundled model)")
    ap.add_argument("--max-length", type=int, default=128)
    a = ap.parse_args(argv)

    from enc2triton.core import host, spec
    from enc2triton.core.texts import read_calibration, read_texts
    from enc2triton.export import models
    from enc2triton.serve.triton_models.tokenizer import TextTokenizer

    model = a.model or models.bundled_model_dir()
    corpus = read_texts(spec.EVALUATION_TEXTS) + read_calibration(spec.CALIBRATION_TEXTS, spec.EVALUATION_TEXTS)
    batch = (corpus * (a.texts // len(corpus) + 1))[:a.texts]
    tok = TextTokenizer(model, ["input_ids", "attention_mask"], a.max_length)
    if tok.ascii is None:
        sys.exit(f"{model}: the tokenizer's normalizer is not BertNormalizer: no ASCII path to compare")
    full = tok._encode
    same = all(x.ids == y.ids for x, y in zip(tok.encode(corpus), full(corpus)))
    rows = []
    for parallel in ("false", "true"):
        os.environ["TOKENIZERS_PARALLELISM"] = parallel  # read by `tokenizers` at each batch call
        row = {"threads": 1 if parallel == "false" else os.environ.get("RAYON_NUM_THREADS") or os.cpu_count(),
               "full_ms": round(best_ms(lambda: full(batch)), 3), "ascii_path_ms": round(best_ms(lambda: tok.encode(batch)), 3)}
        row["ratio"] = round(row["ascii_path_ms"] / row["full_ms"], 3)
        rows.append(row)
        print(f"threads {row['threads']}: full {row['full_ms']:.2f} ms, ASCII path {row['ascii_path_ms']:.2f} ms "
              f"({row['ratio']:.2f}x) for {len(batch)} texts")
    import tokenizers

    d = {"model": str(model.name), "texts": len(batch), "ascii_share": round(sum(t.isascii() for t in batch) / len(batch), 3),
         "ids_equal_on_corpus": same, "corpus_texts": len(corpus), "tokenizers": tokenizers.__version__,
         "hardware": host.hardware(), "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(d, indent=1))
    print(f"ids equal on {len(corpus)} texts: {same}; wrote {a.out}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
