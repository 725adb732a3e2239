from __future__ import annotations

from pathlib import Path

import pytest

from darec.reliability.kill import COMMANDS, kill_case, reference


@pytest.mark.parametrize("name,seeds", [("train", (0, 1, 2)), ("search", (0,))])
def test_killed_anywhere_a_run_resumes_to_the_same_end(tmp_path: Path, name: str, seeds: tuple[int, ...]) -> None:
    command = COMMANDS[name]
    expected, seconds = reference(command, tmp_path / "whole", tmp_path / "whole.log")
    for seed in seeds:
        case = kill_case(command, seed, tmp_path / "cut", tmp_path / f"cut-{seed}.log", expected, seconds)
        assert case.kills, "the run should have been killed at least once"
        assert case.identical, (case, (tmp_path / f"cut-{seed}.log").read_text()[-3000:])
