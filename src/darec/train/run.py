"""A run directory: everything needed to resume, evaluate and serve a trained model.

::

    RUN_DIR/
      config.yaml          resolved configuration
      id_map.json          internal ids -> original user / item ids, item text
      model.safetensors    best weights (by validation NDCG@10)
      checkpoint-<E>/      last epoch: model, optimizer and RNG tensors (safetensors)
      trainer_state.json   epoch, early-stopping state, metric history; names the checkpoint
      metrics.jsonl        one line per epoch
      results.json         final rows (valid and test, full and sampled protocols)
      per_user_test.safetensors  each test user's metrics, for paired comparisons (darec compare);
      per_user_valid.safetensors and each validation user's (ablations are judged on validation)
      .lock                the pid of the process training it (held while it trains)
      STOP                 a stop request (darec stop), until the trainer has stopped

A finished run's results without its weights (:meth:`RunDir.copy_results`: config, id map,
state, metrics, results, per-user metrics; a few hundred KB) form a folder that ``darec
compare`` reads like the run's own, for keeping the evidence of a comparison where the run
folder itself is not kept.

Every file is written atomically; ``trainer_state.json`` is written last and is the
commit point of a checkpoint. It records the SHA-256 of the config, the id map, the best
weights and every file of the checkpoint, and is sealed by a checksum of its own, so a
damaged or changed file is named when it is read, never silently used. Each checkpoint
folder holds a copy of the state it was committed with, and the one before the newest is
kept, so a resume can fall back to it when the newest is damaged.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from darec.config import ConfigError, load_yaml
from darec.data.dataset import SequenceDataset
from darec.device import apply_precision, loaded_precision, resolve_device
from darec.errors import InputError, RunInUse
from darec.io import DamagedFile, atomic_write_json, copy_atomic, read_json, sha256
from darec.models import SequentialRecommender, build_model
from darec.models.base import Companions
from darec.train.checkpoint import load_model_state, load_tensors, save_tensors
from darec.train.config import RunConfig, build_config

CONFIG, ID_MAP, BEST, STATE, METRICS, RESULTS = (
    "config.yaml", "id_map.json", "model.safetensors", "trainer_state.json", "metrics.jsonl", "results.json",
)
LOCK = ".lock"
STOP = "STOP"  # a stop request (``darec stop``): the trainer ends at its next step, validated and evaluated
PER_USER = "per_user_{split}.safetensors"  # each user's metrics on a split, full ranking as trained
FIGURE = "{name}.png"  # a model's picture of its last epoch (e.g. expert_usage.png)
CHECKPOINT = re.compile(r"checkpoint-(\d+)")
# Inside a checkpoint folder, beside its copies of BEST (the epoch's weights) and STATE:
RNG, OPTIMIZER, OPTIMIZER_META, SCHEDULER = "rng.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json"
log = logging.getLogger("darec")  # warnings for the user (the CLI prints them)


def per_user_as_saved(metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-user metrics as a run saves them (float32): one computed now then compares exactly as when read back."""
    return {k: np.asarray(v, dtype=np.float32) for k, v in metrics.items()}


class RunDir:
    """The layout of one run directory and checked reads of its files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config, self.id_map, self.best, self.state, self.metrics, self.results = (
            self.path / name for name in (CONFIG, ID_MAP, BEST, STATE, METRICS, RESULTS))

    def hold(self) -> IO[str]:
        """Take the run for this process until it exits or closes the returned file (an OS lock,
        freed however the process ends): a second trainer of the same run, such as a resume
        started while the first still runs, is refused instead of mixing its writes with the
        first's."""
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK, "a+")  # noqa: SIM115 (held open: the lock lives as long as the file)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise RunInUse(f"{self.path} is being trained by another process{f' (pid {holder})' if holder else ''}: "
                           "let it finish, or stop it, before training this run") from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    @property
    def stop_request(self) -> Path:
        return self.path / STOP

    def request_stop(self) -> None:
        """Ask the run's trainer to stop at its next step: the epoch it is in ends there, is
        validated and checkpointed, and the best weights are evaluated as at a normal end."""
        if not self.state.exists():
            raise InputError(f"{self.path}: not a run directory that has begun (no {STATE})")
        if self.finished():
            raise InputError(f"{self.path}: the run has already finished")
        atomic_write_json(self.stop_request, {"requested": time.time()})

    def figure(self, name: str) -> Path:
        return self.path / FIGURE.format(name=name)

    def per_user(self, split: str) -> Path:
        return self.path / PER_USER.format(split=split)

    def write_per_user(self, split: str, metrics: dict[str, np.ndarray]) -> None:
        """Each user's metrics on ``split``, for paired comparisons between runs (``darec compare``)."""
        save_tensors(self.per_user(split), {k: torch.from_numpy(v) for k, v in per_user_as_saved(metrics).items()})

    def read_history(self) -> list[dict[str, Any]]:
        """``metrics.jsonl``: one dict an epoch (loss, seconds, learning rate, threads, validation)."""
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line]

    def read_per_user(self, split: str) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in load_tensors(self.per_user(split)).items()}

    def copy_results(self, dest: str | Path, weights: bool = False) -> RunDir:
        """Copy what a finished run's results and paired comparisons read (everything but
        checkpoints, and the best weights only with ``weights``) to ``dest``, the state last, as
        the copy's commit point."""
        if not self.finished():
            raise InputError(f"{self.path}: the run has not finished, so it has no final results to copy")
        copy = RunDir(dest)
        copy.path.mkdir(parents=True, exist_ok=True)
        sources = [self.config, self.id_map, self.metrics, self.results, *sorted(self.path.glob(PER_USER.format(split="*")))]
        for source in sources + ([self.best] if weights else []):
            if source.exists():
                copy_atomic(source, copy.path / source.name)
        copy_atomic(self.state, copy.state)
        return copy

    def checkpoint(self, epoch: int) -> Path:
        return self.path / f"checkpoint-{epoch}"

    def checkpoint_epochs(self) -> list[int]:
        """Epochs of the checkpoint folders present, newest first."""
        found = (CHECKPOINT.fullmatch(p.name) for p in self.path.iterdir() if p.is_dir()) if self.path.is_dir() else ()
        return sorted((int(m.group(1)) for m in found if m), reverse=True)

    def read_config(self, state: dict[str, Any] | None = None) -> RunConfig:
        """The run's config, checked against the checksum in ``state`` (default: the run's state)."""
        if not self.config.exists():
            if self.state.exists():
                raise DamagedFile(f"{self.config}: missing")
            raise ConfigError(f"{self.path}: not a run directory (no {CONFIG})")
        verify(self.config, (state if state is not None else self._state_or_empty()).get("config_sha256"))
        return build_config(load_yaml(self.config), source=str(self.config))

    def _state_or_empty(self) -> dict[str, Any]:
        return self.read_state() if self.state.exists() else {}

    def read_state(self, path: Path | None = None) -> dict[str, Any]:
        """``trainer_state.json`` (or the copy at ``path``), checked against its seal."""
        path = path or self.state
        state = read_json(path)
        if not isinstance(state, dict) or "epoch" not in state:
            raise DamagedFile(f"{path}: damaged (not a trainer state)")
        if "seal" in state and state["seal"] != seal(state):
            raise DamagedFile(f"{path}: damaged (its content does not match its checksum)")
        return state

    def write_state(self, state: dict[str, Any], path: Path | None = None) -> None:
        state["seal"] = seal(state)
        atomic_write_json(path or self.state, state)

    def read_id_map(self, state: dict[str, Any] | None = None) -> dict[str, Any]:
        verify(self.id_map, (state if state is not None else self._state_or_empty()).get("id_map_sha256"))
        id_map = read_json(self.id_map)
        if not isinstance(id_map, dict) or not isinstance(id_map.get("items"), list) or not isinstance(id_map.get("users"), list):
            raise DamagedFile(f"{self.id_map}: damaged (not an id map)")
        return id_map

    def finished(self) -> bool:
        return self.state.exists() and bool(self.read_state().get("finished"))

    def best_weights(self, state: dict[str, Any] | None = None) -> Path:
        """The best weights, checked against the state's checksum. When the state names
        weights that ``model.safetensors`` does not hold yet (a stop between committing a
        checkpoint and copying its weights), its checkpoint's copy serves."""
        if state is None and not self.state.exists():  # written before model.safetensors ever is
            if self.best.exists():
                raise DamagedFile(f"{self.state}: missing (a run directory with weights always has one)")
            raise FileNotFoundError(f"{self.path}: no {BEST} yet (the run has not finished a validation)")
        state = state if state is not None else self.read_state()
        expected = state.get("best_sha256")
        if expected is None and not self.best.exists():
            raise FileNotFoundError(f"{self.path}: no {BEST} yet (the run has not finished a validation)")
        if self.best.exists() and (expected is None or sha256(self.best) == expected):
            return self.best
        problem = "missing" if not self.best.exists() else f"does not match its checksum in {STATE}"
        staged = self.checkpoint(state.get("best_epoch", -1)) / BEST
        if staged.exists() and sha256(staged) == expected:
            log.warning(f"{self.best} {problem}; using {staged}, which holds the weights it should "
                        "(`darec train --resume` puts them back)")
            return staged
        trained_without_checkpoint = state.get("checkpoint") is None and state.get("epoch")
        hint = ("its checkpoints are gone too, so it cannot be scored again" if trained_without_checkpoint
                else "`darec train --resume` trains it again")
        raise DamagedFile(f"{self.best}: {problem} (damaged, or written by an epoch the run never committed); {hint}")

    def verify_checkpoint(self, state: dict[str, Any]) -> None:
        """Refuse the checkpoint ``state`` names if any of its files is missing or damaged."""
        if state.get("checkpoint") is None:
            return
        folder = self.path / state["checkpoint"]
        for name, expected in state.get("checksums", {"model.safetensors": None}).items():
            if not (folder / name).exists():
                raise DamagedFile(f"{folder / name}: missing")
            verify(folder / name, expected)

    def checkpoint_gone(self, state: dict[str, Any]) -> str:
        """Why the checkpoint ``state`` names cannot be resumed from (empty if it can)."""
        try:
            self.verify_checkpoint(state)
        except DamagedFile as exc:
            return str(exc)
        return ""

    def resume_point(self) -> tuple[dict[str, Any], list[str]]:
        """The newest committed state whose checkpoint is intact: ``trainer_state.json``, else
        the copy in the newest checkpoint folder that is whole; and why newer ones were passed over.
        A finished run whose checkpoint is gone but whose best weights are whole resumes from its
        state with no checkpoint (``checkpoint: None`` from then on): it is evaluated, not trained."""
        candidates = [self.state, *(self.checkpoint(e) / STATE for e in self.checkpoint_epochs())]
        candidates = [c for c in candidates if c.exists()]
        if not candidates:
            raise FileNotFoundError(f"{self.path}: nothing to resume (no {STATE})")
        passed_over = [] if self.state.exists() else [f"{self.state}: missing"]
        for path in candidates:
            try:
                state = self.read_state(path)
                gone = self.checkpoint_gone(state)
                if not gone:
                    return state, passed_over
                if state.get("finished") and path == self.state:
                    # Finished: only its best weights are needed to evaluate it (checkpoints deleted to
                    # save space, or results put back elsewhere); it just cannot train further.
                    self.best_weights(state)
                    return {**state, "checkpoint": None}, [*passed_over, gone]
                raise DamagedFile(gone)
            except DamagedFile as exc:
                if str(exc) not in passed_over:  # the state and its copy name the same damaged checkpoint
                    passed_over.append(str(exc))
        raise DamagedFile(f"{self.path}: no intact checkpoint to resume from: {'; '.join(passed_over)}")


def seal(state: dict[str, Any]) -> str:
    """A checksum of a trainer state's content (all but the seal itself)."""
    body = json.dumps({k: v for k, v in state.items() if k != "seal"}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def verify(path: Path, expected: str | None) -> None:
    """Refuse a file whose SHA-256 is not the one recorded for it (nothing recorded: older runs)."""
    if expected is None:
        return
    if not path.exists():
        raise DamagedFile(f"{path}: missing")
    if sha256(path) != expected:
        raise DamagedFile(f"{path}: does not match its checksum in {STATE} (damaged, or changed since the run wrote it)")


@dataclass
class LoadedRun:
    config: RunConfig
    model: SequentialRecommender
    id_map: dict[str, list[str]]
    state: dict[str, Any] = field(default_factory=dict)  # trainer_state.json, where there is one


def check_same_data(run_dir: Path, dataset: SequenceDataset, state: dict[str, Any] | None = None) -> None:
    """Refuse a data set whose users or items differ from those the run was trained on."""
    saved = RunDir(run_dir).read_id_map(state)
    if saved["items"] != dataset.item_ids or saved["users"] != dataset.user_ids:
        raise InputError(f"{run_dir}: the data set no longer matches the one this run was trained on")


def load_run_dataset(run_dir: Path, config: RunConfig) -> SequenceDataset:
    """The data set a run was trained on, as its config names it; refused if it has changed since."""
    from darec.data import load_dataset

    c = config
    dataset = load_dataset(c.data.dataset, c.data.data_root, c.data.k_core, c.train.seed)
    check_same_data(run_dir, dataset)
    return dataset


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """``config`` with a data set or data root given as a relative path made absolute, so the
    run can be evaluated and resumed from any working directory."""
    data = config.data
    dataset = str(Path(data.dataset).resolve()) if Path(data.dataset).exists() else data.dataset
    root = str(Path(data.data_root).resolve()) if data.data_root and Path(data.data_root).exists() else data.data_root
    return replace(config, data=replace(data, dataset=dataset, data_root=root))


def read_config(run_dir: Path) -> RunConfig:
    return RunDir(run_dir).read_config()


def load_companions(model: SequentialRecommender, dataset: SequenceDataset) -> Companions:
    """The finished runs ``model`` starts from (its :meth:`~SequentialRecommender.companion_runs`,
    e.g. a pre-trained SASRec), loaded on CPU and checked to hold the model each field expects,
    trained on ``dataset``; errors name the config field that pointed to the run."""
    companions = {}
    for name, (run_dir, expected) in model.companion_runs().items():
        where = f"model.{name}"
        try:
            loaded = load_run(Path(run_dir), device="cpu")
        except (ConfigError, FileNotFoundError, DamagedFile) as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        if loaded.config.model.name != expected:
            raise ConfigError(f"{where}: {run_dir} holds a {loaded.config.model.name} run, not {expected}")
        check_same_data(Path(run_dir), dataset)
        companions[name] = loaded.model
    return companions


def load_run(run_dir: Path, device: str = "auto") -> LoadedRun:
    """The best model of a finished (or interrupted) run, ready to score."""
    run = RunDir(run_dir)
    state = run.read_state() if run.state.exists() else None  # read once, checked against its seal
    config = run.read_config(state or {})
    weights = run.best_weights(state)
    id_map = run.read_id_map(state or {})
    model = build_model(config.model, len(id_map["items"]) - 1, config.data.max_len)
    target = resolve_device(device if device != "auto" else config.train.device)
    load_model_state(model, weights)
    model.to(target).eval()
    apply_precision(model, target, loaded_precision(target, config.train.precision))  # as trained, where fast here
    return LoadedRun(config, model, id_map, state or {})
