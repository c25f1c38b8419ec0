#!/usr/bin/env bash
# The exact commands behind results/h100/ (run on the device tool's H100 after scripts/gpu_env.sh).
#   bash scripts/gpu_h100.sh minilm   # bundled all-MiniLM-L6-v2: quality of fp16 on the GPU, serving, engine
#   bash scripts/gpu_h100.sh distil   # DistilBERT-base architecture, random weights: the speed targets
set -uo pipefail
which=${1:?minilm or distil}
OUT=${OUT:-/tmp/out}
W=/tmp/h100/$which; A=$W/artifacts; L=$W/logs; R=$W/model_repository
mkdir -p "$L"
case $which in
    minilm) MODEL=distilbert-base-uncased; CONC=1,4,16,64,256 ;;   # offline: falls back to the bundled model, loudly
    distil) MODEL=random:distilbert-base-uncased; CONC=16,64,256 ;;
esac
step() { echo "=== $*" | tee -a "$L/commands.txt"; "$@"; echo "    -> exit $?"; }
{
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
step $PY torch2onnx.py --model "$MODEL" --artifacts "$A" --logs "$L"
step $PY -m enc2triton.optimize --artifacts "$A"
step $PY -m enc2triton.repository --artifacts "$A" --out "$R" --device gpu --instances 2 --tokenizer-instances 8
step $PY -m enc2triton.bench --artifacts "$A" --logs "$L" --device gpu --cuda-graph --budget 1.5
step ./serve.sh start --repository "$R" --logs "$L"
[ "$which" = minilm ] && step $PY client.py --artifacts "$A" --repository "$R" --logs "$L"
step ./run_tests.sh --repository "$R" --logs "$L" --artifacts "$A" --concurrency "$CONC" --window-ms 1500 --models ${MODELS:-ensemble_onnx_fp16,onnx_fp16,ensemble_onnx_fp32,tokenizer}
# same server: its state file tells run_tests.sh one is running for this repository
[ "$which" = distil ] && mkdir -p "$L/batch16" && cp "$L/server.json" "$L/batch16/" && \
    step ./run_tests.sh --repository "$R" --logs "$L/batch16" --artifacts "$A" --concurrency 8,32,64 --batch-size 16 --window-ms 1500 --models ensemble_onnx_fp16
step ./serve.sh stop --logs "$L"
step $PY -m enc2triton.report --logs "$L" --out "$L/REPORT.md"
} 2>&1 | tee "$L/run.log"
tar -czf "$OUT/$which.tgz" -C "$W" logs
ls -la "$OUT"
