"""Atomic files, hashes and the JSON manifest that stages hand over to each other.

A file is only ever visible under its final name once complete: writers go to a temp file in the
same folder and rename it, so an interrupted run leaves at most a `*.partial` file behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from enc2triton.core import spec

MANIFEST_VERSION = 1


class StageError(RuntimeError):
    """A stage could not do what was asked; the message says what to do about it."""


def first_line(e: BaseException) -> str:
    """An error in one line, as logs and summaries record it (its type when it says nothing)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def ensure_writable_dir(path: Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-", delete=True)
        probe.close()
    except OSError as e:
        raise StageError(f"output folder {path} is not writable: {e.strerror or e}") from e
    return path


def default_permissions(path: Path) -> None:
    """What a plain open()/mkdir() would have given under the current umask (mkstemp/mkdtemp give 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask)


def rel(path: Path, base: Path = spec.ROOT) -> str:
    """`path` relative to `base` when inside it, else as given: logs name files without a machine's absolute paths."""
    try:
        return str(Path(path).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp path next to `final`; rename it into place only if the block succeeds."""
    final = Path(final)
    ensure_writable_dir(final.parent)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        default_permissions(tmp_path)  # mkstemp makes 0600; the server may run as another user
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def read_earlier(path: Path, key: str) -> dict | None:
    """An earlier result file as a dict holding a dict under `key`; None when absent, unreadable or of another shape
    (a truncated file is no result to keep)."""
    try:
        prev = read_json(path)
    except (OSError, ValueError):
        return None
    return prev if isinstance(prev, dict) and isinstance(prev.get(key), dict) else None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def manifest_path(artifacts: Path | None = None) -> Path:
    return Path(artifacts or spec.ARTIFACTS) / "manifest.json"


def load_manifest(artifacts: Path | None = None, required: bool = True) -> dict:
    path = manifest_path(artifacts)
    if not path.exists():
        if required:
            raise StageError(f"{path} not found: run `python torch2onnx.py` (or `make export`) first")
        return {"version": MANIFEST_VERSION}
    return read_json(path)


def update_manifest(section: str, value: Any, artifacts: Path | None = None, key: str | None = None) -> dict:
    """Replace one top-level section of the manifest, or with `key` one entry of it; the others are kept as they are
    on disk now (re-read: another stage may have written meanwhile)."""
    return update_manifest_sections({section: value}, artifacts, key=key)


def update_manifest_sections(values: dict, artifacts: Path | None = None, drop: tuple[str, ...] = (),
                             key: str | None = None) -> dict:
    """Replace the given top-level sections (with `key`: that one entry of each) and remove `drop`, in one atomic
    write; every other section stays as it is on disk. Every manifest write goes through here."""
    manifest = load_manifest(artifacts, required=False)
    if key is not None:
        values = {section: {**(manifest.get(section) or {}), key: value} for section, value in values.items()}
    manifest.update(values, version=MANIFEST_VERSION)
    for section in drop:
        manifest.pop(section, None)
    write_json(manifest_path(artifacts), manifest)
    return manifest


def artifact_entry(path: Path, artifacts: Path | None = None, **extra: Any) -> dict:
    """Manifest record of a produced file: path relative to the artifacts folder, size and hash."""
    path = Path(path)
    return {"path": rel(path, Path(artifacts or spec.ARTIFACTS)), "bytes": path.stat().st_size, "sha256": sha256_file(path), **extra}


def resolve(entry_path: str, artifacts: Path | None = None) -> Path:
    p = Path(entry_path)
    return p if p.is_absolute() else Path(artifacts or spec.ARTIFACTS) / p


def is_valid(entry: dict | None, artifacts: Path | None = None) -> bool:
    """True when the recorded file exists and still has the recorded hash (resume after interruption)."""
    if not entry or not entry.get("path"):
        return False
    path = resolve(entry["path"], artifacts)
    return path.exists() and path.stat().st_size == entry.get("bytes") and sha256_file(path) == entry.get("sha256")


def variant_up_to_date(entry: dict | None, artifacts: Path, **sources) -> bool:
    """A manifest variant entry whose ONNX file is intact and whose recorded sources (hashes, keys) are these."""
    return bool(entry) and is_valid(entry.get("onnx"), artifacts) and all(entry.get(k) == v for k, v in sources.items())


def fp32_export(manifest: dict, artifacts: Path) -> dict:
    """The manifest's fp32 ONNX entry, refused when its file is missing or changed: every variant is built from it."""
    fp32 = ((manifest.get("variants") or {}).get("fp32") or {}).get("onnx")
    if not is_valid(fp32, artifacts):
        raise StageError("the fp32 ONNX export is missing or changed since it was recorded: run `python torch2onnx.py` first")
    return fp32
