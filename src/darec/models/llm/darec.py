"""DARec core (coarse-grained adaption, context masking, collaborative knowledge injection).

Every history item is a span: its title tokens (cut to ``item_tokens``), then one item
token whose input embedding is a projection of the item's collaborative embedding. Spans
are packed back to back with no per-item padding, and the backbone reads them under a
block mask (causal across items, bidirectional inside an item). The state at each item
token is the user state after that item, scored against the whole catalogue, with
cross-entropy at every position in one forward pass. A SASRec, trained jointly or
pre-trained (``cf_run``), supplies the collaborative item embeddings and, through an
InfoNCE loss (``lambda_cf``), pulls the LLM user state toward its own.

With ``mask=semantic`` every span also holds a semantic token before the item token. It
sees only its own item's text, and an auxiliary loss (``lambda_sem``) makes its state
identify the item among all items, so later items read a summary of each earlier item's
meaning.

The backbone is adapted by a layer-wise plan (``plan``: one adapter per decoder layer;
LoRA on every layer by default); see :mod:`darec.models.llm.adapters`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darec.config import ConfigError, Retired, option
from darec.data.batching import Batch
from darec.data.dataset import SequenceDataset
from darec.device import autocast
from darec.models.base import (Companions, ModelConfig, SequentialRecommender, catalogue_scores, companion, info_nce, last_state,
                               next_item_loss)
from darec.models.llm.adapters import apply_plan, describe_plan
from darec.models.llm.adapters.moe import plot_expert_usage, routers
from darec.models.llm.adapters.peft_methods import rename_old_lora_keys
from darec.models.llm.backbone import decoder_layers, load_backbone
from darec.models.llm.masking import item_attention_mask
from darec.models.registry import register
from darec.models.sasrec import SASRec, SASRecConfig

CF_HEADS = 2  # attention heads of the collaborative SASRec (its inner size is SASRec's default)


@dataclass
class DARecConfig(ModelConfig):
    # Before the adapter zoo, LoRA had its own alpha and dropout (defaults 16 = 2r and 0.05); runs
    # saved with those still load. Dropout acts in training only, so they evaluate as they did; a
    # resumed one trains on without it (lora:R's dropout is 0 now: bench/results/lora_dropout.md).
    RETIRED: ClassVar[dict[str, Retired]] = {
        "lora_alpha": Retired("LoRA alpha is 2 x the rank of each lora:R plan entry",
                              lambda value, section: value == 2 * section.get("lora_r", 8)),
        "lora_dropout": Retired("LoRA dropout is a setting of each lora:R plan entry, e.g. lora:8:dropout=0.05",
                                lambda value, section: value in (0.0, 0.05)),
    }

    PLAN_SEARCH: ClassVar[str] = "adapters"  # darec search chooses one adapter for each group of layers

    name: str = option("darec", "Model name.")
    backbone: str = option("smollm2", "tiny, smollm2 (offline default) or a Hugging Face model directory / hub id.")
    keep_layers: int = option(0, "Keep only the first N decoder layers (0 = all).", low=0)
    item_tokens: int = option(8, "Title tokens per item span (longest; shorter titles take fewer).", low=1)
    item_input: Literal["text+id", "text", "id"] = option("text+id", "What an item span holds: title tokens and/or the ID token.")
    mask: Literal["block", "causal", "semantic"] = option(
        "block", "block: context masking; causal: the ablation without it; semantic: block plus a semantic token per item.")
    lambda_sem: float = option(0.1, "Weight of the semantic-alignment loss (mask=semantic only).", low=0)
    lambda_cf: float = option(0.1, "Weight of the InfoNCE alignment with the SASRec user state (0 = injection off).", low=0)
    cf_hidden: int = option(64, "Hidden size of the collaborative SASRec.", low=1)
    cf_layers: int = option(2, "Transformer blocks of the collaborative SASRec.", low=1)
    cf_dropout: float = option(0.2, "Dropout of the collaborative SASRec (hidden states and attention).", low=0, below=1)
    cf_run: str = option("", "A trained SASRec run directory to start the collaborative model from (empty = train it jointly from scratch).")
    cf_freeze: bool = option(False, "Keep the collaborative SASRec fixed (with cf_run: pre-trained, then kept in the loop as is).")
    temperature: float = option(0.1, "InfoNCE temperature.", above=0)
    head: Literal["linear", "items", "residual"] = option(
        "linear", "linear: a linear layer over the catalogue (as in E4SRec); items: the projected user state "
                  "dotted with the collaborative SASRec's item embeddings (the space the InfoNCE loss aligns to); "
                  "residual: the collaborative SASRec's own user state plus a zero-initialised projection of the "
                  "LLM's, dotted with those embeddings, so training starts at that SASRec's predictions (with cf_run).")
    lora_r: int = option(8, "LoRA rank on every linear layer of every decoder layer, when no plan is given.", low=1)
    plan: list[str] = option([], "Adapter per decoder layer, e.g. [lora:8, houlsby:64, none, ia3, parallel:32] "
                                 "(empty: lora:<lora_r> on every layer). See darec.models.llm.adapters.")
    lambda_balance: float = option(0.01, "Weight of the experts' load-balancing loss (plans with moe[...] entries).", low=0)
    gradient_checkpointing: bool = option(False, "Recompute backbone activations in the backward pass (less memory, ~30% slower).")

    def default_entry(self) -> str:
        """The plan entry of every decoder layer when no plan is given."""
        return f"lora:{self.lora_r}"

    def __post_init__(self) -> None:
        if self.cf_hidden % CF_HEADS:
            raise ConfigError(f"cf_hidden ({self.cf_hidden}) must be a multiple of the collaborative SASRec's {CF_HEADS} heads")


# Packed tokens a CPU evaluation batch aims at (see DARec.eval_batch_size).
EVAL_TOKENS = 4096


class Packed(NamedTuple):
    """Spans packed back to back: token ids ``[B, T]``, the item each token belongs to
    (-1 = padding), and per item the positions of its item and semantic tokens ``[B, L]``."""

    ids: Tensor
    text_token: Tensor
    item_index: Tensor
    item_pos: Tensor
    semantic_pos: Tensor | None


@register("darec", DARecConfig)
class DARec(SequentialRecommender):
    config: DARecConfig

    def __init__(self, config: DARecConfig, n_items: int, max_len: int):
        super().__init__(config, n_items, max_len)
        c = config
        if c.mask == "semantic" and c.item_input == "id":
            raise ConfigError("model.mask=semantic needs item text: set item_input to text+id or text")
        backbone = load_backbone(c.backbone, c.keep_layers or None)
        if c.gradient_checkpointing:
            # Renamed in transformers 5; the old name still works before it.
            enable = getattr(backbone.model, "activation_checkpointing_enable", None) or backbone.model.gradient_checkpointing_enable
            enable({"use_reentrant": False})
        self._encode = backbone.encode  # tokenizer, used once per catalogue in prepare()
        self.llm = backbone.model.base_model
        self.plan = c.plan or [c.default_entry()] * len(backbone.layers)
        apply_plan(self.llm, self.plan)
        self.routers = routers(self.llm)  # of the plan's mixtures of experts (a plain list: they are submodules already)
        self.register_load_state_dict_pre_hook(lambda module, state, *_: rename_old_lora_keys(state))  # older runs
        hidden = backbone.hidden_size
        self.text = c.item_input != "id"
        self.semantic = c.mask == "semantic"
        self.register_buffer("item_text", torch.zeros(n_items + 1, max(1, c.item_tokens), dtype=torch.long))
        self.register_buffer("item_text_len", torch.zeros(n_items + 1, dtype=torch.long))
        self.cf = SASRec(SASRecConfig(hidden_size=c.cf_hidden, n_heads=CF_HEADS, n_layers=c.cf_layers, dropout=c.cf_dropout,
                                      attn_dropout=c.cf_dropout), n_items, max_len)
        self.id_proj = nn.Linear(c.cf_hidden, hidden) if c.item_input != "text" else None
        # Learned input embeddings of the special tokens, at the scale of the backbone's own.
        scale = float(backbone.embeddings.weight.std())
        self.item_marker = nn.Parameter(torch.randn(hidden) * scale)
        self.semantic_marker = nn.Parameter(torch.randn(hidden) * scale) if self.semantic else None
        self.user_proj = nn.Linear(hidden, c.cf_hidden)
        self.head = nn.Linear(hidden, n_items + 1) if c.head == "linear" else None
        # head=residual: what the LLM adds to the SASRec's user state, nothing at first.
        self.residual = nn.Linear(hidden, c.cf_hidden) if c.head == "residual" else None
        if self.residual is not None:
            nn.init.zeros_(self.residual.weight)
            nn.init.zeros_(self.residual.bias)
        # Not trained where this configuration never reads them (counts stay exact; see skips_parameters):
        # the collaborative encoder runs for the alignment or the residual head, its item table feeds ID
        # tokens or scores.
        if c.lambda_cf == 0:
            self.cf.requires_grad_(self.residual is not None)
            self.cf.encoder.item_embedding.requires_grad_(self.id_proj is not None or self.head is None)
            self.user_proj.requires_grad_(c.head == "items")

    def train(self, mode: bool = True) -> DARec:
        super().train(mode)
        if self.config.cf_freeze:
            self.cf.eval()  # a fixed teacher: its user states carry no dropout noise
        return self

    def compile_regions(self) -> list[nn.Module]:
        return list(decoder_layers(self.llm))

    def skips_parameters(self) -> bool:
        return bool(self.routers)  # top-k routing may send no token of a step to an expert

    def eval_batch_size(self, device: torch.device) -> int:
        # Evaluation pads each batch of length-sorted users to its longest packed history. On a CPU,
        # batches of about EVAL_TOKENS tokens pad little and stay in cache (bench/results/eval_batch.md);
        # elsewhere (unmeasured) the base class's batches.
        if device.type != "cpu":
            return super().eval_batch_size(device)
        span = self.config.item_tokens * self.text + 1 + self.semantic
        return max(1, min(super().eval_batch_size(device), EVAL_TOKENS // (self.max_len * span)))

    def describe(self) -> str:
        return f"adapter plan by layer: {describe_plan(self.plan)}"

    def epoch_summary(self) -> dict[str, Any]:
        if not self.routers:
            return {}
        return {"expert_usage": {str(r.layer): {"experts": r.experts, "tokens": int(r.usage.sum()) // r.k,
                                                "share": r.take_usage()} for r in self.routers}}

    def epoch_tallies(self) -> list[Tensor]:
        return [r.usage for r in self.routers]

    def figures(self, summary: dict[str, Any]) -> dict[str, Any]:
        return {"expert_usage": plot_expert_usage(summary["expert_usage"])} if "expert_usage" in summary else {}

    def rebuilt_state_keys(self) -> set[str]:
        # The frozen backbone comes back from its source; only adapters and heads are saved.
        return {f"llm.{n}" for n, p in self.llm.named_parameters() if not p.requires_grad}

    def companion_runs(self) -> dict[str, tuple[str, str]]:
        return {"cf_run": (self.config.cf_run, "sasrec")} if self.config.cf_run else {}

    def prepare(self, dataset: SequenceDataset, companions: Companions | None = None) -> None:
        """Tokenize every item title once (kept in a buffer, so it is saved with the run),
        and start the collaborative model from the ``cf_run`` companion when there is one."""
        width = self.item_text.size(1)
        for item, text in enumerate(dataset.item_text):
            ids = self._encode(text)[:width] if text else []
            self.item_text[item, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            self.item_text_len[item] = len(ids)
        if self.config.cf_run:
            try:
                self.cf.load_state_dict(companion(companions, "cf_run").state_dict())
            except RuntimeError as exc:
                cf = self.cf.config
                raise ConfigError(f"model.cf_run: {self.config.cf_run} does not fit this model's collaborative SASRec "
                                  f"(hidden_size={cf.hidden_size}, n_layers={cf.n_layers}, max_len={self.max_len}): {exc}") from exc
        if self.config.cf_freeze:
            self.cf.requires_grad_(False)

    def _pack(self, items: Tensor) -> Packed:
        """Lay each row's spans out back to back: [title tokens][semantic token][item token]."""
        b, l = items.shape
        real = items > 0
        text_len = self.item_text_len[items] * real if self.text else torch.zeros_like(items)
        span = torch.where(real, text_len + 1 + self.semantic, 0)
        end = span.cumsum(1)
        start = end - span
        t = int(end[:, -1].max())
        ids = torch.zeros(b, t, dtype=torch.long, device=items.device)
        text_token = torch.zeros(b, t, dtype=torch.bool, device=items.device)
        if self.text:
            slot = torch.arange(self.item_text.size(1), device=items.device)
            text = slot < text_len[..., None]
            at = torch.arange(b, device=items.device)[:, None, None].expand_as(text)[text], (start[..., None] + slot)[text]
            ids[at] = self.item_text[items][text]
            text_token[at] = True
        tokens = torch.arange(t, device=items.device).expand(b, t).contiguous()
        item_index = torch.searchsorted(end, tokens, right=True)
        item_index = torch.where(tokens < end[:, -1:], item_index, -1)
        # Padding items point at a real position (their states are never used).
        item_pos = (end - 1).clamp(0, t - 1)
        semantic_pos = (start + text_len).clamp(max=t - 1) if self.semantic else None
        return Packed(ids, text_token, item_index, item_pos, semantic_pos)

    def _states(self, items: Tensor) -> tuple[Tensor, Tensor | None]:
        """User states [B, L, H] (the backbone's output at each item token) and, with the
        semantic mask, the semantic tokens' states [B, L, H]."""
        b, l = items.shape
        real = items > 0
        packed = self._pack(items)
        for router in self.routers:  # routing and its statistics skip padding
            router.real = packed.item_index >= 0
        # The residual stream in fp32 even when the frozen backbone is held in bf16: autocast runs the
        # matmuls in bf16, and the sums and norms between them keep their precision.
        embeds = self.llm.get_input_embeddings()(packed.ids).float()
        rows = torch.arange(b, device=items.device)[:, None].expand(b, l)[real]
        item_vec = self.item_marker.expand(b, l, -1)
        if self.id_proj is not None:
            item_vec = item_vec + self.id_proj(self.cf.encoder.item_embedding(items))
        embeds = embeds.index_put((rows, packed.item_pos[real]), item_vec[real].to(embeds.dtype))
        semantic_token = None
        if packed.semantic_pos is not None:
            semantic_vec = self.semantic_marker.to(embeds.dtype).expand(len(rows), -1)
            embeds = embeds.index_put((rows, packed.semantic_pos[real]), semantic_vec)
            semantic_token = torch.zeros_like(packed.ids, dtype=torch.bool)
            semantic_token[rows, packed.semantic_pos[real]] = True
        mask = item_attention_mask(packed.item_index, self.config.mask, semantic_token, packed.text_token)
        positions = torch.arange(packed.ids.size(1), device=items.device)[None]
        with autocast(items.device, self.precision):  # bf16 when the backbone is held in bf16 (apply_precision)
            hidden = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
        at = torch.arange(b, device=items.device)[:, None]
        semantic = hidden[at, packed.semantic_pos] if packed.semantic_pos is not None else None
        return hidden[at, packed.item_pos], semantic

    def _logits(self, states: Tensor, cf_states: Tensor | None = None) -> Tensor:
        return catalogue_scores(self._user(states, cf_states), *self.item_vectors())

    def _user(self, states: Tensor, cf_states: Tensor | None = None) -> Tensor:
        """The vector scored against :meth:`item_vectors` for LLM ``states``; with the residual
        head, the SASRec's states at the same items (``cf_states``; none for semantic tokens,
        which identify their own item, not the next) plus the LLM's projected."""
        if self.config.head == "linear":
            return states
        if self.config.head == "items":
            return self.user_proj(states)
        return self.residual(states) if cf_states is None else cf_states + self.residual(states)

    def item_vectors(self) -> tuple[Tensor, Tensor | None]:
        if self.head is None:  # scored against the collaborative model's items
            return self.cf.encoder.item_embedding.weight, None
        return self.head.weight, self.head.bias

    def loss(self, batch: Batch) -> Tensor:
        items, targets = batch.items[:, :-1], batch.next_item_targets()
        keep = targets > 0
        user, semantic = self._states(items)
        states = user[keep]
        cf_hidden = self.cf.encoder(items, causal=True) if self.residual is not None or self.config.lambda_cf > 0 else None
        base = cf_hidden[keep] if self.residual is not None else None
        loss = F.cross_entropy(self._logits(states, base)[:, 1:], targets[keep] - 1)
        if semantic is not None and self.config.lambda_sem > 0:
            real = items > 0
            loss = loss + self.config.lambda_sem * F.cross_entropy(self._logits(semantic[real])[:, 1:], items[real] - 1)
        if self.config.lambda_cf > 0:
            if not self.config.cf_freeze:
                loss = loss + next_item_loss(cf_hidden, targets, self.cf.encoder.item_embedding.weight, "ce")
            loss = loss + self.config.lambda_cf * info_nce(self.user_proj(states), cf_hidden[keep].detach(), self.config.temperature)
        if self.routers and self.config.lambda_balance > 0:
            loss = loss + self.config.lambda_balance * torch.stack([r.balance for r in self.routers]).mean()
        return loss

    def user_states(self, items: Tensor, lengths: Tensor) -> Tensor:
        cf = last_state(self.cf.encoder(items, causal=True), lengths) if self.residual is not None else None
        return self._user(last_state(self._states(items)[0], lengths), cf)


@dataclass
class E4SRecConfig(DARecConfig):
    """E4SRec-style baseline: ID tokens only, plain causal attention, no collaborative injection."""

    name: str = option("e4srec", "Model name.")
    item_input: Literal["text+id", "text", "id"] = option("id", "What an item span holds.")
    mask: Literal["block", "causal", "semantic"] = option("causal", "Attention mask.")
    lambda_cf: float = option(0.0, "Collaborative alignment weight (off).", low=0)


register("e4srec", E4SRecConfig)(DARec)
