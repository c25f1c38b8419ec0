"""Layer 2, step 1: the Hugging Face checkpoint to ONNX (torch2onnx.py), the model loading it needs, and its FLOPs
count."""
