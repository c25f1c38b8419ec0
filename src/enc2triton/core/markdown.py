"""Markdown tables, one way, for every log and the report."""
from __future__ import annotations

from typing import Callable


def table(head: list[str], rows: list[list], fmt: Callable = str) -> list[str]:
    """Lines of a Markdown table; every cell goes through `fmt`."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
