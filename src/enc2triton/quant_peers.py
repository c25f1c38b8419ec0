"""`python -m enc2triton.quant_peers`, kept at its old path: the code is measure/quant_peers.py."""
from enc2triton.measure.quant_peers import main

if __name__ == "__main__":
    raise SystemExit(main())
