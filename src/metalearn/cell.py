"""Resolved cells: every value a train, evaluate or tune stage uses, after precedence.

Stage ``resolve`` computes them once from ``params.yaml`` (:mod:`metalearn.spec`) and writes each
to its file under ``configs/``; under DVC the stage reads that file back (:meth:`to_dict` and
:meth:`from_dict` are the one serialization, which the torchrun ranks use too). ``spec()`` is the
part that decides a cell's outputs: DVC tracks it (``params:`` in dvc.yaml), the checkpoint and
the MLflow run record it. What does not change the numbers (``train.workers``) is in the cell
and not in its spec, so changing it re-runs nothing."""

from __future__ import annotations

import dataclasses
from typing import Any

from metalearn.algorithms import REGISTRY, Fitted
from metalearn.config import ModelConfig

Spec = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TrainCell:
    """Everything ``train@<learner>-<benchmark>`` uses, resolved once from the config (the
    benchmark's protocol over the top level, the learner's keys over the shared ones). The
    training code reads this and never the config: what it uses is what :meth:`spec` holds,
    and so what DVC re-runs the cell on."""

    learner: str
    benchmark: str
    dataset: str
    options: dict[str, Any]  # metalearn.algorithms.make(learner, **options): K, α, its own keys
    adapt: str  # algo.adapt: "all", or "head" (the inner loop moves the head only)
    iterations: int
    meta_lr: float
    meta_lr_schedule: str  # constant | cosine (training.meta_lr_at)
    meta_lr_floor: float  # cosine's last step size, a fraction of meta_lr
    model: ModelConfig
    meta_batch: int
    val_every: int
    seed: int
    seeds: int  # training seeds: seed, seed + 1, ...
    device: str
    threads: int
    workers: int  # seeds meta-trained at once: the same numbers, so not in the spec
    compile: bool  # torch.compile the meta-gradient (float32 round-off differs: in the spec)
    processes: int  # ranks sharing each meta-batch (the sums' round-off differs: in the spec)
    stage: str  # the DVC stage that trains it: train, or train-cf (pipeline.cf_learners)
    keys: dict[str, str]  # the params.yaml key that sets steps, inner_lr, meta_lr (fix hints)

    def spec(self) -> Spec:
        """The values that decide the cell's outputs, as stage resolve writes them."""
        head = {"learner": self.learner, "benchmark": self.benchmark, "dataset": self.dataset}
        if issubclass(REGISTRY[self.learner], Fitted):  # no model or meta-training of its own
            algo = self.algo_options()
            train = {"device": self.device, "threads": self.threads, "seed": self.seed}
            return {**head, "algo": algo, "train": train}
        algo = {"adapt": self.adapt, **self.options}
        algo |= {"iterations": self.iterations, "meta_lr": self.meta_lr}
        if self.meta_lr_schedule != "constant":  # a constant cell's spec is as it was
            algo |= {"meta_lr_schedule": self.meta_lr_schedule, "meta_lr_floor": self.meta_lr_floor}
        keys = ("meta_batch", "val_every", "seed", "seeds", "compile", "processes")
        train = {k: getattr(self, k) for k in keys}
        train |= {"device": self.device, "threads": self.threads}
        return {**head, "algo": algo, "model": dataclasses.asdict(self.model), "train": train}

    def algo_options(self) -> dict[str, Any]:
        """The learner's options that decide its outputs."""
        ignored = REGISTRY[self.learner].ignores
        return {k: v for k, v in self.options.items() if k not in ignored}

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON values (the model as a mapping)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainCell:
        """The cell :meth:`to_dict` wrote."""
        return cls(**{**data, "model": ModelConfig(**data["model"])})


class _OfLearners:
    """The serialization of a cell holding each learner's train cell (``cells``)."""

    def to_dict(self) -> dict[str, Any]:
        cells = {learner: cell.to_dict() for learner, cell in self.cells.items()}
        return {**dataclasses.asdict(self), "cells": cells}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        cells = {learner: TrainCell.from_dict(c) for learner, c in data["cells"].items()}
        return cls(**{**data, "cells": cells})


@dataclasses.dataclass(frozen=True)
class EvaluateCell(_OfLearners):
    """Everything ``evaluate@<benchmark>`` uses: each learner's train cell (its model and
    options, and the spec its checkpoint must hold), its meta-test K, the task count and the
    interval's confidence."""

    benchmark: str
    cells: dict[str, TrainCell]
    eval_steps: dict[str, int]
    tasks: int
    confidence: float

    def spec(self) -> Spec:
        first = next(iter(self.cells.values()))
        learners = {
            learner: {**cell.algo_options(), "eval_steps": self.eval_steps[learner]}
            for learner, cell in self.cells.items()
        }
        return {
            "benchmark": self.benchmark,
            "learners": learners,
            "adapt": first.adapt,
            "model": dataclasses.asdict(first.model),
            "eval": {"tasks": self.tasks, "confidence": self.confidence},
            "train": {"device": first.device, "threads": first.threads},
        }


@dataclasses.dataclass(frozen=True)
class TuneCell(_OfLearners):
    """Everything ``tune@<benchmark>`` uses: the grid and budget (``tune``), and each tuned
    learner's train cell, whose α, meta-lr and iterations the grid replaces."""

    benchmark: str
    cells: dict[str, TrainCell]
    inner_lr: list[float]
    meta_lr: list[float]
    iterations: int
    model: dict[str, list[Any]]  # tune.model where it applies (tuning.model_points), else {}

    def spec(self) -> Spec:
        grid = {"inner_lr": self.inner_lr, "meta_lr": self.meta_lr, "iterations": self.iterations}
        if self.model:
            grid["model"] = self.model
        grid["learners"] = sorted(self.cells)  # the cell's file sorts them too (spec.dumps)
        learners = {learner: cell.spec() for learner, cell in self.cells.items()}
        return {"benchmark": self.benchmark, "tune": grid, "learners": learners}
