"""The curves' DVC plot template (.dvc/plots/sparse_linear.json): a meta-val column is filled
every ``train.val_every`` iterations only, and its empty cells must not be drawn as 0."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import vl_convert
import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))


def shown_spec(tmp_path: Path, template: str) -> dict:
    """The Vega-Lite spec ``dvc plots show`` draws for a 20-iteration curve, meta-val every 5."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".dvc/plots").mkdir()
    shutil.copy(REPO / ".dvc/plots/sparse_linear.json", tmp_path / ".dvc/plots")
    rows = ["iteration,meta_train_loss,meta_val_nrmse,seed"]
    for i in range(1, 21):
        rows.append(f"{i},{1 / i:.4f},{0.95 - i / 1000 if i % 5 == 0 else ''},0")
    (tmp_path / "curve.csv").write_text("\n".join(rows) + "\n")
    cmd = [DVC, "plots", "show", "curve.csv", "-x", "iteration", "-y", "meta_val_nrmse"]
    done = subprocess.run(
        [*cmd, "--template", template, "--json"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    (plot,) = json.loads(done.stdout)["data"]["curve.csv"]
    return plot["content"]


def axis_labels(spec: dict) -> list[float]:
    svg = vl_convert.vegalite_to_svg(vl_spec=spec)
    return [float(t) for t in re.findall(r"<text[^>]*>(\d+\.\d+)</text>", svg)]


def test_the_curve_template_leaves_out_the_iterations_without_a_meta_val_point(tmp_path):
    spec = shown_spec(tmp_path, "sparse_linear")
    assert len(spec["data"]["values"]) == 20  # DVC hands over every row; the spec filters
    labels = axis_labels(spec)
    assert labels and min(labels) >= 0.9, labels  # 0.93 .. 0.945: no drop to the axis
    spec.pop("transform")  # DVC's own linear template: the empty cells become 0
    assert min(axis_labels(spec)) == 0.0


def test_the_pipeline_draws_its_curves_with_that_template():
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    (curves,) = [p["results/curves"] for p in plots if "results/curves" in p]
    assert curves["template"] == "sparse_linear"
