"""Resolved specs (stage resolve): a cell's spec changes exactly when a value it uses does."""

import ast
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metalearn import paths
from metalearn.cell import TrainCell
from metalearn.config import ConfigError, benchmark_config, flatten, load_config
from metalearn.config.learners import learner_section as section
from metalearn.spec import (
    all_cells,
    all_specs,
    dumps,
    evaluate_spec,
    read_cell,
    train_cell,
    train_spec,
    write_specs,
)

ROOT = Path(__file__).resolve().parents[1]
B = "cosmixture-shot50"


def spec_of(overrides, learner="imaml", benchmark=B):
    return train_spec(load_config(overrides), learner, benchmark)


def test_algo_steps_reaches_only_the_learners_whose_k_comes_from_it():
    before = load_config(["algo.maml.steps=5", "algo.steps=10"])
    after = load_config(["algo.maml.steps=5", "algo.steps=100"])
    changed = {
        lr
        for lr in before.pipeline.learners
        if train_spec(before, lr, B) != train_spec(after, lr, B)
    }
    assert changed == set(before.pipeline.learners) - {"maml", "mamlpp"}  # their own K = 5
    assert train_spec(after, "imaml", B)["algo"]["steps"] == 100
    assert train_spec(after, "maml", B)["algo"]["steps"] == 5


def test_a_benchmark_entry_beats_the_top_level_keys_in_the_spec():
    spec = spec_of(["algo.inner_lr=0.5"], "maml")
    assert spec["algo"]["inner_lr"] == 0.03  # cosmixture-shot50's own algo.maml.inner_lr
    assert (
        spec_of(["++pipeline.benchmarks.cosmixture-shot50.train.meta_batch=7"])["train"][
            "meta_batch"
        ]
        == 7
    )


@pytest.mark.parametrize(
    "override",
    [
        "data.jester.val_tasks=7",  # another dataset (and data reaches train through episodes)
        "eval.tasks=9",  # meta-test only
        "tune.iterations=3",
        "efficiency.repeats=2",
        "algo.fomaml.steps=3",  # another learner
        "train.workers=2",  # how many seeds at once: the same numbers
        "++pipeline.benchmarks.alpine-shot50.train.seeds=1",  # another benchmark
    ],
)
def test_a_value_the_train_cell_does_not_use_leaves_its_spec_alone(override):
    assert spec_of([override]) == spec_of([])


def test_every_value_of_the_sections_train_reads_is_in_its_spec():
    """Each leaf of model, train (but workers) and algo.adapt/algo.imaml moves the spec."""
    cfg = benchmark_config(load_config(), B)
    leaves = flatten({
        "model": dataclasses.asdict(cfg.model),
        "train": dataclasses.asdict(cfg.train),
        "algo": {"adapt": cfg.algo.adapt, "imaml": dataclasses.asdict(section(cfg, "imaml"))},
    })  # fmt: skip
    base = spec_of([])
    other = {"auto": "cpu", "tanh": "relu", "head": "all", "all": "head", "factors": "mlp"}
    other |= {"constant": "cosine", "zero": "bias"}
    for key, value in leaves.items():
        if key in ("train.workers", "algo.imaml.eval_steps"):
            continue  # not a training value: see the test above; eval_steps is meta-test's
        if key.endswith(("iterations", "meta_lr")) and key.startswith("train."):
            continue  # resolved into algo (the learner's own key beats it here)
        if isinstance(value, list):
            new = f"[{','.join(str(v + 1) for v in value)}]"
        elif key == "train.compile":  # auto: on for this run's 10,000 iterations
            new = "false"
        elif isinstance(value, str):
            new = other[value]
        elif value is None:
            new = "7"
        else:
            new = str(value + 1 if isinstance(value, int) else value * 2 or 1.0)
        entry = f"++pipeline.benchmarks.{B}.{key}={new}"
        if key == "train.meta_lr_floor":  # the floor of the cosine schedule, in its spec
            cosine = f"++pipeline.benchmarks.{B}.train.meta_lr_schedule=cosine"
            assert spec_of([cosine, entry.replace("=0.0", "=0.5")]) != spec_of([cosine]), key
            continue
        assert spec_of([entry]) != base, f"{key} does not reach the train spec"


def test_the_training_code_never_sees_the_config():
    """The train path (training, parallel) takes a resolved TrainCell, never the config: a value
    it read from the config could escape the spec, and DVC would miss its changes. From
    metalearn.config it may import the model section's type only."""
    for module in ("training", "parallel"):
        tree = ast.parse((ROOT / f"src/metalearn/{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "metalearn.config":
                assert {a.name for a in node.names} <= {"ModelConfig"}, f"{module}.py"
            assert not (isinstance(node, ast.Name) and node.id == "cfg"), (
                f"{module}.py uses a cfg (line {node.lineno})"
            )


def test_a_cells_spec_holds_every_field_but_workers():
    """What the spec leaves out cannot change the numbers: the worker count, the name of the
    stage that trains the cell, and the keys its fix hints name. (A constant outer step size
    leaves the schedule's fields out: the floor does not change its numbers.)"""
    cell = train_cell(load_config(["train.meta_lr_schedule=cosine"]), "imaml", B)
    leaves = set(flatten(cell.spec()))
    for field in dataclasses.fields(cell):
        found = {leaf for leaf in leaves if leaf.split(".")[-1] == field.name}
        found |= {leaf for leaf in leaves if leaf.split(".")[0] == field.name}
        if field.name == "options":
            found = {f"algo.{k}" for k in cell.options} & leaves
        assert bool(found) == (field.name not in ("workers", "stage", "keys")), field.name


def test_evaluate_spec_names_its_learners_and_their_meta_test_k():
    cfg = load_config(["eval.steps=7", "algo.maml.eval_steps=2"])
    spec = evaluate_spec(cfg, "movielens100k-shot10")
    assert set(spec["learners"]) == set(cfg.pipeline.learners) | {"bias"}
    assert spec["learners"]["maml"]["eval_steps"] == 2
    assert spec["learners"]["imaml"]["eval_steps"] == 7
    assert spec["eval"]["tasks"] == cfg.eval.tasks


def test_resolve_writes_a_spec_for_every_cell_of_dvc_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    count = write_specs(cfg)
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json"))
    assert count == len(files) == len(all_specs(cfg))
    p = cfg.pipeline
    expected = len(p.learners) * len(p.benchmarks) + len(p.cf_learners) * len(p.cf_benchmarks)
    assert len(list((tmp_path / "configs/train").iterdir())) == expected
    found = json.loads(paths.train_spec("maml", B).read_text())
    assert dumps(found["spec"]) == dumps(train_spec(cfg, "maml", B))
    assert read_cell(paths.train_spec("maml", B), TrainCell) == train_cell(cfg, "maml", B)
    for path, cell in all_cells(cfg).items():  # every kind reads back: its stage would refuse it
        assert read_cell(path, type(cell)).spec() == cell.spec(), path


def test_a_hand_edited_cell_file_is_refused_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_specs(load_config())
    path = paths.train_spec("maml", B)
    found = json.loads(path.read_text())
    found["cell"]["meta_lr"] *= 2
    path.write_text(json.dumps(found))
    with pytest.raises(ConfigError, match=r"its spec is not that of its cell.*dvc repro resolve"):
        read_cell(path, TrainCell)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"is missing; re-create it: dvc repro resolve"):
        read_cell(path, TrainCell)


def test_a_typo_anywhere_in_params_fails_resolve_and_keeps_the_old_specs(tmp_path):
    """Through the stage script, in a copy: an unknown top-level key no stage reads."""
    for name in ("params.yaml", "pipeline/resolve.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "src", tmp_path / "src")
    run = [sys.executable, "pipeline/resolve.py"]
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before = {p: p.read_bytes() for p in (tmp_path / "configs").rglob("*.json")}
    with open(tmp_path / "params.yaml", "a") as f:
        f.write("algo_steps: 10\n")
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "algo_steps" in done.stderr and "pipeline" in done.stderr
    assert "Traceback" not in done.stderr
    assert {p: p.read_bytes() for p in (tmp_path / "configs").rglob("*.json")} == before
