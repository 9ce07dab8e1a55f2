"""Every recipe's overrides compose into a valid config, and the command is what it runs."""

import shutil

import pytest

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
