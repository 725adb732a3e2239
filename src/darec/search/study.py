"""Bayesian optimisation of the layer-wise adapter plan (optuna).

Each trial trains the model with one plan for ``budget`` steps, validating ``rungs``
times; the objective is the best validation NDCG@10, and a pruner stops weak trials at
any rung. The study lives in SQLite inside the search directory, so a killed search
resumes: trials that were running when it died are marked failed and queued again.

    SEARCH_DIR/
      search.yaml        the run config and the search config
      study.db           the optuna study
      trials/trial-N/    one run directory per trial
      best_plan.yaml     the best plan so far (``darec train --plan`` takes it)
      progress.png       best-so-far validation NDCG@10 by trial
      plans.png          the adapter of every layer in every trial
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape

from darec.config import ConfigError, from_dict, load_yaml, to_dict
from darec.io import atomic_write_text
from darec.models.base import trainable_parameters
from darec.models.llm.adapters import describe_plan
from darec.models.llm.backbone import layer_count
from darec.search.plots import plot_plans, plot_progress
from darec.search.space import SPACES, SearchConfig, layer_groups, plan_from_choices
from darec.train.config import RunConfig, build_config

STUDY, SETTINGS, BEST_PLAN = "study.db", "search.yaml", "best_plan.yaml"


def _sampler(config: SearchConfig, finished: int = 0):
    """The sampler for the trial after ``finished`` ones. Seeded by both, and made anew for
    every trial, so its proposals depend only on the seed and the study's history: a search
    killed and resumed proposes the same plans as one that ran through."""
    import optuna

    seed = config.seed + 1000 * finished
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(5, max(1, config.trials // 3)))
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise ConfigError(f"search.sampler: {config.sampler!r} is not one of 'gp', 'tpe'")


def _pruner(config: SearchConfig):
    import optuna

    if config.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3)
    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"search.pruner: {config.pruner!r} is not one of 'halving', 'median', 'none'")


class Search:
    """A plan search in ``out``: ``Search(run, search, out).run()``, or ``Search.resume(out).run()``."""

    def __init__(self, run: RunConfig, search: SearchConfig, out: str | Path, console: Console | None = None):
        if not hasattr(run.model, "plan"):
            raise ConfigError(f"model {run.model.name!r} has no adapter plan to search (use darec, e4srec or mixrec)")
        self.run_config, self.config, self.out = run, search, Path(out)
        self.console = console or Console(stderr=True, log_path=False)
        self.space = SPACES[type(run.model).PLAN_SEARCH](search)
        self.n_layers = layer_count(run.model.backbone, run.model.keep_layers or None)
        self.groups = layer_groups(self.n_layers, search.groups)

    @classmethod
    def resume(cls, out: str | Path, console: Console | None = None, *, trials: int | None = None,
               minutes: float | None = None, start_with: list[str] | tuple[str, ...] = ()) -> Search:
        """The search begun in ``out``, with its saved settings but for what a resume may change:
        ``trials`` raises the total to run on to (never lowers it: trials run are not undone),
        ``minutes`` replaces the time limit (0 = none), ``start_with`` adds plans to try first.
        Anything else (the space, the budget, the run) stays as begun, so trials stay comparable."""
        path = Path(out) / SETTINGS
        if not path.exists():
            raise FileNotFoundError(f"{out}: nothing to resume (no {SETTINGS})")
        values = load_yaml(path)
        run = build_config(values["run"], source=str(path))
        search = from_dict(SearchConfig, values["search"], f"{path}: search")
        search.trials = max(search.trials, trials or 0)
        if minutes is not None:
            search.minutes = minutes
        search.start_with = [*search.start_with, *(entry for entry in start_with if entry not in search.start_with)]
        return cls(run, search, out, console)

    def _study(self, create: bool, finished: int = 0):
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        storage = f"sqlite:///{(self.out / STUDY).resolve()}"
        if create:
            if (self.out / STUDY).exists():
                raise FileExistsError(f"{self.out} already holds a search: resume it with --resume or pick another directory")
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / SETTINGS, yaml.safe_dump(
                {"run": self.run_config.to_dict(), "search": to_dict(self.config)}, sort_keys=False))
        return optuna.create_study(study_name="darec-plan", storage=storage, direction="maximize",
                                   sampler=_sampler(self.config, finished), pruner=_pruner(self.config), load_if_exists=not create)

    def run(self, resume: bool = False) -> dict[str, Any]:
        import optuna

        study = self._study(create=not resume)
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            # Left running by a killed search: fail it and try the same plan again (optuna's heartbeat
            # and RetryFailedTrialCallback would do the same, but only once a grace period has passed).
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params)
            shutil.rmtree(self.out / "trials" / f"trial-{trial.number}", ignore_errors=True)
        self._enqueue_start_plans(study)
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        finished = len(study.get_trials(deepcopy=False, states=states))
        self.console.log(f"plan search: {self.n_layers} layers in {len(self.groups)} groups, {self.space.describe()}; "
                         f"{max(0, self.config.trials - finished)} trial(s) to run of {self.config.trials}")
        deadline = time.monotonic() + 60 * self.config.minutes if self.config.minutes else None
        while finished < self.config.trials and (deadline is None or time.monotonic() < deadline):
            study = self._study(create=False, finished=finished)  # a sampler seeded for this trial (see _sampler)
            study.optimize(self._objective, n_trials=1, callbacks=[lambda s, t: self._report(s)])
            finished = len(study.get_trials(deepcopy=False, states=states))
        return self._report(study)

    def _enqueue_start_plans(self, study) -> None:
        """Queue each ``start_with`` choice as a uniform plan, unless the study already holds it (a resumed search)."""
        seen = [t.params or t.system_attrs.get("fixed_params") for t in study.get_trials(deepcopy=False)]
        for i, entry in enumerate(self.config.start_with):
            params = {k: v for g in range(len(self.groups)) for k, v in self.space.params(entry, g, f"search.start_with[{i}]").items()}
            if params not in seen:
                study.enqueue_trial(params)
                seen.append(params)

    def _objective(self, trial) -> float:
        import optuna
        from darec.train import Trainer

        plan = plan_from_choices([self.space.suggest(trial, g) for g in range(len(self.groups))], self.groups)
        trial.set_user_attr("plan", plan)
        # Samplers re-propose plans they have seen (the GP sampler does, near its optimum), and in the experts
        # space several proposals make one plan (k beyond the experts held): reuse, do not retrain.
        for past in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                   optuna.trial.TrialState.PRUNED)):
            if past.user_attrs.get("plan") == plan:
                trial.set_user_attr("same_as", past.number)
                self.console.log(f"trial {trial.number}: {escape(describe_plan(plan))}, as trial {past.number}: not trained again")
                if past.state == optuna.trial.TrialState.PRUNED:
                    raise optuna.TrialPruned(f"the plan of pruned trial {past.number}")
                return float(past.value)
        steps = max(1, self.config.budget // self.config.rungs)
        run = build_config(self.run_config.to_dict(), [
            f"train.epochs={self.config.rungs}", f"train.steps_per_epoch={steps}", "train.eval_every=1", "train.patience=0",
            # Only when set: a run config's own valid_users otherwise carries into the trials.
            *([f"train.valid_users={self.config.valid_users}"] if self.config.valid_users else []),
        ])
        run.model.plan = plan
        trainer = Trainer(run, self.out / "trials" / f"trial-{trial.number}", console=self.console, progress=False)
        trainable, _ = trainable_parameters(trainer.model)
        trial.set_user_attr("trainable_parameters", trainable)
        self.console.log(f"trial {trial.number}: {escape(describe_plan(plan))} ({trainable:,} trainable)")
        if self.config.max_trainable and trainable > self.config.max_trainable:
            raise optuna.TrialPruned(f"{trainable:,} trainable parameters, over the cap of {self.config.max_trainable:,}")

        def report(epoch: int) -> None:
            trial.report(trainer.state["history"][-1]["valid"]["ndcg@10"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        trainer.fit(on_epoch_end=report, final_evaluation=False)
        return float(trainer.state["best"])

    def _report(self, study) -> dict[str, Any]:
        """Write the best plan and the pictures; return a summary."""
        import optuna

        trials = [{"number": t.number, "state": t.state.name.lower(), "plan": t.user_attrs.get("plan"),
                   "value": t.value if t.state == optuna.trial.TrialState.COMPLETE else
                   (max(t.intermediate_values.values()) if t.intermediate_values else None),
                   "trainable_parameters": t.user_attrs.get("trainable_parameters")}
                  for t in study.get_trials(deepcopy=False)]
        complete = [t for t in trials if t["state"] == "complete"]
        summary: dict[str, Any] = {"trials": len([t for t in trials if t["state"] in ("complete", "pruned")]),
                                   "complete": len(complete)}
        if complete:
            best = max(complete, key=lambda t: t["value"])
            summary.update(best_trial=best["number"], best_value=best["value"], plan=best["plan"],
                           trainable_parameters=best["trainable_parameters"])
            atomic_write_text(self.out / BEST_PLAN, yaml.safe_dump(
                {"plan": best["plan"], "valid_ndcg@10": best["value"], "trial": best["number"],
                 "trainable_parameters": best["trainable_parameters"]}, sort_keys=False))
        plot_progress(trials, self.out / "progress.png")
        plans = [(t["number"], t["plan"]) for t in trials if t["plan"]]
        plot_plans(plans, list(dict.fromkeys(entry for _, plan in plans for entry in plan)), self.out / "plans.png")
        return summary


def read_plan(path: str | Path) -> list[str]:
    """A plan from a file: a YAML list, or a mapping with a ``plan`` list (as best_plan.yaml)."""
    values = yaml.safe_load(Path(path).read_text())
    plan = values.get("plan") if isinstance(values, dict) else values
    if not isinstance(plan, list) or not all(isinstance(e, str) for e in plan):
        raise ConfigError(f"{path}: expected a list of adapter entries (or a mapping with one under 'plan')")
    return plan
