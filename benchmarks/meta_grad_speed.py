"""Wall time of ONE meta-gradient over a meta-batch, batched (``torch.func.vmap``) vs per-task loop.

Run from the repository root (the defaults reproduce ``benchmarks/results/meta_grad_speed.*``)::

    .venv/bin/python benchmarks/meta_grad_speed.py \
        --learners maml fomaml reptile imaml adjoint --steps 1 10 50 \
        --models mlp conv4 --meta-batch 32 --repeats 3 --out benchmarks/results

For every (model, learner, K) one warm-up call of each form is made, and its meta-gradients
are compared: ``max_rel_err = max_k max|b_k - l_k| / max_k max|l_k|`` over the parameter tensors
k (one scale for all tensors: some meta-gradients, e.g. a conv bias before batch norm, are zero
up to rounding), expected < 1e-4 in float32 (a warning is printed otherwise). Then each form is
timed as the median of ``--repeats`` calls (``time.perf_counter``), or of one call when the
warm-up pair took longer than ``--max-repeat-s`` seconds (column ``repeats``); ``load1`` is the
1-minute load average after the configuration (other processes may share the CPUs). A batched
call that runs out of memory (the process's address space is capped below the free RAM, so an
allocation fails instead of the OOM killer ending the run) is recorded as ``nan``/``OOM``.
The CSV is rewritten after every configuration; ``--resume`` keeps its rows and runs only the
missing ones (delete a row to re-measure it).
float32, CPU, torch's default thread count, inner_lr 0.01, default learner options (imaml
lam=2.0, cg_steps=5; adjoint heun, checkpointed trajectory).

* ``mlp``: MLP(100 -> 40 -> 40 -> 1, tanh), MSE, 10 support + 15 query points per task;
* ``conv4``: Conv4(1 channel, 5 classes, 64 filters, 28x28), cross-entropy, 5-way 1-shot with
  15 query images per class (support 5 images, query 75).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import gc
import math
import os
import platform
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from statistics import median

import torch

from metalearn.algorithms import NAMES, make
from metalearn.models import MLP, Conv4, init_params, make_loss

COLUMNS = ("model", "learner", "steps", "meta_batch", "batched_s", "loop_s", "speedup",
           "max_rel_err", "threads", "torch_version", "date", "repeats", "load1")  # fmt: skip
INTS = ("steps", "meta_batch", "threads", "repeats")
STRS = ("model", "learner", "torch_version", "date")


def make_problem(model_name: str, meta_batch: int, seed: int = 0):
    """``(loss_fn, params, support, query)`` with random data drawn from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    if model_name == "mlp":
        model = MLP(in_dim=100, out_dim=1, hidden=(40, 40), activation="tanh")
        loss_fn = make_loss(model, "mse")

        def batch(n):
            return (torch.randn(meta_batch, n, 100, generator=g),
                    torch.randn(meta_batch, n, generator=g))  # fmt: skip

        support, query = batch(10), batch(15)
    elif model_name == "conv4":
        model = Conv4(in_channels=1, n_classes=5, filters=64, image_size=28)
        loss_fn = make_loss(model, "cross_entropy")

        def batch(shots):
            x = torch.rand(meta_batch, 5 * shots, 1, 28, 28, generator=g)
            y = torch.arange(5).repeat_interleave(shots).expand(meta_batch, -1).contiguous()
            return x, y

        support, query = batch(1), batch(15)
    else:
        raise ValueError(f"unknown model {model_name!r}")
    return loss_fn, init_params(model, g), support, query


def timed(fn):
    """``(result, seconds)`` of one call; ``(None, nan)`` if it ran out of memory."""
    start = time.perf_counter()
    try:
        return fn(), time.perf_counter() - start
    except (RuntimeError, MemoryError) as e:
        if "allocate" not in str(e) and not isinstance(e, MemoryError):
            raise
    gc.collect()  # outside the except block, so the traceback's tensors are already freed
    return None, math.nan


def max_rel_err(batched: dict, looped: dict) -> float:
    scale = max(v.abs().max() for v in looped.values()).clamp_min(1e-30)
    return max((batched[k] - looped[k]).abs().max().item() for k in looped) / scale.item()


def cap_memory(fraction: float) -> None:
    """Cap the address space at its current size + ``fraction`` of the available RAM, so that an
    oversized batched call raises instead of being OOM-killed."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    avail = next(line for line in Path("/proc/meminfo").read_text().splitlines()
                 if line.startswith("MemAvailable"))  # fmt: skip
    limit = (int(status["VmSize"].split()[0]) + int(fraction * int(avail.split()[1]))) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def machine_info() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor() or "unknown")  # fmt: skip
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {"CPU": cpu, "cores (os.cpu_count)": str(os.cpu_count()),
            "torch threads": str(torch.get_num_threads()), "torch": torch.__version__,
            "python": platform.python_version(), "git HEAD": git.stdout.strip() or "unknown",
            "date": datetime.datetime.now().isoformat(timespec="seconds")}  # fmt: skip


def cell(r: dict | None) -> str:
    if r is None:
        return "—"
    if math.isnan(r["batched_s"]):
        return f"OOM / {r['loop_s']:.3g}"
    return f"{r['batched_s']:.3g} / {r['loop_s']:.3g} (×{r['speedup']:.2f})"


def write_markdown(path: Path, rows: list[dict], info: dict[str, str], args) -> None:
    lines = [f"One meta-gradient over a meta-batch of {args.meta_batch} tasks, float32, CPU. "
             "Cells: `batched s / loop s (×loop/batched)`; × > 1 means vmap is faster. Median of "
             f"{args.repeats} timed calls after one warm-up call (1 timed call where the warm-up "
             f"pair took > {args.max_repeat_s:g} s, marked ¹).", ""]  # fmt: skip
    lines += [f"- {k}: {v}" for k, v in info.items()] + [""]
    for model in args.models:
        lines += [f"**{model}**", "", "| learner | " + " | ".join(f"K={k}" for k in args.steps)
                  + " |", "|---" * (len(args.steps) + 1) + "|"]  # fmt: skip
        for learner in args.learners:
            found = [next((r for r in rows if (r["model"], r["learner"], r["steps"])
                           == (model, learner, k)), None) for k in args.steps]  # fmt: skip
            cells = [cell(r) + ("¹" if r and r["repeats"] < args.repeats else "") for r in found]
            lines.append(f"| {learner} | " + " | ".join(cells) + " |")
        errs = [f"{r['learner']} K={r['steps']}: {r['max_rel_err']:.1e}" for r in rows
                if r["model"] == model and r["max_rel_err"] >= 1e-4]  # fmt: skip
        lines += ["", "max_rel_err (batched vs loop) >= 1e-4: " + ("; ".join(errs) or "none"), ""]
    path.write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--learners", nargs="+", default=list(NAMES), choices=NAMES)
    p.add_argument("--steps", nargs="+", type=int, default=[1, 10, 50])
    p.add_argument("--models", nargs="+", default=["mlp", "conv4"], choices=["mlp", "conv4"])
    p.add_argument("--meta-batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-repeat-s", type=float, default=60.0)
    p.add_argument("--inner-lr", type=float, default=0.01)
    p.add_argument("--mem-fraction", type=float, default=0.7, help="see cap_memory")
    p.add_argument("--resume", action="store_true", help="keep the rows in --out")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cap_memory(args.mem_fraction)
    info = machine_info()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU {info['CPU']}", file=sys.stderr)  # fmt: skip
    rows, t0, csv_path = [], time.perf_counter(), args.out / "meta_grad_speed.csv"
    if args.resume and csv_path.exists():
        with open(csv_path) as f:
            rows = [{k: int(v) if k in INTS else v if k in STRS else float(v) for k, v in r.items()}
                    for r in csv.DictReader(f)]  # fmt: skip
    for model in args.models:
        loss_fn, params, support, query = make_problem(model, args.meta_batch)
        for name in args.learners:
            for k in args.steps:
                if any((r["model"], r["learner"], r["steps"]) == (model, name, k) for r in rows):
                    continue
                learner = make(name, steps=k, inner_lr=args.inner_lr)
                batched, looped = (partial(f, loss_fn, params, support, query) for f in
                                   (learner.batched_meta_grad_and_loss,
                                    learner.looped_meta_grad_and_loss))  # fmt: skip
                (b, tb), (lp, tl) = timed(batched), timed(looped)  # warm-up, and the check
                err = math.nan if b is None or lp is None else max_rel_err(b[0], lp[0])
                if not err < 1e-4:
                    problem = f"max_rel_err {err:.2e}" if err >= 0 else "ran out of memory"
                    print(f"WARNING: {model} {name} K={k}: {problem}", file=sys.stderr)
                n = 1 if math.isnan(tb) or tb + tl > args.max_repeat_s else args.repeats
                tb = math.nan if b is None else median(timed(batched)[1] for _ in range(n))
                tl = median(timed(looped)[1] for _ in range(n))
                load = os.getloadavg()[0]
                rows.append({"model": model, "learner": name, "steps": k,
                             "meta_batch": args.meta_batch, "batched_s": tb, "loop_s": tl,
                             "speedup": tl / tb, "max_rel_err": err,
                             "threads": torch.get_num_threads(), "torch_version": torch.__version__,
                             "date": info["date"], "repeats": n, "load1": load})  # fmt: skip
                print(f"[{time.perf_counter() - t0:7.1f}s] {model:5s} {name:7s} K={k:<3d} batched"
                      f" {tb:.4f}s loop {tl:.4f}s ×{tl / tb:.2f} err {err:.1e} (n={n}, load"
                      f" {load:.1f})", file=sys.stderr)  # fmt: skip
                rows.sort(key=lambda r: (r["model"] != "mlp", NAMES.index(r["learner"]),
                                         r["steps"]))  # fmt: skip
                with open(csv_path, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=COLUMNS)
                    writer.writeheader()
                    writer.writerows(rows)
    info["runtime of this invocation"] = f"{time.perf_counter() - t0:.0f} s"
    write_markdown(args.out / "meta_grad_speed.md", rows, info, args)
    print(f"done in {time.perf_counter() - t0:.0f}s; wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
