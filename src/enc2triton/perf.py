"""`python -m enc2triton.perf`, kept at its old path: the code is measure/perf.py."""
from enc2triton.measure.perf import main

if __name__ == "__main__":
    raise SystemExit(main())
