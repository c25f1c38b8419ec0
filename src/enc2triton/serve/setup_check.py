"""`make setup`'s last step: tritonserver and perf_analyzer really start on this machine."""
from __future__ import annotations

import subprocess
import sys

from enc2triton.core import tools
from enc2triton.serve import server
from enc2triton.core.io import StageError


def check() -> None:
    print(f"libb64: {tools.link_libb64()}")
    pa = tools.find_perf_analyzer()
    r = subprocess.run([str(pa.path), "--help"], env=pa.environ(), capture_output=True, text=True, timeout=60)
    if "error while loading shared libraries" in r.stderr or "Usage" not in (r.stdout + r.stderr):
        raise StageError(f"perf_analyzer ({pa.path}) does not start: {(r.stderr or r.stdout).strip()[:400]}")
    print(f"perf_analyzer: ok ({pa.source}: {pa.path})")
    print(f"tritonserver: ok ({server.smoke_start()})")  # a real start on an empty repository, then a clean stop


def main() -> None:
    try:
        check()
    except StageError as e:
        sys.exit(f"setup check failed: {e}")


if __name__ == "__main__":
    main()
