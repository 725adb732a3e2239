from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx
import pytest

from darec.serve import Recommender
from darec.train import Trainer, build_config
from tests.conftest import free_port

FAST = ["model=sasrec", "dataset=synthetic-tiny", "max_len=20", "hidden_size=16", "inner_size=32", "epochs=1"]


@pytest.fixture(scope="package")
def recommender(tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    """A small trained SASRec run, loaded for serving."""
    run_dir = tmp_path_factory.mktemp("serve") / "run"
    Trainer(build_config(overrides=FAST), run_dir, progress=False).fit()
    return Recommender(run_dir, device="cpu")


@contextmanager
def served(run_dir: Path, *options: str) -> Iterator[tuple[str, list[str]]]:
    """``darec serve RUN_DIR`` in its own process on a free loopback port: (its URL, the lines it
    printed, filled in when it stops)."""
    port = free_port()
    darec = Path(sys.executable).with_name("darec")
    server = subprocess.Popen([str(darec), "serve", str(run_dir), "--port", str(port), "--device", "cpu", *options],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, printed = f"http://127.0.0.1:{port}", []
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"darec serve stopped: {server.communicate()[0]}"
            assert time.monotonic() < deadline, "darec serve did not answer /health in 2 minutes"
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield url, printed
    finally:
        server.terminate()
        printed += server.communicate(timeout=30)[0].splitlines()
