"""Kill ``darec train`` or ``darec search`` with SIGKILL at random moments, resume, and check
that the end equals a run that was never interrupted.

A kill lands either at a random time or at a write: the harness watches the output folder
and kills the moment an atomic write's temporary file appears (a checkpoint, the state,
the weights being copied). The command is then resumed (``--resume``), or started again
when it died before its first commit, and may be killed again, until it finishes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from darec.io import TMP_SUFFIX
from darec.search.study import BEST_PLAN, SETTINGS, STUDY
from darec.train.run import RunDir

TRAIN_ARGS = ["--model", "sasrec", "--dataset", "synthetic-small", "--set", "epochs=6", "--set", "patience=0",
              "--set", "deterministic=true", "--no-progress"]
SEARCH_ARGS = ["--dataset", "synthetic-tiny", "--set", "backbone=tiny", "--set", "item_tokens=4", "--set", "max_len=10",
               "--set", "deterministic=true", "--trials", "4", "--budget", "6", "--rungs", "2", "--sampler", "tpe"]


@dataclass
class Command:
    """How to start, resume and summarise one kind of run in ``out``."""

    name: str
    start: Callable[[Path], list[str]]
    resume: Callable[[Path], list[str]]
    resumable: Callable[[Path], bool]  # has it written enough for a resume to take it from there?
    summary: Callable[[Path], Any]  # what must equal the uninterrupted run's


def _darec(*args: str) -> list[str]:
    return [sys.executable, "-m", "darec", *args]


def train_summary(out: Path) -> Any:
    """What a finished training run must share with an uninterrupted one: results, per-epoch history, weights."""
    from safetensors.torch import load_file

    run = RunDir(out)
    rows = json.loads(run.results.read_text())
    history = [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in run.read_history()]
    weights = {k: v.tolist() for k, v in sorted(load_file(run.best).items())}
    return {"results": rows, "history": history, "weights": weights}


def _search_summary(out: Path) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="darec-plan", storage=f"sqlite:///{out / STUDY}")
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    # Trial numbers may differ (a trial killed mid-way is failed and queued again under a new number).
    trials = [(t.user_attrs.get("plan"), t.state.name, t.value, sorted(t.intermediate_values.items())) for t in finished]
    import yaml

    best = yaml.safe_load((out / BEST_PLAN).read_text())
    return {"trials": trials, "best_plan": best["plan"], "best_value": best["valid_ndcg@10"]}


TRAIN = Command("train", lambda out: _darec("train", *TRAIN_ARGS, "--run-dir", str(out)),
                lambda out: _darec("train", "--resume", str(out), "--no-progress"),
                lambda out: RunDir(out).config.exists(),  # a resume starts again when no checkpoint was committed
                train_summary)
SEARCH = Command("search", lambda out: _darec("search", str(out), *SEARCH_ARGS),
                 lambda out: _darec("search", str(out), "--resume"),
                 lambda out: (out / SETTINGS).exists(), _search_summary)
COMMANDS = {"train": TRAIN, "search": SEARCH}


@dataclass
class KillCase:
    command: str
    seed: int
    kills: list[str] = field(default_factory=list)  # where each kill landed: "t=3.1s" or "write .x.tmp"
    identical: bool = False
    detail: str = ""


def _run(argv: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _temporary(out: Path) -> str | None:
    """An atomic write under way in ``out``: the name of its temporary file, if any."""
    if not out.is_dir():
        return None
    for _, dirs, files in os.walk(out):
        for name in (*files, *dirs):
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                return name
    return None


def _kill_at_random(process: subprocess.Popen, out: Path, rng: random.Random, seconds: float) -> str | None:
    """Kill ``process`` at a random time within ``seconds``, or during a write: the first, second,
    ... eighth atomic write seen after such a time (drawn at random, so kills land in every kind
    of write of an epoch's commit); None when it ended first."""
    at_write = rng.random() < 0.5
    skip = rng.randrange(8)  # writes to let through first
    seen: set[str] = set()
    start = time.monotonic()
    after = start + rng.uniform(0.3, 0.9 * seconds)
    while process.poll() is None:
        now = time.monotonic()
        name = _temporary(out) if at_write and now >= after else None
        if name:
            seen.add(name)
        if (name and len(seen) > skip) or (not at_write and now >= after):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return f"write {name}" if name else f"t={now - start:.1f}s"
        time.sleep(0.0002 if at_write and now >= after else 0.01)
    return None


def reference(command: Command, out: Path, log: Path) -> tuple[Any, float]:
    """An uninterrupted run: its summary and how long it took."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.monotonic()
    process = _run(command.start(out), log)
    if process.wait() != 0:
        raise RuntimeError(f"the uninterrupted {command.name} failed; see {log}")
    return command.summary(out), time.monotonic() - start


def kill_case(command: Command, seed: int, out: Path, log: Path, expected: Any, seconds: float,
              max_kills: int = 2) -> KillCase:
    """Run ``command`` in ``out``, killing it 1 to ``max_kills`` times (starting over when it
    finishes before a kill lands), then let it finish, and compare with ``expected``."""
    rng = random.Random(seed)
    case = KillCase(command.name, seed)
    kills = rng.randint(1, max_kills)
    for attempt in range(10):
        shutil.rmtree(out, ignore_errors=True)
        case.kills = []
        while True:
            argv = command.resume(out) if command.resumable(out) else command.start(out)
            begun = time.monotonic()
            process = _run(argv, log)
            if len(case.kills) < kills:
                where = _kill_at_random(process, out, rng, seconds)
                if where is not None:
                    case.kills.append(where)
                    continue
                # It ended first: the reference ran slower than runs do now (the machine is
                # shared), so later kills are drawn within this run's own time.
                seconds = min(seconds, time.monotonic() - begun)
            if process.wait() != 0:
                case.detail = f"exit {process.returncode} after kills {case.kills}; see {log}"
                return case
            break
        if case.kills:
            break
    try:
        got = command.summary(out)
    except Exception as exc:  # noqa: BLE001  (a run directory that cannot be read is the finding)
        case.detail = f"{type(exc).__name__}: {exc}"
        return case
    case.identical = got == expected
    if not case.identical:
        case.detail = "differs: " + ", ".join(k for k in expected if got.get(k) != expected[k])
    return case
