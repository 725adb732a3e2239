"""Attention masks over a packed sequence of item spans (text tokens, then one item token).

``item_index[b, t]`` is the position of the item that token ``t`` belongs to (0, 1, ...),
or -1 for padding. Masks are boolean ``[B, 1, T, T]`` (True = may attend), the 4-D form
Hugging Face models take on their SDPA path.

* ``block`` (context masking): a token sees every token of earlier items and every token
  of its own item (bidirectional inside the span), nothing of a later item.
* ``causal``: plain left-to-right attention (the ablation without context masking).
* ``semantic``: as ``block``, but an item token sees only its own item's span, so its
  state must carry the item's meaning (used with the semantic-alignment loss).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

MaskMode = Literal["block", "causal", "semantic"]


def item_attention_mask(item_index: Tensor, mode: MaskMode = "block", is_item_token: Tensor | None = None) -> Tensor:
    query, key = item_index[:, :, None], item_index[:, None, :]
    real_key = key >= 0
    if mode == "causal":
        t = item_index.size(1)
        allowed = torch.ones(t, t, dtype=torch.bool, device=item_index.device).tril()[None] & real_key
    else:
        allowed = (key <= query) & real_key
        if mode == "semantic":
            if is_item_token is None:
                raise ValueError("the semantic mask needs is_item_token")
            allowed = torch.where(is_item_token[:, :, None], key == query, allowed)
    # Padding queries attend to themselves only, so no row is empty (an all-masked row gives NaN).
    eye = torch.eye(item_index.size(1), dtype=torch.bool, device=item_index.device)[None]
    allowed = torch.where((query < 0), eye, allowed)
    return allowed[:, None]
