"""What each DVC stage does, as functions of the config (the scripts in pipeline/ call these).

Every stage writes its outputs atomically and only after its work succeeded, so a failure
leaves earlier results as they were.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from metalearn import paths
from metalearn.config import (
    Config,
    ConfigError,
    benchmark_config,
    dataset_config,
    eval_steps,
    flatten,
    load_config,
    parse_benchmark,
    resolve_device,
    split_cli,
)
from metalearn.io import atomic_dir, atomic_file, write_json

if TYPE_CHECKING:
    import torch

# Each stage imports what it runs inside its function: a stage script loads only its own
# modules, and dvc.yaml lists exactly those as its code deps (tests/test_project_files.py).


def run_download(cfg: Config, dataset: str) -> dict[str, Any]:
    """Fetch and verify the dataset's official files into ``data/raw/<dataset>/`` (from
    ``METALEARN_DATA_MIRROR`` first when set). A synthetic family has nothing to fetch: its
    folder only records that, so every episodify stage depends on a download stage alike."""
    from metalearn.data.download import download_dataset
    from metalearn.data.sources import SOURCES

    section = dataset_config(cfg, dataset)
    if dataset not in SOURCES:
        with atomic_dir(paths.raw(dataset)) as tmp:
            write_json(tmp / "manifest.json", {"generated": dataset})
        return {"generated": dataset}
    parts = getattr(section.download, "parts", None)
    return download_dataset(dataset, paths.raw(dataset), parts=parts)


def run_episodify(cfg: Config, benchmark: str) -> dict[str, Any]:
    from metalearn.data.episodes import episodify

    dataset, _ = parse_benchmark(cfg, benchmark)
    return episodify(cfg, benchmark, paths.episodes(benchmark), raw_dir=paths.raw(dataset))


def torch_runtime(cfg: Config) -> torch.device:
    """Apply ``train.threads`` (0 keeps torch's default) and return the device to run on."""
    import torch

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    return resolve_device(cfg.train)


def run_train(cfg: Config, learner: str, benchmark: str) -> dict[str, Any]:
    """Meta-train; write the model, the training curve and the metrics file (with the MLflow
    run id, so outputs restored from DVC's cache still point to their run)."""
    import polars as pl
    import torch

    from metalearn import tracking  # MLflow takes seconds to import: only where it is used
    from metalearn.data.episodes import load_episodes
    from metalearn.training import meta_train

    cfg = benchmark_config(cfg, benchmark)
    source = load_episodes(paths.episodes(benchmark))
    device = torch_runtime(cfg)
    with tracking.train_run(cfg, learner, benchmark, source.meta) as log:
        result = meta_train(cfg, learner, benchmark, source, device, on_metrics=log)
        run_id = log.run_id
    final = result.curve[-1]
    metrics = {
        "mlflow_run_id": run_id,
        "device": str(device),
        "seconds": round(result.seconds, 3),
        "iterations": final["iteration"],  # 0 for a learner that is not meta-trained
        **{k: v for k, v in final.items() if k != "iteration"},
    }
    checkpoint = {"learner": learner, "benchmark": benchmark, "mlflow_run_id": run_id}
    with atomic_file(paths.model(learner, benchmark)) as tmp:
        torch.save({"params": result.params, **checkpoint}, tmp)
    with atomic_file(paths.train_curve(learner, benchmark)) as tmp:
        pl.DataFrame(result.curve).write_csv(tmp)
    write_json(paths.train_metrics(learner, benchmark), metrics)
    return metrics


def load_checkpoint(learner: str, benchmark: str) -> dict[str, Any]:
    """The train stage's file: ``params`` (tensors), ``learner``, ``benchmark`` and
    ``mlflow_run_id``."""
    import torch

    path = paths.model(learner, benchmark)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run train@{learner}-{benchmark} first")
    return torch.load(path, weights_only=True)  # tensors and plain values: nothing is executed


def load_params(learner: str, benchmark: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(learner, benchmark)["params"]


def run_evaluate(cfg: Config, benchmark: str) -> dict[str, Any]:
    """Score every learner's trained parameters on the benchmark's first ``eval.tasks`` fixed
    meta-test tasks. One process for all learners: the interpreter, torch and MLflow start once
    (seconds each on a small CPU), not once per learner."""
    import polars as pl

    from metalearn import tracking
    from metalearn.data.episodes import load_episodes
    from metalearn.evaluation import METRICS, per_task_scores
    from metalearn.metrics import mean_ci
    from metalearn.training import Task, build_learner, to_device

    cfg = benchmark_config(cfg, benchmark)
    source = load_episodes(paths.episodes(benchmark))
    device = torch_runtime(cfg)
    task = Task.build(cfg, source)
    metric = METRICS[task.loss_kind]
    (sx, sy), (qx, qy) = source.fixed_tasks("test")
    n = cfg.eval.tasks
    tasks = to_device(((sx[:n], sy[:n]), (qx[:n], qy[:n])), device)
    checkpoints = {lr: load_checkpoint(lr, benchmark) for lr in cfg.pipeline.learners}
    results, per_task = {}, {}
    for learner, checkpoint in checkpoints.items():
        steps = eval_steps(cfg, learner)
        params = to_device(checkpoint["params"], device)
        start = time.perf_counter()
        scores = per_task_scores(
            build_learner(cfg, learner, steps),
            task.loss_fn,
            task.predict,
            params,
            tasks,
            task.loss_kind,
        ).cpu()
        seconds = time.perf_counter() - start
        mean, ci = mean_ci(scores, cfg.eval.confidence)
        per_task[learner] = scores.numpy()
        results[learner] = {
            "metric": metric.name,
            "higher_is_better": metric.higher_is_better,
            "mean": mean,
            "ci": ci,
            "confidence": cfg.eval.confidence,
            "tasks": n,
            "steps": steps,
            "seconds": round(seconds, 3),
            "architecture": source.architecture,
            "counts": source.meta.get("counts"),  # the data behind the benchmark, for the report
            "mlflow_run_id": checkpoint["mlflow_run_id"],
        }
    # Every output is written only once every learner has been scored.
    with atomic_dir(paths.eval_per_task_dir(benchmark)) as tmp:
        for learner, scores in per_task.items():
            pl.DataFrame({"task": range(n), metric.name: scores}).write_parquet(
                tmp / paths.eval_per_task(learner, benchmark).name
            )
    write_json(paths.eval_metrics(benchmark), results)
    for learner, r in results.items():
        tracking.log_to_run(
            r["mlflow_run_id"],
            {f"test_{metric.name}": r["mean"], f"test_{metric.name}_ci": r["ci"]},
            artifacts=[paths.eval_per_task(learner, benchmark)],
        )
    return results


def run_report(cfg: Config) -> dict[str, Any]:
    from metalearn.report import write_report  # matplotlib only here

    return write_report(cfg)


def run_efficiency(cfg: Config) -> dict[str, Any]:
    """Time and memory against K, gradient accuracy, peer throughput (README "Efficiency")."""
    from metalearn import tracking
    from metalearn.efficiency import run_stage

    found = run_stage(cfg.efficiency, paths.EFFICIENCY)
    numbers = {k: float(v) for k, v in flatten(found["targets"]).items() if _is_number(v)}
    run_id = tracking.efficiency_run(cfg, numbers, paths.EFFICIENCY)
    write_json(paths.EFFICIENCY_JSON, {**found, "mlflow_run_id": run_id})
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _loaded_errors() -> list[type[Exception]]:
    """The fixable errors of the modules this stage loaded (one it did not load cannot raise)."""
    found = []
    for module, name in (
        ("metalearn.training", "NonFiniteError"),
        ("metalearn.data.download", "DownloadError"),
    ):
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return found


def main(stage: Callable[..., Any], selectors: Sequence[str], argv: Sequence[str]) -> int:
    """Entry point of a stage script: ``KEY=VALUE`` arguments, the selectors named first.

    Errors a user can fix (bad parameters or data, failed downloads, missing inputs, divergence)
    print one message and exit with status 1 instead of a traceback.
    """
    try:
        selected, overrides = split_cli(argv)
        missing = [s for s in selectors if s not in selected]
        extra = [s for s in selected if s not in selectors]
        if missing or extra:
            usage = " ".join(f"{s}=<name>" for s in selectors)
            raise ConfigError(f"usage: {usage} [overrides such as algo.steps=10]")
        cfg = load_config(overrides)
        result = stage(cfg, *(selected[s] for s in selectors))
    except (ValueError, FileNotFoundError, *_loaded_errors()) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(result)
    return 0


def exit_now(code: int) -> NoReturn:
    """End a stage's process without the interpreter's teardown (unloading torch's operator
    libraries and the like: ~1.5 s a stage on a 2-core CPU). Safe here: every output is closed
    and renamed into place and every MLflow run ended before ``main`` returns."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
