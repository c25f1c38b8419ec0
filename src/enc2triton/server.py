"""`python -m enc2triton.server`, kept at its old path: the code is serve/server.py."""
from enc2triton.serve.server import main

if __name__ == "__main__":
    raise SystemExit(main())
