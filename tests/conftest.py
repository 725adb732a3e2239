from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The benchmark data beside the checkout (CI has it); a test that needs it fails without it."""
    assert SHARED.is_dir(), f"benchmark data expected at {SHARED}"
    return SHARED


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
