"""Where a Conv4 meta-gradient's time goes, and what compilation changes.

    .venv/bin/python benchmarks/conv4_profile.py [--steps 1] [--meta-batch 32] [--rounds 3]

The efficiency stage's peer setting (Omniglot-shaped Conv4, 64 filters, 5-way 1-shot, float32,
one thread): one MAML meta-gradient of ``--meta-batch`` tasks. Prints

1. torch.profiler's operators by self CPU time for our batched (``vmap``) meta-gradient: how
   much is convolution (forward, its backward and the backward of the backward), batch norm,
   and everything else;
2. meta-gradients per second of ours eager, ours through ``torch.compile`` (``train.compile``),
   and the per-task loop of plain autograd a peer such as ``higher`` runs (no ``vmap``), in
   interleaved rounds, best round counting, with the compile time.
"""

from __future__ import annotations

import argparse
import time

import torch

from metalearn.algorithms import make
from metalearn.efficiency.problems import make_problem
from metalearn.efficiency.references import higher_maml
from metalearn.efficiency.throughput import steps_per_second

GROUPS = {  # operator name fragments -> what they are
    "conv": "convolution (forward and both backwards)",
    "batch_norm": "batch norm",
    "max_pool": "max pool",
}


def group(name: str) -> str:
    low = name.lower()
    return next((label for key, label in GROUPS.items() if key in low), "other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="per form and round")
    parser.add_argument("--profile-only", action="store_true", help="skip the timings")
    args = parser.parse_args()
    torch.set_num_threads(1)
    problem = make_problem("omniglot_conv4", args.meta_batch)
    learner = make("maml", steps=args.steps, inner_lr=0.4)
    pair = (problem.loss_fn, problem.params, problem.support, problem.query)

    def ours() -> None:
        learner.batched_meta_grad_and_loss(*pair)

    ours()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            ours()
    averages = prof.key_averages()
    events = [e for e in averages if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    by_group: dict[str, float] = {}
    for e in events:
        label = group(e.key)
        by_group[label] = by_group.get(label, 0.0) + e.self_cpu_time_total
    print(f"MAML K={args.steps}, {args.meta_batch} tasks: self CPU time by kind of operator")
    for label, t in sorted(by_group.items(), key=lambda kv: -kv[1]):
        print(f"  {label:45s} {100 * t / total:5.1f} %")
    print("top operators:")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]:
        print(f"  {e.key:45s} {100 * e.self_cpu_time_total / total:5.1f} %  ({e.count} calls)")
    # elementwise operators are anonymous above: the autograd nodes that ran them say whose
    # backward (or double backward) they belong to (inclusive time, so nested nodes overlap)
    prefix = "autograd::engine::evaluate_function: "
    nodes = [e for e in averages if e.key.startswith(prefix)]
    print("backward nodes, inclusive CPU time:")
    for e in sorted(nodes, key=lambda e: -e.cpu_time_total)[:8]:
        share = 100 * e.cpu_time_total / total
        print(f"  {e.key[len(prefix) :]:45s} {share:5.1f} %  ({e.count} calls)")
    if args.profile_only:
        return

    compiled = torch.compile(learner.batched_meta_grad_and_loss)
    start = time.perf_counter()
    compiled(*pair)
    compile_s = time.perf_counter() - start
    forms = {
        "ours (vmap), eager": ours,
        "ours (vmap), torch.compile": lambda: compiled(*pair),
        "per-task loop (higher)": lambda: higher_maml(problem, args.steps, 0.4),
    }
    best = dict.fromkeys(forms, 0.0)
    for _ in range(args.rounds):
        for name, form in forms.items():
            best[name] = max(best[name], steps_per_second(form, args.seconds, least=2))
    print(f"meta-gradients per second (best of {args.rounds} rounds; compile {compile_s:.0f} s):")
    for name, rate in best.items():
        ratio = rate / best["ours (vmap), eager"]
        print(f"  {name:30s} {rate:6.2f}/s  ({ratio:.2f}x ours eager)")


if __name__ == "__main__":
    main()
