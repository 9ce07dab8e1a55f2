"""Stage episodify@<benchmark>: a benchmark's fixed meta-val/meta-test tasks and what meta-training
samples from, under ``data/episodes/<benchmark>/``."""

from __future__ import annotations

from typing import Any

from metalearn import paths
from metalearn.config import Config, parse_benchmark
from metalearn.data.download import verify_downloads
from metalearn.data.episodes import episodify
from metalearn.stages.cli import Stage


def run(cfg: Config, benchmark: str) -> dict[str, Any]:
    dataset, _ = parse_benchmark(cfg, benchmark)
    verify_downloads(dataset, paths.raw(dataset))
    return episodify(cfg, benchmark, paths.episodes(benchmark), raw_dir=paths.raw(dataset))


STAGE = Stage(run, ("benchmark",))
