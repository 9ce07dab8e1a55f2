"""Resolved specs: every value a train, evaluate or tune cell uses, after precedence.

Stage ``resolve`` validates the whole of ``params.yaml`` and writes one spec per cell under
``configs/`` (``configs/train/<learner>-<benchmark>.json``, ``configs/evaluate/<benchmark>.json``,
``configs/tune/<benchmark>.json``). Each train, evaluate and tune stage depends on its own spec
instead of raw params keys, so DVC re-runs a cell only when a value it uses changes:
``algo.steps=100`` re-trains only the learners whose K comes from it, not MAML with its own
``algo.maml.steps``. A spec holds values, never the keys they came from; the precedence rules
are those of :func:`metalearn.config.benchmark_config` and the per-learner helpers.

The train stage also records its spec in the checkpoint and in MLflow, and evaluate refuses a
checkpoint whose spec is not the one its cell would train now (a file copied over another).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from metalearn import paths
from metalearn.config import (
    CF_ONLY_LEARNERS,
    Config,
    ModelConfig,
    benchmark_config,
    eval_steps,
    iterations,
    learner_options,
    learners_of,
    meta_lr,
)
from metalearn.io import atomic_file

Spec = dict[str, Any]

#: ``train.compile: auto`` compiles the meta-gradient of a cell that meta-trains at least this
#: many iterations. On the 2-core CPU compiling takes 30 s to minutes a learner, and the compiled
#: meta-gradient is 5-8x faster on the CF MLP (README "Compiled meta-gradients"): it pays from
#: about this many iterations on; shorter runs (the tests, the CPU recipes) stay eager.
COMPILE_FROM = 2000


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

    def spec(self) -> Spec:
        """The values that decide the cell's outputs, as stage resolve writes them."""
        head = {"learner": self.learner, "benchmark": self.benchmark, "dataset": self.dataset}
        if self.learner in CF_ONLY_LEARNERS:  # a closed-form fit: no model or meta-training
            unused = ("steps", "inner_lr")  # the fit uses its shrinkages only, not K or α
            algo = {k: v for k, v in self.options.items() if k not in unused}
            train = {"device": self.device, "threads": self.threads, "seed": self.seed}
            return {**head, "algo": algo, "train": train}
        algo = {"adapt": self.adapt, **self.options}
        algo |= {"iterations": self.iterations, "meta_lr": self.meta_lr}
        keys = ("meta_batch", "val_every", "seed", "seeds", "compile", "processes")
        train = {k: getattr(self, k) for k in keys}
        train |= {"device": self.device, "threads": self.threads}
        return {**head, "algo": algo, "model": dataclasses.asdict(self.model), "train": train}


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
    )


def train_spec(cfg: Config, learner: str, benchmark: str) -> Spec:
    """What ``train@<learner>-<benchmark>`` uses: the learner's resolved options, the model, the
    inner-loop split and the training loop's own keys (the data come from the episodes)."""
    return train_cell(cfg, learner, benchmark).spec()


def evaluate_spec(cfg: Config, benchmark: str) -> Spec:
    """What ``evaluate@<benchmark>`` uses: which learners it scores, each one's meta-test K and
    options, the model, the task count and the interval's confidence."""
    b = benchmark_config(cfg, benchmark)
    learners = {
        learner: {
            **(
                dataclasses.asdict(getattr(b.algo, learner))
                if learner in CF_ONLY_LEARNERS
                else learner_options(b, learner)
            ),
            "eval_steps": eval_steps(b, learner),
        }
        for learner in learners_of(cfg, benchmark)
    }
    return {
        "benchmark": benchmark,
        "learners": learners,
        "adapt": b.algo.adapt,
        "model": dataclasses.asdict(b.model),
        "eval": {"tasks": b.eval.tasks, "confidence": b.eval.confidence},
        "train": {"device": b.train.device, "threads": b.train.threads},
    }


def tune_spec(cfg: Config, benchmark: str) -> Spec:
    """What ``tune@<benchmark>`` uses: the grid and budget, and each tuned learner's train spec
    (whose α, meta-lr and iterations the grid then replaces)."""
    grid = dataclasses.asdict(cfg.tune)
    del grid["benchmarks"]
    learners = {lr: train_spec(cfg, lr, benchmark) for lr in cfg.tune.learners}
    return {"benchmark": benchmark, "tune": grid, "learners": learners}


def all_specs(cfg: Config) -> dict[Path, Spec]:
    """Every cell's spec by its path under ``configs/`` (the cells dvc.yaml defines)."""
    p = cfg.pipeline
    cells = [(lr, b) for lr in p.learners for b in p.benchmarks]
    cells += [(lr, b) for lr in p.cf_learners for b in p.cf_benchmarks]
    specs = {paths.train_spec(lr, b): train_spec(cfg, lr, b) for lr, b in cells}
    specs |= {paths.evaluate_spec(b): evaluate_spec(cfg, b) for b in p.benchmarks}
    specs |= {paths.tune_spec(b): tune_spec(cfg, b) for b in cfg.tune.benchmarks}
    return specs


def dumps(spec: Spec) -> str:
    """One canonical text per spec (sorted keys), so that equal values give equal files."""
    return json.dumps(spec, indent=1, sort_keys=True) + "\n"


def write_specs(cfg: Config) -> int:
    """Bring ``configs/`` to every cell's spec. All specs are computed (and so validated) before
    anything is written; then only the files whose text changed are replaced, each atomically,
    and the specs of cells that no longer exist are removed. An unchanged file keeps its inode
    and mtime, by which DVC's hash cache knows it, so its cell is not re-run by mistake."""
    specs = {path: dumps(spec) for path, spec in all_specs(cfg).items()}
    for path, text in specs.items():
        if not path.is_file() or path.read_text() != text:
            with atomic_file(path) as tmp:
                tmp.write_text(text)
    for old in paths.CONFIGS.rglob("*.json"):
        if old not in specs:
            old.unlink()
    return len(specs)
