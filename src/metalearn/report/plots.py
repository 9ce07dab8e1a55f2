"""The report's figures, ``results/plots/``: per benchmark a bar chart of the meta-test means
and the meta-validation curves, and their upload to the benchmark's MLflow runs; the report's
only use of matplotlib.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from metalearn import paths, tracking  # noqa: E402
from metalearn.algorithms import META_LEARNERS
from metalearn.config import Config, learners_of  # noqa: E402
from metalearn.report.results import Results  # noqa: E402


def bar_chart(benchmark: str, by_learner: dict[str, dict[str, Any]], path: Path) -> None:
    learners = list(by_learner)
    means = [by_learner[name]["mean"] for name in learners]
    cis = [by_learner[name]["ci"] for name in learners]
    metric = by_learner[learners[0]]["metric"]
    colors = ["#4c72b0" if name in META_LEARNERS else "#999999" for name in learners]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(learners, means, yerr=cis, capsize=4, color=colors)
    ax.set_ylabel(f"meta-test {metric}")
    ax.set_title(f"{benchmark} (grey: baselines)")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_chart(cfg: Config, benchmark: str, path: Path, root: Path = Path()) -> None:
    """Meta-validation metric against iteration, one line per learner (the mean over its
    training seeds); a learner without meta-training (scratch, bias) is a dashed level."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    column = "meta_val"
    for learner in learners_of(cfg, benchmark):
        curve = pl.read_csv(root / paths.train_curve(learner, benchmark))
        column = next(c for c in curve.columns if c.startswith("meta_val_"))
        points = curve.drop_nulls(column).group_by("iteration").agg(pl.col(column).mean())
        points = points.sort("iteration")
        if points.height == 1 and points["iteration"][0] == 0:
            ax.axhline(points[column][0], linestyle="--", color="#999999", label=learner)
        else:
            ax.plot(points["iteration"], points[column], marker=".", label=learner)
    ax.set_xlabel("meta-training iteration")
    ax.set_ylabel(column.replace("_", " "))
    ax.set_title(benchmark)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _log_plots(results: Results, plots: Path) -> None:
    """Each benchmark's plots into each of its MLflow runs; a run the tracking store no longer
    has (results restored from DVC's cache elsewhere) is skipped with a warning."""
    try:
        tracking.connect()
    except tracking.TrackingError as error:  # the report stands without MLflow
        warnings.warn(f"plots not logged to MLflow: {error}", stacklevel=2)
        return
    for benchmark, by_learner in results.items():
        files = [plots / f"{benchmark}-test.png", plots / f"{benchmark}-curves.png"]
        for learner, r in by_learner.items():
            try:
                tracking.log_to_run(r["mlflow_run_id"], {}, artifacts=files)
            except Exception as error:  # noqa: BLE001 - the report stands without MLflow
                message = f"plots not logged to the run of {learner}-{benchmark}: {error}"
                warnings.warn(message, stacklevel=2)
