"""One lever of DARec's CPU training path, on and off, in alternating steps of one model.

On a shared machine two runs minutes apart differ by more than a small lever gains (in
``llm_throughput.md``, scoring on the same path went from 4.07x to 3.58x between two runs an
hour apart), so a lever worth a few percent
cannot be judged from separate runs. Here one model, built as ``llm_throughput.py`` builds
its ``bf16-nodrop-compiled`` path (30 SmolLM2-shaped layers, random weights, ml-100k
batches), takes training steps with the lever on and off in turn; each pair of neighbouring
steps gives a ratio (off time over on time), and the row reports their median and how many
pairs favour the lever. Drift on the machine falls on both halves of a pair alike.

Levers (``--lever``):

- ``mask-forms``: the attention's mask forms (its additive form for the flash kernel, the
  backward's per-chunk key ends and blocked entries) built once per mask and shared by
  every layer, against built again in each layer (``models/llm/attention.py``);
- ``forward-chunks``: the attention's forward in chunks of queries, each against only the
  keys some of them see (``FORWARD_CHUNKS``), against one call over all of them;
- ``grouped-kv``: keys and values kept per key/value head (SmolLM2: 3 serving 9 query heads),
  each one's query heads stacked as rows in the backward, against copied out per query head;
- ``additive-backward``: the backward's mask added to the scores (0 or -inf) before the
  exponential, against the blocked entries zeroed with the boolean mask after it
  (``masked_fill``, which the compiled kernel does slowly).

    python bench/step_ab.py --lever mask-forms --pairs 6
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch

import llm_throughput as throughput
from common import HERE, Row, command_line, machine, markdown_table, save_rows, versions
from darec.data import load_dataset
from darec.models.llm import attention

RESULTS = HERE / "results" / "step_ab.json"


@contextmanager
def mask_forms_rebuilt() -> Iterator[None]:
    """Every layer builds its mask forms again, as before they were shared."""
    shared = attention._MaskForms.of

    def rebuilt(self: attention._MaskForms, mask: torch.Tensor) -> attention._MaskForms:
        self.key = ()
        return shared(self, mask)

    attention._MaskForms.of = rebuilt  # type: ignore[method-assign]
    try:
        yield
    finally:
        attention._MaskForms.of = shared  # type: ignore[method-assign]


@contextmanager
def forward_unchunked() -> Iterator[None]:
    """The attention's forward in one call over all queries and keys, as before it was chunked."""
    chunks = attention.FORWARD_CHUNKS
    attention.FORWARD_CHUNKS = 1
    try:
        yield
    finally:
        attention.FORWARD_CHUNKS = chunks


@contextmanager
def keys_values_repeated() -> Iterator[None]:
    """Keys and values copied out per query head before the attention, as before it served each
    key/value head's query heads from one copy (what transformers' SDPA attention does)."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import repeat_kv

    def repeated(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args, **kwargs):
        groups = getattr(module, "num_key_value_groups", 1)
        return attention.attention_forward(module, query, repeat_kv(key, groups), repeat_kv(value, groups), *args, **kwargs)

    AttentionInterface.register(attention.NAME, repeated)
    try:
        yield
    finally:
        AttentionInterface.register(attention.NAME, attention.attention_forward)


def _user_backward_boolean(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dout: torch.Tensor, out: torch.Tensor,
                           lse: torch.Tensor, blocked: torch.Tensor, scale: float):
    """attention._user_backward as it was: the blocked entries zeroed after the exponential."""
    wide = torch.promote_types(q.dtype, torch.float32)
    delta = (dout.to(wide) * out.to(wide)).sum(-1, keepdim=True)
    p = torch.exp(torch.matmul(q, k.transpose(-1, -2)).to(wide) * scale - lse[..., None]).masked_fill(blocked, 0)
    dv = torch.matmul(p.to(q.dtype).transpose(-1, -2), dout)
    ds = (p * (torch.matmul(dout, v.transpose(-1, -2)).to(wide) - delta) * scale).to(q.dtype)
    return torch.matmul(ds, k), torch.matmul(ds.transpose(-1, -2), q).to(wide), dv.to(wide)


_compiled_boolean = functools.cache(lambda: torch.compile(_user_backward_boolean))


@contextmanager
def backward_boolean() -> Iterator[None]:
    """The backward takes its mask as boolean blocked entries (built once per mask, as the additive
    one is) and zeroes them with ``masked_fill``, as before it added the mask."""
    additive_chunks, compiled = attention._MaskForms.user_chunks, attention._compiled_user_backward
    last: list = [None, None]  # the additive chunks (held, so their id is not reused) and their boolean form

    def blocked_chunks(self: attention._MaskForms, *args, **kwargs):
        chunks = additive_chunks(self, *args, **kwargs)
        if last[0] is not chunks:
            last[:] = chunks, [[(rows, end, a.isinf()) for rows, end, a in user] for user in chunks]
        return last[1]

    attention._MaskForms.user_chunks = blocked_chunks  # type: ignore[method-assign]
    attention._compiled_user_backward = _compiled_boolean()
    try:
        yield
    finally:
        attention._MaskForms.user_chunks, attention._compiled_user_backward = additive_chunks, compiled  # type: ignore[method-assign]



# Each lever, switched off.
LEVERS: dict[str, Callable[[], AbstractContextManager[None]]] = {"mask-forms": mask_forms_rebuilt,
                                                                 "forward-chunks": forward_unchunked,
                                                                 "grouped-kv": keys_values_repeated,
                                                                 "additive-backward": backward_boolean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lever", choices=list(LEVERS), required=True)
    parser.add_argument("--pairs", type=int, default=6, help="pairs of timed steps (one on, one off)")
    parser.add_argument("--warmup", type=int, default=2, help="pairs first, untimed (compilation)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--alongside", default="nothing", help="what else ran on the machine meanwhile (for the table)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = argparse.Namespace(shape=str(throughput.SHAPE), keep_layers=0, item_tokens=12, max_len=50, batch_size=8,
                               gradient_checkpointing=False)
    device = torch.device("cpu")
    data = load_dataset("ml-100k")
    model = throughput.build(device, throughput.PATHS["bf16-nodrop-compiled"], shape, data)
    batches = throughput.full_batches(data, shape.max_len, shape.batch_size, 2 * (args.pairs + args.warmup), device)
    step = throughput.training_step(model, device, "bf16")
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for i, batch in enumerate(batches):
        on = i % 2 == 0
        with nullcontext() if on else LEVERS[args.lever]():
            begin = time.perf_counter()
            step(batch)
            elapsed = time.perf_counter() - begin
        if i >= 2 * args.warmup:
            seconds[on].append(elapsed)
        print(f"step {i}: lever {'on ' if on else 'off'} {elapsed:.2f} s", flush=True)
    ratios = [off / on for on, off in zip(seconds[True], seconds[False])]
    tokens = int((model._pack(batches[0].items[:, :-1]).item_index >= 0).sum())
    row: Row = {"dataset": "ml-100k", "model": "darec", "variant": f"lever:{args.lever}", "protocol": "-", "split": "-",
                "layers": len(list(model.compile_regions())), "threads": args.threads, "batch_size": shape.batch_size,
                "tokens_per_step": tokens, "pairs": len(ratios), "seconds_on": seconds[True], "seconds_off": seconds[False],
                "ratios_off_over_on": ratios, "median_ratio": statistics.median(ratios),
                "pairs_favouring": sum(r > 1 for r in ratios), "alongside": args.alongside, "machine": machine(), "versions": versions(),
                "command": command_line()}
    save_rows(args.results, [row], markdown)
    print(f"{args.lever}: off/on median {row['median_ratio']:.3f} over {len(ratios)} pairs, "
          f"{row['pairs_favouring']} favour the lever", flush=True)


def markdown(rows: list[Row]) -> str:
    cells = [[r["variant"].removeprefix("lever:"), str(r["layers"]), str(r["threads"]), str(r["pairs"]),
              f"{statistics.median(r['seconds_on']):.2f}", f"{statistics.median(r['seconds_off']):.2f}",
              f"{r['median_ratio']:.3f}", f"{r['pairs_favouring']} / {r['pairs']}", r.get("alongside", "not recorded")]
             for r in rows]
    return markdown_table(
        "One lever on and off in alternating training steps (generated by bench/step_ab.py from step_ab.json)",
        ["One model (SmolLM2 shape, random weights, all layers compiled, bf16 held, darec's attention), ml-100k batches",
         "of 8 users x 50 items x 13 tokens; neighbouring steps form a pair, the lever on in one and off in the other.",
         "Ratio: the off step's time over the on step's (above 1: the lever helps); median over the pairs."],
        ["lever", "layers", "threads", "pairs", "s / step, on", "s / step, off", "median off / on", "pairs favouring",
         "running alongside"],
        cells)


if __name__ == "__main__":
    main()
