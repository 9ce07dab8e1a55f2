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
import sqlite3
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import sqlalchemy
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, SourceType
from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_COMMIT,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
)

from metalearn.config import flatten
from metalearn.errors import TrackingError

if TYPE_CHECKING:
    from metalearn.config import Config

PROJECT = "metalearn"
#: What the MLflow UI (3.x) opens an experiment on: training runs, not its GenAI pages.
KIND = {"mlflow.experimentKind": "custom_model_development"}
# A tracking server that does not answer fails the stage in seconds: MLflow's default is
# several retries with backoff (minutes of silence, then a traceback).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
# MLflow's artifact progress bars only where someone watches
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", str(sys.stderr.isatty()).lower())


def store_patience() -> float:
    """Seconds a stage waits for a SQLite store another process holds locked (a parallel stage,
    ``mlflow ui`` writing, a backup): ``METALEARN_STORE_SECONDS``, 30 by default."""
    return float(os.environ.get("METALEARN_STORE_SECONDS", "30"))


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
def _wait_while_locked(connection: Any, _record: Any) -> None:
    # SQLite's own busy handler retries a locked database until the timeout (Python's
    # default is 5 s, and MLflow sets none): a busy store is waited for, then one line
    if isinstance(connection, sqlite3.Connection):
        connection.execute(f"PRAGMA busy_timeout = {int(store_patience() * 1000)}")


def dvc_experiment() -> str:
    """The DVC experiment this stage runs in (``dvc exp run`` sets it), else ``workspace``."""
    return os.environ.get("DVC_EXP_NAME") or "workspace"


def experiment_name() -> str:
    """One MLflow experiment per DVC experiment: ``metalearn/<dvc experiment>``."""
    return f"{PROJECT}/{dvc_experiment()}"


def project_root() -> Path:
    """The repository whose store the runs go to (see the module docstring)."""
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()
    if ".dvc" in root.parts:  # <repo>/.dvc/tmp/exps/...: an experiment's temporary copy
        root = Path(*root.parts[: root.parts.index(".dvc")])
    return root


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def _busy(error: BaseException) -> bool:
    return "database is locked" in str(error)


def _fix(uri: str, error: BaseException | None = None) -> str:
    """What to do about a store that cannot be used, for its kind: a SQLite file (busy, or
    damaged) or a server."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        if error is not None and _busy(error):
            return (
                f"another process held the SQLite file {path} locked for "
                f"{store_patience():g} s (fuser {path} names it): let it finish and re-run, "
                "or wait longer with METALEARN_STORE_SECONDS"
            )
        return (
            f"the SQLite file {path} is damaged, locked or not writable: move it aside "
            f"(mv {path} {path}.broken) for a fresh store, restore it from a backup, or point "
            "MLFLOW_TRACKING_URI at another store"
        )
    return (
        f"start that server, point MLFLOW_TRACKING_URI at one that runs or at a file store "
        f"(sqlite:///path/mlflow.db), or unset it for the project's mlflow.db (it is {uri!r})"
    )


def error_log() -> Path:
    """Where the full text of a tracking failure goes (the console gets one line)."""
    return project_root() / "mlflow-error.log"


def failure(error: BaseException) -> TrackingError:
    """``error`` (raised while tracking) as one line naming the store, the fix for its kind
    and the log file that holds its full traceback."""
    if isinstance(error, TrackingError):
        return error
    log = error_log()
    with contextlib.suppress(OSError), open(log, "a") as f:
        f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {tracking_uri()}\n")
        f.write("".join(traceback.format_exception(error)))
    uri = tracking_uri()
    return TrackingError(
        f"MLflow store {uri} cannot be used ({type(error).__name__}: {_first_line(error)}): "
        f"{_fix(uri, error)} (full error in {log})"
    )


def _check_server(uri: str) -> None:
    """An http(s) store must answer its health check within seconds."""
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).close()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(
            f"MLflow tracking server {uri} does not answer ({reason}): {_fix(uri)}"
        ) from None


def connect() -> str:
    """Point MLflow at :func:`tracking_uri` (a server must answer first); return the URI."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def open_store() -> None:
    """Connect and open the store once (for SQLite: SQLAlchemy, MLflow's tables), creating
    nothing but the store itself. Raises :class:`TrackingError` if it cannot be used."""
    connect()
    try:
        MlflowClient().get_experiment_by_name(experiment_name())
    except Exception as error:  # SQLAlchemy's, MLflow's: one line here, the whole in the log
        raise failure(error) from None


def experiment_id() -> str:
    """The id of this DVC experiment's MLflow experiment, created (marked as holding training
    runs) on first use. Raises :class:`TrackingError` if the store cannot be used."""
    connect()
    name = experiment_name()
    try:
        client = MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        artifacts = None if "MLFLOW_TRACKING_URI" in os.environ else project_root() / "mlruns"
        tags = {**KIND, "dvc_experiment": dvc_experiment()}
        try:
            location = artifacts.as_uri() if artifacts else None
            return client.create_experiment(name, artifact_location=location, tags=tags)
        except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel stage
            return client.get_experiment_by_name(name).experiment_id
    except TrackingError:
        raise
    except Exception as error:  # a bad scheme, an unwritable path, a server error, ...
        raise failure(error) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def describe(error: BaseException) -> str:
    """One line for a failure while tracking (:func:`failure`'s)."""
    return str(failure(error))


def _close_killed_runs(
    client: MlflowClient, experiment_id: str, learner: str, benchmark: str
) -> list[str]:
    """Mark KILLED the runs of this cell still RUNNING: a stage killed mid-run (kill -9, a lost
    machine) could not end its run; DVC runs one stage of a cell at a time, so none is live."""
    query = (
        f"tags.learner = '{learner}' and tags.benchmark = '{benchmark}' "
        "and attributes.status = 'RUNNING'"
    )
    stale = client.search_runs([experiment_id], filter_string=query)
    for run in stale:
        client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in stale]


def _revision_tags(script: str) -> dict[str, str]:
    """Where a run comes from: the stage script, the DVC experiment, its baseline commit and the
    checkout's (the UI's Source column)."""
    commit = _git_revision()
    return {
        "dvc_experiment": dvc_experiment(),
        "dvc_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV") or commit,
        MLFLOW_GIT_COMMIT: commit,
        MLFLOW_SOURCE_NAME: script,
        MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.LOCAL),
    }


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

    def __call__(
        self, step: int, values: Mapping[str, float], timestamp: int | None = None
    ) -> None:
        now = timestamp if timestamp is not None else int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in values.items()]
        if step % self.every == 0:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self.pending), 1000):  # MLflow's cap per batch
            self.client.log_batch(self.run_id, metrics=self.pending[i : i + 1000])
        self.pending = []


def open_train_run(
    experiment: str,
    params: Mapping[str, Any],
    learner: str,
    benchmark: str,
    start_time: int,
    dataset: Mapping[str, str] | None = None,
) -> str:
    """Start one train stage's run (``params``, tags, its source, its ``dataset`` input: the
    fields of :class:`mlflow.entities.Dataset`; system metrics when
    ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true``) at ``start_time`` (ms), closing this cell's
    runs left RUNNING; its id."""
    client = MlflowClient()
    _close_killed_runs(client, experiment, learner, benchmark)
    tags = {"learner": learner, "benchmark": benchmark, **_revision_tags("pipeline/train.py")}
    run = client.create_run(
        experiment,
        start_time=start_time,
        tags=tags,
        run_name=f"{learner}-{benchmark}@{dvc_experiment()}",
    )
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    if dataset is not None:
        context = InputTag(MLFLOW_DATASET_CONTEXT, "train")
        client.log_inputs(run.info.run_id, [DatasetInput(Dataset(**dataset), tags=[context])])
    if MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get():
        # resumed through the fluent API for its system-metrics monitor (create_run has none)
        mlflow.start_run(run_id=run.info.run_id, log_system_metrics=True)
    return run.info.run_id


def end_train_run(run_id: str, status: str, end_time: int) -> None:
    """End the run opened by :func:`open_train_run` as ``status`` at ``end_time`` (ms)."""
    if mlflow.active_run() is not None:
        mlflow.end_run(status)  # stops the system-metrics monitor
    MlflowClient().set_terminated(run_id, status=status, end_time=end_time)


def log_metrics(run_id: str, metrics: Mapping[str, float], timestamp: int) -> None:
    if metrics:
        batch = [Metric(k, float(v), timestamp, 0) for k, v in metrics.items()]
        MlflowClient().log_batch(run_id, metrics=batch)


def log_to_run(run_id: str, metrics: Mapping[str, float], artifacts: list[Path] = ()) -> None:
    """Add evaluation metrics and files to a finished run without reopening it: reopening and
    ending it again would move its end time (the UI's duration) to the evaluation."""
    connect()
    client = MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    for path in artifacts:
        client.log_artifact(run_id, str(path))


def efficiency_run(cfg: Config, metrics: Mapping[str, float], artifacts: Path) -> str:
    """One MLflow run for the efficiency stage: its params, the targets' numbers, its files."""
    tags = {"stage": "efficiency", **_revision_tags("pipeline/efficiency.py")}
    run_name = f"efficiency@{dvc_experiment()}"
    with mlflow.start_run(experiment_id=experiment_id(), run_name=run_name, tags=tags) as run:
        mlflow.log_params(flatten({"efficiency": dataclasses.asdict(cfg.efficiency)}))
        mlflow.log_metrics(dict(metrics))
        mlflow.log_artifacts(str(artifacts), artifact_path="efficiency")
        return run.info.run_id
