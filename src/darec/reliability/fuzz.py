"""Seeded mutation fuzzing of the data readers.

Each case starts from a small valid data set in one supported format, damages one of its
files (byte flips, truncation, duplicated, deleted or swapped lines, wrong encodings, NUL
and control bytes, CRLF, a BOM, huge lines, huge or negative ids, NaN timestamps, a
misspelled header) and loads it the way ``darec train`` does, under a time limit. The
outcome is one of:

- ``loaded``: it loaded, and the result passed the checks below;
- ``clean_error``: a :class:`~darec.data.DataError` naming the damaged file's folder;
- ``traceback``: any other exception (a bug);
- ``hang``: no answer within the time limit (a bug);
- ``silent``: it loaded, but the result breaks an invariant of the file or of a data
  set (an interaction line that produced nothing, an id with control characters or
  surrounding blanks): damage taken for data.

A seeded loop rather than hypothesis: the mutations are those real files suffer, each case
is reproducible from (format, seed), and the benchmark runs thousands of them the same way.
"""

from __future__ import annotations

import random
import signal
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from darec.data import DataError, RawData, SequenceDataset, build_dataset
from darec.data import read_path
from darec.data.formats import CONTROL

# Small valid data sets, one per format: {file name: text}. The first file is the one loaded.
SEEDS: dict[str, dict[str, str]] = {
    "atomic": {
        "d.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
            f"u{u}\ti{(u * 7 + k) % 13}\t{1 + k % 5}\t{1000 + 10 * k + u}\n" for u in range(6) for k in range(6)),
        "d.item": "item_id:token\tmovie_title:token_seq\trelease_year:token\n" + "".join(
            f"i{i}\tFilm {i} (the Café cut)\t{1990 + i}\n" for i in range(13)),
    },
    "csv": {
        "ratings.csv": "userId,movieId,rating,timestamp\n" + "".join(
            f"{u},{(u * 5 + k) % 11},{1 + k % 5},{2000 + 7 * k + u}\n" for u in range(6) for k in range(6)),
        "movies.csv": "movieId,title,genres\n" + "".join(f'{i},"Movie {i}, The (199{i % 10})",Drama|Ñoir\n' for i in range(11)),
    },
    "txt": {
        "seq.txt": "".join(f"{u} " + " ".join(str((u * 3 + k) % 17) for k in range(7)) + "\n" for u in range(8)),
    },
    "presplit": {
        "S.train.inter": "user_id:token\titem_id_list:token_seq\titem_id:token\n" + "".join(
            f"{u}\t{' '.join(str((u + j) % 9) for j in range(k))}\t{(u + k) % 9}\n" for u in range(5) for k in range(1, 4)),
        "S.valid.inter": "user_id:token\titem_id_list:token_seq\titem_id:token\n" + "".join(
            f"{u}\t{' '.join(str((u + j) % 9) for j in range(4))}\t{(u + 4) % 9}\n" for u in range(5)),
        "S.test.inter": "user_id:token\titem_id_list:token_seq\titem_id:token\n" + "".join(
            f"{u}\t{' '.join(str((u + j) % 9) for j in range(5))}\t{(u + 5) % 9}\n" for u in range(5)),
        "S.text": "item_id:token\ttext:token_seq\n" + "".join(f"A{i}\tThing {i} — été\n" for i in range(9)),
        "S.item2index": "".join(f"A{i}\t{i}\n" for i in range(9)),
    },
}
FORMATS = tuple(SEEDS)


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _join(lines: list[bytes]) -> bytes:
    return b"\n".join(lines)


def flip_bits(data: bytes, rng: random.Random) -> bytes:
    """One to four random bits of ``data`` flipped."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def _duplicate_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    return _join(lines[: i + 1] + [lines[i]] + lines[i + 1:])


def _delete_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    del lines[rng.randrange(len(lines))]
    return _join(lines)


def _swap_lines(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return _join(lines)


def _insert(data: bytes, rng: random.Random, what: bytes) -> bytes:
    i = rng.randrange(len(data) + 1)
    return data[:i] + what + data[i:]


def _nul(data: bytes, rng: random.Random) -> bytes:
    return _insert(data, rng, b"\x00")


def _control(data: bytes, rng: random.Random) -> bytes:
    return _insert(data, rng, bytes([rng.choice([1, 7, 8, 11, 12, 13, 27, 28, 30, 127])]))


def _crlf(data: bytes, rng: random.Random) -> bytes:
    return data.replace(b"\n", b"\r\n")


def _lone_cr(data: bytes, rng: random.Random) -> bytes:
    return data.replace(b"\n", b"\r")


def _bom(data: bytes, rng: random.Random) -> bytes:
    return b"\xef\xbb\xbf" + data


def _latin1(data: bytes, rng: random.Random) -> bytes:
    return data.decode("utf-8", errors="replace").encode("latin-1", errors="replace")


def _utf16(data: bytes, rng: random.Random) -> bytes:
    return data.decode("utf-8", errors="replace").encode("utf-16")


def _huge_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i = rng.randrange(1, max(2, len(lines)))
    filler = rng.choice([b"x", b"9", b"\t", b" ", b","]) * rng.choice([1 << 12, 1 << 17, 1 << 20])
    lines.insert(min(i, len(lines)), filler)
    return _join(lines)


def _huge_field(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i = rng.randrange(1, max(2, len(lines)))
    if i < len(lines) and lines[i]:
        lines[i] = lines[i] + b"y" * (1 << 17)
    return _join(lines)


def _number(data: bytes, rng: random.Random, text: bytes) -> bytes:
    """Replace one run of digits with ``text``."""
    import re

    runs = list(re.finditer(rb"\d+", data))
    if not runs:
        return data
    m = rng.choice(runs)
    return data[: m.start()] + text + data[m.end():]


def _huge_id(data: bytes, rng: random.Random) -> bytes:
    return _number(data, rng, b"9" * rng.choice([20, 400, 5000]))


def _negative_id(data: bytes, rng: random.Random) -> bytes:
    return _number(data, rng, b"-" + str(rng.randrange(1, 10**6)).encode())


def _nan(data: bytes, rng: random.Random) -> bytes:
    return _number(data, rng, rng.choice([b"nan", b"inf", b"-inf", b"NaN", b"1e999"]))


def _header(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    lines[0] = flip_bits(lines[0], rng) if rng.random() < 0.5 else lines[0].replace(b"timestamp", b"timestmp").replace(b"item", b"itme")
    return _join(lines)


def _empty(data: bytes, rng: random.Random) -> bytes:
    return rng.choice([b"", b"\n", b"\n\n  \n", _lines(data)[0] + b"\n"])


def _blank_fields(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines[i] = b"\t".join(b"" if rng.random() < 0.5 else f for f in lines[i].split(b"\t"))
    return _join(lines)


MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "flip": flip_bits, "truncate": _truncate, "duplicate-line": _duplicate_line, "delete-line": _delete_line,
    "swap-lines": _swap_lines, "nul": _nul, "control": _control, "crlf": _crlf, "lone-cr": _lone_cr, "bom": _bom,
    "latin1": _latin1, "utf16": _utf16, "huge-line": _huge_line, "huge-field": _huge_field, "huge-id": _huge_id,
    "negative-id": _negative_id, "nan": _nan, "header": _header, "empty": _empty, "blank-fields": _blank_fields,
}


@dataclass
class Case:
    format: str
    seed: int
    file: str  # the file that was damaged
    mutations: list[str]
    outcome: str  # loaded, clean_error, traceback, hang, silent
    detail: str = ""


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Timeout


def _silent(folder: Path, fmt: str, raw: RawData, dataset: SequenceDataset) -> str:
    """Why what loaded breaks an invariant of its files or of a data set ('' when nothing does)."""
    for name in [*dataset.user_ids, *dataset.item_ids[1:]]:
        if not name or name != name.strip() or CONTROL.search(name):
            return f"id {name[:40]!r} is empty, padded or holds control characters"
    if any(CONTROL.search(text) for text in dataset.item_text):
        return "an item text holds control characters"
    if fmt in ("atomic", "csv", "txt"):  # every data line must have been read as data
        text = (folder / next(iter(SEEDS[fmt]))).read_bytes().decode("utf-8-sig")
        lines = [line for line in text.split("\n") if line.strip()]
        expected = len(lines) - (fmt != "txt")  # less the header
        got = raw.n_interactions if fmt != "txt" else len(np.unique(raw.users))
        if got != expected:
            return f"{expected} data lines but {got} {'interactions' if fmt != 'txt' else 'users'} read"
    return ""


def run_case(fmt: str, seed: int, workdir: Path, limit: float = 10.0) -> Case:
    """Damage one file of ``fmt``'s seed data set (mutations drawn from ``seed``) and load it."""
    rng = random.Random(f"{fmt}-{seed}")
    files = {name: text.encode("utf-8") for name, text in SEEDS[fmt].items()}
    target = rng.choice(list(files)) if rng.random() < 0.3 else next(iter(files))
    names = rng.sample(sorted(MUTATIONS), rng.choice([1, 1, 1, 2, 3]))
    for name in names:
        files[target] = MUTATIONS[name](files[target], rng)
    folder = Path(tempfile.mkdtemp(dir=workdir, prefix=f"{fmt}-{seed}-"))
    for name, data in files.items():
        (folder / name).write_bytes(data)
    source = folder / next(iter(SEEDS[fmt])) if fmt != "presplit" else folder / "S.train.inter"
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        raw = read_path(source)
        dataset = build_dataset(raw, source.name)
        signal.setitimer(signal.ITIMER_REAL, 0)
        why = _silent(folder, fmt, raw, dataset)
        return Case(fmt, seed, target, names, "silent" if why else "loaded", why)
    except _Timeout:
        return Case(fmt, seed, target, names, "hang", f"no answer in {limit:g} s")
    except DataError as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        named = str(folder) in str(exc)
        message = str(exc).replace(f"{folder}/", "")
        return Case(fmt, seed, target, names, "clean_error" if named else "traceback",
                    message if named else f"DataError without the file: {message}")
    except Exception as exc:  # noqa: BLE001  (what the fuzzer is for: any other exception is a bug)
        signal.setitimer(signal.ITIMER_REAL, 0)
        return Case(fmt, seed, target, names, "traceback",
                    "".join(traceback.format_exception_only(exc)).strip().replace(f"{folder}/", "")[:500])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fuzz(fmt: str, cases: int, workdir: Path, start: int = 0, limit: float = 10.0) -> list[Case]:
    return [run_case(fmt, seed, workdir, limit) for seed in range(start, start + cases)]
