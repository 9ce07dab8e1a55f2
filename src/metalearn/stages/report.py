"""Stage report: ``results/summary.json``, ``results/summary.md``, ``results/plots/`` and the
metrics file."""

from __future__ import annotations

from typing import Any

from metalearn.config import Config
from metalearn.report import write_report
from metalearn.stages.cli import Stage


def run(cfg: Config) -> dict[str, Any]:
    return write_report(cfg)


STAGE = Stage(run)
