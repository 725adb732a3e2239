"""A small Transformer encoder over item sequences, shared by SASRec (causal) and BERT4Rec."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from darec.config import ConfigError, option
from darec.models.base import ModelConfig


@dataclass
class TransformerConfig(ModelConfig):
    hidden_size: int = option(64, "Embedding and hidden size.", low=1)
    n_layers: int = option(2, "Transformer blocks.", low=1)
    n_heads: int = option(2, "Attention heads.", low=1)
    inner_size: int = option(256, "Feed-forward inner size.", low=1)
    dropout: float = option(0.5, "Dropout on embeddings and hidden states.", low=0, below=1)
    attn_dropout: float = option(0.5, "Dropout on attention weights.", low=0, below=1)

    def __post_init__(self) -> None:
        if self.hidden_size % self.n_heads:
            raise ConfigError(f"n_heads ({self.n_heads}) must divide hidden_size ({self.hidden_size})")


class ItemEncoder(nn.Module):
    def __init__(self, n_tokens: int, max_positions: int, c: TransformerConfig, item_embedding: nn.Module | None = None):
        super().__init__()
        hidden, dropout = c.hidden_size, c.dropout
        # Learned ID embeddings unless the model passes its own table (LLMEmb's adapted embeddings).
        self.item_embedding = item_embedding if item_embedding is not None else nn.Embedding(n_tokens, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(max_positions, hidden)
        self.dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(
            hidden, c.n_heads, c.inner_size, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        block.self_attn.dropout = c.attn_dropout  # attention dropout separate from the hidden one
        self.blocks = nn.TransformerEncoder(block, c.n_layers, norm=nn.LayerNorm(hidden), enable_nested_tensor=False)
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
