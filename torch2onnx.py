#!/usr/bin/env python3
"""Step 1: export the encoder to ONNX, verify it against PyTorch, count FLOPs and derive the roofline."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from enc2triton.export.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
