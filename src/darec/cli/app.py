"""The ``darec`` application and what its commands share: consoles, error reporting, training a run."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from darec.config import ConfigError, load_yaml
from darec.errors import DarecError

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


def fail(exc: BaseException) -> None:
    err.print(f"[bold red]error:[/] {escape(str(exc))}")  # its text may hold brackets: plans, lists
    raise typer.Exit(2)


def metrics_table(rows: list[dict], title: str) -> Table:
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


def default_run_dir(dataset: str, model: str) -> Path:
    return Path("runs") / f"{Path(dataset).name}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def train_run(config_path: Optional[Path], model: Optional[str], dataset: Optional[str], overrides: list[str],
              run_dir: Optional[Path], resume: Optional[Path], progress: bool) -> list[dict]:
    """Train (or resume), then print the metrics table and where the run is; returns the result rows."""
    from darec.distributed import launched_world, leave
    from darec.train import Trainer, build_config

    try:
        if resume is not None:
            run_dir = resume
            if model or dataset or config_path:
                fail(ConfigError("--resume continues a run with its own settings: drop --model, --dataset and --config "
                                 "(--set may extend the budget: epochs, patience, max_minutes)"))
            trainer = Trainer(None, resume, resume=True, console=err, progress=progress, overrides=overrides)
        else:
            values = load_yaml(config_path) if config_path else {}
            if dataset:
                overrides = [f"data.dataset={dataset}", *overrides]
            config = build_config(values, overrides, model=model, source=str(config_path or "--set"))
            if run_dir is None and launched_world() > 1:  # each process would name its own by the clock
                fail(ConfigError("under torchrun or accelerate launch, name the run directory: --run-dir DIR"))
            run_dir = run_dir or default_run_dir(config.data.dataset, config.model.name)
            trainer = Trainer(config, run_dir, console=err, progress=progress)
        stats = trainer.dataset.stats()
        # Said once the data has loaded: a bad --dataset fails before any run directory is named.
        trainer.console.log(f"run directory: {run_dir}")
        trainer.console.log(f"{stats['dataset']}: {stats['users']} users, {stats['items']} items, {stats['interactions']} interactions")
        rows = trainer.fit()
    except USER_ERRORS as exc:
        fail(exc)
    leave()
    if not trainer.main:  # under a launcher, one process reports
        return rows
    console.print(metrics_table(rows, f"{trainer.config.model.name} on {stats['dataset']} (leave-one-out)"))
    console.print(f"run directory: [bold]{run_dir}[/]  (try `darec recommend {run_dir} --history ID,ID,...`)")
    return rows
