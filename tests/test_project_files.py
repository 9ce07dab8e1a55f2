"""The files that must agree with each other: params.yaml, the README's table, dvc.yaml, paths."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from metalearn import paths
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


def test_every_param_is_in_the_readme_table():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Parameters", 1)[1].split("\n## ", 1)[0]
    missing = [k for k in leaf_keys(params) if not documented(k, table)]
    assert not missing, f"params missing from the README table: {missing}"


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
    assert str(paths.train_spec(learner, benchmark)) in train["deps"]
    evaluate = dvc["evaluate"]["do"]
    assert names(evaluate["outs"]) == {
        str(paths.eval_per_task_dir("${key}")),
        str(paths.eval_metrics("${key}")),
    }
    assert str(paths.evaluate_spec("${key}")) in evaluate["deps"]
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


def test_every_output_persists_so_a_failed_rerun_keeps_the_last():
    """DVC deletes a stage's outputs before running it unless they persist; the stages write
    atomically, after their work succeeded, so a failure then leaves the old ones in place."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in dvc.items():
        body = stage.get("do", stage)
        for entry in [*body.get("outs", []), *body.get("metrics", [])]:
            assert isinstance(entry, dict), f"{name}: {entry} has no persist: true"
            ((path, options),) = entry.items()
            assert options.get("persist") is True, f"{name}: {path} does not persist"


# What a stage script imports, in a fresh interpreter, plus what its stage function imports when
# it runs (stages.py imports lazily) and, through metalearn.data.episodes, the dataset modules.
IMPORTS = r"""
import importlib, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("stage", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
names = set(sys.argv[2:])
if "metalearn.data.episodes" in names:
    from metalearn.data.episodes import MODULES
    names |= set(MODULES.values())
if "metalearn.tracking_process" in names:  # its side process runs metalearn.tracking
    names.add("metalearn.tracking")
for name in names:
    importlib.import_module(name)
print(json.dumps(sorted(
    m.__file__ for name, m in sys.modules.items()
    if name.startswith("metalearn") and getattr(m, "__file__", None)
)))
"""


def runtime_imports(stage: str) -> list[str]:
    """The metalearn modules imported inside ``stages.run_<stage>`` and the helpers it calls."""
    tree = ast.parse((ROOT / "src/metalearn/stages.py").read_text())
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    todo, seen, found = [f"run_{stage}"], set(), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        for node in ast.walk(functions[name]):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("metalearn"):
                found |= {f"{node.module}.{a.name}" if node.module == "metalearn" else node.module
                          for a in node.names}  # fmt: skip
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                todo.append(node.func.id)
    return sorted(found)


def test_each_stage_depends_on_exactly_the_code_it_runs():
    """Every module of src/metalearn that a stage's script runs is among the stage's deps, so
    no code change can leave a stale result; and every module under its deps is one it runs,
    so no edit elsewhere re-runs it (an algorithm edit re-downloads nothing)."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in dvc.items():
        body = stage.get("do", stage)
        script = body["cmd"].split()[1]
        assert script in body["deps"], name
        lazy = runtime_imports(Path(script).stem)  # pipeline/<stage>.py runs stages.run_<stage>
        out = subprocess.run(
            [sys.executable, "-c", IMPORTS, str(ROOT / script), *lazy],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )  # fmt: skip
        ran = {Path(m) for m in json.loads(out.stdout)}
        deps = [ROOT / d for d in body["deps"]]
        for path in ran:
            covered = any(path == d or d in path.parents for d in deps)
            assert covered, f"stage {name} runs {path.relative_to(ROOT)} but does not depend on it"
        for dep in (d for d in deps if ROOT / "src" in d.parents):
            files = sorted(dep.rglob("*.py")) if dep.is_dir() else [dep]
            for path in files:
                assert path in ran, (
                    f"stage {name} depends on {path.relative_to(ROOT)} but does not run it"
                )
    assert "src/metalearn/algorithms" not in dvc["download"]["do"]["deps"]
    assert "metalearn.report" in runtime_imports("report")
    assert {"metalearn.training", "metalearn.tracking_process"} <= set(runtime_imports("train"))


def test_the_learner_names_agree():
    from metalearn.algorithms import NAMES
    from metalearn.config import LEARNERS

    assert set(NAMES) == set(LEARNERS)
    assert set(load_config().pipeline.learners) <= set(NAMES)


def test_readme_results_are_the_reports():
    """README's Results section is generated: `python -m metalearn.report readme`."""
    from metalearn.report import readme_with_results

    readme = (ROOT / "README.md").read_text()
    summary = (ROOT / paths.SUMMARY_MD).read_text()
    assert readme_with_results(readme, summary) == readme, "run: python -m metalearn.report readme"
