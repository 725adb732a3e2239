"""``darec data download``: public data sets from their official sources.

Downloads resume from a partial file (HTTP Range), are verified against a published
checksum before use, and are converted to RecBole atomic files (``<name>/<name>.inter``
and ``.item``) that :func:`darec.data.read_path` reads. Nothing half-written is left under
the final name: archives land as ``*.part`` and are renamed once verified; converted
folders are built under a temporary name and renamed when complete.

``DAREC_DOWNLOAD_MIRROR`` replaces the host of every URL (for a local mirror holding the
same files; checksums still apply).
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from darec.data.formats import RawData
from darec.errors import DarecError
from darec.io import atomic_directory


class DownloadError(DarecError, RuntimeError):
    """A download failed or did not match its checksum."""


InterRow = tuple[str, str, float, float]  # user, item, rating, timestamp
ItemRow = tuple[str, str, str, str]  # item, title, year, genres


def _write_rows(path: Path, header: str, rows: Iterable[tuple]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(header + "\n")
        for row in rows:
            f.write("\t".join(str(v).replace("\t", " ").replace("\n", " ") for v in row) + "\n")


INTER_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"


def write_atomic(out_dir: Path, name: str, inter: Iterable[InterRow], items: Iterable[ItemRow] | None = None) -> Path:
    """Write ``out_dir/name.inter`` (+ ``.item``) as RecBole atomic files, all or nothing."""
    with atomic_directory(out_dir) as tmp:
        _write_rows(tmp / f"{name}.inter", "\t".join(INTER_HEADER), inter)
        if items is not None:
            _write_rows(tmp / f"{name}.item", ITEM_HEADER, items)
    return Path(out_dir) / f"{name}.inter"


def write_atomic_files(raw: RawData, out_dir: Path, name: str) -> Path:
    """Sequences as atomic files; the position in the sequence is the timestamp. The
    interactions are written as columns (pyarrow): 20M rows take seconds, not minutes."""
    order = raw.in_time_order()
    users, items = raw.users[order], raw.items[order]
    _, starts, counts = np.unique(users, return_index=True, return_counts=True)  # users sorted: one run each
    position = np.arange(len(users)) - np.repeat(starts, counts)

    def ids(names: list[str]) -> pa.Array:
        return pa.array([n.replace("\t", " ").replace("\n", " ") for n in names], pa.string())

    table = pa.table(dict(zip(INTER_HEADER, [pc.take(ids(raw.user_ids), users), pc.take(ids(raw.item_ids), items),
                                             pa.array(np.ones(len(users))), pa.array(position.astype(np.float64))])))
    with atomic_directory(out_dir) as tmp:
        with open(tmp / f"{name}.inter", "wb") as out:
            out.write(("\t".join(INTER_HEADER) + "\n").encode())  # pyarrow would quote the header's names
            pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"))
        if raw.item_text:
            _write_rows(tmp / f"{name}.item", ITEM_HEADER, ((item, text, "", "") for item, text in raw.item_text.items()))
    return Path(out_dir) / f"{name}.inter"


# -- converters: official archive -> atomic files ----------------------------------------------

TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")


def _title_year(title: str) -> tuple[str, str]:
    match = TITLE_YEAR.match(title.strip())
    return (match.group(1), match.group(2)) if match else (title.strip(), "")


def _zip_member(archive: zipfile.ZipFile, suffix: str) -> str:
    for member in archive.namelist():
        if member.endswith(suffix):
            return archive.read(member).decode("latin-1")
    raise DownloadError(f"{archive.filename}: no file ending in {suffix}")


def convert_ml100k(archive_path: Path, out_dir: Path, name: str) -> Path:
    with zipfile.ZipFile(archive_path) as archive:
        data, items, genres = (_zip_member(archive, s) for s in ("/u.data", "/u.item", "/u.genre"))
    genre_names = [line.split("|")[0] for line in genres.splitlines() if "|" in line]
    inter = ((u, i, float(r), float(t)) for u, i, r, t in (line.split("\t") for line in data.splitlines() if line.strip()))
    rows = []
    for line in items.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        title, year = _title_year(fields[1])
        flags = fields[-len(genre_names):] if genre_names else []
        rows.append((fields[0], title, year, " ".join(g for g, f in zip(genre_names, flags) if f == "1")))
    return write_atomic(out_dir, name, inter, rows)


def convert_ml1m(archive_path: Path, out_dir: Path, name: str) -> Path:
    with zipfile.ZipFile(archive_path) as archive:
        ratings, movies = (_zip_member(archive, s) for s in ("/ratings.dat", "/movies.dat"))
    inter = ((u, i, float(r), float(t)) for u, i, r, t in (line.split("::") for line in ratings.splitlines() if line.strip()))
    rows = []
    for line in movies.splitlines():
        if line.strip():
            item, title, genres = line.split("::")
            rows.append((item, *_title_year(title), genres.replace("|", " ")))
    return write_atomic(out_dir, name, inter, rows)


def convert_amazon_ratings(archive_path: Path, out_dir: Path, name: str) -> Path:
    """Amazon 2018 "ratings only" CSV: ``item,user,rating,timestamp`` with no header."""
    with open(archive_path, encoding="utf-8", newline="") as f:
        rows = [(u, i, float(r), float(t)) for i, u, r, t in csv.reader(f)]
    return write_atomic(out_dir, name, rows)


@dataclass(frozen=True)
class Source:
    url: str
    checksum: str  # "sha256:<hex>" or "md5:<hex>", as published for the file
    convert: Callable[[Path, Path, str], Path]


GROUPLENS = "https://files.grouplens.org/datasets/movielens"
AMAZON_2018 = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/categoryFilesSmall"
# SHA-256 of the Amazon 2018 ratings-only files, as published alongside other loaders of them.
AMAZON_SHA256 = {
    "All_Beauty": "b3d9260771f9fe489a61180b9ff407e15e10f481a287848f69bc4709b669246f",
    "AMAZON_FASHION": "c72e84207601cd00840a91b9b4433c60b8be800a27aa86991f5cb57f29b99825",
    "Appliances": "35af90b093508f4a811d259b71b94d45b2f67b0daf3d702203d29ff6b16b1e28",
    "Arts_Crafts_and_Sewing": "ab42ec44840c130b8bcb1993bad37021b5ff98f3aae55a120c2a0d0624be3be5",
    "Automotive": "3cb4182e6623f1ac4511cf02a46c5ba11b761fa6d7feead7922199603f9d35df",
    "CDs_and_Vinyl": "daedcfb79310479728f11cc1e66d49ec6dccdec124222391bf6f4f69ca5092db",
    "Cell_Phones_and_Accessories": "c05835e7a7f7a1b0bab4fe4f2dbabecb102fde22de579758d10d36973d8b6a14",
    "Digital_Music": "a73f1504ed58fdc3533a6817b4c89fc4f722eb46dc18f94a4566a4b171439c9c",
    "Electronics": "1ce756643c0abed1b0d8a0738e67fc2510f3086d2bd52567942e18582dd01791",
    "Gift_Cards": "e360486b46b7eef5f2ed3ecc0a486f15097b7600fbee4079632418496802704a",
    "Grocery_and_Gourmet_Food": "9652d130382a3f1fcbfffffcaf3b8474e2649be034fbea8b0281b78424b65d40",
    "Home_and_Kitchen": "618e6c4493bcdd147a2bf3015bc0835dfedbc03570fba7d89335d9cd360069eb",
    "Industrial_and_Scientific": "29e194947309c1a0e81f0f9646fd6f63959949dbd807ea327e07074f35376a30",
    "Luxury_Beauty": "5e1ab08a0147412d6a15ab4b8259df7fbc1fe09c747ba5c46486081ee4d68d24",
    "Musical_Instruments": "8933b17434e4984bcce8cf4ec43d847e0af6aa6d46add28bbb37b80e06da1b06",
    "Office_Products": "2e24f3df092efc71fa4dea41162c7c1ab2d46bc53c4cace63794a3a66dc6d82f",
    "Patio_Lawn_and_Garden": "103438afc6ddb6a9416b94804bf86251b7d3b15bdf6cc50e90d6787008f08e31",
    "Pet_Supplies": "dac12cc077131bdf1c951cc0cc2016d6381e6b52eb65a3cb98456ce82a3c6bd9",
    "Prime_Pantry": "ed55b1f239c4ec3402fdd15a603a4b84210177678c36c01db59487a8fddf685c",
    "Software": "86d2ec7712b4c979bf7e7e984d39989b610c9f0e4ba4fc02c6aac7dcd9a15583",
    "Sports_and_Outdoors": "da8d746f1602d5ff01d4056c8f55b228996a30d40069b658d71388b0bf3df5d6",
    "Tools_and_Home_Improvement": "1406d988afa38c62aeba1e6b33dada18a570fa6d8dd59cbc6e5229f8ecae0db0",
    "Toys_and_Games": "cfdf96d55b3d923c913f3b139e7fabdc20360989db38527ef5947982aa246d45",
    "Video_Games": "c3fec1cce4ee67f0d51f8b53a7e294d8bbe6f75ca1d8732256e900b3c46606d8",
}

SOURCES: dict[str, Source] = {
    "ml-100k": Source(f"{GROUPLENS}/ml-100k.zip", "md5:0e33842e24a9c977be4e0107933c0723", convert_ml100k),
    "ml-1m": Source(f"{GROUPLENS}/ml-1m.zip", "sha256:a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20", convert_ml1m),
    **{
        "amazon-" + stem.lower().replace("_", "-"): Source(f"{AMAZON_2018}/{stem}.csv", f"sha256:{digest}", convert_amazon_ratings)
        for stem, digest in AMAZON_SHA256.items()
    },
}
ALIASES = {"amazon-beauty": "amazon-all-beauty", "amazon-sports": "amazon-sports-and-outdoors", "amazon-scientific": "amazon-industrial-and-scientific"}


# -- fetching -------------------------------------------------------------------------------------


def file_checksum(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mirror(url: str) -> str:
    mirror = os.environ.get("DAREC_DOWNLOAD_MIRROR")
    if not mirror:
        return url
    return mirror.rstrip("/") + "/" + url.split("/", 3)[3]


def fetch(url: str, dest: Path, checksum: str, console: Console | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` if present; verify, then rename."""
    dest = Path(dest)
    algorithm, _, expected = checksum.partition(":")
    if dest.exists() and file_checksum(dest, algorithm) == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part file is already complete
            response = None
        else:
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)} (partial download kept in {part}; run again to resume)") from exc
    if response is not None:
        with response:
            resumed = response.status == 206
            total = int(response.headers.get("Content-Length") or 0) + (have if resumed else 0)
            progress = Progress(TextColumn(dest.name), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                console=console, transient=True, disable=console is None)
            with progress, open(part, "ab" if resumed else "wb") as out:
                task = progress.add_task("download", total=total or None, completed=have if resumed else 0)
                try:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        out.write(block)
                        progress.advance(task, len(block))
                except (OSError, http.client.HTTPException) as exc:
                    raise DownloadError(f"{url}: connection lost ({exc!r}); run again to resume from {part}") from exc
            if total and part.stat().st_size < total:
                raise DownloadError(f"{url}: incomplete ({part.stat().st_size} of {total} bytes); run again to resume from {part}")
    actual = file_checksum(part, algorithm)
    if actual != expected:
        part.unlink()
        raise DownloadError(f"{url}: {algorithm} checksum mismatch (expected {expected}, got {actual}); the download was removed")
    os.replace(part, dest)
    return dest


def download_dataset(name: str, root: Path, console: Console | None = None, sources: dict[str, Source] | None = None) -> Path:
    """Fetch and convert ``name`` into ``root/name``; a no-op when it is already there."""
    sources = SOURCES if sources is None else sources
    key = ALIASES.get(name, name)
    if key not in sources:
        from darec.config import did_you_mean

        raise DownloadError(f"no download known for {name!r}.{did_you_mean(name, sources)} Known: ml-100k, ml-1m, amazon-<category> "
                            f"({', '.join(k[7:] for k in sources if k.startswith('amazon-'))})")
    source = sources[key]
    out_dir = Path(root) / name
    if (out_dir / f"{name}.inter").exists():
        return out_dir
    url = _mirror(source.url)
    archive = fetch(url, Path(root) / ".downloads" / url.rsplit("/", 1)[1], source.checksum, console)
    if console is not None:
        console.log(f"verified {archive.name}; converting to {out_dir}")
    source.convert(archive, out_dir, name)
    return out_dir


__all__ = ["DownloadError", "SOURCES", "Source", "download_dataset", "fetch", "write_atomic", "write_atomic_files"]
