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
    # A DARec run saved before the adapter zoo: LoRA alpha 16 = 2r is what lora:8 does now; its dropout (0.05, or
    # none) acts in training only, so the run still evaluates as it did.
    old = {"model": {"name": "darec", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05}}
    assert build_config(old).model == build_config(model="darec").model
    with pytest.raises(ConfigError, match="model.lora_alpha: no longer a setting .*2 x the rank.*lora_alpha=32"):
        build_config({"model": {**old["model"], "lora_alpha": 32}})
    with pytest.raises(ConfigError, match="lora_alpha: no longer a setting"):
        build_config(overrides=["model=darec", "lora_r=4", "lora_alpha=16"])  # 2r is 8 here
    with pytest.raises(ConfigError, match=r"lora_dropout: no longer a setting \(.*lora:8:dropout=0.05\)"):
        build_config({"model": {**old["model"], "lora_dropout": 0.2}})
    with pytest.raises(ConfigError, match="unknown key 'lora_alpha'"):
        build_config({"model": {"name": "sasrec", "lora_alpha": 16}})  # retired from DARec only


def test_types_are_checked() -> None:
    with pytest.raises(ConfigError, match="expected an integer"):
        build_config(overrides=["epochs=ten"])
    with pytest.raises(ConfigError, match="not one of 'ce', 'bce'"):
        build_config(overrides=["loss=mse"])
    with pytest.raises(ConfigError, match="expected true or false"):
        build_config(overrides=["deterministic=maybe"])
    # YAML reads a bare on/off as a boolean; a choice of on/off takes it as written.
    assert build_config(overrides=["compile=on"]).train.compile == "on"
    assert build_config(overrides=["compile=off"]).train.compile == "off"
    assert build_config(overrides=["shard=off"]).train.shard == "off"  # a choice with off but no on
    with pytest.raises(ConfigError, match="True is not one of 'off', 'layers'"):
        build_config(overrides=["shard=on"])


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


@pytest.mark.parametrize("override,message", [
    ("lr=nan", r"train.lr: must be a finite number, got nan"),
    ("lr=.inf", r"train.lr: must be a finite number, got inf"),
    ("batch_size=0", r"train.batch_size: must be >= 1, got 0"),
    ("batch_size=-4", r"train.batch_size: must be >= 1, got -4"),
    ("epochs=0", r"train.epochs: must be >= 1"),
    ("eval_every=0", r"train.eval_every: must be >= 1"),
    ("threads=-2", r"train.threads: must be >= 0"),
    ("max_len=-3", r"data.max_len: must be >= 1"),
    ("dropout=1.5", r"model.dropout: must be < 1"),
    ("n_heads=3", r"n_heads \(3\) must divide hidden_size \(64\)"),
    ("device=gpu0", r"device 'gpu0' is not a device"),
    ("warmup_ratio=1", r"train.warmup_ratio: must be < 1"),
])
def test_values_that_cannot_work_are_refused_at_the_door_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(overrides=[override])


@pytest.mark.parametrize("override,message", [
    ("keep_layers=-1", r"model.keep_layers: must be >= 0"),
    ("item_tokens=-1", r"model.item_tokens: must be >= 1"),
    ("item_tokens=0", r"model.item_tokens: must be >= 1"),
    ("temperature=0", r"model.temperature: must be > 0"),
    ("lambda_cf=nan", r"model.lambda_cf: must be a finite number"),
    ("cf_hidden=7", r"cf_hidden \(7\) must be a multiple"),
])
def test_darec_values_that_cannot_work_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(overrides=[override], model="darec")


def test_yaml_with_a_key_twice_or_nothing_in_it_is_refused(tmp_path: Path) -> None:
    from darec.config import load_yaml

    (tmp_path / "twice.yaml").write_text("train:\n  lr: 0.1\n  lr: 0.001\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: not valid YAML: .*key 'lr' appears twice"):
        load_yaml(tmp_path / "twice.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(ConfigError, match=r"empty.yaml: empty"):
        load_yaml(tmp_path / "empty.yaml")


def test_a_device_this_machine_lacks_is_refused_when_the_run_starts() -> None:
    import torch

    from darec.device import resolve_device

    if torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ConfigError, match="has no CUDA devices"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"
