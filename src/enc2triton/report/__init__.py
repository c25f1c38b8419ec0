"""REPORT.md from a logs folder (report.py)."""
from enc2triton.report.report import *  # noqa: F401,F403
from enc2triton.report.report import _slug, _thousands, _within, _plt  # noqa: F401
