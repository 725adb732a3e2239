"""The search space of layer-wise adapter plans.

Deep backbones have too many layers to choose an adapter for each one independently (30
layers and 9 choices make 9^30 plans), so consecutive layers are grouped and each group
shares one choice: ``groups`` choices, each from ``choices``. Groups are as even as
possible, earlier groups taking the extra layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from darec.config import option

DEFAULT_CHOICES = ["none", "lora:4", "lora:8", "lora:16", "ia3", "houlsby:16", "houlsby:64", "parallel:16", "parallel:64",
                   "prefix:10"]


@dataclass
class SearchConfig:
    trials: int = option(20, "Trials in all (a resumed search runs what is left).", low=1)
    budget: int = option(200, "Training steps per trial.", low=1)
    rungs: int = option(4, "Validations per trial; a weak trial is pruned at any of them.", low=1)
    sampler: str = option("gp", "gp (Gaussian-process Bayesian optimisation) or tpe.")
    pruner: str = option("halving", "halving (successive halving), median, or none.")
    max_trainable: int = option(0, "Cap on trainable parameters; plans above it are not trained (0 = no cap).", low=0)
    groups: int = option(0, "Groups of consecutive layers that share one choice (0 = one per layer up to 6 layers, else 6).", low=0)
    choices: list[str] = option(DEFAULT_CHOICES, "Adapters a group may take.")
    start_with: list[str] = option([], "Choices tried first, each as a uniform plan (every group the same), e.g. lora:8: "
                                        "the search then starts from known plans, and its best at this budget is at least theirs.")
    seed: int = option(42, "Sampler seed.")
    valid_users: int = option(0, "Score each trial on a fixed random sample of this many validation users (0 = all): "
                                 "much cheaper rungs on large data sets, for a noisier objective.", low=0)
    minutes: float = option(0.0, "Start no new trial after this many minutes of this invocation (0 = no limit); the "
                            "trial under way finishes, and a resumed search runs on.", low=0)


def layer_groups(n_layers: int, groups: int) -> list[range]:
    """Consecutive, near-equal groups of layer indices."""
    groups = min(groups or min(n_layers, 6), n_layers)
    size, extra = divmod(n_layers, groups)
    out, start = [], 0
    for g in range(groups):
        end = start + size + (g < extra)
        out.append(range(start, end))
        start = end
    return out


def plan_from_choices(choices: list[str], groups: list[range]) -> list[str]:
    """One entry per layer from one choice per group."""
    return [choice for choice, group in zip(choices, groups) for _ in group]
