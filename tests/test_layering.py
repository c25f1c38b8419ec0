"""The package's folders are layers: a module imports from its own folder or a lower layer only (every import,
lazy ones inside functions included, parsed from the source: nothing is imported here)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "enc2triton"
# lowest first; folders on one line are siblings: neither imports the other
LAYERS = (
    ("core",),                  # helpers: paths and settings, logs, command lines, texts, tables, metrics, host, tools
    ("runtime",),               # what runs one engine (ONNX Runtime, TensorRT, PyTorch), also inside a Triton model
    ("export", "quantize"),     # step 1 the ONNX export; step 2 the ONNX precision variants
    ("torch_engines", "trt"),   # the PyTorch engines (from the ONNX INT8 search's choices); the TensorRT engines
    ("serve",),                 # the Triton model repository, the server, its statistics
    ("measure",),               # quality, perf, benchmarks, tune, peers, soak
    ("report",),                # REPORT.md from the logs
)
RANK = {folder: i for i, group in enumerate(LAYERS) for folder in group}
ENTRY = len(LAYERS)  # enc2triton/<name>.py: `python -m enc2triton.<name>` kept at its old path; may import any folder


def modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def folder_of(path: Path) -> str | None:
    rel = path.relative_to(PKG).parts
    return rel[0] if len(rel) > 1 else None


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, enc2triton module or package) of every import in the file, relative ones resolved."""
    package = ["enc2triton", *path.relative_to(PKG).parts[:-1]]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            mod = ".".join(x for x in (base, node.module) if x)
            if mod == "enc2triton":  # `from enc2triton import core`: the names are the folders
                out += [(node.lineno, f"enc2triton.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, mod))
    return [(line, m) for line, m in out if m == "enc2triton" or m.startswith("enc2triton.")]


def test_every_folder_has_a_layer():
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(RANK), f"give each folder a place in LAYERS: {sorted(folders ^ set(RANK))}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_only_its_folder_or_below(path):
    here = folder_of(path)
    rank = RANK.get(here, ENTRY) if here else ENTRY
    wrong = []
    for line, mod in imported(path):
        parts = mod.split(".")
        there = parts[1] if len(parts) > 1 else None
        if there is None or there not in RANK:
            wrong.append(f"line {line}: {mod} (not in a layer folder)")
        elif there != here and RANK[there] >= rank:
            wrong.append(f"line {line}: {mod} ({there} is {'a sibling' if RANK[there] == rank else 'above'} {here})")
    assert not wrong, f"{path.relative_to(PKG)} imports from a higher layer: " + "; ".join(wrong)


def test_modules_stay_readable():
    """No module over ~500 lines: a bigger one is split (report/ shows how)."""
    big = {str(p.relative_to(PKG)): n for p in modules() if (n := len(p.read_text().splitlines())) > 520}
    assert not big, big


@pytest.mark.parametrize("path", [p for p in modules() if folder_of(p) is None and p.name != "__init__.py"],
                         ids=lambda p: p.name)
def test_old_entry_points_are_thin_shims(path):
    """enc2triton/<name>.py only runs main from the stage's folder (the code lives there)."""
    tree = ast.parse(path.read_text())
    froms = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert len(froms) == 1 and [a.name for a in froms[0].names] == ["main"], path.name
    assert froms[0].module.startswith("enc2triton.") and froms[0].module.endswith("." + path.stem), froms[0].module
    assert len(path.read_text().splitlines()) <= 8
