"""The report's tables, checks and protocol notes, on hand-made evaluation results."""

from metalearn import published
from metalearn.config import load_config
from metalearn.report import (
    FAMILIES,
    changes_from_default,
    family_table,
    protocol_differences,
    protocol_table,
    sanity_checks,
)

LEARNERS = ["maml", "fomaml", "reptile", "imaml", "adjoint", "pretrain", "scratch"]


def result(mean, higher=False, ci=0.01, **extra):
    metric = "accuracy" if higher else "nrmse"
    return {"metric": metric, "higher_is_better": higher, "mean": mean, "ci": ci, "tasks": 100}


def results_for(benchmarks, means, higher=False, counts=None):
    """``means[learner]`` on every benchmark."""
    out = {}
    for b in benchmarks:
        out[b] = {}
        for name in LEARNERS:
            r = result(means[name], higher)
            r["counts"] = counts
            r["architecture"] = "conv4" if higher else "mlp"
            out[b][name] = r
    return out


MEANS = {
    "maml": 0.10,
    "fomaml": 0.20,
    "reptile": 0.31,
    "imaml": 0.12,
    "adjoint": 0.09,
    "pretrain": 0.25,
    "scratch": 0.30,
}


def test_cf_table_has_the_paper_layout_and_its_published_numbers():
    cfg = load_config()
    results = results_for(published.CF, MEANS)
    text = family_table(FAMILIES[0], results, cfg)
    header = next(line for line in text.splitlines() if line.startswith("| learner"))
    assert header.split(" | ")[1:3] == ["Jester-1 10shot-15val", "Jester-1 20shot-30val"]
    assert "| adjoint | **0.090 ± 0.010** |" in text  # best in bold
    assert "0.310 ± 0.010 †" in text  # reptile does not beat scratch (0.30)
    assert "Adjoint MAML paper, Table 1" in text
    assert "| A-MAML (ours: adjoint) | 0.074 ± 0.005 | 0.027 ± 0.002 |" in text


def test_cf_table_2_is_shown_for_its_protocol():
    results = results_for(published.CF, MEANS)
    cfg = load_config(["algo.steps=100", "algo.maml.steps=10"])
    assert "Table 2" in family_table(FAMILIES[0], results, cfg)
    assert "Table 1" in family_table(FAMILIES[0], results, load_config())


def test_classification_table_in_percent_with_the_batch_norm_note():
    means = {k: 1 - v for k, v in MEANS.items()}
    results = results_for(["omniglot-way5shot1", "miniimagenet-way5shot1"], means, higher=True)
    text = family_table(FAMILIES[1], results, load_config())
    assert "| maml | 90.0 ± 1.0 |" in text
    assert "| MAML (ours: maml) | 98.7 ± 0.4 | 48.7 ± 1.84 |" in text
    assert "iMAML paper, Table 3" in text and published.BATCH_NORM_NOTE in text


def test_sanity_checks():
    results = results_for(["omniglot-way5shot1"], {k: 1 - v for k, v in MEANS.items()}, True)
    checks = sanity_checks(results)
    assert checks["not_beating_scratch"] == ["reptile-omniglot-way5shot1"]
    assert checks["omniglot_maml"] == {"accuracy": 0.9, "target": 0.95, "ok": False}
    results["omniglot-way5shot1"]["maml"]["mean"] = 0.96
    assert sanity_checks(results)["omniglot_maml"]["ok"]


def test_protocol_differences_name_each_change_and_the_data():
    counts = {  # as episodify writes them (meta.json)
        "base_classes": {"train": 162, "val": 20, "test": 60},
        "images": {"train": 3240, "val": 400, "test": 1200},
    }
    results = results_for(["omniglot-way5shot1"], MEANS, higher=True, counts=counts)
    entry = "++pipeline.benchmarks.omniglot-way5shot1"
    cfg = load_config([f"{entry}.train.meta_batch=8", f"{entry}.model.filters=32"])
    (line,) = protocol_differences(cfg, results)
    assert "meta-batch 8 (paper 32)" in line and "Conv4 filters 32 (paper 64)" in line
    assert "242 characters (paper 1,623)" in line
    assert protocol_differences(load_config(), results_for(["omniglot-way5shot1"], MEANS)) == []


def test_protocol_table_shows_per_learner_budgets():
    entry = "++pipeline.benchmarks.cosmixture-shot50"
    cfg = load_config([f"{entry}.train.iterations=30", f"{entry}.algo.maml.iterations=70"])
    text = protocol_table(cfg, results_for(["cosmixture-shot50"], MEANS))
    assert (
        "| cosmixture-shot50 | 5/50/50/50/50 | 5/50/50/50/50 | 0.01 | 16 | 30 (maml 70) "
        "| MLP [40, 40] |" in text
    )


def test_write_report_on_every_benchmark_of_the_cpu_recipe(tmp_path):
    """The whole report from hand-made outputs of all 16 benchmarks x 7 learners."""
    import json

    import polars as pl

    from metalearn import paths
    from metalearn.recipe import RECIPES
    from metalearn.report import write_report

    cfg = load_config(RECIPES["cpu"].overrides)
    (tmp_path / "results/train").mkdir(parents=True)
    for b in cfg.pipeline.benchmarks:
        higher = b.startswith(("omniglot", "miniimagenet"))
        evaluation = {}
        for i, name in enumerate(cfg.pipeline.learners):
            mean = 0.5 + 0.05 * i if higher else 0.3 - 0.02 * i
            r = result(mean, higher) | {"mlflow_run_id": "none", "seconds": 1.0}
            evaluation[name] = r
            train = {"device": "cpu", "seconds": 2.0}
            (tmp_path / paths.train_metrics(name, b)).write_text(json.dumps(train))
            curve = tmp_path / paths.train_curve(name, b)
            curve.parent.mkdir(parents=True, exist_ok=True)
            rows = [0] if name == "scratch" else [1, 2]
            metric = f"meta_val_{r['metric']}"
            pl.DataFrame({"iteration": rows, metric: [mean] * len(rows)}).write_csv(curve)
        (tmp_path / paths.eval_metrics(b)).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / paths.eval_metrics(b)).write_text(json.dumps(evaluation))
    summary = write_report(cfg, root=tmp_path, log_plots=False)
    text = (tmp_path / paths.SUMMARY_MD).read_text()
    for title in ("Collaborative filtering", "Few-shot classification", "Synthetic regression"):
        assert f"### {title}" in text
    row = "| omniglot-way5shot1 | 1/1/5/16/1 | 3/3/5/16/3 | 0.4/0.4/0.4/0.1/0.4 | 32 "
    row += "| 40 (maml 1000) |"
    assert row in text
    assert summary["provenance"]["train_seconds"] == 2.0 * 7 * 16
    assert len(list((tmp_path / paths.PLOTS).glob("*.png"))) == 2 * 16


def test_changes_from_the_default_protocol_name_key_value_and_benchmarks():
    entry = "++pipeline.benchmarks.omniglot-way5shot1"
    cfg = load_config(["train.meta_lr=0.01", f"{entry}.model.filters=32"])
    results = results_for(["omniglot-way5shot1", "cosmixture-shot50"], MEANS)
    lines = changes_from_default(cfg, load_config(), results)
    assert "`train.meta_lr` = 0.01 (default 0.001): every benchmark" in lines
    assert "`model.filters` = 32 (default 64): omniglot-way5shot1" in lines
    assert len(lines) == 2
    assert changes_from_default(load_config(), load_config(), results) == []


def test_best_learner_per_benchmark_against_the_papers():
    from metalearn.report import best_against_published, best_table

    cfg = load_config([])
    cf = results_for(published.CF, MEANS)
    classification = results_for(["omniglot-way5shot1"], {**MEANS, "scratch": 0.97}, higher=True)
    best = best_against_published({**cf, **classification}, cfg)
    jester = best["jester-shot10"]  # lowest nRMSE: adjoint 0.09; Table 1: A-MAML 0.074
    assert (jester["learner"], jester["best_published_row"]) == ("adjoint", "A-MAML")
    assert jester["same_learner_published"] == 0.074
    assert jester["gap_to_best"] == 0.09 - 0.074
    omniglot = best["omniglot-way5shot1"]  # highest accuracy: scratch 97 % (no paper row)
    assert omniglot["learner"] == "scratch" and omniglot["same_learner_published"] is None
    assert omniglot["best_published_row"] == "iMAML, Hessian-Free"
    assert round(omniglot["gap_to_best"], 6) == round(97.0 - 99.50, 6)
    text = best_table(best)
    assert "| jester-shot10 | adjoint | 0.090 ± 0.010 | 0.074 | +0.016 | 0.074 (A-MAML) |" in text
    row = "| omniglot-way5shot1 | scratch | 97.0 ± 1.0 | – | – | 99.5 (iMAML, Hessian-Free) |"
    row += " -2.5 |"
    assert row in text
    assert "alpine-shot50" not in best  # no published numbers
