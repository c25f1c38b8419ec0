"""What long steps print: a bar on a terminal, a few plain lines in a log; the soak's periodic status line."""
from __future__ import annotations

from enc2triton.core import cli
from enc2triton.measure import soak


def test_plain_lines_when_not_a_terminal(capsys):
    for _ in cli.progress(range(50), desc="calibration"):
        pass
    bar = cli.progress(total=4, desc="search")
    for _ in range(4):
        bar.update()
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "calibration: 0/50" and lines[-1].startswith("search: 4/4 done")
    assert len(lines) <= 20 and all(len(x) < 80 and "\r" not in x for x in lines)  # no redrawn bar in a log


def test_progress_off_prints_nothing(capsys):
    assert list(cli.progress(range(3), desc="x", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().out == ""


def test_soak_status_line(capsys):
    class Rss:
        samples = [(0.0, 1500 << 20, 4)]

    soak.status_printer(Rss(), 600)(60.2, [(t, 0.01, None) for t in range(0, 60)] + [(59.0, 0.5, "timeout")])
    line = capsys.readouterr().out.strip()
    assert line == "soak: 60/600 s, 61 requests, 1 failed, 1.0 req/s in the last 30 s, server RSS 1,500 MiB"
