"""The efficiency measurements: problems, isolated points, gradient accuracy, the peer check."""

import math

import polars as pl
import pytest
import torch

from metalearn.config import ConfigError
from metalearn.efficiency import (
    accuracy,
    accuracy_sweep,
    first_iteration,
    make_problem,
    max_rel_diff,
    measure,
    peers,
    plot_accuracy,
    plot_time_memory,
    reference,
    run_point,
    steps_per_second,
    sweep,
    targets,
)
from metalearn.efficiency.references import REFERENCED


def test_problems_have_the_benchmark_shapes():
    mlp = make_problem("cf_mlp", meta_batch=3)
    assert mlp.support[0].shape == (3, 10, 100) and mlp.query[1].shape == (3, 15)
    conv = make_problem("omniglot_conv4", meta_batch=2, dtype=torch.float64)
    assert conv.support[0].shape == (2, 5, 1, 28, 28) and conv.query[1].tolist()[0] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert conv.params["head.weight"].dtype == torch.float64
    with pytest.raises(ValueError, match="unknown problem 'nope'"):
        make_problem("nope", 1)


def test_accuracy_against_maml_in_float64():
    problem = make_problem("cf_mlp", meta_batch=4, dtype=torch.float64)
    variants = {
        "euler-store": {"learner": "adjoint", "scheme": "euler", "trajectory": "store"},
        "heun-checkpoint": {"learner": "adjoint", "scheme": "heun", "trajectory": "checkpoint"},
        "fomaml": {"learner": "fomaml"},
    }
    out = accuracy(problem, steps=6, variants=variants)
    assert out["euler-store"][0] < 1e-12 and out["euler-store"][1] == pytest.approx(1.0)
    assert 0 < out["heun-checkpoint"][0] < out["fomaml"][0]  # O(alpha^2) vs first order
    assert -1.0 <= out["fomaml"][1] <= 1.0


def test_metasgd_at_its_initial_step_sizes_is_maml_and_mamlpp_is_not():
    """Meta-SGD with every step size at alpha takes MAML's steps: its theta-gradient is MAML's
    to round-off (its step-size gradient is not compared). MAML++'s multi-step loss changes the
    meta-loss, so its gradient differs by design."""
    problem = make_problem("cf_mlp", meta_batch=3, dtype=torch.float64)
    out = accuracy(problem, steps=4, variants={"metasgd": {"learner": "metasgd"},
                                               "mamlpp": {"learner": "mamlpp"}})  # fmt: skip
    assert out["metasgd"][0] < 1e-13 and out["metasgd"][1] == pytest.approx(1.0, abs=1e-12)
    assert out["mamlpp"][0] > 1e-3


def test_mamlpp_measures_at_its_first_meta_iteration_on_its_own_parameters():
    problem = make_problem("omniglot_conv4", meta_batch=1)
    algo, params = first_iteration("mamlpp", problem, steps=3)
    assert algo.step_weights() == pytest.approx([1 / 3] * 3)  # uniform: meta-iteration 1
    assert "inner_lr/2/head.weight" in params and "bn/3/blocks.0.norm.weight" in params
    seconds, peak = measure(problem, "mamlpp", steps=2, repeats=1)
    assert seconds > 0 and peak >= 0


def test_a_point_runs_in_its_own_process_and_reports_what_ran_out():
    ok = run_point("cf_mlp", "maml", steps=3, meta_batch=4, seconds=120, repeats=1)
    assert ok["status"] == "ok" and ok["seconds"] > 0 and ok["peak_bytes"] > 0
    assert ok["learner"] == "maml" and ok["steps"] == 3
    oom = run_point("omniglot_conv4", "maml", 3, meta_batch=8, seconds=120, memory_cap=2**20)
    assert oom["status"] == "oom" and math.isnan(oom["seconds"])
    late = run_point("cf_mlp", "maml", steps=3, meta_batch=4, seconds=0.01)
    assert late["status"] == "timeout"


@pytest.mark.parametrize("problem_name", ["cf_mlp", "omniglot_conv4"])
@pytest.mark.parametrize("learner", [*REFERENCED])
def test_the_reference_and_every_peer_agree_with_ours_in_float64(problem_name, learner):
    """On the Conv4 too, where batch norm makes a wrong form (``grad`` outside ``vmap``) show;
    Meta-SGD and MAML++ on their own parameters too (step sizes, MAML++'s batch-norm sets)."""
    from metalearn.efficiency.references import PEERS

    problem = make_problem(problem_name, meta_batch=2, dtype=torch.float64)
    algo, params = first_iteration(learner, problem, steps=3, inner_lr=0.05)
    ours = algo.batched_meta_grad(problem.loss_fn, params, problem.support, problem.query)
    found = reference(learner, problem, steps=3, lr=0.05)
    assert set(found) == set(params)  # the learner's own parameters, no more, no fewer
    assert max_rel_diff(found, ours) < 1e-12
    for name, peer in PEERS.get(learner, {}).items():
        pytest.importorskip(name.split()[0].split(".")[0])
        assert max_rel_diff(peer(problem, 3, 0.05), ours) < 1e-12, name


def test_steps_per_second_counts_calls():
    calls = []
    rate = steps_per_second(lambda: calls.append(1), seconds=0.05, least=3)
    assert rate > 0 and len(calls) >= 4  # one warm-up, then at least `least`
    calls.clear()
    steps_per_second(lambda: calls.append(1), seconds=0.0, least=2, warm_up=False)
    assert len(calls) == 2


def test_peers_check_agreement_then_time_each_implementation():
    rows = peers(
        "cf_mlp", meta_batch=2, steps=2, learners=("maml", "reptile"), seconds=0.05, rounds=2
    )
    names = [(r["learner"], r["implementation"]) for r in rows]
    assert names[:2] == [("maml", "ours"), ("maml", "reference (vmap(grad))")]
    assert ("reptile", "reference (vmap(grad))") in names
    assert all(r["steps_per_s"] > 0 and r["max_rel_diff_float64"] < 1e-10 for r in rows)
    assert all(r["ours_over"] == 1.0 for r in rows if r["implementation"] == "ours")


def test_peers_of_metasgd_and_mamlpp_are_ours_and_the_reference():
    """No peer library has them (as FOMAML and Reptile): two rows each; the Adam step carries
    the learner's own parameters."""
    rows = peers("cf_mlp", meta_batch=2, steps=2, learners=("metasgd", "mamlpp"), seconds=0.02,
                 rounds=1)  # fmt: skip
    names = [(r["learner"], r["implementation"]) for r in rows]
    assert names == [(learner, form) for learner in ("metasgd", "mamlpp")
                     for form in ("ours", "reference (vmap(grad))")]  # fmt: skip
    assert all(r["max_rel_diff_float64"] < 1e-10 for r in rows)


@pytest.mark.slow
def test_sweep_skips_the_larger_steps_after_a_failure(tmp_path):
    rows = sweep({"omniglot_conv4": 8}, {"maml": {"learner": "maml"}}, [3, 1, 2], seconds=60,
                 memory_cap=2**20, repeats=1)  # fmt: skip
    assert [(r["steps"], r["status"]) for r in rows] == [
        (1, "oom"), (2, "skipped (oom at K=1)"), (3, "skipped (oom at K=1)")
    ]  # fmt: skip
    ok = sweep({"cf_mlp": 2}, {"fomaml": {"learner": "fomaml"}}, [1, 2], seconds=60, repeats=1)
    plot_time_memory(ok + rows, tmp_path / "panels.png")
    assert (tmp_path / "panels.png").stat().st_size > 0


def test_accuracy_sweep_rows_and_figure(tmp_path):
    variants = {"euler": {"learner": "adjoint", "scheme": "euler"}, "fomaml": {"learner": "fomaml"}}
    rows = accuracy_sweep({"cf_mlp": 2}, [1, 3], variants)
    assert [(r["steps"], r["variant"]) for r in rows] == [
        (1, "euler"), (1, "fomaml"), (3, "euler"), (3, "fomaml")
    ]  # fmt: skip
    assert all(r["status"] == "ok" for r in rows) and rows[2]["rel_err"] < 1e-12
    plot_accuracy(rows, tmp_path / "accuracy.png")
    assert (tmp_path / "accuracy.png").stat().st_size > 0


def test_targets_from_rows():
    def row(variant, learner, k, seconds, mib):
        return {"problem": "cf_mlp", "variant": variant, "learner": learner, "steps": k,
                "seconds": seconds, "peak_bytes": mib * 2**20, "status": "ok"}  # fmt: skip

    rows = [
        *(row("maml", "maml", k, 0.01 * k, 100 + 2 * k) for k in (1, 10, 100)),
        row("imaml", "imaml", 1, 0.1, 100), row("imaml", "imaml", 100, 1.0, 101),
        row("adjoint", "adjoint", 1, 0.1, 100), row("adjoint", "adjoint", 100, 3.0, 140),
        row("metasgd", "metasgd", 1, 0.1, 100), row("metasgd", "metasgd", 100, 3.0, 300),
    ]  # fmt: skip

    def peer_row(problem, implementation, ours_over):
        return {"problem": problem, "learner": "maml", "steps": 5,
                "implementation": implementation, "ours_over": ours_over}  # fmt: skip

    peer = [
        peer_row("cf_mlp", "ours", 1.0),
        peer_row("cf_mlp", "reference (vmap(grad))", 1.1),
        peer_row("cf_mlp", "higher", 8.0),
        peer_row("cf_mlp", "torchopt (functional + vmap)", 0.9),
        peer_row("omniglot_conv4", "ours", 1.0),
        peer_row("omniglot_conv4", "reference (vmap(grad))", 0.8),
        peer_row("omniglot_conv4", "higher", 1.2),
    ]
    out = targets(rows, peer)["cf_mlp"]
    assert out["maml"]["memory_slope_mib_per_step"] == pytest.approx(2.0)
    assert out["maml"]["r2"] == pytest.approx(1.0)
    # growth over MAML's 2 MiB a step: iMAML 1/99 MiB a step, Adjoint 40/99 (over a tenth)
    assert out["imaml"]["growth_over_maml"] == pytest.approx(1 / 99 / 2)
    assert out["imaml"]["ok"] and not out["adjoint"]["ok"]
    assert out["adjoint"]["memory_ratio"] == pytest.approx(1.4)
    assert out["adjoint"]["at_steps"] == 100
    # Meta-SGD backpropagates through the loop as MAML does: its growth, and no flat verdict
    assert out["metasgd"]["growth_over_maml"] == pytest.approx(200 / 99 / 2)
    assert out["metasgd"]["ok"] is None
    assert out["adjoint"]["time_over_imaml"] == pytest.approx(3.0) and not out["adjoint"]["time_ok"]
    assert out["peers"]["maml_k5"] == {
        "over_reference": 1.1,
        "reference_ok": True,
        "best_peer": "torchopt (functional + vmap)",  # the fastest: ours over it is smallest
        "over_best_peer": 0.9,
    }
    conv = targets([], peer)["omniglot_conv4"]["peers"]["maml_k5"]
    assert not conv["reference_ok"] and not conv["best_peer_ok"]  # 1.2 < the Conv4's 1.3

    # a K = 1 peak below the resolution (0 bytes) gives no ratio, and without MAML's curve
    # there is no growth to compare with: no verdict, not a crash
    zero = [row("fomaml", "fomaml", 1, 0.1, 0), row("fomaml", "fomaml", 10, 0.2, 1)]
    flat = targets(zero, [])["cf_mlp"]["fomaml"]
    assert flat["memory_ratio"] is None and flat["growth_over_maml"] is None
    assert flat["ok"] is None


def tiny_efficiency(**changes):
    """The efficiency section of params.yaml, shrunk to seconds of work."""
    from metalearn.config import load_config
    from metalearn.config.learners import check_learners

    overrides = {
        "efficiency.steps": "[1,2]",
        "efficiency.meta_batch": "{cf_mlp:2}",
        "efficiency.variants": "{imaml:{learner:imaml},"
        "adjoint-heun-reverse:{learner:adjoint,options:{scheme:heun,trajectory:reverse}}}",
        "efficiency.repeats": "1",
        "efficiency.accuracy_steps": "[1,2]",
        "efficiency.accuracy_meta_batch": "1",
        "efficiency.peers": "{cf_mlp:{meta_batch:2,steps:[1]}}",
        "efficiency.peer_seconds": "0.05",
        **changes,
    }
    replaced = []  # Hydra merges a mapping into a mapping: delete, then add
    for key, value in overrides.items():
        if value.startswith("{"):
            replaced += [f"~{key}", f"+{key}={value}"]
        else:
            replaced.append(f"{key}={value}")
    cfg = load_config(replaced)
    check_learners(cfg)  # as the efficiency stage does: its variants name learners
    return cfg


@pytest.mark.slow
def test_stage_writes_csvs_plots_and_targets_all_at_once(tmp_path):
    from metalearn.efficiency import run_stage, write_summary

    cfg = tiny_efficiency()
    out = tmp_path / "efficiency"
    found = run_stage(cfg.efficiency, out)
    assert found["points"] == 2 * 2 and found["device"] == "cpu"
    names = {p.name for p in out.iterdir()}
    assert names == {"time_memory.csv", "accuracy.csv", "peers.csv", "targets.json",
                     "time_memory.png", "accuracy.png", "summary.md"}  # fmt: skip
    summary = (out / "summary.md").read_text()
    assert "| imaml | " in summary and "reference (vmap(grad))" in summary
    assert write_summary(out).read_text() == summary  # the same tables from the CSVs
    rows = pl.read_csv(out / "time_memory.csv")
    assert set(rows["status"]) == {"ok"} and set(rows["variant"]) == {
        "imaml",
        "adjoint-heun-reverse",
    }
    accuracy_rows = pl.read_csv(out / "accuracy.csv")
    assert accuracy_rows.height == 2 * 2 and (accuracy_rows["rel_err"] >= 0).all()
    assert "time_over_imaml" in found["targets"]["cf_mlp"]["adjoint-heun-reverse"]

    # a bad variant fails before measuring anything and leaves the earlier outputs as they were
    before = (out / "targets.json").read_text()
    bad = tiny_efficiency(**{"efficiency.variants": "{a:{learner:adjoint,options:{scheme:rk4}}}"})
    with pytest.raises(ConfigError, match=r"efficiency\.variants\.a: .*rk4"):
        run_stage(bad.efficiency, out)
    assert (out / "targets.json").read_text() == before


def test_efficiency_params_are_validated():
    with pytest.raises(ConfigError, match=r"unknown problem 'efficiency\.meta_batch\.resnet'"):
        tiny_efficiency(**{"efficiency.meta_batch": "{resnet:2}"})
    with pytest.raises(ConfigError, match=r"efficiency\.peers\.cf_mlp\.steps\[0\] = 0"):
        tiny_efficiency(**{"efficiency.peers": "{cf_mlp:{meta_batch:2,steps:[0]}}"})
    with pytest.raises(ConfigError, match=r"efficiency\.variants\.x\.learner = 'sgd'"):
        tiny_efficiency(**{"efficiency.variants": "{x:{learner:sgd}}"})
