"""Fair tuning: one grid and one budget for every learner, the choice on meta-val, and its way
into params.yaml."""

import json
import math
import shutil
import types

import polars as pl
import pytest

from metalearn import paths
from metalearn.config import benchmark_config, default_params_path, load_config
from metalearn.config.learners import meta_lr
from metalearn.spec import train_cell, tune_cell
from metalearn.stages import episodify as episodify_stage
from metalearn.stages import tune as tune_stage
from metalearn.tuning import (
    apply,
    choose,
    choose_model,
    markdown,
    one_by_one,
    point_cell,
    tune,
)

GRID = ["tune.learners=[maml,fomaml]", "tune.inner_lr=[0.01,0.1]", "tune.meta_lr=[0.001]"]


def test_a_point_sets_the_step_sizes_and_budget_on_one_seed():
    cell = train_cell(load_config(), "imaml", "cosmixture-shot50")
    point = point_cell(cell, 0.03, 0.002, 7)
    assert point.options == {**cell.options, "inner_lr": 0.03}
    assert (point.meta_lr, point.iterations, point.seeds) == (0.002, 7, 1)
    assert point.model == cell.model and point.meta_batch == cell.meta_batch


def test_every_learner_gets_the_same_grid_and_budget():
    cfg = load_config([*GRID, "tune.iterations=9", "tune.meta_lr=[0.001,0.01]"])
    seen = []

    def train(point):
        inner_lr = point.options["inner_lr"]
        seen.append((point.learner, inner_lr, point.meta_lr, point.iterations))
        return types.SimpleNamespace(
            best_val=inner_lr * point.meta_lr, best_iteration=3, seconds=0.1
        )

    cells = [train_cell(cfg, lr, "cosmixture-shot50") for lr in cfg.tune.learners]
    rows = tune(cells, cfg.tune, one_by_one(train))
    grid = [(a, b) for a in (0.01, 0.1) for b in (0.001, 0.01)]
    assert seen == [(lr, a, b, 9) for lr in ("maml", "fomaml") for a, b in grid]
    assert [(r["learner"], r["inner_lr"], r["meta_lr"]) for r in rows] == [s[:3] for s in seen]
    chosen = choose(rows, higher_is_better=False)
    assert {k: (r["inner_lr"], r["meta_lr"]) for k, r in chosen.items()} == {
        "maml": (0.01, 0.001),
        "fomaml": (0.01, 0.001),
    }
    table = markdown("cosmixture-shot50", rows, chosen)
    assert "| maml | **0.0000** |" in table and "α 0.1, β 0.01" in table


def test_the_choice_skips_diverged_points_and_keeps_the_first_of_a_tie():
    rows = [
        {"learner": "maml", "inner_lr": a, "meta_lr": 0.001, "best_meta_val": v}
        for a, v in ((0.01, 0.5), (0.03, 0.4), (0.1, 0.4), (0.3, math.nan))
    ]
    assert choose(rows, higher_is_better=False)["maml"]["inner_lr"] == 0.03
    assert choose(rows, higher_is_better=True)["maml"]["inner_lr"] == 0.01


def test_apply_writes_the_choice_into_every_entry_of_the_dataset(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(default_params_path(), params)
    cfg = load_config()
    choices = {"movielens100k-shot10": {"maml": {"inner_lr": 0.07, "meta_lr": 0.004}}}
    before = params.read_text()
    planned = apply(params, choices, cfg, write=False)
    assert params.read_text() == before and len(planned) == 4  # 2 entries x 2 keys
    assert apply(params, choices, cfg) == planned
    text = params.read_text()
    assert "# Fair tuning on meta-val" in text  # comments kept
    tuned = load_config(params_path=params)
    for b in ("movielens100k-shot10", "movielens100k-shot20"):
        entry = benchmark_config(tuned, b)
        assert entry.algo.learners["maml"]["inner_lr"] == 0.07 and meta_lr(entry, "maml") == 0.004
    untouched = benchmark_config(tuned, "movielens1m-shot10").algo.learners["maml"]
    assert untouched == benchmark_config(cfg, "movielens1m-shot10").algo.learners["maml"]
    assert apply(params, choices, cfg) == []  # already there


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return tmp_path


def test_the_stage_writes_the_sweep_and_the_choice(workdir):
    cfg = load_config(
        [
            *GRID,
            "tune.iterations=2",
            "tune.benchmarks=[cosmixture-shot50]",
            "algo.steps=2",
            "algo.maml.steps=null",
            "algo.mamlpp.steps=null",
            "train.val_every=1",
            "train.meta_batch=2",
            "data.cosmixture.functions={train:6,val:3,test:3}",
            "eval.tasks=3",
        ]
    )
    episodify_stage.run(cfg, "cosmixture-shot50")
    chosen = tune_stage.run(tune_cell(cfg, "cosmixture-shot50"))
    table = pl.read_csv(paths.tuning_csv("cosmixture-shot50"))
    assert table.height == 4 and set(table["learner"]) == {"maml", "fomaml"}
    summary = json.loads(paths.tuning_json("cosmixture-shot50").read_text())
    for learner, (inner_lr, _) in chosen.items():
        rows = table.filter(pl.col("learner") == learner)
        best = rows.sort("best_meta_val")[0]
        assert best["inner_lr"].item() == inner_lr == summary["chosen"][learner]["inner_lr"]
    with pytest.raises(ValueError, match="not in tune.benchmarks"):
        tune_stage.run(tune_cell(cfg, "alpine-shot50"))


def test_a_diverged_point_loses_and_the_sweep_goes_on():
    from metalearn.training import NonFiniteError

    cfg = load_config(GRID)

    def train(point):
        if point.options["inner_lr"] == 0.1 and point.learner == "maml":
            raise NonFiniteError("maml on cosmixture-shot50: the meta-training loss diverged")
        return types.SimpleNamespace(best_val=0.5, best_iteration=1, seconds=0.1)

    cells = [train_cell(cfg, lr, "cosmixture-shot50") for lr in cfg.tune.learners]
    rows = tune(cells, cfg.tune, one_by_one(train))
    assert len(rows) == 4
    bad = next(r for r in rows if r["learner"] == "maml" and r["inner_lr"] == 0.1)
    assert math.isnan(bad["best_meta_val"]) and "diverged" in bad["diverged"]
    chosen = choose(rows, higher_is_better=False)
    assert chosen["maml"]["inner_lr"] == 0.01
    assert "| maml | **0.5000** | diverged |" in markdown("cosmixture-shot50", rows, chosen)


def test_apply_names_a_benchmark_it_cannot_apply(capsys):
    from metalearn.tuning import main

    assert main(["apply", "omniglot-way5shot1", "--dry-run"]) == 1
    assert "omniglot-way5shot1: not in tune.benchmarks" in capsys.readouterr().err


def test_the_model_grid_is_crossed_on_the_cf_factors_model_only():
    cfg = load_config(
        [*GRID, "tune.model={item_offsets:[zero,bias],item_decay:[0.0,10.0]}", "tune.iterations=3"]
    )
    seen = []

    def train(point):
        seen.append(
            (point.benchmark, point.learner, point.model.item_offsets, point.model.item_decay)
        )
        return types.SimpleNamespace(best_val=0.5, best_iteration=1, seconds=0.1)

    for benchmark in ("movielens100k-shot10", "cosmixture-shot50"):
        cells = [train_cell(cfg, lr, benchmark) for lr in cfg.tune.learners]
        rows = tune(cells, cfg.tune, one_by_one(train))
        cf = benchmark.startswith("movielens")
        assert len(rows) == 2 * 2 * (4 if cf else 1)  # learners x inner_lr x model points
        assert ("item_offsets" in rows[0]) == cf
    models = {s[2:] for s in seen if s[0] == "movielens100k-shot10"}
    assert models == {("zero", 0.0), ("zero", 10.0), ("bias", 0.0), ("bias", 10.0)}
    assert tune_cell(cfg, "movielens100k-shot10").model == cfg.tune.model
    assert "model" not in tune_cell(cfg, "cosmixture-shot50").spec()["tune"]
    with_mlp = load_config([*GRID, "model.cf=mlp"])
    assert tune_cell(with_mlp, "movielens100k-shot10").model == {}  # no item tables to regularise


def test_the_model_point_is_the_one_whose_learners_do_best_on_average():
    def row(learner, offsets, inner_lr, value):
        return {"learner": learner, "item_offsets": offsets, "inner_lr": inner_lr,
                "meta_lr": 0.001, "best_meta_val": value}  # fmt: skip

    rows = [
        row("maml", "zero", 0.01, 0.20), row("maml", "zero", 0.1, 0.30),
        row("fomaml", "zero", 0.01, 0.40), row("fomaml", "zero", 0.1, 0.35),
        row("maml", "bias", 0.01, 0.25), row("maml", "bias", 0.1, 0.26),
        row("fomaml", "bias", 0.01, 0.28), row("fomaml", "bias", 0.1, 0.29),
    ]  # fmt: skip
    model, chosen = choose_model(rows, higher_is_better=False)  # zero 0.275, bias 0.265
    assert model == {"item_offsets": "bias"}
    assert {k: r["inner_lr"] for k, r in chosen.items()} == {"maml": 0.01, "fomaml": 0.01}
    assert choose_model(rows, higher_is_better=True)[0] == {"item_offsets": "zero"}
    for r in rows[4:6]:  # maml diverged everywhere at bias: that point cannot win
        r["best_meta_val"] = math.nan
    assert choose_model(rows, higher_is_better=False)[0] == {"item_offsets": "zero"}
    table = markdown("movielens100k-shot10", rows, chosen)
    assert "item_offsets zero: mean of the learners' best 0.2750" in table
    assert choose_model(GRID_ROWS, higher_is_better=False)[0] == {}  # no model keys


GRID_ROWS = [{"learner": "maml", "inner_lr": 0.01, "meta_lr": 0.001, "best_meta_val": 0.5}]


def test_apply_writes_the_chosen_model_into_every_entry_of_the_dataset(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(default_params_path(), params)
    cfg = load_config()
    choices = {"jester-shot10": {"maml": {"inner_lr": 0.03, "meta_lr": 0.003}}}
    models = {"jester-shot10": {"item_offsets": "bias", "item_decay": 3.0}}
    changes = apply(params, choices, cfg, models=models)
    assert sum(".model." in c for c in changes) == 4  # 2 entries x 2 keys
    tuned = load_config(params_path=params)
    for b in ("jester-shot10", "jester-shot20"):
        model = benchmark_config(tuned, b).model
        assert (model.item_offsets, model.item_decay) == ("bias", 3.0)
    other = "movielens100k-shot10"
    assert benchmark_config(tuned, other).model == benchmark_config(cfg, other).model
    assert apply(params, choices, cfg, models=models) == []


def test_the_tuning_doc_is_the_committed_sweeps():
    from metalearn.tuning import tables_doc

    root = default_params_path().parent
    doc = (root / "docs/tuning.md").read_text()
    assert doc == tables_doc(root, load_config().tune.benchmarks), (
        "run: python -m metalearn.tuning tables > docs/tuning.md"
    )
