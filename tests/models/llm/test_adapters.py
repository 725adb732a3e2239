from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from darec.config import ConfigError
from darec.models.llm.adapters import apply_plan, describe_plan, trainable_parameters
from darec.models.llm.adapters.peft_methods import LoraSpec
from darec.models.llm.backbone import TINY

from .test_backbone_and_masking import _families

# Trainable parameters one adapter adds to one layer of the tiny Llama (hidden 64, MLP 128,
# key/value width 32): LoRA r * (in + out) over q, k, v, o, gate, up, down; IA3 one scale per
# key, value and MLP inner unit; a bottleneck 2 * 64 * b + b + 64.
PER_LAYER = {
    "none": 0,
    "lora:4": 4 * (128 + 96 + 96 + 128 + 192 + 192 + 192),
    "lora:2": 2 * 1024,
    "ia3": 32 + 32 + 128,
    "houlsby:8": 2 * (2 * 64 * 8 + 8 + 64),
    "parallel:8": 2 * 64 * 8 + 8 + 64,
    "prefix:3": 2 * 2 * 3 * 16,  # keys and values, 2 key/value heads of 16, length 3
}
CHANGES_OUTPUT_AT_INIT = {"prefix:3"}  # a prefix takes attention from the start


def _llama(layers: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, **{**TINY, "num_hidden_layers": layers})).model.eval()


def _out(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(inputs_embeds=x).last_hidden_state


@pytest.mark.parametrize("entry", sorted(PER_LAYER))
def test_each_adapter_trains_freezes_the_rest_and_reloads(entry: str) -> None:
    model = _llama(2)
    x, target = torch.randn(3, 7, 64), torch.randn(3, 7, 64)
    before = _out(model, x).detach()
    apply_plan(model, [entry, entry])
    trainable, _ = trainable_parameters(model)
    assert trainable == 2 * PER_LAYER[entry]
    # A new adapter starts as the identity (but a prefix).
    assert torch.allclose(_out(model, x), before, atol=1e-5) != (entry in CHANGES_OUTPUT_AT_INIT)
    if entry == "none":
        return
    trains_and_reloads(model, [entry, entry], x, target)


def trains_and_reloads(model: torch.nn.Module, plan: list[str], x: torch.Tensor, target: torch.Tensor,
                       extra_loss: Callable[[], torch.Tensor] = lambda: torch.tensor(0.0)) -> None:
    """A few steps lower the loss and leave the frozen weights alone; the trainable weights
    alone, loaded into a fresh model with the same plan, give the same outputs."""
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.mse_loss(_out(model, x), target) + extra_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    model.eval()
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    fresh = _llama(len(plan))
    apply_plan(fresh, plan)
    missing, unexpected = fresh.load_state_dict(saved, strict=False)
    assert not unexpected and all(n not in saved for n in missing)
    assert torch.allclose(_out(fresh.eval(), x), _out(model, x), atol=1e-6)


def test_a_plan_mixing_every_type_applies() -> None:
    plan = ["none", "lora:4", "ia3", "houlsby:8", "parallel:8", "lora:2", "prefix:3"]
    model = _llama(len(plan))
    x = torch.randn(2, 5, 64)
    apply_plan(model, plan)
    assert trainable_parameters(model)[0] == sum(PER_LAYER[e] for e in plan)
    assert torch.isfinite(_out(model, x)).all()
    assert describe_plan(plan) == "0 none | 1 lora:4 | 2 ia3 | 3 houlsby:8 | 4 parallel:8 | 5 lora:2 | 6 prefix:3"
    assert describe_plan(["lora:8"] * 3 + ["none"] * 2) == "0-2 lora:8 | 3-4 none"


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3", "gpt2", "gpt-neox"])
def test_every_type_works_on_every_family(family: str) -> None:
    for plan in (["lora:4", "ia3", "houlsby:8"], ["parallel:8", "none", "lora:2"], ["prefix:3", "none", "prefix:2"]):
        model = _families()[family].eval()
        tokens = torch.randint(3, 300, (2, 6))
        before = model(tokens, use_cache=False).logits.detach()
        apply_plan(model, plan)
        out = model(tokens, use_cache=False).logits
        assert torch.allclose(out, before, atol=1e-4) != ("prefix:3" in plan)
        changed = tokens.clone()
        changed[:, -1] = (changed[:, -1] + 1) % 300
        later = model(changed, use_cache=False).logits
        assert torch.allclose(later[:, :-1], out[:, :-1], atol=1e-5)  # still causal: no token sees a later one
        out.square().mean().backward()
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert trainable and all(p.grad is not None for p in trainable)


def test_bad_plans_are_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="3 entries for 2 decoder layers"):
        apply_plan(_llama(2), ["none"] * 3)
    with pytest.raises(ConfigError, match=r"plan\[1\]: unknown adapter 'lorra'"):
        apply_plan(_llama(2), ["none", "lorra:8"])
    with pytest.raises(ConfigError, match="must be an integer"):
        apply_plan(_llama(2), ["lora:x", "none"])
    with pytest.raises(ConfigError, match="takes no size"):
        apply_plan(_llama(2), ["ia3:4", "none"])


def test_plan_entries_set_other_fields_of_the_method_by_name() -> None:
    from darec.models.llm.adapters.base import parse_entry

    assert parse_entry("lora:8:dropout=0") == ("lora", LoraSpec(r=8, dropout=0.0))
    assert parse_entry("lora:alpha_per_rank=4") == ("lora", LoraSpec(alpha_per_rank=4.0))
    with pytest.raises(ConfigError, match="unknown key 'dropot'. Did you mean 'dropout'"):
        parse_entry("lora:8:dropot=0")
    with pytest.raises(ConfigError, match=r"dropout: must be < 1, got 1"):
        parse_entry("lora:8:dropout=1")
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_entry("lora:8:4")
    model = _llama(2)
    apply_plan(model, ["lora:4", "lora:4:dropout=0.1"])  # two settings side by side (no dropout by default)
    dropouts = [m for n, m in model.named_modules() if n.endswith("q_proj.lora_dropout")]
    assert [type(next(iter(d.values()))).__name__ for d in dropouts] == ["Identity", "Dropout"]


def test_the_prefix_finds_the_cache_in_the_attention_signature_and_checks_it_is_used() -> None:
    from darec.models.llm.adapters.prefix import cache_parameter

    model = _llama(1)
    attention = model.layers[0].self_attn
    name, _ = cache_parameter(attention)
    assert name in ("cache", "past_key_values", "past_key_value")  # whichever this transformers release uses

    class NoCache(torch.nn.Module):
        def forward(self, hidden_states, attention_mask=None):
            return hidden_states

    with pytest.raises(ConfigError, match="NoCache.forward takes no KV cache"):
        cache_parameter(NoCache())

    # An attention that takes a cache argument but ignores it: the prefix would silently do nothing.
    apply_plan(model, ["prefix:3"])
    original = type(attention).forward

    def ignoring(self, *args, **kwargs):
        kwargs[name] = None
        kwargs["attention_mask"] = None
        return original(self, *args, **kwargs)

    attention.forward = ignoring.__get__(attention)
    with pytest.raises(RuntimeError, match=f"ignored the cache given as '{name}'"):
        _out(model, torch.randn(1, 4, 64))


def test_lora_ranks_by_layer_live_in_one_peft_adapter_and_old_weights_load() -> None:
    from darec.models.llm.adapters.peft_methods import rename_old_lora_keys

    model = _llama(3)
    apply_plan(model, ["lora:4", "lora:2", "lora:4"])
    names = {n.split(".lora_A.")[1].split(".")[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert names == {"default"}
    q = [model.layers[i].self_attn.q_proj for i in range(3)]
    assert [m.lora_A["default"].out_features for m in q] == [4, 2, 4]
    assert [m.scaling["default"] for m in q] == [2.0, 2.0, 2.0]  # alpha = 2r: alpha / r
    # Weights saved when each rank had an adapter of its own (lora_r4_a2_d0_05, ...) load into it.
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    old = {n.replace(".default.", f".lora_r{q[int(n.split('layers.')[1].split('.')[0])].r['default']}_a2_d0_05."): p
           for n, p in state.items()}
    assert all(".default." not in n for n in old)
    rename_old_lora_keys(old)
    assert old.keys() == state.keys()


def test_a_plan_mixing_lora_dropouts_trains_every_layers_adapter() -> None:
    # peft makes the adapter injected last active in every LoRA layer; each layer must run its own.
    model = _llama(2)
    apply_plan(model, ["lora:4", "lora:4:dropout=0.1"])
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            p.data.normal_(std=0.1)  # B starts at zero, and so would A's gradient
    _out(model.train(False), torch.randn(2, 5, 64)).square().mean().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads == {n for n, p in model.named_parameters() if p.requires_grad} and len(grads) == 2 * 7 * 2
