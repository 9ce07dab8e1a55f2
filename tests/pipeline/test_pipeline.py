"""The real pipeline on tiny params: dvc repro, re-run rules, dvc exp run, MLflow store and server.

One module-scoped copy of the repository (git init + commit in a temp dir) runs `dvc repro` once;
the tests below inspect it in order. The benchmarks are a synthetic one and a MovieLens-100K one
downloaded through a mirror of tiny fixture files in the official format. Marked slow (a few
minutes); CI runs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import mlflow
import mlflow.pyfunc
import polars as pl
import psutil
import pytest
import torch

from metalearn.smoke import SMOKE, clean_env, commit, copy_checkout, run_captured, set_params

# One worker builds the tiny pipeline and runs every test of this module in order (make test:
# pytest -n 2 --dist loadscope). The slow-but-rare checks are marked slow: make test-slow, which
# CI runs.
slow = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LEARNERS = ["maml", "imaml"]
BENCHMARKS = ["cosmixture-shot50", "movielens100k-shot10"]
EVALUATE = {f"evaluate@{b}" for b in BENCHMARKS}
CF_BENCHMARK = "movielens100k-shot10"  # the bias baseline runs here only (stage train-cf)
FIT_BIAS = f"train-cf@bias-{CF_BENCHMARK}"
# the pipelines run only when asked for: their stages are named by their dvc.yaml
TUNE = "tuning/dvc.yaml:tune@cosmixture-shot50"  # reads every algo, model and train key
EFFICIENCY = "benchmarks/dvc.yaml:efficiency"
ON_DEMAND = ("tuning/dvc.yaml", "benchmarks/dvc.yaml")
TINY = {
    "pipeline.learners": LEARNERS,
    "pipeline.cf_benchmarks": [CF_BENCHMARK],
    "pipeline.datasets": [b.split("-")[0] for b in BENCHMARKS],
    "pipeline.benchmarks": {
        b: dict(zip(("dataset", "setting"), b.split("-"), strict=True)) for b in BENCHMARKS
    },
    "pipeline.benchmarks.movielens100k-shot10.algo": {"adapt": "head", "inner_lr": 0.05},
    "algo.steps": 2,
    "algo.maml.steps": 2,  # MAML's own K: algo.steps edits do not reach it (stage resolve)
    "train.iterations": 6,
    "train.val_every": 3,
    "train.meta_batch": 2,
    "eval.tasks": 5,
    "data.cosmixture.functions": {"train": 8, "val": 5, "test": 5},
    "data.movielens100k.users": {"val": 0.2, "test": 0.25},
    "data.movielens100k.val_tasks": 3,
    "data.movielens100k.test_tasks": 5,
    "data.movielens100k.embedding_dim": 4,
    # tuning (one learner, two grid points, two iterations) and the efficiency study: the smoke's
    **{k: v for k, v in SMOKE.items() if k.startswith(("tune.", "efficiency."))},
    "tune.learners": ["imaml"],  # it follows algo.steps, as the experiment below does
}


def fixture_mirror(root: Path) -> Path:
    """A mirror holding a tiny ``ml-100k.zip`` (30 users x 30 ratings in the official ``u.data``
    layout) and the ``SHA256SUMS`` that vouches for it, as ../shared/datasets does."""
    lines = [
        f"{user}\t{(user * 7 + k * 3) % 40 + 1}\t{(user + k) % 5 + 1}\t88125{k:04d}"
        for user in range(1, 31)
        for k in range(30)
    ]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ml-100k/u.data", "\n".join(lines) + "\n")
    root.mkdir(parents=True)
    (root / "ml-100k.zip").write_bytes(buffer.getvalue())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    (root / "SHA256SUMS").write_text(f"{digest}  ml-100k.zip\n")
    return root


def run(repo: Path, *cmd: str, timeout: int = 600, fails: bool = False) -> str:
    """The command's output; it must succeed (``fails``: it must fail)."""
    env = clean_env(METALEARN_DATA_MIRROR=str(repo.parent / "mirror"))
    result = run_captured(list(cmd), repo, env, timeout)
    failed = result.returncode != 0
    assert failed == fails, (
        f"{' '.join(cmd)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout + result.stderr


def restore(repo: Path) -> None:
    """Back to the committed params, lock and outputs after a test's edit or run: git holds
    the uncached outputs (from HEAD: the project autostages dvc.lock), DVC's cache the rest."""
    run(repo, "git", "checkout", "-q", "HEAD", "--", ".")
    run(repo, "dvc", "checkout", "-f", "-q")


def stages_run(log: str) -> set[str]:
    return {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage '")}


def stale(repo: Path) -> set[str]:
    return set(json.loads(run(repo, "dvc", "status", "--json")))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline") / "repo"
    fixture_mirror(root.parent / "mirror")
    copy_checkout(REPO, root)
    set_params(root, TINY)
    commit(root, "tiny")
    log = run(root, "dvc", "repro")
    log += run(root, "dvc", "repro", *ON_DEMAND)
    commit(root, "repro")  # dvc.lock and the uncached outputs: what restore() returns to
    root.joinpath("repro.log").write_text(log)
    return root


def test_repro_writes_every_output(repo):
    assert stages_run((repo / "repro.log").read_text()) == {
        "code",
        "resolve",
        *(f"download@{b.split('-')[0]}" for b in BENCHMARKS),
        *(f"episodify@{b}" for b in BENCHMARKS),
        *(f"train@{lr}-{b}" for lr in LEARNERS for b in BENCHMARKS),
        FIT_BIAS,
        *(f"evaluate@{b}" for b in BENCHMARKS),
        TUNE,
        "report",
        EFFICIENCY,
    }
    manifest = json.loads((repo / "data/raw/movielens100k/manifest.json").read_text())
    assert manifest["ml-100k.zip"]["source"] == "mirror"
    for b in BENCHMARKS:
        assert (repo / f"data/episodes/{b}/test.parquet").is_file()
        evaluation = json.loads((repo / f"results/eval/{b}.json").read_text())
        assert set(evaluation) == set(LEARNERS) | ({"bias"} if b == CF_BENCHMARK else set())
        for lr in LEARNERS:
            for path in (
                f"models/{b}/{lr}.pt",
                f"results/curves/{lr}-{b}.csv",
                f"results/eval/{b}/{lr}.parquet",
            ):
                assert (repo / path).is_file(), path
            assert evaluation[lr]["tasks"] == 5 and evaluation[lr]["metric"] == "nrmse"
    summary = json.loads((repo / "results/summary.json").read_text())
    assert set(summary) == {*BENCHMARKS, "checks", "best", "best_learner", "provenance", "claims"}
    assert set(summary[BENCHMARKS[0]]) == {*LEARNERS, "paired"}
    paired = summary[CF_BENCHMARK]["paired"]
    assert set(paired["learners"]) == {*LEARNERS, "bias"}, paired
    assert set(summary["best"]) == set(BENCHMARKS)  # every benchmark, published numbers or not
    assert summary["best"]["movielens100k-shot10"]["best_published_row"] == "A-MAML"
    table = (repo / "results/summary.md").read_text()
    assert all(name in table for name in LEARNERS + BENCHMARKS)
    assert len(list((repo / "results/plots").glob("*.png"))) == 2 * len(BENCHMARKS)
    efficiency = json.loads((repo / "results/efficiency.json").read_text())
    assert efficiency["points"] == 2 and efficiency["mlflow_run_id"]
    assert (repo / "results/efficiency/time_memory.png").is_file()


def test_one_finished_mlflow_run_per_train_stage(repo):
    with sqlite3.connect(repo / "mlflow.db") as db:
        runs = db.execute("select run_uuid, status from runs").fetchall()
        tags = dict(
            ((run_id, key), value)
            for run_id, key, value in db.execute("select run_uuid, key, value from tags")
        )
        metrics = {(r, k) for r, k in db.execute("select run_uuid, key from metrics")}
    assert len(runs) == len(LEARNERS) * len(BENCHMARKS) + 2  # + bias's + the efficiency stage's
    assert {status for _, status in runs} == {"FINISHED"}
    for lr in LEARNERS:
        for b in BENCHMARKS:
            run_id = json.loads((repo / f"results/train/{lr}-{b}.json").read_text())[
                "mlflow_run_id"
            ]
            assert tags[(run_id, "learner")] == lr and tags[(run_id, "benchmark")] == b
            assert (run_id, "meta_train_loss") in metrics and (run_id, "test_nrmse") in metrics


def test_each_benchmarks_best_learner_is_registered_and_predicts(repo, monkeypatch):
    """The report registers the best learner's logged model as metalearn-<benchmark>@best."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    for b in BENCHMARKS:
        evaluation = json.loads((repo / f"results/eval/{b}.json").read_text())
        best = json.loads((repo / "results/summary.json").read_text())["best_learner"][b]
        version = client.get_model_version_by_alias(f"metalearn-{b}", "best")
        assert version.run_id == evaluation[best]["mlflow_run_id"]
    # loadable by its alias (tests/test_stages.py checks a logged model's predictions)
    model = mlflow.pyfunc.load_model("models:/metalearn-cosmixture-shot50@best")
    best = client.get_model_version_by_alias("metalearn-cosmixture-shot50", "best")
    assert model.metadata.run_id == best.run_id


def test_a_clone_rechecks_the_reports_paired_numbers_from_committed_scores(repo, tmp_path):
    """A plain git clone (no DVC cache, no training) holds the per-task scores and curves the
    report was computed from and recomputes its paired comparisons and claims; an edited
    number of the report is named."""
    clone = tmp_path / "clone"
    run(repo, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "models").exists()  # the cached outputs stay behind
    check = [sys.executable, "-m", "metalearn.report", "check"]
    line = run(clone, *check)
    counted = int(line.split(": ")[1].split()[0])
    assert counted > 10 and line.rstrip().endswith("all agree"), line
    summary_path = clone / "results/summary.json"
    summary = json.loads(summary_path.read_text())
    paired = summary["cosmixture-shot50"]["paired"]
    best = paired["best"]
    other = next(lr for lr in paired["learners"] if lr != best)
    paired["learners"][other]["vs_best"]["p"] += 0.01
    summary_path.write_text(json.dumps(summary))
    error = run(clone, *check, fails=True)
    assert f"cosmixture-shot50.paired.learners.{other}.vs_best.p is" in error, error
    assert "dvc repro -f report" in error


def test_second_repro_runs_nothing(repo):
    assert stages_run(run(repo, "dvc", "repro")) == set()


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        # MAML has its own K, and tune sweeps iMAML only
        ("algo.steps", 3, {*(f"train@imaml-{b}" for b in BENCHMARKS), *EVALUATE, TUNE}),
        pytest.param(
            "algo.maml.steps", 3, {*(f"train@maml-{b}" for b in BENCHMARKS), *EVALUATE}, marks=slow
        ),
        pytest.param(
            "algo.imaml.lam",
            3.0,
            {*(f"train@imaml-{b}" for b in BENCHMARKS), *EVALUATE, TUNE},
            marks=slow,
        ),  # fmt: skip
        # the same numbers (tests/test_parallel.py)
        pytest.param("train.workers", 2, set(), marks=slow),
        pytest.param(
            "pipeline.benchmarks.movielens100k-shot10.algo.inner_lr",
            0.02,
            {
                *(f"train@{lr}-movielens100k-shot10" for lr in LEARNERS),
                # not the bias fit: it uses no inner-loop key (its spec is unchanged)
                "evaluate@movielens100k-shot10",
            },
            marks=slow,
        ),
        ("data.cosmixture.seed", 7, {"episodify@cosmixture-shot50"}),
        pytest.param("eval.tasks", 4, EVALUATE, marks=slow),
    ],
)
def test_params_edit_makes_only_its_stages_stale(repo, key, value, expected):
    """Once resolve has re-written the specs, the cells whose values changed are stale, and no
    other; the report reads every section (its protocol tables), so it is stale each time."""
    set_params(repo, {key: value})
    try:
        raw = {s for s in expected if s.startswith("episodify")}  # raw params keys, no spec
        assert stale(repo) == {"resolve", "report", *raw}
        run(repo, "dvc", "repro", "resolve")
        assert stale(repo) == {*expected, "report"}
    finally:
        restore(repo)


@slow
def test_a_typo_in_params_fails_every_repro_and_exp_run_naming_the_key(repo):
    """A key no stage reads, and Hydra's +key form that DVC's own error message suggests."""
    with open(repo / "params.yaml", "a") as f:
        f.write("algo_steps: 10\n")
    try:
        log = run(repo, "dvc", "repro", fails=True)
        assert "unknown key 'algo_steps' (valid: pipeline, algo," in log
    finally:
        restore(repo)
    log = run(repo, "dvc", "exp", "run", "-S", "+algo.stepz=3", "-n", "typo", fails=True)
    assert "unknown key 'algo.stepz'" in log and "steps" in log
    restore(repo)
    assert stale(repo) == set()


def snapshot(*roots: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for r in roots for p in sorted(r.rglob("*")) if p.is_file()}


def test_a_failed_rerun_under_dvc_repro_keeps_the_previous_outputs(repo):
    """The outputs persist (DVC would delete them first) and are written atomically, after the
    work succeeded: a corrupt archive or a NaN leaves the last good ones exactly as they were."""
    raw = repo / "data/raw/movielens100k"
    before = snapshot(raw)
    archive = repo.parent / "mirror/ml-100k.zip"
    good = archive.read_bytes()
    archive.write_bytes(good[:-64] + bytes(64))  # the mirror's SHA256SUMS no longer vouches
    try:
        log = run(repo, "dvc", "repro", "-f", "download@movielens100k", fails=True)
        assert "ml-100k.zip" in log and "sha256" in log.lower()
        assert snapshot(raw) == before
    finally:
        archive.write_bytes(good)
    cell = [repo / "models/cosmixture-shot50/maml.pt", repo / "results/curves"]
    cell += [repo / "results/train"]
    before = snapshot(*(p if p.is_dir() else p.parent for p in cell))
    set_params(repo, {"algo.maml.inner_lr": 1e30})
    try:
        log = run(repo, "dvc", "repro", "train@maml-cosmixture-shot50", fails=True)
        assert "maml on cosmixture-shot50: non-finite meta-gradient" in log
        assert snapshot(*(p if p.is_dir() else p.parent for p in cell)) == before
    finally:
        restore(repo)
    assert stale(repo) == set()


CF, COS = CF_BENCHMARK, "cosmixture-shot50"


def _changed_model(path: Path) -> None:
    """One weight changed, everything else (the spec, the digest) as the train stage wrote it."""
    checkpoint = torch.load(path, weights_only=True)
    next(iter(checkpoint["seed_params"][0].values())).view(-1)[0] += 1.0
    torch.save(checkpoint, path)


def _fewer_rows(path: Path) -> None:
    pl.read_parquet(path).head(2).write_parquet(path)


def _edited_curve(path: Path) -> None:
    path.write_text(path.read_text().replace(",", ";", 1))


def _appended(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0")


@pytest.mark.parametrize(
    ("changed", "change", "script", "writer", "what"),
    [
        ("data/raw/movielens100k/ml-100k.zip", _appended, ["episodify.py", f"benchmark={CF}"],
         "download@movielens100k", "other bytes"),
        ("models/cosmixture-shot50/maml.pt", _changed_model, ["evaluate.py", f"benchmark={COS}"],
         "train@maml-cosmixture-shot50", "its values no longer match their digest"),
        ("results/eval/cosmixture-shot50/maml.parquet", _fewer_rows, ["report.py"],
         "evaluate@cosmixture-shot50", "2 rows, not 5"),
        pytest.param("results/curves/imaml-movielens100k-shot10.csv", _edited_curve, ["report.py"],
                     "train@imaml-movielens100k-shot10", "other bytes", marks=slow),
    ],
)  # fmt: skip
def test_an_input_changed_since_its_stage_wrote_it_is_refused_in_one_line(
    repo, changed, change, script, writer, what
):
    """Each stage checks what another stage wrote before it reads it: a changed file is one line
    naming it, what changed, and how to restore or re-create it; nothing is written."""
    outputs = [repo / "data/episodes", repo / "results"]
    before = snapshot(*outputs)
    change(repo / changed)
    try:
        log = run(repo, sys.executable, f"pipeline/{script[0]}", *script[1:], fails=True)
        assert "Traceback" not in log and len(log.strip().splitlines()) == 1, log
        assert f"error: {changed} has been changed since {writer} wrote it ({what})" in log
        assert f"dvc checkout {changed}" in log or f"dvc checkout {Path(changed).parent}" in log
        assert f"dvc repro -f {writer}" in log or f"dvc repro --force {writer}" in log
        after = snapshot(*outputs)
        after.pop(repo / changed, None), before.pop(repo / changed, None)
        assert after == before  # nothing written
    finally:
        restore(repo)


@slow
def test_an_algorithm_edit_reruns_no_download_or_episodify(repo):
    maml = repo / "src/metalearn/algorithms/maml.py"
    original = maml.read_text()
    maml.write_text(original + "# an edit\n")
    try:
        assert stale(repo) == {"code"}  # the one stage that hashes modules
        assert stages_run(run(repo, "dvc", "repro", "code")) == {"code"}
        assert stale(repo) == {
            "resolve",  # it checks algo.<learner> against the options the learners declare
            *(f"train@{lr}-{b}" for lr in LEARNERS for b in BENCHMARKS),
            FIT_BIAS,
            *EVALUATE,
            TUNE,
            "report",  # it tells meta-learners from baselines by the learners' classes
            EFFICIENCY,
        }
    finally:
        maml.write_text(original)
        restore(repo)


@slow
def test_the_train_manifest_holds_every_module_a_real_train_stage_imports(repo, tmp_path):
    """Python's own import log of the stage and its tracking side process, against the
    manifest that stage code derived from the script's imports."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the copy's store keeps only its stages' runs
    env = clean_env(PYTHONPROFILEIMPORTTIME="1", MLFLOW_TRACKING_URI=store)
    cmd = ["python", "pipeline/train.py", "learner=maml", "benchmark=cosmixture-shot50"]
    try:
        result = run_captured(cmd, repo, env, 300)
    finally:
        restore(repo)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = [
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    ]
    names = {name for name in imported if name.startswith("metalearn")}
    assert {"metalearn.training", "metalearn.tracking"} <= names
    manifest = json.loads((repo / "code/train.json").read_text())
    for name in names:
        module = Path("src", *name.split("."))
        file = module / "__init__.py" if (repo / module).is_dir() else module.with_suffix(".py")
        assert str(file) in manifest, f"train imports {name} but its manifest lacks {file}"


@slow
def test_efficiency_edit_makes_only_that_stage_stale(repo):
    set_params(repo, {"efficiency.steps": [1, 3]})
    try:
        assert stale(repo) == {EFFICIENCY, "resolve"}  # resolve checks every edit
        run(repo, "dvc", "repro", "resolve")
        assert stale(repo) == {EFFICIENCY}
    finally:
        restore(repo)


@slow
def test_dataset_edit_reruns_only_that_datasets_stages(repo):
    """data.cosmixture reaches train/evaluate through the episodes they depend on; tuning on
    them is stale too, and runs when asked for by name."""
    set_params(repo, {"data.cosmixture.seed": 7})
    try:
        ran = stages_run(run(repo, "dvc", "repro"))
        assert ran == {
            "resolve",
            "episodify@cosmixture-shot50",
            *(f"train@{lr}-cosmixture-shot50" for lr in LEARNERS),
            "evaluate@cosmixture-shot50",
            "report",  # not tune: it runs when asked for (dvc repro tuning/dvc.yaml)
        }
        assert stale(repo) == {TUNE}
        assert stages_run(run(repo, "dvc", "repro", "tuning/dvc.yaml")) == {TUNE}
    finally:
        restore(repo)


def test_exp_run_retrains_only_the_learners_whose_k_changes_and_is_listed(repo):
    """The mission's command: the cells whose K changes, their evaluations and the report; not
    tuning, though MAML's K makes it stale (it runs when asked for: tuning/dvc.yaml)."""
    ran = stages_run(run(repo, "dvc", "exp", "run", "-S", "algo.steps=3", "-n", "steps3"))
    trains = {f"train@imaml-{b}" for b in BENCHMARKS}  # MAML has its own K (algo.maml.steps)
    assert ran == {"resolve", *trains, *EVALUATE, "report"}
    assert TUNE in stale(repo)
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json"))
    assert "steps3" in json.dumps(shown)
    with sqlite3.connect(repo / "mlflow.db") as db:
        experiments = dict(db.execute("select name, experiment_id from experiments"))
        runs = db.execute(
            "select name, experiment_id from runs where experiment_id = ?",
            (experiments["metalearn/steps3"],),  # one MLflow experiment per DVC experiment
        ).fetchall()
        kinds = dict(db.execute("select experiment_id, value from experiment_tags "
                                "where key = 'mlflow.experimentKind'"))  # fmt: skip
    assert {name for name, _ in runs} == {f"imaml-{b}@steps3" for b in BENCHMARKS}
    assert kinds[experiments["metalearn/steps3"]] == "custom_model_development"
    restore(repo)  # the experiment stays (exp show), the workspace returns to the baseline


def test_plots_diff_overlays_two_experiments_meta_val_curves(repo):
    """The documented comparison (docs/experiments.md): one cell's meta-val curve in the
    baseline and in the experiment, from DVC's cache, in one plot."""
    cell = "results/curves/imaml-cosmixture-shot50.csv"
    cmd = ["dvc", "plots", "diff", "HEAD", "steps3", "--targets", cell, "-x", "iteration"]
    cmd += ["-y", "meta_val_nrmse", "--template", "sparse_linear"]
    done = run_captured([*cmd, "--json"], repo, clean_env(), 120)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert not shown.get("errors"), shown["errors"]
    (plot,) = shown["data"][cell]
    values = plot["content"]["data"]["values"]
    assert plot["revisions"] == ["HEAD", "steps3"]
    (drawn,) = plot["content"]["transform"]  # without the rows that have no meta-val point
    assert "meta_val_nrmse" in json.dumps(drawn), drawn
    for rev in ("HEAD", "steps3"):
        points = [v["meta_val_nrmse"] for v in values if v["rev"] == rev and v["meta_val_nrmse"]]
        assert points and all(0 < float(p) < 10 for p in points), (rev, values)


def test_the_documented_exp_show_view_fits_120_columns(repo):
    """``make exp-show``: the experiment, its changed params and a benchmark's metrics."""
    make = ["make", "-s", "-n", "exp-show", "BENCHMARK=cosmixture-shot50", "LEARNERS=maml|imaml"]
    command = subprocess.run(make, cwd=REPO, capture_output=True, text=True, check=True).stdout
    env = {**clean_env(), "COLUMNS": "120"}
    shown = subprocess.run(
        ["bash", "-c", command.strip().replace(".venv/bin/", "") + " --no-pager"],
        cwd=repo, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert max(len(line) for line in shown.splitlines()) <= 120, shown
    assert "…" not in shown and "[steps3]" in shown and "algo.steps" in shown, shown
    assert "cosmixture-shot50.maml" in shown and "cosmixture-shot50.imaml" in shown
    metrics = json.loads((repo / "results/metrics.json").read_text())
    assert all(isinstance(v, float) for by in metrics.values() for v in by.values())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@slow
def test_mlflow_server_serves_the_runs(repo):
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{repo / 'mlflow.db'}",
            "--workers",
            "1",
        ],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=metalearn%2Fworkspace"
        )
        experiment = json.load(urllib.request.urlopen(request, timeout=10))["experiment"]
        body = json.dumps({"experiment_ids": [experiment["experiment_id"]], "max_results": 100})
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        runs = json.load(urllib.request.urlopen(request, timeout=10))["runs"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    train_runs = [
        r
        for r, t in zip(runs, tags, strict=True)
        if t.get("stage") != "efficiency" and r["info"]["status"] == "FINISHED"
    ]  # the failed re-run's run is FAILED, with no metrics
    assert len(train_runs) >= len(LEARNERS) * len(BENCHMARKS) and len(runs) > len(train_runs)
    for r in train_runs:
        params = {p["key"]: p["value"] for p in r["data"]["params"]}
        metrics = {m["key"] for m in r["data"]["metrics"]}
        fitted = {t["key"]: t["value"] for t in r["data"]["tags"]}["learner"] == "bias"
        assert params.get("algo.iterations") == (None if fitted else "6")  # the resolved spec
        assert "test_nrmse" in metrics and ("meta_train_loss" in metrics) != fitted


@slow
def test_two_queued_experiments_run_at_once_into_one_store(repo):
    """``dvc exp run --queue`` twice, then ``--run-all -j 2``: both experiments finish, DVC lists
    both, and the one SQLite MLflow store holds every run of each, none left unfinished."""
    for steps in (4, 5):
        run(repo, "dvc", "exp", "run", "--queue", "-S", f"algo.steps={steps}", "-n", f"q{steps}")
    log = run(repo, "dvc", "exp", "run", "--run-all", "-j", "2", timeout=900)
    assert "database is locked" not in log
    shown = json.dumps(json.loads(run(repo, "dvc", "exp", "show", "--json")))
    assert '"q4"' in shown and '"q5"' in shown
    with sqlite3.connect(repo / "mlflow.db") as db:
        for name in ("q4", "q5"):
            (experiment,) = db.execute(
                "select experiment_id from experiments where name = ?", (f"metalearn/{name}",)
            ).fetchone()
            runs = dict(db.execute(
                "select name, status from runs where experiment_id = ?", (experiment,)
            ).fetchall())  # fmt: skip
            assert runs == {f"imaml-{b}@{name}": "FINISHED" for b in BENCHMARKS}, runs
    run(repo, "dvc", "queue", "stop")  # the idle workers, should their own monitor miss it
    restore(repo)


@slow
@pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["sigterm-to-dvc", "ctrl-c"],
)
def test_a_signal_to_dvc_repro_stops_its_stage_leaving_no_process_and_the_outputs(
    repo, tmp_path, signum, to_group
):
    """`docker stop` or a scheduler sends SIGTERM to dvc, which exits at once: the stage it
    ran must stop too (its parent gone). Ctrl-C sends SIGINT to dvc and the stage alike: the
    stage says so in one line, no traceback. Either way it writes nothing and ends its run
    KILLED, even mid-compilation (train.compile: the stage's first seconds)."""
    cell = [
        repo / "models/cosmixture-shot50/maml.pt",
        repo / "results/curves/maml-cosmixture-shot50.csv",
        repo / "results/train/maml-cosmixture-shot50.json",
    ]
    before = {p: p.read_bytes() for p in cell}
    set_params(repo, {"algo.maml.iterations": 1_000_000, "train.compile": True})
    env = clean_env(METALEARN_DATA_MIRROR=str(repo.parent / "mirror"))
    log = tmp_path / "dvc.log"
    with open(log, "w") as out:
        dvc = subprocess.Popen(
            ["dvc", "repro", "train@maml-cosmixture-shot50"], cwd=repo, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        run_id = _wait_for_running_run(repo, "maml", timeout=180)
        if to_group:
            os.killpg(dvc.pid, signum)  # a terminal's Ctrl-C: the foreground group
        else:
            dvc.send_signal(signum)  # dvc alone
        dvc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while _session(dvc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _session(dvc.pid) == []
        assert {p: p.read_bytes() for p in cell} == before
        with sqlite3.connect(repo / "mlflow.db") as db:
            (status,) = db.execute(
                "select status from runs where run_uuid = ?", (run_id,)
            ).fetchone()
        assert status == "KILLED"
        if to_group:
            text = log.read_text()
            assert "error: stopped by SIGINT: no output written, its run KILLED" in text, text
            assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
            stage_lines = text.split("> python pipeline/train.py")[1].strip().splitlines()
            assert len(stage_lines) == 3, text  # the command's end, its line, dvc's line
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dvc.pid, signal.SIGKILL)
        restore(repo)


def _wait_for_running_run(repo: Path, learner: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    query = (
        "select r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid "
        "where r.status = 'RUNNING' and t.key = 'learner' and t.value = ?"
    )
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.Error), sqlite3.connect(repo / "mlflow.db") as db:
            found = db.execute(query, (learner,)).fetchall()
            if found:
                return found[-1][0]
        time.sleep(0.2)
    raise AssertionError(f"no RUNNING run of {learner} within {timeout} s")


def _session(sid: int) -> list[str]:
    """The live processes of session ``sid`` (dvc's, and what it started)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getsid(p.info["pid"]) == sid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(" ".join(p.info["cmdline"] or []))
    return found


@slow
def test_a_new_learner_is_one_file_and_runs_through_the_pipeline(tmp_path):
    """A copy of fomaml.py under another name, listed in pipeline.learners, and nothing else:
    resolve, train, evaluate and the report pick it up."""
    root = tmp_path / "repo"
    copy_checkout(REPO, root)
    fomaml = (root / "src/metalearn/algorithms/fomaml.py").read_text()
    throwaway = fomaml.replace("class FOMAML(", "class Throwaway(").replace(
        'name = "fomaml"', 'name = "throwaway"'
    )
    (root / "src/metalearn/algorithms/throwaway.py").write_text(throwaway)
    set_params(root, {**SMOKE, "pipeline.learners": ["throwaway", "scratch"]})
    commit(root, "a throwaway learner")
    run(root, "dvc", "repro", "report")
    metrics = json.loads((root / "results/metrics.json").read_text())
    assert set(metrics["cosmixture-shot50"]) == {"throwaway", "scratch"}
    assert (root / "results/eval/cosmixture-shot50/throwaway.parquet").is_file()
    assert "throwaway" in (root / "results/summary.md").read_text()
    with sqlite3.connect(root / "mlflow.db") as db:
        names = dict(db.execute("select name, status from runs"))
    assert names["throwaway-cosmixture-shot50@workspace"] == "FINISHED"


def trained(repo: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Each benchmark's iMAML meta-parameters (the checkpoint's other fields name its run)."""
    return {
        b: torch.load(repo / f"models/{b}/imaml.pt", weights_only=True)["params"]
        for b in BENCHMARKS
    }


@pytest.mark.slow
def test_the_ray_runner_with_two_jobs_leaves_what_dvc_repro_leaves(repo):
    """python -m metalearn.run --jobs 2 after a K edit: the stages dvc repro runs, the same
    per-task scores and models (same seeds), every stage recorded (dvc status clean)."""
    change = {"algo.steps": 3}
    trains = {f"train@imaml-{b}" for b in BENCHMARKS}
    try:
        set_params(repo, change)
        sequential = stages_run(run(repo, "dvc", "repro"))
        assert sequential == {"resolve", *trains, *EVALUATE, "report"}
        expected = trained(repo)
        left_stale = stale(repo)  # the pipelines run only when asked for (tuning/dvc.yaml)
        scores = {b: pl.read_parquet(repo / f"results/eval/{b}/imaml.parquet") for b in BENCHMARKS}
        restore(repo)
        set_params(repo, change)
        log = run(repo, sys.executable, "-m", "metalearn.run", "--jobs", "2")
        ran = {line.split(" (")[0] for line in log.splitlines() if " s): " in line}
        assert ran == sequential, log
        assert f"{len(sequential)} stages ran" in log
        for b, params in trained(repo).items():
            assert params.keys() == expected[b].keys()
            assert all(torch.equal(params[k], expected[b][k]) for k in params), b
        for b in BENCHMARKS:
            assert pl.read_parquet(repo / f"results/eval/{b}/imaml.parquet").equals(scores[b])
        assert stale(repo) == left_stale
    finally:
        restore(repo)
