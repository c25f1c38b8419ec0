#!/usr/bin/env bash
# Step 5 (optional: client.py and run_tests.sh start a server themselves): start/stop/status of the Triton server for model_repository/ (logs/server.json has the addresses).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PY:-$here/.venv/bin/python}"; command -v "$py" >/dev/null || py=python3  # $PY: the Python make uses
PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m enc2triton.server "$@"
