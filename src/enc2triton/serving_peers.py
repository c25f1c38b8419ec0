"""`python -m enc2triton.serving_peers`, kept at its old path: the code is measure/serving_peers.py."""
from enc2triton.measure.serving_peers import main

if __name__ == "__main__":
    raise SystemExit(main())
