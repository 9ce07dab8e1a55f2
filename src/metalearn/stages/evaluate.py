"""Stage evaluate@<benchmark>: meta-test every learner of a benchmark over its fixed tasks.

One process scores all learners (the interpreter, torch and MLflow start once, not once per
learner). Its outputs are committed together once every learner is scored, and the test metrics
go to each learner's training run, with the learner as an MLflow model
(:mod:`metalearn.mlflow_model`); if that fails, the outputs are put back as they were."""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import polars as pl
import torch

from metalearn import paths, tracking
from metalearn.cell import EvaluateCell
from metalearn.checkpoint import load_checkpoint
from metalearn.data.episodes import load_episodes
from metalearn.evaluation import METRICS, per_task_scores
from metalearn.fingerprint import fingerprint
from metalearn.io import Outputs
from metalearn.metrics import mean_ci
from metalearn.mlflow_model import log_model
from metalearn.runtime import torch_runtime
from metalearn.spec import evaluate_cell, read_cell
from metalearn.stages.cli import Stage
from metalearn.training import Task, build_learner, to_device


def run(cell: EvaluateCell) -> dict[str, Any]:
    """Score every learner's trained parameters (each training seed's) on the benchmark's first
    ``eval.tasks`` fixed meta-test tasks; a task's score is its mean over the seeds, and
    ``seed_sd`` the spread of the seeds' means."""
    tracking.open_store()  # an unusable store fails here, before any work or output
    benchmark, n = cell.benchmark, cell.tasks
    checkpoints = {lr: load_checkpoint(c) for lr, c in cell.cells.items()}
    source = load_episodes(paths.episodes(benchmark))
    device = torch_runtime(next(iter(cell.cells.values())))  # the benchmark's: all share it
    metric = METRICS[source.loss_kind]
    (sx, sy), (qx, qy) = source.fixed_tasks("test")
    tasks = to_device(((sx[:n], sy[:n]), (qx[:n], qy[:n])), device)
    results, per_task = {}, {}
    for learner, checkpoint in checkpoints.items():
        train = cell.cells[learner]
        steps = cell.eval_steps[learner]
        task = Task.build(train.model, source, learner, device)
        scorer = build_learner(train, steps, checkpoint["fitted"])
        start = time.perf_counter()
        by_seed = torch.stack(
            [
                per_task_scores(
                    scorer,
                    task.loss_fn,
                    task.predict,
                    to_device(params, device),
                    tasks,
                    task.loss_kind,
                ).cpu()
                for params in checkpoint["seed_params"]
            ]
        )  # [seeds, tasks]
        seconds = time.perf_counter() - start
        scores = by_seed.mean(0)  # a task's score: the mean over the training seeds
        mean, ci = mean_ci(scores, cell.confidence)
        per_task[learner] = (scores.numpy(), by_seed.numpy())
        seed_means = by_seed.mean(1).double()
        results[learner] = {
            "metric": metric.name,
            "higher_is_better": metric.higher_is_better,
            "mean": mean,
            "ci": ci,
            "confidence": cell.confidence,
            "tasks": n,
            "seeds": len(by_seed),
            "seed_sd": float(seed_means.std()) if len(by_seed) > 1 else math.nan,
            "steps": steps,
            "seconds": round(seconds, 3),
            "architecture": source.architecture,
            "counts": source.meta.get("counts"),  # the data behind the benchmark, for the report
            "mlflow_run_id": checkpoint["mlflow_run_id"],
            "best_iteration": checkpoint["best_iterations"][0],
        }
    with Outputs() as out:
        folder = out.folder(paths.eval_per_task_dir(benchmark))
        for learner, (scores, by_seed) in per_task.items():
            seeds = checkpoints[learner]["seeds"]
            columns = {f"{metric.name}_seed{s}": row for s, row in zip(seeds, by_seed, strict=True)}
            file = folder / paths.eval_per_task(learner, benchmark).name
            pl.DataFrame({"task": range(n), metric.name: scores, **columns}).write_parquet(file)
            results[learner]["per_task"] = fingerprint(file)  # the report checks it
        out.write_json(paths.eval_metrics(benchmark), results)
        out.commit()
        try:
            for learner, r in results.items():
                tracking.log_to_run(
                    r["mlflow_run_id"],
                    {f"test_{metric.name}": r["mean"], f"test_{metric.name}_ci": r["ci"]},
                    artifacts=[paths.eval_per_task(learner, benchmark)],
                )
                # the model as meta-test used it: its checkpoint, adapted with this K
                model = paths.model(learner, benchmark)
                train, steps = cell.cells[learner], cell.eval_steps[learner]
                log_model(r["mlflow_run_id"], train, steps, model, source)
        except Exception as error:  # the outputs go back: no results without their runs
            raise tracking.failure(error) from None
    return results


def line(results: dict[str, Any]) -> str:
    """Each learner's meta-test mean and interval: ``maml=0.9652 ± 0.0123, ...``."""
    return ", ".join(f"{lr}={r['mean']:.4g} ± {r['ci']:.2g}" for lr, r in results.items())


STAGE = Stage(
    run,
    ("benchmark",),
    resolve=evaluate_cell,
    cell_file=paths.evaluate_spec,
    read=functools.partial(read_cell, kind=EvaluateCell),
    line=line,
)
