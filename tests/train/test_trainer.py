from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from darec.config import ConfigError
from darec.errors import InputError
from darec.io import DamagedFile
from darec.train import Trainer, build_config
from darec.train.run import RunDir, load_run
from darec.train.trainer import lr_factor, seconds_per_epoch, trained_threads

FAST = ["dataset=synthetic-tiny", "max_len=20", "hidden_size=16", "inner_size=32", "batch_size=16", "patience=0"]
TINY_DAREC = ["model=darec", "backbone=tiny", "item_tokens=4", "lora_r=2", "dataset=synthetic-tiny", "max_len=8", "compile=off"]


class Stop(Exception):
    pass


def _history(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]


@pytest.mark.parametrize("model", ["sasrec", "bert4rec", "gru4rec"])
def test_resume_matches_uninterrupted_run(tmp_path: Path, model: str) -> None:
    # deterministic: on CUDA, embedding gradients are summed by atomics in any order. A warmup and cosine
    # decay: the resumed run must pick the schedule up where it stopped (each epoch's lr is in the history).
    overrides = [f"model={model}", "epochs=4", "deterministic=true", "lr_schedule=cosine", "warmup_ratio=0.3",
                 *[o for o in FAST if model != "gru4rec" or "inner" not in o]]
    whole = Trainer(build_config(overrides=overrides), tmp_path / "whole", progress=False).fit()

    def interrupt(epoch: int) -> None:
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        Trainer(build_config(overrides=overrides), tmp_path / "cut", progress=False).fit(on_epoch_end=interrupt)
    assert json.loads((tmp_path / "cut" / "trainer_state.json").read_text())["epoch"] == 2
    assert not (tmp_path / "cut" / "results.json").exists()
    resumed = Trainer(None, tmp_path / "cut", resume=True, progress=False).fit()
    assert resumed == whole
    assert _history(tmp_path / "cut") == _history(tmp_path / "whole")
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The newest checkpoint and the one before it (to fall back to if the newest is damaged).
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]


def test_learning_rate_schedules(tmp_path: Path) -> None:
    assert [lr_factor("constant", 2, 10, s) for s in (0, 1, 2, 9)] == [0, 0.5, 1, 1]
    assert [lr_factor("linear", 0, 10, s) for s in (0, 5, 10, 12)] == [1, 0.5, 0, 0]
    assert [lr_factor("cosine", 2, 12, s) for s in (1, 2, 7, 12)] == pytest.approx([0.5, 1, 0.5, 0])
    trainer = Trainer(build_config(overrides=[*FAST, "epochs=3", "lr_schedule=linear", "warmup_ratio=0.5"]), tmp_path / "r", progress=False)
    trainer.fit()
    n = trainer._steps_per_epoch()
    warmup = round(1.5 * n)  # up for an epoch and a half, then down to 0 at the end of the third
    expected = [1e-3 * n / warmup, 1e-3 * (1 - (2 * n - warmup) / (3 * n - warmup)), 0.0]
    assert [h["lr"] for h in _history(tmp_path / "r")] == pytest.approx(expected)
    with pytest.raises(ConfigError, match=r"train.warmup_ratio: must be < 1, got 1"):
        build_config(overrides=[*FAST, "warmup_ratio=1"])


def test_run_directory_contents_and_reload(tmp_path: Path) -> None:
    rows = Trainer(build_config(overrides=[*FAST, "epochs=3", "eval_every=2"]), tmp_path / "r", progress=False).fit()
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"config.yaml", "id_map.json", "model.safetensors", "trainer_state.json", "metrics.jsonl", "results.json"} <= files
    assert not [f for f in files if f.endswith(".tmp")]
    history = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert ["valid" in h for h in history] == [False, True, True]  # every 2 epochs, and the last
    assert {(r["split"], r["protocol"]) for r in rows} == {("valid", "full"), ("test", "full")}  # 40 items: no 100 negatives
    loaded = load_run(tmp_path / "r")
    assert loaded.id_map["items"][0] == "[PAD]" and loaded.model.n_items == len(loaded.id_map["items"]) - 1
    with pytest.raises(FileExistsError):
        Trainer(build_config(overrides=FAST), tmp_path / "r", progress=False)


def test_a_bf16_run_is_scored_in_bf16_only_where_the_cpu_multiplies_bf16_natively(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import darec.device

    Trainer(build_config(overrides=[*TINY_DAREC, "precision=bf16", "epochs=1"]), tmp_path / "r", progress=False).fit(
        final_evaluation=False)
    for native, precision in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(darec.device, "fast_cpu_bf16", lambda native=native: native)
        model = load_run(tmp_path / "r", device="cpu").model
        backbone = {p.dtype for name, p in model.named_parameters() if name in model.rebuilt_state_keys()}
        assert model.precision == precision and backbone == {getattr(torch, {"bf16": "bfloat16", "fp32": "float32"}[precision])}


def test_the_precision_auto_chose_on_a_cpu_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import darec.device
    from rich.console import Console

    for native, said in ((True, "precision auto: bf16"), (False, "precision auto: fp32 (this CPU has no AMX-BF16")):
        monkeypatch.setattr(darec.device, "fast_cpu_bf16", lambda native=native: native)
        out = io.StringIO()
        Trainer(build_config(overrides=[*TINY_DAREC, "device=cpu"]), tmp_path / str(native), console=Console(file=out, width=300),
                progress=False).release()
        assert said in out.getvalue()


def test_a_stop_request_ends_the_run_at_its_next_step_validated_and_evaluated(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    with pytest.raises(InputError, match="not a run directory that has begun"):
        run.request_stop()
    trainer = Trainer(build_config(overrides=[*FAST, "epochs=5", "eval_every=3"]), run.path, progress=False)
    steps = []
    loss = trainer.model.loss
    trainer.model.loss = lambda batch: (steps.append(trainer.state["epoch"] + 1), loss(batch))[1]
    rows = trainer.fit(on_epoch_end=lambda epoch: run.request_stop() if epoch == 1 else None)
    state = run.read_state()
    assert state["finished"] and state["stopped"] == "stop requested" and state["epoch"] == 2
    assert steps.count(2) == 1 < steps.count(1)  # the second epoch ended at its first step (the check is after it)
    history = _history(run.path)
    assert ["valid" in h for h in history] == [False, True]  # validated though eval_every is 3
    assert [h.get("cut") for h in history] == [None, "stop requested"]
    # The one-step epoch is not an epoch's time.
    assert seconds_per_epoch(run.path) == run.read_history()[0]["train_seconds"]
    assert {r["split"] for r in rows} == {"valid", "test"} and not run.stop_request.exists()
    with pytest.raises(InputError, match="already finished"):
        run.request_stop()


def test_a_run_cut_by_a_stop_request_is_marked_stopped_even_where_its_validation_ends_patience(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    trainer = Trainer(build_config(overrides=[*FAST, "epochs=5", "patience=1"]), run.path, progress=False)
    validate = trainer._validate
    # Each validation scores worse than the one before: the cut epoch's would end the run by patience.
    trainer._validate = lambda *a: {**validate(*a), "ndcg@10": 1.0 / (trainer.state["epoch"] + 1)}
    trainer.fit(on_epoch_end=lambda epoch: run.request_stop() if epoch == 1 else None)
    state = run.read_state()
    assert state["epoch"] == 2 and state["bad_evals"] == 1 and state["stopped"] == "stop requested"


def test_each_epoch_records_the_threads_it_was_trained_with(tmp_path: Path) -> None:
    # A resume may change train.threads; the run's config then says only the last count.
    before = torch.get_num_threads()
    try:
        Trainer(build_config(overrides=[*FAST, "epochs=1", "threads=1"]), tmp_path / "r", progress=False).fit()
        Trainer(None, tmp_path / "r", resume=True, progress=False, overrides=["epochs=3", "threads=2"]).fit()
    finally:
        torch.set_num_threads(before)
    assert [h["threads"] for h in _history(tmp_path / "r")] == [1, 2, 2]
    assert trained_threads(tmp_path / "r") == [1, 2]


def test_early_stopping_keeps_best_weights(tmp_path: Path) -> None:
    # A learning rate this high diverges after the first epochs; early stopping ends the run.
    Trainer(build_config(overrides=[*FAST, "epochs=40", "patience=2", "lr=0.3", "grad_clip=0"]), tmp_path / "r", progress=False).fit()
    state = json.loads((tmp_path / "r" / "trainer_state.json").read_text())
    assert state["finished"] and state["epoch"] < 40 and state["bad_evals"] == 2
    assert state["epoch"] == state["best_epoch"] + 2


def test_most_popular_needs_no_training(tmp_path: Path) -> None:
    rows = Trainer(build_config(overrides=["model=pop", "dataset=synthetic-tiny"]), tmp_path / "p", progress=False).fit()
    assert rows[0]["ndcg@10"] > 0
    assert load_run(tmp_path / "p").model.counts.sum() > 0


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    from darec.models import build_model
    from darec.train.checkpoint import load_model_state

    config = build_config(overrides=[*FAST, "epochs=1"])
    Trainer(config, tmp_path / "r", progress=False).fit()
    other = build_model(config.model, n_items=7, max_len=20)
    with pytest.raises(ValueError, match="model.safetensors: weights do not fit the model"):
        load_model_state(other, tmp_path / "r" / "model.safetensors")


def test_time_limit_ends_the_run_with_a_validated_result(tmp_path: Path) -> None:
    # A limit already spent: one step of the first epoch, then validation, then the result.
    rows = Trainer(build_config(overrides=[*FAST, "epochs=50", "eval_every=5", "max_minutes=1e-9"]), tmp_path / "r",
                   progress=False).fit()
    state = json.loads((tmp_path / "r" / "trainer_state.json").read_text())
    assert state["finished"] and state["stopped"] == "time limit" and state["epoch"] == 1 and state["best_epoch"] == 1
    assert "valid" in _history(tmp_path / "r")[0] and {r["split"] for r in rows} == {"valid", "test"}


def test_a_finished_run_goes_on_with_a_larger_budget(tmp_path: Path) -> None:
    whole = Trainer(build_config(overrides=[*FAST, "epochs=4"]), tmp_path / "whole", progress=False).fit()
    Trainer(build_config(overrides=[*FAST, "epochs=2"]), tmp_path / "r", progress=False).fit()
    # Resumed as it is, a finished run stays finished.
    Trainer(None, tmp_path / "r", resume=True, progress=False).fit()
    assert json.loads((tmp_path / "r" / "trainer_state.json").read_text())["epoch"] == 2
    extended = Trainer(None, tmp_path / "r", resume=True, progress=False, overrides=["epochs=4"]).fit()
    assert extended == whole and _history(tmp_path / "r") == _history(tmp_path / "whole")
    assert load_run(tmp_path / "r").config.train.epochs == 4
    with pytest.raises(ConfigError, match="model.hidden_size"):
        Trainer(None, tmp_path / "r", resume=True, progress=False, overrides=["hidden_size=32"])


def test_a_finished_run_whose_checkpoints_are_gone_is_evaluated_but_cannot_go_on(tmp_path: Path) -> None:
    import shutil

    rows = Trainer(build_config(overrides=[*FAST, "epochs=2"]), tmp_path / "r", progress=False).fit()
    for folder in (tmp_path / "r").glob("checkpoint-*"):
        shutil.rmtree(folder)  # deleted to save space: the best weights and results stay
    config = (tmp_path / "r" / "config.yaml").read_text()
    (tmp_path / "r" / "results.json").unlink()  # so its evaluation is redone, from the best weights alone
    assert Trainer(None, tmp_path / "r", resume=True, progress=False).fit() == rows
    with pytest.raises(ConfigError, match="checkpoint is gone, so it cannot train past epoch 2"):
        Trainer(None, tmp_path / "r", resume=True, progress=False, overrides=["epochs=4"])
    assert (tmp_path / "r" / "config.yaml").read_text() == config  # the refused budget is not written
    assert Trainer(None, tmp_path / "r", resume=True, progress=False).fit() == rows  # its kept evaluation, read
    for gone in ("model.safetensors", "results.json"):  # no best weights either: nothing to score
        (tmp_path / "r" / gone).unlink()
    with pytest.raises(DamagedFile, match="model.safetensors: missing .* checkpoints are gone too"):
        Trainer(None, tmp_path / "r", resume=True, progress=False).fit()


def test_a_finished_run_asked_again_reads_its_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import darec.train.trainer as trainer_module

    rows = Trainer(build_config(overrides=[*FAST, "epochs=1"]), tmp_path / "r", progress=False).fit()
    scored = []
    real = trainer_module.result_rows
    monkeypatch.setattr(trainer_module, "result_rows", lambda *a, **k: scored.append(1) or real(*a, **k))
    assert Trainer(None, tmp_path / "r", resume=True, progress=False).fit() == rows and not scored
    # What the evaluation depends on changed (here the config, through a setting a resume may change): scored again.
    again = Trainer(None, tmp_path / "r", resume=True, progress=False, overrides=["eval_batch_size=7"]).fit()
    assert scored == [1] and [r["ndcg@10"] for r in again] == [r["ndcg@10"] for r in rows]
    (tmp_path / "r" / "per_user_test.safetensors").unlink()  # a file the kept evaluation needs is gone: scored again
    Trainer(None, tmp_path / "r", resume=True, progress=False, overrides=["eval_batch_size=7"]).fit()
    assert scored == [1, 1] and (tmp_path / "r" / "per_user_test.safetensors").exists()


def test_validation_on_a_fixed_sample_of_users(tmp_path: Path) -> None:
    full = Trainer(build_config(overrides=[*FAST, "epochs=1"]), tmp_path / "a", progress=False)
    some = Trainer(build_config(overrides=[*FAST, "epochs=1", "valid_users=10"]), tmp_path / "b", progress=False)
    histories, targets = some.valid
    assert len(targets) == 10 < len(full.valid[1])
    # Whole users are sampled: each kept history keeps its own target.
    pairs = {(tuple(h), int(t)) for h, t in zip(*full.valid)}
    assert all((tuple(h), int(t)) in pairs for h, t in zip(histories, targets))
    some.fit()
    resumed = Trainer(None, tmp_path / "b", resume=True, progress=False)
    assert resumed.valid[1].tolist() == targets.tolist()
    with pytest.raises(ConfigError, match="valid_users"):
        Trainer(build_config(overrides=[*FAST, "valid_users=-1"]), tmp_path / "c", progress=False)


def test_a_nan_loss_or_nan_scores_stop_the_run_naming_the_epoch(tmp_path: Path) -> None:
    from darec.train.evaluate import NonFiniteScores

    trainer = Trainer(build_config(overrides=[*FAST, "epochs=3"]), tmp_path / "loss", progress=False)

    def poison(epoch: int) -> None:
        if epoch == 1:
            for p in trainer.model.parameters():
                p.data.fill_(float("nan"))

    with pytest.raises(NonFiniteScores, match=r"epoch 2: the training loss is nan at step 1; the model has diverged"):
        trainer.fit(on_epoch_end=poison)
    assert json.loads((tmp_path / "loss" / "trainer_state.json").read_text())["checkpoint"] == "checkpoint-1"
    # Scores that are NaN at validation (the loss was fine): the target never ranks first.
    trainer = Trainer(build_config(overrides=[*FAST, "epochs=2"]), tmp_path / "scores", progress=False)
    width = trainer.model.item_vectors()[0].size(1)
    trainer.model.user_states = lambda items, lengths: torch.full((len(items), width), float("nan"))
    with pytest.raises(NonFiniteScores, match=r"epoch 1: validation: the model scores items NaN or infinite"):
        trainer.fit()


def test_a_relative_data_path_is_stored_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from darec.data import generate, spec_for
    from darec.data.download import write_atomic_files

    write_atomic_files(generate(spec_for("synthetic-tiny", 0)), tmp_path / "data" / "mine", "mine")
    monkeypatch.chdir(tmp_path)
    Trainer(build_config(overrides=[*FAST, "dataset=data/mine", "epochs=1"]), tmp_path / "r", progress=False).fit()
    assert load_run(tmp_path / "r").config.data.dataset == str(tmp_path / "data" / "mine")
    monkeypatch.chdir(tmp_path / "data")  # evaluated and resumed from elsewhere
    from darec.train.run import load_run_dataset

    assert load_run_dataset(tmp_path / "r", load_run(tmp_path / "r").config).n_users > 0


def test_a_resume_cannot_shrink_the_budget_below_what_was_done(tmp_path: Path) -> None:
    Trainer(build_config(overrides=[*FAST, "epochs=3"]), tmp_path / "r", progress=False).fit()
    before = (tmp_path / "r" / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"train.epochs=1: this run has already trained 3 epochs"):
        Trainer(None, tmp_path / "r", resume=True, progress=False, overrides=["epochs=1"])
    assert (tmp_path / "r" / "config.yaml").read_text() == before


def test_a_finished_run_keeps_the_budget_it_ran_under_when_a_new_one_does_not_let_it_go_on(tmp_path: Path) -> None:
    # Early-stopped with patience 2; resumed with patience 1 (spent) it trains nothing, so its config must still say 2.
    Trainer(build_config(overrides=[*FAST, "epochs=40", "patience=2", "lr=0.3", "grad_clip=0"]), tmp_path / "r",
            progress=False).fit()
    state = json.loads((tmp_path / "r" / "trainer_state.json").read_text())
    assert state["epoch"] < 40 and state["bad_evals"] == 2
    resumed = Trainer(None, tmp_path / "r", resume=True, progress=False, overrides=["patience=1", "eval_batch_size=7"])
    assert load_run(tmp_path / "r").config.train.patience == 2 and resumed.config.train.patience == 2
    assert resumed.config.train.eval_batch_size == 7  # other resumable settings still change
    resumed.release()
    # A budget that does let it go on is written: patience 5 reopens it.
    reopened = Trainer(None, tmp_path / "r", resume=True, progress=False, overrides=["patience=5"])
    assert load_run(tmp_path / "r").config.train.patience == 5 and not reopened.state["finished"]
    reopened.release()


def test_leftovers_of_interrupted_writes_are_removed_and_a_run_without_checkpoint_starts_again(tmp_path: Path) -> None:
    run = tmp_path / "r"
    trainer = Trainer(build_config(overrides=[*FAST, "epochs=2"]), run, progress=False)  # config and id map written
    (run / ".model.safetensors.abc123.tmp").write_bytes(b"half")
    (run / "checkpoint-1").mkdir()
    (run / "checkpoint-1" / ".rng.safetensors.x.tmp").write_bytes(b"half")
    del trainer
    resumed = Trainer(None, run, resume=True, progress=False)  # no trainer_state.json: starts from config.yaml
    assert not list(run.rglob("*.tmp"))
    rows = resumed.fit()
    assert rows and json.loads((run / "trainer_state.json").read_text())["epoch"] == 2


def test_run_directories_from_before_checksums_still_load_and_resume(tmp_path: Path) -> None:
    run = tmp_path / "old"
    Trainer(build_config(overrides=[*FAST, "epochs=2"]), run, progress=False).fit()
    state = json.loads((run / "trainer_state.json").read_text())
    for key in ("seal", "checksums", "best_sha256", "config_sha256", "id_map_sha256"):
        state.pop(key)
    state["finished"] = False
    (run / "trainer_state.json").write_text(json.dumps(state))
    for folder in run.glob("checkpoint-*"):
        (folder / "trainer_state.json").unlink()  # older checkpoints held no copy of the state
    assert load_run(run).config.train.epochs == 2
    rows = Trainer(None, run, resume=True, progress=False, overrides=["epochs=3"]).fit()
    assert rows and json.loads((run / "trainer_state.json").read_text())["epoch"] == 3


def test_progress_display_covers_validation_and_the_final_evaluation(tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    out = StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    Trainer(build_config(overrides=["model=sasrec", "epochs=2", *FAST]), tmp_path / "run", console=console).fit()
    shown = out.getvalue()
    # Each display is drawn once more as it closes: training's last state is the last epoch's validation.
    assert "epoch 2/2, validating" in shown and "evaluating the best weights on test" in shown


def test_a_run_being_trained_is_refused_to_a_second_trainer(tmp_path: Path) -> None:
    from darec.errors import RunInUse

    first = Trainer(build_config(overrides=[*FAST, "epochs=1"]), tmp_path / "r", progress=False)
    first.fit()
    started = Trainer(None, tmp_path / "r", resume=True, progress=False, overrides=["epochs=2"])
    # Until `started` has finished, the run is its own: a second resume (another process, or a
    # second trainer here) is refused with who holds it, and nothing of the run is touched.
    state = (tmp_path / "r" / "trainer_state.json").read_text()
    with pytest.raises(RunInUse, match=f"another process \\(pid {os.getpid()}\\)"):
        Trainer(None, tmp_path / "r", resume=True, progress=False, overrides=["epochs=3"])
    assert (tmp_path / "r" / "trainer_state.json").read_text() == state
    started.fit()
    assert len(Trainer(None, tmp_path / "r", resume=True, progress=False).state["history"]) == 2  # free again


def test_a_trainer_that_fails_to_start_leaves_the_run_free(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import darec.train.trainer as trainer_module

    Trainer(build_config(overrides=[*FAST, "epochs=1"]), tmp_path / "r", progress=False).fit()

    def unreadable(*args: object, **kwargs: object) -> None:
        raise OSError("the data cannot be read")
    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "load_dataset", unreadable)
        # A resume takes the run before it reads the data; the failed trainer stays referenced
        # (by the traceback kept here), so only an explicit release frees the run.
        with pytest.raises(OSError, match="cannot be read") as failed:
            Trainer(None, tmp_path / "r", resume=True, progress=False, overrides=["epochs=2"])
    assert failed.traceback  # still alive
    Trainer(None, tmp_path / "r", resume=True, progress=False, overrides=["epochs=2"]).fit()
