"""Resolved specs: every value a train, evaluate or tune cell uses, after precedence.

Stage ``resolve`` validates the whole of ``params.yaml`` and writes one file per cell under
``configs/`` (``configs/train/<learner>-<benchmark>.json``, ``configs/evaluate/<benchmark>.json``,
``configs/tune/<benchmark>.json``). Each train, evaluate and tune stage depends on its own spec
(``params:`` of that file's ``spec`` in dvc.yaml) instead of raw params keys, so DVC re-runs a
cell only when a value it uses changes:
``algo.steps=100`` re-trains only the learners whose K comes from it, not MAML with its own
``algo.maml.steps``. A spec holds values, never the keys they came from; the precedence rules
are those of :func:`metalearn.config.benchmark_config` and the per-learner helpers. Under DVC
a stage reads its cell back from that file (:func:`read_cell`): the config is resolved once.

The train stage also records its spec in the checkpoint and in MLflow, and evaluate refuses a
checkpoint whose spec is not the one its cell would train now (a file copied over another).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from metalearn import paths
from metalearn.cell import EvaluateCell, Spec, TrainCell, TuneCell
from metalearn.config import (
    Config,
    ConfigError,
    benchmark_config,
    learners_of,
)
from metalearn.config.learners import (
    check_learners,
    eval_steps,
    iterations,
    learner_options,
    meta_lr,
    setting_keys,
)
from metalearn.config.schema import CF_DATASETS
from metalearn.errors import MissingInputError
from metalearn.io import atomic_file

#: ``train.compile: auto`` compiles the meta-gradient of a cell that meta-trains at least this
#: many iterations. On the 2-core CPU compiling takes 30 s to minutes a learner, and the compiled
#: meta-gradient is 5-8x faster on the CF MLP (docs/scale.md "Compiled meta-gradients"): it pays
#: from about this many iterations on; shorter runs (the tests, the CPU recipes) stay eager.
COMPILE_FROM = 2000


def train_cell(cfg: Config, learner: str, benchmark: str) -> TrainCell:
    """The cell ``train@<learner>-<benchmark>`` of ``cfg`` (the whole, validated config)."""
    b = benchmark_config(cfg, benchmark)
    steps = iterations(b, learner)
    compiled = b.train.compile
    if compiled == "auto":
        compiled = steps >= COMPILE_FROM
    return TrainCell(
        learner=learner,
        benchmark=benchmark,
        dataset=cfg.pipeline.benchmarks[benchmark].dataset,
        options=learner_options(b, learner),
        adapt=b.algo.adapt,
        iterations=steps,
        meta_lr=meta_lr(b, learner),
        meta_lr_schedule=b.train.meta_lr_schedule,
        meta_lr_floor=b.train.meta_lr_floor,
        model=b.model,
        meta_batch=b.train.meta_batch,
        val_every=b.train.val_every,
        seed=b.train.seed,
        seeds=b.train.seeds,
        device=b.train.device,
        threads=b.train.threads,
        workers=b.train.workers,
        compile=compiled,
        processes=b.train.processes,
        stage=train_stage(cfg, learner),
        keys=setting_keys(cfg, learner, benchmark),
    )


def train_stage(cfg: Config, learner: str) -> str:
    """The DVC stage that trains ``learner``: ``train``, or ``train-cf`` for the learners that
    train on collaborative filtering only (``pipeline.cf_learners``)."""
    return "train-cf" if learner in cfg.pipeline.cf_learners else "train"


def train_spec(cfg: Config, learner: str, benchmark: str) -> Spec:
    """What ``train@<learner>-<benchmark>`` uses: the learner's resolved options, the model, the
    inner-loop split and the training loop's own keys (the data come from the episodes)."""
    return train_cell(cfg, learner, benchmark).spec()


def evaluate_cell(cfg: Config, benchmark: str) -> EvaluateCell:
    """The cell ``evaluate@<benchmark>``: every learner of the benchmark, with its meta-test K."""
    b = benchmark_config(cfg, benchmark)
    learners = learners_of(cfg, benchmark)
    return EvaluateCell(
        benchmark=benchmark,
        cells={learner: train_cell(cfg, learner, benchmark) for learner in learners},
        eval_steps={learner: eval_steps(b, learner) for learner in learners},
        tasks=b.eval.tasks,
        confidence=b.eval.confidence,
    )


def evaluate_spec(cfg: Config, benchmark: str) -> Spec:
    """What ``evaluate@<benchmark>`` uses: which learners it scores, each one's meta-test K and
    options, the model, the task count and the interval's confidence."""
    return evaluate_cell(cfg, benchmark).spec()


def model_points(cell: TrainCell, model_grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The model keys of each point of ``model_grid`` (``tune.model``, crossed) for ``cell``:
    they apply to the CF factors model only, elsewhere there is the one point of the cell's own
    model (``[{}]``)."""
    if not model_grid or cell.dataset not in CF_DATASETS or cell.model.cf != "factors":
        return [{}]
    crossed = itertools.product(*model_grid.values())
    return [dict(zip(model_grid, values, strict=True)) for values in crossed]


def tune_cell(cfg: Config, benchmark: str) -> TuneCell:
    """The cell ``tune@<benchmark>``: the grid and budget, and each tuned learner's train cell."""
    if benchmark not in cfg.tune.benchmarks:
        raise ConfigError(f"benchmark {benchmark!r} is not in tune.benchmarks")
    cells = {lr: train_cell(cfg, lr, benchmark) for lr in cfg.tune.learners}
    applies = model_points(next(iter(cells.values())), cfg.tune.model) != [{}]
    return TuneCell(
        benchmark=benchmark,
        cells=cells,
        inner_lr=list(cfg.tune.inner_lr),
        meta_lr=list(cfg.tune.meta_lr),
        iterations=cfg.tune.iterations,
        model=dict(cfg.tune.model) if applies else {},
    )


def tune_spec(cfg: Config, benchmark: str) -> Spec:
    """What ``tune@<benchmark>`` uses: the grid and budget, and each tuned learner's train spec
    (whose α, meta-lr and iterations the grid then replaces)."""
    return tune_cell(cfg, benchmark).spec()


Cell = TrainCell | EvaluateCell | TuneCell


def all_cells(cfg: Config) -> dict[Path, Cell]:
    """Every cell by the path of its file under ``configs/`` (the cells dvc.yaml defines), once
    every learner's section is checked."""
    check_learners(cfg)
    p = cfg.pipeline
    pairs = [(lr, b) for lr in p.learners for b in p.benchmarks]
    pairs += [(lr, b) for lr in p.cf_learners for b in p.cf_benchmarks]
    cells: dict[Path, Cell] = {paths.train_spec(lr, b): train_cell(cfg, lr, b) for lr, b in pairs}
    cells |= {paths.evaluate_spec(b): evaluate_cell(cfg, b) for b in p.benchmarks}
    cells |= {paths.tune_spec(b): tune_cell(cfg, b) for b in cfg.tune.benchmarks}
    return cells


def all_specs(cfg: Config) -> dict[Path, Spec]:
    """Every cell's spec by the path of its file under ``configs/``."""
    return {path: cell.spec() for path, cell in all_cells(cfg).items()}


def dumps(spec: Spec) -> str:
    """One canonical text per spec (sorted keys), so that equal values give equal files."""
    return json.dumps(spec, indent=1, sort_keys=True) + "\n"


def cell_file(cell: Cell) -> str:
    """A cell's file: its ``spec`` (what DVC tracks) and the whole ``cell`` (what its stage
    reads), one canonical text."""
    return dumps({"spec": cell.spec(), "cell": cell.to_dict()})


def write_specs(cfg: Config) -> int:
    """Bring ``configs/`` to every cell. All cells are resolved (and so validated) before
    anything is written; then only the files whose text changed are replaced, each atomically,
    and the files of cells that no longer exist are removed. An unchanged file keeps its inode
    and mtime, by which DVC's hash cache knows it, so its cell is not re-run by mistake."""
    files = {path: cell_file(cell) for path, cell in all_cells(cfg).items()}
    for path, text in files.items():
        if not path.is_file() or path.read_text() != text:
            with atomic_file(path) as tmp:
                tmp.write_text(text)
    for old in paths.CONFIGS.rglob("*.json"):
        if old not in files:
            old.unlink()
    return len(files)


def read_cell(path: Path, kind: type[Cell]) -> Cell:
    """The cell stage resolve wrote to ``path``; refuses a missing, unreadable or hand-edited
    file (its spec no longer that of its cell), naming the fix."""
    fix = "re-create it: dvc repro resolve"
    if not path.is_file():
        raise MissingInputError(f"{path} is missing; {fix}")
    try:
        data = json.loads(path.read_text())
        cell = kind.from_dict(data["cell"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"{path} cannot be read ({type(error).__name__}: {error}); {fix}"
        ) from None
    if cell.spec() != data.get("spec"):
        raise ConfigError(f"{path}: its spec is not that of its cell (edited by hand?); {fix}")
    return cell
