"""``train.compile``: one meta-gradient compiled against eager, per learner, on the CF MLP.

    .venv/bin/python benchmarks/compile_speed.py [--learners maml fomaml ...] [--rounds 3]

Each learner runs in a fresh process with an empty inductor cache (the cold compile a first
train stage pays; later stages with the same shapes reuse the cache). It prints the compile time
(the first compiled call), the best-of-rounds seconds of one meta-gradient eager and compiled
(interleaved rounds), their ratio, and the largest relative difference of the two meta-gradients
(float32). The problem is the efficiency stage's CF MLP (16 tasks, 10 support and 15 query
ratings, 100 -> 40 -> 40 -> 1 tanh) at the study's K: 5 for MAML, 50 for the others.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

STEPS = {"maml": 5, "fomaml": 50, "reptile": 50, "imaml": 50, "adjoint": 50, "pretrain": 50}


def measure(learner: str, rounds: int) -> str:
    import torch

    from metalearn.algorithms import make
    from metalearn.efficiency.problems import make_problem

    torch.set_num_threads(1)
    problem = make_problem("cf_mlp", 16)
    m = make(learner, steps=STEPS[learner], inner_lr=0.01)
    args = (problem.loss_fn, problem.params, problem.support, problem.query)
    eager = m.batched_meta_grad_and_loss
    compiled = torch.compile(eager)
    start = time.perf_counter()
    out = compiled(*args)[0]
    compile_s = time.perf_counter() - start
    ref = eager(*args)[0]
    scale = max(float(v.abs().max()) for v in ref.values())
    diff = max(float((out[k] - ref[k]).abs().max()) for k in ref) / scale
    best = {"eager": float("inf"), "compiled": float("inf")}
    for _ in range(rounds):
        for name, fn in (("eager", eager), ("compiled", compiled)):
            start = time.perf_counter()
            for _ in range(5):
                fn(*args)
            best[name] = min(best[name], (time.perf_counter() - start) / 5)
    return (
        f"| {learner} | {STEPS[learner]} | {compile_s:.0f} s | {best['eager'] * 1e3:.1f} ms | "
        f"{best['compiled'] * 1e3:.1f} ms | {best['eager'] / best['compiled']:.1f}× | {diff:.1e} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", nargs="+", default=list(STEPS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process's learner
    args = parser.parse_args()
    if args.one:
        print(measure(args.one, args.rounds), flush=True)
        return
    print("| learner | K | compile | eager | compiled | speed-up | max rel diff |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for learner in args.learners:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            child = [sys.executable, __file__, "--one", learner, "--rounds", str(args.rounds)]
            done = subprocess.run(child, env=env, capture_output=True, text=True)
            row = done.stdout.strip().splitlines()
            print(row[-1] if done.returncode == 0 and row else f"| {learner} | failed: "
                  f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else '?'} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
