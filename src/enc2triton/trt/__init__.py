"""Layer 3, step 3: the TensorRT engines from the ONNX variants (convert_to_trt.sh, `python -m enc2triton.trt`)."""
