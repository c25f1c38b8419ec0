#!/usr/bin/env bash
# Step 3: build TensorRT engines from the exported ONNX variants: a thin wrapper over `python -m enc2triton.trt`
# (see src/enc2triton/trt/). All arguments pass through; try --help or --dry-run --assume-version 10.8.0.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PY:-$here/.venv/bin/python}"  # $PY: the Python make uses
if ! command -v "$py" >/dev/null; then
  py="$(command -v python3 || true)"
  [[ -n "$py" ]] || { echo "convert_to_trt.sh: no $here/.venv and no python3 on PATH" >&2; exit 1; }
fi
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m enc2triton.trt "$@"
