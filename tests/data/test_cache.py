"""The data cache: the same data set as reading the files, read again when they change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from darec.data import load_dataset
from darec.data import cache as cache_module
from tests.conftest import write

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def same(a, b) -> bool:
    return (a.user_ids == b.user_ids and a.item_ids == b.item_ids and a.item_text == b.item_text
            and a.item_attributes == b.item_attributes and a.dropped_users == b.dropped_users
            and len(a.sequences) == len(b.sequences) and all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences)))


def test_a_second_load_comes_from_the_cache_and_equals_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inter = write(tmp_path / "d" / "d.inter", INTER + "".join(f"u{u}\ti{(u * 7 + t) % 13}\t1\t{t}\n" for u in range(9) for t in range(5))
                  + "short\ti1\t1\t0\n")
    write(tmp_path / "d" / "d.item", "item_id:token\tmovie_title:token_seq\tclass:token_seq\ni1\tOne\tA|B\ni2\tTwo\t\n")
    first = load_dataset(str(inter.parent), k_core=2)
    assert len(list((tmp_path / "d" / ".darec-cache").iterdir())) == 1
    builds = []
    monkeypatch.setattr(cache_module, "save", lambda folder, dataset: builds.append(folder))
    second = load_dataset(str(inter.parent), k_core=2)
    assert not builds and same(first, second) and isinstance(second.sequences.values, np.memmap)
    assert second.split("test")[1].tolist() == first.split("test")[1].tolist()
    # Another k-core, or a changed file, is read from the source again.
    load_dataset(str(inter.parent), k_core=0)
    write(tmp_path / "d" / "d.item", "item_id:token\tmovie_title:token_seq\ni1\tUno\n")
    changed = load_dataset(str(inter.parent), k_core=2)
    assert len(builds) == 2 and changed.item_text[changed.item_ids.index("i1")] == "Uno"


def test_a_damaged_cache_is_rebuilt_and_a_read_only_folder_caches_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inter = write(tmp_path / "d.inter", INTER + "".join(f"u{u}\ti{t}\t1\t{t}\n" for u in range(3) for t in range(4)))
    first = load_dataset(str(inter))
    (folder,) = (tmp_path / ".darec-cache").iterdir()
    (folder / "items.npy").write_bytes(b"broken")
    assert same(load_dataset(str(inter)), first) and np.load(folder / "items.npy").size == 12
    monkeypatch.setattr(cache_module, "USER_CACHE", tmp_path / "home-cache")
    readonly = write(tmp_path / "ro" / "d.inter", inter.read_text())
    readonly.parent.chmod(0o555)
    try:
        assert same(load_dataset(str(readonly)), first)
    finally:
        readonly.parent.chmod(0o755)
    assert not (readonly.parent / ".darec-cache").exists() and len(list((tmp_path / "home-cache").iterdir())) == 1
    monkeypatch.setenv("DAREC_DATA_CACHE", "off")
    monkeypatch.setattr(cache_module, "load", lambda *a: pytest.fail("the cache was read while off"))
    assert same(load_dataset(str(inter)), first)
