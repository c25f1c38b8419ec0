"""`python -m enc2triton.trt`: the code is trt/trt.py."""
from enc2triton.trt.trt import main

if __name__ == "__main__":
    raise SystemExit(main())
