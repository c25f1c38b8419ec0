#!/usr/bin/env bash
# Step 7: perf_analyzer over every model of model_repository/ (logs/perf_<model>.csv, logs/perf_summary.json); --help for options.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="$here/.venv/bin/python"; [ -x "$py" ] || py=python3
PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m enc2triton.perf "$@"
