"""Where a trained learner loses its meta-test score: the generalisation gap and the inner steps.

    python -m metalearn.diagnostics maml omniglot-way5shot1 --steps 1 3 5 10 --tasks 100

Scores the trained parameters (``models/<benchmark>/<learner>.pt``) on meta-train tasks (freshly
sampled, seeded), the fixed meta-val tasks and the fixed meta-test tasks, after each number of
inner steps. Meta-train well above meta-test means the meta-training classes are learned and do
not generalise (more of them would help); meta-test rising with the steps means the
initialisation is under-adapted at the protocol's K. Run it in the repository (or an
experiment's copy) whose ``models/`` and ``data/episodes/`` hold the run, with the params that
produced it (``dvc exp apply``); extra ``KEY=VALUE`` arguments are Hydra overrides.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import torch

from metalearn import paths
from metalearn.checkpoint import load_checkpoint
from metalearn.config import Config, benchmark_config, load_config
from metalearn.data.episodes import load_episodes
from metalearn.evaluation import METRICS, per_task_scores
from metalearn.metrics import mean_ci
from metalearn.spec import train_cell
from metalearn.training import Task, build_learner


def score_splits(
    cfg: Config, learner: str, benchmark: str, steps: Sequence[int], tasks: int, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per (split, inner steps): the mean metric and its confidence interval over
    ``tasks`` tasks of each split (meta-train: sampled with ``seed``)."""
    cell = train_cell(cfg, learner, benchmark)
    checkpoint = load_checkpoint(cell)
    cfg = benchmark_config(cfg, benchmark)
    source = load_episodes(paths.episodes(benchmark))
    task = Task.build(cell.model, source, learner)
    params, fitted = checkpoint["params"], checkpoint["fitted"]

    def first(split: tuple) -> tuple:
        (sx, sy), (qx, qy) = split
        return (sx[:tasks], sy[:tasks]), (qx[:tasks], qy[:tasks])

    splits = {
        "meta-train": source.sample_train(tasks, torch.Generator().manual_seed(seed)),
        "meta-val": first(source.fixed_tasks("val")),
        "meta-test": first(source.fixed_tasks("test")),
    }
    metric = METRICS[task.loss_kind].name
    rows = []
    for split, batch in splits.items():
        for k in steps:
            scores = per_task_scores(
                build_learner(cell, k, fitted), task.loss_fn, task.predict, params, batch,
                task.loss_kind,
            )  # fmt: skip
            mean, ci = mean_ci(scores, cfg.eval.confidence)
            n = len(scores)
            rows.append({"split": split, "steps": k, "tasks": n, metric: mean, "ci": ci})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    metric = [k for k in rows[0] if k not in ("split", "steps", "tasks", "ci")][0]
    lines = [f"| split | inner steps | tasks | {metric} (± CI) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['split']} | {r['steps']} | {r['tasks']} | {r[metric]:.4f} ± {r['ci']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("learner")
    parser.add_argument("benchmark")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--tasks", type=int, default=100, help="tasks per split")
    parser.add_argument("--seed", type=int, default=0, help="of the sampled meta-train tasks")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(overrides)
        rows = score_splits(cfg, args.learner, args.benchmark, args.steps, args.tasks, args.seed)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
