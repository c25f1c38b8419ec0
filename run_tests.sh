#!/usr/bin/env bash
# Step 7: perf_analyzer over every model of model_repository/ (logs/perf_<model>.csv, logs/perf_summary.json); --help for options.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PY:-$here/.venv/bin/python}"; command -v "$py" >/dev/null || py=python3  # $PY: the Python make uses
PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m enc2triton.perf "$@"
