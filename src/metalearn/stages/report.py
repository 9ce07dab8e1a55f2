"""Stage report: ``results/summary.json``, ``results/summary.md``, ``results/plots/`` and the
metrics file."""

from __future__ import annotations

from typing import Any

from metalearn.config import Config
from metalearn.report import write_report
from metalearn.stages.cli import Stage


def run(cfg: Config) -> dict[str, Any]:
    return write_report(cfg)


def line(summary: dict[str, Any]) -> str:
    """The best learner of each benchmark and its mean: ``best: jester-shot10=bias 0.2205, ...``."""
    best = []
    for benchmark, learner in summary["best_learner"].items():
        metric = next(k for k in summary[benchmark][learner] if k != "ci")
        best.append(f"{benchmark}={learner} {summary[benchmark][learner][metric]:.4g}")
    return "best: " + ", ".join(best)


STAGE = Stage(run, line=line)
