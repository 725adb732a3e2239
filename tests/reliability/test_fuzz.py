from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from darec.reliability.fuzz import FORMATS, MUTATIONS, SEEDS, fuzz, run_case


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_reader_survives_the_fuzzer(tmp_path: Path, fmt: str) -> None:
    cases = fuzz(fmt, 250, tmp_path, limit=20)
    outcomes = Counter(c.outcome for c in cases)
    bad = [c for c in cases if c.outcome not in ("loaded", "clean_error")]
    assert not bad, bad[:5]
    # Both outcomes occur: the mutations reach past the first check of every reader.
    assert outcomes["loaded"] >= 25 and outcomes["clean_error"] >= 25, outcomes


def test_cases_are_reproducible_and_every_mutation_is_drawn(tmp_path: Path) -> None:
    assert run_case("csv", 7, tmp_path) == run_case("csv", 7, tmp_path)
    drawn = {m for fmt in FORMATS for c in fuzz(fmt, 60, tmp_path) for m in c.mutations}
    assert drawn == set(MUTATIONS)
    assert all(len(files) >= 1 for files in SEEDS.values())


def test_the_fuzzer_would_see_a_reader_that_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: a reader that raises a bare exception, hangs or drops a line is caught."""
    import darec.reliability.fuzz as fuzz_module

    def broken(path: Path):
        raise IndexError("list index out of range")

    monkeypatch.setattr(fuzz_module, "read_path", broken)
    assert run_case("txt", 1, tmp_path).outcome == "traceback"

    def slow(path: Path):
        import time

        time.sleep(5)

    monkeypatch.setattr(fuzz_module, "read_path", slow)
    assert run_case("txt", 1, tmp_path, limit=0.2).outcome == "hang"

    from darec.data import read_path

    def half(path: Path):
        raw = read_path(path)
        keep = raw.users != raw.users[0]  # the first user's rows go missing
        return replace(raw, users=raw.users[keep], items=raw.items[keep], times=None if raw.times is None else raw.times[keep])

    monkeypatch.setattr(fuzz_module, "read_path", half)
    assert any(run_case("txt", s, tmp_path).outcome == "silent" for s in range(20))
