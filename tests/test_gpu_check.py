"""The prepared GPU check's CPU rehearsal (``--dry``): the same parts at tiny sizes, every file."""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_dry_run_writes_every_figure(tmp_path):
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--dry", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p.name for p in tmp_path.iterdir()} == {
        "summary.json", "time_memory.csv", "time_memory.png", "throughput.json",
    }  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cuda_tests"]["status"].startswith("skipped")
    assert summary["time_memory"]["ok"] == summary["time_memory"]["points"] == 5 * 2
    assert json.loads((tmp_path / "throughput.json").read_text())["eager"]["iterations_per_s"] > 0


def test_without_a_gpu_the_real_check_refuses_and_names_the_dry_run(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 1 and "--dry" in done.stderr
