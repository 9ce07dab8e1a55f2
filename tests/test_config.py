"""metalearn.config: loading params.yaml with Hydra, validation errors, learner options, CLI."""

import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from metalearn.algorithms import NAMES as LEARNERS
from metalearn.config import (
    Config,
    ConfigError,
    all_benchmarks,
    benchmark_config,
    build_config,
    load_config,
    parse_benchmark,
    split_cli,
)
from metalearn.config.learners import check_learners, eval_steps, learner_options, learner_section
from metalearn.runtime import resolve_device

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def load(*overrides: str) -> Config:
    """params.yaml with ``overrides``, its learners' sections checked too (as stage resolve)."""
    cfg = load_config(list(overrides), params_path=PARAMS)
    check_learners(cfg)
    return cfg


def raw_params() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def write_params(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------ loading


def test_real_params_load_and_validate():
    cfg = load()
    assert isinstance(cfg, Config)
    assert set(cfg.pipeline.learners) <= set(LEARNERS)
    assert set(cfg.pipeline.benchmarks) <= set(all_benchmarks(cfg))
    assert isinstance(cfg.algo.inner_lr, float) and isinstance(cfg.train.meta_lr, float)
    assert isinstance(cfg.data.cosmixture.domain, tuple)
    assert cfg.train.seed == raw_params()["train"]["seed"]


def test_override_and_repeated_calls():
    assert load("algo.steps=100").algo.steps == 100
    assert load("algo.steps=7").algo.steps == 7  # Hydra is re-initialised on every call
    assert load().algo.steps == raw_params()["algo"]["steps"]


def test_default_path_found_from_the_working_directory(tmp_path, monkeypatch):
    data = raw_params()
    data["train"]["seed"] = 1234
    write_params(tmp_path, data)
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path / "sub" / "dir")
    assert load_config().train.seed == 1234


def test_default_path_prefers_the_working_directory_over_dvc_root(tmp_path, monkeypatch):
    """A temporary or queued experiment runs in a copy whose params.yaml has the -S changes,
    while DVC sets DVC_ROOT to the parent repository."""
    parent, copy = tmp_path / "repo", tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "x"
    for root, seed in ((parent, 1), (copy, 2)):
        data = raw_params()
        data["train"]["seed"] = seed
        root.mkdir(parents=True, exist_ok=True)
        write_params(root, data)
    monkeypatch.setenv("DVC_ROOT", str(parent))
    monkeypatch.chdir(copy)
    assert load_config().train.seed == 2


def test_default_path_falls_back_to_dvc_root(tmp_path, monkeypatch):
    data = raw_params()
    data["train"]["seed"] = 99
    (tmp_path / "root").mkdir()
    write_params(tmp_path / "root", data)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "root"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # no params.yaml above it
    assert load_config().train.seed == 99


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(params_path=tmp_path / "params.yaml")


# --------------------------------------------------------------------------------- bad values

BAD_OVERRIDES = [
    ("algo.steps=0", "algo.steps", "0"),
    ("algo.inner_lr=-1", "algo.inner_lr", "-1"),
    ("algo.imaml.lam=0", "algo.imaml.lam", "0"),
    ("algo.imaml.cg_steps=0", "algo.imaml.cg_steps", "0"),
    ("algo.adjoint.scheme=rk4", "algo.adjoint.scheme", "'rk4'"),
    ("algo.adjoint.trajectory=foo", "algo.adjoint.trajectory", "'foo'"),
    ("algo.adjoint.checkpoint_every=0", "algo.adjoint.checkpoint_every", "0"),
    ("algo.maml.steps=0", "algo.maml.steps", "0"),
    ("algo.reptile.inner_lr=0", "algo.reptile.inner_lr", "0"),
    ("algo.adapt=some", "algo.adapt", "'some'"),
    ("train.meta_lr=0", "train.meta_lr", "0"),
    ("train.meta_batch=0", "train.meta_batch", "0"),
    ("train.iterations=0", "train.iterations", "0"),
    ("train.val_every=0", "train.val_every", "0"),
    ("train.device=gpu", "train.device", "'gpu'"),
    ("eval.tasks=0", "eval.tasks", "0"),
    ("eval.steps=0", "eval.steps", "0"),
    ("eval.confidence=1", "eval.confidence", "1"),
    ("eval.confidence=0", "eval.confidence", "0"),
    ("model.hidden=[]", "model.hidden", "[]"),
    ("model.hidden=[40,0]", "model.hidden[1]", "0"),
    ("model.activation=gelu", "model.activation", "'gelu'"),
    ("data.cosmixture.settings.shot50.shots=0", "data.cosmixture.settings.shot50.shots", "0"),
    ("data.alpine.settings.shot50.queries=0", "data.alpine.settings.shot50.queries", "0"),
    ("data.cosmixture.dim=0", "data.cosmixture.dim", "0"),
    ("data.alpine.functions.test=0", "data.alpine.functions.test", "0"),
    ("data.cosmixture.domain=[1.0,-1.0]", "data.cosmixture.domain", "[1.0, -1.0]"),
    ("data.cosmixture.domain=[1.0,1.0]", "data.cosmixture.domain", "[1.0, 1.0]"),
    ("data.cosmixture.amplitude=[2.0,1.0]", "data.cosmixture.amplitude", "[2.0, 1.0]"),
    ("data.alpine.phase=[1.0]", "data.alpine.phase", "[1.0]"),
    ("pipeline.learners=[maml,foo]", "pipeline.learners[1]", "'foo'"),
    ("pipeline.learners=[maml,maml]", "pipeline.learners", "'maml'"),
    ("pipeline.learners=[]", "pipeline.learners", "[]"),
    (
        "+pipeline.benchmarks.cosmixture-shot7={dataset:cosmixture,setting:shot7}",
        "pipeline.benchmarks.cosmixture-shot7",
        "cosmixture-shot50",
    ),
    (
        "pipeline.benchmarks.alpine-shot50.setting=shot100",
        "pipeline.benchmarks.alpine-shot50",
        "setting: shot50",
    ),
    # wrong types: a string, a bool and a float are not integers; a bool is not a number
    ("algo.steps=abc", "algo.steps", "'abc'"),
    ("algo.steps=true", "algo.steps", "true"),
    ("algo.steps=2.5", "algo.steps", "2.5"),
    ("algo.steps=2.0", "algo.steps", "2.0"),
    ("algo.steps=null", "algo.steps", "null"),
    ("algo.inner_lr=false", "algo.inner_lr", "false"),
    ("algo.inner_lr=nan", "algo.inner_lr", "nan"),
    ("train.seed=1.5", "train.seed", "1.5"),
    # unknown keys: rejected by Hydra, or (with '+', which adds a key) by the validation
    ("algo.stepz=3", "algo.stepz", "steps, inner_lr"),
    ("+algo.stepz=3", "algo.stepz", "steps, inner_lr"),
    ("++train.foo=1", "train.foo", "meta_lr"),
    ("+extra=1", "extra", "pipeline, algo"),
    ("data.cosmixture.settings.shot50.shotz=1", "settings.shot50.shotz", "shots, queries"),
]


@pytest.mark.parametrize(("override", "key", "value"), BAD_OVERRIDES)
def test_bad_value_names_key_and_value(override, key, value):
    with pytest.raises(ConfigError) as info:
        load(override)
    message = str(info.value)
    assert key in message and value in message, message


def test_error_messages_say_what_is_allowed():
    cases = {
        "algo.steps=0": "algo.steps = 0: must be an integer >= 1",
        "train.device=gpu": "train.device = 'gpu': must be one of auto, cpu, cuda",
        "+algo.foo=1": "unknown key 'algo.foo' (valid: steps, inner_lr, adapt,",
        "pipeline.learners=[maml,foo]": "must be one of " + ", ".join(LEARNERS),
        "eval.confidence=1.5": "eval.confidence = 1.5: must be a number < 1",
        "eval.confidence=nan": "eval.confidence = nan: must be finite",
        "train.seed=true": "train.seed = true: must be an integer",
        "algo.stepz=3": "valid keys under 'algo': steps, inner_lr",
    }
    for override, expected in cases.items():
        with pytest.raises(ConfigError) as info:
            load(override)
        assert expected in str(info.value), str(info.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_eval_tasks_at_most_the_meta_test_tasks():
    cfg = load()
    datasets = [parse_benchmark(cfg, b)[0] for b in cfg.pipeline.benchmarks]
    available = min(getattr(cfg.data, d).meta_test_tasks for d in datasets)
    assert load(f"eval.tasks={available}").eval.tasks == available
    with pytest.raises(ConfigError, match=f"eval.tasks = {available + 1}.*only {available}"):
        load(f"eval.tasks={available + 1}")


def test_unparsable_override():
    with pytest.raises(ConfigError, match="cannot parse"):
        load("algo.steps=[1,")


def test_accepted_values():
    cfg = load("algo.inner_lr=1", "algo.maml.steps=null", "data.cosmixture.amplitude=[0.5,0.5]")
    assert cfg.algo.inner_lr == 1.0 and isinstance(cfg.algo.inner_lr, float)
    assert cfg.data.cosmixture.amplitude == (0.5, 0.5)


def test_override_of_a_setting_and_a_new_setting():
    cfg = load("data.cosmixture.settings.shot50.shots=20")
    assert cfg.data.cosmixture.settings["shot50"].shots == 20
    cfg = load("+data.cosmixture.settings.shot10={shots:10,queries:10}")
    assert "cosmixture-shot10" in all_benchmarks(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_cuda_device_without_gpu():
    with pytest.raises(ConfigError, match="train.device = 'cuda'.* no CUDA GPU is visible"):
        load("train.device=cuda")


def test_resolve_device():
    assert resolve_device(load("train.device=cpu").train) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(load("train.device=auto").train).type == expected


# ------------------------------------------------------------------------- edited params.yaml


def test_unknown_top_level_key_in_file(tmp_path):
    data = raw_params()
    data["extra"] = {"x": 1}
    with pytest.raises(ConfigError, match=r"unknown key 'extra' \(valid: pipeline, algo"):
        load_config(params_path=write_params(tmp_path, data))


def test_missing_key_in_file(tmp_path):
    data = raw_params()
    del data["train"]["seed"]
    with pytest.raises(ConfigError, match="missing key 'train.seed'"):
        load_config(params_path=write_params(tmp_path, data))


def test_bad_value_in_file(tmp_path):
    data = raw_params()
    data["data"]["cosmixture"]["settings"]["shot50"]["shots"] = 0
    with pytest.raises(ConfigError, match=r"data\.cosmixture\.settings\.shot50\.shots = 0"):
        load_config(params_path=write_params(tmp_path, data))


def test_copy_of_real_file_loads(tmp_path):
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    assert load_config(params_path=tmp_path / "params.yaml") == load()


def test_build_config_from_plain_data():
    data = raw_params()
    assert build_config(data) == load()
    data["algo"]["cg_steps"] = 3
    with pytest.raises(ConfigError, match=r"unknown key 'algo\.cg_steps'"):
        check_learners(build_config(data))


# ----------------------------------------------------------------------- learners, benchmarks


def test_learner_options_precedence():
    cfg = load("algo.steps=3", "algo.maml.steps=7", "algo.fomaml.inner_lr=0.5")
    assert k(cfg, "maml") == 7
    assert learner_options(cfg, "fomaml") == {"steps": 3, "inner_lr": 0.5}
    assert learner_options(cfg, "reptile") == {"steps": 3, "inner_lr": cfg.algo.inner_lr}


def test_learner_options_specific_keys():
    cfg = load()
    assert set(learner_options(cfg, "imaml")) == {"steps", "inner_lr", "lam", "cg_steps"}
    assert learner_options(cfg, "imaml")["lam"] == learner_section(cfg, "imaml").lam
    assert set(learner_options(cfg, "adjoint")) == {
        "steps",
        "inner_lr",
        "scheme",
        "trajectory",
        "checkpoint_every",
    }
    for learner in LEARNERS:
        assert "adapt" not in learner_options(cfg, learner)


def test_learner_options_match_the_algorithms():
    algorithms = pytest.importorskip("metalearn.algorithms")
    cfg = load()
    for learner in LEARNERS:
        algorithms.make(learner, **learner_options(cfg, learner))


def test_unknown_learner():
    with pytest.raises(ConfigError, match="unknown key 'algo.foo' .*fomaml, imaml, maml"):
        learner_options(load(), "foo")


def test_eval_steps():
    cfg = load("algo.steps=4", "algo.maml.steps=null", "algo.imaml.steps=9", "eval.steps=null")
    assert eval_steps(cfg, "maml") == 4 and eval_steps(cfg, "imaml") == 9
    assert eval_steps(load("eval.steps=12"), "imaml") == 12
    assert eval_steps(load("eval.steps=12", "algo.imaml.eval_steps=7"), "imaml") == 7


# A benchmark entry's own protocol (pipeline.benchmarks.<name>.<section>).
BENCH = "pipeline.benchmarks.cosmixture-shot50"


def test_benchmark_overrides_apply_to_that_benchmark_only():
    cfg = load(f"+{BENCH}.train.meta_batch=3", f"+{BENCH}.model.hidden=[8]")
    own, other = benchmark_config(cfg, "cosmixture-shot50"), benchmark_config(cfg, "alpine-shot50")
    assert (own.train.meta_batch, own.model.hidden) == (3, [8])
    assert (other.train.meta_batch, other.model.hidden) == (cfg.train.meta_batch, cfg.model.hidden)
    assert own.train.meta_lr == cfg.train.meta_lr  # keys not named keep the top-level value


def k(cfg, learner):
    return learner_options(cfg, learner)["steps"]


def test_benchmark_precedence_scope_before_learner():
    """benchmark.algo.<learner>.k > benchmark.algo.k > algo.<learner>.k > algo.k."""
    top = ("algo.steps=50", "algo.maml.steps=5", "algo.imaml.steps=null", "eval.steps=null")
    cfg = benchmark_config(load(*top), "cosmixture-shot50")
    assert k(cfg, "maml") == 5 and k(cfg, "imaml") == 50
    cfg = benchmark_config(load(*top, f"+{BENCH}.algo.steps=1"), "cosmixture-shot50")
    assert k(cfg, "maml") == 1 and k(cfg, "imaml") == 1
    cfg = benchmark_config(
        load(*top, f"+{BENCH}.algo.steps=1", f"+{BENCH}.algo.imaml.steps=16"), "cosmixture-shot50"
    )
    assert k(cfg, "maml") == 1 and k(cfg, "imaml") == 16
    cfg = benchmark_config(
        load(*top, "algo.imaml.eval_steps=9", f"+{BENCH}.eval.steps=3"), "cosmixture-shot50"
    )
    assert eval_steps(cfg, "imaml") == 3 and eval_steps(cfg, "maml") == 3


def test_default_protocols():
    """The papers' protocols that params.yaml encodes (comments there cite them)."""
    cfg = load()
    cf = benchmark_config(cfg, "jester-shot10")
    assert [learner_options(cf, n)["steps"] for n in ("maml", "adjoint", "imaml")] == [5, 50, 50]
    omniglot = benchmark_config(cfg, "omniglot-way5shot1")
    assert (learner_options(omniglot, "maml")["steps"], eval_steps(omniglot, "maml")) == (1, 3)
    assert learner_options(omniglot, "maml")["inner_lr"] == 0.4
    assert omniglot.train.meta_batch == 32 and eval_steps(omniglot, "imaml") == 16
    twenty = benchmark_config(cfg, "omniglot-way20shot1")
    assert (learner_options(twenty, "imaml")["steps"], twenty.train.meta_batch) == (25, 16)
    mini = benchmark_config(cfg, "miniimagenet-way5shot1")
    assert (mini.model.filters, mini.train.meta_batch, eval_steps(mini, "maml")) == (32, 4, 10)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            f"+{BENCH}.algo.stepz=3",
            r"pipeline.benchmarks.cosmixture-shot50.*unknown key 'algo.stepz'",
        ),
        (f"+{BENCH}.train.meta_batch=0", r"cosmixture-shot50.*train.meta_batch = 0: must be"),
        (
            f"+{BENCH}.data.seed=1",
            r"unknown key 'pipeline.benchmarks.cosmixture-shot50.data'.*algo, model, train",
        ),
        (f"++{BENCH}.algo=5", r"pipeline.benchmarks.cosmixture-shot50.algo = 5: must be a mapping"),
    ],
)
def test_bad_benchmark_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        load(override)


def test_unknown_benchmark_config():
    with pytest.raises(ConfigError, match="'nope' is not in pipeline.benchmarks"):
        benchmark_config(load(), "nope")


def test_parse_benchmark():
    cfg = load()
    assert parse_benchmark(cfg, "cosmixture-shot50") == ("cosmixture", "shot50")
    assert parse_benchmark(cfg, "alpine-shot100") == ("alpine", "shot100")
    assert set(all_benchmarks(cfg)) == {
        f"{d}-{s}" for d, section in raw_params()["data"].items() for s in section["settings"]
    }
    for bad in ("cosmixture-shot7", "foo-shot50", "cosmixture", ""):
        with pytest.raises(ConfigError) as info:
            parse_benchmark(cfg, bad)
        assert all(name in str(info.value) for name in all_benchmarks(cfg))


# ---------------------------------------------------------------------------------------- CLI


def test_split_cli():
    selected, overrides = split_cli(
        ["learner=imaml", "benchmark=cosmixture-shot50", "algo.steps=100", "+x.y=1"]
    )
    assert selected == {"learner": "imaml", "benchmark": "cosmixture-shot50"}
    assert overrides == ["algo.steps=100", "+x.y=1"]
    assert split_cli([]) == ({}, [])


@pytest.mark.parametrize(
    "argv", [["imaml"], ["learner=maml", "--help"], ["learner=maml", "learner=imaml"], ["learner="]]
)
def test_split_cli_errors(argv):
    with pytest.raises(ConfigError):
        split_cli(argv)


def test_pipeline_datasets_must_match_the_benchmarks():
    with pytest.raises(
        ConfigError, match=r"pipeline.datasets = \['cosmixture'\]: must list exactly"
    ):
        load("pipeline.datasets=[cosmixture]")


def test_jester_parts_are_validated():
    with pytest.raises(ConfigError, match=r"data.jester.download.parts\[0\] = 4"):
        load("data.jester.download.parts=[4]")


@pytest.mark.parametrize(
    ("text", "where"),
    [("algo:\n\tsteps: 5\n", "line 2, column 1"), ("algo: {adapt: [all}\n", "line 1, column 19")],
    ids=["tab", "bracket"],
)
def test_a_params_yaml_that_is_not_yaml_names_the_file_line_and_column(tmp_path, text, where):
    """In one line, before Hydra; every stage script prints it (tests/test_stages.py, slow)."""
    params = tmp_path / "params.yaml"
    params.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(params))}, {where}: not valid YAML"):
        load_config(params_path=params)
