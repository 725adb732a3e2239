"""What every benchmark script shares: machine and version facts, a results file that
several processes may add rows to, and one darec training run turned into flat rows."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from darec.io import atomic_write_json, atomic_write_text, copy_atomic, read_json
from darec.config import override_name
from darec.device import fast_cpu_bf16, resolve_device
from darec.search import Search
from darec.search.study import SETTINGS, STUDY
from darec.train import Trainer, build_config
from darec.train.config import RunConfig, TrainConfig, config_keys
from darec.train.run import RunDir, load_run
from darec.train.significance import compare_runs
from darec.train.evaluate import result_rows
from darec.train.trainer import RESUME_KEYS, seconds_per_epoch, trained_threads

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"  # the benchmarks' run folders: large, and gone on a new machine
# What each finished run under WORK needs for its rows and paired comparisons, without weights
# (RunDir.copy_results), kept at the same relative path: it outlives the machine.
KEPT = HERE / "results" / "kept"
METRICS = ("ndcg@10", "hit@10", "mrr@10", "ndcg@20", "hit@20", "ndcg@5", "hit@5")
Row = dict[str, Any]


def free_port() -> int:
    """A TCP port free on loopback now (for a server or a process group the script starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine() -> str:
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
        # The bf16 units (AMX, AVX512-BF16) decide a run's speed more than the model name says.
        flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
        cpu += "".join(f", {name}" for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")) if flag in flags)
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores{gpu}"


def versions() -> str:
    import darec

    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}", f"numpy {np.__version__}"]
    for name in ("transformers", "peft"):
        try:
            parts.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            pass
    return ", ".join([*parts, f"darec {darec.__version__}"])


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path``, so processes running side by side add rows safely."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class RunSpec:
    """One benchmark run, declared: its folder and its rows' fields follow from it, and
    nothing is parsed back out of a folder name."""

    dataset: str
    variant: str  # e.g. darec, no-masking, sasrec-same-data, searched, uniform-lora
    budget: str  # a key of budgets.BUDGETS, or "-" (the model's own defaults)
    tag: str = ""  # a named --set tried beside the budget's own runs
    seed: int = 0  # 0: the config's own seed

    def __post_init__(self) -> None:
        if self.seed == TrainConfig().seed:  # --seed 42 trains the first run, not one beside it
            object.__setattr__(self, "seed", 0)

    @property
    def name(self) -> str:
        """``VARIANT[@TAG][@seedN]``: the run's folder name, as earlier versions named them."""
        return "@".join([self.variant, *([self.tag] if self.tag else []), *([f"seed{self.seed}"] if self.seed else [])])

    def run_dir(self, workdir: Path) -> Path:
        return workdir / self.dataset / f"{self.budget}-{self.name}"

    def fields(self) -> Row:
        """What a row of this run says about it (``name`` for the tables)."""
        return {"dataset": self.dataset, "variant": self.variant, "budget": self.budget, "tag": self.tag, "seed": self.seed,
                "name": self.name}

    def holds(self, row: Row) -> bool:
        """Whether ``row`` is one of this run's."""
        return all(row.get(k) == v for k, v in self.fields().items() if k != "name")

    @classmethod
    def of(cls, row: Row) -> RunSpec:
        return cls(row["dataset"], row["variant"], row["budget"], row.get("tag", ""), row.get("seed", 0))


def kept(run_dir: Path) -> Path | None:
    """Where the run at ``run_dir`` keeps its results under :data:`KEPT` (None outside :data:`WORK`)."""
    try:
        return KEPT / run_dir.resolve().relative_to(WORK.resolve())
    except ValueError:
        return None


def keep(run_dir: Path, weights: bool = False) -> None:
    """Copy a finished run's results (and any per-user metrics a comparison added) to :func:`kept`,
    with its best weights too where later runs start from them (a SASRec of ~1 MB)."""
    copy = kept(run_dir)
    if copy is not None and RunDir(run_dir).finished():
        RunDir(run_dir).copy_results(copy, weights=weights or RunDir(copy).best.exists())


def finished_run(run_dir: Path) -> Path:
    """The folder to read a run's results from: its own where it has them, else its kept copy where
    there is one (a run trained on an earlier machine), else its own (which then has none)."""
    copy = kept(run_dir)
    if RunDir(run_dir).results.exists() or copy is None or not RunDir(copy).results.exists():
        return run_dir
    return copy


def has_finished(run_dir: Path) -> bool:
    return RunDir(finished_run(run_dir)).results.exists()


def upgrade_run_row(row: Row) -> Row:
    """A row written before RunSpec (``variant`` "BUDGET:VARIANT@TAG@seedN") in today's fields."""
    if "tag" in row or ":" not in row["variant"]:
        return row
    budget, name = row["variant"].split(":", 1)
    variant, *rest = name.split("@")
    seed = int(rest.pop()[4:]) if rest and rest[-1].startswith("seed") and rest[-1][4:].isdigit() else 0
    return {**row, **RunSpec(row["dataset"], variant, budget, "@".join(rest), seed).fields()}


def row_key(row: Row) -> tuple:
    return (row["dataset"], row["model"], row["variant"], row.get("budget"), row.get("tag", ""), row.get("seed", 0),
            row["protocol"], row["split"], row.get("exclude_history"))


def save_rows(path: Path, new_rows: Iterable[Row], markdown: Callable[[list[Row]], str] | None = None,
              upgrade: Callable[[Row], Row] | None = None) -> None:
    """Add rows to a JSON results file, replacing earlier rows with the same key (after
    ``upgrade`` has brought older rows to today's fields); rewrite its markdown table from all rows."""
    new_rows = list(new_rows)
    with locked(path):
        rows = json.loads(path.read_text()) if path.exists() else []
        rows = [upgrade(r) for r in rows] if upgrade else rows
        fresh = {row_key(r) for r in new_rows}
        rows = [r for r in rows if row_key(r) not in fresh] + new_rows
        atomic_write_json(path, rows)
        if markdown is not None:
            atomic_write_text(path.with_suffix(".md"), markdown(rows))


def for_model(overrides: Iterable[str], model: str) -> list[str]:
    """The overrides whose keys ``model``'s run config has (e.g. no backbone settings for SASRec)."""
    known = set().union(*config_keys(model).values())
    return [o for o in overrides if override_name(o) in known]


def epochs_cell(row: Row) -> str:
    """``epochs (best epoch)``, with a dagger where the run was cut short (its wall-clock limit or a stop request)."""
    return f"{row['epochs']} ({row['best_epoch']}){' †' if row.get('time_limited') else ''}"


def versus(rows: list[Row], run_dir: Path | list[Path], reference: Path | list[Path], name: str, group: str | None = None,
           split: str = "test") -> list[Row]:
    """Add to the ``split`` row (full ranking, history kept) the paired comparison of this
    run's NDCG@10 on that split with the ``reference`` run's, user by user (``darec
    compare``): ``vs_NAME`` (this minus the reference), its 95% interval and p-value; with
    ``group`` (e.g. ``tail-items``) only over that group's users. Either side may be several
    runs (seeds): each user's NDCG@10 is then averaged over them. Left out, saying so, while
    a reference has not finished."""
    references = [finished_run(r) for r in ([reference] if isinstance(reference, Path) else reference)]
    runs = [finished_run(r) for r in ([run_dir] if isinstance(run_dir, Path) else run_dir)]
    if unfinished := [r.name for r in references if not RunDir(r).results.exists()]:
        print(f"{runs[0].name}: not compared with {', '.join(unfinished)}, which has not finished", flush=True)
        return rows
    # Runs kept before every split's per-user metrics were, without weights to compute them from.
    if unread := [r.name for r in [*references, *runs] if not (RunDir(r).per_user(split).exists() or RunDir(r).best.exists())]:
        print(f"{runs[0].name}: not compared with {references[0].name} on {split}: no per-user {split} metrics "
              f"or weights of {', '.join(unread)}", flush=True)
        return rows
    result = compare_runs(references, runs, group=group, split=split)
    for run in [*references, *runs]:  # with the per-user metrics this comparison may have computed
        keep(run)
    for row in rows:
        if row["split"] == split and row["protocol"] == "full" and not row["exclude_history"]:
            row.update({f"vs_{name}": result["difference"], f"vs_{name}_ci_low": result["ci_low"],
                        f"vs_{name}_ci_high": result["ci_high"], f"vs_{name}_p": result["p_value"]})
    return rows


def finished_seeds(rows: list[Row], specs: list[RunSpec], where: Callable[[RunSpec], Path]) -> list[int]:
    """The seeds N (besides the first) under which every one of ``specs`` was trained again
    and finished: those the results ``rows`` hold, whose run (at ``where``) has its results."""
    found = [{r["seed"] for r in rows if r.get("seed") and RunSpec.of(r) == replace(spec, seed=r["seed"])
              and has_finished(where(RunSpec.of(r)))} for spec in specs]
    return sorted(set.intersection(*found)) if found else []


def with_seeds(spec: RunSpec, seeds: list[int], where: Callable[[RunSpec], Path]) -> list[Path]:
    """The run folders of ``spec`` (its first seed) and of it under each of ``seeds``."""
    return [where(spec), *(where(replace(spec, seed=s)) for s in seeds)]


def main_rows(rows: list[Row]) -> Iterator[tuple[Row, Row]]:
    """Each run's test row (full ranking, history kept) with its validation row ({} if none)."""
    for r in rows:
        if r["split"] != "test" or r["protocol"] != "full" or r["exclude_history"]:
            continue
        yield r, next((x for x in rows if RunSpec.of(r).holds(x) and x["split"] == "valid"
                       and x["protocol"] == "full" and not x["exclude_history"]), {})


def versus_cell(row: Row, name: str) -> str:
    if f"vs_{name}" not in row:
        return "-"
    return (f"{row[f'vs_{name}']:+.4f} [{row[f'vs_{name}_ci_low']:+.4f}, {row[f'vs_{name}_ci_high']:+.4f}] "
            f"p={row[f'vs_{name}_p']:.2g}")


TIME_LIMITED = ("† stopped by its wall-clock limit (max_minutes) or a stop request (darec stop) before early "
                "stopping: not converged.")


def markdown_table(title: str, notes: list[str], columns: list[str], cells: Iterable[list[str]]) -> str:
    """A generated markdown page: a title, notes, and one table."""
    lines = [f"# {title}", "", *notes, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


# Budgets whose LLM runs were all trained in bf16 (precision=auto on a CPU with AMX-BF16/AVX512-BF16):
# a run of them trained in fp32 would sit in their tables beside bf16 runs, at a fraction of their speed.
BF16_BUDGETS = ("cpu-full",)


def refuse_emulated_bf16(config: RunConfig, budget: str | None, what: str) -> None:
    """Stop before training ``what`` (a run or a search of ``config``) on a CPU without native
    bf16 matrix units where it would run in bf16 (emulated there, 30-55x slower than fp32: a
    resumed run keeps the precision it began in) or, with ``precision=auto``, in fp32 while the
    rest of its ``budget``'s runs were bf16. ``--set precision=fp32`` does the latter knowingly."""
    if not hasattr(config.model, "backbone") or resolve_device(config.train.device).type != "cpu" or fast_cpu_bf16():
        return
    if config.train.precision == "bf16":
        raise SystemExit(f"{what} trains in bf16, which this CPU ({machine()}: no AMX-BF16 or AVX512-BF16) emulates 30-55x "
                         "slower than fp32: run it on a CPU with either")
    if config.train.precision == "auto" and budget in BF16_BUDGETS:
        raise SystemExit(f"{what}: the {budget} budget's runs train in bf16 (precision=auto on a CPU with AMX-BF16 or "
                         f"AVX512-BF16); this machine ({machine()}) has neither, so it would train in fp32, several times slower, and "
                         "its rows would sit beside bf16 runs. Run it on such a CPU, or --set precision=fp32 knowingly.")


def search_files(work: Path, tag: str) -> tuple[str, Path, Path]:
    """The ``@TAG`` suffix (empty without a tag) that a search's files and pictures carry, its
    folder and its summary, with ``work`` the runs of its data set and budget."""
    suffix = f"@{tag}" if tag else ""
    return suffix, work / f"search{suffix}", work / f"search_summary{suffix}.yaml"


def train_rows(run_dir: Path, overrides: list[str], base: Row, evaluate_only: bool = False,
               results: Path | None = None, weights: bool = False) -> list[Row]:
    """Train (or resume, or just re-evaluate a finished run in) ``run_dir`` and return its
    result rows, each ``base`` plus split, protocol, metrics, epochs and seconds per epoch;
    the finished run's results are then kept (:func:`keep`).

    A run whose folder is gone but whose results are kept (trained on an earlier machine) is
    not trained again: its kept rows are returned. Where its ``weights`` are needed (a
    SASRec that a pre-trained variant starts from), they are kept too, and put back with its
    results; a run kept before weights were (2026-12-02) is trained again, with the thread
    count its epochs record where they do, and must reproduce its kept per-user test metrics,
    since rows of other runs were compared with them. A run put back, or reported again without
    training another epoch, keeps the command, machine and versions its rows in ``results``
    record (:func:`recorded`).
    With ``results`` (the file the rows go to; ``base`` then holds a :class:`RunSpec`'s
    fields), a run whose folder is gone with nothing kept but whose rows are in that file is
    refused: a new run would replace rows that other rows' paired comparisons were made against."""
    def as_it_stands(folder: Path) -> list[Row]:
        """A finished run's rows, not trained here, as its rows in ``results`` record it."""
        return _rows(folder, read_json(RunDir(folder).results), recorded(results, base), trained=RunDir(folder).metrics.exists())

    copy = kept(run_dir)
    begun = RunDir(run_dir).state.exists()
    earlier = copy if not begun and copy is not None and RunDir(copy).finished() else None
    if earlier is not None and weights and RunDir(earlier).best.exists():
        # Its weights were kept: the run is put back as it was (trained again, on another
        # machine, it need not reproduce: the order of sums differs).
        return as_it_stands(RunDir(earlier).copy_results(run_dir, weights=True).path)
    if begun and RunDir(run_dir).finished() and RunDir(run_dir).results.exists() and not RunDir(run_dir).checkpoint_epochs():
        return as_it_stands(run_dir)  # put back by an earlier invocation: no checkpoint to resume from
    if earlier is not None and not weights:
        return as_it_stands(earlier)
    if earlier is None and not begun and held_row(results, base) is not None:
        spec = RunSpec.of(base)
        raise SystemExit(f"{results} holds rows of {spec.name} ({spec.dataset}, {spec.budget}), but its run folder "
                         f"{run_dir} is gone, with no results kept in {KEPT}: training it again would replace them. "
                         "Write elsewhere (--results), or delete those rows first.")
    if earlier is not None and len(threads := trained_threads(earlier)) == 1:
        # Trained again with its own thread count: another one changes the order of sums.
        overrides = with_threads(overrides, threads)
    epochs_before = RunDir(run_dir).read_state()["epoch"] if begun else None
    refuse_emulated_bf16(RunDir(run_dir).read_config() if begun else build_config(overrides=overrides), base.get("budget"),
                         str(run_dir))
    if begun:
        # The run's own settings, but a larger budget given here extends it (e.g. epochs=200 after a cap of 50).
        budget = [o for o in overrides if override_name(o) in RESUME_KEYS]
        trainer = Trainer(None, run_dir, resume=True, progress=False, overrides=budget)
    else:
        trainer = Trainer(build_config(overrides=overrides), run_dir, progress=False)
    # fit() ends by evaluating the best weights (at once for a finished run); evaluate_only
    # reports an unfinished run as it stands.
    rows = result_rows(trainer.config, trainer.dataset, load_run(run_dir).model, run_dir=run_dir) if evaluate_only else trainer.fit()
    if earlier is not None:
        again, before = (RunDir(r).read_per_user("test")["ndcg@10"] for r in (run_dir, earlier))
        if not np.array_equal(again, before):
            # Moved aside: left in place, the next invocation would resume it as finished and keep it over the
            # results other rows were compared with.
            aside = run_dir.with_name(f"{run_dir.name}.not-reproduced")
            shutil.rmtree(aside, ignore_errors=True)
            run_dir.rename(aside)
            raise SystemExit(f"{run_dir} was trained again for its weights but does not reproduce its kept results in "
                             f"{earlier} (test NDCG@10 {again.mean():.4f}, kept {before.mean():.4f}; a different thread "
                             f"count, or another machine, changes the order of sums): the kept results stay; the new run "
                             f"is in {aside}, for inspection.")
    keep(run_dir, weights=weights)
    if RunDir(run_dir).read_state()["epoch"] == epochs_before:
        base = recorded(results, base)  # not trained here, only reported again: as its rows record it
    return _rows(run_dir, rows, base, trained=trainer.optimizer is not None)


def with_threads(overrides: list[str], threads: list[int]) -> list[str]:
    """``overrides`` with ``threads=`` these counts (several: ``threads=1,2``), where they had one, else last."""
    ran = "threads=" + ",".join(map(str, threads))
    if not any(override_name(o) == "threads" for o in overrides):
        return [*overrides, ran]
    return [ran if override_name(o) == "threads" else o for o in overrides]


def held_row(results: Path | None, base: Row) -> Row | None:
    """A row that ``results`` (None: no file) holds of the run whose :class:`RunSpec` fields ``base`` has."""
    if results is None or not results.exists():
        return None
    spec = RunSpec.of(base)
    return next((r for r in map(upgrade_run_row, json.loads(results.read_text())) if spec.holds(r)), None)


def recorded(results: Path | None, base: Row) -> Row:
    """``base`` with the command, machine, versions and seconds an epoch that ``results`` records
    for the same run, where it holds its rows: a run put back from kept results, or reported again,
    was produced by that command, on that machine, at that speed, not by the one reporting it."""
    row = held_row(results, base)
    fields = ("command", "machine", "versions", "seconds_per_epoch")
    return base if row is None else {**base, **{f: row[f] for f in fields if f in row}}


def _rows(run_dir: Path, rows: list[Row], base: Row, trained: bool) -> list[Row]:
    """A finished (or evaluated) run's rows as a benchmark writes them: ``base`` plus the run's state."""
    state = RunDir(run_dir).read_state()
    epochs = RunDir(run_dir).read_config(state).train.epochs
    if "settings" in base and (threads := trained_threads(run_dir)):
        # The threads the run was trained with, not the invoking command's (a kept or resumed run).
        base = {**base, "settings": " ".join(with_threads(base["settings"].split(), threads))}
    out = []
    for r in rows:
        row = {**base, "split": r["split"], "protocol": r["protocol"], "exclude_history": r["exclude_history"],
               "epochs": state["epoch"], "best_epoch": state["best_epoch"],
               "stopped_early": state["finished"] and state["epoch"] < epochs and "stopped" not in state,
               # Cut short by its wall-clock limit or a stop request (darec stop): not converged.
               "time_limited": "stopped" in state,
               **{m: r[m] for m in METRICS}}
        if trained:  # as recorded, for a run only reported again (its folder may be a later retraining's)
            row.setdefault("seconds_per_epoch", seconds_per_epoch(run_dir))
        out.append(row)
    return out


def search_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a benchmark that searches plans: data set, budget and the search's own."""
    from budgets import BUDGETS

    parser.add_argument("--dataset", required=True)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--search-steps", type=int, default=200, help="training steps per search trial")
    parser.add_argument("--search-minutes", type=float, default=0, help="start no new trial after this many minutes")
    parser.add_argument("--search-valid-users", type=int, default=0,
                        help="score search trials on a fixed sample of this many validation users (0 = all)")
    parser.add_argument("--search-only", action="store_true",
                        help="search (or resume the search) and keep it, then stop: at cpu-full a search fills most of a "
                        "session, and it resumes, or its plan trains, in the next")
    parser.add_argument("--base", choices=["darec", "pretrained-cf", "pretrained-cf-residual", "pretrained-cf-residual-frozen"],
                        default="darec",
                        help="the DARec setting the plans are searched and trained on: darec_accuracy.py's variant of that "
                        "name (pretrained-cf: the catalogue head on the item embeddings of a SASRec trained first, that "
                        "script's sasrec-same-data run, put back from its kept weights; pretrained-cf-residual: the same "
                        "with that SASRec's own user state plus the LLM's projected; -frozen: with that SASRec kept fixed); runs and rows of a base other "
                        "than darec are NAME@BASE[-TAG]")
    parser.add_argument("--accuracy-workdir", type=Path, default=WORK / "darec_accuracy",
                        help="darec_accuracy.py's runs: the SASRec a pretrained-cf base starts from, and the run of the base "
                        "variant with the same budget and seed, which (or whose kept results), where it has uniform LoRA's "
                        "settings, is uniform LoRA's run")
    parser.add_argument("--lora-r", type=int, default=8, help="rank of the uniform LoRA plan (the searches' parameter cap)")


def _search_files(search_dir: Path, summary_file: Path) -> list[Path]:
    """What is kept of a search (a few hundred KB): its summary, and the optuna study and settings
    it resumes from (trial folders matter only to a trial under way)."""
    return [summary_file, search_dir / STUDY, search_dir / SETTINGS]


def restore_search(search_dir: Path, summary_file: Path) -> None:
    """Put back what :func:`timed_search` kept of a search run on an earlier machine, where this
    one lacks it: a search with its study kept resumes; one with only its summary kept (from
    before studies were kept) gives its plan as it was."""
    for path in _search_files(search_dir, summary_file):
        copy = kept(path)
        if not path.exists() and copy is not None and copy.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            copy_atomic(copy, path)


def timed_search(search_dir: Path, summary_file: Path, new: Callable[[], Search], minutes: float,
                 trials: int, budget: str) -> dict[str, Any]:
    """Run (or resume) the plan search in ``search_dir``, ``new()`` making it the first time;
    a resumed search runs up to ``trials`` in all where that is more than it was begun with
    (as ``darec search --resume --trials`` does). Returns its summary with ``seconds``: its wall
    time over every invocation that ran a trial (kept in ``summary_file``, which also records the summary). The
    summary and the study are kept (see :func:`kept`): a search can span sessions on machines that
    do not outlive them."""
    import yaml

    earlier = yaml.safe_load(summary_file.read_text()) if summary_file.exists() else {"seconds": 0.0}
    start = time.perf_counter()
    resuming = (search_dir / STUDY).exists()
    search = Search.resume(search_dir, trials=trials, minutes=minutes) if resuming else new()
    if earlier.get("trials", 0) < search.config.trials:  # a trial left to train
        refuse_emulated_bf16(search.run_config, budget, f"the search in {search_dir}")
    summary = search.run(resume=resuming)
    # A resume with no trial left to run (one that only reports the search) adds no search time.
    ran = summary["trials"] != earlier.get("trials")
    summary = {**summary, "seconds": earlier["seconds"] + (time.perf_counter() - start if ran else 0.0)}
    atomic_write_text(summary_file, yaml.safe_dump(summary))
    for path in _search_files(search_dir, summary_file):
        copy = kept(path)
        if copy is not None:
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy_atomic(path, copy)
    return summary
