"""ONNX Runtime CPU memory options vs speed, on the exported model (artifacts/onnx/model_fp32.onnx), 1 thread:
why the runner turns the CPU arena and memory patterns off (their memory ratchets up with every new shape;
this shows what they buy in speed). Shapes: batch 1/8/32 x length 16/32/64, as the tokenizer buckets them.

    .venv/bin/python scripts/arena_ab.py | tee results/cpu_arena/arena_ab.txt
"""
import os
import time

import numpy as np
import onnxruntime as ort

path = os.environ.get("MODEL_ONNX", "artifacts/onnx/model_fp32.onnx")
print(f"{path}, ONNX Runtime {ort.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
rng = np.random.default_rng(0)
shapes = [(b, s) for b in (1, 8, 32) for s in (16, 32, 64)]
def make(arena, pattern):
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.enable_cpu_mem_arena = arena; o.enable_mem_pattern = pattern
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
CONFIGS = [("arena+pattern", True, True, False), ("arena, no pattern", True, False, False),
           ("arena+shrink", True, False, True), ("no arena, no pattern", False, False, False)]
sessions = {}
for name, arena, pattern, shrink in CONFIGS:
    s = make(arena, pattern)
    ro = ort.RunOptions()
    if shrink:  # unused arena memory goes back to the system after every run
        ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    names = [i.name for i in s.get_inputs()]
    feeds = [{k: v for k, v in {"input_ids": rng.integers(1000, 2000, (b, q)).astype(np.int64),
                                "attention_mask": np.ones((b, q), np.int64),
                                "token_type_ids": np.zeros((b, q), np.int64)}.items() if k in names} for b, q in shapes]
    for f in feeds:
        s.run(["sentence_embedding"], f, ro)
    sessions[name] = (s, ro, feeds)
rates = {name: [] for name in sessions}
for _ in range(3):  # interleaved rounds: load drifts on a shared machine
    for name, (s, ro, feeds) in sessions.items():
        t, n = time.perf_counter(), 0
        for f in feeds:
            s.run(["sentence_embedding"], f, ro)
            n += f["input_ids"].shape[0]
        rates[name].append(n / (time.perf_counter() - t))
for name, r in rates.items():
    print(f"{name:22s} median {sorted(r)[1]:6.1f} seq/s  (rounds: {', '.join(f'{x:.1f}' for x in r)})")
