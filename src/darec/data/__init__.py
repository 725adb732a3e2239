"""Data: readers for common formats, named data sets, the synthetic generator, leave-one-out splits."""

from __future__ import annotations

import os
from pathlib import Path

from darec.data.cache import cached
from darec.data.dataset import SequenceDataset, build_dataset, kcore
from darec.data.formats import DataError, RawData, read_atomic, read_csv, read_presplit, read_user_lines
from darec.data.synthetic import PRESETS, SyntheticSpec, generate, spec_for

__all__ = [
    "DataError", "RawData", "SequenceDataset", "SyntheticSpec", "build_dataset", "data_roots", "generate",
    "kcore", "load_dataset", "read_atomic", "read_csv", "read_presplit", "read_raw", "read_user_lines",
]

NAMED = ("ml-100k", "scientific", "beauty", "sports")
DOWNLOAD_ROOT = Path.home() / ".cache" / "darec" / "data"


def data_roots(data_root: str | Path | None = None) -> list[Path]:
    """Where named data sets are looked for, in order: the given root, ``$DAREC_DATA``,
    ``../shared/data`` (when it exists), and the download folder."""
    roots = [Path(data_root)] if data_root else []
    if os.environ.get("DAREC_DATA"):
        roots.append(Path(os.environ["DAREC_DATA"]))
    # ../shared/data beside the working directory, or beside a source checkout of darec.
    for shared in (Path("..") / "shared" / "data", Path(__file__).resolve().parents[3].parent / "shared" / "data"):
        if shared.is_dir() and shared.resolve() not in [r.resolve() for r in roots]:
            roots.append(shared)
    roots.append(DOWNLOAD_ROOT)
    return roots


def download_root(data_root: str | Path | None = None) -> Path:
    if data_root:
        return Path(data_root)
    return Path(os.environ["DAREC_DATA"]) if os.environ.get("DAREC_DATA") else DOWNLOAD_ROOT


def source_files(path: Path) -> list[Path]:
    """The data file a path stands for (a folder: the file found in it, as :func:`read_path`
    picks it) and the companion files its reader also reads, where they exist."""
    if path.is_dir():
        # RecBole convention first: <dir>/<dir name>.inter, then whatever single format is there.
        candidates = [path / f"{path.name}.inter", *sorted(path.glob("*.train.inter")), path / "ratings.csv",
                      *sorted(path.glob("*.inter")), *sorted(path.glob("*.csv")), *sorted(path.glob("*.txt"))]
        for candidate in candidates:
            if candidate.is_file():
                return source_files(candidate)
        raise DataError(path, "no data file found (expected *.inter, *.train.inter, ratings.csv, *.csv or *.txt)")
    name = path.name
    if name.endswith(".train.inter"):
        prefix = name[: -len(".train.inter")]
        files = [path.parent / f"{prefix}.{part}" for part in ("train.inter", "valid.inter", "test.inter", "text", "item2index")]
        return files[:3] + [f for f in files[3:] if os.path.lexists(f)]
    if name.endswith(".inter"):
        return [path, *([path.with_suffix(".item")] if os.path.lexists(path.with_suffix(".item")) else [])]
    if name.endswith(".csv"):
        return [path, *_csv_items(path)]
    return [path]


def _csv_items(path: Path) -> list[Path]:
    """The item table beside a CSV of interactions (movies.csv or items.csv), if any."""
    return [p for p in (path.parent / "movies.csv", path.parent / "items.csv") if p.is_file() and p != path][:1]


def read_path(path: Path) -> RawData:
    """Read a file or a folder in any supported format, recognised by its file names."""
    path, *companions = source_files(path)
    name = path.name
    if name.endswith(".train.inter"):
        return read_presplit(path.parent / name[: -len(".train.inter")])
    if name.endswith(".inter"):
        return read_atomic(path)
    if name.endswith(".csv"):
        return read_csv(path, companions[0] if companions else None)
    return read_user_lines(path)  # which refuses what is not a regular file


def locate(name: str, data_root: str | Path | None = None) -> Path:
    """The path a data set name or path stands for."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    roots = data_roots(data_root)
    for root in roots:
        if (root / name).exists():
            return root / name
    hint = " Try `darec data download " + name + "`." if not name.startswith(("/", ".")) else ""
    raise DataError(
        name,
        f"no such data set or path; looked in {', '.join(str(r) for r in roots)}. Named sets: "
        f"{', '.join(NAMED)}, synthetic[-{'|'.join(PRESETS)}].{hint}",
    )


def synthetic(name: str) -> bool:
    return name == "synthetic" or name.startswith("synthetic-")


def read_raw(name: str, data_root: str | Path | None = None, seed: int = 0) -> RawData:
    if synthetic(name):
        return generate(spec_for(name, seed))
    return read_path(locate(name, data_root))


def load_dataset(name: str, data_root: str | Path | None = None, k_core: int = 0, seed: int = 0) -> SequenceDataset:
    """A named data set, ``synthetic[-size]``, or a path in any supported format, split
    leave-one-out. A file's data set is cached beside it, keyed by the files' checksum (see
    :mod:`darec.data.cache`), so loading it again maps the arrays back at once."""
    display = Path(name).name if Path(name).exists() else name
    if synthetic(name):
        return build_dataset(read_raw(name, data_root, seed), display, k_core)
    files = source_files(locate(name, data_root))
    return cached(files, k_core, display, lambda: build_dataset(read_path(files[0]), display, k_core))
