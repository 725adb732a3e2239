"""Attention at DARec's ``cpu-full`` shapes on a CPU: what a training step's largest cost is
made of, and the ways around it that were tried.

One decoder layer's attention for a batch of 8 users x 650 tokens (50 items of 13 tokens),
SmolLM2's 9 heads of 64, in bf16 on one thread, under DARec's block mask (a token sees
its own item whole and every earlier item). Each way is timed forward only and forward +
backward (the ways take turns over several rounds; medians), and its output is compared with SDPA's under
the boolean mask (what darec runs). Ways:

- ``sdpa-bool`` (darec's), ``sdpa-float`` (an additive 0/-inf mask), ``sdpa-fp32`` (the same
  in fp32), ``sdpa-causal`` (plain causal: not DARec's mask, the kernel's best case);
- ``chunked-N``: the queries in N chunks, each attending only to the keys some query of the
  chunk may see (skipping the masked upper blocks);
- ``math``: the attention as two matmuls and a softmax, in bf16;
- ``flex``: ``torch.compile``'d FlexAttention with a BlockMask (forward only: it has no CPU
  backward);
- ``darec``: darec's own (``darec.models.llm.attention``, what a compiled DARec layer trains
  with on a CPU): SDPA's CPU flash forward, and a backward that recomputes the probabilities
  one user at a time, each half of the queries against the keys it may see, fused by
  ``torch.compile``.

    python bench/attention_cpu.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from common import HERE, Row, command_line, machine, markdown_table, save_rows, versions
from darec.models.llm.attention import masked_attention

RESULTS = HERE / "results" / "attention_cpu.json"
BATCH, HEADS, ITEMS, ITEM_TOKENS, HEAD_DIM = 8, 9, 50, 13, 64
Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def block_mask(tokens: int) -> torch.Tensor:
    item = torch.arange(tokens) // ITEM_TOKENS
    return (item[None, :] <= item[:, None])[None, None].expand(BATCH, 1, tokens, tokens)


def chunked(n: int, mask: torch.Tensor) -> Attention:
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        size, out = -(-q.size(2) // n), []
        for start in range(0, q.size(2), size):
            rows = mask[:, :, start: start + size]
            end = int(rows.any(dim=(0, 1, 2)).nonzero().max()) + 1  # the furthest key any of these queries sees
            out.append(F.scaled_dot_product_attention(q[:, :, start: start + size], k[:, :, :end], v[:, :, :end],
                                                      attn_mask=rows[..., :end]))
        return torch.cat(out, 2)
    return attend


def math(mask: torch.Tensor) -> Attention:
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = (q @ k.transpose(-1, -2)) * q.size(-1) ** -0.5
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v
    return attend


def flex(tokens: int) -> Attention:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    item = torch.arange(tokens) // ITEM_TOKENS
    blocks = create_block_mask(lambda b, h, q, k: item[k] <= item[q], None, None, tokens, tokens, device="cpu")
    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: compiled(q, k, v, block_mask=blocks)


def median_seconds(step: Callable[[], object], repeats: int) -> float:
    step(), step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls a way, each turn (their median)")
    parser.add_argument("--rounds", type=int, default=5, help="turns each way takes (the median over them is reported)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokens = ITEMS * ITEM_TOKENS
    mask = block_mask(tokens)
    additive = torch.zeros(mask.shape, dtype=torch.bfloat16).masked_fill(~mask, float("-inf"))
    q, k, v = (torch.randn(BATCH, HEADS, tokens, HEAD_DIM, dtype=torch.bfloat16) for _ in range(3))
    ways: dict[str, tuple[Attention, torch.dtype, bool]] = {
        "sdpa-bool": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), torch.bfloat16, True),
        "sdpa-float": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=additive), torch.bfloat16, True),
        "sdpa-fp32": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), torch.float32, True),
        "sdpa-causal": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), torch.bfloat16, True),
        **{f"chunked-{n}": (chunked(n, mask), torch.bfloat16, True) for n in (2, 5, 10)},
        "math": (math(mask), torch.bfloat16, True),
        "flex": (flex(tokens), torch.bfloat16, False),
        "darec": (lambda q, k, v: masked_attention(q, k, v, mask, HEAD_DIM ** -0.5)[0].transpose(1, 2), torch.bfloat16,
                  True),
    }
    with torch.no_grad():
        reference = ways["sdpa-bool"][0](q, k, v).float()
    # The ways take turns, round after round, so drift on a shared machine falls on all alike.
    forward: dict[str, list[float]] = {name: [] for name in ways}
    both: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, (attend, dtype, backward) in ways.items():
            inputs = [t.to(dtype) for t in (q, k, v)]

            def train_step() -> None:
                leaves = [t.detach().requires_grad_() for t in inputs]
                attend(*leaves).float().sum().backward()

            with torch.no_grad():
                forward[name].append(median_seconds(lambda: attend(*inputs), args.repeats))
            if backward:
                both[name].append(median_seconds(train_step, args.repeats))
    for name, (attend, dtype, backward) in ways.items():
        with torch.no_grad():
            diff = (attend(*[t.to(dtype) for t in (q, k, v)]).float() - reference).abs().max().item() \
                if name != "sdpa-causal" else None
        fwd, fwd_bwd = statistics.median(forward[name]), statistics.median(both[name]) if backward else None
        row: Row = {"dataset": "-", "model": "attention", "variant": name, "protocol": "-", "split": "-",
                    "batch": BATCH, "heads": HEADS, "tokens": tokens, "head_dim": HEAD_DIM, "threads": args.threads,
                    "dtype": str(dtype).removeprefix("torch."), "forward_ms": 1000 * fwd,
                    "forward_backward_ms": None if fwd_bwd is None else 1000 * fwd_bwd, "max_abs_diff": diff,
                    "rounds": args.rounds, "machine": machine(), "versions": versions(), "command": command_line()}
        save_rows(args.results, [row], markdown)
        print(f"{name}: forward {1000 * fwd:.1f} ms, forward + backward "
              f"{'-' if fwd_bwd is None else f'{1000 * fwd_bwd:.1f} ms'}", flush=True)


def markdown(rows: list[Row]) -> str:
    order = ["sdpa-bool", "sdpa-float", "sdpa-fp32", "sdpa-causal", "chunked-2", "chunked-5", "chunked-10", "math", "flex",
             "darec"]
    cells = [[r["variant"], r["dtype"], f"{r['forward_ms']:.1f}",
              "no CPU backward" if r["forward_backward_ms"] is None else f"{r['forward_backward_ms']:.1f}",
              "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.4f}"]
             for r in sorted(rows, key=lambda r: order.index(r["variant"]) if r["variant"] in order else len(order))]
    return markdown_table(
        "Attention at DARec's cpu-full shapes on a CPU (generated by bench/attention_cpu.py from attention_cpu.json)",
        ["One layer's attention: 8 users x 650 tokens (50 items of 13), 9 heads of 64, one thread, DARec's block mask",
         "(a token sees its own item and every earlier one). The ways take turns over several rounds; the median of",
         "the rounds' medians is shown (the machine is shared: read ratios). diff: largest difference",
         "from sdpa-bool, transformers' SDPA attention (sdpa-causal is another mask: the kernel's best case, for",
         "reference). darec: darec's own, what its compiled layers train with on a CPU."],
        ["way", "dtype", "forward ms", "forward + backward ms", "diff"], cells)


if __name__ == "__main__":
    main()
