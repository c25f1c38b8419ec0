"""Layer 2, step 2: the ONNX variants (fp16, fp8, int8 with its calibration and search, the fused graph) and their
quality against fp32 (`python -m enc2triton.quantize`, `python -m enc2triton.optimize`). A new precision goes here."""
