"""Layer 1: what runs one engine (ONNX Runtime, TensorRT, the PyTorch model), here and inside a Triton model folder
(serve/repository.py copies engines.py and torch_model.py there). A new engine's runner goes here."""
