"""Is one run better than another on the same users? A paired comparison of per-user metrics.

Two runs of one configuration that differ only in their seed or machine can differ in test
NDCG@10 by more than many published gains (ml-100k has 943 test users). Comparing the runs
user by user removes the users' own spread: a paired bootstrap gives a confidence interval
of the difference of means, and a paired t-test its p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from darec.errors import InputError, UnknownKey
from darec.io import DamagedFile
from darec.train.run import RunDir, load_run, load_run_dataset, per_user_as_saved, read_config

SPLITS = ("valid", "test")


def paired_comparison(a: np.ndarray, b: np.ndarray, samples: int = 10_000, confidence: float = 0.95,
                      seed: int = 0) -> dict[str, float]:
    """Mean of ``a`` and of ``b`` (one value per user, same users in the same order), the
    difference ``b - a`` with its paired-bootstrap confidence interval, and the paired t-test p-value."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a paired comparison needs one value per user in both: got {a.shape} and {b.shape}")
    diff = b - a
    rng = np.random.default_rng(seed)
    chunks = [min(1000, samples - start) for start in range(0, samples, 1000)]  # samples x users at once is large
    means = np.concatenate([diff[rng.integers(0, len(diff), (n, len(diff)))].mean(1) for n in chunks])
    tail = (1 - confidence) / 2
    p = 1.0 if not diff.any() else float(stats.ttest_rel(b, a).pvalue)
    return {"users": len(diff), "mean_a": float(a.mean()), "mean_b": float(b.mean()), "difference": float(diff.mean()),
            "ci_low": float(np.quantile(means, tail)), "ci_high": float(np.quantile(means, 1 - tail)), "p_value": p}


def per_user_metrics(run_dir: Path, split: str = "test") -> dict[str, np.ndarray]:
    """Each user's metrics on ``split`` (full ranking, history as trained) of a run's best
    weights: for test, saved by the run when it finished; else computed (and saved, if the run
    has finished, so each split of a run is evaluated once)."""
    if split not in SPLITS:
        raise InputError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    folder = RunDir(run_dir)
    finished = folder.finished()
    if folder.per_user(split).exists() and finished:  # valid only for the final weights
        try:
            return folder.read_per_user(split)
        except DamagedFile:
            pass  # a cache: computed again from the weights below, and rewritten
    from darec.train.evaluate import evaluate

    run = load_run(run_dir)
    histories, targets = load_run_dataset(run_dir, run.config).split(split)
    t = run.config.train
    metrics = evaluate(run.model, histories, targets, "full", t.exclude_history, batch_size=t.eval_batch_size, per_user=True,
                       chunk=t.eval_chunk)
    metrics = per_user_as_saved(metrics)  # so a run compared with itself gives p = 1, computed or read
    if finished:  # an unfinished run's best weights may change
        folder.write_per_user(split, metrics)
    return metrics


Runs = Path | str | Sequence[Path | str]


def compare_runs(run_a: Runs, run_b: Runs, metric: str = "ndcg@10", samples: int = 10_000,
                 group: str | None = None, head_share: float = 0.2, split: str = "test") -> dict[str, float]:
    """:func:`paired_comparison` of two runs' ``metric`` on ``split`` (test, or valid: what
    ablations are judged on); refuses runs on different users.

    Either side may be several runs of one configuration (e.g. seeds): each user's metric is
    then the mean over that side's runs, which takes training noise out of the per-user
    values; the interval is still over users, so look at the seeds' own spread too.
    ``group`` (``tail-items``, ``head-items``, ``short-users``, ``long-users``; see
    :mod:`darec.train.groups`) pairs only the users of that group."""
    runs_a, runs_b = _runs(run_a), _runs(run_b)
    first = runs_a[0]
    ids = RunDir(first).read_id_map()
    for other in [*runs_a[1:], *runs_b]:  # before any evaluation: a mismatch needs none
        if RunDir(other).read_id_map() != ids:
            raise InputError(f"{first} and {other} were trained on different data (their id maps differ): nothing to pair")
    a, b = _mean_metric(runs_a, metric, split), _mean_metric(runs_b, metric, split)
    if group is not None:
        from darec.train.groups import user_groups

        data = load_run_dataset(first, read_config(first))
        groups = user_groups(data, *data.split(split), head_share=head_share)
        if group not in groups:
            raise UnknownKey(f"no group {group!r}; the groups are {', '.join(groups)}")
        a, b = a[groups[group]], b[groups[group]]
    return {**paired_comparison(a, b, samples), "runs_a": len(runs_a), "runs_b": len(runs_b)}


def _runs(runs: Runs) -> list[Path]:
    runs = [Path(runs)] if isinstance(runs, (str, Path)) else [Path(r) for r in runs]
    if not runs:
        raise InputError("a comparison needs at least one run on each side")
    return runs


def _mean_metric(runs: list[Path], metric: str, split: str) -> np.ndarray:
    values = []
    for run in runs:
        metrics = per_user_metrics(run, split)
        if metric not in metrics:
            raise UnknownKey(f"no metric {metric!r}; the runs have {', '.join(sorted(metrics))}")
        values.append(metrics[metric].astype(np.float64))
    return np.mean(values, axis=0)
