"""Stage train@<learner>-<benchmark>: meta-train one learner on one benchmark, one MLflow run.

Its outputs (the checkpoint, the training curve and the metrics file) are committed together,
after training, and only then is the run closed FINISHED; a failure or a signal at any point
leaves the earlier outputs as they were and the run FAILED or KILLED."""

from __future__ import annotations

import functools
from typing import Any

import polars as pl

from metalearn import paths
from metalearn.cell import TrainCell
from metalearn.checkpoint import save_checkpoint
from metalearn.data.episodes import load_episodes
from metalearn.fingerprint import fingerprint
from metalearn.io import Outputs
from metalearn.parallel import meta_train_seeds
from metalearn.runtime import torch_runtime
from metalearn.spec import dumps, read_cell, train_cell
from metalearn.stages.cli import Stage
from metalearn.tracking_process import side_run
from metalearn.training import TrainResult, training_seeds


def run(cell: TrainCell) -> dict[str, Any]:
    """Meta-train ``cell``; write the model, the training curve and the metrics file (with the
    MLflow run id, so outputs restored from DVC's cache still point to their run)."""
    learner, benchmark = cell.learner, cell.benchmark
    with side_run() as run:
        spec = cell.spec()  # what DVC re-runs this cell on
        source = load_episodes(paths.episodes(benchmark))
        device = torch_runtime(cell)
        seeds = training_seeds(cell)
        run.start(spec, learner, benchmark, source.meta)
        runs = meta_train_seeds(cell, source, device, on_metrics=run.log)
        run_id = run.wait_run_id()  # opened by the side meanwhile
        first = runs[0]
        metrics = _metrics(runs, seeds, run_id, str(device))
        with Outputs() as out:
            save_checkpoint(
                out.file(paths.model(learner, benchmark)),
                first.params,  # the first seed's best meta-val point
                learner=learner,
                benchmark=benchmark,
                mlflow_run_id=run_id,
                seeds=seeds,
                seed_params=[r.params for r in runs],  # evaluate scores each seed's
                best_iterations=[r.best_iteration for r in runs],
                fitted=first.fitted,  # options chosen in training (a fitted baseline's)
                grid=first.grid,  # and the candidates it chose them from, with their scores
                spec=dumps(spec),  # evaluate checks that its cell would train this one now
            )
            curves = [
                pl.DataFrame(r.curve).with_columns(seed=pl.lit(s))
                for s, r in zip(seeds, runs, strict=True)
            ]
            curve = out.file(paths.train_curve(learner, benchmark))
            pl.concat(curves, how="diagonal").write_csv(curve)
            record = {**metrics, "curve": fingerprint(curve)}  # the report checks the curve
            out.write_json(paths.train_metrics(learner, benchmark), record)
            out.commit()
            run.finish(
                {
                    # where meta-val stopped improving: the point whose parameters meta-test uses
                    "best_iteration": first.best_iteration,
                    "best_meta_val": first.best_val,
                    "compile_seconds": metrics["compile_seconds"],  # 0 when eager
                }
            )
    return metrics


def _metrics(runs: list[TrainResult], seeds: list[int], run_id: str, device: str) -> dict:
    """The metrics file: the first seed's final curve point and best meta-val point, the
    seeds' total seconds; the checkpoint has every seed's parameters."""
    first = runs[0]
    final = first.curve[-1]
    return {
        "mlflow_run_id": run_id,
        "device": device,
        "seconds": round(sum(r.seconds for r in runs), 3),
        # within seconds: the seeds' first meta-gradients, 0 when eager (train.compile)
        "compile_seconds": round(sum(r.compile_seconds for r in runs), 3),
        "seeds": len(seeds),
        "iterations": final["iteration"],  # 0 for a learner that is not meta-trained
        **{k: v for k, v in final.items() if k != "iteration"},
        "best_iteration": first.best_iteration,  # the parameters saved (best meta-val point)
        "best_meta_val": first.best_val,
    }


STAGE = Stage(
    run,
    ("learner", "benchmark"),
    resolve=train_cell,
    cell_file=paths.train_spec,
    read=functools.partial(read_cell, kind=TrainCell),
)
