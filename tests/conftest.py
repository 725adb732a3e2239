from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

# Deterministic tests on CUDA need this before cuBLAS starts (the trainer sets it too, but a test
# process may have run CUDA matmuls already).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

# $DAREC_DATA where set (as on the lent GPU machine, where the checkout has no ../shared beside it).
SHARED = Path(os.environ.get("DAREC_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


@pytest.fixture
def shared_data() -> Path:
    """The benchmark data ($DAREC_DATA, else beside the checkout, as in CI); a test that needs it fails without it."""
    assert SHARED.is_dir(), f"benchmark data expected at {SHARED}"
    return SHARED


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
