from __future__ import annotations

from pathlib import Path

import pytest

from darec.io import DamagedFile, WriteError, atomic_write_text, read_json, remove_temporaries


def test_damaged_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{\n  "epoch": 3,\n  "best":')
    with pytest.raises(DamagedFile, match=r"state.json: damaged or truncated JSON \(Expecting value: line 3"):
        read_json(tmp_path / "state.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(DamagedFile, match=r"bin.json: damaged \(not UTF-8"):
        read_json(tmp_path / "bin.json")
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "absent.json")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(WriteError, match=r"cannot write .*a.txt: boom"):
        def fail(tmp: str) -> None:
            Path(tmp).write_text("half")
            raise OSError(28, "boom")

        from darec.io import atomic_write

        atomic_write(tmp_path / "a.txt", fail)
    assert (tmp_path / "a.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    with pytest.raises(WriteError, match=r"cannot write .*nowhere"):
        atomic_write_text(tmp_path / "a.txt" / "nowhere", "x")  # a file where a folder should be


def test_leftover_temporaries_are_found_and_removed(tmp_path: Path) -> None:
    (tmp_path / ".x.safetensors.k2j.tmp").write_text("half")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".y.json.a.tmp").write_text("half")
    (tmp_path / ".dir.abc.tmp").mkdir()
    (tmp_path / "keep.tmp").write_text("a user's file, not ours")
    assert len(remove_temporaries(tmp_path)) == 3
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keep.tmp", "sub"]
