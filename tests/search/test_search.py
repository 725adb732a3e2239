from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from darec.config import ConfigError
from darec.search import Search, layer_groups, plan_from_choices, read_plan

SEARCH = ["--dataset", "synthetic-tiny", "--set", "backbone=tiny", "--set", "item_tokens=4", "--set", "max_len=10",
          "--trials", "5", "--budget", "6", "--rungs", "2", "--sampler", "tpe"]


def test_a_search_writes_its_best_plan_and_pictures(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from darec.cli import app

    out = tmp_path / "search"
    result = CliRunner().invoke(app, ["search", str(out), *SEARCH])
    assert result.exit_code == 0, result.output
    best = yaml.safe_load((out / "best_plan.yaml").read_text())
    assert len(best["plan"]) == 2 and f"{best['valid_ndcg@10']:.4f}" in result.output
    assert (out / "progress.png").stat().st_size > 0 and (out / "plans.png").stat().st_size > 0
    # Resumed with nothing left to do, it runs no trial (a --trials default must not raise the total).
    result = CliRunner().invoke(app, ["search", str(out), "--resume"])
    assert result.exit_code == 0 and "0 trial(s) to run of 5" in " ".join(result.output.split()), result.output


def test_layer_groups_cover_every_layer_once() -> None:
    assert [list(g) for g in layer_groups(7, 3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert len(layer_groups(30, 0)) == 6 and len(layer_groups(4, 0)) == 4 and len(layer_groups(2, 5)) == 2
    assert plan_from_choices(["a", "b", "c"], layer_groups(7, 3)) == ["a"] * 3 + ["b"] * 2 + ["c"] * 2


def test_plan_files(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("[lora:8, none]\n")
    (tmp_path / "best.yaml").write_text(yaml.safe_dump({"plan": ["ia3", "houlsby:8"], "valid_ndcg@10": 0.1}))
    (tmp_path / "bad.yaml").write_text("plan: 3\n")
    assert read_plan(tmp_path / "list.yaml") == ["lora:8", "none"]
    assert read_plan(tmp_path / "best.yaml") == ["ia3", "houlsby:8"]
    with pytest.raises(ConfigError, match="bad.yaml: expected a list"):
        read_plan(tmp_path / "bad.yaml")


def test_parameter_cap_skips_large_plans(tmp_path: Path) -> None:
    from darec.search import SearchConfig
    from darec.train import build_config

    run = build_config(overrides=["model=darec", "backbone=tiny", "item_tokens=4", "max_len=10", "dataset=synthetic-tiny"])
    search = Search(run, SearchConfig(trials=3, budget=4, rungs=1, sampler="tpe", max_trainable=1), tmp_path / "s")
    summary = search.run()
    assert summary["trials"] == 3 and summary["complete"] == 0 and not (tmp_path / "s" / "best_plan.yaml").exists()


def test_a_plan_seen_before_is_not_trained_again(tmp_path: Path) -> None:
    from darec.search import SearchConfig
    from darec.train import build_config

    run = build_config(overrides=["model=darec", "backbone=tiny", "item_tokens=4", "max_len=10", "dataset=synthetic-tiny"])
    # One group and one choice: every trial proposes the same plan.
    search = Search(run, SearchConfig(trials=3, budget=4, rungs=1, sampler="tpe", pruner="none", groups=1, choices=["lora:4"]),
                    tmp_path / "s")
    summary = search.run()
    assert summary["trials"] == 3 and summary["complete"] == 3
    assert [p.name for p in (tmp_path / "s" / "trials").iterdir()] == ["trial-0"]


def test_trials_can_score_a_sample_of_validation_users(tmp_path: Path) -> None:
    from darec.search import SearchConfig
    from darec.train import build_config
    from darec.train.run import load_run

    run = build_config(overrides=["model=darec", "backbone=tiny", "item_tokens=4", "max_len=10", "dataset=synthetic-tiny"])
    summary = Search(run, SearchConfig(trials=1, budget=4, rungs=1, pruner="none", groups=1, choices=["lora:4"], valid_users=7),
                     tmp_path / "s").run()
    assert summary["complete"] == 1
    assert load_run(tmp_path / "s" / "trials" / "trial-0").config.train.valid_users == 7
    # Left at 0, the search keeps the run config's own sample.
    run.train.valid_users = 5
    Search(run, SearchConfig(trials=1, budget=4, rungs=1, pruner="none", groups=1, choices=["lora:4"]), tmp_path / "t").run()
    assert load_run(tmp_path / "t" / "trials" / "trial-0").config.train.valid_users == 5


def test_start_plans_are_tried_first_and_once(tmp_path: Path) -> None:
    from darec.search import SearchConfig
    from darec.train import build_config

    run = build_config(overrides=["model=darec", "backbone=tiny", "item_tokens=4", "max_len=10", "dataset=synthetic-tiny"])
    settings = SearchConfig(trials=2, budget=4, rungs=1, sampler="tpe", pruner="none", choices=["none", "lora:4", "ia3"],
                            start_with=["ia3", "none"])
    Search(run, settings, tmp_path / "s").run()
    assert Search.resume(tmp_path / "s").config.start_with == ["ia3", "none"]
    # What a resume may change: the total raised (never lowered), the time limit replaced, start plans added once.
    assert Search.resume(tmp_path / "s", trials=1).config.trials == 2
    changed = Search.resume(tmp_path / "s", trials=5, minutes=7.5, start_with=["none", "lora:4"]).config
    assert (changed.trials, changed.minutes, changed.start_with) == (5, 7.5, ["ia3", "none", "lora:4"])
    assert changed.choices == settings.choices and changed.budget == settings.budget
    resumed = Search.resume(tmp_path / "s", trials=3)
    resumed.run(resume=True)  # the start plans are in the study already: not queued again
    import optuna

    trials = optuna.load_study(study_name="darec-plan", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}").trials
    assert [t.user_attrs["plan"] for t in trials[:2]] == [["ia3", "ia3"], ["none", "none"]]
    assert len(trials) == 3 and ["fixed_params" in t.system_attrs for t in trials] == [True, True, False]
    settings.start_with = ["lora:8"]
    with pytest.raises(ConfigError, match=r"search.start_with\[0\]: 'lora:8' is not one of search.choices"):
        Search(run, settings, tmp_path / "t").run()


def test_a_trial_left_running_by_a_killed_search_is_failed_and_its_plan_tried_again(tmp_path: Path) -> None:
    import optuna

    from darec.search import SearchConfig
    from darec.train import build_config

    run = build_config(overrides=["model=darec", "backbone=tiny", "item_tokens=4", "max_len=10", "dataset=synthetic-tiny"])
    settings = SearchConfig(trials=1, budget=4, rungs=1, sampler="tpe", pruner="none", groups=1, choices=["none", "lora:4"])
    search = Search(run, settings, tmp_path / "s")
    search.run()
    study = search._study(create=False)
    left = study.ask({"group_0": optuna.distributions.CategoricalDistribution(["none", "lora:4"])})  # as a kill leaves it
    resumed = Search.resume(tmp_path / "s", trials=2)
    resumed.run(resume=True)
    trials = optuna.load_study(study_name="darec-plan", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}").trials
    assert trials[left.number].state == optuna.trial.TrialState.FAIL
    assert trials[-1].state == optuna.trial.TrialState.COMPLETE and trials[-1].params == left.params  # the same plan, again


MIXREC = ["model=mixrec", "backbone=tiny", "item_tokens=4", "max_len=10", "dataset=synthetic-tiny"]


def test_the_experts_space_builds_mixtures_and_takes_start_plans() -> None:
    from darec.search import SearchConfig
    from darec.search.space import ExpertSpace

    space = ExpertSpace(SearchConfig(experts=["lora:4", "ia3", "houlsby:8"], top_k=[1, 2]))
    assert space.entry([], 2) == "none" and space.entry(["ia3"], 2) == "ia3"
    assert space.entry(["lora:4", "ia3", "houlsby:8"], 2) == "moe[lora:4, ia3, houlsby:8]:k=2"
    assert space.params("moe[lora:4, houlsby:8]:k=1", 3, "w") == {
        "group_3_lora:4": True, "group_3_ia3": False, "group_3_houlsby:8": True, "group_3_k": 1}
    assert space.params("none", 0, "w")["group_0_k"] == 1 and not any(
        v for k, v in space.params("none", 0, "w").items() if k != "group_0_k")
    for outside in ("moe[lora:8, ia3]", "moe[lora:4, ia3, houlsby:8]:k=3", "moe[lora:4, ia3]:routing=sequence", "prefix:3"):
        with pytest.raises(ConfigError, match="not in the search space"):
            space.params(outside, 0, "search.start_with[0]")
    with pytest.raises(ConfigError, match=r"search.experts\[0\] .*cannot be an expert"):
        ExpertSpace(SearchConfig(experts=["prefix:3"]))


def test_a_mixrec_search_is_killed_and_resumes(tmp_path: Path) -> None:
    import optuna

    from darec.search import SearchConfig
    from darec.train import build_config

    run = build_config(overrides=MIXREC)
    settings = SearchConfig(trials=2, budget=4, rungs=2, sampler="tpe", groups=2, experts=["lora:4", "ia3", "parallel:8"],
                            start_with=["moe[lora:4, ia3]:k=1"], max_trainable=10**6)
    search = Search(run, settings, tmp_path / "s")
    summary = search.run()
    assert summary["trials"] == 2
    storage = f"sqlite:///{tmp_path / 's' / 'study.db'}"
    first = optuna.load_study(study_name="darec-plan", storage=storage).trials[0]
    assert first.user_attrs["plan"] == ["moe[lora:4, ia3]:k=1"] * 2
    assert all(entry == "none" or entry.startswith("moe[") or entry in settings.experts
               for t in optuna.load_study(study_name="darec-plan", storage=storage).trials for entry in t.user_attrs["plan"])
    # A kill leaves a trial running; the resumed search fails it, proposes its plan again and runs on.
    study = search._study(create=False)
    left = study.ask({"group_0_lora:4": optuna.distributions.CategoricalDistribution([False, True])})
    resumed = Search.resume(tmp_path / "s", trials=3)
    summary = resumed.run(resume=True)
    trials = optuna.load_study(study_name="darec-plan", storage=storage).trials
    assert trials[left.number].state == optuna.trial.TrialState.FAIL and summary["trials"] == 3
    assert trials[-1].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert trials[-1].params["group_0_lora:4"] == left.params["group_0_lora:4"]
    best = yaml.safe_load((tmp_path / "s" / "best_plan.yaml").read_text())
    assert len(best["plan"]) == 2 and (tmp_path / "s" / "plans.png").exists()
