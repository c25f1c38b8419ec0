"""How many engine calls and padded tokens an ensemble's engine execution costs, by the PyTorch engine's own planner
(runtime/engines.py, TorchEngine.length_groups) on the real evaluation texts: the runner planning once per width of the
requests it was handed (before 2026-12-08) against once over all of them (runner._one_width). No GPU: the planner is
pure arithmetic on the rows' lengths, so this models the calls a GPU server makes, it does not time them.

The load modelled is the served sweep's 16 texts per request: the ensemble's tokenizer pads each of its executions (1-3
requests) to the bucket of that execution's longest text; an engine execution takes `--tokenizer-execs` of them (on the
H100 at concurrency 64 it took ~12 requests, 1.77 runs and 4.3 graph calls per execution: results/h100/2026-12-07e/).

    python scripts/planner_sim.py [--out logs/planner_sim.json] [--call-tokens 1024,2300]
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def planner(call_tokens: int, max_batch: int = 256):
    """A TorchEngine's planning methods over the serving shapes, without a package."""
    from enc2triton.core import spec
    from enc2triton.runtime.engines import TorchEngine

    eng = types.SimpleNamespace(call_tokens=call_tokens, meta={
        "seq_buckets": list(spec.ENGINE_SEQ_BUCKETS), "batch_buckets": list(spec.batch_buckets(max_batch)),
        "seq_multiple": spec.SEQ_BUCKETS[0], "min_batch": 1, "min_seq": 1})
    eng.bucket = lambda b, s: TorchEngine.bucket(eng, b, s)
    eng._rows_cost = lambda n, length: TorchEngine._rows_cost(eng, n, length)
    return eng, lambda mask: TorchEngine.length_groups(eng, mask)


def simulate(lengths: np.ndarray, call_tokens: int, executions: int, tokenizer_execs: int, per_request: int = 16,
             seed: int = 0) -> dict:
    from enc2triton.core import spec

    eng, length_groups = planner(call_tokens)
    rng = np.random.default_rng(seed)
    bucket = lambda n: next(b for b in spec.SEQ_BUCKETS if b >= n)  # noqa: E731 (the tokenizer's padding)
    out = {k: {"runs": 0, "calls": 0, "padded_tokens": 0} for k in ("per_width", "one_width")}
    for _ in range(executions):
        reqs = []
        for _ in range(tokenizer_execs):
            texts = [rng.choice(lengths, per_request) for _ in range(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))]
            width = bucket(max(int(t.max()) for t in texts))
            reqs += [(t, width) for t in texts]
        widths = sorted({w for _, w in reqs})
        for key, groups in (("per_width", [[r for r in reqs if r[1] == w] for w in widths]), ("one_width", [reqs])):
            for g in groups:
                width, rows = max(w for _, w in g), np.concatenate([t for t, _ in g])
                calls = length_groups((np.arange(width)[None, :] < rows[:, None]).astype(np.int64))
                o = out[key]
                o["runs"] += 1
                o["calls"] += len(calls)
                o["padded_tokens"] += sum(eng.bucket(len(r), n)[0] * n for r, n in calls)
    for o in out.values():
        o.update({k: round(v / executions, 2) for k, v in o.items()})
        o["cost_tokens"] = round(o["padded_tokens"] + o["calls"] * call_tokens)
    out["cost_ratio"] = round(out["one_width"]["cost_tokens"] / out["per_width"]["cost_tokens"], 3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/planner_sim.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="also write the results here (JSON)")
    ap.add_argument("--call-tokens", default="1024,2300", help="a call's fixed cost in tokens, one run each "
                    "(default %(default)s: spec.CALL_TOKENS, and FP8's measured fixed cost on an H100)")
    ap.add_argument("--executions", type=int, default=300, help="engine executions simulated (default %(default)s)")
    ap.add_argument("--tokenizer-execs", type=int, default=6, help="tokenizer executions per engine execution "
                    "(default %(default)s: ~12 requests; 39 for ~78 requests, as at 1 text per request and c = 256)")
    ap.add_argument("--per-request", type=int, default=16, help="texts per request (default %(default)s)")
    a = ap.parse_args(argv)
    from enc2triton.core import spec
    from enc2triton.core.texts import load_tokenizer, read_texts
    from enc2triton.export import models

    tok = load_tokenizer(models.bundled_model_dir())  # DistilBERT's WordPiece vocabulary, offline
    lengths = np.array([len(x) for x in tok(read_texts(spec.EVALUATION_TEXTS), truncation=True, max_length=512)["input_ids"]])
    res = {"texts": str(spec.EVALUATION_TEXTS.relative_to(spec.ROOT)), "median_tokens": float(np.median(lengths)),
           "executions": a.executions, "tokenizer_execs": a.tokenizer_execs, "per_request": a.per_request, "runs": {}}
    for ct in (int(x) for x in a.call_tokens.split(",")):
        r = res["runs"][str(ct)] = simulate(lengths, ct, a.executions, a.tokenizer_execs, a.per_request)
        for k in ("per_width", "one_width"):
            o = r[k]
            print(f"call_tokens {ct:>5} {k:<9}: {o['runs']:.2f} runs, {o['calls']:.2f} calls, {o['padded_tokens']:,.0f} padded "
                  f"tokens per execution (planner cost {o['cost_tokens']:,} tokens)")
        print(f"call_tokens {ct:>5} one_width / per_width planner cost: {r['cost_ratio']:.3f}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
