"""The training loop: AdamW, validation every N epochs, early stopping on valid NDCG@10,
a checkpoint after every epoch, and exact resumption."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from darec.config import ConfigError, override_name
from darec.data import SequenceDataset, load_dataset
from darec.data.batching import Batch, bucketed_batches, training_windows, trim
from darec.device import adamw, apply_compile, apply_precision, autocast, pretrained_parameters, resolve_device
from darec.distributed import (Group, accelerate_fsdp, add_up, average_gradients, barrier, join, launched_rank, mean,
                               process_device, shard_frozen, sharding)
from darec.io import (DamagedFile, WriteError, atomic_write_json, atomic_write_text, check_writable, copy_atomic, read_json,
                      remove_temporaries, save_figure, sha256)
from darec.models import build_model
from darec.models.base import trainable_parameters
from darec.train.checkpoint import load_model_state, load_optimizer_state, load_tensors, model_state, optimizer_state, save_tensors
from darec.train.config import RunConfig, TrainConfig, build_config
from darec.train.evaluate import NonFiniteScores, OnBatch, evaluate, result_rows
from darec.train.run import BEST, OPTIMIZER, OPTIMIZER_META, RNG, SCHEDULER, STATE, RunDir, check_same_data, load_companions, with_absolute_paths

SELECT = "ndcg@10"
# What a resumed run may change: its stopping budget and where it runs, nothing that changes the model or data.
BUDGET_KEYS = ("epochs", "patience", "max_minutes")
RESUME_KEYS = (*BUDGET_KEYS, "device", "threads", "compile", "shard", "eval_batch_size", "eval_chunk")


def goes_on(train: TrainConfig, state: dict[str, Any]) -> bool:
    """Whether a run at ``state`` has budget left under ``train``: epochs to go, patience not spent."""
    return state["epoch"] < train.epochs and not (train.patience and state["bad_evals"] >= train.patience)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)  # process-wide: set both ways, so one run's choice does not leak


def process_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed of process ``rank`` (> 0) of a group, from epoch ``epoch`` on."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % 2**63


class LossOf(torch.nn.Module):
    """A model's training loss as a module's forward, which is what DDP wraps."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model.loss(batch)


def lr_factor(schedule: str, warmup: int, total: int, step: int) -> float:
    """The learning rate's multiplier at ``step``: a linear rise over ``warmup`` steps, then
    constant, or a linear or half-cosine decay reaching 0 at step ``total``."""
    if step < warmup:
        return step / warmup
    done = min(1.0, (step - warmup) / max(1, total - warmup))
    return {"constant": 1.0, "linear": 1.0 - done, "cosine": 0.5 * (1.0 + math.cos(math.pi * done))}[schedule]


class Trainer:
    """Trains ``config`` into ``run_dir``; ``resume=True`` continues from the last checkpoint there."""

    def __init__(self, config: RunConfig | None, run_dir: str | Path, resume: bool = False,
                 dataset: SequenceDataset | None = None, console: Console | None = None, progress: bool = True,
                 overrides: list[str] = ()):
        """``overrides`` (with ``resume``) extend a run's budget, e.g. ``epochs=200`` for a run that
        hit its epoch cap: only the train keys in RESUME_KEYS may change."""
        self.run_dir = Path(run_dir)
        self.run = RunDir(run_dir)
        # Under a launcher (torchrun, accelerate launch) only the first process writes and prints.
        self.main = launched_rank() == 0
        self.hold: IO[str] | None = None  # the run's lock, held by the first process (RunDir.hold)
        try:
            self._set_up(config, resume, dataset, console, progress, overrides)
        except BaseException:
            self.release()  # a trainer that failed to start leaves its run free at once, not when collected
            raise

    def _set_up(self, config: RunConfig | None, resume: bool, dataset: SequenceDataset | None, console: Console | None,
                progress: bool, overrides: list[str]) -> None:
        self.console = (console or Console(stderr=True, log_path=False)) if self.main else Console(quiet=True)
        self.show_progress = progress and self.main
        resume_state = None
        if resume:
            try:
                resume_state, passed_over = self.run.resume_point()
            except FileNotFoundError:
                if not self.run.config.exists():
                    raise
                # Stopped before its first checkpoint: start it again from its own config.
                self.console.log(f"{self.run_dir}: no checkpoint yet; starting the run again from its {self.run.config.name}")
                config, _ = self._overridden(self.run.read_config(state={}), list(overrides), done=0)
                resume, extended = False, False
            else:
                for reason in passed_over:
                    self.console.log(f"[yellow]{reason}; " + (f"resuming from {resume_state['checkpoint']} (epoch "
                                     f"{resume_state['epoch']})" if resume_state["checkpoint"] else
                                     "the run is finished: its best weights are evaluated, it cannot train further"))
                if self.main:
                    check_writable(self.run_dir)
                    self.hold = self.run.hold()
                config, extended = self._resumed_config(list(overrides), resume_state)
        elif config is None:
            raise ConfigError("a config is needed for a new run")
        elif self.run.state.exists():
            raise FileExistsError(f"{self.run_dir} already holds a run: resume it with --resume or pick another directory")
        else:
            config = with_absolute_paths(config)
        if self.run_dir.is_dir() and self.main:
            left = remove_temporaries(self.run_dir)
            if left:
                self.console.log(f"removed {len(left)} file(s) an interrupted write left in {self.run_dir}")
        self.config: RunConfig = config
        t = config.train
        if t.threads:
            torch.set_num_threads(t.threads)
        seed_everything(t.seed, t.deterministic)
        self.device = process_device(resolve_device(t.device))
        self.group = join(self.device)
        self.dataset = dataset or load_dataset(config.data.dataset, config.data.data_root, config.data.k_core, t.seed)
        self.model = build_model(config.model, self.dataset.n_items, config.data.max_len)
        self.model.prepare(self.dataset, load_companions(self.model, self.dataset))
        self.model.to(self.device)
        self.precision = apply_precision(self.model, self.device, t.precision)
        if t.precision == "auto" and self.device.type == "cpu" and pretrained_parameters(self.model):
            self.console.log("precision auto: bf16 (this CPU multiplies bf16 natively; the frozen backbone is held in bf16, "
                             "the trained parts in fp32; precision=fp32 to turn it off)" if self.precision == "bf16" else
                             "precision auto: fp32 (this CPU has no AMX-BF16 or AVX512-BF16, so bf16 would be emulated, "
                             "far slower; a CPU with either trains this model several times faster)")
        config.train.precision = self.precision  # the run keeps what auto resolved to, whatever machine resumes it
        t.shard = sharding(t.shard)  # the run keeps it, as a launcher's FSDP config asked
        self.sharded = self._shard(t.shard)
        if not self.sharded and apply_compile(self.model, self.device, t.compile):
            self.console.log("compiling the model's repeated blocks (once, in the first steps)")
        params = [p for p in self.model.parameters() if p.requires_grad]
        trainable, total = trainable_parameters(self.model)
        self.console.log(f"{config.model.name}: {trainable:,} trainable parameters of {total:,}"
                         f"{'; ' + escape(self.model.describe()) if self.model.describe() else ''}")
        self.generator = torch.Generator().manual_seed(t.seed)
        self.deadline: float | None = None  # set by fit() from max_minutes
        context = int(config.data.window_overlap * config.data.max_len)
        windows, skip = training_windows(self.dataset.train_sequences(), config.data.max_len, context, config.data.windows_per_user)
        self.windows, self.skip = torch.from_numpy(windows), torch.from_numpy(skip)
        self.window_lengths = (self.windows > 0).sum(1)
        self.optimizer = adamw(params, t.lr, t.weight_decay) if params else None
        self.trained = params
        # Several processes: DDP averages the gradients of each process's share of a batch
        # (and starts every process from the first one's weights). Buffers are not re-sent
        # every step: ours are built from the data alike everywhere, or count (expert usage)
        # what their own process saw. Some models leave parameters out of some steps.
        self.ddp = DistributedDataParallel(LossOf(self.model), device_ids=[self.device.index] if self.device.type == "cuda"
                                           else None, broadcast_buffers=False,
                                           find_unused_parameters=self.model.skips_parameters()) \
            if self.group.world > 1 and params and not self.sharded else None
        # Sharded layers run in step on every process, so each evaluates every user (sharing them out would
        # leave one process waiting in a layer the others never call); the first one writes.
        self.eval_group = Group() if self.sharded else self.group
        self.scheduler = self._scheduler() if params else None
        self.valid = self._validation_users()
        self.state: dict[str, Any] = {"epoch": 0, "best": None, "best_epoch": 0, "bad_evals": 0,
                                      "history": [], "finished": False, "checkpoint": None}
        if self.group.rank > 0:  # dropout differs between processes; the batch order (self.generator) does not
            torch.manual_seed(process_seed(t.seed, 0, self.group.rank))
        if resume_state is not None:
            self._restore(resume_state)
            if extended and self.state["finished"] and self.optimizer is not None:
                self._reopen()
        elif self.main:
            self.hold = self.run.hold()
            atomic_write_text(self.run.config, config.to_yaml())
            self.dataset.save_id_map(self.run.id_map)
            self.state.update(config_sha256=sha256(self.run.config), id_map_sha256=sha256(self.run.id_map))

    def _steps_per_epoch(self) -> int:
        t = self.config.train
        steps = (len(self.windows) + t.batch_size - 1) // t.batch_size
        return min(steps, t.steps_per_epoch) if t.steps_per_epoch else steps

    def _scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        t = self.config.train
        total = t.epochs * self._steps_per_epoch()
        factor = partial(lr_factor, t.lr_schedule, round(t.warmup_ratio * total), total)
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    def _resumed_config(self, overrides: list[str], state: dict[str, Any]) -> tuple[RunConfig, bool]:
        """The run's saved config with ``overrides``, and whether they changed its budget."""
        saved = self.run.read_config(state)
        new, diff = self._overridden(saved, overrides, state["epoch"])
        if state.get("finished") and not goes_on(new.train, state):
            # Nothing more to train: the run keeps the budget it ran under, so its config says what ran.
            kept = [o for o in overrides if override_name(o) not in BUDGET_KEYS]
            new, diff = self._overridden(saved, kept, state["epoch"])
        elif state.get("finished") and state["epoch"] and state["checkpoint"] is None:
            raise ConfigError(f"{self.run_dir}: its checkpoint is gone, so it cannot train past epoch {state['epoch']}; "
                              "its results stand (start a new run for a larger budget)")
        if diff and self.main:
            atomic_write_text(self.run.config, new.to_yaml())
            state["config_sha256"] = sha256(self.run.config)
            self.run.write_state(state)
        return new, any(d.split(".")[1] in BUDGET_KEYS for d in diff)

    @staticmethod
    def _overridden(config: RunConfig, overrides: list[str], done: int) -> tuple[RunConfig, list[str]]:
        """A resumed run's config with ``overrides`` (only RESUME_KEYS may change; the epoch budget
        must cover the ``done`` epochs), and the keys they changed."""
        if not overrides:
            return config, []
        new = build_config(config.to_dict(), overrides, source="--set")
        old, changed = config.to_dict(), new.to_dict()
        diff = [f"{s}.{k}" for s in changed for k in changed[s] if changed[s][k] != old[s].get(k)]
        refused = [d for d in diff if d.split(".")[0] != "train" or d.split(".")[1] not in RESUME_KEYS]
        if refused:
            raise ConfigError(f"--set {', '.join(refused)}: a resumed run keeps its settings (only train."
                              f"{', train.'.join(RESUME_KEYS)} may change); start a new run instead")
        if new.train.epochs < done:
            raise ConfigError(f"--set train.epochs={new.train.epochs}: this run has already trained {done} epochs; "
                              "a resumed run's budget can only cover what it has done")
        return new, diff

    def _shard(self, setting: str) -> bool:
        """Split the frozen backbone across the processes (``train.shard=layers``); whether it was."""
        if setting == "off" or self.group.world == 1:
            return False
        if accelerate_fsdp():
            self.console.log("accelerate's FSDP config: shard=layers (its other FSDP settings are not read)")
        regions = list(self.model.compile_regions())
        pretrained = pretrained_parameters(self.model)
        frozen = {p for name, p in self.model.named_parameters() if name in pretrained}
        split = shard_frozen(self.model, regions, frozen) if regions else 0
        if not split:
            self.console.log(f"shard=layers: {self.config.model.name} has no pretrained layers to split; "
                             "every process holds the whole model (DDP)")
            return False
        self.console.log(f"shard=layers: {split:,} frozen backbone parameters split across {self.group.world} processes "
                         "(FSDP2); not compiled")
        return True

    def _reopen(self) -> None:
        """Let a finished run go on when its new budget allows more epochs than it stopped at."""
        t, state = self.config.train, self.state
        if goes_on(t, state):
            state.update(finished=False)
            state.pop("stopped", None)
            self.console.log(f"{self.run_dir}: continuing after epoch {state['epoch']} (at most {t.epochs} epochs, "
                             f"patience {t.patience or 'off'})")

    # -- checkpoints -------------------------------------------------------------------------

    def _save_checkpoint(self, improved: bool) -> None:
        """The first process writes the checkpoint (all hold the same weights); the others wait for it."""
        if self.main:
            self._write_checkpoint(improved)
        else:
            self.state["checkpoint"] = self.run.checkpoint(self.state["epoch"]).name
        barrier(self.group)

    def _write_checkpoint(self, improved: bool) -> None:
        """Write this epoch's metrics and checkpoint, commit them in the state, then (when it is
        the best so far) copy its weights to ``model.safetensors``; keep it and the one before it."""
        committed = self.state["checkpoint"]
        try:
            atomic_write_text(self.run.metrics, "".join(json.dumps(h) + "\n" for h in self.state["history"]))
            epoch = self.state["epoch"]
            folder = self.run.checkpoint(epoch)
            save_tensors(folder / BEST, model_state(self.model))
            rng = {"torch": torch.get_rng_state(), "shuffle": self.generator.get_state()}
            if self.device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(self.device)
            save_tensors(folder / RNG, rng)
            files = [BEST, RNG]
            if self.optimizer is not None:
                tensors, meta = optimizer_state(self.optimizer)
                save_tensors(folder / OPTIMIZER, tensors)
                atomic_write_json(folder / OPTIMIZER_META, meta)
                atomic_write_json(folder / SCHEDULER, self.scheduler.state_dict())
                files += [OPTIMIZER, OPTIMIZER_META, SCHEDULER]
            self.state.update(checkpoint=folder.name, checksums={name: sha256(folder / name) for name in files})
            if improved:
                self.state["best_sha256"] = self.state["checksums"][BEST]
            self.run.write_state(self.state, folder / STATE)  # what a resume falls back to if a later checkpoint is damaged
            self.run.write_state(self.state)  # the commit point
            committed = folder.name
            if improved:
                copy_atomic(folder / BEST, self.run.best)
        except WriteError as exc:
            then = (f"{committed} is the last checkpoint and loads; make room (or fix permissions) and continue with "
                    f"`darec train --resume {self.run_dir}`" if committed else
                    "no checkpoint was committed yet; make room (or fix permissions) and start it again with "
                    f"`darec train --resume {self.run_dir}`")
            raise WriteError(exc.errno, f"{exc.strerror}; the run stops: {then}") from None
        older = [e for e in self.run.checkpoint_epochs() if e < epoch]
        keep = {epoch, *older[:1]}
        for old in self.run.checkpoint_epochs():
            if old not in keep:
                shutil.rmtree(self.run.checkpoint(old), ignore_errors=True)

    def _restore(self, state: dict[str, Any]) -> None:
        self.state = state
        check_same_data(self.run_dir, self.dataset, state)
        if state.get("best_sha256"):
            try:
                weights = self.run.best_weights(state)
                if weights != self.run.best and self.main:  # a stop came between a commit and this copy, or damage
                    copy_atomic(weights, self.run.best)
            except DamagedFile as exc:  # resumed from an older checkpoint: the epochs it trains again rewrite it
                self.console.log(f"[yellow]{exc}")
        if self.state["checkpoint"] is None:
            return
        folder = self.run_dir / self.state["checkpoint"]
        load_model_state(self.model, folder / BEST, self.device)
        rng = load_tensors(folder / RNG)
        torch.set_rng_state(rng["torch"])  # the first process's (of those that wrote it)
        if self.group.rank > 0:
            torch.manual_seed(process_seed(self.config.train.seed, state["epoch"], self.group.rank))
        self.generator.set_state(rng["shuffle"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        if self.optimizer is not None:
            meta = read_json(folder / OPTIMIZER_META)
            load_optimizer_state(self.optimizer, load_tensors(folder / OPTIMIZER, self.device), meta)
            if (folder / SCHEDULER).exists():  # checkpoints from before schedules were constant
                self.scheduler.load_state_dict(read_json(folder / SCHEDULER))

    # -- training ----------------------------------------------------------------------------

    def _train_epoch(self, progress: Progress | None, task: Any) -> tuple[float, str | None]:
        """The epoch's mean training loss, and why it was cut short (a time limit, a stop request), if it was."""
        self.model.train()
        t = self.config.train
        total, batches, cut = 0.0, 0, None
        compute = self.ddp if self.ddp is not None else self.model.loss
        for step, index in enumerate(bucketed_batches(self.window_lengths, t.batch_size, self.generator)):
            if t.steps_per_epoch and step == t.steps_per_epoch:
                break
            if step and (cut := self._stopping()):
                break
            if self.group.world > 1:  # each process trains on its share of the batch
                if len(index) < self.group.world:
                    continue  # a share would be empty: every process skips it alike
                index = index[self.group.shard(len(index))]
            with autocast(self.device, self.precision):
                loss = compute(Batch(trim(self.windows[index]), self.skip[index]).to(self.device))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.sharded:
                average_gradients(self.group, self.trained)
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            value = mean(self.group, loss.item(), self.device)  # the same on every process, so all stop alike
            if not math.isfinite(value):  # before the step, so the weights stay as the last good batch left them
                self._diverged(f"the training loss is {value} at step {step + 1}")
            self.optimizer.step()
            self.scheduler.step()
            total += value
            batches += 1
            if progress is not None:
                progress.update(task, advance=1, loss=f"{total / batches:.4f}")
        return total / max(1, batches), cut

    def _diverged(self, what: str) -> None:
        last = self.state["checkpoint"]
        raise NonFiniteScores(f"epoch {self.state['epoch'] + 1}: {what}; the model has diverged and the run stops (lr "
                              f"{self.config.train.lr:g}: try a lower one). {self.run_dir / last if last else 'No checkpoint'}"
                              f"{' is the last good state' if last else ' was written'}.")

    def _stopping(self) -> str | None:
        """Why the run stops here, if it does: past ``max_minutes`` ("time limit") or asked to
        (``darec stop``: "stop requested"). Decided together: clocks differ between processes."""
        late = self.deadline is not None and time.monotonic() > self.deadline
        asked = self.run.stop_request.exists()
        if self.group.world > 1:
            late, asked = (mean(self.group, float(flag), self.device) > 0 for flag in (late, asked))
        return "time limit" if late else "stop requested" if asked else None

    def _validation_users(self) -> tuple[list[np.ndarray], np.ndarray]:
        """The validation histories and targets used while training: every user's, or a
        fixed sample of ``valid_users`` (the same users at every validation and on resume)."""
        histories, targets = self.dataset.split("valid")
        n = self.config.train.valid_users
        if not n or n >= len(targets):
            return histories, targets
        pick = np.sort(np.random.default_rng(self.config.train.seed).choice(len(targets), n, replace=False))
        return [histories[i] for i in pick], targets[pick]

    def _validate(self, progress: OnBatch | None = None) -> dict[str, float]:
        histories, targets = self.valid
        t = self.config.train
        try:
            return evaluate(self.model, histories, targets, "full", t.exclude_history, batch_size=t.eval_batch_size,
                            chunk=t.eval_chunk, group=self.eval_group, progress=progress)
        except NonFiniteScores as exc:
            self._diverged(f"validation: {exc}")

    def fit(self, on_epoch_end: Callable[[int], None] | None = None, final_evaluation: bool = True) -> list[dict[str, Any]]:
        """Train to the epoch budget or early stop, then evaluate the best weights (unless
        ``final_evaluation`` is off, as in a search, which reads validation only). Returns result rows.
        The run is this trainer's until it returns (another trainer of it is refused)."""
        try:
            return self._fit(on_epoch_end, final_evaluation)
        finally:
            self.release()

    def release(self) -> None:
        """Leave the run to other trainers (its lock freed)."""
        if self.hold is not None:
            self.hold.close()
            self.hold = None

    def _fit(self, on_epoch_end: Callable[[int], None] | None, final_evaluation: bool) -> list[dict[str, Any]]:
        t = self.config.train
        self.deadline = time.monotonic() + 60 * t.max_minutes if t.max_minutes > 0 else None
        if self.optimizer is None and self.state["epoch"] == 0:
            # Nothing to train (e.g. most-popular): the prepared model is the final one.
            if self.main:
                save_tensors(self.run.best, model_state(self.model))
                self.state.update(best_sha256=sha256(self.run.best))
            self.state.update(finished=True)
        steps = self._steps_per_epoch()
        progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  valid ndcg@10 {task.fields[valid]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
            disable=not self.show_progress,
        )
        last_valid = next((f"{h['valid'][SELECT]:.4f}" for h in reversed(self.state["history"]) if "valid" in h), "-")
        with progress:
            task = progress.add_task("train", total=steps, epoch=self.state["epoch"] + 1, loss="-", valid=last_valid)
            while not self.state["finished"] and self.state["epoch"] < t.epochs:
                epoch = self.state["epoch"] + 1
                progress.reset(task, total=steps, epoch=f"{epoch}/{t.epochs}", loss="-", valid=last_valid)
                start = time.perf_counter()
                loss, cut = self._train_epoch(progress, task)
                row: dict[str, Any] = {"epoch": epoch, "loss": loss, "train_seconds": time.perf_counter() - start,
                                       "lr": self.optimizer.param_groups[0]["lr"],  # at the epoch's end
                                       # As run: a resume may change train.threads, and the thread count
                                       # changes the order of sums, so results reproduce only with it.
                                       "threads": torch.get_num_threads()}
                if cut:  # a partial epoch: its time is not an epoch's
                    row["cut"] = cut
                add_up(self.group, self.model.epoch_tallies())  # each process counted its own share of the batches
                summary = self.model.epoch_summary()
                if summary:
                    row["model"] = summary
                    for name, figure in self.model.figures(summary).items() if self.main else ():
                        save_figure(figure, self.run.figure(name))
                improved = False
                stopping = cut or self._stopping()
                if epoch % t.eval_every == 0 or epoch == t.epochs or stopping:
                    start = time.perf_counter()
                    progress.reset(task, epoch=f"{epoch}/{t.epochs}, validating", loss=f"{loss:.4f}", valid=last_valid)
                    row["valid"] = self._validate(lambda done, users: progress.update(task, completed=done, total=users))
                    row["eval_seconds"] = time.perf_counter() - start
                    score = row["valid"][SELECT]
                    last_valid = f"{score:.4f}"
                    if self.state["best"] is None or score > self.state["best"]:
                        self.state.update(best=score, best_epoch=epoch, bad_evals=0)
                        improved = True
                    else:
                        self.state["bad_evals"] += 1
                    self.console.log(f"epoch {epoch}: loss {loss:.4f}  valid ndcg@10 {score:.4f}  hit@10 {row['valid']['hit@10']:.4f}"
                                     f"{'  (best)' if self.state['best_epoch'] == epoch else ''}")
                self.state["epoch"] = epoch
                self.state["history"].append(row)
                stopping = stopping or self._stopping()  # the limit may have passed while validating
                # A cut epoch is not a full one: its validation may look like early stopping, but the run was cut.
                if t.patience and self.state["bad_evals"] >= t.patience and not cut:
                    self.console.log(f"early stop: no better valid {SELECT} for {t.patience} validations")
                    self.state["finished"] = True
                elif stopping:
                    self.console.log(f"time limit: stopped after {t.max_minutes:g} minutes" if stopping == "time limit"
                                     else f"stopped as asked (darec stop) in epoch {epoch}")
                    self.state.update(finished=True, stopped=stopping)
                self._save_checkpoint(improved)
                if on_epoch_end is not None:
                    on_epoch_end(epoch)
        self.state["finished"] = True
        # This trainer trains no more (a finished run is reopened only by a new trainer). Its DDP
        # wrapper holds the process group and its last step's communication work; dropped now, the
        # group's threads end when distributed.leave() closes it, not while the interpreter shuts
        # down, where gloo can abort the process ("terminate called without an active exception").
        self.ddp = None
        if self.main:
            self.run.write_state(self.state)
            # A stop request is honoured now (or came too late to matter): a resumed run is not stopped by it.
            self.run.stop_request.unlink(missing_ok=True)
        barrier(self.group)
        if not final_evaluation:
            return []
        # The best weights' evaluation is kept, with what it depended on: a finished run asked
        # again (a benchmark rerun) reads it instead of scoring every user again (minutes on an LLM).
        evaluated = hashlib.sha256(f"{self.state.get('best_sha256')} {sha256(self.run.config)} {self.dataset.digest()}"
                                   .encode()).hexdigest()
        if self.state.get("evaluated") == evaluated and self.run.results.exists() and self.run.per_user("test").exists():
            return read_json(self.run.results)
        load_model_state(self.model, self.run.best_weights(), self.device)
        progress = Progress(TextColumn("[bold]evaluating {task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
                            disable=not self.show_progress)
        with progress:
            tasks = {split: progress.add_task(f"the best weights on {split}", total=None) for split in ("valid", "test")}
            rows = result_rows(self.config, self.dataset, self.model, console=self.console,
                               run_dir=self.run_dir if self.main else None, group=self.eval_group,
                               progress=lambda split: lambda done, users: progress.update(tasks[split], completed=done,
                                                                                          total=users))
        for row in rows:
            row["best_epoch"] = self.state["best_epoch"]
        if self.main:
            atomic_write_json(self.run.results, rows)
            self.state["evaluated"] = evaluated
            self.run.write_state(self.state)
        return rows


def seconds_per_epoch(run_dir: str | Path) -> float:
    """Mean training seconds of a run's full epochs (one cut short by a stop or time limit is left out)."""
    seconds = [h["train_seconds"] for h in RunDir(run_dir).read_history() if "cut" not in h]
    return float(np.mean(seconds)) if seconds else float("nan")


def trained_threads(run_dir: str | Path) -> list[int]:
    """The CPU thread counts a run's epochs were trained with, in order of first use (empty for
    runs from before epochs recorded them)."""
    return list(dict.fromkeys(h["threads"] for h in RunDir(run_dir).read_history() if "threads" in h))
