"""`python -m enc2triton.soak`, kept at its old path: the code is measure/soak.py."""
from enc2triton.measure.soak import main

if __name__ == "__main__":
    raise SystemExit(main())
