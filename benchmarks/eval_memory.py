"""Peak memory of meta-testing many tasks: one chunked vmap of adapt-then-predict
(``evaluation.per_task_scores``) against adapting every task first and predicting after (every
parameter copied once per task), each in a fresh process.

    python benchmarks/eval_memory.py [--tasks 3000] [--steps 100]

The problem has the shapes of MovieLens 1M's factors model (3,706 items, 100 SVD features,
32-wide item embedding, MLP 40 x 40), random ratings, MAML adapting the head.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch

from metalearn import metrics
from metalearn.algorithms import make
from metalearn.evaluation import per_task_scores
from metalearn.models import ItemFactorModel, init_params, make_loss, make_predict

WAYS = ("one-vmap", "adapt-all-first")
ITEMS, FEATURES, SHOTS, QUERIES = 3706, 100, 10, 15


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(way: str, tasks: int, steps: int) -> str:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    model = ItemFactorModel(torch.randn(ITEMS, FEATURES, generator=g), 0.6, 32, (40, 40))
    params = init_params(model, g)
    ids = torch.randint(ITEMS, (tasks, SHOTS + QUERIES), generator=g)
    y = torch.rand(tasks, SHOTS + QUERIES, generator=g)
    support, (qx, qy) = (ids[:, :SHOTS], y[:, :SHOTS]), (ids[:, SHOTS:], y[:, SHOTS:])
    loss_fn, predict = make_loss(model, "mse"), make_predict(model, "mse")
    learner = make("maml", steps=steps, inner_lr=0.01, adapt_keys=["head"])
    before, start = peak_mib(), time.perf_counter()
    if way == "one-vmap":
        per_task_scores(learner, loss_fn, predict, params, (support, (qx, qy)), "mse")
    else:
        with torch.no_grad():
            adapted = learner.batched_adapt(loss_fn, params, support, chunk_size=32)
            metrics.rmse(torch.func.vmap(predict, chunk_size=32)(adapted, qx), qy)
    seconds = time.perf_counter() - start
    return f"{way}: {peak_mib() - before:.0f} MiB above the model, {seconds:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.way:
        print(measure(args.way, args.tasks, args.steps), flush=True)
        return
    print(f"{args.tasks} tasks, K = {args.steps}, head adapted (peak RSS, one process each):")
    for way in WAYS:
        child = [sys.executable, __file__, "--way", way, f"--tasks={args.tasks}"]
        subprocess.run([*child, f"--steps={args.steps}"], check=True)


if __name__ == "__main__":
    main()
