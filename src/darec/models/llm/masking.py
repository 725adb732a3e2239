"""Attention masks over a packed sequence of item spans.

``item_index[b, t]`` is the position of the item that token ``t`` belongs to (0, 1, ...),
or -1 for padding. Masks are boolean ``[B, 1, T, T]`` (True = may attend), the 4-D form
Hugging Face models take on their SDPA path.

* ``block`` (context masking): a token sees every token of earlier items and every token
  of its own item (bidirectional inside the span), nothing of a later item.
* ``causal``: plain left-to-right attention (the ablation without context masking).
* ``semantic``: as ``block``, except that a token flagged in ``semantic_token`` sees only
  the tokens of its own item before it (the item's text), so its state must carry the
  item's meaning (trained with the semantic-alignment loss); and inside an item, text
  tokens (``text_token``) do not see the item's later non-text tokens, so the item's ID
  token cannot reach the semantic token through them.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

MaskMode = Literal["block", "causal", "semantic"]


def item_attention_mask(item_index: Tensor, mode: MaskMode = "block", semantic_token: Tensor | None = None,
                        text_token: Tensor | None = None) -> Tensor:
    t = item_index.size(1)
    query, key = item_index[:, :, None], item_index[:, None, :]
    real_key = key >= 0
    earlier = torch.ones(t, t, dtype=torch.bool, device=item_index.device).tril()[None]
    if mode == "causal":
        allowed = earlier & real_key
    else:
        allowed = (key <= query) & real_key
        if mode == "semantic":
            if semantic_token is None or text_token is None:
                raise ValueError("the semantic mask needs semantic_token and text_token")
            own = key == query
            own_visible = own & (earlier | text_token[:, None, :])
            allowed = torch.where(semantic_token[:, :, None], own & earlier, ((key < query) & real_key) | own_visible)
    # Padding queries attend to themselves only, so no row is empty (an all-masked row gives NaN).
    eye = torch.eye(t, dtype=torch.bool, device=item_index.device)[None]
    allowed = torch.where((query < 0), eye, allowed)
    return allowed[:, None]
