"""Batched evaluation: full ranking over the catalogue, or the target against sampled negatives."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from rich.console import Console

from darec.data.batching import pad_right, trim
from darec.data.dataset import SequenceDataset
from darec.distributed import Group, gather
from darec.errors import DarecError, InputError
from darec.models import SequentialRecommender
from darec.models.catalogue import CatalogueScores, mask_items
from darec.train.config import RunConfig
from darec.train.metrics import KS, rank_metrics, target_ranks
from darec.train.run import RunDir

Protocol = Literal["full", "sampled"]


class NonFiniteScores(DarecError, ValueError):
    """A model scored items NaN or +infinite: it has diverged, and its metrics mean nothing."""


def result_row(dataset: str, model: str, split: str, protocol: Protocol, exclude_history: bool, sampled_negatives: int,
               per_user: dict[str, np.ndarray] | None = None, **extra: object) -> dict[str, object]:
    """One row of results, as runs store them and the CLI prints them: the protocol labelled
    ``full`` or ``sampled<N>`` (which always excludes the history), ``extra`` fields (a
    variant, a group), and each metric's mean over the users of ``per_user``."""
    return {"dataset": dataset, "model": model, **extra, "protocol": protocol if protocol == "full" else f"sampled{sampled_negatives}",
            "split": split, "exclude_history": exclude_history or protocol == "sampled",
            **{name: float(values.mean()) for name, values in (per_user or {}).items()}}


def sample_negatives(histories: Sequence[np.ndarray], targets: np.ndarray, n_items: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct items per user, uniformly from those the user never interacted with."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(targets), n), dtype=np.int64)
    for row, (history, target) in enumerate(zip(histories, targets)):
        seen = set(history.tolist()) | {int(target)}
        if n_items - len(seen) < n:
            raise InputError(f"cannot sample {n} negatives: only {n_items - len(seen)} unseen items for user {row}")
        picked: list[int] = []
        while len(picked) < n:
            draw = rng.integers(1, n_items + 1, size=2 * n)
            for item in dict.fromkeys(draw.tolist()):
                if item not in seen and len(picked) < n:
                    picked.append(item)
                    seen.add(item)
        out[row] = picked
    return out


Setting = tuple[Protocol, bool, "np.ndarray | None"]  # protocol, exclude_history, negatives (sampled only)
OnBatch = Callable[[int, int], None]  # (users scored so far, users in all)


def evaluate(
    model: SequentialRecommender,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    protocol: Protocol = "full",
    exclude_history: bool = False,
    negatives: np.ndarray | None = None,
    batch_size: int = 0,
    ks: tuple[int, ...] = KS,
    per_user: bool = False,
    chunk: int = 0,
    group: Group = Group(),
    progress: OnBatch | None = None,
) -> dict[str, float] | dict[str, np.ndarray]:
    """Mean HR/NDCG/MRR@K over users (or per-user values with ``per_user``).

    ``full``: the target is ranked against every item; ``exclude_history`` removes the
    user's earlier items from the candidates. ``sampled``: the target is ranked against
    ``negatives`` (one row per user, e.g. from :func:`sample_negatives`).
    """
    return evaluate_many(model, histories, targets, [(protocol, exclude_history, negatives)], batch_size, ks, per_user, chunk,
                         group, progress)[0]


def _check_finite(scores: Tensor, batch: int) -> None:
    top = scores.amax(1)  # NaN wins a max, so one pass finds NaN and +inf alike
    broken = top.isnan() | (top == float("inf"))
    if broken.any():
        raise NonFiniteScores(f"the model scores items NaN or infinite for {int(broken.sum())} of {batch} users in a "
                              "batch: it has diverged (too high a learning rate, or a temperature near 0?)")


def full_ranks(catalogue: CatalogueScores, targets: Tensor, seen: Tensor | None, kept: bool = True) -> dict[bool, Tensor]:
    """0-based rank of each target among all items with the user's history kept (False,
    with ``kept``) and excluded (True, where ``seen`` holds it, right-padded), from one walk
    over the catalogue.

    The rank counts the other items scored at least as high as the target, so ties are
    pessimistic, as in :func:`~darec.train.metrics.target_ranks`. A target the user has
    already seen is itself excluded under exclusion and ranks last.
    """
    target = catalogue.at(targets[:, None]).squeeze(1)
    _check_finite(target[:, None], len(targets))
    threshold = {False: target} if kept else {}
    if seen is not None:
        threshold[True] = target.masked_fill((seen == targets[:, None]).any(1), float("-inf"))
    ranks = {exclude: torch.zeros_like(targets) for exclude in threshold}
    rows = torch.arange(len(targets), device=targets.device)
    for start, scores in catalogue.chunks():
        _check_finite(scores, len(targets))
        own = (targets >= start) & (targets < start + scores.size(1))
        for exclude in sorted(ranks):  # kept first: exclusion writes -inf into the chunk
            if exclude:
                mask_items(scores, start, seen)
            t = threshold[exclude]
            ranks[exclude] += (scores >= t[:, None]).sum(1)
            # The target's own column is not another item (its value here may differ from
            # ``target`` in the last bit: the two come from different matmul shapes).
            ranks[exclude][own] -= (scores[rows[own], targets[own] - start] >= t[own]).long()
    return ranks


@torch.no_grad()
def evaluate_many(
    model: SequentialRecommender,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    settings: Sequence[Setting],
    batch_size: int = 0,
    ks: tuple[int, ...] = KS,
    per_user: bool = False,
    chunk: int = 0,
    group: Group = Group(),
    progress: OnBatch | None = None,
) -> list[dict[str, float] | dict[str, np.ndarray]]:
    """:func:`evaluate` under several settings from one scoring pass (the model runs once).
    ``batch_size`` users are scored at once (0: the model's :meth:`~SequentialRecommender.eval_batch_size`).
    The catalogue is scored ``chunk`` items at a time (0: automatic, see :func:`darec.models.catalogue.chunk_size`).
    In a group of processes each scores its share of the users, and every process gets all users' results.
    ``progress(done, total)`` is called after each batch with this process's users scored so far."""
    for protocol, _, negatives in settings:
        if protocol == "sampled" and negatives is None:
            raise ValueError("the sampled protocol needs negatives")
    if group.world > 1:
        return _sharded(model, histories, targets, settings, batch_size, ks, per_user, chunk, group, progress)
    was_training = model.training
    model.eval()
    device = next(iter(model.state_dict().values())).device
    batch_size = batch_size or model.eval_batch_size(device)
    items, lengths = pad_right(histories, model.max_len)
    # Users in order of history length, so each batch is cut to its own longest history.
    order = np.argsort(lengths, kind="stable")
    keeping = any(protocol == "full" and not exclude for protocol, exclude, _ in settings)
    excluding = any(protocol == "full" and exclude for protocol, exclude, _ in settings)
    values: list[dict[str, list[torch.Tensor]]] = [{} for _ in settings]
    for start in range(0, len(targets), batch_size):
        rows = order[start : start + batch_size]
        batch_targets = torch.from_numpy(targets[rows]).to(device)
        catalogue = CatalogueScores(model, trim(torch.from_numpy(items[rows])).to(device),
                                    torch.from_numpy(lengths[rows]).to(device), chunk)
        seen = None
        if excluding:  # whole histories, not only the last max_len
            whole = [histories[row] for row in rows]
            seen = torch.from_numpy(pad_right(whole, max(map(len, whole)))[0]).to(device)
        full = full_ranks(catalogue, batch_targets, seen, keeping) if keeping or excluding else {}
        for (protocol, exclude_history, negatives), out in zip(settings, values):
            if protocol == "full":
                ranks = full[exclude_history]
            else:
                candidates = torch.cat([batch_targets[:, None], torch.from_numpy(negatives[rows]).to(device)], dim=1)
                scores = catalogue.at(candidates)
                _check_finite(scores, len(rows))
                ranks = target_ranks(scores, torch.zeros_like(batch_targets))
            for name, value in rank_metrics(ranks, ks).items():
                out.setdefault(name, []).append(value.cpu())
        if progress is not None:
            progress(start + len(rows), len(targets))
    model.train(was_training)
    inverse = np.argsort(order, kind="stable")
    results = []
    for out in values:
        joined = {name: torch.cat(parts).numpy()[inverse] for name, parts in out.items()}
        results.append(joined if per_user else {name: float(v.mean()) for name, v in joined.items()})
    return results


def _sharded(model: SequentialRecommender, histories: Sequence[np.ndarray], targets: np.ndarray, settings: Sequence[Setting],
             batch_size: int, ks: tuple[int, ...], per_user: bool, chunk: int, group: Group,
             progress: OnBatch | None) -> list[dict[str, Any]]:
    mine = np.arange(len(targets))[group.shard(len(targets))]
    local = evaluate_many(model, [histories[i] for i in mine], targets[mine],
                          [(p, e, None if n is None else n[mine]) for p, e, n in settings], batch_size, ks, per_user=True,
                          chunk=chunk, progress=progress)
    parts = gather(group, (mine, local))
    results = []
    for s in range(len(settings)):
        joined = {name: np.zeros(len(targets)) for name in local[s]}
        for rows, out in parts:
            for name, values in out[s].items():
                joined[name][rows] = values
        results.append(joined if per_user else {name: float(v.mean()) for name, v in joined.items()})
    return results


def result_rows(config: RunConfig, dataset: SequenceDataset, model: SequentialRecommender, variant: str = "",
                console: Console | None = None, run_dir: Path | None = None, group: Group = Group(),
                progress: Callable[[str], OnBatch] | None = None) -> list[dict[str, Any]]:
    """Validation and test metrics of ``model`` as flat rows: full ranking with the user's
    history kept and excluded (papers differ; every row says which), and the sampled protocol.
    With ``run_dir``, each user's metrics on each split (full ranking, history as trained) are saved
    there, for paired comparisons on test and, for ablations, on validation, which would otherwise
    score every validation user again (of several processes, give it to the one that writes).
    ``progress(split)`` gives each split's progress callback (see :func:`evaluate_many`).

    The sampled protocol is left out, with a message, when the catalogue is too small to
    draw the negatives from items a user has not seen.
    """
    t = config.train
    rows = []
    for split in ("valid", "test"):
        histories, targets = dataset.split(split)
        settings = [("full", False), ("full", True)]
        try:
            negatives = sample_negatives(histories, targets, dataset.n_items, t.sampled_negatives, t.seed)
            # Negatives are drawn from unseen items, so the history is excluded by construction.
            settings.append(("sampled", True))
        except InputError as exc:
            negatives = None
            if console is not None:
                console.log(f"[yellow]{split}: sampled protocol not run: {exc}")
        scored = evaluate_many(model, histories, targets, [(p, exclude, negatives) for p, exclude in settings],
                               t.eval_batch_size, per_user=True, chunk=t.eval_chunk, group=group,
                               progress=progress(split) if progress is not None else None)
        for (protocol, exclude), per_user in zip(settings, scored):
            rows.append(result_row(dataset.name, config.model.name, split, protocol, exclude, t.sampled_negatives, per_user,
                                   variant=variant))
            if run_dir is not None and protocol == "full" and exclude == t.exclude_history:
                RunDir(run_dir).write_per_user(split, per_user)  # for paired comparisons between runs (darec compare)
    return rows
