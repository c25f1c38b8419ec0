"""`python -m enc2triton.torch_build`, kept at its old path: the code is torch_engines/torch_build.py."""
from enc2triton.torch_engines.torch_build import main

if __name__ == "__main__":
    raise SystemExit(main())
