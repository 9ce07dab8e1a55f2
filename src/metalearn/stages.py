"""What each DVC stage does, as functions of the config (the scripts in pipeline/ call these).

Every stage writes its outputs atomically and only after its work succeeded, so a failure
leaves earlier results as they were.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from metalearn import paths
from metalearn.config import (
    CF_ONLY_LEARNERS,
    Config,
    ConfigError,
    dataset_config,
    flatten,
    load_config,
    parse_benchmark,
    resolve_device,
    split_cli,
)
from metalearn.io import atomic_dir, atomic_file, write_json

if TYPE_CHECKING:
    import torch

    from metalearn.spec import TrainCell

# Each stage imports what it runs inside its function: a stage script loads only its own
# modules, and stage code hashes exactly those into the manifest the stage depends on
# (metalearn.code_manifest reads these functions' imports).


def run_resolve(cfg: Config) -> dict[str, Any]:
    """Write every cell's resolved spec under configs/ (``cfg`` was validated on loading)."""
    from metalearn.spec import write_specs

    return {"specs": write_specs(cfg), "folder": str(paths.CONFIGS)}


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


def torch_runtime(cell: Any) -> torch.device:
    """Apply a cell's ``threads`` (0 keeps torch's default) and return its ``device`` to run on
    (``cell``: a :class:`metalearn.spec.TrainCell`, or anything with those two fields)."""
    import torch

    if cell.threads:
        torch.set_num_threads(cell.threads)
    return resolve_device(cell)


def run_train(cfg: Config, learner: str, benchmark: str) -> dict[str, Any]:
    """Meta-train; write the model, the training curve and the metrics file (with the MLflow
    run id, so outputs restored from DVC's cache still point to their run)."""
    from metalearn.tracking_process import side_run

    # MLflow's imports run in the side process while this one imports torch and trains
    with side_run() as run:
        import polars as pl
        import torch

        from metalearn.data.episodes import load_episodes
        from metalearn.spec import dumps, train_cell
        from metalearn.training import meta_train_seeds, training_seeds

        cell = train_cell(cfg, learner, benchmark)  # the config, resolved once
        spec = cell.spec()  # what DVC re-runs this cell on
        source = load_episodes(paths.episodes(benchmark))
        device = torch_runtime(cell)
        seeds = training_seeds(cell)
        run.start(spec, learner, benchmark, source.meta)
        runs = meta_train_seeds(cell, source, device, on_metrics=run.log)
        first = runs[0]
        compile_seconds = round(sum(r.compile_seconds for r in runs), 3)
        run_id = run.finish(
            {
                # where meta-val stopped improving: the point whose parameters meta-test uses
                "best_iteration": first.best_iteration,
                "best_meta_val": first.best_val,
                "compile_seconds": compile_seconds,  # 0 when eager (train.compile)
            }
        )
    final = first.curve[-1]
    metrics = {  # of the first seed; the checkpoint has every seed's
        "mlflow_run_id": run_id,
        "device": str(device),
        "seconds": round(sum(r.seconds for r in runs), 3),
        "compile_seconds": compile_seconds,  # within seconds: the seeds' first meta-gradients
        "seeds": len(seeds),
        "iterations": final["iteration"],  # 0 for a learner that is not meta-trained
        **{k: v for k, v in final.items() if k != "iteration"},
        "best_iteration": first.best_iteration,  # the parameters saved (best meta-val point)
        "best_meta_val": first.best_val,
    }
    checkpoint = {
        "learner": learner,
        "benchmark": benchmark,
        "mlflow_run_id": run_id,
        "seeds": seeds,
        "seed_params": [r.params for r in runs],  # evaluate scores each seed's
        "best_iterations": [r.best_iteration for r in runs],
        "fitted": first.fitted,  # options chosen in training (the bias baseline's shrinkages)
        "grid": first.grid,  # and the candidates it chose them from, with their meta-val scores
        "spec": dumps(spec),  # evaluate checks that its cell would train this one now
    }
    with atomic_file(paths.model(learner, benchmark)) as tmp:
        torch.save({"params": first.params, **checkpoint}, tmp)
    curves = [
        pl.DataFrame(r.curve).with_columns(seed=pl.lit(s)) for s, r in zip(seeds, runs, strict=True)
    ]
    with atomic_file(paths.train_curve(learner, benchmark)) as tmp:
        pl.concat(curves, how="diagonal").write_csv(tmp)
    write_json(paths.train_metrics(learner, benchmark), metrics)
    return metrics


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that another cell wrote."""


def load_checkpoint(cell: TrainCell) -> dict[str, Any]:
    """The train stage's file: ``params`` (tensors, of the first seed's best meta-val point),
    ``seed_params`` (every seed's), ``seeds``, ``best_iterations``, ``learner``, ``benchmark``,
    ``mlflow_run_id``, ``fitted`` (options chosen in training), ``grid`` and ``spec``.

    Refuses a file it cannot read and one whose spec is not ``cell``'s, the one its train stage
    would train now (another learner's or benchmark's file copied in, or a stale one), naming
    both."""
    import torch

    from metalearn.spec import dumps

    learner, benchmark = cell.learner, cell.benchmark
    path = paths.model(learner, benchmark)
    stage = f"{'train-cf' if learner in CF_ONLY_LEARNERS else 'train'}@{learner}-{benchmark}"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run {stage} first")
    try:  # tensors and plain values: nothing is executed
        checkpoint = torch.load(path, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, pickle errors, EOFError, ...
        raise CheckpointError(
            f"{path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0]}); "
            f"re-create it: dvc repro --force {stage}"
        ) from None
    expected = dumps(cell.spec())
    found = checkpoint.get("spec") if isinstance(checkpoint, dict) else None
    if found != expected:
        if found is None:
            what = "no spec (written by an older version, or not by a train stage)"
        else:
            import json

            theirs = json.loads(found)
            what = f"the spec of {theirs.get('learner')} on {theirs.get('benchmark')}"
            if (theirs.get("learner"), theirs.get("benchmark")) == (learner, benchmark):
                what = "another spec of this cell (params changed since it was trained)"
        raise CheckpointError(
            f"{path} holds {what}, not the one {stage} trains now "
            f"({paths.train_spec(learner, benchmark)}); re-run it: dvc repro {stage}"
        )
    return checkpoint


def run_evaluate(cfg: Config, benchmark: str) -> dict[str, Any]:
    """Score every learner's trained parameters (each training seed's) on the benchmark's first
    ``eval.tasks`` fixed meta-test tasks; a task's score is its mean over the seeds, and
    ``seed_sd`` the spread of the seeds' means. One process for all learners: the interpreter,
    torch and MLflow start once (seconds each on a small CPU), not once per learner."""
    import polars as pl
    import torch

    from metalearn import tracking
    from metalearn.data.episodes import load_episodes
    from metalearn.evaluation import METRICS, per_task_scores
    from metalearn.metrics import mean_ci
    from metalearn.spec import evaluate_spec, train_cell
    from metalearn.training import Task, build_learner, to_device

    tracking.connect()  # an unusable store fails here, before any work
    spec = evaluate_spec(cfg, benchmark)  # the config, resolved once
    learners = list(spec["learners"])
    cells = {lr: train_cell(cfg, lr, benchmark) for lr in learners}
    checkpoints = {lr: load_checkpoint(cell) for lr, cell in cells.items()}
    source = load_episodes(paths.episodes(benchmark))
    device = torch_runtime(cells[learners[0]])  # the benchmark's: every cell shares it
    metric = METRICS[source.loss_kind]
    (sx, sy), (qx, qy) = source.fixed_tasks("test")
    n, confidence = spec["eval"]["tasks"], spec["eval"]["confidence"]
    tasks = to_device(((sx[:n], sy[:n]), (qx[:n], qy[:n])), device)
    results, per_task = {}, {}
    for learner, checkpoint in checkpoints.items():
        steps = spec["learners"][learner]["eval_steps"]
        task = Task.build(cells[learner].model, source, learner, device)
        scorer = build_learner(cells[learner], steps, checkpoint["fitted"])
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
        mean, ci = mean_ci(scores, confidence)
        per_task[learner] = (scores.numpy(), by_seed.numpy())
        seed_means = by_seed.mean(1).double()
        results[learner] = {
            "metric": metric.name,
            "higher_is_better": metric.higher_is_better,
            "mean": mean,
            "ci": ci,
            "confidence": confidence,
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
    # Every output is written only once every learner has been scored.
    with atomic_dir(paths.eval_per_task_dir(benchmark)) as tmp:
        for learner, (scores, by_seed) in per_task.items():
            seeds = checkpoints[learner]["seeds"]
            columns = {f"{metric.name}_seed{s}": row for s, row in zip(seeds, by_seed, strict=True)}
            pl.DataFrame({"task": range(n), metric.name: scores, **columns}).write_parquet(
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


def run_tune(cfg: Config, benchmark: str) -> dict[str, Any]:
    """Sweep ``tune``'s grid on ``benchmark`` (:mod:`metalearn.tuning`); write the table (CSV
    and markdown) and the choice per learner. No MLflow runs: the sweep's points are not
    results, and its files say everything they do."""
    import polars as pl

    from metalearn.data.episodes import load_episodes
    from metalearn.evaluation import METRICS
    from metalearn.parallel import train_all
    from metalearn.spec import train_cell
    from metalearn.training import NonFiniteError
    from metalearn.tuning import choose, markdown, tune

    if benchmark not in cfg.tune.benchmarks:
        raise ConfigError(f"benchmark {benchmark!r} is not in tune.benchmarks")
    source = load_episodes(paths.episodes(benchmark))
    cells = [train_cell(cfg, learner, benchmark) for learner in cfg.tune.learners]
    device = torch_runtime(cells[0])

    def train_points(points, on_done):
        workers = cells[0].workers
        return train_all(points, workers, source, device, (NonFiniteError,), on_done)

    rows = tune(cells, cfg.tune, train_points, on_point=lambda row: print(row, flush=True))
    chosen = choose(rows, METRICS[source.loss_kind].higher_is_better)
    with atomic_file(paths.tuning_csv(benchmark)) as tmp:
        pl.DataFrame(rows).write_csv(tmp)
    summary = {"benchmark": benchmark, "chosen": chosen, "table": markdown(benchmark, rows, chosen)}
    write_json(paths.tuning_json(benchmark), summary)
    return {learner: (r["inner_lr"], r["meta_lr"]) for learner, r in chosen.items()}


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
        ("metalearn.training", "CompileError"),
        ("metalearn.distributed", "DistributedError"),
        ("metalearn.data.download", "DownloadError"),
    ):
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return found


def _selector_values(cfg: Config, selector: str) -> list[str]:
    """What ``selector=`` may name in this params.yaml (the stages dvc.yaml defines)."""
    if selector == "dataset":
        return list(cfg.pipeline.datasets)
    if selector == "benchmark":
        return list(cfg.pipeline.benchmarks)
    return [*cfg.pipeline.learners, *cfg.pipeline.cf_learners]


def help_text(doc: str, selectors: Sequence[str]) -> str:
    """The ``--help`` text: the script's docstring, each selector's values, how to override."""
    lines = [doc.strip(), ""]
    try:
        cfg = load_config()
        lines += [f"  {s}=  one of: {', '.join(_selector_values(cfg, s))}" for s in selectors]
    except (ValueError, FileNotFoundError) as error:  # a broken params.yaml: say so, still help
        lines.append(f"  (params.yaml does not load: {error})")
    lines += [
        "  KEY=VALUE  any params.yaml key, for this run only (README: Parameters),",
        "             e.g. train.iterations=10 or algo.maml.steps=3",
    ]
    return "\n".join(lines)


def main(
    stage: Callable[..., Any], selectors: Sequence[str], argv: Sequence[str], doc: str = ""
) -> int:
    """Entry point of a stage script: ``KEY=VALUE`` arguments, the selectors named first;
    ``--help`` prints ``doc`` (the script's docstring) and what each selector may name.

    Errors a user can fix (bad parameters or data, failed downloads, missing inputs, divergence)
    print one message and exit with status 1 instead of a traceback.
    """
    if {"-h", "--help"} & set(argv):
        print(help_text(doc, selectors))
        return 0
    try:
        selected, overrides = split_cli(argv)
        missing = [s for s in selectors if s not in selected]
        extra = [s for s in selected if s not in selectors]
        if missing or extra:
            usage = " ".join(f"{s}=<name>" for s in selectors)
            raise ConfigError(f"usage: {usage} [overrides such as algo.steps=10]")
        cfg = load_config(overrides)
        for selector in selectors:
            names = _selector_values(cfg, selector)
            if selected[selector] not in names:
                raise ConfigError(
                    f"{selector}={selected[selector]} is not in params.yaml; "
                    f"one of: {', '.join(names)}"
                )
        result = stage(cfg, *(selected[s] for s in selectors))
    except (ValueError, FileNotFoundError, *_loaded_errors()) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(brief(result))
    return 0


def brief(result: Any, keys: int = 6) -> str:
    """A stage's result as one readable line (DVC shows it in its log): a mapping's entries as
    ``key=value``, floats to 4 significant digits, a nested mapping by its first keys and a list
    by its length. The whole result is in the stage's outputs and MLflow run."""
    if not isinstance(result, Mapping):
        return str(result)
    parts = []
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, Mapping):
            names = [str(k) for k in value]
            value = "{" + ", ".join(names[:keys]) + (", …" if len(names) > keys else "") + "}"
        elif isinstance(value, list | tuple):
            value = f"[{len(value)} items]"
        parts.append(f"{key}={value}")
    return ", ".join(parts)


def exit_now(code: int) -> NoReturn:
    """End a stage's process without the interpreter's teardown (unloading torch's operator
    libraries and the like: ~1.5 s a stage on a 2-core CPU). Safe here: every output is closed
    and renamed into place and every MLflow run ended before ``main`` returns."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
