"""Files: written so that nothing half-written is ever left under the final name, and read
so that a damaged one is named in the error, never a bare parser traceback."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from safetensors import SafetensorError

from darec.errors import DarecError

TMP_SUFFIX = ".tmp"


class DamagedFile(DarecError, ValueError):
    """A file darec wrote cannot be read back as it was written: truncated, corrupted or changed."""


class WriteError(DarecError, OSError):
    """A file could not be written (a full disk, a read-only folder); what was there is unchanged."""

    def __str__(self) -> str:
        return str(self.strerror)


def atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as exc:
        raise WriteError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, SafetensorError) as exc:  # safetensors reports a full disk as its own error
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(exc, "strerror", None) or str(exc)
        raise WriteError(getattr(exc, "errno", None), f"cannot write {path}: {reason}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as a PNG, atomically, and close it."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    finally:
        pyplot().close(fig)


def check_writable(folder: Path) -> None:
    """Fail now, naming ``folder``, if files cannot be created in it (read-only, full, not ours)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=TMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise WriteError(exc.errno, f"cannot write in {folder}: {exc.strerror}") from None


def copy_atomic(source: Path, path: Path) -> None:
    atomic_write(path, lambda tmp: shutil.copyfile(source, tmp))


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete what interrupted atomic writes left in ``folder`` (and its sub-folders); returns them."""
    left = sorted(Path(folder).rglob(f".*{TMP_SUFFIX}"))
    for p in left:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return left


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_json(path: Path) -> Any:
    """A JSON file, or :class:`DamagedFile` naming it (``FileNotFoundError`` when absent)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DamagedFile(f"{path}: damaged (not UTF-8 text at byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DamagedFile(f"{path}: damaged or truncated JSON ({exc})") from None


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


@contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """Build a folder under a temporary name; it replaces ``out`` only once complete."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=TMP_SUFFIX))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
