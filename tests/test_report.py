"""The report's tables, checks and protocol notes, on hand-made evaluation results."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from metalearn import paths, published
from metalearn.config import learners_of, load_config
from metalearn.errors import DataError
from metalearn.fingerprint import fingerprint
from metalearn.recipe import RECIPES
from metalearn.report import (
    FAMILIES,
    changes_from_default,
    claims_section,
    compare_all,
    family_table,
    paired_table,
    paper_claims,
    protocol_differences,
    protocol_table,
    sanity_checks,
    write_report,
)
from metalearn.report.recheck import recheck

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
TASK_NOISE = np.random.default_rng(0).normal(0.0, 0.05, 20)  # shared: every difference is exact
ALL_USERS_NOISE = np.random.default_rng(1).normal(0.0, 0.05, 50)
TASK_NOISE -= TASK_NOISE.mean()  # per-task means equal the evaluation's
# added to maml's scores: mean 0, signs mixed, so maml is not significantly worse than adjoint
MAML_SPREAD = 0.1 * np.tile([1.0, -1.0], 10) * np.linspace(1.0, 2.0, 20)
MAML_SPREAD -= MAML_SPREAD.mean()


def scores_for(results, maml_ties=False):
    """Per-task scores with each learner's mean of ``results``; ``maml_ties``: maml is not
    significantly worse than adjoint (the best)."""
    scores = {}
    for b, by_learner in results.items():
        scores[b] = {name: r["mean"] + TASK_NOISE for name, r in by_learner.items()}
        if maml_ties:
            scores[b]["maml"] = scores[b]["maml"] + MAML_SPREAD
    return scores


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


def test_bold_marks_every_learner_not_significantly_worse_than_the_best():
    cfg = load_config()
    results = results_for(published.CF, MEANS)
    results["jester-shot10"]["bias"] = result(0.15)
    comparisons = compare_all(results, scores_for(results, maml_ties=True), 0.95)
    text = family_table(FAMILIES[0], results, cfg, comparisons)
    assert "| bias | 0.150 ± 0.010 | – | – |" in text  # not run on the other benchmarks
    assert "| adjoint | **0.090 ± 0.010** |" in text  # the best
    assert "| maml | **0.100 ± 0.010** |" in text  # a tie with it
    assert "| imaml | 0.120 ± 0.010 |" in text  # worse on every task
    assert "Bold: the best mean and every learner not significantly worse than it" in text
    del comparisons["jester-shot20"]  # no per-task scores: the best mean alone, said so
    text = family_table(FAMILIES[0], results, cfg, comparisons)
    assert "| maml | **0.100 ± 0.010** | 0.100 ± 0.010 | **0.100 ± 0.010** |" in text
    assert "jester-shot20: bold is the best mean alone (no per-task scores" in text


def test_paired_table_against_the_best_and_each_baseline():
    results = results_for(["jester-shot10"], MEANS)
    results["jester-shot10"]["bias"] = result(0.15)
    comparison = compare_all(results, scores_for(results, maml_ties=True), 0.95)["jester-shot10"]
    text = paired_table("jester-shot10", results, comparison)
    assert "| learner | mean | − adjoint (best) | − bias | − pretrain | − scratch |" in text
    assert "| adjoint | **0.090 ± 0.010** | – | -0.060 ± 0.000 (p<0.001) |" in text
    imaml = "| imaml | 0.120 ± 0.010 | +0.030 ± 0.000 (p<0.001) | -0.030 ± 0.000 (p<0.001) "
    assert imaml + "| -0.130 ± 0.000 (p<0.001) | -0.180 ± 0.000 (p<0.001) |" in text
    assert "| maml | **0.100 ± 0.010** | +0.010 ± 0.073 (p=0.62" in text  # not significant
    scratch = "| scratch | 0.300 ± 0.010 | +0.210 ± 0.000 (p<0.001) | +0.150 ± 0.000 (p<0.001) "
    assert scratch + "| +0.050 ± 0.000 (p<0.001) | – |" in text  # "–": against itself
    # every pair but maml's differs by a constant: nothing escapes them; maml's tie spreads
    spread = max(c.vs_best.detectable for c in comparison.learners.values())
    assert spread == comparison.learners["maml"].vs_best.detectable > 0.01
    assert (
        f"Detectable at 80% power: 0.000 (median over the table's pairs; 0.000 to {spread:.3f})"
        in text
    )


def test_paper_claims_follow_each_benchmarks_published_numbers():
    cfg = load_config()
    results = results_for(["jester-shot10", "jester-shot20", "cosmixture-shot50"], MEANS)
    claims = paper_claims(cfg, results, scores_for(results))
    verdicts = {b: {(c.better, c.worse): c.verdict for c in found} for b, found in claims.items()}
    # Table 1: iMAML 0.114 < MAML 0.120 on jester-shot10, MAML 0.036 < iMAML 0.050 on
    # jester-shot20; ours: maml 0.10 < imaml 0.12 on every task
    assert verdicts["jester-shot10"][("imaml", "maml")] == "reversed"
    assert verdicts["jester-shot20"][("maml", "imaml")] == "agrees"
    assert ("imaml", "maml") not in verdicts["jester-shot20"]
    assert verdicts["jester-shot10"][("reptile", "fomaml")] == "reversed"  # 0.270 < 0.292
    # synthetic regression, no published numbers: the ranking, Reptile and FOMAML unordered
    assert len(verdicts["cosmixture-shot50"]) == 9
    assert verdicts["cosmixture-shot50"][("imaml", "maml")] == "reversed"
    text = claims_section(cfg, claims)
    assert "| jester-shot10 | 10 | 8 | 0 | 2 |" in text
    assert "| cosmixture-shot50 | 9 | 8 | 0 | 1 |" in text
    assert "| all | 29 | 25 | 0 | 4 |" in text
    assert "| imaml better than maml | reversed: +0.020 (p<0.001) | – |" in text
    assert "| maml better than imaml | – | agrees: -0.020 (p<0.001) |" in text
    assert "Synthetic regression: the ranking (no published numbers)" in text


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


def test_a_table_2_run_is_compared_with_table_2s_protocol():
    """Under Table 2's K (100, MAML 10) the CF run is set beside Table 2: its K is no
    difference; Table 1's K with MAML at 10 is one, against Table 1's 5."""
    results = results_for(["movielens100k-shot10"], MEANS)
    table_2 = ["algo.steps=100", "algo.maml.steps=10", "algo.mamlpp.steps=10"]
    assert protocol_differences(load_config(table_2), results) == []
    (line,) = protocol_differences(load_config(["algo.maml.steps=10"]), results)
    assert line == "movielens100k-shot10: MAML K 10 (paper 5); MAML K at meta-test 10 (paper 5)"


# The study's learners before Meta-SGD: the hand-made numbers below are indexed by them.
SEVEN = ["pipeline.learners=[maml,fomaml,reptile,imaml,adjoint,pretrain,scratch]"]


def test_protocol_table_shows_per_learner_budgets():
    entry = "++pipeline.benchmarks.cosmixture-shot50"
    cfg = load_config([*SEVEN, f"{entry}.train.iterations=30", f"{entry}.algo.maml.iterations=70"])
    text = protocol_table(cfg, results_for(["cosmixture-shot50"], MEANS))
    alphas = "/".join(str(cfg.pipeline.benchmarks["cosmixture-shot50"].algo[lr]["inner_lr"])
                      for lr in ("maml", "fomaml", "reptile", "imaml", "adjoint"))  # fmt: skip
    assert (
        f"| cosmixture-shot50 | 5/50/50/50/50 | 5/50/50/50/50 | {alphas} | 16 | 30 (maml 70) "
        "| MLP [40, 40] |" in text
    )


def cpu_recipe_outputs(tmp_path):
    """Hand-made train and evaluate outputs of all 16 benchmarks x 7 learners (alpine-shot100
    without per-task scores) under ``tmp_path``; the config they belong to."""
    cfg = load_config([*RECIPES["cpu"].overrides, *SEVEN])
    (tmp_path / "results/train").mkdir(parents=True)
    for b in cfg.pipeline.benchmarks:
        higher = b.startswith(("omniglot", "miniimagenet"))
        evaluation = {}
        for i, name in enumerate(learners_of(cfg, b)):  # bias: CF only, 0.19 there
            mean = 0.5 + 0.05 * i if higher else 0.19 if name == "bias" else 0.3 - 0.02 * i
            r = result(mean, higher) | {"mlflow_run_id": "none", "seconds": 1.0}
            evaluation[name] = r
            curve = tmp_path / paths.train_curve(name, b)
            curve.parent.mkdir(parents=True, exist_ok=True)
            rows = [0] if name == "scratch" else [1, 2]
            metric = f"meta_val_{r['metric']}"
            pl.DataFrame({"iteration": rows, metric: [mean] * len(rows)}).write_csv(curve)
            train = {"device": "cpu", "seconds": 2.0, "curve": fingerprint(curve)}
            (tmp_path / paths.train_metrics(name, b)).write_text(json.dumps(train))
        if b != "alpine-shot100":  # alpine: no per-task scores, the report says so
            (tmp_path / paths.eval_per_task_dir(b)).mkdir(parents=True)
            for name, scores in scores_for({b: evaluation})[b].items():
                metric = evaluation[name]["metric"]
                frame = pl.DataFrame({"task": range(scores.size), metric: scores}).reverse()
                frame.write_parquet(tmp_path / paths.eval_per_task(name, b))  # in any order
                evaluation[name]["per_task"] = fingerprint(tmp_path / paths.eval_per_task(name, b))
        if b == "movielens100k-shot10":  # and on every eligible user: maml best there
            for name, r in evaluation.items():
                everyone = r["mean"] - (0.2 if name == "maml" else 0.0) + ALL_USERS_NOISE
                file = tmp_path / paths.eval_per_task_all_users(name, b)
                file.parent.mkdir(parents=True, exist_ok=True)
                pl.DataFrame({"task": range(everyone.size), r["metric"]: everyone}).write_parquet(
                    file
                )
                all_users = {"mean": float(everyone.mean()), "tasks": everyone.size}
                r["all_users"] = {**all_users, "ci": 0.02, "per_task": fingerprint(file)}
        (tmp_path / paths.eval_metrics(b)).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / paths.eval_metrics(b)).write_text(json.dumps(evaluation))
    return cfg


def test_write_report_on_every_benchmark_of_the_cpu_recipe(tmp_path):
    """The whole report from hand-made outputs of all 16 benchmarks x 7 learners."""
    cfg = cpu_recipe_outputs(tmp_path)
    summary = write_report(cfg, root=tmp_path, log_plots=False)
    metrics = json.loads((tmp_path / paths.METRICS_JSON).read_text())  # what dvc exp show shows
    assert set(metrics) == set(cfg.pipeline.benchmarks)
    assert all(type(v) is float for by in metrics.values() for v in by.values())
    assert metrics["jester-shot10"]["scratch"] == summary["jester-shot10"]["scratch"]["nrmse"]
    text = (tmp_path / paths.SUMMARY_MD).read_text()
    assert "| adjoint | 0.220 ± 0.010 † | 0.220 ± 0.010 † |" in text  # CF: scratch (0.18) best
    assert "| scratch | **0.180 ± 0.010** | **0.180 ± 0.010** |" in text
    assert "alpine-shot100: bold is the best mean alone" in text
    assert "#### jester-shot10" in text and "#### alpine-shot100" not in text
    assert "| learner | mean | − scratch (best) | − bias | − pretrain |\n" in text  # scratch once
    assert "| learner | mean | − scratch (best) | − pretrain |\n" in text  # no bias off CF
    assert "| bias | 0.190 ± 0.010 | 0.190 ± 0.010 |" in text  # in the CF table only
    assert text.count("| bias |") == 1 + 6 + 1  # the CF table, the CF paired tables, all users
    assert (
        "No per-task scores (results/eval/<benchmark>/<learner>.parquet) for alpine-shot100" in text
    )
    jester = summary["jester-shot10"]["paired"]
    assert jester["best"] == "scratch" and not jester["learners"]["maml"]["not_worse_than_best"]
    vs_pretrain = jester["learners"]["maml"]["vs_pretrain"]
    assert vs_pretrain["difference"] == pytest.approx(0.3 - 0.2) and vs_pretrain["n"] == 20
    assert jester["learners"]["maml"]["mean"] == pytest.approx(0.3)
    assert "paired" not in summary["alpine-shot100"]
    everyone = summary["movielens100k-shot10"]["all_users"]  # every eligible user, beside
    assert everyone["tasks"] == 50 and everyone["paired"]["best"] == "maml"
    assert everyone["maml"]["nrmse"] == pytest.approx(0.3 - 0.2 + ALL_USERS_NOISE.mean())
    claim = "adjoint better than maml"  # maml beats adjoint on every user, not on the protocol's
    assert everyone["claims"]["claims"][claim]["verdict"] == "reversed"
    assert summary["claims"]["movielens100k-shot10"]["claims"][claim]["verdict"] == "agrees"
    assert "all_users" not in summary["jester-shot10"]
    assert "#### movielens100k-shot10: 50 users" in text
    # the best meta-learner against the baselines, on both task sets (maml on every user)
    row = "| movielens100k-shot10 | adjoint | 100 | +0.0300 ± 0.0000 (p<0.001; detects 0.0000) |"
    assert row in text
    assert "| movielens100k-shot10 | maml | 50 (all users) | -0.0900 ± 0.0000 (p<0.001;" in text
    assert "| omniglot-way5shot1 | adjoint | 100 | – | +5.00 ± 0.00" not in text  # accuracy: -5
    assert "| benchmark | claims | agrees | ties | reversed | all users: agrees |" in text
    assert "| jester-shot10 | 10 | 8 | 0 | 2 | – | – | – |" in text
    # ours on jester-shot10: adjoint < imaml < reptile < fomaml < maml; Table 1: A-MAML < iMAML
    # < MAML < Reptile < FOMAML, so the claims "MAML beats Reptile / FOMAML" are reversed
    claims = summary["claims"]["jester-shot10"]
    assert (claims["agrees"], claims["tie"], claims["reversed"]) == (8, 0, 2)
    assert claims["claims"]["maml better than reptile"]["verdict"] == "reversed"
    assert "### Paper's claims" in text and "| alpine-shot100 |" not in text.split("claims")[1]
    for title in ("Collaborative filtering", "Few-shot classification", "Synthetic regression"):
        assert f"### {title}" in text
    row = "| omniglot-way5shot1 | 1/1/5/16/1 | 3/3/5/16/3 | 0.4/0.4/0.4/0.1/0.4 | 32 "
    row += "| 40 (maml 1000) |"
    assert row in text
    assert summary["provenance"]["train_seconds"] == 2.0 * (7 * 16 + 6)
    assert len(list((tmp_path / paths.PLOTS).glob("*.png"))) == 2 * 16


def test_recheck_recomputes_every_paired_number_and_names_an_edited_one(tmp_path):
    cfg = cpu_recipe_outputs(tmp_path)
    write_report(cfg, root=tmp_path, log_plots=False)
    line = recheck(cfg, tmp_path)
    assert line.endswith(
        "15 benchmarks' paired comparisons and claims (1 also on every eligible meta-test user) "
        f"recomputed from {tmp_path / 'results/eval'}: all agree"
    )
    summary = json.loads((tmp_path / paths.SUMMARY_JSON).read_text())
    edited = json.loads(json.dumps(summary))
    edited["movielens100k-shot10"]["all_users"]["paired"]["learners"]["maml"]["mean"] = 0.5
    (tmp_path / paths.SUMMARY_JSON).write_text(json.dumps(edited))
    with pytest.raises(DataError, match="movielens100k-shot10.all_users.paired.learners.maml.mean"):
        recheck(cfg, tmp_path)
    summary["claims"]["jester-shot10"]["claims"]["maml better than reptile"]["verdict"] = "agrees"
    (tmp_path / paths.SUMMARY_JSON).write_text(json.dumps(summary))
    with pytest.raises(
        DataError,
        match="jester-shot10.claims.claims.maml better than reptile."
        "verdict is 'agrees', but the committed per-task scores give 'reversed'",
    ):
        recheck(cfg, tmp_path)
    per_task = tmp_path / paths.eval_per_task("maml", "jester-shot10")
    pl.read_parquet(per_task).head(10).write_parquet(per_task)
    with pytest.raises(DataError, match="maml.parquet has been changed since evaluate@jester"):
        recheck(cfg, tmp_path)


def test_a_committed_study_rechecks_from_its_own_params_and_results(capsys, tmp_path):
    """Each study under results/studies that holds params.yaml and results/ (a workspace's, as
    it ran) recomputes to the committed numbers; one that lacks its params says which file."""
    from metalearn.report.__main__ import main

    committed = Path(__file__).resolve().parents[1] / "results/studies"
    studies = [p.parent for p in committed.glob("*/params.yaml")]
    assert studies  # the Table 2 study at least
    for study in studies:
        assert main(["check", "--root", str(study)]) == 0
        assert "all agree" in capsys.readouterr().out
    assert main(["check", "--root", str(tmp_path)]) == 1
    assert f"parameter file not found: {tmp_path}/params.yaml" in capsys.readouterr().err


def test_keep_copies_what_check_reads_and_nothing_when_a_file_is_missing(capsys, tmp_path):
    """``report keep`` from a workspace (here a committed study, which is one) writes a folder
    that checks; a workspace missing a curve, or a folder that exists, gets an error and no
    files; the report's plots come along when the workspace has them."""
    import shutil

    from metalearn.report.__main__ import main

    study = Path(__file__).resolve().parents[1] / "results/studies/table2-2026-12-07"
    kept = tmp_path / "kept"
    assert main(["keep", str(kept), "--root", str(study)]) == 0
    assert "249 files" in capsys.readouterr().out
    files = {p.relative_to(kept) for p in kept.rglob("*") if p.is_file()}
    assert files == {p.relative_to(study) for p in study.rglob("*") if p.is_file()} - {
        Path("README.md")
    }
    assert main(["check", "--root", str(kept)]) == 0 and "all agree" in capsys.readouterr().out
    assert main(["keep", str(kept), "--root", str(study)]) == 1
    assert "exists; keep a study under a new name" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(study, broken)
    (broken / "results/curves/maml-jester-shot10.csv").unlink()
    assert main(["keep", str(tmp_path / "again"), "--root", str(broken)]) == 1
    assert "lacks 1 file(s) of its report, first results/curves/maml-jester-shot10.csv" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "again").exists()
    plotted = tmp_path / "plotted"
    shutil.copytree(study, plotted)
    (plotted / "results/plots").mkdir()
    (plotted / "results/plots/jester-shot10-curves.png").write_bytes(b"png")
    assert main(["keep", str(tmp_path / "with-plot"), "--root", str(plotted)]) == 0
    assert "250 files" in capsys.readouterr().out
    assert (tmp_path / "with-plot/results/plots/jester-shot10-curves.png").read_bytes() == b"png"


def test_readme_takes_a_kept_studys_headline_and_names_it(capsys, monkeypatch, tmp_path):
    from metalearn.report.__main__ import main
    from metalearn.report.readme import results_source

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "README.md").write_text((root / "README.md").read_text())
    study = Path("results/studies/table2-2026-12-07")
    (tmp_path / study).parent.mkdir(parents=True)
    (tmp_path / study).symlink_to(root / study)
    monkeypatch.chdir(tmp_path)
    assert main(["readme", "--root", str(study)]) == 0
    assert f"updated from {study}/results/summary.md" in capsys.readouterr().out
    readme = Path("README.md").read_text()
    assert results_source(readme) == study
    assert f"<!-- results:begin from={study} -->" in readme
    assert "| movielens1m-shot20 | maml | 0.220 ± 0.011 |" in readme  # Table 2's MAML
    assert main(["readme"]) == 1  # no report of its own here: one line, no traceback
    assert "results/summary.md" in capsys.readouterr().err


def test_changes_from_the_default_protocol_name_key_value_and_benchmarks():
    entry = "++pipeline.benchmarks.omniglot-way5shot1"
    cfg = load_config(
        ["train.meta_lr=0.01", f"{entry}.model.filters=32", "algo.adjoint.trajectory=store"]
    )
    results = results_for(["omniglot-way5shot1", "cosmixture-shot50"], MEANS)
    lines = changes_from_default(cfg, load_config(), results)
    assert "`train.meta_lr` = 0.01 (default 0.001): every benchmark" in lines
    assert "`model.filters` = 32 (default 64): omniglot-way5shot1" in lines
    assert "`algo.adjoint.trajectory` = store (default checkpoint): every benchmark" in lines
    assert len(lines) == 3
    assert changes_from_default(load_config(), load_config(), results) == []


def test_best_learner_per_benchmark_against_the_papers():
    from metalearn.report import best_against_published, best_table

    cfg = load_config([])
    cf = results_for(published.CF, MEANS)
    classification = results_for(["omniglot-way5shot1"], {**MEANS, "scratch": 0.97}, higher=True)
    classification["omniglot-way5shot1"]["scratch"]["architecture"] = "conv4"
    synthetic = results_for(["alpine-shot50"], MEANS)
    best = best_against_published({**synthetic, **cf, **classification}, cfg)
    assert list(best)[:2] == ["jester-shot10", "jester-shot20"]  # the families' order
    jester = best["jester-shot10"]  # lowest nRMSE: adjoint 0.09; Table 1: A-MAML 0.074
    assert (jester["learner"], jester["best_published_row"]) == ("adjoint", "A-MAML")
    assert jester["same_learner_published"] == 0.074
    assert jester["gap_to_best"] == 0.09 - 0.074
    assert jester["budget"] == "10,000 it × 16 tasks, 3 seeds"  # params.yaml's protocol
    omniglot = best["omniglot-way5shot1"]  # highest accuracy: scratch 97 % (no paper row)
    assert omniglot["learner"] == "scratch" and omniglot["same_learner_published"] is None
    assert omniglot["best_published_row"] == "iMAML, Hessian-Free"
    assert round(omniglot["gap_to_best"], 6) == round(97.0 - 99.50, 6)
    assert omniglot["budget"] == "no meta-training"
    alpine = best["alpine-shot50"]  # no published numbers: ours alone
    assert alpine["learner"] == "adjoint" and alpine["best_published"] is None
    text = best_table(best)
    row = "| jester-shot10 | adjoint | 0.090 ± 0.010 | 10,000 it × 16 tasks, 3 seeds | 0.074 |"
    assert row + " +0.016 | 0.074 (A-MAML) |" in text
    row = "| omniglot-way5shot1 | scratch | 97.0 ± 1.0 | no meta-training | – | – |"
    assert row + " 99.5 (iMAML, Hessian-Free) | -2.5 |" in text
    row = "| alpine-shot50 | adjoint | 0.090 ± 0.010 | 10,000 it × 16 tasks, 3 seeds |"
    assert row + " – | – | – | – |" in text


def test_the_budget_names_iterations_tasks_seeds_and_the_conv4_width():
    from metalearn.report.protocol import budget_words

    cfg = load_config(["++pipeline.benchmarks.omniglot-way5shot1.train.seeds=3"])
    words = budget_words(cfg, "omniglot-way5shot1", "maml", "conv4")
    assert words == "40,000 it × 32 tasks, 3 seeds, 64 filters"  # the MAML paper's budget
    assert budget_words(cfg, "movielens100k-shot10", "bias") == "closed form"


def test_cells_carry_the_spread_of_the_training_seeds():
    results = results_for(["cosmixture-shot50"], MEANS)
    for r in results["cosmixture-shot50"].values():
        r.update(seeds=3, seed_sd=0.004)
    text = family_table(FAMILIES[2], results, load_config())
    assert "0.100 ± 0.010 (s 0.004)" in text
    assert "standard deviation of the seeds' means (3 seeds)" in text
    single = family_table(FAMILIES[2], results_for(["cosmixture-shot50"], MEANS), load_config())
    assert "(s " not in single and "seeds' means" not in single


def test_protocol_table_names_the_cf_model():
    cfg = load_config()
    results = results_for(["movielens100k-shot10"], MEANS)
    for r in results["movielens100k-shot10"].values():
        r["architecture"] = "ratings"
    assert "item factors (32) + MLP [40, 40], head adapted" in protocol_table(cfg, results)
