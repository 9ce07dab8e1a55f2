"""Synthetic families: determinism, ranges, formulas, splits, standardisation, Parquet format."""

from pathlib import Path

import polars as pl
import pytest
import torch
import yaml

from metalearn.data.synthetic import (
    Alpine,
    CosMixture,
    Family,
    frame_to_tasks,
    make_family,
    read_tasks,
    sample_tasks,
    split_functions,
    standardize,
    target_stats,
    tasks_to_frame,
    write_tasks,
)

PARAMS = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())["data"]
NAMES = ["cosmixture", "alpine"]
SMALL = {"train": 50, "val": 10, "test": 10}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def family(name: str) -> Family:
    return make_family(name, PARAMS[name])


def test_make_family_from_params_yaml():
    cos = family("cosmixture")
    assert isinstance(cos, CosMixture) and isinstance(cos, Family)
    assert (cos.dim, cos.n_params, cos.domain) == (2, 3, (-1.0, 1.0))
    alp = family("alpine")
    assert isinstance(alp, Alpine) and (alp.dim, alp.n_params, alp.domain) == (2, 2, (-5.0, 5.0))
    with pytest.raises(ValueError, match="unknown synthetic family"):
        make_family("sinusoid", PARAMS["alpine"])
    with pytest.raises(ValueError, match="amplitude"):
        make_family(
            "cosmixture", {k: v for k, v in PARAMS["cosmixture"].items() if k != "amplitude"}
        )
    with pytest.raises(ValueError, match="low <= high"):
        make_family("alpine", {**PARAMS["alpine"], "domain": [1.0, -1.0]})


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_functions_and_tasks(name):
    fam = family(name)
    a, b = split_functions(fam, SMALL, seed=0), split_functions(fam, SMALL, seed=0)
    for split in SMALL:
        assert torch.equal(a[split], b[split])
    assert not torch.equal(split_functions(fam, SMALL, seed=1)["train"], a["train"])
    t1 = sample_tasks(fam, a["train"], 5, 7, gen(3), torch.float64)
    t2 = sample_tasks(fam, a["train"], 5, 7, gen(3), torch.float64)
    for u, v in zip(t1[0] + t1[1], t2[0] + t2[1], strict=True):
        assert torch.equal(u, v)


@pytest.mark.parametrize("name", NAMES)
def test_ranges_shapes_and_domain(name):
    fam = family(name)
    splits = split_functions(fam, SMALL, seed=0)
    low, high = fam.param_bounds
    for split, n in SMALL.items():
        p = splits[split]
        assert p.shape == (n, fam.n_params) and p.dtype == torch.float64
        assert bool(((p >= low) & (p <= high)).all())
    (xs, ys), (xq, yq) = sample_tasks(fam, splits["val"], 5, 7, gen(1), torch.float32)
    assert xs.shape == (10, 5, 2) and ys.shape == (10, 5) and xs.dtype == torch.float32
    assert xq.shape == (10, 7, 2) and yq.shape == (10, 7)
    lo, hi = fam.domain
    assert bool(((xs >= lo) & (xs <= hi)).all()) and bool(((xq >= lo) & (xq <= hi)).all())
    # Support and query points are independent draws.
    assert not bool((xs[:, :, None, :] == xq[:, None, :, :]).all(-1).any())
    # Targets are f(x) of the task's own function.
    torch.testing.assert_close(
        ys.double(), fam.evaluate(splits["val"], xs.double()), atol=1e-6, rtol=1e-6
    )


def test_cosmixture_formula_hand_computed():
    fam = family("cosmixture")
    theta = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)  # A, omega, phi
    x = torch.tensor([[0.1, -0.2]], dtype=torch.float64)
    # -0.1 * 0.5 * (cos(3.2) + cos(2.6)) - (0.01 + 0.04)
    expected = torch.tensor([0.04275917645818503], dtype=torch.float64)
    torch.testing.assert_close(fam.evaluate(theta, x), expected)
    # Batched over functions: [2, p] with [2, n, dim].
    both = fam.evaluate(torch.stack([theta, theta]), torch.stack([x, x]))
    torch.testing.assert_close(both, expected.expand(2, 1))


def test_alpine_formula_hand_computed():
    fam = family("alpine")
    theta = torch.tensor([0.5, -0.3], dtype=torch.float64)  # phi_1, phi_2
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    # |1 sin(1.5) + 0.1| + |-2 sin(-2.3) - 0.2|
    expected = torch.tensor([2.388905410957495], dtype=torch.float64)
    torch.testing.assert_close(fam.evaluate(theta, x), expected)


@pytest.mark.parametrize("name", NAMES)
def test_splits_disjoint_and_sized_from_params(name):
    fam = family(name)
    counts = PARAMS[name]["functions"]
    splits = split_functions(fam, counts, seed=PARAMS[name]["seed"])
    assert {k: v.shape[0] for k, v in splits.items()} == counts
    rows = torch.cat(list(splits.values()))
    assert torch.unique(rows, dim=0).shape[0] == rows.shape[0]
    with pytest.raises(ValueError, match="missing"):
        split_functions(fam, {"train": 3, "val": 1}, seed=0)


@pytest.mark.parametrize("name", NAMES)
def test_train_split_and_stats_do_not_depend_on_val_test_counts(name):
    fam = family(name)
    a = split_functions(fam, SMALL, seed=0)
    b = split_functions(fam, {"train": 50, "val": 3, "test": 20}, seed=0)
    assert torch.equal(a["train"], b["train"])
    assert target_stats(fam, a["train"], gen(5)) == target_stats(fam, b["train"], gen(5))
    mean, std = target_stats(fam, a["train"], gen(5), points=200)
    assert std > 0
    # Standardised meta-train targets have about zero mean and unit variance.
    support, query = sample_tasks(fam, a["train"], 100, 100, gen(6), torch.float64)
    _, y = standardize(support, mean, std)
    assert abs(float(y.mean())) < 0.1 and abs(float(y.std()) - 1) < 0.1


@pytest.mark.parametrize("name", NAMES)
def test_parquet_round_trip(name, tmp_path):
    fam = family(name)
    fns = split_functions(fam, SMALL, seed=0)["test"]
    support, query = sample_tasks(fam, fns, 5, 7, gen(2), torch.float64)
    df = tasks_to_frame(support, query)
    assert df.columns == ["task", "role", "point", "x0", "x1", "y"]
    assert df.height == 10 * 12
    assert df.schema["task"] == pl.Int64 and df.schema["y"] == pl.Float64
    path = tmp_path / "tasks.parquet"
    write_tasks(path, support, query)
    back = read_tasks(path)
    for u, v in zip(support + query, back[0] + back[1], strict=True):
        assert torch.equal(u, v)
    # Row order does not matter for reading.
    shuffled = frame_to_tasks(pl.read_parquet(path).sample(fraction=1.0, shuffle=True, seed=0))
    for u, v in zip(support + query, shuffled[0] + shuffled[1], strict=True):
        assert torch.equal(u, v)


def test_frame_validation_errors():
    fam = family("alpine")
    fns = split_functions(fam, SMALL, seed=0)["val"][:3]
    df = tasks_to_frame(*sample_tasks(fam, fns, 4, 2, gen(0), torch.float64))
    with pytest.raises(ValueError, match=r"missing columns \['y'\]"):
        frame_to_tasks(df.drop("y"))
    with pytest.raises(ValueError, match="no input columns"):
        frame_to_tasks(df.drop(["x0", "x1"]))
    with pytest.raises(ValueError, match="different numbers of support rows"):
        frame_to_tasks(df.filter(~((pl.col("task") == 1) & (pl.col("point") == 3))))
    with pytest.raises(ValueError, match="unknown roles"):
        frame_to_tasks(df.with_columns(pl.lit("train").alias("role")))
    with pytest.raises(ValueError, match="point indices"):
        frame_to_tasks(df.with_columns(pl.col("point") * 2))
    with pytest.raises(ValueError, match="null"):
        frame_to_tasks(
            df.with_columns(
                pl.when(pl.col("point") == 0).then(None).otherwise(pl.col("y")).alias("y")
            )
        )
