"""MAML++'s tricks on Omniglot at one CPU budget: every trick, each alone, and MAML, paired.

    python benchmarks/mamlpp_omniglot.py [--iterations 500] [--seeds 2] [--out DIR] [-o KEY=VALUE]

Run it in a workspace that holds ``data/episodes/<benchmark>`` (``dvc repro
episodify@omniglot-way5shot1``; with the local mirror, docs/data.md). Every arm meta-trains from
the same initialisation on the same stream of tasks for the same number of iterations (the
``maml`` cell of the benchmark with this study's settings, below), keeps its best meta-val
point, and is scored on the same first ``eval.tasks`` fixed meta-test tasks; each arm is
compared with ``maml`` task by task (metalearn.paired: mean difference, Student-t interval,
Wilcoxon p) on each task's accuracy averaged over the arm's training seeds (``--seeds``).

Writes to ``--out``: ``summary.md`` (the table), ``per_task.csv`` (every arm's accuracy per
task), ``curves.csv`` and ``curves.png`` (meta-val accuracy against iteration).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from metalearn import paths
from metalearn.cell import TrainCell
from metalearn.config import load_config
from metalearn.data.episodes import load_episodes
from metalearn.evaluation import per_task_scores
from metalearn.metrics import mean_ci
from metalearn.paired import paired_comparison
from metalearn.runtime import torch_runtime
from metalearn.spec import evaluate_cell, train_cell
from metalearn.training import Task, build_learner, meta_train, to_device

BENCHMARK = "omniglot-way5shot1"
# MAML++'s inner loop (Antoniou et al. 2019): 5 steps of 0.1, in training and at test; 8 tasks
# a meta-batch; the CPU recipe's Conv4 (32 filters, 2 threads, meta-lr 1e-3).
SETTINGS = [
    f"++pipeline.benchmarks.{BENCHMARK}.{key}={value}"
    for key, value in {
        "algo.steps": 5,
        "algo.inner_lr": 0.1,
        "eval.steps": 5,
        "train.meta_batch": 8,
        "train.meta_lr": 0.001,
        "model.filters": 32,
        "train.threads": 2,
        "train.compile": False,
    }.items()
]
OFF = {"multi_step_loss": False, "per_step_lr": False, "per_step_bn": False}


def arms(iterations: int) -> dict[str, tuple[str, dict, dict]]:
    """``name: (learner, its options, the cell's own fields)``. MAML++'s proportions: the
    multi-step loss anneals over the first tenth of training, first-order for the first third;
    the cosine schedule ends at 1 % of the meta-lr (MAML++'s 1e-5 of 1e-3)."""
    msl = {"msl_iterations": max(1, iterations // 10)}
    first_order = {"first_order_until": iterations // 3}
    cosine = {"meta_lr_schedule": "cosine", "meta_lr_floor": 0.01}
    every = {"multi_step_loss": True, "per_step_lr": True, "per_step_bn": True}
    return {
        "maml": ("maml", {}, {}),
        "mamlpp: every trick": ("mamlpp", {**every, **msl, **first_order}, cosine),
        "multi-step loss": ("mamlpp", {**OFF, "multi_step_loss": True, **msl}, {}),
        "first order, then full": ("mamlpp", {**OFF, **first_order}, {}),
        "per-step step sizes": ("mamlpp", {**OFF, "per_step_lr": True}, {}),
        "per-step batch norm": ("mamlpp", {**OFF, "per_step_bn": True}, {}),
        "cosine meta-lr": ("mamlpp", OFF, cosine),
    }


def arm_cell(base: TrainCell, learner: str, options: dict, fields: dict) -> TrainCell:
    shared = {k: base.options[k] for k in ("steps", "inner_lr")}
    return dataclasses.replace(base, learner=learner, options={**shared, **options}, **fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=2, help="training seeds per arm")
    parser.add_argument("--out", type=Path, default=Path("results/studies/mamlpp-omniglot"))
    parser.add_argument("-o", "--override", action="append", default=[], help="a params override")
    parser.add_argument("--arms", nargs="*", help="a subset of the arms, by name")
    args = parser.parse_args()
    val_every = max(1, args.iterations // 10)
    overrides = [
        *SETTINGS,
        f"++pipeline.benchmarks.{BENCHMARK}.train.iterations={args.iterations}",
        f"++pipeline.benchmarks.{BENCHMARK}.train.val_every={val_every}",
        *args.override,
    ]
    cfg = load_config(overrides)
    base = train_cell(cfg, "maml", BENCHMARK)
    meta_test = evaluate_cell(cfg, BENCHMARK)
    eval_steps, n_tasks = meta_test.eval_steps["maml"], meta_test.tasks
    device = torch_runtime(base)
    source = load_episodes(paths.episodes(BENCHMARK))
    (sx, sy), (qx, qy) = source.fixed_tasks("test")
    tasks = to_device(((sx[:n_tasks], sy[:n_tasks]), (qx[:n_tasks], qy[:n_tasks])), device)
    chosen = {k: v for k, v in arms(args.iterations).items() if not args.arms or k in args.arms}
    scores, curves, rows = {}, [], []
    for name, (learner, options, fields) in chosen.items():
        by_seed, seconds, best = [], [], []
        for seed in range(base.seed, base.seed + args.seeds):
            cell = arm_cell(base, learner, options, {**fields, "seed": seed})
            print(f"{name}, seed {seed}: {cell.options} {fields}", file=sys.stderr, flush=True)
            result = meta_train(cell, source, device)
            task = Task.build(cell.model, source, learner, device)
            scorer = build_learner(cell, eval_steps)
            by_seed.append(
                per_task_scores(
                    scorer, task.loss_fn, task.predict, result.params, tasks, task.loss_kind
                ).numpy()
            )
            curves += [
                {"arm": name, "seed": seed, "iteration": row["iteration"],
                 "meta_val": row["meta_val_accuracy"]}
                for row in result.curve
                if "meta_val_accuracy" in row
            ]  # fmt: skip
            seconds.append(result.seconds / args.iterations)
            best.append(result.best_iteration)
            print(f"{name}, seed {seed}: {by_seed[-1].mean():.4f}", file=sys.stderr, flush=True)
        scores[name] = np.mean(by_seed, axis=0)  # a task's score: its mean over the seeds
        seed_means = [float(s.mean()) for s in by_seed]
        rows.append((name, seed_means, float(np.mean(seconds)), best))
    write(args, overrides, scores, curves, rows, n_tasks, eval_steps)


def write(args, overrides, scores, curves, rows, n_tasks, eval_steps) -> None:
    plt.switch_backend("Agg")
    args.out.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"task": range(n_tasks), **scores}).write_csv(args.out / "per_task.csv")
    frame = pl.DataFrame(curves)
    frame.write_csv(args.out / "curves.csv")
    mean_curves = frame.group_by("arm", "iteration").agg(pl.col("meta_val").mean())
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for name in scores:
        points = mean_curves.filter(pl.col("arm") == name).sort("iteration")
        axes.plot(points["iteration"], points["meta_val"], marker="o", markersize=3, label=name)
    axes.set(
        xlabel="meta-iteration",
        ylabel=f"meta-val accuracy (mean of {args.seeds} seeds)",
        title=BENCHMARK,
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(args.out / "curves.png", dpi=120)
    command = shlex.join(["python", "benchmarks/mamlpp_omniglot.py", *sys.argv[1:]])
    lines = [
        f"# MAML++'s tricks on {BENCHMARK}, {args.iterations} iterations each",
        "",
        f"`{command}`, in a workspace with the episodes of `{BENCHMARK}`; this study's",
        "settings over `params.yaml`:",
        "",
        *(f"- `{o}`" for o in overrides),
        "",
        f"Every arm trains {args.seeds} seeds (the same initialisations and task streams for",
        f"every arm); a task's accuracy is its mean over the seeds, on the first {n_tasks} fixed",
        f"meta-test tasks after {eval_steps} inner steps (95 % interval over tasks). Each arm",
        "against `maml` task by task: the mean difference with its 95 % interval and the",
        "two-sided Wilcoxon signed-rank p. Seconds per iteration include the meta-validation",
        "every tenth of training.",
        "",
        "| arm | accuracy | seeds' means | vs maml (% points) | p | s / iteration "
        "| best iteration |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, seed_means, seconds, best in rows:
        mean, ci = mean_ci(scores[name], 0.95)
        seeds = " / ".join(f"{100 * m:.2f}" for m in seed_means)
        versus, p = "", ""
        if name != "maml" and "maml" in scores:
            c = paired_comparison(scores[name], scores["maml"], higher_is_better=True)
            versus, p = f"{100 * c.difference:+.2f} ± {100 * c.ci:.2f}", f"{c.p:.2g}"
        lines.append(
            f"| {name} | {100 * mean:.2f} ± {100 * ci:.2f} % | {seeds} | {versus} | {p} "
            f"| {seconds:.3f} | {' / '.join(map(str, best))} |"
        )
    lines += ["", "![meta-val accuracy](curves.png)", ""]
    (args.out / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
