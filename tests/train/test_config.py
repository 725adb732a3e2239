from __future__ import annotations

from pathlib import Path

import pytest

from darec.config import ConfigError
from darec.train.config import build_config


def test_overrides_bare_and_qualified() -> None:
    c = build_config(overrides=["lr=3e-4", "model.hidden_size=32", "dataset=beauty", "loss=bce"])
    assert c.train.lr == 3e-4 and c.model.hidden_size == 32 and c.data.dataset == "beauty" and c.model.loss == "bce"


def test_unknown_keys_are_rejected_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'hidden_size'"):
        build_config(overrides=["hiden_size=3"])
    with pytest.raises(ConfigError, match="unknown key 'epoch'.*Did you mean 'epochs'"):
        build_config({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="unknown section 'trian'.*Did you mean 'train'"):
        build_config({"trian": {}})
    with pytest.raises(ConfigError, match="unknown model 'sasrek'.*Did you mean 'sasrec'"):
        build_config(model="sasrek")


def test_retired_keys_load_when_they_mean_what_darec_does_now() -> None:
    # A DARec run saved before the adapter zoo: LoRA alpha 16 = 2r and dropout 0.05 is what lora:8 does now.
    old = {"model": {"name": "darec", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05}}
    assert build_config(old).model == build_config(model="darec").model
    with pytest.raises(ConfigError, match="model.lora_alpha: no longer a setting .*2 x the rank.*lora_alpha=32"):
        build_config({"model": {**old["model"], "lora_alpha": 32}})
    with pytest.raises(ConfigError, match="lora_alpha: no longer a setting"):
        build_config(overrides=["model=darec", "lora_r=4", "lora_alpha=16"])  # 2r is 8 here
    with pytest.raises(ConfigError, match="unknown key 'lora_alpha'"):
        build_config({"model": {"name": "sasrec", "lora_alpha": 16}})  # retired from DARec only


def test_types_are_checked() -> None:
    with pytest.raises(ConfigError, match="expected an integer"):
        build_config(overrides=["epochs=ten"])
    with pytest.raises(ConfigError, match="not one of 'ce', 'bce'"):
        build_config(overrides=["loss=mse"])
    with pytest.raises(ConfigError, match="expected true or false"):
        build_config(overrides=["deterministic=maybe"])


def test_model_section_follows_model_name_and_roundtrips(tmp_path: Path) -> None:
    c = build_config(overrides=["model=bert4rec", "mask_prob=0.3"])
    assert c.model.name == "bert4rec" and c.model.mask_prob == 0.3
    with pytest.raises(ConfigError, match="unknown key"):
        build_config(overrides=["model=gru4rec", "mask_prob=0.3"])
    import yaml

    assert build_config(yaml.safe_load(c.to_yaml())) == c


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")))
def test_example_configs_parse(path: Path) -> None:
    from darec.config import load_yaml

    config = build_config(load_yaml(path), source=str(path))
    assert config.model.name in path.name
