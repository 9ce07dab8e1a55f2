"""The files that must agree with each other: params.yaml, the table of docs/parameters.md,
dvc.yaml, paths, README's results."""

import re
from pathlib import Path

import pytest
import yaml

from metalearn import code_manifest, paths
from metalearn.algorithms import NAMES
from metalearn.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def leaf_keys(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaf_keys(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def documented(key: str, table: str) -> bool:
    """A key is documented as itself or through a <placeholder> row (``algo.<learner>.steps``)."""
    rows = re.findall(r"^\| `([^`]+)`", table, flags=re.MULTILINE)
    for row in rows:
        pattern = re.sub(
            r"<[a-z]+>", r"[^.]+", re.escape(row).replace(r"\<", "<").replace(r"\>", ">")
        )
        if re.fullmatch(pattern, key) or re.match(pattern + r"\.", key):
            return True
    return False


def test_every_param_is_in_the_parameters_table():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    table = (ROOT / "docs" / "parameters.md").read_text()
    missing = [k for k in leaf_keys(params) if not documented(k, table)]
    assert not missing, f"params missing from the table of docs/parameters.md: {missing}"


def test_dvc_yaml_paths_match_paths_module():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    learner, benchmark = "${item.learner}", "${item.benchmark}"

    def names(entries):
        return {next(iter(e)) if isinstance(e, dict) else e for e in entries}

    assert names(dvc["download"]["do"]["outs"]) == {str(paths.raw("${item}"))}
    assert names(dvc["episodify"]["do"]["outs"]) == {str(paths.episodes("${key}"))}
    assert str(paths.raw("${item.dataset}")) in dvc["episodify"]["do"]["deps"]
    train = dvc["train"]
    assert names(train["outs"]) == {
        str(paths.model(learner, benchmark)),
        str(paths.train_curve(learner, benchmark)),
        str(paths.train_metrics(learner, benchmark)),
    }
    cell_spec = {str(paths.train_spec(learner, benchmark)): ["spec"]}
    assert cell_spec in train["params"] and cell_spec in dvc["train-cf"]["params"]
    evaluate = dvc["evaluate"]["do"]
    assert names(evaluate["outs"]) == {
        str(paths.eval_per_task_dir("${key}")),
        str(paths.eval_metrics("${key}")),
    }
    assert {str(paths.evaluate_spec("${key}")): ["spec"]} in evaluate["params"]
    assert str(paths.episodes("${key}")) in evaluate["deps"]
    assert str(paths.models("${key}")) in evaluate["deps"]
    assert paths.model(learner, benchmark).parent == paths.models(benchmark)
    report = dvc["report"]
    assert names(report["outs"]) == {
        str(paths.SUMMARY_MD),
        str(paths.PLOTS),
        str(paths.SUMMARY_JSON),
    }
    assert names(dvc["resolve"]["outs"]) == {str(paths.CONFIGS)}
    # one metrics file, numbers only (dvc exp show): bookkeeping lives in plain outputs
    metrics = [m for stage in dvc.values() for m in stage.get("do", stage).get("metrics", [])]
    assert names(metrics) == {str(paths.METRICS_JSON)}


#: The study's pipeline, and those run only when asked for (tuning, the efficiency study).
PIPELINES = ("dvc.yaml", "tuning/dvc.yaml", "benchmarks/dvc.yaml")


def all_stages() -> dict[str, dict]:
    """Every stage of every pipeline, by name (``<file>:<stage>`` outside dvc.yaml); the others
    run from the repository root, as dvc.yaml's do."""
    found = {}
    for name in PIPELINES:
        for stage, body in yaml.safe_load((ROOT / name).read_text())["stages"].items():
            if name != "dvc.yaml":
                assert body.get("do", body)["wdir"] == "..", f"{name}:{stage} runs elsewhere"
            found[stage if name == "dvc.yaml" else f"{name}:{stage}"] = body
    return found


def test_every_output_persists_so_a_failed_rerun_keeps_the_last():
    """DVC deletes a stage's outputs before running it unless they persist; the stages write
    atomically, after their work succeeded, so a failure then leaves the old ones in place."""
    for name, stage in all_stages().items():
        body = stage.get("do", stage)
        for entry in [*body.get("outs", []), *body.get("metrics", [])]:
            assert isinstance(entry, dict), f"{name}: {entry} has no persist: true"
            ((path, options),) = entry.items()
            assert options.get("persist") is True, f"{name}: {path} does not persist"


def test_each_stage_depends_on_its_scripts_code_manifest_and_no_module():
    """The code stage hashes every file under src/metalearn and pipeline/ that may change; every
    other stage depends on its own script's manifest, never on a module directly (which would
    put 25 entries a stage back into dvc.lock)."""
    dvc = all_stages()
    code = dvc.pop("code")
    assert set(code["deps"]) == {"pipeline", "src/metalearn"}
    assert [next(iter(o)) for o in code["outs"]] == [str(paths.CODE)]
    scripts = {s.stem for s in code_manifest.stage_scripts(ROOT)}
    for name, stage in dvc.items():
        body = stage.get("do", stage)
        script = Path(body["cmd"].split()[1]).stem
        assert script in scripts, name
        code_deps = [d for d in body["deps"] if d.split("/")[0] in {"code", "src", "pipeline"}]
        assert code_deps == [str(paths.code_manifest(script))], name


def test_a_manifest_lists_what_its_stage_runs_and_nothing_else():
    scripts = [Path(f"pipeline/{name}.py") for name in ("train", "download", "report")]
    found = code_manifest.modules_run(ROOT, scripts)
    train, download, report = ({str(f) for f in found[s]} for s in scripts)
    assert "pipeline/train.py" in train
    for module in ("training", "tracking_process", "tracking_side", "tracking", "algorithms/maml"):
        assert f"src/metalearn/{module}.py" in train
    assert not any("report" in f or "efficiency" in f for f in train)
    assert not any("/algorithms/" in f for f in download)  # an algorithm edit re-downloads nothing
    assert "src/metalearn/data/download.py" in download
    assert "src/metalearn/report/tables.py" in report


def test_a_manifest_names_a_script_that_does_not_import(tmp_path):
    (tmp_path / "src/metalearn").mkdir(parents=True)
    (tmp_path / "src/metalearn/__init__.py").write_text("")
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline/broken.py").write_text("import metalearn_no_such_module\n")
    with pytest.raises(RuntimeError, match="pipeline/broken.py does not import cleanly"):
        code_manifest.write_manifests(tmp_path)
    assert not (tmp_path / paths.CODE).exists()  # nothing half-written


def test_the_pipelines_learners_are_the_algorithms():
    cfg = load_config()
    assert set(cfg.pipeline.learners) | set(cfg.pipeline.cf_learners) <= set(NAMES)


def test_readme_results_are_the_reports():
    """README's Results block is the report's headline (the best learner per benchmark against
    the papers), generated: `python -m metalearn.report readme`."""
    from metalearn.report.readme import readme_with_results, results_source

    readme = (ROOT / "README.md").read_text()
    source = results_source(readme)
    summary = (ROOT / (source or Path()) / paths.SUMMARY_MD).read_text()
    fix = f"run: python -m metalearn.report readme{f' --root {source}' if source else ''}"
    assert readme_with_results(readme, summary, source) == readme, fix
