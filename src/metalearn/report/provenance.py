"""Where the numbers came from: the date, commit, experiment, hardware and compute of a report
(:func:`provenance`), and the committed ``params.yaml`` (git ``HEAD``) whose protocol the run is
compared with (:func:`default_config`).
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from metalearn import paths
from metalearn.config import Config, ConfigError, build_config
from metalearn.io import read_json
from metalearn.report.results import Results

PARAMS_NAME = "params.yaml"


def provenance(cfg: Config, results: Results, root: Path) -> dict[str, Any]:
    """When, from which commit, on what hardware and with how much compute the numbers came."""
    train = [
        read_json(root / paths.train_metrics(learner, benchmark))
        for benchmark in results
        for learner in results[benchmark]
    ]
    devices = sorted({t.get("device", "?") for t in train})
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": _git("rev-parse", "--short", "HEAD", root=root),
        "experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        "hardware": _hardware(devices),
        "train_seconds": round(sum(t.get("seconds", 0.0) for t in train), 1),
        "eval_seconds": round(
            sum(r.get("seconds", 0.0) for by in results.values() for r in by.values()), 1
        ),
    }


def _git(*args: str, root: Path) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _hardware(devices: list[str]) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    words = f"{cpu}, {os.cpu_count()} cores"
    if any(d.startswith("cuda") for d in devices):
        words = f"{torch.cuda.get_device_name(0)} GPU; {words}"
    return words


def provenance_line(p: dict[str, Any]) -> str:
    return (
        f"Produced {p['date']} from commit `{p['commit']}` (experiment `{p['experiment']}`) on "
        f"{p['hardware']}; compute: {p['train_seconds'] / 60:.1f} min of meta-training and "
        f"{p['eval_seconds'] / 60:.1f} min of meta-testing, summed over the stages."
    )


def default_config(root: Path) -> Config | None:
    """The committed ``params.yaml`` (git ``HEAD``): the default protocol an experiment's ``-S``
    changes depart from; None outside git."""
    text = _git("show", f"HEAD:{PARAMS_NAME}", root=root)
    if text == "unknown":
        return None
    try:
        return build_config(OmegaConf.to_container(OmegaConf.create(text)))
    except (ConfigError, ValueError):
        return None  # an older params.yaml that today's schema rejects
