from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from darec.data import DataError, RawData, build_dataset, kcore, load_dataset
from tests.conftest import write


def test_leave_one_out_split_and_contiguous_ids() -> None:
    raw = RawData.from_sequences({"a": ["x", "y", "z", "w"], "b": ["y", "x", "q"], "c": ["x", "y"]}, {"x": "Ex"}, "mem")
    ds = build_dataset(raw, "toy")
    assert ds.item_ids[0] == "[PAD]" and sorted(ds.item_ids[1:]) == ["q", "w", "x", "y", "z"]
    assert ds.n_items == 5 and ds.user_ids == ["a", "b"] and ds.dropped_users == 1  # c is too short to split
    x = ds.item_ids.index("x")
    assert ds.item_text[x] == "Ex" and ds.item_text[ds.item_ids.index("y")] == ""
    histories, targets = ds.split("test")
    assert [ds.item_ids[i] for i in histories[0]] == ["x", "y", "z"] and ds.item_ids[targets[0]] == "w"
    histories, targets = ds.split("valid")
    assert [ds.item_ids[i] for i in histories[1]] == ["y"] and ds.item_ids[targets[1]] == "x"
    assert [list(s) for s in ds.train_sequences()] == [[x, ds.item_ids.index("y")], [ds.item_ids.index("y")]]
    # Training never holds a validation or test target position.
    assert all(len(t) == len(s) - 2 for t, s in zip(ds.train_sequences(), ds.sequences))
    pop = ds.item_popularity()
    assert pop[0] == 0 and pop[x] == 1 and pop.sum() == 3


def test_digest_changes_with_anything_a_model_sees() -> None:
    sequences = {"a": ["x", "y", "z", "w"], "b": ["y", "x", "q"]}
    digest = build_dataset(RawData.from_sequences(sequences, {"x": "Ex"}, "mem"), "toy").digest()
    assert build_dataset(RawData.from_sequences(sequences, {"x": "Ex"}, "mem"), "other name").digest() == digest
    assert build_dataset(RawData.from_sequences(sequences, {"x": "Ex2"}, "mem"), "toy").digest() != digest
    swapped = {"a": ["x", "z", "y", "w"], "b": ["y", "x", "q"]}
    assert build_dataset(RawData.from_sequences(swapped, {"x": "Ex"}, "mem"), "toy").digest() != digest


def test_kcore_is_iterative() -> None:
    raw = RawData.from_sequences({"u1": ["a", "b", "c"], "u2": ["a", "b"], "u3": ["a", "c", "d"]})
    kept = lambda k: RawData(raw.users[kcore(raw.users, raw.items, k)], raw.items[kcore(raw.users, raw.items, k)],
                             raw.user_ids, raw.item_ids).sequences
    # k=2: d goes (1 use) -> u3 keeps a, c; all remaining items have >= 2 uses; u2 has 2 items.
    assert kept(2) == {"u1": ["a", "b", "c"], "u2": ["a", "b"], "u3": ["a", "c"]}
    # k=3: b, c, d go -> users keep only 'a' -> fewer than 3 items -> nobody is left.
    assert kept(3) == {}


def test_named_datasets_resolve_under_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "mine" / "Mine.txt", "1 1 2 3 4\n2 2 3 4\n")
    ds = load_dataset("mine", data_root=tmp_path)
    assert ds.n_users == 2 and ds.n_items == 4
    monkeypatch.setenv("DAREC_DATA", str(tmp_path))
    assert load_dataset("mine").n_users == 2
    with pytest.raises(DataError, match="no such data set"):
        load_dataset("nothere", data_root=tmp_path)


def test_real_benchmark_sets(shared_data: Path) -> None:
    ml = load_dataset("ml-100k", data_root=shared_data)
    assert (ml.n_users, ml.n_items, sum(map(len, ml.sequences))) == (943, 1682, 100_000)
    assert ml.item_text[ml.item_ids.index("1")].startswith("Toy Story | 1995")
    sci = load_dataset("scientific", data_root=shared_data)
    assert sci.n_users == 8442 and sci.n_items <= 4385 and all(sci.item_text[1:])
    beauty = load_dataset("beauty", data_root=shared_data)
    assert (beauty.n_users, beauty.n_items, sum(map(len, beauty.sequences))) == (22363, 12101, 198502)
    # The split is the published one: the last item of each line is the test target.
    first = (shared_data / "beauty" / "Beauty.txt").read_text().splitlines()[0].split()
    _, targets = beauty.split("test")
    assert beauty.item_ids[targets[0]] == first[-1] and isinstance(targets, np.ndarray)
