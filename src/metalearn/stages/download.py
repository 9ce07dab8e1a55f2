"""Stage download@<dataset>: the dataset's official files, verified, in ``data/raw/<dataset>/``."""

from __future__ import annotations

from typing import Any

from metalearn import paths
from metalearn.config import Config, dataset_config
from metalearn.data.download import download_dataset
from metalearn.data.sources import SOURCES
from metalearn.io import atomic_dir, write_json
from metalearn.stages.cli import Stage


def run(cfg: Config, dataset: str) -> dict[str, Any]:
    """Fetch and verify the dataset's official files into ``data/raw/<dataset>/`` (from
    ``METALEARN_DATA_MIRROR`` first when set). A synthetic family has nothing to fetch: its
    folder only records that, so every episodify stage depends on a download stage alike."""
    section = dataset_config(cfg, dataset)
    if dataset not in SOURCES:
        with atomic_dir(paths.raw(dataset)) as tmp:
            write_json(tmp / "manifest.json", {"generated": dataset})
        return {"generated": dataset}
    parts = getattr(section.download, "parts", None)
    return download_dataset(dataset, paths.raw(dataset), parts=parts)


STAGE = Stage(run, ("dataset",))
