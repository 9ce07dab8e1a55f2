"""Each benchmark's best learner in MLflow's model registry: the model evaluate logged in its
run, registered as ``metalearn-<benchmark>`` under the alias ``best``, so that
``mlflow.pyfunc.load_model("models:/metalearn-<benchmark>@best")`` loads the current winner.
The report stands without MLflow: a store that cannot be used, or a run without its model
(results restored from DVC's cache elsewhere), is a warning."""

from __future__ import annotations

import contextlib
import warnings

import mlflow
from mlflow.tracking import MlflowClient

from metalearn import tracking
from metalearn.report.results import Results, best_learner

ALIAS = "best"


def model_name(benchmark: str) -> str:
    return f"metalearn-{benchmark}"


def register_best(results: Results) -> None:
    """Register each benchmark's best learner's model and point the alias ``best`` at it."""
    try:
        tracking.connect()
    except tracking.TrackingError as error:
        warnings.warn(f"best models not registered: {error}", stacklevel=2)
        return
    client = MlflowClient()
    for benchmark, by_learner in results.items():
        learner = best_learner(by_learner)
        run_id, name = by_learner[learner]["mlflow_run_id"], model_name(benchmark)
        try:
            outputs = client.get_run(run_id).outputs
            models = [o.model_id for o in (outputs.model_outputs if outputs else [])]
            if not models:
                raise LookupError(f"run {run_id} has no logged model (run evaluate@{benchmark})")
            with contextlib.suppress(mlflow.exceptions.MlflowException):  # it exists already
                client.create_registered_model(name)
            version = client.create_model_version(
                name, source=f"models:/{models[-1]}", run_id=run_id, model_id=models[-1]
            )
            client.set_registered_model_alias(name, ALIAS, version.version)
        except Exception as error:  # noqa: BLE001 - the report stands without MLflow
            message = f"{learner}'s model on {benchmark} not registered: {error}"
            warnings.warn(message, stacklevel=2)
