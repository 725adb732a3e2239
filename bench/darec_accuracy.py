"""DARec next to our SASRec (CE), and the ablation table, on the data sets with item text.

Full ranking, leave-one-out, model selection on validation NDCG@10; the test split is
read once, at the end. Rows go to bench/results/darec_accuracy.json as each run ends
(two processes may run side by side, e.g. one a data set), and the markdown table beside
it is rewritten from all rows. Runs live in bench/work/darec_accuracy/ and resume.

Budgets (``--budget``): see ``budgets.py``.

Variants (``--variants``): ``darec`` (text + ID spans, block mask, joint SASRec with
InfoNCE), each switch off (``no-masking``: plain causal attention; ``no-injection``:
``lambda_cf=0``, so no alignment and the ID embeddings are learned by the LLM loss alone;
``text-only``; ``id-only``), ``semantic`` (mask=semantic and its auxiliary loss),
``e4srec`` (ID only, causal, no injection), ``head-items`` (``head=items``: scores against
the SASRec's item embeddings instead of a fresh linear layer), ``pretrained-cf``
(``head=items`` with the SASRec pre-trained first, the ``sasrec-same-data`` run, then kept
in the loop: ``cf_run``), ``pretrained-cf-frozen`` (the same, kept fixed:
``cf_freeze``), ``pretrained-cf-no-masking`` (``pretrained-cf`` with plain causal
attention: the masking ablation of that setting), ``pretrained-cf-residual`` (``head=residual``:
that SASRec's own user state plus what the LLM adds, zero at first, so it starts at the SASRec's
predictions), ``pretrained-cf-residual-frozen`` (the same with that SASRec kept fixed: the LLM
can only add to its predictions, not retrain it), and two SASRec baselines: ``sasrec`` (our
default SASRec trained to early stopping on all windows, last 50 items) and
``sasrec-same-data`` (the budget's history length and windows).

Each DARec row is compared with ``sasrec-same-data`` on the test users, and each ablation
with each variant it switches something off in on the validation users (``ABLATION_OF``), both paired
user by user. ``--seed N`` trains the variants again under seed N (SASRec too, for the
``pretrained-cf`` ones), and the first rows then carry both comparisons pooled over the
seeds; ``--compare-only`` redoes the comparisons on rows already written. With ``--tag T`` the seeds' runs are
``VARIANT@T@seedN`` and pool on the ``VARIANT@T`` rows.

A finished run's results are kept in bench/results/kept/ (see common.keep) and read from
there on a machine without its folder; a ``sasrec-same-data`` run that the pre-trained
variants start from keeps its weights too (about 1 MB), and is put back from them rather
than trained again (trained again on another machine it need not reproduce). A run from
before results were kept, whose folder is gone, is refused rather than silently replaced;
``--retrain`` trains it again, replacing its rows.

    taskset -c 0 python bench/darec_accuracy.py --dataset ml-100k --threads 1
    taskset -c 1 python bench/darec_accuracy.py --dataset scientific --variants sasrec darec --threads 1

A full-depth epoch on both cores, timed with nothing else running (``results/cpu_full_two_cores.md``):

    python bench/darec_accuracy.py --dataset ml-100k --budget cpu-full --variants darec --threads 2 \
        --tag two-cores --set epochs=1 --results bench/results/cpu_full_two_cores.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from functools import partial
from pathlib import Path

from budgets import BUDGETS
from common import (HERE, TIME_LIMITED, Row, RunSpec, command_line, epochs_cell, finished_seeds, for_model,
                    has_finished, machine, markdown_table, save_rows, train_rows, upgrade_run_row, versions, versus,
                    versus_cell, with_seeds)
from darec.config import override_name
from darec.train import build_config
from darec.train.run import RunDir
from darec.train.trainer import BUDGET_KEYS

RESULTS = HERE / "results" / "darec_accuracy.json"
DAREC_VARIANTS = {
    "darec": ["model=darec"],
    "no-masking": ["model=darec", "mask=causal"],
    "no-injection": ["model=darec", "lambda_cf=0"],
    "text-only": ["model=darec", "item_input=text"],
    "id-only": ["model=darec", "item_input=id"],
    "semantic": ["model=darec", "mask=semantic"],
    "e4srec": ["model=e4srec"],
    "head-items": ["model=darec", "head=items"],
    "pretrained-cf": ["model=darec", "head=items"],  # plus cf_run: the sasrec-same-data run
    "pretrained-cf-frozen": ["model=darec", "head=items", "cf_freeze=true"],  # likewise
    "pretrained-cf-no-masking": ["model=darec", "head=items", "mask=causal"],  # likewise
    "pretrained-cf-residual": ["model=darec", "head=residual"],  # likewise
    "pretrained-cf-residual-frozen": ["model=darec", "head=residual", "cf_freeze=true"],  # likewise
}
PRETRAINED = ("pretrained-cf", "pretrained-cf-frozen", "pretrained-cf-no-masking", "pretrained-cf-residual",
              "pretrained-cf-residual-frozen")
SASREC = ["model=sasrec", "loss=ce", "epochs=200", "patience=10"]
# An ablation and the variants it turns a switch off in (no-injection: the joint or the pre-trained SASRec's
# injection), judged on validation, paired over the users.
# pretrained-cf-residual is another head, not a switch: the same comparison chooses between the two on validation;
# so for its frozen form, against the residual head trained jointly.
ABLATION_OF = {"no-masking": ["darec"], "no-injection": ["darec", "pretrained-cf"], "pretrained-cf-no-masking": ["pretrained-cf"],
               "pretrained-cf-residual": ["pretrained-cf"], "pretrained-cf-residual-frozen": ["pretrained-cf-residual"]}
VARIANTS = ["darec", "no-masking", "no-injection", "sasrec", "sasrec-same-data", "e4srec", "text-only", "id-only", "semantic",
            "head-items", *PRETRAINED]


# How an LLM run is optimised and how long: a --set of these is a setting of the LLM runs, tried
# against the one SASRec reference, which keeps its own schedule (SASREC).
LLM_ONLY = (*BUDGET_KEYS, "lr", "weight_decay", "batch_size", "lr_schedule", "warmup_ratio", "grad_clip")


def sasrec_extra(extra: list[str]) -> list[str]:
    """The ``--set`` extras that reach the SASRec runs (data and placement, not LLM_ONLY)."""
    return [o for o in for_model(extra, "sasrec") if override_name(o) not in LLM_ONLY]


def spec(args: argparse.Namespace, variant: str, seed: int | None = None) -> RunSpec:
    """The run of ``variant`` in this invocation (its budget, tag and seed; SASRec with its own defaults: budget -).
    A SASRec run carries the tag only where the tag's extras change it (not for ``--set lr=3e-4``)."""
    tag = args.tag
    if variant.startswith("sasrec") and not any(override_name(o) != "seed" for o in sasrec_extra(args.extra)):
        tag = ""
    return RunSpec(args.dataset, variant, "-" if variant == "sasrec" else args.budget, tag,
                   args.seed if seed is None else seed)


def overrides_for(variant: str, dataset: str, budget: str, threads: int, cf_run: Path) -> list[str]:
    """A variant's settings on ``dataset`` with ``threads`` torch threads; ``cf_run``: the SASRec
    run the pre-trained variants start from."""
    where = [f"dataset={dataset}", f"threads={threads}"]
    if variant == "sasrec":
        return [*where, *SASREC]
    data = [o for o in BUDGETS[budget] if o.split("=")[0] in ("max_len", "window_overlap", "windows_per_user")]
    if variant == "sasrec-same-data":
        return [*where, *SASREC, *data]
    if variant in PRETRAINED:
        return [*where, *BUDGETS[budget], *DAREC_VARIANTS[variant], f"cf_run={cf_run}"]
    return [*where, *BUDGETS[budget], *DAREC_VARIANTS[variant]]


def sasrec_reference(dataset: str, budget: str, seed: int, workdir: Path, threads: int) -> Path:
    """The ``sasrec-same-data`` run (of ``seed``; 0: the first) that the pre-trained variants start
    from, with its weights: put back from its kept weights, else trained (again, where only its
    results are kept: it must then reproduce them, see common.train_rows). For a script that starts
    from it without writing its rows here (dynamic_adaption.py's ``--base pretrained-cf``)."""
    run_dir = RunSpec(dataset, "sasrec-same-data", budget, "", seed).run_dir(workdir)
    if not RunDir(run_dir).best.exists():
        overrides = [*overrides_for("sasrec-same-data", dataset, budget, threads, run_dir), *([f"seed={seed}"] if seed else [])]
        train_rows(run_dir, overrides, {}, weights=True)
    return run_dir


def compared_cell(row: Row, name: str) -> str:
    """A paired comparison, and under it the same pooled over seeds where there are some."""
    cell = versus_cell(row, name)
    if f"vs_{name}_seeds" in row:
        cell += f"<br>{row[f'vs_{name}_seeds_runs']} seeds: {versus_cell(row, f'{name}_seeds')}"
    return cell


def key(variant: str) -> str:
    """The name of a comparison with ``variant`` in a row's keys (``vs_pretrained_cf``)."""
    return variant.replace("-", "_")


def switch_cell(valid: Row) -> str:
    """An ablation's validation comparisons with each variant it switches something off in."""
    fulls = [f for f in ABLATION_OF.get(valid.get("variant", ""), []) if f"vs_{key(f)}" in valid]
    if len(fulls) == 1 and "vs_untagged" not in valid:
        return compared_cell(valid, key(fulls[0]))
    cells = [f"vs {f}: {compared_cell(valid, key(f))}" for f in fulls]
    cells += [f"vs untagged: {versus_cell(valid, 'untagged')}"] if "vs_untagged" in valid else []
    return "<br>".join(cells) or "-"


def markdown(rows: list[Row]) -> str:
    def find(r: Row, split: str, exclude: bool) -> Row:
        return next((x for x in rows if RunSpec.of(r).holds(x) and x["protocol"] == "full"
                     and x["split"] == split and x["exclude_history"] == exclude), {})

    order = {v: i for i, v in enumerate(VARIANTS)}
    main = [r for r in rows if r["split"] == "test" and r["protocol"] == "full" and not r["exclude_history"]]
    cells = []
    for r in sorted(main, key=lambda r: (r["dataset"], r["budget"], order.get(r["variant"], 99), r["name"])):
        valid, excluded = find(r, "valid", False), find(r, "test", True)
        cells.append([r["dataset"], r["budget"], r["name"], epochs_cell(r), f"{valid.get('ndcg@10', float('nan')):.4f}",
                      f"{r['ndcg@10']:.4f}", f"{r['hit@10']:.4f}", f"{excluded.get('ndcg@10', float('nan')):.4f}",
                      f"{r.get('seconds_per_epoch', float('nan')):.0f}", compared_cell(r, "sasrec"), compared_cell(valid, "sasrec"),
                      switch_cell(valid)])
    return markdown_table(
        "DARec accuracy and ablations (generated by bench/darec_accuracy.py from the .json file of the same name)",
        ["Full ranking over all items, leave-one-out, history kept in the ranking; selected on validation NDCG@10.",
         "The budget column says which settings ran (see the script's docstring); `cpu` is a reduced budget; `-` is SASRec",
         "with its own defaults (every window, the last 50 items, early stopping). Seconds per epoch were measured with other",
         "work sharing the machine: not a speed comparison (on `gpu`, 6 to 15 runs shared one H100).", TIME_LIMITED,
         "vs SASRec: test NDCG@10 minus that of `sasrec-same-data` (same budget, and same tag where it has one), paired over",
         "the test users, with its 95% bootstrap interval and paired t-test p (`darec compare`); `-` where not computed.",
         "vs SASRec (valid): the same on the validation users, which model selection sees (`-` where a kept run has no per-user",
         "validation metrics, nor weights to compute them).",
         "Switch off − on: an ablation's validation NDCG@10 minus that of the variant with the switch on (no-masking: darec;",
         "no-injection: darec and pretrained-cf; pretrained-cf-no-masking: pretrained-cf), paired over the validation users",
         "(`darec compare --split valid`): negative where the switch helps (pretrained-cf-residual, another head rather than a",
         "switch, minus pretrained-cf: positive where the residual head is better; pretrained-cf-residual-frozen minus",
         "pretrained-cf-residual: positive where keeping the SASRec fixed is better); a tagged row, vs untagged: its validation NDCG@10 minus the untagged run's. Rows VARIANT@seedN (VARIANT@TAG@seedN): trained again under seed N",
         "(`--seed N`, with the same `--tag`); \"N seeds\": the same comparison with each user's NDCG@10 averaged over the seeds of each side."],
        ["dataset", "budget", "variant", "epochs (best)", "valid NDCG@10", "test NDCG@10", "test HR@10",
         "test NDCG@10, history excluded", "s / epoch", "vs SASRec (test)", "vs SASRec (valid)", "switch off − on (valid)"], cells)


def pool_seeds(args: argparse.Namespace) -> None:
    """On each row of the first seed (of ``--tag`` where one is given), its comparisons again with
    each user's NDCG@10 averaged over every seed that both sides finished (``darec compare A,A@seed7 B,B@seed7``)."""
    if not args.results.exists():
        return
    where = partial(RunSpec.run_dir, workdir=args.workdir)
    written, rows = [upgrade_run_row(r) for r in json.loads(args.results.read_text())], []
    for variant in VARIANTS:
        first = spec(args, variant, seed=0)
        mine = [r for r in written if first.holds(r)]
        if variant.startswith("sasrec") or not mine or not has_finished(where(first)):
            continue
        pairs = [("sasrec-same-data", "sasrec", "test"), ("sasrec-same-data", "sasrec", "valid"),
                 *((full, key(full), "valid") for full in ABLATION_OF.get(variant, []))]
        for reference, name, split in pairs:
            name += "_seeds"
            other = spec(args, reference, seed=0)
            seeds = finished_seeds(written, [first, other], where)
            if seeds:
                mine = versus(mine, with_seeds(first, seeds, where), with_seeds(other, seeds, where), name, split=split)
                for row in mine:
                    if f"vs_{name}" in row:
                        row[f"vs_{name}_runs"] = 1 + len(seeds)
        rows += mine
    save_rows(args.results, rows, markdown, upgrade_run_row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="ml-100k or scientific (any data set with item text works)")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--workdir", type=Path, default=HERE / "work" / "darec_accuracy")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--set", dest="extra", nargs="*", default=[], help="extra overrides for the runs whose config has "
                        "the key (e.g. lr=3e-4, max_minutes=10); the training keys (epochs, patience, max_minutes, lr, "
                        "weight_decay, batch_size, lr_schedule, warmup_ratio, grad_clip) reach the LLM runs only: the "
                        "SASRec runs train to their own schedule, and are the untagged ones unless the tag changes them")
    parser.add_argument("--tag", default="", help="name for the --set extras: their rows carry this tag, their runs have "
                        "folders of their own (VARIANT@TAG), so a setting tried (e.g. --set lr=3e-4 --tag lr3e-4) sits "
                        "beside the budget's own rows")
    parser.add_argument("--seed", type=int, default=0, help="train the variants again under seed N, beside the first (rows "
                        "with that seed, runs in VARIANT[@TAG]@seedN); the first rows then also carry their comparisons "
                        "pooled over the seeds")
    parser.add_argument("--evaluate-only", action="store_true", help="report existing runs as they stand")
    parser.add_argument("--retrain", action="store_true", help="train the variants again where their run folders are gone "
                        "with nothing kept (runs of an earlier machine): their rows in the results file are replaced")
    parser.add_argument("--compare-only", action="store_true", help="only add the paired comparisons to the rows already in "
                        "the results file (no training, no evaluation beyond the per-user metrics they need)")
    args = parser.parse_args()
    if args.seed:
        args.extra = [*args.extra, f"seed={args.seed}"]
    build_config(overrides=["model=darec", *args.extra])  # a typo in --set fails here, not dropped as SASRec-less
    variants = list(args.variants)
    first = None if args.compare_only else next((i for i, v in enumerate(variants) if v in PRETRAINED), None)
    if first is not None and "sasrec-same-data" not in variants[:first]:
        variants.insert(first, "sasrec-same-data")  # they start from that run (resumed if done)
    weights = {"sasrec-same-data"} if first is not None else set()  # trained again where only its results are kept
    written = [upgrade_run_row(r) for r in json.loads(args.results.read_text())] if args.compare_only else []
    for variant in variants:
        run = spec(args, variant)
        # The SASRec of the same tag and seed where there is one, else the budget's own.
        reference = spec(args, "sasrec-same-data").run_dir(args.workdir)
        overrides = overrides_for(variant, args.dataset, args.budget, args.threads, reference)
        model = next(o.split("=")[1] for o in overrides if o.startswith("model="))
        # e.g. gradient_checkpointing reaches the LLM runs only; so does an LLM_ONLY key: the SASRec
        # references keep one schedule (SASREC) whatever an LLM run is given.
        overrides += sasrec_extra(args.extra) if model == "sasrec" else for_model(args.extra, model)
        base = {**run.fields(), "model": model, "settings": " ".join(overrides), "machine": machine(), "versions": versions(),
                "command": command_line()}
        run_dir = run.run_dir(args.workdir)
        if args.compare_only:
            rows = [r for r in written if run.holds(r)]
            if not rows or not has_finished(run_dir):
                continue
        else:
            rows = train_rows(run_dir, overrides, base, args.evaluate_only, None if args.retrain else args.results,
                              weights=variant in weights)
        if model != "sasrec":
            if not reference.exists() and not has_finished(reference):
                reference = replace(spec(args, "sasrec-same-data"), tag="", seed=0).run_dir(args.workdir)
            rows = versus(rows, run_dir, reference, "sasrec")
            rows = versus(rows, run_dir, reference, "sasrec", split="valid")  # what model selection sees
        for full in ABLATION_OF.get(variant, []):
            rows = versus(rows, run_dir, spec(args, full).run_dir(args.workdir), key(full), split="valid")
        if args.tag and model != "sasrec":  # a setting tried, judged on validation against the budget's own
            rows = versus(rows, run_dir, replace(run, tag="").run_dir(args.workdir), "untagged", split="valid")
        save_rows(args.results, rows, markdown, upgrade_run_row)
        print(f"{args.dataset} {run.name}: done", flush=True)
    pool_seeds(args)


if __name__ == "__main__":
    main()
