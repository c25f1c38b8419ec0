"""`python -m enc2triton.quantize`: the code is quantize/quantize.py."""
from enc2triton.quantize.quantize import main

if __name__ == "__main__":
    raise SystemExit(main())
