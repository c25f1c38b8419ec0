"""Runs NVIDIA ModelOpt's ONNX PTQ once, inside ModelOpt's own venv (.venv-modelopt): quant_peers.py starts it as a
script (`python modelopt_runner.py --request REQUEST.json`), never imports it. Standalone on purpose: only the standard
library, numpy and modelopt, since the project's packages (transformers 5, onnxruntime-gpu 1.31) are not in that venv.

The request (JSON) names the fp32 ONNX copy to quantize (ModelOpt rewrites its input in place), the output path, the
calibration batches (an .npz written by the project: key `<batch>/<input>`, the project's tokenization and length
batching) and ModelOpt's settings. The runner writes the record (JSON) beside the output: versions, the settings as
passed, seconds, and the error in one line if ModelOpt failed (exit status 1 then)."""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import sys
import time
import traceback

VERSIONS = ("nvidia-modelopt", "onnx", "onnxruntime", "onnxruntime-gpu", "onnx-graphsurgeon", "onnxslim", "numpy", "torch")


def versions(names=VERSIONS) -> dict:
    out = {"python": sys.version.split()[0]}
    for d in names:
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            out[d] = None
    return out


class Batches:
    """An onnxruntime CalibrationDataReader over the project's calibration batches, in their order."""

    def __init__(self, path: str):
        import numpy as np

        with np.load(path) as z:
            keys = sorted(z.files, key=lambda k: (int(k.split("/", 1)[0]), k))
            batches: dict[int, dict] = {}
            for k in keys:
                i, name = k.split("/", 1)
                batches.setdefault(int(i), {})[name] = z[k]
        self.batches = [batches[i] for i in sorted(batches)]
        self.rewind()

    def get_next(self):
        return next(self._it, None)

    def get_first(self):
        return self.batches[0]

    def rewind(self):
        self._it = iter(self.batches)

    def __len__(self):
        return len(self.batches)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="one ModelOpt ONNX PTQ run (started by enc2triton.quant_peers)")
    ap.add_argument("--request", help="the request JSON written by quant_peers.py")
    ap.add_argument("--probe", action="store_true", help="print the versions as JSON (and whether modelopt.onnx imports) and exit")
    a = ap.parse_args(argv)
    if a.probe:
        found = versions()
        try:
            import modelopt.onnx.quantization  # noqa: F401 - what a run needs (its [onnx] imports included)
        except Exception as e:  # noqa: BLE001
            found["import_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        print(json.dumps(found))
        return 0
    if not a.request:
        ap.error("--request is required")
    req = json.load(open(a.request))
    record = {"versions": versions(), "settings": req["settings"], "output": req["output"]}
    status = 0
    t0 = time.perf_counter()
    try:
        from modelopt.onnx.quantization import quantize

        reader = Batches(req["calibration"])
        record["calibration_batches"] = len(reader)
        # the reader is wrapped so that ModelOpt's own subclass checks (onnxruntime's CalibrationDataReader) pass
        from onnxruntime.quantization.calibrate import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def get_next(self):
                return reader.get_next()

            def get_first(self):
                return reader.get_first()

            def rewind(self):
                reader.rewind()

        quantize(onnx_path=req["onnx"], output_path=req["output"], calibration_data_reader=Reader(), **req["settings"])
    except BaseException as e:  # noqa: BLE001 - every failure becomes the record's one line
        status = 1
        record["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]
        record["traceback"] = traceback.format_exc()[-4000:]
    record["seconds"] = round(time.perf_counter() - t0, 1)
    json.dump(record, open(req["record"], "w"), indent=1)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
