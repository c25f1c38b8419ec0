#!/usr/bin/env python3
"""Step 6: quality of every variant against the FP32 reference, through the Triton server."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from enc2triton.measure.quality import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
