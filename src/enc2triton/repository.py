"""`python -m enc2triton.repository`, kept at its old path: the code is serve/repository.py."""
from enc2triton.serve.repository import main

if __name__ == "__main__":
    raise SystemExit(main())
