"""Training throughput of DARec on a SmolLM2-shaped backbone (random weights, same FLOPs):
tokens per second and model FLOPs utilisation, on CPU and, where present, CUDA.

One training step is DARec's loss on a batch of packed item spans, its backward pass and
an AdamW step (LoRA on every linear layer, frozen backbone), exactly as ``darec train``
runs it. Tokens are the real (non-padding) tokens of the packed batches. Timing: warm-up
steps first, then the median of the timed steps (CUDA events on the GPU).

MFU follows the usual convention, ``6 x N x tokens/s / peak``, N the backbone's
non-embedding parameters. With a frozen backbone the weight gradients are skipped, so
the work actually done is nearer ``4 x N`` a token; rows give both. The peak is measured
in the same run: a large matmul in the step's precision (fp32 on CPU, bf16 on CUDA).

    python bench/llm_throughput.py                      # CPU, and CUDA when there is one
    python bench/llm_throughput.py --devices cuda --batch-size 32 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from common import HERE, Row, command_line, machine, markdown_table, save_rows, versions
from darec.data import load_dataset
from darec.data.batching import Batch, training_windows
from darec.models import build_model
from darec.train import build_config
from darec.device import autocast

RESULTS = HERE / "results" / "llm_throughput.json"
SHAPE = HERE / "configs" / "smollm2-135m.json"


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 4096, repeats: int = 10) -> float:
    """Measured FLOP/s of an n x n matmul in ``dtype`` (median of repeats)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = [timed(lambda: a @ b, device) for _ in range(repeats + 2)][2:]
    return 2 * n**3 / statistics.median(times)


def timed(step, device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    step()
    return time.perf_counter() - begin


def measure(device: torch.device, args: argparse.Namespace) -> Row:
    overrides = ["model=darec", f"backbone=random:{args.shape}", f"item_tokens={args.item_tokens}",
                 f"keep_layers={args.keep_layers}", f"gradient_checkpointing={args.gradient_checkpointing}"]
    config = build_config(overrides=overrides)
    data = load_dataset(args.dataset)
    torch.manual_seed(0)
    model = build_model(config.model, data.n_items, args.max_len)
    model.prepare(data)
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    windows, skip = training_windows(data.train_sequences(), args.max_len)
    full = (windows > 0).sum(1) == args.max_len + 1  # full-length windows: every batch the same shape
    windows, skip = torch.from_numpy(windows[full]), torch.from_numpy(skip[full])
    needed = args.batch_size * (args.warmup + args.steps)
    if len(windows) < needed:
        raise SystemExit(f"{args.dataset} has {len(windows)} windows of {args.max_len + 1} items; batch size x steps needs "
                         f"{needed}: pick a data set with longer sequences (ml-100k) or a shorter --max-len")
    precision = "bf16" if device.type == "cuda" else "fp32"
    batches = [Batch(windows[i : i + args.batch_size], skip[i : i + args.batch_size]).to(device)
               for i in range(0, args.batch_size * (args.warmup + args.steps), args.batch_size)]

    def step(batch: Batch) -> None:
        with autocast(device, precision):
            loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    times = [timed(lambda b=b: step(b), device) for b in batches]
    if args.profile:
        profile(step, batches[-2:], device, args.profile)
    tokens = [int((model._pack(b.items[:, :-1]).item_index >= 0).sum()) for b in batches]
    rates = [n / t for n, t in zip(tokens[args.warmup :], times[args.warmup :])]
    tokens_per_second = statistics.median(rates)
    params = sum(p.numel() for n, p in model.llm.named_parameters() if "embed" not in n and not p.requires_grad)
    peak = matmul_peak(device, torch.bfloat16 if precision == "bf16" else torch.float32)
    return {
        "dataset": args.dataset, "model": "darec", "variant": f"{device.type}:{precision}:{model.llm.config.num_hidden_layers}-layers:batch-{args.batch_size}"
                   f"{':checkpointing' if args.gradient_checkpointing else ''}",
        "protocol": None, "split": None, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision, "threads": torch.get_num_threads(), "batch_size": args.batch_size, "max_len": args.max_len,
        "item_tokens": args.item_tokens, "gradient_checkpointing": args.gradient_checkpointing,
        "tokens_per_step": statistics.median(tokens), "seconds_per_step": statistics.median(times[args.warmup :]),
        "tokens_per_second": tokens_per_second, "non_embedding_params": params,
        "peak_flops_measured": peak, "mfu": 6 * params * tokens_per_second / peak,
        "mfu_frozen_4n": 4 * params * tokens_per_second / peak,
        "machine": machine(), "versions": versions(), "command": command_line(),
    }


def profile(step, batches: list[Batch], device: torch.device, path: Path) -> None:
    """Where a step's time goes: torch.profiler's table of the ops with the most device time
    (CPU time on CPU) over the given steps, appended to ``path``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profiler(activities=activities) as prof:
        for batch in batches:
            step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    with open(path, "a") as out:
        out.write(f"# {device} {command_line()}\n{prof.key_averages().table(sort_by=key, row_limit=30)}\n")


def markdown(rows: list[Row]) -> str:
    cells = [[r["device"], r["precision"], r["variant"].split(":")[2].split("-")[0], str(r["threads"]), str(r["batch_size"]),
              "yes" if r["gradient_checkpointing"] else "no", f"{r['tokens_per_step']:.0f}", f"{r['tokens_per_second']:.0f}",
              f"{r['peak_flops_measured'] / 1e12:.3f}", f"{r['mfu']:.1%}", f"{r['mfu_frozen_4n']:.1%}"] for r in rows]
    return markdown_table(
        "DARec training throughput (generated by bench/llm_throughput.py from llm_throughput.json)",
        ["SmolLM2-135M shape, random weights. MFU = 6 N tokens/s over the matmul peak measured in the same run;",
         "4 N is the work a frozen backbone actually does (no weight gradients)."],
        ["device", "precision", "layers", "threads", "batch", "checkpointing", "tokens / step", "tokens / s",
         "peak TFLOP/s (measured)", "MFU (6N)", "MFU (4N)"], cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], help="cuda is skipped where there is none")
    parser.add_argument("--shape", default=str(SHAPE), help="config.json or model directory giving the shape")
    parser.add_argument("--dataset", default="synthetic-small")
    parser.add_argument("--keep-layers", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--item-tokens", type=int, default=8)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--profile", type=Path, default=None, help="also profile two steps; append the op table to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.devices:
        if name == "cuda" and not torch.cuda.is_available():
            print("no CUDA device: skipped", flush=True)
            continue
        row = measure(torch.device(name), args)
        save_rows(args.results, [row], markdown)
        print(f"{row['variant']}: {row['tokens_per_second']:.0f} tokens/s, MFU {row['mfu']:.1%} (6N)", flush=True)


if __name__ == "__main__":
    main()
