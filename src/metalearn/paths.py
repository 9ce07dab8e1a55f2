"""Where each stage reads and writes, relative to the repository root.

dvc.yaml names the same paths; ``tests/test_dvc_yaml.py`` checks that the two agree.
"""

from __future__ import annotations

from pathlib import Path


def raw(dataset: str) -> Path:
    return Path("data/raw") / dataset


def episodes(benchmark: str) -> Path:
    return Path("data/episodes") / benchmark


CODE = Path("code")  # stage code: one manifest per stage script (metalearn.code_manifest)
CONFIGS = Path("configs")  # stage resolve: one resolved spec per cell (metalearn.spec)


def train_spec(learner: str, benchmark: str) -> Path:
    return CONFIGS / "train" / f"{run_name(learner, benchmark)}.json"


def evaluate_spec(benchmark: str) -> Path:
    return CONFIGS / "evaluate" / f"{benchmark}.json"


def tune_spec(benchmark: str) -> Path:
    return CONFIGS / "tune" / f"{benchmark}.json"


def run_name(learner: str, benchmark: str) -> str:
    return f"{learner}-{benchmark}"


def models(benchmark: str) -> Path:
    """A benchmark's trained parameters, one file per learner: evaluate@<benchmark> depends on
    the folder, so it follows every learner's train stage."""
    return Path("models") / benchmark


def model(learner: str, benchmark: str) -> Path:
    return models(benchmark) / f"{learner}.pt"


def train_metrics(learner: str, benchmark: str) -> Path:
    return Path("results/train") / f"{run_name(learner, benchmark)}.json"


def train_curve(learner: str, benchmark: str) -> Path:
    return Path("results/curves") / f"{run_name(learner, benchmark)}.csv"


def eval_metrics(benchmark: str) -> Path:
    """Every learner's meta-test mean and interval on one benchmark: ``{learner: {...}}``."""
    return Path("results/eval") / f"{benchmark}.json"


def eval_per_task_dir(benchmark: str) -> Path:
    return Path("results/eval") / benchmark


def eval_per_task(learner: str, benchmark: str) -> Path:
    return eval_per_task_dir(benchmark) / f"{learner}.parquet"


def eval_per_task_all_users(learner: str, benchmark: str) -> Path:
    """Per-task scores on every eligible meta-test user (collaborative filtering), beside the
    protocol's first ``eval.tasks`` tasks of :func:`eval_per_task`."""
    return eval_per_task_dir(benchmark) / "all-users" / f"{learner}.parquet"


SUMMARY_JSON = Path("results/summary.json")
METRICS_JSON = Path("results/metrics.json")  # the one DVC metrics file: numbers only
SUMMARY_MD = Path("results/summary.md")
PLOTS = Path("results/plots")


def scores_plot(benchmark: str) -> Path:
    """The report's bar chart of a benchmark's meta-test scores."""
    return PLOTS / f"{benchmark}-test.png"


def curves_plot(benchmark: str) -> Path:
    """The report's meta-val curves of a benchmark."""
    return PLOTS / f"{benchmark}-curves.png"


TUNING = Path("results/tuning")  # the tune stage's sweeps


def tuning_csv(benchmark: str) -> Path:
    return TUNING / f"{benchmark}.csv"


def tuning_json(benchmark: str) -> Path:
    return TUNING / f"{benchmark}.json"


EFFICIENCY = Path("results/efficiency")  # CSVs and plots of the efficiency stage
EFFICIENCY_JSON = Path("results/efficiency.json")  # its targets, as DVC metrics


def code_manifest(script: str) -> Path:
    """The manifest of ``pipeline/<script>.py``: what a stage running it depends on."""
    return CODE / f"{script}.json"
