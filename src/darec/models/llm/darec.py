"""DARec core (coarse-grained adaption, context masking, collaborative knowledge injection).

Every history item is a span of its title tokens (cut to ``item_tokens``) followed by one
item token whose input embedding is a projection of the item's collaborative embedding.
The backbone reads the packed spans under a block mask (causal across items,
bidirectional inside an item); the state at each item token is the user state after that
item, scored against the whole catalogue, with cross-entropy at every position in one
forward pass. A SASRec trained jointly supplies the collaborative item embeddings and,
through an InfoNCE loss (``lambda_cf``), pulls the LLM user state toward its own.

The backbone is adapted with LoRA (peft) on every linear layer of every decoder layer;
the per-layer adapter plan is the next step (issue 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darec.config import option
from darec.data.batching import Batch
from darec.data.dataset import SequenceDataset
from darec.models.base import ModelConfig, SequentialRecommender, last_state, next_item_loss
from darec.models.llm.backbone import load_backbone
from darec.models.llm.masking import item_attention_mask
from darec.models.registry import register
from darec.models.sasrec import SASRec, SASRecConfig


@dataclass
class DARecConfig(ModelConfig):
    name: str = option("darec", "Model name.")
    backbone: str = option("smollm2", "tiny, smollm2 (offline default) or a Hugging Face model directory / hub id.")
    keep_layers: int = option(0, "Keep only the first N decoder layers (0 = all).")
    item_tokens: int = option(8, "Title tokens per item span.")
    item_input: Literal["text+id", "text", "id"] = option("text+id", "What an item span holds: title tokens and/or the ID token.")
    mask: Literal["block", "causal"] = option("block", "block: context masking; causal: the ablation without it.")
    lambda_cf: float = option(0.1, "Weight of the InfoNCE alignment with the jointly trained SASRec (0 = injection off).")
    cf_hidden: int = option(64, "Hidden size of the collaborative SASRec.")
    temperature: float = option(0.1, "InfoNCE temperature.")
    lora_r: int = option(8, "LoRA rank on every linear layer of the backbone.")
    lora_alpha: int = option(16, "LoRA alpha.")
    lora_dropout: float = option(0.05, "LoRA dropout.")


def info_nce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Symmetric in-batch InfoNCE between matching rows of ``a`` and ``b``."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    labels = torch.arange(a.size(0), device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@register("darec", DARecConfig)
class DARec(SequentialRecommender):
    config: DARecConfig

    def __init__(self, config: DARecConfig, n_items: int, max_len: int):
        super().__init__(config, n_items, max_len)
        from peft import LoraConfig, inject_adapter_in_model

        c = config
        backbone = load_backbone(c.backbone, c.keep_layers or None)
        self._encode = backbone.encode  # tokenizer, used once per catalogue in prepare()
        self.llm = inject_adapter_in_model(
            LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout, target_modules="all-linear"),
            backbone.model.base_model,
        )
        for name, param in self.llm.named_parameters():
            param.requires_grad = "lora_" in name
        hidden = backbone.hidden_size
        self.text = c.item_input != "id"
        self.span = (c.item_tokens if self.text else 0) + 1
        self.register_buffer("item_text", torch.zeros(n_items + 1, max(1, c.item_tokens), dtype=torch.long))
        self.register_buffer("item_text_len", torch.zeros(n_items + 1, dtype=torch.long))
        self.cf = SASRec(SASRecConfig(hidden_size=c.cf_hidden, dropout=0.2, attn_dropout=0.2), n_items, max_len)
        self.id_proj = nn.Linear(c.cf_hidden, hidden) if c.item_input != "text" else None
        self.item_marker = nn.Parameter(torch.zeros(hidden))
        self.user_proj = nn.Linear(hidden, c.cf_hidden)
        self.head = nn.Linear(hidden, n_items + 1)

    def rebuilt_state_keys(self) -> set[str]:
        # The frozen backbone comes back from its source; only adapters and heads are saved.
        return {k for k in self.state_dict() if k.startswith("llm.") and "lora_" not in k}

    def prepare(self, dataset: SequenceDataset) -> None:
        """Tokenize every item title once (kept in a buffer, so it is saved with the run)."""
        width = self.item_text.size(1)
        for item, text in enumerate(dataset.item_text):
            ids = self._encode(text)[:width] if text else []
            self.item_text[item, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            self.item_text_len[item] = len(ids)

    def _states(self, items: Tensor) -> Tensor:
        """User states [B, L, H]: the backbone's output at each item token."""
        b, l = items.shape
        real_item = items > 0
        embed = self.llm.get_input_embeddings()
        item_vec = self.item_marker.expand(b, l, -1)
        if self.id_proj is not None:
            item_vec = item_vec + self.id_proj(self.cf.encoder.item_embedding(items))
        parts, valid = [], []
        if self.text:
            width = self.span - 1
            text = self.item_text[items][:, :, :width]
            parts.append(embed(text))
            slots = torch.arange(width, device=items.device)
            valid.append((slots < self.item_text_len[items][..., None]) & real_item[..., None])
        parts.append(item_vec[:, :, None])
        valid.append(real_item[..., None])
        embeds = torch.cat(parts, dim=2).reshape(b, l * self.span, -1)
        valid_tokens = torch.cat(valid, dim=2).reshape(b, l * self.span)
        positions = torch.arange(l, device=items.device)[None, :, None].expand(b, l, self.span).reshape(b, -1)
        item_index = torch.where(valid_tokens, positions, -1)
        position_ids = (valid_tokens.cumsum(1) - 1).clamp(min=0)
        mask = item_attention_mask(item_index, self.config.mask)
        hidden = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids).last_hidden_state
        return hidden.reshape(b, l, self.span, -1)[:, :, -1]

    def _logits(self, states: Tensor) -> Tensor:
        return self.head(states)

    def loss(self, batch: Batch) -> Tensor:
        items, targets = batch.items[:, :-1], batch.next_item_targets()
        keep = targets > 0
        states = self._states(items)[keep]
        logits = self._logits(states)[:, 1:]
        loss = F.cross_entropy(logits, targets[keep] - 1)
        if self.config.lambda_cf > 0:
            cf_hidden = self.cf.encoder(items, causal=True)
            loss = loss + next_item_loss(cf_hidden, targets, self.cf.encoder.item_embedding.weight, "ce")
            loss = loss + self.config.lambda_cf * info_nce(self.user_proj(states), cf_hidden[keep].detach(), self.config.temperature)
        return loss

    def score(self, items: Tensor, lengths: Tensor) -> Tensor:
        return self._logits(last_state(self._states(items), lengths))


@dataclass
class E4SRecConfig(DARecConfig):
    """E4SRec-style baseline: ID tokens only, plain causal attention, no collaborative injection."""

    name: str = option("e4srec", "Model name.")
    item_input: Literal["text+id", "text", "id"] = option("id", "What an item span holds.")
    mask: Literal["block", "causal"] = option("causal", "Attention mask.")
    lambda_cf: float = option(0.0, "Collaborative alignment weight (off).")


register("e4srec", E4SRecConfig)(DARec)
