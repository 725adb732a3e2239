"""Attention under a boolean mask with a faster backward on a CPU.

DARec's decoder layers attend under a 4-D boolean mask (context masking: ``masking.py``).
On a CPU, PyTorch's SDPA runs the forward of such an attention fast, but its backward
slowly: at the ``cpu-full`` shapes (8 users x 650 tokens, 9 heads of 64, bf16, one thread)
37 ms forward and about 200 ms backward a layer, some 6 s of a 30-layer training step
(``bench/results/attention_cpu.md``). No library has a faster CPU kernel
for a masked attention's backward (FlexAttention has none on a CPU), so this module
writes one: the forward is SDPA's own CPU flash kernel, which also returns the softmax's
log-sum-exp, called on chunks of the queries, each against only the keys some of them see
(1.8% of a 30-layer step, ``bench/results/step_ab.md``); the backward recomputes the probabilities from it, one user at a time (its
score matrices stay in the cache) and each half of its queries against only the keys
they may see, the mask added to the scores (a boolean one, 5% of a step slower:
``step_ab.md``), with the elementwise work fused by ``torch.compile``: forward + backward in
0.68x SDPA's time at those shapes, the same gradients up to bf16 rounding. Keys and values
stay per key/value head (grouped-query attention; SmolLM2: 3 serving 9 query heads): the
flash kernel takes them so, and the backward stacks each one's query heads as rows, where
SDPA's path copies them out per query head (5.9% of a 30-layer step, ``step_ab.md``).

It is registered with transformers as the ``darec_sdpa`` attention: where it is not the
faster way it is SDPA itself. It runs only inside a compiled decoder layer on a CPU
(``train.compile``: its backward needs the compiler, and eager it is no faster), when
gradients are wanted and the mask is a 4-D boolean one; everywhere else (evaluation,
serving, a GPU, other masks) it hands over to transformers' SDPA attention.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

NAME = "darec_sdpa"
# The backward's, at the cpu-full shapes: 2 beat 1 and matched 3; with the query heads stacked
# (grouped-query), 3 was slower again (a throwaway A/B in alternating steps, no figures kept).
QUERY_CHUNKS = 2
# The forward's: each chunk's queries only against the keys some of them see (a block mask:
# about half). 4 chunks: 1.8% of a 30-layer step (bench/results/step_ab.md, forward-chunks).
FORWARD_CHUNKS = 4
_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
_compiled_user_backward: Any = None


class _MaskForms:
    """What the kernels need of a boolean mask: for the forward, the queries in chunks, each
    with the end of the keys any of them sees and its rows' additive mask up to there (the
    flash kernel takes no boolean mask); for the backward, the same per user. Every layer of a
    step attends under the same mask, so these are built once, not 30 times: that took 3% of a
    30-layer training step (``bench/results/step_ab.md``). The last mask seen is kept, with a
    reference that keeps its memory from being reused by another tensor while its address is
    the key."""

    def __init__(self) -> None:
        self.mask: Tensor | None = None
        self.key: tuple = ()
        self.forward: dict[tuple[torch.dtype, int], list[tuple[slice, int, Tensor]]] = {}
        self.chunks: list[list[tuple[slice, int, Tensor]]] = []
        self.chunks_of: tuple[int, int, torch.dtype | None] = (0, 0, None)  # the users, groups and dtype built for

    def of(self, mask: Tensor) -> _MaskForms:
        key = (mask.data_ptr(), mask.shape, mask.stride(), mask.storage_offset(), mask._version, mask.device)
        if key != self.key:
            self.mask, self.key, self.forward, self.chunks, self.chunks_of = mask, key, {}, [], (0, 0, None)
        return self

    def forward_chunks(self, dtype: torch.dtype) -> list[tuple[slice, int, Tensor]]:
        """The queries in ``FORWARD_CHUNKS`` chunks: rows, the end of the keys any user's
        queries in them see, and those rows' additive mask up to that end."""
        assert self.mask is not None
        if (dtype, FORWARD_CHUNKS) not in self.forward:
            chunks, t = [], self.mask.size(2)
            for rows in _row_chunks(t, FORWARD_CHUNKS):
                end = _keys_end(self.mask[:, :, rows])
                chunks.append((rows, end, _additive(self.mask[:, :, rows, :end], dtype)))
            self.forward[dtype, FORWARD_CHUNKS] = chunks
        return self.forward[dtype, FORWARD_CHUNKS]

    def user_chunks(self, users: int, groups: int = 1, dtype: torch.dtype = torch.float32
                    ) -> list[list[tuple[slice, int, Tensor]]]:
        """For each user, its query chunks: rows, the end of the keys any of them sees, and
        those rows' additive mask up to that end (0 or -inf), once for each of a key/value
        head's ``groups`` query heads (their rows stacked, as the backward stacks the queries).
        Additive, not boolean: the compiled backward selects with a boolean mask slowly and adds
        fast (5% of a 30-layer step, ``bench/results/step_ab.md``, additive-backward)."""
        assert self.mask is not None
        if self.chunks_of != (users, groups, dtype):  # a mask shared by the users ([1, 1, T, T]) serves any batch
            self.chunks, self.chunks_of = [], (users, groups, dtype)
            mask = self.mask.expand(users, *self.mask.shape[1:])
            for b in range(users):
                chunks = []
                for rows in _row_chunks(mask.size(2), QUERY_CHUNKS):
                    end = _keys_end(mask[b, 0, rows])
                    chunks.append((rows, end, _additive(mask[b, 0, rows, :end], dtype).repeat(groups, 1)))
                self.chunks.append(chunks)
        return self.chunks


def _keys_end(allowed: Tensor) -> int:
    """One past the last key that any row of ``allowed`` (``[..., rows, keys]``) may see."""
    return int(allowed.flatten(0, -2).any(0).nonzero().max()) + 1


def _additive(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean mask as the additive one: 0 where allowed, -inf elsewhere."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def _row_chunks(t: int, n: int) -> list[slice]:
    size = -(-t // n)
    return [slice(start, start + size) for start in range(0, t, size)]


_masks = _MaskForms()


@torch.library.custom_op("darec::masked_attention", mutates_args=())
def masked_attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """``softmax(q k^T scale, where mask) v`` for ``[B, H, T, D]`` queries, ``[B, H_kv, T, D]`` keys
    and values (``H_kv`` dividing ``H``: query head ``h`` attends with key/value head
    ``h // (H / H_kv)``, as transformers' ``repeat_kv`` has it) and a ``[B | 1, 1, T, T]``
    boolean mask (True: may attend; every row needs one), as ``[B, T, H, D]`` (what a layer takes
    next), and the softmax's log-sum-exp ``[B, H, T]``."""
    parts = [_FLASH(query[:, :, rows], key[:, :, :end], value[:, :, :end], attn_mask=additive, scale=scale)
             for rows, end, additive in _masks.of(mask).forward_chunks(query.dtype)]
    return torch.cat([out.transpose(1, 2) for out, _ in parts], 1), torch.cat([lse for _, lse in parts], 2)


@masked_attention.register_fake
def _(query: Tensor, key: Tensor, value: Tensor, mask: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    b, h, t, _ = query.shape
    return query.new_empty(b, t, h, value.size(-1)), query.new_empty(b, h, t, dtype=torch.float32)


def _user_backward(q: Tensor, k: Tensor, v: Tensor, dout: Tensor, out: Tensor, lse: Tensor, additive: Tensor,
                   scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """One user's gradients (``[H, T, D]`` inputs): the probabilities recomputed from the
    log-sum-exp, the additive mask's -inf giving 0; ``dk``, ``dv`` in fp32, to be summed over
    the query chunks."""
    wide = torch.promote_types(q.dtype, torch.float32)  # bf16 inputs: the softmax's arithmetic in fp32
    delta = (dout.to(wide) * out.to(wide)).sum(-1, keepdim=True)  # rowsum(dO * O), as flash attention's backward has it
    p = torch.exp(torch.matmul(q, k.transpose(-1, -2)).to(wide) * scale - lse[..., None] + additive)
    dv = torch.matmul(p.to(q.dtype).transpose(-1, -2), dout)
    ds = (p * (torch.matmul(dout, v.transpose(-1, -2)).to(wide) - delta) * scale).to(q.dtype)
    return torch.matmul(ds, k), torch.matmul(ds.transpose(-1, -2), q).to(wide), dv.to(wide)


@torch.library.custom_op("darec::masked_attention_backward", mutates_args=())
def masked_attention_backward(dout: Tensor, query: Tensor, key: Tensor, value: Tensor, mask: Tensor, out: Tensor,
                              lse: Tensor, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    global _compiled_user_backward
    if _compiled_user_backward is None:
        _compiled_user_backward = torch.compile(_user_backward)
    wide = torch.promote_types(query.dtype, torch.float32)
    dq, dk, dv = torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)
    dout, out = dout.transpose(1, 2), out.transpose(1, 2)  # [B, H, T, D], as the inputs
    kv_heads = key.size(1)
    groups = query.size(1) // kv_heads  # query heads a key/value head serves (grouped-query attention)

    def stacked(t: Tensor, b: int, rows: slice) -> Tensor:
        """A user's rows of each key/value head's query heads, stacked: ``[H_kv, groups x rows, ...]``."""
        return t[b, :, rows].reshape(kv_heads, -1, *t.shape[3:])

    # Everything per user, the whole-batch passes (delta, fp32 sums, casts) included: a user's
    # tensors stay in the cache (whole-batch, those passes took a quarter of the time).
    for b, chunks in enumerate(_masks.of(mask).user_chunks(query.size(0), groups, query.dtype)):
        dk_user = torch.zeros(key.shape[1:], dtype=wide)  # summed over the query chunks
        dv_user = torch.zeros(value.shape[1:], dtype=wide)
        # The queries in halves: the first half's keys end where the furthest any of them sees
        # ends (a causal or block mask: about half the keys), so a quarter of the work is skipped.
        # A key/value head's query heads go in one call, stacked as rows: no copies of the keys and
        # values per query head, and larger matmuls.
        for rows, end, additive in chunks:
            dq_part, dk_part, dv_part = _compiled_user_backward(
                stacked(query, b, rows), key[b, :, :end], value[b, :, :end], stacked(dout, b, rows), stacked(out, b, rows),
                stacked(lse, b, rows), additive, scale)
            dq[b, :, rows] = dq_part.reshape(query.size(1), -1, query.size(-1))
            dk_user[:, :end] += dk_part
            dv_user[:, :end] += dv_part
        dk[b], dv[b] = dk_user, dv_user
    return dq, dk, dv


@masked_attention_backward.register_fake
def _(dout: Tensor, query: Tensor, key: Tensor, value: Tensor, mask: Tensor, out: Tensor, lse: Tensor,
      scale: float) -> tuple[Tensor, Tensor, Tensor]:
    return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    query, key, value, mask, scale = inputs
    ctx.save_for_backward(query, key, value, mask, *output)
    ctx.scale = scale


def _backward(ctx: Any, dout: Tensor, _dlse: Tensor | None) -> tuple[Tensor, Tensor, Tensor, None, None]:
    query, key, value, mask, out, lse = ctx.saved_tensors
    dq, dk, dv = masked_attention_backward(dout, query, key, value, mask, out, lse, ctx.scale)
    return dq, dk, dv, None, None


masked_attention.register_autograd(_backward, setup_context=_setup_context)


def attention_forward(module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                      dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[Tensor, None]:
    """transformers' attention interface: ``[B, H, T, D]`` in, ``[B, T, H, D]`` out."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    ours = (torch.compiler.is_compiling() and query.device.type == "cpu" and torch.is_grad_enabled()
            and any(t.requires_grad for t in (query, key, value)) and isinstance(attention_mask, Tensor)
            and attention_mask.dtype == torch.bool and attention_mask.dim() == 4 and not dropout
            and kwargs.get("position_bias") is None and kwargs.get("softcap") is None)
    if not ours:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    # A custom op is not autocast: cast as autocast casts SDPA (adapters may leave some inputs fp32).
    # Keys and values stay per key/value head (grouped-query attention): the op serves each one's
    # query heads from them, without copying them out per query head.
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else query.dtype
    query, key, value = (t.to(dtype) for t in (query, key, value))
    scale = scaling if scaling is not None else query.size(-1) ** -0.5
    out, _ = masked_attention(query, key, value, attention_mask, scale)
    return out, None


def register() -> str:
    """Make ``darec_sdpa`` an attention transformers knows (masks made as for SDPA); its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    return NAME
