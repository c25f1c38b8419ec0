"""The INT8 graph does not depend on this machine's ONNX Runtime kernels: the check on a real artifacts folder.

Reruns the INT8 search of `--artifacts` (the same FP32 export, tokenizer, calibration texts and settings as
`python -m enc2triton.quantize`) with every MatMul of the exact float64 graphs summed in another order (as another
CPU's GEMM kernels would: exact.reordered_sums), ONNX Runtime's graph optimizations on, two intra-op threads and one
batch at a time, builds the Q/DQ graph from its choices and compares the bytes with the INT8 graph the manifest
records. Exit 0 when they are identical; writes the record to --out (JSON). The same check on the tiny test model is
tests/test_quantize.py::test_int8_search_does_not_depend_on_ort_kernels.

    .venv/bin/python scripts/int8_kernel_check.py --artifacts artifacts --out logs/int8_kernel_check.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from enc2triton.core import io, spec  # noqa: E402
from enc2triton.quantize import exact, int8_search  # noqa: E402
from enc2triton.runtime.engines import ort_session  # noqa: E402
from enc2triton.core.texts import load_tokenizer, read_calibration  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, default=spec.ARTIFACTS, help="a folder `python -m enc2triton.quantize` wrote")
    ap.add_argument("--out", type=Path, default=spec.LOGS / "int8_kernel_check.json", help="the record (default %(default)s)")
    a = ap.parse_args()
    import onnx

    m = io.load_manifest(a.artifacts)
    i8 = (m.get("variants") or {}).get("int8") or {}
    if not (i8.get("onnx") and io.is_valid(i8["onnx"], a.artifacts)):
        print(f"no valid INT8 graph in {a.artifacts}: run `python -m enc2triton.quantize` first", file=sys.stderr)
        return 2
    model = onnx.load(str(io.resolve(m["variants"]["fp32"]["onnx"]["path"], a.artifacts)))
    tok = load_tokenizer(a.artifacts / m.get("tokenizer_dir", "tokenizer"))
    texts = read_calibration(spec.CALIBRATION_TEXTS, spec.EVALUATION_TEXTS)
    settings = int8_search.Int8Settings()  # quantize's defaults (`make variants`)
    # the perturbation: other float64 sums, ORT's fusions on, other threading
    exact.session = lambda model, threads=None: ort_session(exact.reordered_sums(model), threads=2, optimize=True)
    exact.workers = lambda: 1
    t0 = time.perf_counter()
    search = int8_search.search_int8(model, tok, m["inputs"], int(m["shapes"]["max_seq"]), texts, settings, progress=True)
    out_graph = a.out.with_suffix(".onnx")
    io.ensure_writable_dir(out_graph.parent)
    int8_search.build_int8(model, search, out_graph)
    got, want = io.sha256_file(out_graph), i8["onnx"]["sha256"]
    record = {"artifacts": io.rel(a.artifacts), "model": m["model"].get("used"), "settings": settings.as_dict(),
              "perturbation": "every MatMul summed in two halves (exact.reordered_sums), ORT graph optimizations on, "
                              "2 intra-op threads, one batch at a time",
              "int8_sha256_recorded": want, "int8_sha256_rebuilt": got, "identical": got == want,
              "excluded_nodes": search["excluded"], "recorded_excluded_nodes": i8.get("excluded_nodes"), "seconds": round(time.perf_counter() - t0, 1)}
    io.write_json(a.out, record)
    out_graph.unlink()
    print(f"INT8 graph {'IDENTICAL' if got == want else 'DIFFERENT'}: recorded {want[:16]}..., rebuilt with other kernels "
          f"{got[:16]}... ({record['seconds']} s); {a.out}")
    return 0 if got == want else 1


if __name__ == "__main__":
    sys.exit(main())
