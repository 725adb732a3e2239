"""Users per evaluation batch (``train.eval_batch_size``): how long full-ranking evaluation
of a finished run takes a user at each batch size, on that run's own validation users.

Evaluation scores users in order of history length, each batch cut to its longest history.
For a model on an LLM backbone a history is a packed sequence of item spans (hundreds of
tokens), so a large batch pads every short history up to the longest one, and its tensors
leave the cache. The run is loaded as evaluation loads it (its precision; compiled as
training compiles it), evaluated once at the model's own choice (``eval_batch_size=0``) as
a warm-up (compilation, with the dynamic shapes that follow), then at each size, the sizes
taking turns over ``--rounds`` rounds (median). Each row also gives the share of the
batches' item slots that is padding, and the validation NDCG@10 (the same at every size, up to
bf16 rounding: the batch changes speed, not results).

    python bench/eval_batch.py --run work/darec_accuracy/ml-100k/cpu-full-darec@seed7 --users 128 --sizes 0 8 32 128
    python bench/eval_batch.py --run work/darec_accuracy/ml-100k/cpu-darec@bf16-nodrop --users 512 --sizes 0 8 48 128 512
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from common import HERE, Row, command_line, machine, markdown_table, save_rows, versions
from darec.data.batching import pad_right
from darec.device import apply_compile, resolve_device
from darec.train.evaluate import evaluate_many
from darec.train.run import load_run, load_run_dataset

RESULTS = HERE / "results" / "eval_batch.json"


def padding_share(model, histories: list[np.ndarray], size: int) -> float:
    """The share of padding among the item slots of length-sorted batches of ``size`` users."""
    _, lengths = pad_right(histories, model.max_len)
    lengths = np.sort(lengths)
    padded = sum(len(part) * part.max() for part in np.split(lengths, range(size, len(lengths), size)))
    return 1 - lengths.sum() / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished run directory")
    parser.add_argument("--users", type=int, default=128, help="validation users scored (a fixed random sample)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 8, 32, 128], help="users per batch; 0: the model's choice")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_run(args.run, device="cpu")
    model, config = loaded.model, loaded.config
    device = resolve_device("cpu")
    compiled = apply_compile(model, device, config.train.compile)
    histories, targets = load_run_dataset(args.run, config).split("valid")
    pick = np.random.default_rng(0).choice(len(targets), min(args.users, len(targets)), replace=False)
    histories, targets = [histories[i] for i in pick], targets[pick]
    automatic = model.eval_batch_size(device)

    def evaluate(size: int) -> tuple[float, float]:
        start = time.perf_counter()
        ndcg = evaluate_many(model, histories, targets, [("full", False, None)], batch_size=size)[0]["ndcg@10"]
        return (time.perf_counter() - start) / len(targets), ndcg

    warm_up = evaluate(0)[0]
    seconds: dict[int, list[float]] = {size: [] for size in args.sizes}
    ndcg: dict[int, float] = {}
    for _ in range(args.rounds):
        for size in args.sizes:
            per_user, ndcg[size] = evaluate(size)
            seconds[size].append(per_user)
    fastest = min(statistics.median(s) for s in seconds.values())
    rows = []
    for size in args.sizes:
        users = size or automatic
        per_user = statistics.median(seconds[size])
        rows.append({
            "dataset": config.data.dataset, "model": config.model.name, "variant": f"{args.run.name}:batch-{size or 'auto'}",
            "protocol": "full", "split": "valid", "run": args.run.name, "users": len(targets), "batch_size": users,
            "automatic": size == 0, "compiled": compiled, "precision": model.precision, "threads": args.threads,
            "seconds_per_user": per_user, "vs_fastest": per_user / fastest,
            "padding_share": padding_share(model, histories, users), "ndcg@10": ndcg[size],
            "warm_up_seconds_per_user": warm_up, "rounds": args.rounds,
            "machine": machine(), "versions": versions(), "command": command_line()})
        print(f"{args.run.name} batch {size or f'auto ({automatic})'}: {per_user:.3f} s a user", flush=True)
    save_rows(args.results, rows, markdown)


def markdown(rows: list[Row]) -> str:
    cells = [[r["dataset"], r["model"], r["run"], f"{r['batch_size']}{' (auto)' if r['automatic'] else ''}",
              f"{1000 * r['seconds_per_user']:.1f}", f"{r['vs_fastest']:.2f}x", f"{r['padding_share']:.0%}", f"{r['ndcg@10']:.4f}"]
             for r in sorted(rows, key=lambda r: (r["run"], r["batch_size"], not r["automatic"]))]
    return markdown_table(
        "Users per evaluation batch (generated by bench/eval_batch.py from eval_batch.json)",
        ["Full ranking of a finished run's validation users (a fixed random sample), one thread, the run loaded and",
         "compiled as training does, after a warm-up pass. ms / user: the median over rounds; vs fastest: over the",
         "fastest size of the same run and invocation. Padding: the share of the batches' item slots that pads",
         "shorter histories up to the longest of their batch (users are sorted by length). The machine is shared:",
         "read ratios within a run."],
        ["dataset", "model", "run", "users a batch", "ms / user", "vs fastest", "padding", "valid NDCG@10"], cells)


if __name__ == "__main__":
    main()
