"""How darec copes with size: full-ranking evaluation of huge catalogues in bounded memory.

Checks (``--checks``), each measured in a fresh process so its peak memory is its own:

* ``eval``: full-ranking evaluation (history kept and excluded, one pass) of an untrained
  SASRec (hidden 64) over a catalogue of ``--items`` items for ``--users`` users whose
  histories are drawn at random. Peak memory is the process's high-water mark (ru_maxrss)
  minus its resident size once the model and histories were built, so what the
  evaluation itself held at its worst, counted generously. ``eval-equal``: on a catalogue
  small enough to hold whole, the chunked evaluation's per-user metrics against those of
  the whole [users, items] score matrix ranked at once (the path darec had before), and
  the peak memory of each. ``eval-chunks``: the same evaluation over ``--items`` items for
  1,024 users at chunks of 1k to 64k items, which is what the automatic size rests on.

* ``load``: a RecBole atomic interaction file (``--inter``, e.g. 20M rows written by
  ``darec data synth --size xxl --users 1000000``) read, split leave-one-out and cut into
  training windows (max_len 50), in a fresh process: first from the file (cache off),
  then again with the cache (its first run writes it, the second maps it back). Beside
  them the same file through RecBole's ``create_dataset`` + ``data_preparation`` for
  SASRec (its load, split and training samples), in its own venv (``--recbole-python``),
  capped at ``--recbole-memory-gb`` of address space so a failure is recorded, not the
  machine's. Memory here is each process's peak resident size, imports included.

* ``growth-users``, ``growth-items``, ``growth-length``: one training epoch and one full
  validation of SASRec (hidden 64, CE over all items, one thread) on synthetic data, each
  size varied alone over two decades (the others held at 5,000 users, 5,000 items,
  sequences of 20 and max_len 50; ``growth-length`` sets max_len and the mean sequence
  length together). Each point in a fresh process: seconds per epoch, evaluation seconds
  and the peak resident size, drawn in ``scale_growth.png``.

* ``shard``: DARec on the real SmolLM2 (all 30 layers, bf16 backbone) trained for a few
  steps by two processes under torchrun, as DDP (``shard=off``, each process holds the
  whole backbone) and with the frozen layers split (``shard=layers``, FSDP2): per process,
  the bytes of parameters it holds, its peak resident size, and seconds a step.

Rows go to bench/results/scale.json (and scale.md): ``check``, ``users``, ``items``,
``seconds``, ``users_per_second``, ``peak_memory_bytes`` and what each check adds.

    python bench/scale.py --checks eval eval-equal
    darec data synth /tmp/synth20m --size xxl --users 1000000
    python bench/scale.py --checks load --inter /tmp/synth20m/synth20m.inter
    python bench/scale.py --checks shard
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from common import HERE, Row, command_line, free_port, machine, markdown_table, save_rows, versions
from rich.console import Console

from darec.data import SyntheticSpec, build_dataset, generate, load_dataset
from darec.data.batching import pad_right, training_windows
from darec.models import build_model
from darec.io import pyplot, save_figure
from darec.train import Trainer
from darec.train.config import build_config
from darec.train.evaluate import evaluate_many
from darec.train.metrics import rank_metrics, target_ranks

RESULTS = HERE / "results" / "scale.json"
GIB = 1 << 30


def peak_rss() -> int:
    """This process's highest resident size so far, in bytes (ru_maxrss counts kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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
    peak = peak_rss()
    return {"seconds": seconds, "users_per_second": n_users / seconds, "peak_memory_bytes": max(0, peak - before),
            "model_rss_bytes": before, "per_user": {k: v.tolist() for k, v in per_user.items()}}


def in_fresh_process(*args: Any, task: Callable[..., dict[str, Any]] = measure) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(task, args)


def load_and_cut(inter: str, cache: bool) -> dict[str, Any]:
    """In a fresh process: load, split, windows; seconds of each and the peak resident size."""
    os.environ["DAREC_DATA_CACHE"] = "on" if cache else "off"
    start = time.perf_counter()
    dataset = load_dataset(inter)
    loaded = time.perf_counter()
    histories, targets = dataset.split("test")
    windows, _ = training_windows(dataset.train_sequences(), 50)
    done = time.perf_counter()
    stats = dataset.stats()
    return {"seconds": done - start, "load_seconds": loaded - start, "split_window_seconds": done - loaded,
            "users": stats["users"], "items": stats["items"], "interactions": stats["interactions"],
            "windows": len(windows), "peak_memory_bytes": peak_rss()}


def recbole_load(python: str, inter: Path, memory_gb: float) -> dict[str, Any]:
    """RecBole's dataset code on the same file, in its venv, under an address-space cap."""
    with tempfile.TemporaryDirectory() as work:
        # /usr/bin/time reports the peak resident size even when RecBole dies of the cap.
        command = ["/usr/bin/time", "-f", "peak-kb %M", "prlimit", f"--as={int(memory_gb * GIB)}", python,
                   str(HERE / "recbole_driver.py"), "--load-only",
                   "--dataset", inter.stem, "--data-path", str(inter.parent.parent), "--workdir", work, "--epochs", "1"]
        if inter.parent.name != inter.stem:
            raise SystemExit(f"{inter}: RecBole reads <folder>/<name>/<name>.inter; the folder must be named {inter.stem}")
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    peaks = [int(line.split()[1]) * 1024 for line in done.stderr.splitlines() if line.startswith("peak-kb ")]
    peak = peaks[-1] if peaks else None
    if done.returncode == 0 and lines:
        out = json.loads(lines[-1])
        out.pop("peak_rss_bytes")
        return {**out, "peak_memory_bytes": peak, "failed": ""}
    errors = [line for line in done.stderr.strip().splitlines() if not line.startswith(("peak-kb ", "Command exited"))]
    why = errors[-1][:200] if errors else f"exit {done.returncode}"
    return {"seconds": seconds, "peak_memory_bytes": peak, "failed": f"at a {memory_gb:g} GiB address-space cap: {why}"}


GROWTH = {
    "growth-users": ("users", [1_000, 3_000, 10_000, 30_000, 100_000]),
    "growth-items": ("items", [1_000, 3_000, 10_000, 30_000, 100_000]),
    "growth-length": ("max_len", [10, 20, 50, 100, 200]),
}


def train_point(users: int, items: int, max_len: int, mean_length: int, threads: int) -> dict[str, Any]:
    """In a fresh process: one SASRec epoch and one full validation on synthetic data of this size."""
    torch.set_num_threads(threads)
    spec = SyntheticSpec(n_users=users, n_items=items, n_clusters=max(10, items // 200), mean_length=mean_length,
                         min_length=5)
    dataset = build_dataset(generate(spec), f"synthetic-{users}-{items}-{max_len}")
    with tempfile.TemporaryDirectory() as run_dir:
        config = build_config(overrides=["model=sasrec", "epochs=1", f"max_len={max_len}", f"threads={threads}"])
        trainer = Trainer(config, run_dir, dataset=dataset, progress=False, console=Console(file=open(os.devnull, "w")))
        trainer.fit(final_evaluation=False)
        epoch = trainer.state["history"][-1]
    stats = dataset.stats()
    return {"users": stats["users"], "items": stats["items"], "interactions": stats["interactions"], "max_len": max_len,
            "seconds_per_epoch": epoch["train_seconds"], "eval_seconds": epoch["eval_seconds"],
            "seconds": epoch["train_seconds"] + epoch["eval_seconds"],
            "peak_memory_bytes": peak_rss()}


SHARD_RUN = ["model=darec", "dataset=synthetic-small", "backbone=smollm2", "item_tokens=8", "max_len=20",
             "windows_per_user=1", "batch_size=8", "epochs=1", "valid_users=16", "threads=1", "precision=bf16",
             "compile=off"]  # shard=layers does not compile: both alike


def shard_worker(shard: str, steps: int, out: Path) -> None:
    """Under torchrun: a few DARec steps with ``shard``; each process writes what it held."""
    from torch.distributed.tensor import DTensor

    rank = int(os.environ["RANK"])
    config = build_config(overrides=[*SHARD_RUN, f"shard={shard}", f"steps_per_epoch={steps}"])
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(os.environ.get("SHARD_RUN_DIR", scratch))  # every process names the same directory
        trainer = Trainer(config, run_dir / "run", progress=False, console=Console(file=open(os.devnull, "w")))
        held = sum((p.to_local() if isinstance(p, DTensor) else p).untyped_storage().nbytes() for p in trainer.model.parameters())
        trainer.fit(final_evaluation=False)
    epoch = trainer.state["history"][-1]
    Path(f"{out}.{rank}").write_text(json.dumps({"parameter_bytes": held, "peak_memory_bytes": peak_rss(),
                                                 "seconds_per_step": epoch["train_seconds"] / steps}))


def shard_point(shard: str, steps: int, cpus: str) -> dict[str, Any]:
    """Two processes under torchrun (pinned to ``cpus``): the largest of their figures."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "held"
        command = ["taskset", "-c", cpus, sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                   f"--master_port={free_port()}", __file__, "--shard-worker", shard, "--steps", str(steps), "--out", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "SHARD_RUN_DIR": scratch}
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        per_process = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(2)]
    return {key: max(p[key] for p in per_process) for key in per_process[0]}


def shard_row(shard: str, result: dict[str, Any]) -> Row:
    return {"check": "shard", "dataset": "synthetic-small", "model": "darec", "variant": f"shard-{shard}", "protocol": "-",
            "split": "-", "chunk": "-", "processes": 2, "backbone": "smollm2 (30 layers, bf16)", **result,
            "machine": machine(), "versions": versions(), "command": command_line()}


def growth_row(check: str, result: dict[str, Any]) -> Row:
    size = {"users": result["users"], "items": result["items"], "max_len": result["max_len"]}[GROWTH[check][0]]
    return {"check": check, "dataset": "synthetic", "model": "sasrec", "variant": f"{check}-{size}", "protocol": "full",
            "split": "valid", "chunk": "auto", **result, "machine": machine(), "versions": versions(), "command": command_line()}


def plot_growth(rows: list[Row], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (field, label) in zip(axes, [("seconds_per_epoch", "training seconds / epoch"), ("eval_seconds", "validation seconds"),
                                         ("peak_memory_bytes", "peak resident GiB")]):
        for check, (size, _) in GROWTH.items():
            points = sorted((r[size], r[field]) for r in rows if r["check"] == check)
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, [y / GIB if field == "peak_memory_bytes" else y for y in ys], "o-", label=f"{size} varied")
        ax.set_xscale("log"), ax.set_yscale("log"), ax.set_title(label), ax.set_xlabel("size of what is varied")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle("SASRec on synthetic data, one thread: cost as one size grows (others: 5k users, 5k items, max_len 50)")
    save_figure(fig, path)


def load_row(variant: str, library: str, result: dict[str, Any], inter: Path) -> Row:
    return {"check": "load", "dataset": inter.name, "model": library, "variant": f"load-{variant}", "protocol": "-",
            "split": "-", "chunk": "-", **result, "machine": machine(), "versions": versions(), "command": command_line()}


def row(check: str, n_users: int, n_items: int, chunk: int | None, result: dict[str, Any], **extra: Any) -> Row:
    label = "whole" if chunk is None else f"chunk{chunk or 'auto'}"
    return {"check": check, "dataset": "random", "model": "sasrec", "variant": f"{check}-{n_items}-{n_users}-{label}",
            "protocol": "full", "split": "-", "users": n_users, "items": n_items, "chunk": label,
            **{k: v for k, v in result.items() if k != "per_user"}, **extra,
            "ndcg@10": float(np.mean(result["per_user"]["ndcg@10"])),
            "machine": machine(), "versions": versions(), "command": command_line()}


def markdown(rows: list[Row]) -> str:
    evals = [r for r in rows if r["check"].startswith("eval")]
    growth = [r for r in rows if r["check"].startswith("growth")]
    loads = [r for r in rows if r["check"] == "load"]
    cells = [[r["check"], f"{r['users']:,}", f"{r['items']:,}", r["chunk"], f"{r['seconds']:.1f}",
              f"{r['users_per_second']:,.0f}", f"{r['peak_memory_bytes'] / GIB:.2f}",
              {True: "yes", False: "NO"}.get(r.get("metrics_equal"), "")]
             for r in sorted(evals, key=lambda r: (r["check"], r["items"], r["users"], r["chunk"]))]
    text = "# darec at scale (generated by bench/scale.py from scale.json; plots: scale_growth.png)\n"
    if evals:
        text += "\n#" + markdown_table(
            "Full-ranking evaluation in item chunks",
            ["eval: full-ranking evaluation (history kept and excluded, one pass) of an untrained SASRec (hidden 64), random",
             "histories, batches of 512 users, one thread. Peak memory: the process's high-water mark minus its size once the",
             "model and data were built. `whole` is the path before chunking (a batch's users x items scores at once);",
             "`equal`: every user's metrics identical to the whole path's. eval-chunks: the same over 1M items for 1,024",
             "users at fixed chunk sizes (what the automatic, cache-sized chunk on a CPU rests on)."],
            ["check", "users", "items", "chunk", "seconds", "users/s", "peak GiB beyond model", "equal"], cells)
    if loads:
        cells = [[r["dataset"], r["model"], r["variant"][5:], f"{r['interactions']:,}" if r.get("interactions") else "-",
                  f"{r['seconds']:.1f}",
                  "-" if r.get("peak_memory_bytes") is None else f"{r['peak_memory_bytes'] / GIB:.2f}", r.get("failed") or ""]
                 for r in sorted(loads, key=lambda r: (r["dataset"], r["model"], r["variant"]))]
        text += "\n#" + markdown_table(
            "Loading a large interaction file",
            ["Read, split leave-one-out and cut into training windows (darec) / create_dataset + data_preparation for SASRec",
             "(RecBole 1.2.1, its own venv); each in a fresh process, one after another. Peak: the process's peak resident",
             "size (imports included). darec `first`: from the file, cache off; `cached`: the cache written by an earlier run."],
            ["file", "library", "run", "interactions", "seconds", "peak GiB", "failed"], cells)
    shards = [r for r in rows if r["check"] == "shard"]
    if shards:
        cells = [[r["variant"][6:], r["backbone"], str(r["processes"]), f"{r['parameter_bytes'] / GIB:.3f}",
                  f"{r['peak_memory_bytes'] / GIB:.2f}", f"{r['seconds_per_step']:.2f}"]
                 for r in sorted(shards, key=lambda r: r["variant"])]
        text += "\n#" + markdown_table(
            "Splitting a frozen backbone across processes (train.shard)",
            ["DARec on synthetic-small, a few steps of 8 windows (20 items, 8 title tokens) by two processes under torchrun",
             "(gloo, pinned to one core together, so seconds are for comparison only). Parameters held: the bytes of the",
             "parameters a process keeps between steps (its shard of the split layer weights, and everything else whole),",
             "the larger of the two processes; peak: its peak resident size, loading the whole backbone first included."],
            ["shard", "backbone", "processes", "parameters held GiB", "peak GiB", "s / step"], cells)
    if growth:
        cells = [[r["check"], f"{r['users']:,}", f"{r['items']:,}", str(r["max_len"]), f"{r['interactions']:,}",
                  f"{r['seconds_per_epoch']:.1f}", f"{r['eval_seconds']:.1f}", f"{r['peak_memory_bytes'] / GIB:.2f}"]
                 for r in sorted(growth, key=lambda r: (r["check"], r["users"], r["items"], r["max_len"]))]
        text += "\n#" + markdown_table(
            "How cost grows (scale_growth.png)",
            ["One SASRec epoch (hidden 64, CE over all items, windows of max_len + 1, batch 32) and one full validation",
             "(every user, full ranking), one thread, synthetic data; each point in a fresh process. Others held at 5,000",
             "users, 5,000 items, sequences of 20 (growth-length: of max_len) and max_len 50; `items` counts those that",
             "occur (growth-items generated catalogues of 1k to 100k). The machine is shared (the other core trained an",
             "LLM throughout): read the slopes, not single points, which vary run to run."],
            ["check", "users", "items", "max_len", "interactions", "s / epoch", "validation s", "peak GiB"], cells)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", nargs="+", default=["eval", "eval-equal"],
                        choices=["eval", "eval-equal", "eval-chunks", "load", "shard", *GROWTH])
    parser.add_argument("--inter", type=Path, help="the interaction file of the load check")
    parser.add_argument("--recbole-python", default="/tmp/rbvenv/bin/python", help="RecBole's venv (see bench/README.md)")
    parser.add_argument("--recbole-memory-gb", type=float, default=14.0)
    parser.add_argument("--load-libraries", nargs="+", default=["darec", "recbole"], choices=["darec", "recbole"])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--equal-items", type=int, default=100_000, help="catalogue of the eval-equal check")
    parser.add_argument("--equal-users", type=int, default=2_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--steps", type=int, default=4, help="training steps of the shard check")
    parser.add_argument("--shard-cpus", default="1", help="cores the shard check's two processes are pinned to")
    parser.add_argument("--shard-worker", choices=["off", "layers"], help=argparse.SUPPRESS)  # the check's own processes
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shard_worker:
        return shard_worker(args.shard_worker, args.steps, args.out)
    if "shard" in args.checks:
        for shard in ("off", "layers"):
            result = shard_point(shard, args.steps, args.shard_cpus)
            save_rows(args.results, [shard_row(shard, result)], markdown)
            print(f"shard={shard}: {result['parameter_bytes'] / GIB:.3f} GiB of parameters a process, peak "
                  f"{result['peak_memory_bytes'] / GIB:.2f} GiB, {result['seconds_per_step']:.2f} s a step", flush=True)
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
    if "eval-chunks" in args.checks:  # what the automatic chunk size rests on: one run, each size in a fresh process
        n_users = 1024
        for chunk in (1024, 4096, 16384, 65536):
            result = in_fresh_process(n_users, args.items, chunk, args.batch_size, args.threads)
            save_rows(args.results, [row("eval-chunks", n_users, args.items, chunk, result)], markdown)
            print(f"eval-chunks, chunk {chunk}: {result['seconds']:.1f} s", flush=True)
    if "load" in args.checks:
        if args.inter is None:
            parser.error("the load check needs --inter")
        inter = args.inter.resolve()
        shutil.rmtree(inter.parent / ".darec-cache", ignore_errors=True)  # so the cache-write run writes it
        for variant, cache in (("first", False), ("cache-write", True), ("cached", True)) if "darec" in args.load_libraries else ():
            result = in_fresh_process(str(inter), cache, task=load_and_cut)
            save_rows(args.results, [load_row(variant, "darec", result, inter)], markdown)
            print(f"load, darec {variant}: {result['seconds']:.1f} s, peak {result['peak_memory_bytes'] / GIB:.2f} GiB")
        if "recbole" in args.load_libraries:
            result = recbole_load(args.recbole_python, inter, args.recbole_memory_gb)
            save_rows(args.results, [load_row("first", "recbole", result, inter)], markdown)
            print(f"load, RecBole: {result['seconds']:.1f} s, peak {result['peak_memory_bytes']} bytes {result['failed']}")
    for check in [c for c in args.checks if c in GROWTH]:
        size, values = GROWTH[check]
        for value in values:
            shape = {"users": 5_000, "items": 5_000, "max_len": 50, size: value}
            mean_length = value if size == "max_len" else 20
            result = in_fresh_process(shape["users"], shape["items"], shape["max_len"], mean_length, args.threads,
                                      task=train_point)
            save_rows(args.results, [growth_row(check, result)], markdown)
            print(f"{check} {size}={value}: {result['seconds_per_epoch']:.1f} s/epoch, {result['eval_seconds']:.1f} s validation, "
                  f"peak {result['peak_memory_bytes'] / GIB:.2f} GiB", flush=True)
        plot_growth(json.loads(args.results.read_text()), args.results.with_name("scale_growth.png"))


if __name__ == "__main__":
    main()
