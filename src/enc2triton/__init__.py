"""enc2triton: a Hugging Face encoder from PyTorch to Triton, in several precisions, measured.

One folder per pipeline stage, lowest layer first; a module imports only from its own folder or a lower layer
(tests/test_layering.py checks it):
  core/           helpers every stage uses (spec: paths, variants and serving settings; io, cli, texts, tools, ...)
  runtime/        what runs one engine (ONNX Runtime, TensorRT, PyTorch), here and inside a Triton model folder
  export/         step 1: the checkpoint to ONNX     | quantize/  step 2: the ONNX precision variants
  torch_engines/  step 2 on a GPU: the PyTorch engines | trt/     step 3: the TensorRT engines
  serve/          steps 4-5: the Triton model repository (triton_models/: its Python-backend models), the server
  measure/        steps 6-8: quality, perf_analyzer, engine benchmarks, tune, peers, soak
  report/         step 9: REPORT.md, one module per group of sections
The modules at this level (bench.py, perf.py, ...) only keep `python -m enc2triton.<name>` working.
"""
__version__ = "0.1.0"
