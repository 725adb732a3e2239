"""Interaction tables read as columns (pyarrow's multi-threaded CSV reader): ids go straight
into dictionary-encoded columns, so tens of millions of rows never become Python objects.

This is the fast path for files that are well-formed. It gives up (returns None) at
anything unusual, and :mod:`darec.data.formats` then reads the file line by line, which
names the line and what is wrong with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv


class Columns(NamedTuple):
    users: np.ndarray  # int64 codes, numbered in order of first appearance
    items: np.ndarray
    user_ids: list[str]
    item_ids: list[str]
    times: np.ndarray | None


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Codes in order of first appearance, and the ids they stand for."""
    if column.num_chunks == 0:
        return np.zeros(0, dtype=np.int64), []
    # Each block of the file has its own dictionary; unifying keeps the first block's and
    # appends what later blocks add, so codes still follow first appearance.
    unified = column.unify_dictionaries()
    codes = np.concatenate([chunk.indices.to_numpy(zero_copy_only=False).astype(np.int64) for chunk in unified.chunks])
    return codes, unified.chunk(0).dictionary.to_pylist()


def read_interaction_columns(path: Path, delimiter: str, header: list[str], user: int, item: int,
                             time: int | None) -> Columns | None:
    """The user, item and (optional) time columns of a delimited file, or None where the
    file is not plainly well-formed (ragged rows, a time that is no finite number, ...)."""
    names = [header[user], header[item], *([header[time]] if time is not None else [])]
    if len(set(header)) != len(header):
        return None
    ids = pa.dictionary(pa.int32(), pa.string())
    types = {header[user]: ids, header[item]: ids, **({header[time]: pa.float64()} if time is not None else {})}
    try:
        table = pacsv.read_csv(
            path,
            pacsv.ReadOptions(block_size=1 << 24),
            pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if delimiter == "," else False),
            pacsv.ConvertOptions(column_types=types, include_columns=names, strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
        return None
    if table.num_rows == 0:
        return None
    users, user_ids = _codes(table.column(names[0]))
    items, item_ids = _codes(table.column(names[1]))
    times = None
    if time is not None:
        column = table.column(names[2])
        if column.null_count or not pc.all(pc.is_finite(column)).as_py():
            return None
        times = column.to_numpy()
    return Columns(users, items, user_ids, item_ids, times)
