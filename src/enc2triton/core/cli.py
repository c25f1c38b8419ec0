"""What every stage's command line shares: --artifacts/--logs with their defaults in the help, integer lists,
and StageError -> one line on stderr and exit 1 (never a traceback for a problem the user can fix)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

from enc2triton.core import spec
from enc2triton.core.io import StageError


def parser(prog: str, description: str, artifacts: bool = True, logs: bool = True) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=description)
    if artifacts:
        ap.add_argument("--artifacts", type=Path, default=spec.ARTIFACTS,
                        help="artifacts folder with manifest.json (default %(default)s)")
    if logs:
        ap.add_argument("--logs", type=Path, default=spec.LOGS, help="where logs are written (default %(default)s)")
    return ap


def run(ap: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int | None], argv=None) -> int:
    """Parse argv and call body(args); a StageError becomes `error: ...` and exit status 1. Output folders
    (--artifacts, --logs, --out) that did not exist before and are still empty after a failure are removed:
    a failed run leaves nothing behind that looks like a result."""
    args = ap.parse_args(argv)
    fresh = [Path(d) for k in ("artifacts", "logs", "out") if (d := getattr(args, k, None)) and not Path(d).exists()]
    status = 1
    try:
        status = body(args) or 0
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
    finally:
        if status:
            for d in fresh:
                remove_if_empty(d)
    return status


def remove_if_empty(path: Path) -> None:
    """Remove `path` when it holds nothing but empty folders."""
    path = Path(path)
    if not path.is_dir():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(sub.iterdir()):
            sub.rmdir()
    if not any(path.iterdir()):
        path.rmdir()


def int_list(what: str, minimum: int = 1) -> Callable[[str], tuple[int, ...]]:
    """argparse type: comma-separated integers, each >= minimum."""
    def parse(text: str) -> tuple[int, ...]:
        try:
            vals = tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: expected comma-separated integers, got {text!r}") from None
        if not vals or min(vals) < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {text!r}")
        return vals
    return parse


def cpu_list(text: str) -> list[int]:
    """argparse type: a Linux CPU list (0-11,14) of cores this process may use."""
    from enc2triton.core.host import parse_cpus, usable_cpus

    try:
        cpus = parse_cpus(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    missing = [c for c in cpus if c not in usable_cpus()]
    if missing:
        raise argparse.ArgumentTypeError(f"cores {missing} are not usable here (usable: {', '.join(map(str, usable_cpus()))})")
    return cpus


def at_least(minimum: float, kind: type = int) -> Callable[[str], float]:
    """argparse type: a number >= minimum (rejects -1 where a count or a length is meant)."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {text}")
        return v
    return parse


class _Lines:
    """Progress for a log file: a plain line at the start, about every 10% and at the end, not a redrawn bar."""

    def __init__(self, it, total, desc):
        self.it, self.desc, self.n, self.t0 = it, desc, 0, time.perf_counter()
        self.total = total if total is not None else (len(it) if hasattr(it, "__len__") else None)
        self.step = max(1, (self.total or 10) // 10)
        print(f"{desc}: 0/{self.total or '?'}", flush=True)

    def __iter__(self):
        for x in self.it:
            yield x
            self.update()
        self.close()

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n % self.step == 0 and self.n != self.total:
            print(f"{self.desc}: {self.n}/{self.total or '?'} ({time.perf_counter() - self.t0:.0f} s)", flush=True)

    def close(self) -> None:
        if self.n >= 0:
            print(f"{self.desc}: {self.n}/{self.total or '?'} done ({time.perf_counter() - self.t0:.0f} s)", flush=True)
            self.n = -1


class _Quiet:
    def __init__(self, it):
        self.it = it

    def __iter__(self):
        return iter(self.it)

    def update(self, k: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(it=None, total: int | None = None, desc: str = "", enabled: bool = True):
    """A progress bar on a terminal (tqdm); plain lines when stdout goes to a file (no kilobyte-long bar lines in logs);
    nothing when disabled. Iterate over it, or call update()/close()."""
    if not enabled:
        return _Quiet(it if it is not None else ())
    if sys.stdout.isatty():
        from tqdm import tqdm

        return tqdm(it, total=total, desc=desc, file=sys.stdout)
    return _Lines(it if it is not None else (), total, desc)
