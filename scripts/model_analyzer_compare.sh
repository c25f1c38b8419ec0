#!/usr/bin/env bash
# Issue 18: NVIDIA's triton-model-analyzer beside the project's `python -m enc2triton.tune`, same model, same variant,
# same texts, same p99 budget, the same perf_analyzer binary, one after the other on this machine (CPU).
#   scripts/model_analyzer_compare.sh WORK [ma|tune|all|ab]   (ab: after tune, the two picks side by side)
# WORK gets A/ (export), R/ (repository), ma/ (model-analyzer's config, results, logs), tune/ (our search's logs) and
# times.txt (each tool's wall time).
# Environment (defaults): PY (.venv/bin/python, the project venv), MA_VENV (.venv-ma: pip install -r
# requirements-model-analyzer.txt), VARIANT (onnx_fp32), BUDGET_MS (p99 budget of both tools, 200), MAX_CONC
# (model-analyzer's largest concurrency, 16), LOADS (tune's loads, 1x2,1x8), WINDOW_MS (perf_analyzer time windows,
# both, 2000), MA_MAX_INSTANCES (model-analyzer's largest instance count, 4), MA_AUTO_ADJUSTS (perf_analyzer window
# lengthenings model-analyzer may make per measurement, 3; its default 10), MA_MIN_BATCH (model-analyzer's smallest max_batch_size, 64: see below),
# MA_MEASUREMENT (count_windows: model-analyzer's default; time_windows: tune's WINDOW_MS windows, which here
# never went stable within 6 windows and made model-analyzer give up), MA_STABILITY (perf_analyzer's
# --stability-percentage for model-analyzer, 50; tune's is 15), TUNE_INSTANCES and
# TUNE_TOKENIZER_INSTANCES (tune's model and tokenizer instances, 1,2,4 each: model-analyzer's range up to 4).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mkdir -p "${1:?usage: $0 WORK [ma|tune|all|ab]}" && cd "$1" && pwd)"; what="${2:-all}"
py="${PY:-$here/.venv/bin/python}"; ma_venv="${MA_VENV:-$here/.venv-ma}"
variant="${VARIANT:-onnx_fp32}"; budget="${BUDGET_MS:-200}"; max_conc="${MAX_CONC:-16}"; loads="${LOADS:-1x2,1x8}"
window="${WINDOW_MS:-2000}"; max_inst="${MA_MAX_INSTANCES:-4}"; tune_inst="${TUNE_INSTANCES:-1,2,4}"; tune_tok="${TUNE_TOKENIZER_INSTANCES:-1,2,4}"
auto_adjusts="${MA_AUTO_ADJUSTS:-3}"; min_batch="${MA_MIN_BATCH:-64}"
ma_mode="${MA_MEASUREMENT:-count_windows}"; ma_stability="${MA_STABILITY:-50}"
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}"

if [ ! -f "$work/A/manifest.json" ]; then
  "$py" "$here/torch2onnx.py" --model distilbert-base-uncased --artifacts "$work/A" --logs "$work/L_export" --skip-flops
fi
if [ ! -d "$work/R/ensemble_$variant" ]; then
  "$py" -m enc2triton.repository --artifacts "$work/A" --out "$work/R" --device cpu --variants "$variant"
fi

if [ "$what" = ma ] || [ "$what" = all ]; then
  [ -x "$ma_venv/bin/model-analyzer" ] || { echo "no $ma_venv/bin/model-analyzer: python3 -m venv $ma_venv && $ma_venv/bin/pip install -r $here/requirements-model-analyzer.txt" >&2; exit 2; }
  rm -rf "$work/ma"; mkdir -p "$work/ma"
  # the server's and perf_analyzer's environments exactly as the project starts them (src/enc2triton/core/tools.py);
  # the config is JSON, which YAML reads
  pa_ld="$("$py" - "$work/ma" "$variant" "$budget" "$max_conc" "$window" "$max_inst" "$auto_adjusts" "$min_batch" "$ma_mode" "$ma_stability" <<'PYEOF'
import json, sys
from pathlib import Path
from enc2triton.core import spec, tools
from enc2triton.measure import perf
from enc2triton.core.texts import read_texts
out, variant, budget, max_conc, window, max_inst, auto_adjusts, min_batch, mode, stability = Path(sys.argv[1]), *sys.argv[2:]
ts, pa = tools.find_tritonserver(), tools.find_perf_analyzer()
data = out / "texts.json"
data.write_text(json.dumps(perf.text_input_data(read_texts(spec.EVALUATION_TEXTS))))
env = {k: v + ":$" + k if k in ("PATH", "LD_LIBRARY_PATH") else v for k, v in ts.env.items()}
cfg = {
    "model_repository": str(out.parent / "R"),
    "output_model_repository_path": str(out / "output_model_repository"),
    "override_output_model_repository": True,
    "export_path": str(out / "results"),
    "checkpoint_directory": str(out / "checkpoints"),
    "triton_launch_mode": "local",
    "triton_server_path": str(ts.path),
    "triton_server_flags": {"backend-directory": str(ts.backend_dir), "http-address": "127.0.0.1",
                            "grpc-address": "127.0.0.1", "allow-gpu-metrics": False},
    "triton_server_environment": env,
    "triton_http_endpoint": "127.0.0.1:18600", "triton_grpc_endpoint": "127.0.0.1:18601",
    "triton_metrics_url": "http://127.0.0.1:18602/metrics",
    "triton_output_path": str(out / "tritonserver.log"),
    "perf_analyzer_path": str(pa.path),
    "perf_output": True, "perf_output_path": str(out / "perf_analyzer.log"),
    "client_protocol": "grpc",
    "run_config_search_mode": "quick",
    "run_config_search_max_concurrency": int(max_conc),
    "run_config_search_max_instance_count": int(max_inst),
    # model-analyzer's first quick-search step (max_batch_size 1) keeps the repository's preferred_batch_size 8..64 and
    # is refused ("Illegal model run config because maximum of tokenizer's preferred batch size 64 is greater than
    # model max batch size 1"), which ends the search with 0 configurations: MA_MIN_BATCH=64 pins the max batch
    "run_config_search_min_model_batch_size": int(min_batch),
    "run_config_search_max_model_batch_size": 64,
    # the default config is measured at 2 x max_batch_size x instances = 128 whatever run_config_search_max_concurrency
    # says; each failed window makes perf_analyzer's next one longer (10 times by default): bounded here
    "perf_analyzer_max_auto_adjusts": int(auto_adjusts),
    "latency_budget": int(float(budget)),
    "cpu_only_composing_models": ["tokenizer", variant],
    # tune's stability rule is 15 %, at most 6 windows (MA_STABILITY=15): on this shared 2-core machine no level met it
    # and model-analyzer gave up ("The first 2 attempts to acquire measurements have failed"); time windows as tune's, or model-analyzer's own count windows
    "profile_models": {spec.ensemble_name(variant): {"perf_analyzer_flags": {
        "input-data": str(data), "stability-percentage": int(stability), "max-trials": 6,
        **({"measurement-mode": "time_windows", "measurement-interval": int(window)} if mode == "time_windows" else {})}}},
}
(out / "config.yml").write_text(json.dumps(cfg, indent=2) + "\n")
print(pa.env["LD_LIBRARY_PATH"])
PYEOF
)"
  t0=$(date -u +%s)
  rc=0
  (cd "$work/ma" && LD_LIBRARY_PATH="$pa_ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
     "$ma_venv/bin/model-analyzer" profile -v -f "$work/ma/config.yml" > "$work/ma/model_analyzer.log" 2>&1) || rc=$?
  t1=$(date -u +%s)
  echo "model-analyzer profile: rc $rc, wall $((t1 - t0)) s ($(date -u -d @"$t0" +%FT%TZ) .. $(date -u -d @"$t1" +%TZ))" | tee -a "$work/times.txt"
  tail -n 25 "$work/ma/model_analyzer.log"
fi

if [ "$what" = tune ] || [ "$what" = all ]; then
  t0=$(date -u +%s)
  rc=0
  "$py" -m enc2triton.tune --device cpu --variant "$variant" --artifacts "$work/A" --logs "$work/tune" \
      --loads "$loads" --instances "$tune_inst" --tokenizer-instances "$tune_tok" --window-ms "$window" --p99-budget-ms "$budget" || rc=$?
  t1=$(date -u +%s)
  echo "enc2triton.tune: rc $rc, wall $((t1 - t0)) s ($(date -u -d @"$t0" +%FT%TZ) .. $(date -u -d @"$t1" +%TZ))" | tee -a "$work/times.txt"
fi

if [ "$what" = ab ]; then
  # the two choices side by side, alternating, each server fresh: the defaults (model-analyzer's pick) and tune's
  # chosen settings (repository --tuned); AB_ROUNDS rounds of AB_REQUESTS requests at concurrency AB_CONC
  rounds="${AB_ROUNDS:-3}"; requests="${AB_REQUESTS:-800}"; c="${AB_CONC:-2}"
  [ -d "$work/R_tuned" ] || "$py" -m enc2triton.repository --artifacts "$work/A" --out "$work/R_tuned" --device cpu \
      --variants "$variant" --tuned "$work/tune/tune.json"
  pa_ld="$("$py" -c 'from enc2triton.core import tools; print(tools.find_perf_analyzer().env["LD_LIBRARY_PATH"])')"
  pa="$("$py" -c 'from enc2triton.core import tools; print(tools.find_perf_analyzer().path)')"
  mkdir -p "$work/ab"; out="$work/ab/ab.txt"; : > "$out"
  for r in $(seq 1 "$rounds"); do
    for which in R R_tuned; do
      PY="$py" "$here/serve.sh" start --repository "$work/$which" --logs "$work/ab/logs_$which" > /dev/null
      grpc="$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["grpc_port"])' "$work/ab/logs_$which/server.json")"
      csv="$work/ab/${which}_round$r.csv"
      LD_LIBRARY_PATH="$pa_ld" "$pa" -m "ensemble_$variant" -u "127.0.0.1:$grpc" -i grpc --concurrency-range "$c" \
          --input-data "$work/ma/texts.json" --request-count "$requests" -f "$csv" > "$work/ab/${which}_round$r.log" 2>&1 || true
      PY="$py" "$here/serve.sh" stop --logs "$work/ab/logs_$which" > /dev/null
      "$py" - "$csv" "$which" "$r" "$(cut -d' ' -f1 /proc/loadavg)" >> "$out" <<'PYEOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]))) if __import__("os").path.exists(sys.argv[1]) else []
row = rows[0] if rows else {}
print(f"{sys.argv[2]:8s} round {sys.argv[3]}  {float(row.get('Inferences/Second', 'nan')):6.1f} texts/s  "
      f"p50 {float(row.get('p50 latency', 'nan')) / 1000:6.1f} ms  p99 {float(row.get('p99 latency', 'nan')) / 1000:7.1f} ms  load {sys.argv[4]}")
PYEOF
      tail -n 1 "$out"
    done
  done
fi
