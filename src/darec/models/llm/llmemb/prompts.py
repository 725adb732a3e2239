"""Item prompts for LLMEmb and the attribute-level augmentation of SCFT.

A prompt is one instruction line, then the attributes as ``key is value; key is value``
with every value cut to ``max_chars`` characters (the LLMEmb code's shape). Items whose
data has only free text (no named columns) get its sentences as ``description``
attributes, so augmentation still has parts to shuffle and drop.
"""

from __future__ import annotations

import math
import re

import numpy as np

from darec.data.dataset import SequenceDataset

Attributes = list[tuple[str, str]]


def item_attributes(dataset: SequenceDataset, item: int) -> Attributes:
    named = dataset.item_attributes[item] if dataset.item_attributes else []
    if named:
        return list(named)
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", dataset.item_text[item]) if s.strip()]
    return [("description", s.rstrip(".")) for s in sentences]


def item_prompt(attributes: Attributes, domain: str = "", max_chars: int = 100) -> str:
    head = f"The {domain} item has the following attributes:" if domain else "The item has the following attributes:"
    return head + "\n" + "; ".join(f"{key} is {value[:max_chars]}" for key, value in attributes)


def augment(attributes: Attributes, rng: np.random.Generator, drop: float = 0.4) -> Attributes:
    """A shuffled copy without ``drop`` of the attributes (rounded down; at least one is kept)."""
    keep = max(1, len(attributes) - math.floor(drop * len(attributes)))
    order = rng.permutation(len(attributes))[:keep]
    return [attributes[i] for i in order]
