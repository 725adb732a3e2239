"""Run RecBole's SASRec on one data set and print one JSON line of results.

Runs inside RecBole's own virtual environment (see bench/README.md); launched by
bench/baselines.py. RecBole's code is installed there from PyPI, never copied here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def write_user_lines_as_atomic(source: Path, out_dir: Path, name: str) -> None:
    """One-user-per-line file -> RecBole .inter, with the position in the line as timestamp."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(source) as f, open(out_dir / f"{name}.inter", "w") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for line in f:
            user, *items = line.split()
            for position, item in enumerate(items):
                out.write(f"{user}\t{item}\t{position}\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", required=True, help="ml-100k (RecBole's bundled copy) or a name with --user-lines")
    parser.add_argument("--user-lines", type=Path, help="one-user-per-line file to convert (e.g. Beauty.txt)")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--inner", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--data-path", type=Path, help="folder holding <dataset>/<dataset>.inter (default: the workdir's data)")
    parser.add_argument("--load-only", action="store_true",
                        help="only load, split and build the training samples; print seconds and peak memory")
    args = parser.parse_args()

    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)  # RecBole writes log/ and log_tensorboard/ into the current directory
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    torch.autograd.set_detect_anomaly(False)  # switched on by RecBole's SINE import; ~40% slower otherwise

    if args.user_lines:
        write_user_lines_as_atomic(args.user_lines, args.workdir / "data" / args.dataset, args.dataset)
    config = Config(model="SASRec", dataset=args.dataset, config_dict={
        "data_path": str(args.data_path or args.workdir / "data"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "loss_type": "CE", "train_neg_sample_args": None,
        "hidden_size": args.hidden, "inner_size": args.inner, "n_layers": args.layers, "n_heads": args.heads,
        "hidden_dropout_prob": args.dropout, "attn_dropout_prob": args.dropout,
        "train_batch_size": args.batch, "learning_rate": args.lr, "epochs": args.epochs, "stopping_step": args.epochs,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "valid_metric": "NDCG@10", "metrics": ["Hit", "NDCG", "MRR"], "topk": [5, 10, 20],
        "use_gpu": False, "checkpoint_dir": str(args.workdir / "saved"), "seed": args.seed, "show_progress": False,
    })
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    start = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    if args.load_only:
        import resource

        print(json.dumps({"seconds": time.perf_counter() - start, "users": int(dataset.user_num) - 1,
                          "items": int(dataset.item_num) - 1, "interactions": len(dataset.inter_feat),
                          "train_samples": len(train_data.dataset), "recbole": recbole.__version__,
                          "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)
        return
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)

    epoch_seconds: list[float] = []
    train_epoch = trainer._train_epoch

    def timed(*a, **k):
        start = time.perf_counter()
        out = train_epoch(*a, **k)
        epoch_seconds.append(time.perf_counter() - start)
        return out

    trainer._train_epoch = timed
    _, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    print(json.dumps({
        "seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "epochs": len(epoch_seconds),
        "valid": {k.lower(): float(v) for k, v in best_valid.items()},
        "test": {k.lower(): float(v) for k, v in test.items()},
        "users": int(dataset.user_num) - 1, "items": int(dataset.item_num) - 1,
        "train_samples": len(train_data.dataset),
        "recbole": recbole.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
    }), file=sys.stdout, flush=True)


if __name__ == "__main__":
    main()
