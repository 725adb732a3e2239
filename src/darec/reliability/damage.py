"""Damaged run directories, a full disk and a read-only run directory.

:func:`damage_cases` damages one file of a finished run (truncated, bytes flipped, deleted,
emptied) and runs ``evaluate``, ``recommend``, ``compare`` and ``train --resume`` on it,
in-process. Each outcome is one of:

- ``clean_error``: exit status 2 and a message naming the damaged file;
- ``recovered``: it succeeded, said which file it passed over, and gave the undamaged
  run's answer (a resume that fell back to the previous checkpoint, weights read from
  the checkpoint that holds the same ones);
- ``unaffected``: the command does not read that file, and gave the undamaged answer;
- ``traceback``: any other exception;
- ``silent``: it succeeded without naming the file, with an answer the damage changed, or
  with an answer from a file it reads.

:func:`disk_full` and :func:`read_only` train into a small in-memory file system (tmpfs,
as root) that fills up, or that is made read-only before a resume; without root, a file
size limit (RLIMIT_FSIZE) and ``chmod`` stand in for them.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from darec.reliability.fuzz import flip_bits
from darec.reliability.kill import train_summary
from darec.train.run import BEST, CONFIG, ID_MAP, OPTIMIZER, STATE, RunDir

FAST = ["--set", "max_len=20", "--set", "hidden_size=16", "--set", "inner_size=32", "--set", "epochs=3",
        "--set", "patience=0", "--set", "deterministic=true", "--no-progress"]
TRAIN = ["train", "--model", "sasrec", "--dataset", "synthetic-tiny", *FAST]

DAMAGES: dict[str, Callable[[bytes, random.Random], bytes | None]] = {
    "truncate": lambda data, rng: data[: rng.randrange(max(1, len(data)))],
    "flip": lambda data, rng: flip_bits(data, rng),
    "empty": lambda data, rng: b"",
    "delete": lambda data, rng: None,
}
# The files of a run directory a command may read: label in rows (the file's name) -> the paths damaged (the same way).
FILES: dict[str, Callable[[Path], list[Path]]] = {
    BEST: lambda run: [RunDir(run).best],
    # the best weights and the checkpoint's copy of them, both: nothing intact is left to fall back to
    f"{BEST}+copy": lambda run: [RunDir(run).best, _newest_checkpoint(run) / BEST],
    "checkpoint": lambda run: [_newest_checkpoint(run) / BEST],
    "checkpoint-state": lambda run: [_newest_checkpoint(run) / STATE],
    "optimizer": lambda run: [_newest_checkpoint(run) / OPTIMIZER],
    STATE: lambda run: [RunDir(run).state],
    CONFIG: lambda run: [RunDir(run).config],
    ID_MAP: lambda run: [RunDir(run).id_map],
}
# Which files each command reads (a damaged file it does not read must leave its answer unchanged).
READS = {
    "evaluate": {BEST, f"{BEST}+copy", STATE, CONFIG, ID_MAP},
    "recommend": {BEST, f"{BEST}+copy", STATE, CONFIG, ID_MAP},
    "compare": {STATE, ID_MAP},  # per-user metrics are saved; a damaged state is still read
    "resume": set(FILES) - {"checkpoint-state"},  # the copy is read only when falling back to that checkpoint
}


def _newest_checkpoint(run: Path) -> Path:
    folders = RunDir(run)
    return folders.checkpoint(folders.checkpoint_epochs()[0])


@dataclass
class DamageCase:
    file: str
    damage: str
    command: str
    outcome: str
    detail: str = ""


def _invoke(args: list[str]) -> tuple[int, str, BaseException | None]:
    from darec.cli import app

    result = CliRunner().invoke(app, args)
    error = result.exception if result.exception and not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.output, error


def _answer(command: str, run: Path, other: Path, history: str) -> tuple[list[str], Callable[[str], Any]]:
    """The command's arguments, and what of its output must equal the undamaged run's."""
    if command == "evaluate":
        return ["evaluate", str(run)], lambda out: [line for line in out.splitlines() if "│" in line]
    if command == "recommend":
        return (["recommend", str(run), "--history", history, "--json"],
                lambda out: json.JSONDecoder().raw_decode(out[out.index("["):])[0])
    if command == "compare":
        return ["compare", str(other), str(run)], lambda out: [line for line in out.splitlines() if "│" in line]
    return ["train", "--resume", str(run), "--no-progress"], lambda out: json.loads(RunDir(run).results.read_text())


def make_runs(workdir: Path) -> tuple[Path, Path]:
    """Two finished runs of the same data (the second with another learning rate), for the damage cases."""
    runs = []
    for name, lr in (("pristine", 1e-3), ("other", 5e-3)):
        run = workdir / name
        if not RunDir(run).results.exists():
            shutil.rmtree(run, ignore_errors=True)
            code, out, error = _invoke([*TRAIN, "--set", f"lr={lr}", "--run-dir", str(run)])
            if code != 0:
                raise RuntimeError(f"training the reference run failed: {error or out}")
        runs.append(run)
    return runs[0], runs[1]


def damage_cases(workdir: Path, seeds: range, commands: tuple[str, ...] = tuple(READS)) -> list[DamageCase]:
    pristine, other = make_runs(workdir)
    history = ",".join(json.loads(RunDir(pristine).id_map.read_text())["items"][1:4])
    expected = {}
    for command in commands:
        copy = workdir / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(pristine, copy)
        args, answer = _answer(command, copy, other, history)
        code, out, error = _invoke(args)
        if code != 0:
            raise RuntimeError(f"{command} fails on an undamaged run: {error or out}")
        expected[command] = answer(out)
    cases = []
    for seed in seeds:
        for file, where in FILES.items():
            for damage, apply in DAMAGES.items():
                for command in commands:
                    cases.append(_case(workdir, pristine, other, history, file, where, damage, apply, command, seed, expected))
    return cases


def _case(workdir: Path, pristine: Path, other: Path, history: str, file: str, where: Callable[[Path], list[Path]],
          damage: str, apply: Callable, command: str, seed: int, expected: dict[str, Any]) -> DamageCase:
    rng = random.Random(f"{file}-{damage}-{command}-{seed}")
    run = workdir / "copy"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(pristine, run)
    paths = where(run)
    data = apply(paths[0].read_bytes(), rng)
    for path in paths:
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
    args, answer = _answer(command, run, other, history)
    code, out, error = _invoke(args)
    named = any(str(path) in "".join(out.split()) for path in paths)  # (rich wraps long lines)
    if error is not None:
        return DamageCase(file, damage, command, "traceback", "".join(traceback.format_exception_only(error)).strip()[:300])
    if code == 2:
        return DamageCase(file, damage, command, "clean_error" if named else "silent", " ".join(out.split())[:300])
    if code != 0:
        return DamageCase(file, damage, command, "traceback", f"exit {code}: {' '.join(out.split())[:300]}")
    same = answer(out) == expected[command]
    if named and same:
        return DamageCase(file, damage, command, "recovered", " ".join(out.split())[:300])
    if same and file not in READS[command]:
        return DamageCase(file, damage, command, "unaffected")
    if same and data is not None and data == where(pristine)[0].read_bytes():
        return DamageCase(file, damage, command, "unaffected", "the damage left the file as it was")
    return DamageCase(file, damage, command, "silent", f"{'same' if same else 'changed'} answer, file not named")


# -- a full disk, a read-only run directory ---------------------------------------------------------

def _mount(folder: Path, size: str) -> bool:
    """A tmpfs of ``size`` at ``folder`` (root only); False where it cannot be mounted."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True).returncode == 0


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], capture_output=True)


def _train(argv: list[str], file_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        if file_limit is not None:
            import signal

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, writes fail with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run([sys.executable, "-m", "darec", *argv], capture_output=True, text=True, preexec_fn=limit)


def disk_full(workdir: Path, seed: int) -> dict[str, Any]:
    """Train into a file system that fills up part of the way; the run must stop with a clear
    error, its last checkpoint must load, and, given room, a resume must end as the
    uninterrupted run did."""
    from darec.train.run import RunDir, load_run

    reference = workdir / "reference"
    if not RunDir(reference).results.exists():
        shutil.rmtree(reference, ignore_errors=True)
        _train([*TRAIN, "--run-dir", str(reference)]).check_returncode()
    size = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file())
    rng = random.Random(seed)
    room = workdir / f"full-{seed}"
    share = rng.uniform(0.25, 0.8)
    mounted = _mount(room, str(int(size * share)))
    run = room / "run"
    first = _train([*TRAIN, "--run-dir", str(run)], None if mounted else int(size * share / 6))
    row: dict[str, Any] = {"method": "tmpfs" if mounted else "RLIMIT_FSIZE", "room": round(share, 2),
                           "exit": first.returncode, "message": " ".join(first.stderr.split()[-40:])}
    try:
        if first.returncode == 0:
            row["outcome"] = "finished"  # the room was enough: nothing to check
            return row
        if first.returncode != 2 or "Traceback" in first.stderr:
            row["outcome"] = "traceback"
            return row
        ok = "cannot write" in first.stderr or "cannot write" in first.stdout
        loadable = True
        try:
            state, _ = RunDir(run).resume_point()
            if RunDir(run).best.exists():
                load_run(run, device="cpu")
        except FileNotFoundError:
            state = None  # it stopped before the first checkpoint: nothing to load, start again
        except Exception as exc:  # noqa: BLE001
            loadable, row["detail"] = False, f"{type(exc).__name__}: {exc}"
        if mounted:
            subprocess.run(["mount", "-o", f"remount,size={size * 4}", str(room)], capture_output=True)
        argv = ["train", "--resume", str(run), "--no-progress"] if state is not None else [*TRAIN, "--run-dir", str(run)]
        second = _train(argv)
        identical = second.returncode == 0 and train_summary(run) == train_summary(reference)
        row.update(resumed_exit=second.returncode, identical=identical, loadable=loadable)
        row["outcome"] = "clean_error" if ok and loadable and identical else "silent" if not ok else "failed"
        return row
    finally:
        if mounted:
            _unmount(room)
        shutil.rmtree(room, ignore_errors=True)


def read_only(workdir: Path) -> dict[str, Any]:
    """Resume a run whose directory is read-only: a clear error at once; evaluating it still
    works; made writable again, the resume ends as the uninterrupted run did."""
    reference = workdir / "reference"
    if not RunDir(reference).results.exists():
        shutil.rmtree(reference, ignore_errors=True)
        _train([*TRAIN, "--run-dir", str(reference)]).check_returncode()
    room = workdir / "read-only"
    mounted = _mount(room, "64M")
    run = room / "run"
    try:
        _train([*TRAIN, "--run-dir", str(run), "--set", "epochs=2"]).check_returncode()
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(room)], check=True, capture_output=True)
        else:
            for p in [run, *run.rglob("*")]:
                p.chmod(p.stat().st_mode & ~0o222)
        resumed = _train(["train", "--resume", str(run), "--set", "epochs=3", "--no-progress"])
        evaluated = _train(["evaluate", str(run)])
        if mounted:
            subprocess.run(["mount", "-o", "remount,rw", str(room)], check=True, capture_output=True)
        else:
            for p in [run, *run.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)
        again = _train(["train", "--resume", str(run), "--set", "epochs=3", "--no-progress"])
        identical = again.returncode == 0 and train_summary(run) == train_summary(reference)
        clear = resumed.returncode == 2 and "cannot write" in resumed.stderr and "Traceback" not in resumed.stderr
        return {"method": "tmpfs remounted read-only" if mounted else "chmod a-w", "exit": resumed.returncode,
                "message": " ".join(resumed.stderr.split()[-30:]), "evaluate_exit": evaluated.returncode,
                "identical": identical, "outcome": "clean_error" if clear and evaluated.returncode == 0 and identical else
                "traceback" if "Traceback" in resumed.stderr else "silent" if resumed.returncode == 0 else "failed"}
    finally:
        if mounted:
            _unmount(room)
        shutil.rmtree(room, ignore_errors=True)
