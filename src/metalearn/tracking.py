"""MLflow wiring: one run per train stage; the evaluate stage adds its metrics to that run.

Store: ``MLFLOW_TRACKING_URI`` when set (e.g. a tracking server), else a SQLite database
``mlflow.db`` with artifacts under ``mlruns/`` at the repository root. The root is taken from
``DVC_ROOT`` and, for queued or temporary experiments (which DVC runs in a copy under
``<repo>/.dvc/tmp/``), from the repository that holds that copy, so every run lands in one store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from metalearn.config import Config, flatten

EXPERIMENT = "metalearn"


def project_root() -> Path:
    """The repository whose store the runs go to (see the module docstring)."""
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()
    if ".dvc" in root.parts:  # <repo>/.dvc/tmp/exps/...: an experiment's temporary copy
        root = Path(*root.parts[: root.parts.index(".dvc")])
    return root


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def _experiment_id() -> str:
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = None if "MLFLOW_TRACKING_URI" in os.environ else project_root() / "mlruns"
    try:
        return client.create_experiment(
            EXPERIMENT, artifact_location=artifacts.as_uri() if artifacts else None
        )
    except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel stage
        return client.get_experiment_by_name(EXPERIMENT).experiment_id


def flat_params(spec: Mapping[str, Any], episodes_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The values that shape this run (its resolved spec, :mod:`metalearn.spec`) flattened to
    dotted keys; the data's come from the episodes it trained on (their ``meta.json``)."""
    cell = {k: v for k, v in spec.items() if k not in ("learner", "benchmark", "dataset")}
    return flatten({**cell, "data": dict(episodes_meta)})


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class MetricBuffer:
    """Per-iteration metrics, sent to MLflow in batches (one write per ``every`` iterations)."""

    def __init__(self, run_id: str, every: int = 100) -> None:
        self.client, self.run_id, self.every = MlflowClient(), run_id, every
        self.pending: list[Metric] = []

    def __call__(self, step: int, values: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in values.items()]
        if step % self.every == 0:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self.pending), 1000):  # MLflow's cap per batch
            self.client.log_batch(self.run_id, metrics=self.pending[i : i + 1000])
        self.pending = []


@contextlib.contextmanager
def train_run(
    spec: Mapping[str, Any], learner: str, benchmark: str, episodes_meta: Mapping[str, Any]
) -> Iterator[MetricBuffer]:
    """An MLflow run for one train stage: params (the cell's resolved spec), tags and system
    metrics; yields the metric logger. An exception marks the run FAILED (and propagates)."""
    tags = {
        "learner": learner,
        "benchmark": benchmark,
        "dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        "mlflow.source.git.commit": _git_revision(),
    }
    with mlflow.start_run(
        experiment_id=_experiment_id(),
        run_name=f"{learner}-{benchmark}",
        tags=tags,
        log_system_metrics=True,
    ) as run:
        mlflow.log_params(flat_params(spec, episodes_meta))
        buffer = MetricBuffer(run.info.run_id)
        try:
            yield buffer
        finally:
            buffer.flush()


def log_to_run(run_id: str, metrics: Mapping[str, float], artifacts: list[Path] = ()) -> None:
    """Add evaluation metrics and files to a finished run without reopening it: reopening and
    ending it again would move its end time (the UI's duration) to the evaluation."""
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    for path in artifacts:
        client.log_artifact(run_id, str(path))


def efficiency_run(cfg: Config, metrics: Mapping[str, float], artifacts: Path) -> str:
    """One MLflow run for the efficiency stage: its params, the targets' numbers, its files."""
    tags = {
        "stage": "efficiency",
        "dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        "mlflow.source.git.commit": _git_revision(),
    }
    with mlflow.start_run(experiment_id=_experiment_id(), run_name="efficiency", tags=tags) as run:
        mlflow.log_params(flatten({"efficiency": dataclasses.asdict(cfg.efficiency)}))
        mlflow.log_metrics(dict(metrics))
        mlflow.log_artifacts(str(artifacts), artifact_path="efficiency")
        return run.info.run_id
