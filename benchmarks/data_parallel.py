"""Data-parallel meta-training (``train.processes``) against one process, on the Conv4.

    .venv/bin/python benchmarks/data_parallel.py [--meta-batch 8] [--steps 1] [--seconds 20]

Meta-training steps per second (the batched MAML meta-gradient of the rank's share, the gloo
all-reduce that averages the shares, an Adam step) of the efficiency stage's Conv4 5-way 1-shot
problem: one process on one thread, one process on two threads, and two ranks of one thread
each (the layout ``train.processes: 2`` gives on this machine's two cores). Three interleaved
rounds, best round counting.
"""

from __future__ import annotations

import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from metalearn.algorithms import make
from metalearn.distributed import Shard
from metalearn.efficiency.problems import make_problem
from metalearn.training import Adam


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(rank: int, world: int, threads: int, port: int, args, out) -> None:
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)  # fmt: skip
    problem = make_problem("omniglot_conv4", args.meta_batch)
    learner = make("maml", steps=args.steps, inner_lr=0.4)
    params = {k: v.clone() for k, v in problem.params.items()}
    optimizer = Adam(params, lr=1e-3)
    shard = Shard(rank, world)
    support, query = shard.take((problem.support, problem.query), args.meta_batch)

    def step() -> None:
        grads, loss = learner.batched_meta_grad_and_loss(problem.loss_fn, params, support, query)
        if world > 1:
            grads, loss = shard.average(grads, loss, args.meta_batch)
        optimizer.step(params, grads)

    step()  # warm-up
    if world > 1:
        dist.barrier()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds or calls < 2:
        step()
        calls += 1
    if world > 1:  # every rank takes the same number of steps: the slowest decides
        dist.destroy_process_group()
    if rank == 0:
        out.put(calls / (time.perf_counter() - start))


def measure(world: int, threads: int, args) -> float:
    context = mp.get_context("spawn")
    out = context.Queue()
    if world == 1:
        process = context.Process(target=_run, args=(0, 1, threads, 0, args, out))
        process.start()
        rate = out.get()
        process.join()
        return rate
    port = _port()
    processes = [
        context.Process(target=_run, args=(r, world, threads, port, args, out))
        for r in range(world)
    ]
    for p in processes:
        p.start()
    rate = out.get()
    for p in processes:
        p.join()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    layouts = {"1 process, 1 thread": (1, 1), "1 process, 2 threads": (1, 2),
               "2 ranks, 1 thread each": (2, 1)}  # fmt: skip
    best = dict.fromkeys(layouts, 0.0)
    for _ in range(args.rounds):
        for name, (world, threads) in layouts.items():
            best[name] = max(best[name], measure(world, threads, args))
    base = best["1 process, 1 thread"]
    print(f"Conv4 5-way 1-shot, MAML K = {args.steps}, {args.meta_batch} tasks a meta-batch")
    for name, rate in best.items():
        print(f"  {name}: {rate:.3f} steps/s ({rate / base:.2f}x one thread)")


if __name__ == "__main__":
    main()
