"""`python -m enc2triton.report`: the code is report/report.py."""
from enc2triton.report.report import main

if __name__ == "__main__":
    raise SystemExit(main())
