"""The report's tables, checks and protocol notes, on hand-made evaluation results."""

from metalearn import published
from metalearn.config import load_config
from metalearn.report import (
    FAMILIES,
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
    counts = {"base_classes": {"train": 162, "val": 20, "test": 60}, "images": 4840}
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
        "| cosmixture-shot50 | 5; 50; 50 | 5, 50 | 0.01 | 16 | 30 (maml 70) | MLP [40, 40] |"
        in text
    )
