from __future__ import annotations

import os
from pathlib import Path

import pytest

from darec.data import DataError, read_atomic, read_csv, read_path, read_presplit, read_user_lines
from tests.conftest import write

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def test_atomic_orders_by_time_with_stable_ties(tmp_path: Path) -> None:
    inter = write(tmp_path / "d.inter", INTER + "u1\ta\t5\t30\nu1\tb\t5\t10\nu1\tc\t5\t10\nu2\tc\t1\t1\n")
    write(tmp_path / "d.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\nb\tBee\t1990\na\tAy\t\nc\tSea\t2001\n")
    raw = read_atomic(inter)
    assert raw.sequences == {"u1": ["b", "c", "a"], "u2": ["c"]}  # b before c: same time, file order
    assert raw.item_text["b"] == "Bee | 1990" and raw.item_text["a"] == "Ay"


def test_csv_with_named_columns(tmp_path: Path) -> None:
    ratings = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4,200\n1,11,3,100\n2,10,5,50\n")
    movies = write(tmp_path / "movies.csv", 'movieId,title,genres\n10,"Heat, The (1995)",Action|Crime\n11,Up (2009),Animation\n')
    raw = read_csv(ratings, movies)
    assert raw.sequences == {"1": ["11", "10"], "2": ["10"]}
    assert raw.item_text["10"] == "Heat, The (1995) | Action, Crime"
    assert read_path(tmp_path).sequences == raw.sequences  # a folder with ratings.csv + movies.csv


def test_user_lines(tmp_path: Path) -> None:
    raw = read_user_lines(write(tmp_path / "x.txt", "1 5 6 7\n2 6 5\n"))
    assert raw.sequences == {"1": ["5", "6", "7"], "2": ["6", "5"]}


def test_presplit_rebuilds_full_sequences_and_maps_text(tmp_path: Path) -> None:
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    write(tmp_path / "S.train.inter", head + "0\t0 1\t2\n0\t0\t1\n1\t3\t0\n")
    write(tmp_path / "S.valid.inter", head + "0\t0 1 2\t3\n1\t3 0\t1\n")
    write(tmp_path / "S.test.inter", head + "0\t1 2 3\t4\n1\t3 0 1\t2\n")  # user 0's history cut to 3 items
    write(tmp_path / "S.item2index", "A0\t0\nA1\t1\nA2\t2\nA3\t3\nA4\t4\n")
    write(tmp_path / "S.text", "item_id:token\ttext:token_seq\nA0\tzero\nA4\tfour\n")
    raw = read_presplit(tmp_path / "S")
    assert raw.sequences == {"0": ["0", "1", "2", "3", "4"], "1": ["3", "0", "1", "2"]}
    assert raw.item_text == {"0": "zero", "4": "four"}
    assert read_path(tmp_path).sequences == raw.sequences


@pytest.mark.parametrize(
    "content, line, expected",
    [
        ("user_id:token\trating:float\tts:float\nu\t1\t1\n", 1, "missing item column"),
        (INTER + "u\ta\t1\tyesterday\n", 2, "timestamp 'yesterday' is not a number"),
        (INTER + "u\ta\t1\t5\nu\tb\t1\n", 3, "expected 4 fields"),
        ("", None, "file is empty"),
        (INTER, None, "no data rows"),
    ],
)
def test_bad_interaction_files_name_file_and_line(tmp_path: Path, content: str, line: int | None, expected: str) -> None:
    path = write(tmp_path / "bad.inter", content)
    with pytest.raises(DataError) as info:
        read_atomic(path)
    where = f"{path}:{line}" if line else str(path)
    assert str(info.value).startswith(where + ":") and expected in str(info.value)


def test_item_text_errors(tmp_path: Path) -> None:
    inter = write(tmp_path / "d.inter", INTER + "u\ta\t1\t1\n")
    write(tmp_path / "d.item", "item_id:token\tmovie_title:token_seq\na\tA\nzzz\tunknown\n")
    with pytest.raises(DataError, match=r"d\.item:3: item 'zzz' has text but appears in no interaction"):
        read_atomic(inter)
    write(tmp_path / "d.item", "item_id:token\tmovie_title:token_seq\na\tA\na\tagain\n")
    with pytest.raises(DataError, match=r"d\.item:3: duplicate item id 'a'"):
        read_atomic(inter)


def test_duplicate_user_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"u\.txt:2: duplicate user id '1'"):
        read_user_lines(write(tmp_path / "u.txt", "1 2 3\n1 4 5\n"))


def test_ragged_user_line_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"u\.txt:2: expected a user id followed by at least one item id"):
        read_user_lines(write(tmp_path / "u.txt", "1 2 3\n7\n"))
    with pytest.raises(DataError, match="file not found"):
        read_atomic(tmp_path / "missing.inter")


def test_a_data_error_crosses_a_process_boundary_whole(tmp_path: Path) -> None:
    """Raised in a worker process (multiprocessing, a DataLoader), it must come back as itself."""
    import pickle  # noqa: S403  (the error's own round trip, nothing read from a file)

    error = DataError(tmp_path / "u.inter", "expected 3 columns", line=7)
    back = pickle.loads(pickle.dumps(error))  # noqa: S301
    assert type(back) is DataError and str(back) == str(error) and (back.path, back.line) == (error.path, 7)


def test_presplit_user_missing_from_test(tmp_path: Path) -> None:
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    write(tmp_path / "S.train.inter", head + "0\t0\t1\n")
    write(tmp_path / "S.valid.inter", head + "0\t0 1\t2\n1\t5\t6\n")
    write(tmp_path / "S.test.inter", head + "0\t0 1 2\t3\n")
    with pytest.raises(DataError, match=r"S\.test\.inter: user '1' has a row in only one of the valid and test files"):
        read_presplit(tmp_path / "S")


# -- damaged input: each refused with the file (and line) named ------------------------------------

def test_a_nan_timestamp_is_refused_not_sorted_anywhere(tmp_path: Path) -> None:
    inter = write(tmp_path / "d.inter", INTER + "u\ta\t1\t3\nu\tb\t1\tnan\nu\tc\t1\t1\nu\td\t1\t2\n")
    with pytest.raises(DataError, match=r"d.inter:3: timestamp 'nan' is not a finite number"):
        read_atomic(inter)


def test_a_misspelled_timestamp_header_is_refused(tmp_path: Path) -> None:
    ratings = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestmp\n1,10,4,200\n")
    with pytest.raises(DataError, match=r"ratings.csv:1: column 'timestmp' looks like a misspelled timestamp"):
        read_csv(ratings)
    # No timestamp column at all: the file's order, as documented.
    assert read_csv(write(tmp_path / "r2.csv", "userId,movieId,rating\n1,10,4\n1,9,4\n")).sequences == {"1": ["10", "9"]}


@pytest.mark.parametrize("bad", ["\x00", "\x07", "\x1c", "\x85", "\r"])
def test_control_characters_inside_ids_are_refused(tmp_path: Path, bad: str) -> None:
    inter = write(tmp_path / "d.inter", INTER + f"u1\ta{bad}x\t1\t1\n")
    with pytest.raises(DataError, match=rf"d.inter:2: control character U\+{ord(bad):04X}"):
        read_atomic(inter)
    with pytest.raises(DataError, match=r"x.txt:1: control character"):
        read_user_lines(write(tmp_path / "x.txt", f"1 5{bad} 6\n"))


def test_a_utf8_bom_is_dropped(tmp_path: Path) -> None:
    inter = tmp_path / "d.inter"
    inter.write_bytes(b"\xef\xbb\xbf" + (INTER + "u1\ta\t1\t1\n").encode())
    assert read_atomic(inter).sequences == {"u1": ["a"]}
    txt = tmp_path / "x.txt"
    txt.write_bytes(b"\xef\xbb\xbf1 5 6\r\n2 6 5\r\n")  # and CRLF endings
    assert read_user_lines(txt).sequences == {"1": ["5", "6"], "2": ["6", "5"]}


def test_paths_that_are_not_regular_files_are_refused_without_hanging(tmp_path: Path) -> None:
    inter = write(tmp_path / "d.inter", INTER + "u1\ta\t1\t1\n")
    (tmp_path / "d.item").mkdir()  # a folder where the item table should be
    with pytest.raises(DataError, match=r"d.item: not a regular file"):
        read_atomic(inter)
    (tmp_path / "d.item").rmdir()
    (tmp_path / "d.item").symlink_to(tmp_path / "d.item")  # a symlink loop
    with pytest.raises(DataError, match=r"d.item: cannot read"):
        read_atomic(inter)
    os.mkfifo(tmp_path / "f.inter")  # reading a FIFO would block forever
    with pytest.raises(DataError, match=r"f.inter: not a regular file"):
        read_path(tmp_path / "f.inter")
    (tmp_path / "S.valid.inter").mkdir()
    write(tmp_path / "S.train.inter", "user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0\t1\n")
    with pytest.raises(DataError, match=r"S.valid.inter: not a regular file"):
        read_presplit(tmp_path / "S")


def test_a_csv_field_over_the_csv_limit_is_an_error_with_its_line(tmp_path: Path) -> None:
    ratings = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4,200\n1,\"" + "x" * 200_000 + "\",4,1\n")
    with pytest.raises(DataError, match=r"ratings.csv:3: not valid CSV: field larger than field limit"):
        read_csv(ratings)


def test_a_line_of_bare_separators_is_not_taken_for_a_blank_line(tmp_path: Path) -> None:
    ratings = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4,200\n,,,\n")
    with pytest.raises(DataError, match=r"ratings.csv:3: empty user or item id"):
        read_csv(ratings)
