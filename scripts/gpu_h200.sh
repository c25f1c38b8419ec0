#!/usr/bin/env bash
# The exact commands behind results/h200/ (device tool, nvidia-h200: one H200, 16 cores), one device call per phase,
# back to back on one warm machine. Staging of the wheels first: scripts/README.md.
#   source scripts/gpu_env.sh && bash scripts/gpu_h200.sh smoke   # optional, first: the 8-bit GEMM benchmark and
#                                           # scripts/gpu_smoke.py (the engine's GPU serving path on a tiny model)
#   bash scripts/gpu_h200.sh tiles          # first: our 8-bit kernel's settings measured at DistilBERT's shapes
#                                           # (gemm_bench.py --write-tiles); every later phase builds and runs with them
#                                           # (or WITH_TILES=1 on the build phase: the same, inside it)
#   bash scripts/gpu_h200.sh build          # both models built in parallel (DistilBERT-base then runs scripts/fusion_ab.py);
#                                           # then, with TUNE=1, the serving-config search (tune) on DistilBERT-base shapes;
#                                           # WITH_BENCH=1: bench's DistilBERT-base engine benchmark inside it (the GPU is
#                                           # free while the real model's INT8 search runs on the CPUs)
#   bash scripts/gpu_h200.sh rebuild        # (a fresh machine after one was taken back) DistilBERT-base's engines without
#                                           # the fusion A/B, and the real model's torch_fp8 with its quality through Triton
#   bash scripts/gpu_h200.sh serve          # perf sweeps (sentences, 16 per request, passages, raw models) of ensembles
#                                           # and fused models, the serving peer on the same load
#   bash scripts/gpu_h200.sh distil-bench   # (a fresh machine, one call) DistilBERT-base's engines, then the engine
#                                           # benchmark beside its peers (BENCH_PROFILE: its profiled batches, default 8,32,256;
#                                           # TORCH_PRECISIONS=fp16,fp8: only those engines, no onnx_fp16 graph: ~4 minutes)
#   bash scripts/gpu_h200.sh serve-fresh    # (a fresh machine, one call) DistilBERT-base's engines (TORCH_PRECISIONS, default
#                                           # fp16,fp8), then the serve phase on them (SERVE_PRECISIONS: the served engines)
#   bash scripts/gpu_h200.sh fp8-check      # (a fresh machine, ~150 s) torch_fp8 alone built and timed at small batches
#                                           # (NO_FP8_FOLDED=1 on any phase that builds: torch_build --no-fp8-folded)
#   bash scripts/gpu_h200.sh fold-ab        # (no build, ~5 min) the folded FP8 scales A/B, scripts/fusion_ab.py at
#                                           # FOLD_BATCHES (default 8,32,256) x 128 tokens, FP16 beside
#   bash scripts/gpu_h200.sh bench          # all-MiniLM-L6-v2's quality through Triton, the 8-bit GEMM benchmark, the
#                                           # engine benchmark beside its peers, the report, the real model's engines timed
#                                           # (SKIP_GEMM=1, SKIP_MINILM_BENCH=1: without the two published benchmarks)
# The serve phase's peer loads: PEER_PER_REQUEST (default 1,16), PEER_CONCURRENCY (default 16,64,128); SKIP_PEER=1,
# SKIP_PASSAGES=1 leave the peer or the passage sweep out; SENTENCE_CONCURRENCY, BATCH16_CONCURRENCY the sweeps' levels;
# PASSAGE_TOKENS (default 128), PASSAGE_MODELS, PASSAGE_CONCURRENCY the passage sweep's length, models and levels.
# SWEEPS: which of the serve phase's sweeps run (default sentences,batch16,raw64,passages,peer; a later call on the same
# machine keeps the earlier ones' results). MPS=on: the serve phase's server under CUDA MPS; MPS_AB=1: after the sweeps,
# the sentence and 16-per-request ones again on a second server under MPS (mps/, mps_batch16/), the A/B for spec.MPS.
# WITH_QUALITY=1 moves the real model's quality through Triton from the bench call to the end of the serve call (set it
# for both calls; QUALITY_DEADLINE bounds the serve call). SKIP_FUSION=1: distil without scripts/fusion_ab.py;
# BENCH_PEERS: the engine benchmark's peers (default all; e.g. reduce-overhead,eager leaves out the default-mode compile's
# ~75 s). FUSION_VARIANTS: its variants (default: the fused FFN with the tiles phase's settings and the old default's, the peer).
#   FUSED_N=2 bash scripts/gpu_h200.sh fusedn   # fused_torch_fp16 at another instance count, for comparison
#                                           # (FUSED_VARIANTS=torch_fp16,torch_fp8: several; FUSED_CONCURRENCY,
#                                           # FUSED_BATCH16_CONCURRENCY: the levels of its two sweeps)
# Cores: the server gets 0-11 and perf_analyzer 12-15 (a separate client machine, approximated).
set -uo pipefail
phase=${1:?smoke, build or serve}
OUT=${OUT:-/tmp/out}
W=/tmp/h200
SERVER_CPUS=0-11 CLIENT_CPUS=12-15
# without onnxruntime-gpu staged (5 of the 9 staging calls): GPU_VARIANTS=torch_fp16,torch_fp8,torch_int8
GPU_VARIANTS=${GPU_VARIANTS:-onnx_fp16,torch_fp16,torch_fp8,torch_int8}
PERF="--window-ms 1500 --max-trials 6 --client-cpus $CLIENT_CPUS"
# the 8-bit kernel's settings the tiles phase measured on this GPU (qgemm.TILES_ENV; without the file, the defaults)
export ENC2TRITON_QGEMM_TILES=${ENC2TRITON_QGEMM_TILES:-$W/qgemm_tiles.json}
until_deadline() {  # until_deadline END CMD...: CMD under `timeout` until second END of this script; skipped when
    # under 10 s are left (timeout 0 would mean no limit at all, a negative one is an error)
    local left=$(( $1 - SECONDS )); shift
    [ $left -ge 10 ] || { echo "skipped, $left s left before the deadline: $*"; return 124; }
    timeout $left "$@"
}
step() { echo "=== $*" | tee -a "$CMDS"; local t0=$(date +%s); "$@"; local rc=$?; echo "    -> exit $rc ($(( $(date +%s) - t0 )) s)" | tee -a "$CMDS"; return $rc; }

smoke() {  # 8-bit GEMMs at DistilBERT's shapes (our kernel checked), then a tiny random model: the engine's serving path
    local A=/tmp/smoke/artifacts L=/tmp/smoke/triton; CMDS=$L/commands.txt; mkdir -p "$L" "$OUT"
    step timeout 240 $PY scripts/gemm_bench.py --out "$L/gemm" --autotune-gemms ffn1
    cp -r "$L/gemm" "$OUT/"
    [ -d /tmp/smoke/tiny ] || $PY -c "from pathlib import Path; from enc2triton.export import models; models.make_tiny(Path('/tmp/smoke/tiny'))"
    step timeout 200 $PY scripts/gpu_smoke.py --tiny /tmp/smoke/tiny --work /tmp/smoke
}

tiles() {  # our kernel's tile shapes and GELU form per use, timed at 256 x 128, 64 x 128 and 64 x 32 tokens' GEMMs
    local L=$W/distil/logs; CMDS=$L/commands.txt; mkdir -p "$L"
    touch $W/tiles.running
    step timeout ${TILES_S:-400} $PY scripts/gemm_bench.py --out "$L/gemm" --no-compile-check --write-tiles "$ENC2TRITON_QGEMM_TILES"
    [ -f "$ENC2TRITON_QGEMM_TILES" ] && cp "$ENC2TRITON_QGEMM_TILES" "$L/gemm/"
    rm -f $W/tiles.running
}

tiles_wait() {  # an engine build waits for a tiles run in progress (the build phase runs one beside the CPU steps)
    while [ -f $W/tiles.running ]; do sleep 2; done
}

gpu_wait() {  # the real model's engine build also waits for an engine benchmark in progress (WITH_BENCH=1), so neither
    # times the other's kernels
    tiles_wait; while [ -f $W/bench.running ]; do sleep 2; done
}

minilm() {  # the bundled real model (distilbert-base-uncased falls back to it offline, loudly): quality on the GPU
    local A=$W/minilm/artifacts L=$W/minilm/logs R=$W/minilm/model_repository; CMDS=$L/commands.txt; mkdir -p "$L"
    local T="taskset -c 4-15"  # the INT8 search (CPU, float64) is the longest step of the build
    step $T $PY torch2onnx.py --model distilbert-base-uncased --artifacts "$A" --logs "$L"
    step $T $PY -m enc2triton.quantize --artifacts "$A" --logs "$L" --no-latency
    step $T $PY -m enc2triton.optimize --artifacts "$A"  # onnx_fp16 on a GPU: ONNX Runtime's fused graph (CUDA EP)
    gpu_wait
    step $T $PY -m enc2triton.torch_build --artifacts "$A" --logs "$L"
}

minilm-quality() {
    local A=$W/minilm/artifacts L=$W/minilm/logs R=$W/minilm/model_repository; CMDS=$L/commands.txt
    # onnx_fp16 needs onnxruntime-gpu staged (--system-wheel, scripts/README.md): the four GPU variants (GPU_VARIANTS)
    step $PY -m enc2triton.repository --artifacts "$A" --out "$R" --device gpu --gpus 0 --variants $GPU_VARIANTS
    step $PY client.py --artifacts "$A" --repository "$R" --logs "$L"  # ensembles, and fused models against them
}

minilm-fp8() {  # torch_fp8 of the real model alone, built and its quality through Triton (a second machine's short call)
    local A=$W/minilm/artifacts L=$W/minilm/logs R=$W/minilm/model_repository_fp8; CMDS=$L/commands.txt; mkdir -p "$L"
    step $PY torch2onnx.py --model distilbert-base-uncased --artifacts "$A" --logs "$L"
    step $PY -m enc2triton.quantize --artifacts "$A" --logs "$L" --no-latency --precisions fp8
    step $PY -m enc2triton.torch_build --artifacts "$A" --logs "$L" --precisions fp8
    step $PY -m enc2triton.repository --artifacts "$A" --out "$R" --device gpu --gpus 0 --variants torch_fp8
    step $PY client.py --artifacts "$A" --repository "$R" --logs "$L"
}

distil() {  # DistilBERT-base architecture, random weights: the speed targets; served batches up to 256 texts
    local A=$W/distil/artifacts L=$W/distil/logs; CMDS=$L/commands.txt; mkdir -p "$L"
    local T="taskset -c 0-3"
    step $T $PY torch2onnx.py --model random:distilbert-base-uncased --artifacts "$A" --logs "$L" --max-batch 256
    [ -n "${TORCH_PRECISIONS:-}" ] || step $T $PY -m enc2triton.optimize --artifacts "$A"  # (onnx_fp16 for the serve phase)
    tiles_wait
    step $T $PY -m enc2triton.torch_build --artifacts "$A" --logs "$L" --int8-ranges max --fp8-layers all \
        --precisions ${TORCH_PRECISIONS:-fp16,fp8,int8} ${NO_FP8_FOLDED:+--no-fp8-folded}
    [ -n "${SKIP_FUSION:-}" ] && return 0
    # engine fusions A/B on the same shapes (the GPU is free until the real model's build reaches its engines); the
    # fused FFN with the tiles phase's settings and with the old default (128x128x64, 4 warps, 4 stages, exact GELU)
    step $T timeout ${FUSION_S:-220} $PY scripts/fusion_ab.py --out "$L/fusion_ab.json" --variants \
        ${FUSION_VARIANTS:-peer_static,fp8_ffn_fused,fp8_ffn_fused@128x128x64w4s4,int8_ffn_fused,int8_ffn_fused@128x128x64w4s4}
    # the fused 8-bit FFN at short texts' sizes (64 x 32 tokens), taken from 1,024 rows: where does it stop paying?
    step $T timeout ${FUSION_SHORT_S:-80} $PY scripts/fusion_ab.py --out "$L/fusion_ab_short.json" --batch 64 --seq 32 \
        --fused-min-rows 1024 --variants fp8_dynamic,fp8_ffn_fused,int8_dynamic,int8_ffn_fused
}

tune() {
    local A=$W/distil/artifacts L=$W/distil/logs; CMDS=$L/commands.txt
    step $PY -m enc2triton.tune --artifacts "$A" --logs "$L" --device gpu --gpus 0 --variant torch_fp16 --loads 16x16,1x128 --mps ${MPS:-off} \
        --instances 1,2,4 --window-ms 1500 --max-trials 6 --client-cpus $CLIENT_CPUS
}

prefixed() {  # prefixed PREFIX a,b,...: PREFIXa,PREFIXb,... (variants from precisions, fused models from variants)
    echo "$2" | sed -E "s/(^|,)/\1$1/g"
}

want() {  # is this serve-phase sweep in SWEEPS (default: all of sentences,batch16,raw64,passages,peer)?
    [[ ",${SWEEPS:-sentences,batch16,raw64,passages,peer}," == *",$1,"* ]]
}

serve-run() {
    local A=$W/distil/artifacts L=$W/distil/logs R=$W/distil/model_repository; CMDS=$L/commands.txt
    local TUNED=""; [ -f "$L/tune.json" ] && TUNED="--tuned $L/tune.json"
    # the engines served (SERVE_PRECISIONS, default every one the distil phase builds): their raw and fused models
    local V=$(prefixed torch_ ${SERVE_PRECISIONS:-fp16,fp8,int8})
    # generated on the server's cores: the tokenizer's instances and threads are sized for them (spec.Serving.for_device)
    step taskset -c $SERVER_CPUS $PY -m enc2triton.repository --artifacts "$A" --out "$R" --device gpu --gpus 0 --variants $V $TUNED
    # MPS=on|auto: the GPU models' processes under a CUDA MPS daemon of the server's own (serve.sh start --mps)
    local TRITON=""; { want sentences || want batch16 || want raw64 || want passages; } && TRITON=1
    [ -z "$TRITON" ] || step ./serve.sh start --repository "$R" --logs "$L" --cpus $SERVER_CPUS --mps ${MPS:-off} || return 1
    sweep() {  # another load on the same server (the one SRV, default $L, holds the server.json of): its own logs folder
        local sub=$1 srv=${SRV:-$L}; shift; mkdir -p "$L/$sub"; [ "$srv" = "$L/$sub" ] || cp "$srv/server.json" "$L/$sub/"
        step ./run_tests.sh --repository "$R" --logs "$L/$sub" --artifacts "$A" $PERF "$@"
    }
    # the FP8 and FP16 ensembles at every load: what the precisions buy through the server, like for like
    local ALL=ensemble_torch_fp16,ensemble_torch_fp8,$(prefixed fused_ $V)
    local SENT=ensemble_torch_fp16,ensemble_torch_fp8,fused_torch_fp16,fused_torch_fp8  # the sentence sweep's models
    want sentences && step ./run_tests.sh --repository "$R" --logs "$L" --artifacts "$A" --models $SENT \
        --concurrency ${SENTENCE_CONCURRENCY:-128,256} $PERF
    want batch16 && sweep batch16 --models $ALL --concurrency ${BATCH16_CONCURRENCY:-32,64,128} --batch-size 16
    # like for like with the engine's 128 tokens: passages of real text fill the rows (no padding for the runner to trim)
    want raw64 && sweep raw64 --models $V --concurrency 2,4 --batch-size 64 --seq-len 128 --passage-tokens 128
    # passages, last (their large shapes are captured on first use): where the engine, not the tokenizer and the request
    # path, sets the pace. PASSAGE_TOKENS (default 128); another length gets a folder of its own, e.g. passages512/:
    # document chunks, where a text costs the GPU ~19x what a sentence does and FP8's larger calls can show
    local PT=${PASSAGE_TOKENS:-128}; local PDIR=passages; [ "$PT" = 128 ] || PDIR=passages$PT
    [ -n "${SKIP_PASSAGES:-}" ] || ! want passages || sweep $PDIR --models ${PASSAGE_MODELS:-$ALL} --concurrency ${PASSAGE_CONCURRENCY:-8,16,32} \
        --batch-size 16 --passage-tokens $PT
    [ -z "$TRITON" ] || step ./serve.sh stop --logs "$L"
    if [ -n "${MPS_AB:-}" ]; then  # the sentence and 16-per-request loads again, on a server under CUDA MPS: mps/, mps_batch16/
        step ./serve.sh start --repository "$R" --logs "$L/mps" --cpus $SERVER_CPUS --mps on && {
            SRV=$L/mps sweep mps --models $SENT --concurrency ${SENTENCE_CONCURRENCY:-128,256}
            SRV=$L/mps sweep mps_batch16 --models $ALL --concurrency ${BATCH16_CONCURRENCY:-32,64,128} --batch-size 16
            step ./serve.sh stop --logs "$L/mps"; }
    fi
    { [ -n "${SKIP_PEER:-}" ] || ! want peer; } && return 0
    # the serving peer on the same GPU, the same checkpoint (torch2onnx cached the random weights there), texts and client
    source scripts/gpu_peer.sh install
    step $PY -m enc2triton.serving_peers --logs "$L" --model .cache/random/distilbert-base-uncased --device gpu \
        --per-request ${PEER_PER_REQUEST:-1,16} --concurrency ${PEER_CONCURRENCY:-16,64,128} --batch-size 256 --client-cpus $CLIENT_CPUS
}

bench-run() {
    local A=$W/distil/artifacts L=$W/distil/logs; CMDS=$L/commands.txt
    # 8-bit GEMMs at DistilBERT-base's shapes: FP16, FP8 and INT8 through cuBLASLt, inductor's INT8 templates, our kernel
    [ -n "${SKIP_GEMM:-}" ] || step timeout 240 $PY scripts/gemm_bench.py --out "$L/gemm" --autotune-gemms ffn1
    step $PY -m enc2triton.bench --artifacts "$A" --logs "$L" --device gpu --cuda-graph --peers ${BENCH_PEERS:-all} --profile-batches ${BENCH_PROFILE:-8,32,256} --batches 1,8,32,64,256 \
        --variants $GPU_VARIANTS --budget 1.0
    step $PY -m enc2triton.report --logs "$L" --out "$L/REPORT.md"
    # the engines that meet the floors on the real model (torch_fp8, torch_int8 keep layers in 16 bits there): their speed
    [ -n "${SKIP_MINILM_BENCH:-}" ] || step $PY -m enc2triton.bench --artifacts $W/minilm/artifacts --logs $W/minilm/logs --device gpu --cuda-graph --batches 1,64 \
        --variants torch_fp16,torch_fp8,torch_int8 --budget 1.0
}

fusedn-run() {  # fused models at another instance count (FUSED_N, default 2; the repository's default is 4 on a GPU),
    # FUSED_VARIANTS of them (default torch_fp16): do more instances overlap more host work, or queue for the GPU?
    local n=${FUSED_N:-2} v=${FUSED_VARIANTS:-torch_fp16}
    local A=$W/distil/artifacts L=$W/distil/logs/fused$n R=$W/distil/model_repository_fused$n; CMDS=$L/commands.txt; mkdir -p "$L"
    local M=$(prefixed fused_ "$v")
    step taskset -c $SERVER_CPUS $PY -m enc2triton.repository --artifacts "$A" --out "$R" --device gpu --gpus 0 --variants $v --fused-instances $n
    step ./run_tests.sh --repository "$R" --logs "$L" --artifacts "$A" --models $M --concurrency ${FUSED_CONCURRENCY:-64,128,256} $PERF
    mkdir -p "$L/batch16"
    step ./run_tests.sh --repository "$R" --logs "$L/batch16" --artifacts "$A" --models $M --concurrency ${FUSED_BATCH16_CONCURRENCY:-32,64,128} \
        --batch-size 16 $PERF
}

pack() {  # what comes back: logs under 3 MB each (perf_analyzer's raw inputs and big server logs exceed the call's return limit)
    local name=$1; shift
    (cd $W && find "$@" -type f -size -3M > /tmp/pack.list && tar -czf "$OUT/$name.tgz" -T /tmp/pack.list)
}

# each phase under a deadline, so what was measured is packed and returned within the device call's 10 minutes
mkdir -p "$OUT" "$W"
case $phase in
    smoke|minilm|minilm-quality|minilm-fp8|distil|tune|serve-run|bench-run|fusedn-run) $phase ;;
    tiles-run) trap 'rm -f $W/tiles.running' EXIT; tiles ;;
    tiles)
        nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
        tiles > $W/tiles.out 2>&1
        grep -E "^chosen|^tiles|^\||Error" $W/tiles.out | tail -n 40
        pack tiles distil/logs/gemm tiles.out
        ls -la "$OUT" ;;
    rebuild)  # a fresh machine: DistilBERT-base's engines for the serve call (no fusion A/B) beside the real model's torch_fp8
        timeout ${DEADLINE:-560} bash "$0" minilm-fp8 > $W/minilm-fp8.out 2>&1 &
        SKIP_FUSION=1 timeout ${DEADLINE:-560} bash "$0" distil > $W/distil.out 2>&1
        wait
        tail -n 12 $W/minilm-fp8.out; tail -n 8 $W/distil.out
        pack rebuild minilm/logs distil/logs minilm-fp8.out distil.out
        ls -la "$OUT" ;;
    build)
        nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
        # the real model's quality through Triton comes first in the bench call (the INT8 search leaves no room for it here)
        # WITH_TILES=1: the tiles phase first on the GPU, beside the CPU steps; the engine builds wait for its settings
        [ -n "${WITH_TILES:-}" ] && { touch $W/tiles.running; timeout ${DEADLINE:-560} bash "$0" tiles-run > $W/tiles.out 2>&1 & }
        timeout ${DEADLINE:-560} bash "$0" minilm > $W/minilm.out 2>&1 &
        # WITH_BENCH=1 leaves the fusion A/B out: the benchmark takes its place on the GPU
        ${WITH_BENCH:+env SKIP_FUSION=1} timeout ${DEADLINE:-560} bash "$0" distil > $W/distil.out 2>&1
        # WITH_BENCH=1: DistilBERT-base's engine benchmark (bench-run without the GEMM and MiniLM benchmarks) on the GPU
        # while the real model's INT8 search holds the CPUs 4-15; that model's engine build waits for it (gpu_wait)
        if [ -n "${WITH_BENCH:-}" ]; then
            left=$(( ${DEADLINE:-560} - SECONDS - 140 ))  # the real model's engine build still needs ~120 s after it
            if [ $left -gt 60 ]; then
                touch $W/bench.running
                # one profiled batch here: three (the bench phase's default) left no time for int8 and the peers (07f)
                BENCH_PROFILE=${BENCH_PROFILE:-256} SKIP_GEMM=1 SKIP_MINILM_BENCH=1 timeout $left taskset -c 0-3 bash "$0" bench-run > $W/bench.out 2>&1
                rm -f $W/bench.running
            else
                echo "no time left for the engine benchmark ($left s): run the bench phase" | tee $W/bench.out
            fi
        fi
        wait
        left=$(( ${DEADLINE:-560} - SECONDS - 15 ))
        [ -n "${TUNE:-}" ] && [ $left -gt 60 ] && timeout $left bash "$0" tune >> $W/distil.out 2>&1
        [ -n "${WITH_TILES:-}" ] && grep -E "^chosen|^tiles|Error" $W/tiles.out | tail -n 10
        tail -n 12 $W/minilm.out; tail -n 30 $W/distil.out
        [ -n "${WITH_BENCH:-}" ] && tail -n 30 $W/bench.out
        pack build minilm/logs distil/logs minilm.out distil.out $( [ -n "${WITH_TILES:-}" ] && echo tiles.out ) \
            $( [ -n "${WITH_BENCH:-}" ] && echo bench.out )
        ls -la "$OUT" ;;
    serve)
        timeout ${DEADLINE:-560} bash "$0" serve-run > $W/serve.out 2>&1
        tail -n 40 $W/serve.out
        if [ -n "${WITH_QUALITY:-}" ]; then  # the real model's quality through Triton here, not in the bench call
            until_deadline ${QUALITY_DEADLINE:-${DEADLINE:-560}} bash "$0" minilm-quality > $W/minilm-quality.out 2>&1
            tail -n 14 $W/minilm-quality.out
        fi
        pack serve distil/logs serve.out $( [ -n "${WITH_QUALITY:-}" ] && echo minilm/logs minilm-quality.out )
        ls -la "$OUT" ;;
    bench)
        if [ -z "${WITH_QUALITY:-}" ]; then
            timeout 170 bash "$0" minilm-quality > $W/minilm-quality.out 2>&1
            tail -n 14 $W/minilm-quality.out
        fi
        until_deadline ${DEADLINE:-560} bash "$0" bench-run > $W/bench.out 2>&1
        tail -n 30 $W/bench.out
        pack bench distil/logs minilm/logs $( [ -z "${WITH_QUALITY:-}" ] && echo minilm-quality.out ) bench.out
        ls -la "$OUT" ;;
    distil-bench)  # a fresh machine, one call: DistilBERT-base's engines (no fusion A/B), then the engine benchmark beside
        # its peers in the time left (DEADLINE; the build takes ~300 s)
        SKIP_FUSION=1 timeout ${DEADLINE:-570} bash "$0" distil > $W/distil.out 2>&1
        GPU_VARIANTS=$(prefixed torch_ ${TORCH_PRECISIONS:-fp16,fp8,int8}) SKIP_GEMM=1 SKIP_MINILM_BENCH=1 \
            until_deadline $(( ${DEADLINE:-570} - 10 )) bash "$0" bench-run > $W/bench.out 2>&1
        tail -n 4 $W/distil.out; tail -n 40 $W/bench.out
        pack distil-bench distil/logs distil.out bench.out
        ls -la "$OUT" ;;
    serve-fresh)  # a fresh machine, one call: DistilBERT-base's engines (TORCH_PRECISIONS, default fp16,fp8; no fusion
        # A/B, ~140 s), then the serve phase on them in the time left (DEADLINE)
        export TORCH_PRECISIONS=${TORCH_PRECISIONS:-fp16,fp8} SERVE_PRECISIONS=${TORCH_PRECISIONS:-fp16,fp8}
        SKIP_FUSION=1 timeout ${BUILD_DEADLINE:-260} bash "$0" distil > $W/distil.out 2>&1
        until_deadline ${DEADLINE:-560} bash "$0" serve-run > $W/serve.out 2>&1
        tail -n 4 $W/distil.out; tail -n 40 $W/serve.out
        pack serve-fresh distil/logs distil.out serve.out
        ls -la "$OUT" ;;
    fp8-check)  # the shortest GPU check of torch_fp8 (a fresh machine, ~150 s): DistilBERT-base's FP8 engine built, its
        # small batches timed (what a serving call's fixed cost is), nothing else
        TORCH_PRECISIONS=fp8 timeout ${DEADLINE:-200} bash "$0" distil > $W/distil.out 2>&1
        until_deadline ${DEADLINE:-200} $PY -m enc2triton.bench --artifacts $W/distil/artifacts --logs $W/distil/logs \
            --device gpu --cuda-graph --batches 1,8,32,256 --variants torch_fp8 --budget 0.5 > $W/bench.out 2>&1
        tail -n 4 $W/distil.out; tail -n 8 $W/bench.out
        pack fp8-check distil/logs distil.out bench.out ;;
    fold-ab)  # torch_fp8's folded scales (torch_build --fp8-folded) against today's, FP16 beside, in one process per batch:
        # 1,024, 4,096 and 32,768 tokens (no build needed: fusion_ab.py makes its own random DistilBERT-base; ~5 minutes)
        mkdir -p $W/fold
        for b in $(echo ${FOLD_BATCHES:-8,32,256} | tr , ' '); do
            until_deadline $(( ${DEADLINE:-560} - 10 )) $PY scripts/fusion_ab.py --out $W/fold/fold_ab_b$b.json --batch $b \
                --seq 128 --variants gelu_epilogue,fp8_ffn_fused,fp8_ffn_fused_folded >> $W/fold.out 2>&1
            # below torch_model.FUSED_FFN_MIN_ROWS (1,024 tokens) the FFN pair is not fused: the same with it fused
            [ $(( b * 128 )) -lt 1024 ] && until_deadline $(( ${DEADLINE:-560} - 10 )) $PY scripts/fusion_ab.py \
                --out $W/fold/fold_ab_b${b}_fused.json --batch $b --seq 128 --fused-min-rows 1 \
                --variants fp8_ffn_fused,fp8_ffn_fused_folded >> $W/fold.out 2>&1
        done
        grep -E "^(gelu_epilogue|fp8_ffn_fused)" $W/fold.out | cut -c1-160
        pack fold-ab fold fold.out ;;
    fusedn)
        timeout ${DEADLINE:-560} bash "$0" fusedn-run > $W/fusedn.out 2>&1
        tail -n 20 $W/fusedn.out
        pack fusedn distil/logs/fused${FUSED_N:-2} fusedn.out
        ls -la "$OUT" ;;
esac
