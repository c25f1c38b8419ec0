"""`python -m enc2triton.tune`, kept at its old path: the code is measure/tune.py."""
from enc2triton.measure.tune import main

if __name__ == "__main__":
    raise SystemExit(main())
