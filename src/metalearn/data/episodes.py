"""A benchmark's episodes: what ``episodify`` writes and what training and evaluation read.

Every benchmark directory holds ``meta.json`` (what the data is and how to model it), the fixed
meta-val and meta-test tasks as Parquet (``val.parquet``, ``test.parquet``) and whatever its
dataset needs to sample meta-train tasks on the fly. A dataset module registers an
``episodify`` writer and a loader returning a :class:`TaskSource`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from metalearn.config import Config, dataset_config, parse_benchmark
from metalearn.io import atomic_dir, read_json, write_json

Batch = tuple[torch.Tensor, torch.Tensor]  # (x, y) with a leading task dimension
META = "meta.json"


class TaskSource(Protocol):
    """Tasks of one benchmark, as tensors with a leading task dimension."""

    meta: dict[str, Any]
    #: the model family and its loss: ("mlp", "mse") for regression, ("conv4", "cross_entropy")
    architecture: Literal["mlp", "conv4"]
    loss_kind: Literal["mse", "cross_entropy"]

    def sample_train(self, n_tasks: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        """``n_tasks`` fresh meta-train tasks ``(support, query)`` from ``generator``."""
        ...

    def fixed_tasks(self, split: Literal["val", "test"]) -> tuple[Batch, Batch]:
        """The benchmark's fixed meta-val or meta-test tasks, identical for every learner."""
        ...


Episodify = Callable[[Any, str, str, Path], dict[str, Any]]
Loader = Callable[[Path, dict[str, Any]], TaskSource]
_DATASETS: dict[str, tuple[Episodify, Loader]] = {}


def register(*datasets: str) -> Callable[[tuple[Episodify, Loader]], None]:
    def add(pair: tuple[Episodify, Loader]) -> None:
        for name in datasets:
            _DATASETS[name] = pair

    return add


def _dataset(name: str) -> tuple[Episodify, Loader]:
    from metalearn.data import synthetic_tasks  # noqa: F401  (registers itself)

    if name not in _DATASETS:
        raise ValueError(f"no episode writer for dataset {name!r}; known: {', '.join(_DATASETS)}")
    return _DATASETS[name]


def episodify(cfg: Config, benchmark: str, out_dir: str | Path) -> dict[str, Any]:
    """Write the episodes of ``benchmark`` to ``out_dir`` (atomically) and return ``meta``."""
    dataset, setting = parse_benchmark(cfg, benchmark)
    write, _ = _dataset(dataset)
    with atomic_dir(out_dir) as tmp:
        meta = {"benchmark": benchmark, "dataset": dataset, "setting": setting}
        meta |= write(dataset_config(cfg, dataset), dataset, setting, tmp)
        write_json(tmp / META, meta)
    return meta


def load_episodes(path: str | Path) -> TaskSource:
    """The :class:`TaskSource` of an ``episodify`` output directory."""
    path = Path(path)
    meta = read_json(path / META)
    _, load = _dataset(meta["dataset"])
    return load(path, meta)
