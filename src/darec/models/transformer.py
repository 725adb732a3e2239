"""A small Transformer encoder over item sequences, shared by SASRec (causal) and BERT4Rec."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ItemEncoder(nn.Module):
    def __init__(self, n_tokens: int, max_positions: int, hidden: int, layers: int, heads: int, inner: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.item_embedding = nn.Embedding(n_tokens, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(max_positions, hidden)
        self.dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(
            hidden, heads, inner, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        block.self_attn.dropout = attn_dropout  # attention dropout separate from the hidden one
        self.blocks = nn.TransformerEncoder(block, layers, norm=nn.LayerNorm(hidden), enable_nested_tensor=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, items: Tensor, causal: bool) -> Tensor:
        positions = torch.arange(items.size(1), device=items.device)
        x = self.dropout(self.item_embedding(items) + self.position_embedding(positions))
        if causal:
            # Right padding + causal attention: real positions only ever see earlier real ones.
            mask = nn.Transformer.generate_square_subsequent_mask(items.size(1), device=items.device)
            return self.blocks(x, mask=mask, is_causal=True)
        return self.blocks(x, src_key_padding_mask=items == 0)
