"""What the head split buys: one meta-gradient of a real benchmark's meta-batch, on the body's
cached features (``metalearn.head_split``) against the whole network, per learner.

Run from the repository root, after the benchmark's episodes exist (``dvc repro
episodify@movielens100k-shot10``)::

    .venv/bin/python benchmarks/head_split.py movielens100k-shot10 [--rounds 5]

The benchmark's own model, learner options and meta-batch (``params.yaml``, plus
``algo.adjoint.trajectory=store``, the CPU recipes' setting), one thread, float32, perturbed
initial parameters. Both forms are first checked equal (max relative difference over the
parameter tensors), then timed in ``--rounds`` interleaved rounds, one call of each form per
learner a round; the best round of each counts, so load from another process costs both forms
alike. Prints a markdown table of seconds per meta-gradient and the ratio.
"""

from __future__ import annotations

import argparse
import time

import torch

from metalearn import paths
from metalearn.algorithms import REGISTRY
from metalearn.config import benchmark_config, load_config
from metalearn.data.episodes import load_episodes
from metalearn.spec import train_cell
from metalearn.training import Task, build_learner, init_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = load_config(["algo.adjoint.trajectory=store"])
    cfg = benchmark_config(base, args.benchmark)
    source = load_episodes(paths.episodes(args.benchmark))
    support, query = source.sample_train(cfg.train.meta_batch, torch.Generator().manual_seed(1))
    forms = {}
    for name in base.pipeline.learners:  # the meta-trained ones: scratch's gradient is zero
        if not REGISTRY[name].meta_trained:
            continue
        cell = train_cell(base, name, args.benchmark)
        task = Task.build(cell.model, source, name)
        g = torch.Generator().manual_seed(0)
        params = init_params(task.model, g)
        params = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in params.items()}
        learner = build_learner(cell)
        whole = lambda p, b, f=task.loss_fn: f(p, b)  # noqa: E731  (no head_split attribute)
        forms[name] = {
            "split": lambda lr=learner, t=task, p=params: lr.batched_meta_grad_and_loss(
                t.loss_fn, p, support, query
            ),
            "whole": lambda lr=learner, w=whole, p=params: lr.batched_meta_grad_and_loss(
                w, p, support, query
            ),
        }
    differences = {}
    for name, pair in forms.items():
        a, b = pair["split"]()[0], pair["whole"]()[0]
        differences[name] = max(float((a[k] - b[k]).abs().max() / b[k].abs().max()) for k in b)
    best = {(n, f): float("inf") for n in forms for f in ("split", "whole")}
    for _ in range(args.rounds):
        for name, pair in forms.items():
            for form, call in pair.items():
                start = time.perf_counter()
                call()
                best[name, form] = min(best[name, form], time.perf_counter() - start)
    print(f"{args.benchmark}, meta-batch {cfg.train.meta_batch}, best of {args.rounds} rounds\n")
    print("| learner | whole network (s) | head split (s) | speed-up | max rel. difference |")
    print("|---|---|---|---|---|")
    for name in forms:
        whole, split = best[name, "whole"], best[name, "split"]
        print(
            f"| {name} | {whole:.4f} | {split:.4f} | {whole / split:.2f}× | "
            f"{differences[name]:.1e} |"
        )


if __name__ == "__main__":
    main()
