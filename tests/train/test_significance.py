from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from darec.cli import app
from darec.errors import InputError
from darec.io import DamagedFile
from darec.train import Trainer, build_config
from darec.train.groups import user_groups
from darec.train.run import load_run_dataset, read_config
from darec.train.run import RunDir, load_run
from darec.train.significance import compare_runs, paired_comparison, per_user_metrics


def test_paired_comparison_of_equal_better_and_mismatched_users() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(500)
    same = paired_comparison(a, a.copy(), samples=2000)
    assert same["difference"] == 0 and same["ci_low"] == same["ci_high"] == 0 and same["p_value"] == 1
    # A real but small gain, well under the users' own spread: visible once paired.
    b = a + 0.02 + rng.normal(0, 0.01, 500)
    better = paired_comparison(a, b, samples=2000)
    assert better["difference"] == pytest.approx(b.mean() - a.mean())
    assert 0 < better["ci_low"] < better["difference"] < better["ci_high"] and better["p_value"] < 1e-6
    # Noise alone: the interval straddles zero.
    noise = paired_comparison(a, a + rng.normal(0, 0.01, 500), samples=2000)
    assert noise["ci_low"] < 0 < noise["ci_high"]
    with pytest.raises(ValueError, match=r"one value per user in both: got \(500,\) and \(499,\)"):
        paired_comparison(a, a[:-1])


def test_runs_save_per_user_metrics_and_compare(tmp_path: Path) -> None:
    base = ["model=sasrec", "dataset=synthetic-tiny", "max_len=20", "inner_size=32", "epochs=2", "patience=0"]
    for name, hidden in (("a", 16), ("b", 24)):
        Trainer(build_config(overrides=[*base, f"hidden_size={hidden}"]), tmp_path / name, progress=False).fit()
    saved = per_user_metrics(tmp_path / "a")
    test = next(r for r in json.loads((tmp_path / "a" / "results.json").read_text())
                if r["split"] == "test" and r["protocol"] == "full" and not r["exclude_history"])
    test_file = RunDir(tmp_path / "a").per_user("test")
    assert test_file.exists() and float(saved["ndcg@10"].mean()) == pytest.approx(test["ndcg@10"])
    test_file.unlink()  # a run from before: computed from its weights instead, and kept
    assert np.allclose(per_user_metrics(tmp_path / "a")["ndcg@10"], saved["ndcg@10"], atol=1e-6)
    assert test_file.exists()
    result = compare_runs(tmp_path / "a", tmp_path / "b", samples=500)
    assert result["users"] == len(saved["ndcg@10"]) and result["ci_low"] <= result["difference"] <= result["ci_high"]

    out = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--samples", "500"])
    assert out.exit_code == 0, out.output
    assert f"{result['difference']:+.4f}" in out.output and "p (paired t)" in out.output

    # One group only: exactly its users, with the same means as evaluate --groups reports.
    data = load_run_dataset(tmp_path / "a", read_config(tmp_path / "a"))
    tail = user_groups(data, *data.split("test"))["tail-items"]
    assert 0 < tail.sum() < len(tail)
    in_tail = compare_runs(tmp_path / "a", tmp_path / "b", samples=500, group="tail-items")
    assert in_tail["users"] == tail.sum()
    assert in_tail["mean_a"] == pytest.approx(float(saved["ndcg@10"][tail].mean()))
    out = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--group", "tail-items"])
    assert out.exit_code == 0 and f"{int(tail.sum())} tail-items users" in out.output, out.output
    out = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--group", "tail"])
    assert out.exit_code == 2 and "no group 'tail'" in out.output
    out = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "ndcg@11"])
    assert out.exit_code == 2 and "no metric 'ndcg@11'" in out.output

    # Validation (what ablations are judged on): saved by the run's final evaluation, matching its own valid row,
    # and computed from the best weights (once) where a run lacks it.
    valid = next(r for r in json.loads((tmp_path / "a" / "results.json").read_text())
                 if r["split"] == "valid" and r["protocol"] == "full" and not r["exclude_history"])
    saved_valid = RunDir(tmp_path / "a").read_per_user("valid")["ndcg@10"]
    assert saved_valid.mean() == pytest.approx(valid["ndcg@10"], abs=1e-6)
    RunDir(tmp_path / "a").per_user("valid").unlink()  # as a run from before runs saved it
    on_valid = compare_runs(tmp_path / "a", tmp_path / "b", samples=500, split="valid")
    assert on_valid["mean_a"] == pytest.approx(valid["ndcg@10"], abs=1e-6) and on_valid["mean_a"] != result["mean_a"]
    assert np.array_equal(RunDir(tmp_path / "a").read_per_user("valid")["ndcg@10"], saved_valid)
    RunDir(tmp_path / "a").per_user("valid").unlink()
    itself = compare_runs(tmp_path / "a", tmp_path / "a", samples=200, split="valid")  # computed once, then read back
    assert itself["difference"] == 0 and itself["p_value"] == 1.0
    out = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--split", "valid", "--samples", "500"])
    assert out.exit_code == 0 and "valid ndcg@10" in out.output and f"{on_valid['mean_a']:.4f}" in out.output, out.output
    out = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--split", "train"])
    assert out.exit_code == 2 and "split 'train' is not one of valid, test" in out.output, out.output

    # Several runs a side (e.g. seeds; here another size): each user's metric is their mean.
    Trainer(build_config(overrides=[*base, "hidden_size=20"]), tmp_path / "c", progress=False).fit()
    both = (saved["ndcg@10"].astype(np.float64) + per_user_metrics(tmp_path / "c")["ndcg@10"]) / 2
    pooled = compare_runs([tmp_path / "a", tmp_path / "c"], tmp_path / "b", samples=500)
    assert pooled["runs_a"] == 2 and pooled["runs_b"] == 1
    assert pooled["mean_a"] == pytest.approx(float(both.mean())) and pooled["mean_b"] == pytest.approx(result["mean_b"])
    out = CliRunner().invoke(app, ["compare", f"{tmp_path / 'a'},{tmp_path / 'c'}", str(tmp_path / "b"), "--samples", "500"])
    assert out.exit_code == 0 and "each side averaged" in out.output and f"{pooled['mean_a']:.4f}" in out.output, out.output

    # The synthetic data follow the seed: another seed, other users and items.
    Trainer(build_config(overrides=[*base, "hidden_size=16", "seed=7"]), tmp_path / "other", progress=False).fit()
    for b in (str(tmp_path / "other"), f"{tmp_path / 'b'},{tmp_path / 'other'}"):  # one run of several is enough
        out = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), b])
        assert out.exit_code == 2 and "different data" in out.output, out.output


def test_a_copy_of_a_runs_results_compares_as_the_run_does(tmp_path: Path) -> None:
    base = ["model=sasrec", "dataset=synthetic-tiny", "max_len=20", "inner_size=32", "epochs=1", "patience=0"]
    for name, hidden in (("a", 16), ("b", 24)):
        Trainer(build_config(overrides=[*base, f"hidden_size={hidden}"]), tmp_path / name, progress=False).fit()
    a, b = (RunDir(tmp_path / n).copy_results(tmp_path / "kept" / n).path for n in ("a", "b"))
    assert not (a / "model.safetensors").exists() and not any(a.glob("checkpoint-*"))
    for split in ("test", "valid"):
        own = compare_runs(tmp_path / "a", tmp_path / "b", samples=200, split=split)
        assert compare_runs(a, b, samples=200, split=split) == own
    RunDir(a).per_user("valid").unlink()  # as a copy of an older run: computing it needs the weights, which it lacks
    with pytest.raises(DamagedFile, match="model.safetensors"):
        compare_runs(a, b, split="valid")
    with_weights = RunDir(tmp_path / "a").copy_results(tmp_path / "kept-weights" / "a", weights=True).path
    original, copy = load_run(tmp_path / "a", device="cpu"), load_run(with_weights, device="cpu")
    history = torch.tensor([[0, 0, 1, 2, 3]])
    with torch.no_grad():  # a run put back from such a copy scores as the run did (a pre-trained variant starts from it)
        assert torch.equal(original.model.score(history, torch.tensor([3])), copy.model.score(history, torch.tensor([3])))
    begun = Trainer(build_config(overrides=base), tmp_path / "begun", progress=False)  # set up, never trained
    begun.release()
    with pytest.raises(InputError, match="has not finished"):
        RunDir(tmp_path / "begun").copy_results(tmp_path / "kept" / "begun")
