"""Commands that train: train, search, quickstart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from darec.cli.app import USER_ERRORS, app, console, default_run_dir, err, fail, train_run
from darec.config import ConfigError, from_dict, load_yaml
from darec.models import MODELS


@app.command()
def train(
    model: Annotated[Optional[str], typer.Option(help=f"Model name: {', '.join(sorted(MODELS))} (their settings: `darec config show`).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Named data set, synthetic[-size], or a path.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file with data/model/train sections.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override: key=value or section.key=value (repeatable).")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="Where the run is written (default runs/<dataset>-<model>-<time>).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this directory: an interrupted one, or a finished one with "
                                                    "a larger budget (--set epochs=N, patience=N or max_minutes=M).")] = None,
    plan: Annotated[Optional[Path], typer.Option(help="Adapter plan file (a YAML list, or best_plan.yaml from `darec search`).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a model; evaluates the best checkpoint on the test split at the end."""
    overrides = set_ or []
    if plan is not None:
        from darec.search import read_plan

        try:
            overrides = [*overrides, f"model.plan={read_plan(plan)}"]
        except (ConfigError, OSError) as exc:
            fail(exc)
    train_run(config, model, dataset, overrides, run_dir, resume, progress)


@app.command()
def search(
    out: Annotated[Path, typer.Argument(help="Search directory (study, trial runs, best_plan.yaml, pictures).")],
    model: Annotated[Optional[str], typer.Option(help="Model whose adapter plan is searched: darec "
                                                       "(an adapter a group of layers) or mixrec (a mixture of experts a group).")] = "darec",
    dataset: Annotated[Optional[str], typer.Option(help="Named data set, synthetic[-size], or a path.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file with data/model/train sections.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override: key=value or section.key=value (repeatable).")] = None,
    trials: Annotated[Optional[int], typer.Option(help="Trials in all (default 20; with --resume, a larger total to run on to).")] = None,
    budget: Annotated[int, typer.Option(help="Training steps per trial.")] = 200,
    rungs: Annotated[int, typer.Option(help="Validations per trial (pruning points).")] = 4,
    sampler: Annotated[str, typer.Option(help="gp (Gaussian process) or tpe.")] = "gp",
    pruner: Annotated[str, typer.Option(help="halving, median or none.")] = "halving",
    max_trainable: Annotated[int, typer.Option(help="Cap on trainable parameters (0 = none).")] = 0,
    groups: Annotated[int, typer.Option(help="Groups of consecutive layers sharing one choice (0 = auto, at most 6).")] = 0,
    minutes: Annotated[float, typer.Option(help="Start no new trial after this many minutes (0 = no limit).")] = 0.0,
    valid_users: Annotated[int, typer.Option(help="Score trials on a fixed sample of this many validation users (0 = all).")] = 0,
    choice: Annotated[Optional[list[str]], typer.Option(
        "--choice", help="An adapter a group may take (repeatable; default: the zoo, see `darec config show`).")] = None,
    expert: Annotated[Optional[list[str]], typer.Option(
        "--expert", help="An expert a group's mixture may hold, for mixrec (repeatable; default lora:8, houlsby:16, "
                         "parallel:16, ia3).")] = None,
    top_k: Annotated[Optional[list[int]], typer.Option("--top-k", help="A k a group's mixture may take, for mixrec "
                                                       "(repeatable; default 1 and 2).")] = None,
    start_with: Annotated[Optional[list[str]], typer.Option(
        "--start-with", help="An entry tried first as a uniform plan, e.g. lora:8 or 'moe[lora:8, ia3]:k=1' (repeatable; "
                             "with --resume, added).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the search in OUT (its saved settings; --trials may raise the total).")] = False,
) -> None:
    """Search the layer-wise adapter plan by Bayesian optimisation on validation NDCG@10."""
    from darec.distributed import launched_world
    from darec.search import Search, SearchConfig
    from darec.train import build_config

    if launched_world() > 1:  # each process would draw its own trials into one study, and their groups deadlock
        fail(ConfigError("darec search runs in one process: start it without torchrun or accelerate launch "
                         "(train the plan it finds under them: `darec train --plan OUT/best_plan.yaml`)"))
    try:
        if resume:
            runner = Search.resume(out, console=err, trials=trials, minutes=minutes, start_with=start_with or ())
        else:
            values = load_yaml(config) if config else {}
            overrides = [f"data.dataset={dataset}", *(set_ or [])] if dataset else (set_ or [])
            run = build_config(values, overrides, model=model, source=str(config or "--set"))
            settings = from_dict(SearchConfig, {  # checked like any config: bad values named at the door
                "trials": 20 if trials is None else trials, "budget": budget, "rungs": rungs, "sampler": sampler,
                "pruner": pruner, "max_trainable": max_trainable, "groups": groups, "minutes": minutes,
                "valid_users": valid_users, "start_with": start_with or [],
                **{key: value for key, value in (("choices", choice), ("experts", expert), ("top_k", top_k)) if value}},
                "search")
            runner = Search(run, settings, out, console=err)
        summary = runner.run(resume=resume)
    except USER_ERRORS as exc:
        fail(exc)
    if "plan" not in summary:
        console.print(f"{summary['trials']} trial(s), none completed: no plan yet")
        return
    from darec.models.llm.adapters import describe_plan

    console.print(f"best of {summary['trials']} trials: valid NDCG@10 {summary['best_value']:.4f} (trial {summary['best_trial']}, "
                  f"{summary['trainable_parameters']:,} trainable parameters)")
    console.print(f"plan: {describe_plan(summary['plan'])}", markup=False)
    console.print(f"written to [bold]{out / 'best_plan.yaml'}[/] (train with `darec train --plan {out / 'best_plan.yaml'} ...`); "
                  f"pictures: {out / 'progress.png'}, {out / 'plans.png'}")


# The quickstart's DARec: 2 SmolLM2 layers, 4 title tokens a span, each user's latest window, scored
# against the SASRec's item embeddings and started from that SASRec (the `pretrained-cf` setting of
# bench/darec_accuracy.py, the best on validation at the small CPU budget): minutes on a CPU.
QUICK_DAREC = ["keep_layers=2", "item_tokens=4", "windows_per_user=1", "window_overlap=0", "batch_size=8", "lr=1e-3",
               "epochs=3", "patience=1", "head=items"]


@app.command()
def quickstart(
    epochs: Annotated[int, typer.Option(help="SASRec's epoch budget.")] = 30,
    dataset: Annotated[Optional[str], typer.Option(help="Data set (default: ml-100k where it is found, else synthetic).")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="Where the runs are written (sasrec/ and darec/ inside).")] = None,
    llm: Annotated[bool, typer.Option(help="Also train a small DARec on the SASRec (needs the SmolLM2 weights package).")] = True,
    backbone: Annotated[str, typer.Option(help="The DARec's backbone.", hidden=True)] = "smollm2",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train and evaluate SASRec, then a small DARec built on it, on ml-100k when the data is
    there (else on synthetic data), and print them side by side."""
    from darec.data import data_roots

    if dataset is None:
        dataset = "ml-100k" if any((root / "ml-100k").is_dir() for root in data_roots()) else "synthetic"
        if dataset == "synthetic":
            err.log("ml-100k not found (see `darec data download ml-100k`); using the built-in synthetic data set")
    base = run_dir or default_run_dir(dataset, "quickstart")
    results = {"sasrec": train_run(None, "sasrec", dataset, [f"epochs={epochs}", "patience=5"], base / "sasrec", None, progress)}
    skipped = _no_quick_darec(backbone) if llm else "--no-llm"
    if skipped:
        err.log(f"DARec not trained: {skipped}")
        return
    overrides = [*QUICK_DAREC, f"backbone={backbone}", f"cf_run={base / 'sasrec'}"]
    results["darec"] = train_run(None, "darec", dataset, overrides, base / "darec", None, progress)
    table = Table(title=f"test split, full ranking, {dataset}")
    for column in ("model", "hit@10", "ndcg@10", "mrr@10"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, rows in results.items():
        test = next(r for r in rows if r["split"] == "test" and r["protocol"] == "full")
        table.add_row(name, *(f"{test[k]:.4f}" for k in ("hit@10", "ndcg@10", "mrr@10")))
    console.print(table)
    console.print("DARec here is small (2 of 30 layers): bench/results/darec_accuracy.md has it at full depth.")


def _no_quick_darec(backbone: str) -> str:
    """Why the quickstart's DARec would not run here in minutes ('' when it would)."""
    import torch

    from darec.device import fast_cpu_bf16
    from darec.models.llm.backbone import BackboneError, smollm2_gguf

    if backbone == "smollm2":
        try:
            smollm2_gguf()
        except BackboneError as exc:
            return f"{exc} (the README's set-up commands install it)"
    if not (torch.cuda.is_available() or fast_cpu_bf16()):
        return ("no GPU, and this CPU has no native bf16 (AMX/AVX512-BF16): it would take long here; "
                "`darec train --model darec` runs it anyway")
    return ""
