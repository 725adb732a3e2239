"""Training throughput of DARec on a SmolLM2-shaped backbone (random weights, same FLOPs):
tokens per second, on CPU and, where present, CUDA, for each execution path.

One training step is DARec's loss on a batch of packed item spans, its backward pass and
an AdamW step (LoRA on every linear layer, frozen backbone), exactly as ``darec train``
runs it. Tokens are the real (non-padding) tokens of the packed batches. Timing: warm-up
steps first, then the median of the timed steps (CUDA events on the GPU).

Paths, measured on the same batches in one invocation (``--paths``):

- ``fp32``: fp32 eager, the baseline every row's ``speedup`` is over;
- ``bf16-autocast``: bf16 autocast with the frozen weights kept in fp32 (cast at every op);
- ``bf16``: the frozen backbone held in bf16 under autocast (``precision=bf16``, and what
  ``precision=auto`` picks on CPUs with AMX-BF16/AVX512-BF16 and on CUDA);
- ``bf16-nodrop``: also no LoRA dropout (``lora:8``'s default now);
- ``bf16-nodrop-compiled-sdpa``: also the decoder layers compiled, attention by transformers' SDPA;
- ``bf16-nodrop-compiled``: the same with darec's attention (SDPA's forward, its own CPU
  backward: ``darec.models.llm.attention``), ``darec train``'s default path on such a CPU;
- ``fp32-nodrop``, ``fp32-nodrop-compiled``: the same levers in fp32, the second ``darec
  train``'s default path on a CPU without native bf16 units (AVX2 only, say).

``--tag T`` names the rows ``PATH@T`` (say, a second machine's), so they sit beside the others;
``--adapters lora:8 houlsby:34`` measures each path with each adapter in every layer (rows
``PATH+houlsby-34``), in one run.

MFU: ``4 x N x tokens/s`` (N the backbone's non-embedding parameters: with a frozen
backbone the weight gradients are skipped, so about 4N FLOPs a token are done) over the
rate of a matmul at the model's own shapes in the path's precision, measured in the same
run (``cpu_mfu`` on CPU). ``6N`` MFU, the usual convention, is kept too.

    python bench/llm_throughput.py --devices cpu --threads 1 --paths fp32 bf16-autocast bf16
    python bench/llm_throughput.py --devices cuda --batch-size 32 --steps 20
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from common import HERE, Row, command_line, machine, markdown_table, save_rows, versions
from darec.data import load_dataset
from darec.data.batching import Batch, training_windows
from darec.models import build_model
from darec.train import build_config
from darec.device import adamw, apply_compile, apply_precision, autocast, fast_cpu_bf16
from darec.models.llm.attention import NAME as ATTENTION
from darec.models.llm.backbone import layer_count

RESULTS = HERE / "results" / "llm_throughput.json"
ADAPTER = "lora:8"  # darec's default plan entry, in every layer: the rows without +ADAPTER in their path
SHAPE = HERE / "configs" / "smollm2-135m.json"


def matmul_peak(device: torch.device, dtype: torch.dtype, shapes: list[tuple[int, int, int]], repeats: int = 10) -> float:
    """Measured FLOP/s of matmuls of the given (m, k, n) shapes in ``dtype`` (median of repeats)."""
    rates = []
    for m, k, n in shapes:
        a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
        times = [timed(lambda: a @ b, device) for _ in range(repeats + 2)][2:]
        rates.append(2 * m * k * n / statistics.median(times))
    return statistics.median(rates)


@functools.cache
def other_precision_rate(precision: str, shapes: tuple[tuple[int, int, int], ...]) -> float:
    """The CPU's matmul rate at ``shapes`` in the precision other than ``precision`` (once a run,
    few repeats: emulated bf16 can be 60 times slower than fp32), to show what the path not
    taken would have had."""
    return matmul_peak(torch.device("cpu"), torch.float32 if precision == "bf16" else torch.bfloat16, list(shapes), repeats=1)


def model_shapes(config, tokens: int) -> list[tuple[int, int, int]]:
    """The matmuls of one decoder layer for ``tokens`` tokens: q/o, k/v, MLP in and out."""
    h, inner = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    return [(tokens, h, h), (tokens, h, kv), (tokens, h, inner), (tokens, inner, h)]


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


@dataclass(frozen=True)
class ExecutionPath:
    precision: str  # fp32 or bf16 (autocast)
    hold: bool = True  # the frozen backbone held in bf16 (precision=bf16 in darec), else cast at every op
    lora_dropout: float = 0.05  # LoRA's dropout (lora:R's default); 0 draws no masks
    compiled: bool = False  # torch.compile on each decoder layer (train.compile; regional: one compilation serves all)
    attention: str = ATTENTION  # darec's (SDPA with its own CPU backward in compiled layers) or transformers' "sdpa"


PATHS = {
    "fp32": ExecutionPath("fp32", hold=False),
    "bf16-autocast": ExecutionPath("bf16", hold=False),
    "bf16": ExecutionPath("bf16"),
    "bf16-nodrop": ExecutionPath("bf16", lora_dropout=0.0),
    "bf16-nodrop-compiled-sdpa": ExecutionPath("bf16", lora_dropout=0.0, compiled=True, attention="sdpa"),
    "bf16-nodrop-compiled": ExecutionPath("bf16", lora_dropout=0.0, compiled=True),
    # darec train's path on a CPU without native bf16 matrix units (precision=auto keeps fp32 there).
    "fp32-nodrop": ExecutionPath("fp32", hold=False, lora_dropout=0.0),
    "fp32-nodrop-compiled": ExecutionPath("fp32", hold=False, lora_dropout=0.0, compiled=True),
}


def default_path() -> str:
    """The path ``darec train`` takes on this CPU: bf16 where it has native bf16 matrix units, else fp32."""
    return "bf16-nodrop-compiled" if fast_cpu_bf16() else "fp32-nodrop-compiled"


def build(device: torch.device, path: ExecutionPath, args: argparse.Namespace, data, adapter: str = ADAPTER) -> torch.nn.Module:
    layers = layer_count(f"random:{args.shape}", args.keep_layers or None)
    entry = f"{adapter}:dropout={path.lora_dropout:g}" if adapter.startswith("lora:") else adapter
    plan = ", ".join([entry] * layers)
    overrides = ["model=darec", f"backbone=random:{args.shape}", f"item_tokens={args.item_tokens}", f"plan=[{plan}]",
                 f"keep_layers={args.keep_layers}", f"gradient_checkpointing={args.gradient_checkpointing}"]
    config = build_config(overrides=overrides)
    torch.manual_seed(0)
    model = build_model(config.model, data.n_items, args.max_len)
    model.prepare(data)
    model.to(device).train()
    model.llm.config._attn_implementation = path.attention
    if path.hold:
        apply_precision(model, device, path.precision)
    else:
        model.precision = path.precision  # autocast over fp32 weights
    apply_compile(model, device, "on" if path.compiled else "off")
    return model


def full_batches(data, max_len: int, batch_size: int, count: int, device: torch.device) -> list[Batch]:
    """``count`` batches of full-length training windows (every batch the same shape)."""
    windows, skip = training_windows(data.train_sequences(), max_len)
    full = (windows > 0).sum(1) == max_len + 1
    windows, skip = torch.from_numpy(windows[full]), torch.from_numpy(skip[full])
    needed = batch_size * count
    if len(windows) < needed:
        raise SystemExit(f"{data.name} has {len(windows)} windows of {max_len + 1} items; batch size x steps needs "
                         f"{needed}: pick a data set with longer sequences (ml-100k) or a shorter --max-len")
    return [Batch(windows[i : i + batch_size], skip[i : i + batch_size]).to(device) for i in range(0, needed, batch_size)]


def training_step(model: torch.nn.Module, device: torch.device, precision: str) -> Callable[[Batch], None]:
    """One step as ``darec train`` takes it: the loss under the precision's autocast, its backward, a fused AdamW step."""
    optimizer = adamw([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(batch: Batch) -> None:
        with autocast(device, precision):
            loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def measure(device: torch.device, name: str, args: argparse.Namespace, adapter: str) -> list[Row]:
    """A training row, and with ``--inference`` one for scoring the catalogue, for one path with
    ``adapter`` in every layer."""
    path = PATHS[name]
    data = load_dataset(args.dataset)
    model = build(device, path, args, data, adapter)
    batches = full_batches(data, args.max_len, args.batch_size, args.warmup + args.steps, device)
    step = training_step(model, device, path.precision)
    times = [timed(lambda b=b: step(b), device) for b in batches]
    if args.profile:
        profile(step, batches[-2:], device, args.profile)
    tokens = [int((model._pack(b.items[:, :-1]).item_index >= 0).sum()) for b in batches]
    rows = [row(model, device, name, args, "train", tokens, times, 4, adapter)]
    if args.inference:
        model.eval()
        users = [b.items[:, 1:] for b in batches]  # each window's last max_len items: a user's history
        lengths = [(u > 0).sum(1) for u in users]

        def score(i: int) -> None:
            with torch.no_grad():
                model.score(users[i], lengths[i])

        times = [timed(lambda i=i: score(i), device) for i in range(len(users))]
        tokens = [int((model._pack(u).item_index >= 0).sum()) for u in users]
        rows.append(row(model, device, name, args, "inference", tokens, times, 2, adapter))
    return rows


def row(model, device: torch.device, name: str, args: argparse.Namespace, task: str, tokens: list[int], times: list[float],
        flops_per_param: int, adapter: str) -> Row:
    """Tokens/s over the timed steps (after the warm-up ones); MFU at ``flops_per_param`` x N
    FLOPs a token (4 for training with a frozen backbone, 2 for a forward pass)."""
    path = PATHS[name]
    steady = statistics.median(times[args.warmup :])
    rates = [n / t for n, t in zip(tokens[args.warmup :], times[args.warmup :])]
    tokens_per_second = statistics.median(rates)
    params = sum(p.numel() for n, p in model.llm.named_parameters() if "embed" not in n and not p.requires_grad)
    shapes = tuple(model_shapes(model.llm.config, int(statistics.median(tokens))))
    peak = matmul_peak(device, torch.bfloat16 if path.precision == "bf16" else torch.float32, shapes)
    layers = model.llm.config.num_hidden_layers
    mfu = flops_per_param * params * tokens_per_second / peak
    tagged = name + (f"+{adapter.replace(':', '-')}" if adapter != ADAPTER else "") + (f"@{args.tag}" if args.tag else "")
    return {
        "dataset": args.dataset, "model": "darec",
        "variant": f"{device.type}:{tagged}:{layers}-layers:batch-{args.batch_size}{':checkpointing' if args.gradient_checkpointing else ''}"
                   f"{':inference' if task == 'inference' else ''}",
        "path": tagged, "task": task, "adapter": adapter,
        **({"darec_default": name == default_path()} if device.type == "cpu" else {}), "protocol": None, "split": None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": path.precision, "lora_dropout": path.lora_dropout, "compiled": path.compiled,
        # What ran: darec's backward only where it is used (a compiled layer, training); SDPA elsewhere.
        "attention": "darec" if path.attention == ATTENTION and path.compiled and task == "train" else "sdpa",
        "threads": torch.get_num_threads(), "batch_size": args.batch_size, "max_len": args.max_len,
        "item_tokens": args.item_tokens, "gradient_checkpointing": args.gradient_checkpointing,
        "tokens_per_step": statistics.median(tokens), "seconds_per_step": steady,
        # Compilation happens in the warm-up steps: what they took beyond a steady step.
        "compile_seconds": sum(t - steady for t in times[: args.warmup]) if path.compiled else None,
        "tokens_per_second": tokens_per_second, "non_embedding_params": params,
        "matmul_flops_at_model_shapes": peak, "flops_per_token": flops_per_param * params, "mfu": mfu,
        **({"cpu_mfu": mfu, "other_precision_matmul_flops": other_precision_rate(path.precision, shapes)} if device.type == "cpu" else {}),
        "machine": machine(), "versions": versions(), "command": command_line(),
    }


def profile(step, batches: list[Batch], device: torch.device, path: Path) -> None:
    """Where a step's time goes: torch.profiler's tables of the ops with the most device time
    (CPU time on CPU) over the given steps, by op and by op and input shapes (which matmuls
    cost most), appended to ``path``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profiler(activities=activities, record_shapes=True) as prof:
        for batch in batches:
            step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    with open(path, "a") as out:
        out.write(f"# {device} {command_line()}\n{prof.key_averages().table(sort_by=key, row_limit=30)}\n")
        out.write(f"{prof.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=40)}\n")


def device_cell(r: Row) -> str:
    """A row's device; a CPU row names its CPU: which one (its bf16 units) decides which path is fastest."""
    return f"cpu: {r['machine'].split(', ')[1]}" if r["device"] == "cpu" else r["device"]


def markdown(rows: list[Row]) -> str:
    def cells(r: Row) -> list[str]:
        compile_cell = f"{r['compile_seconds']:.0f}" if r.get("compile_seconds") is not None else ""
        baseline = f"{r['baseline_tokens_per_second']:.0f}" if "baseline_tokens_per_second" in r else ""
        path = r.get("path", r["precision"]) + (" (default)" if r.get("darec_default") else "")
        return [device_cell(r), path, r.get("task", "train"), r.get("attention", "sdpa"),
                r["variant"].split(":")[2].split("-")[0],
                str(r["threads"]), str(r["batch_size"]), str(r["max_len"]), str(r["item_tokens"]),
                "yes" if r["gradient_checkpointing"] else "no", f"{r['tokens_per_step']:.0f}", f"{r['tokens_per_second']:.0f}",
                baseline, f"{r['speedup']:.2f}x" if "speedup" in r else "", f"{r['matmul_flops_at_model_shapes'] / 1e12:.3f}",
                f"{r['mfu']:.1%}", compile_cell]

    rates: dict[str, dict[str, float]] = {}  # CPU -> precision -> matmul FLOP/s, the latest row's of each
    for r in rows:
        if "other_precision_matmul_flops" in r:
            other = "fp32" if r["precision"] == "bf16" else "bf16"
            rates[device_cell(r)] = {r["precision"]: r["matmul_flops_at_model_shapes"], other: r["other_precision_matmul_flops"]}
    measured = [f"{cpu}: fp32 {rate['fp32'] / 1e9:.1f}, bf16 {rate['bf16'] / 1e9:.1f} GFLOP/s." for cpu, rate in rates.items()]
    return markdown_table(
        "DARec throughput (generated by bench/llm_throughput.py from llm_throughput.json)",
        ["SmolLM2-135M shape, random weights, ml-100k-like batches. Paths: fp32 eager (the baseline: LoRA dropout 0.05),",
         "bf16 autocast over fp32 weights, bf16 with the frozen backbone held in bf16 (precision=bf16, auto on CPUs with",
         "AMX/AVX512-BF16), -nodrop: LoRA without dropout (no masks drawn), -compiled: torch.compile on each decoder layer.",
         "train: loss, backward and a fused AdamW step; inference: scoring the catalogue for a batch of users.",
         "Speedup: over fp32 eager, same task, measured in the same invocation. MFU: 4N FLOPs a token for training (a",
         "frozen backbone does no weight gradients), 2N for inference, times tokens/s, over the matmul rate in the path's",
         "precision at the model's own shapes measured in the same run (the four oldest rows: a 4096 x 4096 matmul).",
         "Compile s: what the warm-up steps took beyond steady steps, kept out of tokens/s. Attention: transformers' SDPA,",
         "or darec's (SDPA's forward, darec's own CPU backward: models/llm/attention.py; path -compiled-sdpa turns it off).",
         "Paths -peftlora and -addmm (2026-12-02, synthetic-small batches, the second of two rounds; the first: 376 and 364):",
         "peft's LoRA forward, as on every other row and today's -compiled, against LoRA added inside the frozen GEMM",
         "(addmm, run as -compiled then): slower, so removed (git 666c249). Their MFU is unreliable: the matmul rate beside",
         "them varied 0.46 to 0.71. Rows @fold-ab: one run on 2026-12-02, nothing else running, another machine (so",
         "their own fp32 baseline): -folded, LoRA folded into the frozen GEMM's inner dimension ([x, Ax] [W, sB]^T, a",
         "peft custom module): no gain (619 against 629), removed. (default): the path `darec train` takes on that CPU",
         "(precision=auto: bf16 only where the CPU has AMX-BF16 or AVX512-BF16). PATH+ADAPTER: the path with that adapter",
         "in every layer instead of lora:8, in the same run as the lora:8 rows. Matmul rates of both precisions at the",
         "model's shapes, at the rows' thread count, on each CPU whose rows measured both:", *measured],
        ["device", "path", "task", "attention", "layers", "threads", "batch", "items", "tokens / item", "checkpointing", "tokens / step",
         "tokens / s", "fp32 tokens / s", "speedup", "matmul TFLOP/s (measured)", "MFU", "compile s"], map(cells, rows))


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
    parser.add_argument("--tag", default="", help="name the rows PATH@TAG (another machine's, say), beside the others")
    parser.add_argument("--profile", type=Path, default=None, help="also profile two steps; append the op table to this file")
    parser.add_argument("--inference", action="store_true", help="also time scoring the catalogue (one row a path)")
    parser.add_argument("--adapters", nargs="+", default=[ADAPTER],
                        help="the adapter in every layer, one row set each (the first's fp32 is every row's baseline), "
                             "e.g. lora:8 houlsby:34: what a plan's adapters cost, measured in one run")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS),
                        help="execution paths, fp32 first (the baseline of each row's speedup)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.devices:
        if name == "cuda" and not torch.cuda.is_available():
            print("no CUDA device: skipped", flush=True)
            continue
        baseline: dict[str, float] = {}  # task -> fp32 tokens/s
        for adapter, path in ((a, p) for a in args.adapters for p in args.paths):
            for row in measure(torch.device(name), path, args, adapter):
                if path == "fp32" and adapter == args.adapters[0]:
                    baseline[row["task"]] = row["tokens_per_second"]
                if row["task"] in baseline:
                    reference = baseline[row["task"]]
                    row.update(baseline_tokens_per_second=reference, speedup=row["tokens_per_second"] / reference)
                save_rows(args.results, [row], markdown)
                speedup = f", {row['speedup']:.2f}x fp32" if "speedup" in row else ""
                print(f"{row['variant']}: {row['tokens_per_second']:.0f} tokens/s{speedup}, MFU {row['mfu']:.1%}", flush=True)

if __name__ == "__main__":
    main()
