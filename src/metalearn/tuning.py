"""Fair tuning on meta-val: every learner gets the same grid and the same budget.

Stage ``tune@<benchmark>`` of the tuning pipeline (``tuning/dvc.yaml``, run only when asked for:
``dvc repro tuning/dvc.yaml``; ``tune.benchmarks``) meta-trains each learner of ``tune.learners``
once per point of the grid ``tune.inner_lr`` x ``tune.meta_lr`` (on the CF factors model also
crossed with the model keys of ``tune.model``), for ``tune.iterations``
meta-iterations and one seed (``train.seed``), with everything else as the benchmark's protocol,
and scores each point by its best meta-val value (the point the train stage would keep). It writes
the whole table to ``results/tuning/<benchmark>.csv`` and the choice per learner to
``results/tuning/<benchmark>.json``. A tie keeps the first point of the grid order.

The choice reaches the study through ``params.yaml``, by hand or by

    python -m metalearn.tuning apply [BENCHMARK ...] [--dry-run]

which writes each chosen ``inner_lr`` and ``meta_lr`` into
``pipeline.benchmarks.<b>.algo.<learner>``, and the chosen ``tune.model`` point into
``pipeline.benchmarks.<b>.model``, for every benchmark of the tuned benchmark's dataset (per
dataset: the tuned setting stands for the others), keeping the file's comments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML  # DVC's own YAML library: keeps comments and layout
from ruamel.yaml.comments import CommentedMap

from metalearn import paths
from metalearn.cell import TrainCell, TuneCell
from metalearn.config import Config, ConfigError, default_params_path, load_config
from metalearn.errors import MissingInputError, StageError
from metalearn.io import read_json
from metalearn.spec import COMPILE_FROM, model_points
from metalearn.training import NonFiniteError

Row = dict[str, Any]
#: A sweep row's columns besides the model keys it varied.
GRID_COLUMNS = (
    "learner", "inner_lr", "meta_lr", "best_meta_val", "best_iteration", "seconds", "diverged",
)  # fmt: skip


def point_cell(
    cell: TrainCell, inner_lr: float, meta_lr: float, budget: int, model: Row | None = None
) -> TrainCell:
    """``cell`` with the inner step size, meta-lr, budget and model keys (``model``) of a grid
    point, on one seed; compiled only for a budget that repays compiling (each point's step
    size is a new graph)."""
    options = {**cell.options, "inner_lr": inner_lr}
    compiled = cell.compile and budget >= COMPILE_FROM
    return dataclasses.replace(
        cell,
        options=options,
        meta_lr=meta_lr,
        iterations=budget,
        seeds=1,
        compile=compiled,
        model=dataclasses.replace(cell.model, **(model or {})),
    )


def tune(
    cells: Sequence[TrainCell],
    grid: TuneCell,
    train_points: Callable[[list[TrainCell], Callable[[int, Any], None]], list[Any]],
    on_point: Callable[[Row], None] | None = None,
) -> list[Row]:
    """One row per (learner, model point, inner_lr, meta_lr) of ``grid`` for each cell (a
    learner on the tuned benchmark; the model points of :func:`model_points`, whose keys are
    columns of the row): the best meta-val value, its iteration and the seconds taken; a point
    that diverged has NaN and the error in ``diverged``. ``train_points(points, on_done)``
    meta-trains every point (in any order, in parallel if it likes:
    :func:`metalearn.parallel.train_all`), calls ``on_done(index, result)`` as each ends and
    returns, in order, a :class:`metalearn.training.TrainResult` or the
    :class:`metalearn.training.NonFiniteError` of a point that diverged."""
    keys = [
        (cell, model, inner_lr, meta_lr)
        for cell in cells
        for model in model_points(cell, grid.model)
        for inner_lr in grid.inner_lr
        for meta_lr in grid.meta_lr
    ]
    points = [point_cell(cell, a, b, grid.iterations, model) for cell, model, a, b in keys]

    def row_of(i: int, result: Any) -> Row:
        cell, model, inner_lr, meta_lr = keys[i]
        diverged = isinstance(result, Exception)  # a diverged point loses; the sweep goes on
        return {
            "learner": cell.learner,
            **model,
            "inner_lr": inner_lr,
            "meta_lr": meta_lr,
            "best_meta_val": math.nan if diverged else result.best_val,
            "best_iteration": 0 if diverged else result.best_iteration,
            "seconds": math.nan if diverged else round(result.seconds, 3),
            "diverged": str(result) if diverged else "",
        }

    def done(i: int, result: Any) -> None:
        if on_point is not None:
            on_point(row_of(i, result))

    results = train_points(points, done)
    return [row_of(i, r) for i, r in enumerate(results)]


def one_by_one(train: Callable[[TrainCell], Any]) -> Callable[..., list[Any]]:
    """``train_points`` for :func:`tune` from a ``train(cell)`` of one point, run in order
    here (a :class:`metalearn.training.NonFiniteError` becomes the point's result)."""

    def train_points(points: list[TrainCell], on_done: Callable[[int, Any], None]) -> list[Any]:
        results = []
        for i, point in enumerate(points):
            try:
                results.append(train(point))
            except NonFiniteError as error:
                results.append(error)
            on_done(i, results[-1])
        return results

    return train_points


def choose(rows: Sequence[Row], higher_is_better: bool) -> dict[str, Row]:
    """Per learner, the row with the best ``best_meta_val`` (the first on a tie; a diverged
    point, NaN, never wins)."""
    sign = -1.0 if higher_is_better else 1.0
    chosen: dict[str, Row] = {}
    for row in rows:
        value = row["best_meta_val"]
        if value != value:  # NaN
            continue
        old = chosen.get(row["learner"])
        if old is None or sign * value < sign * old["best_meta_val"]:
            chosen[row["learner"]] = row
    return chosen


def model_keys(rows: Sequence[Row]) -> list[str]:
    """The model keys the sweep varied: the rows' columns beyond the grid's own."""
    return [k for k in (rows[0] if rows else {}) if k not in GRID_COLUMNS]


def by_model_point(rows: Sequence[Row]) -> dict[tuple, list[Row]]:
    """The rows grouped by their values of :func:`model_keys`, in sweep order."""
    keys = model_keys(rows)
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def choose_model(rows: Sequence[Row], higher_is_better: bool) -> tuple[Row, dict[str, Row]]:
    """The model point whose learners do best on average (the mean over learners of each one's
    best value there; a point where a learner diverged everywhere never wins unless all do)
    and, at that point, each learner's chosen row (:func:`choose`). ``({}, choose(rows))`` for
    a sweep without model keys."""
    keys = model_keys(rows)
    learners = set(r["learner"] for r in rows)
    sign = -1.0 if higher_is_better else 1.0
    best = None
    for point, group in by_model_point(rows).items():
        chosen = choose(group, higher_is_better)
        rank = (len(chosen) < len(learners), sign * _mean_best(chosen))
        if best is None or rank < best[0]:
            best = (rank, dict(zip(keys, point, strict=True)), chosen)
    return best[1], best[2]


def _mean_best(chosen: dict[str, Row]) -> float:
    """The mean over learners of each one's chosen (best) value."""
    return sum(r["best_meta_val"] for r in chosen.values()) / max(len(chosen), 1)


def markdown(
    benchmark: str, rows: Sequence[Row], chosen: dict[str, Row], higher_is_better: bool = False
) -> str:
    """The sweep as tables, one per model point: learners down, grid points across, the chosen
    one in bold; with model keys, each table's heading gives its point and the learners' mean."""
    keys = model_keys(rows)
    lines = [f"#### {benchmark}", ""]
    for point, group in by_model_point(rows).items():
        if keys:
            mine = any(r is chosen.get(r["learner"]) for r in group)
            name = ", ".join(f"{k} {v}" for k, v in zip(keys, point, strict=True))
            mean = f"mean of the learners' best {_mean_best(choose(group, higher_is_better)):.4f}"
            lines += [f"{name}: {mean}{' (chosen)' if mine else ''}", ""]
        lines += [*_grid_table(group, chosen), ""]
    return "\n".join(lines)


def _grid_table(rows: Sequence[Row], chosen: dict[str, Row]) -> list[str]:
    points = list(dict.fromkeys((r["inner_lr"], r["meta_lr"]) for r in rows))
    header = " | ".join(f"α {a:g}, β {b:g}" for a, b in points)
    lines = [f"| learner | {header} |", "|---|" + "---|" * len(points)]
    for learner in dict.fromkeys(r["learner"] for r in rows):
        cells = []
        for a, b in points:
            row = next(
                r for r in rows if (r["learner"], r["inner_lr"], r["meta_lr"]) == (learner, a, b)
            )
            cell = "diverged" if row.get("diverged") else f"{row['best_meta_val']:.4f}"
            cells.append(f"**{cell}**" if chosen.get(learner) is row else cell)
        lines.append(f"| {learner} | " + " | ".join(cells) + " |")
    return lines


# ------------------------------------------------------------------------- applying the choice


def apply(
    params_path: Path,
    choices: dict[str, dict[str, Row]],
    cfg: Config,
    write: bool = True,
    models: dict[str, Row] | None = None,
) -> list[str]:
    """Write each chosen ``inner_lr``/``meta_lr`` (and the tuned benchmark's chosen model keys,
    ``models``) into ``params.yaml`` under every benchmark of the tuned benchmark's dataset
    (``write=False``: only say what would change); return the changes as ``key: old -> new``
    lines."""
    yaml = YAML()
    yaml.width = 4096  # never fold a line
    yaml.indent(mapping=2, sequence=4, offset=2)  # the file's own layout
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    data = yaml.load(params_path.read_text())
    entries = data["pipeline"]["benchmarks"]
    changes = []
    for tuned, by_learner in choices.items():
        dataset = cfg.pipeline.benchmarks[tuned].dataset
        for name, entry in entries.items():
            if entry["dataset"] != dataset:
                continue
            for key, new in (models or {}).get(tuned, {}).items():
                model = entry.setdefault("model", CommentedMap())
                if model.get(key) != new:
                    changes.append(
                        f"pipeline.benchmarks.{name}.model.{key}: {model.get(key)} -> {new}"
                    )
                    model[key] = new
            algo = entry.setdefault("algo", {})
            if hasattr(algo, "fa"):
                algo.fa.set_block_style()  # one learner a line, not one long flow mapping
            for learner, row in by_learner.items():
                if learner not in algo:
                    algo[learner] = CommentedMap()
                    algo[learner].fa.set_flow_style()  # {inner_lr: ..., meta_lr: ...}
                section = algo[learner]
                for key in ("inner_lr", "meta_lr"):
                    old, new = section.get(key), float(row[key])
                    if old != new:
                        section[key] = new
                        changes.append(
                            f"pipeline.benchmarks.{name}.algo.{learner}.{key}: {old} -> {new}"
                        )
    if write and changes:
        with open(params_path, "w") as f:
            yaml.dump(data, f)
    return changes


def read_choices(
    root: Path, benchmarks: Sequence[str]
) -> tuple[dict[str, dict[str, Row]], dict[str, Row]]:
    """The ``chosen`` rows and the chosen model keys of each tuned benchmark's
    ``results/tuning/<b>.json``."""
    choices, models = {}, {}
    for b in benchmarks:
        path = root / paths.tuning_json(b)
        if not path.is_file():
            raise MissingInputError(
                f"{path} is missing; run `dvc repro tuning/dvc.yaml:tune@{b}` first"
            )
        summary = json.loads(path.read_text())
        choices[b], models[b] = summary["chosen"], summary.get("model", {})
    return choices, models


def tables_doc(root: Path, benchmarks: Sequence[str]) -> str:
    """docs/tuning.md: every tuned benchmark's sweep (:func:`markdown`, as its tune stage wrote
    it into ``results/tuning/<b>.json``), with the model point it chose."""
    parts = [
        "# Tuning tables",
        "",
        "Written by `python -m metalearn.tuning tables` from `results/tuning/<benchmark>.json` "
        "(the tune stages' outputs; [Tuning](protocols.md#tuning) says how they are made). Each "
        "cell: the best meta-val value of a grid point, one seed; bold: each learner's choice, at "
        "the model point the benchmark keeps.",
        "",
    ]
    for b in benchmarks:
        summary = read_json(root / paths.tuning_json(b))
        model = ", ".join(f"`{k}: {v}`" for k, v in summary.get("model", {}).items())
        table = summary["table"].replace(f"#### {b}", f"## {b}", 1)
        parts += [table.rstrip(), ""]
        if model:
            parts += [f"Kept: {model}.", ""]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="write the tuned values into params.yaml (apply), or print docs/tuning.md"
    )
    parser.add_argument("action", choices=["apply", "tables"])
    parser.add_argument("benchmarks", nargs="*", help="tuned benchmarks (default: tune.benchmarks)")
    parser.add_argument("--dry-run", action="store_true", help="print the changes only")
    args = parser.parse_args(argv)
    cfg = load_config()
    params = default_params_path()
    unknown = [b for b in args.benchmarks if b not in cfg.tune.benchmarks]
    try:
        if unknown:
            names = ", ".join(unknown)
            raise ConfigError(f"{names}: not in tune.benchmarks {cfg.tune.benchmarks}")
        choices, models = read_choices(params.parent, args.benchmarks or cfg.tune.benchmarks)
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.action == "tables":
        print(tables_doc(params.parent, args.benchmarks or cfg.tune.benchmarks), end="")
        return 0
    changes = apply(params, choices, cfg, write=not args.dry_run, models=models)
    print("\n".join(changes) if changes else "params.yaml already holds the tuned values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
