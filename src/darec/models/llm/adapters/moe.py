"""Mixtures of adapter experts (MixRec's DAMoE): a plan entry ``moe[lora:8, houlsby:16, ia3]``
gives a decoder layer several experts of different architectures, mixed by a learned router.

MixRec's paper has no public text or code; this is our design, after MixLoRA (top-k
routing, a Switch-style balancing loss) and UniPELT (heterogeneous adapters, each scaled by
a gate where it acts):

* **Router.** A bias-free linear map of the layer's input hidden state to one logit an
  expert, softmax, top-k. ``routing=token`` routes every token by its own state;
  ``routing=sequence`` by the mean state of its sequence so far (a running mean: the
  model is trained on every prefix at once, and a whole-sequence mean would let a later
  item steer how an earlier one is read). The k chosen weights are renormalised to sum to 1 (the denominator is held constant in the
  backward pass, so at k=1 the router still learns, as in Switch, from d/dp of its
  probability; fully renormalised, a lone weight would be constantly 1). Optional
  multiplicative jitter on the router's input in training (Switch).
* **Experts act where their architecture acts, scaled by their routing weight** g (0 for an
  expert a token is not routed to): LoRA adds ``g * B A x`` to every linear of the layer;
  Houlsby adds ``g * adapter(h)`` after the attention and after the MLP; a parallel adapter
  adds ``g * adapter(x)`` beside the MLP; IA3 scales keys, values and the MLP's inner
  activations by ``1 + g (l - 1)`` (its scaling when g = 1, none when g = 0). So each
  expert contributes a routed residual delta at its own places, and a token routed to none
  of them sees the frozen layer. Prefixes are not experts: a prefix's keys are shared by
  every query through one softmax, so it has no per-token delta to scale (UniPELT's gate
  on it is per layer, not routed).
* **Dense compute.** Every expert runs on every token and the weights zero out the rest:
  adapters are tiny next to the frozen layer, so gathering tokens per expert (as MixLoRA
  does for its FFN-sized experts) would cost more than it saves.
* **Balancing loss** (Switch, MixLoRA): ``E * sum_e f_e P_e`` over the real tokens of a batch, ``f_e`` the share of routing slots given to expert e (k a token)
  and ``P_e`` its mean router probability; 1 when the dispatch is uniform. The model adds
  it to the training loss with weight ``lambda_balance``.
* **Usage.** Each router counts, in training, the tokens routed to each expert; the
  model reads and resets the counts every epoch (logged in metrics.jsonl and drawn as
  ``expert_usage.png``), because a collapsed router is the first thing to look for.

LoRA and IA3 experts are our own small modules, not peft's: peft scales an adapter by one
number for all tokens, and an expert needs a weight per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darec.config import ConfigError, option
from darec.models.llm.adapters.base import LayerAnatomy, parse_entry, register_adapter
from darec.models.llm.adapters.bottleneck import Gate, add_houlsby, add_parallel
from darec.models.llm.adapters.peft_methods import LoraSpec, ia3_targets, in_features, out_features

EXPERT_KINDS = ("lora", "houlsby", "parallel", "ia3")


@dataclass
class MoESpec:
    """``moe[lora:8, houlsby:16]:k=1:routing=sequence``: the experts in brackets, then settings."""

    experts: list[str] = option(["lora:8", "houlsby:16", "parallel:16"], "The layer's experts: entries of the adapter "
                                f"zoo ({', '.join(EXPERT_KINDS)}), each with its own size and settings.")
    k: int = option(2, "Experts each token (or sequence) is routed to.", low=1)
    routing: Literal["token", "sequence"] = option("token", "Route each token by its own state, or by the mean state "
                                                   "of its sequence up to it.")
    jitter: float = option(0.0, "Multiplicative noise on the router's input in training, uniform in [1-j, 1+j] "
                           "(Switch uses 0.01).", low=0, below=1)
    parsed: list[tuple[str, Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.experts:
            raise ConfigError("moe[...]: give at least one expert")
        self.parsed = [parse_entry(e, f"moe expert {i}") for i, e in enumerate(self.experts)]
        for entry, (kind, _) in zip(self.experts, self.parsed):
            if kind not in EXPERT_KINDS:
                raise ConfigError(f"moe[...]: {entry!r} cannot be an expert; experts are {', '.join(EXPERT_KINDS)} "
                                  "(a prefix has no per-token output to route; see darec.models.llm.adapters.moe)")
        if self.k > len(self.experts):
            raise ConfigError(f"moe[...]: k={self.k} but only {len(self.experts)} expert(s)")


def balance_loss(probs: Tensor, chosen: Tensor, real: Tensor | None = None) -> Tensor:
    """Switch's load-balancing loss: ``E * sum_e f_e P_e``, with ``probs`` ``[N, E]`` the router
    probabilities of N tokens and ``chosen`` ``[N, E]`` 1 where a token is routed to an expert,
    over the tokens ``real`` (``[N]``, bool; default all) marks: a weight, not an index, so the
    layer compiles as one graph (an index's size depends on the data). No real token: 0."""
    keep = probs.new_ones(probs.shape[:-1]) if real is None else real.to(probs.dtype)
    chosen = chosen * keep[..., None]
    share = chosen.sum(0) / chosen.sum().clamp(min=1)  # f_e: each expert's share of the routing slots
    mean_probs = (probs * keep[..., None]).sum(0) / keep.sum().clamp(min=1)
    return probs.size(-1) * (share * mean_probs).sum()


class Router(nn.Module):
    """Routes the tokens entering one decoder layer; its experts read their weights from it."""

    def __init__(self, hidden: int, spec: MoESpec, layer: int):
        super().__init__()
        self.gate = nn.Linear(hidden, len(spec.experts), bias=False)
        nn.init.normal_(self.gate.weight, std=0.02)
        self.k, self.routing, self.jitter, self.layer, self.experts = spec.k, spec.routing, spec.jitter, layer, list(spec.experts)
        self.real: Tensor | None = None  # [B, T] real tokens of the next forward (set by the model; None = all)
        self.weights: Tensor | None = None  # [B, T, E]: each expert's weight, 0 where not routed
        self.balance: Tensor | None = None  # this forward's balancing loss
        self.register_buffer("usage", torch.zeros(len(spec.experts)), persistent=False)

    def route(self, hidden: Tensor) -> None:
        b, t, _ = hidden.shape
        real = self.real if self.real is not None and self.real.shape == (b, t) else hidden.new_ones(b, t, dtype=torch.bool)
        if self.training and self.jitter:
            hidden = hidden * torch.empty_like(hidden).uniform_(1 - self.jitter, 1 + self.jitter)
        if self.routing == "sequence":  # the mean state of the sequence so far: never a later item's
            keep = real[..., None].to(hidden.dtype)
            hidden = (hidden * keep).cumsum(1) / keep.cumsum(1).clamp(min=1)
        probs = F.softmax(self.gate(hidden).float(), dim=-1)
        top, index = probs.topk(self.k, dim=-1)
        self.weights = torch.zeros_like(probs).scatter(-1, index, top / top.sum(-1, keepdim=True).detach())
        chosen = torch.zeros_like(probs).scatter(-1, index, 1.0)
        self.balance = balance_loss(probs.flatten(0, 1), chosen.flatten(0, 1), real.flatten())
        if self.training:
            self.usage += (chosen * real[..., None]).sum((0, 1)).detach().to(self.usage.dtype)

    def weight(self, expert: int) -> Tensor:
        """``[B, T, 1]``: the weight of ``expert`` for each token of this forward."""
        if self.weights is None:
            raise RuntimeError(f"layer {self.layer}: an expert ran before its router")
        return self.weights[..., expert: expert + 1]

    def take_usage(self) -> list[float]:
        """Each expert's share of the tokens routed since the last call (k slots a token), and reset."""
        counts = self.usage.tolist()
        self.usage.zero_()
        total = sum(counts)
        return [c / total if total else 0.0 for c in counts]


class LowRank(nn.Module):
    """A LoRA delta ``scale * B A x`` (A as peft initialises it, B zero: no change at first)."""

    def __init__(self, n_in: int, n_out: int, spec: LoraSpec):
        super().__init__()
        self.A, self.B = nn.Linear(n_in, spec.r, bias=False), nn.Linear(spec.r, n_out, bias=False)
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.B.weight)
        self.scale = spec.alpha_per_rank
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.B(self.A(self.dropout(x)))


def _key(layer: LayerAnatomy, name: str) -> str:
    """A linear's name inside its layer, as a module key (which cannot hold dots): ``self_attn_q_proj``."""
    return name.removeprefix(f"{layer.name}.").replace(".", "_")


def add_lora(owner: nn.Module, layer: LayerAnatomy, spec: LoraSpec, hidden: int, gate: Gate) -> None:
    owner.lora = nn.ModuleDict({_key(layer, n): LowRank(in_features(m), out_features(m), spec) for n, m in layer.linears.items()})
    for name, linear in layer.linears.items():
        delta = owner.lora[_key(layer, name)]
        linear.register_forward_hook(lambda module, args, output, delta=delta: output + gate() * delta(args[0]))


def add_ia3(owner: nn.Module, layer: LayerAnatomy, spec: Any, hidden: int, gate: Gate) -> None:
    attention, down = ia3_targets(layer)
    owner.ia3 = nn.ParameterDict()
    for name in attention:  # scale the outputs: keys and values
        scale = owner.ia3[_key(layer, name)] = nn.Parameter(torch.ones(out_features(layer.linears[name])))
        layer.linears[name].register_forward_hook(
            lambda module, args, output, scale=scale: output * (1 + gate() * (scale - 1)))
    for name in down:  # scale the inputs: the MLP's inner activations
        scale = owner.ia3[_key(layer, name)] = nn.Parameter(torch.ones(in_features(layer.linears[name])))
        layer.linears[name].register_forward_pre_hook(
            lambda module, args, scale=scale: (args[0] * (1 + gate() * (scale - 1)), *args[1:]))


ADD_EXPERT = {"lora": add_lora, "houlsby": add_houlsby, "parallel": add_parallel, "ia3": add_ia3}


class MixtureOfExperts(nn.Module):
    """A decoder layer's router and experts (one module each, holding that expert's weights)."""

    def __init__(self, router: Router, n_experts: int):
        super().__init__()
        self.router = router
        self.experts = nn.ModuleList(nn.Module() for _ in range(n_experts))


def _route_first(router: Router):
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        router.route(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

    return hook


@register_adapter("moe", MoESpec)
def apply_moe(model: nn.Module, layers: list[tuple[LayerAnatomy, Any]]) -> None:
    hidden = model.get_input_embeddings().embedding_dim
    for layer, spec in layers:
        moe = layer.module.moe = MixtureOfExperts(Router(hidden, spec, layer.index), len(spec.experts))
        layer.module.register_forward_pre_hook(_route_first(moe.router), with_kwargs=True)
        for e, ((kind, expert), owner) in enumerate(zip(spec.parsed, moe.experts)):
            ADD_EXPERT[kind](owner, layer, expert, hidden, lambda router=moe.router, e=e: router.weight(e))


def routers(model: nn.Module) -> list[Router]:
    return [m for m in model.modules() if isinstance(m, Router)]


def plot_expert_usage(usage: dict[str, dict[str, Any]]) -> Any:
    """A layers x experts heatmap of the share of tokens each expert received, each cell
    labelled with its expert; ``usage``: ``{layer: {"experts": [...], "share": [...]}}``."""
    from darec.io import pyplot

    plt = pyplot()
    layers = sorted(usage, key=int)
    width = max(len(usage[k]["share"]) for k in layers)
    grid = [[*usage[k]["share"], *[float("nan")] * (width - len(usage[k]["share"]))] for k in layers]
    fig, ax = plt.subplots(figsize=(2 + 1.6 * width, 1 + 0.3 * len(layers)))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    for row, k in enumerate(layers):
        for col, (name, share) in enumerate(zip(usage[k]["experts"], usage[k]["share"])):
            ax.text(col, row, f"{name}\n{share:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if share < 0.5 else "black")
    ax.set_xticks(range(width), [f"expert {i}" for i in range(width)], fontsize=7)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.set_ylabel("layer")
    ax.set_title("share of routed tokens (k a token) in the last epoch", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    return fig
