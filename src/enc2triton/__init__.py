"""enc2triton: a Hugging Face encoder from PyTorch to Triton, in several precisions, measured."""
__version__ = "0.1.0"
