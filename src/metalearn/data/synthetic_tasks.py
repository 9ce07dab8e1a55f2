"""Episodes of the synthetic regression families (CosMixture, Alpine).

Files: ``functions.parquet`` (every function's parameters and its split), ``val.parquet`` and
``test.parquet`` (fixed tasks, standardised targets). Meta-train tasks are sampled on the fly:
a meta-train function chosen uniformly, fresh support and query points. Targets everywhere are
standardised with the mean and standard deviation of the meta-train functions' outputs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import polars as pl
import torch

from metalearn.data import synthetic as syn
from metalearn.data.episodes import Batch, register

FUNCTIONS = "functions.parquet"


def episodify(section: Any, dataset: str, setting: str, raw: Path, out: Path) -> dict[str, Any]:
    del raw  # generated, not downloaded
    family = syn.make_family(dataset, section)
    splits = syn.split_functions(family, dataclasses.asdict(section.functions), section.seed)
    points = torch.Generator().manual_seed(section.seed + 1)  # a stream apart from the functions
    mean, std = syn.target_stats(family, splits["train"], points)
    shots = section.settings[setting].shots
    queries = section.settings[setting].queries
    for split in ("val", "test"):
        support, query = syn.sample_tasks(family, splits[split], shots, queries, points)
        syn.write_tasks(
            out / f"{split}.parquet",
            syn.standardize(support, mean, std),
            syn.standardize(query, mean, std),
        )
    frames = [
        pl.DataFrame(fn.numpy(), schema=[f"p{i}" for i in range(fn.shape[1])]).with_columns(
            split=pl.lit(split), function=pl.int_range(pl.len())
        )
        for split, fn in splits.items()
    ]
    pl.concat(frames).write_parquet(out / FUNCTIONS)
    family_cfg = {k: v for k, v in dataclasses.asdict(section).items() if k != "settings"}
    return {
        "kind": "regression",
        "family": family_cfg,
        "dim": family.dim,
        "shots": shots,
        "queries": queries,
        "target_mean": mean,
        "target_std": std,
        "functions": {split: int(fn.shape[0]) for split, fn in splits.items()},
    }


class SyntheticSource:
    architecture: Literal["mlp"] = "mlp"
    loss_kind: Literal["mse"] = "mse"
    all_users_split: str | None = None  # only the rating benchmarks score every test user

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = path, meta
        self.family = syn.make_family(meta["dataset"], meta["family"])
        table = pl.read_parquet(path / FUNCTIONS).filter(pl.col("split") == "train")
        self.train_functions = torch.from_numpy(table.select(pl.col(r"^p\d+$")).to_numpy().copy())
        self.in_dim, self.out_dim = meta["dim"], 1

    def sample_train(self, n_tasks: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        pick = torch.randint(len(self.train_functions), (n_tasks,), generator=generator)
        support, query = syn.sample_tasks(
            self.family,
            self.train_functions[pick],
            self.meta["shots"],
            self.meta["queries"],
            generator,
            dtype=torch.float32,
        )
        mean, std = self.meta["target_mean"], self.meta["target_std"]
        return syn.standardize(support, mean, std), syn.standardize(query, mean, std)

    def fixed_tasks(self, split: Literal["val", "test"]) -> tuple[Batch, Batch]:
        return syn.read_tasks(self.path / f"{split}.parquet", dtype=torch.float32)


register("cosmixture", "alpine")((episodify, SyntheticSource))
