"""Every recipe's overrides compose into a valid config, and the command is what it runs."""

import os
import shutil
import subprocess
import time

import pytest
import yaml

from metalearn.config import load_config
from metalearn.recipe import RECIPES, command


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_overrides_make_a_valid_config(name):
    cfg = load_config(RECIPES[name].overrides)
    assert cfg.pipeline.benchmarks


def test_mirror_recipe_covers_every_real_dataset():
    cfg = load_config(RECIPES["mirror-data"].overrides)
    assert set(cfg.pipeline.datasets) == {
        "jester",
        "movielens100k",
        "movielens1m",
        "omniglot",
        "miniimagenet",
    }
    assert len(cfg.pipeline.benchmarks) == 12
    assert cfg.data.jester.download.parts == [1]


def test_command_passes_each_override_as_one_argument():
    cmd = command("mirror-data", ["--temp"])
    assert cmd[:5] == ["dvc", "exp", "run", "-n", "mirror-data"]
    assert cmd.count("-S") == len(RECIPES["mirror-data"].overrides)
    assert cmd[-2:] == ["--temp", "episodify"]


@pytest.mark.parametrize("name", ["tune-cpu", "study-cpu"])
def test_the_cf_recipes_hold_the_ten_cf_and_synthetic_benchmarks_with_their_protocols(name):
    cfg = load_config(RECIPES[name].overrides)
    assert len(cfg.pipeline.benchmarks) == 10
    assert {e.dataset for e in cfg.pipeline.benchmarks.values()} == set(cfg.pipeline.datasets)
    assert cfg.pipeline.benchmarks["movielens1m-shot20"].algo["adapt"] == "head"
    assert cfg.pipeline.cf_benchmarks and set(cfg.tune.benchmarks) <= set(cfg.pipeline.benchmarks)


def test_the_smoke_params_are_valid_and_train_every_learner(tmp_path):
    from metalearn import smoke

    shutil.copy(smoke.ROOT / "params.yaml", tmp_path / "params.yaml")
    smoke.set_params(tmp_path, smoke.SMOKE)
    cfg = load_config(params_path=tmp_path / "params.yaml")
    assert list(cfg.pipeline.benchmarks) == [smoke.BENCHMARK]
    assert cfg.pipeline.learners == load_config().pipeline.learners
    assert cfg.train.iterations <= 10 and not cfg.pipeline.cf_benchmarks


def test_smoke_refuses_to_replace_the_checkout():
    from metalearn import smoke

    for target in (smoke.ROOT, smoke.ROOT.parent):
        with pytest.raises(SystemExit):
            smoke.main(["--dir", str(target)])
    assert (smoke.ROOT / "params.yaml").is_file()


def test_set_params_is_seen_by_git_checkout_within_one_second(tmp_path):
    """The pipeline tests edit params.yaml right after `git checkout HEAD -- .` restored it and
    expect the next restore to undo the edit. An in-place write of the same size in the same
    second (here: the old mtime put back, ctime ignored) looks clean to git once DVC's autostage
    has rewritten the index; a new file does not (its inode differs)."""
    from metalearn import smoke

    params = tmp_path / "params.yaml"
    params.write_text("data:\n  seed: 0\n")
    past = params.stat().st_mtime_ns - 10**10  # older than the index git will write
    os.utime(params, ns=(past, past))
    git = ["git", "-c", "core.trustctime=false", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "params.yaml"], ["commit", "-qm", "params"]):
        subprocess.run([*git, *cmd], cwd=tmp_path, check=True)
    smoke.set_params(tmp_path, {"data.seed": 7})
    os.utime(params, ns=(past, past))
    subprocess.run([*git, "checkout", "HEAD", "--", "."], cwd=tmp_path, check=True)
    assert yaml.safe_load(params.read_text()) == {"data": {"seed": 0}}


def test_run_captured_returns_when_the_command_exits_not_when_its_children_do(tmp_path):
    """`dvc exp run --run-all` forks queue workers that inherit its stdout; CI once waited 900 s
    on a pipe they held after dvc had exited 0. A child that outlives its parent must not hold
    up the capture."""
    from metalearn import smoke

    start = time.monotonic()
    done = smoke.run_captured(
        ["sh", "-c", "sleep 20 & echo started; echo oops >&2"], tmp_path, os.environ, timeout=15
    )
    assert time.monotonic() - start < 10
    assert (done.returncode, done.stdout, done.stderr) == (0, "started\n", "oops\n")


def test_the_table_2_recipe_runs_the_cf_benchmarks_at_its_k_and_reports_against_it():
    from metalearn.config import benchmark_config
    from metalearn.config.learners import learner_options
    from metalearn.report.families import FAMILIES

    cfg = load_config(RECIPES["study-cpu-table2"].overrides)
    assert {e.dataset for e in cfg.pipeline.benchmarks.values()} == {
        "jester",
        "movielens100k",
        "movielens1m",
    }
    entry = benchmark_config(cfg, "movielens1m-shot20")
    steps = {lr: learner_options(entry, lr)["steps"] for lr in ("maml", "mamlpp", "adjoint")}
    assert steps == {"maml": 10, "mamlpp": 10, "adjoint": 100}
    assert "Table 2" in FAMILIES[0].published(cfg)[0].source
    assert "Table 1" in FAMILIES[0].published(load_config(RECIPES["study-cpu"].overrides))[0].source


def test_the_images_recipe_gives_every_learner_the_same_budget_on_5_way_omniglot():
    from metalearn.config import benchmark_config
    from metalearn.config.learners import iterations

    cfg = load_config(RECIPES["images-cpu"].overrides)
    assert list(cfg.pipeline.benchmarks) == ["omniglot-way5shot1", "omniglot-way5shot5"]
    budgets = {
        iterations(benchmark_config(cfg, b), lr)
        for b in cfg.pipeline.benchmarks
        for lr in cfg.pipeline.learners
    }
    assert budgets == {500}


@pytest.mark.parametrize("part", ["study-cpu", "images-cpu"])
def test_the_all_families_study_holds_the_cf_synthetic_and_image_studies_cells(part):
    """study-cpu-all's cells are study-cpu's and images-cpu's, with their specs: after both ran,
    it takes every cell from the run cache."""
    from metalearn.spec import all_specs

    whole = load_config(RECIPES["study-cpu-all"].overrides)
    assert "omniglot-way5shot1" in whole.pipeline.benchmarks
    assert "movielens1m-shot20" in whole.pipeline.benchmarks
    assert not any(b.startswith("miniimagenet") for b in whole.pipeline.benchmarks)
    specs, wanted = all_specs(whole), all_specs(load_config(RECIPES[part].overrides))
    trained = [path for path in wanted if "/train/" in str(path) or "/evaluate/" in str(path)]
    assert len(trained) > 10 and all(specs.get(path) == wanted[path] for path in trained)


def test_the_cf_study_runs_exactly_the_cf_cells_of_the_whole_study():
    """study-cpu-cf's cells have study-cpu's specs: the whole study takes them from the run
    cache."""
    from metalearn.spec import all_specs

    cf = all_specs(load_config(RECIPES["study-cpu-cf"].overrides))
    whole = all_specs(load_config(RECIPES["study-cpu"].overrides))
    assert len(cf) > 50 and all(whole.get(path) == spec for path, spec in cf.items())
