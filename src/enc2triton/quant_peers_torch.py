"""`python -m enc2triton.quant_peers_torch`, beside quant_peers: the code is measure/quant_peers_torch.py."""
from enc2triton.measure.quant_peers_torch import main

if __name__ == "__main__":
    raise SystemExit(main())
