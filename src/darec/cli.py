"""The ``darec`` command line."""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from darec.config import ConfigError, describe, from_dict, load_yaml
from darec.errors import DarecError
from darec.models import MODELS

app = typer.Typer(help="LLM-based sequential recommendation: train, evaluate, recommend.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
data_app = typer.Typer(help="Inspect, generate and download data sets.", no_args_is_help=True)
config_app = typer.Typer(help="Show model configurations.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
console = Console()
err = Console(stderr=True, log_path=False)

# What a user can cause and fix, reported in one line: darec's own errors, and files that are
# missing, already there or not permitted. Anything else is a bug and keeps its traceback.
USER_ERRORS = (DarecError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


class _ConsoleHandler(logging.Handler):
    """The library's warnings (``logging.getLogger("darec")``), one line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"[yellow]warning:[/] {record.getMessage()}")


_logger = logging.getLogger("darec")
_logger.addHandler(_ConsoleHandler(logging.WARNING))
_logger.propagate = False


def _fail(exc: BaseException) -> None:
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


def _metrics_table(rows: list[dict], title: str) -> Table:
    metrics = ("hit@10", "ndcg@10", "mrr@10", "hit@20", "ndcg@20")
    if any("group" in row for row in rows):
        # One split and protocol, many groups: those go in the title, to keep the table narrow.
        first = rows[0]
        table = Table(title=f"{title}: {first['split']}, {first['protocol']}, history "
                            f"{'excluded' if first['exclude_history'] else 'kept'}")
        for column in ("group", "users", *metrics):
            table.add_column(column, justify="left" if column == "group" else "right")
        for row in rows:
            table.add_row(row["group"], str(row["users"]), *(f"{row[k]:.4f}" for k in metrics))
        return table
    table = Table(title=title)
    for column in ("split", "protocol", "history", *metrics):
        table.add_column(column, justify="right" if "@" in column else "left")
    for row in rows:
        table.add_row(row["split"], row["protocol"], "excluded" if row["exclude_history"] else "kept",
                      *(f"{row[k]:.4f}" for k in metrics))
    return table


def _default_run_dir(dataset: str, model: str) -> Path:
    return Path("runs") / f"{Path(dataset).name}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def _train(config_path: Optional[Path], model: Optional[str], dataset: Optional[str], overrides: list[str],
           run_dir: Optional[Path], resume: Optional[Path], progress: bool) -> list[dict]:
    """Train (or resume), then print the metrics table and where the run is; returns the result rows."""
    from darec.train import Trainer, build_config

    try:
        if resume is not None:
            run_dir = resume
            if model or dataset or config_path:
                _fail(ConfigError("--resume continues a run with its own settings: drop --model, --dataset and --config "
                                  "(--set may extend the budget: epochs, patience, max_minutes)"))
            trainer = Trainer(None, resume, resume=True, console=err, progress=progress, overrides=overrides)
        else:
            values = load_yaml(config_path) if config_path else {}
            if dataset:
                overrides = [f"data.dataset={dataset}", *overrides]
            config = build_config(values, overrides, model=model, source=str(config_path or "--set"))
            run_dir = run_dir or _default_run_dir(config.data.dataset, config.model.name)
            trainer = Trainer(config, run_dir, console=err, progress=progress)
        stats = trainer.dataset.stats()
        # Said once the data has loaded: a bad --dataset fails before any run directory is named.
        err.log(f"run directory: {run_dir}")
        err.log(f"{stats['dataset']}: {stats['users']} users, {stats['items']} items, {stats['interactions']} interactions")
        rows = trainer.fit()
    except USER_ERRORS as exc:
        _fail(exc)
    console.print(_metrics_table(rows, f"{trainer.config.model.name} on {stats['dataset']} (leave-one-out)"))
    console.print(f"run directory: [bold]{run_dir}[/]  (try `darec recommend {run_dir} --history ID,ID,...`)")
    return rows


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
            _fail(exc)
    _train(config, model, dataset, overrides, run_dir, resume, progress)


@app.command()
def search(
    out: Annotated[Path, typer.Argument(help="Search directory (study, trial runs, best_plan.yaml, pictures).")],
    model: Annotated[Optional[str], typer.Option(help="Model whose adapter plan is searched (darec).")] = "darec",
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
    start_with: Annotated[Optional[list[str]], typer.Option(
        "--start-with", help="A choice tried first as a uniform plan, e.g. lora:8 (repeatable; with --resume, added).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the search in OUT (its saved settings; --trials may raise the total).")] = False,
) -> None:
    """Search the layer-wise adapter plan by Bayesian optimisation on validation NDCG@10."""
    from darec.search import Search, SearchConfig
    from darec.train import build_config

    try:
        if resume:
            runner = Search.resume(out, console=err)
            runner.config.trials = max(runner.config.trials, trials or 0)
            runner.config.minutes = minutes
            runner.config.start_with = [*runner.config.start_with, *(start_with or [])]
        else:
            values = load_yaml(config) if config else {}
            overrides = [f"data.dataset={dataset}", *(set_ or [])] if dataset else (set_ or [])
            run = build_config(values, overrides, model=model, source=str(config or "--set"))
            settings = from_dict(SearchConfig, {  # checked like any config: bad values named at the door
                "trials": 20 if trials is None else trials, "budget": budget, "rungs": rungs, "sampler": sampler,
                "pruner": pruner, "max_trainable": max_trainable, "groups": groups, "minutes": minutes,
                "valid_users": valid_users, "start_with": start_with or []}, "search")
            runner = Search(run, settings, out, console=err)
        summary = runner.run(resume=resume)
    except USER_ERRORS as exc:
        _fail(exc)
    if "plan" not in summary:
        console.print(f"{summary['trials']} trial(s), none completed: no plan yet")
        return
    from darec.models.llm.adapters import describe_plan

    console.print(f"best of {summary['trials']} trials: valid NDCG@10 {summary['best_value']:.4f} (trial {summary['best_trial']}, "
                  f"{summary['trainable_parameters']:,} trainable parameters)")
    console.print(f"plan: {describe_plan(summary['plan'])}")
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
    base = run_dir or _default_run_dir(dataset, "quickstart")
    results = {"sasrec": _train(None, "sasrec", dataset, [f"epochs={epochs}", "patience=5"], base / "sasrec", None, progress)}
    skipped = _no_quick_darec(backbone) if llm else "--no-llm"
    if skipped:
        err.log(f"DARec not trained: {skipped}")
        return
    overrides = [*QUICK_DAREC, f"backbone={backbone}", f"cf_run={base / 'sasrec'}"]
    results["darec"] = _train(None, "darec", dataset, overrides, base / "darec", None, progress)
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
            return f"{exc} (the README's second command installs it)"
    if not (torch.cuda.is_available() or fast_cpu_bf16()):
        return ("no GPU, and this CPU has no native bf16 (AMX/AVX512-BF16): it would take long here; "
                "`darec train --model darec` runs it anyway")
    return ""


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    protocol: Annotated[str, typer.Option(help="full (rank against every item) or sampled (100 negatives).")] = "full",
    split: Annotated[str, typer.Option(help="valid or test.")] = "test",
    exclude_history: Annotated[Optional[bool], typer.Option(help="Remove seen items from the ranking (default: as trained).")] = None,
    groups: Annotated[bool, typer.Option(help="Also report head/tail items (by training popularity) and short/long users.")] = False,
    head_share: Annotated[float, typer.Option(help="With --groups: share of items that are head, of users that are long.")] = 0.2,
) -> None:
    """Evaluate the best checkpoint of a run."""
    from darec.train import evaluate as run_eval, load_run, sample_negatives
    from darec.train.evaluate import result_row
    from darec.train.groups import group_means, user_groups
    from darec.train.run import load_run_dataset

    try:
        if protocol not in ("full", "sampled") or split not in ("valid", "test"):
            raise ConfigError("--protocol is full or sampled; --split is valid or test")
        loaded = load_run(run_dir)
        c = loaded.config
        dataset = load_run_dataset(run_dir, c)
        histories, targets = dataset.split(split)
        negatives = sample_negatives(histories, targets, dataset.n_items, c.train.sampled_negatives, c.train.seed) if protocol == "sampled" else None
        exclude = c.train.exclude_history if exclude_history is None else exclude_history
        per_user = run_eval(loaded.model, histories, targets, protocol, exclude, negatives, c.train.eval_batch_size, per_user=True)
        group_rows = group_means(per_user, user_groups(dataset, histories, targets, head_share)) if groups else []
    except USER_ERRORS as exc:
        _fail(exc)
    row = partial(result_row, dataset.name, c.model.name, split, protocol, exclude, c.train.sampled_negatives)
    rows = [row(per_user, **({"group": "all", "users": len(targets)} if groups else {})), *(row(**r) for r in group_rows)]
    console.print(_metrics_table(rows, f"{c.model.name} on {dataset.name}"))


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(help="A run directory (the reference), or several runs of one configuration joined by "
                                         "commas (e.g. seeds: each user's metric is averaged over them).")],
    run_b: Annotated[str, typer.Argument(help="A run directory on the same data, or several joined by commas.")],
    metric: Annotated[str, typer.Option(help="Per-user metric to compare (ndcg@10, hit@10, mrr@10, ...).")] = "ndcg@10",
    split: Annotated[str, typer.Option(help="test, or valid (what ablations are judged on; computed once per run).")] = "test",
    samples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples of the users.")] = 10_000,
    group: Annotated[Optional[str], typer.Option(
        help="Only the users of one group: tail-items, head-items, short-users or long-users (see evaluate --groups).")] = None,
    head_share: Annotated[float, typer.Option(help="With --group: share of items that are head, of users that are long.")] = 0.2,
) -> None:
    """Is B better than A? Their metric user by user: the difference with a 95% paired-bootstrap interval and a paired t-test."""
    from darec.train.significance import compare_runs

    try:
        result = compare_runs(run_a.split(","), run_b.split(","), metric, samples, group, head_share, split)
    except USER_ERRORS as exc:
        _fail(exc)
    users = f"{result['users']} {group} users" if group else f"{result['users']} users"
    seeds = ", each side averaged over its runs" if max(result["runs_a"], result["runs_b"]) > 1 else ""
    table = Table(title=f"{split} {metric}, full ranking, {users}{seeds}")
    for column in ("A", "B", "B - A", "95% interval", "p (paired t)"):
        table.add_column(column, justify="right")
    table.add_row(f"{result['mean_a']:.4f}", f"{result['mean_b']:.4f}", f"{result['difference']:+.4f}",
                  f"[{result['ci_low']:+.4f}, {result['ci_high']:+.4f}]", f"{result['p_value']:.3g}")
    console.print(table)
    console.print(f"A: {run_a}\nB: {run_b}")


@app.command()
def embed(
    out: Annotated[Path, typer.Argument(help="Item-embedding file to write (safetensors, with the item id map).")],
    dataset: Annotated[str, typer.Option(help="Named data set or a path.")] = "ml-100k",
    method: Annotated[str, typer.Option(help="scft (LLMEmb), llm (untuned LLM) or minilm (all-MiniLM-L6-v2).")] = "scft",
    backbone: Annotated[str, typer.Option(help="LLM for scft / llm.")] = "smollm2",
    dim: Annotated[int, typer.Option(help="PCA to this many dimensions (0 = keep).")] = 0,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Other settings: key=value (see EmbedConfig).")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="Folder holding named data sets.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Embed every item of a data set (LLMEmb's SCFT, the untuned LLM, or MiniLM) into a file
    that any of our recommenders takes with --set item_embeddings=FILE."""
    from darec.config import parse_override
    from darec.data import load_dataset
    from darec.models.llm.llmemb import EmbedConfig, embed_items, save_item_embeddings

    try:
        values = {"method": method, "backbone": backbone, "dim": dim, **dict(parse_override(o) for o in set_ or [])}
        config = from_dict(EmbedConfig, values, "embed")
        data = load_dataset(dataset, data_root)
        table, summary = embed_items(data, config, console=err, progress=progress)
        save_item_embeddings(out, table, data, **summary)
    except USER_ERRORS as exc:
        _fail(exc)
    console.print(f"{data.n_items} items x {table.size(1)} dimensions ({config.method}) written to [bold]{out}[/]")


@app.command()
def recommend(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    history: Annotated[str, typer.Option(help="Comma-separated original item ids, oldest first.")],
    k: Annotated[int, typer.Option("-k", help="How many items to return.")] = 10,
    include_seen: Annotated[bool, typer.Option(help="Allow items already in the history.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Top-k next items for a history given in original ids."""
    from darec.serve import recommend as top_k

    try:
        recs = top_k(run_dir, [h.strip() for h in history.split(",") if h.strip()], k, include_seen)
    except USER_ERRORS as exc:
        _fail(exc)
    if as_json:
        console.print_json(json.dumps(recs))
        return
    table = Table(title=f"top {k}")
    for column in ("rank", "item", "score", "title"):
        table.add_column(column)
    for rank, rec in enumerate(recs, start=1):
        table.add_row(str(rank), rec["item"], f"{rec['score']:.3f}", rec["title"])
    console.print(table)


@data_app.command("stats")
def data_stats(
    dataset: Annotated[str, typer.Argument(help="Named data set, synthetic[-size], or a path.")],
    data_root: Annotated[Optional[Path], typer.Option(help="Folder holding named data sets.")] = None,
    k_core: Annotated[int, typer.Option(help="Iterative k-core filter (0 = off).")] = 0,
) -> None:
    """Users, items, interactions and sequence lengths of a data set."""
    from darec.data import load_dataset

    try:
        stats = load_dataset(dataset, data_root, k_core).stats()
    except USER_ERRORS as exc:
        _fail(exc)
    table = Table(title=str(stats.pop("dataset")), show_header=False)
    for key, value in stats.items():
        table.add_row(key, f"{value:.6f}" if isinstance(value, float) and value < 1 else f"{value:,}" if isinstance(value, int) else f"{value:.2f}")
    console.print(table)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Argument(help="Folder to write <name>.inter and <name>.item into.")],
    size: Annotated[str, typer.Option(help="tiny, small, medium, large or xl.")] = "small",
    users: Annotated[Optional[int], typer.Option(help="Override the number of users.")] = None,
    items: Annotated[Optional[int], typer.Option(help="Override the number of items.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a synthetic data set as RecBole atomic files."""
    from dataclasses import replace

    from darec.data.download import write_atomic_files
    from darec.data.synthetic import generate, spec_for

    try:
        spec = spec_for(f"synthetic-{size}", seed)
        spec = replace(spec, n_users=users or spec.n_users, n_items=items or spec.n_items)
        raw = generate(spec)
        inter = write_atomic_files(raw, out, out.name)
    except USER_ERRORS as exc:
        _fail(exc)
    n = sum(map(len, raw.sequences.values()))
    console.print(f"wrote {n:,} interactions of {len(raw.sequences):,} users to {inter}")


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="ml-100k, ml-1m or amazon-<category> (e.g. amazon-beauty).")],
    data_root: Annotated[Optional[Path], typer.Option(help="Folder to put it in (default $DAREC_DATA or ~/.cache/darec/data).")] = None,
) -> None:
    """Download a public data set (checksum verified, resumable) and convert it to atomic files."""
    from darec.data import download_root
    from darec.data.download import download_dataset

    try:
        path = download_dataset(name, download_root(data_root), console=err)
    except USER_ERRORS as exc:
        _fail(exc)
    console.print(f"ready: {path}  (use --dataset {name})")


@config_app.command("show")
def config_show(model: Annotated[str, typer.Argument(help="Model name.")] = "sasrec") -> None:
    """Every configuration key for MODEL with its default and help."""
    from darec.models import model_config_class
    from darec.train.config import DataConfig, TrainConfig

    try:
        sections = {"data": DataConfig, "model": model_config_class(model), "train": TrainConfig}
    except ConfigError as exc:
        _fail(exc)
    for section, cls in sections.items():
        table = Table(title=f"{section}", title_justify="left")
        for column in ("key", "type", "default", "help"):
            table.add_column(column)
        for name, kind, default, help_text in describe(cls):
            table.add_row(f"{section}.{name}", kind, repr(default) if section != "model" or name != "name" else model, help_text)
        console.print(table)
