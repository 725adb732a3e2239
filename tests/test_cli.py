from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from darec.cli import app

runner = CliRunner()
FAST = ["--set", "max_len=20", "--set", "hidden_size=16", "--set", "inner_size=32", "--set", "epochs=2", "--no-progress"]


def test_train_evaluate_recommend(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--model", "sasrec", "--dataset", "synthetic-tiny", "--run-dir", str(run), *FAST])
    assert result.exit_code == 0, result.output
    assert "ndcg@10" in result.output and (run / "results.json").exists()

    result = runner.invoke(app, ["evaluate", str(run), "--split", "valid"])
    assert result.exit_code == 0, result.output
    valid = next(r for r in json.loads((run / "results.json").read_text()) if r["split"] == "valid")
    assert f"{valid['ndcg@10']:.4f}" in result.output  # re-evaluation reproduces the stored figure
    result = runner.invoke(app, ["evaluate", str(run), "--groups"])
    assert result.exit_code == 0, result.output
    assert all(g in result.output for g in ("head-items", "tail-items", "short-users", "long-users"))

    items = json.loads((run / "id_map.json").read_text())["items"]
    history = ",".join(items[1:4])
    result = runner.invoke(app, ["recommend", str(run), "--history", history, "-k", "5", "--json"])
    assert result.exit_code == 0, result.output
    recs = json.loads(result.output)
    assert len(recs) == 5 and not {r["item"] for r in recs} & set(items[1:4])
    assert all(r["title"] for r in recs)  # titles come back with the original ids

    result = runner.invoke(app, ["recommend", str(run), "--history", "nope"])
    assert result.exit_code == 2 and "unknown item id" in result.output


def test_resume_from_the_command_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", "--dataset", "synthetic-tiny", "--run-dir", str(run), *FAST]).exit_code == 0
    result = runner.invoke(app, ["train", "--resume", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output  # a finished run resumes to the same results
    result = runner.invoke(app, ["train", "--resume", str(run), "--set", "epochs=3", "--no-progress"])
    assert result.exit_code == 0 and "continuing after epoch 2" in result.output, result.output
    assert json.loads((run / "trainer_state.json").read_text())["epoch"] == 3
    result = runner.invoke(app, ["train", "--resume", str(run), "--model", "gru4rec"])
    assert result.exit_code == 2 and "own settings" in result.output


def test_stop_asks_a_run_in_progress_to_stop_and_refuses_others(tmp_path: Path) -> None:
    from darec.train import Trainer, build_config

    run = tmp_path / "run"
    result = runner.invoke(app, ["stop", str(run)])
    assert result.exit_code == 2 and "not a run directory that has begun" in " ".join(result.output.split()), result.output
    trainer = Trainer(build_config(overrides=["dataset=synthetic-tiny", "max_len=20", "hidden_size=16", "epochs=3"]), run,
                      progress=False)
    trainer.fit(on_epoch_end=lambda epoch: runner.invoke(app, ["stop", str(run)]) if epoch == 1 else None)
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["stopped"] == "stop requested" and state["epoch"] == 2 and (run / "results.json").exists()
    result = runner.invoke(app, ["stop", str(run)])
    assert result.exit_code == 2 and "already finished" in " ".join(result.output.split()), result.output


def test_config_errors_are_clear(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--dataset", "synthetic-tiny", "--set", "learning_rate=1", "--run-dir", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown key" in result.output
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epohcs: 3\n")
    result = runner.invoke(app, ["train", "--config", str(config), "--run-dir", str(tmp_path / "y")])
    assert result.exit_code == 2 and "Did you mean 'epochs'" in result.output
    # The value is shown as typed: brackets (a plan, a list) are not taken for the console's markup.
    result = runner.invoke(app, ["train", "--set", "plan=[moe[houlsby:16, ia3]:k=2]", "--run-dir", str(tmp_path / "p")])
    assert result.exit_code == 2 and "plan=[moe[houlsby:16, ia3]:k=2]" in " ".join(result.output.split()), result.output
    result = runner.invoke(app, ["train", "--dataset", "no-such-data", "--run-dir", str(tmp_path / "z")])
    assert result.exit_code == 2 and "no such data set" in result.output
    # Nothing is named or written for a run that never started.
    assert "run directory" not in result.output and not (tmp_path / "z").exists()


def test_config_show_and_data_commands(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "show", "bert4rec"])
    assert result.exit_code == 0 and "model.mask_prob" in result.output and "train.lr" in result.output
    out = tmp_path / "synth"
    result = runner.invoke(app, ["data", "synth", str(out), "--size", "tiny", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "synth.inter").exists() and (out / "synth.item").exists()
    result = runner.invoke(app, ["data", "stats", str(out)])
    assert result.exit_code == 0 and "users" in result.output and "60" in result.output


def test_quickstart_trains_on_ml100k_when_present(tmp_path: Path, shared_data: Path, monkeypatch) -> None:
    monkeypatch.setenv("DAREC_DATA", str(shared_data))
    result = runner.invoke(app, ["quickstart", "--epochs", "1", "--run-dir", str(tmp_path / "q"), "--no-llm", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "sasrec on ml-100k" in result.output and (tmp_path / "q" / "sasrec" / "results.json").exists()
    assert "DARec not trained: --no-llm" in result.output


def test_quickstart_trains_a_darec_on_its_sasrec_and_prints_both(tmp_path: Path, monkeypatch) -> None:
    import darec.device

    monkeypatch.setattr(darec.device, "fast_cpu_bf16", lambda: True)  # the fast path, whatever this CPU
    args = ["quickstart", "--dataset", "synthetic-tiny", "--epochs", "2", "--backbone", "tiny", "--run-dir", str(tmp_path / "q"),
            "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    darec_config = (tmp_path / "q" / "darec" / "config.yaml").read_text()
    assert f"cf_run: {tmp_path / 'q' / 'sasrec'}" in darec_config and "keep_layers: 2" in darec_config
    table = result.output[result.output.index("test split, full ranking"):]
    for name in ("sasrec", "darec"):
        test = next(r for r in json.loads((tmp_path / "q" / name / "results.json").read_text())
                    if r["split"] == "test" and r["protocol"] == "full")
        assert f"{test['ndcg@10']:.4f}" in table.split(name, 1)[1].splitlines()[0]  # each row shows its own run
    monkeypatch.setattr(darec.device, "fast_cpu_bf16", lambda: False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    result = runner.invoke(app, [*args[:-3], "--run-dir", str(tmp_path / "slow"), "--no-progress"])
    assert result.exit_code == 0 and "DARec not trained: no GPU, and this CPU has no native bf16" in result.output


def test_sampled_protocol_from_the_command_line(tmp_path: Path) -> None:
    run = tmp_path / "pop"
    result = runner.invoke(app, ["train", "--model", "pop", "--dataset", "synthetic", "--run-dir", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(run), "--protocol", "sampled"])
    assert result.exit_code == 0, result.output
    row = next(r for r in json.loads((run / "results.json").read_text()) if r["protocol"] == "sampled100" and r["split"] == "test")
    assert "sampled100" in result.output and f"{row['ndcg@10']:.4f}" in result.output
    result = runner.invoke(app, ["evaluate", str(run), "--protocol", "sample"])
    assert result.exit_code == 2 and "--protocol is full or sampled" in result.output


def test_download_errors_are_clear(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "download", "ml-1n", "--data-root", str(tmp_path)])
    assert result.exit_code == 2 and "Did you mean 'ml-1m'" in result.output


def test_search_then_train_with_the_best_plan(tmp_path: Path) -> None:
    tiny = ["--set", "backbone=tiny", "--set", "item_tokens=4", "--set", "max_len=10"]
    result = runner.invoke(app, ["search", str(tmp_path / "s"), "--dataset", "synthetic-tiny", *tiny, "--trials", "2",
                                 "--budget", "4", "--rungs", "1", "--sampler", "tpe", "--start-with", "ia3"])
    assert result.exit_code == 0, result.output
    assert "best of 2 trials" in result.output and (tmp_path / "s" / "best_plan.yaml").exists()
    import yaml

    first = yaml.safe_load((tmp_path / "s" / "trials" / "trial-0" / "config.yaml").read_text())["model"]["plan"]
    assert first == ["ia3", "ia3"]  # the tiny backbone's two layers
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--model", "darec", "--dataset", "synthetic-tiny", *tiny, "--set", "epochs=1",
                                 "--plan", str(tmp_path / "s" / "best_plan.yaml"), "--run-dir", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((run / "config.yaml").read_text())["model"]["plan"]
    assert saved == yaml.safe_load((tmp_path / "s" / "best_plan.yaml").read_text())["plan"]
    result = runner.invoke(app, ["search", str(tmp_path / "s2"), "--model", "sasrec", "--dataset", "synthetic-tiny"])
    assert result.exit_code == 2 and "no adapter plan to search" in result.output


def test_embed_writes_a_file_the_data_set_accepts(tmp_path: Path) -> None:
    from darec.data import load_dataset
    from darec.models.llm.llmemb import load_item_embeddings

    out = tmp_path / "items.safetensors"
    result = runner.invoke(app, ["embed", str(out), "--dataset", "synthetic-tiny", "--method", "llm", "--backbone", "tiny",
                                 "--dim", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert load_item_embeddings(out, load_dataset("synthetic-tiny")).shape == (40, 4)
    result = runner.invoke(app, ["embed", str(out), "--dataset", "synthetic-tiny", "--set", "metod=llm"])
    assert result.exit_code == 2 and "Did you mean 'method'" in result.output
