"""Peak memory and step time of DARec training on a CPU under each memory allocator.

A training step at the ``cpu-full`` shapes (8 users x 50 items x 13 tokens, SmolLM2-shaped
random backbone held in bf16, LoRA on every layer, eager) holds gigabytes of activations
for the backward pass, freed and taken again at every step. glibc's malloc serves these
from heaps that fragment, so a process's peak grows over the first steps; jemalloc
(preloaded: the allocator is chosen when a process starts) packs them tighter, and with
its page purging off (``MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1``) reuses them
without faulting pages in again at every step. Each allocator runs in a fresh process,
the allocators taking turns over ``--rounds`` rounds; a row gives the median of the
rounds' peak RSS (after ``--steps`` steps) and of their median step times.

    apt-get install libjemalloc2     # Debian / Ubuntu
    taskset -c 1 python bench/cpu_memory.py --layers 10 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import HERE, Row, command_line, machine, markdown_table, save_rows, versions

RESULTS = HERE / "results" / "cpu_memory.json"
JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
NO_PURGE = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
ALLOCATORS = {
    "glibc": {},
    "jemalloc": {"LD_PRELOAD": str(JEMALLOC)},
    "jemalloc-no-purge": {"LD_PRELOAD": str(JEMALLOC), "MALLOC_CONF": NO_PURGE},
}


def child(args: argparse.Namespace) -> None:
    """One process: train ``--steps`` steps, print the peak RSS and each step's seconds as JSON."""
    import torch

    from darec.data import load_dataset
    from llm_throughput import SHAPE, PATHS, build, full_batches, training_step

    torch.set_num_threads(1)
    data = load_dataset("ml-100k")
    shape = argparse.Namespace(shape=str(SHAPE), keep_layers=args.layers, item_tokens=12, max_len=50,
                               gradient_checkpointing=False)
    device, path = torch.device("cpu"), PATHS["bf16-nodrop"]
    step = training_step(build(device, path, shape, data), device, path.precision)
    seconds = []
    for batch in full_batches(data, 50, 8, args.steps, device):
        start = time.perf_counter()
        step(batch)
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is in KiB on Linux
    print(json.dumps({"peak_rss_bytes": peak, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=10, help="SmolLM2 layers kept (0: all 30)")
    parser.add_argument("--steps", type=int, default=4, help="training steps a process (the first warms up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--allocators", nargs="+", choices=list(ALLOCATORS), default=list(ALLOCATORS))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if any("LD_PRELOAD" in ALLOCATORS[a] for a in args.allocators) and not JEMALLOC.exists():
        raise SystemExit(f"{JEMALLOC} not found: install jemalloc (apt-get install libjemalloc2) or pass --allocators glibc")
    runs: dict[str, list[dict]] = {name: [] for name in args.allocators}
    for _ in range(args.rounds):
        for name in args.allocators:
            env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")} | ALLOCATORS[name]
            out = subprocess.run([sys.executable, __file__, "--child", "--layers", str(args.layers), "--steps", str(args.steps)],
                                 env=env, check=True, capture_output=True, text=True, cwd=HERE).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
            print(f"{name}: peak {runs[name][-1]['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
    rows: list[Row] = []
    for name, results in runs.items():
        steady = [statistics.median(r["seconds"][1:]) for r in results]
        rows.append({"dataset": "ml-100k", "model": "darec", "variant": f"{name}:{args.layers or 30}-layers",
                     "protocol": "-", "split": "-", "allocator": name, "env": ALLOCATORS[name], "layers": args.layers or 30,
                     "batch": 8, "items": 50, "item_tokens": 12, "steps": args.steps, "rounds": args.rounds,
                     "peak_rss_gib": statistics.median(r["peak_rss_bytes"] for r in results) / 2**30,
                     "seconds_per_step": statistics.median(steady),
                     "machine": machine(), "versions": versions(), "command": command_line()})
    base = next((r for r in rows if r["allocator"] == "glibc"), rows[0])
    for row in rows:
        row.update(peak_vs_glibc=row["peak_rss_gib"] / base["peak_rss_gib"],
                   time_vs_glibc=row["seconds_per_step"] / base["seconds_per_step"])
    save_rows(args.results, rows, markdown)


def markdown(rows: list[Row]) -> str:
    cells = [[r["allocator"], str(r["layers"]), f"{r['peak_rss_gib']:.2f}", f"{r['peak_vs_glibc']:.2f}x",
              f"{r['seconds_per_step']:.1f}", f"{r['time_vs_glibc']:.2f}x"] for r in rows]
    return markdown_table(
        "DARec training memory on a CPU by allocator (generated by bench/cpu_memory.py from cpu_memory.json)",
        ["A training step at the cpu-full shapes (8 users x 50 items x 13 tokens, bf16 backbone, LoRA, eager, one thread),",
         "each allocator in fresh processes taking turns; peak RSS after the steps and the step time (after the first),",
         "medians over the rounds. The machine is shared: read the ratios to glibc, measured in the same invocation."],
        ["allocator", "layers", "peak RSS GiB", "vs glibc", "s / step", "vs glibc"], cells)


if __name__ == "__main__":
    main()
