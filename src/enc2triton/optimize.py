"""`python -m enc2triton.optimize`, kept at its old path: the code is quantize/optimize.py."""
from enc2triton.quantize.optimize import main

if __name__ == "__main__":
    raise SystemExit(main())
