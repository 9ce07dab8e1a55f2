"""The fan-out above the training loop: a cell's seeds one after another, in worker processes
(``train.workers``) or on torchrun ranks (``train.processes``), and a tune stage's grid points.

A meta-training on the CF and synthetic models is a long chain of small operations: one process
keeps one core busy and no more (``train.threads: 1`` is the fastest setting there). Independent
trainings are the parallelism that pays on a few cores. Each worker is a fresh ``spawn``-ed
interpreter (no fork of a process that holds torch's thread pools) that loads the benchmark's
episodes once and runs :func:`metalearn.training.meta_train`; the numbers are those of the same
jobs run one after another (``tests/test_parallel.py``). A worker dies with the process that
started it: an exception or a signal there terminates the pool.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

import torch

from metalearn import paths
from metalearn.algorithms import REGISTRY
from metalearn.cell import TrainCell
from metalearn.data.episodes import TaskSource, load_episodes
from metalearn.distributed import launch
from metalearn.lifetime import die_with_parent
from metalearn.runtime import torch_runtime
from metalearn.training import MetricsCallback, TrainResult, meta_train, training_seeds


def meta_train_seeds(
    cell: TrainCell,
    source: TaskSource,
    device: torch.device,
    on_metrics: MetricsCallback | None = None,
) -> list[TrainResult]:
    """:func:`metalearn.training.meta_train` once per training seed (:func:`training_seeds`),
    ``train.workers`` at once, or each on ``train.processes`` torchrun ranks. The first seed's
    metrics go to ``on_metrics`` under their names, a later seed's as ``<name>/seed<seed>``:
    live with one worker, as each seed ends otherwise."""
    seeds = training_seeds(cell)
    cells = [dataclasses.replace(cell, seed=s) for s in seeds]

    def logger(i: int) -> MetricsCallback | None:
        if on_metrics is None or i == 0:
            return on_metrics
        suffix = f"/seed{seeds[i]}"
        return lambda step, row: on_metrics(step, {k + suffix: v for k, v in row.items()})

    if cell.processes > 1 and REGISTRY[cell.learner].meta_trained:
        results = launch(cell)  # torchrun: cell.processes ranks share each meta-batch
        for i, result in enumerate(results):
            _replay(logger(i), result)
        return results
    if cell.workers <= 1 or len(seeds) == 1:
        return [meta_train(c, source, device, logger(i)) for i, c in enumerate(cells)]
    return train_all(cells, cell.workers, on_done=lambda i, result: _replay(logger(i), result))


def _replay(log: MetricsCallback | None, result: TrainResult) -> None:
    """Send a finished run's curve to ``log`` (a seed that ran in another process)."""
    for row in result.curve if log is not None else ():
        log(row["iteration"], {k: v for k, v in row.items() if k != "iteration"})


def train_all(
    jobs: Sequence[TrainCell],
    workers: int,
    source: Any = None,
    device: Any = None,
    recover: tuple[type[Exception], ...] = (),
    on_done: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """The :class:`metalearn.training.TrainResult` of every job (a cell to meta-train), in
    order.

    ``workers == 1`` (or one job) runs them here, on ``source`` and ``device``; otherwise
    ``min(workers, len(jobs))`` processes run them. An exception of a ``recover`` type (a
    tuning point that diverged) becomes that job's result; any other stops the rest and is
    raised. ``on_done(index, result)`` is called as each job ends (in completion order).
    """
    if workers <= 1 or len(jobs) <= 1:
        results = []
        for i, job in enumerate(jobs):
            results.append(_train(job, source, device, recover))
            if on_done is not None:
                on_done(i, results[-1])
        return results
    context = multiprocessing.get_context("spawn")
    out: list[Any] = [None] * len(jobs)
    pool = context.Pool(min(workers, len(jobs)), initializer=die_with_parent)
    try:
        calls = [(i, job, recover) for i, job in enumerate(jobs)]
        for i, result in pool.imap_unordered(_train_in_worker, calls):
            out[i] = result
            if on_done is not None:
                on_done(i, result)
        pool.close()
    finally:
        pool.terminate()  # a failure or a signal here: no worker trains on
        pool.join()
    return out


def _train(job: TrainCell, source: Any, device: Any, recover: tuple[type[Exception], ...]) -> Any:
    try:
        return meta_train(job, source, device)
    except recover as error:
        return error


def _train_in_worker(call: tuple[int, TrainCell, tuple[type[Exception], ...]]) -> tuple[int, Any]:
    index, job, recover = call
    device = torch_runtime(job)  # train.threads in this process, too
    return index, _train(job, _episodes(job.benchmark), device, recover)


@functools.cache
def _episodes(benchmark: str) -> Any:
    return load_episodes(paths.episodes(benchmark), check=False)  # the stage checked them
