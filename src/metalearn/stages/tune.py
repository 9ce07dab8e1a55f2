"""Stage tune@<benchmark>: every learner of ``tune.learners`` on one grid and one budget, scored
on meta-val (:mod:`metalearn.tuning`). No MLflow runs: the sweep's points are not results, and
its files say everything they do."""

from __future__ import annotations

import functools
from typing import Any

import polars as pl

from metalearn import paths
from metalearn.cell import TuneCell
from metalearn.data.episodes import load_episodes
from metalearn.evaluation import METRICS
from metalearn.io import Outputs
from metalearn.parallel import train_all
from metalearn.runtime import torch_runtime
from metalearn.spec import read_cell, tune_cell
from metalearn.stages.cli import Stage
from metalearn.training import NonFiniteError
from metalearn.tuning import choose_model, markdown, tune


def run(cell: TuneCell) -> dict[str, Any]:
    """Sweep the grid on the benchmark; write the table (CSV) and the choice per learner."""
    benchmark = cell.benchmark
    source = load_episodes(paths.episodes(benchmark))
    cells = list(cell.cells.values())
    device = torch_runtime(cells[0])

    def train_points(points, on_done):
        workers = cells[0].workers
        return train_all(points, workers, source, device, (NonFiniteError,), on_done)

    rows = tune(cells, cell, train_points, on_point=lambda row: print(row, flush=True))
    higher = METRICS[source.loss_kind].higher_is_better
    model, chosen = choose_model(rows, higher)
    table = markdown(benchmark, rows, chosen, higher)
    summary = {"benchmark": benchmark, "model": model, "chosen": chosen, "table": table}
    with Outputs() as out:
        pl.DataFrame(rows).write_csv(out.file(paths.tuning_csv(benchmark)))
        out.write_json(paths.tuning_json(benchmark), summary)
        out.commit()
    return {learner: (r["inner_lr"], r["meta_lr"]) for learner, r in chosen.items()}


STAGE = Stage(
    run,
    ("benchmark",),
    resolve=tune_cell,
    cell_file=paths.tune_spec,
    read=functools.partial(read_cell, kind=TuneCell),
)
