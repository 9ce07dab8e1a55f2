"""Stage evaluate@<benchmark>: meta-test every learner of a benchmark over its fixed tasks.

One process scores all learners (the interpreter, torch and MLflow start once, not once per
learner). Its outputs are committed together once every learner is scored, and the test metrics
go to each learner's training run, with the learner as an MLflow model
(:mod:`metalearn.mlflow_model`); if that fails, the outputs are put back as they were.

Where the benchmark has tasks of every eligible meta-test user (``source.all_users_split``: the
rating benchmarks), each learner is also scored on those, after the protocol's tasks and apart
from them: ``results[learner]["all_users"]`` and ``<per-task folder>/all-users/<learner>.parquet``.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch

from metalearn import paths, tracking
from metalearn.algorithms import MetaLearner
from metalearn.cell import EvaluateCell
from metalearn.checkpoint import load_checkpoint
from metalearn.data.episodes import Batch, load_episodes
from metalearn.evaluation import ALL_USERS, METRICS, Metric, per_task_scores
from metalearn.fingerprint import fingerprint
from metalearn.functional import Params
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
    ``seed_sd`` the spread of the seeds' means. Then, where the benchmark has them, on the tasks
    of every eligible meta-test user (``all_users``, the same fields)."""
    tracking.open_store()  # an unusable store fails here, before any work or output
    benchmark, n = cell.benchmark, cell.tasks
    checkpoints = {lr: load_checkpoint(c) for lr, c in cell.cells.items()}
    source = load_episodes(paths.episodes(benchmark))
    device = torch_runtime(next(iter(cell.cells.values())))  # the benchmark's: all share it
    metric = METRICS[source.loss_kind]
    (sx, sy), (qx, qy) = source.fixed_tasks("test")
    tasks = to_device(((sx[:n], sy[:n]), (qx[:n], qy[:n])), device)
    every = source.all_users_split
    every_tasks = None if every is None else to_device(source.fixed_tasks(every), device)
    results, per_task, per_task_all = {}, {}, {}
    for learner, checkpoint in checkpoints.items():
        train = cell.cells[learner]
        steps = cell.eval_steps[learner]
        task = Task.build(train.model, source, learner, device)
        scorer = build_learner(train, steps, checkpoint["fitted"])
        score = functools.partial(seed_scores, scorer, task, checkpoint["seed_params"], device)
        by_seed, seconds = score(tasks)
        per_task[learner] = by_seed
        results[learner] = {
            "metric": metric.name,
            "higher_is_better": metric.higher_is_better,
            **summary(by_seed, seconds, cell.confidence),
            "confidence": cell.confidence,
            "seeds": len(by_seed),
            "steps": steps,
            "architecture": source.architecture,
            "counts": source.meta.get("counts"),  # the data behind the benchmark, for the report
            "mlflow_run_id": checkpoint["mlflow_run_id"],
            "best_iteration": checkpoint["best_iterations"][0],
        }
        if every_tasks is not None:  # after the protocol's: its numbers are as they were
            by_seed, seconds = score(every_tasks)
            per_task_all[learner] = by_seed
            results[learner][ALL_USERS] = summary(by_seed, seconds, cell.confidence)
    with Outputs() as out:
        folder = out.folder(paths.eval_per_task_dir(benchmark))
        seeds = {learner: checkpoint["seeds"] for learner, checkpoint in checkpoints.items()}
        for learner, by_seed in per_task.items():
            file = in_folder(folder, paths.eval_per_task(learner, benchmark), benchmark)
            results[learner]["per_task"] = write_per_task(file, by_seed, seeds[learner], metric)
        for learner, by_seed in per_task_all.items():
            file = in_folder(folder, paths.eval_per_task_all_users(learner, benchmark), benchmark)
            record = results[learner][ALL_USERS]
            record["per_task"] = write_per_task(file, by_seed, seeds[learner], metric)
        out.write_json(paths.eval_metrics(benchmark), results)
        out.commit()
        try:
            for learner, r in results.items():
                tracking.log_to_run(
                    r["mlflow_run_id"],
                    run_metrics(r, metric.name),
                    artifacts=[paths.eval_per_task(learner, benchmark)],
                )
                # the model as meta-test used it: its checkpoint, adapted with this K
                model = paths.model(learner, benchmark)
                train, steps = cell.cells[learner], cell.eval_steps[learner]
                log_model(r["mlflow_run_id"], train, steps, model, source)
        except Exception as error:  # the outputs go back: no results without their runs
            raise tracking.failure(error) from None
    return results


def seed_scores(
    scorer: MetaLearner,
    task: Task,
    seed_params: list[Params],
    device: torch.device,
    tasks: tuple[Batch, Batch],
) -> tuple[torch.Tensor, float]:
    """Each training seed's per-task scores ``[seeds, tasks]`` on ``tasks`` (on ``device``), and
    the seconds they took: one helper, so both task sets are scored alike."""
    start = time.perf_counter()
    by_seed = torch.stack(
        [
            per_task_scores(
                scorer, task.loss_fn, task.predict, to_device(params, device), tasks, task.loss_kind
            ).cpu()
            for params in seed_params
        ]
    )
    return by_seed, time.perf_counter() - start


def summary(by_seed: torch.Tensor, seconds: float, confidence: float) -> dict[str, Any]:
    """The fields of a task set's scores: a task's score is its mean over the training seeds,
    ``seed_sd`` the spread of the seeds' means."""
    scores = by_seed.mean(0)
    mean, ci = mean_ci(scores, confidence)
    seed_means = by_seed.mean(1).double()
    return {
        "mean": mean,
        "ci": ci,
        "tasks": len(scores),
        "seed_sd": float(seed_means.std()) if len(by_seed) > 1 else math.nan,
        "seconds": round(seconds, 3),
    }


def in_folder(folder: Path, path: Path, benchmark: str) -> Path:
    """Where ``path``, a file of the per-task folder, goes in ``folder``, that folder's scratch
    copy (its subfolder made)."""
    file = folder / path.relative_to(paths.eval_per_task_dir(benchmark))
    file.parent.mkdir(exist_ok=True)
    return file


def write_per_task(
    file: Path, by_seed: torch.Tensor, seeds: list[int], metric: Metric
) -> dict[str, Any]:
    """Columns ``task``, the metric's name (the mean over seeds) and ``<metric>_seed<s>`` per
    seed; the file's fingerprint, which the report checks."""
    name = metric.name
    columns = {f"{name}_seed{s}": row for s, row in zip(seeds, by_seed.numpy(), strict=True)}
    scores = by_seed.mean(0).numpy()
    pl.DataFrame({"task": range(len(scores)), name: scores, **columns}).write_parquet(file)
    return fingerprint(file)


def run_metrics(result: dict[str, Any], metric: str) -> dict[str, float]:
    """What goes to the learner's MLflow run: the protocol's mean and interval, and the mean
    over every meta-test user where there is one."""
    metrics = {f"test_{metric}": result["mean"], f"test_{metric}_ci": result["ci"]}
    if ALL_USERS in result:
        metrics[f"test_{metric}_all_users"] = result[ALL_USERS]["mean"]
    return metrics


def line(results: dict[str, Any]) -> str:
    """Each learner's meta-test mean and interval: ``maml=0.9652 ± 0.0123, ...`` (and
    `` (all users: 0.9512)`` where every meta-test user was scored)."""
    return ", ".join(f"{lr}={r['mean']:.4g} ± {r['ci']:.2g}{_all(r)}" for lr, r in results.items())


def _all(result: dict[str, Any]) -> str:
    return f" (all users: {result[ALL_USERS]['mean']:.4g})" if ALL_USERS in result else ""


STAGE = Stage(
    run,
    ("benchmark",),
    resolve=evaluate_cell,
    cell_file=paths.evaluate_spec,
    read=functools.partial(read_cell, kind=EvaluateCell),
    line=line,
)
