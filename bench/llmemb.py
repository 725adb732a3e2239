"""LLMEmb: each of SASRec, GRU4Rec and BERT4Rec with ID embeddings, and with item embeddings
from SCFT (LLMEmb), the untuned LLM and MiniLM, all through RAT (frozen table, trained
adapter, aligned with the ID SASRec's item embeddings at weight 0.01).

Rows (bench/results/llmemb.json, markdown beside it): test and validation metrics under
full ranking (history kept and excluded) and 100 sampled negatives, and on the test split
NDCG@10 / HR@10 for users whose target is a tail item (the 80% least popular in training)
or a head item. Embedding files and runs are kept in bench/work/llmemb/ and reused.

Budgets: ``gpu``: SmolLM2 whole, SCFT 3 epochs, PCA to 128; ``cpu``: the first 4 SmolLM2
layers, SCFT 1 epoch, PCA to 64. Recommenders, last 50 items, early stopping on validation
NDCG@10: on ``gpu`` hidden 128 and patience 20 as in the method's RAT defaults (at most 200
epochs; batch 32, not the paper's 128, and 50 items, not 200, as in every run here), on ``cpu``
hidden 64, patience 5, at most 50 epochs. The table's "recommender" column says which settings a row ran with.

    python bench/llmemb.py --dataset ml-100k --budget gpu
    taskset -c 0 python bench/llmemb.py --dataset ml-100k --budget cpu --threads 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common import (HERE, TIME_LIMITED, Row, command_line, epochs_cell, machine, markdown_table, save_rows, train_rows, versions,
                    versus, versus_cell)
from darec.config import parse_override
from darec.data import load_dataset
from darec.models.llm.llmemb import EmbedConfig, embed_items, save_item_embeddings
from darec.train.config import TrainConfig
from darec.train.groups import group_means, user_groups
from darec.train.run import RunDir, load_run_dataset, read_config
from darec.train.significance import per_user_metrics

RESULTS = HERE / "results" / "llmemb.json"
EMBED = {
    "gpu": {"backbone": "smollm2", "keep_layers": 0, "epochs": 3, "dim": 128},
    "cpu": {"backbone": "smollm2", "keep_layers": 4, "epochs": 1, "dim": 64},
}
RECOMMENDER = {
    "gpu": ["hidden_size=128", "max_len=50", "patience=20", "epochs=200"],
    "cpu": ["hidden_size=64", "max_len=50", "patience=5", "epochs=50"],  # the cap cut some scientific runs short
}
MODELS = ["sasrec", "gru4rec", "bert4rec"]
SOURCES = ["id", "scft", "llm", "minilm"]


def embedding_file(dataset: str, source: str, budget: str, work: Path, threads: int, dim: int | None) -> Path:
    path = work / f"{source}.safetensors"
    if not path.exists():
        if threads:
            torch.set_num_threads(threads)
        settings = {**EMBED[budget], "method": source, **({"dim": dim} if dim is not None else {})}
        if source == "minilm":
            settings.update(backbone="minilm", keep_layers=0)
        data = load_dataset(dataset, seed=TrainConfig().seed)  # the items the recommender runs will see
        table, summary = embed_items(data, EmbedConfig(**settings), progress=False)
        save_item_embeddings(path, table, data, **summary)
    return path


def tail_metrics(run_dir: Path) -> dict[str, float]:
    """Test NDCG@10 / HR@10 (full ranking, history as trained: kept here) of head-item and
    tail-item users, from the per-user metrics the run saved (not a second evaluation)."""
    data = load_run_dataset(run_dir, read_config(run_dir))
    histories, targets = data.split("test")
    per_user = per_user_metrics(run_dir)
    out = {}
    for row in group_means(per_user, user_groups(data, histories, targets)):
        if row["group"] in ("head-items", "tail-items"):
            name = row["group"].split("-")[0]
            out.update({f"{name}_ndcg@10": row["ndcg@10"], f"{name}_hit@10": row["hit@10"], f"{name}_users": row["users"]})
    return out


def recommender(row: Row) -> str:
    """The recommender's shape and stopping rule, from the row's settings (e.g. ``h128 b128 p20``)."""
    settings = dict(parse_override(o) for o in row["settings"].split())
    defaults = TrainConfig()
    return f"h{settings.get('hidden_size', '?')} b{settings.get('batch_size', defaults.batch_size)} p{settings.get('patience', defaults.patience)}"


def markdown(rows: list[Row]) -> str:
    cells = []
    for r in sorted(rows, key=lambda r: (r["dataset"], r["budget"], r["model"], SOURCES.index(r["source"]))):
        if r["split"] != "test" or r["protocol"] != "full" or r["exclude_history"]:
            continue
        sampled = next((x for x in rows if x["variant"] == r["variant"] and x["dataset"] == r["dataset"] and x["model"] == r["model"]
                        and x["split"] == "test" and x["protocol"].startswith("sampled")), {})
        cells.append([r["dataset"], r["budget"], recommender(r), r["model"], r["source"], f"{r['ndcg@10']:.4f}", f"{r['hit@10']:.4f}",
                      f"{sampled.get('ndcg@10', float('nan')):.4f}", f"{sampled.get('hit@10', float('nan')):.4f}",
                      f"{r.get('tail_ndcg@10', float('nan')):.4f}", f"{r.get('head_ndcg@10', float('nan')):.4f}",
                      epochs_cell(r), versus_cell(r, "id"), versus_cell(r, "id_tail")])
    return markdown_table(
        "LLMEmb: ID vs LLM-generated item embeddings (generated by bench/llmemb.py from llmemb.json)",
        ["Test split. Full: every item ranked, history kept. Sampled: against 100 unseen items. Tail / head: NDCG@10 (full)",
         "of users whose target is a tail item (80% least popular in training) / a head item. Recommender: hidden size,",
         "batch size, early-stopping patience.", TIME_LIMITED,
         "vs ID: NDCG@10 (full) minus that of the same recommender with ID embeddings, paired over the test users, with",
         "its 95% bootstrap interval and paired t-test p (`darec compare`); vs ID, tail: the same over the tail-item users",
         "(`darec compare --group tail-items`); `-` where not computed."],
        ["dataset", "budget", "recommender", "model", "item embeddings", "NDCG@10 full", "HR@10 full", "NDCG@10 sampled", "HR@10 sampled",
         "tail NDCG@10", "head NDCG@10", "epochs (best)", "vs ID", "vs ID, tail"], cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--budget", choices=sorted(EMBED), default="cpu")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=MODELS)
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=SOURCES)
    parser.add_argument("--set", dest="extra", nargs="*", default=[], help="extra overrides for every recommender run")
    parser.add_argument("--embed-dim", type=int, default=None, help="PCA dimension (default: the budget's)")
    parser.add_argument("--embed-only", action="store_true", help="only write the embedding files of --sources")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=HERE / "work" / "llmemb")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    work = args.workdir / args.dataset / args.budget
    work.mkdir(parents=True, exist_ok=True)
    common = [f"dataset={args.dataset}", f"threads={args.threads}", *RECOMMENDER[args.budget], *args.extra]
    if args.embed_only:
        for source in args.sources:
            if source != "id":
                print(embedding_file(args.dataset, source, args.budget, work, args.threads, args.embed_dim), flush=True)
        return
    align = work / "sasrec-id"  # the ID SASRec: a baseline and the alignment target of every RAT run
    for model in args.models:
        for source in args.sources:
            run_dir = work / f"{model}-{source}"
            overrides = [f"model={model}", *common]
            if source != "id":
                if not RunDir(align).best.exists():
                    train_rows(align, ["model=sasrec", *common], {})
                overrides += [f"item_embeddings={embedding_file(args.dataset, source, args.budget, work, args.threads, args.embed_dim)}",
                              f"align_run={align}"]
            base = {"dataset": args.dataset, "model": model, "variant": f"{args.budget}:{source}", "source": source,
                    "budget": args.budget, "settings": " ".join(overrides), "machine": machine(), "versions": versions(),
                    "command": command_line()}
            rows = train_rows(run_dir, overrides, base)
            groups = tail_metrics(run_dir)
            for row in rows:
                if row["split"] == "test" and row["protocol"] == "full" and not row["exclude_history"]:
                    row.update(groups)
            if source != "id":
                rows = versus(rows, run_dir, work / f"{model}-id", "id")
                rows = versus(rows, run_dir, work / f"{model}-id", "id_tail", group="tail-items")
            save_rows(args.results, rows, markdown)
            print(f"{args.dataset} {model} {source}: done", flush=True)


if __name__ == "__main__":
    main()
