"""Models. Each registers itself under a name with its typed config (see ``registry``)."""

from __future__ import annotations

from darec.config import ConfigError, did_you_mean
from darec.models import bert4rec, gru4rec, pop, sasrec  # noqa: F401  (registration)
from darec.models.llm import darec, mixrec  # noqa: F401  (registration)
from darec.models.base import ModelConfig, SequentialRecommender
from darec.models.registry import MODELS, register

__all__ = ["MODELS", "ModelConfig", "SequentialRecommender", "build_model", "model_config_class", "register"]


def model_config_class(name: str) -> type[ModelConfig]:
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'.{did_you_mean(name, MODELS)} Available: {', '.join(sorted(MODELS))}")
    return MODELS[name][0]


def build_model(config: ModelConfig, n_items: int, max_len: int) -> SequentialRecommender:
    model_config_class(config.name)
    return MODELS[config.name][1](config, n_items, max_len)
