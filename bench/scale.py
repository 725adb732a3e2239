"""How darec copes with size: full-ranking evaluation of huge catalogues in bounded memory.

Checks (``--checks``), each measured in a fresh process so its peak memory is its own:

* ``eval``: full-ranking evaluation (history kept and excluded, one pass) of an untrained
  SASRec (hidden 64) over a catalogue of ``--items`` items for ``--users`` users whose
  histories are drawn at random. Peak memory is the process's high-water mark (ru_maxrss)
  minus its resident size once the model and histories were built, so what the
  evaluation itself held at its worst, counted generously. ``eval-equal``: on a catalogue
  small enough to hold whole, the chunked evaluation's per-user metrics against those of
  the whole [users, items] score matrix ranked at once (the path darec had before), and
  the peak memory of each.

Rows go to bench/results/scale.json (and scale.md): ``check``, ``users``, ``items``,
``seconds``, ``users_per_second``, ``peak_memory_bytes`` and what each check adds.

    python bench/scale.py --checks eval eval-equal
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from common import HERE, Row, command_line, machine, markdown_table, save_rows, versions
from darec.data.batching import pad_right
from darec.models import build_model
from darec.train.config import build_config
from darec.train.evaluate import evaluate_many
from darec.train.metrics import rank_metrics, target_ranks

RESULTS = HERE / "results" / "scale.json"
GIB = 1 << 30


def random_users(n_users: int, n_items: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Histories of 3 to 50 items (geometric lengths, mean ~ 20) and one target each."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(50, 2 + rng.geometric(1 / 18, size=n_users))
    histories = [rng.integers(1, n_items + 1, size=n) for n in lengths]
    return histories, rng.integers(1, n_items + 1, size=n_users)


def whole_matrix_metrics(model: Any, histories: list[np.ndarray], targets: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """darec's evaluation before chunking: each batch's [users, items] scores ranked at once (history kept)."""
    items, lengths = pad_right(histories, model.max_len)
    parts: list[dict[str, torch.Tensor]] = []
    with torch.no_grad():
        for start in range(0, len(targets), batch_size):
            rows = slice(start, start + batch_size)
            scores = model.score(torch.from_numpy(items[rows]), torch.from_numpy(lengths[rows])).float()
            scores[:, 0] = float("-inf")
            parts.append(rank_metrics(target_ranks(scores, torch.from_numpy(targets[rows]))))
    return {name: torch.cat([p[name] for p in parts]).numpy() for name in parts[0]}


def measure(n_users: int, n_items: int, chunk: int | None, batch_size: int, threads: int) -> dict[str, Any]:
    """In a fresh process: build, then evaluate; ``chunk`` None is the whole-matrix path."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(build_config(overrides=["model=sasrec"]).model, n_items, 50).eval()
    histories, targets = random_users(n_users, n_items)
    before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    if chunk is None:
        per_user = whole_matrix_metrics(model, histories, targets, batch_size)
    else:
        settings = [("full", False, None), ("full", True, None)]
        per_user = evaluate_many(model, histories, targets, settings, batch_size, per_user=True, chunk=chunk)[0]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    return {"seconds": seconds, "users_per_second": n_users / seconds, "peak_memory_bytes": max(0, peak - before),
            "model_rss_bytes": before, "per_user": {k: v.tolist() for k, v in per_user.items()}}


def in_fresh_process(*args: Any) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, args)


def row(check: str, n_users: int, n_items: int, chunk: int | None, result: dict[str, Any], **extra: Any) -> Row:
    label = "whole" if chunk is None else f"chunk{chunk or 'auto'}"
    return {"check": check, "dataset": "random", "model": "sasrec", "variant": f"{check}-{n_items}-{n_users}-{label}",
            "protocol": "full", "split": "-", "users": n_users, "items": n_items, "chunk": label,
            **{k: v for k, v in result.items() if k != "per_user"}, **extra,
            "ndcg@10": float(np.mean(result["per_user"]["ndcg@10"])),
            "machine": machine(), "versions": versions(), "command": command_line()}


def markdown(rows: list[Row]) -> str:
    cells = [[r["check"], f"{r['users']:,}", f"{r['items']:,}", r["chunk"], f"{r['seconds']:.1f}",
              f"{r['users_per_second']:,.0f}", f"{r['peak_memory_bytes'] / GIB:.2f}",
              {True: "yes", False: "NO"}.get(r.get("metrics_equal"), "")]
             for r in sorted(rows, key=lambda r: (r["check"], r["items"], r["users"], r["chunk"]))]
    return markdown_table(
        "darec at scale (generated by bench/scale.py from scale.json)",
        ["eval: full-ranking evaluation (history kept and excluded, one pass) of an untrained SASRec (hidden 64), random",
         "histories, batches of 512 users, one thread. Peak memory: the process's high-water mark minus its size once the",
         "model and data were built. `whole` is the path before chunking (a batch's users x items scores at once);",
         "`equal`: every user's metrics identical to the whole path's."],
        ["check", "users", "items", "chunk", "seconds", "users/s", "peak GiB beyond model", "equal"], cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", nargs="+", default=["eval", "eval-equal"], choices=["eval", "eval-equal"])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--equal-items", type=int, default=100_000, help="catalogue of the eval-equal check")
    parser.add_argument("--equal-users", type=int, default=2_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if "eval" in args.checks:
        result = in_fresh_process(args.users, args.items, 0, args.batch_size, args.threads)
        save_rows(args.results, [row("eval", args.users, args.items, 0, result)], markdown)
        print(f"eval: {args.items:,} items, {args.users:,} users: {result['seconds']:.1f} s, "
              f"{result['peak_memory_bytes'] / GIB:.2f} GiB beyond the model")
    if "eval-equal" in args.checks:
        n_users, n_items = args.equal_users, args.equal_items
        whole = in_fresh_process(n_users, n_items, None, args.batch_size, args.threads)
        rows = [row("eval-equal", n_users, n_items, None, whole)]
        for chunk in (0, 4096):
            result = in_fresh_process(n_users, n_items, chunk, args.batch_size, args.threads)
            equal = all(result["per_user"][k] == whole["per_user"][k] for k in whole["per_user"])
            rows.append(row("eval-equal", n_users, n_items, chunk, result, metrics_equal=equal))
            print(f"eval-equal, chunk {chunk or 'auto'}: metrics equal to the whole path: {equal}")
        save_rows(args.results, rows, markdown)


if __name__ == "__main__":
    main()
