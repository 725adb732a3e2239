"""Data sets and configurations: data stats/synth/download, config show."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from darec.cli.app import USER_ERRORS, config_app, console, data_app, err, fail
from darec.config import ConfigError, describe


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
        fail(exc)
    table = Table(title=str(stats.pop("dataset")), show_header=False)
    for key, value in stats.items():
        table.add_row(key, f"{value:.6f}" if isinstance(value, float) and value < 1 else f"{value:,}" if isinstance(value, int) else f"{value:.2f}")
    console.print(table)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Argument(help="Folder to write <name>.inter and <name>.item into.")],
    size: Annotated[str, typer.Option(help="tiny, small, medium, large, xl or xxl (~50M interactions).")] = "small",
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
        fail(exc)
    console.print(f"wrote {raw.n_interactions:,} interactions of {len(raw.user_ids):,} users to {inter}")


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
        fail(exc)
    console.print(f"ready: {path}  (use --dataset {name})")


@config_app.command("show")
def config_show(model: Annotated[str, typer.Argument(help="Model name.")] = "sasrec") -> None:
    """Every configuration key for MODEL with its default and help."""
    from darec.models import model_config_class
    from darec.train.config import DataConfig, TrainConfig

    try:
        sections = {"data": DataConfig, "model": model_config_class(model), "train": TrainConfig}
    except ConfigError as exc:
        fail(exc)
    for section, cls in sections.items():
        table = Table(title=f"{section}", title_justify="left")
        for column in ("key", "type", "default", "help"):
            table.add_column(column)
        for name, kind, default, help_text in describe(cls):
            table.add_row(f"{section}.{name}", kind, repr(default) if section != "model" or name != "name" else model, help_text)
        console.print(table)
