"""Layer 3, step 2 on a GPU: the PyTorch engines (torch_fp16/fp8/int8), built from the checkpoint with the ONNX int8
search's choices (`python -m enc2triton.torch_build`; the model code they run is runtime/torch_model.py)."""
