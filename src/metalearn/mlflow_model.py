"""A trained learner as an MLflow model, as meta-testing uses it: loaded with
``mlflow.pyfunc.load_model("runs:/<run id>/model")``, it adapts to each task's support set with
the learner's inner loop (its meta-test K) and predicts the task's query inputs, from the first
training seed's meta-parameters (the checkpoint's ``params``; meta-test also scores the others).

    model.predict({"support_x": sx, "support_y": sy, "query_x": qx})  # a leading task axis

Inputs are a benchmark's task tensors as NumPy arrays (``TaskSource.fixed_tasks``: item ids for
the rating benchmarks, standardised features for the synthetic ones, normalised images); the
output is the query predictions (ratings on [0, 1], standardised targets, or class logits).

The model is "models from code" (this file is its code, no pickled object): the directory holds
the train stage's checkpoint and what rebuilding the network needs (the cell, the meta-test K
and the benchmark's shape: its dimensions and, for ratings, the item features), as tensors and
plain values read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import torch
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from metalearn.cell import TrainCell
from metalearn.training import Task, build_learner

#: What the networks' constructors read from a task source (the rest is its data).
SHAPE = (
    "architecture",
    "loss_kind",
    "in_dim",
    "out_dim",
    "n_items",
    "features",
    "mean_rating",
    "n_classes",
    "in_channels",
    "image_size",
)
REQUIREMENTS = ["torch", "numpy", "mlflow"]  # and this project (pip install -e .)


class MetaLearnerModel(PythonModel):
    """The pyfunc model: :meth:`predict` adapts and predicts, task by task in one batch."""

    # its input, a dict of arrays, is outside MLflow's type-hint validation (which would wrap
    # predict and print its advice on every load)
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        checkpoint = torch.load(context.artifacts["checkpoint"], weights_only=True)
        described = torch.load(context.artifacts["task"], weights_only=True)
        cell = TrainCell.from_dict(described["cell"])
        shape = SimpleNamespace(**described["shape"])
        self.task = Task.build(cell.model, shape, cell.learner)
        self.learner = build_learner(cell, described["steps"], checkpoint["fitted"])
        self.params = checkpoint["params"]

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        """``model_input``: ``support_x``, ``support_y``, ``query_x`` (arrays with a leading task
        axis); the query predictions, a NumPy array."""
        x, y = (torch.as_tensor(model_input[k]) for k in ("support_x", "support_y"))
        support, query_x = (x, y), torch.as_tensor(model_input["query_x"])
        with torch.no_grad():
            adapted = self.learner.batched_adapt(self.task.loss_fn, self.params, support)
            return torch.func.vmap(self.task.predict)(adapted, query_x).numpy()


def log_model(run_id: str, cell: TrainCell, steps: int, checkpoint: Path, source: Any) -> str:
    """Log ``checkpoint`` (``cell``'s, scored with ``steps`` inner steps on ``source``'s tasks)
    as the MLflow model ``model`` of the run ``run_id``; its model URI."""
    shape = {name: getattr(source, name) for name in SHAPE if hasattr(source, name)}
    # the model belongs to the run's experiment (where runs:/<id>/model looks for it)
    mlflow.set_experiment(experiment_id=MlflowClient().get_run(run_id).info.experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        task = Path(tmp) / "task.pt"
        torch.save({"cell": cell.to_dict(), "steps": steps, "shape": shape}, task)
        info = mlflow.models.Model.log(
            artifact_path=None,
            name="model",
            flavor=mlflow.pyfunc,
            python_model=__file__,
            artifacts={"checkpoint": str(checkpoint), "task": str(task)},
            pip_requirements=REQUIREMENTS,
            run_id=run_id,
        )
    return info.model_uri


mlflow.models.set_model(MetaLearnerModel())  # the model MLflow takes when it runs this file
