"""Test-session settings, and the one tiny workdir the stage tests share."""

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from metalearn.config import load_config
from metalearn.stages import episodify as episodify_stage

# The tests' models are tiny: with one thread per core, torch's OpenMP threads mostly spin
# (measured ~30x slower on a 2-core machine), so the suite runs single-threaded.
torch.set_num_threads(1)

BENCHMARK = "cosmixture-shot50"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tiny pipeline's module first: under make test's two workers (a module per work unit,
    in collection order) it is the longest unit, so one worker starts on it at once."""
    items.sort(key=lambda item: not item.nodeid.startswith("tests/pipeline/"))


@pytest.fixture
def make_workdir(tmp_path: Path, monkeypatch) -> Callable[[Sequence[str]], Path]:
    """``make_workdir(overrides)``: a temporary working directory, as a stage run by hand would
    see it (no DVC around it, an MLflow store of its own), holding the episodes of
    cosmixture-shot50 at the sizes ``overrides`` set (the tests' tiny params)."""

    def make(overrides: Sequence[str]) -> Path:
        monkeypatch.chdir(tmp_path)
        for name in ("DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        episodify_stage.run(load_config(list(overrides)), BENCHMARK)
        return tmp_path

    return make
