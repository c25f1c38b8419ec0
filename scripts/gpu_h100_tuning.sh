#!/usr/bin/env bash
# Serving-side tuning of the FP16 ensemble on the H100 (after scripts/gpu_env.sh), DistilBERT-base
# shapes with random weights, 16 real texts per request: the same sweep for three repositories
#   A  2 instances per GPU, 8 tokenizer instances, preferred batches 8..64   (results/h100 as published)
#   B  4 instances per GPU, 12 tokenizer instances, preferred batches 8..64
#   C  4 instances per GPU, 12 tokenizer instances, preferred batches 16..256, queue delay 2 ms
# and the engine at batch 1 and 256 with FastGelu (tanh) instead of exact Gelu in the fused graph.
# `bash scripts/gpu_h100_tuning.sh repeat` afterwards, on the same machine: B, A, and 6 instances again.
set -uo pipefail
OUT=${OUT:-/tmp/out}
W=/tmp/h100/tuning; A=$W/artifacts; L=$W/logs
mkdir -p "$L"
step() { echo "=== $*" | tee -a "$L/commands.txt"; "$@"; echo "    -> exit $?"; }
sweep() {  # name, repository options...
    local name=$1; shift
    local R=$W/repo_$name LL=$L/$name
    mkdir -p "$LL"
    step $PY -m enc2triton.repository --artifacts "$A" --out "$R" --device gpu "$@"
    step ./serve.sh start --repository "$R" --logs "$LL"
    step ./run_tests.sh --repository "$R" --logs "$LL" --artifacts "$A" --concurrency 32,64,128 --batch-size 16 \
        --window-ms 1500 --models ensemble_onnx_fp16
    step ./serve.sh stop --logs "$LL"
}
if [ "${1:-}" = repeat ]; then  # same warm machine, same artifacts: B, A and 6 instances again, in that order
    { sweep B2 --instances 4 --tokenizer-instances 12
      sweep A2 --instances 2 --tokenizer-instances 8
      sweep D --instances 6 --tokenizer-instances 12; } 2>&1 | tee "$L/run_repeat.log"
    tar -czf "$OUT/tuning_repeat.tgz" --exclude='perf_inputs' -C "$W" logs/B2 logs/A2 logs/D logs/run_repeat.log logs/commands.txt
    exit 0
fi
{
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nproc
step $PY torch2onnx.py --model random:distilbert-base-uncased --artifacts "$A" --logs "$L"
step $PY -m enc2triton.optimize --artifacts "$A"
sweep A --instances 2 --tokenizer-instances 8
sweep B --instances 4 --tokenizer-instances 12
sweep C --instances 4 --tokenizer-instances 12 --preferred-batch-sizes 16,32,64,128,256 --max-queue-delay-us 2000
cp -r "$A" "$W/artifacts_fastgelu"
step $PY -m enc2triton.optimize --artifacts "$W/artifacts_fastgelu" --gelu-approximation --force
mkdir -p "$L/fastgelu" && cp "$L/flops.json" "$L/fastgelu/"
step $PY -m enc2triton.bench --artifacts "$W/artifacts_fastgelu" --logs "$L/fastgelu" --device gpu --cuda-graph \
    --variants onnx_fp16 --batches 1,256 --budget 1.5
step $PY -m enc2triton.bench --artifacts "$A" --logs "$L" --device gpu --cuda-graph --variants onnx_fp16 --batches 1,256 --budget 1.5
} 2>&1 | tee "$L/run.log"
tar -czf "$OUT/tuning.tgz" --exclude='perf_inputs' --exclude='*.onnx' -C "$W" logs
ls -la "$OUT"
