"""Where each stage reads and writes, relative to the repository root.

dvc.yaml names the same paths; ``tests/test_dvc_yaml.py`` checks that the two agree.
"""

from __future__ import annotations

from pathlib import Path


def raw(dataset: str) -> Path:
    return Path("data/raw") / dataset


def episodes(benchmark: str) -> Path:
    return Path("data/episodes") / benchmark


def run_name(learner: str, benchmark: str) -> str:
    return f"{learner}-{benchmark}"


def model(learner: str, benchmark: str) -> Path:
    return Path("models") / f"{run_name(learner, benchmark)}.pt"


def train_metrics(learner: str, benchmark: str) -> Path:
    return Path("results/train") / f"{run_name(learner, benchmark)}.json"


def train_curve(learner: str, benchmark: str) -> Path:
    return Path("results/curves") / f"{run_name(learner, benchmark)}.csv"


def eval_metrics(learner: str, benchmark: str) -> Path:
    return Path("results/eval") / f"{run_name(learner, benchmark)}.json"


def eval_per_task(learner: str, benchmark: str) -> Path:
    return Path("results/eval") / f"{run_name(learner, benchmark)}.parquet"


SUMMARY_JSON = Path("results/summary.json")
SUMMARY_MD = Path("results/summary.md")
PLOTS = Path("results/plots")
EFFICIENCY = Path("results/efficiency")  # CSVs and plots of the efficiency stage
EFFICIENCY_JSON = Path("results/efficiency.json")  # its targets, as DVC metrics
