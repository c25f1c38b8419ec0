"""`python -m enc2triton.bench`, kept at its old path: the code is measure/bench.py."""
from enc2triton.measure.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
