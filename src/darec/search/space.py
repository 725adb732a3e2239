"""The search space of layer-wise adapter plans.

Deep backbones have too many layers to choose an adapter for each one independently (30
layers and 9 choices make 9^30 plans), so consecutive layers are grouped and each group
shares one choice. Groups are as even as possible, earlier groups taking the extra layer.
What a group chooses depends on the model (its config's ``PLAN_SEARCH``):

* ``adapters`` (DARec): one entry of ``choices``.
* ``experts`` (MixRec): which of ``experts`` its mixture holds (each in or out) and its
  ``k`` (one of ``top_k``, at most the number of experts held); none held leaves the group
  frozen, one held is that adapter alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from darec.config import ConfigError, option
from darec.models.llm.adapters import parse_plan
from darec.models.llm.adapters.base import parse_entry

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
    experts: list[str] = option(["lora:8", "houlsby:16", "parallel:16", "ia3"], "Experts a group's mixture may hold "
                                "(models that search experts, e.g. MixRec).")
    top_k: list[int] = option([1, 2], "Values of k a group's mixture may take (models that search experts).")
    start_with: list[str] = option([], "Entries tried first, each as a uniform plan (every group the same), e.g. lora:8 "
                                        "or moe[lora:8, ia3]:k=1: the search then starts from known plans, and its best at "
                                        "this budget is at least theirs.")
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


class AdapterSpace:
    """One adapter a group, from ``choices``."""

    def __init__(self, config: SearchConfig):
        for i, choice in enumerate(config.choices):
            parse_plan([choice], 1, f"search.choices[{i}]")
        self.config = config

    def describe(self) -> str:
        return f"{len(self.config.choices)} choices each"

    def suggest(self, trial: Any, group: int) -> str:
        return trial.suggest_categorical(f"group_{group}", self.config.choices)

    def params(self, entry: str, group: int, where: str) -> dict[str, Any]:
        """The trial parameters that make ``group`` take ``entry``."""
        if entry not in self.config.choices:
            raise ConfigError(f"{where}: {entry!r} is not one of search.choices {self.config.choices}")
        return {f"group_{group}": entry}


class ExpertSpace:
    """A mixture a group: each of ``experts`` in or out, and k."""

    def __init__(self, config: SearchConfig):
        for i, expert in enumerate(config.experts):
            parse_entry(f"moe[{expert}]:k=1", f"search.experts[{i}]")
        if not config.top_k or min(config.top_k) < 1:
            raise ConfigError(f"search.top_k: give values of k of 1 or more, got {config.top_k}")
        self.config = config

    def describe(self) -> str:
        return f"a mixture of any of {', '.join(self.config.experts)} each, k in {self.config.top_k}"

    def suggest(self, trial: Any, group: int) -> str:
        held = [e for e in self.config.experts if trial.suggest_categorical(f"group_{group}_{e}", [False, True])]
        k = trial.suggest_categorical(f"group_{group}_k", self.config.top_k)
        return self.entry(held, k)

    @staticmethod
    def entry(held: list[str], k: int) -> str:
        if len(held) <= 1:
            return held[0] if held else "none"
        return f"moe[{', '.join(held)}]:k={min(k, len(held))}"

    def params(self, entry: str, group: int, where: str) -> dict[str, Any]:
        parsed = parse_entry(entry, where)
        name, spec = parsed
        held, k = (spec.experts, spec.k) if name == "moe" else ([] if name == "none" else [entry], self.config.top_k[0])
        if any(e not in self.config.experts for e in held) or k not in self.config.top_k or \
                parse_entry(self.entry(held, k)) != parsed:  # e.g. routing=sequence, which the space does not vary
            raise ConfigError(f"{where}: {entry!r} is not in the search space (experts {self.config.experts}, "
                              f"k in {self.config.top_k})")
        return {**{f"group_{group}_{e}": e in held for e in self.config.experts}, f"group_{group}_k": k}


SPACES = {"adapters": AdapterSpace, "experts": ExpertSpace}
