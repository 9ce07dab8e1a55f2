"""The efficiency stage itself: checks the variants, runs the time and memory sweep, the
accuracy sweep and the peer throughput, and writes their CSVs, figures, targets and summary
into the stage's folder, all or nothing (:func:`run_stage`); :func:`main` is
``python -m metalearn.efficiency point|summary``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import polars as pl
import torch
from tqdm import tqdm

from metalearn.algorithms import make
from metalearn.config import ConfigError, EfficiencyConfig, load_config
from metalearn.efficiency.grad_accuracy import accuracy_sweep
from metalearn.efficiency.plots import plot_accuracy, plot_time_memory
from metalearn.efficiency.summary import summary_markdown, targets, write_summary
from metalearn.efficiency.throughput import peers
from metalearn.efficiency.time_memory import _point_main, sweep
from metalearn.io import atomic_dir, write_json
from metalearn.runtime import resolve_device


def variant_specs(cfg: EfficiencyConfig) -> dict[str, dict[str, Any]]:
    """``efficiency.variants`` as ``{name: {"learner": ..., **options}}``, each checked by
    building its learner, so a bad option fails before any measurement."""
    specs = {}
    for name, variant in cfg.variants.items():
        try:
            make(variant.learner, steps=1, inner_lr=0.01, **variant.options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"efficiency.variants.{name}: {error}") from None
        specs[name] = {"learner": variant.learner, **variant.options}
    return specs


def run_stage(cfg: EfficiencyConfig, out: Path) -> dict[str, Any]:
    """The efficiency stage: the K sweep (a fresh process per point), the accuracy sweep against
    MAML (float64), the peer throughput; writes the CSVs and plots into ``out`` (all or nothing)
    and returns the targets (:func:`targets`). One thread on CPU, so the implementations compare
    per core and the points do not depend on what else the machine runs on its other cores."""
    specs = variant_specs(cfg)
    device = str(resolve_device(cfg))
    torch.set_num_threads(1)
    cap = None if device == "cuda" else int(cfg.memory_gib * 2**30)
    total = len(cfg.meta_batch) * len(specs) * len(cfg.steps)
    with tqdm(total=total, desc="efficiency: time/memory", disable=not sys.stderr.isatty()) as bar:
        time_memory = sweep(
            cfg.meta_batch, specs, cfg.steps, cfg.seconds, cap, device, cfg.repeats,
            on_row=lambda row: bar.update(),
        )  # fmt: skip
    others = {k: v for k, v in specs.items() if v["learner"] != "maml"}
    problems = {p: cfg.accuracy_meta_batch for p in cfg.meta_batch}
    grad_accuracy = accuracy_sweep(problems, cfg.accuracy_steps, others)
    peer_rows = [
        row
        for problem, peer in cfg.peers.items()
        for steps in peer.steps
        for row in peers(problem, peer.meta_batch, steps, seconds=cfg.peer_seconds,
                         device=device)
    ]  # fmt: skip
    found = targets(time_memory, peer_rows)
    with atomic_dir(out) as tmp:
        for name, rows in (("time_memory", time_memory), ("accuracy", grad_accuracy),
                           ("peers", peer_rows)):  # fmt: skip
            pl.DataFrame(rows).write_csv(tmp / f"{name}.csv")
        plot_time_memory(time_memory, tmp / "time_memory.png")
        plot_accuracy(grad_accuracy, tmp / "accuracy.png")
        write_json(tmp / "targets.json", found)
        (tmp / "summary.md").write_text(
            summary_markdown(time_memory, grad_accuracy, peer_rows, found)
        )
    return {"device": device, "points": len(time_memory), "targets": found}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m metalearn.efficiency",
        description="a measurement point, a stage folder's summary, or the peer table",
    )
    parser.add_argument("command", choices=["point", "summary", "peers"])
    parser.add_argument(
        "arg",
        nargs="?",
        help="point: JSON spec (problem, learner, steps, ...); summary: the stage's folder; "
        "peers: nothing (params.yaml's efficiency.peers and peer_seconds, one thread)",
    )
    args = parser.parse_args(argv)
    if args.command == "summary":
        print(f"wrote {write_summary(Path(args.arg))}")
    elif args.command == "peers":  # the stage's peer table alone (minutes, not the whole stage)
        cfg = load_config().efficiency
        torch.set_num_threads(1)
        rows = [
            row
            for problem, peer in cfg.peers.items()
            for steps in peer.steps
            for row in peers(problem, peer.meta_batch, steps, seconds=cfg.peer_seconds)
        ]
        print(summary_markdown([], [], rows, targets([], rows)))
    else:
        _point_main(json.loads(args.arg))
    return 0
