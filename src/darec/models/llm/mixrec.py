"""MixRec (the first version of the DARec paper, arXiv 2408.07427 v1): DARec whose decoder
layers hold mixtures of adapter experts of different architectures, routed top-k, with a
load-balancing loss; Bayesian optimisation (``darec search --model mixrec``) chooses which
experts each group of layers holds, and k. Spans, context masking, collaborative injection
and the catalogue head are DARec's.

A MixRec plan is a DARec plan whose entries may be mixtures, ``moe[lora:8, houlsby:16]:k=2``,
next to plain entries (``lora:8``, ``none``): one plan language for both; see
:mod:`darec.models.llm.adapters.moe` for the design of the expert layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from darec.config import option
from darec.models.llm.adapters.base import parse_entry
from darec.models.llm.darec import DARec, DARecConfig
from darec.models.registry import register


@dataclass
class MixRecConfig(DARecConfig):
    """DARec with a mixture of adapter experts in every layer (unless a plan says otherwise)."""

    PLAN_SEARCH: ClassVar[str] = "experts"  # darec search chooses each group's experts and k (see darec.search.space)

    name: str = option("mixrec", "Model name.")
    moe: str = option("moe[lora:8, houlsby:16, parallel:16]:k=2", "The mixture every decoder layer holds when no plan "
                      "is given (a plan entry: moe[EXPERT, ...]:k=K:routing=token|sequence:jitter=J).")

    def default_entry(self) -> str:
        return self.moe

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_entry(self.moe, "model.moe")  # a typo fails with the config, not when the model is built


register("mixrec", MixRecConfig)(DARec)
