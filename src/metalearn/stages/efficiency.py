"""Stage efficiency: time and memory against K, gradient accuracy and peer throughput
(benchmarks/README.md "Efficiency")."""

from __future__ import annotations

from typing import Any

from metalearn import paths, tracking
from metalearn.config import Config, flatten
from metalearn.config.learners import check_learners
from metalearn.efficiency import run_stage
from metalearn.io import write_json
from metalearn.stages.cli import Stage


def run(cfg: Config) -> dict[str, Any]:
    check_learners(cfg)  # its variants name learners
    found = run_stage(cfg.efficiency, paths.EFFICIENCY)
    numbers = {k: float(v) for k, v in flatten(found["targets"]).items() if _is_number(v)}
    run_id = tracking.efficiency_run(cfg, numbers, paths.EFFICIENCY)
    write_json(paths.EFFICIENCY_JSON, {**found, "mlflow_run_id": run_id})
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


STAGE = Stage(run)
