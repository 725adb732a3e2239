"""MixRec (a searched mixture of adapter experts in each group of layers) against DARec's
searched plan, uniform LoRA and SASRec, at one budget (see budgets.py; stated in every row).

MixRec: ``darec search --model mixrec`` chooses, for each group of layers, which of
EXPERTS its mixture holds and its k (1 or 2), with the trainable parameters capped at
those of uniform LoRA (rank 8) and a first trial of START in every layer; the best plan is
then trained to early stopping on validation NDCG@10. The runs it is compared with, user
by user on the test split, are trained by their own scripts at the same budget and seeds,
in their own folders (run them first; a comparison whose run has not finished is left out):

* ``uniform_lora`` and ``darec`` (the searched DARec plan): dynamic_adaption.py;
* ``sasrec`` (SASRec on the same data): darec_accuracy.py --variants sasrec-same-data.

``--base pretrained-cf`` searches and trains MixRec on DARec's best setting (the catalogue head
on the item embeddings of that SASRec, trained first), as ``dynamic_adaption.py --base
pretrained-cf`` does DARec's plans; uniform LoRA is then darec_accuracy.py's ``pretrained-cf`` run.

The search's summary and optuna study are kept in bench/results/kept/ (as each finished run's
results are): at ``cpu-full`` a search fills a session (``--search-only``, with
``--search-minutes``), the same command resumes it on the next machine, and the plan then
trains in a session of its own.

With runs under more seeds (``--seed N``, every script), the first row also carries each
comparison with each user's NDCG@10 averaged over the seeds (``vs_NAME_seeds``). The
expert-usage heatmap of the first seed's run is copied beside the results.

    python bench/dynamic_adaption.py --dataset ml-100k --budget cpu --trials 8 --search-steps 60 --threads 1
    python bench/darec_accuracy.py --dataset ml-100k --budget cpu --variants sasrec-same-data --threads 1
    python bench/mixrec.py --dataset ml-100k --budget cpu --trials 8 --search-steps 60 --threads 1
    # then each again with --seed 7 and --seed 8

Each side at its settings tuned on validation (bench/tune.py; tuning.md), under one tag: the
searches run again at those settings, and MixRec is compared with the runs of the same tag.

    python bench/dynamic_adaption.py --dataset ml-100k --budget cpu --trials 8 --search-steps 60 --threads 1 \
        --plans searched uniform-lora --tag tuned --set lr=3e-3
    python bench/mixrec.py --dataset ml-100k --budget cpu --trials 8 --search-steps 60 --threads 1 \
        --tag tuned --set lr=3e-3 lambda_balance=0.1
"""

from __future__ import annotations

import argparse
import json
import shutil
from functools import partial
from pathlib import Path

import yaml

from common import (HERE, TIME_LIMITED, Row, RunSpec, command_line, epochs_cell, finished_seeds, has_finished, machine,
                    markdown_table, restore_search, save_rows, main_rows, search_arguments, search_files, timed_search, train_rows,
                    upgrade_run_row, versions, versus, versus_cell, with_seeds)
from dynamic_adaption import plan_dir, settings, trainable, uniform_lora, use_base
from darec.models.llm.adapters import describe_plan
from darec.search import Search, SearchConfig
from darec.search.study import STUDY
from darec.train import build_config
from darec.train.run import RunDir

RESULTS = HERE / "results" / "mixrec.json"
EXPERTS = ["lora:4", "houlsby:16", "parallel:16", "ia3"]
# Three experts under the cap at SmolLM2's shapes: 40,704 + 19,024 + 1,920 trainable parameters a layer, and
# 1,728 for the router, against uniform lora:8's 81,408.
START = "moe[lora:4, parallel:16, ia3]:k=2"
COMPARED = ("uniform_lora", "darec", "sasrec")


def reference(args: argparse.Namespace, name: str, seed: int) -> Path:
    """The run folder of a compared run, as its own script lays it out: uniform LoRA's and
    DARec's under the same --tag (dynamic_adaption.py --tag TAG with their own --set), SASRec's
    under its own settings."""
    if name == "sasrec":
        return RunSpec(args.dataset, "sasrec-same-data", args.budget, seed=seed).run_dir(args.accuracy_workdir)
    variant = {"uniform_lora": "uniform-lora", "darec": "searched"}[name]
    return plan_dir(args, RunSpec(args.dataset, variant, args.budget, args.tag, seed), args.workdir.parent / "dynamic_adaption")


def mixrec_settings(args: argparse.Namespace, seed: int) -> list[str]:
    """MixRec's settings under ``seed``: DARec's on the same base, as dynamic_adaption.py trains them."""
    return ["model=mixrec" if o == "model=darec" else o for o in settings(args, seed)]


def run_dir(args: argparse.Namespace, spec: RunSpec) -> Path:
    """Where a MixRec run of this script lives."""
    return args.workdir / spec.dataset / spec.budget / spec.name


def markdown(rows: list[Row]) -> str:
    cells = []
    for r, valid in main_rows(rows):
        pooled = [f"{versus_cell(r, f'{n}_seeds')} ({r[f'vs_{n}_seeds_runs']} seeds)" if f"vs_{n}_seeds" in r else "-"
                  for n in COMPARED]
        cells.append([r["dataset"], r["budget"], r["name"], f"{r['trainable_parameters']:,}", f"{valid.get('ndcg@10', float('nan')):.4f}",
                      f"{r['ndcg@10']:.4f}", f"{r['hit@10']:.4f}", epochs_cell(r), f"{r.get('search_seconds', 0):.0f}",
                      *(versus_cell(r, n) for n in COMPARED), *pooled, r.get("plan_summary", "").replace(" | ", "; ")])
    return markdown_table(
        "MixRec vs DARec's searched plan, uniform LoRA and SASRec (generated by bench/mixrec.py from the .json file of the same name)",
        ["Full ranking, leave-one-out, history kept; each run trained to early stopping on validation NDCG@10; the budget",
         "column names the settings (bench/budgets.py). vs X: MixRec's test NDCG@10 minus X's, paired over the test users, with",
         "its 95% bootstrap interval and paired t-test p (`darec compare`); `-` where X's run has not finished. uniform LoRA",
         "and DARec (its searched plan) from bench/dynamic_adaption.py, SASRec (same data) from bench/darec_accuracy.py, same",
         "budget and seed. Pooled: each user's NDCG@10 averaged over the seeds of each side. Rows NAME@seedN: seed N.",
         TIME_LIMITED],
        ["dataset", "budget", "run", "trainable parameters", "valid NDCG@10", "test NDCG@10", "test HR@10", "epochs (best)",
         "search seconds", "vs uniform LoRA", "vs DARec (searched)", "vs SASRec", "vs uniform LoRA, pooled",
         "vs DARec, pooled", "vs SASRec, pooled", "plan by layer"], cells)


def pool_seeds(args: argparse.Namespace, run: RunSpec) -> None:
    """On the first seed's rows, each comparison with each user's NDCG@10 averaged over every
    seed that both sides finished."""
    written = [upgrade_run_row(r) for r in json.loads(args.results.read_text())]
    where = partial(run_dir, args)
    first = RunSpec(run.dataset, run.variant, run.budget, run.tag)
    rows = [r for r in written if first.holds(r)]
    mine = finished_seeds(written, [first], where)
    if not rows or not mine:
        return
    for name in COMPARED:
        seeds = [s for s in mine if has_finished(reference(args, name, s))]
        if not seeds or not has_finished(reference(args, name, 0)):
            continue
        rows = versus(rows, with_seeds(first, seeds, where), [reference(args, name, s) for s in [0, *seeds]], f"{name}_seeds")
        for row in rows:
            if f"vs_{name}_seeds" in row:
                row[f"vs_{name}_seeds_runs"] = 1 + len(seeds)
    save_rows(args.results, rows, markdown, upgrade_run_row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    search_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="train the searched plan again under this seed (the search is "
                        "not run again)")
    parser.add_argument("--set", dest="extra", nargs="*", default=[], help="extra overrides for every run (e.g. backbone=tiny)")
    parser.add_argument("--tag", default="", help="name a second search and its runs (search@TAG, searched-mixrec@TAG), "
                        "e.g. under other --set settings; compared with dynamic_adaption.py's runs of the same tag")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=HERE / "work" / "mixrec")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    use_base(args)
    work = args.workdir / args.dataset / args.budget
    suffix, search_dir, summary_file = search_files(work, args.tag)
    restore_search(search_dir, summary_file)  # a search begun on an earlier machine
    if args.search_only and args.seed:
        raise SystemExit("--search-only searches: it takes no --seed")
    if args.seed or (summary_file.exists() and not (search_dir / STUDY).exists()):
        if not summary_file.exists():
            raise SystemExit(f"--seed trains the searched plan again, but {summary_file} does not exist (nor a kept copy): "
                             "run the search first")
        summary = yaml.safe_load(summary_file.read_text())
    else:
        cap = trainable([*settings(args, 0), f"plan={uniform_lora(args)}"])
        summary = timed_search(search_dir, summary_file, lambda: Search(
            build_config(overrides=mixrec_settings(args, 0)), SearchConfig(
                trials=args.trials, budget=args.search_steps, max_trainable=cap, experts=EXPERTS, top_k=[1, 2],
                start_with=[START], minutes=args.search_minutes, valid_users=args.search_valid_users), search_dir),
            args.search_minutes, args.trials, args.budget)
        if "plan" not in summary:
            raise SystemExit("the search completed no trial under the parameter cap")
        for picture in ("progress.png", "plans.png"):
            shutil.copyfile(search_dir / picture, args.results.parent / f"mixrec-{args.dataset}-{args.budget}{suffix}-{picture}")
    if args.search_only:
        print(f"{args.dataset}: searched plan {describe_plan(summary['plan'])} ({summary_file}); --search-only: "
              "nothing trained", flush=True)
        return
    plan = summary["plan"]
    run = RunSpec(args.dataset, "searched-mixrec", args.budget, args.tag, args.seed)
    folder = run_dir(args, run)
    overrides = [*mixrec_settings(args, args.seed), f"plan={plan}"]
    row = {**run.fields(), "model": "mixrec", "plan": json.dumps(plan), "plan_summary": describe_plan(plan),
           "settings": " ".join(overrides[:-1]), "machine": machine(), "versions": versions(), "command": command_line(),
           "search_seconds": summary["seconds"], "search_trials": summary["trials"], "search_best_valid": summary["best_value"]}
    rows = train_rows(folder, overrides, row, results=args.results)
    count = trainable(overrides, folder)  # the trained run, reopened
    for r in rows:
        r["trainable_parameters"] = count
    for name in COMPARED:
        rows = versus(rows, folder, reference(args, name, args.seed), name)
    save_rows(args.results, rows, markdown, upgrade_run_row)
    if not args.seed and RunDir(folder).figure("expert_usage").exists():
        shutil.copyfile(RunDir(folder).figure("expert_usage"),
                        args.results.parent / f"mixrec-{args.dataset}-{args.budget}{suffix}-expert_usage.png")
    print(f"{args.dataset} {run.name}: done", flush=True)
    pool_seeds(args, run)


if __name__ == "__main__":
    main()
