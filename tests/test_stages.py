"""Stage functions on a tiny config in a temp directory: determinism and failure handling."""

import math

import mlflow
import polars as pl
import pytest
import torch

from metalearn import paths
from metalearn.config import load_config
from metalearn.data.episodes import load_episodes
from metalearn.models import init_params
from metalearn.stages import run_episodify, run_evaluate, run_train
from metalearn.training import NonFiniteError, Task, meta_train

TINY = [
    "algo.steps=2",
    "algo.maml.steps=null",
    "train.iterations=4",
    "train.val_every=2",
    "train.meta_batch=2",
    "eval.tasks=3",
    "data.cosmixture.functions={train:6,val:3,test:3}",
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_episodify(load_config(TINY), "cosmixture-shot50")
    return tmp_path


def test_same_seed_same_parameters(workdir):
    cfg = load_config(TINY)
    source = load_episodes(paths.episodes("cosmixture-shot50"))
    runs = [
        meta_train(cfg, "adjoint", "cosmixture-shot50", source, torch.device("cpu"))
        for _ in range(2)
    ]
    assert all(torch.equal(runs[0].params[k], runs[1].params[k]) for k in runs[0].params)
    other = meta_train(
        load_config([*TINY, "train.seed=1"]),
        "adjoint",
        "cosmixture-shot50",
        source,
        torch.device("cpu"),
    )
    assert not torch.equal(other.params["head.weight"], runs[0].params["head.weight"])


def test_train_then_evaluate_writes_outputs_and_one_run(workdir):
    cfg = load_config(TINY)
    metrics = run_train(cfg, "fomaml", "cosmixture-shot50")
    result = run_evaluate(cfg, "fomaml", "cosmixture-shot50")
    assert result["tasks"] == 3 and math.isfinite(result["mean"])
    assert result["mlflow_run_id"] == metrics["mlflow_run_id"]
    run = mlflow.get_run(metrics["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["learner"] == "fomaml"
    assert run.data.metrics["test_nrmse"] == pytest.approx(result["mean"])


def test_non_finite_loss_stops_training_and_keeps_earlier_outputs(workdir):
    model = paths.model("maml", "cosmixture-shot50")
    model.parent.mkdir(parents=True)
    model.write_bytes(b"an earlier result")
    cfg = load_config([*TINY, "algo.inner_lr=1e30"])
    with pytest.raises(NonFiniteError, match=r"maml on cosmixture-shot50: .* at iteration 1"):
        run_train(cfg, "maml", "cosmixture-shot50")
    assert model.read_bytes() == b"an earlier result"
    assert not paths.train_metrics("maml", "cosmixture-shot50").exists()
    assert not paths.train_curve("maml", "cosmixture-shot50").exists()
    runs = mlflow.search_runs(experiment_names=["metalearn"], output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_evaluate_without_a_model_names_the_stage_to_run(workdir):
    with pytest.raises(FileNotFoundError, match=r"run train@imaml-cosmixture-shot50"):
        run_evaluate(load_config(TINY), "imaml", "cosmixture-shot50")


def test_scratch_keeps_the_initialisation(workdir):
    cfg = load_config(TINY)
    source = load_episodes(paths.episodes("cosmixture-shot50"))
    result = meta_train(cfg, "scratch", "cosmixture-shot50", source, torch.device("cpu"))
    task = Task.build(cfg, source)
    init = init_params(task.model, torch.Generator().manual_seed(cfg.train.seed))
    assert all(torch.equal(result.params[k], init[k]) for k in init)
    assert [row["iteration"] for row in result.curve] == [0]
    assert run_train(cfg, "scratch", "cosmixture-shot50")["iterations"] == 0


def test_a_benchmark_entry_sets_its_own_protocol(workdir):
    entry = "pipeline.benchmarks.cosmixture-shot50"
    cfg = load_config([*TINY, f"+{entry}.train.iterations=3", f"+{entry}.algo.maml.iterations=5"])
    assert run_train(cfg, "fomaml", "cosmixture-shot50")["iterations"] == 3
    assert run_train(cfg, "maml", "cosmixture-shot50")["iterations"] == 5
    curve = pl.read_csv(paths.train_curve("maml", "cosmixture-shot50"))
    assert curve["iteration"].to_list() == [1, 2, 3, 4, 5]


def test_diagnostics_score_every_split_at_every_step_count(workdir, capsys):
    from metalearn.diagnostics import main

    run_train(load_config(TINY), "maml", "cosmixture-shot50")
    assert main(["maml", "cosmixture-shot50", "--steps", "1", "4", "--tasks", "3", *TINY]) == 0
    table = capsys.readouterr().out
    for split in ("meta-train", "meta-val", "meta-test"):
        assert f"| {split} | 1 | 3 |" in table and f"| {split} | 4 | 3 |" in table
    assert main(["imaml", "cosmixture-shot50", *TINY]) == 1  # not trained: says which stage
    assert "run train@imaml-cosmixture-shot50" in capsys.readouterr().err
