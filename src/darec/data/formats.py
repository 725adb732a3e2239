"""Readers for the file formats our users have. Each returns :class:`RawData`: per-user item
sequences in time order (original ids) and an item text table.

Supported:

* RecBole atomic files: ``<name>.inter`` (+ optional ``<name>.item`` with item text)
* RecBole pre-split sequential files: ``<name>.{train,valid,test}.inter`` (+ ``.text``,
  ``.item2index``)
* one user per line: ``user item item ...`` (items in time order)
* CSV with named columns (MovieLens ``ratings.csv`` + ``movies.csv`` style)

Every problem in a file stops with a :class:`DataError` naming the file, the line and
what was expected.
"""

from __future__ import annotations

import csv
import difflib
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from darec.data.columnar import read_interaction_columns
from darec.errors import DarecError


class DataError(DarecError, ValueError):
    """Bad input data; the message names the file, the line and what was expected."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.message, self.line = Path(path), message, line

    def __reduce__(self) -> tuple:  # rebuilt from its own arguments in another process (multiprocessing)
        return type(self), (self.path, self.message, self.line)


@dataclass
class RawData:
    """Interactions as columns, never an object per row: row r is user ``user_ids[users[r]]``
    choosing item ``item_ids[items[r]]`` at ``times[r]`` (None: each user's rows are in time
    order already). User codes number users in the order they first appear in the source,
    which is the order the data set keeps. Item text and, where the item table has named
    columns, the item's attributes as (column, value) pairs, by original item id."""

    users: np.ndarray
    items: np.ndarray
    user_ids: list[str]
    item_ids: list[str]
    times: np.ndarray | None = None
    item_text: dict[str, str] = field(default_factory=dict)
    source: str = ""
    item_attributes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @classmethod
    def from_sequences(cls, sequences: dict[str, list[str]], item_text: dict[str, str] | None = None, source: str = "",
                       item_attributes: dict[str, list[tuple[str, str]]] | None = None) -> RawData:
        """From per-user item sequences in time order (small data: an object per row)."""
        items: dict[str, int] = {}
        codes = [items.setdefault(item, len(items)) for seq in sequences.values() for item in seq]
        users = np.repeat(np.arange(len(sequences), dtype=np.int64), [len(seq) for seq in sequences.values()])
        return cls(users, np.array(codes, dtype=np.int64), list(sequences), list(items), None, item_text or {}, source,
                   item_attributes or {})

    @property
    def n_interactions(self) -> int:
        return len(self.users)

    def in_time_order(self) -> np.ndarray:
        """Row order by user code, then time, then position in the source (ties keep file order)."""
        if self.times is None:
            return np.argsort(self.users, kind="stable")
        return np.lexsort((self.times, self.users))  # lexsort is stable: equal times keep file order

    @property
    def sequences(self) -> dict[str, list[str]]:
        """Per-user item sequences in time order, as original ids (an object per row: for small data)."""
        order = self.in_time_order()
        users, items = self.users[order], self.items[order]
        cuts = np.flatnonzero(np.diff(users)) + 1
        return {self.user_ids[int(group[0])]: [self.item_ids[i] for i in seq.tolist()]
                for group, seq in zip(np.split(users, cuts), np.split(items, cuts)) if len(group)}


USER_COLUMNS = ("user_id", "userid", "user", "reviewerid")
ITEM_COLUMNS = ("item_id", "itemid", "movieid", "item", "asin", "product_id")
TIME_COLUMNS = ("timestamp", "time", "unixreviewtime", "ts", "date")
TEXT_COLUMNS = ("movie_title", "title", "text", "name")
EXTRA_TEXT_COLUMNS = ("release_year", "year", "genres", "genre", "class", "categories", "brand")
# C0 and C1 control characters but the tab (a separator): never part of an id or a title.
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# How attribute columns read in prompts ("movie title is ..." -> "title is ..."); others: underscores become spaces.
ATTRIBUTE_NAMES = {"movie_title": "title", "name": "title", "text": "description", "class": "genre", "release_year": "release year"}


def _read_lines(path: Path) -> list[str]:
    """The file's lines (a UTF-8 BOM dropped, CRLF or LF endings), refusing anything that is
    not a readable regular UTF-8 text file, or holds control characters (tabs aside)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a folder, FIFO or device would fail later or block forever
            raise DataError(path, "not a regular file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "a broken link" if path.is_symlink() else "file not found") from None
    except OSError as exc:  # unreadable, a symlink loop, ...
        raise DataError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text (byte {exc.start})") from None
    # Split on newlines only: str.splitlines also breaks at form feeds and other separators inside a field.
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    for number, line in enumerate(lines, start=1):
        bad = CONTROL.search(line)
        if bad:
            raise DataError(path, f"control character U+{ord(bad.group()):04X} at column {bad.start() + 1}", number)
    if not any(line.strip() for line in lines):
        raise DataError(path, "file is empty")
    return lines


def _bare(column: str) -> str:
    """``item_id:token`` -> ``item_id`` (RecBole typed header)."""
    return column.split(":", 1)[0].strip().lower()


def _find(header: list[str], candidates: tuple[str, ...], path: Path, what: str, required: bool = True) -> int | None:
    bare = [_bare(c) for c in header]
    for name in candidates:
        if name in bare:
            return bare.index(name)
    if required:
        raise DataError(path, f"missing {what} column: expected one of {', '.join(candidates)}; header has {', '.join(bare)}", 1)
    return None


def _parse_time(value: str, path: Path, line: int) -> float:
    try:
        time = float(value)
    except ValueError:
        raise DataError(path, f"timestamp {value!r} is not a number", line) from None
    if not math.isfinite(time):  # a NaN compares false with everything and would scramble the user's order
        raise DataError(path, f"timestamp {value!r} is not a finite number", line)
    return time


def _time_column(header: list[str], path: Path) -> int | None:
    """The timestamp column, if any; a column named almost like one is refused rather than
    silently ignored (the interactions would fall back to file order)."""
    t = _find(header, TIME_COLUMNS, path, "timestamp", required=False)
    if t is None:
        for column in map(_bare, header):
            close = difflib.get_close_matches(column, TIME_COLUMNS, n=1, cutoff=0.75)
            if close and column not in (*USER_COLUMNS, *ITEM_COLUMNS, *TEXT_COLUMNS, *EXTRA_TEXT_COLUMNS):
                raise DataError(path, f"column {column!r} looks like a misspelled timestamp column ({close[0]!r}); "
                                      "rename it, or drop it to keep the file's order", 1)
    return t


def _columns(rows: list[tuple[str, str, float]], source: str) -> RawData:
    """(user, item, time) rows as :class:`RawData` columns."""
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    user_codes = np.array([users.setdefault(user, len(users)) for user, _, _ in rows], dtype=np.int64)
    item_codes = np.array([items.setdefault(item, len(items)) for _, item, _ in rows], dtype=np.int64)
    times = np.array([time for _, _, time in rows], dtype=np.float64)
    return RawData(user_codes, item_codes, list(users), list(items), times, source=source)


def _read_table(path: Path, delimiter: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) rows; ragged lines are errors."""
    lines = _read_lines(path)
    if delimiter == ",":
        reader = csv.reader(lines, delimiter=delimiter)
        try:
            rows = list(reader)
        except csv.Error as exc:  # e.g. a field over the csv module's size limit
            raise DataError(path, f"not valid CSV: {exc}", reader.line_num) from None
    else:
        rows = [line.split(delimiter) for line in lines]
    header = rows[0]
    body = []
    for number, fields in enumerate(rows[1:], start=2):
        if not fields or (len(fields) == 1 and not fields[0].strip()):  # a blank line (a line of bare separators is not)
            continue
        if len(fields) != len(header):
            raise DataError(path, f"expected {len(header)} fields ({', '.join(map(_bare, header))}), found {len(fields)}", number)
        body.append((number, fields))
    if not body:
        raise DataError(path, "no data rows after the header")
    return header, body


def _interactions(path: Path, delimiter: str) -> list[tuple[str, str, float]]:
    header, body = _read_table(path, delimiter)
    u = _find(header, USER_COLUMNS, path, "user")
    i = _find(header, ITEM_COLUMNS, path, "item")
    t = _time_column(header, path)
    rows = []
    for number, fields in body:
        user, item = fields[u].strip(), fields[i].strip()
        if not user or not item:
            raise DataError(path, "empty user or item id", number)
        time = _parse_time(fields[t].strip(), path, number) if t is not None else 0.0
        rows.append((user, item, time))
    return rows


def _item_text(path: Path, delimiter: str, known_items: set[str]) -> tuple[dict[str, str], dict[str, list[tuple[str, str]]]]:
    """Item text from a table (the title column first, then attribute columns), and the
    same as (column, value) attribute pairs."""
    header, body = _read_table(path, delimiter)
    i = _find(header, ITEM_COLUMNS, path, "item")
    title = _find(header, TEXT_COLUMNS, path, "title", required=False)
    extras = [j for j, c in enumerate(header) if _bare(c) in EXTRA_TEXT_COLUMNS]
    columns = ([title] if title is not None else []) + extras
    names = [(j, ATTRIBUTE_NAMES.get(_bare(header[j]), _bare(header[j]).replace("_", " "))) for j in columns]  # once, not per row
    texts: dict[str, str] = {}
    attributes: dict[str, list[tuple[str, str]]] = {}
    for number, fields in body:
        item = fields[i].strip()
        if item in texts:
            raise DataError(path, f"duplicate item id {item!r}", number)
        if item not in known_items:
            raise DataError(path, f"item {item!r} has text but appears in no interaction", number)
        pairs = [(name, fields[j].strip().replace("|", ", ")) for j, name in names]
        attributes[item] = [(key, value) for key, value in pairs if value]
        texts[item] = " | ".join(value for _, value in attributes[item])
    return texts, attributes


def _all_items(sequences: dict[str, list[str]]) -> set[str]:
    return {item for seq in sequences.values() for item in seq}


def read_interactions(path: Path, delimiter: str) -> RawData:
    """An interaction table: columnar and fast where the file is well-formed (pyarrow), else
    read line by line, which names the line and what is wrong with it."""
    line = _first_line(path)
    if line is not None:
        try:
            header = next(csv.reader([line], delimiter=delimiter)) if delimiter == "," else line.split(delimiter)
            columns = _find(header, USER_COLUMNS, path, "user"), _find(header, ITEM_COLUMNS, path, "item"), _time_column(header, path)
        except (csv.Error, DataError):
            columns = None  # the careful reader says what is wrong
        fast = read_interaction_columns(path, delimiter, header, *columns) if columns else None
        if fast is not None and all(_plain_id(i) for ids in (fast.user_ids, fast.item_ids) for i in ids):
            return RawData(fast.users, fast.items, fast.user_ids, fast.item_ids, fast.times, source=str(path))
    return _columns(_interactions(path, delimiter), str(path))


def _plain_id(value: str) -> bool:
    """Non-empty, no surrounding blanks, no control characters: what the careful reader would keep as it is."""
    return 0 < len(value) <= csv.field_size_limit() and value == value.strip() and not CONTROL.search(value)


def _first_line(path: Path) -> str | None:
    """The first line of a regular file that starts as UTF-8 text (else None: the careful reader says why)."""
    try:
        if not path.is_file():
            return None
        with open(path, "rb") as handle:
            return handle.readline(1 << 20).decode("utf-8-sig").rstrip("\r\n")
    except (OSError, UnicodeDecodeError):
        return None


def _with_text(raw: RawData, item_path: Path | None, delimiter: str) -> RawData:
    if item_path is not None:
        raw.item_text, raw.item_attributes = _item_text(item_path, delimiter, set(raw.item_ids))
    return raw


def read_atomic(inter_path: str | Path, item_path: str | Path | None = None) -> RawData:
    """RecBole atomic files: tab-separated with a typed header (``user_id:token ...``)."""
    inter_path = Path(inter_path)
    if item_path is None and os.path.lexists(inter_path.with_suffix(".item")):  # lexists: a broken link is an error, not absent
        item_path = inter_path.with_suffix(".item")
    return _with_text(read_interactions(inter_path, "\t"), Path(item_path) if item_path else None, "\t")


def read_csv(ratings_path: str | Path, items_path: str | Path | None = None) -> RawData:
    """CSV with named columns, e.g. MovieLens ``ratings.csv`` (+ ``movies.csv`` for titles)."""
    return _with_text(read_interactions(Path(ratings_path), ","), Path(items_path) if items_path else None, ",")


def read_user_lines(path: str | Path) -> RawData:
    """One user per line, whitespace-separated: ``user item item ...`` in time order."""
    path = Path(path)
    sequences: dict[str, list[str]] = {}
    for number, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise DataError(path, "expected a user id followed by at least one item id", number)
        if fields[0] in sequences:
            raise DataError(path, f"duplicate user id {fields[0]!r} (one line per user expected)", number)
        sequences[fields[0]] = fields[1:]
    return RawData.from_sequences(sequences, source=str(path))


def read_presplit(prefix: str | Path) -> RawData:
    """RecBole pre-split sequential files ``<prefix>.{train,valid,test}.inter``.

    Rows are ``user_id  item_id_list  item_id`` (history, target). The full sequence of a
    user is rebuilt from their longest training row plus the validation and test targets,
    checking that each split's history agrees with the previous splits.
    """
    prefix = Path(prefix)
    full: dict[str, list[str]] = {}
    users: dict[str, set[str]] = {}
    for split in ("train", "valid", "test"):
        path = Path(f"{prefix}.{split}.inter")
        header, body = _read_table(path, "\t")
        u = _find(header, USER_COLUMNS, path, "user")
        h = _find(header, ("item_id_list",), path, "history")
        i = _find(header, ITEM_COLUMNS, path, "item")
        seen: set[str] = set()
        for number, fields in body:
            user, history, target = fields[u].strip(), fields[h].split(), fields[i].strip()
            if not user or not target:
                raise DataError(path, f"empty {'user' if not user else 'target item'} id", number)
            row = history + [target]
            if split == "train":
                if len(row) > len(full.get(user, [])):
                    full[user] = row
                continue
            if user in seen:
                raise DataError(path, f"duplicate user id {user!r} (one row per user expected)", number)
            seen.add(user)
            known = full.get(user, [])
            # Histories may be cut to their last N items: the overlap must agree.
            n = min(len(known), len(history))
            if known[len(known) - n:] != history[len(history) - n:]:
                raise DataError(path, f"history of user {user!r} does not continue their earlier rows", number)
            full[user] = max(known, history, key=len) + [target]
        users[split] = seen
        if split == "test" and seen != users["valid"]:
            odd = sorted(seen ^ users["valid"])[0]
            raise DataError(path, f"user {odd!r} has a row in only one of the valid and test files (leave-one-out needs both)")
    texts: dict[str, str] = {}
    text_path, index_path = Path(f"{prefix}.text"), Path(f"{prefix}.item2index")
    if os.path.lexists(text_path):
        header, body = _read_table(text_path, "\t")
        i = _find(header, ITEM_COLUMNS, text_path, "item")
        t = _find(header, TEXT_COLUMNS, text_path, "text")
        raw = {}
        for number, fields in body:
            if fields[i] in raw:
                raise DataError(text_path, f"duplicate item id {fields[i]!r}", number)
            raw[fields[i]] = (fields[t].strip(), number)
        # Sequences use indices; the text file uses original ids (e.g. ASINs): map through item2index.
        if os.path.lexists(index_path):
            index = {}
            for number, line in enumerate(_read_lines(index_path), start=1):
                parts = line.split("\t")
                if len(parts) != 2:
                    raise DataError(index_path, "expected 'original_id<TAB>index'", number)
                if parts[1].strip() in index:
                    raise DataError(index_path, f"duplicate index {parts[1].strip()!r}", number)
                index[parts[1].strip()] = parts[0].strip()
            known_items = _all_items(full)
            for idx, original in index.items():
                if original in raw and idx in known_items:
                    texts[idx] = raw[original][0]
            unknown = [(n, k) for k, (_, n) in raw.items() if k not in set(index.values())]
            if unknown:
                raise DataError(text_path, f"item {unknown[0][1]!r} has text but is not in {index_path.name}", unknown[0][0])
        else:
            known_items = _all_items(full)
            for key, (text, number) in raw.items():
                if key not in known_items:
                    raise DataError(text_path, f"item {key!r} has text but appears in no interaction", number)
                texts[key] = text
    return RawData.from_sequences(full, texts, str(prefix))
