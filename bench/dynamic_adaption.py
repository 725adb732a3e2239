"""The searched layer-wise adapter plan against uniform plans (DARec's dynamic adaption).

For each data set: search the plan (``darec search``: optuna, validation NDCG@10 after a
short budget, trainable parameters capped at those of uniform LoRA, which is the first
trial), then train three plans to convergence under the same settings: the searched plan,
uniform LoRA (the cap, so the searched plan has no more trainable parameters) and uniform
Houlsby (its bottleneck the largest under the same cap, unless ``--houlsby`` sizes it), each on
a base setting (``--base``: darec_accuracy.py's ``darec`` variant, or a ``pretrained-cf*`` one).
A search that keeps its first trial has found uniform LoRA: its run is uniform LoRA's, and its
rows say so (``searched_is_uniform_lora``). Rows report validation and test NDCG@10 / HR@10, the
searched plan's test NDCG@10 against each uniform plan's (paired over users, per seed and pooled
over seeds), trainable parameters and the search's wall time, in
bench/results/dynamic_adaption.json (markdown beside it); the
search's two pictures are copied beside them, and its summary (plan, trials, seconds) and
optuna study are kept in bench/results/kept/, so that a later machine resumes the search, or
trains its plan, without searching again. Budgets as in darec_accuracy.py. Uniform LoRA
is darec_accuracy.py's base variant: where that script has trained it at the same budget,
seed and settings (its run here, or its kept results), that run is read rather than trained again.

    python bench/dynamic_adaption.py --dataset ml-100k --budget gpu --trials 30 --search-steps 300
    python bench/dynamic_adaption.py --dataset ml-100k --budget cpu --trials 8 --search-steps 60 --threads 1

At ``cpu-full`` a search fills most of a session on its own (``--search-only``; the same command
resumes it in the next session), and each plan trains in a session of its own:

    python bench/dynamic_adaption.py --dataset ml-100k --budget cpu-full --trials 8 --search-steps 60 \
        --search-minutes 50 --threads 2 --search-only
    python bench/dynamic_adaption.py --dataset ml-100k --budget cpu-full --plans searched --threads 2

On DARec's best setting, uniform LoRA is then darec_accuracy.py's kept ``pretrained-cf`` run,
and the SASRec it starts from is put back from that script's kept weights:

    python bench/dynamic_adaption.py --dataset scientific --budget cpu-full --base pretrained-cf --set patience=4 \
        --trials 8 --search-steps 200 --search-valid-users 1000 --search-minutes 50 --threads 2 --search-only
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import yaml

from common import (HERE, TIME_LIMITED, Row, RunSpec, command_line, epochs_cell, finished_run, finished_seeds, kept,
                    has_finished, machine, main_rows, markdown_table, restore_search, save_rows, search_arguments, search_files,
                    timed_search, train_rows, upgrade_run_row, versions, versus, versus_cell, with_seeds)
from darec_accuracy import overrides_for, sasrec_reference
from darec.models.base import trainable_parameters
from darec.models.llm.adapters import describe_plan
from darec.models.llm.backbone import layer_count
from darec.search import Search, SearchConfig
from darec.search.study import STUDY
from darec.search.space import DEFAULT_CHOICES
from darec.train import RunConfig, Trainer, build_config
from darec.train.run import RunDir
from darec.train.trainer import BUDGET_KEYS

RESULTS = HERE / "results" / "dynamic_adaption.json"
PLANS = ["searched", "uniform-lora", "uniform-houlsby"]
SEEDS_POOLED = {"uniform_lora": "seeds_pooled", "uniform_houlsby": "houlsby_seeds_pooled"}  # how many seeds each pools


def trainable(overrides: list[str], run_dir: Path | None = None) -> int:
    """Trainable parameters of a run's model: the run's own where it has started, else a model
    built from ``overrides`` in a scratch folder (so ``run_dir`` is not begun as a side effect)."""
    if run_dir is not None and RunDir(run_dir).state.exists():
        return trainable_parameters(Trainer(None, run_dir, resume=True, progress=False).model)[0]
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(build_config(overrides=overrides), Path(scratch) / "run", progress=False)
        trainer.release()
        return trainable_parameters(trainer.model)[0]


def houlsby_size(args: argparse.Namespace, cap: int) -> int:
    """The largest bottleneck size at which uniform Houlsby has no more than ``cap`` trainable
    parameters: their count is linear in the size, so the models of sizes 1 and 2 give it."""
    n = len(uniform_lora(args))
    one, two = (trainable([*settings(args, 0), f"plan={[f'houlsby:{size}'] * n}"]) for size in (1, 2))
    if one > cap:
        raise SystemExit(f"uniform houlsby:1 has {one:,} trainable parameters, above uniform LoRA's {cap:,}: give --houlsby")
    return 1 + (cap - one) // (two - one)


def same_plan(run_dir: Path, plan: list[str]) -> None:
    """Refuse a run (here, or its kept results) begun with another plan than ``plan`` (e.g. uniform
    Houlsby of another size): its results would be reported under this plan."""
    found = finished_run(run_dir)
    if RunDir(found).config.exists() and (ran := RunDir(found).read_config().model.plan) and ran != plan:
        raise SystemExit(f"{found} was trained with the plan {describe_plan(ran)}, not {describe_plan(plan)}: "
                         "give the plan it was trained with (e.g. --houlsby), or another --workdir")


def same_training(ours: RunConfig, theirs: RunConfig) -> bool:
    """Whether two configs train the same model the same way, reading an empty plan as the
    ``lora:R`` in every layer it means and an ``auto`` precision as whatever the run resolved
    (the evaluation's batch size changes no result)."""
    a, b = ours.to_dict(), theirs.to_dict()
    n = layer_count(ours.model.backbone, ours.model.keep_layers or None)
    for d, config in ((a, ours), (b, theirs)):
        d["model"]["plan"] = list(config.model.plan) or [config.model.default_entry()] * n
        del d["model"]["lora_r"], d["train"]["eval_batch_size"]
    if ours.train.precision == "auto":
        del a["train"]["precision"], b["train"]["precision"]
    if all(d["train"]["lr_schedule"] == "constant" and not d["train"]["warmup_ratio"] for d in (a, b)):
        # Under a constant rate, how long a run may train changes none of its steps (its first 5
        # epochs are those of a 5-epoch run): the rows say how long each ran.
        for d in (a, b):
            for k in BUDGET_KEYS:
                del d["train"][k]
    return a == b


def use_base(args: argparse.Namespace) -> None:
    """Name the runs of a base other than ``darec`` after it (``--tag`` becomes BASE[-TAG]; the
    given tag stays in ``args.own_tag``) and put back the SASRec a ``pretrained-cf*`` base starts from."""
    args.own_tag = args.tag
    if args.base != "darec":
        args.tag = "-".join([args.base, *([args.tag] if args.tag else [])])
        sasrec_reference(args.dataset, args.budget, args.seed, args.accuracy_workdir, args.threads)


def settings(args: argparse.Namespace, seed: int) -> list[str]:
    """Every DARec plan's settings under ``seed`` (0: the first): the base variant's, as
    darec_accuracy.py has them (its SASRec of that seed), then ``--set``."""
    sasrec = RunSpec(args.dataset, "sasrec-same-data", args.budget, "", seed).run_dir(args.accuracy_workdir)
    return [*overrides_for(args.base, args.dataset, args.budget, args.threads, sasrec), *args.extra,
            *([f"seed={seed}"] if seed else [])]


def uniform_lora(args: argparse.Namespace) -> list[str]:
    """The uniform LoRA plan, whose trainable parameters cap the searches: ``lora:R`` in every layer."""
    model = build_config(overrides=settings(args, 0)).model
    return [f"lora:{args.lora_r}"] * layer_count(model.backbone, model.keep_layers or None)


def uniform_lora_dir(args: argparse.Namespace, spec: RunSpec, workdir: Path) -> Path:
    """Uniform LoRA's run (``spec``) of dynamic_adaption.py, whose runs are in ``workdir``. It is
    darec_accuracy.py's run of the base variant (``darec`` or a ``pretrained-cf*``, whose default plan
    is ``lora:8`` in every layer) where this script has no uniform LoRA run of its own (here or
    kept) and that run (here, or only its kept results) has the same settings and seed: read where
    it is rather than trained again (a ``cpu-full`` run is hours of the machine)."""
    own = workdir / spec.dataset / spec.budget / spec.name
    if own.exists() or has_finished(own):
        return own
    source = RunSpec(spec.dataset, args.base, spec.budget, args.own_tag if spec.tag else "", spec.seed)
    found = finished_run(source.run_dir(args.accuracy_workdir))
    if not RunDir(found).state.exists():
        return own
    overrides = [*settings(args, spec.seed), f"plan={uniform_lora(args)}"]
    if not same_training(build_config(overrides=overrides), RunDir(found).read_config()):
        print(f"{found} differs in its settings from uniform LoRA's: not borrowed", flush=True)
        return own
    return source.run_dir(args.accuracy_workdir)


def plan_dir(args: argparse.Namespace, spec: RunSpec, workdir: Path) -> Path:
    """Where this script's run of a plan (``spec``) lives, with ``workdir`` its runs: uniform LoRA's
    as :func:`uniform_lora_dir` finds it; the searched plan's, where its search kept its first trial
    (the summary, or its kept copy, gives uniform LoRA), is uniform LoRA's run (trained again under
    the same settings and seed it would only repeat it); any other in ``workdir``."""
    if spec.variant == "searched":
        summary = search_files(workdir / args.dataset / args.budget, args.tag)[2]
        summary = summary if summary.exists() else kept(summary)
        if summary is not None and summary.exists() and yaml.safe_load(summary.read_text()).get("plan") == uniform_lora(args):
            spec = replace(spec, variant="uniform-lora", tag=tag_of("uniform-lora", args))
    if spec.variant == "uniform-lora":
        return uniform_lora_dir(args, spec, workdir)
    return workdir / spec.dataset / spec.budget / spec.name


def markdown(rows: list[Row]) -> str:
    cells = []
    for r, valid in main_rows(rows):
        cells.append([r["dataset"], r["budget"], r["name"], f"{r['trainable_parameters']:,}", f"{valid.get('ndcg@10', float('nan')):.4f}",
                      f"{r['ndcg@10']:.4f}", f"{r['hit@10']:.4f}", epochs_cell(r),
                      f"{r['search_seconds']:.0f}" if r.get("search_seconds") else "",
                      *(cell for name in ("uniform_lora", "uniform_houlsby") for cell in pooled_cells(r, name)),
                      r.get("plan_summary", "").replace(" | ", "; ")])
    return markdown_table(
        "Searched adapter plan vs uniform plans (generated by bench/dynamic_adaption.py from the .json file of the same name)",
        ["Full ranking, leave-one-out, history kept; each plan trained to early stopping on validation NDCG@10.", TIME_LIMITED,
         "vs uniform LoRA: the searched plan's test NDCG@10 minus uniform LoRA's, paired over the test users, with its 95%",
         "bootstrap interval and paired t-test p (`darec compare`); `-` where not computed; `=` where the search kept its first",
         "trial, uniform LoRA, so the searched plan's run is uniform LoRA's. vs uniform Houlsby likewise. Rows NAME@seedN: the",
         "plan trained again under seed N; seeds pooled: the same comparisons with each user's NDCG@10 averaged over every",
         "seed of each plan.",
         "scientific, cpu: uniform-lora was trained again (same settings and seed) after the first run's folder was lost;",
         "searched@half-epoch's comparison was made against that first run (valid 0.0557, test 0.0498 NDCG@10), whose rows",
         "were dropped with the untagged searched plan's (valid 0.0526, test 0.0470), which is being searched again."],
        ["dataset", "budget", "plan", "trainable parameters", "valid NDCG@10", "test NDCG@10", "test HR@10", "epochs (best)",
         "search seconds", "vs uniform LoRA", "vs uniform LoRA, seeds pooled", "vs uniform Houlsby",
         "vs uniform Houlsby, seeds pooled", "plan by layer"], cells)


def pooled_cells(row: Row, name: str) -> tuple[str, str]:
    """The cells of the comparison with one uniform plan: for one seed, then pooled over seeds."""
    if name == "uniform_lora" and row.get("searched_is_uniform_lora"):
        return "=", "="
    pooled = versus_cell(row, f"{name}_seeds")
    return versus_cell(row, name), pooled if pooled == "-" else f"{pooled} ({row[SEEDS_POOLED[name]]} seeds)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    search_arguments(parser)
    parser.add_argument("--houlsby", type=int, default=0, help="size of the uniform Houlsby plan (0: the largest at which it "
                        "has no more trainable parameters than uniform LoRA, as the searched plan)")
    parser.add_argument("--set", dest="extra", nargs="*", default=[], help="extra overrides for every run (e.g. backbone=tiny)")
    parser.add_argument("--plans", nargs="+", choices=PLANS, default=PLANS,
                        help="plans to train (without 'searched' there is no search: uniform plans can run beside it)")
    parser.add_argument("--tag", default="", help="name a second search with other search settings: its search, run and "
                        "row become search@TAG and searched@TAG, beside the first; with --set (other training settings) the "
                        "uniform plans' runs are NAME@TAG too")
    parser.add_argument("--seed", type=int, default=0,
                        help="train the plans again under this seed, beside the first (runs and rows NAME@seedN); the searched "
                        "plan comes from the finished search, which is not run again")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=HERE / "work" / "dynamic_adaption")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    use_base(args)
    base_overrides = settings(args, 0)
    work = args.workdir / args.dataset / args.budget

    def where(spec: RunSpec) -> Path:
        return plan_dir(args, spec, args.workdir)
    # Uniform plans; the LoRA one sets the parameter cap of the search.
    lora = uniform_lora(args)
    cap = trainable([*base_overrides, f"plan={lora}"], work / "uniform-lora")
    uniform = {"uniform-lora": lora, "uniform-houlsby": [f"houlsby:{args.houlsby or houlsby_size(args, cap)}"] * len(lora)}

    plans, summary, search_seconds = dict(uniform), {}, 0.0
    suffix, search_dir, summary_file = search_files(work, args.tag)
    restore_search(search_dir, summary_file)  # a search begun on an earlier machine
    study = (search_dir / STUDY).exists()
    if args.search_only and (args.seed or "searched" not in args.plans):
        raise SystemExit("--search-only searches: it takes neither --seed nor --plans without 'searched'")
    if "searched" in args.plans and (args.seed or (summary_file.exists() and not study)):
        if not summary_file.exists():
            raise SystemExit(f"--seed trains a searched plan again, but {summary_file} does not exist (nor a kept copy): "
                             "run the search first")
        summary = yaml.safe_load(summary_file.read_text())
        if "plan" not in summary:
            raise SystemExit(f"the search in {summary_file} completed no trial under the parameter cap")
        search_seconds, plans = summary["seconds"], {"searched": summary["plan"], **uniform}
    elif "searched" in args.plans:
        # Uniform LoRA is the first trial: the search is measured against it at its own budget too.
        lora = f"lora:{args.lora_r}"
        choices = DEFAULT_CHOICES if lora in DEFAULT_CHOICES else [*DEFAULT_CHOICES, lora]
        summary = timed_search(search_dir, summary_file, lambda: Search(
            build_config(overrides=base_overrides), SearchConfig(
                trials=args.trials, budget=args.search_steps, max_trainable=cap, choices=choices, start_with=[lora],
                minutes=args.search_minutes, valid_users=args.search_valid_users), search_dir),
            args.search_minutes, args.trials, args.budget)
        search_seconds = summary["seconds"]
        if "plan" not in summary:
            raise SystemExit("the search completed no trial under the parameter cap")
        plans = {"searched": summary["plan"], **uniform}
        for picture in ("progress.png", "plans.png"):  # kept beside the results: the search as people would look at it
            shutil.copyfile(search_dir / picture,
                            args.results.parent / f"dynamic_adaption-{args.dataset}-{args.budget}{suffix}-{picture}")
    if args.search_only:
        print(f"{args.dataset}: searched plan {describe_plan(plans['searched'])} ({summary_file}); --search-only: "
              "nothing trained", flush=True)
        return
    specs = {name: RunSpec(args.dataset, name, args.budget, tag_of(name, args), args.seed) for name in PLANS}
    for name, plan in ((n, p) for n, p in plans.items() if n in args.plans):
        overrides = [*settings(args, args.seed), f"plan={plan}"]
        run, run_dir = specs[name], where(specs[name])
        same_plan(run_dir, plan)
        row = {**run.fields(), "model": "darec", "plan": json.dumps(plan), "plan_summary": describe_plan(plan),
               "settings": " ".join(settings(args, args.seed)), "machine": machine(), "versions": versions(),
               "command": command_line()}
        if run_dir != args.workdir / run.dataset / run.budget / run.name:
            print(f"{run.name}: {run_dir}, the same model trained as uniform LoRA", flush=True)
            # The command that trained it is that run's own (in the results of the script that trained it).
            row["run_folder"] = str(run_dir.relative_to(HERE.parent) if run_dir.is_relative_to(HERE.parent) else run_dir)
        rows = train_rows(run_dir, overrides, row, results=args.results)
        count = trainable(overrides, run_dir)
        for r in rows:
            r["trainable_parameters"] = count
            if name == "searched":
                r.update(search_seconds=search_seconds, search_trials=summary["trials"],
                         search_best_valid=summary["best_value"], searched_is_uniform_lora=plan == plans["uniform-lora"])
        save_rows(args.results, rows, markdown, upgrade_run_row)
        print(f"{args.dataset} {run.name}: done", flush=True)
    # Once both of a pair are trained (perhaps by two processes): the searched plan against each uniform plan, user by
    # user (against uniform LoRA only where it is another plan: the same run against itself is no comparison).
    if has_finished(where(specs["searched"])) and args.results.exists():
        rows = [r for r in map(upgrade_run_row, json.loads(args.results.read_text())) if specs["searched"].holds(r)]
        for name in ("uniform-lora", "uniform-houlsby") if rows else ():
            if where(specs[name]) != where(specs["searched"]) and has_finished(where(specs[name])):
                rows = versus(rows, where(specs["searched"]), where(specs[name]), name.replace("-", "_"))
        save_rows(args.results, rows, markdown, upgrade_run_row)
    pool_seeds(args, where)


def tag_of(plan: str, args: argparse.Namespace) -> str:
    """The tag of a plan's runs: the searched plan's always (its search differs); the uniform
    plans' only where --set or --base changes how they train, else they are the budget's own runs."""
    return args.tag if plan == "searched" or args.extra or args.base != "darec" else ""


def pool_seeds(args: argparse.Namespace, where) -> None:
    """With the plans trained under more than one seed: the searched plan against each uniform
    plan with each user's NDCG@10 averaged over the seeds of each (``darec compare A1,A2 B1,B2``),
    on the first seed's row, with how many seeds each pooled (``SEEDS_POOLED``)."""
    if not args.results.exists():
        return
    searched = RunSpec(args.dataset, "searched", args.budget, args.tag)
    if not has_finished(where(searched)):
        return
    written = [upgrade_run_row(r) for r in json.loads(args.results.read_text())]
    rows = [r for r in written if searched.holds(r)]
    for name in ("uniform-houlsby", "uniform-lora"):
        other = RunSpec(args.dataset, name, args.budget, tag_of(name, args))
        seeds = finished_seeds(written, [searched, other], where)
        if not seeds or where(other) == where(searched):
            continue
        column = name.replace("-", "_")
        rows = versus(rows, with_seeds(searched, seeds, where), with_seeds(other, seeds, where), f"{column}_seeds")
        for row in rows:
            if f"vs_{column}_seeds" in row:
                row[SEEDS_POOLED[column]] = 1 + len(seeds)
    save_rows(args.results, rows, markdown, upgrade_run_row)


if __name__ == "__main__":
    main()
