"""Commands on trained runs: evaluate, compare, stop, embed, recommend."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.table import Table

from darec.cli.app import USER_ERRORS, app, console, err, fail, metrics_table
from darec.config import ConfigError, from_dict


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
        per_user = run_eval(loaded.model, histories, targets, protocol, exclude, negatives, c.train.eval_batch_size, per_user=True,
                            chunk=c.train.eval_chunk)
        group_rows = group_means(per_user, user_groups(dataset, histories, targets, head_share)) if groups else []
    except USER_ERRORS as exc:
        fail(exc)
    row = partial(result_row, dataset.name, c.model.name, split, protocol, exclude, c.train.sampled_negatives)
    rows = [row(per_user, **({"group": "all", "users": len(targets)} if groups else {})), *(row(**r) for r in group_rows)]
    console.print(metrics_table(rows, f"{c.model.name} on {dataset.name}"))


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
        fail(exc)
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
def stop(run_dir: Annotated[Path, typer.Argument(help="The run directory of a training in progress.")]) -> None:
    """Stop a training gracefully: it ends at its next step, the epoch it is in is validated and
    checkpointed, and the best weights are evaluated on valid and test as at a normal end (the run
    is marked stopped, not converged). A run not training now stops at its next resume's first step."""
    from darec.train.run import RunDir

    try:
        RunDir(run_dir).request_stop()
    except USER_ERRORS as exc:
        fail(exc)
    console.print(f"{run_dir}: asked to stop; its trainer stops at its next step, then validates and evaluates")


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
        fail(exc)
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
        fail(exc)
    if as_json:
        console.print_json(json.dumps(recs))
        return
    table = Table(title=f"top {k}")
    for column in ("rank", "item", "score", "title"):
        table.add_column(column)
    for rank, rec in enumerate(recs, start=1):
        table.add_row(str(rank), rec["item"], f"{rec['score']:.3f}", rec["title"])
    console.print(table)


@app.command()
def serve(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default; 0.0.0.0 serves every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    token: Annotated[Optional[str], typer.Option(envvar="DAREC_TOKEN", help="Bearer token every endpoint but /health "
                                                 "requires (or the DAREC_TOKEN environment variable); none: no auth.")] = None,
    batching: Annotated[bool, typer.Option(help="Gather concurrent requests into one forward pass.")] = True,
    max_batch: Annotated[int, typer.Option(help="Most histories in one forward pass (0: 32, or fewer where the model "
                                               "asks: an LLM on a CPU takes about 4k tokens a pass).", min=0)] = 0,
    max_wait_ms: Annotated[float, typer.Option(help="Longest a request waits for others to join its batch (0: a batch is "
                                               "what arrived during the last forward pass).", min=0)] = 0.0,
    max_history: Annotated[int, typer.Option(help="Most items in one history.", min=1)] = 1000,
    compile: Annotated[Literal["auto", "on", "off"], typer.Option(
                                         help="Compile the model's repeated blocks before serving (auto: an LLM backbone "
                                         "on a CPU or GPU where compiling works).")] = "auto",
) -> None:
    """Serve a run over HTTP: POST /recommend, /recommend/batch; GET /items, /health, /metrics, /docs, and a page at /."""
    import uvicorn

    from darec.serve import Recommender
    from darec.serve.app import ServeSettings, create_app

    try:
        recommender = Recommender(run_dir, device=device, compile=compile)
    except USER_ERRORS as exc:
        fail(exc)
    settings = ServeSettings(token=token or "", batching=batching, max_batch=max_batch, max_wait_ms=max_wait_ms,
                             max_history=max_history)
    err.print(f"serving {run_dir} ({recommender.config.model.name}, {recommender.n_items:,} items) on http://{host}:{port} "
              f"- docs at /docs{', bearer token required' if token else ''}")
    uvicorn.run(create_app(recommender, settings), host=host, port=port, log_level="warning")
