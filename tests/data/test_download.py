"""Downloads against a local HTTP server on 127.0.0.1 serving a small self-made archive."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from darec.data import load_dataset
from darec.data.download import SOURCES, DownloadError, Source, convert_ml100k, download_dataset, fetch


def ml100k_zip() -> bytes:
    """A MovieLens-100K-shaped archive: 4 users, 5 movies."""
    data = "".join(f"{u}\t{i}\t4\t{1000 + t}\n" for u in range(1, 5) for t, i in enumerate([1, 2, 3, 4, 5][u - 1:] + [1, 2]))
    genres = "unknown|0\nAction|1\nComedy|2\n"
    items = "".join(f"{i}|Movie {i} (199{i})|01-Jan-199{i}||http://x|0|{i % 2}|{1 - i % 2}\n" for i in range(1, 6))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("ml-100k/u.data", data)
        z.writestr("ml-100k/u.item", items.encode("latin-1"))
        z.writestr("ml-100k/u.genre", genres)
    return buffer.getvalue()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    requests: list[str | None] = []
    cut_after: int | None = None  # drop the connection after this many bytes (once)

    def do_GET(self) -> None:  # noqa: N802
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        type(self).requests.append(rng)
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(body):
            self.send_error(416)
            return
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        chunk = body[start:]
        if type(self).cut_after is not None:
            chunk, type(self).cut_after = chunk[: type(self).cut_after], None
        self.wfile.write(chunk)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    RangeHandler.files, RangeHandler.requests, RangeHandler.cut_after = {}, [], None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_fetch_verifies_and_resumes(server: str, tmp_path: Path) -> None:
    body = ml100k_zip()
    RangeHandler.files["/a.zip"] = body
    sha = "sha256:" + hashlib.sha256(body).hexdigest()
    RangeHandler.cut_after = 100  # the first attempt loses the connection part-way
    with pytest.raises(DownloadError):
        fetch(f"{server}/a.zip", tmp_path / "a.zip", sha)
    part = tmp_path / "a.zip.part"
    assert not (tmp_path / "a.zip").exists() and 0 < part.stat().st_size < len(body)
    got = fetch(f"{server}/a.zip", tmp_path / "a.zip", sha)
    assert got.read_bytes() == body and not part.exists()
    assert RangeHandler.requests[-1] == f"bytes={100}-"  # resumed, not restarted


def test_checksum_mismatch_leaves_nothing(server: str, tmp_path: Path) -> None:
    RangeHandler.files["/a.zip"] = b"not the archive you want"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch(f"{server}/a.zip", tmp_path / "a.zip", "md5:" + "0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_download_converts_to_atomic_files(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = ml100k_zip()
    RangeHandler.files["/datasets/movielens/mini.zip"] = body
    sources = {"mini": Source("https://files.grouplens.org/datasets/movielens/mini.zip", "md5:" + hashlib.md5(body).hexdigest(), convert_ml100k)}
    monkeypatch.setenv("DAREC_DOWNLOAD_MIRROR", server)  # same path, local host
    out = download_dataset("mini", tmp_path, sources=sources)
    assert (out / "mini.inter").exists() and (out / "mini.item").exists()
    ds = load_dataset("mini", data_root=tmp_path)
    assert ds.n_users == 4 and ds.item_text[ds.item_ids.index("3")] == "Movie 3 | 1993 | Action"  # odd ids are Action in the fixture
    assert download_dataset("mini", tmp_path, sources=sources) == out  # already there: no second fetch
    assert len(RangeHandler.requests) == 1


def test_known_sources_and_clear_errors(tmp_path: Path) -> None:
    assert {"ml-100k", "ml-1m", "amazon-all-beauty", "amazon-sports-and-outdoors"} <= set(SOURCES)
    assert all(s.checksum.split(":")[0] in ("md5", "sha256") for s in SOURCES.values())
    with pytest.raises(DownloadError, match="Did you mean 'ml-1m'"):
        download_dataset("ml-1n", tmp_path)


def test_atomic_files_written_as_columns_read_back_as_the_same_data_set(tmp_path: Path) -> None:
    import numpy as np

    from darec.data import build_dataset, generate
    from darec.data.synthetic import spec_for
    from darec.data.download import write_atomic_files

    raw = generate(spec_for("synthetic-tiny", 3))
    inter = write_atomic_files(raw, tmp_path / "tiny", "tiny")
    assert inter.read_text().splitlines()[0] == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    want, got = build_dataset(raw, "tiny"), load_dataset(str(inter))
    assert got.user_ids == want.user_ids and got.item_ids == want.item_ids and got.item_text == want.item_text
    assert all(np.array_equal(a, b) for a, b in zip(got.sequences, want.sequences))
