"""`python -m enc2triton.setup_check`, kept at its old path: the code is serve/setup_check.py."""
from enc2triton.serve.setup_check import main

if __name__ == "__main__":
    raise SystemExit(main())
