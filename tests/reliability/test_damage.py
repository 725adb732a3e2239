from __future__ import annotations

from collections import Counter
from pathlib import Path

from darec.reliability.damage import damage_cases, disk_full, read_only


def test_damaged_run_directories_give_clear_errors_or_recover(tmp_path: Path) -> None:
    cases = damage_cases(tmp_path, range(1))
    bad = [c for c in cases if c.outcome not in ("clean_error", "recovered", "unaffected")]
    assert not bad, bad[:5]
    outcomes = Counter((c.file, c.outcome) for c in cases)
    # Weights, state, config and id map damage is always noticed by the commands that read them.
    assert outcomes[("config.yaml", "clean_error")] and outcomes[("id_map.json", "clean_error")]
    assert outcomes[("trainer_state.json", "clean_error")]
    # A damaged newest checkpoint: the resume falls back to the one before and ends as the run did.
    assert outcomes[("checkpoint", "recovered")] == len(["truncate", "flip", "empty", "delete"])


def test_a_full_disk_stops_clearly_and_a_resume_ends_as_the_run_would_have(tmp_path: Path) -> None:
    for seed in (1, 2):  # little room (before the first checkpoint) and more (after it)
        row = disk_full(tmp_path, seed)
        assert row["outcome"] == "clean_error", row
    assert "the run stops" in row["message"]


def test_a_read_only_run_directory_is_refused_at_once(tmp_path: Path) -> None:
    row = read_only(tmp_path)
    assert row["outcome"] == "clean_error", row
    assert "cannot write in" in row["message"]
