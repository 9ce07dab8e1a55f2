"""A benchmark's episodes: what ``episodify`` writes and what training and evaluation read.

Every benchmark directory holds ``meta.json`` (what the data is and how to model it), the fixed
meta-val and meta-test tasks as Parquet (``val.parquet``, ``test.parquet``) and whatever its
dataset needs to sample meta-train tasks on the fly. A dataset module (named in
:data:`MODULES`) registers an ``episodify`` writer and a loader returning a :class:`TaskSource`.

``meta.json`` also records every other file's SHA-256 and, for a Parquet table, its row count
(``files``); :func:`load_episodes` checks them before a stage does any work, so episodes that
were edited, truncated or partly restored are refused, naming the file and the fix, instead of
scored as they are.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from metalearn import fingerprint
from metalearn.config import Config, dataset_config, parse_benchmark
from metalearn.errors import DataError
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

    def fixed_tasks(self, split: Literal["val", "test", "test_all"]) -> tuple[Batch, Batch]:
        """The benchmark's fixed meta-val or meta-test tasks, identical for every learner; or
        those of :attr:`all_users_split`."""
        ...

    @property
    def all_users_split(self) -> str | None:
        """The split of fixed tasks covering every eligible meta-test user (``"test_all"``: the
        rating benchmarks; its first tasks are the protocol's), scored beside the protocol's;
        ``None`` where there is none (a class attribute will do)."""
        ...


# episodify(section, dataset, setting, raw_dir, out_dir) -> fields for meta.json
Episodify = Callable[[Any, str, str, Path, Path], dict[str, Any]]
Loader = Callable[[Path, dict[str, Any]], TaskSource]
_DATASETS: dict[str, tuple[Episodify, Loader]] = {}

#: The module that registers each dataset (imported on first use: torch-free config loading).
MODULES = {
    "cosmixture": "metalearn.data.synthetic_tasks",
    "alpine": "metalearn.data.synthetic_tasks",
    "jester": "metalearn.data.rating_tasks",
    "movielens100k": "metalearn.data.rating_tasks",
    "movielens1m": "metalearn.data.rating_tasks",
    "omniglot": "metalearn.data.image_tasks",
    "miniimagenet": "metalearn.data.image_tasks",
}
RUNS = tuple(sorted(set(MODULES.values())))  # imported by name: stage code lists them


def register(*datasets: str) -> Callable[[tuple[Episodify, Loader]], None]:
    def add(pair: tuple[Episodify, Loader]) -> None:
        for name in datasets:
            _DATASETS[name] = pair

    return add


def _dataset(name: str) -> tuple[Episodify, Loader]:
    if name not in MODULES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(MODULES)}")
    importlib.import_module(MODULES[name])  # registers its datasets
    return _DATASETS[name]


def episodify(
    cfg: Config, benchmark: str, out_dir: str | Path, raw_dir: str | Path | None = None
) -> dict[str, Any]:
    """Write the episodes of ``benchmark`` to ``out_dir`` (atomically) and return ``meta``.
    ``raw_dir`` holds the dataset's verified downloads (none for synthetic data)."""
    dataset, setting = parse_benchmark(cfg, benchmark)
    write, _ = _dataset(dataset)
    with atomic_dir(out_dir) as tmp:
        meta = {"benchmark": benchmark, "dataset": dataset, "setting": setting}
        meta |= write(dataset_config(cfg, dataset), dataset, setting, Path(raw_dir or "."), tmp)
        meta["files"] = fingerprint.fingerprints(tmp, skip=(META,))
        write_json(tmp / META, meta)
    return meta


def verify(path: str | Path, meta: dict[str, Any]) -> None:
    """Every file ``meta`` lists is in ``path`` as episodify wrote it; a :class:`DataError`
    naming the first that is not, and the fix, otherwise."""
    path = Path(path)
    benchmark = meta.get("benchmark", path.name)
    fix = (
        f"restore them: dvc checkout {path}, or re-create them: dvc repro -f episodify@{benchmark}"
    )
    if "files" not in meta:
        raise DataError(f"{path} was written by an older version (no file digests); {fix}")
    records = {path / name: record for name, record in meta["files"].items()}
    fingerprint.verify(records, f"episodify@{benchmark}", fix)


def load_episodes(path: str | Path, check: bool = True) -> TaskSource:
    """The :class:`TaskSource` of an ``episodify`` output directory, once :func:`verify` has
    checked its files (``check=False``: a stage's worker, whose stage checked them)."""
    path = Path(path)
    meta = read_json(path / META)
    if check:
        verify(path, meta)
    _, load = _dataset(meta["dataset"])
    return load(path, meta)
