"""Is one run better than another on the same users? A paired comparison of per-user metrics.

Two runs of one configuration that differ only in their seed or machine can differ in test
NDCG@10 by more than many published gains (ml-100k has 943 test users). Comparing the runs
user by user removes the users' own spread: a paired bootstrap gives a confidence interval
of the difference of means, and a paired t-test its p-value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import stats

from darec.train.checkpoint import load_tensors, save_tensors
from darec.train.run import load_run, load_run_dataset, read_config

PER_USER = "per_user_test.safetensors"  # in a run directory: each test user's metrics, full ranking as trained


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


def save_per_user(run_dir: Path, metrics: dict[str, np.ndarray]) -> None:
    save_tensors(Path(run_dir) / PER_USER, {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in metrics.items()})


def per_user_metrics(run_dir: Path) -> dict[str, np.ndarray]:
    """Each test user's metrics of a run (full ranking, history as trained): saved by the run
    when it finished, else computed from its best weights."""
    path = Path(run_dir) / PER_USER
    if path.exists():
        return {k: v.numpy() for k, v in load_tensors(path).items()}
    from darec.train.evaluate import evaluate

    run = load_run(run_dir)
    histories, targets = load_run_dataset(run_dir, run.config).split("test")
    t = run.config.train
    return evaluate(run.model, histories, targets, "full", t.exclude_history, batch_size=t.eval_batch_size, per_user=True)


def compare_runs(run_a: Path, run_b: Path, metric: str = "ndcg@10", samples: int = 10_000,
                 group: str | None = None, head_share: float = 0.2) -> dict[str, float]:
    """:func:`paired_comparison` of two runs' test ``metric``; refuses runs on different users.
    ``group`` (``tail-items``, ``head-items``, ``short-users``, ``long-users``; see
    :mod:`darec.train.groups`) pairs only the test users of that group."""
    ids_a, ids_b = (Path(r) / "id_map.json" for r in (run_a, run_b))
    if ids_a.read_text() != ids_b.read_text():  # before any evaluation: a mismatch needs none
        raise ValueError(f"{run_a} and {run_b} were trained on different data (their id maps differ): nothing to pair")
    a, b = per_user_metrics(run_a), per_user_metrics(run_b)
    if metric not in a:
        raise KeyError(f"no metric {metric!r}; the runs have {', '.join(sorted(a))}")
    a, b = a[metric], b[metric]
    if group is not None:
        from darec.train.groups import user_groups

        data = load_run_dataset(run_a, read_config(run_a))
        groups = user_groups(data, *data.split("test"), head_share=head_share)
        if group not in groups:
            raise KeyError(f"no group {group!r}; the groups are {', '.join(groups)}")
        a, b = a[groups[group]], b[groups[group]]
    return paired_comparison(a, b, samples)
