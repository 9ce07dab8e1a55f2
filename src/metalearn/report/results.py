"""The evaluations the report is built from: each benchmark's metrics per learner
(:func:`collect`) and per-task scores (:func:`read_scores`), the numbers of the metrics files
made of them, which learners are meta-learners and which is the baseline, and how a benchmark's
learners compare (its metric's direction, the better and the best mean).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from metalearn import fingerprint, paths
from metalearn.config import Config, learners_of
from metalearn.errors import DataError
from metalearn.evaluation import ALL_USERS
from metalearn.io import read_json
from metalearn.spec import train_stage

Results = dict[str, dict[str, dict[str, Any]]]  # benchmark -> learner -> eval metrics
Scores = dict[str, dict[str, np.ndarray]]  # benchmark -> learner -> per-task scores


BASELINE = "scratch"  # every meta-learner must beat it


def collect(cfg: Config, root: Path = Path()) -> Results:
    """``{benchmark: {learner: eval metrics}}`` for the pipeline's benchmarks and the learners of
    each (:func:`metalearn.config.learners_of`: the bias baseline on collaborative filtering)."""
    results = {}
    for benchmark in cfg.pipeline.benchmarks:
        path = root / paths.eval_metrics(benchmark)
        found = read_json(path)
        learners = learners_of(cfg, benchmark)
        missing = [lr for lr in learners if lr not in found]
        if missing:
            raise FileNotFoundError(
                f"{path} has no evaluation of {', '.join(missing)}; run evaluate@{benchmark}"
            )
        results[benchmark] = {lr: found[lr] for lr in learners}
    return results


def verify_inputs(cfg: Config, results: Results, root: Path = Path()) -> None:
    """Every per-task file and training curve the report reads is as its stage wrote it
    (evaluate and train record their digests); else one line naming the file and the fix.
    A benchmark evaluated without per-task files has none to check (the report says so)."""
    for benchmark, by_learner in results.items():
        stage = f"evaluate@{benchmark}"
        fix = _fix(root / paths.eval_per_task_dir(benchmark), stage)
        for learner, record in by_learner.items():
            per_task = root / paths.eval_per_task(learner, benchmark)
            if "per_task" in record or per_task.exists():
                fingerprint.verify({per_task: record.get("per_task")}, stage, fix)
            if ALL_USERS in record:
                everyone = root / paths.eval_per_task_all_users(learner, benchmark)
                fingerprint.verify({everyone: record[ALL_USERS].get("per_task")}, stage, fix)
            stage = f"{train_stage(cfg, learner)}@{learner}-{benchmark}"
            curve = root / paths.train_curve(learner, benchmark)
            train = read_json(root / paths.train_metrics(learner, benchmark))
            fingerprint.verify({curve: train.get("curve")}, stage, _fix(curve, stage))


def _fix(path: Path, stage: str) -> str:
    return f"restore it: dvc checkout {path}, or re-create it: dvc repro -f {stage}"


def headline_metrics(results: Results) -> dict[str, dict[str, float]]:
    """The DVC metrics file (``dvc exp show``): ``{benchmark: {learner: meta-test mean}}``,
    numbers only; intervals, paired tests and bookkeeping stay in ``summary.json``."""
    return {b: {lr: r["mean"] for lr, r in by.items()} for b, by in results.items()}


def summary_metrics(results: Results) -> dict[str, Any]:
    """``{benchmark: {learner: {<metric>: mean, ci}}}``, the head of ``summary.json``."""
    return {
        benchmark: {
            learner: {r["metric"]: r["mean"], "ci": r["ci"]} for learner, r in by_learner.items()
        }
        for benchmark, by_learner in results.items()
    }


def all_users(results: Results) -> Results:
    """The benchmarks whose every learner was also scored on every eligible meta-test user, as
    :data:`Results` of those scores (``mean``, ``ci``, ``tasks``, ``per_task`` replaced; the
    metric and its direction as the protocol's)."""
    return {
        benchmark: {lr: {**r, **r[ALL_USERS]} for lr, r in by_learner.items()}
        for benchmark, by_learner in results.items()
        if all(ALL_USERS in r for r in by_learner.values())
    }


def read_scores(
    results: Results,
    root: Path = Path(),
    per_task: Callable[[str, str], Path] = paths.eval_per_task,
) -> Scores:
    """``{benchmark: {learner: per-task scores, in task order}}`` from evaluate's parquet files
    (``per_task(learner, benchmark)``: the protocol's tasks, or
    :func:`metalearn.paths.eval_per_task_all_users` with :func:`all_users`' results), for each
    benchmark that has every learner's file (the others get no paired statistics)."""
    scores = {}
    for benchmark, by_learner in results.items():
        files = {lr: root / per_task(lr, benchmark) for lr in by_learner}
        if not all(f.is_file() for f in files.values()):
            continue
        frames = {lr: pl.read_parquet(f).sort("task") for lr, f in files.items()}
        first = next(iter(frames))
        for lr, frame in frames.items():
            if not frame["task"].equals(frames[first]["task"]):
                raise ValueError(
                    f"{files[lr]} and {files[first]} score different tasks; run "
                    f"evaluate@{benchmark} again"
                )
        scores[benchmark] = {
            lr: frame[by_learner[lr]["metric"]].to_numpy().astype(np.float64)
            for lr, frame in frames.items()
        }
        for lr, values in scores[benchmark].items():
            recorded = by_learner[lr]["mean"]
            if not np.isclose(values.mean(), recorded, rtol=1e-5, atol=1e-8):
                raise DataError(
                    f"{root / paths.eval_metrics(benchmark)} gives {lr} a mean of {recorded:.6g} "
                    f"but its per-task scores ({files[lr]}) average {values.mean():.6g}: one was "
                    f"edited; re-create both: dvc repro -f evaluate@{benchmark}"
                )
    return scores


def _higher(by_learner: dict[str, dict[str, Any]]) -> bool:
    return next(iter(by_learner.values()))["higher_is_better"]


def _better(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["mean"] > b["mean"] if a["higher_is_better"] else a["mean"] < b["mean"]


def _pick(by_learner: dict[str, dict[str, Any]]) -> Callable:
    """``max`` where the metric is higher-is-better, else ``min``."""
    return max if _higher(by_learner) else min


def best_learner(by_learner: dict[str, dict[str, Any]]) -> str:
    """The learner with the best meta-test mean (the metric's direction decides)."""
    return _pick(by_learner)(by_learner, key=lambda name: by_learner[name]["mean"])
