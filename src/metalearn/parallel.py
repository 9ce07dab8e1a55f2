"""Independent meta-trainings at once, one process each: a train stage's seeds, a tune stage's
grid points (``train.workers``).

A meta-training on the CF and synthetic models is a long chain of small operations: one process
keeps one core busy and no more (``train.threads: 1`` is the fastest setting there). Independent
trainings are the parallelism that pays on a few cores. Each worker is a fresh ``spawn``-ed
interpreter (no fork of a process that holds torch's thread pools) that loads the benchmark's
episodes once and runs :func:`metalearn.training.meta_train`; the numbers are those of the same
jobs run one after another (``tests/test_parallel.py``).
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any

from metalearn import paths
from metalearn.spec import TrainCell


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
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        futures = {pool.submit(_train_in_worker, job, recover): i for i, job in enumerate(jobs)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise future.exception()
                out[futures[future]] = future.result()
                if on_done is not None:
                    on_done(futures[future], out[futures[future]])
    return out


def _train(job: TrainCell, source: Any, device: Any, recover: tuple[type[Exception], ...]) -> Any:
    from metalearn.training import meta_train

    try:
        return meta_train(job, source, device)
    except recover as error:
        return error


def _train_in_worker(job: TrainCell, recover: tuple[type[Exception], ...]) -> Any:
    from metalearn.stages import torch_runtime

    device = torch_runtime(job)  # train.threads in this process, too
    return _train(job, _episodes(job.benchmark), device, recover)


@functools.cache
def _episodes(benchmark: str) -> Any:
    from metalearn.data.episodes import load_episodes

    return load_episodes(paths.episodes(benchmark))
