"""Bayesian optimisation of the layer-wise adapter plan."""

from darec.search.space import SearchConfig, layer_groups, plan_from_choices
from darec.search.study import Search, read_plan

__all__ = ["Search", "SearchConfig", "layer_groups", "plan_from_choices", "read_plan"]
