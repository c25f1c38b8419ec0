#!/usr/bin/env bash
# The exact commands behind results/h200/ and results/h200x2/ (device tool, nvidia-h200-x2: two H200s, 32 cores),
# run after `source scripts/gpu_env.sh`. Two phases, one device call each:
#   bash scripts/gpu_h200.sh build   # in parallel: all-MiniLM-L6-v2 on GPU 1 (cores 16-31): every variant built and
#                                    # its quality measured through Triton; DistilBERT-base shapes (random weights) on
#                                    # GPU 0 (cores 0-15): the GPU engines built and benchmarked beside the peers
#   bash scripts/gpu_h200.sh serve   # DistilBERT-base on GPU 0: perf sweeps of the GPU ensembles (1 and 16 texts per
#                                    # request); then the same repository on both GPUs, and the benchmark per GPU in parallel
set -uo pipefail
phase=${1:?build or serve}
OUT=${OUT:-/tmp/out}
W=/tmp/h200
GPU_VARIANTS=onnx_fp32,onnx_fp16,torch_fp16,torch_fp8,torch_int8
step() { echo "=== $*" | tee -a "$CMDS"; local t0=$(date +%s); "$@"; local rc=$?; echo "    -> exit $rc ($(( $(date +%s) - t0 )) s)" | tee -a "$CMDS"; return $rc; }

minilm() {  # the bundled real model (distilbert-base-uncased falls back to it offline, loudly): quality
    export CUDA_VISIBLE_DEVICES=1
    local A=$W/minilm/artifacts L=$W/minilm/logs R=$W/minilm/model_repository; CMDS=$L/commands.txt; mkdir -p "$L"
    local T="taskset -c 16-31"
    step $T $PY torch2onnx.py --model distilbert-base-uncased --artifacts "$A" --logs "$L"
    step $T $PY -m enc2triton.quantize --artifacts "$A" --logs "$L" --no-latency
    step $T $PY -m enc2triton.optimize --artifacts "$A"
    step $T $PY -m enc2triton.torch_build --artifacts "$A" --logs "$L"
    step $T $PY -m enc2triton.repository --artifacts "$A" --out "$R" --device gpu --gpus 0 --variants $GPU_VARIANTS
    step $T $PY client.py --artifacts "$A" --repository "$R" --logs "$L"
}

distil() {  # DistilBERT-base architecture, random weights: the speed targets
    export CUDA_VISIBLE_DEVICES=0
    local A=$W/distil/artifacts L=$W/distil/logs; CMDS=$L/commands.txt; mkdir -p "$L"
    local T="taskset -c 0-15"
    step $T $PY torch2onnx.py --model random:distilbert-base-uncased --artifacts "$A" --logs "$L"
    step $T $PY -m enc2triton.optimize --artifacts "$A"
    step $T $PY -m enc2triton.torch_build --artifacts "$A" --logs "$L" --int8-ranges max
    step $T $PY -m enc2triton.bench --artifacts "$A" --logs "$L" --device gpu --cuda-graph --peers --profile \
        --batches 1,8,64,256 --variants onnx_fp16,torch_fp16,torch_fp8,torch_int8 --budget 1.5
}

serve-run() {
    local A=$W/distil/artifacts L=$W/distil/logs R=$W/distil/model_repository; CMDS=$L/commands.txt
    local ENS  # the ensembles the repository holds, read from it below
    local PERF="--window-ms 1500 --max-trials 6"
    export CUDA_VISIBLE_DEVICES=0,1
    step $PY -m enc2triton.repository --artifacts "$A" --out "$R" --device gpu --gpus 0 --variants onnx_fp16,torch_fp16,torch_fp8,torch_int8
    ENS=$(python3 -c "import json; print(','.join(m for m in json.load(open('$R/repository.json'))['models'] if m.startswith('ensemble_')))")
    step ./serve.sh start --repository "$R" --logs "$L"
    step ./run_tests.sh --repository "$R" --logs "$L" --artifacts "$A" --models $ENS --concurrency 16,64,128 $PERF
    mkdir -p "$L/batch16" && cp "$L/server.json" "$L/batch16/"  # the same server: its state file says one is running
    step ./run_tests.sh --repository "$R" --logs "$L/batch16" --artifacts "$A" --models $ENS --concurrency 8,32,64 --batch-size 16 $PERF
    step ./serve.sh stop --logs "$L"
    step $PY -m enc2triton.report --logs "$L" --out "$L/REPORT.md"
    # two GPUs: the same variants, one instance group per GPU (tokenizer sized for both), the FP16 ensemble again
    local L2=$W/h200x2/logs R2=$W/h200x2/model_repository; CMDS=$L2/commands.txt; mkdir -p "$L2/gpu0" "$L2/gpu1"
    cp "$L/flops.json" "$L/model.json" "$L2/" 2>/dev/null
    step $PY -m enc2triton.repository --artifacts "$A" --out "$R2" --device gpu --gpus 0,1 --variants onnx_fp16,torch_fp16,torch_fp8,torch_int8
    step ./serve.sh start --repository "$R2" --logs "$L2"
    step ./run_tests.sh --repository "$R2" --logs "$L2" --artifacts "$A" --models ensemble_torch_fp16 --concurrency 8,32,64,128 --batch-size 16 $PERF
    step ./serve.sh stop --logs "$L2"
    # the engine benchmark on both GPUs at once: two processes, one per GPU
    for g in 0 1; do
        CUDA_VISIBLE_DEVICES=$g step $PY -m enc2triton.bench --artifacts "$A" --logs "$L2/gpu$g" --device gpu --batches 64,256 \
            --variants torch_fp16,torch_fp8 --budget 2 > "$L2/gpu$g/bench.out" 2>&1 &
    done
    wait
    step $PY -m enc2triton.report --logs "$L2" --out "$L2/REPORT.md"
}

# each phase under a deadline, so what was measured is packed and returned within the device call's 10 minutes
mkdir -p "$OUT" "$W"
case $phase in
    minilm|distil|serve-run) $phase ;;
    build)
        nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader
        timeout ${DEADLINE:-530} bash "$0" minilm > $W/minilm.out 2>&1 &
        timeout ${DEADLINE:-530} bash "$0" distil > $W/distil.out 2>&1 &
        wait
        tail -n 25 $W/minilm.out $W/distil.out
        tar -czf "$OUT/build.tgz" -C $W minilm/logs distil/logs minilm.out distil.out
        ls -la "$OUT" ;;
    serve)
        timeout ${DEADLINE:-540} bash "$0" serve-run > $W/serve.out 2>&1
        tail -n 40 $W/serve.out
        tar -czf "$OUT/serve.tgz" -C $W distil/logs h200x2/logs serve.out
        ls -la "$OUT" ;;
esac
