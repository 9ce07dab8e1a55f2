"""benchmarks/stage_timeline.py on a hand-made store with the columns MLflow's SQLite schema has."""

import importlib.util
import sqlite3
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "stage_timeline.py"
spec = importlib.util.spec_from_file_location("stage_timeline", SCRIPT)
stage_timeline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stage_timeline)


@pytest.fixture
def store(tmp_path):
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE runs (run_uuid, name, start_time, end_time, status)")
        con.execute("CREATE TABLE tags (key, value, run_uuid)")
        con.execute("CREATE TABLE metrics (key, value, timestamp, step, run_uuid)")
        runs = [  # (id, name, start ms, end ms, status, experiment)
            ("b", "maml-y", 30_000, 40_000, "FINISHED", "cpu"),
            ("a", "maml-x", 0, 10_000, "FINISHED", "cpu"),
            ("c", "maml-z", 55_000, 56_000, "FINISHED", "cpu"),
            ("d", "maml-w", 60_000, 61_000, "FAILED", "cpu"),
            ("e", "maml-v", 70_000, 90_000, "FINISHED", "other"),
        ]
        for run_id, name, start, end, status, experiment in runs:
            con.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?)", (run_id, name, start, end, status)
            )
            con.execute("INSERT INTO tags VALUES ('dvc_experiment', ?, ?)", (experiment, run_id))
            con.execute("INSERT INTO tags VALUES ('learner', 'maml', ?)", (run_id,))
        # maml-y's last training metric at 40 s; the evaluation reopened the run until 50 s
        con.execute("UPDATE runs SET end_time = 50000 WHERE run_uuid = 'b'")
        for key, t in (("meta_train_loss", 39_000), ("system/cpu", 40_000), ("test_nrmse", 50_000)):
            con.execute("INSERT INTO metrics VALUES (?, 0.5, ?, 1, 'b')", (key, t))
    return db


def test_runs_of_one_experiment_in_start_order_with_the_gaps_between(store):
    runs = stage_timeline.timeline(store, "cpu")
    assert [(r["name"], r["seconds"], r["gap"]) for r in runs] == [
        ("maml-x", 10.0, None),
        ("maml-y", 10.0, 20.0),
        ("maml-z", 1.0, 15.0),
    ]
    assert stage_timeline.summary(runs) == {
        "runs": 3,
        "run_seconds": 21.0,
        "gap_seconds": 35.0,
        "mean_gap": 17.5,
        "median_gap": 17.5,
    }


def test_cli_reports_totals_and_names_a_missing_experiment(store, capsys):
    assert stage_timeline.main([str(store), "--experiment", "cpu"]) == 0
    assert "3 runs: 21 s inside runs, 35 s between them (mean gap 17.5 s" in capsys.readouterr().out
    assert stage_timeline.main([str(store), "--experiment", "nope"]) == 1
    assert "no finished run tagged dvc_experiment=nope" in capsys.readouterr().err


def test_the_stage_gap_benchmark_params_give_the_recipes_count_of_train_stages(tmp_path):
    """benchmarks/stage_gap.py's recipe-sized pipeline is a valid params.yaml: 8 groups give
    16 synthetic benchmarks and, with every learner, the CPU recipe's count of train cells."""
    import shutil
    import sys

    from metalearn.config import load_config
    from metalearn.smoke import set_params

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("stage_gap", SCRIPT.parent / "stage_gap.py")
        stage_gap = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(stage_gap)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    shutil.copy(SCRIPT.parents[1] / "params.yaml", tmp_path / "params.yaml")
    set_params(tmp_path, stage_gap.gap_params(8))
    cfg = load_config(params_path=tmp_path / "params.yaml")
    assert len(cfg.pipeline.benchmarks) == 16
    learners = load_config(params_path=SCRIPT.parents[1] / "params.yaml").pipeline.learners
    assert len(cfg.pipeline.benchmarks) * len(cfg.pipeline.learners) == 16 * len(learners)


def test_the_lock_cost_benchmark_collapses_only_the_cell_stages_code_deps():
    """benchmarks/lock_cost.py's smaller lock keeps every stage and every data/spec dep, and
    leaves one code dep where a train/evaluate stage had several (download keeps all)."""
    spec = importlib.util.spec_from_file_location("lock_cost", SCRIPT.parent / "lock_cost.py")
    lock_cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock_cost)

    def dep(path):
        return f"    - path: {path}\n      hash: md5\n      md5: 0\n      size: 1\n"

    def stage(name, *paths):
        return f"  {name}:\n    cmd: python x.py\n    deps:\n" + "".join(map(dep, paths))

    lock = "schema: '2.0'\nstages:\n" + "".join(
        [
            stage("download@a", "pipeline/download.py", "src/m/io.py", "src/m/paths.py"),
            stage(
                "train@x-a",
                "configs/train/x-a.json",
                "data/episodes/a",
                "pipeline/train.py",
                "src/m/io.py",
                "src/m/algorithms",
            ),
            stage("evaluate@a", "pipeline/evaluate.py", "src/m/io.py", "models/a"),
        ]
    )
    smaller = lock_cost.parse_yaml_for_update(lock_cost.with_one_code_dep(lock), "dvc.lock")
    deps = {name: [d["path"] for d in s["deps"]] for name, s in smaller["stages"].items()}
    assert deps == {
        "download@a": ["pipeline/download.py", "src/m/io.py", "src/m/paths.py"],
        "train@x-a": ["configs/train/x-a.json", "data/episodes/a", "pipeline/train.py"],
        "evaluate@a": ["models/a", "pipeline/evaluate.py"],
    }
    load, dump = lock_cost.rewrite_seconds(lock, rounds=1)
    assert load > 0 and dump > 0
