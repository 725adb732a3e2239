from __future__ import annotations

import pytest
import torch

from darec.config import ConfigError
from darec.models.llm.adapters import apply_plan, parse_plan, trainable_parameters
from darec.models.llm.adapters.base import parse_entry
from darec.models.llm.adapters.moe import MoESpec, Router, balance_loss, routers

from .test_adapters import PER_LAYER, _llama, _out, trains_and_reloads

HIDDEN = 64


def _router(experts: int, k: int, routing: str = "token") -> Router:
    torch.manual_seed(0)
    spec = MoESpec(experts=["lora:2"] * experts, k=k, routing=routing)
    return Router(HIDDEN, spec, layer=0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_chosen_weights_sum_to_one_with_exactly_k_experts_a_token(k: int) -> None:
    router = _router(experts=4, k=k)
    router.route(torch.randn(3, 11, HIDDEN))
    weights = router.weights
    assert weights.shape == (3, 11, 4)
    assert ((weights > 0).sum(-1) == k).all()
    assert torch.allclose(weights.sum(-1), torch.ones(3, 11))


def test_sequence_routing_reads_the_sequence_so_far_only() -> None:
    router = _router(experts=3, k=1, routing="sequence")
    x = torch.randn(2, 9, HIDDEN)
    router.route(x)
    before = router.weights.clone()
    x[:, 5:] = torch.randn(2, 4, HIDDEN)  # change the later tokens
    router.route(x)
    assert torch.equal(router.weights[:, :5], before[:, :5])
    # The first token is routed by itself; a token's routing is that of its running mean.
    token = _router(experts=3, k=1)
    token.route(x.cumsum(1) / torch.arange(1, 10)[None, :, None])
    assert torch.equal(token.weights, router.weights)


def test_padding_is_not_counted_in_the_balance_or_the_usage() -> None:
    router = _router(experts=2, k=1).train()
    x = torch.randn(2, 6, HIDDEN)
    router.real = torch.tensor([[True] * 6, [True] * 2 + [False] * 4])
    router.route(x)
    padded_balance, padded_usage = router.balance, router.usage.clone()
    router.usage.zero_()
    router.real = None
    router.route(torch.cat([x[0], x[1, :2]])[None])  # the same 8 real tokens, unpadded
    assert torch.equal(router.usage, padded_usage) and router.usage.sum() == 8
    assert torch.allclose(router.balance, padded_balance)


def test_balance_loss_by_hand_and_at_its_minimum() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    chosen = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    # f = (1/2, 1/2, 0), P = (0.4, 0.4, 0.2): 3 * (0.2 + 0.2)
    assert balance_loss(probs, chosen).item() == pytest.approx(1.2)
    # Padding tokens count for nothing: only the first here, f = (1, 0, 0), P = (0.7, 0.2, 0.1).
    assert balance_loss(probs, chosen, torch.tensor([True, False])).item() == pytest.approx(2.1)
    assert balance_loss(probs, chosen, torch.tensor([False, False])).item() == 0.0
    # A uniform dispatch gives 1 whatever the probabilities ...
    uniform = torch.eye(3).repeat(4, 1)
    assert balance_loss(torch.softmax(torch.randn(12, 3), -1), uniform).item() == pytest.approx(1.0)
    # ... and, where the router's probabilities are the dispatch, any other dispatch gives more.
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        share = torch.softmax(3 * torch.randn(3, generator=generator), -1)
        assert balance_loss(share[None], share[None]).item() >= 1.0 - 1e-6
    all_to_one = torch.tensor([[1.0, 0, 0]] * 4)
    assert balance_loss(all_to_one, all_to_one).item() == pytest.approx(3.0)


def test_usage_shares_are_read_and_reset() -> None:
    router = _router(experts=3, k=2).train()
    router.route(torch.randn(2, 5, HIDDEN))
    share = router.take_usage()
    assert sum(share) == pytest.approx(1.0) and all(0 <= s <= 1 for s in share)
    assert router.take_usage() == [0.0, 0.0, 0.0]
    router.eval()
    router.route(torch.randn(2, 5, HIDDEN))  # evaluation is not training traffic
    assert router.take_usage() == [0.0, 0.0, 0.0]


def test_entries_parse_and_bad_ones_are_refused() -> None:
    name, spec = parse_entry("moe[lora:8, parallel:16:scale=2, ia3]:k=1:routing=sequence:jitter=0.01")
    assert name == "moe" and spec.experts == ["lora:8", "parallel:16:scale=2", "ia3"] and spec.k == 1
    assert spec.routing == "sequence" and spec.jitter == 0.01
    assert parse_entry("moe[lora:4,ia3]")[1].k == 2
    for bad, message in [("moe[lora:4]:k=2", "k=2 but only 1 expert"), ("moe[prefix:3, lora:4]", "cannot be an expert"),
                         ("moe[moe[lora:2]]", "brackets"), ("moe[]", "at least one expert"), ("moe[lora:4]x", "settings after"),
                         ("moe[lora:x]", "must be an integer"), ("moe[lora:4]:kk=1", "unknown key 'kk'"),
                         ("lora[4]", "takes no bracketed list"), ("moe[lora:4]:routing=batch", "routing")]:
        with pytest.raises(ConfigError, match=message):
            parse_plan([bad], 1)


EXPERTS = ["lora:4", "houlsby:8", "parallel:8", "ia3"]


def test_trainable_parameters_are_counted_exactly() -> None:
    model = _llama(3)
    apply_plan(model, [f"moe[{', '.join(EXPERTS)}]", "none", "moe[lora:2, ia3]:k=1"])
    router_0, router_2 = HIDDEN * 4, HIDDEN * 2
    expected = sum(PER_LAYER[e] for e in EXPERTS) + router_0 + PER_LAYER["lora:2"] + PER_LAYER["ia3"] + router_2
    assert trainable_parameters(model)[0] == expected


def test_every_expert_and_the_router_receive_gradient() -> None:
    model = _llama(1)
    apply_plan(model, [f"moe[{', '.join(EXPERTS)}]:k=2"])
    x = torch.randn(4, 12, HIDDEN)
    # Zero-initialised output weights would keep the first gradient off A and the router: start elsewhere.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and name.endswith(("B.weight", "up.weight")):
                p.normal_(std=0.1)
    model.train()
    loss = _out(model, x).square().mean() + routers(model)[0].balance
    loss.backward()
    (router,) = routers(model)
    assert all(s > 0 for s in router.take_usage())  # each expert had tokens
    for e, expert in enumerate(model.layers[0].moe.experts):
        grads = [p.grad for p in expert.parameters()]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), f"expert {e} ({EXPERTS[e]})"
    assert router.gate.weight.grad.abs().sum() > 0


def test_a_new_mixture_leaves_the_layer_unchanged_and_an_unrouted_expert_adds_nothing() -> None:
    model = _llama(1)
    x = torch.randn(2, 7, HIDDEN)
    before = _out(model, x).detach()
    apply_plan(model, [f"moe[{', '.join(EXPERTS)}]:k=1"])
    assert torch.allclose(_out(model, x), before, atol=1e-5)
    (router,) = routers(model)
    experts = model.layers[0].moe.experts
    with torch.no_grad():
        for p in experts.parameters():
            p.add_(0.2 * torch.randn_like(p))

    def every_token_to(expert: int) -> torch.Tensor:
        router.route = lambda hidden: setattr(router, "weights", torch.nn.functional.one_hot(
            torch.full(hidden.shape[:2], expert), len(EXPERTS)).float())
        return _out(model, x).detach()

    to_lora = every_token_to(0)
    assert not torch.allclose(to_lora, every_token_to(1), atol=1e-4)  # the routing decides
    with torch.no_grad():  # the experts no token is routed to, back to doing nothing
        for e in (1, 2, 3):
            for name, p in experts[e].named_parameters():
                p.copy_(torch.ones_like(p) if name.startswith("ia3") else torch.zeros_like(p))
    assert torch.allclose(every_token_to(0), to_lora, atol=1e-6)


def test_a_mixed_plan_trains_saves_and_reloads() -> None:
    plan = ["moe[lora:4, houlsby:8, ia3]:k=2", "parallel:8", "none"]
    model = _llama(3)
    apply_plan(model, plan)
    (router,) = routers(model)
    trains_and_reloads(model, plan, torch.randn(3, 7, HIDDEN), torch.randn(3, 7, HIDDEN), lambda: 0.01 * router.balance)
