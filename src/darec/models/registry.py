"""A small registry: model name -> (config class, model class)."""

from __future__ import annotations

from collections.abc import Callable

from darec.models.base import ModelConfig, SequentialRecommender

MODELS: dict[str, tuple[type[ModelConfig], type[SequentialRecommender]]] = {}


def register(name: str, config_class: type[ModelConfig]) -> Callable[[type[SequentialRecommender]], type[SequentialRecommender]]:
    def add(model_class: type[SequentialRecommender]) -> type[SequentialRecommender]:
        MODELS[name] = (config_class, model_class)
        return model_class

    return add
