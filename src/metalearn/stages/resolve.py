"""Stage resolve: validate all of ``params.yaml`` and write one file per cell under ``configs/``."""

from __future__ import annotations

from typing import Any

from metalearn import paths
from metalearn.config import Config
from metalearn.spec import write_specs
from metalearn.stages.cli import Stage


def run(cfg: Config) -> dict[str, Any]:
    """Write every cell's file (``cfg`` was validated on loading)."""
    return {"specs": write_specs(cfg), "folder": str(paths.CONFIGS)}


STAGE = Stage(run)
