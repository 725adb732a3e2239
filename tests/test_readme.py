"""The README's commands and Python example run as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
CI = Path(__file__).parents[1] / ".ci" / "run"


def test_the_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = re.search(r"<!-- readme-example -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert code, "the README lost its marked Python example"
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.group(1), "README example", "exec"), {})  # noqa: S102  (our own README)
    lines = out.getvalue().splitlines()
    assert 0 <= float(lines[0]) <= 1  # test NDCG@10
    assert len(lines) == 6 and all(line.split()[0].startswith("i") for line in lines[1:])  # five items, original ids
    assert (tmp_path / "runs" / "example" / "results.json").exists()


def test_the_test_command_is_what_ci_runs() -> None:
    commands = re.search(r"```bash\n(.*?)\n(.*?)\n```", README.read_text(), re.S)
    assert commands and commands.group(1).endswith("darec quickstart") and commands.group(2).endswith("python -m pytest")
    assert commands.group(2) in CI.read_text()
    assert len(README.read_text().splitlines()) < 250  # a README for users; details live in docs/
