"""Stage functions on a tiny config in a temp directory: determinism and failure handling."""

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pyfunc
import polars as pl
import pytest
import torch
import yaml

from metalearn import paths
from metalearn.algorithms.bias import fit_item_offsets
from metalearn.checkpoint import CheckpointError
from metalearn.config import load_config
from metalearn.data.episodes import episodify, load_episodes
from metalearn.fingerprint import fingerprint
from metalearn.metrics import rmse
from metalearn.models import init_params
from metalearn.spec import evaluate_cell, train_cell
from metalearn.stages import evaluate as evaluate_stage
from metalearn.stages import report as report_stage
from metalearn.stages import train as train_stage
from metalearn.stages.cli import brief, main
from metalearn.training import Adam, NonFiniteError, Task, build_learner, meta_lr_at, meta_train
from tests.data.test_ratings import ml100k, random_ratings, tsv
from tests.tiny import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def workdir(make_workdir):
    return make_workdir(TINY)


def test_same_seed_same_parameters(workdir):
    cfg = load_config(TINY)
    source = load_episodes(paths.episodes("cosmixture-shot50"))
    cell = train_cell(cfg, "adjoint", "cosmixture-shot50")
    runs = [meta_train(cell, source, torch.device("cpu")) for _ in range(2)]
    assert all(torch.equal(runs[0].params[k], runs[1].params[k]) for k in runs[0].params)
    other = meta_train(dataclasses.replace(cell, seed=1), source, torch.device("cpu"))
    assert not torch.equal(other.params["head.weight"], runs[0].params["head.weight"])


def test_train_then_evaluate_writes_outputs_and_one_run(workdir):
    cfg = load_config([*TINY, "pipeline.learners=[fomaml]"])
    metrics = train_stage.run(train_cell(cfg, "fomaml", "cosmixture-shot50"))
    trained = mlflow.get_run(metrics["mlflow_run_id"]).info
    result = evaluate_stage.run(evaluate_cell(cfg, "cosmixture-shot50"))["fomaml"]
    assert result["tasks"] == 3 and math.isfinite(result["mean"])
    assert result["mlflow_run_id"] == metrics["mlflow_run_id"]
    run = mlflow.get_run(metrics["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.end_time == trained.end_time  # the UI's duration stays the training's
    assert run.data.tags["learner"] == "fomaml"
    assert run.data.metrics["test_nrmse"] == pytest.approx(result["mean"])
    assert run.data.metrics["best_iteration"] == metrics["best_iteration"] in (2, 4)
    assert result["best_iteration"] == metrics["best_iteration"]
    per_task = pl.read_parquet(paths.eval_per_task("fomaml", "cosmixture-shot50"))
    assert per_task["nrmse"].mean() == pytest.approx(result["mean"])
    assert run.data.tags["mlflow.source.name"] == "pipeline/train.py"
    (dataset,) = (i.dataset for i in run.inputs.dataset_inputs)
    assert dataset.name == "cosmixture-shot50" and len(dataset.digest) == 16


@pytest.mark.parametrize(
    ("learner", "options"), [("maml", []), ("mamlpp", ["algo.mamlpp.first_order_until=1"])]
)
def test_the_logged_model_predicts_as_meta_test_scored(workdir, learner, options):
    """``runs:/<id>/model`` adapts and predicts each task as evaluate did: the first training
    seed's scores (the model holds its parameters, MAML++'s learned step sizes with them) come
    back from its predictions."""
    cfg = load_config([*TINY, f"pipeline.learners=[{learner}]", *options])
    run_id = train_stage.run(train_cell(cfg, learner, "cosmixture-shot50"))["mlflow_run_id"]
    evaluate_stage.run(evaluate_cell(cfg, "cosmixture-shot50"))
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    (sx, sy), (qx, qy) = load_episodes(paths.episodes("cosmixture-shot50")).fixed_tasks("test")
    tasks = {"support_x": sx[:3].numpy(), "support_y": sy[:3].numpy(), "query_x": qx[:3].numpy()}
    predicted = torch.from_numpy(model.predict(tasks))
    per_task = pl.read_parquet(paths.eval_per_task(learner, "cosmixture-shot50"))
    first_seed = next(c for c in per_task.columns if c.startswith("nrmse_seed"))
    scored = torch.tensor(per_task[first_seed].to_numpy())
    assert torch.allclose(rmse(predicted, qy[:3]), scored, rtol=1e-5, atol=1e-6)


def test_each_iteration_gets_its_outer_step_size_and_the_learner_its_iteration(
    workdir, monkeypatch
):
    cfg = load_config([*TINY, "train.meta_lr_schedule=cosine", "train.meta_lr_floor=0.5"])
    cell = train_cell(cfg, "mamlpp", "cosmixture-shot50")
    seen = []
    step = Adam.step
    monkeypatch.setattr(Adam, "step", lambda self, p, g: (seen.append(self.lr), step(self, p, g)))
    learner_type = type(build_learner(cell))
    told = []
    set_iteration = learner_type.set_iteration
    monkeypatch.setattr(
        learner_type, "set_iteration", lambda self, t: (told.append(t), set_iteration(self, t))
    )
    source = load_episodes(paths.episodes("cosmixture-shot50"))
    result = meta_train(cell, source, torch.device("cpu"))
    learned = [k for k in result.params if k.startswith("inner_lr/")]
    assert len(learned) == 2 * 6  # a step size per inner step (2) and tensor (the MLP's 6)
    assert told == [0, 1, 2, 3, 4]  # 0: the learner built
    assert seen == [meta_lr_at(cell, t) for t in told[1:]]
    assert seen[0] == cell.meta_lr and seen[-1] == pytest.approx(0.5 * cell.meta_lr)


def test_evaluate_scores_every_learner_of_the_benchmark_or_writes_nothing(workdir):
    cfg = load_config([*TINY, "pipeline.learners=[maml,scratch]"])
    train_stage.run(train_cell(cfg, "maml", "cosmixture-shot50"))
    with pytest.raises(FileNotFoundError, match=r"run train@scratch-cosmixture-shot50"):
        evaluate_stage.run(evaluate_cell(cfg, "cosmixture-shot50"))
    assert not paths.eval_metrics("cosmixture-shot50").exists()
    assert not paths.eval_per_task_dir("cosmixture-shot50").exists()
    train_stage.run(train_cell(cfg, "scratch", "cosmixture-shot50"))
    assert set(evaluate_stage.run(evaluate_cell(cfg, "cosmixture-shot50"))) == {"maml", "scratch"}
    assert {p.name for p in paths.eval_per_task_dir("cosmixture-shot50").iterdir()} == {
        "maml.parquet",
        "scratch.parquet",
    }


def test_non_finite_loss_stops_training_and_keeps_earlier_outputs(workdir):
    model = paths.model("maml", "cosmixture-shot50")
    model.parent.mkdir(parents=True)
    model.write_bytes(b"an earlier result")
    cfg = load_config([*TINY, "algo.inner_lr=1e30"])
    with pytest.raises(NonFiniteError, match=r"maml on cosmixture-shot50: .* at iteration 1"):
        train_stage.run(train_cell(cfg, "maml", "cosmixture-shot50"))
    assert model.read_bytes() == b"an earlier result"
    assert not paths.train_metrics("maml", "cosmixture-shot50").exists()
    assert not paths.train_curve("maml", "cosmixture-shot50").exists()
    runs = mlflow.search_runs(experiment_names=["metalearn/workspace"], output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_evaluate_refuses_a_checkpoint_another_cell_wrote(workdir):
    cfg = load_config([*TINY, "pipeline.learners=[maml,fomaml]"])
    for learner in ("maml", "fomaml"):
        train_stage.run(train_cell(cfg, learner, "cosmixture-shot50"))
    maml = paths.model("maml", "cosmixture-shot50")
    kept = maml.read_bytes()
    shutil.copy(paths.model("fomaml", "cosmixture-shot50"), maml)
    with pytest.raises(CheckpointError, match=r"holds the spec of fomaml on cosmixture-shot50, "
                       r"not the one train@maml-cosmixture-shot50 trains now"):  # fmt: skip
        evaluate_stage.run(evaluate_cell(cfg, "cosmixture-shot50"))
    assert not paths.eval_metrics("cosmixture-shot50").exists()
    maml.write_bytes(kept)
    changed = load_config([*TINY, "pipeline.learners=[maml,fomaml]", "train.meta_batch=3"])
    with pytest.raises(CheckpointError, match=r"params changed since it was trained"):
        evaluate_stage.run(evaluate_cell(changed, "cosmixture-shot50"))
    assert set(evaluate_stage.run(evaluate_cell(cfg, "cosmixture-shot50"))) == {"maml", "fomaml"}


def test_an_unreadable_checkpoint_names_the_file_and_the_stage(workdir):
    cfg = load_config([*TINY, "pipeline.learners=[maml]"])
    train_stage.run(train_cell(cfg, "maml", "cosmixture-shot50"))
    model = paths.model("maml", "cosmixture-shot50")
    model.write_bytes(model.read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match=r"models/cosmixture-shot50/maml.pt cannot be read "
                       r".*dvc repro --force train@maml-cosmixture-shot50"):  # fmt: skip
        evaluate_stage.run(evaluate_cell(cfg, "cosmixture-shot50"))


def test_evaluate_without_a_model_names_the_stage_to_run(workdir):
    with pytest.raises(FileNotFoundError, match=r"run train@maml-cosmixture-shot50"):
        evaluate_stage.run(evaluate_cell(load_config(TINY), "cosmixture-shot50"))


def test_scratch_keeps_the_initialisation(workdir):
    cfg = load_config(TINY)
    source = load_episodes(paths.episodes("cosmixture-shot50"))
    cell = train_cell(cfg, "scratch", "cosmixture-shot50")
    result = meta_train(cell, source, torch.device("cpu"))
    task = Task.build(cell.model, source, "scratch")
    init = init_params(task.model, torch.Generator().manual_seed(cfg.train.seed))
    assert all(torch.equal(result.params[k], init[k]) for k in init)
    assert [row["iteration"] for row in result.curve] == [0]
    assert train_stage.run(train_cell(cfg, "scratch", "cosmixture-shot50"))["iterations"] == 0


def test_a_benchmark_entry_sets_its_own_protocol(workdir):
    entry = "pipeline.benchmarks.cosmixture-shot50"
    cfg = load_config([*TINY, f"+{entry}.train.iterations=3", f"+{entry}.algo.maml.iterations=5"])
    assert train_stage.run(train_cell(cfg, "fomaml", "cosmixture-shot50"))["iterations"] == 3
    assert train_stage.run(train_cell(cfg, "maml", "cosmixture-shot50"))["iterations"] == 5
    curve = pl.read_csv(paths.train_curve("maml", "cosmixture-shot50"))
    seeds = cfg.pipeline.benchmarks["cosmixture-shot50"].train["seeds"]  # the entry's 3
    assert curve["iteration"].to_list() == [1, 2, 3, 4, 5] * seeds
    assert curve["seed"].to_list() == [s for s in range(seeds) for _ in range(5)]


def test_meta_test_uses_the_best_meta_val_point(workdir):
    from metalearn.evaluation import per_task_scores
    from metalearn.training import build_learner

    cfg = load_config([*TINY, "train.iterations=6", "train.val_every=1", "train.meta_lr=0.05"])
    source = load_episodes(paths.episodes("cosmixture-shot50"))
    cell = train_cell(cfg, "fomaml", "cosmixture-shot50")
    result = meta_train(cell, source, torch.device("cpu"))
    val = {row["iteration"]: row["meta_val_nrmse"] for row in result.curve}
    assert result.best_val == min(val.values()) and val[result.best_iteration] == result.best_val
    task = Task.build(cell.model, source, "fomaml")
    learner = build_learner(cell)
    scores = per_task_scores(
        learner, task.loss_fn, task.predict, result.params, source.fixed_tasks("val"), "mse"
    )
    assert float(scores.mean()) == pytest.approx(result.best_val, rel=1e-6)


def test_every_training_seed_is_trained_and_scored(workdir):
    seeds = "pipeline.benchmarks.cosmixture-shot50.train.seeds=2"  # the entry beats train.seeds
    cfg = load_config([*TINY, seeds, "pipeline.learners=[maml]"])
    metrics = train_stage.run(train_cell(cfg, "maml", "cosmixture-shot50"))
    assert metrics["seeds"] == 2
    checkpoint = torch.load(paths.model("maml", "cosmixture-shot50"), weights_only=True)
    first, second = checkpoint["seed_params"]
    assert checkpoint["seeds"] == [0, 1] and not torch.equal(
        first["head.bias"], second["head.bias"]
    )
    assert all(torch.equal(checkpoint["params"][k], first[k]) for k in first)
    result = evaluate_stage.run(evaluate_cell(cfg, "cosmixture-shot50"))["maml"]
    per_task = pl.read_parquet(paths.eval_per_task("maml", "cosmixture-shot50"))
    by_seed = per_task.select("nrmse_seed0", "nrmse_seed1").to_numpy()
    assert per_task["nrmse"].to_numpy() == pytest.approx(by_seed.mean(1))
    assert result["seeds"] == 2 and result["mean"] == pytest.approx(by_seed.mean())
    assert result["seed_sd"] == pytest.approx(by_seed.mean(0).std(ddof=1), rel=1e-5)


CF = "movielens100k-shot10"
CF_TINY = [
    *TINY,
    "pipeline.learners=[maml]",
    f"pipeline.benchmarks.{CF}.train.seeds=2",
    "data.movielens100k.users={val:0.2,test:0.25}",
    "data.movielens100k.val_tasks=3",
    "data.movielens100k.test_tasks=5",
    "data.movielens100k.embedding_dim=4",
]


@pytest.fixture
def cf_workdir(workdir):
    """The tiny workdir, with the episodes of a tiny movielens100k-shot10 too: 60 users with
    >= 25 ratings each (shots + queries), so 15 meta-test users, all eligible."""
    ml100k(workdir / "raw", tsv(random_ratings(lo=25, hi=35)))
    episodify(load_config(CF_TINY), CF, paths.episodes(CF), raw_dir=workdir / "raw")
    return workdir


def test_evaluate_scores_every_test_user_apart_from_the_protocol(cf_workdir):
    cfg = load_config(CF_TINY)
    for learner in ("maml", "bias"):  # bias: the classical baseline of every CF benchmark
        train_stage.run(train_cell(cfg, learner, CF))
    results = evaluate_stage.run(evaluate_cell(cfg, CF))
    assert results["bias"]["all_users"]["tasks"] == 15
    result = results["maml"]
    every = result["all_users"]
    file = paths.eval_per_task_all_users("maml", CF)
    scores, protocol = pl.read_parquet(file), pl.read_parquet(paths.eval_per_task("maml", CF))
    assert scores.columns == protocol.columns == ["task", "nrmse", "nrmse_seed0", "nrmse_seed1"]
    assert every["tasks"] == scores.height == 15 and result["tasks"] == protocol.height == 3
    assert every["mean"] == pytest.approx(scores["nrmse"].mean())
    assert every["per_task"] == fingerprint(file) and every["seed_sd"] > 0
    assert set(every) == {"mean", "ci", "tasks", "seed_sd", "seconds", "per_task"}
    first = scores.head(3).drop("task").to_numpy()  # the protocol's tasks come first
    assert first == pytest.approx(protocol.drop("task").to_numpy(), rel=1e-5)
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.metrics["test_nrmse_all_users"] == pytest.approx(every["mean"])
    assert "(all users: " in evaluate_stage.line({"maml": result})

    meta_file = paths.episodes(CF) / "meta.json"  # as episodes written before test_all were
    meta = json.loads(meta_file.read_text())
    del meta["tasks"]["test_all"]
    meta_file.write_text(json.dumps(meta))
    before = evaluate_stage.run(evaluate_cell(cfg, CF))["maml"]
    assert "all_users" not in before and not file.parent.exists()
    same = ("mean", "ci", "tasks", "seeds", "seed_sd", "per_task")
    assert {k: before[k] for k in same} == {k: result[k] for k in same}
    assert pl.read_parquet(paths.eval_per_task("maml", CF)).equals(protocol)


def test_full_item_decay_keeps_the_bias_start_through_training(cf_workdir):
    """``model.item_offsets: bias`` starts the item offsets at the bias fit, and a decay of
    1 / meta_lr pulls the item tables all the way back after every outer step: training moves
    everything but them."""
    entry = f"++pipeline.benchmarks.{CF}"
    overrides = [f"{entry}.model.item_offsets=bias", f"{entry}.model.item_shrinkage=2.0"]
    cell = train_cell(load_config([*CF_TINY, *overrides]), "maml", CF)
    full = dataclasses.replace(cell.model, item_decay=1 / cell.meta_lr)  # constant schedule
    cell = dataclasses.replace(cell, model=full)
    source = load_episodes(paths.episodes(CF))
    trained = meta_train(cell, source, torch.device("cpu")).params
    fit = fit_item_offsets(*source.train_ratings(), source.n_items, 2.0)
    assert torch.allclose(trained["item.bias.weight"], fit["item.bias.weight"], atol=1e-6)
    assert trained["item.embedding.weight"].abs().max() < 1e-6
    model = Task.build(cell.model, source, "maml").model
    start = init_params(model, torch.Generator().manual_seed(cell.seed))
    assert not torch.equal(trained["layers.0.weight"], start["layers.0.weight"])  # it trained


SELECTORS = {
    "download": ["dataset"],
    "episodify": ["benchmark"],
    "train": ["learner", "benchmark"],
    "evaluate": ["benchmark"],
    "tune": ["benchmark"],
    "resolve": [],
    "report": [],
    "efficiency": [],
}


@pytest.mark.parametrize("script", sorted(SELECTORS))
def test_every_stage_script_answers_help_with_its_selectors(script):
    done = subprocess.run(
        [sys.executable, f"pipeline/{script}.py", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Stage {script}") and "KEY=VALUE" in done.stdout
    for selector in SELECTORS[script]:
        assert f"  {selector}=  one of: " in done.stdout
    scripts = sorted(p.stem for p in (ROOT / "pipeline").glob("*.py"))
    assert sorted([*SELECTORS, "code"]) == scripts  # stage code reads no params


def test_the_code_stage_answers_help_and_refuses_arguments():
    for argv, code in ((["--help"], 0), (["algo.steps=3"], 2)):
        done = subprocess.run(
            [sys.executable, "pipeline/code.py", *argv],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == code and done.stdout.startswith("Stage code"), done.stdout


def test_a_selector_that_params_yaml_does_not_define_is_a_clear_error(capsys):
    argv = ["learner=mamll", "benchmark=cosmixture-shot50"]
    code = main(train_stage.STAGE, argv)
    err = capsys.readouterr().err
    assert code == 1
    assert "learner=mamll is not in params.yaml; one of: maml, fomaml" in err


def test_a_stage_prints_its_result_as_one_short_line():
    """DVC's log shows a stage's stdout: a report's nested summary must not flood it."""
    report = {
        "cosmixture-shot50": {f"learner{i}": {"nrmse": 0.5} for i in range(9)},
        "checks": {"not_beating_scratch": []},
        "seconds": 1.23456,
        "runs": ["a", "b"],
        "device": "cpu",
    }
    line = brief(report)
    assert line == (
        "cosmixture-shot50={learner0, learner1, learner2, learner3, learner4, learner5, …}, "
        "checks={not_beating_scratch}, seconds=1.235, runs=[2 items], device=cpu"
    )
    assert brief("done") == "done"


def test_the_reports_line_names_each_benchmarks_best_learner():
    summary = {
        "jester-shot10": {"maml": {"nrmse": 0.25, "ci": 0.01}, "bias": {"nrmse": 0.22, "ci": 0.01}},
        "omniglot-way5shot1": {"maml": {"accuracy": 0.95, "ci": 0.01}},
        "best_learner": {"jester-shot10": "bias", "omniglot-way5shot1": "maml"},
        "checks": {},
    }
    line = report_stage.line(summary)
    assert line == "best: jester-shot10=bias 0.22, omniglot-way5shot1=maml 0.95"


@pytest.mark.slow  # the message itself: tests/test_config.py
@pytest.mark.parametrize(
    ("broken", "line", "column"),
    [("  steps: 50 #", 0, 1), pytest.param("  adapt: all #", None, None, marks=pytest.mark.slow)],
    ids=["tab", "bracket"],
)
def test_a_params_yaml_that_is_not_yaml_is_one_line_naming_file_line_and_column(
    tmp_path, broken, line, column
):
    """Every stage script and its --help: the file, the line and column, no traceback."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    text = (tmp_path / "params.yaml").read_text()
    lines = text.splitlines()
    at = next(i for i, t in enumerate(lines) if t.startswith(broken))
    if line == 0:  # a tab where YAML wants spaces
        lines[at] = "\t" + lines[at].lstrip()
        line, column = at + 1, 1
    else:  # a bracket never closed
        lines[at] = lines[at].replace("adapt: all", "adapt: [all", 1)
    (tmp_path / "params.yaml").write_text("\n".join(lines) + "\n")
    for script, args in (
        ("resolve", []),
        ("train", ["learner=maml", "benchmark=cosmixture-shot50"]),
        ("episodify", ["benchmark=cosmixture-shot50"]),
        ("train", ["--help"]),
    ):
        done = subprocess.run(
            [sys.executable, str(ROOT / f"pipeline/{script}.py"), *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        output = done.stdout + done.stderr
        assert "Traceback" not in output, output
        assert f"{tmp_path / 'params.yaml'}, line " in output and "not valid YAML" in output
        if column is not None:
            assert f"line {line}, column {column}" in output
        assert done.returncode == (0 if args == ["--help"] else 1), (script, output)


def test_a_name_in_params_yaml_that_is_a_path_is_refused_and_nothing_is_written_outside(
    tmp_path,
):
    """A setting or benchmark named with separators or '..' would put a stage's outputs
    outside the checkout: params validation refuses it, every stage script says so."""
    work = tmp_path / "a" / "b" / "checkout"
    work.mkdir(parents=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    evil = "x/../../../../EVIL"
    params["data"]["cosmixture"]["settings"][evil] = {"shots": 5, "queries": 5}
    params["pipeline"]["benchmarks"][f"cosmixture-{evil}"] = {
        "dataset": "cosmixture",
        "setting": evil,
    }
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = sorted(tmp_path.rglob("*"))
    for script, args in (
        ("resolve", []),
        ("episodify", [f"benchmark=cosmixture-{evil}"]),
        ("episodify", ["benchmark=cosmixture-shot50"]),
    ):
        done = subprocess.run(
            [sys.executable, str(ROOT / f"pipeline/{script}.py"), *args],
            cwd=work, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "never a path" in done.stderr or "is not a name" in done.stderr, done.stderr
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, inside or outside
